//! Graceful shutdown and Kubernetes probes for axum.
//!
//! One dependency for axum users: [`Terminus`] holds the lifecycle (phases, deadlines,
//! hooks, health checks), [`TerminusLayer`] answers the probes, and [`serve`] runs the
//! accept loop (HTTP/1.1 and HTTP/2 on one port) under it.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use axum_terminus::{health::checks, Layer, Terminus, TerminusLayer};
//!
//! #[tokio::main]
//! async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
//!     let terminus = Terminus::builder()
//!         .from_env()? // TERMINUS_DRAIN_DELAY=5s, TERMINUS_DRAIN_TIMEOUT=20s, ...
//!         .readiness(checks::tcp("db", "127.0.0.1:5432"))
//!         .on_shutdown("close pool", || async { Ok(()) })
//!         .build()?;
//!     let router = Router::new().route("/", get(|| async { "hello" }));
//!     // Outermost, so probes are answered before routing (and `with_state(())` builds
//!     // the routes once).
//!     let app = TerminusLayer::new(&terminus).layer(router.with_state(()));
//!     let listener = axum_terminus::bind("0.0.0.0:3000", &terminus).await?;
//!     let outcome = axum_terminus::serve(listener, app, &terminus).await;
//!     Ok(outcome.exit_code())
//! }
//! ```
//!
//! # Where to look
//!
//! - **The lifecycle**: [`Terminus`] and its [`Builder`]. When a shutdown starts
//!   (SIGTERM, SIGINT, [`Terminus::shutdown`]):
//!   1. **Draining** (`drain_delay`): `/readyz` fails, `/livez` passes, the listener
//!      still accepts, HTTP/1.x responses carry `Connection: close`, HTTP/2
//!      connections get GOAWAY, [`Terminus::token`] fires;
//!   2. **Closing**: what the kernel already accepted is served, the listener closes,
//!      idle connections close, requests in flight finish within `drain_timeout`; the
//!      rest is cut, one `warn` event each;
//!   3. **CleaningUp**: `on_signal` then `on_shutdown` hooks, each within
//!      `cleanup_timeout`;
//!   4. [`serve`] returns an [`Outcome`] with the exit code.
//!
//!   A second signal skips the rest and exits at once.
//! - **Health checks**: [`health`] ([`Check`](health::Check), built-in [`health::checks`]); register
//!   them with [`Builder::readiness`], [`Builder::liveness`], [`Builder::startup`].
//! - **Hooks**: [`Builder::before_shutdown`], [`Builder::on_signal`],
//!   [`Builder::on_shutdown`], and [`with_state`] to give them state.
//! - **Probes**: [`TerminusLayer`] and its builder (paths, formats, headers).
//! - **Serving**: [`serve`], and [`Server`] for several listeners, an admin listener,
//!   timeouts, a connection cap, HTTP versions; the admin listener also answers the
//!   preStop hook [`PRESTOP_PATH`]. Listeners are anything axum serves: TCP
//!   ([`bind`]), Unix domain sockets ([`bind_unix`]), your own
//!   [`axum::serve::Listener`]; TLS with `tls` (feature `tls-rustls`); sockets passed
//!   by systemd with `systemd` (feature `systemd`).
//! - **Long-lived work**: [`stream::until_draining`], [`sse`], and `ws` (feature `ws`)
//!   end streams and WebSocket sessions cleanly at Draining; [`Terminus::spawn_tracked`]
//!   and [`Terminus::token`] for background work.
//! - **Keeping `axum::serve`**: [`shutdown_signal`], with weaker guarantees.
//!
//! Where the layer goes in a `ServiceBuilder` stack: outermost. Probes then skip
//! tracing, compression, CORS and timeouts, and cost less than a routed request:
//!
//! ```
//! use std::time::Duration;
//! use axum::http::StatusCode;
//! use axum::{routing::get, Router};
//! use axum_terminus::{Terminus, TerminusLayer};
//! use tower::ServiceBuilder;
//! use tower_http::{compression::CompressionLayer, timeout::TimeoutLayer, trace::TraceLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().build()?;
//! let router = Router::new().route("/", get(|| async { "hello" }));
//! let app = ServiceBuilder::new()
//!     .layer(TerminusLayer::new(&terminus)) // first: the probes answer here
//!     .layer(TraceLayer::new_for_http())
//!     .layer(CompressionLayer::new())
//!     .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(10)))
//!     .service(router.with_state(()));
//! let listener = axum_terminus::bind("0.0.0.0:3000", &terminus).await?;
//! axum_terminus::serve(listener, app, &terminus).await;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! - `ws`: the `ws` module (WebSocket sessions), on axum's `ws` feature.
//! - `tls-rustls`: the `tls` module and `Server::tls_listener`: HTTPS over rustls
//!   (*ring* as the default crypto provider).
//! - `systemd`: the `systemd` module (socket activation), and `sd_notify` messages from
//!   `Server::run` and `shutdown_signal` when `NOTIFY_SOCKET` is set.
//! - `metrics`: the lifecycle's and the server's facts through the `metrics` facade
//!   (phase, requests in flight, drained and cut, connections open and cut, checks,
//!   hooks); see [`terminus_core::metrics`] for the names. Install the recorder before
//!   building the `Terminus`.
//! - `upgrade` (Unix): the `upgrade` module: `SIGUSR2` (or `Server::upgrader`) replaces
//!   the running binary in place, handing the listening sockets to a successor that
//!   must be ready before the old process drains (`docs/deployment.md`).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

