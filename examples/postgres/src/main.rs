//! `DATABASE_URL=postgres://... cargo run -p postgres-example`: see docs/databases.md.

use std::process::ExitCode;

use axum_terminus::Terminus;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    match postgres_example::run(Terminus::builder()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("postgres-example: {error}");
            ExitCode::FAILURE
        }
    }
}
