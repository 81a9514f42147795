//! systemd (feature `systemd`): socket activation and the notify protocol.
//!
//! - **Socket activation**: [`ActivatedSockets::from_env`] takes the listening sockets
//!   systemd passed (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`). The socket belongs
//!   to systemd and outlives the process: while one process stops and the next starts,
//!   the kernel queues new connections on it, and the next process accepts them. A
//!   restart then loses no connection, even without a load balancer in front. At
//!   Closing, the server leaves what waits in the queue to the next process
//!   ([`Activated`]). A passed socket that cannot accept (not a stream socket, or not
//!   listening) is an error at start ([`ActivatedSockets::take`]).
//! - **Notifications**: with the feature on, [`Server::run`](crate::Server::run) and
//!   [`shutdown_signal`](crate::shutdown_signal) tell the service manager
//!   (`NOTIFY_SOCKET`) what the lifecycle does: `READY=1` when Serving, `STOPPING=1` at
//!   Draining, `STATUS=` with each phase, and `WATCHDOG=1` every half `WATCHDOG_USEC`
//!   when the unit sets `WatchdogSec=`. Without `NOTIFY_SOCKET` nothing is sent. A send
//!   never blocks: a message the service manager has no room for is dropped after
//!   100 ms with a `warn` event ([`spawn_notifier`]).
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use axum_terminus::systemd::{ActivatedListener, ActivatedSockets};
//! use axum_terminus::{Layer, Server, Terminus, TerminusLayer};
//!
//! # async fn run() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().from_env()?.build()?;
//! let app = TerminusLayer::new(&terminus).layer(Router::new().route("/", get(|| async { "hello" })));
//! let server = Server::new(&terminus);
//! let server = match ActivatedSockets::from_env().take(0)? {
//!     Some(ActivatedListener::Tcp(listener)) => server.listener(listener, app),
//!     Some(ActivatedListener::Unix(listener)) => server.listener(listener, app),
//!     // Started by hand: bind the port ourselves.
//!     None => server.listener(axum_terminus::bind("127.0.0.1:3000", &terminus).await?, app),
//! };
//! Ok(server.run().await.exit_code())
//! # }
//! ```
//!
//! `docs/deployment.md` has `.socket` and `.service` units that work as written.

mod activated;
mod activation;
mod notify;

pub use activated::Activated;
pub use activation::{ActivatedListener, ActivatedSockets};
pub use notify::spawn_notifier;
