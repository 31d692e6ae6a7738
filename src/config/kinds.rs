//! The kinds of setting (milliseconds, a count, a percentage, a path, an
//! address, …): how each reads its text, what it accepts and how it writes
//! a value back; and [`Spec`], one setting of a kind, seen through [`Row`].

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::periods::RefreshPeriods;
use crate::config::values::{LogFormat, resolve_bind, unix_socket_path, valid_host_name};
use crate::section::SectionName;

/// How a setting's text is read: what it becomes, what is accepted, how a
/// value is written back.
pub(crate) trait Kind: Sync {
    /// The value a setting of this kind holds.
    type Value: Clone + Sync;
    /// The value `text` (trimmed) gives, or what was expected instead.
    fn parse(&self, text: &str) -> Result<Self::Value, String>;
    /// What the documentation says of the default when it is not a value.
    fn unset(&self) -> &'static str {
        "unset"
    }
    /// The accepted range, for `--help` (`1000 .. 3600000`), when there is one.
    fn range(&self) -> Option<String> {
        None
    }
    /// `value` as a user would write it; `None` for "unset".
    fn show(&self, value: &Self::Value) -> Option<String>;
    /// What the [`crate::config::Settings`] field holds: the value, or what it becomes.
    type Field;
    /// The field a value gives.
    fn field(&self, value: Self::Value) -> Self::Field;
    /// How the start-up line shows the field (a number stays a number in JSON logs).
    type Logged: tracing::Value;
    /// The field as the start-up line shows it.
    fn logged(&self, field: &Self::Field) -> Self::Logged;
}

/// A field shown as text in the start-up line, `-` when unset.
fn shown(text: Option<String>) -> Display {
    tracing::field::display(text.unwrap_or_else(|| "-".to_owned()))
}

type Display = tracing::field::DisplayValue<String>;

/// Implements the field and log hooks of a kind whose field is its value.
macro_rules! field_is_value {
    (text) => {
        type Field = Self::Value;
        fn field(&self, value: Self::Value) -> Self::Value {
            value
        }
        type Logged = Display;
        fn logged(&self, field: &Self::Value) -> Display {
            shown(self.show(field))
        }
    };
    ($logged:ty, |$s:pat_param, $v:ident| $e:expr) => {
        type Field = Self::Value;
        fn field(&self, value: Self::Value) -> Self::Value {
            value
        }
        type Logged = $logged;
        fn logged(&self, $v: &Self::Value) -> $logged {
            let $s = self;
            $e
        }
    };
}

/// One setting.
#[derive(Debug)]
pub(crate) struct Spec<K: Kind> {
    /// The configuration file's key; the variable is `ORCH_` and the key in upper case.
    pub key: &'static str,
    /// The environment variable.
    pub var: &'static str,
    /// The command-line flag, without `--`.
    pub flag: &'static str,
    /// What the flag's value is called in `--help`.
    pub value_name: &'static str,
    /// One line of meaning, for `--help`.
    pub meaning: &'static str,
    /// How the text is read.
    pub kind: K,
    /// The value when no layer sets it.
    pub default: K::Value,
}

/// What the flags, `--help` and the documentation checks need of a setting,
/// whatever its kind.
pub trait Row: Sync {
    /// The configuration file's key; the variable is `ORCH_` and the key in upper case.
    fn key(&self) -> &'static str;
    /// The environment variable.
    fn var(&self) -> &'static str;
    /// The command-line flag, without `--`.
    fn flag(&self) -> &'static str;
    /// What the flag's value is called in `--help`.
    fn value_name(&self) -> &'static str;
    /// One line of meaning, for `--help`.
    fn meaning(&self) -> &'static str;
    /// The default as text; `None` when unset by default.
    fn default_text(&self) -> Option<String>;
    /// What the documentation says of the default when it is not a value
    /// (`unset`, or how it is derived).
    fn unset(&self) -> &'static str;
    /// The accepted range, when there is one.
    fn range(&self) -> Option<String>;
    /// Whether `text` is accepted; the error says what was expected.
    fn check(&self, text: &str) -> Result<(), String>;
}

impl<K: Kind> Row for Spec<K> {
    fn key(&self) -> &'static str {
        self.key
    }
    fn var(&self) -> &'static str {
        self.var
    }
    fn flag(&self) -> &'static str {
        self.flag
    }
    fn value_name(&self) -> &'static str {
        self.value_name
    }
    fn meaning(&self) -> &'static str {
        self.meaning
    }
    fn default_text(&self) -> Option<String> {
        self.kind.show(&self.default)
    }
    fn unset(&self) -> &'static str {
        self.kind.unset()
    }
    fn range(&self) -> Option<String> {
        self.kind.range()
    }
    fn check(&self, text: &str) -> Result<(), String> {
        self.kind.parse(text.trim()).map(|_| ())
    }
}

