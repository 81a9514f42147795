//! [`ShutdownController`]: the shared handle to one server's lifecycle.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, ExitCodePolicy, ENV_DRAIN_DELAY};
use crate::health::{Check, CheckKind, HealthRegistry, LifecycleState, ProbeRequest, Report};
use crate::hooks::{BoxError, Hook, HookStage};
use crate::in_flight::{Counter, RequestGuard, TrackedTasks};
use crate::outcome::{Outcome, ShutdownReason};
use crate::phase::Phase;
use crate::signal::{self, Signal};

/// The handle to one server's lifecycle: its phase, deadlines, hooks, signals,
/// in-flight requests and tracked tasks.
///
/// Cheap to clone; every clone sees the same state. There is no global state: two
/// controllers in one process are independent.
///
/// ```
/// use std::time::Duration;
/// use terminus_core::{Phase, ShutdownController};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let controller = ShutdownController::builder()
///     .drain_delay(Duration::ZERO)
///     .on_shutdown("close pool", || async { Ok(()) })
///     .build()?;
/// controller.mark_listeners_bound();
/// assert_eq!(controller.phase(), Phase::Serving);
///
/// controller.shutdown("test over");
/// assert!(controller.token().is_cancelled());
/// let outcome = controller.run(terminus_core::NoConnections).await;
/// assert!(outcome.is_graceful());
/// assert_eq!(controller.phase(), Phase::Stopped);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ShutdownController {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) hooks: Vec<Hook>,
    created: Instant,
    /// Mirror of `phase_tx` for the request path: one atomic load, no lock.
    phase: AtomicU8,
    phase_tx: watch::Sender<Phase>,
    /// Serialises transitions so that phases never move backwards.
    transition: Mutex<PhaseClock>,
    /// The first reason a shutdown was asked for; `None` until then.
    reason: Mutex<Option<ShutdownReason>>,
    /// Fires when Draining begins.
    pub(crate) draining: CancellationToken,
    /// Fires when a second signal (or `force()`) asks to skip the rest.
    pub(crate) force: CancellationToken,
    fatal: Mutex<Option<String>>,
    is_fatal: AtomicBool,
    listeners_bound: AtomicBool,
    app_ready: AtomicBool,
    signals_installed: AtomicBool,
    pub(crate) in_flight: Counter,
    pub(crate) drained: AtomicU64,
    pub(crate) tracked: Arc<TrackedTasks>,
    pub(crate) running: AtomicBool,
    pub(crate) outcome: Mutex<Option<Outcome>>,
    /// The health checks behind the probes.
    pub(crate) health: HealthRegistry,
    /// Every startup check passed once (`true` from the start when there are none).
    startup_checks_passed: AtomicBool,
    /// The task retrying startup checks was spawned.
    startup_runner: AtomicBool,
}

/// How often startup checks are retried until they pass.
const STARTUP_CHECK_RETRY: Duration = Duration::from_millis(500);

struct PhaseClock {
    since: Instant,
}

impl fmt::Debug for ShutdownController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownController")
            .field("phase", &self.phase())
            .field("in_flight", &self.in_flight())
            .field("tracked_tasks", &self.tracked_tasks())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

