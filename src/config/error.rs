//! Why a configuration cannot be used.

/// A configuration that cannot be used; the message names the variable and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("invalid {var}={value:?}{origin}: {expected}")]
    Invalid {
        /// The environment variable (or flag) the value belongs to.
        var: String,
        /// The offending value, as given.
        value: String,
        /// Where it came from (file, environment, command line), pre-formatted.
        origin: String,
        /// What would have been accepted.
        expected: String,
    },
    /// The configuration file is missing, unreadable or not TOML.
    #[error("cannot read the configuration file {path} (from {source_name}): {reason}")]
    File {
        /// The file's path.
        path: String,
        /// `ORCH_CONFIG_FILE` or `--config`.
        source_name: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A refresh period for a section that does not exist.
    #[error("{var} names no section (the sections are: {known})")]
    UnknownSection {
        /// The variable, for example `ORCH_STAGE_REFRESH_MS`.
        var: String,
        /// The sections there are.
        known: String,
    },
    /// A key in the configuration file that the mirror does not know.
    #[error("unknown key {key:?} in the configuration file {path} (known keys: {known})")]
    UnknownKey {
        /// The unknown key.
        key: String,
        /// The file's path.
        path: String,
        /// The keys that are accepted.
        known: String,
    },
}
