//! Measures what idle compressed connections cost a server: opens N connections to it (each
//! offering permessage-deflate as browsers do), sends one compressed JSON-like text message of
//! SIZE bytes on each (plain if the server declined) and reads its echo, so that whatever state a connection keeps between
//! messages exists, then prints the server's RSS before and after, per connection.
//!
//!     cargo run --release --example deflate_idle -- ADDR SERVER_PID [N] [SIZE]
//!
//! Not an echo benchmark: the echoes are read and not inflated. Loopback only; it ends by
//! itself (the connections close when it exits).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use flate2::{Compress, Compression, FlushCompress};

fn rss_kib(pid: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// A JSON-like message of about `size` bytes.
fn message(size: usize) -> Vec<u8> {
    let mut s = String::from("{\"rows\":[");
    let mut i = 0u32;
    while s.len() < size {
        s.push_str(&format!(
            "{{\"id\":{},\"name\":\"item-{}\",\"price\":{}.{:02}}},",
            i * 7 % 1009,
            i % 37,
            i * 13 % 100,
            i % 100
        ));
        i += 1;
    }
    s.push_str("]}");
    s.into_bytes()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new_with_window_bits(Compression::new(6), false, 15);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("deflate");
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "room for the flush");
    out.truncate(out.len() - 4);
    out
}

fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

/// Reads one whole server frame; returns its first byte.
fn read_frame(s: &mut TcpStream) -> u8 {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).expect("a frame");
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            s.read_exact(&mut n).expect("length");
            u16::from_be_bytes(n) as u64
        }
        127 => {
            let mut n = [0u8; 8];
            s.read_exact(&mut n).expect("length");
            u64::from_be_bytes(n)
        }
        n => n as u64,
    };
    std::io::copy(&mut s.take(len), &mut std::io::sink()).expect("payload");
    head[0]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).expect("ADDR").clone();
    let pid = args.get(2).expect("SERVER_PID").clone();
    let n: usize = args.get(3).map_or(10_000, |v| v.parse().expect("N"));
    let size: usize = args.get(4).map_or(1024, |v| v.parse().expect("SIZE"));
    let payload = message(size);
    let compressed = frame(0xc1, &deflate(&payload));
    let plain = frame(0x81, &payload);
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    );
    let before = rss_kib(&pid);
    let mut conns = Vec::with_capacity(n);
    let mut answer = String::new();
    for i in 0..n {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("upgrade");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).expect("the 101");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let negotiated = head.contains("permessage-deflate");
        if i == 0 {
            answer = head
                .lines()
                .find(|l| l.starts_with("Sec-WebSocket-Extensions"))
                .unwrap_or("no extension")
                .to_string();
        }
        // Compressed where it was negotiated, else plain.
        s.write_all(if negotiated { &compressed } else { &plain })
            .expect("message");
        let first = read_frame(&mut s);
        assert_eq!(first & 0x0f, 1, "a text echo");
        conns.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(&pid);
    println!("{answer}");
    println!(
        "connections {n}, message {} B: RSS {before} KiB before, {after} KiB after, {} B per connection",
        payload.len(),
        (after.saturating_sub(before)) * 1024 / n as u64
    );
}
