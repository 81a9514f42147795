//! A real HAProxy in front of test backends, started as a child process on loopback.
//!
//! The configuration is the one a careful operator would write for a Kubernetes-style
//! rollout, with every safety net that could hide a lost request switched off:
//!
//! - health checks `GET /readyz` (or another [`Check`]) every second, one failure marks a
//!   server down and one success marks it up again (`inter 1s fall 1 rise 1`);
//! - keep-alive to the backends with connection reuse (`http-reuse safe`), or, with an
//!   [`Upstream::idle_timeout`], each server connection private to its client's and closed
//!   with it (`http-reuse never`, `timeout http-keep-alive`);
//! - `retries 0`, `retry-on none` and no `option redispatch`: a failure on the way to a
//!   backend reaches the client as a 503 or 502 instead of being retried elsewhere.
//!
//! HTTP/1.1 clients use one frontend; HTTP/2 clients (prior knowledge, `h2c`) another.
//! A third frontend serves HAProxy's statistics as CSV, which is how the tests see
//! which servers HAProxy considers up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::get;
pub use crate::launch::{LaunchError, ServerSlot, Upstream};
pub use crate::ports::free_port;

/// What to tell a user who has no HAProxy.
pub const INSTALL_HINT: &str =
    "HAProxy is not installed: `apt-get install haproxy` (Debian, Ubuntu; it goes to \
/usr/sbin, which may be off your PATH), `dnf install haproxy`, `brew install haproxy`";

/// How often HAProxy checks each server (`inter`).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How many failed checks mark a server down (`fall`).
pub const FALL: u32 = 1;

/// How long HAProxy may take to open its frontends.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running HAProxy. Killed (by pid) and its directory removed when dropped.
pub struct Haproxy {
    child: Child,
    dir: PathBuf,
    /// The HTTP/1.1 frontend.
    pub h1: SocketAddr,
    /// The HTTP/2 (h2c, prior knowledge) frontend.
    pub h2: SocketAddr,
    /// The statistics frontend.
    pub stats: SocketAddr,
}

/// The `haproxy` binary: on `PATH`, or where the distributions install it (`/usr/sbin`,
/// often off a user's `PATH`).
pub fn binary() -> Option<PathBuf> {
    crate::ports::find_program("haproxy")
}

/// `true` if HAProxy is installed (`.ci/run` installs the Debian package).
pub fn available() -> bool {
    binary().is_some()
}

/// How HAProxy decides that a server is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `GET path` answers 200 (`option httpchk`), as a readiness probe.
    Http(String),
    /// The port accepts a TCP connection.
    Tcp,
}

impl Default for Check {
    /// `GET /readyz`.
    fn default() -> Check {
        Check::Http("/readyz".to_owned())
    }
}

impl Haproxy {
    /// Writes the configuration for `servers` to a fresh directory and starts HAProxy
    /// in the foreground, checking `GET /readyz`; returns once its frontends accept
    /// connections.
    ///
    /// # Panics
    ///
    /// When HAProxy cannot be started: this is the tests' entry point; the tool calls
    /// [`try_start`](Haproxy::try_start).
    pub fn start(servers: &[ServerSlot]) -> Haproxy {
        Haproxy::try_start(servers, &Check::default(), Upstream::default())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`start`](Haproxy::start) with the servers' `check` and `upstream` keep-alive,
    /// returning why it failed.
    pub fn try_start(
        servers: &[ServerSlot],
        check: &Check,
        upstream: Upstream,
    ) -> Result<Haproxy, LaunchError> {
        Haproxy::launch(|h1, h2, stats| config(h1, h2, stats, servers, check, upstream))
    }

