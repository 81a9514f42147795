//! [`shutdown_signal`]: for code that keeps `axum::serve(..).with_graceful_shutdown(..)`.

use std::future::Future;

use terminus_core::server::ServerExt;
use terminus_core::{NoConnections, Phase, Terminus};

/// A future for `axum::serve(..).with_graceful_shutdown(..)`: it drives the lifecycle
/// for a server that is not this crate's, and resolves when Closing begins, i.e. after
/// the drain delay, which is when axum should stop accepting.
///
/// axum polls it as soon as it serves, so readiness turns on then (the listener is
/// bound); the signal handlers are installed, and the shutdown runs in the background
/// (with the `systemd` feature, the service manager is notified too). After
/// `axum::serve` returns, [`Terminus::outcome`] waits for the hooks (each within
/// `cleanup_timeout`) and gives the [`Outcome`](crate::Outcome) and the exit code.
///
/// This path keeps axum's own connection handling, so it is weaker than
/// [`serve`](crate::serve), and the differences matter in production:
///
/// - no HTTP/2 GOAWAY at Draining: HTTP/2 clients learn of the shutdown only at
///   Closing, when axum stops accepting; idle keep-alive connections are not told to
///   move either (HTTP/1 responses do carry `Connection: close` while draining, from
///   [`TerminusLayer`](crate::TerminusLayer));
/// - axum waits for its connections **without a deadline**. `drain_timeout` ends the
///   lifecycle's wait for requests, which reports those still in flight as cut
///   (`requests_cut`, a forced stop, exit status 1), but nothing cuts them: they run on
///   until the process exits. Stop waiting for axum when the shutdown is complete, as
///   below, or `axum::serve` may never return;
/// - no cut report per connection (`connections_cut` stays 0), and a connection the
///   kernel accepted just before axum dropped its listener is reset.
///
/// Without this future (or with `axum::serve` and no graceful shutdown), readiness
/// stays at 503 (the server never leaves Starting), no hook runs and no outcome is
/// ever given.
///
/// # Cancel safety
///
/// Dropped before its first poll, it has done nothing. From its first poll on, the
/// shutdown runs on a task of its own: dropping the future (axum drops it when it
/// stops) only stops waiting for Closing, and [`Terminus::outcome`] still gives the
/// outcome.
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
/// // axum has no deadline of its own; the lifecycle has: stop waiting for axum once the
/// // shutdown is complete (drain_timeout passed, hooks run).
/// tokio::select! {
///     served = server => served?,
///     _ = terminus.outcome() => {}
/// }
/// let outcome = terminus.outcome().await; // after the hooks: the outcome
/// Ok(outcome.exit_code())
/// # }
/// ```
///
/// Do not bound `axum::serve` with `tokio::time::timeout(drain_delay + drain_timeout,
/// server)`: that timeout counts from the start of serving, not from the signal, and
/// stops a healthy server.
pub fn shutdown_signal(terminus: &Terminus) -> impl Future<Output = ()> + Send + 'static {
    let terminus = terminus.clone();
    async move {
        terminus.mark_listeners_bound();
        #[cfg(all(feature = "systemd", unix))]
        let _notifier = crate::systemd::spawn_notifier(&terminus);
        let mut phases = terminus.subscribe();
        tokio::spawn({
            let terminus = terminus.clone();
            async move { terminus.run(NoConnections).await }
        });
        // An error means the `Terminus` is gone; nothing is left to wait for.
        let _ = phases.wait_for(|phase| *phase >= Phase::Closing).await;
    }
}
