//! A chat room over WebSockets that drains cleanly: at Draining every client gets
//! `{"type":"reconnect"}` and then a Close frame with code 1001, and the process exits
//! as soon as the clients have answered, long before `drain_timeout`.
//!
//! `GET /ws` upgrades; every text message is sent to everyone in the room. Settings
//! come from the environment: `HOST` (default `127.0.0.1`), `PORT` (default `3000`,
//! `0` picks a free one) and the `TERMINUS_*` variables.
#![warn(missing_docs)]

use std::process::ExitCode;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use axum_terminus::ws::{Message, Sessions, Upgrade};
use axum_terminus::Builder;
use axum_terminus::{Layer, TerminusLayer};
use tokio::sync::broadcast;

/// What the client receives just before the 1001 Close.
pub const RECONNECT_MESSAGE: &str = r#"{"type":"reconnect"}"#;

#[derive(Clone)]
struct Room {
    said: broadcast::Sender<String>,
    sockets: Sessions,
}

/// The chat routes: `GET /ws`.
pub fn router(sockets: Sessions) -> Router {
    let (said, _) = broadcast::channel(64);
    Router::new()
        .route("/ws", get(join))
        .with_state(Room { said, sockets })
}

async fn join(upgrade: Upgrade, State(room): State<Room>) -> Response {
    let said = room.said.clone();
    upgrade.on_upgrade(&room.sockets, move |mut socket| async move {
        let mut inbox = said.subscribe();
        loop {
            tokio::select! {
                // `None` when the client leaves, and when the server starts draining:
                // returning is all the handler does; the helper says goodbye.
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let _ = said.send(text.to_string());
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                heard = inbox.recv() => match heard {
                    Ok(text) => {
                        if socket.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    })
}

/// Configures the controller from `builder` and the environment, binds `HOST:PORT`,
/// prints `websocket-chat listening on http://ADDR`, serves until shut down, and
/// returns the exit code of the outcome.
pub async fn run(builder: Builder) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let terminus = builder.from_env()?.build()?;

    let sockets = Sessions::new(&terminus).reconnect_message(Message::text(RECONNECT_MESSAGE));
    let app = TerminusLayer::new(&terminus).layer(router(sockets).with_state(()));
    let listener = axum_terminus::bind(format!("{host}:{port}"), &terminus).await?;
    println!("websocket-chat listening on http://{}", listener.local_addr()?);
    let outcome = axum_terminus::serve(listener, app, &terminus).await;
    Ok(outcome.exit_code())
}
