//! [`shutdown_signal`]: for code that keeps `axum::serve(..).with_graceful_shutdown(..)`.

use std::future::Future;

use terminus_core::server::ServerExt;
use terminus_core::{NoConnections, Phase, Terminus};

/// A future for `axum::serve(..).with_graceful_shutdown(..)`: it drives the lifecycle
/// for a server that is not this crate's, and resolves when Closing begins, i.e. after
/// the drain delay, which is when axum should stop accepting.
///
/// axum polls it as soon as it serves, so readiness turns on then (the listener is
/// bound); the signal handlers are installed, and the shutdown runs in the background.
/// After `axum::serve` returns, [`Terminus::outcome`] waits for the hooks and gives the
/// [`Outcome`](crate::Outcome) and the exit code.
///
/// This path keeps axum's own connection handling, so it is weaker than
/// [`serve`](crate::serve), and the differences matter in production:
///
/// - no HTTP/2 GOAWAY at Draining, and idle keep-alive connections are not told to
///   move until axum closes them (HTTP/1 responses do carry `Connection: close` while
///   draining, from [`TerminusLayer`](crate::TerminusLayer));
/// - axum waits for its connections **without a deadline**: `drain_timeout` ends the
///   lifecycle's wait for requests, but cannot cut axum's connections, so the
///   `Outcome` reports requests still in flight as cut without having cut them, and
///   `axum::serve` may not return until they end. Bound it yourself, as below;
/// - a connection the kernel accepted just before the listener closed can be reset.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use axum_terminus::{shutdown_signal, Terminus, TerminusLayer};
///
/// # async fn run() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder().from_env()?.build()?;
/// // `Router::layer`: axum::serve wants the router's own response type.
/// let app = Router::new().route("/", get(|| async { "hi" })).layer(TerminusLayer::new(&terminus));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal(&terminus));
/// // axum has no deadline of its own: give it the lifecycle's.
/// let deadline = terminus.config().drain_delay() + terminus.config().drain_timeout();
/// let _ = tokio::time::timeout(deadline + std::time::Duration::from_secs(1), server).await;
/// let outcome = terminus.outcome().await; // hooks run, then the outcome
/// Ok(outcome.exit_code())
/// # }
/// ```
pub fn shutdown_signal(terminus: &Terminus) -> impl Future<Output = ()> + Send + 'static {
    let terminus = terminus.clone();
    async move {
        terminus.mark_listeners_bound();
        let mut phases = terminus.subscribe();
        tokio::spawn({
            let terminus = terminus.clone();
            async move { terminus.run(NoConnections).await }
        });
        // An error means the `Terminus` is gone; nothing is left to wait for.
        let _ = phases.wait_for(|phase| *phase >= Phase::Closing).await;
    }
}
