//! `wss://` and `https://` with real TLS clients (tungstenite's and rustls' own), against
//! certificates made at test time by `rcgen` (no private key is committed): echo of every
//! size, the page over https, ALPN, session resumption, peers that are silent, send garbage,
//! speak plain HTTP or stop mid-handshake, and the errors of a bad certificate or key.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Echo, TestServer};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, Message, WebSocket};
use wsreactor::{Config, Error, Server, TlsFiles};

/// A test CA, a certificate it signed for `localhost`, and its key, as PEM files in a fresh
/// temporary folder (removed on drop).
struct Pki {
    dir: PathBuf,
    files: TlsFiles,
    client: Arc<ClientConfig>,
}

impl Pki {
    fn new() -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wsreactor-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, leaf.pem()).unwrap();
        std::fs::write(&files.key, leaf_key.serialize_pem()).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
        let mut client =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        Pki {
            dir,
            files,
            client: Arc::new(client),
        }
    }

    fn server(&self, config: Config) -> TestServer {
        let config = Config {
            tls: Some(self.files.clone()),
            ..config
        };
        TestServer::start(config, Echo)
    }

    fn wss(&self, server: &TestServer) -> WebSocket<MaybeTlsStream<TcpStream>> {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let url = format!("wss://localhost:{}/", server.addr.port());
        let connector = Connector::Rustls(Arc::clone(&self.client));
        let (socket, response) =
            tungstenite::client_tls_with_config(url, stream, None, Some(connector))
                .expect("wss upgrade");
        assert_eq!(response.status(), 101);
        socket
    }

    /// A TLS stream to the server as rustls' blocking wrapper, handshake not yet done.
    fn tls_stream(&self, server: &TestServer) -> StreamOwned<ClientConnection, TcpStream> {
        let stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(Arc::clone(&self.client), name).unwrap();
        StreamOwned::new(conn, stream)
    }

    /// One HTTP GET over https: status line, and how the TLS session was made.
    fn https_get(&self, server: &TestServer, path: &str) -> (String, Option<HandshakeKind>) {
        let mut tls = self.tls_stream(server);
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        // The server closes after `Connection: close`; a missing close_notify is an error
        // only if nothing came before it.
        let _ = tls.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        let status = text.lines().next().unwrap_or("").to_string();
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        (status, tls.conn.handshake_kind())
    }

    /// A fresh client still gets its echo: whatever came before did not harm the server.
    fn still_serves(&self, server: &TestServer) {
        let mut client = self.wss(server);
        client.send(Message::text("still here")).unwrap();
        assert_eq!(client.read().unwrap(), Message::text("still here"));
        client.close(None).unwrap();
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads until the server closes the socket (EOF or reset): how long that took.
fn closed_within(mut stream: TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {} // an alert or an HTTP answer: keep reading to the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Err(e) => panic!("not closed within {limit:?}: {e}"),
        }
    }
}

#[test]
fn echoes_every_size_over_wss() {
    let pki = Pki::new();
    let server = pki.server(Config::default());
    let mut client = pki.wss(&server);
    for size in [
        0usize,
        1,
        125,
        126,
        16 * 1024 - 1,
        16 * 1024 + 7,
        65535,
        65536,
        1 << 20,
        16 << 20,
    ] {
        let binary: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        client.send(Message::binary(binary.clone())).unwrap();
        assert_eq!(
            client.read().unwrap(),
            Message::binary(binary),
            "binary {size}"
        );
        let text = "é".repeat(size / 2);
        client.send(Message::text(text.clone())).unwrap();
        assert_eq!(client.read().unwrap(), Message::text(text), "text {size}");
    }
    // Many small messages in flight at once come back whole and in order.
    for i in 0..500 {
        client.send(Message::text(format!("m{i}"))).unwrap();
    }
    for i in 0..500 {
        assert_eq!(client.read().unwrap(), Message::text(format!("m{i}")));
    }
    client.close(None).unwrap();
    pki.still_serves(&server);
}

