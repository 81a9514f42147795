//! `bench`: the benchmark driver. Run it through `bench/run.sh`, which installs the load
//! generators and Node terminus and builds in release mode first.
//!
//! ```text
//! bench [--rounds N] [--duration SECONDS] [--out DIR] [--quick] [--only load,shutdown,in-flight]
//! ```
//!
//! Every figure is measured against its baseline in the same run, scenarios interleaved
//! round by round (the order flips each round), and the median of the rounds is kept.
//! Writes `DIR/benchmarks.json` and `DIR/benchmarks.svg` (default `docs/`) and prints a
//! summary table, also saved as `bench-out/summary.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use terminus_bench::chart::{self, Bar, RatioBar, Series};
use terminus_bench::checks::READINESS_CHECKS;
use terminus_bench::conns;
use terminus_bench::load::{Load, LoadResult};
use terminus_bench::process::ServerProcess;
use terminus_bench::server::Mode;
use terminus_bench::stats::median;

/// Idle keep-alive connection counts for the shutdown figure.
const IDLE_COUNTS: [u32; 3] = [0, 1_000, 10_000];
/// Requests in flight for the drain figure, and how long each takes.
const IN_FLIGHT: usize = 1_000;
const SLOW_MS: u64 = 500;
/// How long the shutdown step's connections are idle before SIGTERM: past the idle close
/// timeout's default (1 s), so that Closing closes them at once.
const IDLE_BEFORE_SIGTERM: Duration = Duration::from_millis(1300);

/// The issue's target for SIGTERM to exit with 10,000 idle connections: at most this
/// many times the SIGKILL floor measured in the same round.
const SHUTDOWN_TARGET_FLOOR_RATIO: f64 = 1.10;
/// The name under which the SIGKILL floor is reported.
const KILL_FLOOR: &str = "sigkill-floor";

/// Settings from the command line.
#[derive(Clone, Debug, Serialize)]
struct Settings {
    rounds: usize,
    duration_s: u64,
    warmup_s: u64,
    server_workers: usize,
    server_cpus: Option<String>,
    load_cpus: Option<String>,
    /// Scenario groups to run: `load`, `shutdown`, `in-flight` (all by default).
    only: Vec<String>,
    #[serde(skip)]
    out: PathBuf,
}

/// What runs a server: one of ours, or Node terminus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Rust(Mode),
    Node,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Rust(mode) => mode.name(),
            Target::Node => "node-terminus",
        }
    }
}

/// One load scenario: the same load against each of its targets.
struct LoadCase {
    key: &'static str,
    title: &'static str,
    path: &'static str,
    connections: u32,
    h2_streams: Option<u32>,
    targets: Vec<Target>,
}

#[derive(Default, Serialize)]
struct LoadFigures {
    title: String,
    /// Per target: every round.
    rounds: BTreeMap<String, Vec<LoadResult>>,
    /// Per target: the median of each figure over the rounds.
    median: BTreeMap<String, LoadResult>,
}

#[derive(Default, Serialize)]
struct ShutdownFigures {
    /// Per target and idle connection count: SIGTERM to exit in ms, every round; under
    /// `sigkill-floor`, SIGKILL to reaped for the bare server.
    sigterm_to_exit_ms: BTreeMap<String, BTreeMap<u32, Vec<f64>>>,
    /// Per target and idle connection count: resident memory just before SIGTERM, KiB.
    rss_kib: BTreeMap<String, BTreeMap<u32, Vec<f64>>>,
    /// Per target: the in-flight drain rounds.
    in_flight: BTreeMap<String, Vec<InFlightRound>>,
}

#[derive(Clone, Serialize)]
struct InFlightRound {
    requests: usize,
    completed: usize,
    /// Why the requests that did not complete failed, and how many.
    failures: BTreeMap<String, usize>,
    sigterm_to_exit_ms: f64,
    last_response_to_exit_ms: f64,
}

/// One line of the summary: a figure, its value, and the target it is held to.
#[derive(Clone, Serialize)]
struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
    /// The target in words (`>= 0.97`), or `None` when the figure is for information.
    target: Option<String>,
    pass: Option<bool>,
    detail: String,
}

