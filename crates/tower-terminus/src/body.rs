//! [`TerminusBody`]: the response body, holding the request's guard until it ends.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use terminus_core::RequestGuard;

use crate::service::LayerRequest;

pin_project! {
    /// The response body of [`TerminusService`](crate::TerminusService).
    ///
    /// For an application response it wraps the inner body and, when the layer tracks
    /// the request, keeps it counted as in flight until the body ends, fails, or is
    /// dropped (a client that disconnects mid-stream). For a probe it is the probe's
    /// small, complete body. `Default` is an empty body, which middleware such as
    /// tower-http's `TimeoutLayer` needs for the responses it makes up.
    pub struct TerminusBody<B> {
        #[pin]
        kind: Kind<B>,
        guard: Option<Box<RequestGuard<LayerRequest>>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { bytes: Option<Bytes> },
    }
}

impl<B> TerminusBody<B> {
    #[inline]
    pub(crate) fn inner(body: B, guard: Option<Box<RequestGuard<LayerRequest>>>) -> Self
    where
        B: Body,
    {
        // A body that is already over (an empty 204, a HEAD response) releases the
        // request now: nothing will ever poll it to its end.
        let guard = guard.filter(|_| !body.is_end_stream());
        TerminusBody {
            kind: Kind::Inner { body },
            guard,
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        TerminusBody {
            kind: Kind::Full {
                bytes: (!bytes.is_empty()).then_some(bytes),
            },
            guard: None,
        }
    }
}

impl<B> Default for TerminusBody<B> {
    fn default() -> Self {
        TerminusBody::full(Bytes::new())
    }
}

impl<B> Body for TerminusBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Inner { body } => {
                let frame = ready!(body.poll_frame(cx));
                match &frame {
                    // The end of the body or an error ends the request.
                    None | Some(Err(_)) => {
                        this.guard.take();
                    }
                    Some(Ok(_)) => {}
                }
                Poll::Ready(frame)
            }
            KindProj::Full { bytes } => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { bytes } => bytes.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { bytes } => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl<B> std::fmt::Debug for TerminusBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminusBody")
            .field("tracked", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}
