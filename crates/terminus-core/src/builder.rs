//! [`Builder`]: every setting of a [`Terminus`](crate::Terminus), validated by `build()`.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use crate::config::{Config, ExitCodePolicy};
use crate::env::{closest_known, Env};
use crate::health::{Check, HealthRegistry};
use crate::hooks::{BoxError, Hook, HookStage};
use crate::phase::PhaseCell;
use crate::setting::{ConfigError, Source};
use crate::signal::Signal;

/// Configures a [`Terminus`](crate::Terminus); invalid settings are an error from [`build`](Builder::build),
/// naming the field.
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until build() is called"]
pub struct Builder {
    config: Config,
    /// What `from_env` read: applied over the code's settings by `build()`.
    env: Option<Env>,
    deny_unknown_env: bool,
    readiness_probe: Option<(Duration, u32)>,
    hooks: Vec<Hook>,
    checks: Vec<Check>,
}

/// The validated settings a `Terminus` is made of.
pub(crate) struct Parts {
    pub(crate) config: Config,
    /// In the order they run: by stage, then as registered.
    pub(crate) hooks: Vec<Hook>,
    pub(crate) health: HealthRegistry,
    pub(crate) phase: PhaseCell,
}

impl Builder {
    /// Reads the `TERMINUS_*` environment variables (every one the library knows:
    /// [`VARIABLES`](crate::env::VARIABLES)), to be applied by [`build`](Builder::build)
    /// **over** the settings made in code, wherever this call sits in the chain: code
    /// gives the defaults, the environment overrides them (see [`env`](crate::env)).
    ///
    /// Durations use humantime's format (`1500ms`, `5s`, `1m 30s`) and must be at most
    /// a day; `TERMINUS_SIGNALS` is a list like `SIGTERM,SIGINT,SIGUSR2`;
    /// `TERMINUS_MAX_CONNECTIONS` a number from 1. A malformed, empty or out-of-range
    /// value is an error naming the variable, before anything is bound. A `TERMINUS_*`
    /// name that no setting reads is reported by `build()` with the closest known name
    /// (a `WARN`, or an error with [`deny_unknown_env`](Builder::deny_unknown_env)).
    ///
    /// ```
    /// use terminus_core::Terminus;
    ///
    /// let lookup = |name: &str| (name == "TERMINUS_DRAIN_TIMEOUT").then(|| "soon".to_owned());
    /// let error = Terminus::builder().from_lookup(lookup).unwrap_err();
    /// assert_eq!(error.field(), "TERMINUS_DRAIN_TIMEOUT");
    /// ```
    pub fn from_env(mut self) -> Result<Self, ConfigError> {
        let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        self.env = Some(Env::read(|name| std::env::var(name).ok(), names)?);
        Ok(self)
    }

    /// [`from_env`](Builder::from_env) with a custom lookup (which cannot list names,
    /// so no unknown name is reported).
    pub fn from_lookup(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        self.env = Some(Env::read(lookup, Vec::new())?);
        Ok(self)
    }

    /// The signal that starts an in-place upgrade (default `SIGUSR2`;
    /// `TERMINUS_UPGRADE_SIGNAL`). It must not be one of the [`signals`](Self::signals)
    /// that start a shutdown: `build()` says so, naming the setting.
    #[cfg(feature = "upgrade")]
    #[cfg_attr(docsrs, doc(cfg(feature = "upgrade")))]
    pub fn upgrade_signal(mut self, signal: Signal) -> Self {
        self.config.upgrade.signal = Some(signal);
        self.config.upgrade.signal_source = Source::Code;
        self
    }

