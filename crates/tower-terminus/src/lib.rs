//! Tower middleware for graceful shutdown and Kubernetes probes.
//!
//! [`TerminusLayer`] wraps any tower HTTP service (axum, hyper, tonic) and
//!
//! - answers the probe paths (`/livez`, `/readyz`, `/startupz`, per-check paths like
//!   `/readyz/db`, terminus-style custom paths) itself, before the inner service runs,
//!   from the controller's health checks; probe requests are never counted as in flight;
//! - renders probe bodies as terminus JSON (default), Kubernetes text (`?verbose`) or
//!   `application/health+json` (by `Accept`), with failure reasons withheld unless
//!   [`TerminusLayerBuilder::expose_failure_reasons`] is set;
//! - counts every other request as in flight from `call` until its response body
//!   ends, fails or is dropped, so that shutdown waits for streaming responses too;
//! - adds `Connection: close` to HTTP/1.x responses once the server is draining, so
//!   keep-alive clients take their next request elsewhere (never on HTTP/2, where
//!   the server sends GOAWAY instead).
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use terminus_core::ShutdownController;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_terminus::TerminusLayer;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let controller = ShutdownController::builder().build()?;
//! let app = ServiceBuilder::new()
//!     .layer(TerminusLayer::new(&controller))
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
//!     }));
//!
//! // Still starting: readiness fails.
//! let probe = app.clone().oneshot(Request::get("/readyz").body(Full::default())?).await?;
//! assert_eq!(probe.status(), StatusCode::SERVICE_UNAVAILABLE);
//!
//! controller.mark_listeners_bound();
//! let probe = app.clone().oneshot(Request::get("/readyz?verbose").body(Full::default())?).await?;
//! assert_eq!(probe.status(), StatusCode::OK);
//!
//! controller.shutdown("deploy");
//! let response = app.oneshot(Request::get("/").body(Full::default())?).await?;
//! assert_eq!(response.headers()["connection"], "close");
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "hello");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod future;
mod layer;
mod probe;
mod render;
mod service;

pub use body::TerminusBody;
pub use future::ResponseFuture;
pub use layer::{
    TerminusLayer, TerminusLayerBuilder, DEFAULT_LIVENESS_PATH, DEFAULT_READINESS_PATH, DEFAULT_STARTUP_PATH,
    HEALTHZ_PATH,
};
pub use render::ProbeFormat;
pub use service::TerminusService;
/// What a probe path reports on: another name for [`CheckKind`].
pub use terminus_core::CheckKind as ProbeKind;
pub use terminus_core::{health, Check, CheckError, CheckKind, ConfigError, Phase, ShutdownController};

#[cfg(test)]
mod tests;
