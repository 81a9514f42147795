//! HTTP/1.1 over a bare `TcpStream`: requests written as bytes, responses parsed by
//! hand, and every way an exchange can end named exactly ([`Outcome`]). A library
//! client retries, pools and folds errors together; these tests need to tell a
//! refused connect from a reset from a close without a response.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How one request ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A complete `200` response whose body is the expected one.
    Ok,
    /// The connection was reset before any byte of a response arrived.
    Reset,
    /// The server closed the connection (FIN) before any byte of a response.
    EofNoResponse,
    /// `connect()` failed with `ECONNREFUSED`: nothing was listening.
    Refused,
    /// Part of a response arrived, then the connection ended.
    Truncated,
    /// No complete response within the time allowed.
    Timeout,
    /// A complete response with another status, or a `200` with another body.
    Other(u16),
    /// Any other I/O error (named by its kind).
    Error(ErrorKind),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Reset => f.write_str("reset"),
            Outcome::EofNoResponse => f.write_str("eof_no_response"),
            Outcome::Refused => f.write_str("refused"),
            Outcome::Truncated => f.write_str("truncated"),
            Outcome::Timeout => f.write_str("timeout"),
            Outcome::Other(status) => write!(f, "other({status})"),
            Outcome::Error(kind) => write!(f, "error({kind:?})"),
        }
    }
}

/// Counts of outcomes (or of anything with a name), printed `{ok:17,reset:3}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally(BTreeMap<String, usize>);

impl Tally {
    /// Counts one more `what`.
    pub fn add(&mut self, what: impl ToString) {
        *self.0.entry(what.to_string()).or_default() += 1;
    }

    /// How many `what` were counted.
    pub fn get(&self, what: &str) -> usize {
        self.0.get(what).copied().unwrap_or(0)
    }

