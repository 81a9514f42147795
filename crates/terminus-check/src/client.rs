//! One plain HTTP/1.1 request on a new connection, for the balancers' status pages.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its body, read to the end.
    pub body: Bytes,
}

/// The error of [`get`]: connecting, or the exchange.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `GET path` on a new connection to `addr`, read to its end.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Answer, Error> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok(Answer { status, body })
}
