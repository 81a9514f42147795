//! [`until_draining`]: a server-streaming response that ends at Draining with
//! `UNAVAILABLE`, so the client calls again, on another instance.
//!
//! A server stream counts as in flight until it ends, so an endless one holds Closing
//! until `drain_timeout` and is then cut (the client sees the connection reset, or
//! `CANCELLED`, with no hint that retrying is safe). Wrapped by [`until_draining`], it
//! ends when Draining begins, with a status clients and retry policies treat as
//! "try again elsewhere", while the balancer is still taking the instance out.
//!
//! The wrapper is terminus-core's generic [`UntilDraining`] (the one axum-terminus
//! uses for SSE), with `Err(UNAVAILABLE)` as its final item;
//! [`final_item`](UntilDraining::final_item) or [`DrainingStatus::status`] sets
//! another one.
//!
//! ```
//! use std::pin::Pin;
//! use futures_core::Stream;
//! use terminus_core::Terminus;
//! use tonic::Status;
//! use tonic_terminus::until_draining;
//!
//! type Ticks = Pin<Box<dyn Stream<Item = Result<String, Status>> + Send>>;
//!
//! fn ticks(terminus: &Terminus) -> Ticks {
//!     let forever = futures_util::stream::repeat_with(|| Ok("tick".to_owned()));
//!     // Yields ticks until Draining, then Err(UNAVAILABLE), then ends.
//!     Box::pin(until_draining(forever, terminus))
//! }
//! # let _ = ticks;
//! ```

use futures_core::Stream;
use terminus_core::{Terminus, UntilDraining};
use tonic::Status;

/// The message of the status [`until_draining`] ends a stream with.
pub const DRAINING_MESSAGE: &str = "server is shutting down; retry on another instance";

/// Wraps a server-streaming response so that it ends when `terminus` begins Draining
/// (at once if it already has): the items so far, then
/// `Err(Status::unavailable(`[`DRAINING_MESSAGE`]`))` (see [`DrainingStatus::status`]
/// for another status), then the end. A stream that ends by itself before Draining
/// ends as it would have. Draining is checked before each item, so a stream that
/// always has an item ready still ends promptly.
pub fn until_draining<S, T>(stream: S, terminus: &Terminus) -> UntilDraining<S>
where
    S: Stream<Item = Result<T, Status>>,
{
    terminus_core::until_draining(stream, terminus).final_item(Err(Status::unavailable(DRAINING_MESSAGE)))
}

/// [`status`](DrainingStatus::status) on a server stream wrapped by
/// [`until_draining`]: `final_item(Err(status))`, said the gRPC way.
///
/// ```
/// use futures_core::Stream;
/// use terminus_core::Terminus;
/// use tonic::Status;
/// use tonic_terminus::{until_draining, DrainingStatus};
///
/// fn ticks(terminus: &Terminus) -> impl Stream<Item = Result<String, Status>> {
///     let forever = futures_util::stream::repeat_with(|| Ok("tick".to_owned()));
///     // Ends with ABORTED instead of UNAVAILABLE.
///     until_draining(forever, terminus).status(Status::aborted("moving"))
/// }
/// # let _ = ticks;
/// ```
pub trait DrainingStatus {
    /// The status sent when Draining ends the stream, instead of `UNAVAILABLE`.
    #[must_use = "streams do nothing unless polled"]
    fn status(self, status: Status) -> Self;
}

impl<S, T> DrainingStatus for UntilDraining<S>
where
    S: Stream<Item = Result<T, Status>>,
{
    fn status(self, status: Status) -> Self {
        self.final_item(Err(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::time::Duration;
    use tonic::Code;

    #[tokio::test(start_paused = true)]
    async fn an_endless_stream_ends_with_unavailable_at_draining() {
        let terminus = Terminus::builder().build().unwrap();
        let ticks = futures_util::stream::repeat_with(|| Ok::<_, Status>("tick"));
        let mut stream = Box::pin(until_draining(ticks, &terminus));
        assert_eq!(stream.next().await.unwrap().unwrap(), "tick");
        terminus.shutdown("test");
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), DRAINING_MESSAGE);
        assert!(stream.next().await.is_none());
        assert!(stream.next().await.is_none(), "stays ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_stream_is_woken_when_draining_begins() {
        let terminus = Terminus::builder().build().unwrap();
        let never = futures_util::stream::pending::<Result<u8, Status>>();
        let mut stream = Box::pin(until_draining(never, &terminus).status(Status::aborted("moving")));
        let waiter = tokio::spawn(async move { stream.next().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        terminus.shutdown("test");
        let last = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken by draining")
            .unwrap();
        assert_eq!(last.unwrap().unwrap_err().code(), Code::Aborted);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_by_itself_sends_no_status() {
        let terminus = Terminus::builder().build().unwrap();
        let items = futures_util::stream::iter([Ok::<_, Status>(1), Ok(2)]);
        let items: Vec<u8> = until_draining(items, &terminus)
            .map(|item| item.unwrap())
            .collect()
            .await;
        assert_eq!(items, [1, 2]);
    }
}