/// A whole number of milliseconds within bounds.
#[derive(Debug)]
pub(crate) struct Millis(pub u64, pub u64);

impl Kind for Millis {
    type Value = Duration;
    fn parse(&self, text: &str) -> Result<Duration, String> {
        let Millis(lo, hi) = *self;
        text.parse::<u64>()
            .ok()
            .filter(|ms| (lo..=hi).contains(ms))
            .map(Duration::from_millis)
            .ok_or_else(|| format!("expected a whole number of milliseconds from {lo} to {hi}"))
    }
    fn range(&self) -> Option<String> {
        Some(format!("{} .. {}", self.0, self.1))
    }
    fn show(&self, value: &Duration) -> Option<String> {
        Some(value.as_millis().to_string())
    }
    field_is_value!(u64, |_, v| u64::try_from(v.as_millis()).unwrap_or(u64::MAX));
}

/// A number of seconds (fractions allowed) from 0 to a bound.
#[derive(Debug)]
pub(crate) struct Seconds(pub f64);

impl Kind for Seconds {
    type Value = Duration;
    fn parse(&self, text: &str) -> Result<Duration, String> {
        let max = self.0;
        text.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && (0.0..=max).contains(x))
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("expected a number of seconds from 0 to {max}"))
    }
    fn range(&self) -> Option<String> {
        Some(format!("0 .. {}", self.0))
    }
    fn show(&self, value: &Duration) -> Option<String> {
        Some(value.as_secs_f64().to_string())
    }
    field_is_value!(f64, |_, v| v.as_secs_f64());
}

/// A whole number within bounds.
#[derive(Debug)]
pub(crate) struct Count(pub u64, pub u64);

impl Kind for Count {
    type Value = usize;
    fn parse(&self, text: &str) -> Result<usize, String> {
        let Count(lo, hi) = *self;
        text.parse::<u64>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("expected a whole number from {lo} to {hi}"))
    }
    fn range(&self) -> Option<String> {
        Some(format!("{} .. {}", self.0, self.1))
    }
    fn show(&self, value: &usize) -> Option<String> {
        Some(value.to_string())
    }
    field_is_value!(u64, |_, v| *v as u64);
}

/// A share of one core in percent, a decimal number within bounds.
#[derive(Debug)]
pub(crate) struct Percent(pub f64, pub f64);

impl Kind for Percent {
    type Value = f64;
    fn parse(&self, text: &str) -> Result<f64, String> {
        let Percent(lo, hi) = *self;
        text.parse::<f64>()
            .ok()
            .filter(|p| p.is_finite() && (lo..=hi).contains(p))
            .ok_or_else(|| format!("expected a percentage of one core from {lo} to {hi}"))
    }
    fn range(&self) -> Option<String> {
        Some(format!("{} .. {}", self.0, self.1))
    }
    fn show(&self, value: &f64) -> Option<String> {
        Some(value.to_string())
    }
    field_is_value!(f64, |_, v| *v);
}

/// A whole number within bounds, or by default one derived when the server starts.
#[derive(Debug)]
pub(crate) struct Derived(pub Count, pub &'static str);

impl Kind for Derived {
    type Value = Option<usize>;
    fn parse(&self, text: &str) -> Result<Option<usize>, String> {
        self.0.parse(text).map(Some)
    }
    fn unset(&self) -> &'static str {
        self.1
    }
    fn range(&self) -> Option<String> {
        self.0.range()
    }
    fn show(&self, value: &Option<usize>) -> Option<String> {
        value.map(|n| n.to_string())
    }
    field_is_value!(Display, |k, v| shown(Some(v.map_or_else(|| k.1.to_owned(), |n| n.to_string()))));
}

/// On or off: `true/false/1/0/yes/no/on/off`, any case.
#[derive(Debug)]
pub(crate) struct Switch;

impl Kind for Switch {
    type Value = bool;
    fn parse(&self, text: &str) -> Result<bool, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("expected one of true/false/1/0/yes/no/on/off (any case)".to_owned()),
        }
    }
    fn show(&self, value: &bool) -> Option<String> {
        Some(value.to_string())
    }
    field_is_value!(bool, |_, v| *v);
}

/// `text` or `json`.
#[derive(Debug)]
pub(crate) struct LogFormats;

impl Kind for LogFormats {
    type Value = LogFormat;
    fn parse(&self, text: &str) -> Result<LogFormat, String> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected text or json".to_owned()),
        }
    }
    fn show(&self, value: &LogFormat) -> Option<String> {
        Some(match value {
            LogFormat::Text => "text".to_owned(),
            LogFormat::Json => "json".to_owned(),
        })
    }
    field_is_value!(text);
}

