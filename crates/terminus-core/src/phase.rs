//! The phases of a server's life, and the one place the current phase is kept.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lock;

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
    /// Everything is done; the [`Outcome`](crate::Outcome) is published.
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

    fn from_u8(value: u8) -> Phase {
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

/// The current phase: the one copy every component reads.
///
/// The value is an atomic, because the request path reads it on every response; the
/// watch channel and the token only announce changes of that value, and `enter` is the
/// only writer of all three, under one lock, so they cannot disagree.
pub(crate) struct PhaseCell {
    value: AtomicU8,
    changes: watch::Sender<Phase>,
    /// Cancelled on entering Draining: [`Terminus::token`](crate::Terminus::token).
    draining: CancellationToken,
    /// When the current phase began; the lock serialises transitions.
    since: Mutex<Instant>,
    created: Instant,
}

impl PhaseCell {
    pub(crate) fn new() -> PhaseCell {
        let now = Instant::now();
        PhaseCell {
            value: AtomicU8::new(Phase::Starting as u8),
            changes: watch::channel(Phase::Starting).0,
            draining: CancellationToken::new(),
            since: Mutex::new(now),
            created: now,
        }
    }

    /// One atomic load. SeqCst pairs with the store in `enter`: code that publishes
    /// something and then reads the phase (a connection registering, a request ending)
    /// and code that changes the phase and then looks at what was published cannot
    /// both miss each other.
    pub(crate) fn get(&self) -> Phase {
        Phase::from_u8(self.value.load(Ordering::SeqCst))
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.changes.subscribe()
    }

    pub(crate) fn draining_token(&self) -> &CancellationToken {
        &self.draining
    }

    /// Announces the current phase again, for a change that is not a phase's (the
    /// maintenance switch): subscribers wake and look at the lifecycle again.
    pub(crate) fn announce(&self) {
        let _since = lock(&self.since);
        self.changes.send_replace(self.get());
    }

    /// Moves to `next` if that is forward, logging one event; `false` if it was not.
    pub(crate) fn enter(&self, next: Phase, reason: &str) -> bool {
        let mut since = lock(&self.since);
        let previous = self.get();
        if next <= previous {
            return false;
        }
        let now = Instant::now();
        let in_previous_ms = now.duration_since(*since).as_millis() as u64;
        *since = now;
        // SeqCst: pairs with the load in `get` (see there).
        self.value.store(next as u8, Ordering::SeqCst);
        tracing::info!(
            target: "terminus",
            phase = next.as_str(),
            previous = previous.as_str(),
            reason,
            in_previous_ms,
            since_start_ms = self.created.elapsed().as_millis() as u64,
            "phase changed"
        );
        crate::metrics::phase_changed(
            previous.as_str(),
            next.as_str(),
            Duration::from_millis(in_previous_ms),
        );
        self.changes.send_replace(next);
        if next.is_shutting_down() {
            self.draining.cancel();
        }
        true
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

    #[test]
    fn the_cell_only_moves_forward_and_announces_each_move() {
        let cell = PhaseCell::new();
        let changes = cell.subscribe();
        assert!(cell.enter(Phase::Draining, "test"));
        assert!(!cell.enter(Phase::Serving, "late"), "never backwards");
        assert_eq!(cell.get(), Phase::Draining);
        assert_eq!(*changes.borrow(), Phase::Draining);
        assert!(cell.draining_token().is_cancelled());
    }
}
