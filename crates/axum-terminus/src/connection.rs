//! One connection's shared state.
//!
//! A connection is served by one task (see `serve_connection.rs`). Others need to
//! reach it: the registry when the phase changes or the drain deadline passes, a
//! request ending, the clock's sweep when a timeout expires. They do it through the
//! [`Connection`], which records what the connection is doing (requests in flight, a
//! request head arriving, an upgrade) and wakes its task. The task then reads the
//! phase from the `Terminus` and decides; nothing here keeps a copy of the phase.
//!
//! Memory orderings, and what each pairs with:
//!
//! - `attention`: `notify` stores it (`SeqCst`, so release) after whatever it announces
//!   (a flag set, a phase entered); the task's swap in `take_attention` (`SeqCst`, so
//!   acquire) then sees all of it. This is the pair that carries every notice to the
//!   task; the waker only makes the task run.
//! - `flags`: set with `AcqRel` read-modify-writes (`set`, `retire`, the write-blocked
//!   bit) and read with `Acquire` (`has`, `is_upgraded`): a reader that sees a bit sees
//!   what its setter did before setting it. (The retire reason and time are stored after
//!   the bit, `Relaxed`: a reader may see the bit before them, see `retire`.) One pair is
//!   `SeqCst` on both sides: Closing's bits (`close_when_empty`) then a load of
//!   `in_flight`, against a request's increment then `response_ready`'s load of the
//!   bits, so that a request starting as Closing begins is either seen in flight or
//!   answered with `Connection: close`.
//! - `protocol`: stored once with `Release` when the protocol is known, read with
//!   `Acquire`; it publishes nothing else.
//! - `in_flight`: `SeqCst` increments (on the connection's task, where hyper calls the
//!   service) and decrements (wherever the response body ends: another task for an
//!   HTTP/2 stream), and `SeqCst` loads, so that the sweep and the cut see one order of
//!   requests starting and ending. `request_ended` stores `idle_since` (`Release`)
//!   *before* its decrement: a reader that sees zero in flight (the sweep, Closing's
//!   `close_when_empty`) then reads (`Acquire`) the end of the last response, never the
//!   one before it.
//! - `head_since`: `Release` stores, `Acquire` loads, each pairing with the other; the
//!   `Relaxed` load in `bytes_arrived` only decides whether to store.
//! - `requests`, `retire_reason`, `retired_at`: `Relaxed`, each said where it is used.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;

use futures_util::task::AtomicWaker;
use terminus_core::Terminus;
use tokio::task::AbortHandle;

use crate::clock::{Clock, Tick};
use crate::listener::Peer;
use crate::lock;

/// The wire protocol, known from the first bytes (the HTTP/2 preface) or from the
/// server's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Protocol {
    /// Not known yet: nothing has been read.
    Unknown = 0,
    Http1 = 1,
    Http2 = 2,
}

impl Protocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Unknown => "unknown",
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    }
}

/// Why a connection was told to finish while serving (see [`Connection::retire`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Retire {
    /// Nothing in flight for the keep-alive timeout.
    Idle = 1,
    /// Past its maximum age.
    Age = 2,
    /// It began its last allowed request.
    MaxRequests = 3,
}

impl Retire {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Retire::Idle => "idle",
            Retire::Age => "age",
            Retire::MaxRequests => "max_requests",
        }
    }

    fn from_u8(value: u8) -> Option<Retire> {
        match value {
            1 => Some(Retire::Idle),
            2 => Some(Retire::Age),
            3 => Some(Retire::MaxRequests),
            _ => None,
        }
    }
}

/// The bounds on a connection's life, the same for every connection of a server.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    /// While serving: its maximum age.
    pub(crate) max_age: Option<std::time::Duration>,
    /// While serving: the most requests it may carry.
    pub(crate) max_requests: Option<u64>,
    /// From Closing on: how long it may stay open with nothing in flight.
    pub(crate) idle_close: std::time::Duration,
}

