//! Loading a server's certificate chain and key into the `ServerConfig` its TLS connections
//! share. Must not touch a connection.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsError;

/// Loads the certificate chain and private key (PEM files) into the configuration every TLS
/// connection of a server shares: TLS 1.3 and 1.2 with `ring`, ALPN `http/1.1`, session
/// resumption by tickets (and by session id, rustls' default cache).
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(cert, "certificate", e))?;
    if certs.is_empty() {
        return Err(TlsError::new(cert, "no CERTIFICATE section in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, "key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::new(cert, format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::new(
                key,
                format!("does not match the certificate in {}", cert.display()),
            ),
            e => TlsError::new(key, format!("not usable with the certificate: {e}")),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| TlsError::new(cert, format!("session tickets: {e}")))?;
    Ok(Arc::new(config))
}

fn pem_error(path: &Path, what: &str, e: pem::Error) -> TlsError {
    match e {
        pem::Error::Io(e) => TlsError::new(path, format!("cannot read the {what} file: {e}")),
        pem::Error::NoItemsFound => TlsError::new(path, format!("no {what} in the file")),
        e => TlsError::new(path, format!("not a valid PEM {what} file: {e}")),
    }
}
