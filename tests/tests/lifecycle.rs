//! End-to-end lifecycle tests: the quickstart server (as `test-server`) runs as a child
//! process on a free loopback port and receives real signals.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use http::StatusCode;
use terminus_tests::{get, test_server, TestServer, H1, H2};
use tokio::net::TcpStream;

/// Slack on top of a deadline before a test calls it missed: generous, for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);

fn start(envs: &[(&str, &str)]) -> TestServer {
    TestServer::start(test_server!(), envs)
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

#[tokio::test]
async fn request_in_flight_at_sigterm_completes_with_connection_close() {
    let mut server = start(&[
        ("TERMINUS_DRAIN_DELAY", "500ms"),
        ("TERMINUS_DRAIN_TIMEOUT", "10s"),
    ]);
    let addr = server.addr();
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=2000").await });
    // Let the request reach the handler before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");

    let reply = slow.await.unwrap().expect("the slow request completes");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "slow");
    assert_eq!(reply.connection(), Some("close"));

    let status = server
        .wait_exit(Duration::from_secs(2) + MARGIN)
        .await
        .expect("exits after the response");
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");
}

#[tokio::test]
async fn during_drain_delay_readiness_fails_liveness_passes_and_traffic_is_served() {
    let mut server = start(&[("TERMINUS_DRAIN_DELAY", "3s")]);
    let addr = server.addr();
    assert_eq!(get(addr, "/readyz").await.unwrap().status, StatusCode::OK);
    // A keep-alive connection opened before the signal.
    let mut before = H1::connect(addr).await.unwrap();
    assert_eq!(before.get("/").await.unwrap().connection(), None);

    server.signal("TERM");
    wait_draining(&server).await;
    let draining_seen = Instant::now();

    assert_eq!(get(addr, "/livez").await.unwrap().status, StatusCode::OK);
    let reply = before.get("/").await.expect("old connection still served");
    assert_eq!(
        (reply.status, reply.body.as_ref()),
        (StatusCode::OK, &b"hello"[..])
    );
    assert_eq!(
        reply.connection(),
        Some("close"),
        "keep-alive clients are told to move"
    );
    // New TCP connections are still accepted and served.
    let mut fresh = H1::connect(addr)
        .await
        .expect("listener still accepts while draining");
    let reply = fresh.get("/").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.connection(), Some("close"));
    let reply = H2::connect(addr).await.unwrap().get("/").await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.connection(), None, "never on HTTP/2");
    assert!(
        draining_seen.elapsed() < Duration::from_secs(2),
        "checks ran inside the drain delay"
    );

    let status = server
        .wait_exit(Duration::from_secs(3) + MARGIN)
        .await
        .expect("exits after the delay");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn after_drain_delay_new_connections_are_refused_and_idle_keepalive_closed() {
    let mut server = start(&[("TERMINUS_DRAIN_DELAY", "1s"), ("TERMINUS_DRAIN_TIMEOUT", "15s")]);
    let addr = server.addr();
    let mut idle = H1::connect(addr).await.unwrap();
    assert_eq!(idle.get("/").await.unwrap().status, StatusCode::OK);
    // Keeps the process in Closing for a while, so refusal is observed on a live process.
    let slow = tokio::spawn(async move { get(addr, "/slow?ms=4000").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.signal("TERM");
    wait_draining(&server).await;
    server
        .wait_for_log(&["phase changed", "closing"], Duration::from_secs(1) + MARGIN)
        .await
        .expect("Closing begins after the drain delay");
    let closing_seen = Instant::now();
    // The listener closes right after Closing begins, once the connections the kernel
    // already accepted are taken in: its own log line says when.
    server
        .wait_for_log(&["listener closed"], MARGIN)
        .await
        .expect("the listener closes at Closing");

    let refused = TcpStream::connect(addr).await;
    assert!(
        refused.is_err(),
        "listener must be closed at Closing, got {refused:?}"
    );
    assert!(
        idle.wait_closed(Duration::from_secs(2)).await,
        "idle keep-alive connection closed at Closing, not after a timeout"
    );
    assert!(closing_seen.elapsed() < Duration::from_secs(3));
    assert!(
        server.wait_exit(Duration::ZERO).await.is_none(),
        "still draining the slow request"
    );

    let reply = slow
        .await
        .unwrap()
        .expect("slow request completes during Closing");
    assert_eq!(reply.status, StatusCode::OK);
    let status = server
        .wait_exit(MARGIN)
        .await
        .expect("exits once the slow request is done");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn endless_stream_is_cut_at_drain_timeout_and_exit_is_bounded() {
    let mut server = start(&[
        ("TERMINUS_DRAIN_DELAY", "0s"),
        ("TERMINUS_DRAIN_TIMEOUT", "2s"),
        ("TERMINUS_CLEANUP_TIMEOUT", "1s"),
        ("TEST_HANGING_HOOK", "1"),
    ]);
    let addr = server.addr();
    let stream = TcpStream::connect(addr).await.unwrap();
    let reader = tokio::spawn(read_stream(stream));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    server.signal("TERM");
    // drain_timeout (2 s) + one hanging hook (cleanup_timeout 1 s) + margin.
    let status = server
        .wait_exit(Duration::from_secs(3) + MARGIN)
        .await
        .expect("exit bounded by drain_timeout + cleanup_timeout");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(3),
        "held by the stream then the hook, took {took:?}"
    );
    assert_eq!(status.code(), Some(1), "a forced stop exits 1");

    let (ticks, ended) = reader.await.unwrap();
    assert!(
        ticks >= 3,
        "the stream was flowing before the cut ({ticks} ticks)"
    );
    assert!(ended, "the client saw the connection end");
    let cut = server
        .wait_for_log(&["request cut at the drain deadline"], Duration::from_secs(1))
        .await
        .expect("one warn event per cut request");
    assert!(
        cut.contains("WARN")
            && cut.contains("method=GET")
            && cut.contains("path=/stream")
            && cut.contains("peer=127.0.0.1:"),
        "{cut}"
    );
}

/// Reads a `/stream` response from a raw socket until the server closes it; returns the
/// number of ticks seen and whether the connection ended.
async fn read_stream(mut stream: TcpStream) -> (usize, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /stream?ms=100 HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                let ticks = String::from_utf8_lossy(&seen).matches("tick ").count();
                return (ticks, true);
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&seen).matches("tick ").count(), false)
}

