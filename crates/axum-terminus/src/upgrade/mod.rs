//! In-place upgrade (feature `upgrade`, Unix): replace the running binary without
//! refusing or losing a connection, with no balancer and no systemd socket unit.
//!
//! On `SIGUSR2` (`TERMINUS_UPGRADE_SIGNAL`), or [`Upgrader::upgrade`] from code, a
//! [`Server`](crate::Server) starts its successor and hands it every listening socket:
//!
//! 1. **Start.** The executable at the path this process was started from
//!    (`argv[0]`, against the directory it started in), read again from disk, with the
//!    same arguments and environment, in its own process group. The listening sockets
//!    are its descriptors 3.. with `LISTEN_FDS` and `LISTEN_FDNAMES`, systemd's socket
//!    activation protocol; `TERMINUS_UPGRADE_FROM=<parent PID>` stands in for
//!    `LISTEN_PID`, which only the child could know (setting it after fork(2) needs
//!    `unsafe` code, and this crate forbids it).
//! 2. **Prove.** The successor's [`bind`](crate::bind) and [`bind_unix`](crate::bind_unix)
//!    take the inherited socket with the same address instead of binding (port 0 takes
//!    the parent's port), so the application needs no change. The successor accepts
//!    nothing until it is Serving (listeners taken, startup checks passed) and its
//!    readiness checks pass; then it sends `READY=1` to the datagram socket named by
//!    `TERMINUS_UPGRADE_NOTIFY_SOCKET` (the parent plays the service manager's part).
//!    Until then the parent serves exactly as before.
//! 3. **Hand over.** On `READY=1` the parent tells the service manager, if any
//!    (`MAINPID=<successor>` and `READY=1` to `NOTIFY_SOCKET`), writes the PID file
//!    (`TERMINUS_PID_FILE`), and shuts down with
//!    [`ShutdownReason::Upgrade`]: no drain delay (the
//!    address does not change), at Closing it stops accepting and leaves the kernel's
//!    queue to the successor, tells keep-alive clients to move (`Connection: close`,
//!    GOAWAY, WebSocket close), finishes what is in flight within `drain_timeout`, cuts
//!    and reports the rest, runs its hooks and exits with the usual code.
//! 4. **Or roll back.** A successor that exits, or is not ready within
//!    `TERMINUS_UPGRADE_TIMEOUT` (30 s), is killed with its process group, an `ERROR`
//!    event says why, and the process serves on; a later upgrade may be tried.
//!
//! One upgrade runs at a time: a signal during one is logged and ignored. A process
//! running as PID 1 (a container's) refuses to upgrade: its exit would end the
//! container; deploy a new container instead. `docs/deployment.md` has the whole story,
//! the systemd unit and the comparison with nginx, tableflip and socket activation.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use axum_terminus::{Layer, Server, Terminus, TerminusLayer};
//!
//! # async fn run() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder().from_env()?.build()?;
//! let app = TerminusLayer::new(&terminus).layer(Router::new().route("/", get(|| async { "v2" })));
//! // In a successor, this takes the parent's socket instead of binding.
//! let listener = axum_terminus::bind("127.0.0.1:3000", &terminus).await?;
//! let server = Server::new(&terminus).listener(listener, app);
//! let upgrader = server.upgrader(); // or: kill -USR2 <pid>
//! # let _ = upgrader;
//! Ok(server.run().await.exit_code())
//! # }
//! ```

mod announce;
mod inherit;
mod successor;

use std::fmt;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use terminus_core::health::CheckKind;
use terminus_core::{Phase, ShutdownReason, Terminus};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::listener::{self, TerminusListener};
use crate::lock;

pub(crate) use inherit::inherited;

/// How often a successor asks its readiness checks again before it says it is ready.
const READINESS_RETRY: Duration = Duration::from_millis(250);

/// Starts upgrades of a running [`Server`](crate::Server) from code, as the upgrade
/// signal does. Get one with [`Server::upgrader`](crate::Server::upgrader) before
/// `run`; clones drive the same server.
#[derive(Clone, Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "upgrade")))]
pub struct Upgrader {
    requests: mpsc::Sender<Answer>,
}

