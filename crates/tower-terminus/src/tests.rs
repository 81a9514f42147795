//! Unit tests of the middleware, in the style of tower-http's in-flight test.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Empty, Full};
use terminus_core::server::{self, ServerExt};
use terminus_core::Terminus;
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder, ServiceExt};

use crate::TerminusLayer;

fn serving() -> Terminus {
    let terminus = Terminus::builder().build().unwrap();
    terminus.mark_listeners_bound();
    terminus
}

#[tokio::test]
async fn streaming_response_is_in_flight_until_its_body_ends() {
    let terminus = serving();
    let (mut tx, rx) = Channel::<Bytes>::new(4);
    let mut rx = Some(rx);
    let mut service = ServiceBuilder::new()
        .layer(TerminusLayer::new(&terminus))
        .service(service_fn(move |_req: Request<Empty<Bytes>>| {
            let rx = rx.take().expect("called once");
            async move { Ok::<_, Infallible>(Response::new(rx)) }
        }));
    assert_eq!(terminus.in_flight(), 0);

    let response = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(Empty::new()))
        .await
        .unwrap();
    assert_eq!(terminus.in_flight(), 1, "counted once the response head is out");

    let mut body = response.into_body();
    tx.send_data(Bytes::from("chunk")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "chunk");
    assert_eq!(terminus.in_flight(), 1, "still streaming");

    drop(tx);
    assert!(body.frame().await.is_none(), "body ended");
    assert_eq!(terminus.in_flight(), 0, "released at the end of the body");
}

/// The response of [`open_body_app`].
type OpenResponse = Response<crate::TerminusBody<Channel<Bytes>>>;

/// A layered app whose one response body stays open while the returned sender lives.
fn open_body_app(
    terminus: &Terminus,
) -> (
    http_body_util::channel::Sender<Bytes>,
    impl Service<Request<Empty<Bytes>>, Response = OpenResponse, Error = Infallible>,
) {
    let (tx, rx) = Channel::<Bytes>::new(1);
    let mut rx = Some(rx);
    let service = ServiceBuilder::new()
        .layer(TerminusLayer::new(terminus))
        .service(service_fn(move |_req: Request<Empty<Bytes>>| {
            let rx = rx.take().expect("called once");
            async move { Ok::<_, Infallible>(Response::new(rx)) }
        }));
    (tx, service)
}

#[tokio::test]
async fn dropped_body_releases_the_request() {
    let terminus = serving();
    let (_tx, service) = open_body_app(&terminus);
    let response = service.oneshot(Request::new(Empty::new())).await.unwrap();
    assert_eq!(terminus.in_flight(), 1);
    drop(response); // the client went away mid-stream
    assert_eq!(terminus.in_flight(), 0);
}

#[tokio::test]
async fn failed_inner_future_releases_the_request() {
    let terminus = serving();
    let service = ServiceBuilder::new()
        .layer(TerminusLayer::new(&terminus))
        .service(service_fn(|_req: Request<Empty<Bytes>>| async {
            Err::<Response<Full<Bytes>>, BoxError>("backend down".into())
        }));
    assert!(service.oneshot(Request::new(Empty::new())).await.is_err());
    assert_eq!(terminus.in_flight(), 0);
}

fn hello_app(
    terminus: &Terminus,
) -> impl Service<
    Request<Empty<Bytes>>,
    Response = Response<crate::TerminusBody<Full<Bytes>>>,
    Error = Infallible,
> + Clone {
    ServiceBuilder::new()
        .layer(TerminusLayer::new(terminus))
        .service(service_fn(|req: Request<Empty<Bytes>>| async move {
            // A probe must never get here.
            assert!(
                !req.uri().path().ends_with('z'),
                "probe reached the inner service"
            );
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
        }))
}

async fn send(
    app: impl Service<
        Request<Empty<Bytes>>,
        Response = Response<crate::TerminusBody<Full<Bytes>>>,
        Error = Infallible,
    >,
    method: Method,
    uri: &str,
    version: Version,
) -> (Response<()>, Bytes) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .version(version)
        .body(Empty::new())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (Response::from_parts(parts, ()), bytes)
}

