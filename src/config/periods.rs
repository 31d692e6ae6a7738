//! Refresh periods: the default and each section's own.

use std::time::Duration;

use crate::config::error::ConfigError;
use crate::section::SectionName;

/// Refresh periods: one for every section (`ORCH_REFRESH_MS`), and any
/// section's own (`ORCH_<NAME>_REFRESH_MS`, host sections included).
#[derive(Debug, Clone)]
pub struct RefreshPeriods {
    default: Duration,
    sections: Vec<(String, Duration)>,
}

impl RefreshPeriods {
    /// The same period for every section.
    pub fn uniform(period: Duration) -> Self {
        Self { default: period, sections: Vec::new() }
    }

    /// This with `section`'s own period set to `period`.
    pub fn with(mut self, section: SectionName, period: Duration) -> Self {
        self.set(section.as_str(), period);
        self
    }

    pub(super) fn set(&mut self, section: &str, period: Duration) {
        self.sections.retain(|(n, _)| n != section);
        self.sections.push((section.to_owned(), period));
    }

    /// The period of one section.
    pub fn get(&self, section: SectionName) -> Duration {
        self.sections.iter().find(|(n, _)| n == section.as_str()).map_or(self.default, |(_, p)| *p)
    }

    /// The period of sections without one of their own.
    pub fn default_period(&self) -> Duration {
        self.default
    }

    /// Fails on the first section given a period of its own that is not in `known`.
    pub fn check(&self, known: &[SectionName]) -> Result<(), ConfigError> {
        match self.sections().find(|s| !known.iter().any(|k| k.as_str() == *s)) {
            None => Ok(()),
            Some(unknown) => Err(ConfigError::UnknownSection {
                var: crate::section::refresh_var_of(unknown),
                known: known.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// The sections given a period of their own, by name.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|(n, _)| n.as_str())
    }
}

/// Equal when every section gets the same period from both.
impl PartialEq for RefreshPeriods {
    fn eq(&self, other: &Self) -> bool {
        let period = |p: &Self, name: &str| p.sections.iter().find(|(n, _)| n == name).map_or(p.default, |(_, d)| *d);
        self.default == other.default
            && self.sections().chain(other.sections()).all(|n| period(self, n) == period(other, n))
    }
}

impl Eq for RefreshPeriods {}

/// Whether `key` (a configuration key: a variable without `ORCH_`, lower
/// case) is a section's own refresh period; gives the section's name.
pub(super) fn section_period_key(key: &str) -> Option<&str> {
    let name = key.strip_suffix("_refresh_ms")?;
    let plain = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    (plain && name.starts_with(|c: char| c.is_ascii_lowercase())).then_some(name)
}
