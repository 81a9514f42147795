//! systemd end to end, with the test playing systemd: a socket unit that holds the
//! listening socket and starts the quickstart (as `test-server`) on it, and a notify
//! socket that receives its `sd_notify` messages.
//!
//! - Socket activation: the quickstart is restarted 5 times on the same socket under a
//!   steady load (keep-alive HTTP/1.1 and HTTP/2, a new connection per request, GET,
//!   POST and slow requests), with no balancer in front: no connection is refused, no
//!   request is lost, and every old process exits 0. While one process stops and the
//!   next starts, the kernel queues new connections on the socket.
//! - Notifications arrive in order: READY=1 when serving, STOPPING=1 at Draining,
//!   STATUS= with each phase, WATCHDOG=1 every half `WATCHDOG_USEC`.
//! - A notify socket nobody reads (its queue full) stalls nothing: `/livez` answers
//!   within 1 s on a one-worker runtime, and SIGTERM still ends the process with 0.
//! - A passed socket that cannot accept (bound but not listening, or a datagram
//!   socket) fails the start with an error naming the descriptor and what is wrong.
//!
//! The restart test prints one line (on stderr, past the harness's capture):
//! `socket-activation restarts=5 requests=N ok=N failed=N ...`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use terminus_tests::loadgen::{Load, LoadConfig};
use terminus_tests::systemd::{NotifySocket, SocketUnit};
use terminus_tests::{logs, temp_path, test_server, TestServer, H1};

