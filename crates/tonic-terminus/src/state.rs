//! [`HealthState`]: what every clone of the health service and every `Watch` share,
//! and how a service name's status is read from the phase and the registry.
//!
//! Every answer is a probe of the `Terminus`'s registry (the result cached for the
//! check's TTL, one run shared by concurrent callers, each check bounded by its
//! timeout), so a flood of `Check` calls costs the dependencies no more than one run
//! per cache period, exactly as a flood of `/readyz` requests does. The phase is read
//! before and after the probe: from Draining on every known service is `NOT_SERVING`,
//! as grpc-go's `Shutdown()` sets it, even if a check was still running when the
//! shutdown began.

use std::collections::HashMap;
use std::time::Duration;

use terminus_core::health::ProbeRequest;
use terminus_core::server::ServerExt;
use terminus_core::{Phase, Terminus};
use tonic_health::pb::health_check_response::ServingStatus;

/// The health service's state, built once by the builder and shared (behind an `Arc`)
/// by the service's clones and its watchers.
pub(crate) struct HealthState {
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

impl HealthState {
    /// The status of `target` now.
    pub(crate) async fn status(&self, target: &Target) -> ServingStatus {
        let state = self.terminus.lifecycle_state();
        if state.phase.is_shutting_down() {
            return ServingStatus::NotServing;
        }
        let report = match target {
            Target::Probe(request) => self.terminus.probe(request).await,
            Target::Checks(request) => {
                // A `checks` probe leaves startup and fatal errors aside: a named
                // service is not serving before (or after) the server is.
                if state.phase != Phase::Serving || state.fatal || state.maintenance {
                    return ServingStatus::NotServing;
                }
                self.terminus.probe(request).await
            }
        };
        // The checks may have run across the start of a shutdown.
        if report.passed() && !self.terminus.phase().is_shutting_down() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }
}