/// Octal permissions up to `0777`.
#[derive(Debug)]
pub(crate) struct Mode;

impl Kind for Mode {
    type Value = u32;
    fn parse(&self, text: &str) -> Result<u32, String> {
        u32::from_str_radix(text.strip_prefix("0o").unwrap_or(text), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| "expected octal permissions from 0 to 0777, for example 0660".to_owned())
    }
    fn show(&self, value: &u32) -> Option<String> {
        Some(format!("{value:04o}"))
    }
    field_is_value!(text);
}

/// A listen address: `host:port`, `:port`, or `unix:` and a socket's path.
#[derive(Debug)]
pub(crate) struct Address;

impl Kind for Address {
    type Value = Cow<'static, str>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        if let Some(path) = unix_socket_path(text) {
            return if path.as_os_str().is_empty() || path.file_name().is_none() {
                Err("expected unix: and the socket's path, for example unix:/run/orchmirror.sock".to_owned())
            } else {
                Ok(Cow::Owned(text.to_owned()))
            };
        }
        resolve_bind(text).map(|_| Cow::Owned(text.to_owned()))
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        Some(value.to_string())
    }
    type Field = String;
    fn field(&self, value: Self::Value) -> String {
        value.into_owned()
    }
    type Logged = Display;
    fn logged(&self, field: &String) -> Display {
        tracing::field::display(field.clone())
    }
}

/// The orchestrator's database: an existing regular file this process can open.
#[derive(Debug)]
pub(crate) struct Database;

impl Kind for Database {
    type Value = Option<PathBuf>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        if text.is_empty() {
            return Err("the path is empty (leave ORCH_DB_PATH unset for demo mode)".to_owned());
        }
        let path = PathBuf::from(text);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such file".to_owned()),
            Err(e) => Err(format!("cannot access it: {e}")),
            Ok(m) if !m.is_file() => Err("not a regular file".to_owned()),
            Ok(_) => match std::fs::File::open(&path) {
                Ok(_) => Ok(Some(path)),
                Err(e) => Err(format!("cannot open it for reading: {e}")),
            },
        }
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        value.as_ref().map(|p| p.display().to_string())
    }
    field_is_value!(text);
}

/// The path of a file (checked when it is read).
#[derive(Debug)]
pub(crate) struct FilePath;

impl Kind for FilePath {
    type Value = Option<PathBuf>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        (!text.is_empty()).then(|| Some(PathBuf::from(text))).ok_or_else(|| "expected the path of a file".to_owned())
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        value.as_ref().map(|p| p.display().to_string())
    }
    field_is_value!(text);
}

/// Host names separated by commas, or `*`.
#[derive(Debug)]
pub(crate) struct HostNames;

impl Kind for HostNames {
    type Value = Vec<String>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        let names: Vec<String> = text.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
        if names.iter().all(|n| valid_host_name(n)) {
            Ok(names)
        } else {
            Err("expected host names separated by commas (letters, digits, '-' and '.'), or *".to_owned())
        }
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        (!value.is_empty()).then(|| value.join(","))
    }
    field_is_value!(Display, |_, v| tracing::field::display(v.join(",")));
}

/// A group: a name or a numeric gid.
#[derive(Debug)]
pub(crate) struct Group;

impl Kind for Group {
    type Value = Option<String>;
    fn parse(&self, text: &str) -> Result<Self::Value, String> {
        let ok = !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        ok.then(|| Some(text.to_owned())).ok_or_else(|| "expected a group name or a numeric gid".to_owned())
    }
    fn show(&self, value: &Self::Value) -> Option<String> {
        value.clone()
    }
    field_is_value!(text);
}

/// The refresh period of every section; the field holds each section's own too.
#[derive(Debug)]
pub(crate) struct Periods(pub Millis);

impl Kind for Periods {
    type Value = Duration;
    fn parse(&self, text: &str) -> Result<Duration, String> {
        self.0.parse(text)
    }
    fn range(&self) -> Option<String> {
        self.0.range()
    }
    fn show(&self, value: &Duration) -> Option<String> {
        self.0.show(value)
    }
    type Field = RefreshPeriods;
    fn field(&self, value: Duration) -> RefreshPeriods {
        RefreshPeriods::uniform(value)
    }
    type Logged = Display;
    /// Each built-in section's period: `stages=1000,queue=1000,…`.
    fn logged(&self, field: &RefreshPeriods) -> Display {
        let periods: Vec<String> =
            SectionName::BUILT_IN.iter().map(|n| format!("{n}={}", field.get(*n).as_millis())).collect();
        tracing::field::display(periods.join(","))
    }
}
