//! [`HealthRegistry`]: the registered checks, run concurrently, bounded, shared and cached.
//!
//! Each check has a slot holding its last result and, while a run is in progress, a
//! `watch` receiver for it. A probe that finds a fresh result uses it; one that finds a
//! run in progress waits for that run; only a probe that finds neither starts a run.
//! So a flood of probes runs a check once per TTL, and never more than one run at a
//! time (single flight).
//!
//! A run is a spawned task wrapping a second spawned task: the inner one runs the
//! user's future, so a panic is caught by its `JoinHandle`; the outer one bounds it by
//! the check's timeout, aborts it when late, and publishes the result. Runs outlive the
//! probe that started them: a client that hangs up does not waste the result.

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::health::check::{Check, CheckContext, CheckKind, CheckResult};
use crate::health::error::CheckError;
use crate::health::report::{CheckReport, Gate, HealthStatus, Report};
use crate::health::request::{LifecycleState, ProbeRequest, Selection, LIFECYCLE_CHECK};
use crate::lock;
use crate::phase::Phase;
use crate::setting::ConfigError;

/// The named checks of one server, and the machinery that runs them.
///
/// A [`Terminus`](crate::Terminus) owns one, filled by its builder's
/// `liveness`, `readiness`, `startup` and `check` methods; reach it with
/// [`terminus.health()`](crate::Terminus::health) to see which checks exist. Probes run
/// them through [`Terminus::probe`](crate::Terminus::probe), the one way to run a
/// probe: it knows the server's lifecycle, which the checks alone do not.
///
/// Cheap to clone; every clone shares the checks, caches and background tasks.
///
/// ```
/// use std::time::Duration;
/// use terminus_core::health::{Check, HealthStatus, ProbeRequest};
/// use terminus_core::Terminus;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder()
///     .readiness(Check::new("db", |_| async { Ok(None) }))
///     .readiness(
///         Check::new("slow", |_| async {
///             tokio::time::sleep(Duration::from_secs(60)).await;
///             Ok(None)
///         })
///         .timeout(Duration::from_millis(50)),
///     )
///     .build()?;
/// assert_eq!(terminus.health().names().collect::<Vec<_>>(), ["db", "slow"]);
///
/// let report = terminus.probe(ProbeRequest::checks(["db", "slow"])).await;
/// assert_eq!(report.status, HealthStatus::Fail);
/// assert!(report.checks[1].error.as_ref().unwrap().is_timeout());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HealthRegistry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    entries: Vec<Arc<Entry>>,
    /// The phase, for background runs (a probe passes its own snapshot).
    phase: watch::Receiver<Phase>,
    background_started: AtomicBool,
    /// Stops the background refresh loops when the registry goes away.
    stop: CancellationToken,
}

impl Drop for RegistryInner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Entry {
    check: Check,
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    last: Option<Arc<Run>>,
    running: Option<watch::Receiver<Option<Arc<Run>>>>,
    /// Failed runs in a row, and when the first of them finished.
    failing: Option<(u32, Instant)>,
}

/// One finished run of a check.
struct Run {
    result: CheckResult,
    duration: Duration,
    /// Until when later probes may reuse it; `None`: until the next run replaces it
    /// (a background-refreshed check). Stored as a deadline so that the test on every
    /// probe is one comparison, not a subtraction of instants.
    fresh_until: Option<Instant>,
    observed_at: SystemTime,
    /// A failure that [`Check::tolerate_failures`] lets pass as a warning.
    tolerated: bool,
}

enum Pending {
    Done(Arc<Run>, bool),
    Waiting(watch::Receiver<Option<Arc<Run>>>),
}

impl HealthRegistry {
    /// A registry of `checks`, for a server assumed to be serving. Invalid checks are an
    /// error naming the field (`check.name`, `check.timeout`, `check.refresh_every`).
    #[deprecated(note = "register the checks on `Terminus::builder()` and run them with `Terminus::probe`")]
    pub fn new(checks: impl IntoIterator<Item = Check>) -> Result<HealthRegistry, ConfigError> {
        HealthRegistry::serving(checks)
    }

