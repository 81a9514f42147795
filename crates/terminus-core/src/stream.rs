//! [`until_draining`]: a stream that ends when Draining begins, optionally after one
//! last item.
//!
//! A streaming response (Server-Sent Events, NDJSON, a long poll, a gRPC server
//! stream) counts as in flight until it ends, so an endless one holds Closing until
//! `drain_timeout` and is then cut mid-stream, with no hint to the client that it may
//! simply reconnect. Wrapped in [`UntilDraining`], it ends at Draining instead, while
//! the balancer is still taking the instance out, after a last item that tells the
//! client what happened: an SSE `event: reconnect` with a `retry:` hint
//! (`axum_terminus::sse`), a gRPC `UNAVAILABLE` status (`tonic_terminus::until_draining`),
//! or whatever the protocol says.
//!
//! ```
//! use futures_util::StreamExt;
//! use terminus_core::{until_draining, Terminus};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().build()?;
//! let lines = futures_util::stream::repeat("tick\n");
//! let mut body = until_draining(lines, &terminus).final_item("bye: server draining\n");
//! assert_eq!(body.next().await, Some("tick\n"));
//! terminus.shutdown("deploy");
//! assert_eq!(body.next().await, Some("bye: server draining\n"));
//! assert_eq!(body.next().await, None);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use pin_project_lite::pin_project;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::Terminus;

/// Wraps `stream` so that it ends when `terminus` begins Draining (at once if it
/// already has), after the [`final_item`](UntilDraining::final_item) if one is set.
/// See [`UntilDraining`].
pub fn until_draining<S: Stream>(stream: S, terminus: &Terminus) -> UntilDraining<S> {
    UntilDraining {
        inner: stream,
        draining: Box::pin(terminus.token().cancelled_owned()),
        final_item: None,
        ended: false,
    }
}

pin_project! {
    /// A stream that yields its inner stream's items until Draining begins, then the
    /// optional final item, then ends. It also ends when the inner stream ends, then
    /// without the final item: that one is for the shutdown.
    ///
    /// Draining is checked before each item, so a stream that always has an item
    /// ready still ends promptly. Once ended it stays ended (it is fused). Dropping it
    /// drops the inner stream; nothing else is held.
    #[must_use = "streams do nothing unless polled"]
    pub struct UntilDraining<S>
    where
        S: Stream,
    {
        #[pin]
        inner: S,
        draining: Pin<Box<WaitForCancellationFutureOwned>>,
        final_item: Option<S::Item>,
        ended: bool,
    }
}

impl<S: Stream> UntilDraining<S> {
    /// One last item sent when Draining ends the stream (none by default).
    pub fn final_item(mut self, item: S::Item) -> Self {
        self.final_item = Some(item);
        self
    }
}

impl<S: Stream> Stream for UntilDraining<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if this.draining.as_mut().poll(cx).is_ready() {
            *this.ended = true;
            return Poll::Ready(this.final_item.take());
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
        // Draining may end it at any time: no lower bound.
        let upper = self
            .inner
            .size_hint()
            .1
            .and_then(|upper| upper.checked_add(usize::from(self.final_item.is_some())));
        (0, upper)
    }
}

impl<S> fmt::Debug for UntilDraining<S>
where
    S: Stream + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UntilDraining")
            .field("inner", &self.inner)
            .field("has_final_item", &self.final_item.is_some())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn an_endless_stream_ends_with_the_final_item_at_draining() {
        let terminus = Terminus::builder().build().unwrap();
        let ticks = futures_util::stream::repeat("tick");
        let mut stream = Box::pin(until_draining(ticks, &terminus).final_item("bye"));
        assert_eq!(stream.next().await, Some("tick"));
        assert_eq!(stream.next().await, Some("tick"));
        terminus.shutdown("test");
        assert_eq!(stream.next().await, Some("bye"));
        assert_eq!(stream.next().await, None);
        assert_eq!(stream.next().await, None, "stays ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_stream_is_woken_when_draining_begins() {
        let terminus = Terminus::builder().build().unwrap();
        let never = futures_util::stream::pending::<u8>();
        let mut stream = Box::pin(until_draining(never, &terminus));
        let waiter = tokio::spawn(async move { stream.next().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        terminus.shutdown("test");
        let ended = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken by draining")
            .unwrap();
        assert_eq!(ended, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_by_itself_sends_no_final_item() {
        let terminus = Terminus::builder().build().unwrap();
        let items = futures_util::stream::iter([1, 2]);
        let stream = until_draining(items, &terminus).final_item(99);
        assert_eq!(stream.collect::<Vec<_>>().await, vec![1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_wrapped_after_draining_began_ends_at_once() {
        let terminus = Terminus::builder().build().unwrap();
        terminus.shutdown("test");
        let ticks = futures_util::stream::repeat("tick");
        let stream = until_draining(ticks, &terminus).final_item("bye");
        assert_eq!(stream.collect::<Vec<_>>().await, vec!["bye"]);
    }
}
