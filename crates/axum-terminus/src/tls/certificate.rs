//! The server's certificate, read from PEM and swappable while serving.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// PEM data and where it came from, for the error messages.
pub(crate) struct Pem<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) origin: String,
}

impl<'a> Pem<'a> {
    pub(crate) fn data(bytes: &'a [u8]) -> Pem<'a> {
        Pem {
            bytes,
            origin: "PEM data".to_owned(),
        }
    }

    /// The contents of the file at `path`, named by it in errors.
    pub(crate) fn file(bytes: &'a [u8], path: &Path) -> Pem<'a> {
        Pem {
            bytes,
            origin: path.display().to_string(),
        }
    }
}

/// How long reading one certificate or key file may take. A PEM file is read in
/// microseconds; one still unread after this is a FIFO that nobody writes, or on a
/// mount that hangs, and will not come.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads a file whole, off the runtime, with an error naming it; gives up after
/// [`READ_TIMEOUT`].
///
/// The read runs on a thread of its own rather than `spawn_blocking`: a read that never
/// ends (a FIFO) would keep the runtime from shutting down, since a runtime waits for
/// its blocking tasks when dropped. Such a thread stays blocked until the file gives
/// way or the process exits; the server goes on with the certificate it has.
pub(crate) async fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let error = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let owned = path.to_owned();
    std::thread::Builder::new()
        .name("terminus-tls-read".to_owned())
        .spawn(move || {
            // The receiver is gone once the read timed out: nobody waits for the result.
            let _ = sender.send(std::fs::read(owned));
        })
        .map_err(error)?;
    match tokio::time::timeout(READ_TIMEOUT, receiver).await {
        Ok(Ok(read)) => read.map_err(error),
        // The thread ended without sending: it panicked, which `fs::read` does not do.
        Ok(Err(_)) => Err(error(io::Error::other(
            "the reading thread ended without a result",
        ))),
        Err(_) => Err(TlsError::ReadTimedOut {
            path: path.to_owned(),
            after: READ_TIMEOUT,
        }),
    }
}

/// The certificate chain (leaf first) and its private key, checked against each other.
pub(crate) fn certified_key(
    chain: Pem<'_>,
    key: Pem<'_>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(chain.bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Certificate {
            origin: chain.origin.clone(),
            reason: error.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Certificate {
            origin: chain.origin,
            reason: "no `BEGIN CERTIFICATE` section".to_owned(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_slice(key.bytes).map_err(|error| TlsError::PrivateKey {
        origin: key.origin,
        reason: error.to_string(),
    })?;
    CertifiedKey::from_der(certificates, private_key, provider).map_err(TlsError::Rejected)
}

/// A certificate that every new handshake reads, and that [`Swappable::swap`] replaces:
/// handshakes already done keep the one they were given.
pub(crate) struct Swappable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Swappable {
    pub(crate) fn new(key: CertifiedKey) -> Swappable {
        Swappable {
            current: RwLock::new(Arc::new(key)),
        }
    }

    pub(crate) fn swap(&self, key: CertifiedKey) {
        // A plain store: a panic elsewhere cannot leave it half-written.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for Swappable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Swappable").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Swappable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fifo_nobody_writes_times_out_naming_the_path() {
        let path = std::env::temp_dir().join(format!("terminus-fifo-{}.crt", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let made = std::process::Command::new("mkfifo").arg(&path).status().unwrap();
        assert!(made.success());
        let read = read(&path).await;
        let _ = std::fs::remove_file(&path);
        match read {
            Err(error @ TlsError::ReadTimedOut { .. }) => {
                assert!(error.to_string().contains(&path.display().to_string()), "{error}");
            }
            other => panic!("a timeout: {other:?}"),
        }
    }
}
