//! [`Probing`]: one probe, started by [`Terminus::probe`](crate::Terminus::probe).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::report::Report;

/// One probe of a [`Terminus`](crate::Terminus), from
/// [`Terminus::probe`](crate::Terminus::probe): a future of its [`Report`].
///
/// When every result the probe needs is fresh in the cache (or the lifecycle decides
/// without running a check), the report is already here: [`now`](Probing::now) takes
/// it without polling, and awaiting it returns it on the first poll. A server uses
/// `now` to answer most probes without a task or a boxed future; everyone else just
/// awaits.
///
/// The cache and the lifecycle are read when the probe is made, not when it is first
/// polled: await it at once (a `Probing` kept for later may describe a server that has
/// since begun to shut down).
///
/// # Cancel safety
///
/// Dropping a `Probing` stops waiting, nothing more. The checks it started keep
/// running on their own tasks until their timeouts, and their results go to the cache
/// for the next probe, exactly as when other probes share the run.
#[must_use = "a probe does nothing unless awaited (or its report taken with `now`)"]
pub struct Probing {
    state: State,
}

enum State {
    Ready(Report),
    Running(Pin<Box<dyn Future<Output = Report> + Send + Sync>>),
    Done,
}

impl Probing {
    pub(crate) fn ready(report: Report) -> Probing {
        Probing {
            state: State::Ready(report),
        }
    }

    pub(crate) fn running(future: impl Future<Output = Report> + Send + Sync + 'static) -> Probing {
        Probing {
            state: State::Running(Box::pin(future)),
        }
    }

    /// The report, if it needed no waiting; otherwise the probe back, to await.
    ///
    /// ```
    /// use terminus_core::health::CheckKind;
    /// use terminus_core::server::ServerExt as _;
    /// use terminus_core::Terminus;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let terminus = Terminus::builder().build()?;
    /// terminus.mark_listeners_bound();
    /// // No check to run: the lifecycle alone decides, so the report is here at once.
    /// let report = match terminus.probe(CheckKind::Readiness).now() {
    ///     Ok(report) => report,
    ///     Err(running) => running.await,
    /// };
    /// assert!(report.passed());
    /// # Ok(()) }
    /// ```
    pub fn now(self) -> Result<Report, Probing> {
        match self.state {
            State::Ready(report) => Ok(report),
            state => Err(Probing { state }),
        }
    }
}

impl Future for Probing {
    type Output = Report;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Report> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Ready(report) => Poll::Ready(report),
            State::Running(mut future) => {
                let poll = future.as_mut().poll(cx);
                if poll.is_pending() {
                    self.state = State::Running(future);
                }
                poll
            }
            State::Done => panic!("`Probing` polled after it returned its report"),
        }
    }
}

impl fmt::Debug for Probing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Ready(_) => "ready",
            State::Running(_) => "running",
            State::Done => "done",
        };
        f.debug_struct("Probing").field("state", &state).finish()
    }
}