    /// HAProxy in front of gRPC backends (HTTP/2 only), with the same checks, retry and
    /// redispatch settings as [`start`](Haproxy::start); `h2` is the gRPC frontend. See
    /// `grpc_config` for the two modes.
    ///
    /// # Panics
    ///
    /// When HAProxy cannot be started (a test helper).
    pub fn start_grpc(servers: &[ServerSlot], mode: GrpcMode) -> Haproxy {
        Haproxy::launch(|h1, h2, stats| grpc_config(h1, h2, stats, servers, mode))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn launch(
        config: impl FnOnce(SocketAddr, SocketAddr, SocketAddr) -> String,
    ) -> Result<Haproxy, LaunchError> {
        let binary = binary().ok_or_else(|| LaunchError::new(INSTALL_HINT))?;
        let fail = |what: &str, error: std::io::Error| LaunchError::new(format!("{what}: {error}"));
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "terminus-haproxy-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|error| fail("create the HAProxy directory", error))?;
        let h1 = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let h2 = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let stats = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = config(h1, h2, stats);
        let config_path = dir.join("haproxy.cfg");
        std::fs::write(&config_path, config).map_err(|error| fail("write haproxy.cfg", error))?;
        let log = std::fs::File::create(dir.join("haproxy.log"))
            .map_err(|error| fail("create haproxy.log", error))?;
        let log_too = log
            .try_clone()
            .map_err(|error| fail("clone the log handle", error))?;
        let child = Command::new(&binary)
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_too)
            .stderr(log)
            .spawn()
            .map_err(|error| fail(&format!("cannot start {}", binary.display()), error))?;
        let mut haproxy = Haproxy {
            child,
            dir,
            h1,
            h2,
            stats,
        };
        crate::launch::wait_until_listening(
            ("haproxy", "frontends"),
            &mut haproxy.child,
            &[h1, h2, stats],
            START_TIMEOUT,
            &haproxy.dir.join("haproxy.log"),
        )?;
        Ok(haproxy)
    }

    /// What HAProxy printed (warnings, alerts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// HAProxy's view of each server of the backend: `(name, status)`, where status is
    /// `UP`, `DOWN`, or a transition such as `UP 1/2`.
    pub async fn server_states(&self) -> Vec<(String, String)> {
        server_states(self.stats).await
    }

    /// Waits up to `timeout` until exactly the servers in `up` are `UP` and every other
    /// server is `DOWN`; returns the last states seen if that never happens.
    pub async fn wait_for_states(&self, up: &[&str], timeout: Duration) -> Result<(), Vec<(String, String)>> {
        wait_for_states(self.stats, up, timeout).await
    }
}

/// The states of the `app` backend's servers, from the statistics frontend at `stats`
/// (see [`Haproxy::server_states`]).
pub async fn server_states(stats: SocketAddr) -> Vec<(String, String)> {
    let Ok(reply) = get(stats, "/stats;csv").await else {
        return Vec::new();
    };
    parse_stats(&String::from_utf8_lossy(&reply.body))
}

/// [`Haproxy::wait_for_states`], from the statistics frontend at `stats`.
pub async fn wait_for_states(
    stats: SocketAddr,
    up: &[&str],
    timeout: Duration,
) -> Result<(), Vec<(String, String)>> {
    let deadline = Instant::now() + timeout;
    loop {
        let states = server_states(stats).await;
        let settled = !states.is_empty()
            && states.iter().all(|(name, status)| {
                if up.contains(&name.as_str()) {
                    status == "UP"
                } else {
                    status == "DOWN"
                }
            });
        if settled {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(states);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        crate::launch::stop(&mut self.child, &self.dir, false);
    }
}

/// The configuration file. Each directive that decides whether a failure can be hidden
/// from the client is commented.
fn config(
    h1: SocketAddr,
    h2: SocketAddr,
    stats: SocketAddr,
    servers: &[ServerSlot],
    check: &Check,
    upstream: Upstream,
) -> String {
    let (keep_alive, reuse) = match upstream.idle_timeout {
        None => (
            "30s".to_owned(),
            "    # Keep-alive on both sides; idle server connections are shared between clients.\n    \
             http-reuse safe\n",
        ),
        Some(idle) => (
            format!("{}ms", idle.as_millis()),
            "    # Keep-alive on both sides; each idle server connection is its client's and closes\n    \
             # with it, after `timeout http-keep-alive` (the shared pool has no idle timeout).\n    \
             http-reuse never\n",
        ),
    };
    let check = match check {
        Check::Http(path) => format!("    option httpchk GET {path}\n    http-check expect status 200\n"),
        Check::Tcp => "    # A TCP connect is the check (no readiness path).\n".to_owned(),
    };
    let mut config = defaults(
        &keep_alive,
        &format!("{reuse}    option http-keep-alive\n"),
        "    retry-on none\n",
    );
    config.push_str(&format!(
        "
frontend h1
    bind {h1}
    default_backend app

frontend h2
    bind {h2} proto h2
    default_backend app
{stats}
backend app
    balance roundrobin
{check}{servers}",
        stats = stats_frontend(stats),
        servers = server_lines(servers, ""),
    ));
    config
}

/// What both configurations begin with: `global`, and the `defaults` that let every
/// failure reach the client. `before` goes before the retry settings, `retry` among them.
fn defaults(keep_alive: &str, before: &str, retry: &str) -> String {
    format!(
        "\
global
    maxconn 4096
    nbthread 2

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive {keep_alive}
    timeout check 500ms
{before}    # Every failure reaches the client: no retry, no retry on another server.
    retries 0
{retry}    no option redispatch
"
    )
}

/// The statistics frontend, whose CSV tells the tests which servers are up.
fn stats_frontend(stats: SocketAddr) -> String {
    format!(
        "
frontend stats
    bind {stats}
    stats enable
    stats uri /stats
"
    )
}

/// The backend's check timing and its `server` lines, each ending with `options`.
fn server_lines(servers: &[ServerSlot], options: &str) -> String {
    let mut lines = String::from(
        "    # A server is down after one failed check and up after one good one, checked every second.
    default-server inter 1s fall 1 rise 1
",
    );
    for server in servers {
        lines.push_str(&format!(
            "    server {} 127.0.0.1:{} check{options}\n",
            server.name, server.port
        ));
    }
    lines
}

/// How HAProxy passes gRPC on to the backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcMode {
    /// HTTP/2 on both sides (`proto h2` to the backends): HAProxy ends the client's
    /// streams itself and opens its own to the backends, as Envoy or an ingress does.
    /// The backends' GOAWAY stops at HAProxy.
    Http,
    /// TCP passthrough: each client connection is pinned to one backend, as with a
    /// Kubernetes ClusterIP Service (kube-proxy); the backends' GOAWAY reaches the client,
    /// whose reconnection is balanced to a backend that is up.
    Tcp,
}

