//! The gRPC example: a tonic greeter with `grpc.health.v1` and graceful shutdown.
//!
//! `main.rs` runs it; the end-to-end tests run the same code through [`run`] with a few
//! extra checks. Its `.proto` is `proto/greeter.proto`. Settings come from the
//! environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HOST` | `127.0.0.1` | address to listen on |
//! | `PORT` | `50051` | port (`0` picks a free one) |
//! | `GRPC_DEPENDS_ON` | unset | `host:port` of a dependency: a TCP readiness check, `depends-on`, that `greeter.Greeter`'s health follows |
//! | `TERMINUS_DRAIN_DELAY` | `5s` in Kubernetes, else `0s` | how long health says `NOT_SERVING` before the listener closes |
//! | `TERMINUS_DRAIN_TIMEOUT` | `20s` | how long RPCs in flight may take to finish |
//! | `TERMINUS_CLEANUP_TIMEOUT` | `3s` | the bound on each cleanup hook |
//! | `TERMINUS_HEADER_READ_TIMEOUT`, `TERMINUS_IDLE_CLOSE_TIMEOUT`, `TERMINUS_MAX_CONNECTIONS` | | as for `axum_terminus::Server::from_env` |
//!
//! The port speaks HTTP/2 only (gRPC's transport). Health services: `""` (readiness),
//! `greeter.Greeter` (the server's lifecycle and `depends-on` when set), `liveness` and
//! `startup` (those probes, for Kubernetes `grpc:` probes that name them). The HTTP probes
//! (`/livez`, `/readyz`, `/startupz`) answer on the same port, over HTTP/2.
#![warn(missing_docs)]

use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use axum_terminus::health::{checks, CheckKind};
use axum_terminus::{Builder, ConfigError, Layer, Server, Terminus, TerminusLayer};
use futures_core::Stream;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};
use tonic_terminus::{until_draining, HealthService};

/// The code tonic generates from `proto/greeter.proto`.
#[allow(missing_docs)]
pub mod proto {
    tonic::include_proto!("greeter");
}

use proto::greeter_server::{self, GreeterServer};
use proto::{HelloReply, HelloRequest, SlowHelloRequest, StreamHellosRequest};

/// The greeter's gRPC service name, as health clients ask for it.
pub const GREETER: &str = greeter_server::SERVICE_NAME;

/// The name of the readiness check `GRPC_DEPENDS_ON` adds.
pub const DEPENDS_ON_CHECK: &str = "depends-on";

/// The greeter; it holds the `Terminus` to end its streams at Draining.
#[derive(Clone, Debug)]
pub struct Greeter {
    terminus: Terminus,
}

impl Greeter {
    /// A greeter under `terminus`.
    pub fn new(terminus: &Terminus) -> Greeter {
        Greeter {
            terminus: terminus.clone(),
        }
    }
}

fn hello(name: &str) -> HelloReply {
    HelloReply {
        message: format!("hello {name}"),
    }
}

/// The response stream of `StreamHellos`.
pub type HelloStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send>>;

#[tonic::async_trait]
impl greeter_server::Greeter for Greeter {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        Ok(Response::new(hello(&request.into_inner().name)))
    }

    async fn say_hello_slowly(
        &self,
        request: Request<SlowHelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let request = request.into_inner();
        tokio::time::sleep(Duration::from_millis(request.ms)).await;
        Ok(Response::new(hello(&request.name)))
    }

    type StreamHellosStream = HelloStream;

    async fn stream_hellos(
        &self,
        request: Request<StreamHellosRequest>,
    ) -> Result<Response<HelloStream>, Status> {
        let request = request.into_inner();
        let interval = Duration::from_millis(match request.interval_ms {
            0 => 500,
            ms => ms,
        });
        let hellos = futures_util::stream::unfold(0u64, move |n| {
            let name = request.name.clone();
            async move {
                if n > 0 {
                    tokio::time::sleep(interval).await;
                }
                let reply = HelloReply {
                    message: format!("hello {name} #{n}"),
                };
                Some((Ok(reply), n + 1))
            }
        });
        // Endless until Draining, then UNAVAILABLE: the client calls again elsewhere.
        Ok(Response::new(Box::pin(until_draining(hellos, &self.terminus))))
    }

    async fn collect_hellos(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<HelloReply>, Status> {
        let mut names = Vec::new();
        let mut stream = request.into_inner();
        while let Some(message) = stream.message().await? {
            names.push(message.name);
        }
        Ok(Response::new(hello(&names.join(", "))))
    }
}

/// The health service: `""` is readiness, `greeter.Greeter` follows the server and the
/// `depends-on` check when `depends_on` is set, `liveness` and `startup` are the
/// liveness and startup probes (for Kubernetes `grpc:` probes that name them).
pub fn health(terminus: &Terminus, depends_on: bool) -> Result<HealthService, ConfigError> {
    let greeter_checks: &[&str] = if depends_on { &[DEPENDS_ON_CHECK] } else { &[] };
    HealthService::builder(terminus)
        .service(GREETER, greeter_checks.iter().copied())
        .probe_service("liveness", CheckKind::Liveness)
        .probe_service("startup", CheckKind::Startup)
        .build()
}

/// The tonic routes: the greeter and the health service.
pub fn routes(terminus: &Terminus, health: HealthService) -> Routes {
    Routes::new(GreeterServer::new(Greeter::new(terminus))).add_service(health.into_server())
}

/// Configures the controller from `builder` and the environment, binds `HOST:PORT`,
/// prints `grpc listening on http://ADDR` on stdout, serves until shut down, and
/// returns the exit code of the outcome.
pub async fn run(builder: Builder) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT: `{port}` is not a port number"))?,
        Err(_) => 50051,
    };
    // GRPC_DEPENDS_ON=host:port: stop that dependency and `greeter.Greeter` (and `""`)
    // turn NOT_SERVING within about a second (the check result is cached for 1 s).
    let depends_on = std::env::var("GRPC_DEPENDS_ON")
        .ok()
        .map(|address| address.trim().to_owned())
        .filter(|address| !address.is_empty());
    let builder = match &depends_on {
        Some(address) => builder.readiness(checks::tcp(DEPENDS_ON_CHECK, address.clone())),
        None => builder,
    };
    let terminus = builder.from_env()?.build()?;
    let health = health(&terminus, depends_on.is_some())?;
    // HTTP/2 only: gRPC's transport. TERMINUS_HEADER_READ_TIMEOUT, ... apply.
    let server = Server::new(&terminus).http2_only();

    // Outermost: the HTTP probes answer on the gRPC port, before the routes.
    let app = TerminusLayer::new(&terminus).layer(routes(&terminus, health));
    let listener = match axum_terminus::bind(format!("{host}:{port}"), &terminus).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "startup failed");
            return Err(error.into());
        }
    };
    println!("grpc listening on http://{}", listener.local_addr()?);
    let outcome = server.listener(listener, app).run().await;
    Ok(outcome.exit_code())
}

/// The gRPC guide's Rust examples, compiled as doc tests by this crate, which has tonic.
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../../../docs/grpc.md")]
    struct Grpc;
}
