//! The servers under test: one app, served several ways.
//!
//! Every mode serves [`quickstart::router`] (`GET /`, `GET /slow?ms=N`, `GET /stream`)
//! on the same runtime with the same number of worker threads, with `TCP_NODELAY` set
//! on every accepted socket, and prints `listening on http://ADDR` on stdout once the
//! listener is bound. Only what a user would change to adopt terminus-rs differs.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use axum_terminus::TerminusService;
use axum_terminus::{Layer, Terminus, TerminusLayer};
use terminus_core::server::ServerExt;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The body our `/readyz` answers with when ready; `plain-probe` returns the same bytes.
pub const READY_BODY: &str = r#"{"status":"ok"}"#;

/// How the app is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `axum::serve(..).with_graceful_shutdown(SIGTERM)`: what a user runs without us.
    Bare,
    /// The app with [`TerminusLayer`], served by [`axum_terminus::serve`], `drain_delay` 0.
    Terminus,
    /// The app with [`TerminusLayer`], served by `axum::serve`: isolates the layer's cost
    /// from the accept loop's.
    Layer,
    /// The app without the layer, served by [`axum_terminus::serve`]: isolates the
    /// accept loop's cost from the layer's.
    Serve,
    /// `Bare` plus a plain `/readyz` route that returns [`READY_BODY`] with the probe's headers.
    PlainProbe,
    /// `Terminus` with the lifecycle metrics (feature `metrics` of this crate) recorded by
    /// a Prometheus recorder installed before the `Terminus` is built: what the metrics
    /// cost per request.
    TerminusMetrics,
}

impl Mode {
    /// Every mode, in the order the usage text lists them.
    pub const ALL: [Mode; 6] = [
        Mode::Bare,
        Mode::Terminus,
        Mode::Layer,
        Mode::Serve,
        Mode::PlainProbe,
        Mode::TerminusMetrics,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::Terminus => "terminus",
            Mode::Serve => "serve",
            Mode::Layer => "layer",
            Mode::PlainProbe => "plain-probe",
            Mode::TerminusMetrics => "terminus-metrics",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(name: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.name() == name)
            .ok_or_else(|| format!("unknown mode `{name}`"))
    }
}

/// Binds `127.0.0.1:0`, prints the address, and serves in `mode` until SIGTERM has been
/// handled. Returns once the server has stopped.
pub async fn run(mode: Mode) -> Result<(), Box<dyn std::error::Error>> {
    match mode {
        Mode::Bare => serve_bare(quickstart::router()).await,
        Mode::PlainProbe => serve_bare(quickstart::router().route("/readyz", get(plain_probe))).await,
        Mode::Layer => {
            let terminus = terminus_controller()?;
            // axum::serve does not tell the `Terminus`; readiness needs to know.
            terminus.mark_listeners_bound();
            serve_layered_bare(TerminusLayer::new(&terminus).layer(quickstart::router().with_state(()))).await
        }
        Mode::Serve => {
            let terminus = terminus_controller()?;
            serve_terminus(quickstart::router().with_state(()), &terminus).await
        }
        Mode::Terminus => {
            let terminus = terminus_controller()?;
            // Around the whole app, as the README shows: probes before routing.
            let app = TerminusLayer::new(&terminus).layer(quickstart::router().with_state(()));
            serve_terminus(app, &terminus).await
        }
        Mode::TerminusMetrics => serve_terminus_with_metrics().await,
    }
}

/// The `terminus` mode with a Prometheus recorder installed first, as an application
/// that serves `/metrics` does (the `admin-port` example).
#[cfg(feature = "metrics")]
async fn serve_terminus_with_metrics() -> Result<(), Box<dyn std::error::Error>> {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let terminus = terminus_controller()?;
    let app = TerminusLayer::new(&terminus).layer(quickstart::router().with_state(()));
    let served = serve_terminus(app, &terminus).await;
    // Rendered once, so the recorder is not optimised away as unused.
    drop(prometheus.render());
    served
}

#[cfg(not(feature = "metrics"))]
async fn serve_terminus_with_metrics() -> Result<(), Box<dyn std::error::Error>> {
    Err("terminus-metrics needs the `metrics` feature: \
         cargo build --release -p terminus-bench --features metrics --bin bench-server"
        .into())
}

/// [`axum_terminus::serve`] on `127.0.0.1:0`, until SIGTERM has been handled.
async fn serve_terminus<S, B>(app: S, terminus: &Terminus) -> Result<(), Box<dyn std::error::Error>>
where
    S: tower::Service<Request, Response = axum::http::Response<B>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum_terminus::BoxError>,
{
    let listener = axum_terminus::bind("127.0.0.1:0", terminus).await?;
    announce(&listener)?;
    // TERMINUS_HEADER_READ_TIMEOUT=0 turns the server's header timeout off, to measure it
    // (and BENCH_HYPER_HEADER_TIMEOUT, below, wants it off: see `terminus_controller`).
    let mut server = axum_terminus::Server::new(terminus);
    if std::env::var_os("BENCH_HYPER_HEADER_TIMEOUT").is_some() {
        // hyper's own header-read timeout instead: a timer armed for every request head.
        server
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
    }
    let outcome = server.listener(listener, app).run().await;
    if !outcome.is_graceful() {
        return Err(format!("shutdown was not graceful: {outcome:?}").into());
    }
    Ok(())
}

/// The `Terminus` the `terminus`, `serve` and `layer` modes use: no drain delay (the figure
/// measured is the library's own cost, not a configured wait) and the two readiness
/// checks of the probe benchmark.
fn terminus_controller() -> Result<Terminus, Box<dyn std::error::Error>> {
    let mut builder = Terminus::builder().drain_delay(Duration::ZERO);
    if std::env::var_os("BENCH_HYPER_HEADER_TIMEOUT").is_some() {
        // hyper's timer does the job instead (see `serve_terminus`).
        builder = builder.header_read_timeout(None);
    }
    // TERMINUS_HEADER_READ_TIMEOUT, ...
    Ok(crate::checks::with_readiness_checks(builder)
        .from_env()?
        .build()?)
}

async fn serve_bare(app: Router) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    announce(&listener)?;
    // axum_terminus::serve sets TCP_NODELAY; so does a careful user of axum::serve.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(sigterm())
        .await?;
    Ok(())
}

/// `axum::serve` for the app wrapped in the layer: the layer's cost alone. axum::serve
/// wants `Response<Body>` and a make-service, hence the two adapters.
async fn serve_layered_bare(app: TerminusService<Router>) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    announce(&listener)?;
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let app = ServiceExt::<Request>::map_response(app, IntoResponse::into_response);
    axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(app))
        .with_graceful_shutdown(sigterm())
        .await?;
    Ok(())
}

fn announce(listener: &TcpListener) -> std::io::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    stdout.flush()
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        // Without a handler SIGTERM kills the process, which the driver reports as a failure.
        Err(error) => {
            eprintln!("bench-server: cannot listen for SIGTERM: {error}");
            std::future::pending::<()>().await;
        }
    }
}

/// The same bytes and headers as the library's `/readyz` answer.
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
