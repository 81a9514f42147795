//! A rolling restart of the gRPC example behind a real HAProxy, under a steady load of
//! unary calls from tonic clients: what gRPC clients see, and what they need to lose
//! nothing.
//!
//! Two backends (`grpc-server`, HTTP/2 only) run behind HAProxy (see
//! `terminus_tests::haproxy::grpc_config`: checks of `GET /readyz` over HTTP/2 every
//! second, one failure marks a server down, no retries, no redispatch). Each backend is
//! restarted twice: SIGTERM, wait for the exit, then a fresh process, at once on the same
//! port (a restarted container) or after a pause on another port (a new pod). The load
//! (`terminus_tests::grpc_load`) is fast `SayHello` calls plus 0.5-1.5 s
//! `SayHelloSlowly` calls, on tonic channels with no retry unless a scenario says so.
//!
//! - **HTTP/2 balancer** (`proto h2`, HAProxy ends the client's streams, as Envoy or an
//!   ingress does): with a drain delay that covers the balancer's detection time, no
//!   call fails, with a plain tonic client (no retry, default channel settings);
//!   without a drain delay (the negative control) calls fail.
//! - **Pinned connections** (TCP passthrough, as a ClusterIP Service): the backend's
//!   GOAWAY reaches the tonic client, which reconnects through the balancer. A client
//!   that retries `UNAVAILABLE` loses nothing; a plain one's failures are printed.
//!
//! Each scenario prints one line on stderr:
//! `grpc-rolling-restart scenario=<name> client=<config> calls=N ok=N failed=N ...`.
//! `docs/grpc.md` records the figures.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use terminus_tests::grpc_load::{ClientConfig, GrpcCounts, GrpcLoad, GrpcLoadConfig};
use terminus_tests::haproxy::{self, free_port, GrpcMode, Haproxy, ServerSlot};
use terminus_tests::logs::field_u64;
use terminus_tests::{grpc_server, TestServer};

/// HAProxy needs up to `inter` (1 s) plus the check's own time to see a failed readiness
/// probe; 3 s leaves a margin on a loaded machine (Kubernetes: the endpoint removal).
const DRAIN_DELAY: &str = "3s";
/// Longer than the slowest call (1.5 s): nothing should need to be cut.
const DRAIN_TIMEOUT: &str = "10s";
/// Each of the two backends twice.
const RESTARTS: usize = 4;
const EXIT_DEADLINE: Duration = Duration::from_secs(15);
const DETECTION_DEADLINE: Duration = Duration::from_secs(10);
const NEW_POD_DELAY: Duration = Duration::from_secs(1);

/// The scenarios share the machine's two cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    tokio::task::block_in_place(|| TestServer::start(grpc_server!(), &envs))
}

struct Figures {
    /// One count per load, in the order of the `clients` given.
    counts: Vec<GrpcCounts>,
    /// Requests the stopped backends cut at their deadline.
    cut: u64,
    exit_codes: Vec<Option<i32>>,
}

/// One load per client; with several, each is smaller so that the machine's two cores
/// are not the bottleneck.
fn load_config(addr: std::net::SocketAddr, client: ClientConfig, loads: usize) -> GrpcLoadConfig {
    GrpcLoadConfig {
        addr,
        channels: 2,
        workers: if loads > 1 { 4 } else { 6 },
        slow_workers: 2,
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
        client,
    }
}