#[tokio::test]
async fn second_sigterm_exits_at_once() {
    let mut server = start(&[("TERMINUS_DRAIN_DELAY", "20s"), ("TEST_HOOKS", "1")]);
    server.signal("TERM");
    wait_draining(&server).await;
    let second = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(MARGIN)
        .await
        .expect("second signal exits at once");
    assert!(second.elapsed() < MARGIN);
    assert_eq!(status.code(), Some(1), "forced");
    let hooks = server.stdout();
    assert!(
        !hooks.iter().any(|line| line.contains("on_shutdown")),
        "no cleanup hooks after a second signal: {hooks:?}"
    );
}

#[tokio::test]
async fn hooks_run_in_order_and_a_hanging_hook_does_not_stop_the_exit() {
    let mut server = start(&[
        ("TERMINUS_DRAIN_DELAY", "0s"),
        ("TERMINUS_CLEANUP_TIMEOUT", "1s"),
        ("TEST_HOOKS", "1"),
        ("TEST_HANGING_HOOK", "1"),
    ]);
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(1) + MARGIN)
        .await
        .expect("hanging hook is bounded");
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
    assert_eq!(
        hooks,
        [
            "HOOK before_shutdown announce",
            "HOOK on_signal stop-consumers",
            "HOOK on_signal hang",
            "HOOK on_shutdown close-pool"
        ]
    );
    let report = server
        .wait_for_log(
            &["hook did not finish within cleanup_timeout", "hook=hang"],
            Duration::from_secs(1),
        )
        .await;
    assert!(report.is_some_and(|line| line.contains("WARN")));
}

#[tokio::test]
async fn exit_code_is_128_plus_signal_under_the_signal_policy() {
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let mut server = start(&[("TEST_EXIT_POLICY", "signal")]);
        server.signal(signal);
        let status = server.wait_exit(MARGIN).await.expect("exits");
        assert_eq!(status.code(), Some(code), "SIG{signal}");
        assert_eq!(status.signal(), None, "exited by itself, not killed");
    }
}

#[tokio::test]
async fn sigint_starts_the_same_graceful_shutdown() {
    let mut server = start(&[("TEST_HOOKS", "1")]);
    server.signal("INT");
    let status = server.wait_exit(MARGIN).await.expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(server
        .stdout()
        .iter()
        .any(|line| line == "HOOK on_shutdown close-pool"));
}

#[tokio::test]
async fn malformed_environment_value_fails_startup_naming_the_variable() {
    let mut server = TestServer::spawn(test_server!(), &[("TERMINUS_DRAIN_TIMEOUT", "soon")]);
    let status = server.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert_eq!(status.code(), Some(1));
    let stderr = server.stderr().join("\n");
    assert!(
        stderr.contains("TERMINUS_DRAIN_TIMEOUT") && stderr.contains("soon"),
        "{stderr}"
    );
}

