//! Where traffic goes and in which framing: the loopback-only [`Target`] parsed from a URL,
//! and the [`Mode`] (WebSocket or raw TCP). Must not open sockets.

use std::net::{SocketAddr, ToSocketAddrs};

/// WebSocket frames or plain bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// RFC 6455 over an HTTP upgrade.
    WebSocket,
    /// Plain TCP: messages are runs of bytes, echoed in order.
    Raw,
}

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved loopback address.
    pub addr: SocketAddr,
    /// Value of the `Host` header.
    pub host: String,
    /// Request path.
    pub path: String,
    /// `wss://`: TLS over the TCP connection.
    pub tls: bool,
}

impl Target {
    /// Parses `ws://host:port/path` or `wss://…` (or `tcp://host:port`, or a bare `host:port`). Only loopback
    /// addresses are accepted: this tool never sends load anywhere else.
    pub fn parse(url: &str) -> Result<Target, String> {
        let tls = url.starts_with("wss://");
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("wss://"))
            .or_else(|| url.strip_prefix("tcp://"))
            .unwrap_or(url);
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {hostport:?}: {e}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| format!("no IPv4 address for {hostport:?}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address; load is only sent to 127.0.0.0/8"
            ));
        }
        Ok(Target {
            addr,
            host: hostport.to_string(),
            path: path.to_string(),
            tls,
        })
    }
}
