//! HTTPS end to end: the `tls` example (as `tls-server`) runs as a child process,
//! receives real signals, and is driven by curl (`--http1.1`, `--http2`, `--cacert`),
//! by a rustls client that tells a `close_notify` from a bare FIN, and by raw TCP peers
//! that stall in the handshake.
//!
//! - A request in flight at SIGTERM completes: over HTTP/1.1 with `connection: close`,
//!   over HTTP/2 after a GOAWAY that arrives during the drain delay.
//! - Endless streams are cut at the deadline and reported, one event each; the exit
//!   status is then 1 (forced), 0 otherwise.
//! - A client stalled in the handshake is closed by the header-read timeout while
//!   serving, and at Closing by the idle bound: it neither delays the exit nor makes
//!   it forced.
//! - Graceful closes send `close_notify`; a renewed certificate is served after SIGHUP.
//! - A FIFO at the certificate path at SIGHUP freezes nothing: probes answer within
//!   1 s, the reload times out naming the file, the old certificate stays, SIGTERM
//!   ends the process with 0.
//! - With its generated certificate, the example survives SIGHUP: it says it has no
//!   files to reload, and serves on.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use terminus_tests::curl::{self, Curl};
use terminus_tests::exit::Exit;
use terminus_tests::logs::{self, field};
use terminus_tests::raw::h2;
use terminus_tests::{temp_path, TestServer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Slack on top of a deadline: generous, for a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);

/// A certificate for `localhost` and `127.0.0.1`, written to PEM files for the server
/// (`TLS_CERT`, `TLS_KEY`) and trusted by the test's clients.
struct TestCert {
    cert_pem: String,
    key_pem: String,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl TestCert {
    fn generate(name: &str) -> TestCert {
        let generated = rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate a certificate");
        let cert = TestCert {
            cert_pem: generated.cert.pem(),
            key_pem: generated.key_pair.serialize_pem(),
            cert_path: temp_path(&format!("{name}.crt")),
            key_path: temp_path(&format!("{name}.key")),
        };
        cert.write_to(&cert.cert_path, &cert.key_path);
        cert
    }

    fn write_to(&self, cert_path: &PathBuf, key_path: &PathBuf) {
        std::fs::write(cert_path, &self.cert_pem).expect("write the certificate");
        std::fs::write(key_path, &self.key_pem).expect("write the key");
    }

    fn envs(&self) -> [(&'static str, String); 2] {
        [
            ("TLS_CERT", self.cert_path.display().to_string()),
            ("TLS_KEY", self.key_path.display().to_string()),
        ]
    }

    /// A rustls client that trusts this certificate and offers `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()) {
            roots.add(cert.expect("PEM")).expect("a usable root");
        }
        let mut config = rustls::ClientConfig::builder_with_provider(terminus_tests::ring_provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cert_path);
        let _ = std::fs::remove_file(&self.key_path);
    }
}

fn start(cert: Option<&TestCert>, envs: &[(&str, &str)]) -> TestServer {
    let cert_envs = cert.map(TestCert::envs);
    let mut all: Vec<(&str, &str)> = envs.to_vec();
    if let Some(cert_envs) = &cert_envs {
        all.extend(cert_envs.iter().map(|(name, value)| (*name, value.as_str())));
    }
    TestServer::start(env!("CARGO_BIN_EXE_tls-server"), &all)
}

fn url(server: &TestServer, path: &str) -> String {
    format!("https://{}{path}", server.addr())
}

async fn tls_connect(
    server: &TestServer,
    connector: &tokio_rustls::TlsConnector,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server.addr()).await?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    connector.connect(name, tcp).await
}

/// `-w` output on stderr: when curl had sent its request, in seconds since it started.
const PRETRANSFER: &str = "%{stderr}pretransfer=%{time_pretransfer}\n";

