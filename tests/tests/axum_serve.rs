//! `axum::serve` with `shutdown_signal`, end to end: the `axum-serve-server` binary
//! serves the quickstart's routes exactly as the docs show (`with_graceful_shutdown(
//! shutdown_signal(&terminus))`, then a `select!` on the server and
//! `terminus.outcome()`), receives real signals, and must:
//!
//! - answer readiness 200 while serving (axum polling `shutdown_signal` marks the
//!   listener bound), and 503 once SIGTERM arrived;
//! - finish a request in flight, run every hook in order, and exit 0;
//! - and, the weaker guarantee of this path stated plainly: an endless stream is not
//!   cut by axum, but the process still exits when the lifecycle's deadline has passed
//!   and the hooks have run, reporting the request as cut, with exit status 1.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use http::StatusCode;
use terminus_tests::logs::{self, field, field_u64};
use terminus_tests::raw::h1;
use terminus_tests::{get, TestServer};

const MARGIN: Duration = Duration::from_secs(2);

fn start(envs: &[(&str, &str)]) -> TestServer {
    TestServer::start(env!("CARGO_BIN_EXE_axum-serve-server"), envs)
}

fn hooks(server: &TestServer) -> Vec<String> {
    server
        .stdout()
        .into_iter()
        .filter(|line| line.starts_with("HOOK "))
        .collect()
}

fn complete(server: &TestServer) -> String {
    server
        .stderr()
        .into_iter()
        .find(|line| line.contains("shutdown complete"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serve_with_shutdown_signal_is_ready_drains_runs_the_hooks_and_exits_0() {
    let mut server = start(&[("TERMINUS_DRAIN_DELAY", "1s"), ("TERMINUS_DRAIN_TIMEOUT", "10s")]);
    assert!(
        server
            .wait_for_status("/readyz", StatusCode::OK, Duration::from_secs(5))
            .await,
        "readiness passes once axum serves"
    );
    let addr = server.addr();
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=1500").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.signal("TERM");

    assert!(
        server
            .wait_for_status(
                "/readyz",
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_millis(900)
            )
            .await,
        "readiness fails during the drain delay"
    );
    let reply = slow.await.unwrap().expect("the request in flight completes");
    assert_eq!((reply.status, &reply.body[..]), (StatusCode::OK, &b"slow"[..]));
    let status = server.wait_exit(Duration::from_secs(3) + MARGIN).await;
    let log = logs::tail(&server.stderr(), 20);
    let status = status.unwrap_or_else(|| panic!("exited\n{log}"));
    assert_eq!(status.signal(), None);
    assert_eq!(status.code(), Some(0), "graceful: exit status 0\n{log}");
    assert!(
        signalled.elapsed() >= Duration::from_secs(1),
        "not before the drain delay"
    );
    assert_eq!(
        hooks(&server),
        [
            "HOOK before_shutdown announce",
            "HOOK on_signal stop-consumers",
            "HOOK on_shutdown close-pool"
        ],
        "every hook, in order"
    );
    let complete = complete(&server);
    assert_eq!(field(&complete, "graceful"), Some("true"), "{log}");
    assert_eq!(field_u64(&complete, "requests_drained"), Some(1), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_serve_with_an_endless_stream_exits_after_the_deadline_and_the_hooks_with_status_1() {
    let mut server = start(&[("TERMINUS_DRAIN_DELAY", "0s"), ("TERMINUS_DRAIN_TIMEOUT", "1s")]);
    assert!(
        server
            .wait_for_status("/readyz", StatusCode::OK, Duration::from_secs(5))
            .await
    );
    let (_, reader) = h1::open_stream(server.addr(), "/stream?ms=100", Duration::from_secs(10))
        .await
        .expect("the stream starts");
    let signalled = Instant::now();
    server.signal("TERM");
    // drain_timeout 1 s, then the hooks (immediate): axum never ends the stream itself.
    let status = server.wait_exit(Duration::from_secs(1) + MARGIN).await;
    let log = logs::tail(&server.stderr(), 20);
    let status = status.unwrap_or_else(|| panic!("exited by the lifecycle's deadline\n{log}"));
    assert!(
        signalled.elapsed() >= Duration::from_secs(1),
        "not before drain_timeout"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "a request was still in flight: forced, exit status 1\n{log}"
    );
    let (_, ended) = reader.await.unwrap();
    assert!(ended, "the stream ends with the process");
    assert_eq!(hooks(&server).len(), 3, "the hooks ran: {:?}", hooks(&server));
    let complete = complete(&server);
    assert_eq!(field(&complete, "graceful"), Some("false"), "{log}");
    assert_eq!(field_u64(&complete, "requests_cut"), Some(1), "{log}");
    // This path cannot cut or report connections: axum owns them.
    assert_eq!(field_u64(&complete, "connections_cut"), Some(0), "{log}");
}
