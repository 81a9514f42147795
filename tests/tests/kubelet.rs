//! End-to-end: the pod lifecycle as the kubelet drives it, with a prober that behaves as
//! the kubelet's (`terminus_tests::kubelet`: a new connection per probe,
//! `kube-probe/1.34`, 1 s timeout, 10 KiB of body): the startup probe until the
//! server is started, readiness and liveness at their periods, SIGTERM, readiness
//! failing within one period while liveness keeps passing, exit 0. And every probe
//! answer, `?verbose` and many checks included, fits in the 10 KiB the kubelet reads.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use http::StatusCode;
use terminus_tests::haproxy::free_port;
use terminus_tests::kubelet::{self, PodProbes, ProbeKind, ProbeRecord, ProbeSpec, Verdict, MAX_BODY};
use terminus_tests::logs::{self, wait_for_phase};
use terminus_tests::{test_server, TestServer};

/// Slack for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);

fn describe(records: &[ProbeRecord], since: Instant) -> String {
    records
        .iter()
        .map(|record| {
            format!(
                "{:>6}ms {:?} {:?} {:?} {}",
                record.at.saturating_duration_since(since).as_millis(),
                record.kind,
                record.result.verdict,
                record.result.status,
                record.result.error.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_sees_the_pod_start_serve_and_drain() {
    // The quickstart manifest's probes, on a shorter clock: readiness every 1 s with
    // failureThreshold 2 (2 s to be marked not ready) inside a 3 s drain delay.
    let readiness_period = Duration::from_secs(1);
    let drain_delay = Duration::from_secs(3);
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    // The kubelet starts probing as the container starts, before anything listens.
    let probes = PodProbes::start(
        addr,
        ProbeSpec::new("/startupz", Duration::from_secs(1), 30),
        ProbeSpec::new("/readyz", readiness_period, 2),
        ProbeSpec::new("/livez", Duration::from_secs(1), 3),
    );
    let mut server = TestServer::start(
        test_server!(),
        &[
            ("PORT", &port.to_string()),
            ("TERMINUS_DRAIN_DELAY", "3s"),
            ("TERMINUS_DRAIN_TIMEOUT", "10s"),
        ],
    );
    assert!(
        probes.wait_ready(Duration::from_secs(10)).await,
        "{}",
        describe(&probes.records(), started)
    );

    // Serving: a few periods of readiness and liveness, all passing.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    server.signal("TERM");
    let signalled = Instant::now();
    let closing = wait_for_phase(&server, "closing", drain_delay + MARGIN)
        .await
        .and_then(|line| logs::instant(&line))
        .expect("Closing begins after the drain delay");
    let status = server
        .wait_exit(Duration::from_secs(5) + MARGIN)
        .await
        .expect("exits after the drain");
    let records = probes.stop().await;
    let log = describe(&records, started);
    assert_eq!(
        status.code(),
        Some(0),
        "graceful exit; signal {:?}",
        status.signal()
    );

    // Startup: probed until it passed once, and nothing else before that.
    let first_started = records
        .iter()
        .position(|record| record.kind == ProbeKind::Startup && record.result.verdict == Verdict::Success)
        .expect("the startup probe passed");
    assert!(
        records[..first_started]
            .iter()
            .all(|record| record.kind == ProbeKind::Startup),
        "readiness and liveness wait for startup:\n{log}"
    );
    assert!(
        records[first_started + 1..]
            .iter()
            .all(|record| record.kind != ProbeKind::Startup),
        "startup probes stop once one passed:\n{log}"
    );

    // Serving, then draining until the listener closes.
    let after_startup = &records[first_started + 1..];
    let serving: Vec<_> = after_startup
        .iter()
        .filter(|record| record.at < signalled)
        .collect();
    let readiness_serving = serving
        .iter()
        .filter(|record| record.kind == ProbeKind::Readiness);
    assert!(readiness_serving.clone().count() >= 2, "{log}");
    assert!(
        serving
            .iter()
            .all(|record| record.result.verdict == Verdict::Success),
        "every probe passes while serving:\n{log}"
    );

    // Signal delivery and the phase change take a few milliseconds; a probe that
    // started before them may still see Serving.
    let draining = |record: &&ProbeRecord| {
        record.at > signalled + Duration::from_millis(100) && record.at < closing - Duration::from_millis(100)
    };
    let readiness_draining: Vec<_> = after_startup
        .iter()
        .filter(|record| record.kind == ProbeKind::Readiness)
        .filter(draining)
        .collect();
    let first = readiness_draining
        .first()
        .expect("readiness probed while draining");
    assert!(
        first.at <= signalled + readiness_period + Duration::from_millis(300),
        "a readiness probe within one period of the signal:\n{log}"
    );
    assert!(
        readiness_draining
            .iter()
            .all(|record| record.result.status == Some(StatusCode::SERVICE_UNAVAILABLE)),
        "readiness fails from the signal on:\n{log}"
    );
    // The kubelet marks the pod not ready at the second consecutive failure: before the
    // listener closes, which is what the drain delay is for.
    assert!(readiness_draining.len() >= 2, "{log}");
    assert!(readiness_draining[1].at < closing, "{log}");
    let liveness_draining: Vec<_> = after_startup
        .iter()
        .filter(|record| record.kind == ProbeKind::Liveness)
        .filter(draining)
        .collect();
    assert!(liveness_draining.len() >= 2, "{log}");
    assert!(
        liveness_draining
            .iter()
            .all(|record| record.result.verdict == Verdict::Success),
        "liveness keeps passing while draining:\n{log}"
    );

    // Until the listener closed, every probe got a whole answer within the kubelet's
    // 1 s timeout and 10 KiB.
    for record in after_startup.iter().filter(|record| record.at < closing) {
        assert!(record.result.status.is_some(), "{record:?}\n{log}");
        assert!(!record.result.truncated, "{record:?}");
    }
}

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

/// Every probe path and query the kubelet (or a person with `curl`) would use.
const PROBES: [&str; 8] = [
    "/livez",
    "/readyz",
    "/startupz",
    "/livez?verbose",
    "/readyz?verbose",
    "/startupz?verbose",
    "/readyz?verbose&exclude=postgres-replica-000",
    "/readyz/postgres-replica-000",
];

/// Probes every path on both listeners; returns the largest body seen.
async fn probe_every_path(public: SocketAddr, admin: SocketAddr, state: &str) -> usize {
    let mut largest = 0;
    for addr in [public, admin] {
        for path in PROBES {
            let result = kubelet::http_get(addr, path, kubelet::DEFAULT_TIMEOUT).await;
            let status = result
                .status
                .unwrap_or_else(|| panic!("{state} {addr}{path}: {result:?}"));
            assert!(
                !result.truncated && result.body.len() <= MAX_BODY,
                "{state} {addr}{path}: {status}, {} bytes read and more left",
                result.body.len()
            );
            largest = largest.max(result.body.len());
        }
    }
    largest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_answer_fits_in_what_the_kubelet_reads() {
    // 100 readiness checks (plus 10 liveness and 5 startup), each passing one with a
    // little info, and then all 100 failing with a real connection error's message.
    let mut largest = Vec::new();
    for failing in ["0", "100"] {
        let mut server = TestServer::start(
            env!("CARGO_BIN_EXE_many-checks-server"),
            &[
                ("MANY_CHECKS", "100"),
                ("MANY_CHECKS_FAILING", failing),
                ("TERMINUS_DRAIN_DELAY", "1s"),
            ],
        );
        let (public, admin) = (server.addr(), admin_addr(&server));
        if failing == "0" {
            assert!(
                server
                    .wait_for_status("/readyz", StatusCode::OK, Duration::from_secs(10))
                    .await,
                "the checks pass"
            );
        }
        let state = format!("{failing} of 100 failing");
        largest.push((state.clone(), probe_every_path(public, admin, &state).await));
        server.signal("TERM");
        assert!(
            server
                .wait_for_status("/readyz", StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(5))
                .await
        );
        let state = format!("{state}, draining");
        largest.push((state.clone(), probe_every_path(public, admin, &state).await));
        let status = server.wait_exit(Duration::from_secs(2) + MARGIN).await;
        assert_eq!(status.and_then(|status| status.code()), Some(0));
    }
    println!("largest probe body by state: {largest:?}");
    // The failing case is the one that needed the limit: without it the admin port's
    // terminus JSON (reasons exposed) was about 21 KB.
    assert!(
        largest.iter().any(|(_, bytes)| *bytes > MAX_BODY - 1024),
        "{largest:?}"
    );
}
