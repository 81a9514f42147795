//! End-to-end: the gRPC example (`grpc-server`, HTTP/2 only) with tonic clients (the
//! greeter's and `grpc.health.v1`'s) and real signals.
//!
//! - health: `Check("")` follows readiness and turns `NOT_SERVING` as soon as the
//!   shutdown begins; a named service follows its dependency down and up; `Watch`
//!   streams say `NOT_SERVING` at Draining and end, so the process still exits 0 at
//!   once; a flood of `Check` calls runs the check once per cache period;
//! - RPCs: unary and client-streaming calls in flight at SIGTERM complete; a server
//!   stream ends with `UNAVAILABLE` at Draining; a call still running at the deadline is
//!   cut and reported with its gRPC method;
//! - serving: HTTP/1 is refused on the HTTP/2-only port while the HTTP probes answer
//!   over HTTP/2, and tonic routes and axum routes share one port (in process).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum_terminus::{Layer, Phase, Terminus, TerminusLayer};
use grpc::proto::{HelloRequest, SlowHelloRequest, StreamHellosRequest};
use http::StatusCode;
use terminus_tests::grpc::{channel, check, greeter, health, wait_for_check};
use terminus_tests::logs::{field, field_u64, tail, wait_for_phase};
use terminus_tests::{grpc_server, TestServer, H2};
use tonic::{Code, Streaming};
use tonic_terminus::pb::health_check_response::ServingStatus;
use tonic_terminus::pb::{HealthCheckRequest, HealthCheckResponse};

const STARTUP: Duration = Duration::from_secs(10);

/// Waits for the process to exit and returns its `shutdown complete` event.
async fn exit_event(server: &mut TestServer, timeout: Duration) -> (Option<i32>, String) {
    let status = server
        .wait_exit(timeout)
        .await
        .unwrap_or_else(|| panic!("no exit within {timeout:?}:\n{}", tail(&server.stderr(), 20)));
    let event = server
        .stderr()
        .into_iter()
        .find(|line| line.contains("shutdown complete"))
        .unwrap_or_else(|| panic!("no `shutdown complete` event:\n{}", tail(&server.stderr(), 20)));
    (status.code(), event)
}

