//! Built-in checks that everyone otherwise writes by hand: a TCP connect and an HTTP GET.
//!
//! Both return a [`Check`] that belongs to no probe yet: register it with the
//! controller builder's `readiness(..)`, `liveness(..)` or `startup(..)`.
//!
//! ```
//! use terminus_core::health::checks;
//! use terminus_core::ShutdownController;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let controller = ShutdownController::builder()
//!     .readiness(checks::tcp("db", "127.0.0.1:5432"))
//!     .readiness(checks::http_get("search", "http://search.internal:9200/_cluster/health")?)
//!     .build()?;
//! # let _ = controller; Ok(()) }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::health::check::Check;
use crate::health::error::CheckError;

/// A check that passes when a TCP connection to `address` (`host:port`, resolved on each
/// run, so a Kubernetes Service name follows its endpoints) succeeds; the connection is
/// closed at once. Bounded by the check's timeout like any other check.
pub fn tcp(name: impl Into<Cow<'static, str>>, address: impl Into<String>) -> Check {
    let address: Arc<str> = address.into().into();
    Check::new(name, move |_ctx| {
        let address = Arc::clone(&address);
        async move {
            TcpStream::connect(&*address)
                .await
                .map_err(|error| CheckError::new(format!("cannot connect to {address}: {error}")))?;
            Ok(None)
        }
    })
}

/// A check that passes when `GET url` answers with a 2xx status.
///
/// Deliberately minimal, so that this crate needs no HTTP client: plain `http://` only
/// (no TLS; an `https://` URL is an error here), HTTP/1.1 with `Connection: close`, and
/// only the status line is read. A redirect is a failure, not followed. For anything
/// more (TLS, authentication, inspecting the body) write a [`Check`] with your own
/// client.
///
/// An invalid URL is an error now, not a failing check later.
pub fn http_get(name: impl Into<Cow<'static, str>>, url: &str) -> Result<Check, InvalidUrl> {
    let target = Arc::new(HttpTarget::parse(url)?);
    Ok(Check::new(name, move |_ctx| {
        let target = Arc::clone(&target);
        async move { target.get().await }
    }))
}

/// An URL [`http_get`] cannot use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidUrl {
    url: String,
    reason: &'static str,
}

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid health check URL `{}`: {}", self.url, self.reason)
    }
}

impl std::error::Error for InvalidUrl {}

#[derive(Debug)]
struct HttpTarget {
    /// `host:port`, for connecting.
    address: String,
    /// The `Host` header value.
    host: String,
    /// Path and query, starting with `/`.
    path: String,
}

impl HttpTarget {
    fn parse(url: &str) -> Result<HttpTarget, InvalidUrl> {
        let invalid = |reason| InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(invalid(
                "only http:// URLs are supported by the built-in check (no TLS)",
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(index) => (&rest[..index], &rest[index..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(invalid("the URL needs a host, and no user information"));
        }
        if path.chars().any(|c| c.is_ascii_whitespace() || c.is_control())
            || authority.chars().any(char::is_whitespace)
        {
            return Err(invalid("the URL must not contain spaces or control characters"));
        }
        // `[::1]:8080`, `host:8080` or `host` (port 80).
        let has_port = match authority.rfind(':') {
            Some(colon) => !authority[colon..].contains(']'),
            None => false,
        };
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(HttpTarget {
            address,
            host: authority.to_owned(),
            path,
        })
    }

    async fn get(&self) -> Result<Option<serde_json::Value>, CheckError> {
        let mut stream = TcpStream::connect(&self.address)
            .await
            .map_err(|error| CheckError::new(format!("cannot connect to {}: {error}", self.address)))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: terminus-rs-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.path, self.host
        );
        stream.write_all(request.as_bytes()).await?;
        // The status line fits in a few dozen bytes; read until its end or 1 KiB.
        let mut head = Vec::with_capacity(128);
        let mut buffer = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let status = parse_status_line(line).ok_or_else(|| {
            CheckError::new(format!(
                "GET {}{}: not an HTTP/1.x response",
                self.host, self.path
            ))
        })?;
        if (200..300).contains(&status) {
            Ok(None)
        } else {
            Err(CheckError::new(format!(
                "GET {}{} answered {status}",
                self.host, self.path
            )))
        }
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckContext;
    use crate::Phase;

    fn ctx() -> CheckContext {
        CheckContext::new(Phase::Serving)
    }

    #[test]
    fn http_urls_are_parsed_and_others_rejected() {
        let target = HttpTarget::parse("http://example.com:8080/health?full=1#x").unwrap();
        assert_eq!(target.address, "example.com:8080");
        assert_eq!(target.host, "example.com:8080");
        assert_eq!(target.path, "/health?full=1");
        let target = HttpTarget::parse("http://[::1]").unwrap();
        assert_eq!(target.address, "[::1]:80");
        assert_eq!(target.path, "/");
        assert!(HttpTarget::parse("https://example.com").is_err());
        assert!(HttpTarget::parse("http://").is_err());
        assert!(HttpTarget::parse("http://user@host/").is_err());
    }

    #[test]
    fn status_lines_are_parsed_strictly() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 ok"), None);
    }

    async fn one_shot_server(response: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 1024];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(response.as_bytes()).await;
        });
        address
    }

    #[tokio::test]
    async fn http_get_passes_on_2xx_and_fails_otherwise() {
        let address = one_shot_server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let check = http_get("up", &format!("http://{address}/health")).unwrap();
        assert!((check.run)(ctx()).await.is_ok());

        let address = one_shot_server("HTTP/1.1 302 Found\r\nlocation: /login\r\n\r\n").await;
        let check = http_get("redirect", &format!("http://{address}/")).unwrap();
        let error = (check.run)(ctx()).await.unwrap_err();
        assert!(error.message().contains("302"), "{error}");
    }

    #[tokio::test]
    async fn tcp_check_follows_the_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let check = tcp("db", address.clone());
        assert!((check.run)(ctx()).await.is_ok());
        drop(listener);
        let error = (check.run)(ctx()).await.unwrap_err();
        assert!(error.message().contains(&address), "{error}");
    }
}
