//! The shutdown sequence: Draining, Closing, CleaningUp, Stopped.
//!
//! [`Terminus::run`](crate::Terminus::run) waits for a shutdown, then hands this file
//! a [`Lifecycle`] (the parts of the `Terminus` a shutdown uses) and the [`Progress`]
//! it holds the lock of; [`Shutdown::run`] reads as the timeline it drives, one step
//! per phase. The server plugs in through [`Drain`], which is how connections are told
//! to move, closed, awaited and cut.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::hooks::{Hook, HookResult, HookStage};
use crate::outcome::{Forced, Outcome, PhaseDurations, ShutdownReason};
use crate::phase::{Phase, PhaseCell};
use crate::requests::Requests;
use crate::tasks::TrackedTasks;

/// What a server does at each step of the shutdown. `axum-terminus` implements it for
/// its accept loops and connections; [`NoConnections`] is the implementation for code
/// that only needs requests and tracked tasks drained.
pub trait Drain: Send {
    /// Draining began: ask persistent connections to move elsewhere (HTTP/2 GOAWAY).
    /// The listeners keep accepting.
    fn start_draining(&mut self) {}

    /// Closing began: stop accepting (taking in what the kernel already accepted),
    /// close idle connections, let busy ones finish their current requests.
    fn close(&mut self);

    /// Resolves once every connection has closed.
    ///
    /// **Cancel safety:** `run` drops this future when the drain deadline passes (or a
    /// second signal arrives) and then calls [`force_close`](Drain::force_close), so
    /// dropping it must lose nothing that `force_close` needs: keep the connections in
    /// `self`, not in the future.
    fn closed(&mut self) -> impl Future<Output = ()> + Send;

    /// The deadline passed: cut every connection that still has a request or an
    /// upgraded session in flight (reporting each one), and close the rest. Returns
    /// how many were cut; connections with nothing in flight do not count.
    fn force_close(&mut self) -> usize;
}

/// A [`Drain`] with no connections of its own: `run` then waits only for requests
/// in flight and tracked tasks. For servers that manage their own connections, such as
/// `axum::serve` with a graceful-shutdown future.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoConnections;

impl Drain for NoConnections {
    fn close(&mut self) {}

    async fn closed(&mut self) {}

    fn force_close(&mut self) -> usize {
        0
    }
}

/// After a cut, how long to wait for the cut requests to be dropped (and so reported)
/// before the outcome is written. Aborted tasks drop their futures within
/// milliseconds; this only bounds a request held somewhere nothing was aborted.
const CUT_REPORT_WAIT: Duration = Duration::from_secs(1);

/// How far the shutdown got. It lives in the `Terminus`, behind the lock that makes one
/// `run` the driver, so that a `run` dropped part way (a `select!` whose other branch
/// won) leaves everything a later `run` needs to go on from there.
#[derive(Default)]
pub(crate) struct Progress {
    /// When the drain step began (the drain delay counts from it).
    draining_since: Option<Instant>,
    /// When Closing began (`drain_timeout` counts from it).
    closing_since: Option<Instant>,
    durations: PhaseDurations,
    /// The results of the hooks that ran to the end, and their indices among the
    /// registered hooks: a resumed shutdown runs each hook once.
    hooks: Vec<HookResult>,
    hooks_done: Vec<usize>,
    connections_cut: usize,
    tasks_cut: usize,
    forced: Option<Forced>,
    /// The effective configuration was logged.
    announced: bool,
}

impl Progress {
    /// `true` the first time only: the first `run` logs the effective configuration.
    pub(crate) fn first_announcement(&mut self) -> bool {
        !std::mem::replace(&mut self.announced, true)
    }
}

