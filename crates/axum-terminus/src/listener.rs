//! [`TerminusListener`]: what the server asks of a listener beyond axum's
//! [`Listener`], so that closing it loses nothing. See the trait's documentation.

use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};

use axum::serve::Listener;
use tokio::io::ReadBuf;

/// The most connections taken from the kernel's queue at Closing: more than any
/// backlog holds, so it only bounds a flood that keeps refilling it.
pub(crate) const MAX_TAKEN_AT_CLOSING: usize = 65_536;

/// What [`serve`](crate::serve) and [`Server`](crate::Server) ask of a listener beyond
/// axum's [`Listener`].
///
/// axum's `Listener` accepts connections; a server that drains needs a few more
/// things, each with a default that is correct (if less thorough) for any listener:
///
/// | capability | default | TCP and Unix |
/// |---|---|---|
/// | [`take_accepted`](TerminusListener::take_accepted): at Closing, take what the kernel already completed, without waiting | poll `accept` until it would wait | accept(2) until the queue is empty, even if the reactor has not looked yet (after a freeze) |
/// | [`leaves_queue_to_next_process`](TerminusListener::leaves_queue_to_next_process): the socket outlives the process | no | no (yes for [`Activated`](crate::systemd::Activated)) |
/// | [`peer`](TerminusListener::peer): how logs and cut reports name a peer | the address's `Debug` form | the IP address and port; `unix:<path>` |
/// | [`read_now`](TerminusListener::read_now): at Closing, read an idle connection's buffered bytes without the reactor | cannot (the reactor tells) | a non-blocking read(2) |
/// | [`SHUTDOWN_IS_CLOSE`](TerminusListener::SHUTDOWN_IS_CLOSE): closing the stream sends the FIN, no `shutdown` needed | no | yes |
/// | [`accepted`](TerminusListener::accepted): prepare a new connection | nothing | `TCP_NODELAY` |
///
/// A listener of your own implements the trait with an empty `impl` to get the
/// defaults, and overrides what it can do better:
///
/// ```
/// use axum::serve::Listener;
/// use axum_terminus::TerminusListener;
///
/// struct MyListener(tokio::net::TcpListener);
///
/// impl Listener for MyListener {
///     type Io = tokio::net::TcpStream;
///     type Addr = std::net::SocketAddr;
///     async fn accept(&mut self) -> (Self::Io, Self::Addr) {
///         loop {
///             // A failed accept (EMFILE, say) is retried, as axum's listeners do.
///             if let Ok(accepted) = self.0.accept().await {
///                 return accepted;
///             }
///         }
///     }
///     fn local_addr(&self) -> std::io::Result<Self::Addr> {
///         self.0.local_addr()
///     }
/// }
///
/// impl TerminusListener for MyListener {}
/// ```
pub trait TerminusListener: Listener {
    /// Whether closing the stream (dropping it) already tells the peer, so that the
    /// server may skip the `shutdown(2)` hyper asks for just before dropping it: with
    /// thousands of idle connections closed at once, that system call per connection
    /// was a measurable part of the time to exit. Default `false`.
    const SHUTDOWN_IS_CLOSE: bool = false;

    /// Takes, without waiting, the connections the kernel has completed and not yet
    /// handed over (at most `limit`). Called once, at Closing, before the listener is
    /// dropped: what it returns is served, so that a client whose connect succeeded is
    /// answered rather than reset. The default polls [`accept`](Listener::accept) with
    /// a waker that does nothing, until it would wait.
    fn take_accepted(&mut self, limit: usize) -> Vec<(Self::Io, Self::Addr)> {
        let mut taken = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        while taken.len() < limit {
            let accept = std::pin::pin!(self.accept());
            match accept.poll(&mut cx) {
                Poll::Ready(accepted) => taken.push(accepted),
                Poll::Pending => break,
            }
        }
        taken
    }

    /// Whether the listening socket outlives this process, its queue then being the
    /// next process's to accept (socket activation, an in-place upgrade): at Closing the
    /// server stops accepting and takes nothing in. Default `false`.
    fn leaves_queue_to_next_process(&self) -> bool {
        false
    }

    /// How logs and cut reports name a peer at `addr` (or, with `listener` the
    /// listener's own name, an address that says nothing, such as an unnamed Unix
    /// client). Default: the address's `Debug` form; give your address type the name
    /// you want to read there.
    fn peer(addr: &Self::Addr, listener: &str) -> Peer
    where
        Self::Addr: fmt::Debug,
    {
        let _ = listener;
        Peer::Named(format!("{addr:?}").into())
    }

    /// Reads what the kernel already holds for `io`, without asking the reactor first:
    /// at Closing, after a freeze (a throttled pod, SIGSTOP), the reactor may not have
    /// seen yet a request the kernel holds. `Err(WouldBlock)`: nothing there. `None`:
    /// this stream cannot tell (the default); the server then asks the reactor.
    fn read_now(io: &Self::Io, buf: &mut ReadBuf<'_>) -> Option<io::Result<usize>> {
        let _ = (io, buf);
        None
    }

