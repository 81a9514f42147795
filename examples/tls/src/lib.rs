//! The quickstart's routes over HTTPS: `cargo run -p tls`, then
//! `curl -k https://127.0.0.1:3443/`.
//!
//! `main.rs` runs it; the end-to-end tests run the same code through [`run`]. Settings
//! come from the environment, as for the quickstart (its `TERMINUS_*` variables too):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HOST` | `127.0.0.1` | address to listen on |
//! | `PORT` | `3443` | port (`0` picks a free one) |
//! | `TLS_CERT`, `TLS_KEY` | unset | PEM files: the certificate chain and its key; reloaded on SIGHUP |
//!
//! Without `TLS_CERT` and `TLS_KEY`, a self-signed certificate for `localhost` and
//! `127.0.0.1` is generated at start (clients need `-k`, or the certificate printed
//! with `TLS_PRINT_CERT=1`); a SIGHUP then logs that there are no files to reload, and
//! the process serves on.
#![warn(missing_docs)]

use std::ffi::OsString;
use std::process::ExitCode;

use axum_terminus::tls::TlsConfig;
use axum_terminus::{Builder, Layer, Server, TerminusLayer};

/// Default port: 3443, so that it runs next to the quickstart's 3000 without root.
const DEFAULT_PORT: u16 = 3443;

/// Configures the controller from `builder` and the environment, binds `HOST:PORT`,
/// prints `tls listening on https://ADDR` on stdout, serves HTTPS until shut down, and
/// returns the exit code of the outcome.
pub async fn run(builder: Builder) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|_| format!("PORT: `{port}` is not a port number"))?,
        Err(_) => DEFAULT_PORT,
    };
    let terminus = builder.from_env()?.build()?;
    let server = Server::new(&terminus);
    let (tls, files) = tls_config().await?;
    // Before the `listening` line: a SIGHUP sent once it is printed finds the handler.
    reload_on_sighup(tls.clone(), files)?;
    let app = TerminusLayer::new(&terminus).layer(quickstart::router().with_state(()));
    let listener = axum_terminus::bind(format!("{host}:{port}"), &terminus).await?;
    println!("tls listening on https://{}", listener.local_addr()?);
    let outcome = server.tls_listener(listener, tls, app).run().await;
    Ok(outcome.exit_code())
}

/// The PEM files named by `TLS_CERT` and `TLS_KEY`.
struct PemFiles {
    cert: OsString,
    key: OsString,
}

/// `TLS_CERT` and `TLS_KEY` (and their files, to reload), else a self-signed
/// certificate (and no files).
async fn tls_config() -> Result<(TlsConfig, Option<PemFiles>), Box<dyn std::error::Error>> {
    let files = (std::env::var_os("TLS_CERT"), std::env::var_os("TLS_KEY"));
    let (Some(cert), Some(key)) = files else {
        let generated = rcgen::generate_simple_self_signed(["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        let cert = generated.cert.pem();
        if std::env::var_os("TLS_PRINT_CERT").is_some() {
            print!("{cert}");
        }
        tracing::info!("no TLS_CERT/TLS_KEY: serving a self-signed certificate for localhost");
        let tls = TlsConfig::from_pem(cert.as_bytes(), generated.key_pair.serialize_pem().as_bytes())?;
        return Ok((tls, None));
    };
    let tls = TlsConfig::from_pem_files(&cert, &key).await?;
    Ok((tls, Some(PemFiles { cert, key })))
}

/// Installs a SIGHUP handler for as long as the process runs: it reloads the files
/// (renewed certificates from certbot or cert-manager are picked up without a restart:
/// `kill -HUP <pid>`; new handshakes use them, open connections keep theirs), or says
/// that there are none to reload. SIGHUP's default action would end the process.
fn reload_on_sighup(tls: TlsConfig, files: Option<PemFiles>) -> std::io::Result<()> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(files) = &files else {
                tracing::warn!(
                    "SIGHUP: no TLS_CERT/TLS_KEY files to reload, the generated certificate stays"
                );
                continue;
            };
            if let Err(error) = tls.reload_pem_files(&files.cert, &files.key).await {
                tracing::error!(%error, "TLS certificate not reloaded: the previous one stays");
            }
        }
    });
    Ok(())
}
