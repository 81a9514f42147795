//! Servers started inside the test process (real sockets on loopback, real HTTP clients):
//! `shutdown_signal()` with `axum::serve`, bind failures, and independence of two
//! controllers in one process.

use std::time::{Duration, Instant};
use terminus_core::server::ServerExt as _;

use axum::Router;
use axum_terminus::{Layer, Phase, Terminus, TerminusLayer};
use http::StatusCode;
use terminus_tests::{get as http_get, on_both_runtimes, H1};
use tokio::net::TcpListener;

on_both_runtimes!(
    shutdown_signal_lets_axum_serve_drain_after_the_delay,
    bind_failure_names_the_address_and_fails_liveness,
    bind_queues_a_burst_larger_than_the_standard_backlog,
    fatal_error_fails_liveness_and_readiness_without_stopping_when_so_configured,
    two_servers_in_one_process_do_not_share_state,
    connect_info_reaches_handlers_only_when_the_server_asks_for_it,
    a_listener_of_the_users_own_drains_and_cuts_like_tcp,
    a_request_under_axum_serve_is_waited_for_while_our_server_shares_the_terminus,
    a_keep_alive_connection_that_only_carries_probes_outlives_the_header_read_timeout,
    a_request_waiting_for_a_service_that_is_not_ready_is_served_through_closing,
    a_dropped_server_closes_its_connections_and_leaves_the_terminus_usable,
    a_response_begun_before_draining_and_ending_in_closing_leaves_its_connection_the_next_request,
);

fn app(terminus: &Terminus) -> Router {
    quickstart::router().layer(TerminusLayer::new(terminus))
}

async fn shutdown_signal_lets_axum_serve_drain_after_the_delay() {
    let terminus = Terminus::builder()
        .drain_delay(Duration::from_millis(600))
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    terminus.mark_listeners_bound();
    let signal = axum_terminus::shutdown_signal(&terminus);
    let router = app(&terminus);
    let server =
        tokio::spawn(async move { axum::serve(listener, router).with_graceful_shutdown(signal).await });
    let mut keep_alive = H1::connect(addr).await.unwrap();
    assert_eq!(keep_alive.get("/readyz").await.unwrap().status, StatusCode::OK);
    let slow = tokio::spawn(async move { http_get(addr, "/slow?ms=1200").await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    terminus.shutdown("test");
    let reply = keep_alive.get("/").await.expect("served during the drain delay");
    assert_eq!(reply.connection(), Some("close"));
    assert_eq!(
        http_get(addr, "/readyz").await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let reply = slow.await.unwrap().expect("in-flight request completes");
    assert_eq!(reply.status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("axum::serve returns once connections are done")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "not before the drain delay"
    );
    let outcome = tokio::time::timeout(Duration::from_secs(10), terminus.outcome())
        .await
        .expect("the lifecycle finishes");
    assert!(outcome.is_graceful());
    assert_eq!(terminus.phase(), Phase::Stopped);
}

/// `bind` listens with a backlog of `LISTEN_BACKLOG`, not std's 128: a burst of 400
/// connects while nothing accepts completes at once. With 128 the kernel drops the SYNs
/// beyond the full queue, and those connects wait for a retransmission a second later.
async fn bind_queues_a_burst_larger_than_the_standard_backlog() {
    const BURST: usize = 400;
    assert!(BURST < axum_terminus::LISTEN_BACKLOG as usize && BURST > 128);
    // The kernel caps every backlog at net.core.somaxconn: below the burst, this test
    // would measure the machine, not `bind`.
    if let Ok(somaxconn) = std::fs::read_to_string("/proc/sys/net/core/somaxconn") {
        let somaxconn: usize = somaxconn.trim().parse().unwrap();
        assert!(
            somaxconn >= BURST,
            "net.core.somaxconn is {somaxconn}: this machine caps every listen queue below {BURST}"
        );
    }
    let terminus = Terminus::builder().build().unwrap();
    let listener = axum_terminus::bind("127.0.0.1:0", &terminus).await.unwrap();
    let addr = listener.local_addr().unwrap();

    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        // The bound starts when the task first runs, not when it is spawned; it stays
        // below the kernel's first SYN retransmission (1 s).
        connects.spawn(async move {
            tokio::time::timeout(Duration::from_millis(900), tokio::net::TcpStream::connect(addr)).await
        });
    }
    let mut clients = Vec::with_capacity(BURST);
    while let Some(joined) = connects.join_next().await {
        let connected = joined
            .unwrap()
            .expect("connected without waiting for a SYN retransmission");
        clients.push(connected.unwrap());
    }
    for accepted in 0..BURST {
        tokio::time::timeout(Duration::from_secs(1), listener.accept())
            .await
            .unwrap_or_else(|_| panic!("only {accepted} of {BURST} connections were queued"))
            .unwrap();
    }
}

async fn bind_failure_names_the_address_and_fails_liveness() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = taken.local_addr().unwrap().to_string();
    // A drain delay, to probe the server while it drains.
    let terminus = Terminus::builder()
        .drain_delay(Duration::from_millis(800))
        .build()
        .unwrap();

    let error = axum_terminus::bind(address.as_str(), &terminus)
        .await
        .unwrap_err();
    assert_eq!(error.address(), address);
    assert_eq!(error.io_error().kind(), std::io::ErrorKind::AddrInUse);
    assert!(error.to_string().contains(&address), "{error}");
    assert!(!terminus.is_live());
    assert!(terminus.fatal().is_some_and(|fatal| fatal.contains(&address)));

    // Served on another port, the probes report it while the shutdown the fatal error
    // started drains: liveness fails, readiness too.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn({
        let terminus = terminus.clone();
        async move { axum_terminus::serve(listener, app(&terminus), &terminus).await }
    });
    assert_eq!(
        http_get(addr, "/livez").await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        http_get(addr, "/readyz").await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let outcome = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("a fatal error ends the server")
        .unwrap();
    assert_eq!(outcome.exit_status(), 1);
    assert!(http_get(addr, "/livez").await.is_err(), "listener closed");
}

