//! permessage-deflate negotiation (RFC 7692 §5, §7.1): the client's offers in, our answer out.
//!
//! Owns parsing `Sec-WebSocket-Extensions` values (several headers, several comma-separated
//! offers, parameters with or without a value, quoted values), the choice of the first offer
//! this server can honour, and the bytes of the answer. Pure functions: no state, no I/O, no
//! compression. An offer with an unknown, repeated or invalid parameter is declined and the
//! next one considered; nothing here ever refuses the upgrade.

/// How the server uses permessage-deflate (`Config::compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Never negotiated: offers are ignored.
    #[default]
    Off,
    /// Negotiated with no context takeover in both directions: every message is compressed
    /// and inflated on its own, by one compressor and one decompressor per reactor, so a
    /// connection keeps no compression state between messages.
    NoContextTakeover,
    /// Negotiated with context takeover wherever the client allows it (RFC 7692 §7.1.1):
    /// each direction's LZ77 window of `window_bits` (9..=15) carries over from message to
    /// message, which compresses repetitive traffic far better, at the cost of keeping that
    /// window per connection (2^bits bytes of what it receives, at most 4 KiB of what it
    /// sends). No compressor or decompressor is kept per connection: a bounded set is parked
    /// per reactor (`Config::compression_live`) and a connection without one resumes from
    /// its window (see `deflate::context`).
    ContextTakeover {
        /// The largest window either side may use; a smaller one the client asks for is
        /// honoured.
        window_bits: u8,
    },
}

/// The parameters in force on a connection that negotiated permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// LZ77 window of what we send, in bits (9..=15): what the client allowed, at most 15.
    pub server_window_bits: u8,
    /// We answered `server_max_window_bits` (the client asked for it: the answer must say it).
    pub answer_server_window_bits: bool,
    /// What we send carries its window over from message to message.
    pub server_takeover: bool,
    /// What the client sends carries its window over: we keep that window.
    pub client_takeover: bool,
    /// The window of what the client sends, in bits: what we answered as
    /// `client_max_window_bits` (if `Some`), else 15.
    pub client_window_bits: Option<u8>,
}

impl Agreement {
    /// The window we keep for what the client sends, in bits.
    pub fn client_bits(&self) -> u8 {
        // A zlib client asked for 8 uses 9; keeping 9 costs 256 bytes and covers both.
        self.client_window_bits
            .unwrap_or(MAX_WINDOW_BITS)
            .max(MIN_PRODUCIBLE_WINDOW_BITS)
    }
}

/// The largest LZ77 window, in bits.
pub const MAX_WINDOW_BITS: u8 = 15;
/// zlib's raw deflate cannot produce a window below 9 bits (it refuses 8).
pub const MIN_PRODUCIBLE_WINDOW_BITS: u8 = 9;

/// One offer's parameters, as parsed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    pub client_max_window_bits: Option<Option<u8>>,
}

/// Chooses the first offer among `values` (every `Sec-WebSocket-Extensions` header value, in
/// order) that `mode` can serve. `None`: answer without the extension.
pub fn negotiate<'v>(
    values: impl IntoIterator<Item = &'v [u8]>,
    mode: Compression,
) -> Option<Agreement> {
    if mode == Compression::Off {
        return None;
    }
    values
        .into_iter()
        .flat_map(|value| split_outside_quotes(value, b','))
        .filter_map(parse_offer)
        .find_map(|offer| serve(&offer, mode))
}

