//! A paced load generator that counts every request it sends.
//!
//! Workers send a steady mix of requests through keep-alive connections:
//!
//! - **HTTP/1.1** workers each own one connection and open a new one when the server
//!   answers `Connection: close` or the connection ends (what every HTTP client does);
//! - **HTTP/2** workers share a connection per group, one stream per request, and open
//!   a new connection after a GOAWAY or a close;
//! - the mix: `GET /` (fast), `POST /` with a 4 KiB body, and `GET /slow?ms=1000..3000`
//!   (mostly from dedicated workers, so that some are in flight at any moment).
//!
//! Each request ends in exactly one [`Counts`] bucket: a complete 2xx response with the
//! expected body, another status, a connection error, a response cut mid-body, or a
//! timeout. A request that could not even start because the pooled connection had
//! already closed is not a request yet: the worker reconnects first, as any HTTP client
//! does with an idle connection the server closed. Likewise an HTTP/2 request that
//! crossed the server's final GOAWAY (refused by it, or never sent because the
//! connection was closing) never reached the application: RFC 9113 §8.7 lets clients
//! retry it, and they do (hyper-util's, Go's, gRPC's). The worker retries it once on a
//! new connection, and counts it in [`Counts::retried`] (see [`crate::refused`]). So is
//! an HTTP/1.1 request hyper never wrote because the idle connection closed between the
//! pool's check and the send.
//!
//! The paths and what counts as a good answer are the [`Traffic`]: the tests' default
//! ([`Traffic::harness`]) expects the quickstart's bodies; `terminus-check` sends the
//! user's paths and takes any complete answer below 500. Every request also leaves a
//! [`Record`] (when it was sent, when it ended, how), from which the tool places each
//! loss on a restart's timeline.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The requests sent and what counts as a good answer to them.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// The path of the fast `GET`s and of the `POST`s (with a 4 KiB body).
    pub path: String,
    /// The path of the slow requests, `{ms}` replaced by a duration of 1,000 to 3,000;
    /// `None`: no slow requests (and no slow-only workers).
    pub slow_path: Option<String>,
    /// What a good answer is.
    pub expect: Expect,
    /// HTTP/1.1 workers that open a new connection for every request, on top of the
    /// keep-alive ones of [`LoadConfig`].
    pub fresh_connection_workers: usize,
}

impl Traffic {
    /// The tests' traffic: `GET /` and `POST /` answered `hello`, `GET /slow?ms={ms}`
    /// answered `slow` (the quickstart's routes), on keep-alive connections only.
    pub fn harness() -> Traffic {
        Traffic {
            path: "/".to_owned(),
            slow_path: Some("/slow?ms={ms}".to_owned()),
            expect: Expect::QuickstartBodies,
            fresh_connection_workers: 0,
        }
    }
}

/// What counts as a good answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A 2xx with the quickstart's body: `hello`, or `slow` for a slow request.
    QuickstartBodies,
    /// Any complete answer with a status below 500: the service answered (a 4xx is
    /// its answer to the request, not a loss of the restart).
    AnswerBelow500,
}

/// How one request ended, as the report counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A good answer ([`Expect`]).
    Ok,
    /// A complete answer that is not good: its status (502 and 503 are what a balancer
    /// answers when the connection to the server failed or no server was up).
    Status(u16),
    /// A connection to the balancer (or server) could not be opened.
    Refused,
    /// The connection was reset or closed before an answer began.
    NoAnswer,
    /// The answer began and was cut before its end.
    Truncated,
    /// No complete answer within the timeout.
    Timeout,
}

impl Outcome {
    /// The outcome's name in reports: `ok`, `status_503`, `refused`, `no_answer`,
    /// `truncated`, `timeout`.
    pub fn name(self) -> String {
        match self {
            Outcome::Ok => "ok".to_owned(),
            Outcome::Status(status) => format!("status_{status}"),
            Outcome::Refused => "refused".to_owned(),
            Outcome::NoAnswer => "no_answer".to_owned(),
            Outcome::Truncated => "truncated".to_owned(),
            Outcome::Timeout => "timeout".to_owned(),
        }
    }
}

