//! [`Terminus`]: the shared handle to one server's lifecycle.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::builder::{Builder, Parts};
use crate::config::Config;
use crate::health::{CheckKind, HealthRegistry, LifecycleState, ProbeRequest, Probing, Report};
use crate::hooks::Hook;
use crate::lock;
use crate::outcome::{Outcome, ShutdownReason};
use crate::phase::{Phase, PhaseCell};
use crate::requests::{DescribeRequest, RequestGuard, Requests};
use crate::run::{Drain, Lifecycle, Progress, Shutdown};
use crate::setting::ConfigError;
use crate::signal::{self, Signal};
use crate::tasks::TrackedTasks;

/// The handle to one server's lifecycle: its phase, deadlines, hooks, signals,
/// requests in flight and tracked tasks.
///
/// Cheap to clone; every clone sees the same state. There is no global state: two
/// `Terminus` values in one process are independent, and building one has no effect
/// on the process (signal handlers are installed by [`run`](Terminus::run), or
/// earlier by [`listen_for_signals`](Terminus::listen_for_signals)).
///
/// ```
/// use std::time::Duration;
/// use terminus_core::{NoConnections, Phase, Terminus};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder()
///     .drain_delay(Duration::ZERO)
///     .on_shutdown("close pool", || async { Ok(()) })
///     .build()?;
///
/// terminus.shutdown("test over");
/// assert!(terminus.token().is_cancelled());
/// let outcome = terminus.run(NoConnections).await;
/// assert!(outcome.is_graceful());
/// assert_eq!(terminus.phase(), Phase::Stopped);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Terminus {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    hooks: Vec<Hook>,
    phase: PhaseCell,
    /// The first reason a shutdown was asked for; `None` until then.
    reason: Mutex<Option<ShutdownReason>>,
    /// Fires when a second signal (or `force()`) asks to skip the rest.
    force: CancellationToken,
    fatal: OnceLock<String>,
    startup: Mutex<Startup>,
    signals_installed: AtomicBool,
    /// A signal was received: the next one is a second signal.
    signaled: AtomicBool,
    requests: Arc<Requests>,
    tasks: Arc<TrackedTasks>,
    /// Readiness fails while set (see `set_maintenance`). Relaxed: probes read only the
    /// flag itself, nothing is published with it, and the swap alone makes one of two
    /// concurrent switches log.
    maintenance: AtomicBool,
    /// The shutdown's progress, locked by the `run` that drives it (see `run.rs`).
    progress: tokio::sync::Mutex<Progress>,
    /// Set before the phase becomes Stopped, so whoever sees Stopped finds it.
    outcome: OnceLock<Outcome>,
    health: HealthRegistry,
}

/// What Serving waits for. One lock, not a flag per step: each step sets its flag and
/// reads the others at once, so whichever step comes last sees them all. (With separate
/// atomic flags, `mark_listeners_bound` and `mark_ready` on two threads could each
/// store theirs, then load the other's stale value, and Serving would never begin.)
#[derive(Default)]
struct Startup {
    listeners_bound: bool,
    app_ready: bool,
    /// Every startup check passed once (`true` from the start when there are none).
    checks_passed: bool,
    /// The task retrying startup checks was spawned.
    runner_started: bool,
}

impl Startup {
    /// Everything startup needs except the startup checks.
    fn prerequisites(&self, require_mark_ready: bool) -> bool {
        self.listeners_bound && (!require_mark_ready || self.app_ready)
    }

    fn done(&self, require_mark_ready: bool) -> bool {
        self.prerequisites(require_mark_ready) && self.checks_passed
    }
}

/// How often startup checks are retried until they pass.
const STARTUP_CHECK_RETRY: Duration = Duration::from_millis(500);

impl Builder {
    /// Validates the settings and creates the `Terminus`. Building has no effect on the
    /// process: no signal handler is installed and no task is spawned until the server
    /// runs (see [`Terminus::listen_for_signals`]).
    ///
    /// (Written here, with the rest of how a `Terminus` is made, so that `builder.rs`
    /// need not import this file while this one imports it.)
    pub fn build(self) -> Result<Terminus, ConfigError> {
        self.validate().map(Terminus::from_parts)
    }
}