async fn fatal_error_fails_liveness_and_readiness_without_stopping_when_so_configured() {
    let terminus = Terminus::builder().shutdown_on_fatal(false).build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn({
        let terminus = terminus.clone();
        async move { axum_terminus::serve(listener, app(&terminus), &terminus).await }
    });
    let mut client = H1::connect(addr).await.unwrap();
    assert_eq!(client.get("/livez").await.unwrap().status, StatusCode::OK);
    terminus.set_fatal("lost the lease");
    assert_eq!(
        client.get("/livez").await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A broken process should get no traffic either, but it keeps running: no shutdown started.
    assert_eq!(
        client.get("/readyz").await.unwrap().status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(terminus.phase(), Phase::Serving);
    assert_eq!(client.get("/").await.unwrap().body, "hello");
    terminus.shutdown("test over");
    let outcome = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.exit_status(), 1, "a fatal error is never a clean exit");
}

async fn two_servers_in_one_process_do_not_share_state() {
    let first = Terminus::builder().build().unwrap();
    let second = Terminus::builder().build().unwrap();
    let mut servers = Vec::new();
    let mut addrs = Vec::new();
    for terminus in [&first, &second] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let terminus = terminus.clone();
        servers.push(tokio::spawn(async move {
            axum_terminus::serve(listener, app(&terminus), &terminus).await
        }));
    }
    for addr in &addrs {
        assert_eq!(http_get(*addr, "/readyz").await.unwrap().status, StatusCode::OK);
    }
    first.shutdown("only the first");
    let first_outcome = tokio::time::timeout(Duration::from_secs(10), servers.remove(0))
        .await
        .unwrap()
        .unwrap();
    assert!(first_outcome.is_graceful());
    assert_eq!(second.phase(), Phase::Serving);
    assert_eq!(
        http_get(addrs[1], "/readyz").await.unwrap().status,
        StatusCode::OK
    );
    second.shutdown("done");
    tokio::time::timeout(Duration::from_secs(10), servers.remove(0))
        .await
        .unwrap()
        .unwrap();
}

