//! Lifecycle settings: deadlines, signals, exit-code policy, and the checks `build()`
//! runs on them. `env.rs` reads them from the environment.

use std::time::Duration;

use crate::setting::{ConfigError, Source, MAX_CONNECTIONS, MAX_DURATION};
use crate::signal::Signal;
use crate::upgrade::UpgradeSettings;

/// The drain delay used when running in Kubernetes: long enough for the endpoint
/// removal to reach kube-proxy and most ingress controllers.
pub const KUBERNETES_DRAIN_DELAY: Duration = Duration::from_secs(5);
/// Default [`Config::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default [`Config::cleanup_timeout`].
pub const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Default [`Config::header_read_timeout`]: hyper's default; nginx's
/// `client_header_timeout` is about as long (60 s).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Config::idle_close_timeout`].
pub const DEFAULT_IDLE_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default [`Config::keep_alive_timeout`]: longer than the idle timeouts of the
/// balancers services run behind, so that the balancer, not the server, closes an idle
/// connection (a server that closes first races the balancer's next request: a 502).
/// Google Cloud's load balancers keep backend connections for 600 s and ask for a
/// server timeout of 620 s; AWS's ALB idles out at 60 s, nginx's upstream keep-alive
/// at 60 s, HAProxy's `timeout http-keep-alive` is usually seconds.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(620);

/// Where each setting that the environment can set came from.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sources {
    pub(crate) drain_delay: Source,
    pub(crate) drain_timeout: Source,
    pub(crate) cleanup_timeout: Source,
    pub(crate) grace_period: Source,
    pub(crate) signals: Source,
    pub(crate) header_read_timeout: Source,
    pub(crate) idle_close_timeout: Source,
    pub(crate) max_connections: Source,
    pub(crate) keep_alive_timeout: Source,
    pub(crate) max_connection_age: Source,
    pub(crate) max_connection_age_grace: Source,
    pub(crate) max_requests_per_connection: Source,
}

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
    pub(crate) header_read_timeout: Option<Duration>,
    pub(crate) idle_close_timeout: Duration,
    pub(crate) max_connections: Option<usize>,
    pub(crate) keep_alive_timeout: Option<Duration>,
    pub(crate) max_connection_age: Option<Duration>,
    pub(crate) max_connection_age_grace: Option<Duration>,
    pub(crate) max_requests_per_connection: Option<u64>,
    pub(crate) upgrade: UpgradeSettings,
    pub(crate) sources: Sources,
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

    /// How long a client may take to send a request head: on a new connection counted
    /// from the accept (on HTTP/2, until its first request's HEADERS), on an HTTP/1
    /// keep-alive connection from the first byte of the head. `None`: no bound.
    /// Default 30 s. Enforced by servers such as `axum-terminus`'s.
    pub fn header_read_timeout(&self) -> Option<Duration> {
        self.header_read_timeout
    }

    /// From Closing on, how long a connection with nothing in flight may stay open; an
    /// HTTP/1 keep-alive connection whose last response ended less than this ago waits
    /// for its client's next request. Default 1 s. Enforced by servers such as
    /// `axum-terminus`'s.
    pub fn idle_close_timeout(&self) -> Duration {
        self.idle_close_timeout
    }

    /// At most this many connections at once on the public listeners. Default: no cap.
    pub fn max_connections(&self) -> Option<usize> {
        self.max_connections
    }

    /// The in-place upgrade's settings (used by `axum-terminus`'s `upgrade` feature).
    pub fn upgrade(&self) -> &UpgradeSettings {
        &self.upgrade
    }

    /// Logs one `INFO` event (target `terminus`) with every setting, its value and
    /// where it came from (`default`, `code`, `environment`): what runs, for the
    /// operator. [`Terminus::run`](crate::Terminus::run) calls it once, at start.
    pub fn log_effective(&self) {
        let settings = self.settings();
        let value = |i: usize| settings[i].1.as_str();
        let from = |i: usize| settings[i].2.as_str();
        tracing::info!(
            target: "terminus",
            drain_delay = value(0), drain_delay_from = from(0),
            drain_timeout = value(1), drain_timeout_from = from(1),
            cleanup_timeout = value(2), cleanup_timeout_from = from(2),
            grace_period = value(3), grace_period_from = from(3),
            signals = value(4), signals_from = from(4),
            header_read_timeout = value(5), header_read_timeout_from = from(5),
            idle_close_timeout = value(6), idle_close_timeout_from = from(6),
            max_connections = value(7), max_connections_from = from(7),
            keep_alive_timeout = value(8), keep_alive_timeout_from = from(8),
            max_connection_age = value(9), max_connection_age_from = from(9),
            max_connection_age_grace = value(10), max_connection_age_grace_from = from(10),
            max_requests_per_connection = value(11), max_requests_per_connection_from = from(11),
            force_on_second_signal = self.force_on_second_signal,
            shutdown_on_fatal = self.shutdown_on_fatal,
            require_mark_ready = self.require_mark_ready,
            "effective configuration"
        );
    }

    /// How long a connection may sit between requests while serving: an idle HTTP/1.1
    /// connection is then closed (only when nothing is buffered on it: a request in
    /// transit is answered), an idle HTTP/2 one gets a GOAWAY. Keep it longer than the
    /// idle timeout of the balancer in front (see [`DEFAULT_KEEP_ALIVE_TIMEOUT`]).
    /// `None`: no bound. Default 620 s.
    pub fn keep_alive_timeout(&self) -> Option<Duration> {
        self.keep_alive_timeout
    }

    /// How long a connection may live while serving, give or take 10 % (so that
    /// connections opened together do not close together): past it, an HTTP/1.1
    /// connection's next response says `Connection: close`, an HTTP/2 connection gets a
    /// GOAWAY. This is what lets new instances behind an L4 balancer or a client-side
    /// pool (gRPC's) get traffic after a scale-up. Default: none.
    pub fn max_connection_age(&self) -> Option<Duration> {
        self.max_connection_age
    }

    /// Past its maximum age, how long a connection's requests in flight have to finish
    /// before what is left is cut (and reported). Default: the drain timeout.
    pub fn max_connection_age_grace(&self) -> Duration {
        self.max_connection_age_grace.unwrap_or(self.drain_timeout)
    }

    /// At most this many requests on one connection: the last one's response says
    /// `Connection: close` (HTTP/1.1), or the connection gets a GOAWAY after that many
    /// streams (HTTP/2), every one of them answered. Default: none.
    pub fn max_requests_per_connection(&self) -> Option<u64> {
        self.max_requests_per_connection
    }

    /// Every setting, its value as text, and where it came from: what the
    /// `effective configuration` event at start lists.
    pub fn settings(&self) -> Vec<(&'static str, String, Source)> {
        let s = &self.sources;
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        let optional = |d: Option<Duration>| d.map_or_else(|| "none".to_owned(), duration);
        let signals: Vec<&str> = self.signals.iter().map(|signal| signal.name()).collect();
        vec![
            ("drain_delay", duration(self.drain_delay), s.drain_delay),
            ("drain_timeout", duration(self.drain_timeout), s.drain_timeout),
            (
                "cleanup_timeout",
                duration(self.cleanup_timeout),
                s.cleanup_timeout,
            ),
            ("grace_period", optional(self.grace_period), s.grace_period),
            ("signals", signals.join(","), s.signals),
            (
                "header_read_timeout",
                optional(self.header_read_timeout),
                s.header_read_timeout,
            ),
            (
                "idle_close_timeout",
                duration(self.idle_close_timeout),
                s.idle_close_timeout,
            ),
            (
                "max_connections",
                self.max_connections
                    .map_or_else(|| "none".to_owned(), |n| n.to_string()),
                s.max_connections,
            ),
            (
                "keep_alive_timeout",
                optional(self.keep_alive_timeout),
                s.keep_alive_timeout,
            ),
            (
                "max_connection_age",
                optional(self.max_connection_age),
                s.max_connection_age,
            ),
            (
                "max_connection_age_grace",
                duration(self.max_connection_age_grace()),
                s.max_connection_age_grace,
            ),
            (
                "max_requests_per_connection",
                self.max_requests_per_connection
                    .map_or_else(|| "none".to_owned(), |n| n.to_string()),
                s.max_requests_per_connection,
            ),
        ]
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
            header_read_timeout: Some(DEFAULT_HEADER_READ_TIMEOUT),
            idle_close_timeout: DEFAULT_IDLE_CLOSE_TIMEOUT,
            max_connections: None,
            keep_alive_timeout: Some(DEFAULT_KEEP_ALIVE_TIMEOUT),
            max_connection_age: None,
            max_connection_age_grace: None,
            max_requests_per_connection: None,
            upgrade: UpgradeSettings::default(),
            sources: Sources::default(),
        }
    }
}

