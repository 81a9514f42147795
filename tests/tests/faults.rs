//! Fault injection, end to end: each fault runs in a real `fault-server` process (the
//! quickstart with faults switched on by environment variables) on loopback. Each test
//! checks the three things an operator relies on when something is wrong: the probes
//! still answer truthfully, the process exits by its deadline, and it reports what it
//! had to cut.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use terminus_tests::{get, TestServer, H1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Slack on top of a deadline before a test calls it missed: generous, for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);
/// The kubelet's default probe timeout: a probe must answer within it, whatever hangs.
const KUBELET_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn fault_server() -> &'static str {
    env!("CARGO_BIN_EXE_fault-server")
}

fn start(envs: &[(&str, &str)]) -> TestServer {
    TestServer::start(fault_server(), envs)
}

async fn status(server: &TestServer, path: &str) -> StatusCode {
    get(server.addr(), path)
        .await
        .unwrap_or_else(|error| panic!("GET {path}: {error}"))
        .status
}

/// Waits until readiness fails, i.e. the signal was handled and Draining began.
async fn wait_draining(server: &TestServer) {
    assert!(
        server
            .wait_for_status("/readyz", StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(5))
            .await,
        "readiness never failed after the signal"
    );
}

/// The `connections_cut=N` field of the `shutdown complete` event.
async fn connections_cut(server: &TestServer) -> u64 {
    let line = server
        .wait_for_log(&["shutdown complete"], Duration::from_secs(1))
        .await
        .unwrap_or_else(|| panic!("no `shutdown complete` event:\n{}", server.stderr().join("\n")));
    let (_, rest) = line
        .split_once("connections_cut=")
        .expect("connections_cut field");
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

/// Sends SIGTERM and waits for the exit, which must come within `deadline` (plus the
/// margin); returns the exit code and how long it took.
async fn terminate_within(server: &mut TestServer, deadline: Duration) -> (Option<i32>, Duration) {
    let signalled = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(deadline + MARGIN)
        .await
        .unwrap_or_else(|| panic!("still running {:?} after SIGTERM", deadline + MARGIN));
    assert_eq!(
        status.signal(),
        None,
        "exited by itself, not killed by the signal"
    );
    (status.code(), signalled.elapsed())
}

#[tokio::test]
async fn readiness_check_that_hangs_fails_readyz_within_the_probe_timeout_and_shutdown_is_unaffected() {
    let mut server = start(&[("FAULT_READINESS", "hang"), ("TERMINUS_DRAIN_DELAY", "500ms")]);
    // Twice: the first run times out, the second may be served from the cache; both in time.
    for _ in 0..2 {
        let asked = Instant::now();
        let reply = get(server.addr(), "/readyz?verbose").await.unwrap();
        assert!(
            asked.elapsed() < KUBELET_PROBE_TIMEOUT,
            "a hanging check must not hang the probe: {:?}",
            asked.elapsed()
        );
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        let body = String::from_utf8_lossy(&reply.body);
        assert!(body.contains("[-]hang failed"), "{body}");
    }
    assert_eq!(
        status(&server, "/livez").await,
        StatusCode::OK,
        "a readiness check never fails liveness"
    );
    assert_eq!(
        status(&server, "/").await,
        StatusCode::OK,
        "the application still serves"
    );

    let (code, took) = terminate_within(&mut server, Duration::from_millis(500)).await;
    assert_eq!(code, Some(0), "graceful, in {took:?}");
    assert_eq!(connections_cut(&server).await, 0);
}

#[tokio::test]
async fn readiness_check_that_panics_fails_readyz_without_leaking_the_panic_and_the_process_serves_on() {
    let mut server = start(&[("FAULT_READINESS", "panic")]);
    for path in ["/readyz", "/readyz?verbose"] {
        let reply = get(server.addr(), path).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body = String::from_utf8_lossy(&reply.body);
        assert!(
            !body.contains("secret panic detail"),
            "the panic message leaked: {body}"
        );
        assert!(!body.contains("panicked at"), "a panic location leaked: {body}");
    }
    // After the cache expires the check panics again; the process is not affected.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(status(&server, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status(&server, "/livez").await, StatusCode::OK);
    assert_eq!(status(&server, "/").await, StatusCode::OK);

    let (code, took) = terminate_within(&mut server, Duration::ZERO).await;
    assert_eq!(code, Some(0), "graceful, in {took:?}");
    assert_eq!(connections_cut(&server).await, 0);
}

#[tokio::test]
async fn on_shutdown_hook_that_hangs_is_abandoned_at_cleanup_timeout_and_the_next_hook_still_runs() {
    let mut server = start(&[
        ("FAULT_ON_SHUTDOWN", "hang"),
        ("TERMINUS_DRAIN_DELAY", "1s"),
        ("TERMINUS_CLEANUP_TIMEOUT", "1s"),
    ]);
    let signalled = Instant::now();
    server.signal("TERM");
    wait_draining(&server).await;
    assert_eq!(
        status(&server, "/livez").await,
        StatusCode::OK,
        "live while draining"
    );

    // drain_delay (1 s) + the hanging hook (cleanup_timeout 1 s).
    let status = server
        .wait_exit(Duration::from_secs(2) + MARGIN)
        .await
        .expect("a hanging hook is bounded by cleanup_timeout");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(0),
        "a failed hook is reported, not a forced stop"
    );
    let hooks: Vec<String> = server
        .stdout()
        .into_iter()
        .filter(|line| line.starts_with("HOOK"))
        .collect();
    assert_eq!(hooks, ["HOOK on_shutdown hang", "HOOK on_shutdown after-hang"]);
    let report = server
        .wait_for_log(
            &["hook did not finish within cleanup_timeout", "hook=hang"],
            Duration::from_secs(1),
        )
        .await
        .expect("the hanging hook is reported");
    assert!(report.contains("WARN"), "{report}");
    assert_eq!(connections_cut(&server).await, 0);
}

