//! The request tracker: the one place that counts and names what is in flight.
//!
//! Exactly one party takes a [`RequestGuard`] for each request and holds it until the
//! response is over: the server that calls the service, if it counts requests itself
//! (`axum-terminus` does, at each connection), else `TerminusLayer`. The server says so
//! by calling its service inside [`call_tracked`]; the layer, called inside, sees it
//! with [`leave_count_to_server`]. Nothing is stored on the `Terminus`: a layer under
//! `axum::serve` or tonic counts its requests even while another server of the same
//! `Terminus` counts its own. The count is a tokio-util [`TaskTracker`]: closed when the shutdown
//! begins, so `wait()` resolves when the last request in flight ends. Each guard carries
//! a description of its request; when the drain deadline cuts a request, the guard
//! reports it as it is dropped, so the report needs no second list of requests.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::task::task_tracker::{TaskTrackerToken, TaskTrackerWaitFuture};
use tokio_util::task::TaskTracker;

use crate::lock;
use crate::metrics::{self, RequestMetrics};

/// What the cut report says about one request.
///
/// Implemented by whoever tracks requests: `axum-terminus` names the peer, the
/// protocol, the method and the path (or the gRPC method) and the request's age.
pub trait DescribeRequest: Send + 'static {
    /// Called once, when the drain deadline cut this request: emit one `warn` event
    /// (target `terminus`) that names it.
    fn report_cut(&self);
}

/// A request with nothing more to say about itself.
impl DescribeRequest for () {
    fn report_cut(&self) {
        tracing::warn!(target: "terminus", "request cut at the drain deadline");
    }
}

/// Recognises the requests a middleware answers as probes.
#[deprecated(note = "servers learn that a request was a probe from `server::call_tracked`")]
pub trait ProbeMatcher: Send + Sync + 'static {
    /// Whether a request for `path` (without its query) is a probe.
    fn is_probe(&self, path: &str) -> bool;
}

/// What middleware said of a request that a server called it with: see
/// [`call_tracked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// A request of the application's: middleware left the count to the server.
    Request,
    /// A probe, answered by `TerminusLayer`: never counted in flight, drained or cut.
    Probe,
}

/// Where this thread stands with respect to [`call_tracked`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Not inside a server's call: middleware counts what it serves.
    Outside,
    /// Inside one, and no middleware has said anything yet.
    Silent,
    /// Inside one, and middleware said this.
    Said(Answered),
}

thread_local! {
    /// The innermost [`call_tracked`] running on this thread. A thread-local, not a
    /// field of the `Terminus`, because it is about one call on one thread: two servers
    /// sharing a `Terminus` must not see each other's.
    static SCOPE: Cell<Scope> = const { Cell::new(Scope::Outside) };
}

/// Runs `call` as a server that counts the request itself: a server's `call` of its
/// service for one request, and each poll of the response future that follows (tower
/// services may call the middleware inside them only when first polled, as axum's
/// `Router::layer` does). Middleware run inside it leaves the count to the server
/// ([`leave_count_to_server`]) and says when it answered a probe
/// ([`answered_as_probe`]). Returns what `call` returned, and what middleware said, if
/// anything: `None` when no middleware spoke (a service without `TerminusLayer`, or one
/// that has not reached it yet), in which case the server counts the request.
///
/// It covers what runs on this thread inside `call`. (A middleware that hands the
/// request to another task, such as tower's `Buffer`, puts the layer outside it: the
/// request is then counted twice, which delays nothing and loses nothing.)
#[inline]
pub fn call_tracked<R>(call: impl FnOnce() -> R) -> (R, Option<Answered>) {
    /// Restores the outer scope, even if `call` panics.
    struct Restore(Scope);
    impl Drop for Restore {
        #[inline]
        fn drop(&mut self) {
            SCOPE.set(self.0);
        }
    }
    let _restore = Restore(SCOPE.replace(Scope::Silent));
    let value = call();
    let said = match SCOPE.get() {
        Scope::Said(answered) => Some(answered),
        Scope::Outside | Scope::Silent => None,
    };
    (value, said)
}

/// For middleware that would count the request it is handling: `true` when a server
/// that counts it called the middleware ([`call_tracked`]), which is then told the
/// request reached the middleware; `false` otherwise, and the middleware counts it.
#[inline]
pub fn leave_count_to_server() -> bool {
    match SCOPE.get() {
        Scope::Outside => false,
        Scope::Silent => {
            SCOPE.set(Scope::Said(Answered::Request));
            true
        }
        Scope::Said(_) => true,
    }
}

