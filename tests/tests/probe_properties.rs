//! Property tests over the probe request handling of `TerminusLayer`: arbitrary paths,
//! query strings, methods, versions, `Accept` and other headers, in every lifecycle
//! phase. Whatever comes in, the layer does not panic, answers a well-formed response
//! in bounded time, and never calls the inner service for a probe path (nor fails to
//! call it for any other path). The fuzz target in `fuzz/` drives the same code with
//! raw bytes.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use terminus_core::server::ServerExt as _;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use terminus_core::health::{Check, CheckError};
use terminus_core::Terminus;
use terminus_tests::probe_oracle::{is_probe_path, PROBES};
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;
use tower_terminus::TerminusLayer;

#[derive(Clone, Copy, Debug)]
enum State {
    Starting,
    Serving,
    Draining,
}

#[derive(Debug)]
struct Input {
    method: Method,
    path: String,
    query: Option<String>,
    version: Version,
    headers: Vec<(String, String)>,
    state: State,
    case_insensitive: bool,
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => prop::sample::select(vec![
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
            Method::TRACE,
            Method::CONNECT,
        ]),
        1 => "[A-Za-z!#$%&'*+.^_`|~-]{1,12}".prop_map(|name| Method::from_bytes(name.as_bytes()).expect("a token")),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "/",
        "/livez",
        "/readyz",
        "/startupz",
        "/healthz",
        "/LIVEZ",
        "/ReadyZ",
        "/readyz/",
        "/readyz/db",
        "/readyz/nope",
        "/livez/disk",
        "/readyz//db",
        "/readyz/db/extra",
        "/ready",
        "/readyzz",
        "/readyz%2Fdb",
        "/startupz/cache",
        "//readyz",
        "/slow",
    ])
    .prop_map(str::to_owned);
    let arbitrary = "/[a-zA-Z0-9._~!$&'()*+,;=:@%/-]{0,30}";
    let probe_then_anything = (
        prop::sample::select(PROBES.to_vec()),
        "[a-zA-Z0-9._~!$&'()*+,;=:@%/-]{0,12}",
    )
        .prop_map(|(probe, rest)| format!("{probe}{rest}"));
    prop_oneof![3 => known, 2 => arbitrary, 3 => probe_then_anything]
}

fn query() -> impl Strategy<Value = Option<String>> {
    let known = prop::sample::select(vec![
        "",
        "verbose",
        "verbose=false",
        "exclude=db",
        "exclude=db&exclude=nope&verbose",
        "exclude=",
        "%zz",
        "&&&==",
        "verbose&verbose&exclude=disk",
    ])
    .prop_map(str::to_owned);
    prop::option::of(prop_oneof![known, "[a-zA-Z0-9=&%._~+,;:@/?-]{0,40}"])
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let accept = prop_oneof![
        prop::sample::select(vec![
            "application/json",
            "application/health+json",
            "text/plain",
            "*/*",
            "application/health+json;q=0",
            "text/*;q=0.5, application/json;q=0.1",
            "",
            "garbage/;;;q=abc",
            "application/health+json, text/plain;q=2",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,60}",
    ]
    .prop_map(|value| ("accept".to_owned(), value));
    let other = ("[a-z][a-z0-9-]{0,15}", "[ -~]{0,40}");
    prop::collection::vec(prop_oneof![accept, other], 0..5)
}

fn input() -> impl Strategy<Value = Input> {
    (
        method(),
        path(),
        query(),
        prop::sample::select(vec![Version::HTTP_10, Version::HTTP_11, Version::HTTP_2]),
        headers(),
        prop::sample::select(vec![State::Starting, State::Serving, State::Draining]),
        any::<bool>(),
    )
        .prop_map(
            |(method, path, query, version, headers, state, case_insensitive)| Input {
                method,
                path,
                query,
                version,
                headers,
                state,
                case_insensitive,
            },
        )
}

/// A controller with a passing readiness check, a failing liveness check that is not
/// critical, and one of each outcome a check can have, in the given phase. Built outside
/// the runtime, so no signal handlers are installed.
fn controller(state: State) -> Terminus {
    let controller = Terminus::builder()
        .readiness(Check::new("db", |_| async { Ok(None) }))
        .liveness(Check::new("disk", |_| async { Err(CheckError::new("disk full")) }).non_critical())
        .readiness(Check::new("cache", |_| async { Err(CheckError::new("cache down")) }).non_critical())
        .build()
        .expect("valid configuration");
    match state {
        State::Starting => {}
        State::Serving => controller.mark_listeners_bound(),
        State::Draining => {
            controller.mark_listeners_bound();
            controller.shutdown("property test");
        }
    }
    controller
}

fn request(input: &Input) -> Option<Request<Full<Bytes>>> {
    let target = match &input.query {
        Some(query) => format!("{}?{query}", input.path),
        None => input.path.clone(),
    };
    let uri = Uri::try_from(target).ok()?;
    let mut request = Request::builder()
        .method(input.method.clone())
        .uri(uri)
        .version(input.version)
        .body(Full::new(Bytes::from_static(b"ignored")))
        .ok()?;
    for (name, value) in &input.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            continue;
        };
        request.headers_mut().append(name, value);
    }
    Some(request)
}

