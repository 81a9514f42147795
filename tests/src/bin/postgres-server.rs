//! The `postgres` example, as a binary the end-to-end tests can start
//! (`CARGO_BIN_EXE_postgres-server`).

use std::process::ExitCode;

use axum_terminus::Terminus;

#[tokio::main]
async fn main() -> ExitCode {
    terminus_tests::init_tracing();
    match postgres_example::run(Terminus::builder()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("postgres-server: {error}");
            ExitCode::FAILURE
        }
    }
}
