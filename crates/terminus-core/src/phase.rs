//! The phases of a server's life, in the order they happen.

use std::fmt;

/// Where a server is in its lifecycle.
///
/// Phases only move forward, in declaration order (a shutdown that starts while
/// the server is still [`Starting`](Phase::Starting) goes straight to
/// [`Draining`](Phase::Draining)). `Phase` is `Ord`, so "draining or later" is
/// `phase >= Phase::Draining`.
///
/// ```
/// use terminus_core::Phase;
///
/// assert!(Phase::Closing > Phase::Draining);
/// assert!(Phase::Draining.is_shutting_down());
/// assert!(!Phase::Serving.is_shutting_down());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Phase {
    /// Listeners are being bound and startup work is running; readiness fails.
    Starting = 0,
    /// Every listener is bound and startup is done; readiness passes.
    Serving = 1,
    /// Shutdown began: readiness fails, liveness passes, the listener still accepts,
    /// HTTP/1.x responses carry `Connection: close`, HTTP/2 connections get GOAWAY.
    /// Lasts `drain_delay`, so load balancers notice before anything is refused.
    Draining = 2,
    /// Listeners are closed, idle connections are closed, in-flight work finishes
    /// within `drain_timeout`; what is left after that is cut.
    Closing = 3,
    /// `on_signal` and `on_shutdown` hooks run, each bounded by `cleanup_timeout`.
    CleaningUp = 4,
    /// Everything is done; `serve` returns its outcome.
    Stopped = 5,
}

impl Phase {
    /// `true` from [`Draining`](Phase::Draining) on: terminus's `state.isShuttingDown`.
    pub fn is_shutting_down(self) -> bool {
        self >= Phase::Draining
    }

    /// The phase's name in lower case, as it appears in logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Closing => "closing",
            Phase::CleaningUp => "cleaning_up",
            Phase::Stopped => "stopped",
        }
    }

    pub(crate) fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Starting,
            1 => Phase::Serving,
            2 => Phase::Draining,
            3 => Phase::Closing,
            4 => Phase::CleaningUp,
            // Only values written by `Phase as u8` are ever stored.
            _ => Phase::Stopped,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_through_their_stored_byte() {
        for phase in [
            Phase::Starting,
            Phase::Serving,
            Phase::Draining,
            Phase::Closing,
            Phase::CleaningUp,
            Phase::Stopped,
        ] {
            assert_eq!(Phase::from_u8(phase as u8), phase);
        }
    }
}