/// What the layer answered and whether it called the inner service.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
    inner_calls: usize,
}

fn answer(runtime: &tokio::runtime::Runtime, input: &Input, request: Request<Full<Bytes>>) -> Answer {
    let controller = controller(input.state);
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = service_fn({
        let calls = Arc::clone(&calls);
        move |_request: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"inner")))) }
        }
    });
    let layer = TerminusLayer::builder(&controller)
        .case_insensitive(input.case_insensitive)
        .build()
        .expect("valid probe configuration");
    let service = layer.layer(inner);
    runtime.block_on(async {
        let response = tokio::time::timeout(Duration::from_secs(5), service.oneshot(request))
            .await
            .expect("answered in bounded time (checks are bounded by their timeout)")
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("a probe body never fails").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
            inner_calls: calls.load(Ordering::SeqCst),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_request_gets_a_valid_answer_and_probe_paths_never_reach_the_inner_service(input in input()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let Some(request) = request(&input) else {
            // Not a valid request target: hyper would have answered 400 before the layer.
            return Ok(());
        };
        let path = request.uri().path().to_owned();
        let head = input.method == Method::HEAD;
        let answer = answer(&runtime, &input, request);

        if is_probe_path(&path, input.case_insensitive) {
            prop_assert_eq!(answer.inner_calls, 0, "probe path {} reached the inner service", path);
            prop_assert!(
                [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE, StatusCode::METHOD_NOT_ALLOWED, StatusCode::NOT_FOUND]
                    .contains(&answer.status),
                "unexpected probe status {} for {} {}", answer.status, input.method, path
            );
            prop_assert!(!answer.status.is_redirection());
            prop_assert_eq!(
                answer.headers.get(header::CACHE_CONTROL).map(HeaderValue::as_bytes),
                Some(&b"no-store"[..])
            );
            prop_assert!(answer.headers.contains_key(header::CONTENT_TYPE));
            if answer.status == StatusCode::METHOD_NOT_ALLOWED {
                prop_assert!(input.method != Method::GET && !head);
                prop_assert_eq!(
                    answer.headers.get(header::ALLOW).map(HeaderValue::as_bytes),
                    Some(&b"GET, HEAD"[..])
                );
            }
            if head {
                prop_assert!(answer.body.is_empty(), "HEAD answered with a body");
            } else if let Some(length) = answer.headers.get(header::CONTENT_LENGTH) {
                let expected = answer.body.len().to_string();
                prop_assert_eq!(length.to_str().ok(), Some(expected.as_str()));
            }
            // Liveness keeps passing while draining; readiness fails unless serving.
            if matches!(input.method, Method::GET | Method::HEAD) {
                let exact = |probe: &str| if input.case_insensitive { path.eq_ignore_ascii_case(probe) } else { path == probe };
                if exact("/livez") {
                    prop_assert_eq!(answer.status, StatusCode::OK);
                }
                if exact("/readyz") {
                    let expected = if matches!(input.state, State::Serving) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                    prop_assert_eq!(answer.status, expected);
                }
            }
            // Failure reasons are withheld by default.
            let body = String::from_utf8_lossy(&answer.body);
            prop_assert!(!body.contains("disk full") && !body.contains("cache down"), "a reason leaked: {}", body);
        } else {
            prop_assert_eq!(answer.inner_calls, 1, "{} {} did not reach the inner service", input.method, path);
            prop_assert_eq!(answer.status, StatusCode::OK);
            prop_assert_eq!(answer.body, Bytes::from_static(b"inner"));
            let close = answer.headers.get(header::CONNECTION).map(HeaderValue::as_bytes);
            let expected = (matches!(input.state, State::Draining) && input.version != Version::HTTP_2)
                .then_some(&b"close"[..]);
            prop_assert_eq!(close, expected, "Connection: close only on HTTP/1.x while draining");
        }
    }
}

#[test]
fn the_oracle_knows_probe_paths_from_other_paths() {
    assert!(is_probe_path("/readyz", false));
    assert!(is_probe_path("/readyz/db", false));
    assert!(is_probe_path("/readyz/db/extra", false));
    assert!(!is_probe_path("/readyz/", false));
    assert!(!is_probe_path("/readyzz", false));
    assert!(!is_probe_path("/READYZ", false));
    assert!(is_probe_path("/READYZ", true));
    assert!(!is_probe_path("/healthz", false));
}
