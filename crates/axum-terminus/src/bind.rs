//! Binding listeners, with errors that name the address.

use std::fmt;
use std::io;

use std::net::SocketAddr;

use terminus_core::Terminus;
use tokio::net::{TcpListener, TcpSocket, ToSocketAddrs};

/// The listen backlog of [`bind`]: how many connections the kernel completes and
/// queues for the server before it accepts them.
///
/// `std` and `tokio::net::TcpListener::bind` use 128. A burst larger than that (a
/// balancer moving traffic onto a pod that just became ready) overflows the queue, and
/// the kernel drops packets: a new connection's SYN, so that its connect waits for a
/// retransmission a second later; or the handshake's last packet, so that the client
/// believes it is connected and sends its request, and the connection only completes
/// when a retransmission comes through. If the listener closes in that window, those
/// clients are refused or reset, for requests the server never saw. The kernel caps the
/// value at `net.core.somaxconn` (4096 on Linux since 5.4, 128 before). To choose
/// another value, build the listener with [`TcpSocket`] and pass it to
/// [`serve`](crate::serve).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds a TCP listener, with a backlog of [`LISTEN_BACKLOG`]. On failure (a port
/// already in use, a missing permission) the error names the address, and the
/// terminus is marked fatal, so liveness fails and the shutdown starts: the
/// orchestrator restarts the process instead of leaving it half-started.
///
/// With the `upgrade` feature, in a successor started by an in-place upgrade, the
/// parent's listener with the same address is taken instead (port 0: the parent's port
/// on the same IP address); see [`upgrade`](crate::upgrade).
///
/// # Cancel safety
///
/// Dropping the future before it resolves binds nothing and leaves the `Terminus` as
/// it was: only a failure it returned marks it fatal. (In an upgraded successor, the
/// parent's socket is taken and returned in one step, never lost between awaits.)
pub async fn bind<A>(address: A, terminus: &Terminus) -> Result<TcpListener, BindError>
where
    A: ToSocketAddrs + fmt::Display,
{
    #[cfg(all(feature = "upgrade", unix))]
    if crate::upgrade::inherited().parent.is_some() {
        if let Ok(addresses) = tokio::net::lookup_host(&address).await {
            let addresses: Vec<SocketAddr> = addresses.collect();
            if let Some(listener) = crate::upgrade::inherited().take_tcp(&addresses) {
                if let Ok(local) = listener.local_addr() {
                    tracing::info!(target: "terminus", address = %local, "listening on the parent's socket");
                }
                return Ok(listener);
            }
        }
    }
    match bind_tcp(&address).await {
        Ok(listener) => {
            if let Ok(local) = listener.local_addr() {
                tracing::info!(target: "terminus", address = %local, "listening");
            }
            Ok(listener)
        }
        Err(source) => {
            let error = BindError {
                address: address.to_string(),
                source,
            };
            terminus.set_fatal(&error);
            Err(error)
        }
    }
}

/// What `TcpListener::bind` does (every resolved address in turn, `SO_REUSEADDR` on
/// Unix), with a larger backlog.
async fn bind_tcp(address: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last_error = None;
    for address in tokio::net::lookup_host(address).await? {
        match listen_on(address) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the address resolved to nothing")))
}

fn listen_on(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Binds a Unix domain socket listener at `path`, the way [`bind`] binds a port: on
/// failure the error names the path and the terminus is marked fatal.
///
/// A socket file left at `path` by a process that is gone (nothing accepts on it) is
/// removed first; one that a live process still listens on is an error
/// (`AddrInUse`), as a port in use is. The file is left in place when the listener
/// closes: a process started after this one replaces it.
///
/// # Cancel safety
///
/// As [`bind`]: dropping the future binds nothing and leaves the `Terminus` as it was
/// (a stale socket file may already be gone).
#[cfg(unix)]
pub async fn bind_unix(
    path: impl AsRef<std::path::Path>,
    terminus: &Terminus,
) -> Result<tokio::net::UnixListener, BindError> {
    let path = path.as_ref();
    let address = format!("unix:{}", path.display());
    #[cfg(feature = "upgrade")]
    if let Some(listener) = crate::upgrade::inherited().take_unix(path) {
        tracing::info!(target: "terminus", %address, "listening on the parent's socket");
        return Ok(listener);
    }
    let bound = remove_stale_socket(path)
        .await
        .and_then(|()| tokio::net::UnixListener::bind(path));
    match bound {
        Ok(listener) => {
            tracing::info!(target: "terminus", %address, "listening");
            Ok(listener)
        }
        Err(source) => {
            let error = BindError { address, source };
            terminus.set_fatal(&error);
            Err(error)
        }
    }
}

/// Removes a socket file nobody listens on any more. A file that is not a socket is
/// left alone (binding then fails with `AddrInUse`, naming the path).
#[cfg(unix)]
async fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;

    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        return Ok(());
    }
    match tokio::net::UnixStream::connect(path).await {
        // Someone accepts there: leave it, and let bind report the address in use.
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => match std::fs::remove_file(path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        },
        Err(_) => Ok(()),
    }
}

/// A listener could not be bound.
#[derive(Debug)]
pub struct BindError {
    address: String,
    source: io::Error,
}

impl BindError {
    /// The address that could not be bound.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The operating system's error (`AddrInUse`, `PermissionDenied`, ...).
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: {}", self.address, self.source)
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
