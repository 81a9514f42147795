//! [`Builder`]: every setting of a [`Terminus`], validated by `build()`.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use crate::config::{Config, ConfigError, ExitCodePolicy, ENV_DRAIN_DELAY};
use crate::health::{Check, HealthRegistry};
use crate::hooks::{BoxError, Hook, HookStage};
use crate::phase::PhaseCell;
use crate::signal::Signal;
use crate::terminus::Terminus;

/// Configures a [`Terminus`]; invalid settings are an error from [`build`](Builder::build),
/// naming the field.
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until build() is called"]
pub struct Builder {
    config: Config,
    drain_delay_set: bool,
    readiness_probe: Option<(Duration, u32)>,
    hooks: Vec<Hook>,
    checks: Vec<Check>,
}

impl Builder {
    /// Applies the `TERMINUS_*` environment variables that are set:
    /// [`ENV_DRAIN_DELAY`], [`ENV_DRAIN_TIMEOUT`](crate::ENV_DRAIN_TIMEOUT),
    /// [`ENV_CLEANUP_TIMEOUT`](crate::ENV_CLEANUP_TIMEOUT) and
    /// [`ENV_GRACE_PERIOD`](crate::ENV_GRACE_PERIOD) (durations like `1500ms`, `5s`,
    /// `1m 30s`), and [`ENV_SIGNALS`](crate::ENV_SIGNALS) (a list like
    /// `SIGTERM,SIGINT,SIGUSR2`). A malformed or empty
    /// value is an error naming the variable; nothing is half-applied.
    ///
    /// ```
    /// use terminus_core::Terminus;
    ///
    /// let lookup = |name: &str| (name == "TERMINUS_DRAIN_TIMEOUT").then(|| "soon".to_owned());
    /// let error = Terminus::builder().from_lookup(lookup).unwrap_err();
    /// assert_eq!(error.field(), "TERMINUS_DRAIN_TIMEOUT");
    /// ```
    pub fn from_env(self) -> Result<Self, ConfigError> {
        self.from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Builder::from_env) with a custom lookup.
    pub fn from_lookup(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        if lookup(ENV_DRAIN_DELAY).is_some() {
            self.drain_delay_set = true;
        }
        self.config = self.config.apply_env(lookup)?;
        Ok(self)
    }

    /// How long readiness fails while traffic is still served, before the listener
    /// closes. Default: 5 s in Kubernetes, else 0.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.config.drain_delay = delay;
        self.drain_delay_set = true;
        self
    }

    /// How long Closing waits for in-flight work before cutting it. Default 20 s.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// The bound on each hook. Default 3 s.
    pub fn cleanup_timeout(mut self, timeout: Duration) -> Self {
        self.config.cleanup_timeout = timeout;
        self
    }

    /// The pod's `terminationGracePeriodSeconds`: `build()` fails (field `grace_period`)
    /// when the worst-case shutdown does not fit inside it.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config.grace_period = Some(grace);
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
    /// [`Terminus::shutdown`] (an empty `TERMINUS_SIGNALS` is an error instead, since
    /// there it is far more likely a mistake).
    pub fn signals(mut self, signals: impl IntoIterator<Item = Signal>) -> Self {
        self.config.signals = signals.into_iter().collect();
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

    /// Validates the settings and creates the `Terminus`. Building has no effect on the
    /// process: no signal handler is installed and no task is spawned until the server
    /// runs (see [`Terminus::listen_for_signals`]).
    pub fn build(mut self) -> Result<Terminus, ConfigError> {
        if let Some((period, threshold)) = self.readiness_probe {
            if threshold == 0 || period.is_zero() {
                return Err(ConfigError::new(
                    "readiness_probe",
                    "period and failure_threshold must be greater than zero",
                ));
            }
            if !self.drain_delay_set {
                self.config.drain_delay = period.saturating_mul(threshold);
            }
        }
        let before = self.count_hooks(|stage| stage == HookStage::BeforeShutdown);
        let cleanup = self.count_hooks(|stage| stage != HookStage::BeforeShutdown);
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
        Ok(Terminus::from_parts(self.config, self.hooks, health, phase))
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
