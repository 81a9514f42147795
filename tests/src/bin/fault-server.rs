//! The quickstart application with faults injected, for `tests/tests/faults.rs`.
//! Every fault is switched on by an environment variable (`HOST`, `PORT` and the
//! `TERMINUS_*` variables work as in the quickstart):
//!
//! - `FAULT_READINESS=hang|panic|count`: a readiness check that never returns, one that
//!   panics (with the message `secret panic detail`), or one that prints
//!   `CHECK readiness` on stdout each time it runs;
//! - `FAULT_ON_SHUTDOWN=hang`: an `on_shutdown` hook (`hang`) that never returns, then
//!   one (`after-hang`) that prints `HOOK on_shutdown after-hang`;
//! - `FAULT_STARTUP_DELAY_MS=N`: N ms of startup work after the `Terminus` is built and
//!   its signal handlers installed (`listen_for_signals`), before the listener is bound;
//!   `starting` is printed first;
//! - `FAULT_ADMIN=1`: a probe-only admin listener on `127.0.0.1:0`, bound before the main
//!   listener and printed as `admin listening on http://ADDR`; if the main listener
//!   cannot be bound, the admin listener keeps answering probes while the process stops.
//!
//! Besides the quickstart routes, `GET /big?mb=N` streams an N MiB body (default 64) in
//! 64 KiB chunks, for a client that never reads its response.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::routing::get;
use axum::Router;
use axum_terminus::health::{Check, CheckError};
use axum_terminus::{Server, Terminus, TerminusLayer};

fn say(line: &str) {
    // Flushed at once: the test reads stdout while the process is still running.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

async fn big(uri: axum::http::Uri) -> Body {
    let mb = uri
        .query()
        .and_then(|query| query.strip_prefix("mb="))
        .and_then(|mb| mb.parse::<u64>().ok())
        .unwrap_or(64);
    Body::new(Chunks { left: mb << 4 })
}

/// A body of `left` chunks of 64 KiB, produced as the connection asks for them (as a
/// file download is), so the request stays in flight until the last one is taken.
struct Chunks {
    left: u64,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            &[b'x'; 64 << 10],
        )))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    terminus_tests::init_tracing();
    match run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("fault-server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let mut builder = Terminus::builder();
    match var("FAULT_READINESS").as_str() {
        "" => {}
        "hang" => {
            builder = builder.readiness(Check::new("hang", |_| async {
                std::future::pending::<()>().await;
                Ok(None)
            }));
        }
        "panic" => {
            builder = builder.readiness(Check::new("boom", |_| async {
                if true {
                    panic!("secret panic detail");
                }
                Ok(None)
            }));
        }
        "count" => {
            static RUNS: AtomicU64 = AtomicU64::new(0);
            builder = builder.readiness(Check::new("counted", |_| async {
                RUNS.fetch_add(1, Ordering::Relaxed);
                say("CHECK readiness");
                Ok::<_, CheckError>(None)
            }));
        }
        other => return Err(format!("FAULT_READINESS: unknown fault `{other}`").into()),
    }
    if var("FAULT_ON_SHUTDOWN") == "hang" {
        builder = builder
            .on_shutdown("hang", || async {
                say("HOOK on_shutdown hang");
                std::future::pending::<()>().await;
                Ok(())
            })
            .on_shutdown("after-hang", || async {
                say("HOOK on_shutdown after-hang");
                Ok(())
            });
    }
    let terminus = builder.from_env()?.build()?;
    // From here on SIGTERM starts the shutdown instead of killing the process, even
    // though nothing listens yet (`serve` would install the handlers only later).
    terminus.listen_for_signals();
    say("starting");

    if let Ok(delay) = var("FAULT_STARTUP_DELAY_MS").parse::<u64>() {
        // Startup work that does not look at the shutdown token (loading a cache, ...).
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }

    let admin = if var("FAULT_ADMIN") == "1" {
        let admin = axum_terminus::bind("127.0.0.1:0", &terminus).await?;
        say(&format!("admin listening on http://{}", admin.local_addr()?));
        Some(admin)
    } else {
        None
    };
    let admin_app = || Router::new().layer(TerminusLayer::new(&terminus));

    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".to_owned());
    let listener = match axum_terminus::bind(format!("{host}:{port}"), &terminus).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "startup failed");
            let Some(admin) = admin else {
                return Err(error.into());
            };
            // The controller is fatal now: liveness fails and the shutdown has started.
            // The admin listener tells the orchestrator so until the process is gone.
            let outcome = Server::new(&terminus).listener(admin, admin_app()).run().await;
            return Ok(outcome.exit_code());
        }
    };
    say(&format!(
        "fault-server listening on http://{}",
        listener.local_addr()?
    ));

    let app = quickstart::router()
        .route("/big", get(big))
        .layer(TerminusLayer::new(&terminus));
    let mut server = Server::new(&terminus).listener(listener, app);
    if let Some(admin) = admin {
        server = server.listener(admin, admin_app());
    }
    Ok(server.run().await.exit_code())
}