    /// Prepares a connection just accepted. Default: nothing.
    fn accepted(io: &Self::Io) {
        let _ = io;
    }

    /// The listening socket, for an in-place upgrade to hand it to the successor
    /// (feature `upgrade`). `None` (the default): this listener cannot be handed over,
    /// and an upgrade is refused, naming it. TCP, Unix and socket-activated listeners
    /// give theirs.
    #[cfg(unix)]
    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

/// Who is on the other end of a connection, as logs and cut reports name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// An IP address and port.
    Ip(SocketAddr),
    /// Anything else: `unix:/run/app.sock`, or your listener's own naming.
    Named(Box<str>),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(addr) => addr.fmt(f),
            Peer::Named(name) => f.write_str(name),
        }
    }
}

impl TerminusListener for tokio::net::TcpListener {
    const SHUTDOWN_IS_CLOSE: bool = true;

    fn take_accepted(&mut self, limit: usize) -> Vec<(Self::Io, Self::Addr)> {
        accept_now(self, limit, |socket| {
            let stream = std::net::TcpStream::from(socket);
            let peer = stream.peer_addr()?;
            Ok((tokio::net::TcpStream::from_std(stream)?, peer))
        })
    }

    fn peer(addr: &SocketAddr, _listener: &str) -> Peer {
        Peer::Ip(*addr)
    }

    fn read_now(io: &tokio::net::TcpStream, buf: &mut ReadBuf<'_>) -> Option<io::Result<usize>> {
        Some(read_socket(socket2::SockRef::from(io), buf))
    }

    fn accepted(io: &tokio::net::TcpStream) {
        // Small responses should not wait for Nagle's algorithm.
        let _ = io.set_nodelay(true);
    }

    #[cfg(unix)]
    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(std::os::fd::AsFd::as_fd(self))
    }
}

#[cfg(unix)]
impl TerminusListener for tokio::net::UnixListener {
    const SHUTDOWN_IS_CLOSE: bool = true;

    fn take_accepted(&mut self, limit: usize) -> Vec<(Self::Io, Self::Addr)> {
        accept_now(self, limit, |socket| {
            let stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(socket));
            let peer = tokio::net::unix::SocketAddr::from(stream.peer_addr()?);
            Ok((tokio::net::UnixStream::from_std(stream)?, peer))
        })
    }

    /// Clients of a Unix socket are usually unnamed: the listener's path names them.
    fn peer(addr: &tokio::net::unix::SocketAddr, listener: &str) -> Peer {
        match addr.as_pathname() {
            Some(path) => Peer::Named(format!("unix:{}", path.display()).into()),
            None => Peer::Named(listener.into()),
        }
    }

    fn read_now(io: &tokio::net::UnixStream, buf: &mut ReadBuf<'_>) -> Option<io::Result<usize>> {
        Some(read_socket(socket2::SockRef::from(io), buf))
    }

    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(std::os::fd::AsFd::as_fd(self))
    }
}

/// axum's `ListenerExt::tap_io`: the same stream, so the same stream capabilities; its
/// queue is taken the default way (the listener inside is private).
impl<L, F> TerminusListener for axum::serve::TapIo<L, F>
where
    L: TerminusListener,
    L::Addr: fmt::Debug,
    F: FnMut(&mut L::Io) + Send + 'static,
{
    const SHUTDOWN_IS_CLOSE: bool = L::SHUTDOWN_IS_CLOSE;

    fn peer(addr: &L::Addr, listener: &str) -> Peer {
        L::peer(addr, listener)
    }

    fn read_now(io: &L::Io, buf: &mut ReadBuf<'_>) -> Option<io::Result<usize>> {
        L::read_now(io, buf)
    }

    fn accepted(io: &L::Io) {
        L::accepted(io)
    }
}

/// How logs name a listener: by the name of a peer at its own address.
pub(crate) fn name<L: TerminusListener>(listener: &L) -> String
where
    L::Addr: fmt::Debug,
{
    listener
        .local_addr()
        .map(|addr| L::peer(&addr, "").to_string())
        .unwrap_or_default()
}

/// Calls accept(2) on `listener` until the kernel has nothing more (or `limit`).
fn accept_now<T>(
    listener: &impl std::os::fd::AsFd,
    limit: usize,
    convert: impl Fn(socket2::Socket) -> io::Result<T>,
) -> Vec<T> {
    let socket = socket2::SockRef::from(listener);
    let mut taken = Vec::new();
    while taken.len() < limit {
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

/// A non-blocking read(2) on a socket tokio set non-blocking: an empty one says
/// `WouldBlock`. Into a small buffer on the stack, not hyper's: initialising hyper's
/// whole read buffer would touch every idle connection's buffer pages at Closing,
/// thousands at once. What does not fit is read by the next call, the usual way.
fn read_socket(socket: socket2::SockRef<'_>, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    let mut chunk = [0u8; 2048];
    let wanted = buf.remaining().min(chunk.len());
    (&*socket).read(&mut chunk[..wanted]).inspect(|&n| {
        buf.put_slice(&chunk[..n]);
    })
}
