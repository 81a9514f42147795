//! Nothing lost at the edges (issue 9; DESIGN.md §9, "lost, cut, drained"), end to end:
//! the quickstart (as `test-server`) runs as a child process on loopback, receives real
//! signals, and is frozen with a real SIGSTOP across the moment Closing begins.
//!
//! - Everything that reached the server before Closing is answered; after Closing, new
//!   connections are refused by the kernel, never accepted and then reset.
//! - A connection with nothing in flight (a silent HTTP/2 peer, an idle keep-alive) is
//!   closed at Closing: neither cut nor a reason for a forced stop. A new connection
//!   whose first request comes just after Closing began is answered.
//! - `shutdown complete` counts drained and cut requests apart, and every cut request is
//!   reported on its own.
//! - A request head that trickles in is bounded by `TERMINUS_HEADER_READ_TIMEOUT`.
//!
//! Each test prints one `edges ...` line with what it saw before it asserts, so that the
//! figures can be copied into the docs even when an assertion fails.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use terminus_tests::exit::Exit as Stopped;
use terminus_tests::logs::{self, field, field_u64, wait_for_phase};
use terminus_tests::raw::h1::{self, Conn, Outcome, Tally};
use terminus_tests::raw::h2;
use terminus_tests::{test_server, TestServer, H1, H2};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Slack on top of a deadline before a test calls it missed: generous, for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);
/// How long a client waits for a response before calling it a `timeout`.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO: &[u8] = b"hello";

fn start(envs: &[(&str, &str)]) -> TestServer {
    TestServer::start(test_server!(), envs)
}

// ---------------------------------------------------------------------------------
// 1. A freeze across Draining -> Closing: nothing that reached the server is lost.
// ---------------------------------------------------------------------------------

/// The freeze tests' drain delay: Closing begins this long after Draining.
const FREEZE_DRAIN_DELAY: Duration = Duration::from_secs(1);
/// Runs per freeze size.
const FREEZE_RUNS: usize = 20;
/// Connections of each kind per run.
const PER_RUN: usize = 20;
/// How long the slow request outlives the freeze: the process is still in Closing
/// then, so a refused connect is the closed listener's, not a dead process's.
const SLOW_TAIL: Duration = Duration::from_millis(700);

/// The i-th request of a run: `GET /`, or `POST /` with a 2 KiB body.
fn mixed_request(i: usize) -> Vec<u8> {
    if i % 2 == 1 {
        h1::request("POST", "/", 2048)
    } else {
        h1::request("GET", "/", 0)
    }
}

/// What one freeze run saw.
struct FreezeRun {
    /// New connections opened while frozen.
    new: Vec<Outcome>,
    /// Keep-alive connections (used once before SIGTERM) reused while frozen.
    keepalive: Vec<Outcome>,
    /// The slow request in flight at SIGTERM.
    slow: Outcome,
    /// New connects after Closing began (`connected+...` when connect() succeeded).
    after_closing: Vec<String>,
    /// The process was still running when those connects were tried.
    alive_after_closing: bool,
    /// Every request was written (so had reached the server's kernel) before Closing
    /// began: the run is judged on them. A run whose SIGSTOP came too late on a loaded
    /// machine saw correct refusals and idle closes instead, and is not.
    reached_before_closing: bool,
    /// The freeze began before the drain delay ran out and Closing began after the resume.
    straddled: bool,
    /// From SIGSTOP to SIGCONT.
    frozen_for: Duration,
    stopped: Stopped,
}

impl FreezeRun {
    /// `true` if this run met the contract.
    fn passed(&self) -> bool {
        let all_ok = |outcomes: &[Outcome]| outcomes.iter().all(|outcome| *outcome == Outcome::Ok);
        let requests_ok = all_ok(&self.new)
            && all_ok(&self.keepalive)
            && self.stopped.count("requests_drained") == Some(2 * PER_RUN as u64 + 1);
        (requests_ok || !self.reached_before_closing)
            && self.slow == Outcome::Ok
            && self.after_closing.iter().all(|outcome| outcome == "refused")
            && self.stopped.code == Some(0)
            && self.stopped.field("graceful") == Some("true")
    }
}

