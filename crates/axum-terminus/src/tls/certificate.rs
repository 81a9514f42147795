//! The server's certificate, read from PEM and swappable while serving.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

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

/// Reads a file whole, with an error naming it.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
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