#[tokio::test]
async fn client_that_sends_half_a_request_line_is_closed_at_closing_without_forcing_the_stop() {
    let mut server = start(&[
        ("TERMINUS_DRAIN_DELAY", "500ms"),
        ("TERMINUS_DRAIN_TIMEOUT", "10s"),
        ("TERMINUS_IDLE_CLOSE_TIMEOUT", "1s"),
    ]);
    let mut stalled = TcpStream::connect(server.addr()).await.unwrap();
    stalled.write_all(b"GET /slo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    server.signal("TERM");
    wait_draining(&server).await;
    assert_eq!(status(&server, "/livez").await, StatusCode::OK);
    assert_eq!(
        status(&server, "/").await,
        StatusCode::OK,
        "other clients are served"
    );

    // Half a request head is not a request: at Closing the connection gets the idle
    // bound (1 s) to finish it, then is closed. Nothing was cut, so the stop is graceful
    // and does not wait for drain_timeout (10 s).
    let exit = server
        .wait_exit(Duration::from_millis(1500) + MARGIN)
        .await
        .expect("exits by drain_delay + idle_close_timeout");
    let took = signalled.elapsed();
    assert_eq!(exit.signal(), None);
    assert!(
        took >= Duration::from_millis(1500),
        "the half head had its idle bound: {took:?}"
    );
    assert_eq!(exit.code(), Some(0), "a graceful stop exits 0");
    assert_eq!(connections_cut(&server).await, 0);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), stalled.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the stalled client's connection is closed"
    );
}

#[tokio::test]
async fn client_that_never_reads_its_response_is_cut_at_drain_timeout_and_reported() {
    let mut server = start(&[
        ("TERMINUS_DRAIN_DELAY", "500ms"),
        ("TERMINUS_DRAIN_TIMEOUT", "2s"),
    ]);
    let mut stuck = TcpStream::connect(server.addr()).await.unwrap();
    stuck
        .write_all(b"GET /big?mb=64 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    // The server fills the socket buffers and then waits for a reader that never comes.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signalled = Instant::now();
    server.signal("TERM");
    wait_draining(&server).await;
    assert_eq!(status(&server, "/livez").await, StatusCode::OK);
    assert_eq!(status(&server, "/").await, StatusCode::OK);

    let exit = server
        .wait_exit(Duration::from_millis(2500) + MARGIN)
        .await
        .expect("exits by drain_delay + drain_timeout");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "held until the deadline: {took:?}"
    );
    assert_eq!(exit.signal(), None);
    assert_eq!(exit.code(), Some(1), "a forced stop exits 1");
    let cut = server
        .wait_for_log(&["request cut at the drain deadline"], Duration::from_secs(1))
        .await
        .expect("one warn event per cut request");
    assert!(
        cut.contains("WARN") && cut.contains("method=GET") && cut.contains("path=/big"),
        "{cut}"
    );
    assert_eq!(connections_cut(&server).await, 1);
    drop(stuck);
}