/// Locks data that stays consistent even if a holder panicked: every critical section
/// that uses it is one insert, remove, take or read.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

mod accept;
mod admin;
mod bind;
mod clock;
mod connection;
#[cfg(all(unix, any(feature = "systemd", feature = "upgrade")))]
mod datagram;
mod drain;
pub mod health;
#[cfg(feature = "http-check")]
mod http_check;
mod io;
mod listener;
mod metrics;
mod serve;
mod serve_connection;
mod settings;
mod shutdown_signal;
pub mod sse;
pub mod stream;
#[cfg(all(feature = "systemd", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "systemd", unix))))]
pub mod systemd;
mod timeouts;
#[cfg(feature = "tls-rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls-rustls")))]
pub mod tls;
mod tracking;
#[cfg(all(feature = "upgrade", unix))]
#[cfg_attr(docsrs, doc(cfg(feature = "upgrade")))]
pub mod upgrade;
#[cfg(feature = "ws")]
#[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
pub mod ws;

pub use admin::{admin_layer, admin_router, MAINTENANCE_PATH, PRESTOP_PATH};
#[cfg(unix)]
pub use bind::bind_unix;
pub use bind::{bind, BindError, LISTEN_BACKLOG};
pub use listener::{Peer, TerminusListener};
pub use serve::{
    serve, BoxError, Server, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_CLOSE_TIMEOUT,
    ENV_HEADER_READ_TIMEOUT, ENV_IDLE_CLOSE_TIMEOUT, ENV_MAX_CONNECTIONS,
};
pub use shutdown_signal::shutdown_signal;
pub use terminus_core::{
    with_state, Builder, CancellationToken, Config, ConfigError, ExitCodePolicy, Forced, HookResult,
    HookStage, HookStatus, Outcome, Phase, PhaseDurations, ShutdownReason, Signal, Terminus,
};
/// tower's `Layer` trait, so that `TerminusLayer::new(&terminus).layer(app)` needs no
/// other import.
pub use tower_layer::Layer;
pub use tower_terminus::{ProbeFormat, TerminusBody, TerminusLayer, TerminusLayerBuilder, TerminusService};

/// The README's and the guides' Rust examples, compiled as doc tests against this
/// crate as a user would write them (with the dependencies the README lists). Guides
/// whose examples need other crates (a database driver, tonic) are compiled by the
/// example crate that has them.
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../../../README.md")]
    struct Readme;

    // TLS, Unix sockets, systemd, HTTP versions, axum::serve: with both features.
    #[cfg(all(feature = "tls-rustls", feature = "systemd"))]
    #[doc = include_str!("../../../docs/deployment.md")]
    struct Deployment;
    #[doc = include_str!("../README.md")]
    struct CrateReadme;
    #[doc = include_str!("../../../docs/lifecycle.md")]
    struct Lifecycle;
    #[doc = include_str!("../../../docs/probes.md")]
    struct Probes;
    #[doc = include_str!("../../../docs/kubernetes.md")]
    struct Kubernetes;
    /// Its WebSocket example needs the `ws` feature.
    #[cfg(feature = "ws")]
    #[doc = include_str!("../../../docs/long-lived-connections.md")]
    struct LongLivedConnections;
    #[doc = include_str!("../../../docs/migrating-from-terminus.md")]
    struct MigratingFromTerminus;
    #[doc = include_str!("../../../docs/reliability.md")]
    struct Reliability;
    #[doc = include_str!("../../../docs/benchmarks.md")]
    struct Benchmarks;
}
