//! End-to-end: the lifecycle's metrics as Prometheus scrapes them from the `admin-port`
//! example's `GET /metrics` (feature `metrics`, on by default there) during a drain:
//! the phase, the requests in flight and the requests drained change as the shutdown
//! goes on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use terminus_tests::{get, TestServer};

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

/// One scrape: every sample by its name and labels as exposed
/// (`terminus_phase{phase="draining"}`), comments skipped.
async fn scrape(admin: SocketAddr) -> HashMap<String, f64> {
    let reply = get(admin, "/metrics").await.expect("scrape /metrics");
    assert_eq!(reply.status, StatusCode::OK);
    String::from_utf8_lossy(&reply.body)
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, name: &str) -> f64 {
    // A counter appears once it was first incremented; until then it is 0.
    samples.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_during_a_drain_sees_the_phase_in_flight_and_drained_requests_change() {
    let mut server = TestServer::start(
        env!("CARGO_BIN_EXE_admin-port-server"),
        &[
            ("ADMIN_PORT", "0"),
            ("TERMINUS_DRAIN_DELAY", "3s"),
            ("TERMINUS_DRAIN_TIMEOUT", "10s"),
        ],
    );
    let (public, admin) = (server.addr(), admin_addr(&server));
    const SLOW: usize = 3;

    let serving = scrape(admin).await;
    assert_eq!(
        value(&serving, r#"terminus_phase{phase="serving"}"#),
        1.0,
        "{serving:?}"
    );
    // A scrape on the admin listener is not an application request: not counted.
    assert_eq!(value(&serving, "terminus_requests_in_flight"), 0.0, "{serving:?}");

    let slow: Vec<_> = (0..SLOW)
        .map(|_| tokio::spawn(get(public, "/slow?ms=1500")))
        .collect();
    let mut loaded = scrape(admin).await;
    for _ in 0..100 {
        if value(&loaded, "terminus_requests_in_flight") == SLOW as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        loaded = scrape(admin).await;
    }
    assert_eq!(
        value(&loaded, "terminus_requests_in_flight"),
        SLOW as f64,
        "{loaded:?}"
    );
    assert!(
        value(&loaded, "terminus_connections_open") >= (SLOW + 1) as f64,
        "{loaded:?}"
    );
    assert_eq!(value(&loaded, "terminus_requests_drained_total"), 0.0);

    server.signal("TERM");
    assert!(
        server
            .wait_for_status("/readyz", StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(2))
            .await
    );
    let draining = scrape(admin).await;
    assert_eq!(
        value(&draining, r#"terminus_phase{phase="draining"}"#),
        1.0,
        "{draining:?}"
    );
    assert_eq!(
        value(&draining, r#"terminus_phase{phase="serving"}"#),
        0.0,
        "{draining:?}"
    );
    assert_eq!(
        value(&draining, "terminus_requests_in_flight"),
        SLOW as f64,
        "{draining:?}"
    );
    // Serving's length is known once it is over.
    assert!(
        value(&draining, r#"terminus_phase_duration_seconds{phase="serving"}"#) > 0.0,
        "{draining:?}"
    );

    // The slow requests finish inside the 3 s drain delay: drained. The scrapes are
    // not counted, before or after the shutdown began.
    for request in slow {
        assert_eq!(request.await.unwrap().expect("served").status, StatusCode::OK);
    }
    let drained = scrape(admin).await;
    assert_eq!(
        value(&drained, r#"terminus_phase{phase="draining"}"#),
        1.0,
        "{drained:?}"
    );
    assert_eq!(value(&drained, "terminus_requests_in_flight"), 0.0, "{drained:?}");
    assert_eq!(
        value(&drained, "terminus_requests_drained_total"),
        SLOW as f64,
        "the slow requests, not the scrapes: {drained:?}"
    );
    assert_eq!(value(&drained, "terminus_requests_cut_total"), 0.0);

    let status = server.wait_exit(Duration::from_secs(3) + MARGIN).await;
    assert_eq!(status.and_then(|status| status.code()), Some(0));
}
