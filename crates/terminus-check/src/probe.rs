//! `terminus-check probe`: the shutdown contract, checked from outside on one instance
//! with no balancer.
//!
//! [`run`] starts the command, probes it as a kubelet would while it serves, opens the
//! connections a stop must take care of (an HTTP/1.1 keep-alive connection, an HTTP/2
//! connection, a slow request in flight), sends the stop signal, and watches: readiness,
//! liveness, a request on a new connection and one on the kept-alive connection once
//! readiness fails, the GOAWAY, the slow request, the listener, the exit. Each rule is a
//! line of the verdict, with its timing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::h2_frames;
use crate::instance::{Instance, Readiness, Stop};
use crate::kubelet::{self, ProbeResult, MAX_BODY};

/// How long an instance may take to listen, and then to pass readiness.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long readiness may take to pass once the instance listens.
const READY_WITHIN: Duration = Duration::from_secs(5);
/// How often readiness and liveness are probed after the signal.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long after the signal the checks go on looking for readiness to fail.
const WATCH_AFTER_REACT: Duration = Duration::from_secs(5);

/// What `probe` was asked to check.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server command and its arguments.
    pub command: Vec<String>,
    /// The readiness path (`Port`: readiness rules skipped).
    pub readiness: Readiness,
    /// The liveness path (`None`: liveness rules skipped).
    pub live_path: Option<String>,
    /// The path of ordinary requests.
    pub path: String,
    /// The path of a slow request (`None`: that rule skipped).
    pub slow_path: Option<String>,
    /// How soon after the signal readiness must fail.
    pub react: Duration,
    /// SIGKILL after this.
    pub grace: Duration,
    /// The stop signal.
    pub stop_signal: String,
    /// Write the JSON verdict here.
    pub json: Option<PathBuf>,
}

/// A rule's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Held.
    Pass,
    /// Broken.
    Fail,
    /// Not checked (see the detail).
    Skip,
}

/// One rule of the shutdown contract.
#[derive(Clone, Debug, Serialize)]
pub struct Rule {
    /// What the rule says.
    pub rule: String,
    /// Whether it held.
    pub verdict: Verdict,
    /// What was seen, with timings.
    pub detail: String,
}

/// The verdict of `terminus-check probe` (the JSON of `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    /// The server command.
    pub command: Vec<String>,
    /// Every rule.
    pub rules: Vec<Rule>,
    /// Whether no rule failed.
    pub passed: bool,
}

impl ProbeReport {
    /// The pass/fail list.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for rule in &self.rules {
            let verdict = match rule.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            out.push_str(&format!("{verdict}  {}\n      {}\n", rule.rule, rule.detail));
        }
        let failed = self
            .rules
            .iter()
            .filter(|rule| rule.verdict == Verdict::Fail)
            .count();
        out.push_str(&format!(
            "\n{}: {failed} of {} rules failed.\n",
            if self.passed { "PASS" } else { "FAIL" },
            self.rules.len()
        ));
        out
    }
}

fn rule(rule: impl Into<String>, passed: bool, detail: impl Into<String>) -> Rule {
    Rule {
        rule: rule.into(),
        verdict: if passed { Verdict::Pass } else { Verdict::Fail },
        detail: detail.into(),
    }
}

fn skip(rule: impl Into<String>, detail: impl Into<String>) -> Rule {
    Rule {
        rule: rule.into(),
        verdict: Verdict::Skip,
        detail: detail.into(),
    }
}

