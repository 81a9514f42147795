//! The application: notes written to and read from one table.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// `POST /notes` and `GET /notes/{id}` on `pool`.
pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/notes", post(create))
        .route("/notes/{id}", get(read))
        .with_state(pool)
}

/// Creates the `notes` table if it does not exist yet.
pub async fn create_table(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("CREATE TABLE IF NOT EXISTS notes (id bigserial PRIMARY KEY, body text NOT NULL)")
        .execute(pool)
        .await?;
    Ok(())
}

/// A stored note.
#[derive(Serialize)]
pub struct Note {
    /// Its id.
    pub id: i64,
    /// What was posted.
    pub body: String,
}

#[derive(Serialize)]
struct Created {
    id: i64,
}

#[derive(Deserialize)]
struct Delay {
    delay_ms: Option<u64>,
}

async fn create(
    State(pool): State<PgPool>,
    Query(delay): Query<Delay>,
    body: String,
) -> Result<Json<Created>, DatabaseError> {
    let delay = Duration::from_millis(delay.delay_ms.unwrap_or(0));
    // The sleep runs inside the INSERT's transaction: the write is in flight in the
    // database for that long, then commits.
    let id: i64 = sqlx::query_scalar("INSERT INTO notes (body) SELECT $1 FROM pg_sleep($2) RETURNING id")
        .bind(body)
        .bind(delay.as_secs_f64())
        .fetch_one(&pool)
        .await?;
    Ok(Json(Created { id }))
}

async fn read(State(pool): State<PgPool>, Path(id): Path<i64>) -> Result<Response, DatabaseError> {
    let note: Option<(i64, String)> = sqlx::query_as("SELECT id, body FROM notes WHERE id = $1")
        .bind(id)
        .fetch_optional(&pool)
        .await?;
    Ok(match note {
        Some((id, body)) => Json(Note { id, body }).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

/// A failed query, answered without its details (they go to the log).
struct DatabaseError(sqlx::Error);

impl From<sqlx::Error> for DatabaseError {
    fn from(error: sqlx::Error) -> DatabaseError {
        DatabaseError(error)
    }
}

impl IntoResponse for DatabaseError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self.0, "database request failed");
        if unavailable(&self.0) {
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        } else {
            (StatusCode::INTERNAL_SERVER_ERROR, "database error\n").into_response()
        }
    }
}

/// Whether the database could not be reached, rather than refused this query: worth
/// a retry, here or on another instance.
fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        // No connection within the acquire timeout, or no pool any more.
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        // SQLSTATE class 08 (connection exception) and 57P (the server is shutting down
        // or starting up: `pg_ctl stop` terminates sessions with 57P01).
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}
