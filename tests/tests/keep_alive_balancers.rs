//! The keep-alive rule through real balancers: when the balancer's idle timeout towards
//! the server is below the server's keep-alive timeout, the balancer always closes an
//! idle connection first and no request is lost; when it is above, the server closes
//! first (the misconfiguration this library cannot hide).
//!
//! One quickstart backend (`test-server`) runs behind HAProxy or nginx (see
//! `terminus_tests::haproxy` and `terminus_tests::nginx`: no retries, no redispatch, so a
//! request sent on a connection the server is closing reaches the client as a 502).
//! Four client connections send, together, a GET or a POST with a body, then all wait
//! for the same gap, cycling from 2.0 s to 4.0 s by 0.25 s, for a minute. Sending together
//! makes the balancer use as many connections to the server as there are clients, and
//! each of those then idles for the clients' gap, across and around both timeouts. The
//! gaps skip the balancers' idle timeouts themselves (2.5 s, 3.5 s): HAProxy closes the
//! client's connection with the server's (see [`Upstream::idle_timeout`]), and a request
//! sent just as it does would race HAProxy, not the server.
//!
//! **Scaled down.** The rule is about the 620 s default and balancers' 60-600 s idle
//! timeouts, and a minute cannot straddle those. The ratios are what matter, so the
//! backend runs with `TERMINUS_KEEP_ALIVE_TIMEOUT=3s` and the balancer's upstream idle
//! timeout ([`Upstream::idle_timeout`]: HAProxy's `timeout http-keep-alive` with
//! `http-reuse never`, nginx's `keepalive_timeout` in the `upstream` block) is 2.5 s
//! (below) or 3.5 s (above).
//!
//! - Below: every request is answered `200 hello`, and the server closed no idle
//!   connection of its own (its `connection told to finish while serving` events with
//!   `reason="idle"`, logged at `DEBUG`): the balancer closed each one first.
//! - Above, the negative control: the server did close idle connections, which shows the
//!   gaps straddle the timeouts as claimed. Whether that loses a request is a race (the
//!   server closes only when nothing is buffered, and a balancer does not reuse a
//!   connection whose FIN it has read), so the failures are printed, not asserted.
//!
//! The two configurations run at once, each with its own backend and balancer; each
//! prints one line on stdout:
//! `keep-alive-balancers lb=<name> upstream_idle_ms=N requests=N ok=N lost=N server_idle_closes=N`.

use std::time::{Duration, Instant};

use http::StatusCode;
use terminus_tests::balancer::{Balancer, Kind};
use terminus_tests::haproxy::Check;
use terminus_tests::launch::{ServerSlot, Upstream};
use terminus_tests::{test_server, TestServer, H1};

/// The backend's keep-alive timeout, scaled down from 620 s.
const SERVER_KEEP_ALIVE: &str = "3s";
/// The balancer's upstream idle timeout just below the server's keep-alive timeout.
const BELOW: Duration = Duration::from_millis(2500);
/// Just above it: the negative control.
const ABOVE: Duration = Duration::from_millis(3500);
/// How long the keep-alive traffic runs.
const TRAFFIC: Duration = Duration::from_secs(60);
/// Client connections sending together.
const CLIENTS: usize = 4;
/// The gaps between two sends, in milliseconds, cycled: across and around both idle
/// timeouts and the server's keep-alive timeout.
const GAPS_MS: [u64; 7] = [2000, 2250, 2750, 3000, 3250, 3750, 4000];
/// The bound on one request through the balancer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_below_the_servers_keep_alive_loses_nothing_and_above_it_lets_the_server_close_first() {
    straddle(Kind::Haproxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_below_the_servers_keep_alive_loses_nothing_and_above_it_lets_the_server_close_first() {
    straddle(Kind::Nginx).await;
}

/// Runs the below and above configurations of `kind` at once and checks both.
async fn straddle(kind: Kind) {
    if let Err(error) = kind.check_installed() {
        panic!("{error}");
    }
    let (below, above) = tokio::join!(run(kind, BELOW), run(kind, ABOVE));
    // Each client sends at least once per longest gap.
    let least = CLIENTS * (TRAFFIC.as_millis() / u128::from(GAPS_MS[GAPS_MS.len() - 1])) as usize;
    for figures in [&below, &above] {
        assert!(
            figures.requests >= least,
            "{} sent {} requests, fewer than {least}",
            kind.name(),
            figures.requests
        );
    }
    assert_eq!(
        below.lost,
        0,
        "{}: requests lost with its idle timeout below the server's: {:?}",
        kind.name(),
        below.failures
    );
    assert_eq!(below.ok, below.requests);
    assert_eq!(
        below.server_idle_closes,
        0,
        "{}: the server closed idle connections although the balancer's idle timeout is \
         below the server's keep-alive",
        kind.name()
    );
    assert!(
        above.server_idle_closes > 0,
        "{}: with its idle timeout above the server's, the server never closed an idle \
         connection first: the gaps do not straddle the timeouts",
        kind.name()
    );
    if above.lost > 0 {
        println!(
            "keep-alive-balancers lb={} above: failures seen {:?}",
            kind.name(),
            above.failures
        );
    }
}

/// What one configuration measured.
struct Figures {
    requests: usize,
    ok: usize,
    lost: usize,
    /// The first few failures, for the messages.
    failures: Vec<String>,
    /// Idle connections the server closed itself (keep-alive timeout).
    server_idle_closes: usize,
}

/// One backend behind one `kind` balancer whose upstream idle timeout is `upstream_idle`,
/// under a minute of keep-alive traffic.
async fn run(kind: Kind, upstream_idle: Duration) -> Figures {
    let (server, balancer) = tokio::task::spawn_blocking(move || start(kind, upstream_idle))
        .await
        .expect("start the backend and the balancer");
    if let Balancer::Haproxy(haproxy) = &balancer {
        // HAProxy assumes its server up until the first check: wait for one.
        if let Err(states) = haproxy.wait_for_states(&["a0"], Duration::from_secs(10)).await {
            panic!("HAProxy never saw its server up: {states:?}\n{}", haproxy.log());
        }
    }

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| tokio::spawn(client_loop(balancer.h1(), client, started)))
        .collect();
    let mut figures = Figures {
        requests: 0,
        ok: 0,
        lost: 0,
        failures: Vec::new(),
        server_idle_closes: 0,
    };
    for client in clients {
        let (requests, ok, failures) = client.await.expect("client task");
        figures.requests += requests;
        figures.ok += ok;
        figures.lost += requests - ok;
        figures.failures.extend(failures);
    }
    figures.failures.truncate(10);
    figures.server_idle_closes = server
        .stderr()
        .iter()
        .filter(|line| {
            line.contains("connection told to finish while serving") && line.contains("reason=\"idle\"")
        })
        .count();
    println!(
        "keep-alive-balancers lb={} upstream_idle_ms={} requests={} ok={} lost={} server_idle_closes={}",
        kind.name(),
        upstream_idle.as_millis(),
        figures.requests,
        figures.ok,
        figures.lost,
        figures.server_idle_closes
    );
    if figures.lost > 0 {
        println!("{} log:\n{}", kind.name(), balancer.log());
    }
    figures
}

