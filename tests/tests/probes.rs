//! Probes over real HTTP: an axum app behind `TerminusLayer`, served on loopback, asked by
//! a real HTTP/1.1 client. Every format, HEAD, 405, query strings, `?exclude`, per-check
//! paths, `Accept` negotiation, headers while shutting down, and checks that hang, panic
//! or are flooded.
//!
//! Nothing here measures speed: where time matters the bound is generous and only proves
//! that an answer comes (a hanging check does not hang the probe).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use terminus_core::server::ServerExt as _;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use terminus_core::health::{checks, Check, CheckError};
use terminus_core::Terminus;
use terminus_tests::{LayeredApp, Reply};
use tokio::net::{TcpListener, TcpStream};
use tower_terminus::{ProbeFormat, TerminusLayer};

/// A bound on every request: far above anything a healthy probe needs.
const REQUEST_BOUND: Duration = Duration::from_secs(10);

/// A serving controller with `checks`.
fn serving(checks: impl IntoIterator<Item = Check>) -> Terminus {
    let controller = checks
        .into_iter()
        .fold(Terminus::builder(), |builder, check| builder.check(check))
        .build()
        .unwrap();
    controller.mark_listeners_bound();
    controller
}

async fn fetch(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::new())).unwrap();
        Reply::read(sender.send_request(request).await.unwrap())
            .await
            .unwrap()
    };
    tokio::time::timeout(REQUEST_BOUND, exchange)
        .await
        .expect("the probe answers")
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    fetch(addr, "GET", path, &[]).await
}

fn text(reply: &Reply) -> &str {
    std::str::from_utf8(&reply.body).unwrap()
}