async fn run_scenario(
    scenario: &str,
    mode: GrpcMode,
    drain_delay: &str,
    clients: &[ClientConfig],
) -> Figures {
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
    let proxy = Haproxy::start_grpc(&slots, mode);
    let live =
        |backends: &[Backend]| -> Vec<String> { backends.iter().map(|b| b.name().to_owned()).collect() };
    let up = live(&backends);
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    if let Err(states) = proxy.wait_for_states(&up, DETECTION_DEADLINE).await {
        panic!(
            "HAProxy never saw {up:?} up and the rest down: {states:?}\n{}",
            proxy.log()
        );
    }

    let loads: Vec<GrpcLoad> = clients
        .iter()
        .map(|client| GrpcLoad::start(load_config(proxy.h2, *client, clients.len())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut cut = 0;
    let mut exit_codes = Vec::new();
    for restart in 0..RESTARTS {
        let backend = &mut backends[restart % 2];
        backend.server.signal("TERM");
        let Some(status) = backend.server.wait_exit(EXIT_DEADLINE).await else {
            panic!(
                "{scenario}: backend {} did not exit within {EXIT_DEADLINE:?}",
                backend.name()
            );
        };
        assert_eq!(status.signal(), None, "the backend exited by itself");
        exit_codes.push(status.code());
        let event = backend
            .server
            .stderr()
            .into_iter()
            .find(|line| line.contains("shutdown complete"))
            .unwrap_or_else(|| panic!("no `shutdown complete` from {}", backend.name()));
        cut += field_u64(&event, "requests_cut").expect("requests_cut");
        if restart >= 2 {
            // A new pod: another address, after a pause.
            tokio::time::sleep(NEW_POD_DELAY).await;
            backend.current = 1 - backend.current;
        }
        backend.server = start_backend(backend.ports[backend.current], drain_delay);
        let up = live(&backends);
        let up: Vec<&str> = up.iter().map(String::as_str).collect();
        if let Err(states) = proxy.wait_for_states(&up, DETECTION_DEADLINE).await {
            panic!("{scenario}: HAProxy never routed to {up:?}: {states:?}");
        }
        // Let the new backend take traffic before the next one stops.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let seconds = loads.first().map_or(0.0, |load| load.elapsed().as_secs_f64());
    let mut counts = Vec::new();
    for (load, client) in loads.into_iter().zip(clients) {
        let load_counts = load.stop().await;
        // Written to the process's stderr directly, so the CI log shows it even when the
        // test passes (the harness only captures `print!`/`eprint!`).
        let _ = writeln!(
            std::io::stderr(),
            "grpc-rolling-restart scenario={scenario} client={client:?} {load_counts} \
             cut={cut} restarts={RESTARTS} drain_delay={drain_delay} load_seconds={seconds:.0} \
             first_failures={:?}",
            load_counts.first_failures.iter().take(3).collect::<Vec<_>>()
        );
        counts.push(load_counts);
    }
    Figures {
        counts,
        cut,
        exit_codes,
    }
}

fn assert_graceful(figures: &Figures) {
    assert_eq!(figures.cut, 0, "no backend cut an RPC at its deadline");
    assert!(
        figures.exit_codes.iter().all(|code| *code == Some(0)),
        "every stop was graceful: {:?}",
        figures.exit_codes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_an_http2_balancer_a_rolling_restart_loses_no_rpc_with_a_drain_delay() {
    let figures = run_scenario(
        "http2-balancer",
        GrpcMode::Http,
        DRAIN_DELAY,
        &[ClientConfig::Plain],
    )
    .await;
    let counts = &figures.counts[0];
    assert_eq!(
        counts.failed(),
        0,
        "every call ends OK, with no retry: {counts}\nfirst failures:\n{}",
        counts.first_failures.join("\n")
    );
    assert_eq!(counts.calls, counts.ok);
    assert_graceful(&figures);
    // The load was real: thousands of calls, slow ones in flight at each restart.
    assert!(counts.calls >= 2000, "{counts}");
    assert!(counts.ok_slow >= 20, "{counts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_without_drain_delay_the_same_rolling_restart_loses_rpcs() {
    let figures = run_scenario(
        "http2-balancer-no-drain-delay",
        GrpcMode::Http,
        "0s",
        &[ClientConfig::Plain],
    )
    .await;
    let counts = &figures.counts[0];
    assert!(counts.calls >= 1000, "the load ran: {counts}");
    assert!(
        counts.failed() > 0,
        "closing the listener before the balancer noticed must lose calls, else the \
         positive test proves nothing: {counts}"
    );
    // The backends stopped gracefully: the loss is in the balancer's detection window.
    assert!(
        figures.exit_codes.iter().all(|code| *code == Some(0)),
        "{:?}",
        figures.exit_codes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_clients_see_goaway_and_lose_nothing_when_they_retry_unavailable_and_unsent_calls() {
    let clients = [
        ClientConfig::Plain,
        ClientConfig::RetryUnavailable,
        ClientConfig::RetryUnavailableAndUnsent,
    ];
    let figures = run_scenario("pinned-connections", GrpcMode::Tcp, DRAIN_DELAY, &clients).await;
    let retrying = &figures.counts[2];
    assert_eq!(
        retrying.failed(),
        0,
        "a client that retries UNAVAILABLE and calls that never left it loses nothing: \
         {retrying}\nfirst failures:\n{}",
        retrying.first_failures.join("\n")
    );
    for counts in &figures.counts {
        assert!(counts.calls >= 1000, "{counts}");
        // Whatever fails is safe to retry: the server never saw it, or said UNAVAILABLE.
        assert!(
            counts.failed_by_code.keys().all(|code| code == "Unavailable"
                || code == "Cancelled(never sent)"
                || code.ends_with("(refused unprocessed)")),
            "{counts}\n{}",
            counts.first_failures.join("\n")
        );
    }
    assert_graceful(&figures);
}
