//! End-to-end: two listeners under one controller (the `admin-port` example): the
//! admin port serves only the probes and reports the whole process; both ports close
//! at Closing; one exit code.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use terminus_tests::{get, TestServer};
use tokio::net::TcpStream;

const MARGIN: Duration = Duration::from_secs(3);

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

async fn wait_for(addr: SocketAddr, path: &str, status: StatusCode) -> bool {
    for _ in 0..250 {
        if get(addr, path).await.is_ok_and(|reply| reply.status == status) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn admin_port_reports_the_public_listeners_state_and_both_close_at_closing() {
    let mut server = TestServer::start(
        env!("CARGO_BIN_EXE_admin-port-server"),
        &[
            ("ADMIN_PORT", "0"),
            ("TERMINUS_DRAIN_DELAY", "1s"),
            ("TERMINUS_DRAIN_TIMEOUT", "20s"),
        ],
    );
    let (public, admin) = (server.addr(), admin_addr(&server));
    assert_ne!(public, admin);

    // Serving: both listeners bound, readiness passes on the admin port.
    assert_eq!(get(admin, "/readyz").await.unwrap().status, StatusCode::OK);
    assert_eq!(
        get(admin, "/").await.unwrap().status,
        StatusCode::NOT_FOUND,
        "probes only"
    );
    assert_eq!(get(public, "/").await.unwrap().body, "hello");

    // A slow request on the public port keeps the process in Closing for a while.
    let slow = tokio::spawn(get(public, "/slow?ms=3000"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal("TERM");

    // Draining: the admin port reports it, with the reason the public port withholds;
    // the public port still serves.
    assert!(wait_for(admin, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await);
    let detailed = get(admin, "/readyz?verbose").await.unwrap();
    let withheld = get(public, "/readyz?verbose").await.unwrap();
    assert!(
        String::from_utf8_lossy(&detailed.body).contains("shutting down"),
        "{detailed:?}"
    );
    assert!(
        String::from_utf8_lossy(&withheld.body).contains("reason withheld"),
        "{withheld:?}"
    );
    assert_eq!(get(admin, "/livez").await.unwrap().status, StatusCode::OK);
    assert_eq!(get(public, "/").await.unwrap().status, StatusCode::OK);

    // Closing (after the 1 s drain delay): both listeners refuse while the slow request runs.
    let mut both_closed = false;
    for _ in 0..200 {
        let public_refused = TcpStream::connect(public).await.is_err();
        let admin_refused = TcpStream::connect(admin).await.is_err();
        if public_refused && admin_refused {
            both_closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(both_closed, "both listeners closed at Closing");
    assert!(!slow.is_finished(), "while the slow request was still in flight");

    let reply = slow.await.unwrap().expect("the slow request completes");
    assert_eq!(reply.status, StatusCode::OK);
    let status = server
        .wait_exit(Duration::from_secs(3) + MARGIN)
        .await
        .expect("one exit for both");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn the_maintenance_switch_on_the_admin_port_flips_readiness_and_a_sigterm_during_it_still_drains() {
    use terminus_tests::curl::curl;
    let mut server = TestServer::start(
        env!("CARGO_BIN_EXE_admin-port-server"),
        &[
            ("ADMIN_PORT", "0"),
            ("TERMINUS_DRAIN_DELAY", "500ms"),
            ("TERMINUS_DRAIN_TIMEOUT", "10s"),
        ],
    );
    let (public, admin) = (server.addr(), admin_addr(&server));
    let switch = format!("http://{admin}/maintenance");
    assert_eq!(get(public, "/readyz").await.unwrap().status, StatusCode::OK);

    // On: readiness fails on both ports, liveness passes, the application still serves.
    let on = curl(&["-X", "POST", &switch]).await;
    assert_eq!(on.status, Some(200), "{on:?}");
    for addr in [public, admin] {
        assert_eq!(
            get(addr, "/readyz").await.unwrap().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(get(addr, "/livez").await.unwrap().status, StatusCode::OK);
    }
    let detailed = get(admin, "/readyz?verbose").await.unwrap();
    assert!(
        String::from_utf8_lossy(&detailed.body).contains("maintenance"),
        "{detailed:?}"
    );
    assert_eq!(get(public, "/").await.unwrap().body, "hello");
    // The switch is not on the public port.
    let public_switch = curl(&["-X", "POST", &format!("http://{public}/maintenance")]).await;
    assert_ne!(public_switch.status, Some(200), "{public_switch:?}");

    // Off: back in rotation.
    let off = curl(&["-X", "DELETE", &switch]).await;
    assert_eq!(off.status, Some(200), "{off:?}");
    assert_eq!(get(public, "/readyz").await.unwrap().status, StatusCode::OK);

    // A SIGTERM during maintenance drains as usual: the request in flight completes.
    assert_eq!(curl(&["-X", "POST", &switch]).await.status, Some(200));
    let slow = tokio::spawn(get(public, "/slow?ms=1500"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal("TERM");
    let reply = slow.await.unwrap().expect("the request in flight completes");
    assert_eq!(reply.status, StatusCode::OK);
    let status = server
        .wait_exit(Duration::from_secs(5) + MARGIN)
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0));
    let stderr = server.stderr().join("\n");
    assert!(stderr.contains("requests_drained=1"), "{stderr}");
}
