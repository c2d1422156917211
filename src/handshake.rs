//! The opening handshake (RFC 6455 §4.2): parse a request head, decide, write the answer.
//!
//! Owns request parsing (with `httparse`), every check on an upgrade request, the
//! `Sec-WebSocket-Accept` computation and the bytes of the `101` and refusal responses. It holds
//! no state between calls and never touches a socket: the connection feeds it a head and copies
//! what it writes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::config::Config;
use crate::http::write_response;

/// The GUID of RFC 6455 §1.3, appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A parsed request head, as the handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    /// Request method (`GET`, `HEAD`, ...).
    pub method: &'r str,
    /// Request target as sent (path and query).
    pub path: &'r str,
    /// Minor HTTP version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Every header, in the order sent.
    pub headers: &'r [httparse::Header<'r>],
    /// The subprotocol chosen for a WebSocket, if any.
    pub subprotocol: Option<&'r str>,
}

impl<'r> Request<'r> {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'r [u8]> {
        header(self.headers, name)
    }

    /// Whether the client wants the connection closed after this response.
    pub fn wants_close(&self) -> bool {
        let listed = |token| {
            self.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .any(|h| has_token(h.value, token))
        };
        if self.minor_version == 0 {
            !listed("keep-alive")
        } else {
            listed("close")
        }
    }
}

/// Why an upgrade request is refused; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `400`: malformed head or a failed RFC 6455 §4.2.1 check (the text says which).
    BadRequest(&'static str),
    /// `426` with `Sec-WebSocket-Version: 13`: a WebSocket version we do not speak.
    VersionNotSupported,
    /// `403`: the origin policy refused the request.
    Forbidden,
    /// `431`: the head or its header count exceeds the configured limit.
    HeadTooLarge,
}

impl Refusal {
    /// HTTP status code and reason phrase.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::BadRequest(_) => (400, "Bad Request"),
            Refusal::VersionNotSupported => (426, "Upgrade Required"),
            Refusal::Forbidden => (403, "Forbidden"),
            Refusal::HeadTooLarge => (431, "Request Header Fields Too Large"),
        }
    }
}

/// What to do with a complete request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'c> {
    /// Switch protocols: answer `101` with this accept key and subprotocol.
    Upgrade {
        /// Base64 `Sec-WebSocket-Accept` value.
        accept: [u8; 28],
        /// The chosen subprotocol (borrowed from the configuration).
        subprotocol: Option<&'c str>,
        /// permessage-deflate, if an offer was accepted: the parameters in force.
        deflate: Option<crate::deflate::Agreement>,
    },
    /// Not an upgrade attempt: an ordinary HTTP request.
    Http,
    /// An upgrade attempt that must be refused.
    Refuse(Refusal),
}

/// Parses a request head from the start of `buf` into `headers`.
///
/// `Ok(None)`: incomplete so far. `Ok(Some((len, request)))`: the head takes `len` bytes.
/// Sizes are checked here: a head over `max_head` bytes (complete or not) and more headers than
/// `headers` holds are [`Refusal::HeadTooLarge`].
pub fn parse_head<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    max_head: usize,
) -> Result<Option<(usize, httparse::Request<'h, 'b>)>, Refusal> {
    let mut request = httparse::Request::new(headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => Ok(Some((len, request))),
        Ok(httparse::Status::Complete(_)) => Err(Refusal::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= max_head => Err(Refusal::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Refusal::HeadTooLarge),
        Err(_) => Err(Refusal::BadRequest("malformed request head")),
    }
}

/// Applies every RFC 6455 §4.2.1 check and the configured policies to a parsed request.
pub fn evaluate<'c>(request: &httparse::Request<'_, '_>, config: &'c Config) -> Verdict<'c> {
    let headers: &[httparse::Header<'_>] = request.headers;
    let upgrade_websocket = all_headers(headers, "upgrade").any(|v| has_token(v, "websocket"));
    if !upgrade_websocket && header(headers, "sec-websocket-key").is_none() {
        return Verdict::Http;
    }
    match check_upgrade(request, config) {
        Ok(verdict) => verdict,
        Err(refusal) => Verdict::Refuse(refusal),
    }
}