/// One run: keep-alive connections used once, a slow request in flight, SIGTERM, then
/// SIGSTOP `freeze / 2` before Closing is due. While the process is frozen the kernel
/// still completes TCP handshakes and buffers bytes, so every request written then has
/// reached the server. SIGCONT `freeze / 2` after Closing was due: the drain-delay timer
/// and the waiting connections become ready at once.
async fn freeze_across_closing(freeze: Duration) -> FreezeRun {
    let half = freeze / 2;
    let mut server = start(&[("TERMINUS_DRAIN_DELAY", "1s"), ("TERMINUS_DRAIN_TIMEOUT", "5s")]);
    let addr = server.addr();

    let mut keepalive = Vec::new();
    for i in 0..PER_RUN {
        let mut conn = Conn::connect(addr).await.expect("connect before the signal");
        let outcome = conn.exchange(&mixed_request(i), HELLO, READ_TIMEOUT).await;
        assert_eq!(
            outcome,
            Outcome::Ok,
            "served before the signal\n{}",
            logs::tail(&server.stderr(), 20)
        );
        keepalive.push(conn);
    }
    let slow_ms = (FREEZE_DRAIN_DELAY + half + SLOW_TAIL).as_millis();
    let mut slow = Conn::connect(addr).await.expect("connect before the signal");
    slow.write(&h1::request("GET", &format!("/slow?ms={slow_ms}"), 0))
        .await
        .expect("send the slow request");
    tokio::time::sleep(Duration::from_millis(50)).await;

    let signalled = Instant::now();
    server.signal("TERM");
    let draining = wait_for_phase(&server, "draining", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no draining event:\n{}", logs::tail(&server.stderr(), 20)));
    // Schedule on the server's own clock: the event's timestamp, not when we read it.
    let closing_due = logs::instant(&draining).expect("timestamp") + FREEZE_DRAIN_DELAY;

    tokio::time::sleep_until((closing_due - half).into()).await;
    server.signal("STOP");
    let stopped_at = Instant::now();

    // While frozen: new connections with a request each, and the next request on
    // every keep-alive connection. Mixed GET and POST.
    let mut new = Vec::new();
    let mut new_readers = Vec::new();
    for i in 0..PER_RUN {
        match Conn::connect(addr).await {
            Ok(mut conn) => match conn.write(&mixed_request(i)).await {
                Ok(()) => new_readers.push(conn),
                Err(error) => new.push(Outcome::Error(error.kind())),
            },
            Err(outcome) => new.push(outcome),
        }
    }
    for (i, conn) in keepalive.iter_mut().enumerate() {
        conn.write(&mixed_request(i + 1))
            .await
            .expect("write on a keep-alive connection while frozen");
    }
    let (written_wall, written_at) = (SystemTime::now(), Instant::now());

    let resume_at = (closing_due + half).max(Instant::now());
    tokio::time::sleep_until(resume_at.into()).await;
    let (cont_sent, cont_at) = (SystemTime::now(), Instant::now());
    server.signal("CONT");
    let frozen_for = stopped_at.elapsed();

    let read_all = |conns: Vec<Conn>| -> Vec<JoinHandle<Outcome>> {
        conns
            .into_iter()
            .map(|mut conn| tokio::spawn(async move { conn.read_outcome(HELLO, READ_TIMEOUT).await }))
            .collect()
    };
    let new_readers = read_all(new_readers);
    let keepalive_readers = read_all(keepalive);

    let closing = wait_for_phase(&server, "closing", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no closing event:\n{}", logs::tail(&server.stderr(), 20)));
    let closing_logged = logs::time(&closing).expect("timestamp");
    // The process was frozen from before Closing was due until after it, the requests
    // were all written while it was frozen, and it entered Closing only once resumed.
    let reached_before_closing = written_wall < closing_logged;
    let straddled = stopped_at < closing_due
        && cont_at > closing_due
        && written_at < cont_at
        && closing_logged >= cont_sent;

    // After Closing began: the listener is closed, so connect() must fail.
    let closing_at = logs::instant(&closing).expect("timestamp");
    tokio::time::sleep_until((closing_at + Duration::from_millis(100)).into()).await;
    let mut after_closing = Vec::new();
    for _ in 0..3 {
        after_closing.push(match Conn::connect(addr).await {
            Err(outcome) => outcome.to_string(),
            Ok(mut conn) => {
                let outcome = conn
                    .exchange(&h1::request("GET", "/", 0), HELLO, READ_TIMEOUT)
                    .await;
                format!("connected+{outcome}")
            }
        });
    }
    let alive_after_closing = server.wait_exit(Duration::ZERO).await.is_none();

    for reader in new_readers {
        new.push(reader.await.expect("reader task"));
    }
    let mut keepalive = Vec::new();
    for reader in keepalive_readers {
        keepalive.push(reader.await.expect("reader task"));
    }
    let slow = slow.read_outcome(b"slow", READ_TIMEOUT).await;
    let stopped = Stopped::wait(&mut server, signalled, Duration::from_secs(6) + MARGIN).await;
    FreezeRun {
        new,
        keepalive,
        slow,
        after_closing,
        alive_after_closing,
        reached_before_closing,
        straddled,
        frozen_for,
        stopped,
    }
}

/// Runs [`freeze_across_closing`] [`FREEZE_RUNS`] times, prints one tally line, then
/// asserts that every run met the contract.
async fn freeze_runs(freeze_ms: u64) {
    let (mut new, mut keepalive, mut slow, mut after_closing) = (
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    );
    let (mut exits, mut graceful, mut drained) = (Tally::default(), Tally::default(), Tally::default());
    let (mut judged, mut straddled, mut alive, mut longest_freeze) = (0, 0, 0, Duration::ZERO);
    let mut first_failure = None;
    for run in 0..FREEZE_RUNS {
        let result = freeze_across_closing(Duration::from_millis(freeze_ms)).await;
        let stopped = &result.stopped;
        if result.reached_before_closing {
            judged += 1;
            result.new.iter().for_each(|outcome| new.add(outcome));
            result.keepalive.iter().for_each(|outcome| keepalive.add(outcome));
            drained.add(stopped.field("requests_drained").unwrap_or("-"));
        }
        slow.add(&result.slow);
        result
            .after_closing
            .iter()
            .for_each(|outcome| after_closing.add(outcome));
        exits.add(stopped.code.map_or("none".to_owned(), |code| code.to_string()));
        graceful.add(stopped.field("graceful").unwrap_or("-"));
        straddled += usize::from(result.straddled);
        alive += usize::from(result.alive_after_closing);
        longest_freeze = longest_freeze.max(result.frozen_for);
        if first_failure.is_none() && !result.passed() {
            let outcomes = |list: &[Outcome]| {
                let mut tally = Tally::default();
                list.iter().for_each(|outcome| tally.add(outcome));
                tally
            };
            first_failure = Some(format!(
                "run {run}: new={} keepalive={} slow={} after_closing={:?} {}",
                outcomes(&result.new),
                outcomes(&result.keepalive),
                result.slow,
                result.after_closing,
                stopped.context()
            ));
        }
    }
    let tally = format!(
        "edges freeze_ms={freeze_ms} runs={FREEZE_RUNS} straddled={straddled} judged={judged} longest_freeze_ms={} \
         new={new} keepalive={keepalive} slow={slow} after_closing={after_closing} \
         alive_after_closing={alive} exits={exits} graceful={graceful} requests_drained={drained}",
        longest_freeze.as_millis()
    );
    println!("{tally}");
    let context = format!(
        "{tally}\nfirst failing run: {}",
        first_failure.as_deref().unwrap_or("none")
    );

    // The freeze must have spanned the boundary often enough for the test to mean
    // something; a loaded machine may miss it now and then.
    assert!(
        straddled * 2 >= FREEZE_RUNS,
        "the freeze rarely spanned Closing\n{context}"
    );
    assert_eq!(
        alive, FREEZE_RUNS,
        "refusal must be seen on a live process\n{context}"
    );
    // Judged: the runs whose requests all reached the server before Closing began; new,
    // keepalive and requests_drained are tallied over those runs only.
    let requests = judged * PER_RUN;
    assert_eq!(new.get("ok"), requests, "every new connection served\n{context}");
    assert_eq!(
        keepalive.get("ok"),
        requests,
        "every keep-alive request served\n{context}"
    );
    assert_eq!(
        slow.get("ok"),
        FREEZE_RUNS,
        "the slow request completes\n{context}"
    );
    assert_eq!(
        after_closing.get("refused"),
        after_closing.total(),
        "after Closing, connect() is refused, never accepted\n{context}"
    );
    assert_eq!(exits.get("0"), FREEZE_RUNS, "graceful exits 0\n{context}");
    assert_eq!(graceful.get("true"), FREEZE_RUNS, "reported graceful\n{context}");
    // Every request of the run completed after the shutdown began: 20 new, 20
    // keep-alive, and the slow one.
    let all = (2 * PER_RUN + 1).to_string();
    assert_eq!(drained.get(&all), judged, "requests_drained={all}\n{context}");
}

#[tokio::test]
async fn requests_sent_during_a_600ms_freeze_across_closing_are_all_answered_and_later_connects_refused() {
    freeze_runs(600).await;
}

#[tokio::test]
async fn requests_sent_during_a_60ms_freeze_across_closing_are_all_answered_and_later_connects_refused() {
    freeze_runs(60).await;
}

// ---------------------------------------------------------------------------------
// 2. Silent HTTP/2 peers are closed at Closing, not held to the drain deadline.
// ---------------------------------------------------------------------------------

/// Drain delay of the silent-peer tests, and the drain timeout they must stay far below.
const SILENT_DRAIN_DELAY: Duration = Duration::from_millis(500);
const SILENT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

fn start_for_silent_peer() -> TestServer {
    start(&[
        ("TERMINUS_DRAIN_DELAY", "500ms"),
        ("TERMINUS_DRAIN_TIMEOUT", "10s"),
    ])
}

/// SIGTERM with the peer connected; prints what the stop looked like.
async fn stop_with_silent_peer(server: &mut TestServer, peer: &str) -> Stopped {
    let stopped = Stopped::terminate(server, SILENT_DRAIN_TIMEOUT + SILENT_DRAIN_DELAY + MARGIN).await;
    println!("edges silent_h2 peer={peer} {}", stopped.summary());
    stopped
}

/// The stop was graceful, nothing was cut, and the exit came at about drain delay +
/// the idle-close bound (1 s by default), not at the drain timeout.
fn assert_not_held_by_the_silent_peer(stopped: &Stopped) {
    let context = stopped.context();
    let bound = SILENT_DRAIN_DELAY + Duration::from_secs(3);
    assert!(
        stopped.took < bound,
        "exits within drain delay + 3 s ({bound:?}), not at the drain timeout\n{context}"
    );
    assert!(
        stopped.took >= SILENT_DRAIN_DELAY,
        "not before the drain delay\n{context}"
    );
    assert_eq!(stopped.code, Some(0), "a graceful stop exits 0\n{context}");
    assert_eq!(stopped.field("graceful"), Some("true"), "{context}");
    assert_eq!(stopped.count("connections_cut"), Some(0), "{context}");
    assert_eq!(stopped.count("requests_cut"), Some(0), "{context}");
}

#[tokio::test]
async fn http2_peer_that_sends_only_the_preface_is_closed_at_closing_and_the_stop_is_graceful() {
    let mut server = start_for_silent_peer();
    let mut peer = TcpStream::connect(server.addr()).await.unwrap();
    // The 24-byte preface and nothing else; the peer never reads either.
    tokio::io::AsyncWriteExt::write_all(&mut peer, h2::PREFACE)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = stop_with_silent_peer(&mut server, "preface_only").await;
    assert_not_held_by_the_silent_peer(&stopped);
    drop(peer);
}

#[tokio::test]
async fn http2_peer_that_stops_reading_after_one_response_is_closed_at_closing_and_the_stop_is_graceful() {
    let mut server = start_for_silent_peer();
    let mut peer = TcpStream::connect(server.addr()).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), async {
        h2::handshake(&mut peer).await?;
        h2::send_get(&mut peer, 1, "/").await?;
        h2::read_response(&mut peer, 1).await
    })
    .await
    .expect("handshake and response in time")
    .expect("handshake and response");
    assert_eq!(body, HELLO);
    // From here on the peer neither reads nor writes: GOAWAY and its PING sit unread.
    let stopped = stop_with_silent_peer(&mut server, "no_read_after_response").await;
    assert_not_held_by_the_silent_peer(&stopped);
    drop(peer);
}

