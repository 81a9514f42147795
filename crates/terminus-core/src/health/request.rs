//! [`ProbeRequest`]: which checks one probe runs, and the lifecycle rules it applies.

use std::sync::Arc;

use crate::health::check::CheckKind;
use crate::health::report::Gate;
use crate::phase::Phase;

/// The name under which the lifecycle gate appears in verbose reports and per-check
/// paths (`/readyz/lifecycle`). No check may use it.
pub const LIFECYCLE_CHECK: &str = "lifecycle";

/// A snapshot of the lifecycle, taken when a probe starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LifecycleState {
    /// The phase.
    pub phase: Phase,
    /// Whether a fatal error was set.
    pub fatal: bool,
    /// Every listener bound and `mark_ready` called when required: what startup checks
    /// wait for before they can pass.
    pub prerequisites_met: bool,
    /// Startup is done: prerequisites met and every startup check passed once.
    pub startup_done: bool,
    /// An operator took the instance out of rotation: readiness fails.
    pub maintenance: bool,
}

impl LifecycleState {
    /// A server that is serving, with startup done and no fatal error: what a
    /// standalone [`HealthRegistry`](crate::health::HealthRegistry) assumes.
    pub fn serving() -> LifecycleState {
        LifecycleState {
            phase: Phase::Serving,
            fatal: false,
            prerequisites_met: true,
            startup_done: true,
            maintenance: false,
        }
    }

    /// This state in another phase.
    pub fn with_phase(mut self, phase: Phase) -> LifecycleState {
        self.phase = phase;
        self
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Selection {
    Kind(CheckKind),
    Checks(Arc<[String]>),
    Single { kind: CheckKind, name: String },
}

/// What one probe asks for: a kind (`/readyz`), a list of checks (a terminus-style custom
/// path), or a single check of a kind (`/readyz/db`), minus excluded names.
///
/// ```
/// use terminus_core::health::{CheckKind, ProbeRequest};
///
/// let request = ProbeRequest::kind(CheckKind::Readiness).exclude("cache");
/// # let _ = request;
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ProbeRequest {
    pub(crate) selection: Selection,
    pub(crate) exclude: Vec<String>,
    pub(crate) fail_during_shutdown: bool,
}

impl ProbeRequest {
    /// Every check of `kind`, with that kind's lifecycle rules:
    ///
    /// - liveness fails only when a fatal error was set (it keeps passing while draining);
    /// - readiness fails while starting, from Draining on, and after a fatal error;
    /// - startup fails until the listeners are bound (and `mark_ready` was called when
    ///   required), then passes once its checks pass, and from then on without running them.
    pub fn kind(kind: CheckKind) -> ProbeRequest {
        ProbeRequest {
            selection: Selection::Kind(kind),
            exclude: Vec::new(),
            fail_during_shutdown: true,
        }
    }

    /// The named checks, whatever their kinds: a terminus-style path. It fails from
    /// Draining on, like terminus with `sendFailuresDuringShutdown: true` (see
    /// [`fail_during_shutdown`](ProbeRequest::fail_during_shutdown)); the startup phase
    /// does not affect it. Unknown names are ignored.
    pub fn checks<I, S>(names: I) -> ProbeRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ProbeRequest {
            selection: Selection::Checks(names.into_iter().map(Into::into).collect()),
            exclude: Vec::new(),
            fail_during_shutdown: true,
        }
    }

    /// One check of `kind` alone, without the lifecycle rules (`/readyz/db`). The name
    /// [`LIFECYCLE_CHECK`] selects the lifecycle rules alone.
    pub fn single(kind: CheckKind, name: impl Into<String>) -> ProbeRequest {
        ProbeRequest {
            selection: Selection::Single {
                kind,
                name: name.into(),
            },
            exclude: Vec::new(),
            fail_during_shutdown: true,
        }
    }

    /// Skips the named check (kube-apiserver's `?exclude=name`): it does not run and
    /// cannot fail the probe. Names that match no check are listed in
    /// [`Report::unknown_excluded`](crate::health::Report::unknown_excluded).
    pub fn exclude(mut self, name: impl Into<String>) -> ProbeRequest {
        self.exclude.push(name.into());
        self
    }

    /// For [`checks`](ProbeRequest::checks) selections only: whether the probe fails as
    /// soon as shutdown begins, without running its checks (default `true`, terminus's
    /// `sendFailuresDuringShutdown`). Readiness always fails while draining.
    pub fn fail_during_shutdown(mut self, enabled: bool) -> ProbeRequest {
        self.fail_during_shutdown = enabled;
        self
    }

    /// The kind this request reports on; `None` for a list of checks.
    pub fn probe_kind(&self) -> Option<CheckKind> {
        match &self.selection {
            Selection::Kind(kind) | Selection::Single { kind, .. } => Some(*kind),
            Selection::Checks(_) => None,
        }
    }

    /// Whether this request runs every check of `kind` with nothing excluded: only
    /// then may its success mark startup as done.
    pub(crate) fn is_whole(&self, kind: CheckKind) -> bool {
        matches!(self.selection, Selection::Kind(k) if k == kind) && self.exclude.is_empty()
    }

    /// The lifecycle's verdict, and whether the checks should run at all.
    pub(crate) fn gate(&self, state: &LifecycleState) -> (Gate, bool) {
        match &self.selection {
            Selection::Kind(CheckKind::Liveness) => {
                if state.fatal {
                    (Gate::fail("fatal error", false), true)
                } else {
                    (Gate::pass(), true)
                }
            }
            Selection::Kind(CheckKind::Readiness) => readiness_gate(state),
            Selection::Kind(CheckKind::Startup) => {
                if state.startup_done {
                    (Gate::pass(), false)
                } else if state.prerequisites_met {
                    (Gate::pass(), true)
                } else {
                    (Gate::fail("starting", false), true)
                }
            }
            Selection::Checks(_) => {
                if self.fail_during_shutdown && state.phase.is_shutting_down() {
                    (Gate::fail("shutting down", true), false)
                } else {
                    (Gate::pass(), true)
                }
            }
            Selection::Single { kind, name } if name == LIFECYCLE_CHECK => {
                let (gate, _) = ProbeRequest::kind(*kind).gate(state);
                (gate, false)
            }
            Selection::Single { .. } => (Gate::pass(), true),
        }
    }
}

/// A kind's whole probe, as [`ProbeRequest::kind`]: `terminus.probe(CheckKind::Readiness)`.
impl From<CheckKind> for ProbeRequest {
    fn from(kind: CheckKind) -> ProbeRequest {
        ProbeRequest::kind(kind)
    }
}

/// A copy of the request, so that `terminus.probe(&request)` works too.
impl From<&ProbeRequest> for ProbeRequest {
    fn from(request: &ProbeRequest) -> ProbeRequest {
        request.clone()
    }
}

fn readiness_gate(state: &LifecycleState) -> (Gate, bool) {
    if state.fatal {
        return (Gate::fail("fatal error", state.phase.is_shutting_down()), false);
    }
    match state.phase {
        Phase::Serving if state.maintenance => (Gate::fail("maintenance", false), false),
        Phase::Serving => (Gate::pass(), true),
        Phase::Starting => (Gate::fail("starting", false), true),
        // Draining or later: no point asking dependencies, traffic is leaving anyway.
        _ => (Gate::fail("shutting down", true), false),
    }
}
