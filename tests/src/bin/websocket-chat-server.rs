//! The `websocket-chat` example, as a binary the end-to-end tests can start
//! (`CARGO_BIN_EXE_websocket-chat-server`).

use std::process::ExitCode;

use axum_terminus::Terminus;

#[tokio::main]
async fn main() -> ExitCode {
    terminus_tests::init_tracing();
    match websocket_chat::run(Terminus::builder()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("websocket-chat-server: {error}");
            ExitCode::FAILURE
        }
    }
}
