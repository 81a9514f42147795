//! A coarse clock for the server.
//!
//! Reading the system clock for every request, or arming a timer for every request
//! head as hyper's `header_read_timeout` does, is a measurable share of a small
//! request's cost. Instead, one task per server (the sweep, `timeouts.rs`) advances a
//! shared tick every [`Clock::resolution`]: requests and connections then only load the
//! tick, and ages are known to the resolution.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Milliseconds since the server started, as last advanced by the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(pub(crate) u64);

impl Tick {
    /// "No time": stored where nothing is being timed.
    pub(crate) const NONE: Tick = Tick(u64::MAX);
}

/// The server's coarse clock.
#[derive(Debug)]
pub(crate) struct Clock {
    started: Instant,
    now: AtomicU64,
    pub(crate) resolution: Duration,
}

impl Clock {
    pub(crate) fn new(resolution: Duration) -> Clock {
        Clock {
            started: Instant::now(),
            now: AtomicU64::new(0),
            resolution,
        }
    }

    /// The time of the last tick: one atomic load.
    pub(crate) fn now(&self) -> Tick {
        Tick(self.now.load(Ordering::Relaxed))
    }

    /// How long since `then`, to the clock's resolution.
    pub(crate) fn since(&self, then: Tick) -> Duration {
        Duration::from_millis(self.now().0.saturating_sub(then.0))
    }

    /// How long since `then`, reading the system clock: for reports, which are rare. A
    /// tick is never later than the moment it stands for, so this never makes an age
    /// shorter than it was.
    pub(crate) fn age(&self, then: Tick) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(then.0))
    }

    /// Sets the tick: tests of what is decided at a given time.
    #[cfg(test)]
    pub(crate) fn set(&self, now: Tick) {
        self.now.store(now.0, Ordering::Relaxed);
    }

    /// Reads the system clock into the tick (the sweep does, once per resolution).
    pub(crate) fn advance(&self) -> Tick {
        let now = self.started.elapsed().as_millis() as u64;
        self.now.store(now, Ordering::Relaxed);
        Tick(now)
    }
}
