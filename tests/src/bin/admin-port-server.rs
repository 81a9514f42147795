//! The `admin-port` example, as a binary the end-to-end tests can start
//! (`CARGO_BIN_EXE_admin-port-server`).

use std::process::ExitCode;

use axum_terminus::Terminus;

#[tokio::main]
async fn main() -> ExitCode {
    terminus_tests::init_tracing();
    match admin_port::run(Terminus::builder()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("admin-port-server: {error}");
            ExitCode::FAILURE
        }
    }
}
