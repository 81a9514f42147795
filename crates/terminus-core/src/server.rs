//! What servers and middleware built on terminus-core need beyond an application's API.
//!
//! Applications do not use this module: `tower-terminus` and `axum-terminus` do. It is
//! public so that another server (or a middleware for another protocol) can drive the
//! same lifecycle: import [`ServerExt`] and the methods below appear on
//! [`Terminus`]. Keeping them in a trait keeps them off the page an application
//! developer reads.
//!
//! A server's side of the contract:
//!
//! 1. call [`mark_listeners_bound`](ServerExt::mark_listeners_bound) once every
//!    listener is bound (readiness waits for it);
//! 2. take a [`RequestGuard`] for every request and hold it until the response has
//!    ended, after calling [`track_requests_at_connections`](ServerExt::track_requests_at_connections)
//!    so that `TerminusLayer` does not count them a second time;
//! 3. call [`Terminus::run`] with its [`Drain`](crate::Drain) implementation.

use std::future::Future;
use std::sync::Arc;

use crate::health::{LifecycleState, ProbeRequest, Report};
pub use crate::requests::ProbeMatcher;
use crate::requests::{DescribeRequest, RequestGuard};
use crate::terminus::Terminus;

/// The server-side methods of a [`Terminus`]; see the [module documentation](self).
pub trait ServerExt: sealed::Sealed {
    /// Every listener is bound: Serving may begin (once `mark_ready` and the startup
    /// checks allow it).
    fn mark_listeners_bound(&self);

    /// Counts one request as in flight until the guard is dropped; Closing waits for
    /// it, and if the drain deadline cuts it, `request` reports it.
    fn track_request<D: DescribeRequest>(&self, request: D) -> RequestGuard<D>;

    /// This server tracks every request at its connections: middleware that would
    /// otherwise track requests (`TerminusLayer`) steps aside, so that no request is
    /// counted twice.
    fn track_requests_at_connections(&self);

    /// Whether a server said it tracks requests itself.
    fn requests_tracked_by_server(&self) -> bool;

    /// A snapshot of the lifecycle, as probes see it.
    fn lifecycle_state(&self) -> LifecycleState;

    /// Runs one probe as `request` describes it. A complete startup probe that passes
    /// marks startup as done.
    fn probe(&self, request: &ProbeRequest) -> impl Future<Output = Report> + Send;

    /// Tells servers which requests are probes: middleware that answers probes itself
    /// (`TerminusLayer`, when built) registers how it recognises them, so that a server
    /// tracking requests at its connections leaves them out, as the layer does. Probes
    /// are never counted as requests in flight, drained or cut.
    fn add_probe_matcher(&self, matcher: Arc<dyn ProbeMatcher>);

    /// Every probe matcher registered so far.
    fn probe_matchers(&self) -> Vec<Arc<dyn ProbeMatcher>>;

    /// The report [`probe`](ServerExt::probe) would give, if every result it needs is
    /// fresh in the cache; `None` (and nothing started) otherwise. Lets a server answer
    /// most probes without a task or a boxed future. Startup probes always return
    /// `None`: only `probe` can mark startup as done.
    fn cached_probe(&self, request: &ProbeRequest) -> Option<Report>;
}

impl ServerExt for Terminus {
    fn mark_listeners_bound(&self) {
        Terminus::mark_listeners_bound(self);
    }

    fn track_request<D: DescribeRequest>(&self, request: D) -> RequestGuard<D> {
        Terminus::track_request(self, request)
    }

    fn track_requests_at_connections(&self) {
        Terminus::track_requests_at_connections(self);
    }

    fn requests_tracked_by_server(&self) -> bool {
        Terminus::requests_tracked_by_server(self)
    }

    fn lifecycle_state(&self) -> LifecycleState {
        Terminus::lifecycle_state(self)
    }

    fn probe(&self, request: &ProbeRequest) -> impl Future<Output = Report> + Send {
        Terminus::probe(self, request)
    }

    fn add_probe_matcher(&self, matcher: Arc<dyn ProbeMatcher>) {
        Terminus::add_probe_matcher(self, matcher);
    }

    fn probe_matchers(&self) -> Vec<Arc<dyn ProbeMatcher>> {
        Terminus::probe_matchers(self)
    }

    fn cached_probe(&self, request: &ProbeRequest) -> Option<Report> {
        Terminus::cached_probe(self, request)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Terminus {}
}
