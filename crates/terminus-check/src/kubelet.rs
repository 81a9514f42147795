//! The kubelet's HTTP probe, reproduced for the tests, and a probe schedule that drives
//! a pod's startup, readiness and liveness probes against a real server process.
//!
//! What the kubelet does (Kubernetes `pkg/probe/http`, `pkg/probe/http/request.go`),
//! and so what [`http_get`] does:
//!
//! - a new TCP connection for every probe: its transport has `DisableKeepAlives`, so
//!   the request carries `Connection: close` and the connection is never reused;
//! - headers `Host: <ip>:<port>`, `User-Agent: kube-probe/<major>.<minor>`
//!   ([`USER_AGENT`]), `Accept: */*`, and no `Accept-Encoding` (`DisableCompression`);
//! - one timeout for all of it, connect to the last byte read (`timeoutSeconds`,
//!   default 1 s: [`DEFAULT_TIMEOUT`]);
//! - at most 10 KiB of body read ([`MAX_BODY`]); a longer body is truncated, not an
//!   error;
//! - redirects followed while they stay on the same host name (10 requests at most); a redirect
//!   to another host is not followed, and its 3xx answer is a *warning*, which the
//!   kubelet counts as a success;
//! - success on a status from 200 to 399, failure otherwise, and on any connection or
//!   timeout error.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The kubelet's `User-Agent` (Kubernetes 1.34).
pub const USER_AGENT: &str = "kube-probe/1.34";
/// The most of a probe's body the kubelet reads.
pub const MAX_BODY: usize = 10 * 1024;
/// `timeoutSeconds` when a probe does not set it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most requests one probe makes, redirects included (Go's default redirect policy).
const MAX_REDIRECTS: usize = 10;

/// How the kubelet judges a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 200–299.
    Success,
    /// A 3xx answer it did not follow (to another host, or without `Location`): the
    /// kubelet records a warning event and counts the probe as passed.
    Warning,
    /// Any other status, or a connection error, or the timeout.
    Failure,
}

impl Verdict {
    /// Whether the kubelet counts it as a passed probe.
    pub fn passed(self) -> bool {
        self != Verdict::Failure
    }
}

/// One probe's result.
#[derive(Clone, Debug)]
pub struct ProbeResult {
    /// The kubelet's verdict.
    pub verdict: Verdict,
    /// The final answer's status, if there was one.
    pub status: Option<StatusCode>,
    /// The body, at most [`MAX_BODY`] bytes of it.
    pub body: Bytes,
    /// Whether the body went on past [`MAX_BODY`] (the kubelet drops the rest).
    pub truncated: bool,
    /// Why the probe failed without an answer (connection refused, timeout, ...).
    pub error: Option<String>,
    /// Redirects followed.
    pub redirects: usize,
    /// From the first connect to the last byte read.
    pub elapsed: Duration,
}

impl ProbeResult {
    fn failed(error: String, redirects: usize, started: Instant) -> ProbeResult {
        ProbeResult {
            verdict: Verdict::Failure,
            status: None,
            body: Bytes::new(),
            truncated: false,
            error: Some(error),
            redirects,
            elapsed: started.elapsed(),
        }
    }
}

/// `GET path` on `addr` as the kubelet's `httpGet` probe does it, within `timeout`.
pub async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> ProbeResult {
    let started = Instant::now();
    let mut target = Target {
        addr,
        host: addr.ip().to_string(),
        path: path.to_owned(),
    };
    let mut redirects = 0;
    let deadline = tokio::time::Instant::from_std(started + timeout);
    loop {
        let answer = match tokio::time::timeout_at(deadline, fetch(&target)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return ProbeResult::failed(error, redirects, started),
            Err(_) => {
                return ProbeResult::failed(
                    format!("timeout after {timeout:?} (Client.Timeout exceeded)"),
                    redirects,
                    started,
                )
            }
        };
        if let Some(next) = answer.follow(&target) {
            // Go's client refuses once 10 requests were made: 9 redirects followed.
            if redirects + 1 >= MAX_REDIRECTS {
                return ProbeResult::failed("stopped after 10 redirects".into(), redirects, started);
            }
            redirects += 1;
            target = next;
            continue;
        }
        let verdict = match answer.status.as_u16() {
            200..=299 => Verdict::Success,
            300..=399 => Verdict::Warning,
            _ => Verdict::Failure,
        };
        return ProbeResult {
            verdict,
            status: Some(answer.status),
            body: answer.body,
            truncated: answer.truncated,
            error: None,
            redirects,
            elapsed: started.elapsed(),
        };
    }
}

