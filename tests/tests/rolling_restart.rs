//! A rolling restart through a real HAProxy loses no request, and the same scenario
//! without a drain delay does: the proof that the first test can fail.
//!
//! Two quickstart backends (`test-server`) run behind HAProxy (see
//! `terminus_tests::haproxy` for the configuration: health checks on `/readyz` every
//! second, one failure marks a server down, no retries, no redispatch). A paced load of
//! fast GETs, POSTs with a body and 1-3 s requests, over HTTP/1.1 keep-alive and HTTP/2,
//! runs while each backend is restarted three times: SIGTERM, wait for the exit, then a fresh
//! process, either at once on the same port (a restarted container) or after a pause
//! on another port (a new pod at a new address). HAProxy has a server line for both ports
//! of each slot; the one not in use is simply down, as an endpoint that does not exist yet.
//!
//! Each scenario prints one line (on stderr, past the test harness's capture):
//! `rolling-restart scenario=<name> requests=N ok=N failed=N cut=N restarts=N ...`.
//! `docs/reliability.md` records the figures.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use terminus_tests::haproxy::{self, free_port, Haproxy, ServerSlot};
use terminus_tests::loadgen::{Counts, Load, LoadConfig};
use terminus_tests::{test_server, TestServer};

/// HAProxy needs up to `inter` (1 s) plus the check's own time to see a failed readiness
/// probe; 3 s leaves a margin of well over a second on a loaded machine. This is the
/// Kubernetes-style setting: the drain delay covers the balancer's detection time.
const KUBERNETES_STYLE_DRAIN_DELAY: &str = "3s";
/// Longer than the slowest request (3 s): nothing should need to be cut.
const DRAIN_TIMEOUT: &str = "10s";
/// Restarts per scenario: each of the two backends three times, alternating the modes
/// (same port at once, new address after a delay, same port at once).
const RESTARTS: usize = 6;
/// Drain delay + the slowest request + margin.
const EXIT_DEADLINE: Duration = Duration::from_secs(15);
/// How long HAProxy may take to see a new backend up (one check, `rise 1`) or an old one down.
const DETECTION_DEADLINE: Duration = Duration::from_secs(10);
/// How long the new address stays empty in the "new pod" mode.
const NEW_POD_DELAY: Duration = Duration::from_secs(2);

/// The two scenarios share the machine's two cores: run them one after the other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug)]
enum RestartMode {
    /// The new process binds the same port as soon as the old one has exited.
    SamePortAtOnce,
    /// The new process starts after a pause, on the slot's other port.
    NewAddressAfterDelay,
}

/// One backend slot: two possible ports (two HAProxy server lines) and the process
/// currently running on one of them.
struct Backend {
    names: [String; 2],
    ports: [u16; 2],
    current: usize,
    server: TestServer,
}

impl Backend {
    fn name(&self) -> &str {
        &self.names[self.current]
    }
}

fn start_backend(port: u16, drain_delay: &str) -> TestServer {
    let port = port.to_string();
    let envs = [
        ("PORT", port.as_str()),
        ("TERMINUS_DRAIN_DELAY", drain_delay),
        ("TERMINUS_DRAIN_TIMEOUT", DRAIN_TIMEOUT),
    ];
    // Starting waits (blocking) for the "listening" line; the load runs on other threads.
    tokio::task::block_in_place(|| TestServer::start(test_server!(), &envs))
}

/// What one scenario measured.
struct Figures {
    counts: Counts,
    /// Connections the stopped backends reported cutting at their drain deadline.
    cut: u64,
    restarts: usize,
    /// Exit code of each stopped backend.
    exit_codes: Vec<Option<i32>>,
}

