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
//!    ended, and call the service inside [`call_tracked`], so that `TerminusLayer`
//!    does not count the request a second time and can say it was a probe (which is
//!    not counted at all);
//! 3. call [`Terminus::run`] with its [`Drain`](crate::Drain) implementation.

use std::future::Future;
use std::sync::Arc;

use crate::health::{LifecycleState, ProbeRequest, Report};
#[allow(deprecated)]
pub use crate::requests::ProbeMatcher;
pub use crate::requests::{answered_as_probe, call_tracked, leave_count_to_server, Answered};
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

    /// Does nothing: a server calls its service inside [`call_tracked`] instead, so
    /// that the layer leaves those requests, and only those, to it.
    #[deprecated(note = "call the service inside `terminus_core::server::call_tracked`")]
    fn track_requests_at_connections(&self) {}

    /// Whether the request being handled now is counted by the server that called it.
    #[deprecated(note = "use `terminus_core::server::leave_count_to_server`")]
    fn requests_tracked_by_server(&self) -> bool {
        crate::requests::in_server_call()
    }

    /// A snapshot of the lifecycle, as probes see it.
    fn lifecycle_state(&self) -> LifecycleState;

    /// Runs one probe as `request` describes it.
    #[deprecated(note = "use `Terminus::probe`, whose report is ready at once when the cache holds it")]
    fn probe(&self, request: &ProbeRequest) -> impl Future<Output = Report> + Send;

    /// Does nothing: a middleware that answers a probe says so with
    /// [`answered_as_probe`], and the server learns it from [`call_tracked`].
    #[deprecated(note = "call `terminus_core::server::answered_as_probe` when answering a probe")]
    #[allow(deprecated)]
    fn add_probe_matcher(&self, _matcher: Arc<dyn ProbeMatcher>) {}

    /// Always empty: see [`add_probe_matcher`](ServerExt::add_probe_matcher).
    #[deprecated(note = "servers learn that a request was a probe from `call_tracked`")]
    #[allow(deprecated)]
    fn probe_matchers(&self) -> Vec<Arc<dyn ProbeMatcher>> {
        Vec::new()
    }

    /// The report of `request` if every result it needs is fresh in the cache.
    #[deprecated(note = "use `Terminus::probe(request).now()`")]
    fn cached_probe(&self, request: &ProbeRequest) -> Option<Report>;
}

impl ServerExt for Terminus {
    fn mark_listeners_bound(&self) {
        Terminus::mark_listeners_bound(self);
    }

    fn track_request<D: DescribeRequest>(&self, request: D) -> RequestGuard<D> {
        Terminus::track_request(self, request)
    }

    fn lifecycle_state(&self) -> LifecycleState {
        Terminus::lifecycle_state(self)
    }

    #[allow(deprecated)]
    fn probe(&self, request: &ProbeRequest) -> impl Future<Output = Report> + Send {
        Terminus::probe(self, request.clone())
    }

    #[allow(deprecated)]
    fn cached_probe(&self, request: &ProbeRequest) -> Option<Report> {
        Terminus::cached_probe(self, request)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Terminus {}
}
