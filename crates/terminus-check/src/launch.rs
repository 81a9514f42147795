//! What starting a balancer (HAProxy, nginx) needs whichever it is: the servers it is
//! put in front of ([`ServerSlot`]), how it keeps its connections to them
//! ([`Upstream`]), why it failed ([`LaunchError`]), the wait for its ports, and its stop. `haproxy`, `nginx` and `balancer` all use this module; it uses none of
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

/// How long a balancer keeps an idle keep-alive connection to a server.
///
/// By default, as long as the balancer's configuration says for itself: HAProxy shares
/// its idle server connections between clients (`http-reuse safe`) and closes the ones
/// past the estimated need every `pool-purge-delay`, whatever their age; nginx keeps
/// them 60 s. [`idle_timeout`](Upstream::idle_timeout) bounds them.
///
/// ```
/// use std::time::Duration;
/// use terminus_check::launch::Upstream;
///
/// // Idle server connections closed after 2.5 s, before a server's 3 s keep-alive timeout.
/// let upstream = Upstream::default().idle_timeout(Duration::from_millis(2500));
/// # let _ = upstream;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upstream {
    pub(crate) idle_timeout: Option<Duration>,
}

impl Upstream {
    /// Closes a connection to a server once it has been idle for `idle_timeout`.
    ///
    /// nginx: `keepalive_timeout` in the `upstream` block. HAProxy (2.6) has no idle
    /// timeout for the connections of its shared pool, so each server connection is kept
    /// private to its client's connection (`http-reuse never`) and closes with it, after
    /// `timeout http-keep-alive`: the clients' idle connections are closed after
    /// `idle_timeout` too.
    ///
    /// Below the servers' keep-alive timeout, the balancer always closes an idle
    /// connection first, and never sends a request on one the server is closing.
    pub fn idle_timeout(self, idle_timeout: Duration) -> Upstream {
        Upstream {
            idle_timeout: Some(idle_timeout),
        }
    }
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

/// Stops a balancer started as `child` (by its pid, never by name) and removes its
/// directory `dir`. With `terminate`, SIGTERM first, then SIGKILL if it is still running
/// after 3 s: nginx's master stops its workers on SIGTERM, and SIGKILL would orphan them.
/// Without, SIGKILL at once (HAProxy with `-db` is a single process).
pub(crate) fn stop(child: &mut std::process::Child, dir: &std::path::Path, terminate: bool) {
    if matches!(child.try_wait(), Ok(None)) {
        if terminate {
            let _ = crate::instance::send_signal(child.id(), "TERM");
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(dir);
}
