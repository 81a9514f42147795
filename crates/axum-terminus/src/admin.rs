//! The admin listener: a port that serves the probes and the preStop hook, nothing else.
//!
//! Kubernetes probes the pod directly, so they need not share a port with public
//! traffic (lightship serves them on their own port too). A separate port keeps the
//! probes reachable when the public listener is saturated, keeps them out of the
//! public ingress, and is where detailed reports belong. The admin listener reports
//! the whole process: it fails readiness while any shutdown phase runs, and it closes
//! with the other listeners at Closing.
//!
//! It also answers `GET /prestop`, a preStop hook for images without `sleep` (see
//! [`PRESTOP_PATH`]), and the maintenance switch, `POST`/`DELETE /maintenance` (see
//! [`MAINTENANCE_PATH`]).
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use axum_terminus::{Server, Terminus};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().build()?;
//! let public = Router::new().route("/", get(|| async { "hello" })); // no probes here
//! let outcome = Server::new(&terminus)
//!     .listener(axum_terminus::bind("0.0.0.0:3000", &terminus).await?, public)
//!     .admin_listener(axum_terminus::bind("0.0.0.0:9000", &terminus).await?)
//!     .run()
//!     .await;
//! # let _ = outcome; Ok(()) }
//! ```

use axum::http::{Method, StatusCode};
use axum::routing::{any, get};
use axum::Router;
use terminus_core::{Phase, Terminus};
use tower_terminus::TerminusLayer;

/// The admin router's preStop endpoint: `GET /prestop` starts the shutdown and is
/// answered when Closing begins.
///
/// Only `GET` (what an `httpGet` lifecycle hook sends); any other method gets `405`.
/// The request starts Draining (readiness fails, traffic is still served) and is
/// answered `200` once the drain delay is over. Kubernetes runs a container's preStop
/// hook before it sends SIGTERM, so
///
/// ```yaml
/// lifecycle:
///   preStop:
///     httpGet: { path: /prestop, port: admin }
/// ```
///
/// holds the kubelet's SIGTERM until the drain delay is over, with no `sleep` binary in
/// the image (distroless images have none). The SIGTERM then arrives during Closing and
/// the shutdown goes on as usual (the first signal after a shutdown that started without
/// one never forces it), so the process exits 0. The path names the caller and the
/// contract, a preStop hook that returns when the pod may stop taking traffic, rather
/// than a general "shutdown" button; it is never a probe path. Anyone who can reach the
/// admin port can stop the process this way, as anyone who can reach it can already read
/// the failure reasons: keep the port out of every Service and inside the pod's network
/// policy. See `docs/kubernetes.md` for when to prefer it to a `sleep` preStop hook or
/// none at all.
pub const PRESTOP_PATH: &str = "/prestop";

/// The admin router's maintenance switch: `POST /maintenance` takes the instance out of
/// rotation (readiness fails, gRPC health says `NOT_SERVING`, requests are still
/// served), `DELETE /maintenance` puts it back, `GET /maintenance` says which it is.
/// See [`Terminus::set_maintenance`]. Only on the admin listener: never route it on a
/// public port.
///
/// ```sh
/// curl -X POST localhost:9000/maintenance     # out of rotation
/// curl -X DELETE localhost:9000/maintenance   # back in
/// ```
pub const MAINTENANCE_PATH: &str = "/maintenance";

/// The reason the shutdown reports when `GET /prestop` started it.
const PRESTOP_REASON: &str = "preStop hook";

/// The probe layer of the admin listener: the default probe paths, with failure
/// reasons in the bodies ([`expose_failure_reasons`](crate::TerminusLayerBuilder::expose_failure_reasons)),
/// which a public port withholds. For other settings, build a layer and pass it to
/// [`admin_router`].
pub fn admin_layer(terminus: &Terminus) -> TerminusLayer {
    TerminusLayer::builder(terminus)
        .expose_failure_reasons(true)
        .build()
        // Only paths and headers can be invalid, and these are the defaults.
        .unwrap_or_else(|_| TerminusLayer::new(terminus))
}

/// A router that answers the probes of `layer`, `GET /prestop` (see
/// [`PRESTOP_PATH`]), the maintenance switch (see [`MAINTENANCE_PATH`]), and
/// `404 Not Found` to everything else: what
/// [`Server::admin_listener`](crate::Server::admin_listener) serves. Add routes to it
/// (a `/metrics` endpoint, say) and serve it with
/// [`Server::admin_listener_with`](crate::Server::admin_listener_with), outside the
/// connection cap.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = axum_terminus::Terminus::builder().build()?;
/// let layer = axum_terminus::TerminusLayer::builder(&terminus)
///     .healthz_alias(true)
///     .build()?;
/// let admin = axum_terminus::admin_router(layer);
/// # let _ = admin; Ok(()) }
/// ```
pub fn admin_router(layer: TerminusLayer) -> Router {
    let terminus = layer.terminus().clone();
    let switch = terminus.clone();
    Router::new()
        .route(
            PRESTOP_PATH,
            get(move |method: Method| prestop(terminus.clone(), method)),
        )
        .route(
            MAINTENANCE_PATH,
            any(move |method: Method| maintenance(switch.clone(), method)),
        )
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(layer)
}

/// Starts the shutdown and answers once Closing begins, so that the kubelet's SIGTERM,
/// which waits for the preStop hook, comes after the drain delay.
async fn prestop(terminus: Terminus, method: Method) -> (StatusCode, &'static str) {
    // axum hands HEAD to a GET route; a HEAD is not a preStop hook.
    if method != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, "only GET starts the shutdown\n");
    }
    tracing::info!(target: "terminus", "preStop hook: draining until Closing begins");
    terminus.shutdown(PRESTOP_REASON);
    let mut phases = terminus.subscribe();
    // The sender lives in `terminus`, so the channel cannot close while we wait.
    let _ = phases.wait_for(|phase| *phase >= Phase::Closing).await;
    (StatusCode::OK, "closing: the drain delay is over\n")
}

