//! Lifecycle settings: deadlines, signals, exit-code policy, and loading them from
//! the environment.

use std::fmt;
use std::time::Duration;

use crate::signal::Signal;

/// Environment variable for [`Config::drain_delay`].
pub const ENV_DRAIN_DELAY: &str = "TERMINUS_DRAIN_DELAY";
/// Environment variable for [`Config::drain_timeout`].
pub const ENV_DRAIN_TIMEOUT: &str = "TERMINUS_DRAIN_TIMEOUT";
/// Environment variable for [`Config::cleanup_timeout`].
pub const ENV_CLEANUP_TIMEOUT: &str = "TERMINUS_CLEANUP_TIMEOUT";
/// Environment variable for [`Config::grace_period`]: the pod's
/// `terminationGracePeriodSeconds`, as a duration (`30s`).
pub const ENV_GRACE_PERIOD: &str = "TERMINUS_GRACE_PERIOD";
/// Environment variable for [`Config::signals`]: a comma-separated list, e.g. `SIGTERM,SIGINT,SIGUSR2`.
pub const ENV_SIGNALS: &str = "TERMINUS_SIGNALS";

/// The drain delay used when running in Kubernetes: long enough for the endpoint
/// removal to reach kube-proxy and most ingress controllers.
pub const KUBERNETES_DRAIN_DELAY: Duration = Duration::from_secs(5);
/// Default [`Config::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`Config::cleanup_timeout`].
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Which exit code [`Outcome::exit_code`](crate::Outcome::exit_code) reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitCodePolicy {
    /// 0 after a graceful stop, 1 when anything was forced or a fatal error was set.
    /// terminus's `useExit0: true` behaves this way for graceful stops.
    #[default]
    Graceful,
    /// `128 + signal number` when a signal started the shutdown (what a shell reports
    /// for a process killed by that signal, and terminus's default, which re-raises
    /// the signal); otherwise as [`Graceful`](ExitCodePolicy::Graceful).
    SignalNumber,
}

/// The lifecycle settings in force, as [`Terminus::config`](crate::Terminus::config)
/// reports them. Set them with the [`Builder`](crate::Builder), which validates them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    pub(crate) drain_delay: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) cleanup_timeout: Duration,
    pub(crate) signals: Vec<Signal>,
    pub(crate) force_on_second_signal: bool,
    pub(crate) exit_code_policy: ExitCodePolicy,
    pub(crate) shutdown_on_fatal: bool,
    pub(crate) require_mark_ready: bool,
    pub(crate) grace_period: Option<Duration>,
}

impl Config {
    /// How long [`Draining`](crate::Phase::Draining) lasts: readiness fails and traffic
    /// is still served, so that load balancers stop routing here before the listener
    /// closes. Default: 5 s when `KUBERNETES_SERVICE_HOST` is set, else 0.
    pub fn drain_delay(&self) -> Duration {
        self.drain_delay
    }

    /// How long [`Closing`](crate::Phase::Closing) waits for in-flight requests,
    /// connections and tracked tasks before cutting them. Default 20 s.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// The bound on each hook. Default 3 s.
    pub fn cleanup_timeout(&self) -> Duration {
        self.cleanup_timeout
    }

    /// The signals that start a shutdown. Default `SIGTERM`, `SIGINT`.
    pub fn signals(&self) -> &[Signal] {
        &self.signals
    }

    /// Whether a second signal during shutdown skips the rest and forces the exit.
    /// Default `true`.
    pub fn force_on_second_signal(&self) -> bool {
        self.force_on_second_signal
    }

    /// How the outcome maps to an exit code.
    pub fn exit_code_policy(&self) -> ExitCodePolicy {
        self.exit_code_policy
    }

    /// Whether [`set_fatal`](crate::Terminus::set_fatal) also starts a shutdown.
    /// Default `true`.
    pub fn shutdown_on_fatal(&self) -> bool {
        self.shutdown_on_fatal
    }