#[derive(Serialize)]
struct Report {
    command: String,
    /// The commit measured (`BENCH_COMMIT`, set by run.sh), or where the sources came from.
    commit: String,
    started_unix_s: u64,
    elapsed_s: f64,
    machine: BTreeMap<&'static str, String>,
    versions: BTreeMap<&'static str, String>,
    settings: Settings,
    readiness_checks: usize,
    load: BTreeMap<&'static str, LoadFigures>,
    shutdown: ShutdownFigures,
    figures: Vec<Figure>,
    notes: Vec<String>,
}

struct Bench {
    settings: Settings,
    server_bin: PathBuf,
    node_script: PathBuf,
    node_available: bool,
    notes: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let settings = match parse_args() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Settings, String> {
    let usage = "usage: bench [--rounds N] [--duration SECONDS] [--out DIR] [--quick] [--only load,shutdown,in-flight]";
    let cpus = online_cpus();
    let mut settings = Settings {
        rounds: 5,
        duration_s: 3,
        warmup_s: 1,
        server_workers: 1,
        // Server and load generator on separate cores, when there are two.
        server_cpus: (cpus >= 2).then(|| "1".to_owned()),
        load_cpus: (cpus >= 2).then(|| "0".to_owned()),
        only: vec!["load".to_owned(), "shutdown".to_owned(), "in-flight".to_owned()],
        out: PathBuf::from("docs"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{usage}"));
        match arg.as_str() {
            "--rounds" => settings.rounds = value()?.parse().map_err(|_| usage.to_owned())?,
            "--duration" => settings.duration_s = value()?.parse().map_err(|_| usage.to_owned())?,
            "--out" => settings.out = PathBuf::from(value()?),
            "--only" => settings.only = value()?.split(',').map(str::to_owned).collect(),
            "--quick" => {
                settings.rounds = 1;
                settings.duration_s = 2;
            }
            _ => return Err(usage.to_owned()),
        }
    }
    if settings.rounds == 0 || settings.duration_s == 0 {
        return Err(usage.to_owned());
    }
    Ok(settings)
}

async fn run(settings: Settings) -> Result<(), String> {
    raise_open_file_limit()?;
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let server_bin = exe.with_file_name("bench-server");
    if !server_bin.exists() {
        return Err(format!(
            "{} is missing: build with `cargo build --release -p terminus-bench`",
            server_bin.display()
        ));
    }
    let node_script = PathBuf::from("bench/node/server.js");
    let node_available = node_script.exists() && node_terminus_version().is_some();
    let mut bench = Bench {
        settings,
        server_bin,
        node_script,
        node_available,
        notes: Vec::new(),
    };
    if !bench.node_available {
        bench
            .notes
            .push("Node terminus was not found (NODE_PATH): the Node comparison was skipped.".to_owned());
    }
    if READINESS_CHECKS == 0 {
        bench.notes.push(
            "/readyz ran without health checks: the health registry was not available when this was measured."
                .to_owned(),
        );
    }
    let started = Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mut load = BTreeMap::new();
    let mut shutdown = ShutdownFigures::default();
    let cases = load_cases(bench.node_available);
    for round in 0..bench.settings.rounds {
        eprintln!("== round {}/{}", round + 1, bench.settings.rounds);
        let runs = |group: &str| bench.settings.only.iter().any(|only| only == group);
        if runs("load") {
            for case in &cases {
                bench.load_round(case, round, &mut load)?;
            }
        }
        if runs("shutdown") {
            bench.shutdown_round(round, &mut shutdown).await?;
        }
        if runs("in-flight") {
            bench.in_flight_round(round, &mut shutdown).await?;
        }
    }
    for figures in load.values_mut() {
        figures.median = figures
            .rounds
            .iter()
            .map(|(target, rounds)| (target.clone(), median_load(rounds)))
            .collect();
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    bench.notes.push(format!(
        "load average before: {}; after: {}",
        load_before.trim(),
        load_after.trim()
    ));

    let figures = figures(&load, &shutdown);
    let report = Report {
        command: std::env::var("BENCH_COMMAND")
            .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" ")),
        commit: std::env::var("BENCH_COMMIT").unwrap_or_else(|_| "unknown".to_owned()),
        started_unix_s,
        elapsed_s: started.elapsed().as_secs_f64(),
        machine: machine(),
        versions: versions(),
        readiness_checks: READINESS_CHECKS,
        settings: bench.settings.clone(),
        load,
        shutdown,
        figures,
        notes: bench.notes.clone(),
    };
    write_outputs(&report, &bench.settings.out)
}

fn load_cases(node: bool) -> Vec<LoadCase> {
    let pair = vec![Target::Rust(Mode::Bare), Target::Rust(Mode::Terminus)];
    let mut probe = vec![Target::Rust(Mode::Terminus), Target::Rust(Mode::PlainProbe)];
    if node {
        probe.push(Target::Node);
    }
    vec![
        LoadCase {
            key: "h1_64",
            title: "GET /, HTTP/1.1 keep-alive, 64 connections",
            path: "/",
            connections: 64,
            h2_streams: None,
            targets: vec![
                Target::Rust(Mode::Bare),
                Target::Rust(Mode::Terminus),
                Target::Rust(Mode::Layer),
            ],
        },
        LoadCase {
            key: "h1_1000",
            title: "GET /, HTTP/1.1 keep-alive, 1,000 connections",
            path: "/",
            connections: 1_000,
            h2_streams: None,
            targets: pair.clone(),
        },
        LoadCase {
            key: "h2_64",
            title: "GET /, HTTP/2 (h2c), 64 connections x 1 stream",
            path: "/",
            connections: 64,
            h2_streams: Some(1),
            targets: pair,
        },
        LoadCase {
            key: "readyz_64",
            title: "GET /readyz, HTTP/1.1 keep-alive, 64 connections",
            path: "/readyz",
            connections: 64,
            h2_streams: None,
            targets: probe,
        },
    ]
}

impl Bench {
    fn start(&self, target: Target) -> Result<ServerProcess, String> {
        let cpus = self.settings.server_cpus.as_deref();
        match target {
            Target::Rust(mode) => {
                let workers = self.settings.server_workers.to_string();
                let program = self.server_bin.to_string_lossy();
                ServerProcess::start(mode.name(), cpus, &program, &[mode.name(), &workers])
            }
            Target::Node => {
                let script = self.node_script.to_string_lossy();
                ServerProcess::start("node-terminus", cpus, "node", &[&script])
            }
        }
    }

