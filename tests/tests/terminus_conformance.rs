//! `@godaddy/terminus` 4.12.1's own test suite (`lib/terminus.spec.js` and
//! `lib/terminus-error.spec.js`), ported case by case onto this API.
//!
//! Each `it(...)` becomes one test named after it, with the same scenario and the same
//! asserted status, headers and body, or a `DIFFERENCE:` comment naming the documented
//! deliberate difference (see `docs/migrating-from-terminus.md`). The mapping:
//!
//! - terminus's `healthChecks: { '/health': fn }` is a check registered on the controller
//!   plus `TerminusLayer::builder(..).custom_path("/health", [name])`;
//! - `createServer((req, res) => res.end('hello'))` is an axum app answering `hello` on
//!   every path, served on loopback; `fetch` is a real HTTP/1.1 client;
//! - `logger` is the `tracing` log (target `terminus`), captured per test;
//! - the standalone scripts that signal their own process run as a child process: this
//!   test binary re-executed with `CONFORMANCE_CHILD=<script>`, so real signals reach a
//!   process that holds nothing but that one scenario;
//! - the standalone scripts that only need "shutdown has begun" before probing call
//!   `controller.shutdown(..)`, which starts the same sequence a signal does
//!   (`beforeShutdown: 1 s` becomes `drain_delay(1 s)`: the server keeps serving meanwhile).
//!
//! Two differences apply throughout. DIFFERENCE (reasons): failure reasons (`error` /
//! `details`) are withheld by default; the cases asserting them enable
//! `expose_failure_reasons(true)`, and a companion assertion shows the default.
//! DIFFERENCE (cache): check results are cached for 1 s; each case uses a fresh
//! controller, so every probe here runs its check as terminus would.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use terminus_core::server::ServerExt as _;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use terminus_core::health::{Causes, Check, CheckContext, CheckError};
use terminus_core::{ExitCodePolicy, NoConnections, Signal, Terminus};
use terminus_tests::{LayeredApp, Reply};
use tokio::net::TcpStream;
use tower_terminus::{TerminusLayer, TerminusLayerBuilder};

const REQUEST_BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

async fn fetch(addr: SocketAddr, path: &str) -> Reply {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let request = Request::get(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        Reply::read(sender.send_request(request).await.unwrap())
            .await
            .unwrap()
    };
    tokio::time::timeout(REQUEST_BOUND, exchange)
        .await
        .expect("the server answers")
}

fn json_of(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap()
}

fn content_type(reply: &Reply) -> Option<&str> {
    reply.headers.get("content-type").and_then(|v| v.to_str().ok())
}

/// A check that records that it ran, then resolves with `info` or rejects with `error`.
fn recording(
    ran: &Arc<AtomicBool>,
    outcome: impl Fn(CheckContext) -> Result<Option<Value>, CheckError> + Send + Sync + 'static,
) -> Check {
    let ran = Arc::clone(ran);
    Check::new("health", move |ctx| {
        ran.store(true, Ordering::SeqCst);
        let result = outcome(ctx);
        async move { result }
    })
}

/// `createTerminus(server, { healthChecks: { [path]: check }, ...options })`, serving.
fn terminus(
    check: Check,
    path: &str,
    options: impl FnOnce(TerminusLayerBuilder) -> TerminusLayerBuilder,
) -> (Terminus, TerminusLayer) {
    let controller = Terminus::builder()
        .drain_delay(Duration::from_secs(1))
        .check(check)
        .build()
        .unwrap();
    controller.mark_listeners_bound();
    let layer = options(TerminusLayer::builder(&controller).custom_path(path, ["health"]))
        .build()
        .unwrap();
    (controller, layer)
}

fn no_options(builder: TerminusLayerBuilder) -> TerminusLayerBuilder {
    builder
}

