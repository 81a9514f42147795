//! The lifecycle behind terminus-rs: a [`ShutdownController`] that takes a server from
//! `Starting` to `Stopped` without losing requests, and the health registry its probes
//! read.
//!
//! This crate has no HTTP types. `tower-terminus` turns it into middleware and
//! `axum-terminus` into a server; use those unless you are writing your own.
//!
//! ```
//! use std::time::Duration;
//! use terminus_core::{NoConnections, Phase, ShutdownController};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let controller = ShutdownController::builder()
//!     .from_env()?                       // TERMINUS_DRAIN_DELAY=5s, ...
//!     .drain_timeout(Duration::from_secs(10))
//!     .on_shutdown("flush metrics", || async { Ok(()) })
//!     .build()?;
//!
//! let worker = controller.token();       // fires when Draining begins
//! controller.spawn_tracked(async move { worker.cancelled().await });
//!
//! controller.mark_listeners_bound();     // `serve` does this for you
//! controller.shutdown("deploy");         // or SIGTERM
//! let outcome = controller.run(NoConnections).await;
//! assert!(outcome.is_graceful());
//! assert_eq!(controller.phase(), Phase::Stopped);
//! # Ok(()) }
//! ```
//!
//! See `docs/lifecycle.md` in the repository for the phases on a timeline.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod controller;
pub mod health;
mod hooks;
mod in_flight;
mod lifecycle;
mod outcome;
mod phase;
mod signal;

pub use config::{
    Config, ConfigError, ExitCodePolicy, DEFAULT_CLEANUP_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, ENV_CLEANUP_TIMEOUT,
    ENV_DRAIN_DELAY, ENV_DRAIN_TIMEOUT, ENV_GRACE_PERIOD, ENV_SIGNALS, KUBERNETES_DRAIN_DELAY,
};
pub use controller::{Builder, ShutdownController};
pub use health::{Check, CheckError, CheckKind, HealthRegistry, HealthStatus, Report};
pub use hooks::{BoxError, HookResult, HookStage, HookStatus};
pub use in_flight::RequestGuard;
pub use lifecycle::{Drain, NoConnections};
pub use outcome::{Forced, Outcome, PhaseDurations, ShutdownReason};
pub use phase::Phase;
pub use signal::{Signal, UnknownSignal};
pub use tokio_util::sync::CancellationToken;
