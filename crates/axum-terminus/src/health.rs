//! Health checks: [`Check`]s registered on the [`Terminus`](crate::Terminus) builder, run
//! concurrently, bounded by their timeouts, shared and cached, and reported by the
//! probes. Everything of `terminus_core::health`, plus `checks::http_get` (feature
//! `http-check`, on by default), which needs an HTTP client.
//!
//! ```
//! use std::time::Duration;
//! use axum_terminus::health::{checks, Check, CheckError};
//! use axum_terminus::Terminus;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder()
//!     .readiness(checks::tcp("db", "127.0.0.1:5432"))
//!     .readiness(checks::http_get("search", "http://search.internal:9200/_cluster/health")?)
//!     .readiness(
//!         Check::new("cache", |_ctx| async { Err(CheckError::new("evicting")) })
//!             .non_critical()                          // fails as `warn`: still 200
//!             .timeout(Duration::from_millis(200)),
//!     )
//!     .build()?;
//! # let _ = terminus; Ok(()) }
//! ```
//!
//! See `docs/probes.md` for the probe paths and bodies, and `docs/databases.md` for a
//! database check done right.

pub use terminus_core::health::*;

/// Built-in checks: a TCP connect, and an HTTP GET (feature `http-check`, on by default).
pub mod checks {
    #[cfg(feature = "http-check")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http-check")))]
    pub use crate::http_check::{http_get, InvalidUrl};
    pub use terminus_core::health::checks::tcp;
}
