//! Every request on a server connection, tracked once: from the moment hyper has its
//! head until its response body has ended.
//!
//! [`TrackedService`] wraps the application for one connection. For each request it
//! takes the `Terminus`'s [`RequestGuard`] (Closing waits for it) with a
//! [`ServedRequest`] that names the request (peer, protocol, method, path, age) for the
//! cut report, and tells the [`Connection`] a request is in flight. The guard rides in
//! the response body ([`TrackedBody`]) until the body ends, fails or is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Method, Request, Response};
use http_body::Frame;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use terminus_core::server::{self, Answered, ServerExt};
use terminus_core::{DescribeRequest, RequestGuard, Terminus};
use tower_service::Service;

use crate::clock::Tick;
use crate::connection::Connection;
use crate::settings::Settings;

/// The application, wrapped for one connection.
#[derive(Clone)]
pub(crate) struct TrackedService<S, A> {
    inner: S,
    connection: Arc<Connection>,
    settings: Arc<Settings>,
    /// The listener's address of the peer, for axum's `ConnectInfo`.
    addr: A,
}

impl<S, A> TrackedService<S, A> {
    pub(crate) fn new(inner: S, connection: Arc<Connection>, settings: Arc<Settings>, addr: A) -> Self {
        TrackedService {
            inner,
            connection,
            settings,
            addr,
        }
    }
}

/// hyper's `Service` (which takes `&self`), so that only the application's service is
/// cloned for each request, as tower's `oneshot` needs, not this wrapper's handles.
impl<S, B, A> hyper::service::Service<Request<Incoming>> for TrackedService<S, A>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
    A: Clone + Send + Sync + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = TrackedFuture<S, S::Future>;

    #[inline]
    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let upgrade = is_upgrade(&request);
        // `ConnectInfo`, as `into_make_service_with_connect_info` gives axum handlers.
        // Inserting it allocates the request's extension map, a few percent of a small
        // request, so only when asked for, and always on upgrades, whose sessions
        // (the WebSocket helpers) name their peer when they report.
        if self.settings.connect_info || upgrade {
            request.extensions_mut().insert(ConnectInfo(self.addr.clone()));
        }
        // The connection is busy from here until the response body ends, probes too:
        // they are answered on it, and their heads end the header-read timeout as any
        // other's do.
        let served = ServedRequest::new(&self.connection, &request, upgrade);
        let mut service = self.inner.clone();
        let request = request.map(Body::new);
        // axum's routers are always ready: call at once. A service that is not ready yet
        // is called once it is (see `TrackedFuture`).
        let state = match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => call(&mut service, request, served, &self.settings.terminus),
            _ => State::Waiting {
                waiting: Some(Box::new(Waiting {
                    service,
                    request,
                    served,
                })),
            },
        };
        TrackedFuture { state }
    }
}

/// Calls the application inside [`server::call_tracked`]: the layer, called inside,
/// leaves the count to this server and says when it answered a probe. A probe is no
/// request of the application's: the layer answers it in microseconds, and it is never
/// counted in flight, drained or cut.
#[inline]
fn call<S, F>(
    service: &mut S,
    request: Request<Body>,
    served: ServedRequest,
    terminus: &Terminus,
) -> State<S, F>
where
    S: Service<Request<Body>, Future = F>,
{
    let (future, said) = server::call_tracked(|| service.call(request));
    // Boxed: the response body stays small enough to be moved without a memcpy call,
    // which hyper does several times per response (measured: cheaper than the
    // allocation).
    let held = Box::new(match said {
        Some(Answered::Probe) => Held::Uncounted(served),
        Some(Answered::Request) => Held::decided(served, terminus),
        // axum's `Router::layer` reaches the layer only when the response future is first
        // polled: decided then.
        None => Held::Undecided(served),
    });
    State::Called {
        future,
        held: Some(held),
        first_poll: true,
        heard: said.is_some(),
    }
}

/// What a response holds until its body ends: dropping it ends the request.
enum Held {
    /// Called, and not known yet whether the layer answered a probe: axum's
    /// `Router::layer` calls the layer only when the response future is first polled.
    /// Decided at the latest then ([`Held::decide`]).
    Undecided(ServedRequest),
    /// An application request: Closing waits for it, and it counts as drained or cut.
    Counted(RequestGuard<ServedRequest>),
    /// A probe, or a request on an admin listener (`/metrics`, say): its connection knows
    /// it is busy, and the lifecycle's counts and metrics leave it out. A probe is no
    /// request of the application's: it is never counted in flight, drained or cut.
    Uncounted(ServedRequest),
    /// Only inside [`Held::decide`], between taking the request and storing it again.
    Deciding,
}

impl Held {
    /// Counts the request, unless the connection is an admin listener's.
    fn decided(served: ServedRequest, terminus: &Terminus) -> Held {
        if served.connection.admin {
            Held::Uncounted(served)
        } else {
            Held::Counted(terminus.track_request(served))
        }
    }