async fn connect_info_reaches_handlers_only_when_the_server_asks_for_it() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;

    for enabled in [false, true] {
        let terminus = Terminus::builder().build().unwrap();
        let router = axum::Router::new().route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn({
            let terminus = terminus.clone();
            async move {
                axum_terminus::Server::new(&terminus)
                    .connect_info(enabled)
                    .listener(listener, router.layer(TerminusLayer::new(&terminus)))
                    .run()
                    .await
            }
        });
        let reply = http_get(addr, "/peer").await.unwrap();
        if enabled {
            assert_eq!(reply.status, StatusCode::OK);
            assert!(reply.body.starts_with(b"127.0.0.1:"), "{:?}", reply.body);
        } else {
            // axum's extractor rejects a request without it, as under plain axum::serve.
            assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        terminus.shutdown("test");
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A listener type of the user's own (here a wrapper that names its peers, as a proxy
/// protocol listener would) is served like TCP: a request in flight at the shutdown
/// completes with `Connection: close`, an endless stream is cut at the deadline and
/// counted, and new connections are refused once the listener is closed.
async fn a_listener_of_the_users_own_drains_and_cuts_like_tcp() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The peer as the user's listener names it; it has no IP address to show.
    #[derive(Clone, Debug)]
    #[expect(dead_code, reason = "read through `Debug`: the server names such peers by it")]
    struct Named(&'static str);

    struct NamingListener(TcpListener);

    impl axum::serve::Listener for NamingListener {
        type Io = tokio::net::TcpStream;
        type Addr = Named;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                if let Ok((stream, _)) = self.0.accept().await {
                    return (stream, Named("edge-proxy"));
                }
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            Ok(Named("edge-proxy-listener"))
        }
    }

    // The defaults: nothing this listener can do better than axum's `Listener` API.
    impl axum_terminus::TerminusListener for NamingListener {}

    let terminus = Terminus::builder()
        .drain_delay(Duration::from_millis(300))
        .drain_timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let server = {
        let terminus = terminus.clone();
        tokio::spawn(
            async move { axum_terminus::serve(NamingListener(tcp), app(&terminus), &terminus).await },
        )
    };
    let mut probe = H1::connect(addr).await.unwrap();
    assert_eq!(probe.get("/readyz").await.unwrap().status, StatusCode::OK);
    let slow = tokio::spawn(async move { http_get(addr, "/slow?ms=800").await });
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /stream?ms=100 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 64];
    let read = stream.read(&mut first).await.unwrap();
    assert!(first[..read].starts_with(b"HTTP/1.1 200"), "the stream started");
    tokio::time::sleep(Duration::from_millis(100)).await;

    terminus.shutdown("test");
    let reply = slow.await.unwrap().expect("the request in flight completes");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.connection(), Some("close"));
    let outcome = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the drain is bounded by its deadline")
        .unwrap();
    // The stream's connection was cut: it reads to its end within the bound.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the cut stream's connection was closed");
    assert_eq!(outcome.requests_cut, 1, "{outcome:?}");
    assert!(!outcome.is_graceful(), "a cut makes the stop forced: {outcome:?}");
    assert!(outcome.requests_drained >= 1, "{outcome:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the user's listener was closed"
    );
}

