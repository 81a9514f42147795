//! Built-in checks that everyone otherwise writes by hand. This crate has no HTTP
//! client: the HTTP check (`http_get`) lives in `axum-terminus`, which has one.
//!
//! Each returns a [`Check`] that belongs to no probe yet: register it with the
//! builder's `readiness(..)`, `liveness(..)` or `startup(..)`.
//!
//! ```
//! use terminus_core::health::checks;
//! use terminus_core::Terminus;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let terminus = Terminus::builder()
//!     .readiness(checks::tcp("db", "127.0.0.1:5432"))
//!     .build()?;
//! # let _ = terminus; Ok(()) }
//! ```

use std::borrow::Cow;
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckContext;
    use crate::Phase;

    fn ctx() -> CheckContext {
        CheckContext::new(Phase::Serving)
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
