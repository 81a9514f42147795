//! End-to-end: HTTP/2 in the drain window, with hyper's HTTP/2 client against the
//! quickstart server (`test-server`) and a real SIGTERM.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http2;
use terminus_tests::{test_server, Reply, TestServer, H2};

const MARGIN: Duration = Duration::from_secs(3);

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://127.0.0.1{path}"))
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

async fn send(
    mut sender: http2::SendRequest<Full<Bytes>>,
    path: &'static str,
) -> Result<Reply, hyper::Error> {
    sender.ready().await?;
    Reply::read(sender.send_request(get(path)).await?).await
}

#[tokio::test]
async fn concurrent_streams_at_sigterm_all_complete_then_goaway_moves_the_client_to_a_new_connection() {
    let mut server = TestServer::start(
        test_server!(),
        &[("TERMINUS_DRAIN_DELAY", "3s"), ("TERMINUS_DRAIN_TIMEOUT", "20s")],
    );
    let mut h2 = H2::connect(server.addr()).await.unwrap();
    assert_eq!(h2.get("/").await.unwrap().status, StatusCode::OK);

    let streams: Vec<_> = (0..5)
        .map(|_| tokio::spawn(send(h2.sender(), "/slow?ms=1500")))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.signal("TERM");

    for stream in streams {
        let reply = stream.await.unwrap().expect("an in-flight stream completes");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "slow");
        assert_eq!(reply.connection(), None, "no Connection header on HTTP/2");
    }
    // GOAWAY: once its streams are done, the connection ends, well within the drain delay.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !h2.is_closed() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        h2.is_closed(),
        "the server sent GOAWAY and closed after the last stream"
    );
    assert!(
        h2.sender().is_closed(),
        "no new stream can be opened on the old connection"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "before the listener closed"
    );

    // The next request goes over a new connection, which the listener still accepts.
    let mut fresh = H2::connect(server.addr())
        .await
        .expect("still accepting while draining");
    assert_eq!(fresh.get("/").await.unwrap().status, StatusCode::OK);

    let status = server
        .wait_exit(Duration::from_secs(3) + MARGIN)
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn streams_opened_while_goaway_is_in_flight_are_served_not_refused() {
    let mut server = TestServer::start(
        test_server!(),
        &[("TERMINUS_DRAIN_DELAY", "2s"), ("TERMINUS_DRAIN_TIMEOUT", "20s")],
    );
    let h2 = H2::connect(server.addr()).await.unwrap();
    // Keep the connection busy so it outlives the GOAWAY round trip.
    let busy = tokio::spawn(send(h2.sender(), "/slow?ms=1000"));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Open a stream every 2 ms across the signal, until the client sees the GOAWAY
    // (bounded: 2000 streams or 5 s). Every stream that reached the server must be
    // answered; none may be refused.
    let started = Instant::now();
    let mut streams = Vec::new();
    let mut signalled = false;
    for _ in 0..2000 {
        if !signalled && started.elapsed() > Duration::from_millis(100) {
            server.signal("TERM");
            signalled = true;
        }
        let mut sender = h2.sender();
        if sender.ready().await.is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        streams.push(tokio::spawn(sender.try_send_request(get("/"))));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(signalled);
    assert!(h2.sender().ready().await.is_err(), "the client saw the GOAWAY");
    let opened = streams.len();
    assert!(opened > 10, "streams were opened around the signal: {opened}");
    let mut served = 0;
    for stream in streams {
        match stream.await.unwrap() {
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::OK);
                served += 1;
            }
            Err(mut error) => {
                // The client saw the GOAWAY before this request left it: hyper hands it
                // back unsent, for the caller to retry on a new connection.
                let unsent = error.take_message().is_some();
                assert!(unsent, "a stream the server received was refused: {error:?}");
            }
        }
    }
    assert!(served > 10, "most streams were served: {served} of {opened}");
    assert_eq!(busy.await.unwrap().unwrap().status, StatusCode::OK);

    let status = server
        .wait_exit(Duration::from_secs(2) + MARGIN)
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0));
}