fn check_upgrade<'c>(
    request: &httparse::Request<'_, '_>,
    config: &'c Config,
) -> Result<Verdict<'c>, Refusal> {
    let headers: &[httparse::Header<'_>] = request.headers;
    if request.method != Some("GET") {
        return Err(Refusal::BadRequest("a WebSocket upgrade must use GET"));
    }
    if request.version != Some(1) {
        return Err(Refusal::BadRequest("a WebSocket upgrade needs HTTP/1.1"));
    }
    if header(headers, "host").is_none() {
        return Err(Refusal::BadRequest("missing Host"));
    }
    if !all_headers(headers, "upgrade").any(|v| has_token(v, "websocket")) {
        return Err(Refusal::BadRequest("Upgrade must name websocket"));
    }
    if !all_headers(headers, "connection").any(|v| has_token(v, "upgrade")) {
        return Err(Refusal::BadRequest("Connection must list Upgrade"));
    }
    match header(headers, "sec-websocket-version") {
        Some(v) if v.trim_ascii() == b"13" => {}
        _ => return Err(Refusal::VersionNotSupported),
    }
    if all_headers(headers, "sec-websocket-key").count() != 1 {
        return Err(Refusal::BadRequest(
            "exactly one Sec-WebSocket-Key is required",
        ));
    }
    let key = header(headers, "sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .unwrap_or_default();
    if !is_valid_key(key) {
        return Err(Refusal::BadRequest(
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    if !config.allowed_origins.is_empty() {
        let allowed = header(headers, "origin").is_some_and(|origin| {
            config
                .allowed_origins
                .iter()
                .any(|a| a.as_bytes() == origin.trim_ascii())
        });
        if !allowed {
            return Err(Refusal::Forbidden);
        }
    }
    Ok(Verdict::Upgrade {
        accept: accept_key(key),
        subprotocol: choose_subprotocol(headers, &config.subprotocols),
        deflate: crate::deflate::negotiate::negotiate(
            all_headers(headers, "sec-websocket-extensions"),
            config.compression,
        ),
    })
}

/// The first subprotocol the client offers that the server supports.
fn choose_subprotocol<'c>(
    headers: &[httparse::Header<'_>],
    supported: &'c [String],
) -> Option<&'c str> {
    if supported.is_empty() {
        return None;
    }
    all_headers(headers, "sec-websocket-protocol")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .find_map(|offer| {
            supported
                .iter()
                .find(|s| s.as_bytes() == offer)
                .map(String::as_str)
        })
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut hasher = Sha1::new();
    hasher.update(key);
    hasher.update(ACCEPT_GUID);
    let digest = hasher.finalize();
    let mut out = [0u8; 28];
    // A 20-byte digest always encodes to exactly 28 base64 bytes.
    let written = STANDARD.encode_slice(digest, &mut out);
    debug_assert_eq!(written, Ok(28));
    out
}

fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24 && STANDARD.decode_slice(key, &mut decoded) == Ok(16)
}

/// Writes the `101 Switching Protocols` response.
pub fn write_switching_protocols(out: &mut Vec<u8>, accept: &[u8; 28], subprotocol: Option<&str>) {
    write_switching_protocols_with(out, accept, subprotocol, None);
}

/// Writes the `101 Switching Protocols` response, with the permessage-deflate answer if
/// `deflate` says one was accepted.
pub fn write_switching_protocols_with(
    out: &mut Vec<u8>,
    accept: &[u8; 28],
    subprotocol: Option<&str>,
    deflate: Option<&crate::deflate::Agreement>,
) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept);
    if let Some(protocol) = subprotocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(agreement) = deflate {
        crate::deflate::negotiate::write_answer(out, agreement);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the response for a refused request; the connection is closed after it.
pub fn write_refusal(out: &mut Vec<u8>, refusal: Refusal) {
    let (status, reason) = refusal.status();
    let body: &str = match refusal {
        Refusal::BadRequest(why) => why,
        _ => reason,
    };
    let extra: &[(&str, &str)] = match refusal {
        Refusal::VersionNotSupported => &[("Sec-WebSocket-Version", "13")],
        _ => &[],
    };
    write_response(
        out,
        status,
        reason,
        "text/plain; charset=utf-8",
        extra,
        body.as_bytes(),
        false,
        false,
    );
}

fn header<'r>(headers: &[httparse::Header<'r>], name: &str) -> Option<&'r [u8]> {
    all_headers(headers, name).next()
}

