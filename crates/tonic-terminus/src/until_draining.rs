//! [`until_draining`]: a server-streaming response that ends at Draining with
//! `UNAVAILABLE`, so the client calls again, on another instance.
//!
//! A server stream counts as in flight until it ends, so an endless one holds Closing
//! until `drain_timeout` and is then cut (the client sees the connection reset, or
//! `CANCELLED`, with no hint that retrying is safe). Wrapped in [`UntilDraining`], it
//! ends when Draining begins, with a status clients and retry policies treat as
//! "try again elsewhere", while the balancer is still taking the instance out.
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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;
use terminus_core::Terminus;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::Status;

/// The message of the status [`until_draining`] ends a stream with.
pub const DRAINING_MESSAGE: &str = "server is shutting down; retry on another instance";

/// Wraps a server-streaming response so that it ends when `terminus` begins Draining
/// (at once if it already has): the items so far, then `Err(Status::unavailable(..))`
/// (see [`UntilDraining::status`] for another status), then the end. A stream that ends
/// by itself before Draining ends as it would have.
pub fn until_draining<S, T>(stream: S, terminus: &Terminus) -> UntilDraining<S>
where
    S: Stream<Item = Result<T, Status>>,
{
    UntilDraining {
        inner: stream,
        draining: Box::pin(terminus.token().cancelled_owned()),
        last: Some(Status::unavailable(DRAINING_MESSAGE)),
        ended: false,
    }
}

pin_project! {
    /// A server stream that yields its inner stream's items until Draining begins, then
    /// a last error status (`UNAVAILABLE` unless [`status`](UntilDraining::status)
    /// says otherwise) and the end. Draining is checked before each item, so a stream
    /// that always has an item ready still ends promptly.
    #[must_use = "streams do nothing unless polled"]
    pub struct UntilDraining<S> {
        #[pin]
        inner: S,
        draining: Pin<Box<WaitForCancellationFutureOwned>>,
        last: Option<Status>,
        ended: bool,
    }
}

impl<S> UntilDraining<S> {
    /// The status sent when Draining ends the stream, instead of `UNAVAILABLE`.
    pub fn status(mut self, status: Status) -> Self {
        self.last = Some(status);
        self
    }
}

impl<S, T> Stream for UntilDraining<S>
where
    S: Stream<Item = Result<T, Status>>,
{
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if this.draining.as_mut().poll(cx).is_ready() {
            *this.ended = true;
            return Poll::Ready(this.last.take().map(Err));
        }
        let next = this.inner.poll_next(cx);
        if let Poll::Ready(None) = next {
            *this.ended = true;
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.ended {
            return (0, Some(0));
        }
        // Draining may end it at any time, after one more item.
        let upper = self.inner.size_hint().1.and_then(|upper| upper.checked_add(1));
        (0, upper)
    }
}

impl<S: fmt::Debug> fmt::Debug for UntilDraining<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntilDraining")
            .field("inner", &self.inner)
            .field("status", &self.last.as_ref().map(Status::code))
            .field("ended", &self.ended)
            .finish_non_exhaustive()
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