/// One request, as it ended.
#[derive(Clone, Debug)]
pub struct Record {
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    /// When its outcome was known, from the start of the load.
    pub ended: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// `GET`, `POST` or `GET slow`.
    pub kind: &'static str,
    /// The error or the unexpected answer, for a failure.
    pub detail: Option<String>,
}

/// The shape of the load.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The HTTP/1.1 address.
    pub h1: SocketAddr,
    /// The HTTP/2 (prior knowledge) address, if any.
    pub h2: Option<SocketAddr>,
    /// HTTP/1.1 workers sending the fast/POST/slow mix, one connection each.
    pub h1_workers: usize,
    /// HTTP/1.1 workers sending only slow requests, back to back, so that some are always
    /// in flight.
    pub h1_slow_workers: usize,
    /// HTTP/2 connections.
    pub h2_connections: usize,
    /// Workers per HTTP/2 connection (each a stream at a time, concurrently).
    pub h2_workers_per_connection: usize,
    /// The pause between two requests of one mixed worker.
    pub interval: Duration,
    /// A request not complete after this is counted as a timeout.
    pub timeout: Duration,
    /// Whether the mix has slow requests: 1 % of the mixed workers' requests, and the
    /// last worker of each HTTP/2 connection's (the `h1_slow_workers` are separate).
    /// Off for a load of GET and POST only.
    pub slow_in_mix: bool,
}

/// What happened to the requests sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests sent.
    pub requests: u64,
    /// Complete 2xx responses with the expected body.
    pub ok: u64,
    /// Responses with another status (or an unexpected body).
    pub bad_status: u64,
    /// Requests that failed on the connection before a response began.
    pub connection_errors: u64,
    /// Responses whose body was cut before its end.
    pub truncated: u64,
    /// Requests not complete within the timeout.
    pub timeouts: u64,
    /// Requests never processed: HTTP/2 ones after the server's GOAWAY, HTTP/1.1 ones
    /// hyper never wrote (the idle connection closed as they were sent); retried once on
    /// a new connection; counted again by how the retry ended.
    pub retried: u64,
    /// Successful requests by kind: HTTP/2, POST, slow.
    pub ok_h2: u64,
    /// Successful POST requests.
    pub ok_post: u64,
    /// Successful slow requests.
    pub ok_slow: u64,
    /// Non-2xx responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// The first failures, for the test's message.
    pub first_failures: Vec<String>,
}

impl Counts {
    /// Every request that did not end in a complete 2xx response.
    pub fn failed(&self) -> u64 {
        self.bad_status + self.connection_errors + self.truncated + self.timeouts
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests={} ok={} failed={} (status={} {:?} conn={} truncated={} timeout={}; ok h2={} post={} slow={}; retried={})",
            self.requests,
            self.ok,
            self.failed(),
            self.bad_status,
            self.statuses,
            self.connection_errors,
            self.truncated,
            self.timeouts,
            self.ok_h2,
            self.ok_post,
            self.ok_slow,
            self.retried
        )
    }
}

/// How many failures are kept with their details.
const KEPT_FAILURES: usize = 20;

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    bad_status: AtomicU64,
    connection_errors: AtomicU64,
    truncated: AtomicU64,
    timeouts: AtomicU64,
    retried: AtomicU64,
    ok_h2: AtomicU64,
    ok_post: AtomicU64,
    ok_slow: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    failures: Mutex<Vec<String>>,
    records: Mutex<Vec<Record>>,
}

/// A running load. [`Load::stop`] lets the requests in flight finish and returns the counts.
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    workers: JoinSet<()>,
    started: Instant,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Fast,
    Post,
    Slow(u64),
}

