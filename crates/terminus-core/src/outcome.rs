//! What a finished shutdown reports: why it happened, whether it was graceful,
//! what was drained and cut, and the exit code.

use std::borrow::Cow;
use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::ExitCodePolicy;
use crate::hooks::{HookResult, HookStatus};
use crate::signal::Signal;

/// Why the shutdown started.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownReason {
    /// An operating-system signal.
    Signal(Signal),
    /// [`Terminus::shutdown`](crate::Terminus::shutdown) was called.
    Requested(Cow<'static, str>),
    /// [`Terminus::set_fatal`](crate::Terminus::set_fatal) was called.
    Fatal(String),
    /// The process handed its listeners to a successor that is ready (the in-place
    /// upgrade of `axum-terminus`): the drain delay is skipped, since the address does
    /// not change and the successor already accepts on the same sockets.
    Upgrade {
        /// The successor's process ID.
        successor: u32,
    },
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownReason::Signal(signal) => write!(f, "signal {signal}"),
            ShutdownReason::Requested(why) => write!(f, "requested: {why}"),
            ShutdownReason::Fatal(error) => write!(f, "fatal error: {error}"),
            ShutdownReason::Upgrade { successor } => write!(f, "upgraded: successor PID {successor} serves"),
        }
    }
}

impl From<&'static str> for ShutdownReason {
    fn from(why: &'static str) -> Self {
        ShutdownReason::Requested(Cow::Borrowed(why))
    }
}

impl From<String> for ShutdownReason {
    fn from(why: String) -> Self {
        ShutdownReason::Requested(Cow::Owned(why))
    }
}

impl From<Signal> for ShutdownReason {
    fn from(signal: Signal) -> Self {
        ShutdownReason::Signal(signal)
    }
}

/// How long each shutdown phase lasted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhaseDurations {
    /// Draining: the drain delay and `before_shutdown` hooks.
    pub draining: Duration,
    /// Closing: until in-flight work finished or was cut.
    pub closing: Duration,
    /// CleaningUp: the `on_signal` and `on_shutdown` hooks.
    pub cleaning_up: Duration,
}

impl PhaseDurations {
    /// From the start of Draining to Stopped.
    pub fn total(&self) -> Duration {
        self.draining + self.closing + self.cleaning_up
    }
}

/// What went wrong in a forced shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Forced {
    /// `drain_timeout` passed with requests, upgraded sessions or tracked tasks still
    /// in flight.
    DrainTimeout,
    /// A second signal arrived (or [`Terminus::force`](crate::Terminus::force) was called).
    SecondSignal,
}

impl Forced {
    /// `drain_timeout` or `second_signal`, as logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Forced::DrainTimeout => "drain_timeout",
            Forced::SecondSignal => "second_signal",
        }
    }
}

/// The result of a whole shutdown, returned by `serve` (or
/// [`Terminus::run`](crate::Terminus::run)).
///
/// The counts follow the definitions of the design: a request is **drained** when it
/// completed after the shutdown began, and **cut** when it was still in flight at the
/// drain deadline (or at a second signal). `requests_drained + requests_cut` is every
/// request that was in flight when Draining began or arrived after. A connection with
/// nothing in flight that is closed at Closing (an idle keep-alive, an HTTP/2 peer
/// that never acknowledges the GOAWAY) is neither: it does not make the stop forced.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// Why the shutdown started.
    pub reason: ShutdownReason,
    /// `None` when nothing was cut and no second signal skipped the rest.
    pub forced: Option<Forced>,
    /// Requests that completed after the shutdown began.
    pub requests_drained: u64,
    /// Requests still in flight at the drain deadline, cut (each named in its own
    /// `warn` event).
    pub requests_cut: u64,
    /// Connections cut at the deadline because a request or an upgraded session
    /// (a WebSocket) was still in flight on them. Idle connections closed at Closing
    /// are not counted.
    pub connections_cut: usize,
    /// Tracked tasks aborted at the deadline.
    pub tasks_cut: usize,
    /// How long each phase lasted.
    pub durations: PhaseDurations,
    /// Every hook that ran, in order.
    pub hooks: Vec<HookResult>,
    /// The fatal error, if one was set.
    pub fatal: Option<String>,
    pub(crate) policy: ExitCodePolicy,
}

impl Outcome {
    /// `true` when nothing was cut and no second signal forced the exit.
    pub fn is_graceful(&self) -> bool {
        self.forced.is_none()
    }

    /// Hooks that failed, panicked or timed out.
    pub fn failed_hooks(&self) -> impl Iterator<Item = &HookResult> {
        self.hooks.iter().filter(|hook| hook.status != HookStatus::Ok)
    }

    /// The process exit status under the configured [`ExitCodePolicy`]:
    /// 0 after a graceful stop, 1 when forced or after a fatal error, or
    /// `128 + signal` under [`ExitCodePolicy::SignalNumber`].
    pub fn exit_status(&self) -> u8 {
        if self.fatal.is_some() {
            return 1;
        }
        if self.policy == ExitCodePolicy::SignalNumber {
            if let ShutdownReason::Signal(signal) = &self.reason {
                if let Some(number) = signal.number() {
                    return u8::try_from(128 + number).unwrap_or(1);
                }
            }
        }
        if self.is_graceful() {
            0
        } else {
            1
        }
    }

    /// [`exit_status`](Outcome::exit_status) as an [`ExitCode`] to return from `main`.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(reason: ShutdownReason, forced: Option<Forced>, policy: ExitCodePolicy) -> Outcome {
        Outcome {
            reason,
            forced,
            requests_drained: 0,
            requests_cut: 0,
            connections_cut: 0,
            tasks_cut: 0,
            durations: PhaseDurations::default(),
            hooks: Vec::new(),
            fatal: None,
            policy,
        }
    }

    #[test]
    fn exit_status_follows_the_policy() {
        let term = ShutdownReason::Signal(Signal::Term);
        assert_eq!(
            outcome(term.clone(), None, ExitCodePolicy::Graceful).exit_status(),
            0
        );
        assert_eq!(
            outcome(term.clone(), Some(Forced::DrainTimeout), ExitCodePolicy::Graceful).exit_status(),
            1
        );
        #[cfg(unix)]
        assert_eq!(
            outcome(term, None, ExitCodePolicy::SignalNumber).exit_status(),
            143
        );
        assert_eq!(
            outcome("test".into(), None, ExitCodePolicy::SignalNumber).exit_status(),
            0
        );
        let mut fatal = outcome("x".into(), None, ExitCodePolicy::Graceful);
        fatal.fatal = Some("EADDRINUSE".into());
        assert_eq!(fatal.exit_status(), 1);
    }
}
