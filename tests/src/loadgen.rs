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
//! new connection, and counts it in [`Counts::retried`]. So is an HTTP/1.1 request hyper
//! never wrote because the idle connection closed between the pool's check and the send.

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
use tokio::net::TcpStream;
use tokio::task::JoinSet;

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
    fn request(self, authority: &str, absolute: bool) -> Request<Full<Bytes>> {
        let (method, path, body) = match self {
            Kind::Fast => ("GET", "/".to_owned(), Bytes::new()),
            Kind::Post => ("POST", "/".to_owned(), Bytes::from(vec![b'x'; 4096])),
            Kind::Slow(ms) => ("GET", format!("/slow?ms={ms}"), Bytes::new()),
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
    /// 1-3 s; dedicated slow workers carry most of them).
    fn pick(&mut self) -> Kind {
        match self.next() % 100 {
            0..=73 => Kind::Fast,
            74..=98 => Kind::Post,
            _ => self.slow(),
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
        let Ending::Connection(error) = self else {
            return false;
        };
        let source = std::error::Error::source(error);
        if error.is_canceled() {
            // Not handed to the connection (it had just closed), or still in hyper's
            // queue when it closed: never sent. (A request hyper had started to send
            // and lost is reported otherwise.)
            return source.is_some_and(|source| {
                let cause = source.to_string();
                cause == "connection closed" || cause == "connection was not ready"
            });
        }
        // A graceful GOAWAY (NO_ERROR) fails only the streams above its last stream id.
        source
            .and_then(|source| source.downcast_ref::<h2::Error>())
            .and_then(h2::Error::reason)
            .is_some_and(|reason| reason == h2::Reason::REFUSED_STREAM || reason == h2::Reason::NO_ERROR)
    }
}

impl Load {
    /// Starts the workers.
    pub fn start(config: LoadConfig) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let started = Instant::now();
        let mut workers = JoinSet::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next_seed = || {
            seed = seed.wrapping_add(0x2545_f491_4f6c_dd1d);
            seed
        };
        for _ in 0..config.h1_workers {
            let worker = Worker::new(&config, &stop, &stats, started, next_seed());
            workers.spawn(worker.h1(false));
        }
        for _ in 0..config.h1_slow_workers {
            let worker = Worker::new(&config, &stop, &stats, started, next_seed());
            workers.spawn(worker.h1(true));
        }
        if let Some(h2) = config.h2 {
            for _ in 0..config.h2_connections {
                let shared = Arc::new(tokio::sync::Mutex::new(H2Shared::default()));
                for index in 0..config.h2_workers_per_connection {
                    let worker = Worker::new(&config, &stop, &stats, started, next_seed());
                    // The last worker of each connection sends slow requests only.
                    let slow_only = config.slow_in_mix && index + 1 == config.h2_workers_per_connection;
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

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let stats = &self.stats;
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
            statuses: stats.statuses.lock().expect("statuses").clone(),
            first_failures: stats.failures.lock().expect("failures").clone(),
        }
    }

    /// Stops sending, waits for the requests in flight (each bounded by the timeout),
    /// and returns the final counts.
    pub async fn stop(mut self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(joined) = self.workers.join_next().await {
            if let Err(error) = joined {
                std::panic::resume_unwind(error.into_panic());
            }
        }
        self.counts()
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

struct Worker {
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
        stop: &Arc<AtomicBool>,
        stats: &Arc<Stats>,
        started: Instant,
        seed: u64,
    ) -> Worker {
        Worker {
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
            match self.mix.pick() {
                Kind::Slow(_) if !self.slow_in_mix => Kind::Fast,
                kind => kind,
            }
        }
    }

    async fn h1(mut self, slow_only: bool) {
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
            if sender.is_none() {
                match connect_h1(self.h1).await {
                    Ok(fresh) => sender = Some(fresh),
                    Err(error) => {
                        self.record_connect_failure("HTTP/1.1", kind, &error);
                        continue;
                    }
                }
            }
            let Some(open) = sender.as_mut() else { continue };
            let request = kind.request(&authority, false);
            let (mut ending, mut close) = exchange(open.send_request(request), kind, self.timeout).await;
            if ending.never_sent_h1() {
                // The idle connection closed between `ready` and the send (the server's
                // close crossed it): never written, so retried on a new connection, as
                // HTTP clients do with a pooled connection found closed (RFC 9112 9.3.1).
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                (ending, close) = match connect_h1(self.h1).await {
                    Ok(mut fresh) => {
                        let request = kind.request(&authority, false);
                        let result = exchange(fresh.send_request(request), kind, self.timeout).await;
                        sender = Some(fresh);
                        result
                    }
                    Err(error) => {
                        sender = None;
                        self.record_connect_failure("HTTP/1.1", kind, &error);
                        continue;
                    }
                };
            }
            if close || !matches!(ending, Ending::Ok) {
                sender = None;
            }
            self.record("HTTP/1.1", kind, ending);
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
            // Twice at most: a connection opened for the retry may itself meet a GOAWAY
            // (accepted by a process that began to drain an instant later, as the old
            // process of an in-place upgrade does).
            let mut retries = 0;
            loop {
                let Some((generation, mut sender)) = self.h2_sender(addr, &slot, kind).await else {
                    break;
                };
                let request = kind.request(&authority, true);
                let (ending, _) = exchange(sender.send_request(request), kind, self.timeout).await;
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
                self.record("HTTP/2", kind, ending);
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
                    self.record_connect_failure("HTTP/2", kind, &error);
                    return None;
                }
            }
        }
        Some((shared.generation, shared.sender.clone()?))
    }

    fn record_connect_failure(&self, protocol: &str, kind: Kind, error: &std::io::Error) {
        self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
        self.keep_failure(format!("{protocol} {kind:?}: connect: {error}"));
    }

    fn record(&self, protocol: &str, kind: Kind, ending: Ending) {
        let stats = &self.stats;
        let failure = match ending {
            Ending::Ok => {
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
                *stats
                    .statuses
                    .lock()
                    .expect("statuses")
                    .entry(status.as_u16())
                    .or_default() += 1;
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
        self.keep_failure(format!("{protocol} {kind:?}: {failure}"));
    }

    fn keep_failure(&self, failure: String) {
        let mut failures = self.stats.failures.lock().expect("failures");
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
async fn exchange<F>(send: F, kind: Kind, timeout: Duration) -> (Ending, bool)
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
        let ending = if !status.is_success() {
            Ending::BadStatus(status)
        } else if body != kind.expected_body() {
            Ending::UnexpectedBody(body)
        } else {
            Ending::Ok
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
