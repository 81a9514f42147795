//! [`Report`]: the result of one probe, for HTTP bodies, logs, admin pages or gRPC health.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::health::check::CheckKind;
use crate::health::error::CheckError;
use crate::phase::Phase;

/// The overall or per-check status, as the IETF health-check draft names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    /// Healthy.
    Pass,
    /// Healthy, with a non-critical check failing: the probe passes (status 200) and
    /// reports it.
    Warn,
    /// Unhealthy: the probe fails (status 503 by default).
    Fail,
}

impl HealthStatus {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Pass => "pass",
            HealthStatus::Warn => "warn",
            HealthStatus::Fail => "fail",
        }
    }

    /// `true` for [`Pass`](HealthStatus::Pass) and [`Warn`](HealthStatus::Warn).
    pub fn is_passing(self) -> bool {
        self != HealthStatus::Fail
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lifecycle's part of a probe: Kubernetes semantics that no check can override.
///
/// Reported as the pseudo-check `lifecycle` in the verbose formats (`[-]lifecycle failed`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gate {
    /// Whether the lifecycle lets the probe pass.
    pub passed: bool,
    /// Why it does not, in a few words (`starting`, `shutting down`, `fatal error`);
    /// empty when it passes.
    pub reason: Cow<'static, str>,
    /// `true` when the probe fails because shutdown began (terminus's
    /// `sendFailuresDuringShutdown`, and `onSendFailureDuringShutdown` runs).
    pub shutting_down: bool,
}

impl Gate {
    pub(crate) fn pass() -> Gate {
        Gate {
            passed: true,
            reason: Cow::Borrowed(""),
            shutting_down: false,
        }
    }

    pub(crate) fn fail(reason: impl Into<Cow<'static, str>>, shutting_down: bool) -> Gate {
        Gate {
            passed: false,
            reason: reason.into(),
            shutting_down,
        }
    }
}

/// One check's part of a [`Report`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CheckReport {
    /// The check's name.
    pub name: Cow<'static, str>,
    /// `Pass`, `Fail` for a failing critical check, `Warn` for a failing non-critical
    /// one. An excluded check is `Pass`.
    pub status: HealthStatus,
    /// Whether a failure fails the probe.
    pub critical: bool,
    /// `true` when the request excluded it (`?exclude=name`): it did not run.
    pub excluded: bool,
    /// `true` when the result came from the cache rather than a run for this probe.
    pub cached: bool,
    /// How long the run took.
    pub duration: Duration,
    /// When the run finished (wall clock, for the `time` field of health+json).
    pub observed_at: SystemTime,
    /// What the check returned on success.
    pub info: Option<Value>,
    /// Why it failed.
    pub error: Option<CheckError>,
}

impl CheckReport {
    pub(crate) fn excluded(name: Cow<'static, str>, critical: bool) -> CheckReport {
        CheckReport {
            name,
            status: HealthStatus::Pass,
            critical,
            excluded: true,
            cached: false,
            duration: Duration::ZERO,
            observed_at: SystemTime::now(),
            info: None,
            error: None,
        }
    }
}

/// The result of one probe: overall status, the lifecycle gate, and each check.
///
/// Produced by [`Terminus::probe`](crate::Terminus::probe) for any transport, and
/// rendered by `tower-terminus` for HTTP.
///
/// ```
/// use terminus_core::health::{Check, CheckKind, HealthStatus};
/// use terminus_core::server::ServerExt as _;
/// use terminus_core::Terminus;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder()
///     .readiness(Check::new("db", |_| async { Ok(None) }))
///     .build()?;
/// terminus.mark_listeners_bound(); // what a server does once it listens
///
/// let report = terminus.probe(CheckKind::Readiness).await;
/// assert_eq!(report.status, HealthStatus::Pass);
/// assert_eq!(report.checks[0].name, "db");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Report {
    /// The probe's kind; `None` for a custom selection of checks (a terminus-style path).
    pub kind: Option<CheckKind>,
    /// Fail if the gate fails or a critical check fails; else Warn if a check failed;
    /// else Pass.
    pub status: HealthStatus,
    /// The lifecycle's verdict.
    pub gate: Gate,
    /// The server's phase when the probe started.
    pub phase: Phase,
    /// The checks, in registration order (excluded ones included, marked).
    pub checks: Vec<CheckReport>,
    /// Names the request asked to exclude that match no check of this probe, sorted.
    pub unknown_excluded: Vec<String>,
    /// How long the probe took; zero for a report served whole from the cache (one
    /// that [`Probing::now`](crate::health::Probing::now) takes at once).
    pub duration: Duration,
}

impl Report {
    /// Whether the probe passes (status Pass or Warn).
    pub fn passed(&self) -> bool {
        self.status.is_passing()
    }

    /// The checks that ran and failed (critical or not).
    pub fn failures(&self) -> impl Iterator<Item = &CheckReport> {
        self.checks.iter().filter(|check| check.error.is_some())
    }

    /// The error of the first failing critical check, if the probe fails because of one:
    /// its status and body overrides decide the HTTP answer.
    pub fn deciding_error(&self) -> Option<&CheckError> {
        if !self.gate.passed {
            return None;
        }
        self.checks
            .iter()
            .find(|check| check.critical && check.status == HealthStatus::Fail)
            .and_then(|check| check.error.as_ref())
    }
}