fn pretransfer(curl: &Curl) -> Option<Duration> {
    let (_, rest) = curl.stderr.split_once("pretransfer=")?;
    Some(Duration::from_secs_f64(rest.trim().parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_at_sigterm_complete_over_http1_with_connection_close_and_over_http2() {
    let mut server = start(
        None,
        &[("TERMINUS_DRAIN_DELAY", "1s"), ("TERMINUS_DRAIN_TIMEOUT", "10s")],
    );
    let slow = url(&server, "/slow?ms=2500");
    let spawned = Instant::now();
    let h1 = curl::spawn(&["-k", "--http1.1", "-w", PRETRANSFER, &slow]);
    let h2 = curl::spawn(&["-k", "--http2", "-w", PRETRANSFER, &slow]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let signalled = Instant::now();
    server.signal("TERM");

    // Draining: readiness fails on a new TLS connection, the port still accepts.
    let ready = curl::curl(&["-k", &url(&server, "/readyz")]).await;
    assert_eq!(ready.status, Some(503), "{ready:?}");

    let (h1, h2) = (h1.await.unwrap(), h2.await.unwrap());
    let exit = Exit::wait(&mut server, signalled, Duration::from_secs(5) + MARGIN).await;
    let sent_before_signal = signalled - spawned;
    for (name, reply) in [("HTTP/1.1", &h1), ("HTTP/2", &h2)] {
        assert!(reply.is_ok(), "{name}: {reply:?}\n{}", exit.context());
        assert_eq!(reply.body, b"slow", "{name}");
        let sent = pretransfer(reply).expect("curl's timing");
        assert!(
            sent < sent_before_signal,
            "{name} was sent before SIGTERM: {sent:?}"
        );
    }
    assert_eq!(h1.version, "1.1");
    assert_eq!(h1.header("connection"), Some("close"), "{h1:?}");
    assert_eq!(h2.version, "2");
    assert_eq!(exit.code, Some(0), "{}", exit.context());
    assert_eq!(field(&exit.complete, "graceful"), Some("true"));
    assert_eq!(exit.count("requests_drained"), Some(2), "{}", exit.context());
    assert_eq!(exit.count("requests_cut"), Some(0));
}

/// One HTTP/2 frame, or `None` when the server closed the TLS stream cleanly
/// (`close_notify`); an error when it closed without one.
async fn next_frame(io: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> io::Result<Option<h2::Frame>> {
    let mut header = [0u8; 9];
    if io.read(&mut header[..1]).await? == 0 {
        return Ok(None);
    }
    io.read_exact(&mut header[1..]).await?;
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    io.read_exact(&mut payload).await?;
    Ok(Some(h2::Frame {
        kind: header[3],
        flags: header[4],
        stream: u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff,
        payload,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_gets_goaway_during_the_drain_delay_finishes_its_stream_then_close_notify() {
    let cert = TestCert::generate("h2-goaway");
    let mut server = start(
        Some(&cert),
        &[
            ("TERMINUS_DRAIN_DELAY", "1500ms"),
            ("TERMINUS_DRAIN_TIMEOUT", "10s"),
        ],
    );
    let mut stream = tls_connect(&server, &cert.client(&[b"h2"]))
        .await
        .expect("TLS with ALPN h2");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    h2::handshake(&mut stream).await.expect("HTTP/2 handshake");
    h2::send_get(&mut stream, 1, "/slow?ms=2500")
        .await
        .expect("open stream 1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    server.signal("TERM");

    let mut goaway_at = None;
    let mut body = Vec::new();
    let mut ended_at = None;
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            let Some(frame) = next_frame(&mut stream).await? else {
                return Ok::<_, io::Error>(Instant::now());
            };
            match frame.kind {
                h2::kind::GOAWAY => {
                    goaway_at.get_or_insert_with(Instant::now);
                }
                // The graceful GOAWAY is confirmed with a PING: answer it, as clients do.
                h2::kind::PING if frame.flags & h2::ACK == 0 => {
                    h2::write_frame(&mut stream, h2::kind::PING, h2::ACK, 0, &frame.payload).await?;
                }
                h2::kind::DATA if frame.stream == 1 => body.extend_from_slice(&frame.payload),
                _ => {}
            }
            if frame.stream == 1 && frame.flags & h2::END_STREAM != 0 {
                ended_at = Some(Instant::now());
            }
        }
    })
    .await
    .expect("the server closes the connection after the stream");
    let exit = Exit::wait(&mut server, signalled, Duration::from_secs(5) + MARGIN).await;
    let closed =
        closed.unwrap_or_else(|error| panic!("closed without close_notify: {error}\n{}", exit.context()));

    let goaway_at = goaway_at.expect("a GOAWAY");
    assert!(
        goaway_at - signalled < Duration::from_millis(1500),
        "GOAWAY during the drain delay: {:?} after SIGTERM",
        goaway_at - signalled
    );
    let ended_at = ended_at.expect("stream 1 ended");
    assert!(goaway_at < ended_at, "the GOAWAY came before the response ended");
    assert_eq!(body, b"slow");
    assert!(ended_at <= closed);
    assert_eq!(exit.code, Some(0), "{}", exit.context());
    assert_eq!(exit.count("requests_drained"), Some(1), "{}", exit.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_http1_closes_over_tls_send_close_notify() {
    let cert = TestCert::generate("close-notify");
    let mut server = start(
        Some(&cert),
        &[("TERMINUS_DRAIN_DELAY", "1s"), ("TERMINUS_DRAIN_TIMEOUT", "10s")],
    );
    let connector = cert.client(&[b"http/1.1"]);
    let request = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n";

    // An idle keep-alive connection at Closing, and one whose request is answered with
    // `connection: close` while draining.
    let mut idle = tls_connect(&server, &connector).await.expect("TLS");
    idle.write_all(request).await.unwrap();
    let first = read_until_hello(&mut idle).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let mut draining = tls_connect(&server, &connector).await.expect("TLS");

    let signalled = Instant::now();
    server.signal("TERM");
    logs::wait_for_phase(&server, "draining", Duration::from_secs(5))
        .await
        .expect("draining");
    draining.write_all(request).await.unwrap();
    let answer = read_until_hello(&mut draining).await;
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    let ends = tokio::join!(read_to_close(&mut draining), read_to_close(&mut idle));
    let exit = Exit::wait(&mut server, signalled, Duration::from_secs(3) + MARGIN).await;
    assert!(
        ends.0.is_ok(),
        "after `connection: close`: {:?}\n{}",
        ends.0,
        exit.context()
    );
    assert!(
        ends.1.is_ok(),
        "idle at Closing: {:?}\n{}",
        ends.1,
        exit.context()
    );
    assert_eq!(exit.code, Some(0), "{}", exit.context());
}

/// Reads a `hello` response (its head and body).
async fn read_until_hello(stream: &mut TlsStream<TcpStream>) -> String {
    let mut read = Vec::new();
    let mut buffer = [0u8; 1024];
    while !read.ends_with(b"hello") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("a response in time")
            .expect("read the response");
        assert!(
            n > 0,
            "closed before the response: {}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&read).into_owned()
}

/// Reads until the server closes: `Ok` after a `close_notify`, an error (rustls's
/// `UnexpectedEof`) when the TCP stream ended without one.
async fn read_to_close(stream: &mut TlsStream<TcpStream>) -> io::Result<()> {
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buffer)).await {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => return Err(io::Error::other("still open")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_streams_over_tls_are_cut_at_the_deadline_and_reported() {
    let mut server = start(
        None,
        &[("TERMINUS_DRAIN_DELAY", "0s"), ("TERMINUS_DRAIN_TIMEOUT", "1s")],
    );
    let stream = url(&server, "/stream?ms=100");
    let h1 = curl::spawn(&["-k", "-N", "--http1.1", &stream]);
    let h2 = curl::spawn(&["-k", "-N", "--http2", &stream]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let signalled = Instant::now();
    server.signal("TERM");
    let exit = Exit::wait(&mut server, signalled, Duration::from_secs(2) + MARGIN).await;
    let (h1, h2) = (h1.await.unwrap(), h2.await.unwrap());

    for (protocol, reply) in [("HTTP/1.1", &h1), ("HTTP/2", &h2)] {
        assert_eq!(reply.status, Some(200), "{protocol}: {reply:?}");
        assert!(
            reply.body.starts_with(b"tick 0\n"),
            "{protocol}: streamed before the cut"
        );
        assert_ne!(
            reply.exit,
            Some(0),
            "{protocol}: the stream did not end cleanly: {reply:?}"
        );
        let reports: Vec<&String> = exit
            .log
            .iter()
            .filter(|line| line.contains("request cut at the drain deadline"))
            .filter(|line| {
                field(line, "protocol") == Some(protocol) && field(line, "path") == Some("/stream")
            })
            .collect();
        assert_eq!(
            reports.len(),
            1,
            "one report for the {protocol} stream\n{}",
            exit.context()
        );
    }
    assert_eq!(exit.code, Some(1), "forced: exit status 1\n{}", exit.context());
    assert_eq!(field(&exit.complete, "graceful"), Some("false"));
    assert_eq!(exit.count("requests_cut"), Some(2), "{}", exit.context());
    assert_eq!(exit.count("connections_cut"), Some(2), "{}", exit.context());
}

/// A TLS record header announcing a 512-byte handshake message, and the start of a
/// ClientHello: a client that stalls in the middle of its first flight.
const HALF_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x00,
];

/// Waits up to `bound` for the server to close `stream`; `true` if it did.
async fn closed_by_server(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut buffer = [0u8; 256];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An alert, say: keep reading until the close.
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_stalled_while_serving_is_closed_by_the_header_read_timeout() {
    let mut server = start(None, &[("TERMINUS_HEADER_READ_TIMEOUT", "1s")]);
    let connected = Instant::now();
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    let mut half = TcpStream::connect(server.addr()).await.unwrap();
    half.write_all(HALF_CLIENT_HELLO).await.unwrap();
    let (silent_closed, half_closed) = tokio::join!(
        closed_by_server(&mut silent, Duration::from_secs(1) + MARGIN),
        closed_by_server(&mut half, Duration::from_secs(1) + MARGIN)
    );
    let took = connected.elapsed();
    assert!(
        silent_closed && half_closed,
        "closed within the timeout: {silent_closed} {half_closed}"
    );
    // The sweep's resolution is a quarter of the timeout: never much earlier than it.
    assert!(
        took >= Duration::from_millis(700),
        "closed by the timeout, not at once: {took:?}"
    );
    // The server serves on.
    let reply = curl::curl(&["-k", &url(&server, "/")]).await;
    assert!(reply.is_ok(), "{reply:?}");
    server.signal("TERM");
    let exit = Exit::wait(&mut server, Instant::now(), Duration::from_secs(2) + MARGIN).await;
    assert_eq!(exit.code, Some(0), "{}", exit.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_stalled_at_sigterm_neither_delay_the_exit_nor_make_it_forced() {
    // The header-read timeout (30 s by default) is far away: at Closing, the idle
    // bound (1 s) is what closes the stalled handshakes.
    let mut server = start(
        None,
        &[
            ("TERMINUS_DRAIN_DELAY", "500ms"),
            ("TERMINUS_DRAIN_TIMEOUT", "20s"),
        ],
    );
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    let mut half = TcpStream::connect(server.addr()).await.unwrap();
    half.write_all(HALF_CLIENT_HELLO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    server.signal("TERM");

    // Drain delay 0.5 s + idle bound 1 s (+ the sweep's 250 ms): well before the 20 s
    // drain timeout that a stalled handshake counted as busy would run into.
    let exit = Exit::wait(&mut server, signalled, Duration::from_millis(1750) + MARGIN).await;
    let _ = writeln!(
        io::stderr(),
        "tls stalled-handshakes exit={:?} took_ms={} graceful={}",
        exit.code,
        exit.took.as_millis(),
        exit.complete.split_once("graceful=").map_or("", |(_, rest)| rest)
    );
    assert_eq!(exit.code, Some(0), "graceful: exit status 0\n{}", exit.context());
    assert_eq!(
        field(&exit.complete, "graceful"),
        Some("true"),
        "{}",
        exit.context()
    );
    assert_eq!(exit.count("connections_cut"), Some(0), "a handshake is not a cut");
    assert_eq!(exit.count("requests_cut"), Some(0));
    assert!(closed_by_server(&mut silent, Duration::from_millis(100)).await);
    assert!(closed_by_server(&mut half, Duration::from_millis(100)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_after_sighup() {
    let first = TestCert::generate("reload-first");
    let renewed = TestCert::generate("reload-renewed");
    // The server's own files, renewed in place later; the clients trust one
    // certificate or the other, from files that do not change.
    let (served_cert, served_key) = (temp_path("reload-served.crt"), temp_path("reload-served.key"));
    first.write_to(&served_cert, &served_key);
    let (cert_env, key_env) = (
        served_cert.display().to_string(),
        served_key.display().to_string(),
    );
    let mut server = start(None, &[("TLS_CERT", &cert_env), ("TLS_KEY", &key_env)]);
    let port = server.addr().port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}/");
    let with_ca = |cert: &TestCert| {
        let ca = cert.cert_path.display().to_string();
        let (resolve, url) = (resolve.clone(), url.clone());
        async move { curl::curl(&["--cacert", &ca, "--resolve", &resolve, &url]).await }
    };
    assert!(with_ca(&first).await.is_ok(), "the first certificate is served");
    let rejected = with_ca(&renewed).await;
    assert_eq!(rejected.exit, Some(60), "not yet the renewed one: {rejected:?}");

    // Renew the files in place (as certbot or cert-manager do), then SIGHUP.
    renewed.write_to(&served_cert, &served_key);
    server.signal("HUP");
    assert!(
        server
            .wait_for_log(&["TLS certificate reloaded"], Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        logs::tail(&server.stderr(), 10)
    );
    let reply = with_ca(&renewed).await;
    assert!(reply.is_ok(), "the renewed certificate is served: {reply:?}");
    assert_eq!(with_ca(&first).await.exit, Some(60), "the old one no longer");

    server.signal("TERM");
    let exit = Exit::wait(&mut server, Instant::now(), Duration::from_secs(2) + MARGIN).await;
    let _ = (
        std::fs::remove_file(&served_cert),
        std::fs::remove_file(&served_key),
    );
    assert_eq!(exit.code, Some(0), "{}", exit.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_chose_h2_and_sends_nothing_is_closed_at_the_header_read_timeout() {
    let cert = TestCert::generate("alpn-h2-silent");
    let mut server = start(Some(&cert), &[("TERMINUS_HEADER_READ_TIMEOUT", "2s")]);
    let connected = Instant::now();
    let mut tls = tls_connect(&server, &cert.client(&[b"h2"])).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN chose h2");
    // The handshake is done and the protocol is known: no preface, no request.
    let mut buffer = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(2) + Duration::from_secs(1) + MARGIN, async {
        loop {
            match tls.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    let took = connected.elapsed();
    println!("tls alpn_h2_silent_closed_ms={}", took.as_millis());
    assert!(
        closed.is_ok(),
        "closed by the header-read timeout: still open after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(1500),
        "closed by the timeout, not at once: {took:?}"
    );
    // The server serves on, and stops gracefully.
    let reply = curl::curl(&["-k", &url(&server, "/")]).await;
    assert!(reply.is_ok(), "{reply:?}");
    server.signal("TERM");
    let exit = Exit::wait(&mut server, Instant::now(), Duration::from_secs(2) + MARGIN).await;
    assert_eq!(exit.code, Some(0), "{}", exit.context());
}

/// What the library gives a certificate file to be read (`READ_TIMEOUT`).
const CERTIFICATE_READ_BOUND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_at_the_certificate_path_neither_stalls_the_server_nor_replaces_the_certificate() {
    let first = TestCert::generate("fifo-first");
    let (served_cert, served_key) = (temp_path("fifo-served.crt"), temp_path("fifo-served.key"));
    first.write_to(&served_cert, &served_key);
    let (cert_env, key_env) = (
        served_cert.display().to_string(),
        served_key.display().to_string(),
    );
    let mut server = start(
        None,
        &[
            ("TLS_CERT", &cert_env),
            ("TLS_KEY", &key_env),
            // One worker, as tokio picks in a one-CPU container: a worker blocked in a
            // read is then the whole runtime.
            ("TOKIO_WORKER_THREADS", "1"),
        ],
    );
    // The certificate's path becomes a FIFO that nobody writes: opening it to read
    // blocks until a writer comes, which none does.
    std::fs::remove_file(&served_cert).expect("remove the certificate");
    let mkfifo = std::process::Command::new("mkfifo")
        .arg(&served_cert)
        .status()
        .expect("run mkfifo");
    assert!(mkfifo.success(), "mkfifo {cert_env}");
    server.signal("HUP");

    // The read hangs off the runtime: probes over TLS answer meanwhile, within 1 s each,
    // for longer than the read is given.
    let livez = url(&server, "/livez");
    let probing = Instant::now();
    let mut probes = 0;
    while probing.elapsed() < CERTIFICATE_READ_BOUND + Duration::from_secs(1) && probes < 50 {
        let asked = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(1), curl::curl(&["-k", &livez])).await;
        assert!(
            matches!(&reply, Ok(reply) if reply.is_ok()),
            "probe {probes}: /livez answers within 1 s: {reply:?} after {:?}\n{}",
            asked.elapsed(),
            logs::tail(&server.stderr(), 10)
        );
        probes += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The reload gave up, naming the file, and the first certificate is still served.
    let failed = server
        .wait_for_log(&["not reloaded", &cert_env, "nothing read within"], MARGIN)
        .await;
    assert!(
        failed.is_some(),
        "the reload times out naming the file\n{}",
        logs::tail(&server.stderr(), 10)
    );
    let port = server.addr().port();
    let ca = first.cert_path.display().to_string();
    let old = curl::curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &format!("localhost:{port}:127.0.0.1"),
        &format!("https://localhost:{port}/"),
    ])
    .await;
    assert!(old.is_ok(), "the first certificate stays in use: {old:?}");

    server.signal("TERM");
    let exit = Exit::wait(&mut server, Instant::now(), Duration::from_secs(2) + MARGIN).await;
    let _ = (
        std::fs::remove_file(&served_cert),
        std::fs::remove_file(&served_key),
    );
    assert_eq!(exit.code, Some(0), "SIGTERM still ends it\n{}", exit.context());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_the_generated_certificate_is_logged_and_the_server_serves_on() {
    let mut server = start(None, &[]);
    server.signal("HUP");
    let said = server
        .wait_for_log(
            &["SIGHUP", "no TLS_CERT/TLS_KEY files to reload"],
            Duration::from_secs(5),
        )
        .await;
    assert!(
        said.is_some(),
        "says it has nothing to reload\n{}",
        logs::tail(&server.stderr(), 10)
    );
    assert_eq!(
        server.wait_exit(Duration::from_millis(200)).await,
        None,
        "still running after SIGHUP"
    );
    let reply = curl::curl(&["-k", &url(&server, "/")]).await;
    assert!(reply.is_ok(), "serves on: {reply:?}");

    server.signal("TERM");
    let exit = Exit::wait(&mut server, Instant::now(), Duration::from_secs(2) + MARGIN).await;
    assert_eq!(exit.code, Some(0), "{}", exit.context());
}
