//! One instance of the user's server command: started with `HOST` and `PORT`, stopped
//! with a real signal the way the kubelet stops a container, killed after the grace.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::kubelet;

/// How an instance tells that it is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// `GET path` passes as a kubelet's readiness probe (2xx or 3xx).
    Path(String),
    /// The port accepts connections (`--ready-path none`).
    Port,
}

impl Readiness {
    /// Parses `--ready-path`: `none`, or a path starting with `/`.
    pub fn parse(value: &str) -> Result<Readiness, String> {
        match value {
            "none" => Ok(Readiness::Port),
            path if path.starts_with('/') && path.parse::<http::Uri>().is_ok() => {
                Ok(Readiness::Path(path.to_owned()))
            }
            other => Err(format!(
                "`{other}` is neither `none` nor a path starting with `/`"
            )),
        }
    }

    /// Whether `addr` is ready now: one probe, on a new connection, within the kubelet's
    /// default 1 s timeout.
    pub async fn check(&self, addr: SocketAddr) -> bool {
        match self {
            Readiness::Path(path) => kubelet::http_get(addr, path, kubelet::DEFAULT_TIMEOUT)
                .await
                .verdict
                .passed(),
            Readiness::Port => matches!(
                tokio::time::timeout(kubelet::DEFAULT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            ),
        }
    }
}

/// How a stopped instance ended.
#[derive(Clone, Debug, Serialize)]
pub struct Exit {
    /// Its exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, when one did (9 after the grace).
    pub signal: Option<i32>,
    /// Whether it was killed (SIGKILL) after the grace.
    pub killed: bool,
}

impl Exit {
    fn of(status: ExitStatus, killed: bool) -> Exit {
        Exit {
            code: status.code(),
            signal: status.signal(),
            killed,
        }
    }
}

/// The moments of one stop.
#[derive(Clone, Debug)]
pub struct Stop {
    /// When the signal was sent.
    pub signal_at: Instant,
    /// When the listener was first seen closed while the process still ran (`None`: it
    /// closed with the exit, or was never seen open).
    pub listener_closed_at: Option<Instant>,
    /// When the process was seen gone.
    pub exited_at: Instant,
    /// How it ended.
    pub exit: Exit,
}

/// A running instance. Killed (SIGKILL, by pid) when dropped.
pub struct Instance {
    child: Child,
    port: u16,
    log: PathBuf,
    exit: Option<ExitStatus>,
}

impl Instance {
    /// Starts `command` (program and arguments, `{port}` replaced by `port`) with
    /// `HOST=127.0.0.1` and `PORT=port`, its output appended to `log`.
    pub fn spawn(command: &[String], port: u16, log: &Path) -> io::Result<Instance> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command to run"))?;
        let port_text = port.to_string();
        let output = File::options().create(true).append(true).open(log)?;
        let child = Command::new(program.replace("{port}", &port_text))
            .args(args.iter().map(|arg| arg.replace("{port}", &port_text)))
            .env("HOST", "127.0.0.1")
            .env("PORT", &port_text)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .map_err(|error| io::Error::new(error.kind(), format!("cannot start `{program}`: {error}")))?;
        Ok(Instance {
            child,
            port,
            log: log.to_owned(),
            exit: None,
        })
    }

    /// Its loopback address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// How it exited, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `timeout` for `readiness`; says how long it took, or why it failed
    /// (the process exited, or the time ran out).
    pub async fn wait_ready(&mut self, readiness: &Readiness, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "exited before it was ready ({status}); its output is in {}",
                    self.log.display()
                ));
            }
            if readiness.check(self.addr()).await {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                let what = match readiness {
                    Readiness::Path(path) => format!("GET {path} did not pass"),
                    Readiness::Port => format!("port {} did not accept connections", self.port),
                };
                return Err(format!(
                    "not ready within {timeout:?}: {what}; its output is in {}",
                    self.log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (a name such as `TERM`, `SIGINT`, or a number) with `kill -s`.
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        send_signal(self.pid(), signal)
    }

    /// From the signal sent at `signal_at`: watches the listener and waits for the
    /// exit, killing the process (SIGKILL) after `grace` as the kubelet does.
    ///
    /// Cancel safety: dropping it leaves the process running; [`Drop`] kills it.
    pub async fn watch_stop(&mut self, signal_at: Instant, grace: Duration) -> Stop {
        let mut listener_closed_at = None;
        let mut killed = false;
        loop {
            if let Some(status) = self.exited() {
                return Stop {
                    signal_at,
                    listener_closed_at,
                    exited_at: Instant::now(),
                    exit: Exit::of(status, killed),
                };
            }
            if listener_closed_at.is_none() && !self.listening().await {
                listener_closed_at = Some(Instant::now());
            }
            if !killed && signal_at.elapsed() >= grace {
                let _ = self.child.kill();
                killed = true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether the port still listens: the kernel's table where there is one, or a
    /// connect.
    async fn listening(&self) -> bool {
        match crate::ports::listening(self.port) {
            Some(listening) => listening,
            None => tokio::net::TcpStream::connect(self.addr()).await.is_ok(),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.exited().is_none() {
            // SIGKILL to this child's pid only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kill -s NAME pid` (no `unsafe` needed for `kill(2)`).
pub fn send_signal(pid: u32, signal: &str) -> io::Result<()> {
    let name = signal.trim_start_matches("SIG");
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill -s {name} {pid} failed")))
    }
}
