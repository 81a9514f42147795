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
        let mut service = self.inner.clone();
        // axum's routers are always ready: call at once. A service that is not ready yet
        // is called once it is (see `TrackedFuture`).
        let ready = matches!(
            service.poll_ready(&mut Context::from_waker(Waker::noop())),
            Poll::Ready(Ok(()))
        );
        if !ready {
            // Busy from now: the request waits on this connection.
            let served = ServedRequest::new(&self.connection, &request, upgrade);
            let request = request.map(Body::new);
            return TrackedFuture::waiting(service, request, served);
        }
        let method = request.method().clone();
        let path = request.uri().path_and_query().cloned();
        let request = request.map(Body::new);
        let (future, said) = server::call_tracked(|| service.call(request));
        // The connection is busy from here until the response body ends, probes too:
        // they are answered on it, and their heads end the header-read timeout as any
        // other's do.
        let holding = if said == Some(Answered::Probe) {
            Holding::probe(&self.connection, upgrade)
        } else {
            let served = ServedRequest::from_head(&self.connection, method, path, upgrade);
            Holding::request(served, said, &self.settings.terminus)
        };
        TrackedFuture::called(future, holding, said)
    }
}

/// What a response holds until its body ends, so that its connection knows it is busy
/// and, for a counted request, the lifecycle waits for it. Dropping it ends the request.
enum Holding {
    Nothing,
    /// A probe the layer answered: it makes the connection busy, and nothing else. A
    /// probe is no request of the application's: it is never counted in flight, drained
    /// or cut. (Not boxed: a probe costs no allocation.)
    Probe(ProbeOnConnection),
    /// Boxed: the response body stays small enough to be moved without a memcpy call,
    /// which hyper does several times per response (measured: cheaper than the
    /// allocation).
    Request(Box<Held>),
}

impl Holding {
    fn probe(connection: &Arc<Connection>, upgrade: bool) -> Holding {
        connection.request_started(upgrade);
        Holding::Probe(ProbeOnConnection(Arc::clone(connection)))
    }

    /// A request's holding once the layer said what it was (or `None`: not yet known,
    /// decided at the first poll).
    fn request(served: ServedRequest, said: Option<Answered>, terminus: &Terminus) -> Holding {
        Holding::Request(Box::new(match said {
            Some(Answered::Probe) => Held::Uncounted(served),
            Some(Answered::Request) => Held::decided(served, terminus),
            // axum's `Router::layer` reaches the layer only when the response future is
            // first polled: decided then.
            None => Held::Undecided(served),
        }))
    }

    fn connection(&self) -> Option<&Connection> {
        match self {
            Holding::Nothing => None,
            Holding::Probe(probe) => Some(&probe.0),
            Holding::Request(held) => held.served().map(|served| &*served.connection),
        }
    }
}

/// A probe in flight on a connection, until its response body ends.
struct ProbeOnConnection(Arc<Connection>);

impl Drop for ProbeOnConnection {
    fn drop(&mut self) {
        self.0.request_ended();
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
        let path = request.uri().path_and_query().cloned();
        ServedRequest::from_head(connection, request.method().clone(), path, upgrade)
    }

    fn from_head(
        connection: &Arc<Connection>,
        method: Method,
        path: Option<PathAndQuery>,
        upgrade: bool,
    ) -> ServedRequest {
        connection.request_started(upgrade);
        ServedRequest {
            connection: Arc::clone(connection),
            method,
            path,
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
            holding: Holding,
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

impl<S, F> State<S, F> {
    /// The service was called: its future, and what the layer said during the call.
    fn called(future: F, holding: Holding, said: Option<Answered>) -> Self {
        State::Called {
            future,
            holding,
            first_poll: true,
            heard: said.is_some(),
        }
    }
}

impl<S, F> TrackedFuture<S, F> {
    fn called(future: F, holding: Holding, said: Option<Answered>) -> Self {
        TrackedFuture {
            state: State::called(future, holding, said),
        }
    }

    fn waiting(service: S, request: Request<Body>, served: ServedRequest) -> Self {
        TrackedFuture {
            state: State::Waiting {
                waiting: Some(Box::new(Waiting {
                    service,
                    request,
                    served,
                })),
            },
        }
    }
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
                    holding,
                    first_poll,
                    heard,
                } => {
                    let poll = if *first_poll || !*heard {
                        let (poll, said) = server::call_tracked(|| future.poll(cx));
                        if let Holding::Request(held) = holding {
                            held.decide(said);
                        }
                        *first_poll = false;
                        *heard |= said.is_some();
                        poll
                    } else {
                        future.poll(cx)
                    };
                    let mut response = ready!(poll)?;
                    let holding = std::mem::replace(holding, Holding::Nothing);
                    if let Some(connection) = holding.connection() {
                        connection.response_ready(&mut response);
                    }
                    return Poll::Ready(Ok(response.map(|body| TrackedBody { inner: body, holding })));
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
                    let (future, said) = server::call_tracked(|| service.call(request));
                    let terminus = served.connection.terminus.clone();
                    let holding = Holding::request(served, said, &terminus);
                    state.as_mut().set(State::called(future, holding, said));
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
        holding: Holding,
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
            *this.holding = Holding::Nothing;
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