const RESTARTS: usize = 5;
/// Long enough for every keep-alive client (one request every 20 ms) to get a
/// `connection: close` or a GOAWAY before the process stops reading its connections.
const DRAIN_DELAY: &str = "500ms";
/// The load between two restarts.
const BETWEEN_RESTARTS: Duration = Duration::from_millis(1500);
/// Drain delay + the slowest request (3 s) + margin.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// Clients that open a new connection for every request, alternating `GET /` and
/// `POST /`: each one meets whichever process accepts at that moment, or waits in the
/// socket's queue.
struct FreshConnections {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FreshConnections {
    fn start(addr: SocketAddr, clients: usize) -> FreshConnections {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|client| {
                let (stop, ok, failures) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failures));
                tokio::spawn(async move {
                    let mut sent = client;
                    while !stop.load(Ordering::Relaxed) {
                        let method = if sent % 2 == 0 { "GET" } else { "POST" };
                        sent += 1;
                        let exchange = async {
                            let mut connection = H1::connect(addr).await?;
                            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                                connection.send(method, "/", "a body to read").await?,
                            )
                        };
                        match tokio::time::timeout(Duration::from_secs(15), exchange).await {
                            Ok(Ok(reply)) if reply.status == 200 && reply.body == "hello" => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures
                                .lock()
                                .unwrap()
                                .push(format!("{method} on a new connection: {other:?}")),
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .collect();
        FreshConnections {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a fresh-connection client");
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

fn start_on(unit: &SocketUnit) -> TestServer {
    let envs = [
        ("TERMINUS_DRAIN_DELAY", DRAIN_DELAY),
        ("TERMINUS_DRAIN_TIMEOUT", "10s"),
    ];
    // Starting waits (blocking) for the `listening` line; the load runs on other threads.
    let server = tokio::task::block_in_place(|| unit.start(test_server!(), &envs));
    assert_eq!(
        server.addr(),
        unit.addr(),
        "the quickstart serves the socket it was given"
    );
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activated_restarts_under_load_refuse_nothing_and_lose_nothing() {
    let unit = SocketUnit::bind(1024).expect("a listening socket");
    let addr = unit.addr();
    let mut server = start_on(&unit);
    let load = Load::start(LoadConfig {
        h1: addr,
        h2: Some(addr),
        h1_workers: 4,
        h1_slow_workers: 1,
        h2_connections: 1,
        h2_workers_per_connection: 3,
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(15),
        slow_in_mix: true,
    });
    let fresh = FreshConnections::start(addr, 2);

    let mut exits = Vec::new();
    for _ in 0..RESTARTS {
        tokio::time::sleep(BETWEEN_RESTARTS).await;
        server.signal("TERM");
        let status = server.wait_exit(EXIT_BOUND).await;
        let log = server.stderr();
        exits.push((status.and_then(|status| status.code()), log));
        server = start_on(&unit);
    }
    tokio::time::sleep(BETWEEN_RESTARTS).await;
    let counts = load.stop().await;
    let (fresh_ok, fresh_failures) = fresh.stop().await;
    server.signal("TERM");
    let last = server.wait_exit(EXIT_BOUND).await;

    let codes: Vec<Option<i32>> = exits.iter().map(|(code, _)| *code).collect();
    let _ = writeln!(
        std::io::stderr(),
        "socket-activation restarts={RESTARTS} {counts} fresh_ok={fresh_ok} fresh_failed={} exit_codes={codes:?}",
        fresh_failures.len()
    );
    for (code, log) in &exits {
        assert_eq!(
            *code,
            Some(0),
            "each old process exits 0\n{}",
            logs::tail(log, 20)
        );
    }
    assert_eq!(last.and_then(|status| status.code()), Some(0));
    assert_eq!(
        counts.failed(),
        0,
        "no request lost or refused: {counts}\n{:#?}",
        counts.first_failures
    );
    assert!(fresh_failures.is_empty(), "new connections: {fresh_failures:#?}");
    // The load really ran across the restarts, of every kind.
    assert!(counts.ok > 500, "{counts}");
    assert!(
        counts.ok_h2 > 0 && counts.ok_post > 0 && counts.ok_slow > 0,
        "{counts}"
    );
    assert!(fresh_ok > 100, "fresh_ok={fresh_ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_messages_arrive_in_order_with_watchdog_pings() {
    let notify = NotifySocket::bind(&temp_path("notify.sock")).expect("a notify socket");
    let path = notify.path().display().to_string();
    let mut server = TestServer::start(
        test_server!(),
        &[
            ("NOTIFY_SOCKET", path.as_str()),
            // 200 ms: a ping every 100 ms.
            ("WATCHDOG_USEC", "200000"),
            ("TERMINUS_DRAIN_DELAY", "300ms"),
            ("TERMINUS_DRAIN_TIMEOUT", "10s"),
        ],
    );
    // Serving, and pinging the watchdog: wait for READY and five pings after it.
    let mut pings_after_ready = None;
    let serving = tokio::task::block_in_place(|| {
        notify.receive(Duration::from_secs(10), |message| {
            if message.iter().any(|line| line == "READY=1") {
                pings_after_ready = Some(0);
            } else if message == ["WATCHDOG=1"] {
                if let Some(pings) = pings_after_ready.as_mut() {
                    *pings += 1;
                }
            }
            pings_after_ready >= Some(5)
        })
    });
    // A slow request keeps the server in Closing long enough to be told.
    let slow = tokio::spawn(terminus_tests::get(server.addr(), "/slow?ms=1500"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal("TERM");
    let stopping = tokio::task::block_in_place(|| {
        notify.receive(Duration::from_secs(10), |message| {
            message.iter().any(|line| line.starts_with("STATUS=stopped"))
        })
    });
    let exit = server.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(slow.await.unwrap().unwrap().status, 200);

    let messages: Vec<Vec<String>> = serving.into_iter().chain(stopping).collect();
    let _ = writeln!(std::io::stderr(), "sd_notify messages: {messages:?}");
    let states: Vec<&Vec<String>> = messages
        .iter()
        .filter(|message| *message != &["WATCHDOG=1"])
        .collect();
    let statuses: Vec<&str> = states
        .iter()
        .flat_map(|message| message.iter())
        .filter_map(|line| line.strip_prefix("STATUS="))
        .collect();
    let position = |prefix: &str| statuses.iter().position(|status| status.starts_with(prefix));
    let order = [
        "serving",
        "draining (signal SIGTERM)",
        "closing: 1 requests in flight",
        "stopped: graceful, exit status 0",
    ];
    let positions: Vec<Option<usize>> = order.iter().map(|prefix| position(prefix)).collect();
    assert!(
        positions.iter().all(Option::is_some),
        "every phase told: {statuses:?}"
    );
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "in order: {statuses:?}"
    );
    // READY with serving, STOPPING with draining: once each.
    let with = |flag: &str| -> Vec<&&Vec<String>> {
        states
            .iter()
            .filter(|message| message.iter().any(|line| line == flag))
            .collect()
    };
    let ready = with("READY=1");
    assert_eq!(ready.len(), 1, "{messages:?}");
    assert!(ready[0].contains(&"STATUS=serving".to_owned()), "{messages:?}");
    let stopping = with("STOPPING=1");
    assert_eq!(stopping.len(), 1, "{messages:?}");
    assert!(
        stopping[0].iter().any(|line| line.starts_with("STATUS=draining")),
        "{messages:?}"
    );
    // Pings went on while serving.
    assert!(pings_after_ready >= Some(5), "{messages:?}");
    assert_eq!(exit.and_then(|status| status.code()), Some(0));
}

/// A second look at the restart test's premise: the listening socket is the unit's, not
/// the process's, so connections made while no process runs wait in its queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_between_two_processes_waits_for_the_next_one() {
    let unit = SocketUnit::bind(128).expect("a listening socket");
    let mut first = start_on(&unit);
    first.signal("TERM");
    assert_eq!(
        first.wait_exit(EXIT_BOUND).await.and_then(|status| status.code()),
        Some(0)
    );

    // No process serves the socket now: the connection is queued, not refused.
    let started = Instant::now();
    let waiting = tokio::spawn(terminus_tests::get(unit.addr(), "/"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "no answer while no process runs");
    let mut next = start_on(&unit);
    let reply = waiting.await.unwrap().expect("served by the next process");
    assert_eq!(reply.body, "hello");
    assert!(started.elapsed() >= Duration::from_millis(500));
    next.signal("TERM");
    assert_eq!(
        next.wait_exit(EXIT_BOUND).await.and_then(|status| status.code()),
        Some(0)
    );
}

/// A service manager that stopped reading (its socket's queue full) must not stop the
/// service: a notification is sent without blocking, and dropped with a warning when
/// there is no room. A blocking send would hold a runtime worker for as long as the
/// queue stays full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_socket_nobody_reads_neither_stalls_the_probes_nor_sigterm() {
    let mut notify = NotifySocket::bind(&temp_path("deaf-notify.sock")).expect("a notify socket");
    let queued = notify.fill().expect("fill the notify socket");
    let path = notify.path().display().to_string();
    let mut server = TestServer::start(
        test_server!(),
        &[
            ("NOTIFY_SOCKET", path.as_str()),
            // One worker, as tokio picks in a one-CPU container: a worker blocked in a
            // send is then the whole runtime.
            ("TOKIO_WORKER_THREADS", "1"),
            // A ping every 50 ms, each one meeting the full queue.
            ("WATCHDOG_USEC", "100000"),
            ("TERMINUS_DRAIN_DELAY", "0s"),
            ("TERMINUS_DRAIN_TIMEOUT", "5s"),
        ],
    );
    // Two seconds of probes: READY=1 and about 40 pings are refused meanwhile.
    for probe in 0..10 {
        let asked = Instant::now();
        let reply = tokio::time::timeout(
            Duration::from_secs(1),
            terminus_tests::get(server.addr(), "/livez"),
        )
        .await;
        assert!(
            matches!(&reply, Ok(Ok(reply)) if reply.status == 200),
            "probe {probe}: /livez answers within 1 s ({queued} datagrams queued): {reply:?} after {:?}\n{}",
            asked.elapsed(),
            logs::tail(&server.stderr(), 10)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.signal("TERM");
    let exit = server.wait_exit(EXIT_BOUND).await;
    let log = server.stderr();
    assert_eq!(
        exit.and_then(|status| status.code()),
        Some(0),
        "SIGTERM still stops the process\n{}",
        logs::tail(&log, 20)
    );
    assert!(
        log.iter().any(|line| line.contains("WARN")
            && line.contains("notification dropped")
            && line.contains(&path)),
        "each drop is a warning naming the socket\n{}",
        logs::tail(&log, 20)
    );
}

/// A socket systemd would never pass, handed over by hand: bound but not listening
/// (nothing would ever be accepted on it), or not a stream socket. The service must
/// refuse it at start, naming the descriptor and what is wrong, instead of telling
/// systemd it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activated_socket_that_cannot_accept_fails_the_start_naming_what_is_wrong() {
    let cases = [
        (
            SocketUnit::bind_without_listening().expect("a bound socket"),
            "is not listening",
        ),
        (
            SocketUnit::bind_datagram().expect("a UDP socket"),
            "is not a stream socket",
        ),
    ];
    for (unit, wrong) in cases {
        let mut server = unit.spawn(test_server!(), &[]);
        let exit = server.wait_exit(EXIT_BOUND).await;
        let stderr = server.stderr();
        assert!(
            exit.is_some(),
            "{wrong}: exits at start\n{}",
            logs::tail(&stderr, 10)
        );
        assert_ne!(
            exit.and_then(|status| status.code()),
            Some(0),
            "{wrong}: a failure\n{}",
            logs::tail(&stderr, 10)
        );
        assert!(
            stderr
                .iter()
                .any(|line| line.contains("socket-activated fd 3 (index 0)") && line.contains(wrong)),
            "{wrong}: the error names the descriptor and what is wrong\n{}",
            logs::tail(&stderr, 10)
        );
        assert!(
            !server.stdout().iter().any(|line| line.contains("listening on")),
            "{wrong}: never said to listen"
        );
    }
}
