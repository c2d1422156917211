//! The client side of the HTTP/1.1 upgrade (RFC 6455 §4.1): the request, the expected
//! `Sec-WebSocket-Accept` (base64 of SHA-1 over key + GUID), and checking the server's 101 reply.

use base64::Engine as _;
use sha1::{Digest, Sha1};
use std::fmt;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest response head accepted.
pub const MAX_HEAD: usize = 8192;

/// The `Sec-WebSocket-Accept` value a server must answer to `key`.
pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A `Sec-WebSocket-Key` from 16 nonce bytes.
pub fn key_from_nonce(nonce: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// The upgrade request for `path` on `host`.
pub fn request(host: &str, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Why an upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not parseable as an HTTP response.
    Malformed(String),
    /// The response head exceeded [`MAX_HEAD`].
    TooLarge,
    /// A status other than 101.
    Status(u16),
    /// `Upgrade`/`Connection` headers missing or wrong.
    NotUpgrade,
    /// `Sec-WebSocket-Accept` missing or wrong.
    BadAccept,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Malformed(e) => write!(f, "malformed response: {e}"),
            HandshakeError::TooLarge => write!(f, "response head too large"),
            HandshakeError::Status(s) => write!(f, "status {s} instead of 101"),
            HandshakeError::NotUpgrade => write!(f, "missing Upgrade/Connection headers"),
            HandshakeError::BadAccept => write!(f, "wrong Sec-WebSocket-Accept"),
        }
    }
}

impl std::error::Error for HandshakeError {}

fn has_token(value: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(value)
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks a (possibly partial) response in `buf` against `expected_accept`. Returns
/// `Ok(None)` if more bytes are needed, `Ok(Some(head_len))` for a valid 101 (bytes after the
/// head already belong to the WebSocket stream).
pub fn check_response(buf: &[u8], expected_accept: &str) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Err(HandshakeError::TooLarge);
            }
            return Ok(None);
        }
        Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        return Err(HandshakeError::Status(code));
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut accept = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(h.value, "websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection |= has_token(h.value, "upgrade");
        } else if h.name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = h.value == expected_accept.as_bytes();
        }
    }
    if !upgrade || !connection {
        return Err(HandshakeError::NotUpgrade);
    }
    if !accept {
        return Err(HandshakeError::BadAccept);
    }
    Ok(Some(head_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_vector() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn key_is_16_bytes_base64() {
        let k = key_from_nonce(*b"the sample nonce");
        assert_eq!(k, "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn request_has_required_headers() {
        let r = String::from_utf8(request("127.0.0.1:9", "/x", "KEY")).expect("ascii");
        assert!(r.starts_with("GET /x HTTP/1.1\r\n"));
        for h in [
            "Host: 127.0.0.1:9\r\n",
            "Upgrade: websocket\r\n",
            "Connection: Upgrade\r\n",
            "Sec-WebSocket-Key: KEY\r\n",
            "Sec-WebSocket-Version: 13\r\n",
        ] {
            assert!(r.contains(h), "{h}");
        }
        assert!(r.ends_with("\r\n\r\n"));
    }

    #[test]
    fn checks_the_response() {
        let acc = accept_for("dGhlIHNhbXBsZSBub25jZQ==");
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {acc}\r\n\r\n"
        );
        let mut b = ok.into_bytes();
        b.extend_from_slice(&[0x81, 0x00]);
        let b = &b[..];
        assert_eq!(check_response(b, &acc), Ok(Some(b.len() - 2)));
        assert_eq!(check_response(&b[..20], &acc), Ok(None));
        assert_eq!(check_response(b, "wrong"), Err(HandshakeError::BadAccept));
        let e = check_response(b"HTTP/1.1 400 Bad Request\r\n\r\n", &acc);
        assert_eq!(e, Err(HandshakeError::Status(400)));
        let e = check_response(
            format!("HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: {acc}\r\n\r\n").as_bytes(),
            &acc,
        );
        assert_eq!(e, Err(HandshakeError::NotUpgrade));
        assert!(matches!(
            check_response(b"garbage\r\n\r\n", &acc),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