#[tokio::test]
async fn http2_peer_that_never_acknowledges_ping_is_closed_at_closing_and_the_stop_is_graceful() {
    let mut server = start_for_silent_peer();
    let mut peer = TcpStream::connect(server.addr()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), h2::handshake(&mut peer))
        .await
        .expect("handshake in time")
        .expect("handshake");
    // Read every frame and answer none: no PING ACK, ever.
    let reader = tokio::spawn(async move {
        let (mut goaway, mut ping) = (0, 0);
        let deadline = Instant::now() + SILENT_DRAIN_TIMEOUT + MARGIN * 2;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), h2::read_frame(&mut peer)).await {
                Ok(Ok(frame)) if frame.kind == h2::kind::GOAWAY => goaway += 1,
                Ok(Ok(frame)) if frame.kind == h2::kind::PING => ping += 1,
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(_)) => break,
            }
        }
        (goaway, ping)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = stop_with_silent_peer(&mut server, "never_acks_ping").await;
    let (goaway, ping) = reader.await.unwrap();
    println!("edges silent_h2 peer=never_acks_ping frames_seen goaway={goaway} ping={ping}");
    assert!(goaway >= 1, "the server told the peer to go away");
    assert_not_held_by_the_silent_peer(&stopped);
}

// ---------------------------------------------------------------------------------
// 3. Outcome counts: drained and cut are counted apart, and each cut is reported.
// ---------------------------------------------------------------------------------

