//! The server's side of a shutdown: what Draining, Closing and the drain deadline do to
//! the listeners and the connections.
//!
//! [`ServerDrain`] is the server's [`Drain`]: the lifecycle (`Terminus::run`) calls it
//! at each step. The [`Registry`] holds every open connection, so that each step can
//! reach them: at Draining every HTTP/2 connection is asked to send GOAWAY; at Closing
//! each accept loop stops, takes in what the kernel already accepted and closes its
//! listener ([`close_listener`]), and every connection is told to close once idle
//! (an idle one that stays idle is closed by the sweep, [`close_if_idle_too_long`]);
//! at the deadline what is left is cut ([`Registry::force_close`]). Each connection's
//! task (`serve_connection.rs`) reads the phase and decides how to finish.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use terminus_core::{Drain, ShutdownReason, Terminus};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use crate::clock::{Clock, Tick};
use crate::connection::{Connection, Protocol};
use crate::listener::{TerminusListener, MAX_TAKEN_AT_CLOSING};
use crate::lock;

/// How the lifecycle reaches this server's listeners and connections. The accept loops
/// and connections read the phase from the `Terminus` themselves; this only tells them
/// to look, and cuts at the deadline.
pub(crate) struct ServerDrain {
    pub(crate) registry: Arc<Registry>,
    pub(crate) accepting: JoinSet<()>,
    #[cfg(all(feature = "upgrade", unix))]
    pub(crate) upgrade: crate::upgrade::Running,
}

impl Drain for ServerDrain {
    fn start_draining(&mut self) {
        // Before Closing: the sockets' copies closed, a successor on trial killed.
        #[cfg(all(feature = "upgrade", unix))]
        self.upgrade.stop();
        // HTTP/2 connections send GOAWAY.
        self.registry.notify_http2();
    }

    fn close(&mut self) {
        // The accept loops saw the phase and close their listeners; connections finish.
        self.registry.close_all();
    }

    async fn closed(&mut self) {
        // The listeners must be gone too, not only the connections. Both are kept in
        // `self`, so dropping this future at the deadline loses nothing.
        while self.accepting.join_next().await.is_some() {}
        self.registry.closed().await;
    }

    fn force_close(&mut self) -> usize {
        self.accepting.abort_all();
        self.registry.force_close(Cut::Deadline)
    }
}

/// Why the connections still open are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The drain deadline passed (or a second signal came).
    Deadline,
    /// The server's future was dropped before its shutdown finished.
    Dropped,
}

/// Held by a running server: if its future is dropped before the shutdown has finished
/// (a `select!` whose other branch won), its connections are cut with it, rather than
/// left serving with no sweep to bound them and no drain to close them. The accept
/// loops go with the [`ServerDrain`] that owns them.
pub(crate) struct CutOnDrop(Option<Arc<Registry>>);

impl CutOnDrop {
    pub(crate) fn new(registry: &Arc<Registry>) -> CutOnDrop {
        CutOnDrop(Some(Arc::clone(registry)))
    }

    /// The shutdown finished: nothing to do when dropped.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CutOnDrop {
    fn drop(&mut self) {
        if let Some(registry) = self.0.take() {
            registry.dropped.store(true, Ordering::SeqCst); // see `Registry::dropped`
            if registry.len() > 0 {
                registry.force_close(Cut::Dropped);
            }
        }
    }
}

/// Closing, for one listener whose accept loop has stopped: the connections the kernel
/// completed while the listener was open reached the server, so they are taken in and
/// handed to `serve`. Closing the listener then makes the kernel refuse new ones, a
/// clean error that balancers retry, instead of resetting them after accepting. (A
/// socket systemd passed stays open after this process: its queue is the next
/// process's; after an upgrade, the queue is the successor's, which accepts from the
/// same socket.)
pub(crate) fn close_listener<L: TerminusListener>(
    mut listener: L,
    name: &str,
    terminus: &Terminus,
    mut serve: impl FnMut(L::Io, L::Addr),
) {
    let handed_over = matches!(terminus.shutdown_reason(), Some(ShutdownReason::Upgrade { .. }));
    let taken = if listener.leaves_queue_to_next_process() || handed_over {
        Vec::new()
    } else {
        listener.take_accepted(MAX_TAKEN_AT_CLOSING)
    };
    let count = taken.len();
    for (io, addr) in taken {
        serve(io, addr);
    }
    drop(listener);
    tracing::info!(target: "terminus", listener = %name, taken_at_close = count, "listener closed");
}

/// From Closing on, the sweep's bound on a connection with nothing in flight: closed
/// once idle for its idle close timeout. An HTTP/1 connection between requests that
/// waits for its client's next one counts from its last response (it was in use until
/// then), and one more tick: `idle_since` was stamped on a tick up to one resolution before the
/// response really ended, and the wait must not end before the bound. The rest (an
/// HTTP/2 peer that never acknowledges the GOAWAY, half a request head, a new
/// connection that has not sent its first request) count from Closing, their last
/// response or the head's first byte, whichever is latest.
pub(crate) fn close_if_idle_too_long(connection: &Connection, clock: &Clock, closing_since: Tick) {
    let idle_close = connection.idle_close;
    let head_since = connection.head_since();
    let (idle_from, bound) = if connection.awaits_next_request() && head_since.is_none() {
        (connection.idle_since(), idle_close + clock.resolution)
    } else {
        let latest = closing_since.max(connection.idle_since());
        (head_since.map_or(latest, |head| latest.max(head)), idle_close)
    };
    if !connection.is_busy() && clock.since(idle_from) >= bound && !connection.is_expired() {
        connection.expire();
    }
}

