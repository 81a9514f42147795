//! `cargo run -p grpc`: a tonic greeter with grpc.health.v1 on 127.0.0.1:50051; see
//! docs/grpc.md for how to watch a graceful shutdown.

use std::process::ExitCode;

use axum_terminus::Terminus;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    match grpc::run(Terminus::builder()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("grpc: {error}");
            ExitCode::FAILURE
        }
    }
}
