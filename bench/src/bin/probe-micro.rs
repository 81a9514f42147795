//! `probe-micro [N] [RUNS]`: the cost of one `/readyz` through `TerminusLayer`, in process.
//!
//! No sockets and no HTTP parsing: each iteration sends `GET /readyz` through the service
//! with `oneshot` and collects the body, so the figure is the probe path alone, steady
//! enough to compare on a machine shared with other work (run it with `taskset -c 1`).
//! Two services answer: the quickstart-like app with [`TerminusLayer`] and the bench's
//! two cached readiness checks (as `bench-server terminus`), and the same app with a
//! plain axum route returning the same bytes and headers (as `bench-server plain-probe`).
//! Prints ns/op for both and their ratio for each run, then the median of the runs.
//! Defaults: N = 1,000,000 requests per run, RUNS = 5.

use std::process::ExitCode;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use axum_terminus::{Terminus, TerminusLayer};
use http_body_util::BodyExt;
use terminus_bench::checks::with_readiness_checks;
use terminus_bench::server::READY_BODY;
use terminus_core::server::ServerExt;
use tower::ServiceExt;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).map(|arg| arg.parse::<usize>());
    let (n, runs) = match (args.next(), args.next()) {
        (None, None) => (1_000_000, 5),
        (Some(Ok(n)), None) if n > 0 => (n, 5),
        (Some(Ok(n)), Some(Ok(runs))) if n > 0 && runs > 0 => (n, runs),
        _ => {
            eprintln!("usage: probe-micro [N] [RUNS]");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("probe-micro: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(measure(n, runs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("probe-micro: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn measure(n: usize, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let terminus = with_readiness_checks(Terminus::builder()).build()?;
    // No accept loop here: say the listeners are bound so that readiness can pass.
    terminus.mark_listeners_bound();
    let probe = app().layer(TerminusLayer::new(&terminus));
    let plain = app().route("/readyz", get(plain_probe));

    // Both must answer the same, or the comparison means nothing.
    let (probe_answer, plain_answer) = (once(&probe).await?, once(&plain).await?);
    if probe_answer != plain_answer {
        return Err(format!("the answers differ: {probe_answer:?} vs {plain_answer:?}").into());
    }

    let mut ratios = Vec::with_capacity(runs);
    let mut probe_ns = Vec::with_capacity(runs);
    let mut plain_ns = Vec::with_capacity(runs);
    for run in 1..=runs {
        let probe_op = time(&probe, n).await?;
        let plain_op = time(&plain, n).await?;
        println!(
            "run {run}: /readyz terminus {probe_op:.1} ns/op, plain route {plain_op:.1} ns/op, ratio {:.3}",
            probe_op / plain_op
        );
        probe_ns.push(probe_op);
        plain_ns.push(plain_op);
        ratios.push(probe_op / plain_op);
    }
    println!(
        "median of {runs} runs of {n}: terminus {:.1} ns/op, plain route {:.1} ns/op, ratio {:.3}",
        median(probe_ns),
        median(plain_ns),
        median(ratios)
    );
    Ok(())
}

fn app() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

/// The same bytes and headers as the layer's `/readyz` answer (bench-server's plain-probe).
async fn plain_probe() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        READY_BODY,
    )
}

type Answer = (StatusCode, Vec<(String, String)>, bytes::Bytes);

async fn once(app: &Router) -> Result<Answer, Box<dyn std::error::Error>> {
    let response = app.clone().oneshot(readyz()?).await?;
    let status = response.status();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    headers.sort();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, headers, body))
}

fn readyz() -> Result<Request<Body>, axum::http::Error> {
    Request::get("/readyz").body(Body::empty())
}

/// Nanoseconds per request over `n` requests.
async fn time(app: &Router, n: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        let response = app.clone().oneshot(readyz()?).await?;
        bytes += response.into_body().collect().await?.to_bytes().len();
    }
    let elapsed = started.elapsed();
    std::hint::black_box(bytes);
    Ok(elapsed.as_nanos() as f64 / n as f64)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
