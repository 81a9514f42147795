//! [`HealthServiceBuilder`]: which gRPC service names the health service knows, and
//! what each one reports; and the two ways to a [`HealthService`],
//! [`HealthService::new`] and [`HealthService::builder`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use terminus_core::health::{CheckKind, ProbeRequest};
use terminus_core::{ConfigError, Terminus};

use crate::health_service::HealthService;
use crate::state::{HealthState, Target};

/// Default [`HealthServiceBuilder::watch_interval`]: the registry's default cache TTL, so a
/// `Watch` sees each fresh result and never runs a check more often than probes do.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);

impl HealthService {
    /// A builder, to map service names to checks or probes.
    pub fn builder(terminus: &Terminus) -> HealthServiceBuilder {
        HealthServiceBuilder::new(terminus)
    }

    /// The service with only `""` (the server's readiness) known.
    pub fn new(terminus: &Terminus) -> HealthService {
        HealthService {
            state: Arc::new(HealthState {
                terminus: terminus.clone(),
                services: HashMap::from([(String::new(), readiness())]),
                watch_interval: DEFAULT_WATCH_INTERVAL,
            }),
        }
    }
}

/// What `""`, the server as a whole, reports.
fn readiness() -> Target {
    Target::Probe(ProbeRequest::kind(CheckKind::Readiness))
}

/// Builds a [`HealthService`]: the empty name (`""`, the server as a whole) is always
/// known and reports readiness; every other name is unknown until mapped here.
///
/// ```
/// use terminus_core::health::{checks, CheckKind};
/// use terminus_core::Terminus;
/// use tonic_terminus::HealthService;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder()
///     .readiness(checks::tcp("db", "127.0.0.1:5432"))
///     .build()?;
/// let health = HealthService::builder(&terminus)
///     // SERVING while the server serves and the `db` check passes.
///     .service("shop.Orders", ["db"])
///     // Kubernetes: `livenessProbe: grpc: {port: 50051, service: liveness}`.
///     .probe_service("liveness", CheckKind::Liveness)
///     .build()?
///     .into_server();
/// # let _ = health; Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct HealthServiceBuilder {
    terminus: Terminus,
    services: Vec<(String, Mapping)>,
    watch_interval: Duration,
}

#[derive(Debug)]
enum Mapping {
    Checks(Vec<String>),
    Probe(CheckKind),
}

impl HealthServiceBuilder {
    fn new(terminus: &Terminus) -> HealthServiceBuilder {
        HealthServiceBuilder {
            terminus: terminus.clone(),
            services: Vec::new(),
            watch_interval: DEFAULT_WATCH_INTERVAL,
        }
    }

    /// Maps the gRPC service `name` (`package.Service`, as clients and the kubelet ask
    /// for it) to the registered checks `checks`, whatever their kinds. The service is
    /// `SERVING` while the server is Serving (startup done, no fatal error, not
    /// shutting down) and every critical check of the list passes (a failing
    /// non-critical one is reported to HTTP probes as a warning and still serves). With
    /// no checks, it follows the server's lifecycle alone.
    ///
    /// Checks are named, not passed: they are registered once on the `Terminus` and
    /// shared, with their cache, single flight and timeouts, by the HTTP probes and
    /// every service that names them. [`build`](HealthServiceBuilder::build) fails on a
    /// name that is not registered.
    pub fn service<I, S>(mut self, name: impl Into<String>, checks: I) -> HealthServiceBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let checks = checks.into_iter().map(Into::into).collect();
        self.services.push((name.into(), Mapping::Checks(checks)));
        self
    }

    /// Maps the gRPC service `name` to a whole probe, with that probe's lifecycle rules
    /// and every check of its kind, as `/livez`, `/readyz` and `/startupz` answer: a
    /// Kubernetes `grpc:` probe names the service it asks for, so
    /// `probe_service("liveness", CheckKind::Liveness)` lets one port answer
    /// `livenessProbe: grpc: {service: liveness}` with liveness while `service: ""`
    /// answers readiness. Like every service, it is `NOT_SERVING` from Draining on
    /// (the kubelet stops liveness probes once a pod is being deleted).
    pub fn probe_service(mut self, name: impl Into<String>, kind: CheckKind) -> HealthServiceBuilder {
        self.services.push((name.into(), Mapping::Probe(kind)));
        self
    }

    /// How often an open `Watch` asks the registry for its service's status (the
    /// answer comes from the cache while it is fresh, so watchers never run a check
    /// more often than its cache TTL allows). Phase changes are seen at once,
    /// whatever the interval. Default: [`DEFAULT_WATCH_INTERVAL`].
    pub fn watch_interval(mut self, interval: Duration) -> HealthServiceBuilder {
        self.watch_interval = interval;
        self
    }

    /// The service; [`HealthService::into_server`] makes it ready for tonic's
    /// `Routes::add_service` or `Server::add_service`. An invalid mapping is an error naming the field: `service` for a name mapped
    /// twice or the empty name (it is always the server's readiness), `service.checks`
    /// for a check the `Terminus` does not have, `watch_interval` for zero.
    pub fn build(self) -> Result<HealthService, ConfigError> {
        if self.watch_interval.is_zero() {
            return Err(ConfigError::new("watch_interval", "must be greater than zero"));
        }
        let mut services = HashMap::with_capacity(self.services.len() + 1);
        services.insert(String::new(), readiness());
        for (name, mapping) in self.services {
            let target = match mapping {
                Mapping::Probe(kind) => Target::Probe(ProbeRequest::kind(kind)),
                Mapping::Checks(checks) => {
                    if let Some(unknown) = checks
                        .iter()
                        .find(|check| !self.terminus.health().contains(check))
                    {
                        return Err(ConfigError::new(
                            "service.checks",
                            format!("service `{name}` names the check `{unknown}`, which is not registered"),
                        ));
                    }
                    Target::Checks(ProbeRequest::checks(checks))
                }
            };
            if name.is_empty() {
                return Err(ConfigError::new(
                    "service",
                    "the empty service name is the server's readiness and cannot be mapped",
                ));
            }
            if services.contains_key(&name) {
                return Err(ConfigError::new(
                    "service",
                    format!("service `{name}` is mapped twice"),
                ));
            }
            services.insert(name, target);
        }
        Ok(HealthService {
            state: Arc::new(HealthState {
                terminus: self.terminus,
                services,
                watch_interval: self.watch_interval,
            }),
        })
    }
}
