//! [`until_draining`]: a stream that ends cleanly when Draining begins.
//!
//! A streaming response (Server-Sent Events, NDJSON, a long poll) counts as in flight
//! until its body ends, so an endless one holds Closing until `drain_timeout` and is
//! then cut mid-stream. Wrapped in [`UntilDraining`], it ends at Draining instead,
//! optionally after one last item (an SSE `event: reconnect` with a `retry:` hint, see
//! [`sse`](crate::sse)): the client sees a clean end of stream while the balancer is
//! still taking the instance out, and reconnects elsewhere.
//!
//! These are terminus-core's (`terminus_core::until_draining`), the same type
//! `tonic_terminus::until_draining` returns for gRPC server streams.
//!
//! ```
//! use axum::body::Body;
//! use axum_terminus::stream::until_draining;
//! use axum_terminus::Terminus;
//! use futures_util::stream;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().build()?;
//! let lines = stream::repeat(Ok::<_, std::convert::Infallible>("tick\n"));
//! let body = Body::from_stream(
//!     until_draining(lines, &terminus).final_item(Ok("bye: server draining\n")),
//! );
//! # let _ = body; Ok(()) }
//! ```

pub use terminus_core::{until_draining, UntilDraining};