/// terminus's `logger`: the `tracing` events of this test, captured on this thread
/// (`#[tokio::test]` runs the server, its connections and its checks on this thread).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
        let log = Log::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// What terminus's `logger('healthcheck failed', error)` corresponds to.
    fn logged_check_failure(&self) -> bool {
        self.text().contains("health check failed")
    }
}

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn errors() -> [std::io::Error; 2] {
    [
        std::io::Error::other("test error 1"),
        std::io::Error::other("test error 2"),
    ]
}

fn error_messages() -> Value {
    json!([{ "message": "test error 1" }, { "message": "test error 2" }])
}

// ---------------------------------------------------------------------------------------
// describe('supports onHealthcheck for the healthcheck route')
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn but_keeps_all_the_other_endpoints() {
    let controller = Terminus::builder().build().unwrap();
    controller.mark_listeners_bound();
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    let reply = fetch(server.addr, "/").await;
    assert_eq!(reply.body, "hello");
}

#[tokio::test]
async fn returns_200_on_resolve() {
    let ran = Arc::new(AtomicBool::new(false));
    let (_c, layer) = terminus(recording(&ran, |_| Ok(None)), "/health", no_options);
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(content_type(&reply), Some("application/json"));
    assert!(ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn returns_custom_status_code_on_resolve() {
    let ran = Arc::new(AtomicBool::new(false));
    let (_c, layer) = terminus(recording(&ran, |_| Ok(None)), "/health", |b| b.status_ok(201));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(content_type(&reply), Some("application/json"));
    assert!(ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn returns_default_response_on_resolve() {
    let ran = Arc::new(AtomicBool::new(false));
    let (_c, layer) = terminus(recording(&ran, |_| Ok(None)), "/health", no_options);
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(content_type(&reply), Some("application/json"));
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(json_of(&reply), json!({ "status": "ok" }));
}

#[tokio::test]
async fn returns_custom_response_on_resolve() {
    let ran = Arc::new(AtomicBool::new(false));
    let (_c, layer) = terminus(recording(&ran, |_| Ok(None)), "/health", |b| {
        b.ok_body(json!({ "status": "up" }))
    });
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(content_type(&reply), Some("application/json"));
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(json_of(&reply), json!({ "status": "up" }));
}

#[tokio::test]
async fn case_sensitive_by_default() {
    let ran = Arc::new(AtomicBool::new(false));
    let (_c, layer) = terminus(recording(&ran, |_| Ok(None)), "/HeAlTh", no_options);
    let server = LayeredApp::start(layer).await;
    fetch(server.addr, "/health").await;
    assert!(!ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn case_insensitive_opt_in() {
    let ran = Arc::new(AtomicBool::new(false));
    let (_c, layer) = terminus(recording(&ran, |_| Ok(None)), "/HeAlTh", |b| {
        b.case_insensitive(true)
    });
    let server = LayeredApp::start(layer).await;
    fetch(server.addr, "/health").await;
    assert!(ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn case_insensitive_opt_in_should_work_with_original_path() {
    let ran = Arc::new(AtomicBool::new(false));
    let (_c, layer) = terminus(recording(&ran, |_| Ok(None)), "/healthCheck", |b| {
        b.case_insensitive(true)
    });
    let server = LayeredApp::start(layer).await;
    fetch(server.addr, "/healthCheck").await;
    assert!(ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn do_not_send_multiple_responses_for_the_same_request() {
    // terminus checks that a probe answers once (Node would throw on a second write). A
    // tower service returns one response by type; what could still go wrong is the wire:
    // a probe answer with a wrong length, or a stray byte, would corrupt the next
    // response on the same keep-alive connection. So: several probes in a row on one
    // raw connection, each answered exactly once, with nothing left over.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let check = Check::new("health", move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok(None) }
    });
    let (_c, layer) = terminus(check, "/healthCheck", no_options);
    let server = LayeredApp::start(layer).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = b"GET /healthCheck HTTP/1.1\r\nhost: x\r\n\r\n";
    stream.write_all(&request.repeat(3)).await.unwrap();
    stream.shutdown().await.unwrap(); // no more requests: the server closes after answering
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut wire))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let wire = String::from_utf8(wire).unwrap();
    assert_eq!(wire.matches("HTTP/1.1 200 OK").count(), 3, "{wire}");
    assert_eq!(wire.matches(r#"{"status":"ok"}"#).count(), 3, "{wire}");
    assert!(
        wire.ends_with(r#"{"status":"ok"}"#),
        "nothing after the last answer: {wire}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one run, then the cache");
    assert_eq!(
        server.app_calls.load(Ordering::SeqCst),
        0,
        "the app's handler is not called for a probe"
    );
}

#[tokio::test]
async fn includes_info_on_resolve() {
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Ok(Some(json!({ "version": "1.0.0" }))));
    let (_c, layer) = terminus(check, "/health", no_options);
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(content_type(&reply), Some("application/json"));
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(
        json_of(&reply),
        json!({
            "status": "ok",
            "info": { "version": "1.0.0" },
            "details": { "version": "1.0.0" }
        })
    );
}

#[tokio::test]
async fn includes_verbatim_on_resolve() {
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Ok(Some(json!({ "version": "1.0.0" }))));
    let (_c, layer) = terminus(check, "/health", |b| b.verbatim(true));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(content_type(&reply), Some("application/json"));
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(json_of(&reply), json!({ "status": "ok", "version": "1.0.0" }));
}

#[tokio::test]
async fn returns_503_on_reject() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("failed")));
    let (_c, layer) = terminus(check, "/health", no_options);
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure(), "{}", log.text());
}

#[tokio::test]
async fn returns_global_custom_status_code_on_reject() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("")));
    let (_c, layer) = terminus(check, "/health", |b| b.status_error(500));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
}

