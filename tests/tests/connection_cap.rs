//! The connection cap (`Server::max_connections`): at the cap the server stops
//! accepting, the kernel queues newcomers, and the admin listener, not counted, keeps
//! answering the probes.

use std::time::Duration;

use axum_terminus::{Layer, Server, Terminus, TerminusLayer};
use http::StatusCode;
use terminus_tests::{get, on_both_runtimes, H1};
use tokio::net::TcpListener;

async fn cap_holds_newcomers_in_the_kernel_queue_while_the_admin_port_answers() {
    let terminus = Terminus::builder().build().unwrap();
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let app = TerminusLayer::new(&terminus).layer(quickstart::router().with_state(()));
    let server = tokio::spawn({
        let terminus = terminus.clone();
        async move {
            Server::new(&terminus)
                .max_connections(2)
                .listener(public, app)
                .admin_listener(admin)
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
        get(admin_addr, "/readyz").await.unwrap().status,
        StatusCode::OK,
        "the admin listener is not counted"
    );

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

on_both_runtimes!(cap_holds_newcomers_in_the_kernel_queue_while_the_admin_port_answers);
