//! Telling others who serves: `sd_notify` datagrams (`READY=1` to the parent,
//! `MAINPID=` to the service manager) and the PID file.
//!
//! The datagram send is the `systemd` notifier's (`datagram.rs`): a socket per message,
//! never blocking, bounded here.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a notification may wait for room in the receiver's socket.
const SEND_BOUND: Duration = Duration::from_millis(500);

/// Sends `message` (`KEY=value` lines) in one datagram to the socket at `path` (`@name`:
/// an abstract socket), waiting at most [`SEND_BOUND`] for room.
pub(crate) async fn send(path: &OsStr, message: &str) -> io::Result<()> {
    tokio::time::timeout(SEND_BOUND, crate::datagram::send(path, message.as_bytes()))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "the socket stayed full")))
}

/// Tells the service manager at `NOTIFY_SOCKET`, if there is one, that `pid` is the
/// main process now and ready (`systemctl reload` with `ExecReload=kill -USR2
/// $MAINPID` and `Type=notify` then returns).
pub(crate) async fn tell_service_manager(pid: u32) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET").filter(|socket| !socket.is_empty()) else {
        return;
    };
    let message = format!("MAINPID={pid}\nREADY=1\nSTATUS=serving (upgraded)\n");
    if let Err(error) = send(&socket, &message).await {
        tracing::warn!(
            target: "terminus",
            socket = %socket.to_string_lossy(),
            %error,
            "upgrade: cannot tell the service manager the new main PID"
        );
    }
}

/// Writes `pid` to `path` atomically (a new file in the same directory, renamed over
/// the old one: a reader sees the old PID or the new one, never a torn or missing
/// file), off the runtime's threads. A relative `path` is taken from `start_dir`.
pub(crate) async fn write_pid_file(path: &Path, start_dir: Option<&Path>, pid: u32) {
    let path = match start_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    };
    let target = path.clone();
    let written = tokio::task::spawn_blocking(move || write_atomically(&target, pid)).await;
    match written {
        Ok(Ok(())) => tracing::info!(target: "terminus", path = %path.display(), pid, "PID file written"),
        Ok(Err(error)) => {
            tracing::error!(target: "terminus", path = %path.display(), pid, %error, "cannot write the PID file")
        }
        Err(error) => {
            tracing::error!(target: "terminus", path = %path.display(), pid, %error, "cannot write the PID file")
        }
    }
}

fn write_atomically(path: &PathBuf, pid: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".terminus-pid-")
        .tempfile_in(dir)?;
    writeln!(file, "{pid}")?;
    // A PID file is for everyone to read (the temporary file starts private).
    file.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|error| error.error)?;
    Ok(())
}
