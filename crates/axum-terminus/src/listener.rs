//! Binding listeners, with errors that name the address.

use std::fmt;
use std::io;

use terminus_core::Terminus;
use tokio::net::{TcpListener, ToSocketAddrs};

/// Binds a TCP listener. On failure (a port already in use, a missing permission) the
/// error names the address, and the terminus is marked fatal, so liveness fails and
/// the shutdown starts: the orchestrator restarts the process instead of leaving it
/// half-started.
pub async fn bind<A>(address: A, terminus: &Terminus) -> Result<TcpListener, BindError>
where
    A: ToSocketAddrs + fmt::Display,
{
    match TcpListener::bind(&address).await {
        Ok(listener) => {
            if let Ok(local) = listener.local_addr() {
                tracing::info!(target: "terminus", address = %local, "listening");
            }
            Ok(listener)
        }
        Err(source) => {
            let error = BindError {
                address: address.to_string(),
                source,
            };
            terminus.set_fatal(&error);
            Err(error)
        }
    }
}

/// A listener could not be bound.
#[derive(Debug)]
pub struct BindError {
    address: String,
    source: io::Error,
}

impl BindError {
    /// The address that could not be bound.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The operating system's error (`AddrInUse`, `PermissionDenied`, ...).
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: {}", self.address, self.source)
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