    /// How long a successor started by an upgrade has to become ready before it is
    /// killed and the upgrade rolled back (default 30 s; `TERMINUS_UPGRADE_TIMEOUT`).
    #[cfg(feature = "upgrade")]
    #[cfg_attr(docsrs, doc(cfg(feature = "upgrade")))]
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.config.upgrade.timeout = timeout;
        self
    }

    /// A file that always names the serving process's PID (`TERMINUS_PID_FILE`):
    /// written when the first process serves, then by each upgrade once its successor
    /// is ready, atomically (a new file renamed over the old one).
    #[cfg(feature = "upgrade")]
    #[cfg_attr(docsrs, doc(cfg(feature = "upgrade")))]
    pub fn pid_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.upgrade.pid_file = Some(path.into());
        self
    }

    /// Whether a `TERMINUS_*` variable that no setting reads makes `build()` fail
    /// (naming it and the closest known name) instead of logging a `WARN`. Default
    /// `false`.
    pub fn deny_unknown_env(mut self, deny: bool) -> Self {
        self.deny_unknown_env = deny;
        self
    }

    /// How long a client may take to send a request head (on a new connection counted
    /// from the accept, and on HTTP/2 until its first request's HEADERS; on an HTTP/1
    /// keep-alive connection from the first byte of the next head). A client that takes
    /// longer is disconnected, so that slow or silent clients cannot hold every file
    /// descriptor or connection slot. Default 30 s; `None` turns it off.
    /// `TERMINUS_HEADER_READ_TIMEOUT` (`0`: off).
    pub fn header_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.header_read_timeout = timeout;
        self.config.sources.header_read_timeout = Source::Code;
        self
    }

    /// From Closing on, how long a connection with nothing in flight may stay open
    /// before it is closed: an HTTP/2 peer that never acknowledges the GOAWAY, half a
    /// request head, a new connection that has not sent its request yet, an HTTP/1
    /// keep-alive connection still in use (its last response ended less than this ago),
    /// which waits for its client's next request rather than close under it. Closed, not
    /// cut. Default 1 s. `TERMINUS_IDLE_CLOSE_TIMEOUT`.
    pub fn idle_close_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_close_timeout = timeout;
        self.config.sources.idle_close_timeout = Source::Code;
        self
    }

    /// How long a connection may sit between requests while serving (see
    /// [`Config::keep_alive_timeout`]). Default 620 s; `None` turns it off.
    /// `TERMINUS_KEEP_ALIVE_TIMEOUT` (`0`: off).
    pub fn keep_alive_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.keep_alive_timeout = timeout;
        self.config.sources.keep_alive_timeout = Source::Code;
        self
    }

    /// The maximum age of a connection, ±10 % (see [`Config::max_connection_age`]).
    /// Default: none. `TERMINUS_MAX_CONNECTION_AGE`.
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.config.max_connection_age = Some(age);
        self.config.sources.max_connection_age = Source::Code;
        self
    }

    /// What requests in flight get past a connection's maximum age before they are cut
    /// (see [`Config::max_connection_age_grace`]). Default: the drain timeout.
    /// `TERMINUS_MAX_CONNECTION_AGE_GRACE`.
    pub fn max_connection_age_grace(mut self, grace: Duration) -> Self {
        self.config.max_connection_age_grace = Some(grace);
        self.config.sources.max_connection_age_grace = Source::Code;
        self
    }

    /// At most `limit` requests per connection (see
    /// [`Config::max_requests_per_connection`]). Default: none.
    /// `TERMINUS_MAX_REQUESTS_PER_CONNECTION`.
    pub fn max_requests_per_connection(mut self, limit: u64) -> Self {
        self.config.max_requests_per_connection = Some(limit);
        self.config.sources.max_requests_per_connection = Source::Code;
        self
    }

    /// At most `limit` connections at once on the server's public listeners; the admin
    /// listener is not counted. Default: no cap. `TERMINUS_MAX_CONNECTIONS`.
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.config.max_connections = Some(limit);
        self.config.sources.max_connections = Source::Code;
        self
    }

    /// How long readiness fails while traffic is still served, before the listener
    /// closes. Default: 5 s in Kubernetes, else 0.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.config.drain_delay = delay;
        self.config.sources.drain_delay = Source::Code;
        self
    }

    /// How long Closing waits for in-flight work before cutting it. Default 20 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self.config.sources.drain_timeout = Source::Code;
        self
    }

    /// The bound on each hook. Default 3 s.
    pub fn cleanup_timeout(mut self, timeout: Duration) -> Self {
        self.config.cleanup_timeout = timeout;
        self.config.sources.cleanup_timeout = Source::Code;
        self
    }

    /// The pod's `terminationGracePeriodSeconds`: `build()` fails (field `grace_period`)
    /// when the worst-case shutdown does not fit inside it.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config.grace_period = Some(grace);
        self.config.sources.grace_period = Source::Code;
        self
    }

    /// The readiness probe's `periodSeconds` and `failureThreshold`: unless a drain
    /// delay is set explicitly, it becomes `period × failure_threshold`, the longest
    /// the kubelet can take to see the failing probe.
    pub fn readiness_probe(mut self, period: Duration, failure_threshold: u32) -> Self {
        self.readiness_probe = Some((period, failure_threshold));
        self
    }

    /// The signals that start a shutdown (default `SIGTERM`, `SIGINT`). An empty list
    /// installs no handler: the process then shuts down gracefully only through
    /// [`Terminus::shutdown`](crate::Terminus::shutdown) (an empty `TERMINUS_SIGNALS` is an error instead, since
    /// there it is far more likely a mistake).
    pub fn signals(mut self, signals: impl IntoIterator<Item = Signal>) -> Self {
        self.config.signals = signals.into_iter().collect();
        self.config.sources.signals = Source::Code;
        self
    }

    /// Whether a second signal skips the rest of the shutdown (default `true`).
    pub fn force_on_second_signal(mut self, enabled: bool) -> Self {
        self.config.force_on_second_signal = enabled;
        self
    }

    /// How the outcome maps to an exit code (default [`ExitCodePolicy::Graceful`]).
    pub fn exit_code_policy(mut self, policy: ExitCodePolicy) -> Self {
        self.config.exit_code_policy = policy;
        self
    }

    /// Whether `set_fatal` starts a shutdown (default `true`).
    pub fn shutdown_on_fatal(mut self, enabled: bool) -> Self {
        self.config.shutdown_on_fatal = enabled;
        self
    }

    /// Whether readiness also waits for `mark_ready()` (default `false`).
    pub fn require_mark_ready(mut self, required: bool) -> Self {
        self.config.require_mark_ready = required;
        self
    }

    /// Adds a hook that runs when Draining begins, while traffic is still served
    /// (terminus's `beforeShutdown`). Hooks of a stage run in registration order.
    pub fn before_shutdown<F, Fut>(self, name: impl Into<Cow<'static, str>>, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.hook(HookStage::BeforeShutdown, name, hook)
    }

    /// Adds a cleanup hook that runs after connections are closed (terminus's `onSignal`).
    pub fn on_signal<F, Fut>(self, name: impl Into<Cow<'static, str>>, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.hook(HookStage::OnSignal, name, hook)
    }

    /// Adds a hook that runs last, after every `on_signal` hook (terminus's `onShutdown`):
    /// the place to close a connection pool, once no request can use it any more.
    ///
    /// Every hook runs on its own task, bounded by `cleanup_timeout`; a hook that fails,
    /// panics or hangs is reported and the next one still runs. To give a hook state,
    /// use [`with_state`](crate::with_state):
    ///
    /// ```
    /// use terminus_core::{with_state, Terminus};
    /// # #[derive(Clone)] struct Pool; impl Pool { async fn close(&self) {} }
    /// # let pool = Pool;
    /// let terminus = Terminus::builder()
    ///     .on_shutdown("close pool", with_state(pool, |pool| async move {
    ///         pool.close().await;
    ///         Ok(())
    ///     }))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn on_shutdown<F, Fut>(self, name: impl Into<Cow<'static, str>>, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.hook(HookStage::OnShutdown, name, hook)
    }

    /// Adds a health check to the liveness probe (and to any other probe it already
    /// belongs to). A failing critical liveness check fails `/livez`: keep these local
    /// to the process.
    pub fn liveness(self, check: Check) -> Self {
        self.check(check.liveness())
    }

    /// Adds a health check to the readiness probe (and to any other probe it already
    /// belongs to).
    ///
    /// ```
    /// use terminus_core::health::checks;
    /// use terminus_core::Terminus;
    ///
    /// let terminus = Terminus::builder()
    ///     .readiness(checks::tcp("db", "127.0.0.1:5432"))
    ///     .build()
    ///     .unwrap();
    /// assert!(terminus.health().contains("db"));
    /// ```
    pub fn readiness(self, check: Check) -> Self {
        self.check(check.readiness())
    }

    /// Adds a health check to the startup probe (and to any other probe it already
    /// belongs to). The server becomes ready only once every startup check passed.
    pub fn startup(self, check: Check) -> Self {
        self.check(check.startup())
    }

    /// Adds a health check with the kinds it already has; a check of no kind runs only
    /// on custom probe paths that name it. `build()` rejects duplicate names, zero
    /// timeouts and names unfit for paths, naming the field.
    pub fn check(mut self, check: Check) -> Self {
        self.checks.push(check);
        self
    }

    fn hook<F, Fut>(mut self, stage: HookStage, name: impl Into<Cow<'static, str>>, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.hooks.push(Hook::new(stage, name, hook));
        self
    }

    /// Validates the settings: what [`build`](Builder::build) (in `terminus.rs`, where a
    /// `Terminus` is made) turns into a `Terminus`.
    pub(crate) fn validate(mut self) -> Result<Parts, ConfigError> {
        if let Some(env) = self.env.take() {
            self.report_unknown(&env.unknown)?;
            env.apply(&mut self.config);
        }
        if let Some((period, threshold)) = self.readiness_probe {
            if threshold == 0 || period.is_zero() {
                return Err(ConfigError::new(
                    "readiness_probe",
                    "period and failure_threshold must be greater than zero",
                ));
            }
            if self.config.sources.drain_delay == Source::Default {
                self.config.drain_delay = period.saturating_mul(threshold);
                self.config.sources.drain_delay = Source::Code;
            }
        }
        let before = self.count_hooks(|stage| stage == HookStage::BeforeShutdown);
        let cleanup = self.count_hooks(|stage| stage != HookStage::BeforeShutdown);
        #[cfg(feature = "upgrade")]
        self.config
            .upgrade
            .yield_to_shutdown_signals(&self.config.signals);
        self.config.validate(before, cleanup)?;
        let mut signals = Vec::with_capacity(self.config.signals.len());
        for signal in self.config.signals.drain(..) {
            if !signals.contains(&signal) {
                signals.push(signal);
            }
        }
        self.config.signals = signals;
        // Stable order within a stage is registration order; stages run in their own order.
        self.hooks.sort_by_key(|hook| hook.stage as u8);

        let phase = PhaseCell::new();
        let health = HealthRegistry::with_phase(self.checks, phase.subscribe())?;
        Ok(Parts {
            config: self.config,
            hooks: self.hooks,
            health,
            phase,
        })
    }

    /// Warns about (or, with `deny_unknown_env`, rejects) each `TERMINUS_*` name that
    /// no setting reads.
    fn report_unknown(&self, unknown: &[String]) -> Result<(), ConfigError> {
        for name in unknown {
            let closest = closest_known(name);
            if self.deny_unknown_env {
                let hint = closest
                    .map(|known| format!("; did you mean `{known}`?"))
                    .unwrap_or_default();
                return Err(ConfigError::new(
                    "deny_unknown_env",
                    format!("`{name}` is not a variable terminus-rs reads{hint}"),
                ));
            }
            tracing::warn!(
                target: "terminus",
                variable = name.as_str(),
                did_you_mean = closest.unwrap_or(""),
                "unknown TERMINUS_* variable ignored"
            );
        }
        Ok(())
    }

    fn count_hooks(&self, matches: impl Fn(HookStage) -> bool) -> usize {
        self.hooks.iter().filter(|hook| matches(hook.stage)).count()
    }
}

