//! End-to-end: the `websocket-chat` example as a child process, real WebSocket clients
//! (tokio-tungstenite), real SIGTERM.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use terminus_tests::TestServer;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Slack on top of a deadline: generous, for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);

fn start(envs: &[(&str, &str)]) -> TestServer {
    TestServer::start(env!("CARGO_BIN_EXE_websocket-chat-server"), envs)
}

async fn connect(server: &TestServer) -> Client {
    let (client, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr()))
        .await
        .expect("websocket handshake");
    client
}

async fn next(client: &mut Client) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("a message within 5 s")
        .map(|message| message.expect("a valid message"))
}

#[tokio::test]
async fn sigterm_sends_reconnect_and_going_away_and_exits_without_waiting_for_drain_timeout() {
    let mut server = start(&[
        ("TERMINUS_DRAIN_DELAY", "500ms"),
        ("TERMINUS_DRAIN_TIMEOUT", "30s"),
    ]);
    let mut alice = connect(&server).await;
    let mut bob = connect(&server).await;
    // The room works: what one says, both hear (retried until both sessions joined).
    let mut heard = None;
    for _ in 0..50 {
        alice.send(Message::text("hello")).await.unwrap();
        if let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(100), bob.next()).await {
            heard = Some(message);
            break;
        }
    }
    assert_eq!(heard, Some(Message::text("hello")));

    let signalled = Instant::now();
    server.signal("TERM");
    for client in [&mut alice, &mut bob] {
        // Skip chat messages still on their way, then the goodbye.
        let mut message = next(client).await;
        while message == Some(Message::text("hello")) {
            message = next(client).await;
        }
        assert_eq!(message, Some(Message::text(websocket_chat::RECONNECT_MESSAGE)));
        match next(client).await {
            Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a 1001 Close, got {other:?}"),
        }
        // Polling again sends our Close reply; the server then ends the stream.
        assert!(
            next(client).await.is_none(),
            "the server closes after the handshake"
        );
    }

    let status = server
        .wait_exit(Duration::from_millis(500) + MARGIN)
        .await
        .expect("exits once the clients answered, not at drain_timeout (30 s)");
    assert_eq!(status.code(), Some(0), "a graceful stop");
    assert!(signalled.elapsed() < Duration::from_secs(10));
    assert!(
        !server
            .stderr()
            .iter()
            .any(|line| line.contains("cut at the drain deadline")),
        "nothing was cut:\n{}",
        server.stderr().join("\n")
    );
}

#[tokio::test]
async fn a_session_whose_peer_never_answers_is_cut_at_drain_timeout_and_reported_with_its_peer() {
    let mut server = start(&[
        ("TERMINUS_DRAIN_DELAY", "0s"),
        // Shorter than the helper's 2 s wait for the peer's Close.
        ("TERMINUS_DRAIN_TIMEOUT", "500ms"),
    ]);
    // A client that never reads, so it never answers the server's Close.
    let silent = connect(&server).await;
    let peer = match silent.get_ref() {
        MaybeTlsStream::Plain(stream) => stream.local_addr().unwrap(),
        _ => unreachable!("plain ws://"),
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_millis(500) + MARGIN)
        .await
        .expect("exits at drain_timeout");
    assert_eq!(status.code(), Some(1), "a forced stop");
    let report = server
        .wait_for_log(
            &["websocket session cut at the drain deadline"],
            Duration::from_secs(1),
        )
        .await
        .unwrap_or_else(|| panic!("no cut report:\n{}", server.stderr().join("\n")));
    assert!(report.contains(&peer.to_string()), "names the peer: {report}");
    assert!(report.contains("path=/ws"), "names the path: {report}");
    assert!(report.contains("age_ms="), "gives the age: {report}");
    drop(silent);
}
