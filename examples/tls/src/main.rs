//! `cargo run -p tls`: HTTPS on 127.0.0.1:3443 (see `lib.rs` for the settings).

use std::process::ExitCode;

use axum_terminus::Terminus;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match tls::run(Terminus::builder()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tls: {error}");
            ExitCode::FAILURE
        }
    }
}
