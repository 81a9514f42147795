//! [`serve`] and [`Server`]: accept loops on one or more listeners, driven through the
//! lifecycle.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use terminus_core::server::ServerExt;
use terminus_core::{ConfigError, Outcome, Terminus};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower_service::Service;

use crate::accept::{accept_loop, Role, ServerParts};
use crate::clock::Clock;
use crate::connection::Limits;
use crate::drain::{CutOnDrop, Registry, ServerDrain};
use crate::listener::TerminusListener;
use crate::serve_connection::Transport;
use crate::settings::{Settings, Versions};
use crate::timeouts::{self, Timeouts};

/// The error type of response bodies (the same as the hooks').
pub use terminus_core::BoxError;

pub use terminus_core::{
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_CLOSE_TIMEOUT, ENV_HEADER_READ_TIMEOUT, ENV_IDLE_CLOSE_TIMEOUT,
    ENV_MAX_CONNECTIONS,
};

/// Serves `service` (an axum `Router`, usually inside a
/// [`TerminusLayer`](crate::TerminusLayer)) on `listener` until the shutdown has run its
/// course, then returns the [`Outcome`]. `listener` is a `tokio::net::TcpListener`, a
/// `tokio::net::UnixListener`, a socket systemd passed, or your own
/// [`axum::serve::Listener`] with a [`TerminusListener`] implementation (an empty
/// `impl` gives the defaults).
///
/// HTTP/1.1 and HTTP/2 (prior knowledge) are both served on the port. The listener keeps
/// accepting while Draining; at Closing, the connections the kernel already accepted
/// are taken in and served, and the listener closes. Requests in flight then finish
/// within `drain_timeout`, and whatever is left is cut and reported. The signal
/// handlers are installed when serving starts. See [`Server`] for several listeners
/// and the settings.
///
/// # Cancel safety
///
/// As [`Server::run`]: dropping the future stops the server at once, its connections
/// cut; the `Terminus` stays usable.
///
/// ```no_run
/// use axum::{routing::get, Router};
/// use axum_terminus::{Layer, Terminus, TerminusLayer};
///
/// # async fn run() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder().from_env()?.build()?;
/// let router = Router::new().route("/", get(|| async { "hello" }));
/// let app = TerminusLayer::new(&terminus).layer(router.with_state(()));
/// let listener = axum_terminus::bind("127.0.0.1:3000", &terminus).await?;
/// let outcome = axum_terminus::serve(listener, app, &terminus).await;
/// Ok(outcome.exit_code())
/// # }
/// ```
pub async fn serve<L, S, B>(listener: L, service: S, terminus: &Terminus) -> Outcome
where
    L: TerminusListener,
    L::Addr: Clone + Sync + fmt::Debug + 'static,
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Server::new(terminus).listener(listener, service).run().await
}

/// A server with one or more listeners under one [`Terminus`]: readiness waits for all
/// of them, Closing closes all of them, and one [`Outcome`] covers the process. Its
/// connection settings (header-read timeout, idle close, connection cap) are the
/// `Terminus`'s ([`Builder`](crate::Builder) and `TERMINUS_*` variables).
///
/// The server counts every request it serves, at its connection, so a request that
/// does not pass through [`TerminusLayer`](crate::TerminusLayer) is waited for all the
/// same; the layer, called by the server, leaves the count to it (see
/// [`terminus_core::server::call_tracked`]).
///
/// ```no_run
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use axum_terminus::{Layer, Server, Terminus, TerminusLayer};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder()
///     .header_read_timeout(Some(Duration::from_secs(10)))
///     .max_connections(10_000)
///     .from_env()?                                   // TERMINUS_MAX_CONNECTIONS, ... win
///     .build()?;
/// let public = TerminusLayer::new(&terminus).layer(Router::new().route("/", get(|| async { "hello" })));
/// let outcome = Server::new(&terminus)
///     .listener(axum_terminus::bind("0.0.0.0:3000", &terminus).await?, public)
///     .admin_listener(axum_terminus::bind("0.0.0.0:9000", &terminus).await?)
///     .run()
///     .await;
/// # let _ = outcome; Ok(()) }
/// ```
#[must_use = "a server does nothing until run() is awaited"]
pub struct Server {
    terminus: Terminus,
    accept_loops: Vec<AcceptLoop>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    versions: Versions,
    connect_info: bool,
    /// Set by the deprecated per-server setters; the `Terminus`'s settings otherwise.
    header_read_timeout: Option<Duration>,
    idle_close_timeout: Duration,
    max_connections: Option<usize>,
    invalid: Option<ConfigError>,
    /// Copies of the listening sockets, for an in-place upgrade.
    #[cfg(all(feature = "upgrade", unix))]
    pub(crate) upgrade: crate::upgrade::Handover,
}

