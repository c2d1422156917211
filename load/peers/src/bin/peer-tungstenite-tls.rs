//! `peer-tungstenite-tls`: `peer-tungstenite`'s echo (tokio-tungstenite, one current-thread
//! tokio runtime) behind `tokio-rustls` on ring, the TLS peer of `load compare`'s TLS
//! workloads. Certificate and key come from PEM files; ALPN offers `http/1.1`; session
//! tickets are rustls' server defaults (the load tool makes full handshakes anyway).
//!
//! Usage: `peer-tungstenite-tls --listen 127.0.0.1:PORT --tls-cert PEM --tls-key PEM`; prints
//! `listening on ADDR` to stderr when ready and exits on SIGTERM or SIGINT.

use futures_util::{future, StreamExt, TryStreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// The value of `--NAME PATH` or `--NAME=PATH`.
fn arg(name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == flag {
            return args.next();
        }
        if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
            return Some(v.to_string());
        }
    }
    None
}

fn acceptor() -> Result<TlsAcceptor, String> {
    let (cert, key) = match (arg("tls-cert"), arg("tls-key")) {
        (Some(c), Some(k)) => (c, k),
        _ => return Err("needs --tls-cert PEM --tls-key PEM".into()),
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

async fn serve(acceptor: TlsAcceptor, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(tls) = acceptor.accept(stream).await else {
        return;
    };
    let Ok(ws) = tokio_tungstenite::accept_async(tls).await else {
        return;
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|m| future::ready(m.is_text() || m.is_binary()))
        .forward(write)
        .await;
}

fn main() -> std::io::Result<()> {
    let acceptor = match acceptor() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("peer-tungstenite-tls: {e}");
            std::process::exit(1);
        }
    };
    peers::serve_until_signal(move |stream| {
        tokio::spawn(serve(acceptor.clone(), stream));
    })
}
