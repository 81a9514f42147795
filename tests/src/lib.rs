//! Helpers for the end-to-end tests: start a real server process on a free loopback
//! port, talk to it with real HTTP clients, send it real signals, and clean up by pid.

pub mod curl;
pub mod exit;
pub mod grpc;
pub mod grpc_load;
pub mod logs;
pub mod postgres;
pub mod probe_oracle;
pub mod raw;
pub mod systemd;

// The balancer, the load and the prober are terminus-check's, so that the tests and the
// tool users run on their own services cannot drift apart.
pub use terminus_check::{balancer, haproxy, kubelet, launch, loadgen, nginx};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The path of the `test-server` binary (the quickstart plus test hooks). Cargo only
/// tells integration tests where it built a binary, hence a macro expanded there.
#[macro_export]
macro_rules! test_server {
    () => {
        env!("CARGO_BIN_EXE_test-server")
    };
}

/// Runs each named `async fn` test on a current-thread runtime and on a multi-threaded
/// one (two workers): the scheduler is part of the truth, and a race that one hides the
/// other shows. `on_both_runtimes!(my_test)` makes `my_test::current_thread` and
/// `my_test::multi_thread`.
#[macro_export]
macro_rules! on_both_runtimes {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn current_thread() {
                    super::$test().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn multi_thread() {
                    super::$test().await
                }
            }
        )*
    };
}

/// A path in the temporary directory unique to this test process and `name`, short
/// enough for a Unix socket (108 bytes): sockets, certificates.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("terminus-{}-{name}", std::process::id()))
}

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A server process started for one test. Killed (by pid) when dropped.
pub struct TestServer {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    exit: Option<ExitStatus>,
}

impl TestServer {
    /// Starts `binary` with `PORT=0` on 127.0.0.1 plus `envs`, and waits for its
    /// `listening on http://ADDR` (or `https://ADDR`) line.
    pub fn start(binary: &str, envs: &[(&str, &str)]) -> TestServer {
        TestServer::start_command(TestServer::command(binary, envs))
    }

    /// Runs `command` (see [`TestServer::command`]) and waits for its `listening on
    /// http://ADDR` (or `https://ADDR`) line.
    pub fn start_command(command: Command) -> TestServer {
        let mut server = TestServer::spawn_command(command);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(addr) = server.stdout().iter().find_map(|line| parse_listening(line)) {
                server.addr = addr;
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "server exited before listening: {status}\nstderr:\n{}",
                    server.stderr().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "server did not start within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts `binary` without waiting for it to listen (for startup failures).
    pub fn spawn(binary: &str, envs: &[(&str, &str)]) -> TestServer {
        TestServer::spawn_command(TestServer::command(binary, envs))
    }

    /// The command that runs `binary` the way the tests do: on 127.0.0.1 with
    /// `PORT=0`, `RUST_LOG=info`, outside Kubernetes, with `envs` on top.
    pub fn command(binary: &str, envs: &[(&str, &str)]) -> Command {
        let mut command = Command::new(binary);
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .env_remove("KUBERNETES_SERVICE_HOST");
        for (name, value) in envs {
            command.env(name, value);
        }
        command
    }

    /// Runs `command` with its output piped to the test, without waiting.
    pub fn spawn_command(mut command: Command) -> TestServer {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        let stdout = collect_lines(child.stdout.take());
        let stderr = collect_lines(child.stderr.take());
        TestServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout,
            stderr,
            exit: None,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a real signal (`TERM`, `INT`, ...) with `kill -s`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the process to exit; returns its status, or `None`
    /// if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit {
                return Some(status);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                // Let the reader threads catch the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lines printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().expect("stdout lines").clone()
    }

    /// Lines printed on stderr (the tracing log) so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }

    /// Waits up to `timeout` for a stderr line containing every one of `needles`.
    pub async fn wait_for_log(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .stderr()
                .into_iter()
                .find(|line| needles.iter().all(|needle| line.contains(needle)));
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls `path` until it answers `status`, at most `timeout`.
    pub async fn wait_for_status(&self, path: &str, status: StatusCode, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(response) = get(self.addr, path).await {
                if response.status == status {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            // Child::kill sends SIGKILL to this child's pid only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_listening(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line
        .split_once("listening on http://")
        .or_else(|| line.split_once("listening on https://"))?;
    rest.trim().parse().ok()
}

fn collect_lines<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    if let Some(pipe) = pipe {
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines").push(line);
            }
        });
    }
    lines
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// Reads a response to its end.
    pub async fn read(response: http::Response<hyper::body::Incoming>) -> Result<Reply, hyper::Error> {
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The `connection` header, if any.
    pub fn connection(&self) -> Option<&str> {
        self.headers
            .get("connection")
            .and_then(|value| value.to_str().ok())
    }
}

/// One HTTP/1.1 keep-alive connection, driven by hyper's client.
pub struct H1 {
    sender: http1::SendRequest<Full<Bytes>>,
    connection: JoinHandle<()>,
}

impl H1 {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<H1> {
        H1::over(TcpStream::connect(addr).await?).await
    }

    /// HTTP/1.1 over `io`, a stream already connected (TLS, a Unix socket).
    pub async fn over<I>(io: I) -> std::io::Result<H1>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(std::io::Error::other)?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(H1 { sender, connection })
    }

    /// Sends a request with `method` to `path` on this connection and reads the whole reply.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &'static str,
    ) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("valid request");
        Reply::read(self.sender.send_request(request).await?).await
    }

