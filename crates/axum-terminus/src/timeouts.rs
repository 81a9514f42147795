//! The sweep: the task that advances the server's clock and enforces its timeouts.
//!
//! On each tick it looks at every connection: a request head that has taken longer than
//! the header-read timeout is closed; while serving, a connection idle past the
//! keep-alive timeout, or past its maximum age, is told to finish (and cut past the
//! grace); from Closing on, a connection idle past the idle bound is closed (see
//! `drain.rs`). One timer per server instead of one per request (see `clock.rs`).

use std::sync::Arc;
use std::time::Duration;

use terminus_core::{Phase, Terminus};

use crate::clock::{Clock, Tick};
use crate::connection::{Connection, Protocol, Retire};
use crate::drain::{close_if_idle_too_long, Registry};

/// The timeouts the sweep enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// A request head (and, on a new connection, the first one) must arrive within it.
    pub(crate) header_read: Option<Duration>,
    /// From Closing on, how long a connection with nothing in flight may stay open
    /// (an HTTP/2 peer that never acknowledges the GOAWAY, half a request head, an
    /// HTTP/1 connection still in use at Closing, whose client may send one more
    /// request).
    pub(crate) idle_close: Duration,
    /// While serving, how long a connection may sit between requests.
    pub(crate) keep_alive: Option<Duration>,
    /// Past its maximum age, how long what is in flight has before it is cut.
    pub(crate) age_grace: Duration,
}

impl Timeouts {
    /// A quarter of the shortest timeout, between 10 ms and 1 s: a timeout fires at most
    /// a quarter late, and a server with default settings ticks four times a second.
    pub(crate) fn resolution(&self) -> Duration {
        let shortest = [self.header_read, self.keep_alive]
            .into_iter()
            .flatten()
            .fold(self.idle_close, Duration::min);
        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

/// While serving: the keep-alive timeout, the maximum age, and the grace after it. (From
/// Draining on, the shutdown bounds every connection instead.)
fn bound_life(connection: &Connection, clock: &Clock, now: Tick, timeouts: &Timeouts) {
    if !connection.closes_when_idle()
        && timeouts.keep_alive.is_some_and(|keep_alive| {
            connection.is_idle_between_requests() && clock.since(connection.idle_since()) >= keep_alive
        })
    {
        connection.retire(Retire::Idle);
        return;
    }
    match connection.retiring() {
        None => {
            if now >= connection.max_age_at() {
                connection.retire(Retire::Age);
            }
        }
        // HTTP/2 streams in flight at the GOAWAY get the grace; an HTTP/1 request is the
        // connection's last and runs its course (its response says `Connection: close`).
        Some(Retire::Age) if connection.protocol() == Protocol::Http2 => {
            if connection.is_busy()
                && !connection.is_cut()
                && clock.since(connection.retired_at()) >= timeouts.age_grace
            {
                connection.cut_past_grace();
            }
        }
        Some(_) => {}
    }
}

/// Advances the clock and sweeps the connections until the server stops.
pub(crate) async fn sweep(
    clock: Arc<Clock>,
    registry: Arc<Registry>,
    terminus: Terminus,
    timeouts: Timeouts,
) {
    let mut ticks = tokio::time::interval(clock.resolution);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing_since = None;
    loop {
        ticks.tick().await;
        let now = clock.advance();
        if closing_since.is_none() && terminus.phase() >= Phase::Closing {
            closing_since = Some(now);
        }
        let serving = terminus.phase() == Phase::Serving;
        registry.for_each(|connection| {
            if let (Some(timeout), Some(head)) = (timeouts.header_read, connection.head_since()) {
                if clock.since(head) >= timeout && !connection.is_expired() {
                    tracing::debug!(
                        target: "terminus",
                        peer = %connection.peer,
                        timeout_ms = timeout.as_millis() as u64,
                        "request head not received in time: connection closed"
                    );
                    crate::metrics::connection_retired("header_timeout");
                    connection.expire();
                    return;
                }
            }
            if serving {
                bound_life(connection, &clock, now, &timeouts);
            }
            if let Some(closing) = closing_since {
                close_if_idle_too_long(connection, &clock, closing);
            }
        });
    }
}
