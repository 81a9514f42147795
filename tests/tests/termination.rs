//! End-to-end: the termination deadline as Kubernetes imposes it.
//!
//! - An `httpGet` preStop hook on the admin port's `GET /prestop` starts Draining, is
//!   answered when Closing begins, and the kubelet's SIGTERM that follows lets the
//!   shutdown go on: the process exits 0.
//! - A budget that does not fit `TERMINUS_GRACE_PERIOD` stops the process at start,
//!   naming the field and saying by how much it misses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::StatusCode;
use terminus_tests::kubelet::{self, Verdict};
use terminus_tests::logs::{self, wait_for_phase};
use terminus_tests::{get, test_server, TestServer};

const MARGIN: Duration = Duration::from_secs(2);

fn admin_addr(server: &TestServer) -> SocketAddr {
    server
        .stdout()
        .iter()
        .find_map(|line| {
            line.split_once("admin probes on http://")
                .and_then(|(_, addr)| addr.trim().parse().ok())
        })
        .expect("the admin address is printed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prestop_hook_holds_sigterm_until_closing_and_the_process_exits_0() {
    let drain_delay = Duration::from_secs(2);
    let mut server = TestServer::start(
        env!("CARGO_BIN_EXE_admin-port-server"),
        &[
            ("ADMIN_PORT", "0"),
            ("TERMINUS_DRAIN_DELAY", "2s"),
            ("TERMINUS_DRAIN_TIMEOUT", "10s"),
        ],
    );
    let (public, admin) = (server.addr(), admin_addr(&server));
    // A request in flight when the hook arrives, still running at Closing.
    let slow = tokio::spawn(get(public, "/slow?ms=3000"));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The kubelet's preStop hook: its own request, bounded only by the grace period.
    let hook_sent = Instant::now();
    let hook = tokio::spawn(kubelet::http_get(admin, "/prestop", Duration::from_secs(30)));

    // Draining: readiness fails at once, liveness passes, public traffic is served.
    assert!(
        server
            .wait_for_status("/readyz", StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(1))
            .await,
        "the hook starts Draining"
    );
    let readyz = kubelet::http_get(admin, "/readyz", kubelet::DEFAULT_TIMEOUT).await;
    assert_eq!(readyz.status, Some(StatusCode::SERVICE_UNAVAILABLE));
    let livez = kubelet::http_get(admin, "/livez", kubelet::DEFAULT_TIMEOUT).await;
    assert_eq!(livez.verdict, Verdict::Success);
    let reply = get(public, "/").await.expect("still served while draining");
    assert_eq!(
        (reply.status, reply.connection()),
        (StatusCode::OK, Some("close"))
    );
    assert!(!hook.is_finished(), "the hook is held while Draining");

    // Answered when Closing begins, after the drain delay.
    let answer = hook.await.unwrap();
    let answered = Instant::now();
    assert_eq!(answer.verdict, Verdict::Success, "{answer:?}");
    assert_eq!(answer.status, Some(StatusCode::OK));
    let closing = wait_for_phase(&server, "closing", MARGIN)
        .await
        .and_then(|line| logs::instant(&line))
        .expect("Closing began");
    assert!(answered >= closing, "answered once Closing began");
    assert!(
        answered.duration_since(hook_sent) >= drain_delay - Duration::from_millis(50),
        "held for the drain delay: {:?}",
        answered.duration_since(hook_sent)
    );
    assert!(answered.duration_since(hook_sent) < drain_delay + MARGIN);

    // Then the kubelet sends SIGTERM, during Closing: the shutdown goes on.
    server.signal("TERM");
    let reply = slow.await.unwrap().expect("the slow request completes");
    assert_eq!(reply.status, StatusCode::OK);
    let status = server
        .wait_exit(Duration::from_secs(3) + MARGIN)
        .await
        .expect("exits once the slow request is done");
    assert_eq!(status.code(), Some(0));
    let stderr = server.stderr();
    assert!(
        stderr
            .iter()
            .any(|line| line.contains("signal received: the shutdown already under way goes on")),
        "{}",
        logs::tail(&stderr, 20)
    );
    assert!(
        !stderr.iter().any(|line| line.contains("second signal")),
        "the kubelet's SIGTERM is not a second signal:\n{}",
        logs::tail(&stderr, 20)
    );
    let complete = stderr
        .iter()
        .find(|line| line.contains("shutdown complete"))
        .expect("the shutdown completes");
    assert_eq!(logs::field(complete, "graceful"), Some("true"), "{complete}");
    assert_eq!(logs::field_u64(complete, "requests_cut"), Some(0), "{complete}");
    assert!(
        complete.contains("preStop hook"),
        "the reason is the hook: {complete}"
    );
}

#[tokio::test]
async fn a_budget_over_the_grace_period_stops_the_process_at_start_naming_the_field() {
    // Hooks: one before_shutdown (inside the 5s drain delay), two cleanup hooks of 3s.
    let mut server = TestServer::spawn(
        test_server!(),
        &[
            ("TEST_HOOKS", "1"),
            ("TERMINUS_DRAIN_DELAY", "5s"),
            ("TERMINUS_DRAIN_TIMEOUT", "20s"),
            ("TERMINUS_CLEANUP_TIMEOUT", "3s"),
            ("TERMINUS_GRACE_PERIOD", "20s"),
        ],
    );
    let status = server
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the process stops at once");
    assert_eq!(status.code(), Some(1));
    assert!(
        !server.stdout().iter().any(|line| line.contains("listening on")),
        "it never listened"
    );
    let stderr = server.stderr().join("\n");
    assert!(
        stderr.contains(
            "invalid configuration: grace_period: draining 5s + drain_timeout 20s + 2 cleanup hook(s) x \
             cleanup_timeout 3s = 31s, 11s more than the grace period of 20s"
        ),
        "{stderr}"
    );
}
