//! The `sse` example, as a binary the end-to-end tests can start
//! (`CARGO_BIN_EXE_sse-server`).

use std::process::ExitCode;

use axum_terminus::Terminus;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match sse::run(Terminus::builder()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sse-server: {error}");
            ExitCode::FAILURE
        }
    }
}
