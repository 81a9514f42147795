//! Benchmarks for terminus-rs: what the middleware costs per request, how fast probes
//! answer, how fast shutdown is and how much memory it takes, each side by side with
//! what a user would otherwise run (bare axum, Node's `@godaddy/terminus`).
//!
//! `bench/run.sh` is the one command: it installs the load generators, builds in
//! release mode and runs the `bench` driver, which starts `bench-server` processes in
//! each [`server::Mode`], measures them, and writes `docs/benchmarks.json` and
//! `docs/benchmarks.svg`. See `docs/benchmarks.md` for the figures.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chart;
pub mod checks;
pub mod conns;
pub mod load;
pub mod process;
pub mod server;
pub mod stats;
