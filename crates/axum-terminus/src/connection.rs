//! The connection registry: every accepted connection, what it is doing, and how to
//! ask it to close (gracefully or not).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{ready, Context, Poll, Waker};
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::{Method, Request, Response, Uri, Version};
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tower_service::Service;

use crate::io::{Direction, TrackedIo};
use crate::serve::BoxError;

/// Every open connection of a server, across all its listeners.
#[derive(Default)]
pub(crate) struct Registry {
    /// Insert `ConnectInfo<SocketAddr>` into every request, not only upgrades.
    connect_info: bool,
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    empty: Notify,
    /// Draining began: HTTP/2 connections should get GOAWAY.
    draining: AtomicBool,
    /// Closing began: every connection should shut down gracefully.
    closing: AtomicBool,
}

/// One connection's shared state.
pub(crate) struct Connection {
    peer: SocketAddr,
    accepted: Instant,
    /// Set by the first HTTP/2 request: only those connections get GOAWAY at Draining.
    http2: AtomicBool,
    /// Wakes the connection task to re-check whether it should shut down.
    wake: Notify,
    requests: Mutex<Requests>,
    abort: OnceLock<AbortHandle>,
    /// Set when the drain deadline cuts the connection: its socket fails from then on.
    cut: AtomicBool,
    /// The tasks waiting to read and to write on the socket, woken by a cut.
    parked: [AtomicWaker; 2],
}

#[derive(Default)]
struct Requests {
    next_id: u64,
    active: Vec<ActiveRequest>,
}

/// What a cut reports about a request: its method and path. (Its age would cost a
/// clock read per request; the connection's age is reported instead.)
struct ActiveRequest {
    id: u64,
    method: Method,
    uri: Uri,
}

/// Locks data that stays consistent even if a holder panicked: every critical
/// section is one insert, remove or read.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// An empty registry; `connect_info` inserts `ConnectInfo` into every request.
    pub(crate) fn new(connect_info: bool) -> Registry {
        Registry {
            connect_info,
            ..Registry::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.connections).len()
    }

    /// Serves `stream` on its own task, registered until the connection ends.
    pub(crate) fn spawn<S, B>(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        service: S,
        builder: Arc<auto::Builder<TokioExecutor>>,
    ) where
        S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            peer,
            accepted: Instant::now(),
            http2: AtomicBool::new(false),
            wake: Notify::new(),
            requests: Mutex::new(Requests::default()),
            abort: OnceLock::new(),
            cut: AtomicBool::new(false),
            parked: [AtomicWaker::new(), AtomicWaker::new()],
        });
        // Registered before the task starts, so Closing cannot miss it.
        lock(&self.connections).insert(id, Arc::clone(&connection));
        let registry = Arc::clone(self);
        // The socket carries the registration: the connection stays registered until
        // the socket is dropped, whether by hyper, by an upgraded (WebSocket) handler, or
        // with a task aborted before it ever ran.
        let io = TrackedIo::new(
            stream,
            Arc::clone(&connection),
            Registered {
                registry: Arc::clone(&registry),
                id,
            },
        );
        let task = tokio::spawn({
            let connection = Arc::clone(&connection);
            async move {
                let service = ConnectionService {
                    inner: service,
                    connection: Arc::clone(&connection),
                    registry: Arc::clone(&registry),
                };
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
                tokio::pin!(conn);
                let mut asked_to_close = false;
                loop {
                    if !asked_to_close && registry.should_close(&connection) {
                        // HTTP/1: finish the current response, then close (at once if idle).
                        // HTTP/2: GOAWAY; streams already open complete.
                        conn.as_mut().graceful_shutdown();
                        asked_to_close = true;
                    }
                    tokio::select! {
                        result = conn.as_mut() => {
                            if let Err(error) = result {
                                tracing::debug!(target: "terminus", peer = %connection.peer, %error, "connection ended with an error");
                            }
                            break;
                        }
                        () = connection.wake.notified(), if !asked_to_close => {}
                    }
                }
            }
        });
        // If the task already finished, the handle is never used; setting it is harmless.
        let _ = connection.abort.set(task.abort_handle());
    }

    fn should_close(&self, connection: &Connection) -> bool {
        self.closing.load(Ordering::Acquire)
            || (self.draining.load(Ordering::Acquire) && connection.http2.load(Ordering::Acquire))
    }

    /// Draining: tell HTTP/2 clients to open new connections (which the balancer routes
    /// elsewhere). HTTP/1 connections are told per response, with `Connection: close`.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        for connection in lock(&self.connections).values() {
            if connection.http2.load(Ordering::Acquire) {
                connection.wake.notify_one();
            }
        }
    }

    /// Closing: every connection finishes what it is doing and closes.
    pub(crate) fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        for connection in lock(&self.connections).values() {
            connection.wake.notify_one();
        }
    }

    /// Resolves once no connection is open.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Cuts every connection still open, with one `warn` event for each: the
    /// connection's task is aborted, and its socket fails every read and write from
    /// now on (which is what reaches a socket an upgrade handed to another task).
    pub(crate) fn force_close(&self) -> usize {
        let connections: Vec<Arc<Connection>> = lock(&self.connections).values().cloned().collect();
        let now = Instant::now();
        for connection in &connections {
            let upgraded = connection.abort.get().is_some_and(AbortHandle::is_finished);
            let protocol = match (upgraded, connection.http2.load(Ordering::Acquire)) {
                (true, _) => "upgraded",
                (false, true) => "HTTP/2",
                (false, false) => "HTTP/1",
            };
            let in_flight: Vec<String> = lock(&connection.requests)
                .active
                .iter()
                .map(|request| format!("{} {}", request.method, request.uri.path()))
                .collect();
            tracing::warn!(
                target: "terminus",
                peer = %connection.peer,
                age_ms = now.duration_since(connection.accepted).as_millis() as u64,
                protocol,
                in_flight = %if in_flight.is_empty() { "none".to_owned() } else { in_flight.join(", ") },
                "connection cut at the drain deadline"
            );
            connection.cut();
            if let Some(abort) = connection.abort.get() {
                abort.abort();
            }
        }
        connections.len()
    }
}