#[test]
fn serves_the_page_over_https_with_alpn_and_resumes_sessions() {
    let pki = Pki::new();
    let server = pki.server(Config::default());
    let (status, first) = pki.https_get(&server, "/");
    // The library's echo handler serves no page: any HTTP answer proves the HTTP phase runs
    // over TLS; the binary's page is checked in the server crate.
    assert!(status.starts_with("HTTP/1.1 "), "{status:?}");
    assert_eq!(first, Some(HandshakeKind::Full));
    let (_, second) = pki.https_get(&server, "/");
    assert_eq!(second, Some(HandshakeKind::Resumed), "a ticket resumes");
    pki.still_serves(&server);
}

#[test]
fn silent_garbage_and_plain_http_peers_are_closed_without_harm() {
    let pki = Pki::new();
    let server = pki.server(Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    // Opens TCP and sends nothing: dropped at the handshake timeout.
    let silent = TcpStream::connect(server.addr).unwrap();
    let took = closed_within(silent, Duration::from_secs(5));
    assert!(took >= Duration::from_millis(200), "closed after {took:?}");
    pki.still_serves(&server);

    // Garbage: closed at once, whatever rustls answers first.
    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage.write_all(&[0xffu8; 600]).unwrap();
    let took = closed_within(garbage, Duration::from_secs(5));
    assert!(took < Duration::from_millis(250), "closed after {took:?}");
    pki.still_serves(&server);

    // Plain HTTP (and a plain WebSocket upgrade) to the TLS port.
    let mut http = TcpStream::connect(server.addr).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    let took = closed_within(http, Duration::from_secs(5));
    assert!(took < Duration::from_millis(250), "closed after {took:?}");
    pki.still_serves(&server);

    // The silent peer, the garbage and the plain HTTP never finished a handshake; the three
    // clients that proved the server still serves did.
    let stats = server.stop();
    assert_eq!(stats.tls_handshake_failures, 3);
    assert_eq!(stats.tls_handshakes, 3);
}

#[test]
fn handshake_timeout_covers_a_tls_handshake_that_stops_halfway() {
    let pki = Pki::new();
    let server = pki.server(Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    // A real ClientHello, then silence: the server answers and waits for the client's
    // Finished, which never comes.
    let mut tls = pki.tls_stream(&server);
    let mut hello = Vec::new();
    tls.conn.write_tls(&mut hello).unwrap();
    tls.sock.write_all(&hello).unwrap();
    let took = closed_within(tls.sock, Duration::from_secs(5));
    assert!(took >= Duration::from_millis(200), "closed after {took:?}");

    // TLS completes but no HTTP request follows: the same deadline.
    let mut tls = pki.tls_stream(&server);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break, // closed (with or without close_notify)
            Ok(_) => {}              // session tickets are read as nothing
        }
        assert!(start.elapsed() < Duration::from_secs(5), "not closed");
    }
    pki.still_serves(&server);
    // The ClientHello alone failed; the silent one after a handshake did not.
    let stats = server.stop();
    assert_eq!(stats.tls_handshake_failures, 1);
    assert_eq!(stats.tls_handshakes, 2);
}

#[test]
fn bad_certificate_or_key_is_a_clear_error_at_bind() {
    let pki = Pki::new();
    let bind = |cert: PathBuf, key: PathBuf| {
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Some(TlsFiles { cert, key }),
            ..Config::default()
        };
        match Server::bind(config, Echo) {
            Err(Error::Tls(e)) => e.to_string(),
            other => panic!("expected a TLS error, got {other:?}"),
        }
    };
    let missing = pki.dir.join("missing.pem");
    let e = bind(missing.clone(), pki.files.key.clone());
    assert!(
        e.contains("missing.pem") && e.contains("cannot read"),
        "{e}"
    );
    let e = bind(pki.files.cert.clone(), missing);
    assert!(e.contains("cannot read the key"), "{e}");

    let empty = pki.dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = bind(empty.clone(), pki.files.key.clone());
    assert!(
        e.contains("empty.pem") && e.contains("no CERTIFICATE"),
        "{e}"
    );
    let e = bind(pki.files.cert.clone(), empty);
    assert!(e.contains("no key"), "{e}");

    // A key that is not the certificate's.
    let other = pki.dir.join("other-key.pem");
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&other, key.serialize_pem()).unwrap();
    let e = bind(pki.files.cert.clone(), other);
    assert!(e.contains("does not match the certificate"), "{e}");
}