#[tokio::test]
async fn returns_custom_status_code_on_reject() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("").status(500)));
    let (_c, layer) = terminus(check, "/health", no_options);
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
}

#[tokio::test]
async fn returns_custom_status_code_on_reject_prevailing_over_global_custom_status_code() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("").status(500)));
    let (_c, layer) = terminus(check, "/health", |b| b.status_error(501));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
}

#[tokio::test]
async fn returns_default_response_on_reject() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("failed")));
    let (_c, layer) = terminus(check, "/health", no_options);
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
    assert_eq!(json_of(&reply), json!({ "status": "error" }));
}

#[tokio::test]
async fn returns_global_custom_response_on_reject() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("failed")));
    let (_c, layer) = terminus(check, "/health", |b| b.error_body(json!({ "status": "down" })));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
    assert_eq!(json_of(&reply), json!({ "status": "down" }));
}

#[tokio::test]
async fn returns_custom_response_on_reject() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| {
        Err(CheckError::new("").body(json!({ "status": "failed" })))
    });
    let (_c, layer) = terminus(check, "/health", no_options);
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
    assert_eq!(json_of(&reply), json!({ "status": "failed" }));
}

#[tokio::test]
async fn returns_custom_response_on_reject_prevailing_over_global_custom_response() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| {
        Err(CheckError::new("").body(json!({ "status": "failed" })))
    });
    let (_c, layer) = terminus(check, "/health", |b| b.error_body(json!({ "status": "down" })));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
    assert_eq!(json_of(&reply), json!({ "status": "failed" }));
}

#[tokio::test]
async fn exposes_internal_state_is_shutting_down_false_to_health_check() {
    let ran = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Option<bool>>> = Arc::default();
    let slot = Arc::clone(&seen);
    let check = recording(&ran, move |ctx| {
        *slot.lock().unwrap() = Some(ctx.is_shutting_down());
        Ok(None)
    });
    let (_c, layer) = terminus(check, "/health", no_options);
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(content_type(&reply), Some("application/json"));
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(*seen.lock().unwrap(), Some(false), "{{ isShuttingDown: false }}");
}

