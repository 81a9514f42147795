//! What systemd does for a service, played by the test: hold a listening socket and
//! start the service on it (socket activation), and listen to its notifications
//! (`NOTIFY_SOCKET`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::TestServer;

/// Moves the socket to fd 3, closes the original descriptor, and execs the service with
/// `LISTEN_FDS=1` and `LISTEN_PID` set to its own pid (`exec` keeps the shell's): the
/// variables systemd sets. `$1` is the descriptor, the rest the command. bash, because
/// dash redirects only descriptors 0 to 9.
const ACTIVATE: &str = r#"exec 3<&"$1" && { [ "$1" = 3 ] || eval "exec $1<&-"; } && shift && LISTEN_PID=$$ LISTEN_FDS=1 exec "$@""#;

/// A listening socket that outlives the processes started on it, as a `.socket` unit's.
pub struct SocketUnit {
    socket: Socket,
    addr: SocketAddr,
}

impl SocketUnit {
    /// Listens on a free loopback port with a queue of `backlog` connections
    /// (`Backlog=` in a `.socket` unit).
    pub fn bind(backlog: i32) -> io::Result<SocketUnit> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        socket.listen(backlog)?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))?;
        Ok(SocketUnit { socket, addr })
    }

    /// A TCP socket bound to a free loopback port on which `listen(2)` was never
    /// called: a socket handed over by hand, wrongly. Nothing could ever be accepted on it.
    pub fn bind_without_listening() -> io::Result<SocketUnit> {
        SocketUnit::bound(Type::STREAM)
    }

    /// A UDP socket bound to a free loopback port, as `ListenDatagram=` passes one.
    pub fn bind_datagram() -> io::Result<SocketUnit> {
        SocketUnit::bound(Type::DGRAM)
    }

    fn bound(kind: Type) -> io::Result<SocketUnit> {
        let socket = Socket::new(Domain::IPV4, kind, None)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))?;
        Ok(SocketUnit { socket, addr })
    }

    /// The address the socket listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts `binary` on the socket, as systemd starts a socket-activated service, and
    /// waits for its `listening on` line. `envs` as for [`TestServer::command`].
    pub fn start(&self, binary: &str, envs: &[(&str, &str)]) -> TestServer {
        let (command, inherited) = self.command(binary, envs);
        let server = TestServer::start_command(command);
        drop(inherited);
        server
    }

    /// Starts `binary` on the socket without waiting for it to listen (for startup
    /// failures).
    pub fn spawn(&self, binary: &str, envs: &[(&str, &str)]) -> TestServer {
        let (command, inherited) = self.command(binary, envs);
        let server = TestServer::spawn_command(command);
        drop(inherited);
        server
    }

    /// The command that starts `binary` on the socket, and the descriptor the child
    /// inherits: a duplicate (the original stays close-on-exec, so other children of
    /// the test do not inherit it), to close once the child has it.
    fn command(&self, binary: &str, envs: &[(&str, &str)]) -> (Command, Socket) {
        let inherited = self.socket.try_clone().expect("duplicate the socket");
        inherited
            .set_cloexec(false)
            .expect("let the child inherit the socket");
        let descriptor = inherited.as_raw_fd().to_string();
        let mut command = TestServer::command("bash", envs);
        command.args(["-c", ACTIVATE, "bash", &descriptor, binary]);
        (command, inherited)
    }
}

/// The service manager's end of `NOTIFY_SOCKET`: a datagram socket that collects the
/// service's notifications in the order they arrive.
pub struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
    /// The senders of [`NotifySocket::fill`]'s datagrams, kept open while the socket is.
    fillers: Vec<std::os::unix::net::UnixDatagram>,
}

impl NotifySocket {
    /// Binds a datagram socket at `path`.
    pub fn bind(path: &Path) -> io::Result<NotifySocket> {
        let _ = std::fs::remove_file(path);
        let socket = std::os::unix::net::UnixDatagram::bind(path)?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(NotifySocket {
            socket,
            path: path.to_owned(),
            fillers: Vec::new(),
        })
    }

    /// Fills the socket's queue, as a service manager that stopped reading leaves it:
    /// datagrams are sent until a fresh sender is refused too (the receiver's queue is
    /// full, not only one sender's buffer). Returns how many were queued.
    pub fn fill(&mut self) -> io::Result<usize> {
        /// Bounds, far above the kernel's (`net.unix.max_dgram_qlen`, 10 to 512).
        const SENDERS: usize = 64;
        const PER_SENDER: usize = 10_000;
        let mut queued = 0;
        for _ in 0..SENDERS {
            let sender = std::os::unix::net::UnixDatagram::unbound()?;
            sender.connect(&self.path)?;
            sender.set_nonblocking(true)?;
            let mut sent = 0;
            while sent < PER_SENDER {
                match sender.send(b"FILLER=1\n") {
                    Ok(_) => sent += 1,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => return Err(error),
                }
            }
            self.fillers.push(sender);
            if sent == 0 {
                return Ok(queued);
            }
            queued += sent;
        }
        Err(io::Error::other(format!(
            "{} still takes datagrams after {queued}",
            self.path.display()
        )))
    }

    /// The path to give the service as `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads datagrams until `until` returns `true` for one, or `timeout` passes; returns
    /// every datagram received, each split into its `KEY=value` lines.
    pub fn receive(&self, timeout: Duration, mut until: impl FnMut(&[String]) -> bool) -> Vec<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut received = Vec::new();
        let mut buffer = vec![0u8; 4096];
        while Instant::now() < deadline {
            match self.socket.recv(&mut buffer) {
                Ok(n) => {
                    let message: Vec<String> = String::from_utf8_lossy(&buffer[..n])
                        .lines()
                        .map(str::to_owned)
                        .collect();
                    let done = until(&message);
                    received.push(message);
                    if done {
                        break;
                    }
                }
                Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                }
                Err(error) => panic!("notify socket: {error}"),
            }
        }
        received
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