impl Kind {
    fn request(self, authority: &str, absolute: bool, traffic: &Traffic) -> Request<Full<Bytes>> {
        let (method, path, body) = match self {
            Kind::Fast => ("GET", traffic.path.clone(), Bytes::new()),
            Kind::Post => ("POST", traffic.path.clone(), Bytes::from(vec![b'x'; 4096])),
            Kind::Slow(ms) => {
                let template = traffic.slow_path.as_deref().unwrap_or("/");
                ("GET", template.replace("{ms}", &ms.to_string()), Bytes::new())
            }
        };
        let builder = Request::builder().method(method);
        let builder = if absolute {
            // HTTP/2 carries the authority in the `:authority` pseudo-header.
            builder.uri(format!("http://{authority}{path}"))
        } else {
            builder.uri(path).header("host", authority)
        };
        builder.body(Full::new(body)).expect("a valid request")
    }

    fn expected_body(self) -> &'static [u8] {
        match self {
            Kind::Fast | Kind::Post => b"hello",
            Kind::Slow(_) => b"slow",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Fast => "GET",
            Kind::Post => "POST",
            Kind::Slow(_) => "GET slow",
        }
    }
}

/// A small deterministic generator (xorshift), so that a run can be repeated.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn slow(&mut self) -> Kind {
        Kind::Slow(1000 + self.next() % 2001)
    }

    /// 74 % fast GET, 25 % POST, 1 % slow (a slow request holds its worker for
    /// 1-3 s; dedicated slow workers carry most of them); fast instead of slow when
    /// there is no slow path.
    fn pick(&mut self, slow: bool) -> Kind {
        match self.next() % 100 {
            0..=73 => Kind::Fast,
            74..=98 => Kind::Post,
            _ if slow => self.slow(),
            _ => Kind::Fast,
        }
    }
}

/// How one request ended.
enum Ending {
    Ok,
    BadStatus(StatusCode),
    UnexpectedBody(Bytes),
    Connection(hyper::Error),
    Truncated(hyper::Error),
    Timeout,
}

impl Ending {
    /// An HTTP/1.1 request hyper never wrote: the connection had closed when it came to
    /// send it ("canceled", "connection closed"). A request it had started to write
    /// and lost is reported otherwise (an incomplete message).
    fn never_sent_h1(&self) -> bool {
        let Ending::Connection(error) = self else {
            return false;
        };
        error.is_canceled()
            && std::error::Error::source(error)
                .is_some_and(|source| source.to_string() == "connection closed")
    }

    /// An HTTP/2 request the server never processed: not sent because the connection
    /// had closed or closed first (hyper's "canceled"), or refused by a GOAWAY (a stream above its last
    /// stream id, or one the client's h2 would not open after it) or REFUSED_STREAM.
    fn never_processed(&self) -> bool {
        matches!(self, Ending::Connection(error) if crate::refused::never_processed(error))
    }
}

impl Load {
    /// Starts the workers, sending the tests' [`Traffic::harness`].
    pub fn start(config: LoadConfig) -> Load {
        Load::start_with(config, Traffic::harness())
    }

    /// Starts the workers, sending `traffic`. Without a slow path, the slow-only
    /// workers are not started and the last worker of each HTTP/2 connection sends the
    /// mix like the others.
    pub fn start_with(config: LoadConfig, traffic: Traffic) -> Load {
        let traffic = Arc::new(traffic);
        let slow_path = traffic.slow_path.is_some();
        let slow = slow_path && config.slow_in_mix;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let started = Instant::now();
        let mut workers = JoinSet::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next_seed = || {
            seed = seed.wrapping_add(0x2545_f491_4f6c_dd1d);
            seed
        };
        let mut worker = || Worker::new(&config, &traffic, &stop, &stats, started, next_seed());
        for _ in 0..config.h1_workers {
            workers.spawn(worker().h1(false, false));
        }
        for _ in 0..traffic.fresh_connection_workers {
            workers.spawn(worker().h1(false, true));
        }
        for _ in 0..if slow_path { config.h1_slow_workers } else { 0 } {
            workers.spawn(worker().h1(true, false));
        }
        if let Some(h2) = config.h2 {
            for _ in 0..config.h2_connections {
                let shared = Arc::new(tokio::sync::Mutex::new(H2Shared::default()));
                for index in 0..config.h2_workers_per_connection {
                    let worker = worker();
                    // The last worker of each connection sends slow requests only.
                    let slow_only = slow && index + 1 == config.h2_workers_per_connection;
                    workers.spawn(worker.h2(h2, Arc::clone(&shared), slow_only));
                }
            }
        }
        Load {
            stop,
            stats,
            workers,
            started,
        }
    }