/// `standalone-tests/terminus.onsignal.nofail.js`: `sendFailuresDuringShutdown: false`,
/// the check resolves with `{ state }`, the process signals itself (SIGINT) and holds the
/// shutdown for 1 s in `beforeShutdown` while the probe is fetched.
#[tokio::test]
async fn exposes_internal_state_is_shutting_down_true_when_shutting_down() {
    let check = Check::new("health", |ctx: CheckContext| async move {
        Ok(Some(
            json!({ "state": { "isShuttingDown": ctx.is_shutting_down() } }),
        ))
    });
    let (controller, layer) = terminus(check, "/health", |b| b.send_failures_during_shutdown(false));
    let server = LayeredApp::start(layer).await;
    controller.shutdown("SIGINT");
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        json_of(&reply)["info"]["state"],
        json!({ "isShuttingDown": true })
    );
    // The process then exits by the signal: see the signal cases below.
}

// describe('includes error on reject')

#[tokio::test]
async fn returns_custom_objects_as_errors() {
    let ran = Arc::new(AtomicBool::new(false));
    let details = json!({ "fornite": "client down", "redis": { "disk": 100 } });
    let cause = details.clone();
    let check = recording(&ran, move |_| {
        Err(CheckError::new("failed").with_details(cause.clone()))
    });
    // DIFFERENCE (reasons): `error`/`details` are sent only with expose_failure_reasons.
    let (controller, layer) = terminus(check, "/health", |b| b.expose_failure_reasons(true));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(
        json_of(&reply),
        json!({ "status": "error", "error": details, "details": details })
    );

    let withheld = TerminusLayer::builder(&controller)
        .custom_path("/health", ["health"])
        .build()
        .unwrap();
    let server = LayeredApp::start(withheld).await;
    assert_eq!(
        json_of(&fetch(server.addr, "/health").await),
        json!({ "status": "error" })
    );
}

#[tokio::test]
async fn returns_error_objects_as_errors_and_does_not_include_stack_traces_by_default() {
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("failed").with_causes(errors())));
    // DIFFERENCE (reasons): exposed only on request.
    let (_c, layer) = terminus(check, "/health", |b| b.expose_failure_reasons(true));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(
        json_of(&reply),
        json!({ "status": "error", "error": error_messages(), "details": error_messages() })
    );
}

#[tokio::test]
async fn returns_error_objects_as_errors_and_includes_stack_traces_if_unsafe_expose_stack_traces_is_set() {
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("failed").with_causes(errors())));
    let (_c, layer) = terminus(check, "/health", |b| b.unsafe_expose_stack_traces(true));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    let json = json_of(&reply);
    assert_eq!(json["status"], "error");
    assert_eq!(json["error"], json["details"]);
    // DIFFERENCE: Rust errors have no JavaScript stack. `stack` holds the cause's Debug
    // form and its source chain, so it is compared by content, not to `error.stack`.
    for (index, message) in ["test error 1", "test error 2"].into_iter().enumerate() {
        assert_eq!(json["error"][index]["message"], message);
        let stack = json["error"][index]["stack"].as_str().unwrap();
        assert!(stack.contains(message), "{stack}");
    }
}

#[tokio::test]
async fn returns_default_response_on_reject_with_error_objects() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("failed").with_causes(errors())));
    // DIFFERENCE (reasons): exposed only on request.
    let (_c, layer) = terminus(check, "/health", |b| b.expose_failure_reasons(true));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
    assert_eq!(
        json_of(&reply),
        json!({ "status": "error", "error": error_messages(), "details": error_messages() })
    );
}

#[tokio::test]
async fn returns_global_custom_response_on_reject_with_error_objects() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| Err(CheckError::new("failed").with_causes(errors())));
    // DIFFERENCE (reasons): exposed only on request.
    let (_c, layer) = terminus(check, "/health", |b| {
        b.expose_failure_reasons(true)
            .error_body(json!({ "status": "down" }))
    });
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
    assert_eq!(
        json_of(&reply),
        json!({ "status": "down", "error": error_messages(), "details": error_messages() })
    );
}

