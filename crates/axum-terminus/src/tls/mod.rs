//! TLS over rustls (feature `tls-rustls`): HTTPS with the same shutdown as plain HTTP.
//!
//! [`Server::tls_listener`](crate::Server::tls_listener) serves a listener through a
//! [`TlsConfig`]. The handshake is a stage of each connection's pipeline, between the
//! socket and HTTP:
//!
//! - **ALPN** picks the protocol: `h2` is served as HTTP/2 (GOAWAY at Draining),
//!   `http/1.1` or no ALPN as HTTP/1.1 (`Connection: close` while draining). The list
//!   offered follows the server's versions ([`Server::http2_only`](crate::Server::http2_only)
//!   offers only `h2`, so an HTTP/1.1-only client is refused in the handshake).
//! - **A bounded handshake**: it counts against the header-read timeout from the
//!   accept ([`Server::header_read_timeout`](crate::Builder::header_read_timeout), 30 s
//!   by default), so a client that connects and stalls is disconnected. A handshake
//!   still going at Closing has no request in flight: it is closed after
//!   [`idle_close_timeout`](crate::Builder::idle_close_timeout), and it neither counts as
//!   a cut nor makes the stop forced.
//! - **A clean close**: connections closed gracefully (an HTTP/1.1 response with
//!   `Connection: close`, an idle keep-alive at Closing, an HTTP/2 connection after its
//!   GOAWAY) send `close_notify` before the TCP FIN. Connections cut at the deadline
//!   are reset without it.
//! - **Certificate reload**: a [`TlsConfig`] loaded from PEM can
//!   [reload](TlsConfig::reload_pem_files) its certificate while serving. Files are read
//!   off the runtime and within a bound: a FIFO at the path is an error, never a
//!   frozen server.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use axum_terminus::tls::TlsConfig;
//! use axum_terminus::{Layer, Server, Terminus, TerminusLayer};
//!
//! # async fn run() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().from_env()?.build()?;
//! let app = TerminusLayer::new(&terminus).layer(Router::new().route("/", get(|| async { "hello" })));
//! let tls = TlsConfig::from_pem_files("/etc/app/tls.crt", "/etc/app/tls.key").await?;
//! let listener = axum_terminus::bind("0.0.0.0:443", &terminus).await?;
//! let outcome = Server::new(&terminus).tls_listener(listener, tls, app).run().await;
//! Ok(outcome.exit_code())
//! # }
//! ```

mod certificate;
mod config;
mod error;
mod handshake;

pub use config::TlsConfig;
pub use error::TlsError;
pub(crate) use handshake::Acceptor;

/// rustls, for building a [`TlsConfig::new`] of your own with the same version.
pub use rustls;
