//! Server-Sent Events that end cleanly at Draining, with a last event telling the
//! client when to reconnect.
//!
//! An `EventSource` reconnects by itself when the stream ends; the `retry:` field of
//! the last event sets how long it waits first, which gives the balancer time to take
//! this instance out of rotation. Wrap the event stream in
//! [`stream::until_draining`](crate::stream::until_draining) and give it
//! [`reconnect_event`] as its [`final_event`](FinalEvent::final_event).
//!
//! ```no_run
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use axum::response::sse::{Event, KeepAlive, Sse};
//! use axum::{extract::State, response::IntoResponse, routing::get, Router};
//! use axum_terminus::stream::until_draining;
//! use axum_terminus::sse::{self, FinalEvent};
//! use axum_terminus::{Terminus, TerminusLayer};
//! use futures_util::stream;
//!
//! async fn events(State(terminus): State<Terminus>) -> impl IntoResponse {
//!     let ticks = stream::repeat_with(|| Ok::<_, Infallible>(Event::default().data("tick")));
//!     let events = until_draining(ticks, &terminus)
//!         .final_event(sse::reconnect_event(Duration::from_secs(3)));
//!     Sse::new(events).keep_alive(KeepAlive::default())
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().build()?;
//! let app = Router::new()
//!     .route("/events", get(events))
//!     .with_state(terminus.clone())
//!     .layer(TerminusLayer::new(&terminus));
//! let listener = axum_terminus::bind("127.0.0.1:3000", &terminus).await?;
//! axum_terminus::serve(listener, app, &terminus).await;
//! # Ok(()) }
//! ```

use std::time::Duration;

use axum::response::sse::Event;
use futures_core::Stream;

use crate::stream::UntilDraining;

/// The name of the event [`reconnect_event`] sends.
pub const RECONNECT_EVENT: &str = "reconnect";

/// `event: reconnect`, `data: server draining`, `retry: <ms>`: the client should
/// reconnect after `retry` (to another instance). The data line is there because
/// browsers do not dispatch events without data.
///
/// ```
/// # use std::time::Duration;
/// let event = axum_terminus::sse::reconnect_event(Duration::from_secs(2));
/// # let _ = event;
/// ```
pub fn reconnect_event(retry: Duration) -> Event {
    Event::default()
        .event(RECONNECT_EVENT)
        .data("server draining")
        .retry(retry)
}

/// [`final_event`](FinalEvent::final_event) on an event stream wrapped in
/// [`until_draining`](crate::stream::until_draining): `final_item(Ok(event))`, said
/// the SSE way.
pub trait FinalEvent {
    /// The event sent when Draining ends the stream, e.g. [`reconnect_event`].
    #[must_use = "streams do nothing unless polled"]
    fn final_event(self, event: Event) -> Self;
}

impl<S, E> FinalEvent for UntilDraining<S>
where
    S: Stream<Item = Result<Event, E>>,
{
    fn final_event(self, event: Event) -> Self {
        self.final_item(Ok(event))
    }
}
