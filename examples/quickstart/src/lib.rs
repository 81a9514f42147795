//! The quickstart server: a real axum app with probes and graceful shutdown.
//!
//! `main.rs` runs it; the end-to-end tests run the same code through [`run`] with a few
//! extra hooks. Settings come from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HOST` | `127.0.0.1` | address to listen on |
//! | `PORT` | `3000` | port (`0` picks a free one) |
//! | `TERMINUS_DRAIN_DELAY` | `5s` in Kubernetes, else `0s` | how long readiness fails before the listener closes |
//! | `TERMINUS_DRAIN_TIMEOUT` | `20s` | how long in-flight requests may take to finish |
//! | `TERMINUS_CLEANUP_TIMEOUT` | `3s` | the bound on each cleanup hook |
//! | `TERMINUS_HEADER_READ_TIMEOUT` | `30s` | how long a client may take to send a request head (`0`: no bound) |
//! | `TERMINUS_IDLE_CLOSE_TIMEOUT` | `1s` | from Closing on, how long a connection with nothing in flight stays open |
//! | `TERMINUS_MAX_CONNECTIONS` | none | the most connections served at once |
//! | `QUICKSTART_DEPENDS_ON` | unset | `host:port` of a dependency: a TCP readiness check on it |
//! | `UNIX_SOCKET` | unset | a path: listen on this Unix domain socket instead of `HOST:PORT` |
//! | `LISTEN_FDS`, `LISTEN_PID` | set by systemd | socket activation: serve the socket systemd passed (fd 3) |
//! | `NOTIFY_SOCKET`, `WATCHDOG_USEC` | set by systemd | `Type=notify`: READY, STOPPING, STATUS and watchdog pings |
//! | `TERMINUS_UPGRADE_SIGNAL` | `SIGUSR2` | replace the binary in place: put the new one at the same path, then send this signal |
//! | `TERMINUS_UPGRADE_TIMEOUT` | `30s` | how long the new process has to become ready before it is killed (rollback) |
//! | `TERMINUS_PID_FILE` | unset | a file that always names the serving process |
#![warn(missing_docs)]

use std::process::ExitCode;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use axum_terminus::systemd::{ActivatedListener, ActivatedSockets};
use axum_terminus::{health::checks, BindError, Builder};
use axum_terminus::{Layer, Server, TerminusLayer};
use serde::Deserialize;

/// The application's routes, without the terminus layer.
///
/// - `GET|POST /`: `hello` (a POST body is read to its end first);
/// - `GET /slow?ms=N`: `slow` after N ms (default 1000);
/// - `GET /stream?ms=N`: a chunk every N ms (default 500), forever.
pub fn router() -> Router {
    Router::new()
        .route("/", get(hello).post(hello_post))
        .route("/slow", get(slow))
        .route("/stream", get(stream))
}

async fn hello() -> &'static str {
    "hello"
}

async fn hello_post(_body: Bytes) -> &'static str {
    "hello"
}

#[derive(Deserialize)]
struct Millis {
    ms: Option<u64>,
}

async fn slow(Query(query): Query<Millis>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(query.ms.unwrap_or(1000))).await;
    "slow"
}

async fn stream(Query(query): Query<Millis>) -> Body {
    let period = Duration::from_millis(query.ms.unwrap_or(500).max(1));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(1);
    tokio::spawn(async move {
        let mut tick = 0u64;
        loop {
            if tx.send(Ok(Bytes::from(format!("tick {tick}\n")))).await.is_err() {
                break; // the client (or the server's deadline) ended the response
            }
            tick += 1;
            tokio::time::sleep(period).await;
        }
    });
    Body::from_stream(ReceiverStream(rx))
}

/// A `Stream` over an mpsc receiver (what `tokio-stream` provides, in six lines).
struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// The builder `main` starts from: one `before_shutdown` hook and one `on_shutdown`
/// hook, each bounded by `TERMINUS_CLEANUP_TIMEOUT`. The Kubernetes manifest's budget
/// (`examples/kubernetes/quickstart.yaml`) counts them; its test builds this.
pub fn builder() -> Builder {
    axum_terminus::Terminus::builder()
        .before_shutdown("announce", || async {
            tracing::info!("draining: readiness now fails, requests are still served");
            Ok(())
        })
        .on_shutdown("flush", || async {
            tracing::info!("cleanup: a real service would close its database pool here");
            Ok(())
        })
}

/// Configures the controller from `builder` and the environment, listens (on a socket
/// passed by systemd, `UNIX_SOCKET`, or `HOST:PORT`), prints `quickstart listening on
/// http://ADDR` (or `unix:PATH`) on stdout, serves until shut down, and returns the
/// exit code of the outcome.
pub async fn run(builder: Builder) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT: `{port}` is not a port number"))?,
        Err(_) => 3000,
    };
    // QUICKSTART_DEPENDS_ON=host:port adds a readiness check on that dependency: stop it
    // and /readyz answers 503 within about a second (the check result is cached for 1 s).
    let builder = match std::env::var("QUICKSTART_DEPENDS_ON") {
        Ok(address) if !address.trim().is_empty() => {
            builder.readiness(checks::tcp("depends-on", address.trim().to_owned()))
        }
        _ => builder,
    };
    let terminus = builder.from_env()?.build()?;
    let server = Server::new(&terminus);

    // Around the whole app: probes are answered before routing. `with_state(())` turns
    // the handlers into routes once, as axum::serve does; a Router called as a plain
    // tower service would otherwise convert them on every request.
    let app = TerminusLayer::new(&terminus).layer(router().with_state(()));
    // The socket systemd passed (socket activation), else UNIX_SOCKET, else HOST:PORT.
    let server = match ActivatedSockets::from_env().take(0)? {
        Some(ActivatedListener::Tcp(listener)) => {
            println!(
                "quickstart listening on http://{}",
                listener.get_ref().local_addr()?
            );
            server.listener(listener, app)
        }
        Some(ActivatedListener::Unix(listener)) => {
            println!("quickstart listening on unix:{}", unix_path(listener.get_ref()));
            server.listener(listener, app)
        }
        None => match std::env::var_os("UNIX_SOCKET").filter(|path| !path.is_empty()) {
            Some(path) => {
                let listener = startup(axum_terminus::bind_unix(&path, &terminus).await)?;
                println!("quickstart listening on unix:{}", unix_path(&listener));
                server.listener(listener, app)
            }
            None => {
                let listener = startup(axum_terminus::bind(format!("{host}:{port}"), &terminus).await)?;
                println!("quickstart listening on http://{}", listener.local_addr()?);
                server.listener(listener, app)
            }
        },
    };
    let outcome = server.run().await;
    Ok(outcome.exit_code())
}

/// A bind failure, logged (the terminus is marked fatal already) and returned.
fn startup<T>(bound: Result<T, BindError>) -> Result<T, Box<dyn std::error::Error>> {
    bound.map_err(|error| {
        tracing::error!(%error, "startup failed");
        error.into()
    })
}

fn unix_path(listener: &tokio::net::UnixListener) -> String {
    listener
        .local_addr()
        .ok()
        .and_then(|address| address.as_pathname().map(|path| path.display().to_string()))
        .unwrap_or_default()
}
