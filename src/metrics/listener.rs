//! The metrics listener: `GET /metrics` on an address of its own (`Config::metrics_listen`),
//! served by one small thread with a blocking std `TcpListener`.
//!
//! Owns that thread and its defences against slow or hostile scrapers: one client at a time,
//! a request head of at most [`MAX_HEAD`] bytes that must arrive within [`REQUEST_TIME`], a
//! write timeout, and `Connection: close` after every answer. It only reads the counter
//! blocks; it never touches a reactor.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Blocks, CONTENT_TYPE};

/// Longest request head read; a longer one gets `431`.
const MAX_HEAD: usize = 4096;
/// Time a client has to send its whole request head.
const REQUEST_TIME: Duration = Duration::from_secs(2);
/// Time a client has to take the answer.
const WRITE_TIME: Duration = Duration::from_secs(2);
/// The path served.
const PATH: &str = "/metrics";

/// The running listener; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct MetricsListener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsListener {
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Binds `addr` and serves scrapes of `blocks` from a new thread.
pub(crate) fn spawn_listener(addr: SocketAddr, blocks: Blocks) -> io::Result<MetricsListener> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("wsreactor-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else {
                    // Out of descriptors or similar: do not spin on it.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                if let Err(e) = serve(stream, &blocks) {
                    log::debug!("metrics listener: client dropped: {e}");
                }
            }
        })?;
    log::info!("metrics served at http://{addr}{PATH}");
    Ok(MetricsListener {
        addr,
        stop,
        thread: Some(thread),
    })
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the blocking `accept`; the thread then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, blocks: &Blocks) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIME))?;
    let deadline = Instant::now() + REQUEST_TIME;
    let mut head = [0u8; MAX_HEAD];
    let mut len = 0;
    let complete = loop {
        if let Some(end) = find_end(&head[..len]) {
            break Some(end);
        }
        if len == head.len() {
            break None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return answer(&mut stream, 408, "text/plain", b"Request Timeout\n", false);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut head[len..]) {
            Ok(0) => return Ok(()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return answer(&mut stream, 408, "text/plain", b"Request Timeout\n", false);
            }
            Err(e) => return Err(e),
        }
    };
    let Some(end) = complete else {
        return answer(
            &mut stream,
            431,
            "text/plain",
            b"Request Header Fields Too Large\n",
            false,
        );
    };
    let line = head[..end].split(|&b| b == b'\r').next().unwrap_or(&[]);
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or(&[]), parts.next().unwrap_or(&[]));
    let path = target.split(|&b| b == b'?').next().unwrap_or(&[]);
    let head_only = method == b"HEAD";
    if !(method == b"GET" || head_only) {
        return answer(
            &mut stream,
            405,
            "text/plain",
            b"Method Not Allowed\n",
            false,
        );
    }
    if path != PATH.as_bytes() {
        return answer(&mut stream, 404, "text/plain", b"Not Found\n", head_only);
    }
    let mut body = Vec::with_capacity(4096);
    blocks.render(&mut body);
    answer(&mut stream, 200, CONTENT_TYPE, &body, head_only)
}

fn find_end(head: &[u8]) -> Option<usize> {
    head.windows(4).position(|w| w == b"\r\n\r\n")
}

fn answer(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 128);
    let reason = crate::http::reason_phrase(status);
    crate::http::write_response(
        &mut out,
        status,
        reason,
        content_type,
        &[],
        body,
        head_only,
        false,
    );
    stream.write_all(&out)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Drain what the client still sends (briefly), so closing does not reset the answer.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    Ok(())
}
