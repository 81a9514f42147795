//! `terminus-check roll`: rolling restarts of the user's command behind a real balancer
//! under load, every request counted.
//!
//! [`run`] reads as the timeline it drives: start the replicas and wait until each is
//! ready; start the balancer and wait until it routes to all; start the load; then, for
//! each round and each replica, stop it with a real signal (SIGKILL after the grace),
//! start its replacement on the same port (a restarted container), wait until it is
//! ready and routed to, and go on; stop the load and report.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::balancer::{self, Balancer, Kind};
use crate::haproxy::{self, Check};
use crate::instance::{Instance, Readiness};
use crate::launch::{ServerSlot, Upstream};
use crate::loadgen::{Expect, Load, LoadConfig, Record, Traffic};
use crate::report::{self, Report, RestartTimes, Setting};

/// Load before the first restart, so that every connection is in use.
const WARM_UP: Duration = Duration::from_secs(2);
/// Load after a replacement is routed to, before the next stop.
const SETTLE: Duration = Duration::from_secs(1);
/// How long an instance may take to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the balancer may take to route to every ready instance.
const ROUTING_TIMEOUT: Duration = Duration::from_secs(15);

/// What `roll` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The server command and its arguments.
    pub command: Vec<String>,
    /// Instances behind the balancer.
    pub replicas: usize,
    /// How an instance tells it is ready.
    pub readiness: Readiness,
    /// The balancer.
    pub lb: Kind,
    /// Requests per second (fast GETs and POSTs; slow requests come on top).
    pub rps: u32,
    /// The path of the GETs and POSTs.
    pub path: String,
    /// The path of slow requests (`{ms}`: 1,000 to 3,000).
    pub slow_path: Option<String>,
    /// Rolling restarts per replica.
    pub restarts: usize,
    /// The stop signal.
    pub stop_signal: String,
    /// SIGKILL after this.
    pub grace: Duration,
    /// A request not complete after this is a timeout.
    pub timeout: Duration,
    /// Losses tolerated.
    pub max_lost: u64,
    /// Write the JSON report here.
    pub json: Option<PathBuf>,
    /// Write the SVG timeline here.
    pub svg: Option<PathBuf>,
}

/// Runs the rolling restarts and returns the report (already written where asked).
/// An error is a run that could not be done (a replica never ready, no balancer), not a
/// loss.
pub async fn run(options: &Options) -> Result<Report, String> {
    options.lb.check_installed().map_err(|error| error.to_string())?;
    let logs = log_dir()?;
    let slots: Vec<ServerSlot> = (0..options.replicas)
        .map(|index| ServerSlot {
            name: format!("r{index}"),
            port: crate::ports::free_port(),
        })
        .collect();
    let mut instances = Vec::new();
    for slot in &slots {
        instances.push(start_instance(options, slot, &logs).await?);
    }
    let check = match &options.readiness {
        Readiness::Path(path) => Check::Http(path.clone()),
        Readiness::Port => Check::Tcp,
    };
    let balancer = Balancer::start(options.lb, &slots, &check, Upstream::default())
        .map_err(|error| error.to_string())?;
    let (h1, h2, stats, detection) = (
        balancer.h1(),
        balancer.h2(),
        balancer.stats(),
        balancer.detection(),
    );
    let balancer = Arc::new(Mutex::new(balancer));
    wait_routed(stats, &slots).await?;
    let endpoints = Endpoints::start(&balancer, &slots, &options.readiness);

    let load = Load::start_with(load_config(options, h1, h2), traffic(options));
    let started = load.started();
    let progress = Progress::start(&load, options.replicas * options.restarts);
    tokio::time::sleep(WARM_UP).await;

    let fleet = Fleet {
        options,
        slots: &slots,
        logs: &logs,
        stats,
        started,
    };
    let mut restarts = Vec::new();
    for _round in 0..options.restarts {
        for (replica, slot) in slots.iter().enumerate() {
            let times = fleet.restart(replica, slot, &mut instances[replica]).await;
            match times {
                Ok(times) => restarts.push(times),
                Err(error) => {
                    progress.finish().await;
                    return Err(error);
                }
            }
            progress.restarted();
            tokio::time::sleep(SETTLE).await;
        }
    }

    let duration = load.elapsed();
    let counts_retried = load.counts().retried;
    let (_, records) = load.finish().await;
    progress.finish().await;
    endpoints.stop();
    let balancer_log = balancer.lock().map(|balancer| balancer.log()).unwrap_or_default();
    drop(instances);
    let setting = Setting {
        command: options.command.clone(),
        lb: options.lb.name(),
        detection,
        replicas: options.replicas,
        rps: options.rps,
        signal: options.stop_signal.clone(),
        grace: options.grace,
        max_lost: options.max_lost,
    };
    let report = report::build(&setting, &records, &restarts, duration, counts_retried);
    write_outputs(options, &report, &records)?;
    if report.passed {
        let _ = std::fs::remove_dir_all(&logs);
    } else {
        eprintln!("The servers' output is kept in {}", logs.display());
        if !balancer_log.trim().is_empty() {
            let _ = std::fs::write(logs.join(format!("{}.log", options.lb.name())), balancer_log);
        }
    }
    Ok(report)
}

