//! The quickstart's routes served by `axum::serve` with
//! `with_graceful_shutdown(shutdown_signal(&terminus))`, exactly as the docs of
//! `shutdown_signal` (and docs/deployment.md) show it: the path for users who keep
//! axum's server. Each hook prints `HOOK <stage> <name>` on stdout.

use std::io::Write;
use std::process::ExitCode;

use axum_terminus::{shutdown_signal, Terminus, TerminusLayer};

fn hook_line(stage: &'static str, name: &'static str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "HOOK {stage} {name}");
    let _ = stdout.flush();
}

#[tokio::main]
async fn main() -> ExitCode {
    terminus_tests::init_tracing();
    match run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("axum-serve-server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let terminus = Terminus::builder()
        .from_env()?
        .before_shutdown("announce", || async {
            hook_line("before_shutdown", "announce");
            Ok(())
        })
        .on_signal("stop-consumers", || async {
            hook_line("on_signal", "stop-consumers");
            Ok(())
        })
        .on_shutdown("close-pool", || async {
            hook_line("on_shutdown", "close-pool");
            Ok(())
        })
        .build()?;
    let app = quickstart::router().layer(TerminusLayer::new(&terminus));
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
    println!("axum-serve listening on http://{}", listener.local_addr()?);

    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal(&terminus));
    tokio::select! {
        served = server => served?,
        _ = terminus.outcome() => {}
    }
    let outcome = terminus.outcome().await;
    Ok(outcome.exit_code())
}