/// Middleware answered the request it is handling as a probe: the server that called it
/// ([`call_tracked`]), if any, does not count it. The first middleware to speak is the
/// one heard: a probe path asked of another service from inside a handler (on this
/// thread, in the same poll) does not make the handler's request a probe.
#[inline]
pub fn answered_as_probe() {
    if SCOPE.get() == Scope::Silent {
        SCOPE.set(Scope::Said(Answered::Probe));
    }
}

/// Whether a server that counts requests called the code running now.
pub(crate) fn in_server_call() -> bool {
    SCOPE.get() != Scope::Outside
}

/// Counts requests in flight, and those drained and cut since the shutdown began.
///
/// Every atomic here but the tracker's is `Relaxed`: none publishes other memory. The
/// counts are read once the tracker's `wait()` resolved (or the cut's wait timed out),
/// and a guard counts itself before it drops its tracker token, whose release the wait
/// acquires.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    tracker: TaskTracker,
    drained: AtomicU64,
    cut: AtomicU64,
    /// Set when the drain deadline passed: requests ending from now on were cut. The
    /// requests the cut aborts end after the abort, which synchronises with it (tokio's
    /// task state), so they see the flag; one that ends by itself as the deadline passes
    /// may count as drained or cut, and either is true.
    cutting: AtomicBool,
    /// Held by a cut request while it counts itself and leaves the tracker, and by
    /// [`cut`](Requests::cut) while it reads both: the two are separate atomics, and a
    /// request that ended between the two reads was counted in neither.
    cut_count: Mutex<()>,
    metrics: RequestMetrics,
}

impl Requests {
    pub(crate) fn track<D: DescribeRequest>(self: &Arc<Self>, request: D) -> RequestGuard<D> {
        self.metrics.started();
        RequestGuard {
            requests: Arc::clone(self),
            token: Some(self.tracker.token()),
            request,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// The shutdown began: every request that ends from now on is drained (or cut).
    pub(crate) fn start_draining(&self) {
        self.tracker.close();
    }

    /// Resolves when no request is in flight (once `start_draining` was called).
    pub(crate) fn wait(&self) -> TaskTrackerWaitFuture<'_> {
        self.tracker.wait()
    }

    /// The deadline passed: requests still in flight are cut. Returns how many there are.
    pub(crate) fn start_cutting(&self) -> usize {
        self.cutting.store(true, Ordering::Relaxed);
        self.in_flight()
    }

    pub(crate) fn drained(&self) -> u64 {
        self.drained.load(Ordering::Relaxed)
    }

    /// Requests cut: those that ended after the deadline, and those still in flight.
    pub(crate) fn cut(&self) -> u64 {
        let _counting = lock(&self.cut_count);
        self.cut.load(Ordering::Relaxed) + self.in_flight() as u64
    }
}

/// Proof that one request is in flight: the shutdown waits until it is dropped.
///
/// Obtained from [`ServerExt::track_request`](crate::server::ServerExt::track_request)
/// and held until the response body has ended (or failed, or the client went away).
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct RequestGuard<D: DescribeRequest = ()> {
    requests: Arc<Requests>,
    // Dropped after `drop` below has counted the request, so that whoever waits for
    // zero sees the final counts. `None` only inside `drop`.
    token: Option<TaskTrackerToken>,
    request: D,
}

impl<D: DescribeRequest> RequestGuard<D> {
    /// The description this guard carries.
    pub fn request(&self) -> &D {
        &self.request
    }
}

impl<D: DescribeRequest> Drop for RequestGuard<D> {
    fn drop(&mut self) {
        let requests = &self.requests;
        requests.metrics.ended();
        // One atomic load while serving: the tracker closes when the shutdown begins.
        if !requests.tracker.is_closed() {
            return;
        }
        if requests.cutting.load(Ordering::Relaxed) {
            // Reported before it leaves the tracker: the shutdown waits (a while) for the
            // cut requests to leave so that their reports are out before the outcome.
            metrics::request_cut();
            self.request.report_cut();
            let _counting = lock(&requests.cut_count);
            requests.cut.fetch_add(1, Ordering::Relaxed);
            drop(self.token.take());
        } else {
            requests.drained.fetch_add(1, Ordering::Relaxed);
            metrics::request_drained();
        }
    }
}

impl<D: DescribeRequest> std::fmt::Debug for RequestGuard<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Named(Arc<AtomicUsize>);