impl Upgrader {
    /// Upgrades the server in place, as its upgrade signal does, and returns the
    /// successor's PID once it is ready and this process has started to drain; or why
    /// it did not happen (the successor then killed, this process serving on).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future does not stop the upgrade: it runs in the server's task and
    /// goes on to its end; only the answer is lost.
    pub async fn upgrade(&self) -> Result<u32, UpgradeError> {
        let (answer, answered) = oneshot::channel();
        self.requests
            .send(answer)
            .await
            .map_err(|_| UpgradeError::NotServing)?;
        answered.await.unwrap_or(Err(UpgradeError::NotServing))
    }
}

/// Why an upgrade did not happen. The process serves on in every case.
#[derive(Debug)]
#[non_exhaustive]
#[cfg_attr(docsrs, doc(cfg(feature = "upgrade")))]
pub enum UpgradeError {
    /// Another upgrade is under way.
    InProgress,
    /// The server is not Serving: still starting, shutting down, or no longer running.
    NotServing,
    /// The process is PID 1 (a container's main process): its exit would end the
    /// container, successor and all. Roll out a new container instead.
    Pid1,
    /// These listeners cannot be handed over ([`TerminusListener::as_fd`] is `None`).
    Unsupported(Vec<String>),
    /// The successor could not be started.
    Spawn(std::io::Error),
    /// The successor exited before it was ready.
    Exited(std::process::ExitStatus),
    /// The successor was not ready within the upgrade timeout.
    NotReady(Duration),
    /// A shutdown started during the upgrade.
    ShuttingDown,
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::InProgress => f.write_str("another upgrade is under way"),
            UpgradeError::NotServing => f.write_str("the server is not serving"),
            UpgradeError::Pid1 => f.write_str(
                "this process is PID 1: its exit would end the container; roll out a new container instead",
            ),
            UpgradeError::Unsupported(names) => {
                write!(f, "these listeners cannot be handed over: {}", names.join(", "))
            }
            UpgradeError::Spawn(error) => write!(f, "cannot start the successor: {error}"),
            UpgradeError::Exited(status) => write!(f, "the successor exited before it was ready ({status})"),
            UpgradeError::NotReady(timeout) => write!(
                f,
                "the successor was not ready within {} (TERMINUS_UPGRADE_TIMEOUT)",
                humantime::format_duration(*timeout)
            ),
            UpgradeError::ShuttingDown => f.write_str("a shutdown started during the upgrade"),
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpgradeError::Spawn(error) => Some(error),
            _ => None,
        }
    }
}

impl crate::Server {
    /// A handle that upgrades this server in place from code (see [`upgrade`](self)),
    /// as `SIGUSR2` (`TERMINUS_UPGRADE_SIGNAL`) does.
    #[cfg_attr(docsrs, doc(cfg(feature = "upgrade")))]
    pub fn upgrader(&self) -> Upgrader {
        Upgrader {
            requests: self.upgrade.requests.clone(),
        }
    }
}

/// What a `Server` gathers for upgrades while it is built: a copy of each listening
/// socket (the listeners themselves move into their accept loops).
pub(crate) struct Handover {
    sockets: Vec<(String, OwnedFd)>,
    unsupported: Vec<String>,
    requests: mpsc::Sender<Answer>,
    received: mpsc::Receiver<Answer>,
}

impl Default for Handover {
    fn default() -> Self {
        // The start directory is read now, before the program can have changed it.
        let _ = inherited();
        let (requests, received) = mpsc::channel(4);
        Handover {
            sockets: Vec::new(),
            unsupported: Vec::new(),
            requests,
            received,
        }
    }
}

impl Handover {
    /// Keeps a copy of `listener`'s socket, to hand over.
    pub(crate) fn add<L>(&mut self, listener: &L)
    where
        L: TerminusListener,
        L::Addr: fmt::Debug,
    {
        let name = listener::name(listener);
        match listener.as_fd().map(|fd| fd.try_clone_to_owned()) {
            Some(Ok(fd)) => self.sockets.push((name, fd)),
            Some(Err(error)) => {
                tracing::warn!(target: "terminus", listener = %name, %error, "upgrade: cannot keep a copy of the socket");
                self.unsupported.push(name);
            }
            None => self.unsupported.push(name),
        }
    }

    /// Starts the server's upgrade task: it listens for the upgrade signal and calls,
    /// and (in a successor) opens the accept loops once ready, then tells the parent.
    pub(crate) fn start(self, terminus: &Terminus) -> Running {
        let (open, gate) = watch::channel(inherited().parent.is_none());
        let state = Arc::new(State {
            sockets: Mutex::new(Some(self.sockets)),
            on_trial: Mutex::new(None),
            stopped: CancellationToken::new(),
        });
        let task = tokio::spawn(supervise(
            terminus.clone(),
            Arc::clone(&state),
            self.unsupported,
            self.received,
            open,
        ));
        Running {
            gate: AcceptGate(gate),
            state,
            _task: tokio_util::task::AbortOnDropHandle::new(task),
        }
    }
}