/// Every open connection of a server, across all its listeners.
#[derive(Default)]
pub(crate) struct Registry {
    next_id: AtomicU64,
    /// In the order they were accepted, which is the order Closing wakes them in: with
    /// 10,000 idle connections, closing in hash order (freeing memory all over the heap)
    /// took a fifth longer than closing in the order the memory was allocated.
    connections: Mutex<BTreeMap<u64, Arc<Connection>>>,
    empty: Notify,
    /// The server's future was dropped: a connection registered from now on is cut (an
    /// accept loop may be in the middle of a poll on another worker as the future is
    /// dropped). `SeqCst`, stored before the connections are read under the lock and
    /// loaded after a connection is inserted under it: either the cut sees the
    /// connection, or the registration sees the flag.
    dropped: AtomicBool,
}

impl Registry {
    /// Registers `connection` until the returned value is dropped (with the socket).
    pub(crate) fn register(
        self: &Arc<Self>,
        connection: Arc<Connection>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Registered {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.connections).insert(id, Arc::clone(&connection));
        if self.dropped.load(Ordering::SeqCst) {
            connection.cut();
        }
        crate::metrics::connection_opened();
        Registered {
            registry: Arc::clone(self),
            id,
            _permit: permit,
        }
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.connections).len()
    }

    fn snapshot(&self) -> Vec<Arc<Connection>> {
        lock(&self.connections).values().cloned().collect()
    }

    /// Draining: asks every HTTP/2 connection's task to look at the phase (and send
    /// GOAWAY). HTTP/1 connections serve on as before, so waking them would only cost a
    /// pass over every idle connection. A connection that starts speaking HTTP/2 after
    /// this is served like one accepted while draining: its client still sends here,
    /// and it is told to finish at Closing.
    pub(crate) fn notify_http2(&self) {
        for connection in lock(&self.connections).values() {
            if connection.protocol() == Protocol::Http2 {
                connection.notify();
            }
        }
    }

    /// Closing: every connection finishes what it is doing and closes; an idle one
    /// reads once more, bypassing the reactor (see `ConnectionIo`), unless it is an
    /// HTTP/1 connection still in use, which waits for its client's next request
    /// (`Connection::close_when_empty`).
    pub(crate) fn close_all(&self) {
        for connection in lock(&self.connections).values() {
            connection.close_when_empty();
            connection.notify();
        }
    }

    /// Calls `f` with every connection (for the clock's sweep).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&Connection)) {
        for connection in lock(&self.connections).values() {
            f(connection);
        }
    }

    /// Resolves once no connection is open.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The deadline passed (or the server was dropped): cuts every connection with a
    /// request or an upgraded session in flight, with one `warn` event each, and closes
    /// the idle rest. Returns how many were cut.
    pub(crate) fn force_close(&self, why: Cut) -> usize {
        let (idle_closed, busy_cut) = match why {
            Cut::Deadline => (
                "idle connection closed at the drain deadline",
                "connection cut at the drain deadline",
            ),
            Cut::Dropped => (
                "idle connection closed: the server's future was dropped",
                "connection cut: the server's future was dropped before its shutdown finished",
            ),
        };
        let now = self.snapshot();
        let mut cut = 0;
        // Cut already (the deadline came, and then the server's future was dropped):
        // reported once.
        for connection in now.iter().filter(|connection| !connection.is_cut()) {
            let age_ms = connection.clock.age(connection.accepted).as_millis() as u64;
            if !connection.is_busy() {
                // Nothing in flight (at most half a request head): not a cut.
                tracing::info!(
                    target: "terminus",
                    peer = %connection.peer,
                    protocol = connection.protocol().as_str(),
                    age_ms,
                    "{idle_closed}"
                );
            } else {
                cut += 1;
                let protocol = connection.protocol_in_report();
                tracing::warn!(
                    target: "terminus",
                    peer = %connection.peer,
                    protocol,
                    age_ms,
                    requests_in_flight = connection.in_flight(),
                    "{busy_cut}"
                );
            }
            connection.cut();
        }
        crate::metrics::connections_cut(cut);
        cut
    }
}

/// Removes the connection from the registry (and frees its place under the server's
/// connection cap) when its socket is dropped.
pub(crate) struct Registered {
    registry: Arc<Registry>,
    id: u64,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        crate::metrics::connection_closed();
        let mut connections = lock(&self.registry.connections);
        connections.remove(&self.id);
        if connections.is_empty() {
            self.registry.empty.notify_waiters();
        }
    }
}