    impl DescribeRequest for Named {
        fn report_cut(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn requests_before_the_shutdown_are_neither_drained_nor_cut() {
        let requests = Arc::new(Requests::default());
        drop(requests.track(()));
        assert_eq!((requests.drained(), requests.cut()), (0, 0));
    }

    #[test]
    fn requests_ending_after_the_deadline_are_cut_and_report_themselves() {
        let requests = Arc::new(Requests::default());
        let reports = Arc::new(AtomicUsize::new(0));
        let finishes = requests.track(Named(Arc::clone(&reports)));
        let cut = requests.track(Named(Arc::clone(&reports)));
        let leaked = requests.track(Named(Arc::clone(&reports)));
        requests.start_draining();
        drop(finishes);
        assert_eq!(requests.start_cutting(), 2);
        drop(cut);
        assert_eq!(requests.drained(), 1);
        assert_eq!(requests.cut(), 2, "one reported, one still held");
        assert_eq!(reports.load(Ordering::Relaxed), 1);
        std::mem::forget(leaked);
    }

    /// The outcome's `requests_cut` is read while cut requests may still be ending: each
    /// of them must count once, as ended or as in flight, never neither.
    #[test]
    fn a_request_ending_while_the_cut_count_is_read_is_counted_once() {
        const REQUESTS: usize = 20_000;
        let requests = Arc::new(Requests::default());
        let guards: Vec<_> = (0..REQUESTS).map(|_| requests.track(())).collect();
        requests.start_draining();
        assert_eq!(requests.start_cutting(), REQUESTS);
        let ending = std::thread::spawn(move || drop(guards));
        let mut reads = 0;
        while !ending.is_finished() && reads < 10_000_000 {
            assert_eq!(requests.cut(), REQUESTS as u64, "after {reads} good reads");
            reads += 1;
        }
        ending.join().unwrap();
        assert_eq!(requests.cut(), REQUESTS as u64);
    }

    /// A request reporting itself slowly as cut (a log line to a slow sink).
    struct SlowReport(Arc<AtomicBool>);

    impl DescribeRequest for SlowReport {
        fn report_cut(&self) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wait_for_cut_requests_ends_after_their_reports() {
        let requests = Arc::new(Requests::default());
        let reported = Arc::new(AtomicBool::new(false));
        let guard = requests.track(SlowReport(Arc::clone(&reported)));
        requests.start_draining();
        assert_eq!(requests.start_cutting(), 1);
        let ending = std::thread::spawn(move || drop(guard));
        tokio::time::timeout(std::time::Duration::from_secs(5), requests.wait())
            .await
            .expect("the cut request ends");
        assert!(
            reported.load(Ordering::SeqCst),
            "the outcome is written once the wait ends: the report must be out by then"
        );
        ending.join().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn wait_resolves_when_the_last_request_ends() {
        let requests = Arc::new(Requests::default());
        let guard = requests.track(());
        requests.start_draining();
        let waiter = tokio::spawn({
            let requests = Arc::clone(&requests);
            async move { requests.wait().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("resolves at zero")
            .unwrap();
    }

    #[test]
    fn a_server_call_hears_what_middleware_said_and_nothing_leaks_out_of_it() {
        assert!(
            !leave_count_to_server(),
            "outside a server's call, middleware counts"
        );
        let ((), said) = call_tracked(|| {});
        assert_eq!(said, None, "no middleware spoke");
        let (counted_by_server, said) = call_tracked(leave_count_to_server);
        assert!(counted_by_server);
        assert_eq!(said, Some(Answered::Request));
        let ((), said) = call_tracked(answered_as_probe);
        assert_eq!(said, Some(Answered::Probe));
        // The first to speak is heard: a probe answered inside a request stays inside it.
        let ((), said) = call_tracked(|| {
            leave_count_to_server();
            answered_as_probe();
        });
        assert_eq!(said, Some(Answered::Request));
        // A nested call (a server inside a handler) keeps its own answer.
        let (inner, outer) = call_tracked(|| {
            let ((), inner) = call_tracked(answered_as_probe);
            inner
        });
        assert_eq!((inner, outer), (Some(Answered::Probe), None));
        // A panic inside restores the outer state.
        let caught = std::panic::catch_unwind(|| call_tracked(|| panic!("in the service")));
        assert!(caught.is_err());
        assert!(!leave_count_to_server(), "outside again after the panic");
        answered_as_probe();
        assert!(!in_server_call(), "a probe answered outside changes nothing");
    }
}