/// Where one request of a probe goes.
#[derive(Clone, Debug)]
struct Target {
    addr: SocketAddr,
    /// The host name redirects are compared by (Go's `URL.Hostname()`: no port).
    host: String,
    path: String,
}

/// One answer, its body read up to [`MAX_BODY`].
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: Bytes,
    truncated: bool,
}

impl Answer {
    /// The next target when Go's client would follow this answer: a 301, 302, 303, 307
    /// or 308 with a `Location` on the same host name. Anything else is the final answer.
    fn follow(&self, from: &Target) -> Option<Target> {
        if !matches!(self.status.as_u16(), 301 | 302 | 303 | 307 | 308) {
            return None;
        }
        let location = self.location.as_deref()?;
        if let Some(rest) = location.strip_prefix("http://") {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
            if host != from.host {
                return None; // off-host: ErrUseLastResponse, the 3xx is the answer
            }
            let port = authority
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .unwrap_or(80);
            let path = if path.is_empty() { "/" } else { path };
            return Some(Target {
                addr: SocketAddr::new(from.addr.ip(), port),
                host: from.host.clone(),
                path: path.to_owned(),
            });
        }
        if location.contains("://") {
            return None; // another scheme: not followed here (the tests serve plain HTTP)
        }
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            // Relative to the current path's directory, as URL resolution does.
            let directory = from.path.rsplit_once('/').map_or("", |(dir, _)| dir);
            format!("{directory}/{location}")
        };
        Some(Target { path, ..from.clone() })
    }
}

/// One request on a new connection, the body read up to [`MAX_BODY`].
async fn fetch(target: &Target) -> Result<Answer, String> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|error| format!("dial tcp {}: {error}", target.addr))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    // The connection task ends with the connection: `Connection: close` on both sides.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(&target.path)
        .header(header::HOST, target.addr.to_string())
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut read = BytesMut::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| error.to_string())?;
        let Ok(data) = frame.into_data() else { continue };
        let room = MAX_BODY - read.len();
        if data.len() > room {
            read.extend_from_slice(&data[..room]);
            truncated = true;
            break;
        }
        read.extend_from_slice(&data);
    }
    drop(body);
    driver.abort();
    Ok(Answer {
        status,
        location,
        body: read.freeze(),
        truncated,
    })
}

/// Which of a container's probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// `startupProbe`.
    Startup,
    /// `readinessProbe`.
    Readiness,
    /// `livenessProbe`.
    Liveness,
}

/// One `httpGet` probe of a container spec.
#[derive(Clone, Debug)]
pub struct ProbeSpec {
    /// `httpGet.path`.
    pub path: String,
    /// `periodSeconds`.
    pub period: Duration,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// `failureThreshold`.
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// A probe of `path` every `period`, with the default 1 s timeout.
    pub fn new(path: &str, period: Duration, failure_threshold: u32) -> ProbeSpec {
        ProbeSpec {
            path: path.to_owned(),
            period,
            timeout: DEFAULT_TIMEOUT,
            failure_threshold,
        }
    }
}

/// One probe the schedule ran.
#[derive(Clone, Debug)]
pub struct ProbeRecord {
    /// Which probe.
    pub kind: ProbeKind,
    /// When it started.
    pub at: Instant,
    /// What it found.
    pub result: ProbeResult,
}

