//! [`TerminusService`]: the middleware itself.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response, Uri, Version};
use http_body::Body;
use terminus_core::server::ServerExt;
use terminus_core::DescribeRequest;
use tower_service::Service;

use crate::body::TerminusBody;
use crate::future::ResponseFuture;
use crate::layer::Shared;

/// Answers probe paths itself and passes every other request to the inner service,
/// counting it as in flight until its response body ends (unless the server tracks
/// requests itself, as `axum_terminus::serve` does). Created by
/// [`TerminusLayer`](crate::TerminusLayer).
pub struct TerminusService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> TerminusService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        TerminusService { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for TerminusService<S> {
    fn clone(&self) -> Self {
        TerminusService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for TerminusService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminusService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TerminusService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<TerminusBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        if let Some(probe) = shared.probes.find(request.uri().path()) {
            return ResponseFuture::probe(shared.probes.answer(probe, &request, &shared.terminus));
        }
        let version = request.version();
        // Under a server that tracks requests at its connections, counting here too
        // would count every request twice.
        let guard = (!shared.terminus.requests_tracked_by_server()).then(|| {
            // Boxed: the response future and body stay small for the common case, a
            // server that tracks requests itself, where there is no guard here at all.
            Box::new(shared.terminus.track_request(LayerRequest {
                method: request.method().clone(),
                uri: request.uri().clone(),
                version,
                started: Instant::now(),
            }))
        });
        ResponseFuture::inner(self.inner.call(request), guard, version, Arc::clone(shared))
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
