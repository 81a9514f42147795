//! End-to-end: the `sse` example as a child process, a real HTTP client reading the
//! event stream, real SIGTERM.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use terminus_tests::TestServer;
use tokio::net::TcpStream;

const MARGIN: Duration = Duration::from_secs(3);

#[tokio::test]
async fn sigterm_ends_the_event_stream_with_a_reconnect_event_and_a_clean_end() {
    let mut server = TestServer::start(
        env!("CARGO_BIN_EXE_sse-server"),
        &[("TERMINUS_DRAIN_DELAY", "1s"), ("TERMINUS_DRAIN_TIMEOUT", "30s")],
    );
    let stream = TcpStream::connect(server.addr()).await.unwrap();
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::get("/events?ms=50")
        .header("host", "127.0.0.1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();

    let mut received = String::new();
    let mut ended = false;
    let mut signalled = false;
    // Bounded: at most 1000 frames or 15 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for _ in 0..1000 {
        if !signalled && received.contains("tick 3") {
            server.signal("TERM");
            signalled = true;
        }
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("the stream ends before the deadline");
        match frame {
            Some(frame) => {
                let frame = frame.expect("no error: the stream is not cut");
                if let Ok(data) = frame.into_data() {
                    received.push_str(&String::from_utf8_lossy(&data));
                }
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    assert!(signalled, "ticks arrived:\n{received}");
    assert!(ended, "the body ended cleanly");
    let last = received.trim_end().rsplit("\n\n").next().unwrap_or_default();
    assert!(last.contains("event: reconnect"), "last event: {last:?}");
    assert!(last.contains("retry: 3000"), "last event: {last:?}");

    let status = server
        .wait_exit(Duration::from_secs(1) + MARGIN)
        .await
        .expect("exits after the drain delay, not at drain_timeout (30 s)");
    assert_eq!(status.code(), Some(0));
}
