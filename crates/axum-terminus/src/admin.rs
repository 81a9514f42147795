//! The admin listener: a port that serves only the probes.
//!
//! Kubernetes probes the pod directly, so they need not share a port with public
//! traffic (lightship serves them on their own port too). A separate port keeps the
//! probes reachable when the public listener is saturated, keeps them out of the
//! public ingress, and is where detailed reports belong. The admin listener reports
//! the whole process: it fails readiness while any shutdown phase runs, and it closes
//! with the other listeners at Closing.
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

use axum::http::StatusCode;
use axum::Router;
use terminus_core::Terminus;
use tower_terminus::TerminusLayer;

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

/// A router that answers the probes of `layer` and `404 Not Found` to everything
/// else: what [`Server::admin_listener`](crate::Server::admin_listener) serves.
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
    Router::new()
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(layer)
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
