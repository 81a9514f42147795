//! [`TrackedIo`]: a connection's socket, which keeps the connection registered for as
//! long as it lives and can be cut from outside.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::connection::{Connection, Registered};

pin_project! {
    /// The socket of one connection.
    ///
    /// It owns the connection's registration, so the connection counts as open exactly
    /// as long as the socket exists, including after an HTTP upgrade has handed the
    /// socket to a WebSocket handler (hyper's connection task is over by then, so the
    /// task alone would let upgraded connections escape the drain). When the drain
    /// deadline cuts the connection, every read and write fails from then on, and a
    /// task waiting on one is woken to see it.
    pub(crate) struct TrackedIo {
        #[pin]
        stream: TcpStream,
        connection: Arc<Connection>,
        _registered: Registered,
    }
}

impl TrackedIo {
    pub(crate) fn new(stream: TcpStream, connection: Arc<Connection>, registered: Registered) -> TrackedIo {
        TrackedIo {
            stream,
            connection,
            _registered: registered,
        }
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cut at the drain deadline",
    )
}

/// Which waker slot of the connection a pending operation parks in.
#[derive(Clone, Copy)]
pub(crate) enum Direction {
    Read = 0,
    Write = 1,
}

/// Runs `operation`; while it is pending, parks the waker so that a cut wakes it.
/// Checked again after parking: a cut between the first check and the park would
/// otherwise leave the task asleep.
fn guarded<T>(
    connection: &Connection,
    direction: Direction,
    cx: &mut Context<'_>,
    operation: impl FnOnce(&mut Context<'_>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    if connection.is_cut() {
        return Poll::Ready(Err(cut_error()));
    }
    match operation(cx) {
        Poll::Pending => {
            connection.park(direction, cx.waker());
            if connection.is_cut() {
                return Poll::Ready(Err(cut_error()));
            }
            Poll::Pending
        }
        ready => ready,
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let stream = this.stream;
        guarded(this.connection, Direction::Read, cx, |cx| {
            stream.poll_read(cx, buf)
        })
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let stream = this.stream;
        guarded(this.connection, Direction::Write, cx, |cx| {
            stream.poll_write(cx, buf)
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let stream = this.stream;
        guarded(this.connection, Direction::Write, cx, |cx| {
            stream.poll_write_vectored(cx, bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let stream = this.stream;
        guarded(this.connection, Direction::Write, cx, |cx| stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().stream.poll_shutdown(cx)
    }
}
