//! [`ActivatedSockets`]: the listening sockets systemd passed to the process.

use std::fmt;
use std::io;

use listenfd::ListenFd;

use super::Activated;

/// The listening sockets passed by socket activation, in the order of the `.socket`
/// unit's `Listen*=` lines (file descriptors 3, 4, ...), each taken once.
///
/// `LISTEN_PID` must name this process (systemd sets it so), so that a child process
/// that inherited the environment does not take its parent's sockets.
pub struct ActivatedSockets {
    fds: ListenFd,
    names: Vec<String>,
}

/// A listening socket taken from [`ActivatedSockets`], ready to serve.
#[derive(Debug)]
pub enum ActivatedListener {
    /// `ListenStream=` with a port or an address.
    Tcp(Activated<tokio::net::TcpListener>),
    /// `ListenStream=` with a path.
    Unix(Activated<tokio::net::UnixListener>),
}

impl fmt::Debug for ActivatedSockets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivatedSockets")
            .field("len", &self.fds.len())
            .field("names", &self.names)
            .finish()
    }
}

impl ActivatedSockets {
    /// The sockets passed to this process: none when `LISTEN_FDS` is unset, or when
    /// `LISTEN_PID` names another process (an unset `LISTEN_PID` is taken as this
    /// one, as `systemfd` sets it). Like systemd's `sd_listen_fds(1)`, it removes
    /// `LISTEN_PID` and `LISTEN_FDS` from the environment (listenfd does), so that a
    /// child process does not take the sockets for its own; call it early in `main`,
    /// before other threads read the environment.
    pub fn from_env() -> ActivatedSockets {
        let fds = ListenFd::from_env();
        // `FileDescriptorName=` of each socket, `:`-separated; systemd's default is the
        // socket unit's name.
        let names = std::env::var("LISTEN_FDNAMES")
            .ok()
            .filter(|_| fds.len() > 0)
            .map(|names| names.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        ActivatedSockets { fds, names }
    }

    /// How many sockets were passed.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether none were (the process was not socket-activated).
    pub fn is_empty(&self) -> bool {
        self.fds.len() == 0
    }

    /// The index of the socket named `name` (`FileDescriptorName=`), if there is one.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|candidate| candidate == name)
    }

    /// Takes socket `index` as a TCP or a Unix listener, whichever it is. `None` if
    /// there is no such socket or it was taken already; an error if it is neither a
    /// TCP nor a Unix stream socket. Call it inside the Tokio runtime.
    pub fn take(&mut self, index: usize) -> io::Result<Option<ActivatedListener>> {
        // A socket of the wrong kind is left in place by listenfd: try the other kind.
        match self.fds.take_tcp_listener(index) {
            Ok(Some(listener)) => return Ok(Some(ActivatedListener::Tcp(tcp(listener, index)?))),
            Ok(None) => return Ok(None),
            Err(_) => {}
        }
        match self.fds.take_unix_listener(index)? {
            Some(listener) => Ok(Some(ActivatedListener::Unix(unix(listener, index)?))),
            None => Ok(None),
        }
    }

    /// Takes socket `index` as a TCP listener (see [`take`](ActivatedSockets::take)).
    pub fn take_tcp(&mut self, index: usize) -> io::Result<Option<Activated<tokio::net::TcpListener>>> {
        self.fds
            .take_tcp_listener(index)?
            .map(|listener| tcp(listener, index))
            .transpose()
    }

    /// Takes socket `index` as a Unix listener (see [`take`](ActivatedSockets::take)).
    pub fn take_unix(&mut self, index: usize) -> io::Result<Option<Activated<tokio::net::UnixListener>>> {
        self.fds
            .take_unix_listener(index)?
            .map(|listener| unix(listener, index))
            .transpose()
    }
}

fn tcp(listener: std::net::TcpListener, index: usize) -> io::Result<Activated<tokio::net::TcpListener>> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(target: "terminus", %address, index, "listening on a socket passed by systemd");
    }
    Ok(Activated::new(listener))
}

fn unix(
    listener: std::os::unix::net::UnixListener,
    index: usize,
) -> io::Result<Activated<tokio::net::UnixListener>> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let path = listener
        .local_addr()
        .ok()
        .and_then(|address| address.as_pathname().map(|path| path.display().to_string()));
    tracing::info!(target: "terminus", address = %format!("unix:{}", path.unwrap_or_default()), index, "listening on a socket passed by systemd");
    Ok(Activated::new(listener))
}
