//! [`ConnectionIo`]: a connection's socket, which keeps the connection registered for
//! as long as it lives, notes what arrives, and can be cut from outside.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connection::{Connection, Protocol};
use crate::drain::Registered;
use crate::listener::TerminusListener;

pin_project! {
    /// The socket of one connection, as accepted from the listener.
    ///
    /// - It owns the connection's registration, so the connection counts as open exactly
    ///   as long as the socket exists, including after an HTTP upgrade has handed it to
    ///   a WebSocket handler (hyper's task is over by then).
    /// - It replays the bytes read to tell HTTP/2 from HTTP/1 (`prefix`).
    /// - Bytes arriving between requests start the header-read timeout.
    /// - At Closing, an idle connection (between two requests) reads the socket itself
    ///   rather than trust the reactor: after a freeze (a CPU-throttled pod, SIGSTOP) the
    ///   reactor may not have seen yet a request the kernel already holds. What is there
    ///   is served; if nothing is, the read reports end of stream and hyper closes the
    ///   connection. A connection that has not sent its first byte yet is not idle: its
    ///   client has just connected to send a request, and would not send it again on a
    ///   new connection. Nor is one still in use (a response ended less than
    ///   `idle_close_timeout` ago): its client may be writing its next request as the
    ///   connection closes. Both read as usual, bounded by `idle_close_timeout`.
    /// - When the drain deadline cuts the connection, every read and write fails from
    ///   then on, and a task waiting on an upgraded socket is woken to see it.
    pub(crate) struct ConnectionIo<I> {
        #[pin]
        io: I,
        prefix: Bytes,
        connection: Arc<Connection>,
        _registered: Registered,
        // What the listener's stream can do (see `TerminusListener`).
        read_now: ReadNow<I>,
        shutdown_is_close: bool,
    }
}

type ReadNow<I> = fn(&I, &mut ReadBuf<'_>) -> Option<io::Result<usize>>;

impl<I> ConnectionIo<I> {
    pub(crate) fn new<L: TerminusListener<Io = I>>(
        io: I,
        connection: Arc<Connection>,
        registered: Registered,
    ) -> ConnectionIo<I> {
        ConnectionIo {
            io,
            prefix: Bytes::new(),
            connection,
            _registered: registered,
            read_now: L::read_now,
            shutdown_is_close: L::SHUTDOWN_IS_CLOSE,
        }
    }

    /// Bytes already read, to be read again first.
    pub(crate) fn unread(&mut self, prefix: Bytes) {
        self.prefix = prefix;
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cut at the drain deadline",
    )
}

const READ: usize = 0;
const WRITE: usize = 1;

impl<I: AsyncRead> AsyncRead for ConnectionIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let connection = &**this.connection;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        // One load on the way of every read: cut, or Closing.
        if connection.reads_specially() {
            if connection.is_cut() {
                return Poll::Ready(Err(cut_error()));
            }
            // Closing, and between HTTP/1 requests with nothing in flight. (Before the
            // first byte, in the middle of a request head, or while still in use at
            // Closing (see `Connection::close_when_empty`), the connection waits for its
            // request, bounded by `idle_close_timeout`. An idle HTTP/2 connection is
            // left to that bound too: end of stream could drop response frames hyper has
            // not written.)
            if connection.protocol() != Protocol::Http2
                && !connection.is_busy()
                && connection.head_since().is_none()
                && !connection.awaits_next_request()
            {
                return match (this.read_now)(&*this.io, buf) {
                    Some(Ok(n)) => {
                        if n > 0 {
                            connection.bytes_arrived();
                        }
                        Poll::Ready(Ok(()))
                    }
                    // Nothing there: end of stream, and hyper closes the connection.
                    Some(Err(error)) if error.kind() == io::ErrorKind::WouldBlock => Poll::Ready(Ok(())),
                    Some(Err(error)) => Poll::Ready(Err(error)),
                    None => match this.io.poll_read(cx, buf) {
                        Poll::Pending => Poll::Ready(Ok(())),
                        ready => ready,
                    },
                };
            }
        }
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                connection.bytes_arrived();
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if connection.is_upgraded() {
                    connection.park(READ, cx.waker());
                    if connection.is_cut() {
                        return Poll::Ready(Err(cut_error()));
                    }
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<I: AsyncWrite> ConnectionIo<I> {
    /// Runs a write; notes whether the socket is full, and parks the waker of an
    /// upgraded socket so that a cut can wake it. Checked again after parking: a cut
    /// between the first check and the park would otherwise leave the task asleep.
    fn write<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        let connection = &**this.connection;
        if connection.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        match write(this.io, cx) {
            Poll::Pending => {
                connection.set_write_blocked(true);
                if connection.is_upgraded() {
                    connection.park(WRITE, cx.waker());
                    if connection.is_cut() {
                        return Poll::Ready(Err(cut_error()));
                    }
                }
                Poll::Pending
            }
            ready => {
                connection.set_write_blocked(false);
                ready
            }
        }
    }
}

impl<I: AsyncWrite> AsyncWrite for ConnectionIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.write(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.write(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        // hyper shuts a plain socket down just before dropping it, and close(2) sends the
        // same FIN: with thousands of idle connections closed at once, the extra system
        // call per connection was a measurable part of the time to exit. (A TLS stream
        // above this socket still writes its close_notify first; an upgraded socket, whose
        // owner may keep it a while, is shut down as asked.)
        if *this.shutdown_is_close && !this.connection.is_upgraded() {
            return Poll::Ready(Ok(()));
        }
        this.io.poll_shutdown(cx)
    }
}