    fn load(&self, connections: u32, h2_streams: Option<u32>) -> Load {
        Load {
            connections,
            h2_streams,
            duration: Duration::from_secs(self.settings.duration_s),
            warmup: Duration::from_secs(self.settings.warmup_s),
            cpus: self.settings.load_cpus.clone(),
        }
    }

    fn load_round(
        &self,
        case: &LoadCase,
        round: usize,
        results: &mut BTreeMap<&'static str, LoadFigures>,
    ) -> Result<(), String> {
        let figures = results.entry(case.key).or_default();
        figures.title = case.title.to_owned();
        for target in in_round_order(&case.targets, round) {
            let server = self.start(target)?;
            let load = self.load(case.connections, case.h2_streams);
            let url = server.url(case.path);
            load.warm_up(&url)?;
            let cpu_before = server.cpu_time()?;
            let mut result = load.measure(&url)?;
            let cpu = server.cpu_time()?.saturating_sub(cpu_before);
            result.server_cpu_us_per_request = cpu.as_secs_f64() * 1e6 / result.requests.max(1) as f64;
            let exit = server.terminate()?;
            eprintln!(
                "   {:<10} {:<14} {:>9.0} req/s  p50 {:>8.0} us  p99 {:>8.0} us  cpu {:>5.2} us/req  errors {}  (exit {:.1} ms)",
                case.key,
                target.name(),
                result.rps,
                result.p50_us,
                result.p99_us,
                result.server_cpu_us_per_request,
                result.errors,
                ms(exit.elapsed())
            );
            figures
                .rounds
                .entry(target.name().to_owned())
                .or_default()
                .push(result);
        }
        Ok(())
    }

