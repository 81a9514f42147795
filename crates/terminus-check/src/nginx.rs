//! A real nginx in front of the backends, started as a child process on loopback.
//!
//! The configuration is open-source nginx as it is usually put in front of a service,
//! with the safety net that could hide a lost request switched off:
//!
//! - passive health only (open-source nginx has no active checks): a server that fails
//!   once is left out for a second (`max_fails=1 fail_timeout=1s`);
//! - keep-alive to the backends (`keepalive`, HTTP/1.1, an empty `Connection` header);
//! - `proxy_next_upstream off`: a failure on the way to a backend reaches the client as
//!   a 502 instead of being retried on another server.
//!
//! Readiness reaches nginx the way it does in Kubernetes, where an ingress controller
//! rewrites the upstream from the endpoints that pass their readiness probes: the caller
//! says which servers are ready ([`Nginx::set_ready`]), and the upstream marks the others
//! `down` and is reloaded (SIGHUP; the old workers finish their requests).
//!
//! HTTP/1.1 clients use one `listen`; HTTP/2 clients (prior knowledge, `h2c`) another.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::instance::send_signal;
pub use crate::launch::{LaunchError, ServerSlot, Upstream};

/// What to tell a user who has no nginx.
pub const INSTALL_HINT: &str = "nginx is not installed: `apt-get install nginx` (Debian, Ubuntu; it goes to \
/usr/sbin, which may be off your PATH), `dnf install nginx`, `brew install nginx`";

/// How long nginx may take to open its ports.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The `nginx` binary: on `PATH`, or in `/usr/sbin`.
pub fn binary() -> Option<PathBuf> {
    crate::ports::find_program("nginx")
}

/// `true` if nginx is installed.
pub fn available() -> bool {
    binary().is_some()
}

/// A running nginx (master and workers). Stopped when dropped: SIGTERM to the master,
/// which stops its workers, then SIGKILL if it is still there.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    servers: Vec<ServerSlot>,
    upstream: Upstream,
    /// The HTTP/1.1 address.
    pub h1: SocketAddr,
    /// The HTTP/2 (h2c, prior knowledge) address.
    pub h2: SocketAddr,
}

impl Nginx {
    /// Writes the configuration for `servers` (all ready, connections to them kept as
    /// `upstream` says) to a fresh directory and starts nginx in the foreground; returns
    /// once it accepts connections.
    pub fn try_start(servers: &[ServerSlot], upstream: Upstream) -> Result<Nginx, LaunchError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let binary = binary().ok_or_else(|| LaunchError::new(INSTALL_HINT))?;
        let fail = |what: &str, error: std::io::Error| LaunchError::new(format!("{what}: {error}"));
        let dir = std::env::temp_dir().join(format!(
            "terminus-nginx-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|error| fail("create the nginx directory", error))?;
        let h1 = SocketAddr::from(([127, 0, 0, 1], crate::ports::free_port()));
        let h2 = SocketAddr::from(([127, 0, 0, 1], crate::ports::free_port()));
        let servers = servers.to_vec();
        let all_ready = vec![true; servers.len()];
        std::fs::write(
            dir.join("nginx.conf"),
            config(h1, h2, &dir, &servers, upstream, &all_ready),
        )
        .map_err(|error| fail("write nginx.conf", error))?;
        let child = Command::new(&binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| fail(&format!("cannot start {}", binary.display()), error))?;
        let mut nginx = Nginx {
            child,
            dir,
            servers,
            upstream,
            h1,
            h2,
        };
        crate::launch::wait_until_listening(
            ("nginx", "ports"),
            &mut nginx.child,
            &[h1, h2],
            START_TIMEOUT,
            &nginx.dir.join("error.log"),
        )?;
        Ok(nginx)
    }

    /// Marks the servers whose flag is `false` `down` and reloads nginx, as an ingress
    /// controller does when endpoints fail or pass their readiness probe.
    pub fn set_ready(&mut self, ready: &[bool]) -> Result<(), LaunchError> {
        self.write_config(ready)?;
        send_signal(self.child.id(), "HUP")
            .map_err(|error| LaunchError::new(format!("reload nginx: {error}")))
    }

    /// What nginx logged (warnings, errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn write_config(&self, ready: &[bool]) -> Result<(), LaunchError> {
        let text = config(self.h1, self.h2, &self.dir, &self.servers, self.upstream, ready);
        std::fs::write(self.dir.join("nginx.conf"), text)
            .map_err(|error| LaunchError::new(format!("write nginx.conf: {error}")))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        crate::launch::stop(&mut self.child, &self.dir, true);
    }
}

/// The configuration file. Each directive that decides whether a failure can be hidden
/// from the client is commented.
fn config(
    h1: SocketAddr,
    h2: SocketAddr,
    dir: &std::path::Path,
    servers: &[ServerSlot],
    keep_alive: Upstream,
    ready: &[bool],
) -> String {
    let dir = dir.display();
    let idle_timeout = match keep_alive.idle_timeout {
        Some(idle) => format!("        keepalive_timeout {}ms;\n", idle.as_millis()),
        None => String::new(),
    };
    let mut upstream = String::new();
    for (index, server) in servers.iter().enumerate() {
        let down = if ready.get(index).copied().unwrap_or(true) {
            ""
        } else {
            " down"
        };
        let _ = writeln!(
            upstream,
            "        server 127.0.0.1:{} max_fails=1 fail_timeout=1s{down};",
            server.port
        );
    }
    format!(
        "\
daemon off;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 30s;

    upstream app {{
        # Passive health: a server that fails once is left out for a second. Servers
        # whose readiness fails are marked down (set_ready).
{upstream}        # Idle connections to the servers kept for reuse (for how long: Upstream).
        keepalive 32;
{idle_timeout}    }}

    server {{
        listen {h1};
        listen {h2} http2;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            # Every failure reaches the client: no retry on another server.
            proxy_next_upstream off;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            proxy_buffering off;
            client_max_body_size 1m;
        }}
    }}
}}
"
    )
}