    /// How many of anything were counted.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (index, (what, count)) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{what}:{count}")?;
        }
        f.write_str("}")
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The bytes of a request: `method path HTTP/1.1` with a `host` header and, when
/// `body_len > 0`, a body of that many `x` with its `content-length`.
pub fn request(method: &str, path: &str, body_len: usize) -> Vec<u8> {
    let mut bytes = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n").into_bytes();
    if body_len > 0 {
        bytes.extend_from_slice(format!("content-length: {body_len}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.resize(bytes.len() + body_len, b'x');
    bytes
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read past the end of the last response.
    buffered: Vec<u8>,
}

impl Conn {
    /// Connects to `addr`; a refused connect is [`Outcome::Refused`].
    pub async fn connect(addr: SocketAddr) -> Result<Conn, Outcome> {
        match TcpStream::connect(addr).await {
            Ok(stream) => Ok(Conn {
                stream,
                buffered: Vec::new(),
            }),
            Err(error) => Err(io_outcome(&error, false)),
        }
    }

    /// The client's port: how the server's log names this connection.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().map_or(0, |addr| addr.port())
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Writes `request` and reads the response; `Ok` means `200` with body `expected`.
    pub async fn exchange(&mut self, request: &[u8], expected: &[u8], timeout: Duration) -> Outcome {
        if let Err(error) = self.write(request).await {
            return io_outcome(&error, false);
        }
        self.read_outcome(expected, timeout).await
    }

    /// Reads one response and classifies it; `Ok` means `200` with body `expected`.
    pub async fn read_outcome(&mut self, expected: &[u8], timeout: Duration) -> Outcome {
        match self.read_response(timeout).await {
            Ok(response) if response.status == 200 && response.body == expected => Outcome::Ok,
            Ok(response) => Outcome::Other(response.status),
            Err(outcome) => outcome,
        }
    }

    /// Reads one whole response (content-length, chunked, or until close), within `timeout`.
    pub async fn read_response(&mut self, timeout: Duration) -> Result<Response, Outcome> {
        match tokio::time::timeout(timeout, self.read_response_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(Outcome::Timeout),
        }
    }

    async fn read_response_unbounded(&mut self) -> Result<Response, Outcome> {
        let head_end = loop {
            if let Some(at) = find(&self.buffered, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill(true).await?;
        };
        let head = String::from_utf8_lossy(&self.buffered[..head_end]).into_owned();
        self.buffered.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or(Outcome::Truncated)?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(length) = response.header("content-length") {
            let length: usize = length.parse().map_err(|_| Outcome::Truncated)?;
            while self.buffered.len() < length {
                self.fill(false).await?;
            }
            response.body = self.buffered.drain(..length).collect();
        } else if response.header("transfer-encoding") == Some("chunked") {
            response.body = self.read_chunked().await?;
        } else {
            // Neither: the body runs to the end of the connection.
            loop {
                match self.stream.read_buf(&mut self.buffered).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(error) => return Err(io_outcome(&error, true)),
                }
            }
            response.body = std::mem::take(&mut self.buffered);
        }
        Ok(response)
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, Outcome> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(&self.buffered, b"\r\n") {
                    break at;
                }
                self.fill(false).await?;
            };
            let size_text = String::from_utf8_lossy(&self.buffered[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| Outcome::Truncated)?;
            // The chunk, then its CRLF (or, after the last chunk, the final CRLF).
            while self.buffered.len() < line_end + 2 + size + 2 {
                self.fill(false).await?;
            }
            body.extend_from_slice(&self.buffered[line_end + 2..line_end + 2 + size]);
            self.buffered.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Ok(body);
            }
        }
    }

    /// Reads more bytes; an end of the connection is `EofNoResponse`/`Reset` when nothing
    /// of this response has arrived yet (`at_start`), `Truncated` otherwise.
    async fn fill(&mut self, at_start: bool) -> Result<(), Outcome> {
        let nothing_yet = at_start && self.buffered.is_empty();
        match self.stream.read_buf(&mut self.buffered).await {
            Ok(0) if nothing_yet => Err(Outcome::EofNoResponse),
            Ok(0) => Err(Outcome::Truncated),
            Ok(_) => Ok(()),
            Err(error) => Err(io_outcome(&error, !nothing_yet)),
        }
    }

    /// Waits up to `timeout` for the server to close the connection (EOF or reset),
    /// discarding whatever it sends meanwhile (say, a `408`). `true` if it closed.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut scratch = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// `true` if the connection is open with nothing to read right now.
    pub fn is_open_and_quiet(&self) -> bool {
        let mut scratch = [0u8; 1];
        matches!(self.stream.try_read(&mut scratch), Err(error) if error.kind() == ErrorKind::WouldBlock)
    }
}

/// Opens a connection, sends `GET path` for an endless chunked response (`/stream`),
/// waits for its first chunk, and then reads on in a task until the server ends the
/// connection (at most `limit`). Returns the client's port and the task, which yields
/// the bytes read and whether the connection ended.
pub async fn open_stream(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> io::Result<(u16, JoinHandle<(usize, bool)>)> {
    let mut stream = TcpStream::connect(addr).await?;
    let port = stream.local_addr()?.port();
    stream.write_all(&request("GET", path, 0)).await?;
    let mut seen = 0;
    let mut scratch = [0u8; 4096];
    // The first chunk proves the handler is running: the request is in flight.
    let first = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut scratch)).await;
    match first {
        Ok(Ok(n)) if n > 0 => seen += n,
        other => return Err(io::Error::other(format!("no first chunk from {path}: {other:?}"))),
    }
    let reader = tokio::spawn(async move {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
                Ok(Ok(n)) => seen += n,
                Err(_) => {}
            }
        }
        (seen, false)
    });
    Ok((port, reader))
}

/// Classifies an I/O error; `partial` says some of a response had arrived.
fn io_outcome(error: &io::Error, partial: bool) -> Outcome {
    match error.kind() {
        ErrorKind::ConnectionRefused => Outcome::Refused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe if partial => {
            Outcome::Truncated
        }
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => Outcome::Reset,
        ErrorKind::UnexpectedEof if partial => Outcome::Truncated,
        ErrorKind::UnexpectedEof => Outcome::EofNoResponse,
        kind => Outcome::Error(kind),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_carries_its_body_length() {
        let bytes = request("POST", "/", 3);
        assert_eq!(
            bytes,
            b"POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 3\r\n\r\nxxx"
        );
    }

    #[test]
    fn tally_prints_sorted_counts() {
        let mut tally = Tally::default();
        for outcome in [Outcome::Reset, Outcome::Ok, Outcome::Ok, Outcome::Other(503)] {
            tally.add(outcome);
        }
        assert_eq!(tally.to_string(), "{ok:2,other(503):1,reset:1}");
        assert_eq!((tally.get("ok"), tally.total()), (2, 4));
    }
}
