//! `cargo run -p websocket-chat`: see `docs/long-lived-connections.md`.

use std::process::ExitCode;

use axum_terminus::Terminus;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match websocket_chat::run(Terminus::builder()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("websocket-chat: {error}");
            ExitCode::FAILURE
        }
    }
}