/// The answer to an offer, if this server can honour it.
fn serve(offer: &Offer, mode: Compression) -> Option<Agreement> {
    match mode {
        Compression::Off => None,
        Compression::NoContextTakeover => {
            // We may always add both no_context_takeover parameters to the answer (RFC 7692
            // §7.1.1.1, §7.1.1.2); the client then resets its context per message too. The
            // client's window does not matter to us: our decompressor has the largest one.
            let bits = offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
            if bits < MIN_PRODUCIBLE_WINDOW_BITS {
                return None; // we could not keep our window that small: decline
            }
            Some(Agreement {
                server_window_bits: bits,
                answer_server_window_bits: offer.server_max_window_bits.is_some(),
                server_takeover: false,
                client_takeover: false,
                client_window_bits: None,
            })
        }
        Compression::ContextTakeover { window_bits } => {
            let limit = window_bits.clamp(MIN_PRODUCIBLE_WINDOW_BITS, MAX_WINDOW_BITS);
            // Our window: at most what the client allows (a smaller one than it allows is
            // always fine, its decompressor's window covers it), and at most our limit.
            let allowed = offer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
            if allowed < MIN_PRODUCIBLE_WINDOW_BITS {
                return None;
            }
            // The client's window we may bound only if it offered client_max_window_bits
            // (§7.1.2.2); if it did not and our limit is below 15, its window would be 32 KiB:
            // we ask it not to take context over instead (§7.1.1.2), so that what we keep per
            // connection stays within the limit.
            let client_window_bits = offer
                .client_max_window_bits
                .map(|value| value.unwrap_or(MAX_WINDOW_BITS).min(limit));
            let client_takeover = !offer.client_no_context_takeover
                && (client_window_bits.is_some() || limit == MAX_WINDOW_BITS);
            Some(Agreement {
                server_window_bits: allowed.min(limit),
                answer_server_window_bits: offer.server_max_window_bits.is_some(),
                server_takeover: !offer.server_no_context_takeover,
                client_takeover,
                client_window_bits,
            })
        }
    }
}

/// Appends the `Sec-WebSocket-Extensions` header line (with its CRLF) for `agreement`.
pub fn write_answer(out: &mut Vec<u8>, agreement: &Agreement) {
    out.extend_from_slice(b"Sec-WebSocket-Extensions: permessage-deflate");
    if !agreement.server_takeover {
        out.extend_from_slice(b"; server_no_context_takeover");
    }
    if !agreement.client_takeover {
        out.extend_from_slice(b"; client_no_context_takeover");
    }
    if agreement.answer_server_window_bits {
        out.extend_from_slice(b"; server_max_window_bits=");
        write_bits(out, agreement.server_window_bits);
    }
    if let Some(bits) = agreement
        .client_window_bits
        .filter(|_| agreement.client_takeover)
    {
        out.extend_from_slice(b"; client_max_window_bits=");
        write_bits(out, bits);
    }
    out.extend_from_slice(b"\r\n");
}

fn write_bits(out: &mut Vec<u8>, bits: u8) {
    if bits >= 10 {
        out.push(b'1');
    }
    out.push(b'0' + bits % 10);
}

/// Parses one extension offer (`name; param[=value]; ...`). `None` for another extension
/// and for a permessage-deflate offer this server must decline (unknown, repeated or invalid
/// parameter).
pub(crate) fn parse_offer(offer: &[u8]) -> Option<Offer> {
    let mut items = split_outside_quotes(offer, b';');
    let name = items.next()?;
    if !name.eq_ignore_ascii_case(b"permessage-deflate") {
        return None;
    }
    let mut parsed = Offer::default();
    let mut seen = 0u8;
    for item in items {
        let (key, value) = match item.iter().position(|&b| b == b'=') {
            Some(at) => (item[..at].trim_ascii(), Some(unquote(&item[at + 1..])?)),
            None => (item, None),
        };
        let bit = match key {
            b"server_no_context_takeover" if value.is_none() => {
                parsed.server_no_context_takeover = true;
                1
            }
            b"client_no_context_takeover" if value.is_none() => {
                parsed.client_no_context_takeover = true;
                2
            }
            b"server_max_window_bits" => {
                parsed.server_max_window_bits = Some(window_bits(value?)?);
                4
            }
            b"client_max_window_bits" => {
                parsed.client_max_window_bits = Some(match value {
                    Some(v) => Some(window_bits(v)?),
                    None => None,
                });
                8
            }
            _ => return None,
        };
        if seen & bit != 0 {
            return None; // a parameter given twice
        }
        seen |= bit;
    }
    Some(parsed)
}

