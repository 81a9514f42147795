//! Rebalancing after a scale-up, nothing lost: a per-connection balancer (kube-proxy's
//! model, a TCP proxy that picks a backend when a connection opens) in front of three
//! quickstart servers. Clients hold long connections (4 HTTP/2 connections, 8 HTTP/1.1
//! keep-alive connections, GET and POST back to back). Only the first backend is enabled
//! at first; the two others after 5 s.
//!
//! - With a maximum connection age of 2 s (grace 1 s), within the age plus the grace
//!   plus 2 s the two new backends serve at least half of the requests, and no request
//!   fails (a stream refused by a GOAWAY was never processed, and is retried).
//! - Without a maximum age (the negative control), the new backends get nothing.
//!
//! The backends are servers in this process (each its own `Terminus`, on its own port),
//! so that each can count the requests it serves exactly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum_terminus::{Layer as _, Server, Terminus, TerminusLayer};
use terminus_tests::loadgen::{Load, LoadConfig};
use tokio::net::{TcpListener, TcpStream};

const BACKENDS: usize = 3;
const ENABLE_AFTER: Duration = Duration::from_secs(5);
const AGE: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(1);

/// A backend: a quickstart server that counts the requests it serves.
struct Backend {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    terminus: Terminus,
    task: tokio::task::JoinHandle<axum_terminus::Outcome>,
}

async fn backend(max_age: bool) -> Backend {
    let mut builder = Terminus::builder();
    if max_age {
        builder = builder.max_connection_age(AGE).max_connection_age_grace(GRACE);
    }
    let terminus = builder.build().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&served);
    let router = quickstart::router()
        .with_state(())
        .layer(tower::util::MapRequestLayer::new(move |request| {
            counter.fetch_add(1, Ordering::Relaxed);
            request
        }));
    let app = TerminusLayer::new(&terminus).layer(router);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(Server::new(&terminus).listener(listener, app).run());
    Backend {
        addr,
        served,
        terminus,
        task,
    }
}

/// A TCP balancer that picks a backend per connection, round robin over the enabled
/// ones, as kube-proxy does: it never sees a request.
struct Balancer {
    addr: SocketAddr,
    enabled: Arc<[AtomicBool; BACKENDS]>,
    task: tokio::task::JoinHandle<()>,
}

async fn balancer(backends: [SocketAddr; BACKENDS]) -> Balancer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let enabled: Arc<[AtomicBool; BACKENDS]> = Arc::new(std::array::from_fn(|i| AtomicBool::new(i == 0)));
    let task = tokio::spawn({
        let enabled = Arc::clone(&enabled);
        async move {
            let mut next = 0usize;
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let pick = (0..BACKENDS)
                    .map(|offset| (next + offset) % BACKENDS)
                    .find(|&i| enabled[i].load(Ordering::SeqCst))
                    .unwrap_or(0);
                next = pick + 1;
                let backend = backends[pick];
                tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        }
    });
    Balancer { addr, enabled, task }
}

/// Requests each backend served.
fn served(backends: &[Backend]) -> Vec<u64> {
    backends.iter().map(|b| b.served.load(Ordering::SeqCst)).collect()
}

/// Runs the scenario; returns the requests per backend before the scale-up and in the
/// window after age + grace + 2 s, and the load's failures.
async fn scale_up(max_age: bool) -> (Vec<u64>, Vec<u64>, terminus_tests::loadgen::Counts) {
    let mut backends = Vec::new();
    for _ in 0..BACKENDS {
        backends.push(backend(max_age).await);
    }
    let proxy = balancer(std::array::from_fn(|i| backends[i].addr)).await;
    let load = Load::start(LoadConfig {
        h1: proxy.addr,
        h2: Some(proxy.addr),
        h1_workers: 8,
        h1_slow_workers: 0,
        h2_connections: 4,
        h2_workers_per_connection: 2,
        interval: Duration::from_millis(10),
        timeout: Duration::from_secs(10),
        slow_in_mix: false,
    });
    tokio::time::sleep(ENABLE_AFTER).await;
    let before = served(&backends);
    for enabled in proxy.enabled.iter() {
        enabled.store(true, Ordering::SeqCst);
    }
    // The connections opened before reach their age (±10 %) and grace, then reconnect.
    tokio::time::sleep(AGE.mul_f64(1.1) + GRACE + Duration::from_secs(2)).await;
    let start = served(&backends);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = served(&backends);
    let counts = load.stop().await;
    let window: Vec<u64> = end.iter().zip(&start).map(|(end, start)| end - start).collect();
    proxy.task.abort();
    for backend in backends {
        backend.terminus.shutdown("test over");
        let _ = tokio::time::timeout(Duration::from_secs(15), backend.task).await;
    }
    (before, window, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_maximum_age_new_backends_take_their_share_within_the_age_and_grace_losing_nothing() {
    let (before, window, counts) = scale_up(true).await;
    println!(
        "rebalancing max_age=2s grace=1s before_scale_up={before:?} window_after_age_grace_2s={window:?} {counts}"
    );
    assert_eq!(
        before[1] + before[2],
        0,
        "only the first backend before the scale-up: {before:?}"
    );
    let total: u64 = window.iter().sum();
    let new: u64 = window[1] + window[2];
    assert!(total > 0, "requests were served in the window");
    assert!(
        new * 2 >= total,
        "the new backends serve at least half of the requests: {window:?}"
    );
    assert_eq!(counts.failed(), 0, "no request fails: {counts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_maximum_age_new_backends_get_nothing() {
    let (before, window, counts) = scale_up(false).await;
    println!(
        "rebalancing max_age=none before_scale_up={before:?} window_after_age_grace_2s={window:?} {counts}"
    );
    assert!(window[0] > 0, "the first backend serves: {window:?}");
    assert_eq!(
        window[1] + window[2],
        0,
        "long connections keep going to the first backend: {window:?}"
    );
    assert_eq!(counts.failed(), 0, "{counts}");
}