#[tokio::test]
async fn returns_custom_response_on_reject_with_error_objects() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| {
        Err(CheckError::new("failed")
            .with_causes(errors())
            .body(json!({ "status": "failed" })))
    });
    // DIFFERENCE (reasons): exposed only on request.
    let (_c, layer) = terminus(check, "/health", |b| b.expose_failure_reasons(true));
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
    assert_eq!(
        json_of(&reply),
        json!({ "status": "failed", "error": error_messages(), "details": error_messages() })
    );
}

#[tokio::test]
async fn returns_custom_response_on_reject_with_error_objects_prevailing_over_global_custom_response() {
    let (log, _guard) = Log::capture();
    let ran = Arc::new(AtomicBool::new(false));
    let check = recording(&ran, |_| {
        Err(CheckError::new("failed")
            .with_causes(errors())
            .body(json!({ "status": "failed" })))
    });
    // DIFFERENCE (reasons): exposed only on request.
    let (_c, layer) = terminus(check, "/health", |b| {
        b.expose_failure_reasons(true)
            .error_body(json!({ "status": "down" }))
    });
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ran.load(Ordering::SeqCst));
    assert!(log.logged_check_failure());
    assert_eq!(
        json_of(&reply),
        json!({ "status": "failed", "error": error_messages(), "details": error_messages() })
    );
}

// Shutdown cases: `standalone-tests/terminus.onsignal.fail*.js` signal their own process
// (SIGINT) and hold the shutdown for 1 s in `beforeShutdown`; the probe arrives meanwhile.

#[tokio::test]
async fn returns_503_once_signal_received() {
    let (controller, layer) = terminus(
        Check::new("health", |_| async { Ok(None) }),
        "/health",
        no_options,
    );
    let server = LayeredApp::start(layer).await;
    controller.shutdown("SIGINT");
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn returns_custom_status_code_once_signal_received() {
    let (controller, layer) = terminus(Check::new("health", |_| async { Ok(None) }), "/health", |b| {
        b.status_error(501)
    });
    let server = LayeredApp::start(layer).await;
    controller.shutdown("SIGINT");
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn returns_default_response_once_signal_received() {
    let (controller, layer) = terminus(
        Check::new("health", |_| async { Ok(None) }),
        "/health",
        no_options,
    );
    let server = LayeredApp::start(layer).await;
    controller.shutdown("SIGINT");
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(&reply), json!({ "status": "error" }));
}

#[tokio::test]
async fn returns_custom_reponse_once_signal_received() {
    let (controller, layer) = terminus(Check::new("health", |_| async { Ok(None) }), "/health", |b| {
        b.error_body(json!({ "status": "down" }))
    });
    let server = LayeredApp::start(layer).await;
    controller.shutdown("SIGINT");
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(&reply), json!({ "status": "down" }));
}

fn counting_hook(calls: &Arc<AtomicUsize>) -> impl Fn(TerminusLayerBuilder) -> TerminusLayerBuilder {
    let calls = Arc::clone(calls);
    move |builder| {
        let calls = Arc::clone(&calls);
        builder.on_send_failure_during_shutdown(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            async {}
        })
    }
}

/// `standalone-tests/terminus.onsendfailureduringshutdown.js` (SIGTERM, 1 s beforeShutdown).
#[tokio::test]
async fn calls_on_send_failure_during_shutdown_when_sending_503_during_shutdown() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (controller, layer) = terminus(
        Check::new("health", |_| async { Ok(None) }),
        "/health",
        counting_hook(&calls),
    );
    let server = LayeredApp::start(layer).await;
    controller.shutdown("SIGTERM");
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "onSendFailureDuringShutdown ran once"
    );
}