    async fn shutdown_round(&self, round: usize, figures: &mut ShutdownFigures) -> Result<(), String> {
        // The SIGKILL run is the floor: what the kernel alone needs to tear the process down.
        let runs = [
            (Target::Rust(Mode::Bare), false),
            (Target::Rust(Mode::Terminus), false),
            (Target::Rust(Mode::Bare), true),
        ];
        for count in IDLE_COUNTS {
            for (target, sigkill) in in_round_order(&runs, round) {
                let server = self.start(target)?;
                let idle = conns::open_idle(server.addr(), count as usize).await?;
                // Let the server settle (allocator, connection tasks parked) before
                // measuring, and the connections be idle past terminus-rs's idle close
                // timeout (1 s): at Closing, one whose response ended less than that ago
                // is still in use, and waits for its client's next request rather than
                // race it (docs/lifecycle.md); bare axum closes it at once either way.
                tokio::time::sleep(IDLE_BEFORE_SIGTERM).await;
                let rss = server.rss_kib()?;
                let exit = tokio::task::spawn_blocking(move || {
                    if sigkill {
                        server.kill()
                    } else {
                        server.terminate()
                    }
                })
                .await
                .map_err(|error| error.to_string())??;
                drop(idle);
                let name = if sigkill {
                    KILL_FLOOR.to_owned()
                } else {
                    target.name().to_owned()
                };
                if !sigkill && !exit.success {
                    return Err(format!("{name} exited with a failure after SIGTERM"));
                }
                eprintln!(
                    "   shutdown   {name:<14} {count:>6} idle  {:>7.1} ms  rss {rss:>7} KiB",
                    ms(exit.elapsed()),
                );
                push(&mut figures.sigterm_to_exit_ms, &name, count, ms(exit.elapsed()));
                if !sigkill {
                    push(&mut figures.rss_kib, &name, count, rss as f64);
                }
            }
        }
        Ok(())
    }

