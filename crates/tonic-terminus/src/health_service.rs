//! [`HealthService`]: `grpc.health.v1.Health` answered from the health registry and the
//! lifecycle.
//!
//! How a name's status is read is in `state.rs`; the constructors, [`HealthService::new`]
//! and [`HealthService::builder`], are with the builder in `builder.rs`.

use std::fmt;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::state::HealthState;
use crate::watch::{watch_stream, WatchStream};

/// `grpc.health.v1.Health` for a server under a [`Terminus`](terminus_core::Terminus):
/// `Check` and `Watch` answered from its health registry and its phase.
///
/// - `""` (the server as a whole) is the readiness probe: `SERVING` while Serving and
///   every critical readiness check passes, as `/readyz` answers;
/// - a service mapped with
///   [`HealthServiceBuilder::service`](crate::HealthServiceBuilder::service) follows
///   the checks named for it, and one mapped with
///   [`HealthServiceBuilder::probe_service`](crate::HealthServiceBuilder::probe_service)
///   a whole probe;
/// - from Draining on, every known service is `NOT_SERVING`;
/// - an unknown name gets `NOT_FOUND` from `Check`, and `SERVICE_UNKNOWN` from `Watch`,
///   as the protocol says;
/// - `Watch` sends the current status, then each change, and at Draining sends
///   `NOT_SERVING` and ends, so that no watcher holds the drain.
///
/// ```
/// use terminus_core::Terminus;
/// use tonic_terminus::HealthService;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder().from_env()?.build()?;
/// let routes = tonic::service::Routes::new(HealthService::new(&terminus).into_server());
/// # let _ = routes; Ok(()) }
/// ```
#[derive(Clone)]
pub struct HealthService {
    pub(crate) state: Arc<HealthState>,
}

impl HealthService {
    /// The tonic service, for `Routes::add_service` or `Server::add_service`.
    pub fn into_server(self) -> HealthServer<HealthService> {
        HealthServer::new(self)
    }

    /// The status of `service` now, or `None` if the name is not known: what `Check`
    /// answers, for code that wants it without a gRPC call.
    ///
    /// # Cancel safety
    ///
    /// Only waits: dropped, the checks it started finish on their own tasks and fill the
    /// cache, as for [`Terminus::probe`](terminus_core::Terminus::probe).
    pub async fn status(&self, service: &str) -> Option<ServingStatus> {
        let target = self.state.services.get(service)?;
        Some(self.state.status(target).await)
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.status(&service).await {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status.into(),
            })),
            None => Err(Status::not_found(format!("unknown service `{service}`"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        Ok(Response::new(watch_stream(Arc::clone(&self.state), service)))
    }
}

impl fmt::Debug for HealthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut services: Vec<&str> = self.state.services.keys().map(String::as_str).collect();
        services.sort_unstable();
        f.debug_struct("HealthService")
            .field("services", &services)
            .field("watch_interval", &self.state.watch_interval)
            .finish_non_exhaustive()
    }
}