/// A window size value: `8` to `15`, no sign, no leading zero (RFC 7692 §7.1.2.1).
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// A parameter value, trimmed, with its quotes (if any) removed. `None` for an unterminated
/// or escaped quoted string (a window size never needs either) or an empty value.
fn unquote(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let inner = match value {
        [b'"', inner @ .., b'"'] => inner,
        [b'"', ..] => return None,
        _ => value,
    };
    if inner.is_empty() || inner.iter().any(|&b| b == b'"' || b == b'\\') {
        return None;
    }
    Some(inner)
}

/// Splits `s` at `sep` outside double quotes, trimming each piece and skipping empty ones
/// (lists may have empty elements, RFC 7230 §7).
fn split_outside_quotes(s: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = s;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let mut end = rest.len();
        for (i, &b) in rest.iter().enumerate() {
            if b == b'"' {
                quoted = !quoted;
            } else if b == sep && !quoted {
                end = i;
                break;
            }
        }
        let piece = rest[..end].trim_ascii();
        rest = rest.get(end + 1..).unwrap_or_default();
        if !piece.is_empty() {
            return Some(piece);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ON: Compression = Compression::NoContextTakeover;

    fn answer(values: &[&str]) -> Option<String> {
        let agreement = negotiate(values.iter().map(|v| v.as_bytes()), ON)?;
        let mut out = Vec::new();
        write_answer(&mut out, &agreement);
        Some(String::from_utf8(out).unwrap())
    }

    const PLAIN: &str = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n";

    #[test]
    fn a_plain_offer_is_accepted_without_context_takeover() {
        assert_eq!(answer(&["permessage-deflate"]).as_deref(), Some(PLAIN));
        // What browsers send.
        let chrome = "permessage-deflate; client_max_window_bits";
        assert_eq!(answer(&[chrome]).as_deref(), Some(PLAIN));
    }

    #[test]
    fn off_never_negotiates() {
        let offers = [b"permessage-deflate".as_slice()];
        assert_eq!(negotiate(offers, Compression::Off), None);
    }

    #[test]
    fn server_window_is_answered_when_asked() {
        let a = negotiate(
            [b"permessage-deflate; server_max_window_bits=10".as_slice()],
            ON,
        );
        assert_eq!(
            a,
            Some(Agreement {
                server_window_bits: 10,
                answer_server_window_bits: true,
                server_takeover: false,
                client_takeover: false,
                client_window_bits: None,
            })
        );
        let got = answer(&["permessage-deflate; server_max_window_bits=\"9\""]).unwrap();
        assert!(got.ends_with("; server_max_window_bits=9\r\n"), "{got}");
        let got = answer(&["permessage-deflate;server_max_window_bits=15"]).unwrap();
        assert!(got.ends_with("; server_max_window_bits=15\r\n"), "{got}");
    }

    #[test]
    fn window_8_is_declined_and_the_next_offer_taken() {
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=8"]),
            None
        );
        let got = answer(&[
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=12",
        ])
        .unwrap();
        assert!(got.ends_with("server_max_window_bits=12\r\n"), "{got}");
        // A client window of 8 is fine: we inflate with the largest window.
        let got = answer(&["permessage-deflate; client_max_window_bits=8"]);
        assert_eq!(got.as_deref(), Some(PLAIN));
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_considered() {
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; foo=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; server_max_window_bits=",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(answer(&[bad]), None, "{bad}");
            let two = format!("{bad}, permessage-deflate");
            assert_eq!(answer(&[&two]).as_deref(), Some(PLAIN), "{two}");
            // The next offer may also be in another header.
            assert_eq!(answer(&[bad, "permessage-deflate"]).as_deref(), Some(PLAIN));
        }
    }

    #[test]
    fn an_unterminated_quote_takes_the_rest_of_its_header() {
        let bad = "permessage-deflate; server_max_window_bits=\"10, permessage-deflate";
        assert_eq!(answer(&[bad]), None);
        assert_eq!(answer(&[bad, "permessage-deflate"]).as_deref(), Some(PLAIN));
    }

    #[test]
    fn parameters_parse() {
        let offer = parse_offer(
            b"permessage-deflate; client_no_context_takeover ; server_no_context_takeover; \
              client_max_window_bits=\"12\"; server_max_window_bits=11",
        )
        .unwrap();
        assert_eq!(
            offer,
            Offer {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: Some(11),
                client_max_window_bits: Some(Some(12)),
            }
        );
        let offer = parse_offer(b"PerMessage-Deflate; client_max_window_bits").unwrap();
        assert_eq!(offer.client_max_window_bits, Some(None));
    }

    #[test]
    fn malformed_lists_do_not_panic() {
        for junk in [
            "",
            ",",
            ";",
            ",,;;",
            "\"",
            "permessage-deflate;",
            "permessage-deflate; =",
            "permessage-deflate; =3",
            "permessage-deflate, \"a,b\"",
            "\u{7f}\u{1}",
        ] {
            let _ = answer(&[junk]);
        }
        assert_eq!(answer(&["permessage-deflate;"]).as_deref(), Some(PLAIN));
        assert_eq!(answer(&[", permessage-deflate ,"]).as_deref(), Some(PLAIN));
    }

    #[test]
    fn window_bits_values() {
        for (v, bits) in [("8", 8), ("9", 9), ("10", 10), ("15", 15)] {
            assert_eq!(window_bits(v.as_bytes()), Some(bits));
        }
        for v in ["", "7", "16", "08", "1", "100", " 9"] {
            assert_eq!(window_bits(v.as_bytes()), None, "{v}");
        }
    }

    fn takeover_answer(values: &[&str], window_bits: u8) -> Option<String> {
        let mode = Compression::ContextTakeover { window_bits };
        let agreement = negotiate(values.iter().map(|v| v.as_bytes()), mode)?;
        let mut out = Vec::new();
        write_answer(&mut out, &agreement);
        let out = String::from_utf8(out).unwrap();
        Some(
            out.trim_end()
                .trim_start_matches("Sec-WebSocket-Extensions: ")
                .to_owned(),
        )
    }

    #[test]
    fn context_takeover_is_taken_where_the_client_allows_it() {
        let t = |v: &str, bits| takeover_answer(&[v], bits);
        // Both ways, window 15: nothing to say.
        assert_eq!(
            t("permessage-deflate", 15).as_deref(),
            Some("permessage-deflate")
        );
        // Browsers offer client_max_window_bits: we answer the window we keep.
        assert_eq!(
            t("permessage-deflate; client_max_window_bits", 15).as_deref(),
            Some("permessage-deflate; client_max_window_bits=15")
        );
        assert_eq!(
            t("permessage-deflate; client_max_window_bits", 10).as_deref(),
            Some("permessage-deflate; client_max_window_bits=10")
        );
        assert_eq!(
            t("permessage-deflate; client_max_window_bits=9", 12).as_deref(),
            Some("permessage-deflate; client_max_window_bits=9")
        );
        // A client that cannot be held to a small window is asked not to take over.
        assert_eq!(
            t("permessage-deflate", 10).as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
        // Its demands are honoured, each direction on its own.
        assert_eq!(
            t("permessage-deflate; server_no_context_takeover", 15).as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        assert_eq!(
            t(
                "permessage-deflate; client_no_context_takeover; client_max_window_bits",
                15
            )
            .as_deref(),
            Some("permessage-deflate; client_no_context_takeover")
        );
        // Our window: at most what it allows and at most our limit, answered when asked.
        assert_eq!(
            t("permessage-deflate; server_max_window_bits=12", 10).as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10")
        );
        assert_eq!(t("permessage-deflate; server_max_window_bits=8", 15), None);
        let mode = Compression::ContextTakeover { window_bits: 11 };
        let a = negotiate(
            [b"permessage-deflate; client_max_window_bits=8".as_slice()],
            mode,
        )
        .unwrap();
        assert_eq!((a.server_window_bits, a.client_bits()), (11, 9));
        assert!(a.server_takeover && a.client_takeover);
    }
}
