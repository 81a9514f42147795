//! The connection cap (`Server::max_connections`): at the cap the server stops
//! accepting, the kernel queues newcomers, and the admin listeners, not counted, keep
//! answering (the probes, and an operator's own routes beside them).

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get as route_get;
use axum_terminus::{admin_layer, admin_router, Layer, Server, Terminus, TerminusLayer};
use http::StatusCode;
use terminus_tests::{get, on_both_runtimes, Reply, H1};
use tokio::net::TcpListener;

async fn cap_holds_newcomers_in_the_kernel_queue_while_the_admin_port_answers() {
    let terminus = Terminus::builder().max_connections(2).build().unwrap();
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let operator_addr = operator.local_addr().unwrap();
    let app = TerminusLayer::new(&terminus).layer(quickstart::router().with_state(()));
    let operator_routes =
        admin_router(admin_layer(&terminus)).route("/version", route_get(|| async { "1.4.2" }));
    let server = tokio::spawn({
        let terminus = terminus.clone();
        async move {
            Server::new(&terminus)
                .listener(public, app)
                .admin_listener(admin)
                .admin_listener_with(operator, operator_routes)
                .run()
                .await
        }
    });

    let mut first = H1::connect(public_addr).await.unwrap();
    let mut second = H1::connect(public_addr).await.unwrap();
    assert_eq!(first.get("/").await.unwrap().status, StatusCode::OK);
    assert_eq!(second.get("/").await.unwrap().status, StatusCode::OK);

    // A third connection completes in the kernel's queue, but nobody serves it yet.
    let third = tokio::spawn(async move { get(public_addr, "/").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "the third connection waits at the cap");
    assert_eq!(
        get_within(admin_addr, "/readyz").await.status,
        StatusCode::OK,
        "the admin listener is not counted"
    );
    let version = get_within(operator_addr, "/version").await;
    assert_eq!(
        (version.status, &version.body[..]),
        (StatusCode::OK, &b"1.4.2"[..]),
        "nor is an admin listener with routes of its own"
    );
    assert_eq!(get_within(operator_addr, "/livez").await.status, StatusCode::OK);

    drop(first);
    let reply = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a place is free")
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    drop(second);
    terminus.shutdown("test");
    let outcome = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_graceful());
}

/// `GET path`, answered within 5 s: a listener wrongly counted against the cap would
/// leave the request waiting in the kernel's queue.
async fn get_within(addr: SocketAddr, path: &str) -> Reply {
    tokio::time::timeout(Duration::from_secs(5), get(addr, path))
        .await
        .unwrap_or_else(|_| panic!("{path} answered at the cap"))
        .unwrap()
}

on_both_runtimes!(cap_holds_newcomers_in_the_kernel_queue_while_the_admin_port_answers);
