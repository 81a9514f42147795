//! Server processes started by the driver: spawn, find the address, read memory,
//! SIGTERM and time the exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a server may take to print its address.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it is killed and the run failed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server. Dropping it kills the process (SIGKILL) if it is still running.
#[derive(Debug)]
pub struct ServerProcess {
    label: String,
    /// `None` once the process has been reaped.
    child: Option<Child>,
    pid: u32,
    /// `127.0.0.1:PORT`
    addr: String,
}

/// How a server ended after SIGTERM.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// When SIGTERM was sent.
    pub signalled: Instant,
    /// When `waitpid` returned.
    pub exited: Instant,
    /// The process exited with status 0.
    pub success: bool,
}

impl Exit {
    /// From SIGTERM to the process being reaped.
    pub fn elapsed(&self) -> Duration {
        self.exited.duration_since(self.signalled)
    }
}

impl ServerProcess {
    /// Starts `program args..`, pinned to `cpus` with `taskset` when given, and waits
    /// for its `listening on http://ADDR` line.
    pub fn start(label: &str, cpus: Option<&str>, program: &str, args: &[&str]) -> Result<Self, String> {
        let mut command = match cpus {
            // taskset execs the program: the pid is the server's own.
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.args(["-c", cpus, program]);
                command
            }
            None => Command::new(program),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("{label}: cannot start {program}: {error}"))?;
        let pid = child.id();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{label}: no stdout"));
        };
        // Read the first line on a thread so that a silent server cannot hang the driver.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = ServerProcess {
            label: label.to_owned(),
            child: Some(child),
            pid,
            addr: String::new(),
        };
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            _ => {
                return Err(format!(
                    "{label}: did not print its address within {STARTUP_TIMEOUT:?}"
                ))
            }
        };
        let Some(addr) = line.trim().strip_prefix("listening on http://") else {
            return Err(format!("{label}: unexpected first line `{line}`"));
        };
        server.addr = addr.to_owned();
        Ok(server)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Resident memory now, in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|error| format!("{}: cannot read /proc status: {error}", self.label))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("{}: no VmRSS in /proc status", self.label))
    }

    /// CPU time used so far by every thread of the process, user and system
    /// (the first field of `/proc/PID/task/TID/schedstat`, in nanoseconds).
    pub fn cpu_time(&self) -> Result<Duration, String> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map_err(|error| format!("{}: cannot list threads: {error}", self.label))?;
        let mut total_ns: u64 = 0;
        for task in tasks.flatten() {
            // A thread that ended between the listing and the read no longer counts.
            let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue;
            };
            total_ns += schedstat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .ok_or_else(|| format!("{}: unreadable schedstat `{schedstat}`", self.label))?;
        }
        Ok(Duration::from_nanos(total_ns))
    }

    /// Sends SIGTERM and waits (at most 30 s) for the process to exit.
    pub fn terminate(self) -> Result<Exit, String> {
        self.stop(Signal::SIGTERM)
    }

    /// Sends SIGKILL and waits for the process to be reaped: the time the kernel alone
    /// needs to tear it down (close every socket, free its memory), the floor under any
    /// graceful shutdown.
    pub fn kill(self) -> Result<Exit, String> {
        self.stop(Signal::SIGKILL)
    }

    /// Sends `signal` and waits (at most 30 s) for the process to exit.
    fn stop(mut self, signal: Signal) -> Result<Exit, String> {
        let Some(mut child) = self.child.take() else {
            return Err(format!("{}: already reaped", self.label));
        };
        let (tx, rx) = mpsc::channel();
        // The waiter thread is started before the signal so that its start-up is not timed.
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            let _ = ready_tx.send(());
            let status = child.wait();
            let exited = Instant::now();
            let _ = tx.send((status, exited));
        });
        let _ = ready_rx.recv();
        let pid = Pid::from_raw(i32::try_from(self.pid).map_err(|_| "pid out of range".to_owned())?);
        let signalled = Instant::now();
        kill(pid, signal).map_err(|error| format!("{}: kill: {error}", self.label))?;
        let result = match rx.recv_timeout(EXIT_TIMEOUT) {
            Ok((Ok(status), exited)) => Ok(Exit {
                signalled,
                exited,
                success: status.success(),
            }),
            Ok((Err(error), _)) => Err(format!("{}: wait: {error}", self.label)),
            Err(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                Err(format!(
                    "{}: still running {EXIT_TIMEOUT:?} after {signal}; killed",
                    self.label
                ))
            }
        };
        let _ = waiter.join();
        result
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