impl ExitCodePolicy {
    /// terminus's `useExit0`: `true` maps to [`ExitCodePolicy::Graceful`].
    pub fn from_use_exit0(use_exit0: bool) -> ExitCodePolicy {
        if use_exit0 {
            ExitCodePolicy::Graceful
        } else {
            ExitCodePolicy::SignalNumber
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{ENV_DRAIN_DELAY, ENV_MAX_CONNECTIONS};
    use crate::Terminus;

    fn lookup(name: &str) -> Option<String> {
        match name {
            ENV_DRAIN_DELAY => Some("2s".to_owned()),
            ENV_MAX_CONNECTIONS => Some("100".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn the_environment_wins_wherever_from_env_sits_in_the_chain() {
        let first = Terminus::builder()
            .from_lookup(lookup)
            .unwrap()
            .drain_delay(Duration::from_secs(9))
            .max_connections(7)
            .drain_timeout(Duration::from_secs(11))
            .build()
            .unwrap();
        let last = Terminus::builder()
            .drain_delay(Duration::from_secs(9))
            .max_connections(7)
            .drain_timeout(Duration::from_secs(11))
            .from_lookup(lookup)
            .unwrap()
            .build()
            .unwrap();
        for terminus in [&first, &last] {
            let config = terminus.config();
            assert_eq!(config.drain_delay(), Duration::from_secs(2));
            assert_eq!(config.max_connections(), Some(100));
            assert_eq!(
                config.drain_timeout(),
                Duration::from_secs(11),
                "code sets what the environment does not"
            );
        }
        assert_eq!(first.config().settings(), last.config().settings());
        let sources: Vec<_> = first
            .config()
            .settings()
            .into_iter()
            .map(|(name, _, source)| (name, source))
            .collect();
        assert!(sources.contains(&("drain_delay", Source::Environment)));
        assert!(sources.contains(&("drain_timeout", Source::Code)));
        assert!(sources.contains(&("cleanup_timeout", Source::Default)));
    }

    #[test]
    fn out_of_range_settings_in_code_fail_at_build_naming_the_field() {
        let cases: Vec<(Builder, &str)> = vec![
            (Terminus::builder().max_connections(0), "max_connections"),
            (Terminus::builder().max_connections(usize::MAX), "max_connections"),
            (
                Terminus::builder().header_read_timeout(Some(Duration::ZERO)),
                "header_read_timeout",
            ),
            (
                Terminus::builder().idle_close_timeout(Duration::ZERO),
                "idle_close_timeout",
            ),
            (
                Terminus::builder().drain_timeout(Duration::from_secs(u64::MAX)),
                "drain_timeout",
            ),
        ];
        for (builder, field) in cases {
            assert_eq!(builder.build().unwrap_err().field(), field);
        }
    }

    #[test]
    fn deny_unknown_env_makes_a_typo_an_error_naming_the_closest_variable() {
        let mut builder = Terminus::builder().deny_unknown_env(true);
        builder.env = Some(Env::read(|_| None, vec!["TERMINUS_DRAIN_DEALY".to_owned()]).unwrap());
        let error = builder.build().unwrap_err();
        assert!(error.message().contains("TERMINUS_DRAIN_DEALY"), "{error}");
        assert!(
            error.message().contains("did you mean `TERMINUS_DRAIN_DELAY`"),
            "{error}"
        );
    }
}
