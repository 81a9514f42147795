//! Tasks started with [`Terminus::spawn_tracked`](crate::Terminus::spawn_tracked):
//! counted, awaited by Closing, and aborted when the drain deadline passes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::{AbortHandle, Id, JoinHandle};
use tokio_util::task::task_tracker::TaskTrackerWaitFuture;
use tokio_util::task::TaskTracker;

use crate::lock;

#[derive(Debug, Default)]
pub(crate) struct TrackedTasks {
    tracker: TaskTracker,
    /// How to abort each task still running; a task removes itself when it ends.
    running: Mutex<HashMap<Id, AbortHandle>>,
}

impl TrackedTasks {
    pub(crate) fn spawn<F>(self: &Arc<Self>, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // Held across spawn and insert, so that a task that ends at once cannot remove
        // its entry before it was inserted.
        let mut running = lock(&self.running);
        let tasks = Arc::clone(self);
        let handle = self.tracker.spawn(async move {
            let _forget = Forget(tasks, tokio::task::id());
            future.await
        });
        running.insert(handle.id(), handle.abort_handle());
        handle
    }

    pub(crate) fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Closing began: `wait` resolves once no tracked task runs.
    pub(crate) fn close(&self) {
        self.tracker.close();
    }

    pub(crate) fn wait(&self) -> TaskTrackerWaitFuture<'_> {
        self.tracker.wait()
    }

    /// Aborts every task still running; returns how many there were.
    pub(crate) fn abort_all(&self) -> usize {
        let running: Vec<AbortHandle> = lock(&self.running).drain().map(|(_, handle)| handle).collect();
        let cut = running.iter().filter(|handle| !handle.is_finished()).count();
        for handle in running {
            handle.abort();
        }
        cut
    }
}

/// Removes a task's abort handle when the task ends, however it ends.
struct Forget(Arc<TrackedTasks>, Id);

impl Drop for Forget {
    fn drop(&mut self) {
        lock(&self.0.running).remove(&self.1);
    }
}
