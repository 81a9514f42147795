//! The quickstart application with many health checks, for the probe-size tests
//! (`tests/tests/kubelet.rs`): the kubelet reads at most 10 KiB of a probe's body.
//!
//! - `MANY_CHECKS=N` (default 100) readiness checks, named like real dependencies
//!   (`postgres-replica-007`, `payments-api-042`, ...), plus N/10 liveness and N/20
//!   startup checks;
//! - `MANY_CHECKS_FAILING=K` (default 0): the first K readiness checks fail, with a
//!   message as long as a real connection error;
//! - each passing check returns a little `info` (`{"latency_ms": ...}`), as checks that
//!   report what they saw do.
//!
//! A probe-only admin listener (failure reasons exposed) is bound first and printed as
//! `admin probes on http://ADDR`; then `many-checks-server listening on http://ADDR`.
//! `HOST`, `PORT` and the `TERMINUS_*` variables work as in the quickstart.

use std::process::ExitCode;

use axum_terminus::health::{Check, CheckError};
use axum_terminus::{Layer, Server, Terminus, TerminusLayer};

/// What real dependency checks are called.
const KINDS: [&str; 6] = [
    "postgres-replica",
    "redis-session-cache",
    "kafka-broker",
    "payments-api",
    "object-store",
    "feature-flags",
];

#[tokio::main]
async fn main() -> ExitCode {
    terminus_tests::init_tracing();
    match run().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("many-checks-server: {error}");
            ExitCode::FAILURE
        }
    }
}

fn number(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("{name}: `{value}` is not a number")),
        Err(_) => Ok(default),
    }
}

fn check(name: String, index: usize, failing: bool) -> Check {
    Check::new(name, move |_| async move {
        if failing {
            return Err(CheckError::new(format!(
                "error connecting to 10.12.{}.{}:5432: connection refused (os error 111)",
                index / 250,
                index % 250
            )));
        }
        Ok(Some(serde_json::json!({ "latency_ms": index % 17 })))
    })
}

async fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let checks = number("MANY_CHECKS", 100)?;
    let failing = number("MANY_CHECKS_FAILING", 0)?;
    let mut builder = Terminus::builder();
    for index in 0..checks {
        let name = format!("{}-{index:03}", KINDS[index % KINDS.len()]);
        builder = builder.readiness(check(name, index, index < failing));
    }
    for index in 0..checks / 10 {
        builder = builder.liveness(check(format!("worker-pool-{index:02}"), index, false));
    }
    for index in 0..checks / 20 {
        builder = builder.startup(check(format!("schema-migration-{index:02}"), index, false));
    }
    let terminus = builder.from_env()?.build()?;

    let admin = axum_terminus::bind("127.0.0.1:0", &terminus).await?;
    println!("admin probes on http://{}", admin.local_addr()?);
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "0".to_owned());
    let public = axum_terminus::bind(format!("{host}:{port}"), &terminus).await?;
    println!("many-checks-server listening on http://{}", public.local_addr()?);

    let app = TerminusLayer::new(&terminus).layer(quickstart::router().with_state(()));
    let outcome = Server::new(&terminus)
        .listener(public, app)
        .admin_listener(admin)
        .run()
        .await;
    Ok(outcome.exit_code())
}
