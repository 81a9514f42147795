//! gRPC for terminus-rs: `grpc.health.v1` answered from the same checks and lifecycle
//! as the HTTP probes, and server streams that end at Draining with `UNAVAILABLE`.
//!
//! - [`HealthService`]: `Check` and `Watch` from the `Terminus`'s health registry (cache,
//!   single flight, timeouts) and its phase. `""` is readiness; named services map to
//!   the checks (or the whole probe) you give them; from Draining on every service is
//!   `NOT_SERVING`, and `Watch` streams say so and end, so no watcher holds the drain.
//! - [`until_draining`]: wraps a server-streaming response so that it ends at Draining
//!   with `UNAVAILABLE`, which tells the client to call again elsewhere. It returns
//!   terminus-core's generic [`UntilDraining`] (axum-terminus's SSE streams use the same
//!   type); [`DrainingStatus::status`] sets another final status.
//!
//! Serve the tonic `Routes` with `axum_terminus::Server` (`http2_only()` for a gRPC-only
//! port, or HTTP/1 and HTTP/2 with axum routes beside): it sends GOAWAY at Draining,
//! waits for RPCs in flight within `drain_timeout`, and cuts and reports what is left
//! with its gRPC method. `docs/grpc.md` has the whole setup, what clients must do, and
//! the Kubernetes probe settings.
//!
//! ```no_run
//! use axum_terminus::health::checks;
//! use axum_terminus::health::CheckKind;
//! use axum_terminus::{Layer, Server, Terminus, TerminusLayer};
//! use tonic_terminus::HealthService;
//!
//! # async fn run() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder()
//!     .from_env()?
//!     .readiness(checks::tcp("db", "127.0.0.1:5432"))
//!     .build()?;
//! let health = HealthService::builder(&terminus)
//!     .service("shop.Orders", ["db"])
//!     .probe_service("liveness", CheckKind::Liveness)
//!     .build()?
//!     .into_server();
//! let routes = tonic::service::Routes::new(health); // .add_service(your services)
//! // The HTTP probes answer on the same port (over HTTP/2).
//! let app = TerminusLayer::new(&terminus).layer(routes);
//! let listener = axum_terminus::bind("0.0.0.0:50051", &terminus).await?;
//! let outcome = Server::new(&terminus).http2_only().listener(listener, app).run().await;
//! Ok(outcome.exit_code())
//! # }
//! ```
//!
//! This crate depends on tonic, tonic-health and terminus-core only, not on axum: the
//! health service works under any server, tonic's own included (with the weaker
//! shutdown that server gives; see `docs/grpc.md`).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod builder;
mod health_service;
mod state;
mod until_draining;
mod watch;

pub use builder::{HealthServiceBuilder, DEFAULT_WATCH_INTERVAL};
pub use health_service::HealthService;
pub use terminus_core::UntilDraining;
pub use until_draining::{until_draining, DrainingStatus, DRAINING_MESSAGE};
pub use watch::WatchStream;

/// The `grpc.health.v1` messages, client and server that tonic-health generates, for
/// clients of the health service and for matching on [`ServingStatus`](pb::health_check_response::ServingStatus).
pub use tonic_health::pb;

#[cfg(test)]
mod tests;

/// The crate's README, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct Readme;