/// The upgrade machinery of a running server; dropped (the task aborted) when the
/// server's run ends.
pub(crate) struct Running {
    pub(crate) gate: AcceptGate,
    state: Arc<State>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl Running {
    /// The shutdown started (whatever its reason): close the copies of the sockets
    /// before the listeners close, so that the kernel refuses new connections then, and
    /// kill a successor still on trial. Synchronous: done before Closing begins.
    pub(crate) fn stop(&self) {
        self.state.stopped.cancel();
        drop(lock(&self.state.sockets).take());
        if let Some(pid) = lock(&self.state.on_trial).take() {
            tracing::error!(target: "terminus", successor = pid, "upgrade rolled back: a shutdown started; successor killed");
            successor::kill_group(pid);
        }
    }
}

/// Shared by the upgrade task and the server's drain.
pub(crate) struct State {
    /// `None` once the shutdown started.
    sockets: Mutex<Option<Vec<(String, OwnedFd)>>>,
    /// The successor being tried, to kill if the shutdown starts.
    on_trial: Mutex<Option<u32>>,
    stopped: CancellationToken,
}

/// Holds a successor's accept loops until it is ready: until then, the parent serves
/// everything in the shared queue.
#[derive(Clone)]
pub(crate) struct AcceptGate(watch::Receiver<bool>);

impl AcceptGate {
    /// Waits until this server may accept: at once, except in a successor.
    pub(crate) async fn opened(&self) {
        let mut gate = self.0.clone();
        // The sender lives as long as the upgrade task; if it is gone, accept.
        let _ = gate.wait_for(|open| *open).await;
    }
}

type Attempt = Pin<Box<dyn Future<Output = Result<u32, UpgradeError>> + Send>>;
type Answer = oneshot::Sender<Result<u32, UpgradeError>>;

/// The upgrade task: announces readiness (or writes the PID file), then answers the
/// upgrade signal and calls, one upgrade at a time.
async fn supervise(
    terminus: Terminus,
    state: Arc<State>,
    unsupported: Vec<String>,
    mut requests: mpsc::Receiver<Answer>,
    open: watch::Sender<bool>,
) {
    let settings = terminus.config().upgrade().clone();
    let mut signals = listen(settings.signal());
    let announce = announce(&terminus, open);
    tokio::pin!(announce);
    let mut announced = false;
    let mut attempt: Option<(Attempt, Option<Answer>)> = None;
    loop {
        let answer = tokio::select! {
            () = &mut announce, if !announced => {
                announced = true;
                None
            }
            () = recv(&mut signals) => Some(None),
            answer = request(&mut requests) => Some(Some(answer)),
            result = finish(&mut attempt) => {
                if let Some((_, Some(answer))) = attempt.take() {
                    let _ = answer.send(result);
                }
                None
            }
        };
        let Some(answer) = answer else { continue };
        let refused = if attempt.is_some() {
            Some(UpgradeError::InProgress)
        } else if std::process::id() == 1 {
            Some(UpgradeError::Pid1)
        } else if !announced || terminus.phase() != Phase::Serving {
            Some(UpgradeError::NotServing)
        } else if !unsupported.is_empty() {
            Some(UpgradeError::Unsupported(unsupported.clone()))
        } else {
            None
        };
        match refused {
            Some(error) => {
                tracing::warn!(target: "terminus", %error, "upgrade refused; serving on");
                if let Some(answer) = answer {
                    let _ = answer.send(Err(error));
                }
            }
            None => {
                let future = upgrade(terminus.clone(), Arc::clone(&state), settings.clone());
                attempt = Some((Box::pin(future), answer));
            }
        }
    }
}

/// One upgrade: start the successor, and hand over once it is ready.
async fn upgrade(
    terminus: Terminus,
    state: Arc<State>,
    settings: terminus_core::UpgradeSettings,
) -> Result<u32, UpgradeError> {
    let started = tokio::time::Instant::now();
    let sockets = {
        let sockets = lock(&state.sockets);
        let Some(sockets) = sockets.as_ref() else {
            return Err(UpgradeError::NotServing);
        };
        sockets
            .iter()
            .map(|(name, fd)| fd.try_clone().map(|fd| (name.clone(), fd)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(UpgradeError::Spawn)?
    };
    tracing::info!(target: "terminus", "upgrade: starting the successor");
    let pid = match successor::start(&state, sockets, settings.timeout()).await {
        Ok(pid) => pid,
        Err(error) => {
            tracing::error!(target: "terminus", %error, "upgrade rolled back: serving on");
            return Err(error);
        }
    };
    announce::tell_service_manager(pid).await;
    if let Some(path) = settings.pid_file() {
        announce::write_pid_file(path, inherited().start_dir.as_deref(), pid).await;
    }
    tracing::info!(
        target: "terminus",
        successor = pid,
        ready_after_ms = started.elapsed().as_millis() as u64,
        "upgrade: successor ready; handing over and draining"
    );
    terminus.shutdown(ShutdownReason::Upgrade { successor: pid });
    Ok(pid)
}

/// Once Serving: in a successor, wait for the readiness checks, open the accept loops,
/// and tell the parent; in the first process, write the PID file. Pending forever if
/// the shutdown starts first.
async fn announce(terminus: &Terminus, open: watch::Sender<bool>) {
    let mut phases = terminus.subscribe();
    if phases.wait_for(|phase| *phase >= Phase::Serving).await.is_err() || terminus.phase() != Phase::Serving
    {
        return std::future::pending().await;
    }
    let inherited = inherited();
    let Some(parent) = &inherited.parent else {
        if let Some(path) = terminus.config().upgrade().pid_file() {
            announce::write_pid_file(path, inherited.start_dir.as_deref(), std::process::id()).await;
        }
        return;
    };
    while !terminus.probe(CheckKind::Readiness).await.passed() {
        if terminus.phase() != Phase::Serving {
            return std::future::pending().await;
        }
        tokio::time::sleep(READINESS_RETRY).await;
    }
    // Accept first, then tell: for a moment both processes accept from the shared
    // queue, which loses nothing; the other order would leave it to nobody.
    let _ = open.send(true);
    inherited.close_unclaimed();
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    match announce::send(&parent.notify_socket, &message).await {
        Ok(()) => tracing::info!(target: "terminus", parent = parent.pid, "upgrade: ready; told the parent"),
        Err(error) => tracing::error!(
            target: "terminus",
            parent = parent.pid,
            %error,
            "upgrade: cannot tell the parent this process is ready; it will kill this one at its timeout"
        ),
    }
}

/// Listens for the upgrade signal; `None` (logged) if there is none or it cannot be.
fn listen(signal: Option<terminus_core::Signal>) -> Option<tokio::signal::unix::Signal> {
    let signal = signal?;
    let kind = match signal {
        terminus_core::Signal::Usr2 => tokio::signal::unix::SignalKind::user_defined2(),
        terminus_core::Signal::Usr1 => tokio::signal::unix::SignalKind::user_defined1(),
        terminus_core::Signal::Hup => tokio::signal::unix::SignalKind::hangup(),
        terminus_core::Signal::Quit => tokio::signal::unix::SignalKind::quit(),
        terminus_core::Signal::Term => tokio::signal::unix::SignalKind::terminate(),
        terminus_core::Signal::Int => tokio::signal::unix::SignalKind::interrupt(),
        other => {
            tracing::warn!(target: "terminus", signal = other.name(), "upgrade: no such signal here; upgrades only from code");
            return None;
        }
    };
    match tokio::signal::unix::signal(kind) {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(target: "terminus", signal = signal.name(), %error, "upgrade: cannot listen for the signal; upgrades only from code");
            None
        }
    }
}

/// The next upgrade signal; pending forever if there is none to wait for.
async fn recv(signals: &mut Option<tokio::signal::unix::Signal>) {
    if let Some(signals) = signals {
        if signals.recv().await.is_some() {
            return;
        }
    }
    std::future::pending().await
}

/// The next call from an [`Upgrader`]; pending forever once none is left.
async fn request(requests: &mut mpsc::Receiver<Answer>) -> Answer {
    match requests.recv().await {
        Some(answer) => answer,
        None => std::future::pending().await,
    }
}

/// The end of the upgrade under way; pending forever if there is none.
async fn finish(attempt: &mut Option<(Attempt, Option<Answer>)>) -> Result<u32, UpgradeError> {
    match attempt {
        Some((future, _)) => future.await,
        None => std::future::pending().await,
    }
}
