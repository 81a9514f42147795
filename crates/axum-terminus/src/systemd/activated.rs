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

/// Whether `listener` is one whose queue outlives the process: an [`Activated`]
/// listener, as [`ActivatedSockets`](super::ActivatedSockets) makes them.
pub(crate) fn leaves_queue_to_next_process<L: 'static>(listener: &L) -> bool {
    let any: &dyn std::any::Any = listener;
    any.is::<Activated<tokio::net::TcpListener>>() || any.is::<Activated<tokio::net::UnixListener>>()
}