/// Settings of the tests that cut: a short delay, a 2 s deadline.
const CUT_ENV: [(&str, &str); 2] = [
    ("TERMINUS_DRAIN_DELAY", "200ms"),
    ("TERMINUS_DRAIN_TIMEOUT", "2s"),
];
/// Drain delay + drain timeout of [`CUT_ENV`].
const CUT_AFTER: Duration = Duration::from_millis(2200);

/// The per-request WARN events of a forced stop.
fn request_cuts(stopped: &Stopped) -> Vec<&String> {
    stopped.lines_with(&["request cut at the drain deadline"])
}

/// The forced-close WARN event, which must be unique.
fn forced_close(stopped: &Stopped) -> String {
    let lines = stopped.lines_with(&["forced close: cut what was still running"]);
    assert_eq!(lines.len(), 1, "one forced-close event\n{}", stopped.context());
    let line = lines[0].clone();
    assert!(line.contains(" WARN terminus: "), "{line}");
    line
}

/// Checks one per-request WARN event.
fn assert_request_cut(line: &str, protocol: &str, path: &str, min_age: Duration) {
    assert!(line.contains(" WARN terminus: "), "{line}");
    assert!(
        field(line, "peer").is_some_and(|peer| peer.starts_with("127.0.0.1:")),
        "{line}"
    );
    assert_eq!(field(line, "protocol"), Some(protocol), "{line}");
    assert_eq!(field(line, "method"), Some("GET"), "{line}");
    assert_eq!(field(line, "path"), Some(path), "{line}");
    let age = field_u64(line, "age_ms").unwrap_or_else(|| panic!("age_ms: {line}"));
    assert!(age >= min_age.as_millis() as u64, "age_ms={age} {line}");
}