/// The maintenance switch: `POST` on, `DELETE` off, `GET` (and `HEAD`) the state.
async fn maintenance(
    terminus: Terminus,
    method: Method,
) -> (StatusCode, [(http::HeaderName, &'static str); 1], &'static str) {
    let allow = [(http::header::ALLOW, "GET, HEAD, POST, DELETE")];
    match method {
        Method::POST => terminus.set_maintenance(true),
        Method::DELETE => terminus.set_maintenance(false),
        Method::GET | Method::HEAD => {}
        _ => {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                allow,
                "POST turns maintenance on, DELETE off\n",
            )
        }
    }
    let body = if terminus.in_maintenance() {
        "maintenance on: readiness fails, requests are still served\n"
    } else {
        "maintenance off\n"
    };
    (StatusCode::OK, allow, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use terminus_core::server::ServerExt;
    use tower::ServiceExt;

    #[tokio::test]
    async fn admin_router_answers_probes_and_nothing_else() {
        let terminus = Terminus::builder().build().unwrap();
        terminus.mark_listeners_bound();
        let admin = admin_router(admin_layer(&terminus));
        let ready = admin
            .clone()
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(ready.status(), StatusCode::OK);
        let other = admin
            .clone()
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
        terminus.shutdown("test");
        let ready = admin
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    async fn readyz_verbose(router: Router) -> String {
        let response = router
            .oneshot(Request::get("/readyz?verbose").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    async fn call(router: &Router, method: Method, path: &str) -> (StatusCode, String) {
        let response = router
            .clone()
            .oneshot(
                Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn prestop_starts_draining_and_answers_when_closing_begins() {
        let terminus = Terminus::builder()
            .drain_delay(std::time::Duration::from_secs(5))
            .build()
            .unwrap();
        terminus.mark_listeners_bound();
        let admin = admin_router(admin_layer(&terminus));
        let runner = tokio::spawn({
            let terminus = terminus.clone();
            async move { terminus.run(terminus_core::NoConnections).await }
        });
        let started = tokio::time::Instant::now();
        let hook = tokio::spawn({
            let admin = admin.clone();
            async move { call(&admin, Method::GET, PRESTOP_PATH).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(
            terminus.phase(),
            Phase::Draining,
            "the request starts the shutdown"
        );
        assert_eq!(
            terminus.shutdown_reason(),
            Some(terminus_core::ShutdownReason::from(PRESTOP_REASON))
        );
        assert_eq!(
            call(&admin, Method::GET, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(!hook.is_finished(), "held while Draining");

        let (status, body) = hook.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(terminus.phase() >= Phase::Closing);
        assert_eq!(
            started.elapsed(),
            std::time::Duration::from_secs(5),
            "answered at Closing"
        );
        assert!(runner.await.unwrap().is_graceful());
        // Once Closing has begun, a repeated hook is answered at once.
        assert_eq!(call(&admin, Method::GET, PRESTOP_PATH).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_maintenance_switch_fails_readiness_and_back_and_a_shutdown_wins() {
        let terminus = Terminus::builder().build().unwrap();
        terminus.mark_listeners_bound();
        let admin = admin_router(admin_layer(&terminus));
        assert_eq!(call(&admin, Method::GET, "/readyz").await.0, StatusCode::OK);
        let (status, body) = call(&admin, Method::POST, MAINTENANCE_PATH).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(terminus.in_maintenance());
        let (status, body) = call(&admin, Method::GET, "/readyz?verbose").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("[-]lifecycle failed: maintenance"), "{body}");
        assert_eq!(call(&admin, Method::GET, "/livez").await.0, StatusCode::OK);
        assert!(call(&admin, Method::GET, MAINTENANCE_PATH)
            .await
            .1
            .contains("maintenance on"));
        assert_eq!(
            call(&admin, Method::PUT, MAINTENANCE_PATH).await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );

        assert_eq!(
            call(&admin, Method::DELETE, MAINTENANCE_PATH).await.0,
            StatusCode::OK
        );
        assert_eq!(call(&admin, Method::GET, "/readyz").await.0, StatusCode::OK);

        // A shutdown wins over the switch, whichever way it is set.
        terminus.set_maintenance(true);
        terminus.shutdown("test");
        terminus.set_maintenance(false);
        assert_eq!(
            call(&admin, Method::GET, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(!terminus.is_ready());
    }

    #[tokio::test]
    async fn prestop_takes_only_get() {
        let terminus = Terminus::builder().build().unwrap();
        terminus.mark_listeners_bound();
        let admin = admin_router(admin_layer(&terminus));
        for method in [Method::HEAD, Method::POST, Method::DELETE] {
            let (status, _) = call(&admin, method.clone(), PRESTOP_PATH).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        }
        assert_eq!(
            terminus.phase(),
            Phase::Serving,
            "nothing but GET starts a shutdown"
        );
    }

    #[tokio::test]
    async fn admin_layer_exposes_the_failure_reason_that_the_default_layer_withholds() {
        let terminus = Terminus::builder().build().unwrap();
        terminus.mark_listeners_bound();
        terminus.shutdown("test");
        let public = readyz_verbose(admin_router(TerminusLayer::new(&terminus))).await;
        let admin = readyz_verbose(admin_router(admin_layer(&terminus))).await;
        assert!(admin.contains("[-]lifecycle failed: shutting down"), "{admin}");
        assert!(
            public.contains("[-]lifecycle failed: reason withheld"),
            "{public}"
        );
    }
}
