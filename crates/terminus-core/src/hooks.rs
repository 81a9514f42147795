//! Shutdown hooks: named async functions, each run under its own deadline.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

/// The error type hooks return: anything that can be displayed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Turns a function of some state into the function of nothing that hooks take, by
/// cloning the state for every call: no clone-inside-the-closure dance.
///
/// ```
/// use terminus_core::{with_state, Terminus};
///
/// #[derive(Clone)]
/// struct Pool;
/// impl Pool {
///     async fn close(&self) {}
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = Pool;
/// let terminus = Terminus::builder()
///     .on_shutdown("close pool", with_state(pool.clone(), |pool| async move {
///         pool.close().await;
///         Ok(())
///     }))
///     .build()?;
/// # let _ = terminus; Ok(()) }
/// ```
pub fn with_state<S, F, Fut>(state: S, f: F) -> impl Fn() -> Fut + Send + Sync + 'static
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S) -> Fut + Send + Sync + 'static,
{
    move || f(state.clone())
}

type HookFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'static>>;
type HookFn = Arc<dyn Fn() -> HookFuture + Send + Sync + 'static>;

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookStage {
    /// At the start of Draining, while traffic is still served (terminus's `beforeShutdown`).
    BeforeShutdown,
    /// In CleaningUp, after connections are closed (terminus's `onSignal`).
    OnSignal,
    /// In CleaningUp, after every `on_signal` hook (terminus's `onShutdown`).
    OnShutdown,
}

impl HookStage {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HookStage::BeforeShutdown => "before_shutdown",
            HookStage::OnSignal => "on_signal",
            HookStage::OnShutdown => "on_shutdown",
        }
    }
}

impl fmt::Display for HookStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named hook.
#[derive(Clone)]
pub(crate) struct Hook {
    pub(crate) stage: HookStage,
    pub(crate) name: Cow<'static, str>,
    run: HookFn,
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hook")
            .field("stage", &self.stage)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Hook {
    pub(crate) fn new<F, Fut>(stage: HookStage, name: impl Into<Cow<'static, str>>, run: F) -> Hook
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Hook {
            stage,
            name: name.into(),
            run: Arc::new(move || Box::pin(run())),
        }
    }

    /// Runs the hook on its own task, so that a panic is caught and a hang can be
    /// abandoned at the deadline. Never fails: the result is reported and returned.
    /// The task is aborted when the deadline passes, and when this future is dropped
    /// (a second signal skips the rest of the shutdown).
    pub(crate) async fn run(&self, timeout: Duration) -> HookResult {
        let started = Instant::now();
        let task = AbortOnDropHandle::new(tokio::spawn((self.run)()));
        let status = match tokio::time::timeout(timeout, task).await {
            Ok(Ok(Ok(()))) => HookStatus::Ok,
            Ok(Ok(Err(error))) => HookStatus::Failed(error.to_string()),
            Ok(Err(join_error)) if join_error.is_panic() => HookStatus::Panicked,
            Ok(Err(_cancelled)) => HookStatus::Failed("cancelled".to_owned()),
            // Dropping the handle with the timed-out future aborted the task.
            Err(_elapsed) => HookStatus::TimedOut,
        };
        let elapsed = started.elapsed();
        crate::metrics::hook_ran(self.stage.as_str(), &self.name, elapsed, status.metric_label());
        let elapsed_ms = elapsed.as_millis() as u64;
        match &status {
            HookStatus::Ok => tracing::info!(
                target: "terminus", stage = %self.stage, hook = %self.name, elapsed_ms, "hook finished"
            ),
            HookStatus::Failed(error) => tracing::warn!(
                target: "terminus", stage = %self.stage, hook = %self.name, elapsed_ms, error = %error,
                "hook failed; continuing with the next one"
            ),
            HookStatus::Panicked => tracing::warn!(
                target: "terminus", stage = %self.stage, hook = %self.name, elapsed_ms,
                "hook panicked; continuing with the next one"
            ),
            HookStatus::TimedOut => tracing::warn!(
                target: "terminus", stage = %self.stage, hook = %self.name, elapsed_ms,
                timeout_ms = timeout.as_millis() as u64,
                "hook did not finish within cleanup_timeout; abandoned, continuing with the next one"
            ),
        }
        HookResult {
            stage: self.stage,
            name: self.name.clone(),
            status,
            elapsed,
        }
    }
}

/// How one hook ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookStatus {
    /// Returned `Ok(())` in time.
    Ok,
    /// Returned an error (its text).
    Failed(String),
    /// Panicked.
    Panicked,
    /// Did not finish within `cleanup_timeout` and was abandoned.
    TimedOut,
}

impl HookStatus {
    /// The `result` label of `terminus_hook_runs_total`.
    fn metric_label(&self) -> &'static str {
        match self {
            HookStatus::Ok => "ok",
            HookStatus::Failed(_) => "failed",
            HookStatus::Panicked => "panicked",
            HookStatus::TimedOut => "timed_out",
        }
    }
}

/// The report of one hook run, part of the [`Outcome`](crate::Outcome).
#[derive(Clone, Debug)]
pub struct HookResult {
    /// When it ran.
    pub stage: HookStage,
    /// Its name.
    pub name: Cow<'static, str>,
    /// How it ended.
    pub status: HookStatus,
    /// How long it ran.
    pub elapsed: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn hanging_hook_is_abandoned_at_its_deadline() {
        let hook = Hook::new(HookStage::OnShutdown, "hang", || async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let result = hook.run(Duration::from_secs(3)).await;
        assert_eq!(result.status, HookStatus::TimedOut);
        assert_eq!(result.elapsed, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hook_whose_run_is_dropped_is_aborted() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = std::sync::Mutex::new(Some(tx));
        let hook = Hook::new(HookStage::OnShutdown, "hang", move || {
            // Dropped when the task is aborted: the receiver then sees the channel closed.
            let tx = tx.lock().unwrap().take();
            async move {
                let _tx = tx;
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        let run = tokio::spawn(async move { hook.run(Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        run.abort();
        let closed = tokio::time::timeout(Duration::from_secs(1), rx).await;
        assert!(
            matches!(closed, Ok(Err(_))),
            "the hook's task was aborted with its run"
        );
    }

    #[tokio::test]
    async fn failing_and_panicking_hooks_are_reported() {
        let failing = Hook::new(HookStage::OnSignal, "fail", || async { Err("db gone".into()) });
        assert_eq!(
            failing.run(Duration::from_secs(1)).await.status,
            HookStatus::Failed("db gone".to_owned())
        );
        let panicking = Hook::new(HookStage::OnSignal, "panic", || async { panic!("boom") });
        assert_eq!(
            panicking.run(Duration::from_secs(1)).await.status,
            HookStatus::Panicked
        );
    }
}
