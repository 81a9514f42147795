//! Accepting connections on one listener, and closing it without losing what the
//! kernel already accepted.

use std::any::Any;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::serve::Listener;
use bytes::Bytes;
use http::{Request, Response};
use terminus_core::Phase;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::clock::Clock;
use crate::connection::{describe, Connection, Peer, Registry};
use crate::io::ConnectionIo;
use crate::serve::BoxError;
use crate::serve_connection::{serve_connection, Settings, Transport};

/// Whether a listener's queue is left to the process that comes next (socket
/// activation) rather than taken in at Closing.
#[cfg(all(feature = "systemd", unix))]
use crate::systemd::leaves_queue_to_next_process;
#[cfg(not(all(feature = "systemd", unix)))]
fn leaves_queue_to_next_process<L>(_listener: &L) -> bool {
    false
}

/// What every accept loop of a server shares.
pub(crate) struct ServerParts {
    pub(crate) settings: Arc<Settings>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) clock: Arc<Clock>,
}

/// The most connections taken from the kernel's queue at Closing: more than any
/// backlog holds, so it only bounds a flood that keeps refilling it.
const MAX_TAKEN_AT_CLOSING: usize = 65_536;

/// Accepts connections and serves each on its own task, until Closing; then takes in
/// what the kernel already accepted, and closes the listener.
pub(crate) async fn accept_loop<L, S, B>(
    mut listener: L,
    service: S,
    transport: Transport,
    server: Arc<ServerParts>,
    cap: Option<Arc<Semaphore>>,
) where
    L: Listener,
    L::Addr: Clone + Sync + fmt::Debug + 'static,
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let name = listener
        .local_addr()
        .map(|addr| describe(&addr))
        .unwrap_or_default();
    let mut phases = server.settings.terminus.subscribe();
    loop {
        // At the cap, wait for a connection to close before accepting: the kernel
        // queues new ones meanwhile.
        let permit = match &cap {
            None => None,
            Some(cap) => tokio::select! {
                biased;
                _ = phases.wait_for(|phase| *phase >= Phase::Closing) => break,
                permit = Arc::clone(cap).acquire_owned() => permit.ok(),
            },
        };
        let (io, addr) = tokio::select! {
            biased;
            _ = phases.wait_for(|phase| *phase >= Phase::Closing) => break,
            accepted = listener.accept() => accepted,
        };
        spawn(io, addr, permit, &name, &service, &transport, &server);
    }
    // Connections the kernel completed while the listener was open reached the server:
    // serve them. Closing the listener then makes the kernel refuse new ones, a clean
    // error that balancers retry, instead of resetting them after accepting. (A socket
    // systemd passed stays open after this process: its queue is the next process's.)
    let taken = if leaves_queue_to_next_process(&listener) {
        Vec::new()
    } else {
        take_accepted(&mut listener)
    };
    let count = taken.len();
    for (io, addr) in taken {
        spawn(io, addr, None, &name, &service, &transport, &server);
    }
    drop(listener);
    tracing::info!(target: "terminus", listener = %name, taken_at_close = count, "listener closed");
}

fn spawn<I, A, S, B>(
    io: I,
    addr: A,
    permit: Option<OwnedSemaphorePermit>,
    listener: &str,
    service: &S,
    transport: &Transport,
    server: &Arc<ServerParts>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    A: Clone + Send + Sync + fmt::Debug + 'static,
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(tcp) = (&io as &dyn Any).downcast_ref::<tokio::net::TcpStream>() {
        // Small responses should not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
    }
    let connection = Arc::new(Connection::new(
        Peer::of(&addr, listener),
        Arc::clone(&server.clock),
    ));
    let registered = server.registry.register(Arc::clone(&connection), permit);
    // Registered before this read: if Closing began meanwhile, either the registry's
    // notice reached this connection or this read sees the phase (both take the lock).
    if server.settings.terminus.phase() >= Phase::Closing {
        connection.close_when_empty();
    }
    let io = ConnectionIo::new(io, Arc::clone(&connection), registered);
    let task = tokio::spawn(serve_connection(
        io,
        Arc::clone(&connection),
        service.clone(),
        addr,
        Arc::clone(&server.settings),
        transport.clone(),
    ));
    connection.set_abort(task.abort_handle());
}

/// The connections the kernel has completed and not yet handed over, taken without
/// waiting. For tokio's TCP and Unix listeners, accept(2) is called until the queue is
/// empty: the reactor may not know yet what arrived (after a freeze, it has not looked).
/// Other listeners give what their `accept` yields without waiting.
fn take_accepted<L: Listener>(listener: &mut L) -> Vec<(L::Io, L::Addr)> {
    let any: &mut dyn Any = listener;
    if let Some(tcp) = any.downcast_mut::<tokio::net::TcpListener>() {
        return accept_now(tcp, |socket| {
            let stream = std::net::TcpStream::from(socket);
            let peer = stream.peer_addr()?;
            Ok((tokio::net::TcpStream::from_std(stream)?, peer))
        })
        .into_iter()
        .filter_map(cast)
        .collect();
    }
    #[cfg(unix)]
    if let Some(unix) = any.downcast_mut::<tokio::net::UnixListener>() {
        return accept_now(unix, |socket| {
            let stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(socket));
            let peer = tokio::net::unix::SocketAddr::from(stream.peer_addr()?);
            Ok((tokio::net::UnixStream::from_std(stream)?, peer))
        })
        .into_iter()
        .filter_map(cast)
        .collect();
    }
    let mut taken = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    while taken.len() < MAX_TAKEN_AT_CLOSING {
        let accept = std::pin::pin!(listener.accept());
        match accept.poll(&mut cx) {
            Poll::Ready(accepted) => taken.push(accepted),
            Poll::Pending => break,
        }
    }
    taken
}

/// Calls accept(2) on `listener` until the kernel has nothing more.
fn accept_now<T>(
    listener: &impl std::os::fd::AsFd,
    convert: impl Fn(socket2::Socket) -> io::Result<T>,
) -> Vec<T> {
    let socket = socket2::SockRef::from(listener);
    let mut taken = Vec::new();
    while taken.len() < MAX_TAKEN_AT_CLOSING {
        match socket.accept() {
            Ok((connection, _)) => match connection
                .set_nonblocking(true)
                .and_then(|()| convert(connection))
            {
                Ok(connection) => taken.push(connection),
                Err(error) => {
                    tracing::debug!(target: "terminus", %error, "dropped a connection taken at close")
                }
            },
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            // The peer gave up before we took it: nothing to serve.
            Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(error) => {
                tracing::warn!(target: "terminus", %error, "accept failed while closing the listener");
                break;
            }
        }
    }
    taken
}

/// `value` as a `U`, when `T` and `U` are the same type (they are, wherever this is
/// called: the listener was just found to be of the type that yields a `T`).
fn cast<T: 'static, U: 'static>(value: T) -> Option<U> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>()?.take()
}
