//! Server-Sent Events that end cleanly at Draining: the stream's last event is
//! `event: reconnect` with `retry: 3000`, then the response ends, so an `EventSource`
//! waits three seconds and reconnects through the balancer, to another instance.
//!
//! `GET /events?ms=N` sends `data: tick <n>` every N ms (default 1000). Settings come
//! from the environment: `HOST` (default `127.0.0.1`), `PORT` (default `3000`, `0`
//! picks a free one) and the `TERMINUS_*` variables.
#![warn(missing_docs)]

use std::convert::Infallible;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use axum_terminus::sse::{self, FinalEvent};
use axum_terminus::stream::until_draining;
use axum_terminus::Builder;
use axum_terminus::{Layer, Terminus, TerminusLayer};
use futures_util::stream;
use serde::Deserialize;

/// How long clients wait before reconnecting after the server drains.
pub const RETRY: Duration = Duration::from_secs(3);

/// The event routes: `GET /events?ms=N`.
pub fn router(terminus: &Terminus) -> Router {
    Router::new()
        .route("/events", get(events))
        .with_state(terminus.clone())
}

#[derive(Deserialize)]
struct Period {
    ms: Option<u64>,
}

async fn events(Query(period): Query<Period>, State(terminus): State<Terminus>) -> impl IntoResponse {
    let period = Duration::from_millis(period.ms.unwrap_or(1000).max(1));
    let ticks = stream::unfold(0u64, move |tick| async move {
        if tick > 0 {
            tokio::time::sleep(period).await;
        }
        let event = Event::default().id(tick.to_string()).data(format!("tick {tick}"));
        Some((Ok::<_, Infallible>(event), tick + 1))
    });
    let events = until_draining(ticks, &terminus).final_event(sse::reconnect_event(RETRY));
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// Configures the controller from `builder` and the environment, binds `HOST:PORT`,
/// prints `sse listening on http://ADDR`, serves until shut down, and returns the exit
/// code of the outcome.
pub async fn run(builder: Builder) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let terminus = builder.from_env()?.build()?;

    let app = TerminusLayer::new(&terminus).layer(router(&terminus).with_state(()));
    let listener = axum_terminus::bind(format!("{host}:{port}"), &terminus).await?;
    println!("sse listening on http://{}", listener.local_addr()?);
    let outcome = axum_terminus::serve(listener, app, &terminus).await;
    Ok(outcome.exit_code())
}
