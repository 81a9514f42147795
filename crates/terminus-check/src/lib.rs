//! The parts of terminus-rs's end-to-end harness that `terminus-check` shares with the
//! tests, so that the two cannot drift apart: the balancers' configurations and
//! launchers ([`haproxy`], [`nginx`], behind one [`balancer`], sharing [`launch`]), the
//! load generator ([`loadgen`]), the kubelet-faithful prober ([`kubelet`]), the client's
//! classification of refused HTTP/2 streams ([`refused`]), and the server processes
//! ([`instance`]).
//!
//! The tool itself is [`cli::main`]: `terminus-check roll` ([`roll`], reported by
//! [`report`] and [`svg`]) and `terminus-check probe` ([`probe`]); see `docs/check.md`.
//! It starts the user's own server command, so nothing in it depends on the service
//! using terminus-rs.
//!
//! ```no_run
//! // What src/main.rs does.
//! fn main() -> std::process::ExitCode {
//!     terminus_check::cli::main()
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod balancer;
pub mod cli;
pub mod client;
pub mod h2_frames;
pub mod haproxy;
pub mod instance;
pub mod kubelet;
pub mod launch;
pub mod loadgen;
pub mod nginx;
pub mod ports;
pub mod probe;
pub mod refused;
pub mod report;
pub mod roll;
pub mod svg;