/// A container's probes on the kubelet's schedule: the startup probe every period from
/// the start until it passes once, then the readiness and liveness probes, each every
/// period, until [`stop`](PodProbes::stop). Every result is recorded.
///
/// Unlike the kubelet, which stops the liveness and startup probes once the pod is
/// being deleted (it records them as passed), this goes on probing liveness after a
/// signal: a shutdown the process starts itself (`Terminus::shutdown`, `/prestop`)
/// leaves them running, and liveness must keep passing then.
pub struct PodProbes {
    records: Arc<Mutex<Vec<ProbeRecord>>>,
    stopped: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl PodProbes {
    /// Starts probing `addr`.
    pub fn start(
        addr: SocketAddr,
        startup: ProbeSpec,
        readiness: ProbeSpec,
        liveness: ProbeSpec,
    ) -> PodProbes {
        let records = Arc::new(Mutex::new(Vec::new()));
        let stopped = Arc::new(AtomicBool::new(false));
        let schedule = {
            let (records, stopped) = (Arc::clone(&records), Arc::clone(&stopped));
            tokio::spawn(async move {
                if !every_period(addr, ProbeKind::Startup, &startup, &records, &stopped, true).await {
                    return;
                }
                let readiness = tokio::spawn({
                    let (records, stopped) = (Arc::clone(&records), Arc::clone(&stopped));
                    async move {
                        every_period(addr, ProbeKind::Readiness, &readiness, &records, &stopped, false).await;
                    }
                });
                every_period(addr, ProbeKind::Liveness, &liveness, &records, &stopped, false).await;
                let _ = readiness.await;
            })
        };
        PodProbes {
            records,
            stopped,
            tasks: vec![schedule],
        }
    }

    /// Every probe run so far, in the order they started.
    pub fn records(&self) -> Vec<ProbeRecord> {
        let mut records = self.records.lock().expect("probe records").clone();
        records.sort_by_key(|record| record.at);
        records
    }

    /// The probes of one kind run so far.
    pub fn of(&self, kind: ProbeKind) -> Vec<ProbeRecord> {
        self.records()
            .into_iter()
            .filter(|record| record.kind == kind)
            .collect()
    }

    /// Whether the kubelet would now consider the container ready: the startup probe
    /// passed and the last readiness probe passed (successThreshold 1).
    pub fn ready(&self) -> bool {
        self.of(ProbeKind::Readiness)
            .last()
            .is_some_and(|record| record.result.verdict.passed())
    }

    /// Waits up to `timeout` for [`ready`](PodProbes::ready).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.ready() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ready()
    }

    /// Stops probing (a probe in progress finishes first).
    pub async fn stop(mut self) -> Vec<ProbeRecord> {
        self.stopped.store(true, Ordering::Release);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.records()
    }
}

