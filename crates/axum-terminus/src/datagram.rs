//! `sd_notify`-style datagrams, never blocking: what the `systemd` feature's notifier and
//! the `upgrade` feature's announcements both send. A socket per message, as sd_notify(3)
//! does, so nothing is held between two.

use std::ffi::OsStr;
use std::io;

use tokio::net::UnixDatagram;

/// Sends `message` in one datagram to the socket at `path` (`@name`: an abstract
/// socket). Waits while the receiver's socket is full: callers bound it with a timeout.
pub(crate) async fn send(path: &OsStr, message: &[u8]) -> io::Result<()> {
    let sent = connect(path)?.send(message).await?;
    if sent < message.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "datagram truncated"));
    }
    Ok(())
}

/// A non-blocking datagram socket connected to `path` (`@name`: an abstract socket).
/// Connecting a datagram socket only names its peer: it does not wait.
pub(crate) fn connect(path: &OsStr) -> io::Result<UnixDatagram> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    match abstract_name(path) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(name) => {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            socket.connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)?;
        }
        _ => socket.connect(path)?,
    }
    socket.set_nonblocking(true)?;
    UnixDatagram::from_std(socket)
}

/// The name of an abstract socket (`@name`), without the `@`.
fn abstract_name(path: &OsStr) -> Option<&[u8]> {
    use std::os::unix::ffi::OsStrExt;
    path.as_bytes().strip_prefix(b"@")
}
