//! [`ActivatedSockets`]: the listening sockets systemd passed to the process.

use std::fmt;
use std::io;
use std::os::fd::AsFd;

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
        // The sockets an in-place upgrade passed (`TERMINUS_UPGRADE_FROM` names the
        // parent) are not systemd's: `bind` takes them, by address (see `upgrade`).
        if passed_by_upgrade() {
            return ActivatedSockets {
                fds: ListenFd::empty(),
                names: Vec::new(),
            };
        }
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
    /// there is no such socket or it was taken already. An error if it cannot accept
    /// connections: neither a TCP nor a Unix stream socket (`ListenDatagram=`, say), or
    /// bound but not listening (`listen(2)` never called on it: a socket handed over by
    /// hand; systemd's `ListenStream=` sockets listen). The error names the descriptor,
    /// the index and the `FileDescriptorName=`, and what is wrong; the socket is then
    /// closed. Call it inside the Tokio runtime.
    pub fn take(&mut self, index: usize) -> io::Result<Option<ActivatedListener>> {
        // A socket of the wrong kind is left in place by listenfd: try the other kind.
        match self.fds.take_tcp_listener(index) {
            Ok(Some(listener)) => return Ok(Some(ActivatedListener::Tcp(self.tcp(listener, index)?))),
            Ok(None) => return Ok(None),
            Err(_) => {}
        }
        match self.fds.take_unix_listener(index) {
            Ok(Some(listener)) => Ok(Some(ActivatedListener::Unix(self.unix(listener, index)?))),
            Ok(None) => Ok(None),
            Err(error) => Err(self.invalid(
                index,
                format_args!("is not a stream socket, TCP or Unix ({error}); give it a `ListenStream=` line"),
            )),
        }
    }

    /// Takes socket `index` as a TCP listener (see [`take`](ActivatedSockets::take)).
    pub fn take_tcp(&mut self, index: usize) -> io::Result<Option<Activated<tokio::net::TcpListener>>> {
        match self.fds.take_tcp_listener(index) {
            Ok(listener) => listener.map(|listener| self.tcp(listener, index)).transpose(),
            Err(error) => Err(self.invalid(index, format_args!("is not a TCP stream socket ({error})"))),
        }
    }

    /// Takes socket `index` as a Unix listener (see [`take`](ActivatedSockets::take)).
    pub fn take_unix(&mut self, index: usize) -> io::Result<Option<Activated<tokio::net::UnixListener>>> {
        match self.fds.take_unix_listener(index) {
            Ok(listener) => listener.map(|listener| self.unix(listener, index)).transpose(),
            Err(error) => Err(self.invalid(index, format_args!("is not a Unix stream socket ({error})"))),
        }
    }

    fn tcp(
        &self,
        listener: std::net::TcpListener,
        index: usize,
    ) -> io::Result<Activated<tokio::net::TcpListener>> {
        self.check_listening(&listener, index)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        if let Ok(address) = listener.local_addr() {
            tracing::info!(target: "terminus", %address, index, "listening on a socket passed by systemd");
        }
        Ok(Activated::new(listener))
    }

    fn unix(
        &self,
        listener: std::os::unix::net::UnixListener,
        index: usize,
    ) -> io::Result<Activated<tokio::net::UnixListener>> {
        self.check_listening(&listener, index)?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let path = listener
            .local_addr()
            .ok()
            .and_then(|address| address.as_pathname().map(|path| path.display().to_string()));
        tracing::info!(target: "terminus", address = %format!("unix:{}", path.unwrap_or_default()), index, "listening on a socket passed by systemd");
        Ok(Activated::new(listener))
    }

    /// An error unless `listen(2)` was called on the socket (`SO_ACCEPTCONN`): accepting
    /// on one that is only bound fails, and the server would serve nothing while
    /// systemd is told it is ready. Platforms where socket2 cannot ask (macOS) skip it.
    fn check_listening(&self, socket: &impl AsFd, index: usize) -> io::Result<()> {
        #[cfg(any(
            target_os = "linux",
            target_os = "android",
            target_os = "freebsd",
            target_os = "fuchsia"
        ))]
        if !socket2::SockRef::from(socket).is_listener()? {
            return Err(self.invalid(
                index,
                "is not listening: it is bound, but listen(2) was never called on it, so nothing \
                 could be accepted (systemd's `ListenStream=` sockets listen; one passed by hand must too)",
            ));
        }
        // Read only by the check above, where there is one.
        let _ = (socket, index);
        Ok(())
    }

    /// An error about socket `index`, named as systemd numbers it: `socket-activated fd 3
    /// (index 0, `http`) <what>`.
    fn invalid(&self, index: usize, what: impl fmt::Display) -> io::Error {
        // SD_LISTEN_FDS_START: the first passed socket is descriptor 3.
        let fd = index.saturating_add(3);
        let message = match self.names.get(index) {
            Some(name) => format!("socket-activated fd {fd} (index {index}, `{name}`) {what}"),
            None => format!("socket-activated fd {fd} (index {index}) {what}"),
        };
        io::Error::new(io::ErrorKind::InvalidInput, message)
    }
}

/// Whether `LISTEN_FDS` comes from this process's parent upgrading in place, not from
/// systemd: `TERMINUS_UPGRADE_FROM` is set to the parent's PID.
fn passed_by_upgrade() -> bool {
    std::env::var(terminus_core::upgrade::ENV_UPGRADE_FROM)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid == std::os::unix::process::parent_id())
}
