//! The `tls` example (the quickstart's routes over HTTPS), with the tests' logging.

use std::process::ExitCode;

use axum_terminus::Terminus;

#[tokio::main]
async fn main() -> ExitCode {
    terminus_tests::init_tracing();
    match tls::run(Terminus::builder()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tls-server: {error}");
            ExitCode::FAILURE
        }
    }
}
