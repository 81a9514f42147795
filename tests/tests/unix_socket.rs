//! A Unix domain socket end to end: the quickstart (as `test-server`) listens on
//! `UNIX_SOCKET`, receives real signals, and is driven by curl (`--unix-socket`) and a
//! raw HTTP/2 peer on the socket.
//!
//! - A request in flight at SIGTERM completes: HTTP/1.1 with `connection: close`,
//!   HTTP/2 after a GOAWAY that arrives during the drain delay.
//! - Endless streams are cut at the deadline and reported, the peer named by the
//!   socket's path; the exit status is then 1, else 0.
//! - The socket file a stopped server leaves is taken over by the next one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use terminus_tests::curl::{self, Curl};
use terminus_tests::exit::Exit;
use terminus_tests::logs::field;
use terminus_tests::raw::h2;
use terminus_tests::{temp_path, test_server, TestServer};
use tokio::net::UnixStream;

/// Slack on top of a deadline: generous, for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);

/// Starts the quickstart on a Unix socket at `path` and waits for its
/// `listening on unix:PATH` line.
fn start(path: &Path, envs: &[(&str, &str)]) -> TestServer {
    let socket = path.display().to_string();
    let mut all = vec![("UNIX_SOCKET", socket.as_str())];
    all.extend_from_slice(envs);
    let server = TestServer::spawn(test_server!(), &all);
    let expected = format!("quickstart listening on unix:{socket}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.stdout().iter().any(|line| line.contains(&expected)) {
        assert!(
            Instant::now() < deadline,
            "no `{expected}`:\n{}",
            server.stderr().join("\n")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server
}

/// A socket path of this test, removed when dropped.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new(name: &str) -> SocketPath {
        SocketPath(temp_path(&format!("{name}.sock")))
    }

    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn curl_unix(socket: &SocketPath, args: &[&str]) -> Curl {
    let socket = socket.arg();
    let mut all = vec!["--unix-socket", socket.as_str()];
    all.extend_from_slice(args);
    curl::curl(&all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_at_sigterm_complete_over_a_unix_socket() {
    let socket = SocketPath::new("in-flight");
    let mut server = start(
        &socket.0,
        &[
            ("TERMINUS_DRAIN_DELAY", "1500ms"),
            ("TERMINUS_DRAIN_TIMEOUT", "10s"),
        ],
    );
    let slow = "http://localhost/slow?ms=2500";
    let socket_arg = socket.arg();
    let h1 = curl::spawn(&["--unix-socket", &socket_arg, "--http1.1", slow]);
    let h2_curl = curl::spawn(&["--unix-socket", &socket_arg, "--http2-prior-knowledge", slow]);
    let mut raw = UnixStream::connect(&socket.0)
        .await
        .expect("connect to the socket");
    h2::handshake(&mut raw).await.expect("HTTP/2 handshake");
    h2::send_get(&mut raw, 1, "/slow?ms=2500")
        .await
        .expect("open stream 1");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let signalled = Instant::now();
    server.signal("TERM");

    let ready = curl_unix(&socket, &["http://localhost/readyz"]).await;
    assert_eq!(ready.status, Some(503), "draining: {ready:?}");

    // The raw peer: GOAWAY during the drain delay, then its stream's response.
    let mut goaway_at = None;
    let mut body = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            let frame = h2::read_frame(&mut raw).await?;
            match frame.kind {
                h2::kind::GOAWAY => {
                    goaway_at.get_or_insert_with(Instant::now);
                }
                h2::kind::PING if frame.flags & h2::ACK == 0 => {
                    h2::write_frame(&mut raw, h2::kind::PING, h2::ACK, 0, &frame.payload).await?;
                }
                h2::kind::DATA if frame.stream == 1 => body.extend_from_slice(&frame.payload),
                _ => {}
            }
            if frame.stream == 1 && frame.flags & h2::END_STREAM != 0 {
                return Ok::<_, std::io::Error>(Instant::now());
            }
        }
    })
    .await;
    let (h1, h2_curl) = (h1.await.unwrap(), h2_curl.await.unwrap());
    let exit = Exit::wait(&mut server, Instant::now(), Duration::from_secs(5) + MARGIN).await;
    let ended_at = read
        .expect("stream 1 ends in time")
        .unwrap_or_else(|error| panic!("stream 1: {error}\n{}", exit.context()));
    let goaway_at = goaway_at.expect("a GOAWAY");
    assert!(
        goaway_at - signalled < Duration::from_millis(1500),
        "GOAWAY during the drain delay: {:?}",
        goaway_at - signalled
    );
    assert!(goaway_at < ended_at);
    assert_eq!(body, b"slow");

    assert!(h1.is_ok(), "{h1:?}\n{}", exit.context());
    assert_eq!(h1.header("connection"), Some("close"), "{h1:?}");
    assert!(h2_curl.is_ok(), "{h2_curl:?}\n{}", exit.context());
    assert_eq!(h2_curl.version, "2");
    assert_eq!(exit.code, Some(0), "{}", exit.context());
    assert_eq!(exit.count("requests_drained"), Some(3), "{}", exit.context());

    // The socket file stays; the next server takes it over.
    assert!(socket.0.exists(), "the socket file is left for the next process");
    let mut next = start(&socket.0, &[]);
    let ready = curl_unix(&socket, &["http://localhost/readyz"]).await;
    assert_eq!(ready.status, Some(200), "{ready:?}");
    next.signal("TERM");
    let exit = Exit::wait(&mut next, Instant::now(), Duration::from_secs(2) + MARGIN).await;
    assert_eq!(exit.code, Some(0), "{}", exit.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_streams_over_a_unix_socket_are_cut_and_reported_with_the_socket_path() {
    let socket = SocketPath::new("cut");
    let mut server = start(
        &socket.0,
        &[("TERMINUS_DRAIN_DELAY", "0s"), ("TERMINUS_DRAIN_TIMEOUT", "1s")],
    );
    let stream = "http://localhost/stream?ms=100";
    let socket_arg = socket.arg();
    let h1 = curl::spawn(&["--unix-socket", &socket_arg, "-N", "--http1.1", stream]);
    let h2 = curl::spawn(&[
        "--unix-socket",
        &socket_arg,
        "-N",
        "--http2-prior-knowledge",
        stream,
    ]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.signal("TERM");
    let exit = Exit::wait(&mut server, Instant::now(), Duration::from_secs(2) + MARGIN).await;
    let (h1, h2) = (h1.await.unwrap(), h2.await.unwrap());

    let peer = format!("unix:{}", socket.arg());
    for (protocol, reply) in [("HTTP/1.1", &h1), ("HTTP/2", &h2)] {
        assert_eq!(reply.status, Some(200), "{protocol}: {reply:?}");
        assert!(
            reply.body.starts_with(b"tick 0\n"),
            "{protocol}: streamed before the cut"
        );
        assert_ne!(reply.exit, Some(0), "{protocol}: cut, not ended: {reply:?}");
        let reports = exit
            .log
            .iter()
            .filter(|line| line.contains("request cut at the drain deadline"))
            .filter(|line| {
                field(line, "protocol") == Some(protocol)
                    && field(line, "path") == Some("/stream")
                    && field(line, "peer") == Some(peer.as_str())
            })
            .count();
        assert_eq!(
            reports,
            1,
            "one report for the {protocol} stream\n{}",
            exit.context()
        );
    }
    let connection_reports = exit
        .log
        .iter()
        .filter(|line| line.contains("connection cut at the drain deadline"))
        .filter(|line| field(line, "peer") == Some(peer.as_str()))
        .count();
    assert_eq!(connection_reports, 2, "{}", exit.context());
    assert_eq!(exit.code, Some(1), "forced: exit status 1\n{}", exit.context());
    assert_eq!(exit.count("requests_cut"), Some(2), "{}", exit.context());
    assert_eq!(exit.count("connections_cut"), Some(2), "{}", exit.context());
}