    /// How long the load has been running.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// When the load started: the origin of every [`Record`]'s times.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        counts_of(&self.stats)
    }

    /// Reads the counts so far from another task (a progress line).
    pub fn counter(&self) -> impl Fn() -> Counts + Send + Sync + 'static {
        let stats = Arc::clone(&self.stats);
        move || counts_of(&stats)
    }
}

fn counts_of(stats: &Stats) -> Counts {
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    Counts {
        requests: load(&stats.requests),
        ok: load(&stats.ok),
        bad_status: load(&stats.bad_status),
        connection_errors: load(&stats.connection_errors),
        truncated: load(&stats.truncated),
        timeouts: load(&stats.timeouts),
        retried: load(&stats.retried),
        ok_h2: load(&stats.ok_h2),
        ok_post: load(&stats.ok_post),
        ok_slow: load(&stats.ok_slow),
        statuses: lock(&stats.statuses).clone(),
        first_failures: lock(&stats.failures).clone(),
    }
}

impl Load {
    /// Stops sending, waits for the requests in flight (each bounded by the timeout),
    /// and returns the final counts.
    pub async fn stop(self) -> Counts {
        self.finish().await.0
    }

    /// [`stop`](Load::stop), and every request's [`Record`] in the order they ended.
    pub async fn finish(mut self) -> (Counts, Vec<Record>) {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(joined) = self.workers.join_next().await {
            if let Err(error) = joined {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        let records = std::mem::take(&mut *lock(&self.stats.records));
        (self.counts(), records)
    }
}

/// The connection shared by a group of HTTP/2 workers, and how many times it was
/// replaced (so that a worker drops only the connection it saw failing).
#[derive(Default)]
struct H2Shared {
    generation: u64,
    sender: Option<http2::SendRequest<Full<Bytes>>>,
}

type H2Slot = Arc<tokio::sync::Mutex<H2Shared>>;

/// A lock of the counters: a worker that panicked holding it left whole entries (each
/// update is one push or one increment), so a poisoned lock is still good to read.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Worker {
    traffic: Arc<Traffic>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    started: Instant,
    h1: SocketAddr,
    interval: Duration,
    timeout: Duration,
    mix: Mix,
    slow_in_mix: bool,
}

impl Worker {
    fn new(
        config: &LoadConfig,
        traffic: &Arc<Traffic>,
        stop: &Arc<AtomicBool>,
        stats: &Arc<Stats>,
        started: Instant,
        seed: u64,
    ) -> Worker {
        Worker {
            traffic: Arc::clone(traffic),
            stop: Arc::clone(stop),
            stats: Arc::clone(stats),
            started,
            h1: config.h1,
            interval: config.interval,
            timeout: config.timeout,
            mix: Mix(seed | 1),
            slow_in_mix: config.slow_in_mix,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps until the next tick of a mixed worker; slow-only workers go back to back.
    async fn pace(&self, next: &mut Instant, slow_only: bool) {
        if slow_only {
            return;
        }
        *next += self.interval;
        let now = Instant::now();
        if *next < now {
            // Behind (a slow request): do not burst to catch up.
            *next = now;
        }
        tokio::time::sleep_until((*next).into()).await;
    }

    fn kind(&mut self, slow_only: bool) -> Kind {
        if slow_only {
            self.mix.slow()
        } else {
            self.mix
                .pick(self.traffic.slow_path.is_some() && self.slow_in_mix)
        }
    }

    /// One HTTP/1.1 connection at a time; with `fresh`, a new one for every request.
    async fn h1(mut self, slow_only: bool, fresh: bool) {
        let authority = self.h1.to_string();
        let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
        let mut next = Instant::now();
        while !self.stopped() {
            self.pace(&mut next, slow_only).await;
            if self.stopped() {
                break;
            }
            let kind = self.kind(slow_only);
            // A pooled connection that ended while idle is replaced before the request.
            if let Some(open) = sender.as_mut() {
                if open.ready().await.is_err() {
                    sender = None;
                }
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self.started.elapsed();
            if sender.is_none() {
                match connect_h1(self.h1).await {
                    Ok(opened) => sender = Some(opened),
                    Err(error) => {
                        self.record_connect_failure("HTTP/1.1", kind, &error, sent);
                        continue;
                    }
                }
            }
            let Some(open) = sender.as_mut() else { continue };
            let request = kind.request(&authority, false, &self.traffic);
            let (mut ending, mut close) = exchange(
                open.send_request(request),
                kind,
                self.timeout,
                self.traffic.expect,
            )
            .await;
            if ending.never_sent_h1() {
                // The idle connection closed between `ready` and the send (the server's
                // close crossed it): never written, so retried on a new connection, as
                // HTTP clients do with a pooled connection found closed (RFC 9112 9.3.1).
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                (ending, close) = match connect_h1(self.h1).await {
                    Ok(mut reopened) => {
                        let request = kind.request(&authority, false, &self.traffic);
                        let result = exchange(
                            reopened.send_request(request),
                            kind,
                            self.timeout,
                            self.traffic.expect,
                        )
                        .await;
                        sender = Some(reopened);
                        result
                    }
                    Err(error) => {
                        sender = None;
                        self.record_connect_failure("HTTP/1.1", kind, &error, sent);
                        continue;
                    }
                };
            }
            if fresh || close || !matches!(ending, Ending::Ok) {
                sender = None;
            }
            self.record("HTTP/1.1", kind, ending, sent);
        }
    }

    async fn h2(mut self, addr: SocketAddr, slot: H2Slot, slow_only: bool) {
        let authority = addr.to_string();
        let mut next = Instant::now();
        while !self.stopped() {
            self.pace(&mut next, slow_only).await;
            if self.stopped() {
                break;
            }
            let kind = self.kind(slow_only);
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self.started.elapsed();
            // Twice at most: a connection opened for the retry may itself meet a GOAWAY
            // (accepted by a process that began to drain an instant later, as the old
            // process of an in-place upgrade does).
            let mut retries = 0;
            loop {
                let Some((generation, mut sender)) = self.h2_sender(addr, &slot, kind, sent).await else {
                    break;
                };
                let request = kind.request(&authority, true, &self.traffic);
                let (ending, _) = exchange(
                    sender.send_request(request),
                    kind,
                    self.timeout,
                    self.traffic.expect,
                )
                .await;
                if retries < 2 && ending.never_processed() {
                    // The connection is going away: the next attempt opens a new one.
                    retries += 1;
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    let mut shared = slot.lock().await;
                    if shared.generation == generation {
                        shared.sender = None;
                    }
                    continue;
                }
                self.record("HTTP/2", kind, ending, sent);
                break;
            }
        }
    }

    /// The shared connection's sender, or a new connection's when it is gone. `None`
    /// (and the failure recorded) when connecting fails.
    async fn h2_sender(
        &self,
        addr: SocketAddr,
        slot: &H2Slot,
        kind: Kind,
        sent: Duration,
    ) -> Option<(u64, http2::SendRequest<Full<Bytes>>)> {
        let mut shared = slot.lock().await;
        let reusable = match shared.sender.as_mut() {
            Some(open) => open.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            shared.generation += 1;
            match connect_h2(addr).await {
                Ok(fresh) => shared.sender = Some(fresh),
                Err(error) => {
                    shared.sender = None;
                    drop(shared);
                    self.record_connect_failure("HTTP/2", kind, &error, sent);
                    return None;
                }
            }
        }
        Some((shared.generation, shared.sender.clone()?))
    }

    fn record_connect_failure(
        &self,
        protocol: &'static str,
        kind: Kind,
        error: &std::io::Error,
        sent: Duration,
    ) {
        self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
        let failure = format!("connect: {error}");
        self.keep_record(protocol, kind, sent, Outcome::Refused, Some(failure.clone()));
        self.keep_failure(format!("{protocol} {kind:?}: {failure}"));
    }

    fn record(&self, protocol: &'static str, kind: Kind, ending: Ending, sent: Duration) {
        let stats = &self.stats;
        let outcome = match &ending {
            Ending::Ok => Outcome::Ok,
            Ending::BadStatus(status) => Outcome::Status(status.as_u16()),
            Ending::UnexpectedBody(_) => Outcome::Status(200),
            Ending::Connection(_) => Outcome::NoAnswer,
            Ending::Truncated(_) => Outcome::Truncated,
            Ending::Timeout => Outcome::Timeout,
        };
        let failure = match ending {
            Ending::Ok => {
                self.keep_record(protocol, kind, sent, outcome, None);
                stats.ok.fetch_add(1, Ordering::Relaxed);
                if protocol == "HTTP/2" {
                    stats.ok_h2.fetch_add(1, Ordering::Relaxed);
                }
                match kind {
                    Kind::Post => stats.ok_post.fetch_add(1, Ordering::Relaxed),
                    Kind::Slow(_) => stats.ok_slow.fetch_add(1, Ordering::Relaxed),
                    Kind::Fast => 0,
                };
                return;
            }
            Ending::BadStatus(status) => {
                stats.bad_status.fetch_add(1, Ordering::Relaxed);
                *lock(&stats.statuses).entry(status.as_u16()).or_default() += 1;
                format!("status {status}")
            }
            Ending::UnexpectedBody(body) => {
                stats.bad_status.fetch_add(1, Ordering::Relaxed);
                format!("unexpected body {body:?}")
            }
            Ending::Connection(error) => {
                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                match std::error::Error::source(&error) {
                    Some(cause) => format!("connection: {error} ({cause})"),
                    None => format!("connection: {error}"),
                }
            }
            Ending::Truncated(error) => {
                stats.truncated.fetch_add(1, Ordering::Relaxed);
                format!("body cut: {error}")
            }
            Ending::Timeout => {
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                "timeout".to_owned()
            }
        };
        self.keep_record(protocol, kind, sent, outcome, Some(failure.clone()));
        self.keep_failure(format!("{protocol} {kind:?}: {failure}"));
    }

    fn keep_record(
        &self,
        protocol: &'static str,
        kind: Kind,
        sent: Duration,
        outcome: Outcome,
        detail: Option<String>,
    ) {
        let record = Record {
            sent,
            ended: self.started.elapsed(),
            outcome,
            protocol,
            kind: kind.name(),
            detail,
        };
        lock(&self.stats.records).push(record);
    }

    fn keep_failure(&self, failure: String) {
        let mut failures = lock(&self.stats.failures);
        if failures.len() < KEPT_FAILURES {
            failures.push(format!(
                "t={:.3}s {failure}",
                self.started.elapsed().as_secs_f64()
            ));
        }
    }
}

/// Sends one request and reads the whole response, within `timeout`. Also says whether
/// the server asked to close the connection.
async fn exchange<F>(send: F, kind: Kind, timeout: Duration, expect: Expect) -> (Ending, bool)
where
    F: std::future::Future<Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>>,
{
    let whole = async {
        let response = match send.await {
            Ok(response) => response,
            Err(error) => return (Ending::Connection(error), true),
        };
        let close = response
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(error) => return (Ending::Truncated(error), true),
        };
        let ending = match expect {
            Expect::AnswerBelow500 if status.as_u16() < 500 => Ending::Ok,
            Expect::AnswerBelow500 => Ending::BadStatus(status),
            Expect::QuickstartBodies if !status.is_success() => Ending::BadStatus(status),
            Expect::QuickstartBodies if body != kind.expected_body() => Ending::UnexpectedBody(body),
            Expect::QuickstartBodies => Ending::Ok,
        };
        (ending, close)
    };
    match tokio::time::timeout(timeout, whole).await {
        Ok(result) => result,
        Err(_) => (Ending::Timeout, true),
    }
}

async fn connect_h1(addr: SocketAddr) -> std::io::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn connect_h2(addr: SocketAddr) -> std::io::Result<http2::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
