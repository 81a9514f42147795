//! [`http_get`]: a check that a URL answers 2xx, with hyper's client.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use terminus_core::health::{Check, CheckError};

/// A check that passes when `GET url` answers with a 2xx status.
///
/// Plain `http://` only (a sidecar, an internal service; for TLS or authentication,
/// write a [`Check`] with your own client). Redirects are failures, not followed; the
/// body is not read. Connections are kept alive between runs, and each run is bounded
/// by the check's timeout like any other. An invalid URL is an error now, not a
/// failing check later.
///
/// ```
/// use axum_terminus::health::checks::http_get;
///
/// assert!(http_get("search", "http://search.internal:9200/_cluster/health").is_ok());
/// assert!(http_get("search", "https://search.internal").is_err(), "no TLS here");
/// ```
pub fn http_get(name: impl Into<Cow<'static, str>>, url: &str) -> Result<Check, InvalidUrl> {
    let invalid = |reason| InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a valid URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(invalid(
            "only http:// URLs are supported by the built-in check (no TLS)",
        ));
    }
    if uri
        .authority()
        .is_none_or(|authority| authority.as_str().contains('@'))
    {
        return Err(invalid("the URL needs a host, and no user information"));
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    Ok(Check::with_state(
        name,
        (client, uri),
        |(client, uri), _ctx| async move {
            let request = Request::get(uri.clone())
                .header(header::USER_AGENT, "terminus-rs-health-check")
                .body(Empty::new())
                .map_err(|error| CheckError::new(format!("GET {uri}: {error}")))?;
            let response = client
                .request(request)
                .await
                .map_err(|error| CheckError::new(format!("GET {uri}: {error}")))?;
            let status = response.status();
            if status.is_success() {
                Ok(None)
            } else {
                Err(CheckError::new(format!("GET {uri} answered {status}")))
            }
        },
    ))
}

/// A URL [`http_get`] cannot use.
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

#[cfg(test)]
mod tests {
    use super::*;
    use terminus_core::health::{HealthStatus, ProbeRequest};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    async fn status_of(check: Check) -> (HealthStatus, String) {
        let name = check.name().to_owned();
        let terminus = crate::Terminus::builder().readiness(check).build().unwrap();
        let report = terminus.probe(ProbeRequest::checks([name])).await;
        let message = report.checks[0]
            .error
            .as_ref()
            .map(|e| e.message().to_owned())
            .unwrap_or_default();
        (report.status, message)
    }

    #[tokio::test]
    async fn http_get_passes_on_2xx_and_fails_otherwise() {
        let address = one_shot_server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let check = http_get("up", &format!("http://{address}/health")).unwrap();
        assert_eq!(status_of(check).await.0, HealthStatus::Pass);

        let address =
            one_shot_server("HTTP/1.1 302 Found\r\nlocation: /login\r\ncontent-length: 0\r\n\r\n").await;
        let check = http_get("redirect", &format!("http://{address}/")).unwrap();
        let (status, message) = status_of(check).await;
        assert_eq!(status, HealthStatus::Fail);
        assert!(message.contains("302"), "{message}");
    }

    #[test]
    fn urls_it_cannot_use_are_errors_at_once() {
        assert!(http_get("a", "https://example.com").is_err());
        assert!(http_get("a", "http://user@host/").is_err());
        assert!(http_get("a", "not a url").is_err());
        assert!(http_get("a", "http://[::1]:8080/health?full=1").is_ok());
    }
}