/// The `connections_cut=N` field of a backend's `shutdown complete` event.
fn connections_cut(server: &TestServer) -> Option<u64> {
    let line = server
        .stderr()
        .into_iter()
        .find(|line| line.contains("shutdown complete"))?;
    let (_, rest) = line.split_once("connections_cut=")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

async fn run_scenario(scenario: &str, drain_delay: &str) -> Figures {
    let _one_at_a_time = SERIAL.lock().await;
    assert!(
        haproxy::available(),
        "HAProxy is required: apt-get install haproxy (.ci/run does)"
    );

    let mut backends: Vec<Backend> = ["a", "b"]
        .into_iter()
        .map(|slot| {
            let ports = [free_port(), free_port()];
            Backend {
                names: [format!("{slot}0"), format!("{slot}1")],
                ports,
                current: 0,
                server: start_backend(ports[0], drain_delay),
            }
        })
        .collect();
    let slots: Vec<ServerSlot> = backends
        .iter()
        .flat_map(|backend| {
            (0..2).map(|index| ServerSlot {
                name: backend.names[index].clone(),
                port: backend.ports[index],
            })
        })
        .collect();
    let proxy = Haproxy::start(&slots);
    let live: Vec<String> = backends.iter().map(|b| b.name().to_owned()).collect();
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    // HAProxy assumes servers up until their first check: start the load only once the
    // unused addresses are known to be down.
    if let Err(states) = proxy.wait_for_states(&live, DETECTION_DEADLINE).await {
        panic!(
            "HAProxy never saw {live:?} up and the rest down: {states:?}\n{}",
            proxy.log()
        );
    }

    let load = Load::start(LoadConfig {
        h1: proxy.h1,
        h2: Some(proxy.h2),
        h1_workers: 4,
        h1_slow_workers: 3,
        h2_connections: 2,
        h2_workers_per_connection: 3,
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
        slow_in_mix: true,
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut cut = 0;
    let mut exit_codes = Vec::new();
    for restart in 0..RESTARTS {
        let slot = restart % 2;
        let mode = if (restart / 2) % 2 == 0 {
            RestartMode::SamePortAtOnce
        } else {
            RestartMode::NewAddressAfterDelay
        };
        let backend = &mut backends[slot];
        backend.server.signal("TERM");
        let Some(status) = backend.server.wait_exit(EXIT_DEADLINE).await else {
            panic!(
                "scenario {scenario}: backend {} did not exit within {EXIT_DEADLINE:?}",
                backend.name()
            );
        };
        assert_eq!(status.signal(), None, "the backend exited by itself");
        exit_codes.push(status.code());
        cut += connections_cut(&backend.server).unwrap_or_else(|| {
            panic!(
                "no `shutdown complete` event from {}:\n{}",
                backend.name(),
                backend.server.stderr().join("\n")
            )
        });
        if let RestartMode::NewAddressAfterDelay = mode {
            tokio::time::sleep(NEW_POD_DELAY).await;
            backend.current = 1 - backend.current;
        }
        backend.server = start_backend(backend.ports[backend.current], drain_delay);

        let live: Vec<String> = backends.iter().map(|b| b.name().to_owned()).collect();
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        if let Err(states) = proxy.wait_for_states(&live, DETECTION_DEADLINE).await {
            panic!("scenario {scenario}: HAProxy never routed to {live:?}: {states:?}");
        }
        // Let the new backend take traffic before the next one stops.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let load_seconds = load.elapsed().as_secs_f64();
    let counts = load.stop().await;

    let figures = Figures {
        counts,
        cut,
        restarts: RESTARTS,
        exit_codes,
    };
    let counts = &figures.counts;
    // Written to the process's stderr directly, so the CI log shows it even when the
    // test passes (the harness only captures `print!`/`eprint!`).
    let _ = writeln!(
        std::io::stderr(),
        "rolling-restart scenario={scenario} requests={} ok={} failed={} cut={} restarts={} \
         drain_delay={drain_delay} load_seconds={load_seconds:.0} (status={} {:?} conn={} truncated={} timeout={}; ok h2={} post={} slow={})",
        counts.requests,
        counts.ok,
        counts.failed(),
        figures.cut,
        figures.restarts,
        counts.bad_status,
        counts.statuses,
        counts.connection_errors,
        counts.truncated,
        counts.timeouts,
        counts.ok_h2,
        counts.ok_post,
        counts.ok_slow,
    );
    figures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_behind_haproxy_loses_no_request_with_a_kubernetes_style_drain_delay() {
    let figures = run_scenario("kubernetes-style", KUBERNETES_STYLE_DRAIN_DELAY).await;
    let counts = &figures.counts;
    assert_eq!(
        counts.failed(),
        0,
        "every request gets a complete 2xx response: {counts}\nfirst failures:\n{}",
        counts.first_failures.join("\n")
    );
    assert_eq!(counts.requests, counts.ok);
    assert_eq!(figures.cut, 0, "no backend cut a connection at its deadline");
    assert!(
        figures.exit_codes.iter().all(|code| *code == Some(0)),
        "every stop was graceful: {:?}",
        figures.exit_codes
    );
    // The load was real: every kind of request went through, many times.
    assert!(counts.requests >= 2000, "{counts}");
    assert!(
        counts.ok_h2 >= 200 && counts.ok_post >= 200 && counts.ok_slow >= 20,
        "{counts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_drain_delay_the_same_rolling_restart_loses_requests() {
    let figures = run_scenario("no-drain-delay", "0s").await;
    let counts = &figures.counts;
    assert!(counts.requests >= 1000, "the load ran: {counts}");
    assert!(
        counts.failed() > 0,
        "closing the listener before the balancer noticed must lose requests, \
         else the positive test proves nothing: {counts}"
    );
    // The backends themselves believe they stopped gracefully: the loss happens in the
    // balancer, which is exactly what the drain delay is for.
    assert!(
        figures.exit_codes.iter().all(|code| *code == Some(0)),
        "{:?}",
        figures.exit_codes
    );
}
