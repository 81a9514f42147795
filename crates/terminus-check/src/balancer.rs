//! The balancer in front of the instances: HAProxy or nginx, one interface.

use std::net::SocketAddr;
use std::time::Duration;

use crate::haproxy::{self, Check, Haproxy};
pub use crate::launch::{LaunchError, ServerSlot, Upstream};
use crate::nginx::Nginx;

/// Which balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// HAProxy: active health checks of the readiness path, every second, down after one
    /// failure.
    Haproxy,
    /// nginx: passive health, the upstream rewritten from readiness as an ingress
    /// controller does.
    Nginx,
}

impl Kind {
    /// `haproxy` or `nginx`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
        }
    }

    /// Whether it is installed, and how to install it if not.
    pub fn check_installed(self) -> Result<(), LaunchError> {
        match self {
            Kind::Haproxy if !haproxy::available() => Err(LaunchError::new(haproxy::INSTALL_HINT)),
            Kind::Nginx if !crate::nginx::available() => Err(LaunchError::new(crate::nginx::INSTALL_HINT)),
            _ => Ok(()),
        }
    }
}

/// A running balancer.
pub enum Balancer {
    /// HAProxy, which checks readiness itself.
    Haproxy(Haproxy),
    /// nginx, told which servers are ready ([`Balancer::set_ready`]).
    Nginx(Nginx),
}

impl Balancer {
    /// Starts `kind` in front of `servers`, keeping its connections to them as `upstream`
    /// says; HAProxy checks them with `check`.
    pub fn start(
        kind: Kind,
        servers: &[ServerSlot],
        check: &Check,
        upstream: Upstream,
    ) -> Result<Balancer, LaunchError> {
        match kind {
            Kind::Haproxy => Haproxy::try_start(servers, check, upstream).map(Balancer::Haproxy),
            Kind::Nginx => Nginx::try_start(servers, upstream).map(Balancer::Nginx),
        }
    }

    /// The HTTP/1.1 address.
    pub fn h1(&self) -> SocketAddr {
        match self {
            Balancer::Haproxy(haproxy) => haproxy.h1,
            Balancer::Nginx(nginx) => nginx.h1,
        }
    }

    /// The HTTP/2 (prior knowledge) address.
    pub fn h2(&self) -> SocketAddr {
        match self {
            Balancer::Haproxy(haproxy) => haproxy.h2,
            Balancer::Nginx(nginx) => nginx.h2,
        }
    }

    /// HAProxy's statistics address (nginx has none here).
    pub fn stats(&self) -> Option<SocketAddr> {
        match self {
            Balancer::Haproxy(haproxy) => Some(haproxy.stats),
            Balancer::Nginx(_) => None,
        }
    }

    /// Whether the caller must tell it which servers are ready ([`set_ready`](Balancer::set_ready)).
    pub fn needs_readiness(&self) -> bool {
        matches!(self, Balancer::Nginx(_))
    }

    /// Tells nginx which servers pass readiness (HAProxy checks by itself: nothing to do).
    pub fn set_ready(&mut self, ready: &[bool]) -> Result<(), LaunchError> {
        match self {
            Balancer::Haproxy(_) => Ok(()),
            Balancer::Nginx(nginx) => nginx.set_ready(ready),
        }
    }

    /// The longest a balancer takes to stop routing to a server whose readiness fails:
    /// HAProxy's check interval × fall count plus the check's timeout; for nginx, the
    /// readiness period of the caller ([`READINESS_PERIOD`]) plus the reload.
    pub fn detection(&self) -> Duration {
        match self {
            Balancer::Haproxy(_) => haproxy::CHECK_INTERVAL * haproxy::FALL + Duration::from_millis(500),
            Balancer::Nginx(_) => READINESS_PERIOD + Duration::from_millis(200),
        }
    }

    /// What the balancer logged.
    pub fn log(&self) -> String {
        match self {
            Balancer::Haproxy(haproxy) => haproxy.log(),
            Balancer::Nginx(nginx) => nginx.log(),
        }
    }
}

/// How often readiness is probed for nginx, as a kubelet's `periodSeconds: 1` would.
pub const READINESS_PERIOD: Duration = Duration::from_secs(1);
