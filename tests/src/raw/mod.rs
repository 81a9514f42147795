//! Clients that speak the protocols by hand, for the edges real clients smooth over:
//! [`h1`] tells a refused connect from a reset from a close without a response, and
//! [`h2`] is an HTTP/2 peer that can stop at any step of the protocol (terminus-check's,
//! which watches for GOAWAY with it).

pub mod h1;
pub use terminus_check::h2_frames as h2;
