//! The `Watch` stream: the current status, each change, and at Draining `NOT_SERVING`
//! and the end.
//!
//! A watcher waits on two things at once: the phase (a `watch` channel, so the shutdown
//! is seen the moment it begins) and a timer for the checks (whose results only change
//! when the registry runs them again, at most once per cache TTL). Between the two it
//! sleeps: no busy loop, and a thousand watchers of one service share each check run.

use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use terminus_core::Phase;
use tokio::sync::watch;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::HealthCheckResponse;

use crate::state::{HealthState, Target};

/// The stream a `Watch` call answers with.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

struct Watcher {
    state: Arc<HealthState>,
    target: Option<Target>,
    phases: watch::Receiver<Phase>,
    last: Option<ServingStatus>,
    ended: bool,
}

pub(crate) fn watch_stream(state: Arc<HealthState>, service: String) -> WatchStream {
    let watcher = Watcher {
        target: state.services.get(&service).cloned(),
        phases: state.terminus.subscribe(),
        state,
        last: None,
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(watcher, |mut watcher| async move {
        let status = watcher.next().await?;
        Some((
            Ok(HealthCheckResponse {
                status: status.into(),
            }),
            watcher,
        ))
    }))
}

impl Watcher {
    /// The next status to send, or `None` when the stream ends.
    async fn next(&mut self) -> Option<ServingStatus> {
        if self.ended {
            return None;
        }
        loop {
            // Marked before the status is read: a shutdown that begins in between is
            // then seen on the next wait instead of being missed.
            self.phases.borrow_and_update();
            let status = match &self.target {
                Some(target) => self.state.status(target).await,
                None => ServingStatus::ServiceUnknown,
            };
            if self.state.terminus.phase().is_shutting_down() {
                self.ended = true;
                // A known service's last word is NOT_SERVING, an unknown one's
                // SERVICE_UNKNOWN; either is sent only if it was not the last one sent.
                let last = match self.target {
                    Some(_) => ServingStatus::NotServing,
                    None => ServingStatus::ServiceUnknown,
                };
                return (self.last != Some(last)).then_some(last);
            }
            if self.last != Some(status) {
                self.last = Some(status);
                return Some(status);
            }
            if !self.wait().await {
                // The `Terminus` is gone: nothing will change any more.
                self.ended = true;
                return None;
            }
        }
    }

    /// Sleeps until the phase changes or, for a known service, the watch interval is
    /// over; `false` if the phase can no longer change.
    async fn wait(&mut self) -> bool {
        if self.target.is_none() {
            // The registry is fixed: only the phase can change what an unknown name says.
            return self.phases.changed().await.is_ok();
        }
        tokio::select! {
            changed = self.phases.changed() => changed.is_ok(),
            () = tokio::time::sleep(self.state.watch_interval) => true,
        }
    }
}
