//! The pool, the readiness check on it, and the hook that closes it: the three places
//! where the timeouts of docs/databases.md are set.

use std::time::Duration;

use axum_terminus::health::Check;
use axum_terminus::BoxError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Connection;

/// How long a request may wait for a connection. With sqlx this also bounds opening
/// one (there is no separate connect timeout): a refused connection is retried with a
/// back-off until this deadline, then the request gets `PoolTimedOut` (a 503).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The bound on one readiness check: under the kubelet's default 1 s probe timeout,
/// and shorter than [`ACQUIRE_TIMEOUT`], so that while the database is down this
/// deadline, not the pool's, ends a run: the probe answers 503 in time instead of
/// waiting out the pool's retries.
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// PostgreSQL cancels a statement that runs longer (server side). Shorter than the
/// default 20 s drain timeout, so a request stuck in the database still ends, with an
/// error, before the server gives up on it.
pub const STATEMENT_TIMEOUT: &str = "5s";

/// The most connections the pool opens.
pub const MAX_CONNECTIONS: u32 = 5;

/// Opens the pool on `url` and one connection, to fail at start when the database is
/// unreachable.
pub async fn connect(url: &str) -> Result<PgPool, sqlx::Error> {
    let mut options: PgConnectOptions = url.parse()?;
    if options.get_application_name().is_none() {
        // What `pg_stat_activity` shows for these connections.
        options = options.application_name("postgres-example");
    }
    let options = options.options([("statement_timeout", STATEMENT_TIMEOUT)]);
    PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
}

/// The readiness check: a connection from the pool answers a ping.
///
/// Through the pool, so it fails when requests could not get a connection either:
/// the database is down, unreachable, or every connection is busy for longer than the
/// check's timeout.
pub fn readiness(pool: &PgPool) -> Check {
    Check::with_state("postgres", pool.clone(), |pool, _ctx| async move {
        let mut connection = pool.acquire().await?;
        connection.ping().await?;
        Ok(None)
    })
    .readiness()
    // Shorter than the pool's ACQUIRE_TIMEOUT (3 s): see CHECK_TIMEOUT.
    .timeout(CHECK_TIMEOUT)
}

/// The `on_shutdown` hook: closes the pool. It runs after the last request has
/// drained, so nothing needs a connection any more; `close` sends each connection's
/// `Terminate` and returns once they are all closed.
pub async fn close(pool: PgPool) -> Result<(), BoxError> {
    pool.close().await;
    tracing::info!(connections = pool.size(), "database pool closed");
    Ok(())
}