    async fn in_flight_round(&self, round: usize, figures: &mut ShutdownFigures) -> Result<(), String> {
        let targets = [Target::Rust(Mode::Bare), Target::Rust(Mode::Terminus)];
        for target in in_round_order(&targets, round) {
            let server = self.start(target)?;
            // Served once first, so that the server has accepted every connection before
            // the slow requests: a connection still waiting for the end of its handshake
            // (the listen queue overflowed) is refused at Closing, a connect failure and
            // not a drain figure.
            let streams = conns::open_idle(server.addr(), IN_FLIGHT).await?;
            let path = format!("/slow?ms={SLOW_MS}");
            let (seen, exit) = conns::in_flight(streams, &path, async move {
                // Every request is in the handler's sleep well before this.
                tokio::time::sleep(Duration::from_millis(100)).await;
                tokio::task::spawn_blocking(move || server.terminate())
                    .await
                    .map_err(|error| error.to_string())?
            })
            .await;
            let exit = exit?;
            let last = seen
                .last_response
                .ok_or_else(|| format!("{}: no slow request completed", target.name()))?;
            let last_to_exit = exit.exited.saturating_duration_since(last);
            let entry = InFlightRound {
                requests: IN_FLIGHT,
                completed: seen.completed,
                failures: seen.failures.clone(),
                sigterm_to_exit_ms: ms(exit.elapsed()),
                last_response_to_exit_ms: ms(last_to_exit),
            };
            eprintln!(
                "   in-flight  {:<14} {}/{} completed  SIGTERM->exit {:.1} ms  last response->exit {:.1} ms",
                target.name(),
                entry.completed,
                entry.requests,
                entry.sigterm_to_exit_ms,
                entry.last_response_to_exit_ms
            );
            for (failure, count) in &entry.failures {
                eprintln!("              {count} failed: {failure}");
            }
            figures
                .in_flight
                .entry(target.name().to_owned())
                .or_default()
                .push(entry);
        }
        Ok(())
    }
}

/// The targets in order on even rounds and reversed on odd ones, so that neither side
/// always runs first (warmer caches, a quieter machine).
fn in_round_order<T: Clone>(targets: &[T], round: usize) -> Vec<T> {
    let mut order = targets.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

fn push(map: &mut BTreeMap<String, BTreeMap<u32, Vec<f64>>>, name: &str, count: u32, value: f64) {
    map.entry(name.to_owned())
        .or_default()
        .entry(count)
        .or_default()
        .push(value);
}

fn median_load(rounds: &[LoadResult]) -> LoadResult {
    let pick = |f: fn(&LoadResult) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    LoadResult {
        rps: pick(|r| r.rps),
        p50_us: pick(|r| r.p50_us),
        p99_us: pick(|r| r.p99_us),
        errors: rounds.iter().map(|r| r.errors).sum(),
        requests: rounds.iter().map(|r| r.requests).sum(),
        server_cpu_us_per_request: pick(|r| r.server_cpu_us_per_request),
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// The figures held to the issue's targets, plus the ones reported for information.
///
/// A load ratio is the median over the rounds of the ratio within each round: the two
/// servers of a round ran back to back, so a drift of the machine's load between rounds
/// cancels out instead of landing on one side.
fn figures(load: &BTreeMap<&'static str, LoadFigures>, shutdown: &ShutdownFigures) -> Vec<Figure> {
    let mut figures = Vec::new();
    let paired = |case: &str, subject: &str, baseline: &str, figure: fn(&LoadResult) -> f64| {
        let figures = load.get(case)?;
        let (ours, theirs) = (figures.rounds.get(subject)?, figures.rounds.get(baseline)?);
        let ratios: Vec<f64> = ours
            .iter()
            .zip(theirs)
            .map(|(ours, theirs)| figure(ours) / figure(theirs))
            .collect();
        let medians = (
            figure(figures.median.get(subject)?),
            figure(figures.median.get(baseline)?),
        );
        Some((median(&ratios), medians))
    };
    let ratio = |name: String, value: f64, target: Option<(f64, bool)>, detail: String| {
        let pass = target.map(|(bound, floor)| if floor { value >= bound } else { value <= bound });
        Figure {
            name,
            value,
            unit: "x",
            target: target.map(|(bound, floor)| format!("{} {bound}", if floor { ">=" } else { "<=" })),
            pass,
            detail,
        }
    };
    let rps = |r: &LoadResult| r.rps;
    let p50 = |r: &LoadResult| r.p50_us;
    let p99 = |r: &LoadResult| r.p99_us;
    let cpu = |r: &LoadResult| r.server_cpu_us_per_request;
    let cases = [
        ("h1_64", "HTTP/1.1, 64 conns"),
        ("h1_1000", "HTTP/1.1, 1,000 conns"),
        ("h2_64", "HTTP/2, 64 conns"),
    ];
    for (case, label) in cases {
        if let Some((value, (ours, bare))) = paired(case, "terminus", "bare", rps) {
            figures.push(ratio(
                format!("{label}: req/s terminus / bare"),
                value,
                Some((0.97, true)),
                format!("{ours:.0} vs {bare:.0} req/s"),
            ));
        }
        if let Some((value, (ours, bare))) = paired(case, "terminus", "bare", p99) {
            figures.push(ratio(
                format!("{label}: p99 terminus / bare"),
                value,
                Some((1.05, false)),
                format!("{ours:.0} vs {bare:.0} us"),
            ));
        }
        if let Some((value, (ours, bare))) = paired(case, "terminus", "bare", p50) {
            figures.push(ratio(
                format!("{label}: p50 terminus / bare"),
                value,
                None,
                format!("{ours:.0} vs {bare:.0} us"),
            ));
        }
        if let Some((value, (ours, bare))) = paired(case, "terminus", "bare", cpu) {
            figures.push(ratio(
                format!("{label}: server CPU per request terminus / bare"),
                value,
                None,
                format!("{ours:.2} vs {bare:.2} us"),
            ));
        }
    }
    if let Some((value, (ours, bare))) = paired("h1_64", "layer", "bare", rps) {
        figures.push(ratio(
            "HTTP/1.1, 64 conns: req/s layer on axum::serve / bare".to_owned(),
            value,
            None,
            format!("{ours:.0} vs {bare:.0} req/s (the layer alone, without our accept loop)"),
        ));
    }
    if let Some((value, (ours, bare))) = paired("h1_64", "layer", "bare", cpu) {
        figures.push(ratio(
            "HTTP/1.1, 64 conns: server CPU per request layer on axum::serve / bare".to_owned(),
            value,
            None,
            format!("{ours:.2} vs {bare:.2} us"),
        ));
    }
    for (baseline, label, bound) in [
        ("plain-probe", "plain axum route", 0.95),
        ("node-terminus", "Node terminus", 2.0),
    ] {
        if let Some((value, (ours, theirs))) = paired("readyz_64", "terminus", baseline, rps) {
            figures.push(ratio(
                format!("/readyz: req/s terminus / {label}"),
                value,
                Some((bound, true)),
                format!("{ours:.0} vs {theirs:.0} req/s"),
            ));
        }
        if let Some((value, (ours, theirs))) = paired("readyz_64", "terminus", baseline, cpu) {
            figures.push(ratio(
                format!("/readyz: server CPU per request terminus / {label}"),
                value,
                None,
                format!("{ours:.2} vs {theirs:.2} us"),
            ));
        }
    }
    let shutdown_ms = |target: &str, count: u32| {
        shutdown
            .sigterm_to_exit_ms
            .get(target)
            .and_then(|by_count| by_count.get(&count))
            .map(|rounds| median(rounds))
    };
    // Per round, over the SIGKILL floor of the same round; the median of those ratios.
    let over_floor = |target: &str, count: u32| {
        let rounds = |name: &str| shutdown.sigterm_to_exit_ms.get(name)?.get(&count);
        let (ours, floor) = (rounds(target)?, rounds(KILL_FLOOR)?);
        let ratios: Vec<f64> = ours.iter().zip(floor).map(|(ours, floor)| ours / floor).collect();
        Some(median(&ratios))
    };
    for count in IDLE_COUNTS {
        if let (Some(ours), Some(bare)) = (shutdown_ms("terminus", count), shutdown_ms("bare", count)) {
            let floor = shutdown_ms(KILL_FLOOR, count)
                .map_or(String::new(), |floor| format!("; SIGKILL floor: {floor:.1} ms"));
            figures.push(Figure {
                name: format!("SIGTERM to exit, {count} idle connections"),
                value: ours,
                unit: "ms",
                target: None,
                pass: None,
                detail: format!("bare axum: {bare:.1} ms{floor}"),
            });
        }
    }
    if let (Some(ours), Some(bare)) = (over_floor("terminus", 10_000), over_floor("bare", 10_000)) {
        figures.push(ratio(
            "SIGTERM to exit, 10,000 idle connections: terminus / SIGKILL floor".to_owned(),
            ours,
            Some((SHUTDOWN_TARGET_FLOOR_RATIO, false)),
            format!("bare axum / SIGKILL floor: {bare:.3}"),
        ));
    }
    for target in ["bare", "terminus"] {
        if let Some(rounds) = shutdown.in_flight.get(target) {
            let last = median(
                &rounds
                    .iter()
                    .map(|r| r.last_response_to_exit_ms)
                    .collect::<Vec<_>>(),
            );
            let total = median(&rounds.iter().map(|r| r.sigterm_to_exit_ms).collect::<Vec<_>>());
            let completed: usize = rounds.iter().map(|r| r.completed).min().unwrap_or(0);
            figures.push(Figure {
                name: format!("{target}: last of {IN_FLIGHT} in-flight {SLOW_MS} ms responses to exit"),
                value: last,
                unit: "ms",
                target: None,
                pass: None,
                detail: format!(
                    "SIGTERM to exit {total:.1} ms; fewest completed in a round: {completed}/{IN_FLIGHT}"
                ),
            });
        }
    }
    let rss = |target: &str, count: u32| {
        shutdown
            .rss_kib
            .get(target)
            .and_then(|by_count| by_count.get(&count))
            .map(|rounds| median(rounds))
    };
    if let (Some(ours), Some(bare), Some(ours0), Some(bare0)) = (
        rss("terminus", 10_000),
        rss("bare", 10_000),
        rss("terminus", 0),
        rss("bare", 0),
    ) {
        figures.push(ratio(
            "RSS with 10,000 idle connections: terminus / bare".to_owned(),
            ours / bare,
            Some((1.05, false)),
            format!(
                "{:.1} vs {:.1} MiB ({:.2} vs {:.2} KiB per connection over the idle process)",
                ours / 1024.0,
                bare / 1024.0,
                (ours - ours0) / 10_000.0,
                (bare - bare0) / 10_000.0
            ),
        ));
    }
    figures
}

fn write_outputs(report: &Report, out: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out).map_err(|error| format!("{}: {error}", out.display()))?;
    std::fs::create_dir_all("bench-out").map_err(|error| format!("bench-out: {error}"))?;
    let json = serde_json::to_string_pretty(report).map_err(|error| error.to_string())?;
    std::fs::write(out.join("benchmarks.json"), json + "\n").map_err(|error| error.to_string())?;
    std::fs::write(out.join("benchmarks.svg"), svg(report)).map_err(|error| error.to_string())?;
    let table = summary_table(report);
    std::fs::write("bench-out/summary.md", &table).map_err(|error| error.to_string())?;
    println!("{table}");
    for note in &report.notes {
        println!("note: {note}");
    }
    println!(
        "wrote {} and {}",
        out.join("benchmarks.json").display(),
        out.join("benchmarks.svg").display()
    );
    Ok(())
}

fn summary_table(report: &Report) -> String {
    let mut table = String::from("| figure | value | target | met | detail |\n|---|---:|---|---|---|\n");
    for figure in &report.figures {
        let value = match figure.unit {
            "x" => format!("{:.3}", figure.value),
            unit => format!("{:.1} {unit}", figure.value),
        };
        let met = match figure.pass {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        table.push_str(&format!(
            "| {} | {value} | {} | {met} | {} |\n",
            figure.name,
            figure.target.as_deref().unwrap_or("(info)"),
            figure.detail
        ));
    }
    table
}

fn svg(report: &Report) -> String {
    let ratios: Vec<RatioBar> = report
        .figures
        .iter()
        .filter(|figure| {
            figure.unit == "x"
                && !figure.name.contains("Node")
                && (figure.target.is_some() || figure.name.contains("CPU per request terminus / bare"))
        })
        .map(|figure| RatioBar {
            label: short_label(&figure.name),
            value: figure.value,
            target: figure
                .target
                .as_deref()
                .and_then(|target| target.rsplit(' ').next()?.parse().ok()),
            higher_is_better: figure
                .target
                .as_deref()
                .is_some_and(|target| target.starts_with(">=")),
        })
        .collect();
    let probe: Vec<Bar> = report
        .load
        .get("readyz_64")
        .map(|figures| {
            [
                ("terminus", "terminus-rs /readyz"),
                ("plain-probe", "plain axum route"),
                ("node-terminus", "Node terminus 4.12.1"),
            ]
            .into_iter()
            .filter_map(|(key, label)| {
                Some(Bar {
                    label: label.to_owned(),
                    value: figures.median.get(key)?.rps,
                })
            })
            .collect()
        })
        .unwrap_or_default();
    let shutdown: Vec<Series> = [
        ("bare", "bare axum::serve + with_graceful_shutdown"),
        ("terminus", "axum_terminus::serve"),
        (KILL_FLOOR, "floor: SIGKILL of the bare server"),
    ]
    .into_iter()
    .filter_map(|(key, label)| {
        let by_count = report.shutdown.sigterm_to_exit_ms.get(key)?;
        Some(Series {
            label: label.to_owned(),
            points: by_count
                .iter()
                .map(|(count, rounds)| (*count, median(rounds)))
                .collect(),
        })
    })
    .collect();
    let subtitle = format!(
        "{} ({} cores), {}, median of {} rounds; {}",
        report.machine.get("cpu").map_or("?", String::as_str),
        report.machine.get("cores").map_or("?", String::as_str),
        report.versions.get("rustc").map_or("?", String::as_str),
        report.settings.rounds,
        if report.readiness_checks == 0 {
            "/readyz without checks"
        } else {
            "/readyz with 2 cached checks"
        }
    );
    // The target as a line: the floor's median at 10,000 connections, times the ratio.
    let target_ms = (report.shutdown.sigterm_to_exit_ms)
        .get(KILL_FLOOR)
        .and_then(|by_count| by_count.get(&10_000))
        .map(|rounds| median(rounds) * SHUTDOWN_TARGET_FLOOR_RATIO);
    chart::render(&subtitle, &ratios, &probe, &shutdown, target_ms)
}

fn short_label(name: &str) -> String {
    name.replace(" terminus / bare", "")
        .replace("server CPU per request", "CPU/request")
        .replace("HTTP/1.1, ", "h1 ")
        .replace("HTTP/2, ", "h2 ")
        .replace(" conns", "")
        .replace("RSS with 10,000 idle connections:", "RSS, 10k idle")
        .replace(
            "/readyz: req/s terminus / plain axum route",
            "/readyz req/s vs plain route",
        )
        .replace("64: req/s layer on axum::serve / bare", "64: req/s, layer only")
}

/// The machine's CPUs, whatever this process is pinned to (`run.sh` pins the driver to
/// core 0, and `available_parallelism` would then say 1).
fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|cpuinfo| {
            cpuinfo
                .lines()
                .filter(|line| line.starts_with("processor"))
                .count()
        })
        .unwrap_or(0)
        .max(1)
}

fn raise_open_file_limit() -> Result<(), String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|error| error.to_string())?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|error| format!("setrlimit: {error}"))?;
    }
    // Client and server each hold one socket per connection, in separate processes.
    if hard < 12_000 {
        return Err(format!(
            "the open-file limit is {hard}: 10,000 connections need more (run as root, or raise `ulimit -Hn`)"
        ));
    }
    Ok(())
}

