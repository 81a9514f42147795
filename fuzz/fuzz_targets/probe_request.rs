//! Fuzzes the probe request handling of `TerminusLayer` with raw bytes.
//!
//! Input: one flags byte (lifecycle phase, case folding, HTTP version), then lines:
//! the method, the request target (path and query), and `name: value` headers. Bytes
//! that do not make a valid `http::Request` are skipped, as hyper would have rejected
//! them with a 400 before any middleware ran.
//!
//! The target asserts what must hold for every request: no panic, an answer in bounded
//! time, `Cache-Control: no-store` and no body on `HEAD` for probes, and the inner service
//! called exactly when the path is not a probe path.
#![no_main]

use terminus_core::server::ServerExt as _;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use terminus_core::health::{Check, CheckError};
use terminus_core::Terminus;
use tower::{service_fn, ServiceExt};
use tower_layer::Layer;
use tower_terminus::TerminusLayer;

/// The same oracle as the property test's: one file, so they cannot drift apart.
#[path = "../../tests/src/probe_oracle.rs"]
mod probe_oracle;
use probe_oracle::is_probe_path;

static INNER_CALLS: AtomicUsize = AtomicUsize::new(0);

struct World {
    runtime: tokio::runtime::Runtime,
    /// Indexed by phase: starting, serving, draining.
    controllers: [Terminus; 3],
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let controller = || {
            Terminus::builder()
                .readiness(Check::new("db", |_| async { Ok(None) }))
                .liveness(Check::new("disk", |_| async { Err(CheckError::new("disk full")) }).non_critical())
                .readiness(
                    Check::new("cache", |_| async { Err(CheckError::new("cache down")) }).non_critical(),
                )
                .build()
                .expect("valid configuration")
        };
        let starting = controller();
        let serving = controller();
        serving.mark_listeners_bound();
        let draining = controller();
        draining.mark_listeners_bound();
        draining.shutdown("fuzz");
        World {
            runtime,
            controllers: [starting, serving, draining],
        }
    })
}

fn request(flags: u8, text: &[u8]) -> Option<Request<Full<Bytes>>> {
    let mut lines = text.split(|byte| *byte == b'\n');
    let method = Method::from_bytes(lines.next()?).ok()?;
    let uri = Uri::try_from(lines.next()?).ok()?;
    let version = [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2][usize::from(flags >> 3) % 3];
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .version(version)
        .body(Full::new(Bytes::from_static(b"body")))
        .ok()?;
    for line in lines {
        let Some(colon) = line.iter().position(|byte| *byte == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        request.headers_mut().append(name, value);
    }
    Some(request)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, text)) = data.split_first() else {
        return;
    };
    let Some(request) = request(flags, text) else {
        return;
    };
    let world = world();
    let phase = usize::from(flags) % 3;
    let case_insensitive = flags & 4 != 0;
    let layer = TerminusLayer::builder(&world.controllers[phase])
        .case_insensitive(case_insensitive)
        .build()
        .expect("valid probe configuration");
    let service = layer.layer(service_fn(|_request: Request<Full<Bytes>>| {
        INNER_CALLS.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"inner")))) }
    }));
    let path = request.uri().path().to_owned();
    let head = request.method() == Method::HEAD;
    let before = INNER_CALLS.load(Ordering::SeqCst);

    let (parts, body) = world.runtime.block_on(async {
        let response = tokio::time::timeout(Duration::from_secs(5), service.oneshot(request))
            .await
            .expect("answered in bounded time")
            .expect("infallible");
        let (parts, body) = response.into_parts();
        (
            parts,
            body.collect().await.expect("a probe body never fails").to_bytes(),
        )
    });
    let calls = INNER_CALLS.load(Ordering::SeqCst) - before;

    if is_probe_path(&path, case_insensitive) {
        assert_eq!(calls, 0, "probe path {path:?} reached the inner service");
        assert!(!parts.status.is_redirection(), "a probe never redirects");
        assert_eq!(
            parts
                .headers
                .get(header::CACHE_CONTROL)
                .map(HeaderValue::as_bytes),
            Some(&b"no-store"[..])
        );
        if head {
            assert!(body.is_empty(), "HEAD answered with a body");
        }
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("disk full") && !text.contains("cache down"),
            "a reason leaked: {text}"
        );
    } else {
        assert_eq!(calls, 1, "{path:?} did not reach the inner service");
        assert_eq!(body, Bytes::from_static(b"inner"));
    }
});
