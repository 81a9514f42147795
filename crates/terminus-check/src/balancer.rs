//! The balancer in front of the instances: HAProxy or nginx, one interface.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::haproxy::{self, Check, Haproxy, ServerSlot};
use crate::nginx::Nginx;

/// Why a balancer could not be started or reconfigured.
#[derive(Debug)]
pub struct LaunchError(String);

impl LaunchError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> LaunchError {
        LaunchError(message.into())
    }
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LaunchError {}

/// Waits until every one of `addrs` (the balancer's `ports`, as its errors name them)
/// accepts connections, for the balancer `name` just started as `child`: an error,
/// with what it wrote to `log_file`, if it exits first or takes longer than `within`.
/// Blocking: called at start-up, off any runtime.
pub(crate) fn wait_until_listening(
    (name, ports): (&str, &str),
    child: &mut std::process::Child,
    addrs: &[SocketAddr],
    within: Duration,
    log_file: &std::path::Path,
) -> Result<(), LaunchError> {
    let log = || std::fs::read_to_string(log_file).unwrap_or_default();
    let deadline = std::time::Instant::now() + within;
    while addrs
        .iter()
        .any(|addr| std::net::TcpStream::connect(addr).is_err())
    {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(LaunchError::new(format!(
                "{name} exited at startup: {status}\n{}",
                log()
            )));
        }
        if std::time::Instant::now() >= deadline {
            return Err(LaunchError::new(format!(
                "{name} did not open its {ports} within {within:?}\n{}",
                log()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

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
    /// Starts `kind` in front of `servers`; HAProxy checks them with `check`.
    pub fn start(kind: Kind, servers: &[ServerSlot], check: &Check) -> Result<Balancer, LaunchError> {
        match kind {
            Kind::Haproxy => Haproxy::try_start(servers, check).map(Balancer::Haproxy),
            Kind::Nginx => Nginx::try_start(servers).map(Balancer::Nginx),
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