#[tokio::test]
async fn request_in_flight_at_sigterm_that_completes_is_drained_not_cut() {
    let mut server = start(&[
        ("TERMINUS_DRAIN_DELAY", "300ms"),
        ("TERMINUS_DRAIN_TIMEOUT", "10s"),
    ]);
    let mut slow = Conn::connect(server.addr()).await.unwrap();
    slow.write(&h1::request("GET", "/slow?ms=800", 0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let signalled = Instant::now();
    server.signal("TERM");
    let outcome = slow.read_outcome(b"slow", READ_TIMEOUT).await;
    let stopped = Stopped::wait(&mut server, signalled, Duration::from_secs(1) + MARGIN).await;
    println!("edges counts case=zero_cut slow={outcome} {}", stopped.summary());
    let context = stopped.context();

    assert_eq!(outcome, Outcome::Ok, "{context}");
    assert_eq!(stopped.code, Some(0), "{context}");
    assert_eq!(stopped.field("graceful"), Some("true"), "{context}");
    assert_eq!(stopped.count("requests_cut"), Some(0), "{context}");
    // The one request in flight at Draining, and nothing after it (§9: drained + cut
    // = in flight at Draining + arrived after; probes are not requests).
    assert_eq!(stopped.count("requests_drained"), Some(1), "{context}");
    assert_eq!(stopped.count("connections_cut"), Some(0), "{context}");
    assert_eq!(stopped.count("exit_status"), Some(0), "{context}");
    assert!(request_cuts(&stopped).is_empty(), "{context}");
    stopped.assert_complete_is_final();
}

#[tokio::test]
async fn one_endless_http1_stream_is_one_request_cut_and_one_connection_cut_not_drained() {
    let mut server = start(&CUT_ENV);
    let (port, reader) = h1::open_stream(server.addr(), "/stream?ms=100", Duration::from_secs(10))
        .await
        .unwrap();
    let stopped = Stopped::terminate(&mut server, CUT_AFTER + MARGIN).await;
    let cuts = request_cuts(&stopped);
    println!(
        "edges counts case=one_cut {} request_cut_events={}",
        stopped.summary(),
        cuts.len()
    );
    let context = stopped.context();

    assert_eq!(stopped.code, Some(1), "a forced stop exits 1\n{context}");
    assert!(stopped.took >= CUT_AFTER, "held to the deadline\n{context}");
    assert_eq!(stopped.field("graceful"), Some("false"), "{context}");
    assert_eq!(stopped.count("requests_cut"), Some(1), "{context}");
    assert_eq!(stopped.count("connections_cut"), Some(1), "{context}");
    assert_eq!(
        stopped.count("requests_drained"),
        Some(0),
        "a cut request is not drained\n{context}"
    );
    assert_eq!(stopped.count("exit_status"), Some(1), "{context}");
    stopped.assert_complete_is_final();

    let forced = forced_close(&stopped);
    assert_eq!(field_u64(&forced, "requests_cut"), Some(1), "{forced}");
    assert_eq!(field_u64(&forced, "connections_cut"), Some(1), "{forced}");
    assert_eq!(field_u64(&forced, "tasks_cut"), Some(0), "{forced}");
    assert_eq!(cuts.len(), 1, "one event per cut request\n{context}");
    assert_request_cut(cuts[0], "HTTP/1.1", "/stream", Duration::from_secs(2));
    assert_eq!(field(cuts[0], "peer"), Some(format!("127.0.0.1:{port}").as_str()));
    let (bytes, ended) = reader.await.unwrap();
    assert!(
        bytes > 0 && ended,
        "the stream flowed, then the client saw it end"
    );
}

/// `GET path` as a new stream on `h2`; once the response head arrives (the handler is
/// running), reads the body in a task until the stream ends.
async fn open_h2_stream(h2: &H2, path: &str) -> JoinHandle<bool> {
    let mut sender = h2.sender();
    sender.ready().await.expect("connection ready");
    let request = Request::get(format!("http://127.0.0.1{path}"))
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let response = sender.send_request(request).await.expect("response head");
    assert_eq!(response.status(), http::StatusCode::OK);
    let mut body = response.into_body();
    tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(None) | Ok(Some(Err(_))) => return true,
            }
        }
        false
    })
}