fn all_headers<'a, 'r>(
    headers: &'a [httparse::Header<'r>],
    name: &'a str,
) -> impl Iterator<Item = &'r [u8]> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict_for(head: &str, config: &Config) -> Result<Verdict<'static>, Refusal> {
        let config: &'static Config = Box::leak(Box::new(config.clone()));
        let head: &'static [u8] = Box::leak(head.as_bytes().to_vec().into_boxed_slice());
        let headers: &'static mut [httparse::Header<'static>] =
            Box::leak(vec![httparse::EMPTY_HEADER; 64].into_boxed_slice());
        let (_, request) = parse_head(head, headers, 8192)?.expect("complete head");
        Ok(evaluate(&request, config))
    }

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn rfc_accept_vector() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn good_request_upgrades_and_picks_the_first_supported_offer() {
        let config = Config {
            subprotocols: vec!["superchat".into(), "chat".into()],
            ..Config::default()
        };
        match verdict_for(GOOD, &config).unwrap() {
            Verdict::Upgrade {
                accept,
                subprotocol,
                ..
            } => {
                assert_eq!(&accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
                assert_eq!(subprotocol, Some("chat"));
            }
            other => panic!("{other:?}"),
        }
        match verdict_for(GOOD, &Config::default()).unwrap() {
            Verdict::Upgrade { subprotocol, .. } => assert_eq!(subprotocol, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_failed_check_has_its_status() {
        let cases: [(&str, &str, u16); 8] = [
            ("GET /chat", "POST /chat", 400),
            ("HTTP/1.1\r\nHost", "HTTP/1.0\r\nHost", 400),
            ("Host: server.example.com\r\n", "", 400),
            (
                "Connection: keep-alive, Upgrade",
                "Connection: keep-alive",
                400,
            ),
            ("Upgrade: websocket\r\n", "Upgrade: web-socket\r\n", 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ", 400),
            ("Version: 13", "Version: 8", 426),
            ("Sec-WebSocket-Version: 13\r\n", "", 426),
        ];
        for (from, to, status) in cases {
            let head = GOOD.replacen(from, to, 1);
            match verdict_for(&head, &Config::default()) {
                Ok(Verdict::Refuse(r)) => assert_eq!(r.status().0, status, "{from} -> {to}"),
                other => panic!("{from} -> {to}: {other:?}"),
            }
        }
    }

    #[test]
    fn origin_policy_refuses_with_403() {
        let config = Config {
            allowed_origins: vec!["http://good.example".into()],
            ..Config::default()
        };
        assert_eq!(
            verdict_for(GOOD, &config).unwrap(),
            Verdict::Refuse(Refusal::Forbidden)
        );
        let allowed = GOOD.replace("http://example.com", "http://good.example");
        assert!(matches!(
            verdict_for(&allowed, &config).unwrap(),
            Verdict::Upgrade { .. }
        ));
    }

    #[test]
    fn plain_get_is_http() {
        let head = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            verdict_for(head, &Config::default()).unwrap(),
            Verdict::Http
        );
    }

    #[test]
    fn oversized_heads_are_431() {
        let mut headers = vec![httparse::EMPTY_HEADER; 4];
        let many = "GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n";
        assert_eq!(
            parse_head(many.as_bytes(), &mut headers, 8192).err(),
            Some(Refusal::HeadTooLarge)
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(9000));
        let mut headers = vec![httparse::EMPTY_HEADER; 4];
        assert_eq!(
            parse_head(long.as_bytes(), &mut headers, 8192).err(),
            Some(Refusal::HeadTooLarge)
        );
    }

    #[test]
    fn keep_alive_rules() {
        let mut headers = vec![httparse::EMPTY_HEADER; 8];
        let (_, r) = parse_head(b"GET / HTTP/1.0\r\n\r\n", &mut headers, 100)
            .unwrap()
            .unwrap();
        let req = Request {
            method: "GET",
            path: "/",
            minor_version: r.version.unwrap_or(0),
            headers: r.headers,
            subprotocol: None,
        };
        assert!(req.wants_close());
    }
}
