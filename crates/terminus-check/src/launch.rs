//! What starting a balancer (HAProxy, nginx) needs whichever it is: the servers it is
//! put in front of ([`ServerSlot`]), why it failed ([`LaunchError`]), and the wait for
//! its ports. `haproxy`, `nginx` and `balancer` all use this module; it uses none of
//! them.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// One server behind the balancer: a `server` line of HAProxy's backend or of nginx's
/// upstream.
#[derive(Clone, Debug)]
pub struct ServerSlot {
    /// The server's name in HAProxy (`a1`, ...); nginx names servers by address.
    pub name: String,
    /// The loopback port the balancer sends its requests (and HAProxy its checks) to.
    pub port: u16,
}

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