#[tokio::test]
async fn thirty_endless_streams_on_twenty_one_connections_are_thirty_requests_cut_on_twenty_one_connections()
{
    let mut server = start(&CUT_ENV);
    let addr = server.addr();
    let mut readers = Vec::new();
    for _ in 0..20 {
        let (_, reader) = h1::open_stream(addr, "/stream?ms=100", Duration::from_secs(15))
            .await
            .unwrap();
        readers.push(reader);
    }
    let h2 = H2::connect(addr).await.unwrap();
    let mut h2_readers = Vec::new();
    for _ in 0..10 {
        h2_readers.push(open_h2_stream(&h2, "/stream?ms=100").await);
    }
    let stopped = Stopped::terminate(&mut server, CUT_AFTER + MARGIN).await;
    let cuts = request_cuts(&stopped);
    let by_protocol = |protocol: &str| {
        cuts.iter()
            .filter(|line| field(line, "protocol") == Some(protocol))
            .count()
    };
    println!(
        "edges counts case=many_cut {} request_cut_events={} http1={} http2={}",
        stopped.summary(),
        cuts.len(),
        by_protocol("HTTP/1.1"),
        by_protocol("HTTP/2")
    );
    let context = stopped.context();

    assert_eq!(stopped.code, Some(1), "{context}");
    assert_eq!(stopped.field("graceful"), Some("false"), "{context}");
    assert_eq!(stopped.count("requests_cut"), Some(30), "{context}");
    assert_eq!(stopped.count("connections_cut"), Some(21), "{context}");
    assert_eq!(stopped.count("requests_drained"), Some(0), "{context}");
    stopped.assert_complete_is_final();
    let forced = forced_close(&stopped);
    assert_eq!(field_u64(&forced, "requests_cut"), Some(30), "{forced}");
    assert_eq!(field_u64(&forced, "connections_cut"), Some(21), "{forced}");
    assert_eq!(
        (cuts.len(), by_protocol("HTTP/1.1"), by_protocol("HTTP/2")),
        (30, 20, 10),
        "one event per cut request\n{context}"
    );
    for line in &cuts {
        let protocol = field(line, "protocol").unwrap_or("-");
        assert_request_cut(line, protocol, "/stream", Duration::from_secs(2));
    }
    for reader in readers {
        assert!(reader.await.unwrap().1, "every HTTP/1.1 stream saw its end");
    }
    for reader in h2_readers {
        assert!(reader.await.unwrap(), "every HTTP/2 stream saw its end");
    }
}