/// The gRPC configuration: the `h2` frontend in `mode`, the `h1` frontend (unused by
/// gRPC clients, kept so that every frontend of [`Haproxy`] exists), and the checks on
/// `GET /readyz` over HTTP/2 (`http-check connect proto h2`: the backends refuse HTTP/1).
fn grpc_config(
    h1: SocketAddr,
    h2: SocketAddr,
    stats: SocketAddr,
    servers: &[ServerSlot],
    mode: GrpcMode,
) -> String {
    let (grpc_mode, server_proto) = match mode {
        GrpcMode::Http => ("http", " proto h2"),
        GrpcMode::Tcp => ("tcp", ""),
    };
    // HTTP mode only: the backend-side settings of an HTTP proxy.
    let reuse = match mode {
        GrpcMode::Http => "    http-reuse safe\n    retry-on none\n",
        GrpcMode::Tcp => "",
    };
    let mut config = defaults("30s", "", "");
    config.push_str(&format!(
        "
frontend h1
    mode {grpc_mode}
    bind {h1}
    default_backend app

frontend grpc
    mode {grpc_mode}
    bind {h2}{server_proto}
    default_backend app
{stats}
backend app
    mode {grpc_mode}
    balance roundrobin
    # The checks speak HTTP/2 whatever the mode: the backends refuse HTTP/1.
    option httpchk
    http-check connect proto h2
    http-check send meth GET uri /readyz
    http-check expect status 200
{reuse}{servers}",
        stats = stats_frontend(stats),
        servers = server_lines(servers, server_proto),
    ));
    config
}

/// Parses HAProxy's CSV statistics into `(server name, status)` for the `app` backend.
fn parse_stats(csv: &str) -> Vec<(String, String)> {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let column = |name: &str| columns.iter().position(|column| *column == name);
    let (Some(proxy), Some(server), Some(status)) = (column("pxname"), column("svname"), column("status"))
    else {
        return Vec::new();
    };
    lines
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|fields| {
            fields.get(proxy) == Some(&"app")
                && !matches!(fields.get(server), Some(&"FRONTEND") | Some(&"BACKEND"))
        })
        .filter_map(|fields| Some((fields.get(server)?.to_string(), fields.get(status)?.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_csv_gives_the_state_of_each_server_of_the_backend() {
        let csv = "# pxname,svname,qcur,status,weight\n\
                   h1,FRONTEND,,OPEN,\n\
                   app,a1,0,UP,1\n\
                   app,b1,0,DOWN,1\n\
                   app,BACKEND,0,UP,2\n";
        assert_eq!(
            parse_stats(csv),
            [
                ("a1".to_owned(), "UP".to_owned()),
                ("b1".to_owned(), "DOWN".to_owned())
            ]
        );
    }
}
