//! Serving one connection: tell HTTP/2 from HTTP/1 (by the preface, or by TLS's ALPN),
//! hand the stream to hyper, and close at the right moment of the shutdown.
//!
//! What a connection does in each phase:
//!
//! | phase | HTTP/1 | HTTP/2 |
//! |---|---|---|
//! | Draining | served (the layer adds `Connection: close`) | GOAWAY; streams that cross it are served |
//! | Closing, idle | idle for `idle_close_timeout` already: reads the socket once (a request already there is served, with `Connection: close`), else closed. In use (its last response ended less than that ago): waits for its client's next request, answered with `Connection: close` (hyper then closes); if none comes before it has been idle that long, reads once more, then closes. A new connection that has not sent a byte yet waits for its first request up to `idle_close_timeout` | closed once nothing has been in flight for `idle_close_timeout` |
//! | Closing, busy | a response not yet begun says `Connection: close`, and the connection closes after it; after one whose head may already have promised keep-alive, the connection waits up to `idle_close_timeout` for its client's next request, answered with `Connection: close` | finishes its streams, then closes |
//! | deadline | cut if busy, closed if idle | the same |

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use terminus_core::{BoxError, Phase, Terminus};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_service::Service;

use crate::connection::{Attention, Connection, Protocol};
use crate::io::ConnectionIo;
use crate::settings::{Settings, Versions};
use crate::tracking::TrackedService;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a connection's bytes reach HTTP: as they come from the socket, or through TLS.
#[derive(Clone)]
pub(crate) enum Transport {
    /// Plain HTTP: the protocol is sniffed from the preface (or fixed by the server).
    Plain,
    /// A TLS handshake first; ALPN then names the protocol.
    #[cfg(feature = "tls-rustls")]
    Tls(crate::tls::Acceptor),
}

/// Serves `io` until the connection closes, is cut, or times out: the pipeline's
/// stages are the socket (`ConnectionIo`, which the cuts, timeouts and Closing see),
/// then TLS if the listener has it, then the protocol, then hyper.
pub(crate) async fn serve_connection<I, S, B, A>(
    mut io: ConnectionIo<I>,
    connection: Arc<Connection>,
    service: S,
    addr: A,
    settings: Arc<Settings>,
    transport: Transport,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    A: Clone + Send + Sync + 'static,
{
    match transport {
        Transport::Plain => {
            let protocol = match settings.versions {
                Versions::Http1Only => Protocol::Http1,
                Versions::Http2Only => Protocol::Http2,
                Versions::Both => match sniff(&mut io, &connection).await {
                    Some(protocol) => protocol,
                    None => return,
                },
            };
            serve_http(io, protocol, connection, service, addr, settings).await;
        }
        #[cfg(feature = "tls-rustls")]
        Transport::Tls(acceptor) => {
            let Some((io, protocol)) = acceptor.handshake(io, &connection).await else {
                return;
            };
            serve_http(io, protocol, connection, service, addr, settings).await;
        }
    }
}

/// Hands `io` to hyper as `protocol`, and drives the connection through the shutdown.
async fn serve_http<T, S, B, A>(
    io: T,
    protocol: Protocol,
    connection: Arc<Connection>,
    service: S,
    addr: A,
    settings: Arc<Settings>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    A: Clone + Send + Sync + 'static,
{
    connection.set_protocol(protocol);
    let service = TrackedService::new(service, Arc::clone(&connection), Arc::clone(&settings), addr);
    let io = TokioIo::new(io);
    let terminus = &settings.terminus;
    let result = match protocol {
        Protocol::Http2 => {
            drive(
                settings.http2.serve_connection(io, service),
                &connection,
                terminus,
                protocol,
            )
            .await
        }
        _ => {
            let conn = settings.http1.serve_connection(io, service).with_upgrades();
            drive(conn, &connection, terminus, protocol).await
        }
    };
    if let Err(error) = result {
        tracing::debug!(target: "terminus", peer = %connection.peer, %error, "connection ended with an error");
    }
    // If an upgrade took the socket, it lives on: the connection is now an upgraded
    // session, tracked until the socket is dropped.
    connection.task_finished();
}

/// Reads until the bytes tell HTTP/2 (the 24-byte preface) from HTTP/1 (anything else),
/// and puts them back to be read again. `None` when the connection closes first, or
/// times out (a peer that connects and says nothing).
async fn sniff<I>(io: &mut ConnectionIo<I>, connection: &Connection) -> Option<Protocol>
where
    I: AsyncRead + Unpin + 'static,
{
    let mut buffer = [0u8; H2_PREFACE.len()];
    let mut filled = 0;
    let mut attention = Attention::default();
    let protocol = poll_fn(|cx| {
        if attention.check(connection, cx.waker()) && connection.is_expired() {
            return Poll::Ready(None);
        }
        loop {
            let mut read = ReadBuf::new(&mut buffer[filled..]);
            if ready!(Pin::new(&mut *io).poll_read(cx, &mut read)).is_err() {
                return Poll::Ready(None);
            }
            let n = read.filled().len();
            if n == 0 {
                // Closed before saying anything (or, at Closing, nothing to read).
                return Poll::Ready(None);
            }
            filled += n;
            if buffer[..filled] != H2_PREFACE[..filled] {
                return Poll::Ready(Some(Protocol::Http1));
            }
            if filled == H2_PREFACE.len() {
                return Poll::Ready(Some(Protocol::Http2));
            }
        }
    })
    .await?;
    io.unread(Bytes::copy_from_slice(&buffer[..filled]));
    Some(protocol)
}

/// A hyper connection that can be asked to finish gracefully. hyper-util's
/// `server::graceful::GracefulConnection` is the same trait, but it is implemented for
/// `http1::Connection` only, not for the `UpgradeableConnection` that WebSockets need
/// (hyper-util 0.1.21), and it is sealed: hence these few lines of our own.
trait GracefulConnection: Future<Output = Result<(), hyper::Error>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulConnection for http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S, E, B> GracefulConnection for http2::Connection<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: http_body::Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self)
    }
}