/// `standalone-tests/terminus.onsendfailureduringshutdown.failed-health.js`: the check
/// rejects and the probe is fetched before the signal (sent after 600 ms).
#[tokio::test]
async fn does_not_call_on_send_failure_during_shutdown_when_sending_503_during_failed_healthcheck() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (controller, layer) = terminus(
        Check::new("health", |_| async { Err(CheckError::new("failure")) }),
        "/health",
        counting_hook(&calls),
    );
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    controller.shutdown("SIGTERM");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

// (top level)

/// `standalone-tests/terminus.onsignal.nofail.js`.
#[tokio::test]
async fn does_not_return_503_once_signal_received_if_send_failures_during_shutdown_is_false() {
    let (controller, layer) = terminus(
        Check::new("health", |ctx: CheckContext| async move {
            Ok(Some(
                json!({ "state": { "isShuttingDown": ctx.is_shutting_down() } }),
            ))
        }),
        "/health",
        |b| b.send_failures_during_shutdown(false),
    );
    let server = LayeredApp::start(layer).await;
    controller.shutdown("SIGINT");
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// `standalone-tests/terminus.nofailuresduringshutdown.js`.
#[tokio::test]
async fn does_not_call_on_send_failure_during_shutdown_if_send_failures_during_shutdown_is_false() {
    let calls = Arc::new(AtomicUsize::new(0));
    let hook = counting_hook(&calls);
    let (controller, layer) = terminus(
        Check::new("health", |_| async { Ok(None) }),
        "/health",
        move |b| hook(b).send_failures_during_shutdown(false),
    );
    let server = LayeredApp::start(layer).await;
    controller.shutdown("SIGTERM");
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

// Signal cases: each runs the matching standalone script as a child process (this test
// binary, re-executed with CONFORMANCE_CHILD) and compares its output and exit.

const CHILD_ENV: &str = "CONFORMANCE_CHILD";
const MARK: &str = "conformance: ";

struct ChildRun {
    lines: Vec<String>,
    status: std::process::ExitStatus,
}

fn run_child(script: &str, argument: &str) -> ChildRun {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args(["--exact", "standalone_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, script)
        .env("CONFORMANCE_ARG", argument)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines = stdout
        .lines()
        // The harness prints `test standalone_child ... ` without a newline before
        // the test's own output, so the mark may follow other text on its line.
        .filter_map(|line| line.find(MARK).map(|at| &line[at + MARK.len()..]))
        .map(str::to_owned)
        .collect();
    ChildRun {
        lines,
        status: output.status,
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARK}{line}");
    let _ = out.flush();
}

fn kill_self(signal: Signal) {
    let status = Command::new("kill")
        .args([
            "-s",
            signal.name().trim_start_matches("SIG"),
            &std::process::id().to_string(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

fn signal_named(name: &str) -> Signal {
    name.parse().unwrap()
}

/// A standalone script: one controller (or three), its hooks printing what terminus's
/// print, the process signalling itself once serving, and the exit the outcome asks for.
/// Does nothing unless started by `run_child`.
#[tokio::test]
async fn standalone_child() {
    let Ok(script) = std::env::var(CHILD_ENV) else {
        return;
    };
    let argument = std::env::var("CONFORMANCE_ARG").unwrap_or_default();
    let hook = |line: String| {
        move || {
            let line = line.clone();
            async move {
                say(&line);
                Ok(())
            }
        }
    };
    let (signals, signal, on_signal, on_shutdown, use_exit0): (
        Vec<Signal>,
        Signal,
        Option<String>,
        bool,
        bool,
    ) = match script.as_str() {
        "onsigterm" => (
            vec![Signal::Term],
            Signal::Term,
            Some("on-sigterm-runs".into()),
            false,
            true,
        ),
        "onshutdown.sigterm" => (
            vec![Signal::Term],
            Signal::Term,
            Some("on-sigterm-runs".into()),
            true,
            true,
        ),
        "onsigint" => (
            vec![Signal::Int],
            Signal::Int,
            Some("on-sigint-runs".into()),
            false,
            true,
        ),
        "onshutdown.sigint" => (
            vec![Signal::Int],
            Signal::Int,
            Some("on-sigint-runs".into()),
            true,
            true,
        ),
        "onsigusr2" => (
            vec![Signal::Usr2],
            Signal::Usr2,
            Some("on-sigusr2-runs".into()),
            false,
            true,
        ),
        "onshutdown.sigusr2" => (
            vec![Signal::Usr2],
            Signal::Usr2,
            Some("on-sigusr2-runs".into()),
            true,
            true,
        ),
        // terminus.onmultiple.js listens for `signal: SIGNAL` plus the default SIGTERM.
        "onmultiple" => {
            let signal = signal_named(&argument);
            let line = format!("on-{}-runs", argument.to_lowercase());
            (vec![signal, Signal::Term], signal, Some(line), false, true)
        }
        "onshutdown.multiple" => {
            let signal = signal_named(&argument);
            let line = format!("on-{}-runs", argument.to_lowercase());
            (
                vec![Signal::Usr2, Signal::Int, Signal::Term],
                signal,
                Some(line),
                true,
                true,
            )
        }
        "useExit0" => (vec![Signal::Term], Signal::Term, None, false, argument == "true"),
        "multiserver" => {
            let servers: Vec<Terminus> = (1..=3)
                .map(|n| {
                    let controller = Terminus::builder()
                        .signals([Signal::Term])
                        .on_signal("print", hook(format!("server{n}:onSignal")))
                        .build()
                        .unwrap();
                    // terminus listens from `createTerminus`; here, from this call.
                    controller.listen_for_signals();
                    controller.mark_listeners_bound();
                    controller
                })
                .collect();
            kill_self(Signal::Term);
            for server in &servers {
                let outcome = server.run(NoConnections).await;
                assert!(outcome.is_graceful());
            }
            std::process::exit(0);
        }
        other => panic!("unknown standalone script {other}"),
    };
    let mut builder = Terminus::builder()
        .signals(signals)
        .exit_code_policy(ExitCodePolicy::from_use_exit0(use_exit0));
    if let Some(line) = on_signal {
        builder = builder.on_signal("print", hook(line));
    }
    if on_shutdown {
        builder = builder.on_shutdown("print", hook("on-shutdown-runs".to_owned()));
    }
    let controller = builder.build().unwrap();
    // terminus listens from `createTerminus`; here, from this call.
    controller.listen_for_signals();
    controller.mark_listeners_bound();
    kill_self(signal);
    let outcome = controller.run(NoConnections).await;
    std::process::exit(i32::from(outcome.exit_status()));
}

#[test]
fn runs_on_signal_when_getting_the_sigterm_signal() {
    assert_eq!(run_child("onsigterm", "").lines, ["on-sigterm-runs"]);
}

#[test]
fn runs_on_shutdown_after_sigterm_on_signal() {
    assert_eq!(
        run_child("onshutdown.sigterm", "").lines,
        ["on-sigterm-runs", "on-shutdown-runs"]
    );
}

#[test]
fn runs_on_signal_when_getting_sigint_signal() {
    assert_eq!(run_child("onsigint", "").lines, ["on-sigint-runs"]);
}

#[test]
fn runs_on_shutdown_after_sigint_on_signal() {
    assert_eq!(
        run_child("onshutdown.sigint", "").lines,
        ["on-sigint-runs", "on-shutdown-runs"]
    );
}

#[test]
fn runs_on_signal_when_getting_sigusr2_signal() {
    assert_eq!(run_child("onsigusr2", "").lines, ["on-sigusr2-runs"]);
}

#[test]
fn runs_on_shutdown_after_sigusr2_on_signal() {
    assert_eq!(
        run_child("onshutdown.sigusr2", "").lines,
        ["on-sigusr2-runs", "on-shutdown-runs"]
    );
}

#[test]
fn runs_on_signal_when_killed_with_sigterm_and_multiple_signals_are_listened_for() {
    assert_eq!(run_child("onmultiple", "SIGTERM").lines, ["on-sigterm-runs"]);
}

#[test]
fn runs_on_signal_when_killed_with_sigint_and_multiple_signals_are_listened_for() {
    assert_eq!(run_child("onmultiple", "SIGINT").lines, ["on-sigint-runs"]);
}

#[test]
fn runs_on_signal_when_killed_with_sigusr2_and_multiple_signals_are_listened_for() {
    assert_eq!(run_child("onmultiple", "SIGUSR2").lines, ["on-sigusr2-runs"]);
}

#[test]
fn runs_on_shutdown_after_on_signal_when_killed_with_sigterm_and_multiple_signals_are_listened_for() {
    assert_eq!(
        run_child("onshutdown.multiple", "SIGTERM").lines,
        ["on-sigterm-runs", "on-shutdown-runs"]
    );
}

#[test]
fn runs_on_shutdown_after_on_signal_when_killed_with_sigint_and_multiple_signals_are_listened_for() {
    assert_eq!(
        run_child("onshutdown.multiple", "SIGINT").lines,
        ["on-sigint-runs", "on-shutdown-runs"]
    );
}

#[test]
fn runs_on_shutdown_after_on_signal_when_killed_with_sigusr2_and_multiple_signals_are_listened_for() {
    assert_eq!(
        run_child("onshutdown.multiple", "SIGUSR2").lines,
        ["on-sigusr2-runs", "on-shutdown-runs"]
    );
}

#[test]
fn manages_multiple_servers() {
    let mut lines = run_child("multiserver", "").lines;
    // DIFFERENCE: the three controllers shut down concurrently, not one after another,
    // so their lines may interleave in any order; all three must run.
    lines.sort();
    assert_eq!(
        lines,
        ["server1:onSignal", "server2:onSignal", "server3:onSignal"]
    );
}

#[tokio::test]
async fn accepts_custom_headers() {
    let (_c, layer) = terminus(Check::new("health", |_| async { Ok(None) }), "/health", |b| {
        b.headers([
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Methods", "OPTIONS, POST, GET"),
        ])
    });
    let server = LayeredApp::start(layer).await;
    let reply = fetch(server.addr, "/health").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers["access-control-allow-methods"],
        "OPTIONS, POST, GET"
    );
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
}

// describe('useExit0')

#[test]
fn allows_to_exit_0_with_use_exit0_true() {
    let run = run_child("useExit0", "true");
    assert_eq!(run.status.code(), Some(0));
    #[cfg(unix)]
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&run.status), None);
}

#[test]
fn allows_to_exit_0_with_use_exit0_false() {
    let run = run_child("useExit0", "false");
    // DIFFERENCE: terminus re-raises the signal, so the process dies by SIGTERM (status
    // null, signal 'SIGTERM'). We exit with 128 + 15 = 143, what a shell reports for a
    // process killed by SIGTERM, and still run everything after the hooks (flushing
    // logs). See ExitCodePolicy::SignalNumber.
    assert_eq!(run.status.code(), Some(143));
}

// ---------------------------------------------------------------------------------------
// lib/terminus-error.spec.js: describe('Terminus error')
// ---------------------------------------------------------------------------------------

#[test]
fn saves_the_cause() {
    let error = CheckError::new("error").with_causes([
        std::io::Error::other("some error"),
        std::io::Error::other("some other error"),
    ]);
    let Some(Causes::Errors(causes)) = error.causes() else {
        panic!("the causes were not saved: {error:?}");
    };
    let messages: Vec<&str> = causes.iter().map(|cause| cause.message()).collect();
    assert_eq!(messages, ["some error", "some other error"]);
}