/// One connection's shared state.
pub(crate) struct Connection {
    /// The lifecycle its requests are counted by.
    pub(crate) terminus: Terminus,
    pub(crate) peer: Peer,
    /// On an admin listener: its requests are not the application's.
    pub(crate) admin: bool,
    /// When the connection reaches its maximum age (jittered), or [`Tick::NONE`].
    max_age_at: Tick,
    /// The most requests it may begin, or `u64::MAX`.
    max_requests: u64,
    /// From Closing on, how long it may stay open with nothing in flight.
    pub(crate) idle_close: std::time::Duration,
    /// Requests begun on it.
    requests: AtomicU64,
    /// [`Retire`] as a byte (0: not retiring); set once, with [`Flags::RETIRE`].
    retire_reason: AtomicU8,
    /// When it was told to finish while serving.
    retired_at: AtomicU64,
    pub(crate) accepted: Tick,
    pub(crate) clock: Arc<Clock>,
    protocol: AtomicU8,
    /// [`Flags`]: what the socket's every read and write looks at, in one load.
    flags: AtomicU8,
    /// Requests whose response has not ended yet.
    in_flight: AtomicUsize,
    /// When the last response ended (the accept, before any request).
    idle_since: AtomicU64,
    /// When the request head now arriving began, or [`Tick::NONE`] between requests:
    /// the header-read timeout runs from it. From the accept until the first request
    /// on every protocol; then, on HTTP/1 only, from the first byte of each next head
    /// (an HTTP/2 connection between streams is not waiting for a head).
    head_since: AtomicU64,
    /// Something the task must look at: the phase changed, a request started while
    /// Closing, a timeout expired.
    attention: AtomicBool,
    /// The serving task's waker. Woken by reference, so it stays registered: the task
    /// registers once, and again only if its waker changes (see [`Attention`]).
    task: Mutex<Option<Waker>>,
    /// The tasks waiting to read and to write on an upgraded socket, woken by a cut.
    parked: [AtomicWaker; 2],
    abort: OnceLock<AbortHandle>,
}

/// The bits of `Connection::flags`.
struct Flags;

impl Flags {
    /// The drain deadline cut the connection: its socket fails from then on.
    const CUT: u8 = 1;
    /// Closing asked this connection to close when idle: an idle read bypasses the
    /// reactor (see `io.rs`).
    const CLOSING_READ: u8 = 2;
    /// The task serving the connection ended while its socket lives on: upgraded.
    const TASK_DONE: u8 = 4;
    /// An upgrade (WebSocket) was asked for on this connection.
    const UPGRADE_REQUESTED: u8 = 8;
    /// The last write found the socket full: a response is still on its way to a
    /// client that does not read. Not idle, whatever `in_flight` says.
    const WRITE_BLOCKED: u8 = 16;
    /// The sweep found a timeout expired: the task closes the connection.
    const EXPIRED: u8 = 32;
    /// Told to finish while serving (keep-alive timeout, maximum age or requests): an
    /// HTTP/1 connection closes after its next response that says `Connection: close`
    /// or, idle past the keep-alive timeout, once nothing is buffered; HTTP/2 gets a
    /// GOAWAY.
    const RETIRE: u8 = 64;
    /// Closing found an HTTP/1 connection in use (a request in flight, or a response
    /// that ended less than the idle close timeout ago): its client, told nothing, may
    /// send its next request at any moment, so the connection waits for it (until idle
    /// for the idle close timeout) instead of reading once and closing.
    const AWAIT_NEXT_REQUEST: u8 = 128;
}

