//! [`Check`]: one named health check, the probes it belongs to, and how it is run.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::health::error::CheckError;
use crate::phase::Phase;

/// Default bound on one run of a check: half the kubelet's default 1 s probe timeout,
/// so a probe still answers in time when a dependency hangs.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Default time a check result is reused: a probe flood runs a check at most once per second.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(1);

/// What a check returns: optional JSON information on success, or why it failed.
pub type CheckResult = Result<Option<Value>, CheckError>;

pub(crate) type CheckFuture = Pin<Box<dyn Future<Output = CheckResult> + Send + 'static>>;
pub(crate) type CheckFn = Arc<dyn Fn(CheckContext) -> CheckFuture + Send + Sync + 'static>;

/// Which probe a check belongs to. A check may belong to several, or to none (then only
/// custom probe paths that name it run it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckKind {
    /// `/livez`: a failure means "restart me". Keep these few and local; a liveness check
    /// on a shared dependency restarts every pod at once when that dependency fails.
    Liveness,
    /// `/readyz`: a failure means "send me no traffic for now".
    Readiness,
    /// `/startupz`: must pass once before the server is ready; liveness is not probed
    /// by Kubernetes until the startup probe passes.
    Startup,
}

impl CheckKind {
    /// Every kind, in probe order.
    pub const ALL: [CheckKind; 3] = [CheckKind::Liveness, CheckKind::Readiness, CheckKind::Startup];

    /// The probe's short name as kube-apiserver spells it: `livez`, `readyz`, `startupz`.
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Liveness => "livez",
            CheckKind::Readiness => "readyz",
            CheckKind::Startup => "startupz",
        }
    }

    fn bit(self) -> u8 {
        match self {
            CheckKind::Liveness => 1,
            CheckKind::Readiness => 2,
            CheckKind::Startup => 4,
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a check can see of the server it runs in: terminus's `state`.
///
/// ```
/// use terminus_core::health::{Check, CheckContext};
///
/// let check = Check::new("queue", |ctx: CheckContext| async move {
///     // Report the lifecycle alongside the check's own information.
///     Ok(Some(serde_json::json!({ "isShuttingDown": ctx.is_shutting_down() })))
/// });
/// # let _ = check;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckContext {
    phase: Phase,
}

impl CheckContext {
    /// A context for a server in `phase`.
    pub fn new(phase: Phase) -> CheckContext {
        CheckContext { phase }
    }

    /// The server's phase when the run started.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// `true` once shutdown began (terminus's `state.isShuttingDown`).
    pub fn is_shutting_down(&self) -> bool {
        self.phase.is_shutting_down()
    }
}

/// A named health check: an async function, the probes it belongs to, a timeout, whether
/// its failure fails the probe, and how long its result is reused.
///
/// A check returns `Ok(None)`, `Ok(Some(json))` with information for the probe body, or
/// a [`CheckError`]. It runs on its own task: a check that panics or outlives its
/// [`timeout`](Check::timeout) counts as failed, and the probe still answers.
///
/// ```
/// use std::time::Duration;
/// use terminus_core::health::{Check, CheckError};
///
/// let db = Check::new("db", |_ctx| async {
///     // pool.ping().await?;  any std::error::Error converts with `?`
///     Ok(None)
/// })
/// .readiness()
/// .timeout(Duration::from_millis(300));
///
/// let cache = Check::new("cache", |_ctx| async {
///     Err(CheckError::new("redis unreachable"))
/// })
/// .readiness()
/// .non_critical(); // failing gives `warn`: status 200, reported
/// # let _ = (db, cache);
/// ```
#[derive(Clone)]
#[must_use = "a check does nothing until it is registered"]
pub struct Check {
    pub(crate) name: Cow<'static, str>,
    pub(crate) kinds: u8,
    pub(crate) timeout: Duration,
    pub(crate) critical: bool,
    pub(crate) cache_ttl: Duration,
    pub(crate) refresh_every: Option<Duration>,
    pub(crate) tolerance: Tolerance,
    pub(crate) run: CheckFn,
}

/// How many failures in a row, and for how long, a check may fail before the probe
/// reports it failed. The default tolerates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tolerance {
    pub(crate) failures: u32,
    pub(crate) time_in_error: Duration,
}

impl Tolerance {
    /// Whether a failure is still tolerated after `consecutive` failed runs, the first
    /// of them `in_error` ago: until both limits are reached.
    pub(crate) fn tolerates(&self, consecutive: u32, in_error: Duration) -> bool {
        consecutive < self.failures || in_error < self.time_in_error
    }
}