/// One `Terminus`, two servers: `axum_terminus::Server` (here the admin port) and
/// `axum::serve` with the layer (the public port). Each request is counted by exactly one
/// of them, whichever calls the application: the server's presence must not make the
/// layer stop counting the requests that `axum::serve` runs. (It did, through a flag on
/// the `Terminus`: Closing then saw no request in flight, ran the hooks and published a
/// graceful outcome while the request was still being served.)
async fn a_request_under_axum_serve_is_waited_for_while_our_server_shares_the_terminus() {
    let terminus = Terminus::builder()
        .drain_delay(Duration::from_millis(100))
        .drain_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let ours = tokio::spawn(axum_terminus::Server::new(&terminus).admin_listener(admin).run());
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = public.local_addr().unwrap();
    let signal = axum_terminus::shutdown_signal(&terminus);
    let router = app(&terminus);
    let theirs =
        tokio::spawn(async move { axum::serve(public, router).with_graceful_shutdown(signal).await });
    // Both serve before the request starts.
    assert_eq!(
        http_get(admin_addr, "/livez").await.unwrap().status,
        StatusCode::OK
    );
    let slow = tokio::spawn(async move { http_get(addr, "/slow?ms=1500").await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while terminus.in_flight() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        terminus.in_flight(),
        1,
        "the layer counts the request axum::serve runs"
    );

    terminus.shutdown("test");
    let outcome = tokio::time::timeout(Duration::from_secs(15), ours)
        .await
        .expect("our server stops")
        .unwrap();
    // Closing waited for the request (1.5 s, begun before the 100 ms drain delay).
    assert!(
        outcome.durations.closing >= Duration::from_secs(1),
        "Closing waited for the request in flight: {outcome:?}"
    );
    let reply = slow.await.unwrap().expect("the request in flight completes");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(outcome.requests_drained, 1, "{outcome:?}");
    assert!(outcome.is_graceful(), "{outcome:?}");
    tokio::time::timeout(Duration::from_secs(5), theirs)
        .await
        .expect("axum::serve returns")
        .unwrap()
        .unwrap();
}

/// A balancer's health checks over one keep-alive connection: each probe's head ends the
/// header-read timeout, as any request's does. (A connection that only ever carried
/// probes was closed by that timeout, counted from its accept.)
async fn a_keep_alive_connection_that_only_carries_probes_outlives_the_header_read_timeout() {
    let terminus = Terminus::builder()
        .header_read_timeout(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The layer around the router, as the README writes it: it answers a probe in the
    // server's call of the service.
    let service = TerminusLayer::new(&terminus).layer(quickstart::router());
    let server = {
        let terminus = terminus.clone();
        tokio::spawn(async move { axum_terminus::serve(listener, service, &terminus).await })
    };
    let mut checks = H1::connect(addr).await.unwrap();
    // Three times the timeout, a probe every 200 ms, on the one connection.
    for round in 0..8 {
        let reply = checks.get("/readyz").await;
        let reply = reply.unwrap_or_else(|error| panic!("probe {round} on the kept connection: {error}"));
        assert_eq!(reply.status, StatusCode::OK, "probe {round}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!checks.is_closed(), "the connection is still open");
    terminus.shutdown("test");
    let outcome = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_graceful(), "{outcome:?}");
    assert_eq!(
        outcome.requests_drained, 0,
        "probes are not requests: {outcome:?}"
    );
}

/// A service that is not ready (a concurrency limit, saturated) keeps a request waiting:
/// the request already makes its connection busy, so Closing neither closes the
/// connection under it nor stops before it is answered.
async fn a_request_waiting_for_a_service_that_is_not_ready_is_served_through_closing() {
    use tower::ServiceBuilder;

    let terminus = Terminus::builder()
        .drain_delay(Duration::from_millis(100))
        .idle_close_timeout(Duration::from_millis(100))
        .drain_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // One request at a time; the layer outside the limit, so probes are not queued.
    let limited = ServiceBuilder::new()
        .layer(TerminusLayer::new(&terminus))
        .concurrency_limit(1)
        .service(quickstart::router());
    let server = {
        let terminus = terminus.clone();
        tokio::spawn(async move { axum_terminus::serve(listener, limited, &terminus).await })
    };
    let first = tokio::spawn(async move { http_get(addr, "/slow?ms=800").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Waits for the first to finish.
    let second = tokio::spawn(async move { http_get(addr, "/slow?ms=100").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    terminus.shutdown("test");
    for (name, reply) in [("first", first.await.unwrap()), ("second", second.await.unwrap())] {
        let reply = reply.unwrap_or_else(|error| panic!("the {name} request is answered: {error}"));
        assert_eq!(reply.status, StatusCode::OK, "{name}");
    }
    let outcome = tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_graceful(), "{outcome:?}");
    assert_eq!(
        outcome.requests_drained, 2,
        "both counted, once each: {outcome:?}"
    );
}

/// `serve`'s future dropped while serving (a `select!` whose other branch won): nothing
/// of the server runs on. Before, its connections lived on, detached: an idle keep-alive
/// connection was served for as long as its client kept it, with no timeout and no
/// drain to close it.
async fn a_dropped_server_closes_its_connections_and_leaves_the_terminus_usable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let terminus = Terminus::builder().drain_delay(Duration::ZERO).build().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let terminus = terminus.clone();
        tokio::spawn(async move { axum_terminus::serve(listener, app(&terminus), &terminus).await })
    };
    let mut idle = H1::connect(addr).await.unwrap();
    assert_eq!(idle.get("/").await.unwrap().status, StatusCode::OK);
    let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow?ms=5000 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.abort();
    assert!(server.await.unwrap_err().is_cancelled());

    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        let mut rest = Vec::new();
        let _ = busy.read_to_end(&mut rest).await;
        rest
    })
    .await
    .expect("the connection with a request in flight is closed, not served on for 5 s");
    assert!(
        !String::from_utf8_lossy(&ended).starts_with("HTTP/1.1 200"),
        "the slow request was cut, not answered"
    );
    let again = tokio::time::timeout(Duration::from_secs(2), idle.get("/")).await;
    assert!(
        matches!(again, Ok(Err(_))),
        "the idle keep-alive connection is closed, not served on: {again:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );

    // The `Terminus` is still usable: a shutdown runs to its end.
    terminus.shutdown("test over");
    let outcome = tokio::time::timeout(Duration::from_secs(5), terminus.run(terminus_core::NoConnections))
        .await
        .expect("the shutdown finishes");
    assert_eq!(terminus.phase(), Phase::Stopped);
    assert_eq!(
        outcome.requests_cut, 0,
        "the dropped server's request was never in a shutdown"
    );
}

/// An HTTP/1.1 response whose head went out while Serving (so without `Connection:
/// close`) and whose body ends after Closing began. Its client was promised keep-alive,
/// and a sequential client sends its next request the moment the body ends: closing
/// the connection right after the body (what finishing it at Closing did) loses that
/// request, on every such connection. It must be answered, with `Connection: close`;
/// and a client that sends nothing more is closed on within the idle close timeout.
async fn a_response_begun_before_draining_and_ending_in_closing_leaves_its_connection_the_next_request() {
    use axum::body::{Body, Bytes};
    use axum::routing::get;

    /// Ten chunks, 100 ms apart: a body that lasts a second after its head.
    async fn finite() -> Body {
        let chunks = futures_util::stream::unfold(0u32, |sent| async move {
            if sent == 10 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::convert::Infallible>(Bytes::from("tick\n")), sent + 1))
        });
        Body::from_stream(chunks)
    }

    let terminus = Terminus::builder()
        .drain_delay(Duration::from_millis(300))
        .drain_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let router = Router::new()
        .route("/finite", get(finite))
        .merge(quickstart::router());
    let app = TerminusLayer::new(&terminus).layer(router);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let terminus = terminus.clone();
        tokio::spawn(async move { axum_terminus::serve(listener, app, &terminus).await })
    };

    let mut client = H1::connect(addr).await.unwrap();
    let mut silent = H1::connect(addr).await.unwrap();
    let (streamed, silent_streamed, ()) = tokio::join!(client.get("/finite"), silent.get("/finite"), async {
        // The heads are out by now; Closing begins 300 ms later, with the bodies half sent.
        tokio::time::sleep(Duration::from_millis(200)).await;
        terminus.shutdown("test");
    });
    let ended = Instant::now();
    for streamed in [streamed, silent_streamed] {
        let streamed = streamed.expect("the streaming response completes");
        assert_eq!(streamed.body.len(), 50, "the whole body");
        assert_eq!(streamed.connection(), None, "its head went out while Serving");
    }
    assert!(
        terminus.phase() >= Phase::Closing,
        "the bodies ended during Closing"
    );

    let next = client
        .send("POST", "/", "the request a sequential client sends at once")
        .await
        .expect("the next request on the connection is answered, not lost");
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.connection(), Some("close"), "and the client is told to go");
    assert!(client.wait_closed(Duration::from_secs(2)).await);
    // The other client sends nothing more: its connection is closed once it has been
    // idle for the idle close timeout (1 s), not kept.
    assert!(
        silent.wait_closed(Duration::from_secs(3)).await,
        "the silent client's connection is closed"
    );
    assert!(ended.elapsed() < Duration::from_secs(3));

    let outcome = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap();
    assert!(outcome.is_graceful(), "{outcome:?}");
}

