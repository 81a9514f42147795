//! Many raw HTTP/1.1 connections: idle keep-alive ones for the shutdown and memory
//! figures, and slow in-flight requests for the drain figure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connections being set up at once. This bounds the SYNs in flight, not the listen
/// queue: a server that accepts slower than this connects can still overflow its
/// queue (the kernel then completes the handshake on a retransmission, a second later).
const CONNECT_CONCURRENCY: usize = 256;
/// The bound on one connect or one response.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `count` connections to `addr`, sends one keep-alive `GET /` on each and reads
/// its response, and returns them idle (open, nothing in flight).
pub async fn open_idle(addr: &str, count: usize) -> Result<Vec<TcpStream>, String> {
    let mut streams = connect_all(addr, count).await?;
    let mut tasks = JoinSet::new();
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    for mut stream in streams.drain(..) {
        let limit = Arc::clone(&limit);
        tasks.spawn(async move {
            let _permit = limit.acquire().await.map_err(|error| error.to_string())?;
            get(&mut stream, "/").await?;
            Ok::<_, String>(stream)
        });
    }
    let mut idle = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        idle.push(joined.map_err(|error| error.to_string())??);
    }
    Ok(idle)
}

/// Opens `count` connections to `addr` without sending anything.
async fn connect_all(addr: &str, count: usize) -> Result<Vec<TcpStream>, String> {
    let limit = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let limit = Arc::clone(&limit);
        let addr = addr.to_owned();
        tasks.spawn(async move {
            let _permit = limit.acquire().await.map_err(|error| error.to_string())?;
            let stream = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(&addr))
                .await
                .map_err(|_| format!("connect to {addr} timed out"))?
                .map_err(|error| format!("connect to {addr}: {error}"))?;
            stream.set_nodelay(true).map_err(|error| error.to_string())?;
            Ok::<_, String>(stream)
        });
    }
    let mut streams = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        streams.push(joined.map_err(|error| error.to_string())??);
    }
    Ok(streams)
}

/// What the in-flight scenario saw.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// Responses that arrived complete with status 200.
    pub completed: usize,
    /// When the last of them arrived.
    pub last_response: Option<Instant>,
    /// Why the others failed, with how many failed that way.
    pub failures: BTreeMap<String, usize>,
}

/// Sends `GET {path}` on every connection at once and, once every request is written,
/// runs `during` (which sends the signal) while the responses are read; waits (each
/// read bounded) for every one.
pub async fn in_flight<F, T>(streams: Vec<TcpStream>, path: &str, during: F) -> (InFlight, T)
where
    F: std::future::Future<Output = T>,
{
    let mut tasks = JoinSet::new();
    let written = Arc::new(Semaphore::new(0));
    let count = streams.len();
    for mut stream in streams {
        let path = path.to_owned();
        let written = Arc::clone(&written);
        tasks.spawn(async move {
            let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            let sent = stream.write_all(request.as_bytes()).await;
            written.add_permits(1);
            sent.map_err(|error| error.to_string())?;
            read_response(&mut stream).await?;
            Ok::<_, String>(Instant::now())
        });
    }
    // Bounded: every task adds its permit whether its write succeeded or not.
    let all_written = u32::try_from(count).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(IO_TIMEOUT, written.acquire_many(all_written)).await;
    let during = during.await;
    let mut result = InFlight {
        completed: 0,
        last_response: None,
        failures: BTreeMap::new(),
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(at)) => {
                result.completed += 1;
                result.last_response = Some(result.last_response.map_or(at, |last| last.max(at)));
            }
            Ok(Err(error)) => *result.failures.entry(error).or_default() += 1,
            Err(error) => *result.failures.entry(error.to_string()).or_default() += 1,
        }
    }
    (result, during)
}

/// Sends one `GET` and reads the whole response (`Content-Length` framed); fails unless
/// the status is 200.
async fn get(stream: &mut TcpStream, path: &str) -> Result<(), String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| error.to_string())?;
    read_response(stream)
        .await
        .map_err(|error| format!("GET {path}: {error}"))
}

/// Reads one whole response (`Content-Length` framed); fails unless the status is 200.
async fn read_response(stream: &mut TcpStream) -> Result<(), String> {
    tokio::time::timeout(IO_TIMEOUT, async {
        let mut response = Vec::with_capacity(256);
        let mut chunk = [0u8; 1024];
        loop {
            let read = stream.read(&mut chunk).await.map_err(|error| error.to_string())?;
            if read == 0 {
                return Err("connection closed before the response ended".to_owned());
            }
            response.extend_from_slice(&chunk[..read]);
            if let Some(done) = response_complete(&response)? {
                return Ok(done);
            }
            if response.len() > 64 * 1024 {
                return Err("response too large".to_owned());
            }
        }
    })
    .await
    .map_err(|_| "timed out".to_owned())?
}

/// `Ok(Some(()))` once `bytes` holds a complete 200 response, `Ok(None)` while more is needed.
fn response_complete(bytes: &[u8]) -> Result<Option<()>, String> {
    let Some(head_end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "unexpected response: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or("response without Content-Length")?;
    Ok((bytes.len() >= head_end + 4 + length).then_some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_once_its_body_is_there() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec();
        assert_eq!(response_complete(&head[..10]), Ok(None));
        assert_eq!(response_complete(&head), Ok(None));
        let mut full = head.clone();
        full.extend_from_slice(b"hello");
        assert_eq!(response_complete(&full), Ok(Some(())));
        assert!(response_complete(b"HTTP/1.1 503 x\r\ncontent-length: 0\r\n\r\n").is_err());
    }
}
