//! A paced gRPC load of unary calls on tonic channels, counting every call by outcome.
//!
//! Workers share a few channels (one HTTP/2 connection each, reconnecting on their own
//! after GOAWAY or a close, as tonic's `Channel` does) and call the example's greeter:
//! fast `SayHello` calls at a steady pace, and `SayHelloSlowly` calls of 0.5-1.5 s from
//! dedicated workers, so that some are in flight at any moment.
//!
//! Each call ends in exactly one bucket: OK with the expected reply, or failed with its
//! gRPC code. A client may retry some failures ([`ClientConfig`]); a call that succeeds
//! after retries is OK, and the retries are counted apart.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use grpc::proto::{HelloRequest, SlowHelloRequest};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::grpc::{endpoint, greeter};

/// What a client does about failures: which ones it retries, up to 5 times, 50 ms
/// apart and doubling (1.55 s in all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientConfig {
    /// No retries: every failure reaches the caller.
    Plain,
    /// Retries `UNAVAILABLE` (what gRPC's own retry policies are usually given).
    RetryUnavailable,
    /// Retries `UNAVAILABLE`, `CANCELLED` calls that [never left the
    /// client](never_sent) (tonic's report of a call queued on a connection that
    /// received GOAWAY and closed before sending it), and calls the server [refused
    /// unprocessed](refused_unprocessed).
    RetryUnavailableAndUnsent,
}

/// How many times a client retries one call.
const RETRIES: u32 = 5;

/// Whether `status` is tonic's report of a call that never left the client: hyper
/// cancelled it because its connection had closed (after a GOAWAY) before the request
/// was written (`CANCELLED`, "operation was canceled", with a `hyper::Error` whose
/// `is_canceled()` is true in its sources). Retrying it is safe for any call.
pub fn never_sent(status: &Status) -> bool {
    status.code() == Code::Cancelled
        && sources(status).any(|error| {
            error
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled)
        })
}

/// Whether `status` is tonic's report of a call that the server refused without
/// processing it, which RFC 9113 (§6.8, §8.7) makes safe to retry for any call: h2
/// fails with the server's GOAWAY (`NO_ERROR`) a stream above the GOAWAY's last stream
/// id and a request started on the connection after the GOAWAY arrived; a stream the
/// server reset with `REFUSED_STREAM` was not processed either. tonic reports these as
/// `INTERNAL` "h2 protocol error: http2 error".
pub fn refused_unprocessed(status: &Status) -> bool {
    sources(status).any(|error| {
        error
            .downcast_ref::<h2::Error>()
            .is_some_and(terminus_check::refused::refused_unprocessed)
    })
}

/// The chain of errors under `status`.
fn sources(status: &Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |error| error.source())
}

impl ClientConfig {
    fn retries(self, status: &Status) -> bool {
        match self {
            ClientConfig::Plain => false,
            ClientConfig::RetryUnavailable => status.code() == Code::Unavailable,
            ClientConfig::RetryUnavailableAndUnsent => {
                status.code() == Code::Unavailable || never_sent(status) || refused_unprocessed(status)
            }
        }
    }
}

/// The shape of the load.
#[derive(Clone, Debug)]
pub struct GrpcLoadConfig {
    /// Where the calls go (a balancer's frontend, or a server).
    pub addr: SocketAddr,
    /// Channels (HTTP/2 connections) the workers share.
    pub channels: usize,
    /// Workers sending fast `SayHello` calls, one at a time each.
    pub workers: usize,
    /// Workers sending `SayHelloSlowly` calls back to back.
    pub slow_workers: usize,
    /// The pause between two fast calls of one worker.
    pub interval: Duration,
    /// A call not complete after this fails with `DEADLINE_EXCEEDED`.
    pub timeout: Duration,
    /// Retries.
    pub client: ClientConfig,
}

/// What happened to the calls.
#[derive(Clone, Debug, Default)]
pub struct GrpcCounts {
    /// Calls made (a call retried is one call).
    pub calls: u64,
    /// Calls that ended OK with the expected reply.
    pub ok: u64,
    /// Slow calls among them.
    pub ok_slow: u64,
    /// Failed calls by their final gRPC code.
    pub failed_by_code: BTreeMap<String, u64>,
    /// Attempts that failed and were retried, by code and message.
    pub retried: BTreeMap<String, u64>,
    /// The first failures, for a test's message.
    pub first_failures: Vec<String>,
}