#[tokio::test]
async fn empty_signal_list_fails_startup_naming_the_variable() {
    // An empty list would leave SIGTERM killing the process with no graceful shutdown.
    for value in ["", ","] {
        let mut server = TestServer::spawn(test_server!(), &[("TERMINUS_SIGNALS", value)]);
        let status = server.wait_exit(Duration::from_secs(10)).await.expect("exits");
        assert_eq!(status.code(), Some(1), "for `{value}`");
        let stderr = server.stderr().join("\n");
        assert!(
            stderr.contains("TERMINUS_SIGNALS") && stderr.contains("names no signal"),
            "for `{value}`: {stderr}"
        );
        assert!(
            !server.stdout().iter().any(|line| line.contains("listening")),
            "nothing was served"
        );
    }
}

#[tokio::test]
async fn server_settings_malformed_or_out_of_range_fail_startup_naming_the_variable_before_binding() {
    // Read by the same `Terminus::builder().from_env()` as the README's example: the
    // server's variables too, before anything is bound.
    let cases = [
        ("TERMINUS_HEADER_READ_TIMEOUT", "soon"),
        ("TERMINUS_HEADER_READ_TIMEOUT", "abc"),
        ("TERMINUS_MAX_CONNECTIONS", "nope"),
        ("TERMINUS_MAX_CONNECTIONS", "0"),
        // Tokio's semaphore limit plus one: this used to start listening, then panic.
        ("TERMINUS_MAX_CONNECTIONS", "2305843009213693952"),
        ("TERMINUS_IDLE_CLOSE_TIMEOUT", "2days"),
        ("TERMINUS_DRAIN_TIMEOUT", "100000000years"),
    ];
    for (variable, value) in cases {
        let mut server = TestServer::spawn(test_server!(), &[(variable, value)]);
        let status = server.wait_exit(Duration::from_secs(10)).await.expect("exits");
        let stderr = server.stderr().join("\n");
        assert_eq!(status.code(), Some(1), "{variable}={value}: {stderr}");
        assert!(
            stderr.contains(variable) && stderr.contains("invalid configuration"),
            "{variable}={value}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{variable}={value}: {stderr}");
        assert!(
            !server.stdout().iter().any(|line| line.contains("listening")),
            "{variable}={value}: nothing was bound"
        );
    }
}

#[tokio::test]
async fn a_misspelled_variable_is_reported_with_the_closest_name_and_the_server_still_runs() {
    let mut server = start(&[("TERMINUS_DRAIN_DEALY", "5s")]);
    let stderr = server.stderr().join("\n");
    let warning = server
        .stderr()
        .into_iter()
        .find(|line| line.contains("unknown TERMINUS_* variable"))
        .unwrap_or_else(|| panic!("no warning about the typo:\n{stderr}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("TERMINUS_DRAIN_DEALY"), "{warning}");
    assert!(
        warning.contains("did_you_mean=\"TERMINUS_DRAIN_DELAY\""),
        "{warning}"
    );
    // The effective configuration says what runs: the misspelled delay did not apply.
    let effective = server
        .stderr()
        .into_iter()
        .find(|line| line.contains("effective configuration"))
        .unwrap_or_else(|| panic!("no effective configuration event:\n{stderr}"));
    assert!(
        effective.contains("drain_delay=\"0s\" drain_delay_from=\"default\""),
        "{effective}"
    );
    server.signal("TERM");
    let status = server.wait_exit(MARGIN).await.expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_effective_configuration_names_where_each_setting_came_from() {
    let mut server = start(&[
        ("TERMINUS_DRAIN_TIMEOUT", "7s"),
        ("TERMINUS_MAX_CONNECTIONS", "50"),
    ]);
    let stderr = server.stderr().join("\n");
    let effective = server
        .stderr()
        .into_iter()
        .find(|line| line.contains("effective configuration"))
        .unwrap_or_else(|| panic!("no effective configuration event:\n{stderr}"));
    for expected in [
        "drain_timeout=\"7s\" drain_timeout_from=\"environment\"",
        "max_connections=\"50\" max_connections_from=\"environment\"",
        "cleanup_timeout=\"3s\" cleanup_timeout_from=\"default\"",
        "header_read_timeout=\"30s\" header_read_timeout_from=\"default\"",
    ] {
        assert!(effective.contains(expected), "{expected} in {effective}");
    }
    server.signal("TERM");
    let status = server.wait_exit(MARGIN).await.expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn port_in_use_fails_with_the_address_and_a_nonzero_exit() {
    let first = start(&[]);
    let port = first.addr().port().to_string();
    let mut second = TestServer::spawn(test_server!(), &[("PORT", &port)]);
    let status = second.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert_ne!(status.code(), Some(0));
    let stderr = second.stderr().join("\n");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("fatal error"), "liveness marked failed: {stderr}");
}
