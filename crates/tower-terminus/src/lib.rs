//! Tower middleware for graceful shutdown and Kubernetes probes.
//!
//! [`TerminusLayer`] wraps any tower HTTP service (axum, hyper, tonic) and
//!
//! - answers the probe paths (`/livez`, `/readyz`, `/startupz`, per-check paths like
//!   `/readyz/db`, terminus-style custom paths) itself, before the inner service runs,
//!   from the [`Terminus`]'s health checks; probe requests are never counted as in flight;
//! - renders probe bodies as terminus JSON (default), Kubernetes text (`?verbose`) or
//!   `application/health+json` (by `Accept`), with failure reasons withheld unless
//!   [`TerminusLayerBuilder::expose_failure_reasons`] is set;
//! - counts every other request as in flight from `call` until its response body
//!   ends, fails or is dropped, so that shutdown waits for streaming responses too
//!   (a server that counts requests at its connections, as `axum_terminus::serve`
//!   does, calls the layer inside `terminus_core::server::call_tracked`, and the layer
//!   leaves the count of that request to it: each request is counted once, by whoever
//!   called the layer);
//! - adds `Connection: close` to HTTP/1.x responses once the server is draining, so
//!   keep-alive clients take their next request elsewhere (never on HTTP/2, where
//!   the server sends GOAWAY instead).
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_terminus::{TerminusLayer, Terminus};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().build()?;
//! let app = ServiceBuilder::new()
//!     .layer(TerminusLayer::new(&terminus))
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("hello"))))
//!     }));
//!
//! // Still starting (no server said it is listening): readiness fails, liveness passes.
//! let probe = app.clone().oneshot(Request::get("/readyz").body(Full::default())?).await?;
//! assert_eq!(probe.status(), StatusCode::SERVICE_UNAVAILABLE);
//! let probe = app.clone().oneshot(Request::get("/livez").body(Full::default())?).await?;
//! assert_eq!(probe.status(), StatusCode::OK);
//!
//! terminus.shutdown("deploy");
//! let response = app.oneshot(Request::get("/").body(Full::default())?).await?;
//! assert_eq!(response.headers()["connection"], "close");
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "hello");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
/// The lifecycle types a layer user needs, so that `tower-terminus` alone is enough
/// for a server that is not `axum-terminus` (tonic's, hyper's).
pub use terminus_core::{health, with_state, ConfigError, NoConnections, Outcome, Phase, Terminus};

#[cfg(test)]
mod tests;

/// The crate's README, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct Readme;
