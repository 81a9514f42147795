//! [`TlsError`]: what can go wrong when loading a certificate.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A certificate or key could not be loaded. The message names the file.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// A file gave nothing within the bound (5 s): a FIFO that nobody writes, a mount
    /// that hangs. The read goes on, on a thread of its own, until the file gives way;
    /// the server keeps the certificate it has.
    ReadTimedOut {
        /// The file.
        path: PathBuf,
        /// How long the read was given.
        after: Duration,
    },
    /// The PEM data holds no certificate, or one that cannot be parsed.
    Certificate {
        /// Where the certificates came from (a path, or `PEM data`).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The PEM data holds no private key, or one that cannot be parsed.
    PrivateKey {
        /// Where the key came from (a path, or `PEM data`).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate and key: an unsupported key type, or a key that
    /// does not belong to the certificate.
    Rejected(rustls::Error),
    /// [`TlsConfig::reload_pem`](crate::tls::TlsConfig::reload_pem) on a configuration
    /// built with [`TlsConfig::new`](crate::tls::TlsConfig::new): its certificates are
    /// the `ServerConfig`'s own (reload them through its resolver).
    NotReloadable,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            TlsError::ReadTimedOut { path, after } => write!(
                f,
                "cannot read {}: nothing read within {after:?} (a FIFO nobody writes, or a mount that hangs?)",
                path.display()
            ),
            TlsError::Certificate { origin, reason } => write!(f, "no usable certificate in {origin}: {reason}"),
            TlsError::PrivateKey { origin, reason } => write!(f, "no usable private key in {origin}: {reason}"),
            TlsError::Rejected(error) => write!(f, "certificate and key rejected: {error}"),
            TlsError::NotReloadable => f.write_str(
                "this TLS configuration came from a rustls ServerConfig: reload through its certificate resolver",
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Rejected(error) => Some(error),
            _ => None,
        }
    }
}
