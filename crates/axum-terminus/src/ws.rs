//! WebSocket sessions that drain as cleanly as short requests (feature `ws`).
//!
//! A WebSocket outlives the request that opened it: once upgraded, it leaves the
//! server's connection registry, and a plain `on_upgrade` handler would be cut at the
//! drain deadline, or never told anything at all. [`Upgrade::on_upgrade`] runs the
//! handler under the terminus instead:
//!
//! - the session is a tracked task ([`Terminus::spawn_tracked`]) from the
//!   moment the `101` response leaves the handler, so Closing waits for it;
//! - at Draining, [`Socket::recv`] returns `None`, so the usual
//!   `while let Some(message) = socket.recv().await` loop ends by itself; a handler
//!   that does not return within [`handler_grace`](Sessions::handler_grace) is
//!   dropped;
//! - then the helper sends the optional reconnect message and a Close frame with code
//!   1001 (Going Away), and waits for the peer's Close up to
//!   [`close_timeout`](Sessions::close_timeout): a prompt client lets the
//!   process exit without waiting for `drain_timeout`;
//! - a session still open at `drain_timeout` is aborted and reported in one `warn`
//!   event with its peer, path and age, like a cut connection.
//!
//! ```no_run
//! use axum::{extract::State, response::Response, routing::get, Router};
//! use axum_terminus::ws::{Message, Upgrade, Sessions};
//! use axum_terminus::{Terminus, TerminusLayer};
//!
//! async fn echo(upgrade: Upgrade, State(sockets): State<Sessions>) -> Response {
//!     upgrade.on_upgrade(&sockets, |mut socket| async move {
//!         // Ends at Draining; the helper then says goodbye with a 1001 Close.
//!         while let Some(Ok(message)) = socket.recv().await {
//!             if socket.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().build()?;
//! let sockets = Sessions::new(&terminus).reconnect_message(Message::text("reconnect"));
//! let app = Router::new()
//!     .route("/ws", get(echo))
//!     .with_state(sockets)
//!     .layer(TerminusLayer::new(&terminus));
//! let listener = axum_terminus::bind("127.0.0.1:3000", &terminus).await?;
//! axum_terminus::serve(listener, app, &terminus).await;
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ws::{close_code, CloseFrame, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use http::request::Parts;
use terminus_core::Terminus;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub use axum::extract::ws::{Message, Utf8Bytes};

/// How long [`Sessions`] waits for the peer's Close by default.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a handler may keep running after Draining begins, by default.
pub const DEFAULT_HANDLER_GRACE: Duration = Duration::from_secs(1);

/// How WebSocket sessions end when the server drains: the reconnect message, the
/// Close frame, and the bounds. Cheap to clone; keep one in your router's state.
///
/// ```
/// use std::time::Duration;
/// use axum_terminus::ws::{Message, Sessions};
/// use axum_terminus::Terminus;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder().build()?;
/// let sockets = Sessions::new(&terminus)
///     .reconnect_message(Message::text(r#"{"type":"reconnect"}"#))
///     .close_reason("server restarting")
///     .close_timeout(Duration::from_secs(1))
///     .handler_grace(Duration::from_millis(500));
/// # let _ = sockets; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sessions {
    terminus: Terminus,
    reconnect: Option<Message>,
    close_reason: Utf8Bytes,
    close_timeout: Duration,
    handler_grace: Duration,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("reconnect", &self.reconnect)
            .field("close_reason", &self.close_reason)
            .field("close_timeout", &self.close_timeout)
            .field("handler_grace", &self.handler_grace)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions under `terminus`: no reconnect message, Close reason
    /// `"server shutting down"`, [`DEFAULT_CLOSE_TIMEOUT`], [`DEFAULT_HANDLER_GRACE`].
    pub fn new(terminus: &Terminus) -> Sessions {
        Sessions {
            terminus: terminus.clone(),
            reconnect: None,
            close_reason: Utf8Bytes::from_static("server shutting down"),
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            handler_grace: DEFAULT_HANDLER_GRACE,
        }
    }

    /// A message sent just before the Close frame at Draining, telling the client to
    /// reconnect (the balancer will route it to another instance).
    pub fn reconnect_message(mut self, message: Message) -> Self {
        self.reconnect = Some(message);
        self
    }

    /// The reason text of the 1001 Close frame (at most 123 bytes, as the protocol
    /// requires; longer text is cut at a character boundary).
    pub fn close_reason(mut self, reason: &str) -> Self {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.close_reason = Utf8Bytes::from(&reason[..end]);
        self
    }

    /// How long to wait for the peer's Close after sending ours.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How long a handler may keep running once Draining begins before it is dropped
    /// so that the socket can be closed properly. A handler that loops on
    /// [`Socket::recv`] returns at once.
    pub fn handler_grace(mut self, grace: Duration) -> Self {
        self.handler_grace = grace;
        self
    }

    /// The terminus the sessions run under.
    pub fn terminus(&self) -> &Terminus {
        &self.terminus
    }
}