/// Polls `conn` to the end, asking it to finish when the shutdown says so. The
/// connection's state is looked at only when something asked for attention (the phase
/// changed, a request started or ended, a timeout expired): one atomic swap otherwise.
async fn drive<C: GracefulConnection>(
    conn: C,
    connection: &Connection,
    terminus: &Terminus,
    protocol: Protocol,
) -> Result<(), hyper::Error> {
    let mut conn = std::pin::pin!(conn);
    let mut asked_to_finish = false;
    let mut attention = Attention::default();
    let mut goaway_grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
    poll_fn(|cx| {
        if attention.check(connection, cx.waker()) {
            if connection.is_expired() {
                if connection.in_flight() > 0 {
                    // A request began just as the timeout expired (the sweep found the
                    // connection idle a moment before): it is answered, and the
                    // connection closes after it, instead of being dropped under it.
                    // The expiry is taken back, so that the sweep's bounds (and, for
                    // HTTP/2, the grace after the GOAWAY) apply to what follows.
                    connection.unexpire();
                    if !asked_to_finish {
                        conn.as_mut().graceful_shutdown();
                        asked_to_finish = true;
                        if protocol == Protocol::Http2 {
                            goaway_grace = Some(Box::pin(tokio::time::sleep(GOAWAY_GRACE)));
                        }
                    }
                } else if protocol != Protocol::Http2
                    && connection.head_since().is_none()
                    && connection.stop_awaiting_next_request()
                {
                    // The wait for the next request of a connection in use at Closing is
                    // over. Not dropped blind: hyper reads once more, bypassing the
                    // reactor (see `ConnectionIo`), and serves a request the kernel
                    // already holds (after a freeze, the reactor may not have seen it)
                    // or sees the end of the stream and closes. The expiry is taken
                    // back: if that read finds only the start of a head, the sweep's
                    // bounds apply to it again, rather than leave it to the deadline.
                    connection.unexpire();
                } else if protocol != Protocol::Http2 || asked_to_finish {
                    // Timed out, or idle past the bound at Closing: drop it.
                    return Poll::Ready(Ok(()));
                } else {
                    // An HTTP/2 peer that sent no request in time gets a GOAWAY first,
                    // so that a request crossing it is refused in a way clients retry
                    // (RFC 9113 §8.7) rather than reset; a peer that says nothing more
                    // is dropped after a short grace.
                    conn.as_mut().graceful_shutdown();
                    asked_to_finish = true;
                    goaway_grace = Some(Box::pin(tokio::time::sleep(GOAWAY_GRACE)));
                }
            }
            if !asked_to_finish && should_finish(protocol, terminus.phase(), connection) {
                // HTTP/2: GOAWAY; streams already open complete.
                conn.as_mut().graceful_shutdown();
                asked_to_finish = true;
                if protocol == Protocol::Http2 && connection.retiring().is_some() {
                    // Retired while serving: a peer that neither opens a stream nor
                    // closes is dropped once idle (Closing has its own bound).
                    goaway_grace = Some(Box::pin(tokio::time::sleep(GOAWAY_GRACE)));
                }
            }
        }
        // hyper first: it writes what is queued (the last frames of a stream that
        // crossed the GOAWAY) before the grace may end the connection.
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if let Some(grace) = goaway_grace.as_mut() {
            // A request that crossed the GOAWAY is served: hyper closes after it.
            if grace.as_mut().poll(cx).is_ready() && !connection.is_busy() {
                return Poll::Ready(Ok(()));
            }
        }
        Poll::Pending
    })
    .await
}

/// How long an HTTP/2 connection closed by the header-read timeout, or retired while
/// serving, has after its GOAWAY to finish what crossed it before it is dropped idle.
const GOAWAY_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// HTTP/2 clients move to a new connection (which the balancer sends elsewhere) as soon
/// as readiness fails, or when the connection's life is over: GOAWAY.
///
/// HTTP/1 is never finished from here. At Closing, and past its life while serving,
/// each response from then on says `Connection: close` (`Connection::response_ready`)
/// and hyper closes after it; an idle connection reads once more (see `ConnectionIo`),
/// and one in use at Closing waits for its client's next request
/// (`Connection::close_when_empty`). Finishing a busy one here would close right after
/// a response whose head may have gone out without that header, into the next request
/// its client, told nothing, sends at once.
fn should_finish(protocol: Protocol, phase: Phase, connection: &Connection) -> bool {
    protocol == Protocol::Http2 && (phase >= Phase::Draining || connection.retiring().is_some())
}