    /// Whether readiness also waits for [`mark_ready`](crate::Terminus::mark_ready).
    /// Default `false`.
    pub fn require_mark_ready(&self) -> bool {
        self.require_mark_ready
    }

    /// The pod's termination grace period, when known: `build()` rejects deadlines that
    /// cannot finish inside it.
    pub fn grace_period(&self) -> Option<Duration> {
        self.grace_period
    }
}

impl Default for Config {
    fn default() -> Self {
        let in_kubernetes = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        Config {
            drain_delay: if in_kubernetes {
                KUBERNETES_DRAIN_DELAY
            } else {
                Duration::ZERO
            },
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            cleanup_timeout: DEFAULT_CLEANUP_TIMEOUT,
            signals: Signal::DEFAULT.to_vec(),
            force_on_second_signal: true,
            exit_code_policy: ExitCodePolicy::Graceful,
            shutdown_on_fatal: true,
            require_mark_ready: false,
            grace_period: None,
        }
    }
}

impl Config {
    /// Overrides settings from the `TERMINUS_*` variables that `lookup` finds (see
    /// [`Builder::from_env`](crate::Builder::from_env)). A malformed value is an error
    /// naming the variable; nothing is half-applied.
    pub(crate) fn apply_env(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let duration = |name: &'static str| -> Result<Option<Duration>, ConfigError> {
            lookup(name)
                .map(|value| parse_duration(&value).map_err(|message| ConfigError::new(name, message)))
                .transpose()
        };
        if let Some(value) = duration(ENV_DRAIN_DELAY)? {
            self.drain_delay = value;
        }
        if let Some(value) = duration(ENV_DRAIN_TIMEOUT)? {
            self.drain_timeout = value;
        }
        if let Some(value) = duration(ENV_CLEANUP_TIMEOUT)? {
            self.cleanup_timeout = value;
        }
        if let Some(value) = duration(ENV_GRACE_PERIOD)? {
            self.grace_period = Some(value);
        }
        if let Some(list) = lookup(ENV_SIGNALS) {
            self.signals = parse_signals(&list)?;
        }
        Ok(self)
    }

    /// Checks the settings. `before_hooks` is the number of `before_shutdown` hooks
    /// (they run during the drain delay) and `cleanup_hooks` the number of `on_signal`
    /// and `on_shutdown` hooks; each hook may use a whole `cleanup_timeout`.
    pub(crate) fn validate(&self, before_hooks: usize, cleanup_hooks: usize) -> Result<(), ConfigError> {
        if self.drain_timeout.is_zero() {
            return Err(ConfigError::new(
                "drain_timeout",
                "must be greater than zero: a zero drain timeout cuts every in-flight request",
            ));
        }
        if self.cleanup_timeout.is_zero() {
            return Err(ConfigError::new(
                "cleanup_timeout",
                "must be greater than zero: a zero cleanup timeout fails every hook",
            ));
        }
        if let Some(grace) = self.grace_period {
            let budget = self.worst_case(before_hooks, cleanup_hooks);
            if budget > grace {
                return Err(ConfigError::new(
                    "grace_period",
                    format!(
                        "draining {} + drain_timeout {} + {} cleanup hook(s) x cleanup_timeout {} = {}, \
                         {} more than the grace period of {}: the kubelet would SIGKILL the process \
                         before its shutdown is done",
                        fmt_duration(self.draining_worst_case(before_hooks)),
                        fmt_duration(self.drain_timeout),
                        cleanup_hooks,
                        fmt_duration(self.cleanup_timeout),
                        fmt_duration(budget),
                        fmt_duration(budget - grace),
                        fmt_duration(grace),
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The longest a shutdown can take, from the signal to `Stopped`, with this many
    /// `before_shutdown` hooks and `on_signal` + `on_shutdown` hooks.
    pub fn worst_case(&self, before_hooks: usize, cleanup_hooks: usize) -> Duration {
        self.draining_worst_case(before_hooks)
            .saturating_add(self.drain_timeout)
            .saturating_add(self.cleanup_timeout.saturating_mul(saturating_u32(cleanup_hooks)))
    }

    /// Draining lasts the drain delay, or longer if the `before_shutdown` hooks
    /// (which run during it, one after another) take longer.
    fn draining_worst_case(&self, before_hooks: usize) -> Duration {
        let hooks = self.cleanup_timeout.saturating_mul(saturating_u32(before_hooks));
        self.drain_delay.max(hooks)
    }
}

/// Parses `SIGTERM,SIGINT`. An empty list is an error: it would leave the process with
/// no graceful shutdown at all, SIGTERM killing it on the spot.
fn parse_signals(list: &str) -> Result<Vec<Signal>, ConfigError> {
    let signals = list
        .split(',')
        .filter(|name| !name.trim().is_empty())
        .map(|name| name.parse::<Signal>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ConfigError::new(ENV_SIGNALS, error.to_string()))?;
    if signals.is_empty() {
        return Err(ConfigError::new(
            ENV_SIGNALS,
            format!(
                "`{list}` names no signal; without one, SIGTERM would kill the process with no \
                 graceful shutdown. Unset it for the default (SIGTERM,SIGINT)"
            ),
        ));
    }
    Ok(signals)
}

/// Parses `1500ms`, `5s`, `1m 30s` (humantime's format) into a duration.
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|error| {
        format!("invalid duration `{value}` ({error}); expected a number and a unit, like `1500ms` or `5s`")
    })
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn fmt_duration(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

/// An invalid setting: which field (or environment variable) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    message: String,
}

impl ConfigError {
    /// A new error about `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            message: message.into(),
        }
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

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn environment_durations_accept_milliseconds_and_seconds() {
        let config = Config::default()
            .apply_env(env(&[
                (ENV_DRAIN_DELAY, "1500ms"),
                (ENV_DRAIN_TIMEOUT, "5s"),
                (ENV_CLEANUP_TIMEOUT, "1m 30s"),
                (ENV_SIGNALS, "SIGTERM, usr2"),
            ]))
            .unwrap();
        assert_eq!(config.drain_delay, Duration::from_millis(1500));
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.cleanup_timeout, Duration::from_secs(90));
        assert_eq!(config.signals, vec![Signal::Term, Signal::Usr2]);
    }

    #[test]
    fn malformed_environment_value_names_the_variable() {
        let error = Config::default()
            .apply_env(env(&[(ENV_DRAIN_DELAY, "5")]))
            .unwrap_err();
        assert_eq!(error.field(), ENV_DRAIN_DELAY);
        assert!(error.to_string().contains("TERMINUS_DRAIN_DELAY"), "{error}");

        let error = Config::default()
            .apply_env(env(&[(ENV_SIGNALS, "SIGTERM,SIGNOPE")]))
            .unwrap_err();
        assert_eq!(error.field(), ENV_SIGNALS);
        assert!(error.message().contains("SIGNOPE"));
    }

    #[test]
    fn an_empty_signal_list_is_an_error_naming_the_variable() {
        for value in ["", " ", ",", " , ,"] {
            let error = Config::default()
                .apply_env(env(&[(ENV_SIGNALS, value)]))
                .unwrap_err();
            assert_eq!(error.field(), ENV_SIGNALS, "for `{value}`");
            assert!(error.message().contains("names no signal"), "{error}");
        }
    }

    #[test]
    fn zero_drain_timeout_is_rejected_by_name() {
        let config = Config {
            drain_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(config.validate(0, 0).unwrap_err().field(), "drain_timeout");
    }

    #[test]
    fn budget_over_the_grace_period_is_rejected() {
        let config = Config {
            drain_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
            cleanup_timeout: Duration::from_secs(3),
            grace_period: Some(Duration::from_secs(30)),
            ..Config::default()
        };
        assert!(config.validate(1, 1).is_ok());
        let error = config.validate(0, 2).unwrap_err();
        assert_eq!(error.field(), "grace_period");
        assert!(
            error
                .message()
                .contains("= 31s, 1s more than the grace period of 30s"),
            "{}",
            error.message()
        );
    }
}
