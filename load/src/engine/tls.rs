//! The client side of `wss://`: a rustls [`ClientConfig`] (ring, as the server uses) built
//! from the trust the command line asks for, and [`TlsSession`], one connection's rustls
//! state driven without blocking over the engine's non-blocking socket. Plaintext goes in and
//! out in whole loop turns: the connection's out buffer is sealed into records once per
//! flush, and records read in one turn are opened in a row.
//!
//! This module owns the TLS state and the trust decision; it must not parse WebSocket bytes,
//! poll, or decide anything about the workload. A plain (`ws://`) connection never reaches it.

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::io::{self, ErrorKind, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Size of the buffer decrypted bytes are read into (one record at most is 16 KiB).
pub(super) const PLAIN_BUF: usize = 64 * 1024;

/// Whom a `wss://` client trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TlsTrust {
    /// Nothing given: a `wss://` URL is refused with a message saying what to pass.
    #[default]
    Unset,
    /// Certificates (PEM) that are trust anchors, e.g. the self-signed test certificate: the
    /// server's chain and name are verified against them as a browser would.
    Ca(PathBuf),
    /// No certificate verification at all (handshake signatures are still checked): for
    /// loopback testing against a server whose certificate is at hand nowhere else.
    Insecure,
}

/// TLS settings of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Whom to trust.
    pub trust: TlsTrust,
    /// Resume sessions (tickets) on reconnects; off, every handshake is a full one, which is
    /// what a handshake rate should measure.
    pub resume: bool,
}

/// The shared client configuration for `host` (the URL's host, without the port).
pub fn client_config(opts: &TlsOptions) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut cfg = match &opts.trust {
        TlsTrust::Unset => {
            return Err(
                "wss:// needs --tls-ca PEM (the server's certificate or its CA) \
                        or --tls-insecure"
                    .into(),
            )
        }
        TlsTrust::Ca(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for c in certs {
                let c = c.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("unusable certificate in {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("no certificate in {}", path.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertVerification(provider)))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !opts.resume {
        cfg.resumption = Resumption::disabled();
    }
    Ok(Arc::new(cfg))
}

/// The name a certificate must carry for `host` ("127.0.0.1:9001" → the IP 127.0.0.1).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string()).map_err(|e| format!("bad TLS server name {name:?}: {e}"))
}

/// Accepts any certificate; still verifies that the handshake is signed by the key in it.
#[derive(Debug)]
struct NoCertVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The error kind a run reports for a failed TLS connection.
fn error_kind(e: rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(_) => "tls-certificate",
        _ => "tls",
    }
}

/// What the engine keeps for `wss://`: the shared configuration, the server's name and the
/// buffer records are decrypted into.
pub(super) struct TlsClient {
    pub(super) config: Arc<ClientConfig>,
    pub(super) name: ServerName<'static>,
    pub(super) plain: Vec<u8>,
}

impl TlsClient {
    /// What `target` needs: `None` for `ws://`; for `wss://`, the configuration `opts` asks
    /// for (an error for raw TCP, which has no TLS mode).
    pub(super) fn for_target(
        target: &super::Target,
        mode: super::Mode,
        opts: &TlsOptions,
    ) -> io::Result<Option<TlsClient>> {
        match (target.tls, mode) {
            (false, _) => Ok(None),
            (true, super::Mode::Raw) => {
                Err(io::Error::other("TLS is for wss:// URLs, not raw TCP"))
            }
            (true, super::Mode::WebSocket) => Ok(Some(TlsClient {
                config: client_config(opts).map_err(io::Error::other)?,
                name: server_name(&target.host).map_err(io::Error::other)?,
                plain: vec![0; PLAIN_BUF],
            })),
        }
    }
}

/// One connection's TLS state.
pub(super) struct TlsSession {
    conn: ClientConnection,
}

impl TlsSession {
    /// A session whose ClientHello is ready to be written.
    pub(super) fn new(client: &TlsClient) -> Result<Box<TlsSession>, &'static str> {
        let mut conn =
            ClientConnection::new(client.config.clone(), client.name.clone()).map_err(|_| "tls")?;
        // The out buffer of one turn (up to a 16 MiB message times the pipeline) is sealed in
        // one go; the engine bounds it, rustls need not.
        conn.set_buffer_limit(None);
        Ok(Box::new(TlsSession { conn }))
    }

    /// Records are waiting to be written to the socket.
    pub(super) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Opens the records in `data` (bytes read from the socket), handing each run of
    /// plaintext to `plain`; `buf` is where plaintext is decrypted into.
    pub(super) fn receive(
        &mut self,
        mut data: &[u8],
        buf: &mut [u8],
        mut plain: impl FnMut(&[u8]) -> Result<(), &'static str>,
    ) -> Result<(), &'static str> {
        while !data.is_empty() {
            match self.conn.read_tls(&mut data) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(_) => return Err("tls"),
            }
            let state = self.conn.process_new_packets().map_err(error_kind)?;
            let mut left = state.plaintext_bytes_to_read();
            while left > 0 {
                match self.conn.reader().read(buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        left = left.saturating_sub(n);
                        plain(&buf[..n])?;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => return Err("tls"),
                }
            }
        }
        Ok(())
    }

    /// Seals `out` (plaintext) into records and writes what the socket takes; the rest waits
    /// for a WRITABLE edge ([`TlsSession::wants_write`]). Err means the connection is dead.
    pub(super) fn send(&mut self, out: &[u8], stream: &mut TcpStream) -> io::Result<()> {
        if !out.is_empty() {
            self.conn.writer().write_all(out)?;
        }
        while self.conn.wants_write() {
            match self.conn.write_tls(stream) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