fn machine() -> BTreeMap<&'static str, String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)?
                    .split_once(':')
                    .map(|(_, value)| value.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let mut machine = BTreeMap::new();
    machine.insert("cpu", field(&cpuinfo, "model name"));
    machine.insert("cores", online_cpus().to_string());
    machine.insert("memory", field(&meminfo, "MemTotal"));
    machine.insert("kernel", command_line("uname", &["-r"]).unwrap_or_default());
    machine
}

fn versions() -> BTreeMap<&'static str, String> {
    let mut versions = BTreeMap::new();
    versions.insert("rustc", command_line("rustc", &["--version"]).unwrap_or_default());
    versions.insert("node", command_line("node", &["--version"]).unwrap_or_default());
    versions.insert("wrk", command_line("wrk", &["-v"]).unwrap_or_default());
    versions.insert(
        "h2load",
        command_line("h2load", &["--version"]).unwrap_or_default(),
    );
    versions.insert("@godaddy/terminus", node_terminus_version().unwrap_or_default());
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for name in ["axum", "hyper", "hyper-util", "tokio"] {
        versions.insert(name, locked_version(&lock, name).unwrap_or_default());
    }
    versions
}

/// The version of `name` in `Cargo.lock` (the first entry, if several).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let needle = format!("name = \"{name}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    Some(lock[start..].split('"').next()?.to_owned())
}

fn node_terminus_version() -> Option<String> {
    let modules = std::env::var("NODE_PATH").ok()?;
    let package = std::fs::read_to_string(Path::new(&modules).join("@godaddy/terminus/package.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&package).ok()?;
    Some(value.get("version")?.as_str()?.to_owned())
}

/// The first line a command prints (stdout, or stderr for tools that print there).
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program).args(args).output().ok()?;
    let text = if output.stdout.is_empty() {
        output.stderr
    } else {
        output.stdout
    };
    Some(String::from_utf8_lossy(&text).lines().next()?.trim().to_owned())
}
