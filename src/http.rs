//! Plain HTTP/1.1 responses on the WebSocket port: the response type handlers return for
//! requests that are not upgrades, and the one function that writes any response head.
//!
//! Owns the response wire format (status line, `Content-Length`, `Connection`). It does not
//! decide what to serve (the handler does) and never touches a socket.

use std::borrow::Cow;
use std::io::Write as _;

/// A response to an ordinary HTTP request, built by the handler.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` value.
    pub content_type: Cow<'static, str>,
    /// Further headers (`Content-Length` and `Connection` are written by the server).
    pub headers: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    /// The body (not sent for `HEAD`, though its length is announced).
    pub body: Cow<'static, [u8]>,
}

impl Response {
    /// A response with this status, content type and body.
    pub fn new(
        status: u16,
        content_type: impl Into<Cow<'static, str>>,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Self {
        Response {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A short plain-text response whose body is the reason phrase.
    pub fn plain(status: u16) -> Self {
        let body = reason_phrase(status).as_bytes();
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    /// Adds a header.
    pub fn with_header(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The standard reason phrase for the statuses this server sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a whole response into `out`. With `head_only` (a `HEAD` request) the body is left out
/// but its length still announced; `keep_alive` chooses the `Connection` header.
#[allow(clippy::too_many_arguments)]
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Writes a handler's [`Response`].
pub(crate) fn write_handler_response(
    out: &mut Vec<u8>,
    response: &Response,
    head_only: bool,
    keep_alive: bool,
) {
    let headers: Vec<(&str, &str)> = response
        .headers
        .iter()
        .map(|(n, v)| (n.as_ref(), v.as_ref()))
        .collect();
    write_response(
        out,
        response.status,
        reason_phrase(response.status),
        &response.content_type,
        &headers,
        &response.body,
        head_only,
        keep_alive,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_only_announces_length_without_body() {
        let mut out = Vec::new();
        write_response(&mut out, 200, "OK", "text/html", &[], b"hello", true, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.contains("Connection: keep-alive\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
