//! The parent's side: start the successor with the listening sockets, wait for its
//! `READY=1`, and kill it (with its process group) if it exits or is late.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use terminus_core::upgrade::{ENV_UPGRADE_FROM, ENV_UPGRADE_NOTIFY_SOCKET};
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

use super::{inherit, State, UpgradeError};

/// The first descriptor of `LISTEN_FDS` (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// How long a killed successor may take to be reaped.
const REAP_BOUND: Duration = Duration::from_secs(5);

/// Starts the successor and waits until it is ready (then returns its PID, the
/// successor no longer on trial) or has failed (then it is killed and reaped).
///
/// Cancel safety: dropped part way, the successor on trial is killed (the [`Trial`]
/// guard), and the temporary directory removed.
pub(crate) async fn start(
    state: &Arc<State>,
    sockets: Vec<(String, OwnedFd)>,
    timeout: Duration,
) -> Result<u32, UpgradeError> {
    let inherited = inherit::inherited();
    let (program, arg0) = executable(inherited.start_dir.as_deref()).map_err(UpgradeError::Spawn)?;
    // mkdir off the runtime's threads; 0700: only this user can send READY=1 there.
    let dir = tokio::task::spawn_blocking(|| {
        use std::os::unix::fs::PermissionsExt;
        tempfile::Builder::new()
            .prefix("terminus-upgrade-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
    })
    .await
    .map_err(|error| UpgradeError::Spawn(std::io::Error::other(error)))?
    .map_err(UpgradeError::Spawn)?;
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).map_err(UpgradeError::Spawn)?;

    let names: Vec<String> = sockets.iter().map(|(name, _)| name.clone()).collect();
    let mappings = sockets
        .into_iter()
        .zip(FIRST_FD..)
        .map(|((_, parent_fd), child_fd)| FdMapping { parent_fd, child_fd })
        .collect();
    let mut command = Command::new(&program);
    command
        .arg0(&arg0)
        .args(std::env::args_os().skip(1))
        .env_remove("LISTEN_PID")
        .env("LISTEN_FDS", names.len().to_string())
        // Names may not hold `:`, the separator: IPv6 addresses and ports do.
        .env(
            "LISTEN_FDNAMES",
            names
                .iter()
                .map(|name| fd_name(name))
                .collect::<Vec<_>>()
                .join(":"),
        )
        .env(ENV_UPGRADE_FROM, std::process::id().to_string())
        .env(ENV_UPGRADE_NOTIFY_SOCKET, &notify_path)
        // Its own process group, so that a rollback kills what it started too.
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = &inherited.start_dir {
        command.current_dir(dir);
    }
    command
        .fd_mappings(mappings)
        .map_err(|error| UpgradeError::Spawn(std::io::Error::other(error)))?;
    let child = command.spawn().map_err(UpgradeError::Spawn)?;
    let Some(pid) = child.id() else {
        return Err(UpgradeError::Spawn(std::io::Error::other(
            "the successor exited at once",
        )));
    };
    tracing::info!(
        target: "terminus",
        successor = pid,
        program = %program.display(),
        listeners = %names.join(" "),
        timeout_ms = timeout.as_millis() as u64,
        "upgrade: successor started; serving on until it is ready"
    );
    let mut trial = Trial::new(Arc::clone(state), pid, child);
    let verdict = tokio::select! {
        ready = ready(&notify) => ready,
        status = trial.child.wait() => Err(match status {
            Ok(status) => UpgradeError::Exited(status),
            Err(error) => UpgradeError::Spawn(error),
        }),
        () = tokio::time::sleep(timeout) => Err(UpgradeError::NotReady(timeout)),
        () = state.stopped.cancelled() => Err(UpgradeError::ShuttingDown),
    };
    drop(notify);
    let removed = tokio::task::spawn_blocking(move || dir.close());
    match verdict {
        Ok(()) => {
            trial.passed();
            let _ = removed.await;
            Ok(pid)
        }
        Err(error) => {
            trial.kill().await;
            let _ = removed.await;
            Err(error)
        }
    }
}

/// Waits for a datagram with a `READY=1` line.
async fn ready(notify: &UnixDatagram) -> Result<(), UpgradeError> {
    let mut buffer = vec![0u8; 4096];
    loop {
        let n = notify.recv(&mut buffer).await.map_err(UpgradeError::Spawn)?;
        let message = String::from_utf8_lossy(&buffer[..n]);
        if message.lines().any(|line| line.trim() == "READY=1") {
            return Ok(());
        }
    }
}

/// The executable this process was started from, by the path it was started with:
/// `argv[0]` against the directory it started in, read again from disk by exec(2) (a
/// replaced binary is what runs; `/proc/self/exe` would still name the old file). A
/// bare name (`quickstart`, found on `PATH`) is searched on `PATH` again.
fn executable(start_dir: Option<&std::path::Path>) -> std::io::Result<(PathBuf, OsString)> {
    let arg0 = std::env::args_os()
        .next()
        .filter(|arg0| !arg0.is_empty())
        .ok_or_else(|| std::io::Error::other("argv[0] is empty: the executable's path is unknown"))?;
    let path = PathBuf::from(&arg0);
    let program = if path.components().count() == 1 && !path.is_absolute() {
        path // found on PATH, as the shell found it
    } else {
        match start_dir {
            Some(dir) => dir.join(&path),
            None => path,
        }
    };
    Ok((program, arg0))
}

/// A `LISTEN_FDNAMES` entry: the listener's name with `:` (the separator) as `_`.
fn fd_name(name: &str) -> String {
    name.chars()
        .map(|c| if c == ':' || c.is_control() { '_' } else { c })
        .collect()
}

/// A successor on trial: killed with its process group unless it passed.
struct Trial {
    state: Arc<State>,
    pid: u32,
    child: Child,
    passed: bool,
}

impl Trial {
    fn new(state: Arc<State>, pid: u32, child: Child) -> Trial {
        *crate::lock(&state.on_trial) = Some(pid);
        Trial {
            state,
            pid,
            child,
            passed: false,
        }
    }

    fn passed(&mut self) {
        self.passed = true;
        *crate::lock(&self.state.on_trial) = None;
    }

    /// Kills the successor's process group and reaps the successor.
    async fn kill(mut self) {
        kill_group(self.pid);
        match tokio::time::timeout(REAP_BOUND, self.child.wait()).await {
            Ok(Ok(status)) => {
                tracing::info!(target: "terminus", successor = self.pid, %status, "upgrade: successor gone")
            }
            _ => {
                tracing::warn!(target: "terminus", successor = self.pid, "upgrade: successor not reaped yet")
            }
        }
        self.passed = true; // done: nothing left for drop to kill
        *crate::lock(&self.state.on_trial) = None;
    }
}

impl Drop for Trial {
    fn drop(&mut self) {
        if !self.passed {
            kill_group(self.pid);
            *crate::lock(&self.state.on_trial) = None;
        }
    }
}

/// SIGKILL to the process group `pid` leads (the successor and what it started).
pub(crate) fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
}
