//! Graceful shutdown and Kubernetes probes for axum.
//!
//! One dependency for axum users: [`serve`] runs the accept loop (HTTP/1.1 and HTTP/2
//! on one port) under a [`ShutdownController`] (also exported as [`Terminus`]), and
//! [`TerminusLayer`] answers the probes and tracks in-flight requests.
//!
//! When a shutdown starts (SIGTERM, SIGINT, [`ShutdownController::shutdown`]):
//!
//! 1. **Draining** (`drain_delay`): `/readyz` fails, `/livez` passes, the listener still
//!    accepts, HTTP/1.x responses carry `Connection: close`, HTTP/2 connections get GOAWAY;
//! 2. **Closing**: the listener closes, idle keep-alive connections close, in-flight
//!    requests finish within `drain_timeout`; the rest is cut, one `warn` event each;
//! 3. **CleaningUp**: `on_signal` then `on_shutdown` hooks, each within `cleanup_timeout`;
//! 4. `serve` returns an [`Outcome`] with the exit code.
//!
//! A second signal skips the rest and exits at once.
//!
//! Long-lived work drains too: `ws` (feature `ws`) closes WebSocket sessions with a
//! reconnect message and a 1001 Close, [`sse`] and [`stream`] end streaming responses
//! with a last event, and [`Server::admin_listener`] serves the probes on a port of
//! their own.
//!
//! # Feature flags
//!
//! - `ws`: the `ws` module (WebSocket sessions), on axum's `ws` feature.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use axum_terminus::{Layer, Terminus, TerminusLayer};
//!
//! #[tokio::main]
//! async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
//!     let terminus = Terminus::builder()
//!         .from_env()? // TERMINUS_DRAIN_DELAY=5s, TERMINUS_DRAIN_TIMEOUT=20s, ...
//!         .on_shutdown("close pool", || async { Ok(()) })
//!         .build()?;
//!     let router = Router::new().route("/", get(|| async { "hello" }));
//!     // Around the whole app, so probes are answered before routing.
//!     let app = TerminusLayer::new(&terminus).layer(router.with_state(())); // routes built once
//!     let listener = axum_terminus::bind("0.0.0.0:3000", &terminus).await?;
//!     let outcome = axum_terminus::serve(listener, app, &terminus).await;
//!     Ok(outcome.exit_code())
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod connection;
mod io;
mod listener;
mod serve;
mod shutdown_signal;
pub mod sse;
pub mod stream;
#[cfg(feature = "ws")]
pub mod ws;

pub use admin::{admin_layer, admin_router};
pub use listener::{bind, BindError};
pub use serve::{serve, BoxError, Server};
pub use shutdown_signal::shutdown_signal;

/// The name the design uses for the controller: `Terminus::builder()...build()`.
pub use terminus_core::ShutdownController as Terminus;
pub use terminus_core::{
    CancellationToken, Config, ConfigError, Drain, ExitCodePolicy, Forced, NoConnections, Outcome, Phase,
    ShutdownController, ShutdownReason, Signal,
};
/// tower's `Layer` trait, so that `TerminusLayer::new(&terminus).layer(app)` needs no
/// other import.
pub use tower_layer::Layer;
pub use tower_terminus::{ProbeKind, TerminusLayer, TerminusLayerBuilder};

/// The lifecycle crate, for everything not re-exported here.
pub use terminus_core as core;
/// The middleware crate.
pub use tower_terminus as tower;

/// The README's example compiles: `cargo test --doc` checks it with the crate's docs.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