/// The WebSocket upgrade extractor, with what a report about the session needs: the
/// peer (under [`serve`](crate::serve) or axum's `ConnectInfo`) and the path.
///
/// Use [`map`](Upgrade::map) for axum's settings (sub-protocols, message sizes).
pub struct Upgrade {
    inner: WebSocketUpgrade,
    peer: Option<SocketAddr>,
    path: String,
}

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrade")
            .field("peer", &self.peer)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<S> FromRequestParts<S> for Upgrade
where
    S: Send + Sync,
{
    type Rejection = <WebSocketUpgrade as FromRequestParts<S>>::Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let inner = WebSocketUpgrade::from_request_parts(parts, state).await?;
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer);
        Ok(Upgrade {
            inner,
            peer,
            path: parts.uri.path().to_owned(),
        })
    }
}

impl From<WebSocketUpgrade> for Upgrade {
    /// An upgrade extracted with axum's own extractor: the report names no peer or path.
    fn from(inner: WebSocketUpgrade) -> Upgrade {
        Upgrade {
            inner,
            peer: None,
            path: String::new(),
        }
    }
}

impl Upgrade {
    /// Adjusts axum's upgrade (sub-protocols, frame and message sizes).
    ///
    /// ```
    /// # use axum_terminus::ws::Upgrade;
    /// fn chat_protocol(upgrade: Upgrade) -> Upgrade {
    ///     upgrade.map(|ws| ws.protocols(["chat"]).max_message_size(64 << 10))
    /// }
    /// ```
    pub fn map(mut self, f: impl FnOnce(WebSocketUpgrade) -> WebSocketUpgrade) -> Upgrade {
        self.inner = f(self.inner);
        self
    }

    /// The peer's address, when the server provides it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Answers the upgrade request and runs `handler` on the socket as a tracked
    /// session under `drain`'s terminus (see the [module docs](self)).
    ///
    /// The session is tracked from now, before the `101` response is sent, so no
    /// moment of its life escapes the shutdown. If the upgrade fails, the session ends
    /// without calling `handler`.
    pub fn on_upgrade<F, Fut>(self, drain: &Sessions, handler: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (upgraded_tx, upgraded_rx) = oneshot::channel::<WebSocket>();
        let session = Session {
            drain: drain.clone(),
            report: Report {
                peer: self.peer,
                path: self.path,
                started: Instant::now(),
                finished: false,
            },
        };
        drain.terminus.spawn_tracked(session.run(upgraded_rx, handler));
        self.inner.on_upgrade(move |socket| async move {
            // The session task holds the receiver until it is cut; a send error means
            // it is gone, and dropping the socket closes the connection.
            let _ = upgraded_tx.send(socket);
        })
    }
}

/// One session's lifetime, run as a tracked task.
struct Session {
    drain: Sessions,
    report: Report,
}

impl Session {
    async fn run<F, Fut>(mut self, upgraded: oneshot::Receiver<WebSocket>, handler: F)
    where
        F: FnOnce(Socket) -> Fut,
        Fut: Future<Output = ()>,
    {
        let draining = self.drain.terminus.token();
        // An error: the upgrade failed and axum dropped our sender.
        let Ok(socket) = upgraded.await else {
            self.report.finished = true;
            return;
        };
        let (returned_tx, returned_rx) = oneshot::channel();
        let socket = Socket::new(socket, draining.clone(), self.report.peer, returned_tx);

        let mut handler = Box::pin(handler(socket));
        let grace = self.drain.handler_grace;
        tokio::select! {
            () = &mut handler => {}
            () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::debug!(
                    target: "terminus", peer = ?self.report.peer, path = %self.report.path,
                    "websocket handler still running after the grace period: dropped"
                );
            }
        }
        // Dropping the handler drops its `Socket` (unless it moved the halves of a
        // split elsewhere), which hands the WebSocket back here.
        drop(handler);
        if let Ok(returned) = returned_rx.await {
            if draining.is_cancelled() {
                self.say_goodbye(returned).await;
            } else {
                let mut socket = returned.socket;
                // Sends the reply to a Close the handler received, if one is queued.
                let _ = socket.flush().await;
            }
        }
        self.report.finished = true;
    }

    /// The reconnect message and a 1001 Close, unless a Close already went either way;
    /// then wait (bounded) for the peer's Close.
    async fn say_goodbye(&self, returned: Returned) {
        let Returned {
            mut socket,
            mut sent_close,
            received_close,
        } = returned;
        if !sent_close && !received_close {
            if let Some(message) = self.drain.reconnect.clone() {
                let _ = socket.send(message).await;
            }
            let frame = CloseFrame {
                code: close_code::AWAY,
                reason: self.drain.close_reason.clone(),
            };
            sent_close = socket.send(Message::Close(Some(frame))).await.is_ok();
        }
        if received_close {
            let _ = socket.flush().await;
            return;
        }
        if !sent_close {
            return; // the connection is already broken
        }
        let peer_closed = async {
            // Messages the peer sent before its Close are dropped: the session is over.
            while let Some(Ok(message)) = socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        };
        if tokio::time::timeout(self.drain.close_timeout, peer_closed)
            .await
            .is_err()
        {
            tracing::debug!(
                target: "terminus", peer = ?self.report.peer, path = %self.report.path,
                "websocket peer did not answer the Close frame in time"
            );
        }
    }
}

