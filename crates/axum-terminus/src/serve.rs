//! The server: accept loops on one or more listeners, driven through the lifecycle.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use terminus_core::{Drain, Outcome, ShutdownController};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::connection::Registry;

/// The error type of response bodies (the same as the hooks').
pub use terminus_core::BoxError;

/// Serves `service` (an axum `Router`, usually with a
/// [`TerminusLayer`](crate::TerminusLayer)) on `listener` until the controller's
/// shutdown has run its course, then returns the [`Outcome`].
///
/// HTTP/1.1 and HTTP/2 (prior knowledge) are both served on the port. The listener
/// keeps accepting while Draining and is closed when Closing begins; in-flight
/// requests then finish within `drain_timeout`, and whatever is left is cut and
/// reported.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use axum_terminus::{Layer, Terminus, TerminusLayer};
///
/// # async fn run() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder().from_env()?.build()?;
/// let app = TerminusLayer::new(&terminus).layer(Router::new().route("/", get(|| async { "hello" })));
/// let listener = axum_terminus::bind("127.0.0.1:3000", &terminus).await?;
/// let outcome = axum_terminus::serve(listener, app, &terminus).await;
/// Ok(outcome.exit_code())
/// # }
/// ```
pub async fn serve<S, B>(listener: TcpListener, service: S, controller: &ShutdownController) -> Outcome
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Server::new(controller).listener(listener, service).run().await
}

/// A server with one or more listeners under one controller: readiness waits for all
/// of them, Closing closes all of them, and one [`Outcome`] covers the process.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use axum_terminus::{Server, Terminus, TerminusLayer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder().build()?;
/// let public = Router::new().route("/", get(|| async { "hello" })).layer(TerminusLayer::new(&terminus));
/// let internal = Router::new().route("/metrics", get(|| async { "" })).layer(TerminusLayer::new(&terminus));
/// let outcome = Server::new(&terminus)
///     .listener(axum_terminus::bind("0.0.0.0:3000", &terminus).await?, public)
///     .listener(axum_terminus::bind("0.0.0.0:9090", &terminus).await?, internal)
///     .run()
///     .await;
/// # let _ = outcome; Ok(()) }
/// ```
#[must_use = "a server does nothing until run() is awaited"]
pub struct Server {
    controller: ShutdownController,
    accept_loops: Vec<AcceptLoop>,
    builder: auto::Builder<TokioExecutor>,
    connect_info: bool,
}

type AcceptLoop = Box<
    dyn FnOnce(Arc<Registry>, CancellationToken, Arc<auto::Builder<TokioExecutor>>) -> AcceptFuture + Send,
>;
type AcceptFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.accept_loops.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with no listeners yet.
    pub fn new(controller: &ShutdownController) -> Server {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // No HTTP/1 timer, as in axum::serve: with one, hyper re-arms a header-read
        // timeout (30 s) on every request, which measured about 2 % of the cost of a small
        // request. A connection that never finishes its request head is cut at
        // `drain_timeout` anyway. To bound slow headers, set
        // `server.http_builder().http1().timer(TokioTimer::new()).header_read_timeout(..)`.
        // The HTTP/2 timer only serves keep-alive pings, which are off unless configured.
        // CONNECT lets HTTP/2 clients open WebSockets (RFC 8441), as axum::serve does.
        builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
        Server {
            controller: controller.clone(),
            accept_loops: Vec::new(),
            builder,
            connect_info: false,
        }
    }

    /// Inserts axum's `ConnectInfo<SocketAddr>` (the peer's address) into every request,
    /// as `into_make_service_with_connect_info` does for `axum::serve`. Off by default:
    /// it allocates per request. Upgrade requests (WebSockets) always carry it.
    pub fn connect_info(mut self, enabled: bool) -> Server {
        self.connect_info = enabled;
        self
    }

    /// Adds a listener and the service it serves.
    pub fn listener<S, B>(mut self, listener: TcpListener, service: S) -> Server
    where
        S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.accept_loops
            .push(Box::new(move |registry, closing, builder| {
                Box::pin(accept_loop(listener, service, registry, closing, builder))
            }));
        self
    }

    /// Adds a listener that serves only the probes ([`admin_router`](crate::admin_router)
    /// with [`admin_layer`](crate::admin_layer)), reporting on this whole server.
    pub fn admin_listener(self, listener: TcpListener) -> Server {
        let router = crate::admin::admin_router(crate::admin::admin_layer(&self.controller));
        self.listener(listener, router)
    }

    /// The hyper connection builder, to tune HTTP/1 and HTTP/2 settings.
    pub fn http_builder(&mut self) -> &mut auto::Builder<TokioExecutor> {
        &mut self.builder
    }

    /// Serves every listener until the shutdown is complete. Readiness turns on now
    /// (every listener is bound), or when `mark_ready()` is called if that is required.
    pub async fn run(self) -> Outcome {
        let registry = Arc::new(Registry::new(self.connect_info));
        let closing = CancellationToken::new();
        let builder = Arc::new(self.builder);
        let mut accepting = tokio::task::JoinSet::new();
        for accept_loop in self.accept_loops {
            accepting.spawn(accept_loop(
                Arc::clone(&registry),
                closing.clone(),
                Arc::clone(&builder),
            ));
        }
        self.controller.mark_listeners_bound();
        let drain = ServerDrain {
            registry,
            closing,
            accepting,
        };
        self.controller.run(drain).await
    }
}

/// How the lifecycle reaches this server's connections.
struct ServerDrain {
    registry: Arc<Registry>,
    closing: CancellationToken,
    accepting: tokio::task::JoinSet<()>,
}

impl Drain for ServerDrain {
    fn start_draining(&mut self) {
        self.registry.start_draining();
    }

    fn close(&mut self) {
        // The accept loops drop their listeners: new connections are refused from here on.
        self.closing.cancel();
        self.registry.close_all();
    }

    async fn idle(&mut self) {
        // The listeners must be gone too, not only the connections.
        while self.accepting.join_next().await.is_some() {}
        self.registry.idle().await;
    }

    fn force_close(&mut self) -> usize {
        self.accepting.abort_all();
        self.registry.force_close()
    }
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    service: S,
    registry: Arc<Registry>,
    closing: CancellationToken,
    builder: Arc<auto::Builder<TokioExecutor>>,
) where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            biased;
            () = closing.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small responses should not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                registry.spawn(stream, peer, service.clone(), Arc::clone(&builder));
            }
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                // Most likely EMFILE: wait for connections to close rather than spin.
                tracing::error!(target: "terminus", %error, "accept failed; retrying in 1 s");
                tokio::select! {
                    () = closing.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    drop(listener);
    tracing::info!(target: "terminus", address = ?local, "listener closed");
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}