#[tokio::test]
async fn port_in_use_fails_startup_naming_the_address_fails_liveness_and_exits_nonzero() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    // The admin listener binds first (and its address is the one printed), then the
    // main listener fails on the taken port.
    let mut server = start(&[
        ("FAULT_ADMIN", "1"),
        ("PORT", &port),
        ("TERMINUS_DRAIN_DELAY", "2s"),
    ]);
    assert!(
        server
            .wait_for_status("/livez", StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(2))
            .await,
        "liveness fails once the bind failed"
    );
    assert_eq!(status(&server, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
    let status = server
        .wait_exit(Duration::from_secs(2) + MARGIN)
        .await
        .expect("the fatal error stops the process after the drain delay");
    assert_eq!(status.signal(), None);
    assert_eq!(status.code(), Some(1));
    let stderr = server.stderr().join("\n");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    drop(taken);
}

#[tokio::test]
async fn sigterm_during_startup_before_the_listener_is_bound_exits_by_its_deadline_never_ready() {
    let mut server = TestServer::spawn(
        fault_server(),
        &[("FAULT_STARTUP_DELAY_MS", "2000"), ("TERMINUS_DRAIN_DELAY", "1s")],
    );
    // `starting` is printed once the controller (and its signal handlers) exists.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.stdout().iter().any(|line| line == "starting") {
        assert!(Instant::now() < deadline, "never started");
        assert!(server.wait_exit(Duration::ZERO).await.is_none(), "exited early");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signalled = Instant::now();
    server.signal("TERM");

    // The startup work finishes, the listener is bound, and the server is already draining.
    let mut probed = false;
    let exit = loop {
        if let Some(status) = server.wait_exit(Duration::from_millis(20)).await {
            break status;
        }
        let listening = server.stdout().iter().find_map(|line| {
            line.strip_prefix("fault-server listening on http://")
                .map(str::to_owned)
        });
        if let (false, Some(addr)) = (probed, listening) {
            let addr = addr.parse().unwrap();
            assert_eq!(
                get(addr, "/readyz").await.unwrap().status,
                StatusCode::SERVICE_UNAVAILABLE
            );
            assert_eq!(get(addr, "/livez").await.unwrap().status, StatusCode::OK);
            probed = true;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(3) + MARGIN,
            "startup (2 s) + drain delay (1 s) passed and the process still runs"
        );
    };
    assert!(probed, "the probes were checked while it drained");
    assert_eq!(
        exit.signal(),
        None,
        "SIGTERM during startup must not kill the process"
    );
    assert_eq!(exit.code(), Some(0));
    assert_eq!(connections_cut(&server).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_10000_probes_while_draining_is_answered_correctly_and_runs_the_check_rarely() {
    const PROBES: usize = 10_000;
    const CONNECTIONS: usize = 16;
    let drain_delay = Duration::from_secs(8);
    let mut server = start(&[("FAULT_READINESS", "count"), ("TERMINUS_DRAIN_DELAY", "8s")]);
    let addr = server.addr();
    assert_eq!(status(&server, "/readyz").await, StatusCode::OK);
    let signalled = Instant::now();
    server.signal("TERM");
    wait_draining(&server).await;
    let runs_before = check_runs(&server);
    let flood_started = Instant::now();

    // (method, path, expected status) while draining.
    let expectations: [(&str, &str, StatusCode); 5] = [
        ("GET", "/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ("GET", "/livez", StatusCode::OK),
        ("GET", "/startupz", StatusCode::OK),
        ("HEAD", "/readyz?verbose", StatusCode::SERVICE_UNAVAILABLE),
        ("POST", "/livez", StatusCode::METHOD_NOT_ALLOWED),
    ];
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let next = Arc::clone(&next);
        workers.spawn(async move {
            let mut answered = 0usize;
            let mut wrong = Vec::new();
            let mut connection = H1::connect(addr).await.expect("connect while draining");
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= PROBES {
                    break;
                }
                let (method, path, expected) = expectations[index % expectations.len()];
                if connection.is_closed() {
                    connection = H1::connect(addr).await.expect("reconnect while draining");
                }
                match connection.send(method, path, "").await {
                    Ok(reply) if reply.status == expected => answered += 1,
                    Ok(reply) => wrong.push(format!("{method} {path}: {}", reply.status)),
                    Err(error) => wrong.push(format!("{method} {path}: {error}")),
                }
            }
            (answered, wrong)
        });
    }
    let mut answered = 0;
    let mut wrong = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let (n, mut w) = joined.unwrap();
        answered += n;
        wrong.append(&mut w);
    }
    let flood_took = flood_started.elapsed();
    let runs = check_runs(&server) - runs_before;
    // Past the harness's capture, so the CI log shows the figure.
    let _ = writeln!(
        std::io::stderr(),
        "faults probe-flood probes={PROBES} connections={CONNECTIONS} took_ms={} check_runs={runs}",
        flood_took.as_millis()
    );
    wrong.truncate(10);
    assert_eq!(
        answered, PROBES,
        "every probe answered as expected; first wrong: {wrong:?}"
    );
    assert!(
        signalled.elapsed() < drain_delay,
        "the flood ({flood_took:?}) fit in the drain delay, so it ran while draining"
    );
    // Cached for 1 s and single flight: the flood cannot amplify load on a dependency.
    let bound = flood_took.as_secs() as usize + 2;
    assert!(
        runs <= bound,
        "the readiness check ran {runs} times in {flood_took:?}"
    );

    let exit = server
        .wait_exit(drain_delay.saturating_sub(signalled.elapsed()) + MARGIN)
        .await
        .expect("the flood does not delay the exit");
    assert_eq!(exit.code(), Some(0));
    assert_eq!(connections_cut(&server).await, 0);
}

fn check_runs(server: &TestServer) -> usize {
    server
        .stdout()
        .iter()
        .filter(|line| *line == "CHECK readiness")
        .count()
}