impl fmt::Debug for Terminus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Terminus")
            .field("phase", &self.phase())
            .field("in_flight", &self.in_flight())
            .field("tracked_tasks", &self.tracked_tasks())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Terminus {
    /// Starts configuring a `Terminus`.
    pub fn builder() -> Builder {
        Builder::default()
    }

    fn from_parts(parts: Parts) -> Terminus {
        let Parts {
            config,
            hooks,
            health,
            phase,
        } = parts;
        let startup_checks = health.has_kind(CheckKind::Startup);
        let startup = Startup {
            checks_passed: !startup_checks,
            ..Startup::default()
        };
        Terminus {
            inner: Arc::new(Inner {
                config,
                hooks,
                phase,
                reason: Mutex::new(None),
                force: CancellationToken::new(),
                fatal: OnceLock::new(),
                startup: Mutex::new(startup),
                signals_installed: AtomicBool::new(false),
                signaled: AtomicBool::new(false),
                requests: Arc::default(),
                tasks: Arc::default(),
                maintenance: AtomicBool::new(false),
                progress: tokio::sync::Mutex::default(),
                outcome: OnceLock::new(),
                health,
            }),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.inner.phase.get()
    }

    /// A subscription to phase changes; the receiver's current value is the phase now.
    ///
    /// ```
    /// # use terminus_core::{Phase, Terminus};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let terminus = Terminus::builder().build().unwrap();
    /// let mut phases = terminus.subscribe();
    /// terminus.shutdown("demo");
    /// phases.changed().await.unwrap();
    /// assert_eq!(*phases.borrow(), Phase::Draining);
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.inner.phase.subscribe()
    }

    /// A token that is cancelled when Draining begins: hand it to background loops
    /// and long-lived handlers so they finish (`token.cancelled().await`).
    pub fn token(&self) -> CancellationToken {
        self.inner.phase.draining_token().clone()
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
        if self.inner.fatal.set(error.clone()).is_ok() {
            tracing::error!(target: "terminus", error = %error, "fatal error: liveness now fails");
        }
        if self.inner.config.shutdown_on_fatal {
            self.inner.request_shutdown(ShutdownReason::Fatal(error));
        }
    }

    /// The fatal error, if one was set.
    pub fn fatal(&self) -> Option<&str> {
        self.inner.fatal.get().map(String::as_str)
    }

    /// `true` unless a fatal error was set. Liveness keeps passing while draining.
    pub fn is_live(&self) -> bool {
        self.inner.fatal.get().is_none()
    }

    /// `true` only while [`Serving`](Phase::Serving) and not in
    /// [maintenance](Terminus::set_maintenance).
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Serving && !self.in_maintenance()
    }

    /// Takes the instance out of rotation (`true`) or puts it back (`false`) without
    /// stopping it: while in maintenance, readiness fails (`/readyz`, and every gRPC
    /// health service but liveness is `NOT_SERVING`) with the reason `maintenance`,
    /// liveness passes, and requests are served as usual, so balancers move traffic
    /// away and nothing in flight is lost. A shutdown still wins: turning maintenance
    /// off while draining changes nothing. Operators reach it through the admin
    /// listener (`POST` and `DELETE /maintenance`, see `axum_terminus::admin_router`),
    /// never a public port.
    ///
    /// ```
    /// # use terminus_core::Terminus;
    /// let terminus = Terminus::builder().build().unwrap();
    /// terminus.set_maintenance(true);
    /// assert!(!terminus.is_ready());
    /// ```
    pub fn set_maintenance(&self, on: bool) {
        if self.inner.maintenance.swap(on, Ordering::Relaxed) != on {
            tracing::info!(
                target: "terminus",
                maintenance = on,
                "maintenance switched {}",
                if on { "on: readiness fails" } else { "off: readiness follows the lifecycle and checks" }
            );
            // Whoever watches the lifecycle (gRPC health `Watch` streams) looks again.
            self.inner.phase.announce();
        }
    }

    /// Whether [`set_maintenance(true)`](Terminus::set_maintenance) is in force.
    pub fn in_maintenance(&self) -> bool {
        self.inner.maintenance.load(Ordering::Relaxed)
    }

    /// `true` once startup is done: every listener bound, `mark_ready` called when
    /// required, and every startup check passed once. Stays `true` through shutdown.
    pub fn is_started(&self) -> bool {
        self.inner.startup_done()
    }

    /// Tells the `Terminus` the application finished its own startup (caches warm,
    /// migrations run). Only needed with `require_mark_ready(true)`.
    pub fn mark_ready(&self) {
        lock(&self.inner.startup).app_ready = true;
        self.startup_progressed();
    }

    /// The health checks registered with the builder.
    pub fn health(&self) -> &HealthRegistry {
        &self.inner.health
    }

    /// Runs a probe: a [`CheckKind`] (that probe's lifecycle rules and every check of
    /// its kind, as `/readyz` does) or any [`ProbeRequest`] (named checks, one check,
    /// exclusions). The one way to run a probe outside the HTTP layer: for logs, admin
    /// pages, gRPC health or a server of your own. A whole startup probe that passes
    /// marks startup as done.
    ///
    /// The report is ready at once when every result it needs is fresh in the cache;
    /// [`Probing::now`] takes it without awaiting.
    ///
    /// ```
    /// use terminus_core::health::{Check, CheckKind, ProbeRequest};
    /// use terminus_core::Terminus;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let terminus = Terminus::builder()
    ///     .readiness(Check::new("db", |_| async { Ok(None) }))
    ///     .build()?;
    /// // Not Serving yet (no listener is bound): readiness fails by its lifecycle rules.
    /// assert!(!terminus.probe(CheckKind::Readiness).await.passed());
    /// // Named checks leave the lifecycle aside.
    /// assert!(terminus.probe(ProbeRequest::checks(["db"])).await.passed());
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the [`Probing`] only stops waiting: see its documentation.
    pub fn probe(&self, request: impl Into<ProbeRequest>) -> Probing {
        let request = request.into();
        if let Some(report) = self.cached_probe(&request) {
            return Probing::ready(report);
        }
        let terminus = self.clone();
        Probing::running(async move { terminus.run_probe(&request).await })
    }

    /// Runs the probe of `kind` and reports.
    #[deprecated(note = "use `terminus.probe(kind).await`")]
    pub async fn report(&self, kind: CheckKind) -> Report {
        self.probe(kind).await
    }

    /// Runs the checks of `request`, and marks startup as done when a whole startup
    /// probe passes.
    async fn run_probe(&self, request: &ProbeRequest) -> Report {
        let report = self
            .inner
            .health
            .run_checks(request, self.lifecycle_state())
            .await;
        if report.passed() && request.is_whole(CheckKind::Startup) && report.gate.passed {
            self.inner.startup_checks_pass();
        }
        report
    }

    /// The report of `request` if every result it needs is fresh in the cache.
    pub(crate) fn cached_probe(&self, request: &ProbeRequest) -> Option<Report> {
        // Only `run_probe` may mark startup as done.
        if request.probe_kind() == Some(CheckKind::Startup) {
            return None;
        }
        self.inner.health.try_cached(request, self.lifecycle_state())
    }

    pub(crate) fn lifecycle_state(&self) -> LifecycleState {
        let (prerequisites_met, startup_done) = {
            let startup = lock(&self.inner.startup);
            let require_mark_ready = self.inner.config.require_mark_ready;
            (
                startup.prerequisites(require_mark_ready),
                startup.done(require_mark_ready),
            )
        };
        LifecycleState {
            phase: self.phase(),
            fatal: !self.is_live(),
            prerequisites_met,
            startup_done,
            maintenance: self.in_maintenance(),
        }
    }

    pub(crate) fn mark_listeners_bound(&self) {
        lock(&self.inner.startup).listeners_bound = true;
        self.startup_progressed();
    }

    fn startup_progressed(&self) {
        self.inner.maybe_serving();
        self.drive_startup_checks();
    }

    /// With startup checks registered, Serving waits for them: once the other
    /// prerequisites are met, a task runs them until they pass (or shutdown begins).
    fn drive_startup_checks(&self) {
        let inner = &self.inner;
        {
            let mut startup = lock(&inner.startup);
            if startup.checks_passed
                || !startup.prerequisites(inner.config.require_mark_ready)
                || startup.runner_started
                || tokio::runtime::Handle::try_current().is_err()
            {
                return;
            }
            startup.runner_started = true;
        }
        let weak: Weak<Inner> = Arc::downgrade(inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                if inner.phase.get().is_shutting_down() || lock(&inner.startup).checks_passed {
                    return;
                }
                let terminus = Terminus { inner };
                if terminus.probe(CheckKind::Startup).await.passed() {
                    return;
                }
                drop(terminus);
                tokio::time::sleep(STARTUP_CHECK_RETRY).await;
            }
        });
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.requests.in_flight()
    }

    /// See [`ServerExt::track_request`](crate::server::ServerExt::track_request).
    pub(crate) fn track_request<D: DescribeRequest>(&self, request: D) -> RequestGuard<D> {
        self.inner.requests.track(request)
    }

    /// Spawns work that Closing waits for (a queue consumer finishing its batch, a
    /// WebSocket session). At `drain_timeout` the task is aborted and counted as cut.
    /// Pair it with [`token`](Self::token) so the work knows when to wrap up.
    ///
    /// ```
    /// # use terminus_core::Terminus;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let terminus = Terminus::builder().build().unwrap();
    /// let token = terminus.token();
    /// terminus.spawn_tracked(async move {
    ///     token.cancelled().await; // finish the current batch, then return
    /// });
    /// assert_eq!(terminus.tracked_tasks(), 1);
    /// # }
    /// ```
    pub fn spawn_tracked<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.tasks.spawn(future)
    }

    /// Tracked tasks still running.
    pub fn tracked_tasks(&self) -> usize {
        self.inner.tasks.len()
    }

    /// Installs the signal handlers, if they are not yet installed. From then on the
    /// configured signals no longer kill the process but start the shutdown sequence
    /// (a second one forces it). [`run`](Terminus::run), and so `serve`, calls this;
    /// call it earlier to catch a signal that arrives during startup. Must be called
    /// inside a Tokio runtime.
    pub fn listen_for_signals(&self) {
        // Relaxed: the swap alone decides which call installs; nothing is published with it.
        if self.inner.signals_installed.swap(true, Ordering::Relaxed) {
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

    /// Waits for a shutdown to start (signal, [`shutdown`](Self::shutdown), fatal error),
    /// then drives it to the end and returns what happened:
    ///
    /// 1. **Draining** for `drain_delay`, running `before_shutdown` hooks meanwhile;
    /// 2. **Closing**: `drain.close()`, then wait for zero requests in flight, zero
    ///    tracked tasks and `drain.closed()`, at most `drain_timeout`; then cut the rest;
    /// 3. **CleaningUp**: `on_signal` then `on_shutdown` hooks, each within
    ///    `cleanup_timeout`;
    /// 4. **Stopped**: the [`Outcome`] is published, then the phase changes.
    ///
    /// A second signal (or [`force`](Self::force)) at any point cuts everything at once
    /// and skips the remaining hooks. `run` installs the signal handlers (see
    /// [`listen_for_signals`](Self::listen_for_signals)) and starts the background
    /// health checks. It drives one shutdown: a concurrent call waits for the first to
    /// finish and returns the same outcome, and a later call returns it at once.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the `Terminus` usable, whatever await it was at.
    /// Before a shutdown starts, nothing has happened: a later `run` waits for it as
    /// this one would have. During a shutdown, the steps stop where they are (a hook
    /// then running is aborted) and what was done is kept: a later (or an already
    /// waiting) `run` goes on from there, with the remaining drain delay and drain
    /// timeout, without repeating a finished hook, and with its own `drain` (the
    /// dropped one's connections went with it). Until some `run` finishes,
    /// [`outcome`](Self::outcome) waits.
    pub async fn run(&self, drain: impl Drain) -> Outcome {
        // Held until this future ends or is dropped: one driver at a time, and a
        // waiting `run` takes over from a dropped one.
        let mut progress = self.inner.progress.lock().await;
        if let Some(outcome) = self.inner.outcome.get() {
            return outcome.clone();
        }
        if progress.first_announcement() {
            self.inner.config.log_effective();
        }
        self.listen_for_signals();
        self.inner.health.start_background();
        self.token().cancelled().await;

        let reason = self
            .shutdown_reason()
            .unwrap_or_else(|| ShutdownReason::from("unknown"));
        Shutdown::new(self.inner.lifecycle(), reason, drain, &mut progress)
            .run()
            .await
    }

    /// Waits until the shutdown is complete and returns its [`Outcome`]: the same one
    /// [`run`](Terminus::run) returned. For code that did not call `run` itself, such
    /// as an `axum::serve` task that only awaited `shutdown_signal`.
    ///
    /// # Cancel safety
    ///
    /// Only waits: dropping it changes nothing. It resolves once some
    /// [`run`](Terminus::run) has finished the shutdown; while none drives it (none
    /// was called, or the one called was dropped), it waits.
    pub async fn outcome(&self) -> Outcome {
        let mut phases = self.subscribe();
        // The outcome is stored before Stopped is announced, so seeing Stopped is
        // enough. The sender lives in `self`, so the channel cannot close under us.
        let _ = phases.wait_for(|phase| *phase == Phase::Stopped).await;
        match self.inner.outcome.get() {
            Some(outcome) => outcome.clone(),
            // Stopped is only entered after the outcome was set.
            None => unreachable_outcome(),
        }
    }
}

#[cold]
fn unreachable_outcome() -> Outcome {
    // `finish` sets the outcome, then enters Stopped; nothing else enters Stopped.
    unreachable!("the phase is Stopped but no outcome was published")
}

impl Inner {
    /// The parts of this `Terminus` a shutdown uses (see `run.rs`).
    fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle {
            config: &self.config,
            hooks: &self.hooks,
            phase: &self.phase,
            force: &self.force,
            requests: &self.requests,
            tasks: &self.tasks,
            fatal: &self.fatal,
            outcome: &self.outcome,
        }
    }

    #[cfg(test)]
    fn signals_installed(&self) -> bool {
        self.signals_installed.load(Ordering::Relaxed)
    }

    fn startup_done(&self) -> bool {
        lock(&self.startup).done(self.config.require_mark_ready)
    }

    fn startup_checks_pass(&self) {
        let first = !std::mem::replace(&mut lock(&self.startup).checks_passed, true);
        if first {
            tracing::info!(target: "terminus", "startup checks passed");
            self.maybe_serving();
        }
    }

    fn maybe_serving(&self) {
        if self.startup_done() {
            self.phase.enter(Phase::Serving, "startup done");
        }
    }

    /// A second *signal* forces; the first signal never does, even when a shutdown
    /// started without one. Kubernetes sends SIGTERM after an `httpGet` preStop hook
    /// (which may have started the shutdown through the admin listener), and after a
    /// process that shut itself down fails its probes: that SIGTERM asks for what is
    /// already under way, not for haste.
    fn on_signal(&self, signal: Signal) {
        // Relaxed: the swap alone tells the first signal from a second; what the first
        // one starts is published by `request_shutdown`'s lock and the phase.
        if !self.signaled.swap(true, Ordering::Relaxed) {
            if self.phase.get().is_shutting_down() {
                tracing::info!(
                    target: "terminus", signal = signal.name(),
                    "signal received: the shutdown already under way goes on"
                );
            } else {
                self.request_shutdown(ShutdownReason::Signal(signal));
            }
        } else if self.config.force_on_second_signal {
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
    }

    pub(crate) fn request_shutdown(&self, reason: ShutdownReason) {
        {
            let mut slot = lock(&self.reason);
            if slot.is_some() {
                return;
            }
            *slot = Some(reason.clone());
        }
        // From here on, every request that ends counts as drained.
        self.requests.start_draining();
        self.phase.enter(Phase::Draining, &reason.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use crate::health::{Check, HealthStatus};

    use super::*;

    /// A Serving `Terminus` with one readiness check, `db`, that counts its runs and
    /// takes `delay`.
    fn counting_db(runs: &Arc<AtomicUsize>, delay: Duration) -> Terminus {
        let runs = Arc::clone(runs);
        let terminus = Terminus::builder()
            .readiness(Check::new("db", move |_| {
                let runs = Arc::clone(&runs);
                async move {
                    runs.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                    Ok(None)
                }
            }))
            .build()
            .unwrap();
        terminus.mark_listeners_bound();
        terminus
    }

    async fn a_probe_whose_results_are_cached_is_ready_without_waiting() {
        let runs = Arc::new(AtomicUsize::new(0));
        let terminus = counting_db(&runs, Duration::ZERO);
        let first = terminus.probe(CheckKind::Readiness).now();
        let Err(running) = first else {
            panic!("nothing was cached yet, so the check must run");
        };
        assert_eq!(running.await.status, HealthStatus::Pass);

        let Ok(report) = terminus.probe(CheckKind::Readiness).now() else {
            panic!("the check's result is fresh in the cache");
        };
        assert_eq!(report.status, HealthStatus::Pass);
        assert!(report.checks[0].cached);
        assert_eq!(report.duration, Duration::ZERO);
        // Awaited, a ready probe gives the same report at once.
        assert!(terminus.probe(CheckKind::Readiness).await.checks[0].cached);
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_cached_probe_is_ready_without_waiting_on_a_current_thread_runtime() {
        a_probe_whose_results_are_cached_is_ready_without_waiting().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cached_probe_is_ready_without_waiting_on_a_multi_threaded_runtime() {
        a_probe_whose_results_are_cached_is_ready_without_waiting().await;
    }

    #[test]
    fn a_probe_can_be_held_and_shared_across_threads_like_the_future_it_replaced() {
        fn held_across_awaits<T: Send + Sync + Unpin + 'static>() {}
        held_across_awaits::<Probing>();
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_stops_waiting_and_its_check_still_fills_the_cache() {
        let runs = Arc::new(AtomicUsize::new(0));
        let terminus = counting_db(&runs, Duration::from_millis(100));
        let waited =
            tokio::time::timeout(Duration::from_millis(10), terminus.probe(CheckKind::Readiness)).await;
        assert!(waited.is_err(), "the check takes 100 ms");
        tokio::time::sleep(Duration::from_millis(200)).await;

        let Ok(report) = terminus.probe(CheckKind::Readiness).now() else {
            panic!("the dropped probe's check finished and was cached");
        };
        assert_eq!(report.status, HealthStatus::Pass);
        assert_eq!(runs.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_startup_probe_is_never_ready_at_once_so_that_passing_marks_startup_done() {
        let terminus = Terminus::builder()
            .startup(Check::new("migrations", |_| async { Ok(None) }))
            .build()
            .unwrap();
        terminus.mark_listeners_bound();
        let probing = terminus.probe(CheckKind::Startup);
        let Err(running) = probing.now() else {
            panic!("a startup probe must run to mark startup as done");
        };
        assert!(running.await.passed());
        assert!(lock(&terminus.inner.startup).checks_passed);
    }

    #[tokio::test]
    async fn the_first_signal_after_a_requested_shutdown_does_not_force_it() {
        let terminus = Terminus::builder().build().unwrap();
        terminus.shutdown("preStop hook");
        terminus.inner.on_signal(Signal::Term);
        assert!(
            !terminus.inner.force.is_cancelled(),
            "the kubelet's SIGTERM after preStop"
        );
        assert_eq!(
            terminus.shutdown_reason(),
            Some(ShutdownReason::from("preStop hook")),
            "the first reason is kept"
        );
        terminus.inner.on_signal(Signal::Int);
        assert!(terminus.inner.force.is_cancelled(), "a second signal forces");
    }

    #[tokio::test]
    async fn a_second_signal_forces_unless_configured_not_to() {
        let terminus = Terminus::builder().build().unwrap();
        terminus.inner.on_signal(Signal::Term);
        assert_eq!(terminus.phase(), Phase::Draining);
        assert!(!terminus.inner.force.is_cancelled());
        terminus.inner.on_signal(Signal::Term);
        assert!(terminus.inner.force.is_cancelled());

        let patient = Terminus::builder().force_on_second_signal(false).build().unwrap();
        patient.inner.on_signal(Signal::Term);
        patient.inner.on_signal(Signal::Term);
        assert!(!patient.inner.force.is_cancelled());
    }

    #[test]
    fn building_installs_no_signal_handler() {
        // Inside a runtime, as a library or a test would build one: SIGTERM must still
        // be the default action, so nothing may be listening yet.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let terminus = runtime.block_on(async { Terminus::builder().build().unwrap() });
        assert!(!terminus.inner.signals_installed());
    }
}
