//! curl as a child process: the client most people would point at a server, over TLS
//! (`--http1.1`, `--http2`, `-k`, `--cacert`) and Unix sockets (`--unix-socket`).

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::task::JoinHandle;

/// What one curl run gave.
#[derive(Debug)]
pub struct Curl {
    /// curl's exit code (0: a complete response; 18: cut mid-body; 35: the TLS
    /// handshake failed; 52: no response; 56: a failure receiving).
    pub exit: Option<i32>,
    /// The response status, when a head arrived.
    pub status: Option<u16>,
    /// The protocol of the response: `1.1` or `2`.
    pub version: String,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body received (all of it, or what came before the end).
    pub body: Vec<u8>,
    /// curl's error message and, with `-v`, its trace.
    pub stderr: String,
}

impl Curl {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| value.as_str())
    }

    /// A complete `200` response.
    pub fn is_ok(&self) -> bool {
        self.exit == Some(0) && self.status == Some(200)
    }
}

/// The most a curl run may take, whatever its arguments.
const MAX_TIME: Duration = Duration::from_secs(30);

/// Runs `curl -sS -i args...` and parses what came back.
pub async fn curl(args: &[&str]) -> Curl {
    let output = Command::new("curl")
        .args(["-sS", "-i", "--max-time", &MAX_TIME.as_secs().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs (apt-get install curl; .ci/run does)");
    let (status, version, headers, body) = parse(&output.stdout);
    Curl {
        exit: output.status.code(),
        status,
        version,
        headers,
        body,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// [`curl`] on a task of its own: a request left in flight while the test goes on.
pub fn spawn(args: &[&str]) -> JoinHandle<Curl> {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args).await
    })
}

type Parsed = (Option<u16>, String, Vec<(String, String)>, Vec<u8>);

/// `-i` output: a status line, headers, a blank line, the body.
fn parse(stdout: &[u8]) -> Parsed {
    let Some(end) = stdout.windows(4).position(|window| window == b"\r\n\r\n") else {
        return (None, String::new(), Vec::new(), stdout.to_vec());
    };
    let head = String::from_utf8_lossy(&stdout[..end]);
    let mut lines = head.split("\r\n");
    let mut status_line = lines.next().unwrap_or_default().split(' ');
    let version = status_line
        .next()
        .unwrap_or_default()
        .trim_start_matches("HTTP/")
        .to_owned();
    let status = status_line.next().and_then(|code| code.parse().ok());
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (status, version, headers, stdout[end + 4..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_head_and_keeps_the_body() {
        let (status, version, headers, body) =
            parse(b"HTTP/2 200 \r\ncontent-type: text/plain\r\nConnection: close\r\n\r\nhello");
        assert_eq!(status, Some(200));
        assert_eq!(version, "2");
        assert_eq!(headers[1], ("connection".to_owned(), "close".to_owned()));
        assert_eq!(body, b"hello");
    }
}
