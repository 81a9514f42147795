//! The successor's side: the listening sockets its parent passed, taken by
//! [`bind`](crate::bind) and [`bind_unix`](crate::bind_unix) in place of binding, and
//! where to say it is ready.
//!
//! This is process-wide state, on purpose: the sockets are the process's file
//! descriptors 3.., named by the environment it was started with. They are read once,
//! at the first `bind` (or the first `Server`), and each is taken at most once.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use listenfd::ListenFd;
use terminus_core::upgrade::{ENV_UPGRADE_FROM, ENV_UPGRADE_NOTIFY_SOCKET};

/// What this process was started with.
pub(crate) struct Inherited {
    /// The process that started this one to take over, when it did.
    pub(crate) parent: Option<Parent>,
    /// The working directory when the process started (as near as a library can see
    /// it: at its first `bind` or `Server`), against which a relative `argv[0]` names
    /// the executable.
    pub(crate) start_dir: Option<PathBuf>,
    sockets: Mutex<Vec<Socket>>,
}

/// The parent of a successor, waiting for its `READY=1`.
pub(crate) struct Parent {
    pub(crate) pid: u32,
    pub(crate) notify_socket: OsString,
}

enum Socket {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

/// The process's inherited state, read from the environment on the first call.
pub(crate) fn inherited() -> &'static Inherited {
    static INHERITED: OnceLock<Inherited> = OnceLock::new();
    INHERITED.get_or_init(read)
}

fn read() -> Inherited {
    let start_dir = std::env::current_dir().ok();
    let parent_pid = std::env::var(ENV_UPGRADE_FROM)
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        // Set for a process whose parent upgraded: a process that one started (a
        // shell command, say) inherits the variable, but not the sockets.
        .filter(|&pid| pid == std::os::unix::process::parent_id());
    let notify_socket = std::env::var_os(ENV_UPGRADE_NOTIFY_SOCKET).filter(|path| !path.is_empty());
    let (Some(pid), Some(notify_socket)) = (parent_pid, notify_socket) else {
        return Inherited {
            parent: None,
            start_dir,
            sockets: Mutex::new(Vec::new()),
        };
    };
    // listenfd accepts LISTEN_FDS without LISTEN_PID (which only the child could know)
    // and removes both from the environment.
    let mut fds = ListenFd::from_env();
    let mut sockets = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let socket = match fds.take_tcp_listener(index) {
            Ok(Some(listener)) => Some(Socket::Tcp(listener)),
            _ => fds.take_unix_listener(index).ok().flatten().map(Socket::Unix),
        };
        match socket {
            Some(socket) => sockets.push(socket),
            None => tracing::warn!(
                target: "terminus",
                index,
                "upgrade: a socket the parent passed is neither a TCP nor a Unix listener; ignored"
            ),
        }
    }
    tracing::info!(target: "terminus", parent = pid, sockets = sockets.len(), "upgrade: started by the serving process to take over");
    Inherited {
        parent: Some(Parent { pid, notify_socket }),
        start_dir,
        sockets: Mutex::new(sockets),
    }
}

impl Inherited {
    /// Takes the inherited TCP listener bound to one of `addresses`: the same address,
    /// or, for port 0 (any free port), the first one left on the same IP address (the
    /// parent's free port, which the successor must keep).
    pub(crate) fn take_tcp(&self, addresses: &[SocketAddr]) -> Option<tokio::net::TcpListener> {
        let mut sockets = crate::lock(&self.sockets);
        let position = addresses.iter().find_map(|wanted| {
            sockets.iter().position(|socket| match socket {
                Socket::Tcp(listener) => listener
                    .local_addr()
                    .is_ok_and(|local| local == *wanted || (wanted.port() == 0 && local.ip() == wanted.ip())),
                Socket::Unix(_) => false,
            })
        })?;
        let Socket::Tcp(listener) = sockets.remove(position) else {
            return None; // the position found is a TCP socket's
        };
        drop(sockets);
        into_tokio(listener, tokio::net::TcpListener::from_std, |l| {
            l.set_nonblocking(true)
        })
    }

    /// Takes the inherited Unix listener bound to `path`.
    pub(crate) fn take_unix(&self, path: &Path) -> Option<tokio::net::UnixListener> {
        let mut sockets = crate::lock(&self.sockets);
        let position = sockets.iter().position(|socket| match socket {
            Socket::Unix(listener) => listener
                .local_addr()
                .ok()
                .and_then(|local| local.as_pathname().map(|bound| bound == path))
                .unwrap_or(false),
            Socket::Tcp(_) => false,
        })?;
        let Socket::Unix(listener) = sockets.remove(position) else {
            return None; // the position found is a Unix socket's
        };
        drop(sockets);
        into_tokio(listener, tokio::net::UnixListener::from_std, |l| {
            l.set_nonblocking(true)
        })
    }

    /// Closes the sockets no `bind` took (the new version listens elsewhere): kept
    /// open, they would queue connections that nobody accepts.
    pub(crate) fn close_unclaimed(&self) {
        let unclaimed = std::mem::take(&mut *crate::lock(&self.sockets));
        for socket in unclaimed {
            let address = match &socket {
                Socket::Tcp(listener) => listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                Socket::Unix(listener) => listener
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                    .unwrap_or_default(),
            };
            tracing::warn!(
                target: "terminus",
                %address,
                "upgrade: the parent's listener was not taken by any bind; closing it (its queued connections are refused)"
            );
        }
    }
}

fn into_tokio<S, T>(
    listener: S,
    convert: impl FnOnce(S) -> std::io::Result<T>,
    nonblocking: impl FnOnce(&S) -> std::io::Result<()>,
) -> Option<T> {
    match nonblocking(&listener).and_then(|()| convert(listener)) {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(target: "terminus", %error, "upgrade: cannot use a listener the parent passed");
            None
        }
    }
}
