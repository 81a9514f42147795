//! [`TerminusService`]: the middleware itself.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::body::TerminusBody;
use crate::future::ResponseFuture;
use crate::layer::Shared;

/// Answers probe paths itself and passes every other request to the inner service,
/// counting it as in flight until its response body ends. Created by
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

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        if let Some(probe) = shared.probes.find(request.uri().path()) {
            return ResponseFuture::probe(shared.probes.answer(probe, &request, &shared.controller));
        }
        let guard = shared.controller.track_request();
        let version = request.version();
        ResponseFuture::inner(self.inner.call(request), guard, version, Arc::clone(shared))
    }
}
