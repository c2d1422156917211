//! The handshake parser and checks on arbitrary bytes: `parse_head`, then `evaluate` on any
//! complete head, with limits taken from the input too. Must never panic, and every refusal
//! must map to a status the server knows how to send.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsreactor::config::HEADER_ARRAY;
use wsreactor::handshake::{self, Verdict};
use wsreactor::Config;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, bytes)) = data.split_first() else {
        return;
    };
    let max_headers = 1 + (knobs as usize % HEADER_ARRAY);
    let max_head = 64 + (knobs as usize) * 32;
    let config = Config {
        max_headers,
        max_request_head: max_head,
        subprotocols: vec!["chat".into(), "superchat".into()],
        allowed_origins: if knobs & 1 == 0 {
            Vec::new()
        } else {
            vec!["http://ok".into()]
        },
        ..Config::default()
    };
    let mut headers = [httparse::EMPTY_HEADER; HEADER_ARRAY];
    match handshake::parse_head(bytes, &mut headers[..max_headers], max_head) {
        Ok(Some((len, request))) => {
            assert!(len <= bytes.len() && len <= max_head);
            match handshake::evaluate(&request, &config) {
                Verdict::Refuse(refusal) => {
                    let (status, _) = refusal.status();
                    assert!(matches!(status, 400 | 403 | 426 | 431));
                }
                Verdict::Upgrade {
                    accept,
                    subprotocol,
                    ..
                } => {
                    assert!(accept.iter().all(u8::is_ascii));
                    if let Some(p) = subprotocol {
                        assert!(config.subprotocols.iter().any(|s| s == p));
                    }
                }
                Verdict::Http => {}
            }
        }
        Ok(None) => assert!(bytes.len() < max_head),
        Err(refusal) => assert!(matches!(refusal.status().0, 400 | 431)),
    }
});
