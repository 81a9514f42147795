//! Telling the service manager what the lifecycle does (`sd_notify`).

use std::time::Duration;

use sd_notify::NotifyState;
use terminus_core::{Phase, Terminus};
use tokio::task::JoinHandle;

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
/// [`Server::run`](crate::Server::run) and [`shutdown_signal`](crate::shutdown_signal)
/// call it: call it yourself only for a server that uses neither. `Server::run` returns
/// only once the last message is sent; with `shutdown_signal`, a process that exits as
/// soon as [`Terminus::outcome`] resolves may leave out the final `STATUS=stopped`
/// (systemd learns of the exit all the same). The task ends with the shutdown: await
/// the handle to be sure everything was sent.
pub fn spawn_notifier(terminus: &Terminus) -> Option<JoinHandle<()>> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let watchdog = sd_notify::watchdog_enabled();
    Some(tokio::spawn(notify(terminus.clone(), watchdog)))
}

async fn notify(terminus: Terminus, watchdog: Option<Duration>) {
    let mut phases = terminus.subscribe();
    let mut watchdog = watchdog.map(|period| {
        let mut ticks = tokio::time::interval((period / 2).max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let mut told = Told::default();
    loop {
        let phase = *phases.borrow_and_update();
        told.phase(phase, &terminus).await;
        if phase == Phase::Stopped {
            return;
        }
        tokio::select! {
            changed = phases.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick(&mut watchdog) => send(&[NotifyState::Watchdog]),
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
    async fn phase(&mut self, phase: Phase, terminus: &Terminus) {
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
        send(&states);
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

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(target: "terminus", %error, "cannot notify the service manager");
    }
}
