//! [`TerminusBody`]: the response body, holding the request's guard until it ends;
//! and [`LayerRequest`], what the guard knows of the request.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use terminus_core::{DescribeRequest, RequestGuard};

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
        kind: BodyKind<B>,
        guard: Option<Box<RequestGuard<LayerRequest>>>,
    }
}

pin_project! {
    #[project = BodyKindProj]
    enum BodyKind<B> {
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
            kind: BodyKind::Inner { body },
            guard,
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        TerminusBody {
            kind: BodyKind::Full {
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
            BodyKindProj::Inner { body } => {
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
            BodyKindProj::Full { bytes } => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { body } => body.is_end_stream(),
            BodyKind::Full { bytes } => bytes.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { body } => body.size_hint(),
            BodyKind::Full { bytes } => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
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

/// The protocol as the server's events name it (`HTTP/1.1`, `HTTP/2`).
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// What the layer knows of a request it tracks, for the report if it is cut. (The peer
/// is known only to the server.)
pub(crate) struct LayerRequest {
    method: Method,
    uri: Uri,
    version: Version,
    started: Instant,
}

impl LayerRequest {
    /// What to report of `request` if it is cut, from now on.
    pub(crate) fn new<B>(request: &Request<B>) -> LayerRequest {
        LayerRequest {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            started: Instant::now(),
        }
    }
}

impl DescribeRequest for LayerRequest {
    fn report_cut(&self) {
        tracing::warn!(
            target: "terminus",
            protocol = protocol(self.version),
            method = %self.method,
            path = %self.uri.path(),
            age_ms = self.started.elapsed().as_millis() as u64,
            "request cut at the drain deadline"
        );
    }
}