/// What a shutdown uses of a `Terminus`, lent by [`Terminus::run`](crate::Terminus::run):
/// the phase it moves, the token a second signal cancels, the requests and tracked tasks
/// it waits for and cuts, the hooks it runs, the deadlines it keeps, the fatal error it
/// reports, and the slot it publishes the outcome in. Nothing else of the `Terminus` is
/// reachable from here.
#[derive(Clone, Copy)]
pub(crate) struct Lifecycle<'a> {
    pub(crate) config: &'a Config,
    pub(crate) hooks: &'a [Hook],
    pub(crate) phase: &'a PhaseCell,
    pub(crate) force: &'a CancellationToken,
    pub(crate) requests: &'a Requests,
    pub(crate) tasks: &'a TrackedTasks,
    pub(crate) fatal: &'a OnceLock<String>,
    pub(crate) outcome: &'a OnceLock<Outcome>,
}

/// One shutdown in progress, driven by the `run` that holds the lock of its [`Progress`].
pub(crate) struct Shutdown<'a, D> {
    lifecycle: Lifecycle<'a>,
    drain: D,
    reason: ShutdownReason,
    progress: &'a mut Progress,
}

impl<'a, D: Drain> Shutdown<'a, D> {
    pub(crate) fn new(
        lifecycle: Lifecycle<'a>,
        reason: ShutdownReason,
        drain: D,
        progress: &'a mut Progress,
    ) -> Self {
        Shutdown {
            lifecycle,
            drain,
            reason,
            progress,
        }
    }

    /// The timeline: each step the shutdown has not passed yet (a resumed shutdown
    /// starts where the dropped `run` stopped), then the outcome.
    pub(crate) async fn run(mut self) -> Outcome {
        if self.lifecycle.phase.get() < Phase::Closing {
            self.drain().await;
        }
        if self.lifecycle.phase.get() < Phase::CleaningUp {
            self.close().await;
        }
        if self.progress.forced != Some(Forced::SecondSignal) {
            self.clean_up().await;
        }
        self.finish()
    }

    /// Remembers the first reason the stop was forced.
    fn forced(&mut self, result: Result<(), Forced>) {
        if let Err(forced) = result {
            self.progress.forced.get_or_insert(forced);
        }
    }

