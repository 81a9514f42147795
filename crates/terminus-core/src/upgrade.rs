//! The settings of the in-place upgrade (the `upgrade` feature of `axum-terminus`,
//! which does the upgrade itself): which signal starts one, how long a successor has
//! to become ready, and the PID file that names the serving process.
//!
//! They live here, with the other settings, so that `TERMINUS_UPGRADE_*` variables are
//! parsed, range-checked and reported like every `TERMINUS_*` variable, and so that
//! `build()` can refuse an upgrade signal that is also a shutdown signal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::setting::{ConfigError, Source, MAX_DURATION};
use crate::signal::Signal;

/// Environment variable for [`UpgradeSettings::signal`], e.g. `SIGUSR2` (the default).
pub const ENV_UPGRADE_SIGNAL: &str = "TERMINUS_UPGRADE_SIGNAL";
/// Environment variable for [`UpgradeSettings::timeout`], e.g. `30s` (the default).
pub const ENV_UPGRADE_TIMEOUT: &str = "TERMINUS_UPGRADE_TIMEOUT";
/// Environment variable for [`UpgradeSettings::pid_file`]: a path.
pub const ENV_PID_FILE: &str = "TERMINUS_PID_FILE";
/// Set by a process for the successor it starts, never by hand: the parent's PID. A
/// process whose parent is that PID takes the sockets passed in `LISTEN_FDS` as its
/// listeners (in place of systemd's `LISTEN_PID`, which only the child can know).
pub const ENV_UPGRADE_FROM: &str = "TERMINUS_UPGRADE_FROM";
/// Set by a process for the successor it starts, never by hand: the datagram socket
/// where the successor sends `READY=1` (the `sd_notify` protocol, the parent playing
/// the service manager's part).
pub const ENV_UPGRADE_NOTIFY_SOCKET: &str = "TERMINUS_UPGRADE_NOTIFY_SOCKET";

/// How long a successor has to become ready unless configured otherwise.
pub const DEFAULT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings of the in-place upgrade, as [`Config::upgrade`](crate::Config::upgrade)
/// reports them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UpgradeSettings {
    /// `None`: upgrades only from code (the default signal yielded to a shutdown signal).
    pub(crate) signal: Option<Signal>,
    pub(crate) timeout: Duration,
    pub(crate) pid_file: Option<PathBuf>,
    pub(crate) signal_source: Source,
}

impl Default for UpgradeSettings {
    fn default() -> Self {
        UpgradeSettings {
            signal: Some(Signal::Usr2),
            timeout: DEFAULT_UPGRADE_TIMEOUT,
            pid_file: None,
            signal_source: Source::Default,
        }
    }
}

impl UpgradeSettings {
    /// The signal that starts an upgrade: `SIGUSR2` by default, unless the shutdown
    /// signals name it (then `None`: upgrades come only from code, as terminus's
    /// `signals: ['SIGUSR2']` users expect SIGUSR2 to stop the process).
    pub fn signal(&self) -> Option<Signal> {
        self.signal
    }

    /// The default upgrade signal yields to a shutdown signal of the same name (logged);
    /// one set explicitly does not, and `validate` rejects the clash.
    #[cfg_attr(not(feature = "upgrade"), allow(dead_code))]
    pub(crate) fn yield_to_shutdown_signals(&mut self, shutdown_signals: &[Signal]) {
        if self.signal_source == Source::Default
            && self
                .signal
                .is_some_and(|signal| shutdown_signals.contains(&signal))
        {
            tracing::info!(
                target: "terminus",
                signal = self.signal.map_or("", |signal| signal.name()),
                "the default upgrade signal is a shutdown signal here: upgrades only from code"
            );
            self.signal = None;
        }
    }

    /// How long a successor has to become ready before it is killed. Default 30 s.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The file that names the serving process's PID, if any.
    pub fn pid_file(&self) -> Option<&Path> {
        self.pid_file.as_deref()
    }

    /// An upgrade signal that also starts a shutdown would do both: an error naming
    /// where the upgrade signal was set. Checked only when the upgrade is built in
    /// (feature `upgrade`): without it, `SIGUSR2` may well be a shutdown signal.
    #[cfg_attr(not(feature = "upgrade"), allow(dead_code))]
    pub(crate) fn validate(&self, shutdown_signals: &[Signal]) -> Result<(), ConfigError> {
        if self.timeout.is_zero() || self.timeout > MAX_DURATION {
            return Err(ConfigError::new(
                "upgrade_timeout",
                "must be greater than zero and at most 1 day",
            ));
        }
        if let Some(signal) = self.signal.filter(|signal| shutdown_signals.contains(signal)) {
            let field = match self.signal_source {
                Source::Environment => ENV_UPGRADE_SIGNAL,
                _ => "upgrade_signal",
            };
            return Err(ConfigError::new(
                field,
                format!(
                    "{} is also a shutdown signal (TERMINUS_SIGNALS): it would start an upgrade and a \
                     shutdown at once; choose another",
                    signal
                ),
            ));
        }
        Ok(())
    }
}