/// A listener whose `accept`, once armed, holds its worker thread until released: an
/// accept loop in the middle of a poll on one worker while the server's future is
/// dropped on another.
struct HeldAccept {
    inner: TcpListener,
    /// 0: pass; 1: armed; 2: holding an accepted connection; 3: released.
    gate: std::sync::Arc<(std::sync::Mutex<u8>, std::sync::Condvar)>,
}

impl axum::serve::Listener for HeldAccept {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let accepted = loop {
            if let Ok(accepted) = self.inner.accept().await {
                break accepted;
            }
        };
        let (state, changed) = &*self.gate;
        let mut state = state.lock().unwrap();
        if *state == 1 {
            *state = 2;
            changed.notify_all();
            // Blocks this worker on purpose: the window the test needs.
            while *state != 3 {
                state = changed.wait(state).unwrap();
            }
        }
        accepted
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl axum_terminus::TerminusListener for HeldAccept {}

/// Only on a multi-threaded runtime can an accept loop be mid-poll while the server's
/// future is dropped elsewhere: the connection it accepts then must not be served on,
/// detached, with no sweep and no drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_as_the_server_is_dropped_is_not_served_on() {
    let terminus = Terminus::builder().build().unwrap();
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let gate = std::sync::Arc::new((std::sync::Mutex::new(0u8), std::sync::Condvar::new()));
    let listener = HeldAccept {
        inner,
        gate: std::sync::Arc::clone(&gate),
    };
    let server = {
        let terminus = terminus.clone();
        tokio::spawn(async move { axum_terminus::serve(listener, app(&terminus), &terminus).await })
    };
    let mut warm = H1::connect(addr).await.unwrap();
    assert_eq!(warm.get("/").await.unwrap().status, StatusCode::OK);

    *gate.0.lock().unwrap() = 1;
    let late = tokio::spawn(H1::connect(addr));
    let holding = std::sync::Arc::clone(&gate);
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || {
            let mut state = holding.0.lock().unwrap();
            while *state != 2 {
                state = holding.1.wait(state).unwrap();
            }
        }),
    )
    .await
    .expect("the accept loop holds the new connection")
    .unwrap();
    // The accept loop holds a new connection on one worker; the server's future is
    // dropped on the other.
    server.abort();
    assert!(server.await.unwrap_err().is_cancelled());
    *gate.0.lock().unwrap() = 3;
    gate.1.notify_all();

    let mut late = late.await.unwrap().unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(2), late.get("/")).await;
    assert!(
        !matches!(reply, Ok(Ok(_))),
        "served after its server's future was dropped: {reply:?}"
    );
}