impl Drop for PodProbes {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs `spec` every period from now until stopped; with `until_passed`, only until it
/// passes once (a startup probe), and then returns `true`.
async fn every_period(
    addr: SocketAddr,
    kind: ProbeKind,
    spec: &ProbeSpec,
    records: &Mutex<Vec<ProbeRecord>>,
    stopped: &AtomicBool,
    until_passed: bool,
) -> bool {
    // The kubelet's probe loop is a ticker: a slow probe does not shift the next one.
    let mut ticker = tokio::time::interval(spec.period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if stopped.load(Ordering::Acquire) {
            return false;
        }
        let at = Instant::now();
        let result = http_get(addr, &spec.path, spec.timeout).await;
        let passed = result.verdict.passed();
        records
            .lock()
            .expect("probe records")
            .push(ProbeRecord { kind, at, result });
        if until_passed && passed {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;

    use axum::http::HeaderMap;
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;
    use axum::Router;

    /// A server that records every request's headers and counts its connections.
    struct Recorder {
        addr: SocketAddr,
        connections: Arc<AtomicUsize>,
        headers: Arc<Mutex<Vec<HeaderMap>>>,
        task: JoinHandle<()>,
    }

    impl Drop for Recorder {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn recorder() -> Recorder {
        let headers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&headers);
        let app = Router::new()
            .route(
                "/ok",
                get(move |request_headers: HeaderMap| async move {
                    seen.lock().unwrap().push(request_headers);
                    "ok"
                }),
            )
            .route("/big", get(|| async { "x".repeat(MAX_BODY + 1) }))
            .route("/exact", get(|| async { "x".repeat(MAX_BODY) }))
            .route("/hang", get(std::future::pending::<&'static str>))
            .route("/here", get(|| async { Redirect::temporary("/ok") }))
            .route("/relative", get(|| async { Redirect::temporary("ok") }))
            .route(
                "/elsewhere",
                get(|| async { Redirect::temporary("http://example.invalid/ok") }),
            )
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .route(
                "/moved",
                get(|| async { (StatusCode::MULTIPLE_CHOICES, "choose").into_response() }),
            )
            .route(
                "/unavailable",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "no").into_response() }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            addr,
            connections,
            headers,
            task,
        }
    }

    #[tokio::test]
    async fn every_probe_opens_its_own_connection_and_sends_the_kubelets_headers() {
        let server = recorder().await;
        for _ in 0..3 {
            let result = http_get(server.addr, "/ok", DEFAULT_TIMEOUT).await;
            assert_eq!(result.verdict, Verdict::Success, "{result:?}");
            assert_eq!(result.body, "ok");
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 3, "no keep-alive");
        let headers = server.headers.lock().unwrap().clone();
        for headers in headers {
            assert_eq!(headers["user-agent"], "kube-probe/1.34");
            assert_eq!(headers["accept"], "*/*");
            assert_eq!(headers["connection"], "close");
            assert_eq!(headers["host"], server.addr.to_string().as_str());
            assert!(headers.get("accept-encoding").is_none());
        }
    }

    #[tokio::test]
    async fn at_most_10_kib_of_body_is_read_and_more_is_not_a_failure() {
        let server = recorder().await;
        let exact = http_get(server.addr, "/exact", DEFAULT_TIMEOUT).await;
        assert_eq!((exact.body.len(), exact.truncated), (MAX_BODY, false));
        let big = http_get(server.addr, "/big", DEFAULT_TIMEOUT).await;
        assert_eq!((big.body.len(), big.truncated), (MAX_BODY, true));
        assert_eq!(big.verdict, Verdict::Success);
    }

    #[tokio::test]
    async fn a_probe_that_takes_longer_than_its_timeout_fails() {
        let server = recorder().await;
        let started = Instant::now();
        let result = http_get(server.addr, "/hang", Duration::from_millis(300)).await;
        assert_eq!(result.verdict, Verdict::Failure);
        assert!(result.error.as_deref().unwrap().contains("timeout"), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn status_decides_and_redirects_stay_on_the_host() {
        let server = recorder().await;
        let get = |path: &'static str| http_get(server.addr, path, DEFAULT_TIMEOUT);
        assert_eq!(get("/unavailable").await.verdict, Verdict::Failure);
        let moved = get("/moved").await;
        assert_eq!(
            (moved.verdict, moved.status),
            (Verdict::Warning, Some(StatusCode::MULTIPLE_CHOICES))
        );

        let here = get("/here").await;
        assert_eq!(
            (here.verdict, here.redirects, here.body.as_ref()),
            (Verdict::Success, 1, &b"ok"[..])
        );
        let relative = get("/relative").await;
        assert_eq!((relative.verdict, relative.redirects), (Verdict::Success, 1));

        // Not followed off the host: the 3xx is the answer, a warning that passes.
        let elsewhere = get("/elsewhere").await;
        assert_eq!(elsewhere.verdict, Verdict::Warning);
        assert_eq!(elsewhere.status, Some(StatusCode::TEMPORARY_REDIRECT));
        assert_eq!(elsewhere.redirects, 0);

        let looping = get("/loop").await;
        assert_eq!(looping.verdict, Verdict::Failure);
        assert_eq!(looping.redirects, MAX_REDIRECTS - 1);
        assert_eq!(
            server.connections.load(Ordering::SeqCst),
            1 + 1 + 2 + 2 + 1 + MAX_REDIRECTS,
            "a connection per request, redirects included"
        );
    }

    #[tokio::test]
    async fn a_closed_port_fails_the_probe() {
        let port = crate::haproxy::free_port();
        let result = http_get(
            SocketAddr::from(([127, 0, 0, 1], port)),
            "/livez",
            DEFAULT_TIMEOUT,
        )
        .await;
        assert_eq!(result.verdict, Verdict::Failure);
        assert!(
            result.error.as_deref().unwrap().contains("dial tcp"),
            "{result:?}"
        );
    }
}
