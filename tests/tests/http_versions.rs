//! HTTP versions, with servers started inside the test process on loopback and real
//! clients (curl, a raw HTTP/2 peer, a rustls client):
//!
//! - `http2_only()` refuses HTTP/1.1, `http1_only()` refuses the HTTP/2 preface;
//! - over TLS, ALPN offers only the server's versions;
//! - tuning hyper through `Server::http1()` / `Server::http2()` keeps the server's own
//!   defaults: the HTTP/2 timer (keep-alive pings work), the extended CONNECT protocol,
//!   the header-read timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum_terminus::tls::TlsConfig;
use axum_terminus::{Layer, Outcome, Server, Terminus, TerminusLayer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use terminus_tests::curl::curl;
use terminus_tests::on_both_runtimes;
use terminus_tests::raw::h2;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

on_both_runtimes!(
    http2_only_refuses_http1_and_http1_only_refuses_the_http2_preface,
    over_tls_alpn_offers_only_the_servers_versions,
    tuning_hyper_keeps_the_servers_own_defaults,
);

/// A server running in this process, stopped when dropped.
struct Running {
    addr: SocketAddr,
    terminus: Terminus,
    task: Option<JoinHandle<Outcome>>,
}

impl Running {
    /// Serves the quickstart's routes on a free loopback port, over TLS if `tls` is
    /// given, with `configure` applied to the server first.
    async fn start(configure: impl FnOnce(Server) -> Server, tls: Option<TlsConfig>) -> Running {
        Running::start_with(Terminus::builder(), configure, tls).await
    }

    async fn start_with(
        builder: axum_terminus::Builder,
        configure: impl FnOnce(Server) -> Server,
        tls: Option<TlsConfig>,
    ) -> Running {
        let terminus = builder.build().unwrap();
        let app = TerminusLayer::new(&terminus).layer(quickstart::router().with_state(()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = configure(Server::new(&terminus));
        let server = match tls {
            Some(tls) => server.tls_listener(listener, tls, app),
            None => server.listener(listener, app),
        };
        let task = tokio::spawn(server.run());
        Running {
            addr,
            terminus,
            task: Some(task),
        }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/", self.addr)
    }

    async fn stop(mut self) -> Outcome {
        self.terminus.shutdown("test over");
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops")
            .expect("the server task")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn http2_only_refuses_http1_and_http1_only_refuses_the_http2_preface() {
    let h2_only = Running::start(Server::http2_only, None).await;
    let refused = curl(&["--http1.1", &h2_only.url("http")]).await;
    assert_eq!(
        refused.status, None,
        "no HTTP/1.1 response from an HTTP/2-only server: {refused:?}"
    );
    assert_ne!(refused.exit, Some(0), "{refused:?}");
    let served = curl(&["--http2-prior-knowledge", &h2_only.url("http")]).await;
    assert!(served.is_ok() && served.version == "2", "{served:?}");

    let h1_only = Running::start(Server::http1_only, None).await;
    let refused = curl(&["--http2-prior-knowledge", &h1_only.url("http")]).await;
    assert!(
        !refused.is_ok(),
        "no HTTP/2 from an HTTP/1-only server: {refused:?}"
    );
    // What the HTTP/1 server makes of the preface: not an HTTP/2 SETTINGS frame.
    let mut raw = TcpStream::connect(h1_only.addr).await.unwrap();
    raw.write_all(h2::PREFACE).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "an HTTP/1 answer or a close, not HTTP/2 frames: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let served = curl(&["--http1.1", &h1_only.url("http")]).await;
    assert!(served.is_ok() && served.version == "1.1", "{served:?}");

    assert!(h2_only.stop().await.is_graceful());
    assert!(h1_only.stop().await.is_graceful());
}

/// A certificate for `localhost` and `127.0.0.1`: the server's config and a client's
/// roots.
fn certificate() -> (TlsConfig, rustls::RootCertStore) {
    let generated =
        rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = generated.cert.pem();
    let tls = TlsConfig::from_pem(cert.as_bytes(), generated.key_pair.serialize_pem().as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(cert.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    (tls, roots)
}

/// Connects with a rustls client offering `alpn`; the protocol the server chose.
async fn negotiate(
    addr: SocketAddr,
    roots: &rustls::RootCertStore,
    alpn: &[u8],
) -> std::io::Result<Option<Vec<u8>>> {
    let mut config = rustls::ClientConfig::builder_with_provider(terminus_tests::ring_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    Ok(stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
}

async fn over_tls_alpn_offers_only_the_servers_versions() {
    let (tls, roots) = certificate();
    let both = Running::start(|server| server, Some(tls.clone())).await;
    let h1_only = Running::start(Server::http1_only, Some(tls.clone())).await;
    let h2_only = Running::start(Server::http2_only, Some(tls)).await;

    let version = |reply: &terminus_tests::curl::Curl| reply.is_ok().then(|| reply.version.clone());
    // curl --http2 offers h2 and http/1.1; --http1.1 offers http/1.1 only.
    for (server, http2, http1) in [
        (&both, Some("2"), Some("1.1")),
        (&h1_only, Some("1.1"), Some("1.1")),
        (&h2_only, Some("2"), None),
    ] {
        let offered_both = curl(&["-k", "--http2", &server.url("https")]).await;
        assert_eq!(version(&offered_both).as_deref(), http2, "{offered_both:?}");
        let offered_h1 = curl(&["-k", "--http1.1", &server.url("https")]).await;
        assert_eq!(version(&offered_h1).as_deref(), http1, "{offered_h1:?}");
        if http1.is_none() {
            assert_eq!(
                offered_h1.exit,
                Some(35),
                "refused in the handshake: {offered_h1:?}"
            );
        }
    }
    // A client that speaks only HTTP/2 (gRPC) is refused by an HTTP/1-only server.
    assert!(negotiate(h1_only.addr, &roots, b"h2").await.is_err());
    assert_eq!(
        negotiate(h2_only.addr, &roots, b"h2").await.unwrap().as_deref(),
        Some(&b"h2"[..])
    );

    for server in [both, h1_only, h2_only] {
        assert!(server.stop().await.is_graceful());
    }
}

/// Opens an HTTP/2 connection and returns the server's SETTINGS (identifier, value).
async fn server_settings(io: &mut TcpStream) -> Vec<(u16, u32)> {
    io.write_all(h2::PREFACE).await.unwrap();
    h2::write_frame(io, h2::kind::SETTINGS, 0, 0, &[]).await.unwrap();
    loop {
        let frame = h2::read_frame(io).await.unwrap();
        if frame.kind == h2::kind::SETTINGS && frame.flags & h2::ACK == 0 {
            h2::write_frame(io, h2::kind::SETTINGS, h2::ACK, 0, &[])
                .await
                .unwrap();
            return frame
                .payload
                .chunks_exact(6)
                .map(|setting| {
                    (
                        u16::from_be_bytes([setting[0], setting[1]]),
                        u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]),
                    )
                })
                .collect();
        }
    }
}

const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

async fn tuning_hyper_keeps_the_servers_own_defaults() {
    let server = Running::start_with(
        Terminus::builder().header_read_timeout(Some(Duration::from_secs(1))),
        |mut server| {
            server
                .http2()
                .max_concurrent_streams(7)
                .keep_alive_interval(Duration::from_millis(200));
            server.http1().max_buf_size(64 * 1024);
            server
        },
        None,
    )
    .await;

    // HTTP/2: the setting applied, CONNECT still enabled (WebSockets over HTTP/2), and
    // the timer still there: keep-alive pings arrive.
    let mut raw = TcpStream::connect(server.addr).await.unwrap();
    let settings = server_settings(&mut raw).await;
    assert!(
        settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 7)),
        "{settings:?}"
    );
    assert!(
        settings.contains(&(SETTINGS_ENABLE_CONNECT_PROTOCOL, 1)),
        "{settings:?}"
    );
    let ping = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let frame = h2::read_frame(&mut raw).await.unwrap();
            if frame.kind == h2::kind::PING && frame.flags & h2::ACK == 0 {
                return frame;
            }
        }
    })
    .await;
    assert!(ping.is_ok(), "a keep-alive PING: the HTTP/2 timer is set");

    // HTTP/1: the header-read timeout still closes a client that trickles its head.
    let mut slow_head = TcpStream::connect(server.addr).await.unwrap();
    let sent = Instant::now();
    slow_head.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut scratch = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match slow_head.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "closed by the header-read timeout");
    assert!(
        sent.elapsed() >= Duration::from_millis(700),
        "{:?}",
        sent.elapsed()
    );
    assert!(server.stop().await.is_graceful());
}