    /// A registry of `checks` on its own, for a server assumed to be serving.
    pub(crate) fn serving(checks: impl IntoIterator<Item = Check>) -> Result<HealthRegistry, ConfigError> {
        // The sender is dropped at once: the receiver keeps reading `Serving`.
        let (_, phase) = watch::channel(Phase::Serving);
        HealthRegistry::with_phase(checks.into_iter().collect(), phase)
    }

    pub(crate) fn with_phase(
        checks: Vec<Check>,
        phase: watch::Receiver<Phase>,
    ) -> Result<HealthRegistry, ConfigError> {
        let mut entries: Vec<Arc<Entry>> = Vec::with_capacity(checks.len());
        for check in checks {
            validate(&check)?;
            if entries.iter().any(|entry| entry.check.name == check.name) {
                return Err(ConfigError::new(
                    "check.name",
                    format!("two checks are named `{}`; names must be unique", check.name),
                ));
            }
            entries.push(Arc::new(Entry {
                check,
                slot: Mutex::new(Slot::default()),
            }));
        }
        Ok(HealthRegistry {
            inner: Arc::new(RegistryInner {
                entries,
                phase,
                background_started: AtomicBool::new(false),
                stop: CancellationToken::new(),
            }),
        })
    }

    /// The names of every check, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inner.entries.iter().map(|entry| entry.check.name())
    }

    /// Whether a check named `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Whether a check named `name` belongs to `kind`'s probe.
    pub fn contains_kind(&self, kind: CheckKind, name: &str) -> bool {
        self.find(name).is_some_and(|entry| entry.check.is_kind(kind))
    }

    /// Whether any check belongs to `kind`'s probe.
    pub fn has_kind(&self, kind: CheckKind) -> bool {
        self.inner.entries.iter().any(|entry| entry.check.is_kind(kind))
    }

    /// The number of checks.
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether no check is registered.
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    fn find(&self, name: &str) -> Option<&Arc<Entry>> {
        self.inner.entries.iter().find(|entry| entry.check.name == name)
    }

    /// Starts the background loops of checks configured with
    /// [`refresh_every`](Check::refresh_every). Idempotent; does nothing outside a Tokio
    /// runtime (the first probe starts them then). The loops stop
    /// when the last clone of the registry is dropped.
    pub fn start_background(&self) {
        // Every probe calls this: once started, a plain load answers, without the
        // runtime lookup and the read-modify-write below. Relaxed, here and in the swap:
        // the swap alone makes one caller spawn the loops, and the flag publishes
        // nothing else (the loops own what they use).
        if self.inner.background_started.load(Ordering::Relaxed) {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if self.inner.background_started.swap(true, Ordering::Relaxed) {
            return;
        }
        for entry in &self.inner.entries {
            let Some(period) = entry.check.refresh_every else {
                continue;
            };
            let entry = Arc::clone(entry);
            let stop = self.inner.stop.clone();
            let phase = self.inner.phase.clone();
            tokio::spawn(async move {
                loop {
                    let ctx = CheckContext::new(*phase.borrow());
                    let pending = entry.start(ctx, true, Instant::now());
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = pending.wait() => {}
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(period) => {}
                    }
                }
            });
        }
    }

    /// Runs the checks `request` selects, for a server in `state`, and reports.
    #[deprecated(note = "use `Terminus::probe`, which knows the server's state and marks startup as done")]
    pub async fn run(&self, request: &ProbeRequest, state: LifecycleState) -> Report {
        self.run_checks(request, state).await
    }

    /// Runs the checks `request` selects, concurrently, each bounded by its timeout and
    /// served from the cache when fresh, and reports. Never fails and never panics: a
    /// check that errs, panics or times out is a failed check in the report.
    pub(crate) async fn run_checks(&self, request: &ProbeRequest, state: LifecycleState) -> Report {
        // One clock read serves every check's cache test: with the cache warm, reading
        // the clock was the largest single cost of a probe.
        let started = Instant::now();
        self.start_background();
        let (gate, run_checks) = request.gate(&state);
        let ctx = CheckContext::new(state.phase);
        let (pending, unknown_excluded) = self.plan(request, |entry| {
            // Start every run before awaiting any: the checks run concurrently.
            run_checks.then(|| entry.start(ctx, false, started))
        });
        let mut checks = Vec::with_capacity(pending.len());
        for (entry, pending) in pending {
            let report = match pending {
                None => CheckReport::excluded(entry.check.name.clone(), entry.check.critical),
                Some(pending) => {
                    let (run, cached) = pending.wait().await;
                    entry.report(&run, cached)
                }
            };
            checks.push(report);
        }
        let duration = started.elapsed();
        report(request, state, gate, checks, unknown_excluded, duration)
    }

    /// The report [`run_checks`](HealthRegistry::run_checks) would give, if it can be had without
    /// waiting: every check it needs has a fresh result in the cache (or the lifecycle
    /// gate decides without running any). `None` otherwise, and nothing is started:
    /// call `run_checks` then. The report is the same as `run_checks`'s, except that its
    /// [`duration`](Report::duration) is zero: nothing ran or was waited for, and reading
    /// the clock a second time to measure that was a tenth of a cached probe's cost.
    /// [`Terminus::probe`](crate::Terminus::probe) answers with it when it can.
    pub(crate) fn try_cached(&self, request: &ProbeRequest, state: LifecycleState) -> Option<Report> {
        let started = Instant::now();
        self.start_background();
        let (gate, run_checks) = request.gate(&state);
        let mut checks = Vec::new();
        let mut unknown_excluded = Vec::new();
        if request.exclude.is_empty() {
            // The common probe, built without the intermediate lists of `plan`: this is
            // the path a probe flood takes, once per probe.
            if run_checks {
                let mut missing = false;
                self.for_each_selected(request, |entry| match entry.cached(started) {
                    Some(run) if !missing => checks.push(entry.report(&run, true)),
                    _ => missing = true,
                });
                if missing {
                    return None;
                }
            }
        } else {
            let pending;
            (pending, unknown_excluded) =
                self.plan(request, |entry| run_checks.then(|| entry.cached(started)));
            checks.reserve(pending.len());
            for (entry, cached) in pending {
                let report = match cached {
                    None => CheckReport::excluded(entry.check.name.clone(), entry.check.critical),
                    Some(run) => entry.report(run?.as_ref(), true),
                };
                checks.push(report);
            }
        }
        Some(report(
            request,
            state,
            gate,
            checks,
            unknown_excluded,
            Duration::ZERO,
        ))
    }

    /// The selected checks in registration order, each with what `begin` gives it (or
    /// `None` when excluded; `begin` gives `None` to leave a check out), and the excluded
    /// names that match none of them.
    #[allow(clippy::type_complexity)]
    fn plan<'a, T>(
        &'a self,
        request: &ProbeRequest,
        mut begin: impl FnMut(&'a Arc<Entry>) -> Option<T>,
    ) -> (Vec<(&'a Arc<Entry>, Option<T>)>, Vec<String>) {
        let selected = self.select(request);
        let mut pending = Vec::with_capacity(selected.len());
        if request.exclude.is_empty() {
            // The common probe: nothing excluded, no set to build.
            for entry in selected {
                if let Some(begun) = begin(entry) {
                    pending.push((entry, Some(begun)));
                }
            }
            return (pending, Vec::new());
        }
        let mut excluded: BTreeSet<&str> = request
            .exclude
            .iter()
            .map(String::as_str)
            .filter(|name| !name.is_empty())
            .collect();
        for entry in selected {
            if excluded.remove(entry.check.name()) {
                pending.push((entry, None));
            } else if let Some(begun) = begin(entry) {
                pending.push((entry, Some(begun)));
            }
        }
        let unknown_excluded = excluded.into_iter().map(str::to_owned).collect();
        (pending, unknown_excluded)
    }

    fn select(&self, request: &ProbeRequest) -> Vec<&Arc<Entry>> {
        let mut selected = Vec::new();
        self.for_each_selected(request, |entry| selected.push(entry));
        selected
    }

    /// Calls `f` with each check `request` selects, in registration order (in the
    /// request's order for a list of names).
    fn for_each_selected<'a>(&'a self, request: &ProbeRequest, mut f: impl FnMut(&'a Arc<Entry>)) {
        let entries = &self.inner.entries;
        match &request.selection {
            Selection::Kind(kind) => entries.iter().filter(|e| e.check.is_kind(*kind)).for_each(f),
            Selection::Checks(names) => names.iter().filter_map(|name| self.find(name)).for_each(f),
            Selection::Single { name, .. } if name == LIFECYCLE_CHECK => {}
            Selection::Single { kind, name } => {
                if let Some(entry) = self.find(name).filter(|entry| entry.check.is_kind(*kind)) {
                    f(entry);
                }
            }
        }
    }
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.inner.entries.iter().map(|entry| &entry.check))
            .finish()
    }
}

