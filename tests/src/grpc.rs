//! gRPC clients for the end-to-end tests: tonic channels to the example server
//! (`grpc-server`), its greeter, and `grpc.health.v1`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use grpc::proto::greeter_client::GreeterClient;
use tonic::transport::{Channel, Endpoint};
use tonic_terminus::pb::health_check_response::ServingStatus;
use tonic_terminus::pb::health_client::HealthClient;
use tonic_terminus::pb::HealthCheckRequest;

use crate::grpc_load::{never_sent, refused_unprocessed};

/// The path of the `grpc-server` binary (the gRPC example plus a counting check).
#[macro_export]
macro_rules! grpc_server {
    () => {
        env!("CARGO_BIN_EXE_grpc-server")
    };
}

/// An endpoint for `addr` (h2c, prior knowledge), with a connect timeout so that a
/// refused or stalled connection shows as an error instead of a hang.
pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(5))
}

/// A channel to `addr` that connects on first use and reconnects after GOAWAY.
pub fn channel(addr: SocketAddr) -> Channel {
    endpoint(addr).connect_lazy()
}

/// The greeter's client on `channel`.
pub fn greeter(channel: &Channel) -> GreeterClient<Channel> {
    GreeterClient::new(channel.clone())
}

/// The health client on `channel`.
pub fn health(channel: &Channel) -> HealthClient<Channel> {
    HealthClient::new(channel.clone())
}

/// `grpc.health.v1.Health/Check` for `service`. A call that raced the server's GOAWAY
/// and never reached it ([`never_sent`], [`refused_unprocessed`]) is sent again, at
/// most 5 times, as `docs/grpc.md` tells clients to: the answer returned is the
/// server's first.
pub async fn check(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut retries = 0;
    loop {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        match health(channel).check(request).await {
            Ok(response) => return Ok(response.into_inner().status()),
            Err(status) if retries < 5 && (never_sent(&status) || refused_unprocessed(&status)) => {
                retries += 1;
                eprintln!("check({service:?}) sent again, it never reached the server: {status}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => return Err(status),
        }
    }
}

/// Polls `Check(service)` until it answers `status`, at most `timeout`.
pub async fn wait_for_check(
    channel: &Channel,
    service: &str,
    status: ServingStatus,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check(channel, service).await.ok() == Some(status) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