#[tokio::test]
async fn readiness_fails_while_draining_but_liveness_passes() {
    let terminus = serving();
    let app = hello_app(&terminus);
    let (ready, body) = send(app.clone(), Method::GET, "/readyz", Version::HTTP_11).await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(body, r#"{"status":"ok"}"#);

    terminus.shutdown("test");
    let (ready, body) = send(app.clone(), Method::GET, "/readyz", Version::HTTP_11).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, r#"{"status":"error"}"#);
    assert_eq!(ready.headers()["cache-control"], "no-store");
    assert_eq!(ready.headers()["x-content-type-options"], "nosniff");
    let (live, _) = send(app, Method::GET, "/livez", Version::HTTP_11).await;
    assert_eq!(live.status(), StatusCode::OK);
}

#[tokio::test]
async fn readiness_fails_while_starting() {
    let terminus = Terminus::builder().build().unwrap();
    let (ready, _) = send(hello_app(&terminus), Method::GET, "/readyz", Version::HTTP_11).await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn probes_are_not_counted_and_match_on_the_path_alone() {
    let terminus = serving();
    let app = hello_app(&terminus);
    let (ready, _) = send(app.clone(), Method::GET, "/readyz?verbose&x=1", Version::HTTP_11).await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(terminus.in_flight(), 0);
    // Matching is exact and case-sensitive by default: these reach the app.
    let (other, body) = send(app, Method::GET, "/READYZ", Version::HTTP_11).await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(body, "hello");
}

#[tokio::test]
async fn head_gets_the_headers_without_a_body_and_post_gets_405() {
    let terminus = serving();
    let app = hello_app(&terminus);
    let (head, body) = send(app.clone(), Method::HEAD, "/livez", Version::HTTP_11).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(
        head.headers()["content-length"],
        r#"{"status":"ok"}"#.len().to_string()
    );
    let (post, _) = send(app, Method::POST, "/livez", Version::HTTP_11).await;
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn connection_close_is_added_to_http1_while_draining_only() {
    let terminus = serving();
    let app = hello_app(&terminus);
    let (before, _) = send(app.clone(), Method::GET, "/", Version::HTTP_11).await;
    assert!(before.headers().get("connection").is_none());

    terminus.shutdown("test");
    let (h1, body) = send(app.clone(), Method::GET, "/", Version::HTTP_11).await;
    assert_eq!(h1.headers()["connection"], "close");
    assert_eq!(body, "hello");
    let (h2, _) = send(app, Method::GET, "/", Version::HTTP_2).await;
    assert!(h2.headers().get("connection").is_none(), "HTTP/2 forbids it");
}

#[tokio::test]
async fn switching_protocols_keeps_its_upgrade_header_while_draining() {
    let terminus = serving();
    terminus.shutdown("test");
    let app = ServiceBuilder::new()
        .layer(TerminusLayer::new(&terminus))
        .service(service_fn(|_req: Request<Empty<Bytes>>| async {
            let response = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Full::<Bytes>::default())
                .unwrap();
            Ok::<_, Infallible>(response)
        }));
    let response = app.oneshot(Request::new(Empty::new())).await.unwrap();
    assert_eq!(response.headers()["connection"], "upgrade");
}

#[test]
fn invalid_probe_paths_fail_at_build_naming_the_field() {
    let terminus = Terminus::builder().build().unwrap();
    let error = TerminusLayer::builder(&terminus)
        .readiness_path("readyz")
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "readiness_path");
    let error = TerminusLayer::builder(&terminus)
        .startup_path("/livez")
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "startup_path");
}

#[tokio::test]
async fn info_is_unwrapped_for_one_check_and_keyed_by_name_for_several() {
    use terminus_core::health::Check;
    let info = |name: &'static str| {
        Check::new(name, move |_| async move {
            Ok(Some(serde_json::json!({ "name": name })))
        })
        .readiness()
    };
    let terminus = Terminus::builder()
        .check(info("a"))
        .check(info("b"))
        .build()
        .unwrap();
    terminus.mark_listeners_bound();
    let layer = TerminusLayer::builder(&terminus)
        .custom_path("/one", ["a"])
        .build()
        .unwrap();
    let app = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_req: Request<Empty<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
        }));
    let (_, one) = send(app.clone(), Method::GET, "/one", Version::HTTP_11).await;
    assert_eq!(
        one,
        r#"{"status":"ok","info":{"name":"a"},"details":{"name":"a"}}"#
    );
    let (_, both) = send(app, Method::GET, "/readyz", Version::HTTP_11).await;
    assert_eq!(
        both,
        r#"{"status":"ok","info":{"a":{"name":"a"},"b":{"name":"b"}},"details":{"a":{"name":"a"},"b":{"name":"b"}}}"#
    );
}

