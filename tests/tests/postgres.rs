//! The `postgres` example (`postgres-server`) against a real PostgreSQL server
//! (`terminus_tests::postgres`: `initdb`, `pg_ctl` on a free loopback port):
//!
//! - readiness follows the database: `/readyz` turns 503 within the check's cache
//!   period plus its timeout after the database stops, and 200 again after it starts,
//!   while `/livez` stays 200, every probe answers within its bound, and a write while
//!   the database is down answers 503 within the pool's acquire timeout;
//! - at SIGTERM, a write in flight in the database commits and answers 200, then the
//!   `on_shutdown` hook closes the pool: PostgreSQL sees every connection of the
//!   example end with a `Terminate` message (none abandoned), which only the running
//!   process can send, and the process exits 0.
//!
//! Each test prints one line of figures on stderr (`postgres scenario=...`);
//! docs/databases.md records them.

use std::io::Write;
use std::time::{Duration, Instant};

use axum_terminus::health::DEFAULT_CACHE_TTL;
use http::StatusCode;
use postgres_example::database::{ACQUIRE_TIMEOUT, CHECK_TIMEOUT};
use sqlx::{Connection, PgConnection};
use terminus_tests::logs::{field, tail};
use terminus_tests::postgres::Postgres;
use terminus_tests::{Reply, TestServer, H1};

/// The example's database (created by [`start`]); the cluster's `postgres` database is
/// the test's own, so that the session counts of this one are the example's alone.
const DATABASE: &str = "notes";
/// How the example's connections are named in `pg_stat_activity`.
const APPLICATION_NAME: &str = "terminus-e2e";
/// Slack on every time bound, for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(1);
/// The kubelet's default probe timeout: no probe may take longer, database or not.
const PROBE_BOUND: Duration = Duration::from_secs(1);
/// How long the write in flight at SIGTERM sleeps inside PostgreSQL.
const SLOW_WRITE_MS: u64 = 2000;

fn postgres_server() -> &'static str {
    env!("CARGO_BIN_EXE_postgres-server")
}

/// A cluster with the example's database, and the example running against it.
async fn start() -> (Postgres, TestServer) {
    let postgres = Postgres::start();
    let mut admin = connect(&postgres, "postgres").await;
    sqlx::query("CREATE DATABASE notes")
        .execute(&mut admin)
        .await
        .expect("create the example's database");
    close(admin).await;
    let url = postgres.url(DATABASE, APPLICATION_NAME);
    let server = TestServer::start(
        postgres_server(),
        &[("DATABASE_URL", url.as_str()), ("TERMINUS_DRAIN_DELAY", "0s")],
    );
    (postgres, server)
}

/// A connection of the test's own (not the example's), to `database`.
async fn connect(postgres: &Postgres, database: &str) -> PgConnection {
    let url = postgres.url(database, "terminus-e2e-observer");
    PgConnection::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("connect to {url}: {error}\n{}", postgres.log()))
}

/// Closes a connection of the test's with `Terminate`, as the example's pool must.
async fn close(connection: PgConnection) {
    connection.close().await.expect("close the test's connection");
}

/// `(connections, active inserts)` of the example, as PostgreSQL lists them.
async fn example_sessions(postgres: &Postgres) -> (i64, i64) {
    let mut observer = connect(postgres, "postgres").await;
    let counts = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE state = 'active' AND query LIKE 'INSERT INTO notes%') \
         FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
    )
    .bind(DATABASE)
    .bind(APPLICATION_NAME)
    .fetch_one(&mut observer)
    .await
    .expect("read pg_stat_activity");
    close(observer).await;
    counts
}

/// `(abandoned, fatal)`: sessions of the example's database that ended without the
/// client's `Terminate` (the client's socket closed under it: a process that exited
/// with its pool open), or with an error on the server's side.
async fn unclean_session_ends(postgres: &Postgres) -> (i64, i64) {
    let mut observer = connect(postgres, "postgres").await;
    let counts =
        sqlx::query_as("SELECT sessions_abandoned, sessions_fatal FROM pg_stat_database WHERE datname = $1")
            .bind(DATABASE)
            .fetch_one(&mut observer)
            .await
            .expect("read pg_stat_database");
    close(observer).await;
    counts
}

/// One request on a new connection, which must answer within `bound`.
async fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    body: &'static str,
    bound: Duration,
) -> Reply {
    let started = Instant::now();
    let reply = tokio::time::timeout(bound, async {
        let mut connection = H1::connect(server.addr()).await?;
        connection
            .send(method, path, body)
            .await
            .map_err(std::io::Error::other)
    })
    .await;
    match reply {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) => panic!("{method} {path}: {error}\n{}", tail(&server.stderr(), 20)),
        Err(_) => panic!(
            "{method} {path} did not answer within {bound:?} (sent {:?} ago)\n{}",
            started.elapsed(),
            tail(&server.stderr(), 20)
        ),
    }
}