/// Reports a session that did not finish: aborted at the drain deadline.
struct Report {
    peer: Option<SocketAddr>,
    path: String,
    started: Instant,
    finished: bool,
}

impl Drop for Report {
    fn drop(&mut self) {
        if self.finished || std::thread::panicking() {
            return;
        }
        tracing::warn!(
            target: "terminus",
            peer = %self.peer.map_or_else(|| "unknown".to_owned(), |peer| peer.to_string()),
            path = %self.path,
            age_ms = self.started.elapsed().as_millis() as u64,
            "websocket session cut at the drain deadline"
        );
    }
}

/// The socket returned to the session when the handler lets go of it.
struct Returned {
    socket: WebSocket,
    sent_close: bool,
    received_close: bool,
}

/// The WebSocket a handler gets from [`Upgrade::on_upgrade`]: axum's
/// [`WebSocket`], except that [`recv`](Socket::recv) (and the [`Stream`]) end when
/// Draining begins.
///
/// It implements [`Stream`] and [`Sink`] like axum's, so it can be split; the
/// session ends, and the Close handshake can happen, once both halves are dropped.
/// A half moved into another task must end at Draining too: select on
/// [`draining`](Socket::draining).
pub struct Socket {
    /// `Some` until dropped, when it goes back to the session.
    socket: Option<WebSocket>,
    token: CancellationToken,
    draining: Pin<Box<WaitForCancellationFutureOwned>>,
    peer: Option<SocketAddr>,
    sent_close: bool,
    received_close: bool,
    returned: Option<oneshot::Sender<Returned>>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("peer", &self.peer)
            .field("draining", &self.token.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Socket {
    fn new(
        socket: WebSocket,
        token: CancellationToken,
        peer: Option<SocketAddr>,
        returned: oneshot::Sender<Returned>,
    ) -> Socket {
        Socket {
            socket: Some(socket),
            draining: Box::pin(token.clone().cancelled_owned()),
            token,
            peer,
            sent_close: false,
            received_close: false,
            returned: Some(returned),
        }
    }

    /// The next message; `None` once the peer is gone or Draining has begun (then
    /// return from the handler, and the helper closes the socket with 1001).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as `StreamExt::next`: dropping it (in a `select!`) loses no message.
    pub async fn recv(&mut self) -> Option<Result<Message, axum::Error>> {
        self.next().await
    }

    /// Sends a message (and flushes it).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, as `SinkExt::send`: dropped before it resolves, the message may
    /// have been sent, in part or whole, or not at all.
    pub async fn send(&mut self, message: Message) -> Result<(), axum::Error> {
        SinkExt::send(self, message).await
    }

    /// Resolves when Draining begins: for handlers that mostly send.
    pub fn draining(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// `true` once Draining has begun.
    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The peer's address, when the server provides it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    fn inner(&mut self) -> Result<&mut WebSocket, axum::Error> {
        // `socket` is only taken in `drop`, so this cannot fail while `self` is usable.
        self.socket
            .as_mut()
            .ok_or_else(|| axum::Error::new("websocket already handed back"))
    }
}

impl Stream for Socket {
    type Item = Result<Message, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Draining first: a busy peer must not keep the handler from returning.
        if self.draining.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let Some(socket) = this.socket.as_mut() else {
            return Poll::Ready(None);
        };
        let message = ready!(socket.poll_next_unpin(cx));
        if let Some(Ok(Message::Close(_))) = &message {
            this.received_close = true;
        }
        Poll::Ready(message)
    }
}

impl Sink<Message> for Socket {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner()?.poll_ready_unpin(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, message: Message) -> Result<(), Self::Error> {
        let is_close = matches!(message, Message::Close(_));
        self.inner()?.start_send_unpin(message)?;
        if is_close {
            self.sent_close = true;
        }
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner()?.poll_flush_unpin(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner()?.poll_close_unpin(cx)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let (Some(socket), Some(returned)) = (self.socket.take(), self.returned.take()) {
            // An error means the session was cut; the socket is dropped and closed.
            let _ = returned.send(Returned {
                socket,
                sent_close: self.sent_close,
                received_close: self.received_close,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use tokio_tungstenite::tungstenite::Message as ClientMessage;

    use crate::Phase;
    use terminus_core::server::ServerExt;
    use terminus_core::NoConnections;

    async fn echo(upgrade: Upgrade, axum::extract::State(drain): axum::extract::State<Sessions>) -> Response {
        upgrade.on_upgrade(&drain, |mut socket| async move {
            while let Some(Ok(message)) = socket.recv().await {
                if socket.send(message).await.is_err() {
                    break;
                }
            }
        })
    }

    /// Serves `/ws` with axum's own server (the helper must not depend on ours).
    async fn start(drain: Sessions) -> SocketAddr {
        let app = Router::new().route("/ws", get(echo)).with_state(drain);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn terminus(drain_timeout: Duration) -> Terminus {
        let terminus = Terminus::builder()
            .drain_delay(Duration::ZERO)
            .drain_timeout(drain_timeout)
            .build()
            .unwrap();
        terminus.mark_listeners_bound();
        terminus
    }

    #[tokio::test]
    async fn draining_sends_reconnect_then_going_away_and_shutdown_does_not_wait_for_the_deadline() {
        let terminus = terminus(Duration::from_secs(30));
        let drain = Sessions::new(&terminus).reconnect_message(Message::text("reconnect"));
        let addr = start(drain).await;
        let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        client.send(ClientMessage::text("hi")).await.unwrap();
        assert_eq!(client.next().await.unwrap().unwrap(), ClientMessage::text("hi"));
        assert_eq!(terminus.tracked_tasks(), 1, "the session is tracked");

        terminus.shutdown("test");
        let runner = tokio::spawn({
            let terminus = terminus.clone();
            async move { terminus.run(NoConnections).await }
        });
        let reconnect = client.next().await.unwrap().unwrap();
        assert_eq!(reconnect, ClientMessage::text("reconnect"));
        let close = client.next().await.unwrap().unwrap();
        let ClientMessage::Close(Some(frame)) = close else {
            panic!("expected a Close frame, got {close:?}");
        };
        assert_eq!(u16::from(frame.code), 1001);
        // tungstenite answers the Close when polled again; the stream then ends.
        assert!(client.next().await.is_none());

        let outcome = tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("shutdown ends long before drain_timeout")
            .unwrap();
        assert!(outcome.is_graceful());
        assert_eq!(outcome.tasks_cut, 0);
        assert_eq!(terminus.phase(), Phase::Stopped);
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_close_is_bounded_by_close_timeout() {
        let terminus = terminus(Duration::from_secs(30));
        let drain = Sessions::new(&terminus).close_timeout(Duration::from_millis(300));
        let addr = start(drain).await;
        let (client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        terminus.shutdown("test");
        // The client never reads, so it never answers the Close.
        let outcome = tokio::time::timeout(Duration::from_secs(5), terminus.run(NoConnections))
            .await
            .expect("bounded by close_timeout");
        assert!(outcome.is_graceful());
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(client);
    }

    #[tokio::test]
    async fn a_handler_that_ignores_draining_is_dropped_after_the_grace_and_the_socket_closed() {
        let terminus = terminus(Duration::from_secs(30));
        let drain = Sessions::new(&terminus).handler_grace(Duration::from_millis(100));
        let app = Router::new().route(
            "/ws",
            get(|upgrade: Upgrade, axum::extract::State(drain): axum::extract::State<Sessions>| async move {
                upgrade.on_upgrade(&drain, |_socket| std::future::pending::<()>())
            }),
        )
        .with_state(drain);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        terminus.shutdown("test");
        let runner = tokio::spawn({
            let terminus = terminus.clone();
            async move { terminus.run(NoConnections).await }
        });
        let close = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .expect("closed after the grace")
            .unwrap()
            .unwrap();
        assert!(matches!(close, ClientMessage::Close(Some(ref frame)) if u16::from(frame.code) == 1001));
        assert!(client.next().await.is_none());
        let outcome = tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.is_graceful());
    }

    #[tokio::test]
    async fn a_session_still_open_at_drain_timeout_is_cut_and_counted() {
        let terminus = terminus(Duration::from_millis(300));
        // The handler returns at Draining, but the peer never answers and the
        // close timeout is longer than the drain deadline.
        let drain = Sessions::new(&terminus).close_timeout(Duration::from_secs(60));
        let addr = start(drain).await;
        let (client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        terminus.shutdown("test");
        let outcome = tokio::time::timeout(Duration::from_secs(5), terminus.run(NoConnections))
            .await
            .unwrap();
        assert_eq!(outcome.tasks_cut, 1);
        assert!(!outcome.is_graceful());
        drop(client);
    }
}