impl Check {
    /// A check called `name` running `check`. It belongs to no probe until
    /// [`liveness`](Check::liveness), [`readiness`](Check::readiness) or
    /// [`startup`](Check::startup) is called (or the builder method of the
    /// same name registers it).
    pub fn new<F, Fut>(name: impl Into<Cow<'static, str>>, check: F) -> Check
    where
        F: Fn(CheckContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        Check {
            name: name.into(),
            kinds: 0,
            timeout: DEFAULT_CHECK_TIMEOUT,
            critical: true,
            cache_ttl: DEFAULT_CACHE_TTL,
            refresh_every: None,
            tolerance: Tolerance {
                failures: 1,
                time_in_error: Duration::ZERO,
            },
            run: Arc::new(move |ctx| Box::pin(check(ctx))),
        }
    }

    /// A check called `name` that runs `check` with a clone of `state` each time: a
    /// connection pool, a client. No clone-inside-the-closure dance.
    ///
    /// ```
    /// use std::time::Duration;
    /// use terminus_core::health::Check;
    ///
    /// #[derive(Clone)]
    /// struct Pool;
    /// impl Pool {
    ///     async fn ping(&self) -> Result<(), std::io::Error> { Ok(()) }
    /// }
    ///
    /// let pool = Pool;
    /// let db = Check::with_state("db", pool.clone(), |pool, _ctx| async move {
    ///     pool.ping().await?;
    ///     Ok(None)
    /// })
    /// .readiness()
    /// .timeout(Duration::from_millis(300));
    /// # let _ = db;
    /// ```
    pub fn with_state<S, F, Fut>(name: impl Into<Cow<'static, str>>, state: S, check: F) -> Check
    where
        S: Clone + Send + Sync + 'static,
        F: Fn(S, CheckContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        Check::new(name, move |ctx| check(state.clone(), ctx))
    }

    /// The check's name, as it appears in reports, `?exclude=` and `/readyz/<name>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds the check to `kind`'s probe.
    pub fn kind(mut self, kind: CheckKind) -> Check {
        self.kinds |= kind.bit();
        self
    }

    /// Adds the check to the liveness probe.
    pub fn liveness(self) -> Check {
        self.kind(CheckKind::Liveness)
    }

    /// Adds the check to the readiness probe.
    pub fn readiness(self) -> Check {
        self.kind(CheckKind::Readiness)
    }

    /// Adds the check to the startup probe.
    pub fn startup(self) -> Check {
        self.kind(CheckKind::Startup)
    }

    /// Whether the check belongs to `kind`'s probe.
    pub fn is_kind(&self, kind: CheckKind) -> bool {
        self.kinds & kind.bit() != 0
    }

    /// The bound on one run (default [`DEFAULT_CHECK_TIMEOUT`]); a run that takes longer
    /// is abandoned and counts as failed. Must be greater than zero.
    pub fn timeout(mut self, timeout: Duration) -> Check {
        self.timeout = timeout;
        self
    }

    /// Whether a failure fails the probe (default `true`). A failing non-critical
    /// check gives `warn`: the probe answers 200 and reports it.
    pub fn critical(mut self, critical: bool) -> Check {
        self.critical = critical;
        self
    }

    /// Shorthand for `critical(false)`.
    pub fn non_critical(self) -> Check {
        self.critical(false)
    }

    /// How long a result is reused by later probes (default [`DEFAULT_CACHE_TTL`]).
    /// Zero disables the cache; concurrent probes still share one run.
    pub fn cache_ttl(mut self, ttl: Duration) -> Check {
        self.cache_ttl = ttl;
        self
    }

    /// Tolerates a flapping dependency: a failing run is reported as `warn` (the probe
    /// still passes, and shows the failure) until `failures` runs in a row have failed
    /// **and** the check has been failing for at least `time_in_error`; only then does it
    /// fail the probe. One passing run resets both. Default: `1` and zero, which
    /// tolerates nothing (alexliesenfeld/health calls these `MaxContiguousFails` and
    /// `MaxTimeInError`).
    ///
    /// Use it for readiness checks on dependencies that blip (a database failover, a
    /// network hiccup), where pulling every pod out of rotation at the first error would
    /// do more harm than the error; not for liveness, where a restart is the remedy. A
    /// failure counts once per run, so with the default 1 s cache a probe flood does not
    /// count faster than the check runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// use terminus_core::health::Check;
    ///
    /// let db = Check::new("db", |_| async { Ok(None) })
    ///     .readiness()
    ///     .tolerate_failures(3, Duration::from_secs(5));
    /// # let _ = db;
    /// ```
    pub fn tolerate_failures(mut self, failures: u32, time_in_error: Duration) -> Check {
        self.tolerance = Tolerance {
            failures,
            time_in_error,
        };
        self
    }

    /// Runs the check in the background every `period` instead of on demand; probes
    /// then read the latest result only and never wait for the dependency (except for
    /// the very first result). Must be greater than zero.
    pub fn refresh_every(mut self, period: Duration) -> Check {
        self.refresh_every = Some(period);
        self
    }
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<CheckKind> = CheckKind::ALL
            .into_iter()
            .filter(|kind| self.is_kind(*kind))
            .collect();
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("kinds", &kinds)
            .field("timeout", &self.timeout)
            .field("critical", &self.critical)
            .field("cache_ttl", &self.cache_ttl)
            .field("refresh_every", &self.refresh_every)
            .field("tolerate_failures", &self.tolerance)
            .finish_non_exhaustive()
    }
}
