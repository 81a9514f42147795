//! [`HealthService`]: `grpc.health.v1.Health` answered from the health registry and the
//! lifecycle.
//!
//! Every answer is a probe of the `Terminus`'s registry (the result cached for the
//! check's TTL, one run shared by concurrent callers, each check bounded by its
//! timeout), so a flood of `Check` calls costs the dependencies no more than one run
//! per cache period, exactly as a flood of `/readyz` requests does. The phase is read
//! before and after the probe: from Draining on every known service is `NOT_SERVING`,
//! as grpc-go's `Shutdown()` sets it, even if a check was still running when the
//! shutdown began.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use terminus_core::health::{ProbeRequest, Report};
use terminus_core::server::ServerExt;
use terminus_core::{Phase, Terminus};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::builder::HealthServiceBuilder;
use crate::watch::{watch_stream, WatchStream};

/// `grpc.health.v1.Health` for a server under a [`Terminus`]: `Check` and `Watch`
/// answered from its health registry and its phase.
///
/// - `""` (the server as a whole) is the readiness probe: `SERVING` while Serving and
///   every critical readiness check passes, as `/readyz` answers;
/// - a service mapped with [`HealthServiceBuilder::service`] follows the checks named
///   for it, and one mapped with [`HealthServiceBuilder::probe_service`] a whole probe;
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
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) terminus: Terminus,
    /// Every known service name, the empty one included.
    pub(crate) services: HashMap<String, Target>,
    pub(crate) watch_interval: Duration,
}

/// What a service name reports.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A whole probe, with its kind's lifecycle rules (`""` is readiness).
    Probe(ProbeRequest),
    /// Named checks, on top of the server's being Serving.
    Checks(ProbeRequest),
}

impl HealthService {
    /// A builder, to map service names to checks or probes.
    pub fn builder(terminus: &Terminus) -> HealthServiceBuilder {
        HealthServiceBuilder::new(terminus)
    }

    /// The service with only `""` (the server's readiness) known.
    pub fn new(terminus: &Terminus) -> HealthService {
        HealthService {
            shared: Arc::new(Shared {
                terminus: terminus.clone(),
                services: HashMap::from([(
                    String::new(),
                    Target::Probe(ProbeRequest::kind(terminus_core::CheckKind::Readiness)),
                )]),
                watch_interval: crate::builder::DEFAULT_WATCH_INTERVAL,
            }),
        }
    }

    /// The tonic service, for `Routes::add_service` or `Server::add_service`.
    pub fn into_server(self) -> HealthServer<HealthService> {
        HealthServer::new(self)
    }

    /// The status of `service` now, or `None` if the name is not known: what `Check`
    /// answers, for code that wants it without a gRPC call.
    pub async fn status(&self, service: &str) -> Option<ServingStatus> {
        let target = self.shared.services.get(service)?;
        Some(self.shared.status(target).await)
    }
}

impl Shared {
    pub(crate) async fn status(&self, target: &Target) -> ServingStatus {
        let state = self.terminus.lifecycle_state();
        if state.phase.is_shutting_down() {
            return ServingStatus::NotServing;
        }
        let report = match target {
            Target::Probe(request) => self.probe(request).await,
            Target::Checks(request) => {
                // A `checks` probe leaves startup and fatal errors aside: a named
                // service is not serving before (or after) the server is.
                if state.phase != Phase::Serving || state.fatal || state.maintenance {
                    return ServingStatus::NotServing;
                }
                self.probe(request).await
            }
        };
        // The checks may have run across the start of a shutdown.
        if report.passed() && !self.terminus.phase().is_shutting_down() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }

    async fn probe(&self, request: &ProbeRequest) -> Report {
        match self.terminus.cached_probe(request) {
            Some(report) => report,
            None => self.terminus.probe(request).await,
        }
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
        Ok(Response::new(watch_stream(Arc::clone(&self.shared), service)))
    }
}

impl fmt::Debug for HealthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut services: Vec<&str> = self.shared.services.keys().map(String::as_str).collect();
        services.sort_unstable();
        f.debug_struct("HealthService")
            .field("services", &services)
            .field("watch_interval", &self.shared.watch_interval)
            .finish_non_exhaustive()
    }
}