/// Where the instances' output goes.
fn log_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("terminus-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|error| format!("create {}: {error}", dir.display()))?;
    Ok(dir)
}

async fn start_instance(
    options: &Options,
    slot: &ServerSlot,
    logs: &std::path::Path,
) -> Result<Instance, String> {
    let log = logs.join(format!("{}.log", slot.name));
    let mut instance =
        Instance::spawn(&options.command, slot.port, &log).map_err(|error| error.to_string())?;
    instance
        .wait_ready(&options.readiness, START_TIMEOUT)
        .await
        .map_err(|error| format!("replica {} on port {}: {error}", slot.name, slot.port))?;
    Ok(instance)
}

/// Waits until HAProxy routes to every slot (nginx routes to them from its start).
async fn wait_routed(stats: Option<std::net::SocketAddr>, slots: &[ServerSlot]) -> Result<(), String> {
    let Some(stats) = stats else { return Ok(()) };
    let names: Vec<&str> = slots.iter().map(|slot| slot.name.as_str()).collect();
    haproxy::wait_for_states(stats, &names, ROUTING_TIMEOUT)
        .await
        .map_err(|states| {
            format!("HAProxy did not see every replica up within {ROUTING_TIMEOUT:?}: {states:?}")
        })
}

/// What every restart needs to know.
struct Fleet<'a> {
    options: &'a Options,
    slots: &'a [ServerSlot],
    logs: &'a std::path::Path,
    /// HAProxy's statistics (`None` for nginx).
    stats: Option<std::net::SocketAddr>,
    /// The start of the load: the origin of the timeline.
    started: Instant,
}

impl Fleet<'_> {
    /// One restart: the signal, the stop watched to the exit (SIGKILL after the grace), the
    /// replacement on the same port, ready and routed to.
    async fn restart(
        &self,
        replica: usize,
        slot: &ServerSlot,
        instance: &mut Instance,
    ) -> Result<RestartTimes, String> {
        let Fleet {
            options,
            slots,
            logs,
            stats,
            started,
        } = *self;
        let pid = instance.pid();
        let signal_at = Instant::now();
        instance
            .signal(&options.stop_signal)
            .map_err(|error| format!("replica {}: {error}", slot.name))?;
        let stop = instance.watch_stop(signal_at, options.grace).await;
        *instance = start_instance(options, slot, logs).await?;
        match stats {
            Some(stats) => {
                let names: Vec<&str> = slots.iter().map(|slot| slot.name.as_str()).collect();
                // Best effort: a replica that fails its checks now and then still counts.
                let _ = haproxy::wait_for_states(stats, &names, ROUTING_TIMEOUT).await;
            }
            // The endpoints loop adds it within a period.
            None => tokio::time::sleep(balancer::READINESS_PERIOD + Duration::from_millis(300)).await,
        }
        let since = |at: Instant| at.saturating_duration_since(started);
        Ok(RestartTimes {
            replica,
            pid,
            signal_at: since(stop.signal_at),
            listener_closed_at: stop.listener_closed_at.map(since),
            exited_at: since(stop.exited_at),
            exit: stop.exit,
            ready_at: since(Instant::now()),
        })
    }
}

/// The workers: `--rps` spread over HTTP/1.1 keep-alive connections, new connections and
/// HTTP/2 streams, plus slow requests back to back when there is a slow path.
fn load_config(options: &Options, h1: std::net::SocketAddr, h2: std::net::SocketAddr) -> LoadConfig {
    let slow = usize::from(options.slow_path.is_some());
    let mixed = H1_WORKERS + FRESH_WORKERS + H2_CONNECTIONS * H2_MIXED_WORKERS;
    LoadConfig {
        h1,
        h2: Some(h2),
        h1_workers: H1_WORKERS,
        h1_slow_workers: 2 * slow,
        h2_connections: H2_CONNECTIONS,
        h2_workers_per_connection: H2_MIXED_WORKERS + slow,
        interval: Duration::from_secs_f64(mixed as f64 / f64::from(options.rps.max(1))),
        timeout: options.timeout,
        slow_in_mix: true,
    }
}