/// Reads `stream` until the server closes it (at most `limit`); returns when it closed.
fn watch_close(mut stream: TcpStream, limit: Duration) -> JoinHandle<Option<Instant>> {
    tokio::spawn(async move {
        let deadline = Instant::now() + limit;
        let mut scratch = [0u8; 4096];
        while Instant::now() < deadline {
            let read = tokio::io::AsyncReadExt::read(&mut stream, &mut scratch);
            match tokio::time::timeout(Duration::from_millis(100), read).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
                Ok(Ok(_)) | Err(_) => {}
            }
        }
        None
    })
}

#[tokio::test]
async fn connections_with_nothing_in_flight_are_closed_at_closing_and_not_counted_as_cut() {
    let mut server = start(&CUT_ENV);
    let addr = server.addr();
    let (_, stream) = h1::open_stream(addr, "/stream?ms=100", Duration::from_secs(10))
        .await
        .unwrap();
    // An idle keep-alive connection, used once.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut idle, &h1::request("GET", "/", 0))
        .await
        .unwrap();
    let mut response = [0u8; 1024];
    let n = tokio::io::AsyncReadExt::read(&mut idle, &mut response)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&response[..n]).ends_with("hello"));
    // A silent HTTP/2 peer: the preface, then nothing (it reads, to see the close).
    let mut silent = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut silent, h2::PREFACE)
        .await
        .unwrap();
    let idle_closed = watch_close(idle, Duration::from_secs(10));
    let silent_closed = watch_close(silent, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stopped = Stopped::terminate(&mut server, CUT_AFTER + MARGIN).await;
    let cuts = request_cuts(&stopped);
    let forced_at = stopped
        .lines_with(&["forced close: cut what was still running"])
        .first()
        .and_then(|line| logs::instant(line));
    let (idle_closed, silent_closed) = (idle_closed.await.unwrap(), silent_closed.await.unwrap());
    let before_forced = |closed: Option<Instant>| match (closed, forced_at) {
        (Some(closed), Some(forced)) => closed < forced,
        _ => false,
    };
    println!(
        "edges counts case=idle_not_cut {} request_cut_events={} idle_closed_before_cut={} silent_h2_closed_before_cut={}",
        stopped.summary(),
        cuts.len(),
        before_forced(idle_closed),
        before_forced(silent_closed)
    );
    let context = stopped.context();

    assert_eq!(stopped.code, Some(1), "the stream makes it forced\n{context}");
    assert_eq!(stopped.count("requests_cut"), Some(1), "{context}");
    assert_eq!(
        stopped.count("connections_cut"),
        Some(1),
        "only the stream's connection is cut\n{context}"
    );
    // The keep-alive's request completed before the signal; the stream was cut.
    assert_eq!(stopped.count("requests_drained"), Some(0), "{context}");
    assert_eq!(cuts.len(), 1, "{context}");
    let forced = forced_close(&stopped);
    assert_eq!(field_u64(&forced, "requests_cut"), Some(1), "{forced}");
    assert_eq!(field_u64(&forced, "connections_cut"), Some(1), "{forced}");
    assert!(
        before_forced(idle_closed),
        "the idle keep-alive was closed at Closing, before the cut\n{context}"
    );
    assert!(
        before_forced(silent_closed),
        "the silent HTTP/2 peer was closed at Closing, before the cut\n{context}"
    );
    assert!(stream.await.unwrap().1, "the stream saw its end");
}

/// A client that connected before Closing but writes its first request only after
/// Closing began (a throttled client, or the moment between connect and write) gets its
/// answer: a new connection is not idle, and its client would not send the request again
/// on another connection. A connection that never sends anything is closed at the idle
/// bound, neither cut nor holding the exit.
#[tokio::test]
async fn a_new_connection_whose_first_request_arrives_after_closing_began_is_answered() {
    const DRAIN_DELAY: Duration = Duration::from_millis(500);
    let mut server = start(&[
        ("TERMINUS_DRAIN_DELAY", "500ms"),
        ("TERMINUS_DRAIN_TIMEOUT", "10s"),
    ]);
    let addr = server.addr();
    let mut late = Conn::connect(addr).await.unwrap();
    let mut silent = Conn::connect(addr).await.unwrap();
    // Both accepted, while serving.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    server.signal("TERM");
    wait_for_phase(&server, "closing", DRAIN_DELAY + MARGIN)
        .await
        .expect("Closing began");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let outcome = late
        .exchange(&h1::request("GET", "/", 0), HELLO, READ_TIMEOUT)
        .await;
    let silent_closed = silent.wait_closed(Duration::from_secs(5)).await;
    // Drain delay + the idle bound (1 s, checked every 250 ms) + margin.
    let stopped = Stopped::wait(
        &mut server,
        signalled,
        DRAIN_DELAY + Duration::from_millis(1250) + MARGIN,
    )
    .await;
    println!(
        "edges late_first_request outcome={outcome} silent_closed={silent_closed} {}",
        stopped.summary()
    );
    let context = stopped.context();

    assert_eq!(
        outcome,
        Outcome::Ok,
        "the request that came after Closing began
{context}"
    );
    assert!(
        silent_closed,
        "the connection that sent nothing was closed
{context}"
    );
    assert_eq!(stopped.code, Some(0), "{context}");
    assert_eq!(field(&stopped.complete, "graceful"), Some("true"), "{context}");
    assert_eq!(stopped.count("requests_drained"), Some(1), "{context}");
    assert_eq!(stopped.count("connections_cut"), Some(0), "{context}");
}

