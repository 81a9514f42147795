//! Telling the service manager what the lifecycle does (`sd_notify`).
//!
//! sd-notify formats the messages and reads `WATCHDOG_USEC`; the send is ours, because
//! its `notify` blocks until the service manager's socket has room, and a service
//! manager that stopped reading would then hold a runtime worker for good.

use std::ffi::OsString;
use std::io;
use std::time::Duration;

use sd_notify::NotifyState;
use terminus_core::{Phase, Terminus};
use tokio::task::JoinHandle;

/// How long a message may wait for room in the service manager's socket before it is
/// dropped. systemd reads its socket at once: a queue still full after this is one that
/// nobody reads, and waiting longer would only delay the exit.
const SEND_BOUND: Duration = Duration::from_millis(100);

/// Starts a task that tells the service manager about every phase change, and pings
/// its watchdog, until the shutdown is complete. `None` (and no task) when the process
/// was not started by systemd with `Type=notify` (no `NOTIFY_SOCKET`).
///
/// - `READY=1` when Serving: with `Type=notify`, systemd starts the units ordered
///   after this one only then, and `systemctl start` returns only then;
/// - `STOPPING=1` at Draining (even if the phase was passed too fast to be seen);
/// - `STATUS=<phase>` at each phase, with the shutdown's reason, the requests in
///   flight at Closing, and the exit status when stopped (`systemctl status` shows it);
/// - `WATCHDOG=1` every half `WATCHDOG_USEC` (`WatchdogSec=` in the unit), from the
///   start until the shutdown is complete.
///
/// Messages are sent one at a time, in that order, and never block a runtime thread.
/// `NOTIFY_SOCKET` is a path, or on Linux an abstract socket (`@name`). When the
/// service manager's socket is full (nobody reads it), a message waits at most 100 ms
/// for room, then is dropped with a `warn` event naming the socket; an error sending
/// it (no such socket) is a `warn` event too. Either way the lifecycle goes on: a
/// service manager that stopped listening never holds up the probes or the shutdown.
///
/// [`Server::run`](crate::Server::run) and [`shutdown_signal`](crate::shutdown_signal)
/// call it: call it yourself only for a server that uses neither. `Server::run` returns
/// only once the last message is sent (or dropped); with `shutdown_signal`, a process
/// that exits as soon as [`Terminus::outcome`] resolves may leave out the final
/// `STATUS=stopped` (systemd learns of the exit all the same). The task ends with the
/// shutdown: await the handle to be sure everything was sent.
pub fn spawn_notifier(terminus: &Terminus) -> Option<JoinHandle<()>> {
    let socket = std::env::var_os("NOTIFY_SOCKET")?;
    let watchdog = sd_notify::watchdog_enabled();
    let manager = Manager { socket };
    Some(tokio::spawn(notify(terminus.clone(), manager, watchdog)))
}