impl ShutdownController {
    /// Starts configuring a controller.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.inner.phase()
    }

    /// A subscription to phase changes; the receiver's current value is the phase now.
    ///
    /// ```
    /// # use terminus_core::{Phase, ShutdownController};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let controller = ShutdownController::builder().build().unwrap();
    /// let mut phases = controller.subscribe();
    /// controller.shutdown("demo");
    /// phases.changed().await.unwrap();
    /// assert_eq!(*phases.borrow(), Phase::Draining);
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.inner.phase_tx.subscribe()
    }

    /// A token that is cancelled when Draining begins: hand it to background loops
    /// and long-lived handlers so they finish (`token.cancelled().await`).
    pub fn token(&self) -> CancellationToken {
        self.inner.draining.clone()
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Starts the shutdown sequence without a signal (tests, admin endpoints, a
    /// dependency that went away for good). Later calls are ignored; the first reason
    /// is the one reported.
    pub fn shutdown(&self, reason: impl Into<ShutdownReason>) {
        self.inner.request_shutdown(reason.into());
    }

    /// Skips whatever is left of the shutdown: cuts connections and tasks now and runs
    /// no further hooks, as a second signal does. Starts a shutdown if none is running.
    pub fn force(&self) {
        self.inner.request_shutdown("forced".into());
        self.inner.force.cancel();
    }

    /// Why the shutdown started, once it has.
    pub fn shutdown_reason(&self) -> Option<ShutdownReason> {
        lock(&self.inner.reason).clone()
    }

    /// Marks an unrecoverable error (a port already in use, a lost invariant):
    /// liveness fails from now on, so the orchestrator restarts the process, and
    /// (unless `shutdown_on_fatal(false)`) a shutdown starts. The first error is kept.
    pub fn set_fatal(&self, error: impl fmt::Display) {
        let error = error.to_string();
        {
            let mut fatal = lock(&self.inner.fatal);
            if fatal.is_none() {
                tracing::error!(target: "terminus", error = %error, "fatal error: liveness now fails");
                *fatal = Some(error.clone());
            }
        }
        self.inner.is_fatal.store(true, Ordering::Release);
        if self.inner.config.shutdown_on_fatal {
            self.inner.request_shutdown(ShutdownReason::Fatal(error));
        }
    }

    /// The fatal error, if one was set.
    pub fn fatal(&self) -> Option<String> {
        lock(&self.inner.fatal).clone()
    }

    /// `true` unless a fatal error was set. Liveness keeps passing while draining.
    pub fn is_live(&self) -> bool {
        !self.inner.is_fatal.load(Ordering::Acquire)
    }

    /// `true` only while [`Serving`](Phase::Serving).
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Serving
    }

    /// `true` once startup is done: every listener bound, `mark_ready` called when
    /// required, and every startup check passed once. Stays `true` through shutdown.
    pub fn is_started(&self) -> bool {
        self.inner.startup_done()
    }

    /// Tells the controller that every listener is bound. `serve` calls this; call it
    /// yourself only when you run your own accept loop.
    pub fn mark_listeners_bound(&self) {
        self.inner.listeners_bound.store(true, Ordering::Release);
        self.inner.maybe_serving();
        self.drive_startup_checks();
    }

    /// Tells the controller the application finished its own startup (caches warm,
    /// migrations run). Only needed with `require_mark_ready(true)`.
    pub fn mark_ready(&self) {
        self.inner.app_ready.store(true, Ordering::Release);
        self.inner.maybe_serving();
        self.drive_startup_checks();
    }

    /// The health checks registered with the builder.
    pub fn health(&self) -> &HealthRegistry {
        &self.inner.health
    }

    /// A snapshot of the lifecycle, as probes see it.
    pub fn lifecycle_state(&self) -> LifecycleState {
        LifecycleState {
            phase: self.phase(),
            fatal: !self.is_live(),
            prerequisites_met: self.inner.startup_prerequisites(),
            startup_done: self.inner.startup_done(),
        }
    }

    /// Runs the probe of `kind` (its lifecycle rules and every check of that kind) and
    /// reports, for logs, admin pages or transports other than HTTP.
    pub async fn report(&self, kind: CheckKind) -> Report {
        self.probe(&ProbeRequest::kind(kind)).await
    }

    /// Runs one probe as `request` describes it; `tower-terminus` calls this for every
    /// probe request. A complete startup probe that passes marks startup as done.
    pub async fn probe(&self, request: &ProbeRequest) -> Report {
        let report = self.inner.health.run(request, self.lifecycle_state()).await;
        if report.passed() && request.is_whole(CheckKind::Startup) && report.gate.passed {
            self.inner.startup_checks_pass();
        }
        report
    }

    /// With startup checks registered, Serving waits for them: once the other
    /// prerequisites are met, a task runs them until they pass (or shutdown begins).
    fn drive_startup_checks(&self) {
        let inner = &self.inner;
        if inner.startup_checks_passed.load(Ordering::Acquire) || !inner.startup_prerequisites() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() || inner.startup_runner.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                if inner.is_shutting_down() || inner.startup_checks_passed.load(Ordering::Acquire) {
                    return;
                }
                let controller = ShutdownController { inner };
                if controller.report(CheckKind::Startup).await.passed() {
                    return;
                }
                drop(controller);
                tokio::time::sleep(STARTUP_CHECK_RETRY).await;
            }
        });
    }

    /// Counts one request as in flight until the guard is dropped. Closing waits for
    /// the count to reach zero. `tower-terminus` calls this for every non-probe request.
    pub fn track_request(&self) -> RequestGuard {
        RequestGuard::new(Arc::clone(&self.inner))
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.get()
    }

    /// Spawns work that Closing waits for (a queue consumer finishing its batch, a
    /// WebSocket session). At `drain_timeout` the task is aborted and counted as cut.
    /// Pair it with [`token`](Self::token) so the work knows when to wrap up.
    ///
    /// ```
    /// # use terminus_core::ShutdownController;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let controller = ShutdownController::builder().build().unwrap();
    /// let token = controller.token();
    /// controller.spawn_tracked(async move {
    ///     token.cancelled().await; // finish the current batch, then return
    /// });
    /// assert_eq!(controller.tracked_tasks(), 1);
    /// # }
    /// ```
    pub fn spawn_tracked<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.tracked.spawn(future)
    }

    /// Tracked tasks still running.
    pub fn tracked_tasks(&self) -> usize {
        self.inner.tracked.count()
    }

    /// Installs the signal handlers (idempotent). `build()` does this when called inside
    /// a Tokio runtime and `serve` does it otherwise; once installed, the configured
    /// signals no longer kill the process but start the shutdown sequence.
    pub fn listen_for_signals(&self) {
        if self.inner.signals_installed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Signal>();
        signal::listen(&self.inner.config.signals, tx);
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(signal) = rx.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                inner.on_signal(signal);
            }
        });
    }
}