/// The overall verdict over the gate and the checks.
fn report(
    request: &ProbeRequest,
    state: LifecycleState,
    gate: Gate,
    checks: Vec<CheckReport>,
    unknown_excluded: Vec<String>,
    duration: Duration,
) -> Report {
    let status = if !gate.passed || checks.iter().any(|c| c.status == HealthStatus::Fail) {
        HealthStatus::Fail
    } else if checks.iter().any(|c| c.status == HealthStatus::Warn) {
        HealthStatus::Warn
    } else {
        HealthStatus::Pass
    };
    Report {
        kind: request.probe_kind(),
        status,
        gate,
        phase: state.phase,
        checks,
        unknown_excluded,
        duration,
    }
}

fn validate(check: &Check) -> Result<(), ConfigError> {
    let name = check.name();
    let bad_char = |c: char| c.is_ascii_whitespace() || c.is_control() || "/?#&=%,\"".contains(c);
    if name.is_empty() || name.chars().any(bad_char) {
        return Err(ConfigError::new(
            "check.name",
            format!(
                "`{name}` is not a valid check name: it must be non-empty, without spaces or any of / ? # & = % , \" \
                 (names appear in paths and query strings)"
            ),
        ));
    }
    if name == LIFECYCLE_CHECK {
        return Err(ConfigError::new(
            "check.name",
            format!("`{LIFECYCLE_CHECK}` is reserved for the lifecycle gate"),
        ));
    }
    if check.timeout.is_zero() {
        return Err(ConfigError::new(
            "check.timeout",
            format!("check `{name}`: must be greater than zero, or every run fails"),
        ));
    }
    if check.refresh_every.is_some_and(|period| period.is_zero()) {
        return Err(ConfigError::new(
            "check.refresh_every",
            format!("check `{name}`: the refresh period must be greater than zero"),
        ));
    }
    Ok(())
}