/// Polls `/readyz` until it answers `status`, at most `deadline`, and checks on every
/// round that each probe answers within [`PROBE_BOUND`] and that `/livez` is 200.
/// Returns how long it took.
async fn wait_for_readiness(server: &TestServer, status: StatusCode, deadline: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let livez = request(server, "GET", "/livez", "", PROBE_BOUND).await;
        assert_eq!(livez.status, StatusCode::OK, "/livez never touches the database");
        let readyz = request(server, "GET", "/readyz", "", PROBE_BOUND).await;
        if readyz.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < deadline,
            "/readyz still {} after {deadline:?}, expected {status}\n{}",
            readyz.status,
            tail(&server.stderr(), 20)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A `POST /notes` on its own task, answered within `bound`: the reply (`None` if it
/// did not answer in time) and how long it took.
fn write_note(server: &TestServer, path: String, body: &'static str, bound: Duration) -> WriteTask {
    let addr = server.addr();
    tokio::spawn(async move {
        let started = Instant::now();
        let reply = tokio::time::timeout(bound, async {
            let mut connection = H1::connect(addr).await.map_err(|error| error.to_string())?;
            connection
                .send("POST", &path, body)
                .await
                .map_err(|error| error.to_string())
        })
        .await
        .ok();
        (reply, started.elapsed())
    })
}

type WriteTask = tokio::task::JoinHandle<(Option<Result<Reply, String>>, Duration)>;

/// Waits until PostgreSQL runs the example's (slow) INSERT, at most `within`; returns
/// the example's connections at that moment.
async fn wait_for_insert_in_flight(postgres: &Postgres, within: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let (connections, inserting) = example_sessions(postgres).await;
        if inserting == 1 {
            return connections;
        }
        assert!(
            started.elapsed() < within,
            "the INSERT never showed in pg_stat_activity"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The reply of a finished write task, or a panic naming what went wrong.
async fn reply_of(task: WriteTask, what: &str) -> (Reply, Duration) {
    let (reply, took) = task.await.expect("the write's task");
    match reply {
        Some(Ok(reply)) => (reply, took),
        Some(Err(error)) => panic!("{what}: no answer: {error}"),
        None => panic!("{what}: no answer within its bound ({took:?})"),
    }
}

fn figures(line: String) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_while_liveness_stays_up_and_no_request_hangs() {
    let (postgres, server) = start().await;
    // The cache may hold a result of up to DEFAULT_CACHE_TTL ago, then one run of at most
    // CHECK_TIMEOUT decides.
    let flip_bound = DEFAULT_CACHE_TTL + CHECK_TIMEOUT + MARGIN;

    wait_for_readiness(&server, StatusCode::OK, Duration::from_secs(10)).await;
    let created = request(&server, "POST", "/notes", "first note", Duration::from_secs(5)).await;
    assert_eq!(created.status, StatusCode::OK, "{created:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&created.body).expect("JSON")["id"]
        .as_i64()
        .expect("an id");
    let read = request(
        &server,
        "GET",
        &format!("/notes/{id}"),
        "",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&read.body).expect("JSON")["body"],
        "first note"
    );

    // A write in the database when it stops fails at once with a 503: PostgreSQL
    // terminates the session (SQLSTATE 57P01).
    let in_flight = write_note(
        &server,
        "/notes?delay_ms=4000".into(),
        "cut by the stop",
        Duration::from_secs(10),
    );
    wait_for_insert_in_flight(&postgres, Duration::from_secs(4)).await;
    let stopping = Instant::now();
    postgres.stop();
    let stop_took = stopping.elapsed();
    let (reply, _) = reply_of(in_flight, "a write in flight when the database stops").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    let failed_after_stop = stopping.elapsed();
    assert!(
        failed_after_stop < stop_took + MARGIN,
        "the write in flight answered {failed_after_stop:?} after the stop began"
    );

    let went_unready = wait_for_readiness(&server, StatusCode::SERVICE_UNAVAILABLE, flip_bound).await;

    // A write while the database is down waits for a connection until the pool's
    // acquire timeout, then answers 503; meanwhile the probes still answer in time.
    let write = write_note(&server, "/notes".into(), "while down", ACQUIRE_TIMEOUT + MARGIN);
    let probing_since = Instant::now();
    while !write.is_finished() {
        assert!(
            probing_since.elapsed() < ACQUIRE_TIMEOUT + 2 * MARGIN,
            "the write's task never ended"
        );
        wait_for_readiness(&server, StatusCode::SERVICE_UNAVAILABLE, PROBE_BOUND).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (reply, write_took) = reply_of(write, "a write while the database is down").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert!(
        write_took >= ACQUIRE_TIMEOUT.saturating_sub(Duration::from_millis(100)),
        "the write should have waited for the pool's acquire timeout, answered after {write_took:?}"
    );

    postgres.start_again();
    let went_ready = wait_for_readiness(&server, StatusCode::OK, flip_bound).await;
    let created = request(
        &server,
        "POST",
        "/notes",
        "after the restart",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(created.status, StatusCode::OK, "the pool reconnects: {created:?}");

    figures(format!(
        "postgres scenario=database-restart stop_ms={} in_flight_write_503_after_ms={} \
         readyz_503_after_stop_ms={} write_while_down_ms={} readyz_200_after_start_ms={} bound_ms={}",
        stop_took.as_millis(),
        failed_after_stop.as_millis(),
        went_unready.as_millis(),
        write_took.as_millis(),
        went_ready.as_millis(),
        flip_bound.as_millis()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_at_sigterm_commits_then_the_hook_closes_the_pool() {
    let (postgres, mut server) = start().await;
    wait_for_readiness(&server, StatusCode::OK, Duration::from_secs(10)).await;
    let before = unclean_session_ends(&postgres).await;

    let write = write_note(
        &server,
        // The INSERT sleeps this long in PostgreSQL before it commits.
        format!("/notes?delay_ms={SLOW_WRITE_MS}"),
        "written at shutdown",
        Duration::from_millis(SLOW_WRITE_MS) + Duration::from_secs(5),
    );
    // SIGTERM once PostgreSQL runs the INSERT: the write is in flight in the database.
    let in_flight = wait_for_insert_in_flight(&postgres, Duration::from_millis(SLOW_WRITE_MS)).await;
    server.signal("TERM");
    let signalled = Instant::now();

    let (reply, _) = reply_of(write, "the write in flight at SIGTERM").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let id = serde_json::from_slice::<serde_json::Value>(&reply.body).expect("JSON")["id"]
        .as_i64()
        .expect("an id");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no exit within 10 s\n{}", tail(&server.stderr(), 20)));
    let exited_after = signalled.elapsed();
    let log = server.stderr();
    assert_eq!(status.code(), Some(0), "{}", tail(&log, 20));

    // The hook ran after the drain, and closed every connection before returning.
    let position = |needle: &str| log.iter().position(|line| line.contains(needle));
    let cleaning_up = position(r#"phase="cleaning_up""#).expect("a cleaning_up phase");
    let closed = position("database pool closed").expect("the hook's `database pool closed` event");
    assert!(
        cleaning_up < closed,
        "the pool closed before the drain ended\n{}",
        tail(&log, 20)
    );
    assert_eq!(
        field(&log[closed], "connections"),
        Some("0"),
        "{}",
        tail(&log, 40)
    );
    let hook = log
        .iter()
        .find(|line| line.contains("hook finished") && line.contains("close database pool"))
        .unwrap_or_else(|| panic!("the hook did not finish cleanly\n{}", tail(&log, 20)));
    let summary = log
        .iter()
        .find(|line| line.contains("shutdown complete"))
        .expect("shutdown complete");
    assert_eq!(field(summary, "requests_drained"), Some("1"), "{summary}");
    assert_eq!(field(summary, "requests_cut"), Some("0"), "{summary}");

    // PostgreSQL's side: no connection of the example is left, and each one ended with
    // the client's Terminate. A process that exits with its pool open closes the sockets
    // under its sessions instead, and PostgreSQL counts them as abandoned.
    let deadline = Instant::now() + Duration::from_secs(5);
    while example_sessions(&postgres).await.0 != 0 {
        assert!(Instant::now() < deadline, "the example's connections outlived it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A backend leaves pg_stat_activity a moment before it records how its session
    // ended; give that moment before reading the counts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        unclean_session_ends(&postgres).await,
        before,
        "(abandoned, fatal) sessions: a connection was not closed by the pool\n{}",
        tail(&log, 20)
    );

    // The write committed.
    let mut observer = connect(&postgres, DATABASE).await;
    let body: String = sqlx::query_scalar("SELECT body FROM notes WHERE id = $1")
        .bind(id)
        .fetch_one(&mut observer)
        .await
        .expect("the row written during the shutdown");
    close(observer).await;
    assert_eq!(body, "written at shutdown");

    figures(format!(
        "postgres scenario=sigterm connections_at_sigterm={in_flight} exit_after_sigterm_ms={} \
         hook_elapsed_ms={}",
        exited_after.as_millis(),
        field(hook, "elapsed_ms").unwrap_or("?")
    ));
}