    /// Decides at the first poll what the call could not: uncounted if the layer said it
    /// answered a probe, counted otherwise. Once: a decided request stays as it is.
    fn decide(&mut self, said: Option<Answered>) {
        if !matches!(self, Held::Undecided(_)) {
            return;
        }
        let Held::Undecided(served) = std::mem::replace(self, Held::Deciding) else {
            return;
        };
        *self = if said == Some(Answered::Probe) {
            Held::Uncounted(served)
        } else {
            let terminus = served.connection.terminus.clone();
            Held::decided(served, &terminus)
        };
    }

    fn served(&self) -> Option<&ServedRequest> {
        match self {
            Held::Counted(guard) => Some(guard.request()),
            Held::Undecided(served) | Held::Uncounted(served) => Some(served),
            Held::Deciding => None,
        }
    }
}

/// An HTTP/1.1 upgrade or an HTTP/2 extended CONNECT (RFC 8441): hyper gives exactly
/// those requests an `OnUpgrade`. Reading the (usually empty) extension map is cheaper
/// than looking up a header.
fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.extensions().get::<hyper::upgrade::OnUpgrade>().is_some()
}

/// What the cut report says about a request served on a connection.
pub(crate) struct ServedRequest {
    connection: Arc<Connection>,
    method: Method,
    /// The path (and query): a reference count, where the whole `Uri` would be three.
    path: Option<PathAndQuery>,
    started: Tick,
}

impl ServedRequest {
    fn new<B>(connection: &Arc<Connection>, request: &Request<B>, upgrade: bool) -> ServedRequest {
        connection.request_started(upgrade);
        ServedRequest {
            connection: Arc::clone(connection),
            method: request.method().clone(),
            path: request.uri().path_and_query().cloned(),
            started: connection.clock.now(),
        }
    }
}

impl DescribeRequest for ServedRequest {
    fn report_cut(&self) {
        let connection = &self.connection;
        tracing::warn!(
            target: "terminus",
            peer = %connection.peer,
            protocol = connection.protocol().as_str(),
            method = %self.method,
            path = %self.path.as_ref().map_or("/", PathAndQuery::path),
            age_ms = connection.clock.age(self.started).as_millis() as u64,
            "request cut at the drain deadline"
        );
    }
}

impl Drop for ServedRequest {
    fn drop(&mut self) {
        self.connection.request_ended();
    }
}

pin_project! {
    /// The application's response future; hands the request's guard to the body.
    pub(crate) struct TrackedFuture<S, F> {
        #[pin]
        state: State<S, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F> {
        /// Called: the application's future, and what its response will hold.
        Called {
            #[pin]
            future: F,
            held: Option<Box<Held>>,
            // The first poll, and every poll until the layer is heard from, runs inside
            // the server's call, so that a layer reached only then (one inside the
            // router, or nested inside another) sees this server counts the request.
            first_poll: bool,
            heard: bool,
        },
        /// The service was not ready when the request came: it is called once it is.
        /// Boxed: rare, and the request would make every response future larger.
        Waiting { waiting: Option<Box<Waiting<S>>> },
    }
}

/// A request waiting for its service to be ready.
struct Waiting<S> {
    service: S,
    request: Request<Body>,
    served: ServedRequest,
}

impl<S, F, B> Future for TrackedFuture<S, F>
where
    S: Service<Request<Body>, Future = F, Error = Infallible>,
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Called {
                    future,
                    held,
                    first_poll,
                    heard,
                } => {
                    let poll = if *first_poll || !*heard {
                        let (poll, said) = server::call_tracked(|| future.poll(cx));
                        if let Some(held) = held.as_mut() {
                            held.decide(said);
                        }
                        *first_poll = false;
                        *heard |= said.is_some();
                        poll
                    } else {
                        future.poll(cx)
                    };
                    let mut response = ready!(poll)?;
                    let held = held.take();
                    if let Some(served) = held.as_deref().and_then(Held::served) {
                        served.connection.close_if_retiring(&mut response);
                    }
                    return Poll::Ready(Ok(response.map(|body| TrackedBody { inner: body, held })));
                }
                StateProj::Waiting { waiting } => {
                    // Taken only below, where the state becomes `Called`.
                    let Some(ready) = waiting.as_mut() else {
                        return Poll::Pending;
                    };
                    ready!(ready.service.poll_ready(cx))?;
                    let Some(ready) = waiting.take() else {
                        return Poll::Pending;
                    };
                    let Waiting {
                        mut service,
                        request,
                        served,
                    } = *ready;
                    let terminus = served.connection.terminus.clone();
                    let called = call(&mut service, request, served, &terminus);
                    state.as_mut().set(called);
                }
            }
        }
    }
}

pin_project! {
    /// The response body, holding its request's guard until the body ends.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        held: Option<Box<Held>>,
    }
}

impl<B> http_body::Body for TrackedBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // The end of the body, or an error, ends the request.
            this.held.take();
        }
        Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