impl GrpcCounts {
    /// Calls that did not end OK.
    pub fn failed(&self) -> u64 {
        self.failed_by_code.values().sum()
    }

    /// Attempts retried.
    pub fn retries(&self) -> u64 {
        self.retried.values().sum()
    }
}

impl fmt::Display for GrpcCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "calls={} ok={} failed={} {:?} retries={} {:?} ok_slow={}",
            self.calls,
            self.ok,
            self.failed(),
            self.failed_by_code,
            self.retries(),
            self.retried,
            self.ok_slow
        )
    }
}

/// A running load; [`stop`](GrpcLoad::stop) ends it and returns the counts.
pub struct GrpcLoad {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<GrpcCounts>>,
    workers: JoinSet<()>,
    started: Instant,
}

impl GrpcLoad {
    /// Starts the workers.
    pub fn start(config: GrpcLoadConfig) -> GrpcLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(GrpcCounts::default()));
        let channels: Vec<Channel> = (0..config.channels.max(1))
            .map(|_| endpoint(config.addr).timeout(config.timeout).connect_lazy())
            .collect();
        let mut workers = JoinSet::new();
        for worker in 0..config.workers + config.slow_workers {
            let slow = worker >= config.workers;
            let channel = channels[worker % channels.len()].clone();
            let stop = Arc::clone(&stop);
            let counts = Arc::clone(&counts);
            let config = config.clone();
            workers.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{worker}n{n}");
                    let ms = 500 + (n * 337 + worker as u64 * 101) % 1000;
                    let result = call(&channel, &name, slow.then_some(ms), config.client, &counts).await;
                    record(&counts, &name, slow, result);
                    n += 1;
                    if !slow {
                        tokio::time::sleep(config.interval).await;
                    }
                }
            });
        }
        GrpcLoad {
            stop,
            counts,
            workers,
            started: Instant::now(),
        }
    }

    /// How long the load has run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the workers (each finishes its call in progress) and returns the counts.
    pub async fn stop(mut self) -> GrpcCounts {
        self.stop.store(true, Ordering::Relaxed);
        while self.workers.join_next().await.is_some() {}
        let counts = self.counts.lock().expect("counts").clone();
        counts
    }
}

/// One call, with the client's retries; `Ok` carries the reply's message.
async fn call(
    channel: &Channel,
    name: &str,
    slow_ms: Option<u64>,
    client: ClientConfig,
    counts: &Mutex<GrpcCounts>,
) -> Result<String, Status> {
    let mut attempt = 0;
    loop {
        let mut greeter = greeter(channel);
        let result = match slow_ms {
            None => greeter
                .say_hello(HelloRequest {
                    name: name.to_owned(),
                })
                .await
                .map(|reply| reply.into_inner().message),
            Some(ms) => greeter
                .say_hello_slowly(SlowHelloRequest {
                    name: name.to_owned(),
                    ms,
                })
                .await
                .map(|reply| reply.into_inner().message),
        };
        match result {
            Err(status) if attempt < RETRIES && client.retries(&status) => {
                *counts
                    .lock()
                    .expect("counts")
                    .retried
                    .entry(format!("{:?} {}", status.code(), status.message()))
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}

fn record(counts: &Mutex<GrpcCounts>, name: &str, slow: bool, result: Result<String, Status>) {
    let mut counts = counts.lock().expect("counts");
    counts.calls += 1;
    match result {
        Ok(message) if message == format!("hello {name}") => {
            counts.ok += 1;
            if slow {
                counts.ok_slow += 1;
            }
        }
        Ok(message) => {
            *counts.failed_by_code.entry("WrongReply".to_owned()).or_default() += 1;
            if counts.first_failures.len() < 10 {
                counts
                    .first_failures
                    .push(format!("{name}: wrong reply {message:?}"));
            }
        }
        Err(status) => {
            let code = if never_sent(&status) {
                "Cancelled(never sent)".to_owned()
            } else if refused_unprocessed(&status) {
                format!("{:?}(refused unprocessed)", status.code())
            } else {
                format!("{:?}", status.code())
            };
            *counts.failed_by_code.entry(code).or_default() += 1;
            if counts.first_failures.len() < 10 {
                // The whole chain: tonic's message alone ("http2 error") hides the cause.
                let chain: Vec<String> = sources(&status).map(|error| format!("{error:?}")).collect();
                counts.first_failures.push(format!(
                    "{name}: {:?} {} [{}]",
                    status.code(),
                    status.message(),
                    chain.join(" <- ")
                ));
            }
        }
    }
}
