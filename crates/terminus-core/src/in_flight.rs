//! Counting work that shutdown must wait for: in-flight requests and tracked tasks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};

/// A count that can be awaited until it reaches zero.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    count: AtomicUsize,
    /// How many tasks are in `wait_zero`. Nobody waits until the shutdown, so the
    /// request path skips `notify_waiters` (which takes a lock) almost always.
    waiters: AtomicUsize,
    zero: Notify,
}

impl Counter {
    pub(crate) fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub(crate) fn increment(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn decrement(&self) {
        // SeqCst here and in `wait_zero` (a Dekker pair): either this decrement sees the
        // waiter, or the waiter sees the count this decrement left.
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.waiters.load(Ordering::SeqCst) > 0 {
            self.zero.notify_waiters();
        }
    }

    /// Resolves once the count is zero.
    pub(crate) async fn wait_zero(&self) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        loop {
            // Register interest before reading the count: a decrement to zero between
            // the read and the await would otherwise be missed (notify_waiters does not
            // store a permit).
            let notified = self.zero.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Counts a `wait_zero` caller out again, however its future ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Proof that one request is in flight. Dropping it ends the request.
///
/// Obtained from [`ShutdownController::track_request`](crate::ShutdownController::track_request);
/// `tower-terminus` holds one from `call` until the response body ends.
#[derive(Debug)]
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct RequestGuard {
    inner: Arc<crate::controller::Inner>,
}

impl RequestGuard {
    pub(crate) fn new(inner: Arc<crate::controller::Inner>) -> RequestGuard {
        inner.in_flight.increment();
        RequestGuard { inner }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.inner.is_shutting_down() {
            self.inner.drained.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.in_flight.decrement();
    }
}

/// Tasks started with `spawn_tracked`: counted, and abortable when the drain deadline passes.
#[derive(Debug, Default)]
pub(crate) struct TrackedTasks {
    counter: Counter,
    next_id: AtomicU64,
    aborts: Mutex<HashMap<u64, AbortHandle>>,
}

impl TrackedTasks {
    pub(crate) fn count(&self) -> usize {
        self.counter.get()
    }

    pub(crate) async fn wait_zero(&self) {
        self.counter.wait_zero().await
    }

    pub(crate) fn spawn<F>(self: &Arc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.counter.increment();
        let guard = TaskGuard {
            tasks: Arc::clone(self),
            id,
        };
        // The aborts lock is held across spawn + insert, so the task's own removal (on
        // completion, in TaskGuard::drop) cannot run before its handle is inserted.
        let mut aborts = self.lock();
        let handle = tokio::spawn(async move {
            let _guard = guard;
            future.await
        });
        aborts.insert(id, handle.abort_handle());
        handle
    }

    /// Aborts every tracked task still running; returns how many.
    pub(crate) fn abort_all(&self) -> usize {
        let aborts: Vec<AbortHandle> = self.lock().drain().map(|(_, handle)| handle).collect();
        let cut = aborts.iter().filter(|handle| !handle.is_finished()).count();
        for handle in aborts {
            handle.abort();
        }
        cut
    }

    /// The map is only inserted into, removed from and drained, so it stays whole even
    /// if a holder panicked: `controller::lock` ignores the poison.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, AbortHandle>> {
        crate::controller::lock(&self.aborts)
    }
}

struct TaskGuard {
    tasks: Arc<TrackedTasks>,
    id: u64,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.tasks.lock().remove(&self.id);
        self.tasks.counter.decrement();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn counter_wait_resolves_when_the_last_unit_ends() {
        let counter = Arc::new(Counter::default());
        counter.increment();
        counter.increment();
        let waiter = tokio::spawn({
            let counter = Arc::clone(&counter);
            async move { counter.wait_zero().await }
        });
        counter.decrement();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!waiter.is_finished());
        counter.decrement();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("wait_zero resolves at zero")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn aborting_tracked_tasks_releases_their_count() {
        let tasks = Arc::new(TrackedTasks::default());
        let _endless = tasks.spawn(std::future::pending::<()>());
        let done = tasks.spawn(async {});
        done.await.unwrap();
        assert_eq!(tasks.count(), 1);
        assert_eq!(tasks.abort_all(), 1);
        tokio::time::timeout(Duration::from_secs(1), tasks.wait_zero())
            .await
            .expect("aborted task releases its count");
    }
}