    /// `GET path` on this connection.
    pub async fn get(&mut self, path: &str) -> Result<Reply, hyper::Error> {
        self.send("GET", path, "").await
    }

    /// `true` once the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.connection.is_finished()
    }

    /// Waits up to `timeout` for the server to close the connection.
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_closed() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.is_closed()
    }
}

/// One HTTP/2 connection (prior knowledge, as over `h2c`).
pub struct H2 {
    sender: http2::SendRequest<Full<Bytes>>,
    connection: JoinHandle<()>,
}

impl H2 {
    /// Opens an HTTP/2 connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<H2> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(H2 { sender, connection })
    }

    /// `GET path` as a new stream on this connection.
    pub async fn get(&mut self, path: &str) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let request = Request::builder()
            .uri(format!("http://127.0.0.1{path}"))
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        Reply::read(self.sender.send_request(request).await?).await
    }

    /// A clone of the sender, to open concurrent streams.
    pub fn sender(&self) -> http2::SendRequest<Full<Bytes>> {
        self.sender.clone()
    }

    /// `true` once the connection ended (after GOAWAY and the last stream, or a close).
    pub fn is_closed(&self) -> bool {
        self.connection.is_finished()
    }
}

/// `GET path` on a new connection.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Reply, Box<dyn std::error::Error + Send + Sync>> {
    let mut connection = H1::connect(addr).await?;
    Ok(connection.get(path).await?)
}

/// The *ring* crypto provider, for the tests' TLS clients (the server's default too).
/// rustls 0.23.48 deprecated `ring::default_provider` (no post-quantum key exchange)
/// with nothing to replace it in 0.23: the `allow` keeps `-D warnings` builds passing
/// on both sides of that version.
#[allow(deprecated)]
pub fn ring_provider() -> Arc<axum_terminus::tls::rustls::crypto::CryptoProvider> {
    Arc::new(axum_terminus::tls::rustls::crypto::ring::default_provider())
}

/// Logs to stderr the way the end-to-end tests read it: plain text, filtered by
/// `RUST_LOG` (default `info`). Every test server binary starts with this.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// An app that answers `hello` on every path, behind `layer`, served in-process by
/// `axum::serve` on loopback. Counts how often the app itself ran, which is how the
/// probe tests prove a probe never reaches it. Stopped when dropped.
pub struct LayeredApp {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// How many requests reached the app behind the layer.
    pub app_calls: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl LayeredApp {
    /// Starts the app behind `layer` on a free loopback port.
    pub async fn start(layer: axum_terminus::TerminusLayer) -> LayeredApp {
        let app_calls = Arc::new(AtomicUsize::new(0));
        let calls = Arc::clone(&app_calls);
        let router = axum::Router::new()
            .fallback(move || {
                let calls = Arc::clone(&calls);
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    "hello"
                }
            })
            .layer(layer);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        LayeredApp {
            addr,
            app_calls,
            task,
        }
    }
}

impl Drop for LayeredApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
