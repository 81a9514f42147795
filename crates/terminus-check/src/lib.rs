//! The parts of terminus-rs's end-to-end harness that `terminus-check` shares with the
//! tests, so that the two cannot drift apart: the balancers' configurations and
//! launchers ([`haproxy`], [`nginx`], behind one [`balancer`]), the load generator
//! ([`loadgen`]), the kubelet-faithful prober ([`kubelet`]), the client's classification
//! of refused HTTP/2 streams ([`refused`]), and the server processes ([`instance`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod balancer;
pub mod client;
pub mod h2_frames;
pub mod haproxy;
pub mod instance;
pub mod kubelet;
pub mod loadgen;
pub mod nginx;
pub mod ports;
pub mod refused;