/// The backend (its idle closes logged at `DEBUG`) and the balancer in front of it.
/// Blocking: both wait for their ports.
fn start(kind: Kind, upstream_idle: Duration) -> (TestServer, Balancer) {
    let server = TestServer::start(
        test_server!(),
        &[
            ("TERMINUS_KEEP_ALIVE_TIMEOUT", SERVER_KEEP_ALIVE),
            ("RUST_LOG", "info,terminus=debug"),
        ],
    );
    let slots = [ServerSlot {
        name: "a0".to_owned(),
        port: server.addr().port(),
    }];
    let upstream = Upstream::default().idle_timeout(upstream_idle);
    let balancer =
        Balancer::start(kind, &slots, &Check::default(), upstream).unwrap_or_else(|error| panic!("{error}"));
    (server, balancer)
}

/// One client connection through the balancer at `addr`: a request at each of the
/// shared send times (so that all clients send together), alternating GET and POST,
/// until [`TRAFFIC`] has passed since `started`. Returns (requests, answered, failures).
async fn client_loop(
    addr: std::net::SocketAddr,
    client: usize,
    started: Instant,
) -> (usize, usize, Vec<String>) {
    let mut connection: Option<H1> = None;
    let (mut requests, mut ok, mut failures) = (0, 0, Vec::new());
    let mut send_at = started;
    for step in 0.. {
        if send_at.duration_since(started) >= TRAFFIC {
            break;
        }
        tokio::time::sleep_until(send_at.into()).await;
        // The balancer keeps the clients' connections for 30 s: one closed here is a
        // failure of its own, counted with the request that finds it.
        if connection.as_ref().is_none_or(H1::is_closed) {
            connection = H1::connect(addr).await.ok();
        }
        requests += 1;
        let (method, body) = if (step + client).is_multiple_of(2) {
            ("GET", "")
        } else {
            ("POST", "a body")
        };
        let outcome = match connection.as_mut() {
            None => Err("cannot connect to the balancer".to_owned()),
            Some(connection) => {
                match tokio::time::timeout(REQUEST_TIMEOUT, connection.send(method, "/", body)).await {
                    Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
                    Ok(Err(error)) => Err(error.to_string()),
                    Ok(Ok(reply)) if reply.status == StatusCode::OK && reply.body == "hello" => Ok(()),
                    Ok(Ok(reply)) => Err(format!("{} {:?}", reply.status, reply.body)),
                }
            }
        };
        match outcome {
            Ok(()) => ok += 1,
            Err(failure) => {
                let after = match step.checked_sub(1) {
                    Some(previous) => format!("after a {} ms gap", GAPS_MS[previous % GAPS_MS.len()]),
                    None => "first".to_owned(),
                };
                failures.push(format!("{method} {after}: {failure}"));
                // A failed request leaves the connection in an unknown state.
                connection = None;
            }
        }
        send_at += Duration::from_millis(GAPS_MS[step % GAPS_MS.len()]);
    }
    (requests, ok, failures)
}