async fn notify(terminus: Terminus, manager: Manager, watchdog: Option<Duration>) {
    let mut phases = terminus.subscribe();
    let mut watchdog = watchdog.map(|period| {
        let mut ticks = tokio::time::interval((period / 2).max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let mut told = Told::default();
    loop {
        let phase = *phases.borrow_and_update();
        // Handed over in an upgrade: the successor is the main process now and tells
        // the service manager itself; a STOPPING=1 from here would stop the unit.
        if let Some(terminus_core::ShutdownReason::Upgrade { .. }) = terminus.shutdown_reason() {
            return;
        }
        told.phase(phase, &terminus, &manager).await;
        if phase == Phase::Stopped {
            return;
        }
        tokio::select! {
            changed = phases.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick(&mut watchdog) => manager.send(&[NotifyState::Watchdog]).await,
        }
    }
}

async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What the service manager was told so far. The watch channel keeps only the latest
/// phase, so one seen late may stand for several: `STOPPING=1` is still sent once.
#[derive(Default)]
struct Told {
    last: Option<Phase>,
    stopping: bool,
}

impl Told {
    async fn phase(&mut self, phase: Phase, terminus: &Terminus, manager: &Manager) {
        if self.last == Some(phase) {
            return;
        }
        self.last = Some(phase);
        // One line: a newline would start another assignment.
        let status = status(phase, terminus).await.replace('\n', " ");
        let mut states = Vec::with_capacity(2);
        if phase == Phase::Serving {
            states.push(NotifyState::Ready);
        }
        if phase.is_shutting_down() && !self.stopping {
            self.stopping = true;
            states.push(NotifyState::Stopping);
        }
        states.push(NotifyState::Status(&status));
        manager.send(&states).await;
    }
}

/// What `systemctl status` shows in each phase.
async fn status(phase: Phase, terminus: &Terminus) -> String {
    let reason = || {
        terminus
            .shutdown_reason()
            .map(|reason| reason.to_string())
            .unwrap_or_default()
    };
    match phase {
        Phase::Starting => "starting".to_owned(),
        Phase::Serving => "serving".to_owned(),
        Phase::Draining => format!("draining ({}): readiness fails, requests are served", reason()),
        Phase::Closing => format!("closing: {} requests in flight", terminus.in_flight()),
        Phase::CleaningUp => "cleaning up: running the shutdown hooks".to_owned(),
        Phase::Stopped => {
            // Published before Stopped is entered: ready at once.
            let outcome = terminus.outcome().await;
            let how = if outcome.is_graceful() {
                "graceful"
            } else {
                "forced"
            };
            format!("stopped: {how}, exit status {}", outcome.exit_status())
        }
    }
}

/// The service manager's end of the protocol: a datagram socket at `NOTIFY_SOCKET`.
struct Manager {
    socket: OsString,
}

impl Manager {
    /// Sends `states` in one datagram, `KEY=value` lines as sd-notify writes them;
    /// dropped with a warning when the socket stays full for [`SEND_BOUND`].
    async fn send(&self, states: &[NotifyState<'_>]) {
        let message: String = states.iter().map(|state| format!("{state}\n")).collect();
        let socket = self.socket.to_string_lossy();
        match tokio::time::timeout(SEND_BOUND, self.try_send(message.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(target: "terminus", %socket, %error, "cannot notify the service manager");
            }
            Err(_) => tracing::warn!(
                target: "terminus",
                %socket,
                message = %message.trim_end().replace('\n', " "),
                waited_ms = SEND_BOUND.as_millis() as u64,
                "the service manager's socket is full: notification dropped"
            ),
        }
    }

    async fn try_send(&self, message: &[u8]) -> io::Result<()> {
        crate::datagram::send(&self.socket, message).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn messages_reach_an_abstract_socket_as_sd_notify_writes_them() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("terminus-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = std::os::unix::net::UnixDatagram::bind_addr(&address).unwrap();
        let manager = Manager {
            socket: format!("@{name}").into(),
        };
        manager
            .send(&[NotifyState::Ready, NotifyState::Status("serving")])
            .await;
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\nSTATUS=serving\n");
    }

    #[tokio::test]
    async fn a_message_to_a_full_socket_is_dropped_after_the_bound() {
        let path = std::env::temp_dir().join(format!("terminus-notify-full-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let _receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // Fill the receiver's queue: senders until a fresh one is refused at once.
        let mut fillers = Vec::new();
        for _ in 0..64 {
            let sender = crate::datagram::connect(path.as_os_str())
                .unwrap()
                .into_std()
                .unwrap();
            let sent = (0..10_000)
                .take_while(|_| sender.send(b"FILLER=1\n").is_ok())
                .count();
            fillers.push(sender);
            if sent == 0 {
                break;
            }
        }
        let manager = Manager {
            socket: path.clone().into(),
        };
        let started = std::time::Instant::now();
        manager.send(&[NotifyState::Watchdog]).await;
        let took = started.elapsed();
        let _ = std::fs::remove_file(&path);
        assert!(
            took >= SEND_BOUND && took < SEND_BOUND * 10,
            "waited for room, then gave up: {took:?}"
        );
    }
}