#[tokio::test]
async fn a_failing_check_status_outside_4xx_5xx_falls_back_to_the_configured_error_status() {
    use terminus_core::health::{Check, CheckError};
    let terminus = Terminus::builder()
        .readiness(Check::new("db", |_| async {
            Err(CheckError::new("down").status(302))
        }))
        .build()
        .unwrap();
    terminus.mark_listeners_bound();
    let (ready, _) = send(hello_app(&terminus), Method::GET, "/readyz", Version::HTTP_11).await;
    assert_eq!(
        ready.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "never a redirect"
    );
}

#[tokio::test]
async fn under_a_server_that_tracks_requests_the_layer_counts_nothing() {
    let terminus = serving();
    let (_tx, mut service) = open_body_app(&terminus);
    // The server calls the service inside `call_tracked`, as axum-terminus does.
    let (future, answered) = server::call_tracked(|| service.call(Request::new(Empty::new())));
    assert_eq!(
        answered,
        Some(server::Answered::Request),
        "an application request"
    );
    let response = future.await.unwrap();
    assert_eq!(terminus.in_flight(), 0, "the server counts it, not the layer");
    drop(response);
}

#[tokio::test]
async fn outside_a_server_call_the_layer_counts_even_while_another_server_tracks_its_own() {
    let terminus = serving();
    let (_tx, mut service) = open_body_app(&terminus);
    // Another server of the same `Terminus` is in the middle of its own call...
    let ((), _) = server::call_tracked(|| {});
    // ...which says nothing of this one, called by a server that does not count.
    let response = service.call(Request::new(Empty::new())).await.unwrap();
    assert_eq!(terminus.in_flight(), 1, "the layer counts it until its body ends");
    drop(response);
    assert_eq!(terminus.in_flight(), 0);
}

#[tokio::test]
async fn a_probe_answered_under_a_server_call_is_reported_to_the_server_as_a_probe() {
    let terminus = serving();
    let layer = TerminusLayer::builder(&terminus)
        .readiness_path("/ready")
        .build()
        .unwrap();
    let mut service =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|_req: Request<Empty<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }));
    for (path, expected) in [
        ("/ready", server::Answered::Probe),
        ("/livez", server::Answered::Probe),
        ("/readyz", server::Answered::Request),
        ("/", server::Answered::Request),
    ] {
        let request = Request::get(path).body(Empty::new()).unwrap();
        let (future, answered) = server::call_tracked(|| service.call(request));
        assert_eq!(answered, Some(expected), "{path}");
        drop(future.await.unwrap());
    }
    assert_eq!(
        terminus.in_flight(),
        0,
        "the server counts; a probe is counted by nobody"
    );
}

#[tokio::test]
async fn composes_under_tower_http_timeout_which_needs_a_default_body() {
    use std::time::Duration;
    use tower_http::timeout::TimeoutLayer;
    let terminus = serving();
    // TimeoutLayer outside: it makes up a 408 with `TerminusBody::default()`.
    let app = ServiceBuilder::new()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(50),
        ))
        .layer(TerminusLayer::new(&terminus))
        .service(service_fn(|_req: Request<Empty<Bytes>>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("late"))))
        }));
    let response = app.oneshot(Request::new(Empty::new())).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .is_empty());
    assert_eq!(terminus.in_flight(), 0, "the timed-out request is over");
}

#[test]
fn terminus_service_gives_its_inner_service_back() {
    let terminus = serving();
    let mut service = TerminusLayer::new(&terminus).layer(7_u32);
    *service.get_mut() += 1;
    assert_eq!(*service.get_ref(), 8);
    assert_eq!(service.into_inner(), 8);
}