impl Config {
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
        for (field, duration) in [
            ("drain_delay", Some(self.drain_delay)),
            ("drain_timeout", Some(self.drain_timeout)),
            ("cleanup_timeout", Some(self.cleanup_timeout)),
            ("grace_period", self.grace_period),
            ("header_read_timeout", self.header_read_timeout),
            ("idle_close_timeout", Some(self.idle_close_timeout)),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("max_connection_age", self.max_connection_age),
            ("max_connection_age_grace", self.max_connection_age_grace),
        ] {
            if duration.is_some_and(|duration| duration > MAX_DURATION) {
                return Err(ConfigError::new(field, "must be at most 1 day"));
            }
        }
        if self.header_read_timeout.is_some_and(|timeout| timeout.is_zero()) {
            return Err(ConfigError::new(
                "header_read_timeout",
                "must be greater than zero (None turns it off)",
            ));
        }
        for (field, duration) in [
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("max_connection_age", self.max_connection_age),
        ] {
            if duration.is_some_and(|duration| duration.is_zero()) {
                return Err(ConfigError::new(
                    field,
                    "must be greater than zero (None turns it off)",
                ));
            }
        }
        if self.max_requests_per_connection == Some(0) {
            return Err(ConfigError::new(
                "max_requests_per_connection",
                "must be greater than zero (None turns it off)",
            ));
        }
        if self.idle_close_timeout.is_zero() {
            return Err(ConfigError::new(
                "idle_close_timeout",
                "must be greater than zero: a new connection gets this long to send the request it was opened for",
            ));
        }
        if let Some(limit) = self.max_connections {
            if limit == 0 || limit > MAX_CONNECTIONS {
                return Err(ConfigError::new(
                    "max_connections",
                    format!("must be between 1 and {}", MAX_CONNECTIONS),
                ));
            }
        }
        #[cfg(feature = "upgrade")]
        self.upgrade.validate(&self.signals)?;
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

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn fmt_duration(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

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
