//! [`shutdown_signal`]: for code that keeps `axum::serve(..).with_graceful_shutdown(..)`.

use std::future::Future;

use terminus_core::{NoConnections, Phase, ShutdownController};

/// A future for `axum::serve(..).with_graceful_shutdown(..)` that resolves when the
/// controller reaches Closing, i.e. after the drain delay. It starts driving the
/// lifecycle in the background (signals, drain delay, hooks).
///
/// Weaker than [`serve`](crate::serve), and the differences matter in production:
/// axum's server does not send HTTP/2 GOAWAY at Draining, does not close idle
/// keep-alive connections until Closing, waits for open connections **without a
/// deadline**, and cannot cut what is left, so the `Outcome` reports no cut
/// connections. Bound it yourself (e.g. `tokio::time::timeout`) and await
/// `controller.run(NoConnections)` afterwards for the outcome and the cleanup hooks.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use axum_terminus::{shutdown_signal, NoConnections, Terminus, TerminusLayer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder().build()?;
/// let app = Router::new().route("/", get(|| async { "hi" })).layer(TerminusLayer::new(&terminus));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// terminus.mark_listeners_bound();
/// axum::serve(listener, app).with_graceful_shutdown(shutdown_signal(&terminus)).await?;
/// let outcome = terminus.run(NoConnections).await; // waits for the lifecycle to finish
/// # let _ = outcome; Ok(()) }
/// ```
pub fn shutdown_signal(controller: &ShutdownController) -> impl Future<Output = ()> + Send + 'static {
    let controller = controller.clone();
    async move {
        let mut phases = controller.subscribe();
        tokio::spawn({
            let controller = controller.clone();
            async move { controller.run(NoConnections).await }
        });
        // An error means the controller is gone; nothing is left to wait for.
        let _ = phases.wait_for(|phase| *phase >= Phase::Closing).await;
    }
}