impl Entry {
    /// The last result, if still fresh at `now`.
    fn fresh(&self, slot: &Slot, now: Instant) -> Option<Arc<Run>> {
        let last = slot.last.as_ref()?;
        let fresh = last.fresh_until.is_none_or(|until| now < until);
        fresh.then(|| Arc::clone(last))
    }

    /// A fresh cached result, or `None` (then `start` would wait or run).
    fn cached(&self, now: Instant) -> Option<Arc<Run>> {
        self.fresh(&lock(&self.slot), now)
    }

    /// A fresh cached result, the run in progress, or a new run. `force` skips the cache
    /// (background refresh) but still joins a run in progress. `now` is the probe's one
    /// reading of the clock.
    fn start(self: &Arc<Self>, ctx: CheckContext, force: bool, now: Instant) -> Pending {
        let mut slot = lock(&self.slot);
        if !force {
            if let Some(last) = self.fresh(&slot, now) {
                return Pending::Done(last, true);
            }
        }
        if let Some(running) = &slot.running {
            // A closed channel means the run's task died without publishing (its runtime
            // shut down): start a new one rather than wait on it forever.
            if running.has_changed().is_ok() {
                return Pending::Waiting(running.clone());
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let run = Run::now(
                Err(CheckError::cancelled("no Tokio runtime to run the check on")),
                Duration::ZERO,
            );
            return Pending::Done(Arc::new(run), false);
        };
        let (tx, rx) = watch::channel(None);
        slot.running = Some(rx.clone());
        drop(slot);
        runtime.spawn(Arc::clone(self).run(ctx, tx));
        Pending::Waiting(rx)
    }

    async fn run(self: Arc<Self>, ctx: CheckContext, tx: watch::Sender<Option<Arc<Run>>>) {
        let started = Instant::now();
        let timeout = self.check.timeout;
        let task = tokio::spawn((self.check.run)(ctx));
        let abort = task.abort_handle();
        let result = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => match join_error.try_into_panic() {
                Ok(payload) => Err(CheckError::panicked(panic_message(&*payload))),
                Err(_) => Err(CheckError::cancelled("the check's task was cancelled")),
            },
            Err(_elapsed) => {
                abort.abort();
                Err(CheckError::timed_out(timeout))
            }
        };
        let duration = started.elapsed();
        let label = match &result {
            Ok(_) => "pass",
            Err(error) if error.is_timeout() => "timeout",
            Err(error) if error.is_panic() => "panic",
            Err(_) => "fail",
        };
        crate::metrics::check_ran(&self.check.name, duration, label);
        let finished = Instant::now();
        let tolerated = {
            let mut slot = lock(&self.slot);
            match &result {
                Ok(_) => {
                    slot.failing = None;
                    false
                }
                Err(_) => {
                    let (failures, since) = slot.failing.get_or_insert((0, finished));
                    *failures = failures.saturating_add(1);
                    let (failures, since) = (*failures, *since);
                    self.check
                        .tolerance
                        .tolerates(failures, finished.saturating_duration_since(since))
                }
            }
        };
        if let Err(error) = &result {
            // The reason goes to the log in full; probe bodies withhold it by default.
            tracing::warn!(
                target: "terminus",
                check = %self.check.name,
                critical = self.check.critical,
                elapsed_ms = duration.as_millis() as u64,
                timed_out = error.is_timeout(),
                panicked = error.is_panic(),
                tolerated,
                error = %error,
                "health check failed"
            );
        }
        let mut run = Run::now(result, duration);
        run.tolerated = tolerated;
        // A background-refreshed check is always served from its slot.
        run.fresh_until = match self.check.refresh_every {
            Some(_) => None,
            // A TTL too long to add is as good as forever.
            None => finished.checked_add(self.check.cache_ttl),
        };
        let run = Arc::new(run);
        {
            let mut slot = lock(&self.slot);
            slot.last = Some(Arc::clone(&run));
            slot.running = None;
        }
        tx.send_replace(Some(run));
    }