fn json_of(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap()
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn ok(name: &'static str) -> Check {
    Check::new(name, |_| async { Ok(None) })
}

fn failing(name: &'static str) -> Check {
    Check::new(name, |_| async {
        Err(CheckError::new("connection refused by 10.0.0.7:5432"))
    })
}

#[tokio::test]
async fn terminus_json_is_the_default_format() {
    let controller = serving([ok("db").readiness()]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    let reply = get(server.addr, "/readyz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, "content-type"), "application/json");
    assert_eq!(text(&reply), r#"{"status":"ok"}"#);
    assert_eq!(header(&reply, "cache-control"), "no-store");
    assert_eq!(header(&reply, "x-content-type-options"), "nosniff");
    assert_eq!(
        server.app_calls.load(Ordering::SeqCst),
        0,
        "probes never reach the app"
    );
}

#[tokio::test]
async fn verbose_gives_kubernetes_text_with_one_line_per_check() {
    let controller = serving([ok("db").readiness(), failing("cache").readiness().non_critical()]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    let reply = get(server.addr, "/readyz?verbose").await;
    assert_eq!(reply.status, StatusCode::OK, "a non-critical failure warns");
    assert_eq!(header(&reply, "content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        text(&reply),
        "[+]lifecycle ok\n[+]db ok\n[-]cache failed (non-critical): reason withheld\nreadyz check passed\n"
    );
}

#[tokio::test]
async fn kubernetes_text_is_terse_on_success_and_always_verbose_on_failure() {
    let controller = serving([ok("db").readiness(), failing("queue").liveness()]);
    let layer = TerminusLayer::builder(&controller)
        .default_format(ProbeFormat::Kubernetes)
        .build()
        .unwrap();
    let server = LayeredApp::start(layer).await;
    let ready = get(server.addr, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(text(&ready), "ok");
    let live = get(server.addr, "/livez").await;
    assert_eq!(live.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        text(&live),
        "[+]lifecycle ok\n[-]queue failed: reason withheld\nlivez check failed\n"
    );
}

#[tokio::test]
async fn accept_health_json_gives_the_ietf_format() {
    let controller = serving([
        Check::new("db", |_| async { Ok(Some(json!({ "connections": 3 }))) }).readiness(),
        failing("cache").readiness().non_critical(),
    ]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    let reply = fetch(
        server.addr,
        "GET",
        "/readyz",
        &[("accept", "application/health+json")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(header(&reply, "content-type"), "application/health+json");
    let body = json_of(&reply);
    assert_eq!(body["status"], "warn");
    assert_eq!(body["checks"]["lifecycle"][0]["status"], "pass");
    let db = &body["checks"]["db"][0];
    assert_eq!(db["status"], "pass");
    assert_eq!(db["componentType"], "component");
    assert_eq!(db["observedValue"], json!({ "connections": 3 }));
    assert!(db["time"].as_str().unwrap().ends_with('Z'), "RFC 3339 UTC: {db}");
    let cache = &body["checks"]["cache"][0];
    assert_eq!(cache["status"], "warn");
    assert_eq!(cache["output"], "reason withheld");

    // Accept wins over ?verbose; a zero quality does not count.
    let reply = fetch(
        server.addr,
        "GET",
        "/readyz?verbose",
        &[("accept", "text/html, application/health+json;q=0.5")],
    )
    .await;
    assert_eq!(header(&reply, "content-type"), "application/health+json");
    let reply = fetch(
        server.addr,
        "GET",
        "/readyz",
        &[("accept", "application/health+json;q=0")],
    )
    .await;
    assert_eq!(header(&reply, "content-type"), "application/json");
}

#[tokio::test]
async fn head_gets_the_same_status_and_headers_without_a_body() {
    let controller = serving([failing("db").readiness()]);
    let layer = TerminusLayer::builder(&controller)
        .header("x-probe", "yes")
        .unwrap()
        .build()
        .unwrap();
    let server = LayeredApp::start(layer).await;
    let get_reply = get(server.addr, "/readyz").await;
    let head = fetch(server.addr, "HEAD", "/readyz", &[]).await;
    assert_eq!(head.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(head.status, get_reply.status);
    assert!(head.body.is_empty());
    assert_eq!(header(&head, "content-length"), get_reply.body.len().to_string());
    assert_eq!(header(&head, "x-probe"), "yes");
    assert_eq!(header(&head, "content-type"), "application/json");
}

#[tokio::test]
async fn other_methods_get_405_with_allow_and_never_reach_the_app() {
    let controller = serving([]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let reply = fetch(server.addr, method, "/livez", &[]).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(header(&reply, "allow"), "GET, HEAD");
        assert_eq!(header(&reply, "cache-control"), "no-store");
    }
    assert_eq!(server.app_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn query_strings_never_break_matching() {
    let controller = serving([ok("db").readiness()]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    for path in [
        "/readyz?",
        "/readyz?foo=bar&&=&",
        "/readyz?%zz%",
        "/readyz?exclude=",
        "/readyz?exclude=%ff%fe",
        "/readyz?verbose=0&verbose",
    ] {
        let reply = get(server.addr, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", text(&reply));
    }
    // Matching is on the exact path: these belong to the app.
    for path in ["/readyzz", "/READYZ", "/readyz.json"] {
        let reply = get(server.addr, path).await;
        assert_eq!(text(&reply), "hello", "{path}");
    }
}

#[tokio::test]
async fn case_insensitive_matching_is_an_option() {
    let controller = serving([]);
    let layer = TerminusLayer::builder(&controller)
        .case_insensitive(true)
        .build()
        .unwrap();
    let server = LayeredApp::start(layer).await;
    assert_eq!(text(&get(server.addr, "/ReadyZ").await), r#"{"status":"ok"}"#);
}

#[tokio::test]
async fn exclude_skips_checks_and_reports_unknown_names_in_kube_apiserver_wording() {
    let controller = serving([failing("db").readiness(), ok("cache").readiness()]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    assert_eq!(
        get(server.addr, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let reply = get(
        server.addr,
        "/readyz?verbose&exclude=db&exclude=nope&exclude=also%20nope",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        text(&reply),
        "[+]lifecycle ok\n[+]db excluded: ok\n[+]cache ok\n\
         warn: some health checks cannot be excluded: no matches for \"also nope\",\"nope\"\n\
         readyz check passed\n"
    );
    // The lifecycle is not a check: excluding it changes nothing.
    controller.shutdown("test");
    let reply = get(server.addr, "/readyz?exclude=lifecycle&exclude=db").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn per_check_paths_answer_for_one_check_and_unknown_names_get_404() {
    let controller = serving([failing("db").readiness(), ok("cache").readiness()]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    assert_eq!(get(server.addr, "/readyz/cache").await.status, StatusCode::OK);
    let db = get(server.addr, "/readyz/db?verbose").await;
    assert_eq!(db.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(text(&db), "[-]db failed: reason withheld\nreadyz check failed\n");
    assert_eq!(get(server.addr, "/readyz/lifecycle").await.status, StatusCode::OK);
    let unknown = get(server.addr, "/readyz/nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(header(&unknown, "cache-control"), "no-store");
    // A check of another kind is unknown under this probe.
    assert_eq!(get(server.addr, "/livez/db").await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.app_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn failure_reasons_are_withheld_unless_exposed() {
    let controller = serving([failing("db").readiness()]);
    let withheld = LayeredApp::start(TerminusLayer::new(&controller)).await;
    let exposed = LayeredApp::start(
        TerminusLayer::builder(&controller)
            .expose_failure_reasons(true)
            .build()
            .unwrap(),
    )
    .await;
    let secret = "10.0.0.7";
    for path in ["/readyz", "/readyz?verbose"] {
        let reply = get(withheld.addr, path).await;
        assert!(!text(&reply).contains(secret), "{path}: {}", text(&reply));
    }
    let health = fetch(
        withheld.addr,
        "GET",
        "/readyz",
        &[("accept", "application/health+json")],
    )
    .await;
    assert!(!text(&health).contains(secret));

    let json = json_of(&get(exposed.addr, "/readyz").await);
    assert_eq!(
        json,
        json!({ "status": "error",
                "error": { "message": "connection refused by 10.0.0.7:5432" },
                "details": { "message": "connection refused by 10.0.0.7:5432" } })
    );
    let verbose = get(exposed.addr, "/readyz?verbose").await;
    assert!(text(&verbose).contains("[-]db failed: connection refused by 10.0.0.7:5432\n"));
}

#[tokio::test]
async fn configured_headers_are_sent_on_every_probe_answer_including_during_shutdown() {
    let controller = serving([ok("db").readiness()]);
    let layer = TerminusLayer::builder(&controller)
        .header("access-control-allow-origin", "*")
        .unwrap()
        .header("x-pod", "web-1")
        .unwrap()
        .build()
        .unwrap();
    let server = LayeredApp::start(layer).await;
    controller.shutdown("test");
    for (method, path, status) in [
        ("GET", "/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ("GET", "/livez", StatusCode::OK),
        ("HEAD", "/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ("POST", "/readyz", StatusCode::METHOD_NOT_ALLOWED),
        ("GET", "/readyz/nope", StatusCode::NOT_FOUND),
    ] {
        let reply = fetch(server.addr, method, path, &[]).await;
        assert_eq!(reply.status, status, "{method} {path}");
        assert_eq!(
            header(&reply, "access-control-allow-origin"),
            "*",
            "{method} {path}"
        );
        assert_eq!(header(&reply, "x-pod"), "web-1", "{method} {path}");
        assert_eq!(header(&reply, "cache-control"), "no-store", "{method} {path}");
        assert_eq!(
            header(&reply, "x-content-type-options"),
            "nosniff",
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_check_that_hangs_forever_fails_at_its_timeout_and_the_probe_answers() {
    let timeout = Duration::from_millis(200);
    let controller = serving([Check::new("hangs", |_| std::future::pending())
        .readiness()
        .timeout(timeout)]);
    let server = LayeredApp::start(
        TerminusLayer::builder(&controller)
            .expose_failure_reasons(true)
            .build()
            .unwrap(),
    )
    .await;
    // Generous: the check's timeout plus a margin that only a hang would exceed.
    let reply = tokio::time::timeout(
        timeout + Duration::from_secs(3),
        get(server.addr, "/readyz?verbose"),
    )
    .await
    .expect("answered although the check never finishes");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        text(&reply).contains("[-]hangs failed: timed out after 200ms"),
        "{}",
        text(&reply)
    );
}

#[tokio::test]
async fn a_check_that_panics_fails_the_probe_and_the_server_keeps_serving() {
    let controller = serving([
        Check::new("panics", |_| async { panic!("bug in the check") })
            .readiness()
            .cache_ttl(Duration::ZERO),
        ok("db").readiness(),
    ]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    for _ in 0..3 {
        let reply = get(server.addr, "/readyz?verbose").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            text(&reply),
            "[+]lifecycle ok\n[-]panics failed: reason withheld\n[+]db ok\nreadyz check failed\n"
        );
    }
    assert_eq!(text(&get(server.addr, "/").await), "hello");
    assert_eq!(get(server.addr, "/livez").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_flood_of_100_concurrent_probes_runs_the_check_once() {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let check = Check::new("db", move |_| {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            // Long enough that the probes overlap the run.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(None)
        }
    })
    .readiness()
    // A long TTL so that a slow machine cannot turn "once" into "twice".
    .cache_ttl(Duration::from_secs(600));
    let controller = serving([check]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    let addr = server.addr;
    let probes: Vec<_> = (0..100)
        .map(|_| tokio::spawn(async move { get(addr, "/readyz").await.status }))
        .collect();
    for probe in probes {
        assert_eq!(probe.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(controller.in_flight(), 0, "probes are never in flight");
}

#[tokio::test]
async fn startup_checks_hold_readiness_until_they_pass() {
    let warm = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&warm);
    let controller = Terminus::builder()
        .startup(
            Check::new("cache-warm", move |_| {
                let warm = flag.load(Ordering::SeqCst);
                async move {
                    if warm {
                        Ok(None)
                    } else {
                        Err(CheckError::new("warming"))
                    }
                }
            })
            .cache_ttl(Duration::ZERO),
        )
        .build()
        .unwrap();
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    controller.mark_listeners_bound();
    assert_eq!(
        get(server.addr, "/startupz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get(server.addr, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(server.addr, "/livez").await.status, StatusCode::OK);
    assert!(!controller.is_started());

    warm.store(true, Ordering::SeqCst);
    assert_eq!(get(server.addr, "/startupz").await.status, StatusCode::OK);
    assert!(controller.is_started());
    assert_eq!(get(server.addr, "/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn liveness_passes_while_draining_and_fails_after_a_fatal_error() {
    let controller = Terminus::builder().shutdown_on_fatal(false).build().unwrap();
    controller.mark_listeners_bound();
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    controller.shutdown("deploy");
    assert_eq!(get(server.addr, "/livez").await.status, StatusCode::OK);
    assert_eq!(
        get(server.addr, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    controller.set_fatal("address in use");
    let live = get(server.addr, "/livez?verbose").await;
    assert_eq!(live.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        text(&live),
        "[-]lifecycle failed: reason withheld\nlivez check failed\n"
    );
}

#[tokio::test]
async fn the_tcp_check_flips_readiness_when_its_dependency_stops() {
    let dependency = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = dependency.local_addr().unwrap().to_string();
    let controller = serving([checks::tcp("db", address).readiness().cache_ttl(Duration::ZERO)]);
    let server = LayeredApp::start(TerminusLayer::new(&controller)).await;
    assert_eq!(get(server.addr, "/readyz").await.status, StatusCode::OK);
    drop(dependency);
    assert_eq!(
        get(server.addr, "/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn invalid_probe_configuration_fails_at_build_naming_the_field() {
    let controller = Terminus::builder().check(ok("db")).build().unwrap();
    let field = |builder: tower_terminus::TerminusLayerBuilder| builder.build().unwrap_err().field();
    assert_eq!(
        field(TerminusLayer::builder(&controller).readiness_path("readyz")),
        "readiness_path"
    );
    assert_eq!(
        field(TerminusLayer::builder(&controller).custom_path("/livez", ["db"])),
        "custom_path"
    );
    assert_eq!(
        field(TerminusLayer::builder(&controller).custom_path("/health", ["nope"])),
        "custom_path"
    );
    assert_eq!(
        field(TerminusLayer::builder(&controller).status_ok(302)),
        "status_ok"
    );
    assert_eq!(
        field(TerminusLayer::builder(&controller).status_error(200)),
        "status_error"
    );
    assert_eq!(
        field(TerminusLayer::builder(&controller).ok_body(json!("up"))),
        "ok_body"
    );
    assert_eq!(
        field(
            TerminusLayer::builder(&controller)
                .case_insensitive(true)
                .custom_path("/LIVEZ", ["db"])
        ),
        "custom_path"
    );
    let error = Terminus::builder()
        .check(ok("db"))
        .check(ok("db"))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "check.name");
    let error = Terminus::builder()
        .check(ok("db").timeout(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(error.field(), "check.timeout");
}
