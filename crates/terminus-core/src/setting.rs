//! What every setting shares: where its value came from ([`Source`]), the error that
//! refuses it ([`ConfigError`]), and the bounds no setting may pass.
//!
//! A leaf: `config.rs`, `upgrade.rs` and `env.rs` all depend on it, and it on none of
//! them, so the settings' files import one another in one direction only
//! (`env` → `config` → `upgrade` → `setting`).

use std::fmt;
use std::time::Duration;

/// The longest duration any setting accepts: one day. A longer one is a mistake of
/// units, and a deadline that far away would overflow time arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest connection cap: what a Tokio semaphore can hold (about 2.3 × 10¹⁸, far
/// above any file-descriptor limit). A larger number would panic when the server starts.
pub const MAX_CONNECTIONS: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// Where a setting's value came from, as the effective configuration reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Source {
    /// Nobody set it.
    #[default]
    Default,
    /// The [`Builder`](crate::Builder) set it.
    Code,
    /// A `TERMINUS_*` variable set it (read by [`Builder::from_env`](crate::Builder::from_env)).
    Environment,
}

impl Source {
    /// `default`, `code` or `environment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Code => "code",
            Source::Environment => "environment",
        }
    }
}

/// An invalid setting: which field (or environment variable) and why.
#[derive(Debug, Clone)]
pub struct ConfigError {
    field: &'static str,
    message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl ConfigError {
    /// A new error about `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            message: message.into(),
            source: None,
        }
    }

    /// The same error, caused by `source` (kept for [`Error::source`](std::error::Error::source)).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> ConfigError {
        self.source = Some(std::sync::Arc::new(source));
        self
    }

    /// The field or environment variable at fault, e.g. `drain_timeout` or `TERMINUS_DRAIN_DELAY`.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl PartialEq for ConfigError {
    fn eq(&self, other: &Self) -> bool {
        self.field == other.field && self.message == other.message
    }
}

impl Eq for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}