    fn report(&self, run: &Run, cached: bool) -> CheckReport {
        let (status, info, error) = match &run.result {
            Ok(info) => (HealthStatus::Pass, info.clone(), None),
            Err(error) => {
                let status = if self.check.critical && !run.tolerated {
                    HealthStatus::Fail
                } else {
                    HealthStatus::Warn
                };
                (status, None, Some(error.clone()))
            }
        };
        CheckReport {
            name: self.check.name.clone(),
            status,
            critical: self.check.critical,
            excluded: false,
            cached,
            duration: run.duration,
            observed_at: run.observed_at,
            info,
            error,
        }
    }
}

impl Run {
    fn now(result: CheckResult, duration: Duration) -> Run {
        Run {
            result,
            duration,
            fresh_until: Some(Instant::now()),
            observed_at: SystemTime::now(),
            tolerated: false,
        }
    }
}

impl Pending {
    async fn wait(self) -> (Arc<Run>, bool) {
        match self {
            Pending::Done(run, cached) => (run, cached),
            Pending::Waiting(mut rx) => {
                let run = match rx.wait_for(Option::is_some).await {
                    Ok(value) => value.clone(),
                    Err(_closed) => None,
                };
                let run = run.unwrap_or_else(|| {
                    Arc::new(Run::now(
                        Err(CheckError::cancelled("the check's run was cancelled")),
                        Duration::ZERO,
                    ))
                });
                (run, false)
            }
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> Option<String> {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        Some((*message).to_owned())
    } else {
        payload.downcast_ref::<String>().cloned()
    }
}

#[cfg(test)]
mod tests {
    // The tests' counters and flags are Relaxed: each is read after the awaited run
    // that wrote it, and publishes nothing else.
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn counting(name: &'static str, runs: &Arc<AtomicUsize>, delay: Duration) -> Check {
        let runs = Arc::clone(runs);
        Check::new(name, move |_| {
            let runs = Arc::clone(&runs);
            async move {
                runs.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                Ok(None)
            }
        })
        .readiness()
    }

    fn readiness() -> ProbeRequest {
        ProbeRequest::kind(CheckKind::Readiness)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_probes_share_one_run_and_then_the_cache() {
        let runs = Arc::new(AtomicUsize::new(0));
        let registry = HealthRegistry::serving([counting("db", &runs, Duration::from_millis(100))]).unwrap();
        let mut probes = Vec::new();
        for _ in 0..100 {
            let registry = registry.clone();
            probes.push(tokio::spawn(async move {
                registry.run_checks(&readiness(), LifecycleState::serving()).await
            }));
        }
        for probe in probes {
            assert_eq!(probe.await.unwrap().status, HealthStatus::Pass);
        }
        assert_eq!(runs.load(Ordering::Relaxed), 1, "single flight");

        let report = registry.run_checks(&readiness(), LifecycleState::serving()).await;
        assert!(report.checks[0].cached);
        assert_eq!(runs.load(Ordering::Relaxed), 1, "served from the cache");

        tokio::time::advance(DEFAULT_TTL_PLUS).await;
        registry.run_checks(&readiness(), LifecycleState::serving()).await;
        assert_eq!(runs.load(Ordering::Relaxed), 2, "the cache expired");
    }

    const DEFAULT_TTL_PLUS: Duration = Duration::from_millis(1001);

    #[tokio::test(start_paused = true)]
    async fn checks_of_one_probe_run_concurrently() {
        let runs = Arc::new(AtomicUsize::new(0));
        let registry = HealthRegistry::serving([
            counting("a", &runs, Duration::from_millis(300)),
            counting("b", &runs, Duration::from_millis(300)),
            counting("c", &runs, Duration::from_millis(300)),
        ])
        .unwrap();
        let started = Instant::now();
        let report = registry.run_checks(&readiness(), LifecycleState::serving()).await;
        assert_eq!(report.status, HealthStatus::Pass);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_check_fails_at_its_timeout() {
        let registry =
            HealthRegistry::serving([Check::new("hang", |_| std::future::pending()).readiness()]).unwrap();
        let started = Instant::now();
        let report = registry.run_checks(&readiness(), LifecycleState::serving()).await;
        assert_eq!(started.elapsed(), crate::health::DEFAULT_CHECK_TIMEOUT);
        assert_eq!(report.status, HealthStatus::Fail);
        let error = report.checks[0].error.as_ref().unwrap();
        assert!(error.is_timeout());
        assert_eq!(error.message(), "timed out after 500ms");
    }

    #[tokio::test]
    async fn panicking_check_is_a_failed_check() {
        let registry =
            HealthRegistry::serving([Check::new("boom", |_| async { panic!("kaboom") }).readiness()])
                .unwrap();
        let report = registry.run_checks(&readiness(), LifecycleState::serving()).await;
        assert_eq!(report.status, HealthStatus::Fail);
        let error = report.checks[0].error.as_ref().unwrap();
        assert!(error.is_panic());
        assert_eq!(error.message(), "panicked: kaboom");
    }

    #[tokio::test]
    async fn failing_non_critical_check_warns() {
        let registry = HealthRegistry::serving([
            Check::new("db", |_| async { Ok(None) }).readiness(),
            Check::new("cache", |_| async { Err(CheckError::new("down")) })
                .readiness()
                .non_critical(),
        ])
        .unwrap();
        let report = registry.run_checks(&readiness(), LifecycleState::serving()).await;
        assert_eq!(report.status, HealthStatus::Warn);
        assert!(report.passed());
        assert_eq!(report.checks[1].status, HealthStatus::Warn);
    }

    #[tokio::test]
    async fn excluded_checks_do_not_run_and_unknown_names_are_listed() {
        let runs = Arc::new(AtomicUsize::new(0));
        let registry = HealthRegistry::serving([counting("db", &runs, Duration::ZERO)]).unwrap();
        let request = readiness()
            .exclude("db")
            .exclude("nope")
            .exclude("nope")
            .exclude("");
        let report = registry.run_checks(&request, LifecycleState::serving()).await;
        assert_eq!(runs.load(Ordering::Relaxed), 0);
        assert!(report.checks[0].excluded);
        assert_eq!(report.unknown_excluded, vec!["nope".to_owned()]);
    }

    #[tokio::test]
    async fn readiness_fails_while_draining_without_running_checks() {
        let runs = Arc::new(AtomicUsize::new(0));
        let registry = HealthRegistry::serving([counting("db", &runs, Duration::ZERO)]).unwrap();
        let draining = LifecycleState::serving().with_phase(Phase::Draining);
        let report = registry.run_checks(&readiness(), draining).await;
        assert_eq!(report.status, HealthStatus::Fail);
        assert!(report.gate.shutting_down);
        assert_eq!(runs.load(Ordering::Relaxed), 0);
        let live = registry
            .run_checks(&ProbeRequest::kind(CheckKind::Liveness), draining)
            .await;
        assert_eq!(
            live.status,
            HealthStatus::Pass,
            "liveness keeps passing while draining"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn background_checks_refresh_on_their_period_and_probes_read_the_slot() {
        let runs = Arc::new(AtomicUsize::new(0));
        let registry = HealthRegistry::serving([
            counting("db", &runs, Duration::ZERO).refresh_every(Duration::from_secs(10))
        ])
        .unwrap();
        registry.start_background();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(runs.load(Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let report = registry.run_checks(&readiness(), LifecycleState::serving()).await;
        assert!(report.checks[0].cached);
        assert_eq!(runs.load(Ordering::Relaxed), 1);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(runs.load(Ordering::Relaxed), 2);
        drop(registry);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            runs.load(Ordering::Relaxed),
            2,
            "the loop stops with the registry"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tolerant_check_warns_until_both_limits_are_reached() {
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = Arc::clone(&failing);
        let registry = HealthRegistry::serving([Check::new("db", move |_| {
            let failing = flag.load(Ordering::Relaxed);
            async move {
                if failing {
                    Err(CheckError::new("down"))
                } else {
                    Ok(None)
                }
            }
        })
        .readiness()
        .cache_ttl(Duration::ZERO)
        .tolerate_failures(3, Duration::from_secs(10))])
        .unwrap();
        let request = readiness();
        let probe = || registry.run_checks(&request, LifecycleState::serving());
        for _ in 0..3 {
            assert_eq!(probe().await.status, HealthStatus::Warn, "tolerated");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(
            probe().await.status,
            HealthStatus::Warn,
            "3 failures, but only 3 s in error"
        );
        tokio::time::advance(Duration::from_secs(7)).await;
        let report = probe().await;
        assert_eq!(report.status, HealthStatus::Fail, "3+ failures over 10 s");
        assert_eq!(report.checks[0].error.as_ref().unwrap().message(), "down");
        failing.store(false, Ordering::Relaxed);
        assert_eq!(probe().await.status, HealthStatus::Pass);
        failing.store(true, Ordering::Relaxed);
        assert_eq!(
            probe().await.status,
            HealthStatus::Warn,
            "a pass resets the count"
        );
    }

    #[test]
    fn invalid_checks_are_rejected_naming_the_field() {
        let ok = || Check::new("db", |_| async { Ok(None) });
        let error = HealthRegistry::serving([ok(), ok()]).unwrap_err();
        assert_eq!(error.field(), "check.name");
        let error = HealthRegistry::serving([ok().timeout(Duration::ZERO)]).unwrap_err();
        assert_eq!(error.field(), "check.timeout");
        let error = HealthRegistry::serving([Check::new("a b", |_| async { Ok(None) })]).unwrap_err();
        assert_eq!(error.field(), "check.name");
        let error =
            HealthRegistry::serving([Check::new(LIFECYCLE_CHECK, |_| async { Ok(None) })]).unwrap_err();
        assert_eq!(error.field(), "check.name");
        let error = HealthRegistry::serving([ok().refresh_every(Duration::ZERO)]).unwrap_err();
        assert_eq!(error.field(), "check.refresh_every");
    }
}
