//! A socket upgraded with axum's own `WebSocketUpgrade` (not the crate's drain helper)
//! stays tracked: Closing waits for it, and the drain deadline cuts it.
#![cfg(feature = "ws")]

use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use axum_terminus::{Forced, Terminus, TerminusLayer};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite;

/// Runs a test on a current-thread runtime and on a multi-threaded one.
macro_rules! on_both_runtimes {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn current_thread() {
                    super::$test().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn multi_thread() {
                    super::$test().await
                }
            }
        )*
    };
}

on_both_runtimes!(
    closing_waits_for_an_upgraded_socket_until_its_client_leaves,
    upgraded_socket_is_cut_at_the_drain_deadline,
);

async fn echo(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if socket.send(message).await.is_err() {
                break;
            }
        }
    })
}

async fn start(
    terminus: &Terminus,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<axum_terminus::Outcome>,
) {
    let app = Router::new()
        .route("/ws", get(echo))
        .layer(TerminusLayer::new(terminus));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let terminus = terminus.clone();
    let server = tokio::spawn(async move { axum_terminus::serve(listener, app, &terminus).await });
    (addr, server)
}

async fn closing_waits_for_an_upgraded_socket_until_its_client_leaves() {
    let terminus = Terminus::builder()
        .drain_delay(Duration::ZERO)
        .drain_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let (addr, server) = start(&terminus).await;
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    client.send(tungstenite::Message::text("ping")).await.unwrap();
    assert_eq!(client.next().await.unwrap().unwrap().into_text().unwrap(), "ping");

    terminus.shutdown("test");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!server.is_finished(), "the upgraded socket holds Closing open");
    client.close(None).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_graceful(), "{outcome:?}");
    assert_eq!(outcome.connections_cut, 0);
    assert!(outcome.durations.closing >= Duration::from_millis(400));
}

async fn upgraded_socket_is_cut_at_the_drain_deadline() {
    let terminus = Terminus::builder()
        .drain_delay(Duration::ZERO)
        .drain_timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    let (addr, server) = start(&terminus).await;
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    client.send(tungstenite::Message::text("ping")).await.unwrap();
    assert!(client.next().await.is_some());

    terminus.shutdown("test");
    let outcome = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.forced, Some(Forced::DrainTimeout));
    assert_eq!(
        outcome.connections_cut, 1,
        "the upgraded socket was still counted"
    );
    // The cut reached the socket that the upgrade handed to the handler's task.
    let end = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("client sees the end");
    assert!(!matches!(end, Some(Ok(tungstenite::Message::Text(_)))), "{end:?}");
}
