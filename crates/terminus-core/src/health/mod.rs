//! The health registry: named checks behind the liveness, readiness and startup probes.
//!
//! A [`Check`] is a name, an async function, the probes it belongs to ([`CheckKind`]), a
//! timeout (default 500 ms), a critical flag and a cache policy. The
//! [`Terminus::probe`](crate::Terminus::probe) runs the checks of one probe concurrently, each on its own task
//! and bounded by its timeout, so a probe answers in time even when a dependency hangs;
//! a check that panics or times out counts as failed. Concurrent probes share one run
//! and results are cached (default 1 s), so a probe flood cannot amplify load on a
//! dependency. The result is a [`Report`], which `tower-terminus` renders for HTTP and
//! anything else can log or serve another way.
//!
//! ```
//! use terminus_core::health::{Check, CheckError, CheckKind, HealthStatus};
//! use terminus_core::server::ServerExt as _;
//! use terminus_core::Terminus;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder()
//!     .readiness(Check::new("cache", |_| async { Err(CheckError::new("evicting")) }).non_critical())
//!     .liveness(Check::new("event-loop", |_| async { Ok(None) }))
//!     .build()?;
//! terminus.mark_listeners_bound(); // what a server does once it listens
//!
//! let ready = terminus.probe(CheckKind::Readiness).await;
//! assert_eq!(ready.status, HealthStatus::Warn); // non-critical failure: 200, reported
//! # Ok(()) }
//! ```

mod check;
pub mod checks;
mod error;
mod probing;
mod registry;
mod report;
mod request;

pub use check::{Check, CheckContext, CheckKind, CheckResult, DEFAULT_CACHE_TTL, DEFAULT_CHECK_TIMEOUT};
pub use error::{Cause, Causes, CheckError};
pub use probing::Probing;
pub use registry::HealthRegistry;
pub use report::{CheckReport, Gate, HealthStatus, Report};
pub use request::{LifecycleState, ProbeRequest, LIFECYCLE_CHECK};