fn ms(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

/// What was seen while the instance served.
struct Serving {
    readiness: Option<(ProbeResult, Duration)>,
    liveness: Option<ProbeResult>,
}

/// What was seen after the signal.
#[derive(Default)]
struct Draining {
    /// When readiness first failed, from the signal.
    readiness_failed: Option<Duration>,
    /// Liveness probes answered before the listener closed: (from the signal, passed).
    liveness: Vec<(Duration, bool)>,
    /// Every probe answer (status and body), for the size and time rule.
    answers: Vec<ProbeResult>,
    /// A request on a new connection once readiness failed: (from the signal, outcome).
    new_connection: Option<(Duration, Result<u16, String>)>,
    /// The kept-alive connection's request once readiness failed: (from the signal,
    /// `Connection` header or error).
    keep_alive: Option<(Duration, Result<Option<String>, String>)>,
}

/// Runs the checks and returns the verdict (already written where asked). An error is
/// a check that could not be run (the command does not start or listen).
pub async fn run(options: &Options) -> Result<ProbeReport, String> {
    let port = crate::ports::free_port();
    let log = std::env::temp_dir().join(format!("terminus-check-probe-{}.log", std::process::id()));
    let mut instance = Instance::spawn(&options.command, port, &log).map_err(|error| error.to_string())?;
    instance.wait_ready(&Readiness::Port, START_TIMEOUT).await?;
    let addr = instance.addr();

    let serving = serving(options, &mut instance).await;
    let mut keep_alive = open_keep_alive(addr, &options.path).await;
    let h2 = open_h2(addr).await;
    let slow = options
        .slow_path
        .clone()
        .map(|path| tokio::spawn(request(addr, path)));
    // Let the slow request reach the server before the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signal_at = Instant::now();
    instance
        .signal(&options.stop_signal)
        .map_err(|error| error.to_string())?;
    let (stop, draining, goaway) = tokio::join!(
        instance.watch_stop(signal_at, options.grace),
        watch_draining(options, addr, signal_at, keep_alive.as_mut()),
        watch_goaway(h2, signal_at, options.grace + Duration::from_secs(1)),
    );
    let slow = match slow {
        Some(task) => Some(task.await.unwrap_or_else(|error| Err(error.to_string()))),
        None => None,
    };
    let rules = judge(options, &serving, &draining, &stop, goaway, slow);
    let passed = rules.iter().all(|rule| rule.verdict != Verdict::Fail);
    let report = ProbeReport {
        command: options.command.clone(),
        rules,
        passed,
    };
    if let Some(path) = &options.json {
        let json = serde_json::to_string_pretty(&report).map_err(|error| error.to_string())?;
        std::fs::write(path, json).map_err(|error| format!("write {}: {error}", path.display()))?;
    }
    if report.passed {
        let _ = std::fs::remove_file(&log);
    } else {
        eprintln!("The server's output is kept in {}", log.display());
    }
    Ok(report)
}

/// Readiness (until it passes, within the start timeout) and liveness while serving.
async fn serving(options: &Options, instance: &mut Instance) -> Serving {
    let addr = instance.addr();
    let readiness = match &options.readiness {
        Readiness::Path(path) => {
            let started = Instant::now();
            let mut last = kubelet::http_get(addr, path, kubelet::DEFAULT_TIMEOUT).await;
            // Give a starting service the time to become ready.
            while !last.verdict.passed() && started.elapsed() < READY_WITHIN {
                tokio::time::sleep(Duration::from_millis(100)).await;
                last = kubelet::http_get(addr, path, kubelet::DEFAULT_TIMEOUT).await;
            }
            Some((last, started.elapsed()))
        }
        Readiness::Port => None,
    };
    let liveness = match &options.live_path {
        Some(path) => Some(kubelet::http_get(addr, path, kubelet::DEFAULT_TIMEOUT).await),
        None => None,
    };
    Serving { readiness, liveness }
}

/// After the signal: readiness and liveness every [`PROBE_EVERY`] until readiness fails
/// (and a little longer for liveness), then one request on a new connection and one on
/// the kept-alive one.
async fn watch_draining(
    options: &Options,
    addr: SocketAddr,
    signal_at: Instant,
    mut keep_alive: Option<&mut http1::SendRequest<Empty<Bytes>>>,
) -> Draining {
    let mut seen = Draining::default();
    let deadline = signal_at + options.react + WATCH_AFTER_REACT;
    let mut listener_open = true;
    while Instant::now() < deadline && listener_open {
        if let Readiness::Path(path) = &options.readiness {
            if seen.readiness_failed.is_none() {
                let result = kubelet::http_get(addr, path, kubelet::DEFAULT_TIMEOUT).await;
                if result.status.is_some() {
                    seen.answers.push(result.clone());
                }
                if !result.verdict.passed() {
                    seen.readiness_failed = Some(signal_at.elapsed());
                }
            }
        }
        if let Some(path) = &options.live_path {
            let result = kubelet::http_get(addr, path, kubelet::DEFAULT_TIMEOUT).await;
            if result.status.is_some() {
                seen.liveness.push((signal_at.elapsed(), result.verdict.passed()));
                seen.answers.push(result);
            } else {
                // Refused: the listener is closed, liveness is no longer asked.
                listener_open = false;
            }
        }
        let readiness_done = seen.readiness_failed.is_some() || options.readiness == Readiness::Port;
        if readiness_done && seen.new_connection.is_none() {
            let outcome = request(addr, options.path.clone()).await;
            seen.new_connection = Some((signal_at.elapsed(), outcome));
            if let Some(sender) = keep_alive.take() {
                let outcome = keep_alive_request(sender, &options.path).await;
                seen.keep_alive = Some((signal_at.elapsed(), outcome));
            }
        }
        if readiness_done && seen.liveness.len() >= 3 {
            break;
        }
        if options.live_path.is_none() && readiness_done {
            break;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    seen
}

/// An HTTP/1.1 connection that has served one request and stays open.
async fn open_keep_alive(addr: SocketAddr, path: &str) -> Option<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    keep_alive_request(&mut sender, path).await.ok()?;
    Some(sender)
}

/// `GET path` on the kept-alive connection; the answer's `Connection` header.
async fn keep_alive_request(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<Option<String>, String> {
    let exchange = async {
        sender.ready().await.map_err(|error| error.to_string())?;
        let request = Request::get(path)
            .header(http::header::HOST, "127.0.0.1")
            .body(Empty::new())
            .map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        let connection = response
            .headers()
            .get(http::header::CONNECTION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        response
            .into_body()
            .collect()
            .await
            .map_err(|error| error.to_string())?;
        Ok(connection)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".to_owned()))
}

/// `GET path` on a new connection: the status, or what went wrong.
async fn request(addr: SocketAddr, path: String) -> Result<u16, String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|error| format!("connect: {error}"))?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        response
            .into_body()
            .collect()
            .await
            .map_err(|error| error.to_string())?;
        Ok(status)
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 30 s".to_owned()))
}

/// An HTTP/2 connection (prior knowledge) past its handshake, or why there is none.
async fn open_h2(addr: SocketAddr) -> Result<TcpStream, String> {
    let handshake = async {
        let mut stream = TcpStream::connect(addr).await?;
        h2_frames::handshake(&mut stream).await?;
        Ok::<_, std::io::Error>(stream)
    };
    match tokio::time::timeout(Duration::from_secs(2), handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(format!("no HTTP/2 (h2c) handshake: {error}")),
        Err(_) => Err("no HTTP/2 (h2c) handshake within 2 s".to_owned()),
    }
}

/// Reads the HTTP/2 connection until a GOAWAY (when, from the signal) or its end.
async fn watch_goaway(
    h2: Result<TcpStream, String>,
    signal_at: Instant,
    bound: Duration,
) -> Result<Option<Duration>, String> {
    let mut stream = h2?;
    let read = async {
        loop {
            match h2_frames::read_frame(&mut stream).await {
                Ok(frame) if frame.kind == h2_frames::kind::GOAWAY => return Some(signal_at.elapsed()),
                Ok(frame) if frame.kind == h2_frames::kind::PING && frame.flags & h2_frames::ACK == 0 => {
                    // Answer the server's PING, as a live client does.
                    let _ = h2_frames::write_frame(
                        &mut stream,
                        h2_frames::kind::PING,
                        h2_frames::ACK,
                        0,
                        &frame.payload,
                    )
                    .await;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    };
    Ok(tokio::time::timeout(bound, read).await.ok().flatten())
}

/// Every rule, from what was seen.
fn judge(
    options: &Options,
    serving: &Serving,
    draining: &Draining,
    stop: &Stop,
    goaway: Result<Option<Duration>, String>,
    slow: Option<Result<u16, String>>,
) -> Vec<Rule> {
    let signal = format!("SIG{}", options.stop_signal.trim_start_matches("SIG"));
    let listener_closed = stop
        .listener_closed_at
        .unwrap_or(stop.exited_at)
        .saturating_duration_since(stop.signal_at);
    let exited = stop.exited_at.saturating_duration_since(stop.signal_at);
    let mut rules = Vec::new();

    let ready_path = match &options.readiness {
        Readiness::Path(path) => path.clone(),
        Readiness::Port => String::new(),
    };
    match &serving.readiness {
        Some((result, took)) => {
            let passed = result.verdict.passed();
            let detail = match (result.status, &result.error) {
                (Some(status), _) => format!("GET {ready_path}: {status} after {}", ms(*took)),
                (None, Some(error)) => format!("GET {ready_path}: {error}"),
                (None, None) => format!("GET {ready_path}: no answer"),
            };
            rules.push(rule("readiness passes while serving", passed, detail));
            let react = match draining.readiness_failed {
                Some(at) if !passed => (
                    false,
                    format!("it never passed; it failed {} after {signal}", ms(at)),
                ),
                Some(at) => (
                    at <= options.react,
                    format!("failed {} after {signal} (bound {})", ms(at), ms(options.react)),
                ),
                None => (
                    false,
                    format!(
                        "still passing {} after {signal}",
                        ms(options.react + WATCH_AFTER_REACT)
                    ),
                ),
            };
            rules.push(rule(
                format!("readiness fails within {} of {signal}", ms(options.react)),
                react.0,
                react.1,
            ));
        }
        None => {
            rules.push(skip("readiness passes while serving", "--ready-path none"));
            rules.push(skip(
                format!("readiness fails within {} of {signal}", ms(options.react)),
                "--ready-path none",
            ));
        }
    }

    match (&options.live_path, &serving.liveness) {
        (Some(path), Some(before)) => {
            let failed: Vec<_> = draining.liveness.iter().filter(|(_, passed)| !passed).collect();
            let passed = before.verdict.passed() && failed.is_empty() && !draining.liveness.is_empty();
            let detail = if !before.verdict.passed() {
                match (before.status, &before.error) {
                    (Some(status), _) => format!("GET {path} failed while serving: {status}"),
                    (None, Some(error)) => format!("GET {path} failed while serving: {error}"),
                    (None, None) => format!("GET {path} failed while serving"),
                }
            } else if let Some((at, _)) = failed.first() {
                format!("GET {path} failed {} after {signal}", ms(*at))
            } else if draining.liveness.is_empty() {
                format!("no liveness answer after {signal}: the listener closed at once")
            } else {
                format!(
                    "GET {path} passed {} times after {signal}, the last {} after it",
                    draining.liveness.len(),
                    ms(draining.liveness.last().map(|(at, _)| *at).unwrap_or_default())
                )
            };
            rules.push(rule(
                "liveness passes while serving and keeps passing while draining",
                passed,
                detail,
            ));
        }
        _ => rules.push(skip(
            "liveness passes while serving and keeps passing while draining",
            "--live-path none",
        )),
    }

    let served = match &draining.new_connection {
        Some((at, Ok(status))) => (
            *status < 500 && *at < listener_closed,
            format!(
                "GET {} on a new connection {} after {signal}: {status}",
                options.path,
                ms(*at)
            ),
        ),
        Some((at, Err(error))) => (
            false,
            format!(
                "GET {} on a new connection {} after {signal}: {error}",
                options.path,
                ms(*at)
            ),
        ),
        None => (
            false,
            format!(
                "readiness did not fail, or the listener closed first ({} after {signal})",
                ms(listener_closed)
            ),
        ),
    };
    rules.push(rule(
        "requests are still served during the drain delay",
        served.0,
        served.1,
    ));

    let close = match &draining.keep_alive {
        Some((at, Ok(Some(value)))) if value.eq_ignore_ascii_case("close") => (
            true,
            format!("answered with `Connection: close` {} after {signal}", ms(*at)),
        ),
        Some((at, Ok(other))) => (
            false,
            format!(
                "answered {} after {signal} with `Connection: {}`",
                ms(*at),
                other.as_deref().unwrap_or("(none)")
            ),
        ),
        Some((at, Err(error))) => (false, format!("no answer {} after {signal}: {error}", ms(*at))),
        None => (
            false,
            "the keep-alive connection could not be used while draining".to_owned(),
        ),
    };
    rules.push(rule(
        "HTTP/1.1 responses carry `Connection: close` while draining",
        close.0,
        close.1,
    ));

    match goaway {
        Ok(Some(at)) => rules.push(rule(
            "HTTP/2 connections get a GOAWAY",
            true,
            format!("GOAWAY {} after {signal}", ms(at)),
        )),
        Ok(None) => rules.push(rule(
            "HTTP/2 connections get a GOAWAY",
            false,
            format!(
                "the connection ended without a GOAWAY (exit {} after {signal})",
                ms(exited)
            ),
        )),
        Err(error) => rules.push(skip("HTTP/2 connections get a GOAWAY", error)),
    }

    match slow {
        Some(Ok(status)) => rules.push(rule(
            "a slow request in flight completes",
            status < 500,
            format!(
                "GET {}: {status}",
                options.slow_path.as_deref().unwrap_or_default()
            ),
        )),
        Some(Err(error)) => rules.push(rule("a slow request in flight completes", false, error)),
        None => rules.push(skip("a slow request in flight completes", "no --slow-path")),
    }

    let closed_detail = match stop.listener_closed_at {
        Some(_) => format!(
            "closed {} after {signal}, {} before the exit",
            ms(listener_closed),
            ms(exited.saturating_sub(listener_closed))
        ),
        None => format!("closed with the exit, {} after {signal}", ms(exited)),
    };
    rules.push(rule("the listener closes", !stop.exit.killed, closed_detail));

    let exit_detail = match (stop.exit.killed, stop.exit.code, stop.exit.signal) {
        (true, _, _) => format!("still running after the grace ({}): killed", ms(options.grace)),
        (false, Some(code), _) => format!("exit code {code} {} after {signal}", ms(exited)),
        (false, None, Some(number)) => format!("ended by signal {number} {} after {signal}", ms(exited)),
        (false, None, None) => "ended, status unknown".to_owned(),
    };
    rules.push(rule(
        format!("exits 0 within the grace ({})", ms(options.grace)),
        !stop.exit.killed && stop.exit.code == Some(0),
        exit_detail,
    ));

    let mut answers: Vec<&ProbeResult> = draining.answers.iter().collect();
    if let Some((result, _)) = &serving.readiness {
        answers.push(result);
    }
    answers.extend(serving.liveness.iter());
    let answered: Vec<_> = answers.iter().filter(|result| result.status.is_some()).collect();
    let largest = answered.iter().map(|result| result.body.len()).max().unwrap_or(0);
    let slowest = answered
        .iter()
        .map(|result| result.elapsed)
        .max()
        .unwrap_or_default();
    let truncated = answered.iter().any(|result| result.truncated);
    rules.push(rule(
        "probe answers are small (< 10 KiB) and fast (< 1 s) to the kubelet's request (kube-probe/1.34, a new connection each)",
        !answered.is_empty() && !truncated && largest < MAX_BODY && slowest < kubelet::DEFAULT_TIMEOUT,
        format!(
            "{} answers, the largest {largest} bytes{}, the slowest {}",
            answered.len(),
            if truncated { " (cut at 10 KiB)" } else { "" },
            ms(slowest)
        ),
    ));
    rules
}
