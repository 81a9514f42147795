//! The lifecycle behind terminus-rs: a [`Terminus`] takes a server from `Starting` to
//! `Stopped` without losing requests, and its health registry answers the probes.
//!
//! This crate has no HTTP types and no HTTP client. `tower-terminus` turns it into
//! middleware and `axum-terminus` into a server; applications use those (through
//! `axum-terminus`, which re-exports what they need).
//!
//! ```
//! use std::time::Duration;
//! use terminus_core::{NoConnections, Phase, Terminus};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder()
//!     .from_env()?                       // TERMINUS_DRAIN_DELAY=5s, ...
//!     .drain_timeout(Duration::from_secs(10))
//!     .on_shutdown("flush metrics", || async { Ok(()) })
//!     .build()?;
//!
//! let worker = terminus.token();         // fires when Draining begins
//! terminus.spawn_tracked(async move { worker.cancelled().await });
//!
//! terminus.shutdown("deploy");           // or SIGTERM
//! let outcome = terminus.run(NoConnections).await;
//! assert!(outcome.is_graceful());
//! assert_eq!(terminus.phase(), Phase::Stopped);
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! - `metrics`: the lifecycle's facts through the `metrics` facade; see [`metrics`].
//!
//! Where to start reading: [`Terminus`] (the handle), [`Builder`] (the settings),
//! [`Terminus::run`] (whose steps, one per phase, are in `run.rs`), [`health`] (the
//! checks behind the probes), and [`server`] (what a server built on this crate does).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod builder;
mod config;
pub mod env;
pub mod health;
mod hooks;
pub mod metrics;
mod outcome;
mod phase;
mod requests;
mod run;
pub mod server;
mod setting;
mod signal;
mod stream;
mod tasks;
mod terminus;
pub mod upgrade;

pub use builder::Builder;
pub use config::{
    Config, ExitCodePolicy, DEFAULT_CLEANUP_TIMEOUT, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_IDLE_CLOSE_TIMEOUT, DEFAULT_KEEP_ALIVE_TIMEOUT, KUBERNETES_DRAIN_DELAY,
};
pub use env::{
    ENV_CLEANUP_TIMEOUT, ENV_DRAIN_DELAY, ENV_DRAIN_TIMEOUT, ENV_GRACE_PERIOD, ENV_HEADER_READ_TIMEOUT,
    ENV_IDLE_CLOSE_TIMEOUT, ENV_KEEP_ALIVE_TIMEOUT, ENV_MAX_CONNECTIONS, ENV_MAX_CONNECTION_AGE,
    ENV_MAX_CONNECTION_AGE_GRACE, ENV_MAX_REQUESTS_PER_CONNECTION, ENV_SIGNALS,
};
pub use hooks::{with_state, BoxError, HookResult, HookStage, HookStatus};
pub use outcome::{Forced, Outcome, PhaseDurations, ShutdownReason};
pub use phase::Phase;
pub use requests::{DescribeRequest, RequestGuard};
pub use run::{Drain, NoConnections};
pub use setting::{ConfigError, Source};
pub use signal::{Signal, UnknownSignal};
pub use stream::{until_draining, UntilDraining};
pub use terminus::Terminus;
pub use tokio_util::sync::CancellationToken;
pub use upgrade::UpgradeSettings;

/// Locks a mutex whose data stays consistent even if a holder panicked: every critical
/// section in this crate is a single read, insert, remove or assignment.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The crate's README, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct Readme;
