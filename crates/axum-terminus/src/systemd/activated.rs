//! [`Activated`]: a listener whose socket belongs to systemd, not to the process.

use std::io;

use axum::serve::Listener;

/// A listening socket passed by systemd, served like the `L` inside it with one
/// difference at Closing. The server stops accepting and leaves the connections waiting
/// in the socket's queue where they are: the socket stays open in systemd, which starts
/// the next process on it, and that process serves them. (With a socket the process
/// owns, the server takes them in before closing it, or they would be reset.)
///
/// Taken from [`ActivatedSockets`](super::ActivatedSockets); pass it to
/// [`Server::listener`](crate::Server::listener) or [`serve`](crate::serve).
#[derive(Debug)]
pub struct Activated<L> {
    inner: L,
}

impl<L> Activated<L> {
    pub(super) fn new(inner: L) -> Activated<L> {
        Activated { inner }
    }

    /// The listener inside.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// The listener inside, for a server that is not this crate's (`axum::serve`).
    pub fn into_inner(self) -> L {
        self.inner
    }
}

impl<L: Listener> Listener for Activated<L> {
    type Io = L::Io;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.inner.accept().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The listener inside, except at Closing: its queue is the next process's.
impl<L> crate::TerminusListener for Activated<L>
where
    L: crate::TerminusListener,
    L::Addr: std::fmt::Debug,
{
    const SHUTDOWN_IS_CLOSE: bool = L::SHUTDOWN_IS_CLOSE;

    fn leaves_queue_to_next_process(&self) -> bool {
        true
    }

    fn peer(addr: &L::Addr, listener: &str) -> crate::Peer {
        L::peer(addr, listener)
    }

    fn read_now(io: &L::Io, buf: &mut tokio::io::ReadBuf<'_>) -> Option<io::Result<usize>> {
        L::read_now(io, buf)
    }

    fn accepted(io: &L::Io) {
        L::accepted(io)
    }

    fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.as_fd()
    }
}
