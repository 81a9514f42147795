//! The shutdown sequence: Draining, Closing, CleaningUp, Stopped.
//!
//! [`ShutdownController::run`] drives it; the server plugs in through [`Drain`],
//! which is how connections are told to move, closed, awaited and cut.

use std::future::Future;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

use crate::controller::{lock, ShutdownController};
use crate::hooks::{HookResult, HookStage};
use crate::outcome::{Forced, Outcome, PhaseDurations, ShutdownReason};
use crate::phase::Phase;

/// What a server does at each step of the shutdown. `axum-terminus` implements it
/// for its accept loop; [`NoConnections`] is the implementation for code that only
/// needs requests and tracked tasks drained.
pub trait Drain: Send {
    /// Draining began: ask persistent connections to move elsewhere (HTTP/2 GOAWAY).
    /// The listener keeps accepting.
    fn start_draining(&mut self) {}

    /// Closing began: stop accepting, close idle connections, let busy ones finish
    /// their current requests.
    fn close(&mut self);

    /// Resolves once every connection has finished.
    fn idle(&mut self) -> impl Future<Output = ()> + Send;

    /// The deadline passed: cut every connection still open and report each one.
    /// Returns how many were cut.
    fn force_close(&mut self) -> usize;
}

/// A [`Drain`] with no connections of its own: `run` then waits only for in-flight
/// requests and tracked tasks.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoConnections;

impl Drain for NoConnections {
    fn close(&mut self) {}

    async fn idle(&mut self) {}

    fn force_close(&mut self) -> usize {
        0
    }
}

impl ShutdownController {
    /// Waits for a shutdown to start (signal, [`shutdown`](Self::shutdown), fatal error),
    /// then drives it to the end and returns what happened:
    ///
    /// 1. **Draining** for `drain_delay`, running `before_shutdown` hooks meanwhile;
    /// 2. **Closing**: `drain.close()`, then wait for zero in-flight requests, zero
    ///    tracked tasks and `drain.idle()`, at most `drain_timeout`; then cut the rest;
    /// 3. **CleaningUp**: `on_signal` then `on_shutdown` hooks, each within `cleanup_timeout`;
    /// 4. **Stopped**.
    ///
    /// A second signal (or [`force`](Self::force)) at any point cuts everything at once
    /// and skips the remaining hooks. `run` drives one shutdown: a later call returns the
    /// same outcome once the first has finished.
    pub async fn run(&self, mut drain: impl Drain) -> Outcome {
        if self.inner.running.swap(true, Ordering::AcqRel) {
            return self.wait_for_outcome().await;
        }
        self.listen_for_signals();
        let inner = &self.inner;
        let config = &inner.config;
        let force = inner.force.clone();

        inner.draining.cancelled().await;
        let reason = self
            .shutdown_reason()
            .unwrap_or_else(|| ShutdownReason::from("unknown"));
        let mut durations = PhaseDurations::default();
        let mut hooks = Vec::new();
        let mut forced = None;

        // Draining: readiness already fails (the phase changed when the shutdown was
        // asked for); keep serving so that the balancer notices before we refuse anything.
        let draining_started = Instant::now();
        drain.start_draining();
        let delay = async {
            // sleep(ZERO) still waits for the timer's next tick (1 ms): skip it.
            if !config.drain_delay.is_zero() {
                tokio::time::sleep(config.drain_delay).await;
            }
        };
        let before = self.run_hooks(HookStage::BeforeShutdown, &mut hooks);
        tokio::select! {
            biased;
            _ = force.cancelled() => forced = Some(Forced::SecondSignal),
            (before, ()) = async { tokio::join!(before, delay) } => {
                if let Err(second_signal) = before {
                    forced = Some(second_signal);
                }
            }
        }
        durations.draining = draining_started.elapsed();

        // Closing: stop accepting and wait for what is in flight, up to the deadline.
        let closing_started = Instant::now();
        inner.enter(Phase::Closing, "drain delay over");
        drain.close();
        let mut connections_cut = 0;
        let mut tasks_cut = 0;
        if forced.is_none() {
            let settled = async {
                tokio::join!(
                    inner.in_flight.wait_zero(),
                    inner.tracked.wait_zero(),
                    drain.idle()
                );
            };
            tokio::select! {
                biased;
                _ = force.cancelled() => forced = Some(Forced::SecondSignal),
                () = settled => {}
                () = tokio::time::sleep(config.drain_timeout) => forced = Some(Forced::DrainTimeout),
            }
        }
        if forced.is_some() {
            // Tasks first: cutting a connection wakes whatever waits on its socket (an
            // upgraded WebSocket session, say), which could then finish on another worker
            // before being counted. An aborted task never runs again, so it is reported.
            tasks_cut = inner.tracked.abort_all();
            connections_cut = drain.force_close();
            tracing::warn!(
                target: "terminus",
                cause = ?forced,
                connections_cut,
                tasks_cut,
                requests_in_flight = inner.in_flight.get(),
                "forced close: cut what was still running"
            );
        }
        durations.closing = closing_started.elapsed();

        // CleaningUp: a second signal means "stop now", so no more hooks after it.
        let cleanup_started = Instant::now();
        inner.enter(Phase::CleaningUp, "connections closed");
        if forced != Some(Forced::SecondSignal) {
            let cleanup = async {
                self.run_hooks(HookStage::OnSignal, &mut hooks).await?;
                self.run_hooks(HookStage::OnShutdown, &mut hooks).await
            };
            if let Err(second_signal) = cleanup.await {
                forced = Some(second_signal);
            }
        }
        durations.cleaning_up = cleanup_started.elapsed();

        inner.enter(Phase::Stopped, "cleanup done");
        let outcome = Outcome {
            reason,
            forced,
            requests_drained: inner.drained.load(Ordering::Relaxed),
            connections_cut,
            tasks_cut,
            durations,
            hooks,
            fatal: self.fatal(),
            policy: config.exit_code_policy,
        };
        tracing::info!(
            target: "terminus",
            reason = %outcome.reason,
            graceful = outcome.is_graceful(),
            requests_drained = outcome.requests_drained,
            connections_cut,
            tasks_cut,
            hooks_failed = outcome.failed_hooks().count(),
            draining_ms = durations.draining.as_millis() as u64,
            closing_ms = durations.closing.as_millis() as u64,
            cleaning_up_ms = durations.cleaning_up.as_millis() as u64,
            exit_status = outcome.exit_status(),
            "shutdown complete"
        );
        *lock(&inner.outcome) = Some(outcome.clone());
        outcome
    }