// ---------------------------------------------------------------------------------
// 4. A slow request head is bounded while serving.
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn request_head_that_stalls_is_closed_after_the_header_read_timeout_and_idle_keepalive_is_not() {
    const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
    let mut server = start(&[
        ("TERMINUS_HEADER_READ_TIMEOUT", "1s"),
        ("TERMINUS_DRAIN_TIMEOUT", "5s"),
    ]);
    let addr = server.addr();
    let opened = Instant::now();
    // Half a request head, then nothing.
    let mut partial = Conn::connect(addr).await.unwrap();
    partial.write(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Nothing at all.
    let silent = Conn::connect(addr).await.unwrap();
    // A keep-alive connection that completed a request and then sends nothing.
    let mut keepalive = H1::connect(addr).await.unwrap();
    assert_eq!(keepalive.get("/").await.unwrap().body, HELLO);

    let bound = HEADER_READ_TIMEOUT + MARGIN;
    let closed_in =
        |mut conn: Conn| tokio::spawn(async move { conn.wait_closed(bound).await.then(|| opened.elapsed()) });
    let (partial_closed, silent_closed) = (closed_in(partial), closed_in(silent));
    let (partial_closed, silent_closed) = (partial_closed.await.unwrap(), silent_closed.await.unwrap());
    // Past the bound: the keep-alive connection must still be open and usable.
    tokio::time::sleep_until((opened + bound + Duration::from_millis(500)).into()).await;
    let keepalive_open = !keepalive.is_closed();
    let keepalive_reply = keepalive.get("/").await.map(|reply| reply.body);
    let fresh = h1_get(addr).await;
    let ms = |closed: Option<Duration>| closed.map_or("open".to_owned(), |took| took.as_millis().to_string());
    println!(
        "edges slow_head partial_head_closed_ms={} silent_closed_ms={} keepalive_open_past_bound={keepalive_open} \
         keepalive_reused={} new_request={fresh}",
        ms(partial_closed),
        ms(silent_closed),
        keepalive_reply.as_ref().is_ok_and(|body| body == HELLO),
    );
    let log = logs::tail(&server.stderr(), 15);

    let within = |closed: Option<Duration>| {
        closed.is_some_and(|took| took >= HEADER_READ_TIMEOUT - Duration::from_millis(100) && took < bound)
    };
    assert!(
        within(partial_closed),
        "half a request head is closed after about 1 s: {partial_closed:?}\n{log}"
    );
    assert!(
        within(silent_closed),
        "a connection that sends nothing is closed after about 1 s: {silent_closed:?}\n{log}"
    );
    assert!(
        keepalive_open,
        "an idle keep-alive connection is not closed by the header timeout\n{log}"
    );
    assert_eq!(keepalive_reply.ok().as_deref(), Some(HELLO), "{log}");
    assert_eq!(fresh, Outcome::Ok, "still serving\n{log}");

    // Nothing is left to hold the stop: the idle keep-alive is closed at Closing.
    let stopped = Stopped::terminate(&mut server, Duration::from_secs(1) + MARGIN).await;
    assert_eq!(stopped.code, Some(0), "{}", stopped.context());
}

/// `GET /` on a new raw connection.
async fn h1_get(addr: std::net::SocketAddr) -> Outcome {
    match Conn::connect(addr).await {
        Ok(mut conn) => {
            conn.exchange(&h1::request("GET", "/", 0), HELLO, READ_TIMEOUT)
                .await
        }
        Err(outcome) => outcome,
    }
}