    /// Draining: readiness already fails (the phase changed when the shutdown was asked
    /// for); keep serving for `drain_delay` so that balancers notice before anything is
    /// refused, while the `before_shutdown` hooks run.
    async fn drain(&mut self) {
        let started = *self.progress.draining_since.get_or_insert_with(Instant::now);
        self.drain.start_draining();
        // After an upgrade the successor already accepts on the same sockets: nobody has
        // to stop routing here first, so there is nothing to wait for.
        let drain_delay = match self.reason {
            ShutdownReason::Upgrade { .. } => Duration::ZERO,
            _ => self.lifecycle.config.drain_delay,
        };
        let delay = drain_delay.saturating_sub(started.elapsed());
        let delay = async {
            // sleep(ZERO) still waits for the timer's next tick (1 ms): skip it.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        };
        let lifecycle = self.lifecycle;
        let hooks = run_hooks(lifecycle, HookStage::BeforeShutdown, self.progress);
        let result = tokio::select! {
            biased;
            _ = lifecycle.force.cancelled() => Err(Forced::SecondSignal),
            (result, ()) = async { tokio::join!(hooks, delay) } => result,
        };
        self.progress.durations.draining = started.elapsed();
        self.forced(result);
    }

    /// Closing: stop accepting and wait for what is in flight, up to `drain_timeout`;
    /// then cut what is left. Forced only if something in flight had to be cut (or a
    /// second signal came, or the drain step was forced).
    async fn close(&mut self) {
        let started = *self.progress.closing_since.get_or_insert_with(Instant::now);
        let lifecycle = self.lifecycle;
        lifecycle.phase.enter(Phase::Closing, "drain delay over");
        lifecycle.tasks.close();
        self.drain.close();
        let cause = match self.progress.forced {
            Some(forced) => Some(forced),
            None => self.settle(started).await.err(),
        };
        if let Some(cause) = cause {
            let result = self.cut(cause).await;
            self.forced(result);
        }
        self.progress.durations.closing = started.elapsed();
    }

    /// Waits until nothing is in flight and every connection has closed, at most
    /// `drain_timeout` after Closing `started`.
    async fn settle(&mut self, started: Instant) -> Result<(), Forced> {
        let lifecycle = self.lifecycle;
        let settled = async {
            tokio::join!(
                lifecycle.requests.wait(),
                lifecycle.tasks.wait(),
                self.drain.closed()
            );
        };
        tokio::select! {
            biased;
            _ = lifecycle.force.cancelled() => Err(Forced::SecondSignal),
            () = settled => Ok(()),
            () = tokio::time::sleep_until(started + lifecycle.config.drain_timeout) => Err(Forced::DrainTimeout),
        }
    }

    /// Cuts whatever is still running. A drain timeout with nothing in flight (only
    /// idle connections left) is not forced.
    async fn cut(&mut self, cause: Forced) -> Result<(), Forced> {
        let lifecycle = self.lifecycle;
        // Counted before anything is aborted. Tasks go first: cutting a connection wakes
        // whatever waits on its socket (an upgraded WebSocket session, say), which could
        // then finish on another worker before being counted.
        let requests = lifecycle.requests.start_cutting();
        let tasks_cut = lifecycle.tasks.abort_all();
        crate::metrics::tasks_cut(tasks_cut);
        let connections_cut = self.drain.force_close();
        self.progress.tasks_cut += tasks_cut;
        self.progress.connections_cut += connections_cut;
        let anything_cut = requests > 0 || tasks_cut > 0 || connections_cut > 0;
        if anything_cut {
            tracing::warn!(
                target: "terminus",
                cause = cause.as_str(),
                requests_cut = requests,
                connections_cut,
                tasks_cut,
                "forced close: cut what was still running"
            );
            // The cut requests report themselves as their guards are dropped.
            let _ = tokio::time::timeout(CUT_REPORT_WAIT, lifecycle.requests.wait()).await;
        }
        if anything_cut || cause == Forced::SecondSignal {
            Err(cause)
        } else {
            Ok(())
        }
    }

    /// CleaningUp: the `on_signal` then the `on_shutdown` hooks.
    async fn clean_up(&mut self) {
        let started = Instant::now();
        let lifecycle = self.lifecycle;
        lifecycle.phase.enter(Phase::CleaningUp, "connections closed");
        let result = async {
            run_hooks(lifecycle, HookStage::OnSignal, self.progress).await?;
            run_hooks(lifecycle, HookStage::OnShutdown, self.progress).await
        }
        .await;
        self.progress.durations.cleaning_up += started.elapsed();
        self.forced(result);
    }

    /// Stopped: the outcome is published first, so that whoever sees Stopped finds it.
    fn finish(self) -> Outcome {
        let lifecycle = self.lifecycle;
        let skipped = self.progress.forced == Some(Forced::SecondSignal);
        // A second signal may skip the clean-up: the phase still passes through it.
        lifecycle.phase.enter(Phase::CleaningUp, "hooks skipped");
        let outcome = Outcome {
            reason: self.reason,
            forced: self.progress.forced,
            requests_drained: lifecycle.requests.drained(),
            requests_cut: lifecycle.requests.cut(),
            connections_cut: self.progress.connections_cut,
            tasks_cut: self.progress.tasks_cut,
            durations: self.progress.durations,
            hooks: self.progress.hooks.clone(),
            fatal: lifecycle.fatal.get().cloned(),
            policy: lifecycle.config.exit_code_policy,
        };
        // Only the driver of the shutdown gets here, once: the slot is empty.
        let _ = lifecycle.outcome.set(outcome.clone());
        let reason = if skipped {
            "second signal: hooks skipped"
        } else {
            "cleanup done"
        };
        lifecycle.phase.enter(Phase::Stopped, reason);
        // Text fields as `str`, as every other event writes them (quoted by `fmt`).
        let why = outcome.reason.to_string();
        tracing::info!(
            target: "terminus",
            reason = why.as_str(),
            graceful = outcome.is_graceful(),
            hooks_skipped = skipped,
            requests_drained = outcome.requests_drained,
            requests_cut = outcome.requests_cut,
            connections_cut = outcome.connections_cut,
            tasks_cut = outcome.tasks_cut,
            hooks_failed = outcome.failed_hooks().count(),
            draining_ms = outcome.durations.draining.as_millis() as u64,
            closing_ms = outcome.durations.closing.as_millis() as u64,
            cleaning_up_ms = outcome.durations.cleaning_up.as_millis() as u64,
            exit_status = outcome.exit_status(),
            "shutdown complete"
        );
        outcome
    }
}

/// Runs the hooks of one stage in order, each bounded by `cleanup_timeout`, skipping
/// those a dropped `run` already finished. Stops early (with `Err`) when a second
/// signal arrives; the hook then running is aborted.
async fn run_hooks(
    lifecycle: Lifecycle<'_>,
    stage: HookStage,
    progress: &mut Progress,
) -> Result<(), Forced> {
    let timeout = lifecycle.config.cleanup_timeout;
    for (index, hook) in lifecycle.hooks.iter().enumerate() {
        if hook.stage != stage || progress.hooks_done.contains(&index) {
            continue;
        }
        tokio::select! {
            biased;
            _ = lifecycle.force.cancelled() => return Err(Forced::SecondSignal),
            result = hook.run(timeout) => {
                progress.hooks.push(result);
                progress.hooks_done.push(index);
            }
        }
    }
    if lifecycle.force.is_cancelled() {
        return Err(Forced::SecondSignal);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HookStatus;
    use crate::outcome::ShutdownReason;
    use crate::Terminus;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A hook that appends `name` to `log` each time it runs.
    fn recorder(
        log: &Arc<Mutex<Vec<&'static str>>>,
        name: &'static str,
    ) -> impl Fn() -> std::future::Ready<Result<(), crate::BoxError>> + Send + Sync + 'static {
        let log = Arc::clone(log);
        move || {
            log.lock().unwrap().push(name);
            std::future::ready(Ok(()))
        }
    }

    fn serving(builder: crate::Builder) -> Terminus {
        let terminus = builder.build().expect("valid config");
        terminus.mark_listeners_bound();
        terminus
    }

    #[tokio::test(start_paused = true)]
    async fn phases_follow_the_documented_order_and_deadlines() {
        let terminus = serving(
            Terminus::builder()
                .drain_delay(Duration::from_secs(5))
                .drain_timeout(Duration::from_secs(20)),
        );
        assert_eq!(terminus.phase(), Phase::Serving);
        let request = terminus.track_request(());
        terminus.shutdown("test");
        assert_eq!(terminus.phase(), Phase::Draining);
        assert!(terminus.is_live() && !terminus.is_ready());
        let runner = tokio::spawn({
            let terminus = terminus.clone();
            async move { terminus.run(NoConnections).await }
        });
        tokio::time::sleep(Duration::from_millis(4900)).await;
        assert_eq!(terminus.phase(), Phase::Draining, "drain delay not over yet");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(terminus.phase(), Phase::Closing, "waiting for the request");
        drop(request);
        let outcome = runner.await.unwrap();
        assert_eq!(terminus.phase(), Phase::Stopped);
        assert!(outcome.is_graceful());
        assert_eq!(outcome.durations.draining, Duration::from_secs(5));
        assert_eq!(outcome.durations.closing, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn closing_waits_for_in_flight_requests_then_stops() {
        let terminus = serving(Terminus::builder().drain_delay(Duration::ZERO));
        let guard = terminus.track_request(());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(guard);
        });
        let started = tokio::time::Instant::now();
        terminus.shutdown("test");
        let outcome = terminus.run(NoConnections).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(outcome.is_graceful());
        assert_eq!(outcome.requests_drained, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn tracked_task_past_drain_timeout_is_cut() {
        let terminus = serving(
            Terminus::builder()
                .drain_delay(Duration::ZERO)
                .drain_timeout(Duration::from_secs(4)),
        );
        let endless = terminus.spawn_tracked(std::future::pending::<()>());
        let started = tokio::time::Instant::now();
        terminus.shutdown("test");
        let outcome = terminus.run(NoConnections).await;
        assert_eq!(started.elapsed(), Duration::from_secs(4));
        assert_eq!(outcome.forced, Some(Forced::DrainTimeout));
        assert_eq!(outcome.tasks_cut, 1);
        assert!(endless.await.unwrap_err().is_cancelled());
        assert_eq!(outcome.exit_status(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn hooks_run_in_stage_order_and_a_hanging_one_is_bounded() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let record = |name| recorder(&order, name);
        let terminus = serving(
            Terminus::builder()
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
        terminus.shutdown("test");
        let outcome = terminus.run(NoConnections).await;
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
        let terminus = serving(
            Terminus::builder()
                .drain_delay(Duration::from_secs(30))
                .on_shutdown("never", move || {
                    let flag = Arc::clone(&flag);
                    async move {
                        *flag.lock().unwrap() = true;
                        Ok(())
                    }
                }),
        );
        terminus.shutdown("first");
        let runner = tokio::spawn({
            let terminus = terminus.clone();
            async move { terminus.run(NoConnections).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        terminus.force();
        let outcome = runner.await.unwrap();
        assert_eq!(outcome.forced, Some(Forced::SecondSignal));
        assert!(!*ran.lock().unwrap());
        assert_eq!(terminus.phase(), Phase::Stopped);
        assert!(outcome.durations.total() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn fatal_error_fails_liveness_and_starts_shutdown() {
        let terminus = serving(Terminus::builder());
        assert!(terminus.is_live());
        terminus.set_fatal("listen 127.0.0.1:3000: address in use");
        assert!(!terminus.is_live());
        assert_eq!(terminus.phase(), Phase::Draining);
        assert!(matches!(
            terminus.shutdown_reason(),
            Some(ShutdownReason::Fatal(_))
        ));
    }

    #[tokio::test]
    async fn readiness_waits_for_mark_ready_when_required() {
        let terminus = Terminus::builder().require_mark_ready(true).build().unwrap();
        terminus.mark_listeners_bound();
        assert_eq!(terminus.phase(), Phase::Starting);
        terminus.mark_ready();
        assert_eq!(terminus.phase(), Phase::Serving);
    }

    #[tokio::test]
    async fn shutdown_during_startup_skips_serving() {
        let terminus = Terminus::builder().build().unwrap();
        terminus.shutdown("early");
        terminus.mark_listeners_bound();
        assert_eq!(terminus.phase(), Phase::Draining);
    }

    /// A `Drain` whose connections never close by themselves, and which has `cut`
    /// connections with something in flight when the deadline comes.
    struct Stubborn {
        cut: usize,
    }

    impl Drain for Stubborn {
        fn close(&mut self) {}

        async fn closed(&mut self) {
            std::future::pending::<()>().await
        }

        fn force_close(&mut self) -> usize {
            self.cut
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_with_only_idle_connections_left_is_not_forced() {
        let terminus = serving(
            Terminus::builder()
                .drain_delay(Duration::ZERO)
                .drain_timeout(Duration::from_secs(2)),
        );
        terminus.shutdown("test");
        let outcome = terminus.run(Stubborn { cut: 0 }).await;
        assert!(outcome.is_graceful(), "{outcome:?}");
        assert_eq!((outcome.requests_cut, outcome.connections_cut), (0, 0));
        assert_eq!(outcome.exit_status(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_connection_forces_the_stop() {
        let terminus = serving(
            Terminus::builder()
                .drain_delay(Duration::ZERO)
                .drain_timeout(Duration::from_secs(2)),
        );
        terminus.shutdown("test");
        let outcome = terminus.run(Stubborn { cut: 1 }).await;
        assert_eq!(outcome.forced, Some(Forced::DrainTimeout));
        assert_eq!(outcome.connections_cut, 1);
    }

    /// Holds `n` requests until a cut aborts the task holding them, as a server's
    /// connection task would.
    fn hold_requests(terminus: &Terminus, n: usize) -> tokio::task::JoinHandle<()> {
        let guards: Vec<_> = (0..n).map(|_| terminus.track_request(())).collect();
        tokio::spawn(async move {
            let _guards = guards;
            std::future::pending::<()>().await
        })
    }

    /// A `Drain` that cuts by aborting the task holding the requests.
    struct AbortOnCut(Option<tokio::task::JoinHandle<()>>);

    impl Drain for AbortOnCut {
        fn close(&mut self) {}

        async fn closed(&mut self) {
            std::future::pending::<()>().await
        }

        fn force_close(&mut self) -> usize {
            match self.0.take() {
                Some(task) => {
                    task.abort();
                    1
                }
                None => 0,
            }
        }
    }

    async fn cut_counts(held: usize, finished: usize) -> Outcome {
        let terminus = serving(
            Terminus::builder()
                .drain_delay(Duration::ZERO)
                .drain_timeout(Duration::from_secs(1)),
        );
        let done: Vec<_> = (0..finished).map(|_| terminus.track_request(())).collect();
        let held = (held > 0).then(|| hold_requests(&terminus, held));
        let before = terminus.track_request(());
        drop(before); // ended before the shutdown: neither drained nor cut
        terminus.shutdown("test");
        drop(done);
        terminus.run(AbortOnCut(held)).await
    }

    #[tokio::test(start_paused = true)]
    async fn outcome_counts_drained_and_cut_requests_apart() {
        let none = cut_counts(0, 3).await;
        assert_eq!((none.requests_drained, none.requests_cut), (3, 0));
        assert!(none.is_graceful());

        let one = cut_counts(1, 2).await;
        assert_eq!((one.requests_drained, one.requests_cut), (2, 1));
        assert_eq!(one.forced, Some(Forced::DrainTimeout));

        let many = cut_counts(500, 7).await;
        assert_eq!((many.requests_drained, many.requests_cut), (7, 500));
        assert_eq!(many.connections_cut, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_during_a_hook_aborts_it_and_skips_the_rest() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = Mutex::new(Some(tx));
        let terminus = serving(
            Terminus::builder()
                .drain_delay(Duration::ZERO)
                .cleanup_timeout(Duration::from_secs(30))
                .on_signal("hang", move || {
                    let tx = tx.lock().unwrap().take();
                    async move {
                        let _tx = tx; // dropped when the hook's task is aborted
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                }),
        );
        terminus.shutdown("test");
        let runner = tokio::spawn({
            let terminus = terminus.clone();
            async move { terminus.run(NoConnections).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        terminus.force();
        let outcome = runner.await.unwrap();
        assert_eq!(outcome.forced, Some(Forced::SecondSignal));
        assert!(
            matches!(tokio::time::timeout(Duration::from_secs(1), rx).await, Ok(Err(_))),
            "the skipped hook's task was aborted"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_runs_on_a_multi_threaded_runtime_never_hang() {
        // run() announces Stopped only after the outcome is stored: a second run woken
        // by the phase change on another worker must find it. 1,000 rounds.
        for round in 0..1000 {
            let terminus = serving(Terminus::builder().drain_delay(Duration::ZERO));
            let runs: Vec<_> = (0..3)
                .map(|_| {
                    let terminus = terminus.clone();
                    tokio::spawn(async move { terminus.run(NoConnections).await })
                })
                .collect();
            let waiter = tokio::spawn({
                let terminus = terminus.clone();
                async move { terminus.outcome().await }
            });
            terminus.shutdown("test");
            for run in runs {
                let outcome = tokio::time::timeout(Duration::from_secs(10), run)
                    .await
                    .unwrap_or_else(|_| panic!("run() hung in round {round}"))
                    .unwrap();
                assert!(outcome.is_graceful());
            }
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .unwrap_or_else(|_| panic!("outcome() hung in round {round}"))
                .unwrap();
        }
    }

    /// Polls `future` once and drops it, as a `select!` whose other branch won would.
    async fn poll_once_and_drop(future: impl Future<Output = Outcome>) {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            let _ = future.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_dropped_before_the_shutdown_leaves_the_next_run_in_charge() {
        for round in 0..200 {
            let terminus = serving(Terminus::builder().drain_delay(Duration::ZERO));
            poll_once_and_drop(terminus.run(NoConnections)).await;
            let run = tokio::spawn({
                let terminus = terminus.clone();
                async move { terminus.run(NoConnections).await }
            });
            let waiter = tokio::spawn({
                let terminus = terminus.clone();
                async move { terminus.outcome().await }
            });
            terminus.shutdown("test");
            let outcome = tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .unwrap_or_else(|_| panic!("run() hung after a dropped run() in round {round}"))
                .unwrap();
            assert!(outcome.is_graceful());
            tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .unwrap_or_else(|_| panic!("outcome() hung in round {round}"))
                .unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_dropped_during_the_shutdown_is_resumed_without_repeating_hooks() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = |name| recorder(&calls, name);
        let terminus = serving(
            Terminus::builder()
                .drain_delay(Duration::from_secs(5))
                .drain_timeout(Duration::from_secs(10))
                .before_shutdown("before", record("before"))
                .on_shutdown("after", record("after")),
        );
        let request = terminus.track_request(());
        terminus.shutdown("test");
        let started = tokio::time::Instant::now();
        // Dropped 2 s into the drain delay, after the before_shutdown hook ran.
        let _ = tokio::time::timeout(Duration::from_secs(2), terminus.run(NoConnections)).await;
        assert_eq!(terminus.phase(), Phase::Draining);
        let run = tokio::spawn({
            let terminus = terminus.clone();
            async move { terminus.run(NoConnections).await }
        });
        tokio::time::sleep(Duration::from_millis(3100)).await;
        assert_eq!(terminus.phase(), Phase::Closing, "the remaining 3 s of the delay");
        // Dropped again while Closing waits for the request.
        run.abort();
        let _ = run.await;
        drop(request);
        let outcome = terminus.run(NoConnections).await;
        assert!(outcome.is_graceful(), "{outcome:?}");
        assert_eq!(outcome.requests_drained, 1);
        assert_eq!(
            *calls.lock().unwrap(),
            vec!["before", "after"],
            "each hook ran once"
        );
        assert_eq!(outcome.hooks.len(), 2);
        assert_eq!(outcome.durations.draining, Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(terminus.phase(), Phase::Stopped);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_waits_for_requests_on_a_multi_threaded_runtime() {
        let terminus = serving(Terminus::builder().drain_delay(Duration::from_millis(50)));
        let guards: Vec<_> = (0..50).map(|_| terminus.track_request(())).collect();
        for (i, guard) in guards.into_iter().enumerate() {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100 + i as u64)).await;
                drop(guard);
            });
        }
        terminus.shutdown("test");
        let outcome = terminus.run(NoConnections).await;
        assert!(outcome.is_graceful());
        assert_eq!((outcome.requests_drained, outcome.requests_cut), (50, 0));
        assert_eq!(terminus.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_on_a_multi_threaded_runtime_counts_every_request_once() {
        let terminus = serving(
            Terminus::builder()
                .drain_delay(Duration::ZERO)
                .drain_timeout(Duration::from_millis(200)),
        );
        let held = hold_requests(&terminus, 100);
        let finishing: Vec<_> = (0..100).map(|_| terminus.track_request(())).collect();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(finishing);
        });
        terminus.shutdown("test");
        let outcome = terminus.run(AbortOnCut(Some(held))).await;
        assert_eq!((outcome.requests_drained, outcome.requests_cut), (100, 100));
        assert!(!outcome.is_graceful());
    }
}