/// Starts one listener's accept loop, given the server's parts and its connection cap.
type AcceptLoop = Box<dyn FnOnce(Arc<ServerParts>, Option<Arc<Semaphore>>) -> AcceptFuture + Send>;
type AcceptFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.accept_loops.len())
            .field("versions", &self.versions)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_close_timeout", &self.idle_close_timeout)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with no listener yet, HTTP/1.1 and HTTP/2, and the `Terminus`'s
    /// connection settings.
    pub fn new(terminus: &Terminus) -> Server {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        // The HTTP/2 timer only serves keep-alive pings, which are off unless configured.
        // CONNECT lets HTTP/2 clients open WebSockets (RFC 8441), as axum::serve does.
        http2.timer(TokioTimer::new()).enable_connect_protocol();
        let config = terminus.config();
        Server {
            terminus: terminus.clone(),
            accept_loops: Vec::new(),
            // No hyper timer for HTTP/1: hyper would arm one per request for its
            // header-read timeout; the server's own sweep does that job (see
            // `Builder::header_read_timeout`).
            // Half-closed clients (a `shutdown(SHUT_WR)` after the request, as some tools
            // and proxies do) still get their response.
            http1: {
                let mut http1 = http1::Builder::new();
                http1.half_close(true);
                http1
            },
            http2,
            versions: Versions::Both,
            connect_info: false,
            header_read_timeout: config.header_read_timeout(),
            idle_close_timeout: config.idle_close_timeout(),
            max_connections: config.max_connections(),
            invalid: None,
            #[cfg(all(feature = "upgrade", unix))]
            upgrade: crate::upgrade::Handover::default(),
        }
    }

    /// Does nothing more: [`Builder::from_env`](crate::Builder::from_env) reads the
    /// server's variables too, and the `Server` takes them from the `Terminus`.
    #[deprecated(note = "`Terminus::builder().from_env()` reads every TERMINUS_* variable, the server's too")]
    pub fn from_env(self) -> Result<Server, ConfigError> {
        Ok(self)
    }

    /// Does nothing more: see [`from_env`](Server::from_env).
    #[deprecated(note = "use `Terminus::builder().from_lookup(..)`: it reads the server's variables too")]
    pub fn from_lookup(self, _lookup: impl Fn(&str) -> Option<String>) -> Result<Server, ConfigError> {
        Ok(self)
    }

    /// Adds a listener and the service it serves: a `tokio::net::TcpListener`, a
    /// `tokio::net::UnixListener`, a socket systemd passed, or any
    /// [`axum::serve::Listener`] that implements [`TerminusListener`].
    ///
    /// At Closing, the connections the kernel already completed are taken in and served
    /// before the listener closes ([`TerminusListener::take_accepted`]: accept(2) until
    /// the queue is empty for TCP and Unix sockets), and the cut report names each peer
    /// as [`TerminusListener::peer`] does (the IP address, `unix:<path>`, or the `Debug`
    /// form of your listener's address type).
    pub fn listener<L, S, B>(mut self, listener: L, service: S) -> Server
    where
        L: TerminusListener,
        L::Addr: Clone + Sync + fmt::Debug + 'static,
        S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        #[cfg(all(feature = "upgrade", unix))]
        self.upgrade.add(&listener);
        self.accept_loops.push(Box::new(move |parts, cap| {
            Box::pin(accept_loop(
                listener,
                service,
                Transport::Plain,
                parts,
                Role::Public { cap },
            ))
        }));
        self
    }

    /// Adds a listener served over TLS (feature `tls-rustls`): HTTPS with ALPN (`h2`,
    /// `http/1.1`), a handshake bounded by the header-read timeout
    /// ([`Builder::header_read_timeout`](crate::Builder::header_read_timeout)), and `close_notify` on graceful closes.
    /// The listener is any [`TerminusListener`], as for [`listener`](Server::listener). See [`tls`](crate::tls).
    #[cfg(feature = "tls-rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls-rustls")))]
    pub fn tls_listener<L, S, B>(mut self, listener: L, tls: crate::tls::TlsConfig, service: S) -> Server
    where
        L: TerminusListener,
        L::Addr: Clone + Sync + fmt::Debug + 'static,
        S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        #[cfg(all(feature = "upgrade", unix))]
        self.upgrade.add(&listener);
        self.accept_loops.push(Box::new(move |parts, cap| {
            // ALPN follows the versions, known only now that the server is complete.
            let transport = Transport::Tls(tls.acceptor(parts.settings.versions));
            Box::pin(accept_loop(
                listener,
                service,
                transport,
                parts,
                Role::Public { cap },
            ))
        }));
        self
    }

    /// Adds a listener that serves only the probes ([`admin_router`](crate::admin_router)
    /// with [`admin_layer`](crate::admin_layer)), reporting on this whole server. It is
    /// not counted against [`max_connections`](crate::Builder::max_connections), so the probes
    /// stay answerable when the public listeners are full.
    pub fn admin_listener<L>(self, listener: L) -> Server
    where
        L: TerminusListener,
        L::Addr: Clone + Sync + fmt::Debug + 'static,
    {
        let router = crate::admin::admin_router(crate::admin::admin_layer(&self.terminus));
        self.admin_listener_with(listener, router)
    }

    /// Adds a listener for operators, serving `service`: the
    /// [`admin_router`](crate::admin_router) with routes of your own (`/metrics`, say).
    /// Like [`admin_listener`](Server::admin_listener), it is not counted against
    /// [`max_connections`](crate::Builder::max_connections): keep it off the public network.
    ///
    /// ```
    /// use axum::routing::get;
    /// use axum_terminus::{admin_layer, admin_router, Server, Terminus};
    ///
    /// # async fn example(terminus: Terminus, admin: tokio::net::TcpListener) {
    /// let router = admin_router(admin_layer(&terminus)).route("/version", get(|| async { "1.4.2" }));
    /// let server = Server::new(&terminus).admin_listener_with(admin, router);
    /// # }
    /// ```
    pub fn admin_listener_with<L, S, B>(mut self, listener: L, service: S) -> Server
    where
        L: TerminusListener,
        L::Addr: Clone + Sync + fmt::Debug + 'static,
        S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        #[cfg(all(feature = "upgrade", unix))]
        self.upgrade.add(&listener);
        self.accept_loops.push(Box::new(move |parts, _cap| {
            Box::pin(accept_loop(
                listener,
                service,
                Transport::Plain,
                parts,
                Role::Admin,
            ))
        }));
        self
    }

    /// Inserts axum's `ConnectInfo` (the listener's address of the peer, a
    /// `SocketAddr` for TCP) into every request, as `into_make_service_with_connect_info`
    /// does for `axum::serve`. Off by default: it allocates per request. Upgrade requests
    /// (WebSockets) always carry it.
    pub fn connect_info(mut self, enabled: bool) -> Server {
        self.connect_info = enabled;
        self
    }

    /// This server's header-read timeout, unless `TERMINUS_HEADER_READ_TIMEOUT` is set
    /// (the environment wins, as everywhere).
    #[deprecated(note = "set it on the builder: `Terminus::builder().header_read_timeout(..)`")]
    pub fn header_read_timeout(mut self, timeout: Option<Duration>) -> Server {
        if timeout.is_some_and(|timeout| timeout.is_zero()) {
            self.invalid = Some(ConfigError::new(
                "header_read_timeout",
                "must be greater than zero (None turns it off)",
            ));
        }
        if self.code_may_set("header_read_timeout", ENV_HEADER_READ_TIMEOUT) {
            self.header_read_timeout = timeout;
        }
        self
    }

    /// This server's idle close timeout, unless `TERMINUS_IDLE_CLOSE_TIMEOUT` is set.
    #[deprecated(note = "set it on the builder: `Terminus::builder().idle_close_timeout(..)`")]
    pub fn idle_close_timeout(mut self, timeout: Duration) -> Server {
        if timeout.is_zero() {
            self.invalid = Some(ConfigError::new(
                "idle_close_timeout",
                "must be greater than zero",
            ));
        }
        if self.code_may_set("idle_close_timeout", ENV_IDLE_CLOSE_TIMEOUT) {
            self.idle_close_timeout = timeout;
        }
        self
    }

    /// This server's connection cap, unless `TERMINUS_MAX_CONNECTIONS` is set.
    #[deprecated(note = "set it on the builder: `Terminus::builder().max_connections(..)`")]
    pub fn max_connections(mut self, limit: usize) -> Server {
        if limit == 0 || limit > terminus_core::env::MAX_CONNECTIONS {
            self.invalid = Some(ConfigError::new(
                "max_connections",
                format!("must be between 1 and {}", terminus_core::env::MAX_CONNECTIONS),
            ));
        }
        if self.code_may_set("max_connections", ENV_MAX_CONNECTIONS) {
            self.max_connections = Some(limit);
        }
        self
    }

    /// Whether `setting` (read from `variable`) may still be changed in code: not when
    /// the environment set it.
    fn code_may_set(&self, setting: &str, variable: &str) -> bool {
        let environment = self
            .terminus
            .config()
            .settings()
            .into_iter()
            .any(|(name, _, source)| name == setting && source == terminus_core::Source::Environment);
        if environment {
            tracing::info!(
                target: "terminus",
                variable,
                "server setting in code ignored: the environment sets it"
            );
        }
        !environment
    }

    /// Serves HTTP/1 only: an HTTP/2 client is refused (its preface is not a valid
    /// HTTP/1 request).
    pub fn http1_only(mut self) -> Server {
        self.versions = Versions::Http1Only;
        self
    }

    /// Serves HTTP/2 only (with prior knowledge, as gRPC clients speak it): an HTTP/1
    /// request is refused with a protocol error.
    pub fn http2_only(mut self) -> Server {
        self.versions = Versions::Http2Only;
        self
    }

    /// hyper's HTTP/1 settings, to tune (buffer sizes, header case, ...). The server's
    /// own defaults stay in place unless you change them: no timer (the header-read
    /// timeout is the server's, see [`header_read_timeout`](crate::Builder::header_read_timeout)).
    pub fn http1(&mut self) -> &mut http1::Builder {
        &mut self.http1
    }

    /// hyper's HTTP/2 settings, to tune (windows, streams, keep-alive pings, ...). The
    /// server's own defaults stay in place unless you change them: a Tokio timer, and
    /// the extended CONNECT protocol (WebSockets over HTTP/2).
    pub fn http2(&mut self) -> &mut http2::Builder<TokioExecutor> {
        &mut self.http2
    }

    /// Serves every listener until the shutdown is complete, and returns its outcome.
    /// Readiness turns on now (every listener is bound), or when `mark_ready()` is called
    /// if that is required. An invalid setting is reported as a fatal error naming it:
    /// the process then exits without serving. With the `systemd` feature, the service
    /// manager is notified of each phase (see the `systemd` module).
    ///
    /// # Cancel safety
    ///
    /// Await it to the end for a graceful stop: call
    /// [`Terminus::shutdown`](terminus_core::Terminus::shutdown) (or send a signal), and
    /// it returns once the shutdown has run. Dropping the future before then (a
    /// `select!` whose other branch won) stops this server at once, as dropping a
    /// runtime would: its listeners close, and every open connection is closed, those
    /// with a request in flight cut, with one `warn` event each (`connection cut: the
    /// server's future was dropped ...`). Nothing of it keeps running. The `Terminus`
    /// stays usable: a shutdown this future had started goes on in a later
    /// [`Terminus::run`](terminus_core::Terminus::run), from where it stopped (see its
    /// cancel safety).
    pub async fn run(self) -> Outcome {
        // Aborted if this future is dropped: no watchdog pings for a server that is gone.
        #[cfg(all(feature = "systemd", unix))]
        let notifier =
            crate::systemd::spawn_notifier(&self.terminus).map(tokio_util::task::AbortOnDropHandle::new);
        let outcome = self.serve().await;
        #[cfg(all(feature = "systemd", unix))]
        if let Some(notifier) = notifier {
            // Its last message (STATUS=stopped) goes out before the process can exit.
            let _ = tokio::time::timeout(Duration::from_secs(1), notifier).await;
        }
        outcome
    }

    async fn serve(self) -> Outcome {
        let terminus = self.terminus;
        if let Some(error) = self.invalid {
            tracing::error!(target: "terminus", %error, "cannot start the server");
            terminus.set_fatal(error);
            return terminus.run(terminus_core::NoConnections).await;
        }
        let config = terminus.config();
        let timeouts = Timeouts {
            header_read: self.header_read_timeout,
            idle_close: self.idle_close_timeout,
            keep_alive: config.keep_alive_timeout(),
            age_grace: config.max_connection_age_grace(),
        };
        let limits = Limits {
            max_age: config.max_connection_age(),
            max_requests: config.max_requests_per_connection(),
            idle_close: timeouts.idle_close,
        };
        let clock = Arc::new(Clock::new(timeouts.resolution()));
        let registry = Arc::new(Registry::default());
        #[cfg(all(feature = "upgrade", unix))]
        let upgrade = self.upgrade.start(&terminus);
        let parts = Arc::new(ServerParts {
            settings: Arc::new(Settings {
                terminus: terminus.clone(),
                http1: self.http1,
                http2: self.http2,
                versions: self.versions,
                connect_info: self.connect_info,
            }),
            registry: Arc::clone(&registry),
            clock: Arc::clone(&clock),
            limits,
            #[cfg(all(feature = "upgrade", unix))]
            accept_gate: upgrade.gate.clone(),
        });
        let cap = self.max_connections.map(|limit| Arc::new(Semaphore::new(limit)));
        // Every listener is bound (they were given bound): readiness may pass before the
        // first connection is accepted, so that a request already waiting in a queue is
        // answered as Serving, not Starting.
        terminus.mark_listeners_bound();
        let mut accepting = JoinSet::new();
        for accept_loop in self.accept_loops {
            accepting.spawn(accept_loop(Arc::clone(&parts), cap.clone()));
        }
        // Aborted when `run` returns, or when its future is dropped before that.
        let _sweep = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(timeouts::sweep(
            clock,
            Arc::clone(&registry),
            terminus.clone(),
            timeouts,
        )));
        let cut_on_drop = CutOnDrop::new(&registry);
        let outcome = terminus
            .run(ServerDrain {
                registry,
                accepting,
                #[cfg(all(feature = "upgrade", unix))]
                upgrade,
            })
            .await;
        cut_on_drop.disarm();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terminus(environment: &[(&str, &str)]) -> Terminus {
        let environment: Vec<(String, String)> = environment
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Terminus::builder()
            .from_lookup(move |name| {
                environment
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    #[allow(deprecated)]
    fn a_deprecated_server_setter_is_ignored_for_a_setting_the_environment_made() {
        let terminus = terminus(&[(ENV_MAX_CONNECTIONS, "5")]);
        let server = Server::new(&terminus)
            .max_connections(9)
            .idle_close_timeout(Duration::from_secs(7));
        assert_eq!(server.max_connections, Some(5), "TERMINUS_MAX_CONNECTIONS wins");
        assert_eq!(
            server.idle_close_timeout,
            Duration::from_secs(7),
            "not in the environment"
        );

        let terminus = self::terminus(&[(ENV_IDLE_CLOSE_TIMEOUT, "3s"), (ENV_HEADER_READ_TIMEOUT, "4s")]);
        let server = Server::new(&terminus)
            .max_connections(9)
            .idle_close_timeout(Duration::from_secs(7))
            .header_read_timeout(Some(Duration::from_secs(8)));
        assert_eq!(server.max_connections, Some(9));
        assert_eq!(server.idle_close_timeout, Duration::from_secs(3));
        assert_eq!(server.header_read_timeout, Some(Duration::from_secs(4)));
    }
}
