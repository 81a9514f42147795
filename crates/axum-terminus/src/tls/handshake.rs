//! The TLS stage of a connection's pipeline: after the socket, before HTTP.
//!
//! The handshake runs on the connection's `ConnectionIo`, so everything the server
//! knows about sockets applies to it unchanged: the header-read timeout runs from the
//! accept (a client that stalls in the handshake is closed when it expires), a
//! handshake still going at Closing has nothing in flight and is closed by the idle
//! bound (never a cut, never a forced stop), and the deadline cuts what is left.
//!
//! At Closing, an idle HTTP/1 connection's socket reports end of stream when nothing
//! is there to read (see `ConnectionIo`). rustls calls that a truncation (no
//! `close_notify` came first), and hyper, which sees the error while waiting for the
//! next request head, takes it as the end of an idle connection: it closes gracefully,
//! through `poll_shutdown`, which sends `close_notify`. Graceful closes of busy
//! connections (`Connection: close`, HTTP/2 after GOAWAY) go through `poll_shutdown`
//! too.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use crate::connection::{Attention, Connection, Protocol};
use crate::io::ConnectionIo;
use crate::settings::Versions;

/// A listener's TLS handshake, with the ALPN list of the server's HTTP versions.
#[derive(Clone)]
pub(crate) struct Acceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    versions: Versions,
}

impl Acceptor {
    pub(crate) fn new(config: Arc<ServerConfig>, versions: Versions) -> Acceptor {
        Acceptor {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            versions,
        }
    }

    /// Runs the handshake on `io`; the stream and the protocol ALPN chose, or `None`
    /// when the handshake failed, the peer left, or a timeout closed the connection.
    pub(crate) async fn handshake<I>(
        &self,
        io: ConnectionIo<I>,
        connection: &Connection,
    ) -> Option<(TlsStream<ConnectionIo<I>>, Protocol)>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut accept = self.acceptor.accept(io);
        let mut attention = Attention::default();
        let accepted = poll_fn(|cx| {
            // The sweep expires a handshake that outlives the header-read timeout, or
            // the idle bound at Closing: give up on it.
            if attention.check(connection, cx.waker()) && connection.is_expired() {
                return Poll::Ready(None);
            }
            Pin::new(&mut accept).poll(cx).map(Some)
        })
        .await?;
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(target: "terminus", peer = %connection.peer, %error, "TLS handshake failed");
                return None;
            }
        };
        let protocol = match self.versions {
            Versions::Http1Only => Protocol::Http1,
            Versions::Http2Only => Protocol::Http2,
            // A client that offers no ALPN speaks HTTP/1.1.
            Versions::Both => match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            },
        };
        Some((stream, protocol))
    }
}
