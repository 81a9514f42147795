//! [`ResponseFuture`]: the inner service's future, or a probe's answer once its checks ran.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, HeaderValue, Response, StatusCode, Version};
use http_body::Body;
use pin_project_lite::pin_project;
use terminus_core::{RequestGuard, Terminus};

use crate::body::{LayerRequest, TerminusBody};
use crate::probe::ProbeFuture;

pin_project! {
    /// The response future of [`TerminusService`](crate::TerminusService).
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: FutureKind<F, B>,
    }
}

pin_project! {
    #[project = FutureKindProj]
    enum FutureKind<F, B> {
        Inner {
            #[pin]
            future: F,
            guard: Option<Box<RequestGuard<LayerRequest>>>,
            version: Version,
            terminus: Terminus,
        },
        Probe {
            future: ProbeFuture,
            body: PhantomData<fn() -> B>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    #[inline]
    pub(crate) fn inner(
        future: F,
        guard: Option<Box<RequestGuard<LayerRequest>>>,
        version: Version,
        terminus: Terminus,
    ) -> Self {
        ResponseFuture {
            kind: FutureKind::Inner {
                future,
                guard,
                version,
                terminus,
            },
        }
    }

    pub(crate) fn probe(future: ProbeFuture) -> Self {
        ResponseFuture {
            kind: FutureKind::Probe {
                future,
                body: PhantomData,
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<TerminusBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            FutureKindProj::Inner {
                future,
                guard,
                version,
                terminus,
            } => {
                // An error drops the guard with the future: the request is over.
                let mut response = ready!(future.poll(cx))?;
                if terminus.phase().is_shutting_down() && wants_connection_close(*version, &response) {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                let guard = guard.take();
                Poll::Ready(Ok(response.map(|body| TerminusBody::inner(body, guard))))
            }
            FutureKindProj::Probe { future, .. } => {
                let response = ready!(Pin::new(future).poll(cx));
                Poll::Ready(Ok(response.map(TerminusBody::full)))
            }
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            FutureKind::Inner { .. } => "inner",
            FutureKind::Probe { .. } => "probe",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// `Connection: close` tells an HTTP/1.x client to take its next request elsewhere.
/// HTTP/2 forbids connection-specific headers (GOAWAY does that job), and a `101
/// Switching Protocols` response must keep its `Connection: upgrade`.
fn wants_connection_close<B>(version: Version, response: &Response<B>) -> bool {
    matches!(version, Version::HTTP_10 | Version::HTTP_11)
        && response.status() != StatusCode::SWITCHING_PROTOCOLS
        && !response.headers().contains_key(header::UPGRADE)
}
