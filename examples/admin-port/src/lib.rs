//! Two listeners under one controller: the public port serves the application (its
//! probes withhold failure reasons), the admin port serves the probes (with reasons),
//! the preStop hook `GET /prestop`, and, with the `metrics` feature (on by default),
//! the lifecycle's metrics as `GET /metrics` in Prometheus text. Readiness waits for
//! both listeners to be bound, Closing closes both, and the process has one outcome.
//!
//! Public: `GET /` (`hello`), `GET /slow?ms=N`. Admin: `/livez`, `/readyz`,
//! `/startupz`, `GET /prestop`, `GET /metrics`, everything else `404`. Settings come
//! from the environment: `HOST` (default `127.0.0.1`), `PORT` (default `3000`),
//! `ADMIN_PORT` (default `9000`; `0` picks a free one for either) and the `TERMINUS_*`
//! variables.
#![warn(missing_docs)]

use std::process::ExitCode;
use std::time::Duration;

use axum::extract::Query;
use axum::routing::get;
use axum::Router;
use axum_terminus::{Builder, Layer, Server, TerminusLayer};
use serde::Deserialize;

/// The public routes, without the terminus layer.
pub fn public_router() -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/slow", get(slow))
}

#[derive(Deserialize)]
struct Millis {
    ms: Option<u64>,
}

async fn slow(Query(query): Query<Millis>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(query.ms.unwrap_or(1000))).await;
    "slow"
}

fn port(variable: &str, default: u16) -> Result<u16, String> {
    match std::env::var(variable) {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("{variable}: `{port}` is not a port number")),
        Err(_) => Ok(default),
    }
}

/// Configures the `Terminus` from `builder` and the environment, binds both ports,
/// prints `admin probes on http://ADMIN` then `admin-port listening on http://PUBLIC`,
/// serves until shut down, and returns the exit code of the outcome. With the
/// `metrics` feature it first installs the process's Prometheus recorder (global, so
/// once per process).
pub async fn run(builder: Builder) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let (public_port, admin_port) = (port("PORT", 3000)?, port("ADMIN_PORT", 9000)?);
    // Before the Terminus is built: it takes its request gauge from the recorder then.
    #[cfg(feature = "metrics")]
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let terminus = builder.from_env()?.build()?;

    let public = axum_terminus::bind(format!("{host}:{public_port}"), &terminus).await?;
    let admin = axum_terminus::bind(format!("{host}:{admin_port}"), &terminus).await?;
    let server = Server::new(&terminus);
    // The admin address first: whoever waits for the `listening` line then has both.
    println!("admin probes on http://{}", admin.local_addr()?);
    println!("admin-port listening on http://{}", public.local_addr()?);
    let server = server.listener(public, TerminusLayer::new(&terminus).layer(public_router()));
    #[cfg(feature = "metrics")]
    // The admin router plus `/metrics`; like `admin_listener`, outside
    // TERMINUS_MAX_CONNECTIONS, so a full public port leaves the probes answerable.
    let server = server.admin_listener_with(admin, admin_router_with_metrics(&terminus, prometheus));
    #[cfg(not(feature = "metrics"))]
    let server = server.admin_listener(admin);
    let outcome = server.run().await;
    Ok(outcome.exit_code())
}

/// What `Server::admin_listener` serves (probes with reasons, `GET /prestop`), plus
/// `GET /metrics`.
#[cfg(feature = "metrics")]
fn admin_router_with_metrics(
    terminus: &axum_terminus::Terminus,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
) -> Router {
    use axum_terminus::{admin_layer, admin_router};

    let metrics = get(move || {
        let prometheus = prometheus.clone();
        async move {
            // Without the exporter's own HTTP listener nothing else drains the
            // histograms' buffers: do it on each scrape.
            prometheus.run_upkeep();
            prometheus.render()
        }
    });
    // Added after the probe layer: `/metrics` is not a probe, and a scraper's keep-alive
    // connection needs no `Connection: close` while draining (the admin port is not
    // behind the balancer; Closing closes the connection once it is idle).
    admin_router(admin_layer(terminus)).route("/metrics", metrics)
}
