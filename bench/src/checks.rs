//! The readiness checks behind `/readyz` in the probe benchmark.
//!
//! Two checks, `db` and `queue`, that pass at once, with the registry's default cache
//! (results reused for 1 s): what a service with two dependencies behind cached checks
//! serves under a probe flood. Node terminus runs the equivalent (two cached checks
//! behind `/readyz`, in `bench/node/server.js`).

use axum_terminus::health::Check;
use axum_terminus::Builder;

/// How many readiness checks `/readyz` runs in the `terminus` and `layer` modes.
pub const READINESS_CHECKS: usize = 2;

/// Adds the benchmark's readiness checks to `builder`.
pub fn with_readiness_checks(builder: Builder) -> Builder {
    builder
        .readiness(Check::new("db", |_| async { Ok(None) }))
        .readiness(Check::new("queue", |_| async { Ok(None) }))
}