impl Inner {
    pub(crate) fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// One atomic load: `CancellationToken::is_cancelled` takes a lock, and this runs at
    /// the end of every request. The phase changes to Draining before the token fires.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.phase().is_shutting_down()
    }

    fn startup_done(&self) -> bool {
        self.startup_prerequisites() && self.startup_checks_passed.load(Ordering::Acquire)
    }

    /// Everything startup needs except the startup checks.
    fn startup_prerequisites(&self) -> bool {
        self.listeners_bound.load(Ordering::Acquire)
            && (!self.config.require_mark_ready || self.app_ready.load(Ordering::Acquire))
    }

    fn startup_checks_pass(&self) {
        if !self.startup_checks_passed.swap(true, Ordering::AcqRel) {
            tracing::info!(target: "terminus", "startup checks passed");
            self.maybe_serving();
        }
    }

    fn maybe_serving(&self) {
        if self.startup_done() {
            self.enter(Phase::Serving, "startup done");
        }
    }

    fn on_signal(&self, signal: Signal) {
        if self.is_shutting_down() {
            if self.config.force_on_second_signal {
                tracing::warn!(
                    target: "terminus", signal = signal.name(),
                    "second signal: skipping the rest of the shutdown"
                );
                self.force.cancel();
            } else {
                tracing::info!(
                    target: "terminus", signal = signal.name(),
                    "signal ignored: shutdown already in progress"
                );
            }
            return;
        }
        self.request_shutdown(ShutdownReason::Signal(signal));
    }

    pub(crate) fn request_shutdown(&self, reason: ShutdownReason) {
        {
            let mut slot = lock(&self.reason);
            if slot.is_some() {
                return;
            }
            *slot = Some(reason.clone());
        }
        self.enter(Phase::Draining, &reason.to_string());
        self.draining.cancel();
    }

    /// Moves to `next` if that is forward; logs one event per transition.
    pub(crate) fn enter(&self, next: Phase, reason: &str) -> bool {
        let mut clock = lock(&self.transition);
        let previous = self.phase();
        if next <= previous {
            return false;
        }
        let now = Instant::now();
        let in_previous_ms = now.duration_since(clock.since).as_millis() as u64;
        clock.since = now;
        self.phase.store(next as u8, Ordering::Release);
        self.phase_tx.send_replace(next);
        tracing::info!(
            target: "terminus",
            phase = next.as_str(),
            previous = previous.as_str(),
            reason,
            in_previous_ms,
            since_start_ms = self.created.elapsed().as_millis() as u64,
            "phase changed"
        );
        true
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked: every
/// critical section here is a single read or assignment.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Configures a [`ShutdownController`]; invalid settings are an error from [`build`](Builder::build).
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
    /// Replaces every setting at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self.drain_delay_set = true;
        self
    }

    /// Applies the `TERMINUS_*` environment variables that are set (see
    /// [`Config::from_env`]); a malformed value is an error naming the variable.
    pub fn from_env(self) -> Result<Self, ConfigError> {
        self.from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Builder::from_env) with a custom lookup.
    pub fn from_lookup(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        if lookup(ENV_DRAIN_DELAY).is_some() {
            self.drain_delay_set = true;
        }
        self.config = self.config.from_lookup(lookup)?;
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

    /// The signals that start a shutdown (default `SIGTERM`, `SIGINT`).
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

    /// Adds a hook that runs last, after every `on_signal` hook (terminus's `onShutdown`).
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
    /// use terminus_core::ShutdownController;
    ///
    /// let controller = ShutdownController::builder()
    ///     .readiness(checks::tcp("db", "127.0.0.1:5432"))
    ///     .build()
    ///     .unwrap();
    /// assert!(controller.health().contains("db"));
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

    /// Validates the settings and creates the controller. Inside a Tokio runtime the
    /// signal handlers are installed now, so a signal during startup is not lost.
    pub fn build(mut self) -> Result<ShutdownController, ConfigError> {
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

        let now = Instant::now();
        let (phase_tx, _) = watch::channel(Phase::Starting);
        let health = HealthRegistry::with_phase(self.checks, phase_tx.subscribe())?;
        let startup_checks = health.has_kind(CheckKind::Startup);
        let controller = ShutdownController {
            inner: Arc::new(Inner {
                config: self.config,
                hooks: self.hooks,
                created: now,
                phase: AtomicU8::new(Phase::Starting as u8),
                phase_tx,
                transition: Mutex::new(PhaseClock { since: now }),
                reason: Mutex::new(None),
                draining: CancellationToken::new(),
                force: CancellationToken::new(),
                fatal: Mutex::new(None),
                is_fatal: AtomicBool::new(false),
                listeners_bound: AtomicBool::new(false),
                app_ready: AtomicBool::new(false),
                signals_installed: AtomicBool::new(false),
                in_flight: Counter::default(),
                drained: AtomicU64::new(0),
                tracked: Arc::new(TrackedTasks::default()),
                running: AtomicBool::new(false),
                outcome: Mutex::new(None),
                health,
                startup_checks_passed: AtomicBool::new(!startup_checks),
                startup_runner: AtomicBool::new(false),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            controller.listen_for_signals();
            controller.inner.health.start_background();
        }
        Ok(controller)
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
