//! The quickstart's routes under a bare `axum::serve(..).with_graceful_shutdown(..)`:
//! no terminus-rs at all, no drain delay, no `/readyz`. On SIGTERM it stops accepting at
//! once and finishes what it has, which is what `terminus-check` (tests/terminus_check.rs)
//! must catch and diagnose as the missing drain delay.

use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
    println!("bare axum listening on http://{}", listener.local_addr()?);
    let mut terminate = signal(SignalKind::terminate())?;
    axum::serve(listener, quickstart::router())
        .with_graceful_shutdown(async move {
            terminate.recv().await;
        })
        .await
}