impl Connection {
    pub(crate) fn new(
        terminus: Terminus,
        peer: Peer,
        clock: Arc<Clock>,
        admin: bool,
        limits: Limits,
    ) -> Connection {
        let accepted = clock.now();
        let max_age_at = limits.max_age.map_or(Tick::NONE, |age| {
            Tick(accepted.0.saturating_add(jittered(age).as_millis() as u64))
        });
        Connection {
            terminus,
            peer,
            admin,
            max_age_at,
            max_requests: limits.max_requests.unwrap_or(u64::MAX),
            idle_close: limits.idle_close,
            requests: AtomicU64::new(0),
            retire_reason: AtomicU8::new(0),
            retired_at: AtomicU64::new(Tick::NONE.0),
            accepted,
            clock,
            protocol: AtomicU8::new(Protocol::Unknown as u8),
            flags: AtomicU8::new(0),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(accepted.0),
            // The first head (or the HTTP/2 preface) is timed from the accept.
            head_since: AtomicU64::new(accepted.0),
            attention: AtomicBool::new(false),
            task: Mutex::new(None),
            parked: [AtomicWaker::new(), AtomicWaker::new()],
            abort: OnceLock::new(),
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }

    fn set(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
    }

    pub(crate) fn protocol(&self) -> Protocol {
        match self.protocol.load(Ordering::Acquire) {
            1 => Protocol::Http1,
            2 => Protocol::Http2,
            _ => Protocol::Unknown,
        }
    }

    /// The protocol is known (sniffed, fixed by the server, or chosen by ALPN). The
    /// header-read timeout keeps running from the accept: an HTTP/2 connection is
    /// bounded until its first request's HEADERS are complete (`request_started`),
    /// whether or not a byte was read before the protocol was known.
    pub(crate) fn set_protocol(&self, protocol: Protocol) {
        self.protocol.store(protocol as u8, Ordering::Release);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// A request head arrived and the application is called.
    pub(crate) fn request_started(&self, upgrade: bool) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(Tick::NONE.0, Ordering::Release);
        if upgrade {
            self.set(Flags::UPGRADE_REQUESTED);
        }
        // One relaxed add: only this connection's task counts its requests.
        if self.requests.fetch_add(1, Ordering::Relaxed) + 1 >= self.max_requests {
            self.retire(Retire::MaxRequests);
        } else if self.has(Flags::CLOSING_READ | Flags::RETIRE) {
            // Closing (every connection has CLOSING_READ from then on: `close_all`, or
            // set when it is accepted), or retiring (a request read once more after the
            // keep-alive timeout or the maximum age): the task must decide whether this
            // request is the connection's last. The flags, not the phase: one load.
            self.notify();
        }
    }

    /// Tells the connection to finish while serving (the first reason is kept).
    /// HTTP/2 gets a GOAWAY. HTTP/1: the next response whose head is not yet written
    /// says `Connection: close`, and hyper closes the connection after it; and for
    /// [`Retire::Idle`], a connection with nothing in flight closes now, once a last
    /// read finds nothing buffered (a request already there is answered).
    pub(crate) fn retire(&self, reason: Retire) {
        let first = self.flags.fetch_or(Flags::RETIRE, Ordering::AcqRel) & Flags::RETIRE == 0;
        if first {
            // Read only once RETIRE is seen set; a reader that sees RETIRE before these
            // stores lands (Relaxed) sees no reason yet, which delays the grace by a
            // sweep at most.
            self.retire_reason.store(reason as u8, Ordering::Relaxed);
            self.retired_at.store(self.clock.now().0, Ordering::Relaxed);
        }
        let closing_idle = reason == Retire::Idle && !self.has(Flags::CLOSING_READ);
        if closing_idle {
            // The next idle read bypasses the reactor (see `io.rs`) and reports the end
            // of the stream when nothing is there.
            self.set(Flags::CLOSING_READ);
        }
        if first || closing_idle {
            tracing::debug!(
                target: "terminus",
                peer = %self.peer,
                protocol = self.protocol().as_str(),
                reason = reason.as_str(),
                requests = self.requests.load(Ordering::Relaxed),
                "connection told to finish while serving"
            );
            crate::metrics::connection_retired(reason.as_str());
            self.notify();
        }
    }

    /// The service's response goes to hyper, which writes its head. An HTTP/1 response
    /// on a connection told to finish, or at Closing, says `Connection: close` (hyper
    /// then closes after it), whether or not a `TerminusLayer` said so already; a
    /// `101 Switching Protocols` (or any answer with `Upgrade`) keeps its `Connection:
    /// upgrade`. One load of the flags per response while Serving.
    pub(crate) fn response_ready<B>(&self, response: &mut http::Response<B>) {
        // `SeqCst`: pairs with `close_when_empty` (a plain load on x86 and ARM alike).
        if self.flags.load(Ordering::SeqCst) & (Flags::RETIRE | Flags::CLOSING_READ) != 0
            && self.protocol() == Protocol::Http1
            && response.status() != http::StatusCode::SWITCHING_PROTOCOLS
            && !response.headers().contains_key(http::header::UPGRADE)
        {
            response
                .headers_mut()
                .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
    }

    /// Whether the connection closes at its next idle read (Closing, or the keep-alive
    /// timeout).
    pub(crate) fn closes_when_idle(&self) -> bool {
        self.has(Flags::CLOSING_READ)
    }

    /// Why the connection was told to finish while serving, if it was.
    pub(crate) fn retiring(&self) -> Option<Retire> {
        if !self.has(Flags::RETIRE) {
            return None;
        }
        Retire::from_u8(self.retire_reason.load(Ordering::Relaxed))
    }

    /// When the connection was told to finish while serving.
    pub(crate) fn retired_at(&self) -> Tick {
        Tick(self.retired_at.load(Ordering::Relaxed))
    }

    /// When the connection reaches its maximum age, or [`Tick::NONE`].
    pub(crate) fn max_age_at(&self) -> Tick {
        self.max_age_at
    }

    /// Nothing in flight and, on HTTP/1, no request head arriving: what the keep-alive
    /// timeout bounds. (An HTTP/2 connection that has sent no request yet counts too.)
    pub(crate) fn is_idle_between_requests(&self) -> bool {
        !self.is_busy()
            && match self.protocol() {
                Protocol::Http1 => self.head_since().is_none(),
                Protocol::Http2 => true,
                Protocol::Unknown => false,
            }
    }

    /// A response ended (or was dropped). Nobody needs waking: at Closing, hyper closes
    /// an HTTP/1 connection after a response that said `Connection: close` by itself,
    /// and the sweep times the idle bound of the rest (a connection waiting for its
    /// client's next request among them) from `idle_since`. Stored before the
    /// decrement, for every response (one plain store): whoever sees nothing in flight
    /// then sees when the last response ended (see the module docs).
    pub(crate) fn request_ended(&self) {
        self.idle_since.store(self.clock.now().0, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// When the last response ended (the accept, before any request): read while
    /// nothing is in flight, when the connection last fell idle.
    pub(crate) fn idle_since(&self) -> Tick {
        Tick(self.idle_since.load(Ordering::Acquire))
    }

    pub(crate) fn set_write_blocked(&self, blocked: bool) {
        // Most writes find it clear and leave it so: a load, no store.
        if self.has(Flags::WRITE_BLOCKED) != blocked {
            if blocked {
                self.set(Flags::WRITE_BLOCKED);
            } else {
                self.flags.fetch_and(!Flags::WRITE_BLOCKED, Ordering::AcqRel);
            }
        }
    }

    /// Bytes came in. Between HTTP/1 requests they begin the next head: time it.
    pub(crate) fn bytes_arrived(&self) {
        if self.head_since.load(Ordering::Relaxed) == Tick::NONE.0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.protocol() == Protocol::Http1
        {
            self.head_since.store(self.clock.now().0, Ordering::Release);
        }
    }

    /// When the head now arriving began, if one is.
    pub(crate) fn head_since(&self) -> Option<Tick> {
        Some(Tick(self.head_since.load(Ordering::Acquire))).filter(|tick| *tick != Tick::NONE)
    }

    /// Something would be lost by closing the connection now: a request or an upgraded
    /// session in flight, or a response still being written to a slow reader. (Half a
    /// request head is not: no request has arrived yet.)
    pub(crate) fn is_busy(&self) -> bool {
        self.in_flight() > 0 || self.is_upgraded() || self.has(Flags::WRITE_BLOCKED)
    }

    /// A WebSocket (or other upgraded session) lives on this connection.
    pub(crate) fn is_upgraded(&self) -> bool {
        let flags = self.flags.load(Ordering::Acquire);
        flags & Flags::TASK_DONE != 0
            || (flags & Flags::UPGRADE_REQUESTED != 0 && self.protocol() == Protocol::Http2)
    }

    /// The protocol as the cut report names it: `upgraded` once the session outlived
    /// the task that served HTTP.
    pub(crate) fn protocol_in_report(&self) -> &'static str {
        if self.has(Flags::TASK_DONE) {
            "upgraded"
        } else {
            self.protocol().as_str()
        }
    }

    pub(crate) fn task_finished(&self) {
        self.set(Flags::TASK_DONE);
    }

    /// Asks the task to look at the phase and the connection's state again. Rare (a
    /// phase change, a request at Closing, a timeout), so a lock is fine here.
    pub(crate) fn notify(&self) {
        self.attention.store(true, Ordering::SeqCst);
        if let Some(waker) = lock(&self.task).as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Registers the serving task's waker; see [`Attention`].
    fn register_task(&self, waker: &Waker) {
        *lock(&self.task) = Some(waker.clone());
    }

    /// Whether something asked the task to look (and clears the request).
    fn take_attention(&self) -> bool {
        self.attention.load(Ordering::SeqCst) && self.attention.swap(false, Ordering::SeqCst)
    }

    /// A timeout expired (header read, or the idle bound at Closing).
    pub(crate) fn expire(&self) {
        self.set(Flags::EXPIRED);
        self.notify();
    }

    /// Takes an expiry back: a request began as it was set (see `drive`).
    pub(crate) fn unexpire(&self) {
        self.flags.fetch_and(!Flags::EXPIRED, Ordering::AcqRel);
    }

    pub(crate) fn is_expired(&self) -> bool {
        self.has(Flags::EXPIRED)
    }

    /// Closing: the next idle read bypasses the reactor and reports end of stream when
    /// nothing is there (see `ConnectionIo::poll_read`), and every HTTP/1 response from
    /// now on says `Connection: close` (`response_ready`).
    ///
    /// Except on an HTTP/1 connection in use: a request in flight (its response's head
    /// may have gone out already, without the header), or a response that ended less
    /// than its idle close timeout ago. Its client, told nothing, sends its next request
    /// whenever it likes: closing now would race it, and a request written as the
    /// connection closes is lost (an active keep-alive client sends every few
    /// milliseconds). Such a connection waits for that request instead, until idle for
    /// that long ([`awaits_next_request`](Connection::awaits_next_request)); the request
    /// is answered with `Connection: close`, and the client moves on. One idle longer
    /// than that (its client sends rarely, if ever) reads once and closes.
    pub(crate) fn close_when_empty(&self) {
        // Both bits first, in one write, then the question, then the wait taken back if
        // the connection is not in use. The other order (decide, then set) left a gap: a
        // request starting in it was answered without `Connection: close` (no bit yet),
        // and the connection then read once and closed under the client's next request.
        // `SeqCst`, paired with `request_started`'s increment and `response_ready`'s load:
        // either this sees the request in flight, or its response sees Closing.
        self.flags
            .fetch_or(Flags::CLOSING_READ | Flags::AWAIT_NEXT_REQUEST, Ordering::SeqCst);
        // In flight first: once it reads zero, `idle_since` holds the last response's end.
        // Idle is measured on the sweep's last tick, as `idle_since` was stamped: never
        // more than it really is, so a connection in use is never taken for idle (one
        // idle just past the bound may wait a tick).
        let in_use = self.protocol() == Protocol::Http1
            && (self.in_flight() > 0 || self.clock.since(self.idle_since()) < self.idle_close);
        if !in_use {
            self.flags.fetch_and(!Flags::AWAIT_NEXT_REQUEST, Ordering::AcqRel);
        }
    }

    /// Whether, idle at Closing, the connection reads as usual (bounded by the idle
    /// close timeout) for the request its client may be sending, instead of once.
    pub(crate) fn awaits_next_request(&self) -> bool {
        self.has(Flags::AWAIT_NEXT_REQUEST)
    }

    /// The wait for that request is over: the next idle read is the last one. Whether
    /// the connection was waiting.
    pub(crate) fn stop_awaiting_next_request(&self) -> bool {
        self.flags.fetch_and(!Flags::AWAIT_NEXT_REQUEST, Ordering::AcqRel) & Flags::AWAIT_NEXT_REQUEST != 0
    }

    /// Whether a read must leave the fast path: the connection is cut, or Closing.
    pub(crate) fn reads_specially(&self) -> bool {
        self.has(Flags::CUT | Flags::CLOSING_READ)
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.has(Flags::CUT)
    }

    /// Remembers a task waiting on the upgraded socket, so that a cut can wake it.
    pub(crate) fn park(&self, direction: usize, waker: &Waker) {
        self.parked[direction].register(waker);
    }

    pub(crate) fn set_abort(&self, abort: AbortHandle) {
        // If the task already finished, the handle is never used; setting it is harmless.
        let _ = self.abort.set(abort);
    }

    /// Past its maximum age and the grace, with something still in flight: cut, and
    /// said so (the requests' own guards end as the task is aborted).
    pub(crate) fn cut_past_grace(&self) {
        tracing::warn!(
            target: "terminus",
            peer = %self.peer,
            protocol = self.protocol().as_str(),
            age_ms = self.clock.age(self.accepted).as_millis() as u64,
            requests_in_flight = self.in_flight(),
            "connection cut past its maximum age and grace"
        );
        crate::metrics::connection_retired("age_grace_cut");
        self.cut();
    }

    /// Cuts the connection: the task is aborted, and the socket fails every read and
    /// write from now on (which is what reaches a socket an upgrade handed to another
    /// task).
    pub(crate) fn cut(&self) {
        self.set(Flags::CUT);
        for parked in &self.parked {
            parked.wake();
        }
        if let Some(abort) = self.abort.get() {
            abort.abort();
        }
    }
}

/// `age`, give or take 10 %, differently for each connection: connections opened
/// together (a client pool after a scale-up) then do not all close together.
fn jittered(age: std::time::Duration) -> std::time::Duration {
    use std::hash::BuildHasher;
    // std's hasher keys differ at every `RandomState::new()`: enough spread, without a
    // random number generator as a dependency.
    let sample = std::collections::hash_map::RandomState::new().hash_one(0u8);
    // In [-1000, 1000]: hundredths of a percent.
    let offset = (sample % 2001) as i64 - 1000;
    let millis = age.as_millis() as i64;
    std::time::Duration::from_millis((millis + millis * offset / 10_000).max(1) as u64)
}

/// A task's memory of the waker it registered on its connection: tokio keeps one waker
/// per task, so registering again (a lock and a clone) is needed only if it changed,
/// which it does not. The connection wakes it by reference, so it stays registered.
#[derive(Default)]
pub(crate) struct Attention {
    registered: Option<Waker>,
}

impl Attention {
    /// Makes sure the connection can wake this task, and says whether it asked to.
    pub(crate) fn check(&mut self, connection: &Connection, waker: &Waker) -> bool {
        if !self
            .registered
            .as_ref()
            .is_some_and(|registered| registered.will_wake(waker))
        {
            connection.register_task(waker);
            self.registered = Some(waker.clone());
        }
        connection.take_attention()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const IDLE_CLOSE: Duration = Duration::from_secs(1);

    /// An HTTP/1 connection at `now` ms on its server's clock, whose one response ended at
    /// `ended` ms (`None`: a request still in flight).
    fn http1(ended: Option<u64>, now: u64) -> Connection {
        let clock = Arc::new(Clock::new(Duration::from_millis(250)));
        let connection = Connection::new(
            Terminus::builder().build().unwrap(),
            Peer::Named("test".into()),
            Arc::clone(&clock),
            false,
            Limits {
                idle_close: IDLE_CLOSE,
                ..Limits::default()
            },
        );
        connection.set_protocol(Protocol::Http1);
        connection.request_started(false);
        if let Some(ended) = ended {
            clock.set(Tick(ended));
            connection.request_ended();
        }
        clock.set(Tick(now));
        connection
    }

    #[test]
    fn at_closing_a_connection_in_use_waits_for_its_next_request_and_one_idle_past_the_bound_does_not() {
        let cases = [
            ("a request in flight", http1(None, 5_000), true),
            ("a response ended just now", http1(Some(5_000), 5_000), true),
            ("a response ended 999 ms ago", http1(Some(4_001), 5_000), true),
            ("idle for the bound", http1(Some(4_000), 5_000), false),
            ("idle for 3 s", http1(Some(2_000), 5_000), false),
        ];
        for (what, connection, waits) in cases {
            connection.close_when_empty();
            assert!(connection.closes_when_idle(), "{what}: Closing is set");
            assert_eq!(connection.awaits_next_request(), waits, "{what}");
        }
    }

    #[test]
    fn at_closing_an_http2_connection_never_waits_for_a_next_request() {
        let connection = http1(Some(5_000), 5_000);
        connection.set_protocol(Protocol::Http2);
        connection.close_when_empty();
        assert!(connection.closes_when_idle());
        assert!(!connection.awaits_next_request());
    }

    #[test]
    fn the_wait_ends_one_tick_past_the_bound_counted_from_the_last_response() {
        let connection = http1(Some(4_500), 5_000);
        connection.close_when_empty();
        let clock = Arc::clone(&connection.clock);
        let closing = Tick(5_000);
        // Idle 1 s by the ticks, but the response may have ended up to a tick after it
        // was stamped: not yet.
        clock.set(Tick(5_500));
        crate::drain::close_if_idle_too_long(&connection, &clock, closing);
        assert!(!connection.is_expired());
        clock.set(Tick(5_750));
        crate::drain::close_if_idle_too_long(&connection, &clock, closing);
        assert!(connection.is_expired());
    }
}