/// What the environment sets for the upgrade.
#[derive(Clone, Debug, Default)]
pub(crate) struct UpgradeEnv {
    signal: Option<Signal>,
    timeout: Option<Duration>,
    pid_file: Option<PathBuf>,
}

impl UpgradeEnv {
    pub(crate) fn read(
        lookup: &impl Fn(&str) -> Option<String>,
        duration: impl Fn(&'static str) -> Result<Option<Duration>, ConfigError>,
    ) -> Result<UpgradeEnv, ConfigError> {
        let signal = lookup(ENV_UPGRADE_SIGNAL)
            .map(|value| {
                value
                    .parse::<Signal>()
                    .map_err(|error| ConfigError::new(ENV_UPGRADE_SIGNAL, error.to_string()))
            })
            .transpose()?;
        let timeout = duration(ENV_UPGRADE_TIMEOUT)?;
        if timeout.is_some_and(|timeout| timeout.is_zero()) {
            return Err(ConfigError::new(ENV_UPGRADE_TIMEOUT, "must be greater than zero"));
        }
        let pid_file = match lookup(ENV_PID_FILE) {
            Some(path) if path.trim().is_empty() => {
                return Err(ConfigError::new(
                    ENV_PID_FILE,
                    "is empty: unset it for no PID file",
                ))
            }
            Some(path) => Some(PathBuf::from(path)),
            None => None,
        };
        Ok(UpgradeEnv {
            signal,
            timeout,
            pid_file,
        })
    }

    pub(crate) fn apply(&self, settings: &mut UpgradeSettings) {
        if let Some(signal) = self.signal {
            settings.signal = Some(signal);
            settings.signal_source = Source::Environment;
        }
        if let Some(timeout) = self.timeout {
            settings.timeout = timeout;
        }
        if let Some(path) = &self.pid_file {
            settings.pid_file = Some(path.clone());
        }
    }
}

#[cfg(all(test, feature = "upgrade"))]
mod tests {
    use crate::Terminus;

    #[test]
    fn an_upgrade_signal_that_also_shuts_down_is_an_error_naming_the_variable() {
        // The default upgrade signal yields to a shutdown signal of the same name.
        let terminus = Terminus::builder()
            .from_lookup(|name| match name {
                "TERMINUS_SIGNALS" => Some("SIGTERM,SIGUSR2".to_owned()),
                _ => None,
            })
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(terminus.config().upgrade().signal(), None);
        // One set explicitly does not.
        let error = Terminus::builder()
            .signals([crate::Signal::Term, crate::Signal::Usr1])
            .upgrade_signal(crate::Signal::Usr1)
            .build()
            .unwrap_err();
        assert_eq!(error.field(), "upgrade_signal", "{error}");

        let error = Terminus::builder()
            .from_lookup(|name| match name {
                "TERMINUS_UPGRADE_SIGNAL" => Some("SIGTERM".to_owned()),
                _ => None,
            })
            .unwrap()
            .build()
            .unwrap_err();
        assert_eq!(error.field(), "TERMINUS_UPGRADE_SIGNAL", "{error}");
    }

    #[test]
    fn the_upgrade_variables_are_read_and_checked() {
        let terminus = Terminus::builder()
            .from_lookup(|name| match name {
                "TERMINUS_UPGRADE_SIGNAL" => Some("usr1".to_owned()),
                "TERMINUS_UPGRADE_TIMEOUT" => Some("5s".to_owned()),
                "TERMINUS_PID_FILE" => Some("app.pid".to_owned()),
                _ => None,
            })
            .unwrap()
            .build()
            .unwrap();
        let upgrade = terminus.config().upgrade();
        assert_eq!(upgrade.signal(), Some(crate::Signal::Usr1));
        assert_eq!(upgrade.timeout(), std::time::Duration::from_secs(5));
        assert_eq!(upgrade.pid_file(), Some(std::path::Path::new("app.pid")));

        let error = Terminus::builder()
            .from_lookup(|name| (name == "TERMINUS_UPGRADE_TIMEOUT").then(|| "0s".to_owned()))
            .unwrap_err();
        assert_eq!(error.field(), "TERMINUS_UPGRADE_TIMEOUT");
    }
}