    /// Runs the hooks of one stage in order, each bounded by `cleanup_timeout`.
    /// Stops early (with `Err`) when a second signal arrives.
    async fn run_hooks(&self, stage: HookStage, results: &mut Vec<HookResult>) -> Result<(), Forced> {
        let timeout = self.inner.config.cleanup_timeout;
        for hook in self.inner.hooks.iter().filter(|hook| hook.stage == stage) {
            tokio::select! {
                biased;
                _ = self.inner.force.cancelled() => return Err(Forced::SecondSignal),
                result = hook.run(timeout) => results.push(result),
            }
        }
        Ok(())
    }

    async fn wait_for_outcome(&self) -> Outcome {
        let mut phases = self.subscribe();
        loop {
            if let Some(outcome) = lock(&self.inner.outcome).clone() {
                return outcome;
            }
            if phases.changed().await.is_err() {
                // The sender lives in the controller we hold, so it cannot be dropped;
                // yield and look again rather than spin if that ever changes.
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HookStatus;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn controller(builder: crate::Builder) -> ShutdownController {
        let controller = builder.build().expect("valid config");
        controller.mark_listeners_bound();
        controller
    }

    #[tokio::test(start_paused = true)]
    async fn phases_follow_the_documented_order_and_deadlines() {
        let controller = controller(
            ShutdownController::builder()
                .drain_delay(Duration::from_secs(5))
                .drain_timeout(Duration::from_secs(20)),
        );
        assert_eq!(controller.phase(), Phase::Serving);
        let request = controller.track_request();
        controller.shutdown("test");
        assert_eq!(controller.phase(), Phase::Draining);
        assert!(controller.is_live() && !controller.is_ready());
        let runner = tokio::spawn({
            let controller = controller.clone();
            async move { controller.run(NoConnections).await }
        });
        tokio::time::sleep(Duration::from_millis(4900)).await;
        assert_eq!(controller.phase(), Phase::Draining, "drain delay not over yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(controller.phase(), Phase::Closing, "waiting for the request");
        drop(request);
        let outcome = runner.await.unwrap();
        assert_eq!(controller.phase(), Phase::Stopped);
        assert!(outcome.is_graceful());
        assert_eq!(outcome.durations.draining, Duration::from_secs(5));
        assert_eq!(outcome.durations.closing, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_waits_for_in_flight_requests_then_stops() {
        let controller = controller(ShutdownController::builder().drain_delay(Duration::ZERO));
        let guard = controller.track_request();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(guard);
        });
        let started = tokio::time::Instant::now();
        controller.shutdown("test");
        let outcome = controller.run(NoConnections).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(outcome.is_graceful());
        assert_eq!(outcome.requests_drained, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn tracked_task_past_drain_timeout_is_cut() {
        let controller = controller(
            ShutdownController::builder()
                .drain_delay(Duration::ZERO)
                .drain_timeout(Duration::from_secs(4)),
        );
        let endless = controller.spawn_tracked(std::future::pending::<()>());
        let started = tokio::time::Instant::now();
        controller.shutdown("test");
        let outcome = controller.run(NoConnections).await;
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        assert_eq!(outcome.forced, Some(Forced::DrainTimeout));
        assert_eq!(outcome.tasks_cut, 1);
        assert!(endless.await.unwrap_err().is_cancelled());
        assert_eq!(outcome.exit_status(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hooks_run_in_stage_order_and_a_hanging_one_is_bounded() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let record = |name: &'static str| {
            let order = Arc::clone(&order);
            move || {
                let order = Arc::clone(&order);
                async move {
                    order.lock().unwrap().push(name);
                    Ok(())
                }
            }
        };
        let controller = controller(
            ShutdownController::builder()
                .drain_delay(Duration::ZERO)
                .cleanup_timeout(Duration::from_secs(3))
                .on_shutdown("last", record("on_shutdown"))
                .on_signal("hang", || async {
                    std::future::pending::<()>().await;
                    Ok(())
                })
                .on_signal("signal", record("on_signal"))
                .before_shutdown("first", record("before_shutdown")),
        );
        let started = tokio::time::Instant::now();
        controller.shutdown("test");
        let outcome = controller.run(NoConnections).await;
        assert_eq!(
            *order.lock().unwrap(),
            vec!["before_shutdown", "on_signal", "on_shutdown"]
        );
        assert_eq!(started.elapsed(), Duration::from_secs(3), "one hook timed out");
        let statuses: Vec<_> = outcome
            .hooks
            .iter()
            .map(|h| (h.name.as_ref(), h.status.clone()))
            .collect();
        assert_eq!(
            statuses,
            vec![
                ("first", HookStatus::Ok),
                ("hang", HookStatus::TimedOut),
                ("signal", HookStatus::Ok),
                ("last", HookStatus::Ok),
            ]
        );
        assert!(outcome.is_graceful(), "a failed hook does not force the exit");
    }

    #[tokio::test(start_paused = true)]
    async fn force_skips_remaining_phases_and_hooks() {
        let ran = Arc::new(Mutex::new(false));
        let flag = Arc::clone(&ran);
        let controller = controller(
            ShutdownController::builder()
                .drain_delay(Duration::from_secs(30))
                .on_shutdown("never", move || {
                    let flag = Arc::clone(&flag);
                    async move {
                        *flag.lock().unwrap() = true;
                        Ok(())
                    }
                }),
        );
        controller.shutdown("first");
        let runner = tokio::spawn({
            let controller = controller.clone();
            async move { controller.run(NoConnections).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        controller.force();
        let outcome = runner.await.unwrap();
        assert_eq!(outcome.forced, Some(Forced::SecondSignal));
        assert!(!*ran.lock().unwrap());
        assert_eq!(controller.phase(), Phase::Stopped);
        assert!(outcome.durations.total() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn fatal_error_fails_liveness_and_starts_shutdown() {
        let controller = controller(ShutdownController::builder());
        assert!(controller.is_live());
        controller.set_fatal("listen 127.0.0.1:3000: address in use");
        assert!(!controller.is_live());
        assert_eq!(controller.phase(), Phase::Draining);
        assert!(matches!(
            controller.shutdown_reason(),
            Some(ShutdownReason::Fatal(_))
        ));
    }

    #[tokio::test]
    async fn readiness_waits_for_mark_ready_when_required() {
        let controller = ShutdownController::builder()
            .require_mark_ready(true)
            .build()
            .unwrap();
        controller.mark_listeners_bound();
        assert_eq!(controller.phase(), Phase::Starting);
        controller.mark_ready();
        assert_eq!(controller.phase(), Phase::Serving);
    }

    #[tokio::test]
    async fn shutdown_during_startup_skips_serving() {
        let controller = ShutdownController::builder().build().unwrap();
        controller.shutdown("early");
        controller.mark_listeners_bound();
        assert_eq!(controller.phase(), Phase::Draining);
    }
}
