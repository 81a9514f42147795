//! [`TerminusService`]: the middleware itself.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use terminus_core::server::{self, ServerExt};
use terminus_core::Terminus;
use tower_service::Service;

use crate::body::{LayerRequest, TerminusBody};
use crate::future::ResponseFuture;
use crate::probe::ProbeRoutes;

/// Answers probe paths itself and passes every other request to the inner service,
/// counting it as in flight until its response body ends (unless the server tracks
/// requests itself, as `axum_terminus::serve` does). Created by
/// [`TerminusLayer`](crate::TerminusLayer).
pub struct TerminusService<S> {
    inner: S,
    state: Arc<LayerState>,
}

/// What a [`TerminusLayer`](crate::TerminusLayer) gives every service it makes, and
/// every clone of those share.
pub(crate) struct LayerState {
    pub(crate) terminus: Terminus,
    pub(crate) probes: Arc<ProbeRoutes>,
}

impl<S> TerminusService<S> {
    pub(crate) fn new(inner: S, state: Arc<LayerState>) -> Self {
        TerminusService { inner, state }
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
            state: Arc::clone(&self.state),
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
        let state = &self.state;
        if let Some(probe) = state.probes.find(request.uri().path()) {
            // A server that called this counts nothing for a probe either.
            server::answered_as_probe();
            return ResponseFuture::probe(state.probes.answer(probe, &request, &state.terminus));
        }
        let version = request.version();
        // A server that counts the request itself called this inside
        // `server::call_tracked`: counting here too would count it twice. Any other
        // server (`axum::serve`, tonic's) leaves the count to the layer.
        let guard = (!server::leave_count_to_server()).then(|| {
            // Boxed: the response future and body stay small for the common case, a
            // server that tracks requests itself, where there is no guard here at all.
            Box::new(state.terminus.track_request(LayerRequest::new(&request)))
        });
        ResponseFuture::inner(self.inner.call(request), guard, version, state.terminus.clone())
    }
}