const H1_WORKERS: usize = 4;
const FRESH_WORKERS: usize = 2;
const H2_CONNECTIONS: usize = 2;
const H2_MIXED_WORKERS: usize = 2;

fn traffic(options: &Options) -> Traffic {
    Traffic {
        path: options.path.clone(),
        slow_path: options.slow_path.clone(),
        expect: Expect::AnswerBelow500,
        fresh_connection_workers: FRESH_WORKERS,
    }
}

fn write_outputs(options: &Options, report: &Report, records: &[Record]) -> Result<(), String> {
    if let Some(path) = &options.json {
        let json = serde_json::to_string_pretty(report).map_err(|error| error.to_string())?;
        std::fs::write(path, json).map_err(|error| format!("write {}: {error}", path.display()))?;
    }
    if let Some(path) = &options.svg {
        std::fs::write(path, crate::svg::render(report, records))
            .map_err(|error| format!("write {}: {error}", path.display()))?;
    }
    Ok(())
}

/// The readiness loop nginx needs: every period, each replica's readiness, as a
/// kubelet probes it, and the upstream rewritten when it changes (an ingress
/// controller's job). HAProxy checks by itself: no loop.
struct Endpoints {
    stopped: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Endpoints {
    fn start(balancer: &Arc<Mutex<Balancer>>, slots: &[ServerSlot], readiness: &Readiness) -> Endpoints {
        let stopped = Arc::new(AtomicBool::new(false));
        let needed = balancer.lock().is_ok_and(|balancer| balancer.needs_readiness());
        let task = needed.then(|| {
            let (balancer, stopped) = (Arc::clone(balancer), Arc::clone(&stopped));
            let addrs: Vec<_> = slots
                .iter()
                .map(|slot| std::net::SocketAddr::from(([127, 0, 0, 1], slot.port)))
                .collect();
            let readiness = readiness.clone();
            tokio::spawn(async move {
                let mut known = vec![true; addrs.len()];
                let mut ticker = tokio::time::interval(balancer::READINESS_PERIOD);
                while !stopped.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    let mut ready = Vec::with_capacity(addrs.len());
                    for addr in &addrs {
                        ready.push(readiness.check(*addr).await);
                    }
                    if ready != known {
                        if let Ok(mut balancer) = balancer.lock() {
                            if let Err(error) = balancer.set_ready(&ready) {
                                eprintln!("terminus-check: {error}");
                            }
                        }
                        known = ready;
                    }
                }
            })
        });
        Endpoints { stopped, task }
    }

    fn stop(self) {
        self.stopped.store(true, Ordering::Relaxed);
        if let Some(task) = self.task {
            task.abort();
        }
    }
}

/// The progress line on stderr: a bar of restarts done, and the counts so far.
struct Progress {
    done: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(load: &Load, total: usize) -> Progress {
        let done = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let counts = load.counter();
        let terminal = std::io::stderr().is_terminal();
        let task = tokio::spawn({
            let (done, stopped) = (Arc::clone(&done), Arc::clone(&stopped));
            async move {
                let mut printed = usize::MAX;
                while !stopped.load(Ordering::Relaxed) {
                    let finished = done.load(Ordering::Relaxed);
                    // On a terminal the line is redrawn; in a log, one line per restart.
                    if terminal || finished != printed {
                        let now = counts();
                        let width = 20;
                        let filled = (finished * width).checked_div(total).unwrap_or(width).min(width);
                        let line = format!(
                            "[{}{}] restarts {finished}/{total}  requests {}  ok {}  lost {}",
                            "#".repeat(filled),
                            "-".repeat(width - filled),
                            now.requests,
                            now.ok,
                            now.failed()
                        );
                        let mut stderr = std::io::stderr().lock();
                        let _ = if terminal {
                            write!(stderr, "\r{line}")
                        } else {
                            writeln!(stderr, "{line}")
                        };
                        let _ = stderr.flush();
                        printed = finished;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                if terminal {
                    eprintln!();
                }
            }
        });
        Progress { done, stopped, task }
    }

    fn restarted(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops the line; returns once it is finished, so the report is printed after it.
    async fn finish(self) {
        self.stopped.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}
