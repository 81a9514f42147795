//! An axum service on a PostgreSQL connection pool, under terminus: the example of
//! [docs/databases.md](https://github.com/terminus-rs/terminus-rs/blob/main/docs/databases.md).
//!
//! - `POST /notes` stores the request body as a note and answers `{"id":N}`;
//!   `?delay_ms=N` makes the insert sleep N ms inside PostgreSQL first (`pg_sleep`), to
//!   watch a write drain at shutdown. `GET /notes/{id}` answers `{"id":N,"body":"..."}`.
//! - `/readyz` pings the database through the pool ([`database::readiness`]); `/livez`
//!   never touches it.
//! - After the last request has drained, an `on_shutdown` hook closes the pool
//!   ([`database::close`]), so PostgreSQL sees each connection end cleanly.
//!
//! Why sqlx rather than tokio-postgres with deadpool-postgres: `PgPool::close().await`
//! returns once every connection has been closed with PostgreSQL's `Terminate`
//! message, which is what a shutdown hook needs to wait on; deadpool's `close()`
//! returns at once, and deadpool-postgres aborts a connection's task when it drops it,
//! so the socket closes without `Terminate`. sqlx is also the pool most axum services
//! already use. sqlx 0.9, not 0.8: 0.8's `close()` can return with a connection still
//! open (sqlx #3217).
//!
//! Settings come from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | required | `postgres://user:password@host:port/database`; `?application_name=` names the connections in `pg_stat_activity` (default `postgres-example`) |
//! | `HOST` | `127.0.0.1` | address to listen on |
//! | `PORT` | `3000` | port (`0` picks a free one) |
//! | `TERMINUS_DRAIN_DELAY`, `TERMINUS_DRAIN_TIMEOUT`, `TERMINUS_CLEANUP_TIMEOUT` | see the quickstart | the shutdown's deadlines |
//! | `TERMINUS_HEADER_READ_TIMEOUT`, `TERMINUS_IDLE_CLOSE_TIMEOUT`, `TERMINUS_MAX_CONNECTIONS` | see the quickstart | the server's limits |
#![warn(missing_docs)]

pub mod database;
pub mod notes;

use std::process::ExitCode;

use axum_terminus::{Builder, Layer, Server, TerminusLayer};

/// Connects to `DATABASE_URL` and creates the table, configures the controller from
/// `builder` and the environment, binds `HOST:PORT`, prints
/// `postgres-example listening on http://ADDR` on stdout, serves until shut down, and
/// returns the exit code of the outcome.
pub async fn run(builder: Builder) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .map_err(|_| "DATABASE_URL is not set (postgres://user:password@host:port/database)")?;
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT: `{port}` is not a port number"))?,
        Err(_) => 3000,
    };

    // Before listening: a database that is down at start fails the start (exit 1), and
    // the orchestrator restarts the process with a back-off.
    let pool = database::connect(&url).await?;
    notes::create_table(&pool).await?;

    let terminus = builder
        .readiness(database::readiness(&pool))
        // Liveness has no check at all: see docs/databases.md.
        .on_shutdown(
            "close database pool",
            axum_terminus::with_state(pool.clone(), database::close),
        )
        .from_env()?
        .build()?;
    let server = Server::new(&terminus);

    let app = TerminusLayer::new(&terminus).layer(notes::router(pool));
    let listener = axum_terminus::bind(format!("{host}:{port}"), &terminus).await?;
    println!("postgres-example listening on http://{}", listener.local_addr()?);
    let outcome = server.listener(listener, app).run().await;
    Ok(outcome.exit_code())
}

/// `docs/databases.md`'s Rust blocks, compiled as doc tests with this crate's
/// dependencies (sqlx among them).
#[cfg(doctest)]
#[doc = include_str!("../../../docs/databases.md")]
struct DatabasesGuide;
