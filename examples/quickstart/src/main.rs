//! `cargo run -p quickstart`: see the README for how to watch a graceful shutdown.

use std::process::ExitCode;

use axum_terminus::Terminus;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    let builder = Terminus::builder()
        .before_shutdown("announce", || async {
            tracing::info!("draining: readiness now fails, requests are still served");
            Ok(())
        })
        .on_shutdown("flush", || async {
            tracing::info!("cleanup: a real service would close its database pool here");
            Ok(())
        });
    match quickstart::run(builder).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("quickstart: {error}");
            ExitCode::FAILURE
        }
    }
}