/// The next message of a `Watch` stream; `None` when it ends.
async fn next(watch: &mut Streaming<HealthCheckResponse>) -> Option<ServingStatus> {
    let message = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a Watch message within 10 s")
        .expect("the Watch stream is healthy");
    message.map(|message| message.status())
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest {
        name: name.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_is_serving_while_serving_and_not_serving_right_after_sigterm() {
    let mut server = TestServer::start(
        grpc_server!(),
        &[("TERMINUS_DRAIN_DELAY", "3s"), ("TERMINUS_DRAIN_TIMEOUT", "10s")],
    );
    let channel = channel(server.addr());
    assert!(wait_for_check(&channel, "", ServingStatus::Serving, STARTUP).await);
    for service in [grpc::GREETER, "liveness"] {
        assert_eq!(
            check(&channel, service).await.unwrap(),
            ServingStatus::Serving,
            "{service}"
        );
    }
    assert_eq!(
        check(&channel, "no.Such").await.unwrap_err().code(),
        Code::NotFound
    );
    let reply = greeter(&channel).say_hello(hello("you")).await.unwrap();
    assert_eq!(reply.into_inner().message, "hello you");

    // The HTTP probes answer on the same port, over HTTP/2; HTTP/1 is refused.
    let mut h2 = H2::connect(server.addr()).await.unwrap();
    assert_eq!(h2.get("/readyz").await.unwrap().status, StatusCode::OK);
    assert!(
        terminus_tests::get(server.addr(), "/readyz").await.is_err(),
        "HTTP/1 is refused"
    );

    server.signal("TERM");
    wait_for_phase(&server, "draining", Duration::from_secs(5))
        .await
        .expect("the shutdown began");
    // No polling: the first answer after Draining began is NOT_SERVING, for every service.
    for service in ["", grpc::GREETER, "liveness", "startup"] {
        assert_eq!(
            check(&channel, service).await.unwrap(),
            ServingStatus::NotServing,
            "{service:?} from Draining on"
        );
    }
    // The first HTTP/2 connection got GOAWAY; a new one is still accepted while draining.
    assert!(
        h2.is_closed() || h2.get("/readyz").await.is_err(),
        "GOAWAY closed it"
    );
    let mut h2 = H2::connect(server.addr()).await.unwrap();
    assert_eq!(
        h2.get("/readyz").await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        check(&channel, "no.Such").await.unwrap_err().code(),
        Code::NotFound
    );
    // RPCs are still served during the drain delay.
    let reply = greeter(&channel).say_hello(hello("again")).await.unwrap();
    assert_eq!(reply.into_inner().message, "hello again");

    let (code, event) = exit_event(&mut server, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{event}");
    assert_eq!(field(&event, "graceful"), Some("true"), "{event}");
    // Once the listener is closed, tonic reports the refused connection as UNAVAILABLE.
    let refused = greeter(&channel).say_hello(hello("late")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    eprintln!(
        "grpc-refused client_status={:?} message={:?}",
        refused.code(),
        refused.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_service_follows_its_dependency_going_down_and_up() {
    let dependency = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dependency_addr = dependency.local_addr().unwrap();
    let address = dependency_addr.to_string();
    let mut server = TestServer::start(
        grpc_server!(),
        &[
            ("GRPC_DEPENDS_ON", address.as_str()),
            ("TERMINUS_DRAIN_TIMEOUT", "5s"),
        ],
    );
    let channel = channel(server.addr());
    assert!(wait_for_check(&channel, grpc::GREETER, ServingStatus::Serving, STARTUP).await);
    let mut watch = health(&channel)
        .watch(HealthCheckRequest {
            service: grpc::GREETER.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut watch).await, Some(ServingStatus::Serving));

    drop(dependency);
    let down = Instant::now();
    assert_eq!(
        next(&mut watch).await,
        Some(ServingStatus::NotServing),
        "Watch follows it down"
    );
    assert_eq!(
        check(&channel, grpc::GREETER).await.unwrap(),
        ServingStatus::NotServing
    );
    // Readiness has the same check; liveness does not.
    assert_eq!(check(&channel, "").await.unwrap(), ServingStatus::NotServing);
    assert_eq!(check(&channel, "liveness").await.unwrap(), ServingStatus::Serving);
    // One cache period (1 s) plus one watch interval (1 s), with margin for a loaded machine.
    assert!(down.elapsed() < Duration::from_secs(5), "{:?}", down.elapsed());

    let dependency = tokio::net::TcpListener::bind(dependency_addr).await.unwrap();
    assert_eq!(
        next(&mut watch).await,
        Some(ServingStatus::Serving),
        "Watch follows it up"
    );
    assert_eq!(
        check(&channel, grpc::GREETER).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(check(&channel, "").await.unwrap(), ServingStatus::Serving);

    server.signal("TERM");
    assert_eq!(next(&mut watch).await, Some(ServingStatus::NotServing));
    assert_eq!(next(&mut watch).await, None, "the Watch stream ends at Draining");
    let (code, event) = exit_event(&mut server, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{event}");
    drop(dependency);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_get_not_serving_at_draining_and_end_and_the_process_exits_0_at_once() {
    let mut server = TestServer::start(
        grpc_server!(),
        &[("TERMINUS_DRAIN_DELAY", "1s"), ("TERMINUS_DRAIN_TIMEOUT", "20s")],
    );
    let channels = [channel(server.addr()), channel(server.addr())];
    assert!(wait_for_check(&channels[0], "", ServingStatus::Serving, STARTUP).await);
    let services = ["", grpc::GREETER, "liveness", "no.Such"];
    let mut watchers = Vec::new();
    for (i, service) in services.iter().cycle().take(12).enumerate() {
        let mut stream = health(&channels[i % 2])
            .watch(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap().status();
        let expected = if *service == "no.Such" {
            ServingStatus::ServiceUnknown
        } else {
            ServingStatus::Serving
        };
        assert_eq!(first, expected, "{service:?}");
        watchers.push((*service, stream));
    }

    let signalled = Instant::now();
    server.signal("TERM");
    for (service, mut stream) in watchers {
        let mut rest = Vec::new();
        while let Some(message) = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("the stream moves on within 5 s of the signal")
            .unwrap_or_else(|status| panic!("{service:?}: the stream ends cleanly, not with {status:?}"))
        {
            rest.push(message.status());
        }
        // A known service's last word is NOT_SERVING; an unknown one said all it had.
        let expected = if service == "no.Such" {
            vec![]
        } else {
            vec![ServingStatus::NotServing]
        };
        assert_eq!(rest, expected, "{service:?}");
    }
    let ended = signalled.elapsed();
    assert!(
        ended < Duration::from_secs(3),
        "the streams ended at Draining: {ended:?}"
    );

    // Nothing holds the drain: the exit comes right after the 1 s drain delay, with
    // nothing cut, far from the 20 s deadline.
    let (code, event) = exit_event(&mut server, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{event}");
    assert_eq!(field(&event, "graceful"), Some("true"), "{event}");
    assert_eq!(field_u64(&event, "requests_cut"), Some(0), "{event}");
    assert_eq!(field_u64(&event, "connections_cut"), Some(0), "{event}");
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "{:?}",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_client_streaming_rpcs_in_flight_at_sigterm_complete() {
    let mut server = TestServer::start(
        grpc_server!(),
        &[("TERMINUS_DRAIN_DELAY", "0s"), ("TERMINUS_DRAIN_TIMEOUT", "10s")],
    );
    let channel = channel(server.addr());
    assert!(wait_for_check(&channel, "", ServingStatus::Serving, STARTUP).await);

    let unary: Vec<_> = (0..5)
        .map(|i| {
            let mut client = greeter(&channel);
            tokio::spawn(async move {
                let request = SlowHelloRequest {
                    name: format!("slow{i}"),
                    ms: 1500,
                };
                client.say_hello_slowly(request).await
            })
        })
        .collect();
    // A client stream that sends one name before the signal and two after it.
    let (names, receiver) = tokio::sync::mpsc::channel::<HelloRequest>(4);
    names.send(hello("a")).await.unwrap();
    let mut client = greeter(&channel);
    let collect = tokio::spawn(async move { client.collect_hellos(tokio_stream_from(receiver)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");
    wait_for_phase(&server, "closing", Duration::from_secs(5))
        .await
        .expect("the listener closes at once (no drain delay)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    names.send(hello("b")).await.unwrap();
    names.send(hello("c")).await.unwrap();
    drop(names);

    for (i, call) in unary.into_iter().enumerate() {
        let reply = call
            .await
            .unwrap()
            .expect("an RPC in flight at SIGTERM completes");
        assert_eq!(reply.into_inner().message, format!("hello slow{i}"));
    }
    let reply = collect.await.unwrap().expect("the client stream completes");
    assert_eq!(reply.into_inner().message, "hello a, b, c");

    let (code, event) = exit_event(&mut server, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{event}");
    assert_eq!(field_u64(&event, "requests_drained"), Some(6), "{event}");
    assert_eq!(field_u64(&event, "requests_cut"), Some(0), "{event}");
}

/// A request stream fed by an mpsc channel (what `tokio-stream`'s `ReceiverStream` does).
fn tokio_stream_from(
    receiver: tokio::sync::mpsc::Receiver<HelloRequest>,
) -> impl futures_util::Stream<Item = HelloRequest> + Send + 'static {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        let next = receiver.recv().await?;
        Some((next, receiver))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_is_ended_with_unavailable_at_draining() {
    let mut server = TestServer::start(
        grpc_server!(),
        &[("TERMINUS_DRAIN_DELAY", "3s"), ("TERMINUS_DRAIN_TIMEOUT", "20s")],
    );
    let channel = channel(server.addr());
    assert!(wait_for_check(&channel, "", ServingStatus::Serving, STARTUP).await);
    let request = StreamHellosRequest {
        name: "stream".to_owned(),
        interval_ms: 100,
    };
    let mut stream = greeter(&channel)
        .stream_hellos(request)
        .await
        .unwrap()
        .into_inner();
    for n in 0..3 {
        let message = stream.message().await.unwrap().unwrap();
        assert_eq!(message.message, format!("hello stream #{n}"));
    }
    let signalled = Instant::now();
    server.signal("TERM");
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("the stream moves on")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), tonic_terminus::DRAINING_MESSAGE);
    // At Draining, not at the end of the 3 s drain delay.
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );

    let (code, event) = exit_event(&mut server, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{event}");
    assert_eq!(field_u64(&event, "requests_cut"), Some(0), "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_still_running_at_the_deadline_is_cut_and_reported_with_its_grpc_method() {
    let mut server = TestServer::start(
        grpc_server!(),
        &[("TERMINUS_DRAIN_DELAY", "0s"), ("TERMINUS_DRAIN_TIMEOUT", "1s")],
    );
    let channel = channel(server.addr());
    assert!(wait_for_check(&channel, "", ServingStatus::Serving, STARTUP).await);
    let mut client = greeter(&channel);
    let call = tokio::spawn(async move {
        let request = SlowHelloRequest {
            name: "late".to_owned(),
            ms: 60_000,
        };
        client.say_hello_slowly(request).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.signal("TERM");

    let status = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the cut reaches the client")
        .unwrap()
        .expect_err("the call was cut");
    let (code, event) = exit_event(&mut server, Duration::from_secs(10)).await;
    assert_ne!(code, Some(0), "a cut makes the stop forced: {event}");
    assert_eq!(field_u64(&event, "requests_cut"), Some(1), "{event}");
    let cut = server
        .stderr()
        .into_iter()
        .find(|line| line.contains("request cut at the drain deadline"))
        .expect("the cut is reported");
    assert_eq!(
        field(&cut, "path"),
        Some("/greeter.Greeter/SayHelloSlowly"),
        "{cut}"
    );
    assert_eq!(field(&cut, "method"), Some("POST"), "{cut}");
    // What the client sees of a cut: recorded in docs/grpc.md.
    eprintln!(
        "grpc-cut client_status={:?} message={:?}",
        status.code(),
        status.message()
    );
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal
        ),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_health_checks_runs_the_check_once_per_cache_period() {
    let mut server = TestServer::start(grpc_server!(), &[("GRPC_COUNT_CHECK", "1")]);
    let channels: Vec<_> = (0..4).map(|_| channel(server.addr())).collect();
    assert!(wait_for_check(&channels[0], "", ServingStatus::Serving, STARTUP).await);
    let runs = || {
        server
            .stdout()
            .iter()
            .filter(|line| *line == "CHECK readiness")
            .count()
    };

    // Past the cache period of the result the wait above produced: the flood must run
    // the check (once), not find it cached.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    const CALLS: usize = 1000;
    let before = runs();
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let channel = channels[i % channels.len()].clone();
        calls.spawn(async move { check(&channel, "").await });
    }
    let mut serving = 0;
    while let Some(answer) = calls.join_next().await {
        if answer.unwrap().expect("every Check is answered") == ServingStatus::Serving {
            serving += 1;
        }
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await; // the last stdout lines
    let during = runs() - before;
    assert_eq!(serving, CALLS);
    // One run per cache period (1 s) the flood touched, at most.
    let periods = elapsed.as_secs() as usize + 1;
    eprintln!(
        "grpc-flood calls={CALLS} elapsed_ms={} check_runs={during}",
        elapsed.as_millis()
    );
    assert!((1..=periods).contains(&during), "{during} runs in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    drop(channels);
    server.signal("TERM");
    let (code, _) = exit_event(&mut server, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
}

terminus_tests::on_both_runtimes!(tonic_routes_and_axum_routes_share_one_port);

async fn tonic_routes_and_axum_routes_share_one_port() {
    let terminus = Terminus::builder().build().unwrap();
    let health_service = grpc::health(&terminus, false).unwrap();
    // tonic's routes are an axum Router: merge the HTTP routes in (only tonic's has a fallback).
    let http = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello over http" }));
    let router = grpc::routes(&terminus, health_service)
        .into_axum_router()
        .merge(http);
    let app = TerminusLayer::new(&terminus).layer(router.with_state(()));
    let listener = axum_terminus::bind("127.0.0.1:0", &terminus).await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let serving = tokio::spawn({
        let terminus = terminus.clone();
        async move { axum_terminus::serve(listener, app, &terminus).await }
    });

    let reply = terminus_tests::get(addr, "/hello").await.unwrap();
    assert_eq!(reply.body, "hello over http", "HTTP/1.1");
    assert_eq!(
        terminus_tests::get(addr, "/readyz").await.unwrap().status,
        StatusCode::OK
    );
    let mut h2 = H2::connect(addr).await.unwrap();
    assert_eq!(h2.get("/hello").await.unwrap().body, "hello over http", "HTTP/2");
    let channel = channel(addr);
    assert!(wait_for_check(&channel, "", ServingStatus::Serving, STARTUP).await);
    let reply = greeter(&channel).say_hello(hello("grpc")).await.unwrap();
    assert_eq!(reply.into_inner().message, "hello grpc");
    let mut watch = health(&channel)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        next(&mut watch).await,
        Some(ServingStatus::Serving),
        "Watch is routed too"
    );

    terminus.shutdown("test");
    let outcome = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server stops")
        .unwrap();
    assert!(outcome.is_graceful(), "{outcome:?}");
    assert_eq!(terminus.phase(), Phase::Stopped);
    assert_eq!(next(&mut watch).await, Some(ServingStatus::NotServing));
    assert_eq!(next(&mut watch).await, None);
}

/// Waits up to `bound` for the server to close `stream`, reading (and keeping) what
/// it sends meanwhile; `Some(bytes)` if it closed.
async fn closed_within(stream: &mut tokio::net::TcpStream, bound: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let mut buffer = [0u8; 512];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_to_the_http2_only_port_are_closed_at_the_header_read_timeout() {
    use terminus_tests::raw::h2;
    const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
    let mut server = TestServer::start(grpc_server!(), &[("TERMINUS_HEADER_READ_TIMEOUT", "2s")]);
    let channel = channel(server.addr());
    assert!(wait_for_check(&channel, "", ServingStatus::Serving, STARTUP).await);

    let opened = Instant::now();
    // Nothing at all.
    let mut silent = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    // The preface and SETTINGS, then no request.
    let mut preface_only = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), h2::handshake(&mut preface_only))
        .await
        .expect("the server's SETTINGS")
        .unwrap();
    // Past the timeout, a GOAWAY (and a PING this peer never answers) and a close,
    // within the resolution, the GOAWAY grace (1 s) and a margin.
    let bound = HEADER_READ_TIMEOUT + Duration::from_secs(1) + Duration::from_secs(3);
    let (silent_closed, preface_closed) = tokio::join!(
        async { closed_within(&mut silent, bound).await.map(|_| opened.elapsed()) },
        async {
            closed_within(&mut preface_only, bound)
                .await
                .map(|bytes| (bytes, opened.elapsed()))
        },
    );
    println!(
        "grpc header_read_timeout silent_closed_ms={:?} preface_only_closed_ms={:?}",
        silent_closed.map(|took| took.as_millis()),
        preface_closed.as_ref().map(|(_, took)| took.as_millis())
    );
    let silent_closed = silent_closed.expect("a silent connection is closed");
    assert!(silent_closed >= Duration::from_millis(1500), "{silent_closed:?}");
    let (frames, preface_closed) = preface_closed.expect("a preface-only connection is closed");
    assert!(
        preface_closed >= Duration::from_millis(1500),
        "{preface_closed:?}"
    );
    // Frame header: 3 bytes of length, then the type; GOAWAY is 0x7.
    let mut rest = &frames[..];
    let mut goaway = false;
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        goaway |= rest[3] == h2::kind::GOAWAY;
        rest = &rest[(9 + length).min(rest.len())..];
    }
    assert!(
        goaway,
        "an HTTP/2 peer gets a GOAWAY before the close: {frames:?}"
    );

    // The port serves on, and the stop is graceful.
    let reply = greeter(&channel).say_hello(hello("still")).await.unwrap();
    assert_eq!(reply.into_inner().message, "hello still");
    server.signal("TERM");
    let (code, log) = exit_event(&mut server, Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{log}");
}