impl Connection {
    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// Remembers the task waiting on the socket in `direction`, so that a cut can wake it.
    pub(crate) fn park(&self, direction: Direction, waker: &Waker) {
        self.parked[direction as usize].register(waker);
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        for parked in &self.parked {
            parked.wake();
        }
    }
}

/// Removes the connection from the registry when its socket is dropped.
pub(crate) struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut connections = lock(&self.registry.connections);
        connections.remove(&self.id);
        if connections.is_empty() {
            self.registry.empty.notify_waiters();
        }
    }
}

/// Wraps the application for one connection: notes the protocol and which requests
/// are in flight, so that a cut connection can be reported precisely.
#[derive(Clone)]
struct ConnectionService<S> {
    inner: S,
    connection: Arc<Connection>,
    registry: Arc<Registry>,
}

impl<S, B> Service<Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<ConnectionBody<B>>;
    type Error = Infallible;
    type Future = ConnectionFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        let connection = &self.connection;
        // `ConnectInfo<SocketAddr>`, as `into_make_service_with_connect_info` gives axum
        // handlers. Inserting it allocates the request's extension map, a few percent of a
        // small request, so only when asked for, and always on upgrades, whose sessions
        // (WebSocket helpers) name their peer when they report.
        if self.registry.connect_info || is_upgrade(&request) {
            request.extensions_mut().insert(ConnectInfo(connection.peer));
        }
        if request.version() == Version::HTTP_2
            && !connection.http2.swap(true, Ordering::AcqRel)
            && self.registry.draining.load(Ordering::Acquire)
        {
            // A new HTTP/2 connection during Draining: serve this stream, and GOAWAY.
            connection.wake.notify_one();
        }
        let active = ActiveGuard::new(
            Arc::clone(connection),
            request.method().clone(),
            request.uri().clone(),
        );
        ConnectionFuture {
            inner: self.inner.call(request.map(Body::new)),
            active: Some(active),
        }
    }
}

pin_project! {
    /// The application's response future; hands the in-flight entry to the body.
    pub(crate) struct ConnectionFuture<F> {
        #[pin]
        inner: F,
        active: Option<ActiveGuard>,
    }
}

impl<F, B> std::future::Future for ConnectionFuture<F>
where
    F: std::future::Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<ConnectionBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let active = this.active.take();
        Poll::Ready(Ok(response.map(|body| ConnectionBody {
            inner: body,
            _active: active,
        })))
    }
}

/// An HTTP/1.1 upgrade or an HTTP/2 extended CONNECT (RFC 8441): hyper gives exactly
/// those requests an `OnUpgrade`. Reading the (usually empty) extension map is cheaper
/// than looking up a header.
fn is_upgrade<B>(request: &Request<B>) -> bool {
    request.extensions().get::<hyper::upgrade::OnUpgrade>().is_some()
}

/// Keeps a request listed as in flight on its connection until its body is dropped.
struct ActiveGuard {
    connection: Arc<Connection>,
    id: u64,
}

impl ActiveGuard {
    fn new(connection: Arc<Connection>, method: Method, uri: Uri) -> ActiveGuard {
        let mut requests = lock(&connection.requests);
        let id = requests.next_id;
        requests.next_id += 1;
        requests.active.push(ActiveRequest { id, method, uri });
        drop(requests);
        ActiveGuard { connection, id }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut requests = lock(&self.connection.requests);
        if let Some(index) = requests.active.iter().position(|request| request.id == self.id) {
            requests.active.swap_remove(index);
        }
    }
}

pin_project! {
    /// The response body, holding its request's entry in the connection's list.
    pub(crate) struct ConnectionBody<B> {
        #[pin]
        inner: B,
        _active: Option<ActiveGuard>,
    }
}

impl<B> http_body::Body for ConnectionBody<B>
where
    B: http_body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
