//! [`TlsConfig`]: the server's side of TLS, from PEM files or a rustls `ServerConfig`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::ServerConfig;

use super::certificate::{self, Pem, Swappable};
use super::handshake::Acceptor;
use super::TlsError;
use crate::settings::Versions;

/// What a TLS listener needs: certificates, protocol versions, ciphers. Give it to
/// [`Server::tls_listener`](crate::Server::tls_listener).
///
/// The server sets ALPN from its HTTP versions when it starts (`h2` and `http/1.1`,
/// or only the one of [`http1_only`](crate::Server::http1_only) or
/// [`http2_only`](crate::Server::http2_only)), replacing any list set in a
/// `ServerConfig`: the negotiated protocol is the one served.
///
/// Cloning is cheap, and clones share the certificate: keep one to
/// [reload](TlsConfig::reload_pem_files) it while the server runs.
///
/// ```no_run
/// use axum_terminus::tls::TlsConfig;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let tls = TlsConfig::from_pem_files("/etc/app/tls.crt", "/etc/app/tls.key").await?;
/// // Later, when the files were renewed (on SIGHUP, say): new handshakes use them.
/// tls.reload_pem_files("/etc/app/tls.crt", "/etc/app/tls.key").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ServerConfig>,
    /// The certificate, when this configuration loaded it (and so can reload it).
    certificate: Option<Arc<Swappable>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("reloadable", &self.certificate.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// A configuration of your own: client authentication, a certificate resolver
    /// (SNI, ACME), a crypto provider. Only ALPN is set by the server.
    pub fn new(config: ServerConfig) -> TlsConfig {
        TlsConfig {
            provider: Arc::clone(config.crypto_provider()),
            config: Arc::new(config),
            certificate: None,
        }
    }

    /// The certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or SEC1) in
    /// PEM files, with rustls's safe defaults (TLS 1.2 and 1.3) and no client
    /// authentication. The key must belong to the certificate.
    ///
    /// The crypto provider is the process default if one was installed
    /// (`CryptoProvider::install_default`), else *ring*.
    ///
    /// The files are read off the runtime (on a thread of their own), each within 5 s:
    /// a FIFO that nobody writes, or a mount that hangs, is a
    /// [`TlsError::ReadTimedOut`] naming the file, and never blocks a runtime thread.
    /// Call it inside the Tokio runtime.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves nothing behind but a read under way, which ends on
    /// its own thread and is discarded.
    pub async fn from_pem_files(
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let (chain_path, key_path) = (certificate_chain.as_ref(), private_key.as_ref());
        let chain = certificate::read(chain_path).await?;
        let key = certificate::read(key_path).await?;
        TlsConfig::load(Pem::file(&chain, chain_path), Pem::file(&key, key_path))
    }

    /// [`from_pem_files`](TlsConfig::from_pem_files) with the PEM data in memory (a
    /// certificate generated at start, a secret from a vault).
    pub fn from_pem(certificate_chain: &[u8], private_key: &[u8]) -> Result<TlsConfig, TlsError> {
        TlsConfig::load(Pem::data(certificate_chain), Pem::data(private_key))
    }

    fn load(chain: Pem<'_>, key: Pem<'_>) -> Result<TlsConfig, TlsError> {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(ring_provider()));
        let certificate = Arc::new(Swappable::new(certificate::certified_key(chain, key, &provider)?));
        let config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rejected)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificate) as _);
        Ok(TlsConfig {
            config: Arc::new(config),
            certificate: Some(certificate),
            provider,
        })
    }

    /// Replaces the certificate and key with those in the PEM files: handshakes from
    /// now on use them, connections already established keep theirs. On an error
    /// (unreadable file, a key that does not match), the current certificate stays.
    /// Every clone of this configuration, and every listener given one, sees the change.
    ///
    /// The files are read as by [`from_pem_files`](TlsConfig::from_pem_files): off the
    /// runtime, each within 5 s, so a FIFO at the path (or a hung mount) is a
    /// [`TlsError::ReadTimedOut`] and the server serves on with the current certificate.
    ///
    /// # Cancel safety
    ///
    /// The certificate is replaced in one step, after both files were read and checked:
    /// dropping the future before that leaves the current one in place.
    pub async fn reload_pem_files(
        &self,
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<(), TlsError> {
        let (chain_path, key_path) = (certificate_chain.as_ref(), private_key.as_ref());
        let chain = certificate::read(chain_path).await?;
        let key = certificate::read(key_path).await?;
        self.reload(Pem::file(&chain, chain_path), Pem::file(&key, key_path))
    }

    /// [`reload_pem_files`](TlsConfig::reload_pem_files) with the PEM data in memory.
    pub fn reload_pem(&self, certificate_chain: &[u8], private_key: &[u8]) -> Result<(), TlsError> {
        self.reload(Pem::data(certificate_chain), Pem::data(private_key))
    }

    fn reload(&self, chain: Pem<'_>, key: Pem<'_>) -> Result<(), TlsError> {
        let certificate = self.certificate.as_ref().ok_or(TlsError::NotReloadable)?;
        certificate.swap(certificate::certified_key(chain, key, &self.provider)?);
        tracing::info!(target: "terminus", "TLS certificate reloaded");
        Ok(())
    }

    /// The rustls configuration (before the server sets ALPN).
    pub fn server_config(&self) -> &ServerConfig {
        &self.config
    }

    /// The handshake stage of a listener, with ALPN for `versions`.
    pub(crate) fn acceptor(&self, versions: Versions) -> Acceptor {
        let mut config = ServerConfig::clone(&self.config);
        config.alpn_protocols = match versions {
            Versions::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Versions::Http1Only => vec![b"http/1.1".to_vec()],
            Versions::Http2Only => vec![b"h2".to_vec()],
        };
        Acceptor::new(Arc::new(config), versions)
    }
}

/// *ring*, the provider this crate builds with (it needs only a C compiler).
///
/// rustls 0.23.48 deprecated `ring::default_provider`, for want of post-quantum key
/// exchange in *ring*, and 0.23 has no other way to reach *ring* (the next major version
/// moves it to the `rustls-ring` crate): the `allow` keeps builds free of warnings on
/// both sides of 0.23.48. A process that wants post-quantum key exchange installs
/// aws-lc-rs as its default provider, which `from_pem_files` and `from_pem` then use.
#[allow(deprecated)]
fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}
