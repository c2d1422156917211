//! The HTTP phase: request heads before the upgrade, plain HTTP answers, refusals.
//!
//! Owns buffering a request head that arrives in pieces, pipelined plain requests on a
//! keep-alive connection, the upgrade (101) with `Handler::accept` and `on_open`, and what a
//! refused or plain request is answered. Parsing and the RFC 6455 §4.2 checks are in
//! [`crate::handshake`]; frames that follow the head in the same read go to the reader.

use super::*;

impl Connection {
    pub(super) fn handshake_input<H: Handler>(&mut self, input: &mut [u8], env: &mut Env<'_, H>) {
        let buffered = self.busy.as_ref().is_some_and(|b| !b.head.is_empty());
        if !buffered {
            // Common case: the whole head arrived in one read; parse it where it lies.
            let partial = self.consume_heads(input, env);
            if partial > 0 {
                let start = input.len() - partial;
                self.busy_mut(env.pool)
                    .head
                    .extend_from_slice(&input[start..]);
            }
            return;
        }
        let busy = self.busy_mut(env.pool);
        busy.head.extend_from_slice(input);
        // A head ends with an empty line: only a new line feed can complete it (and a trickled
        // head is then not re-parsed on every byte).
        if !input.contains(&b'\n') && busy.head.len() < env.config.max_request_head {
            return;
        }
        let mut head = std::mem::take(&mut busy.head);
        let partial = self.consume_heads(&mut head, env);
        if self.state == State::Handshake {
            head.drain(..head.len() - partial);
            if let Some(busy) = self.busy.as_mut() {
                busy.head = head;
            }
        }
    }

    /// Answers every complete request head at the start of `buf` (pipelined plain HTTP requests
    /// come one after another), in a loop, never recursively. Bytes after an upgrade go to the
    /// frame decoder. Returns the length of a trailing partial head still waiting for bytes.
    pub(super) fn consume_heads<H: Handler>(
        &mut self,
        buf: &mut [u8],
        env: &mut Env<'_, H>,
    ) -> usize {
        let mut at = 0;
        while at < buf.len() && self.state == State::Handshake {
            match self.try_head(&buf[at..], env) {
                Some(used) => at += used,
                None => break,
            }
        }
        match self.state {
            State::Handshake => buf.len() - at,
            State::Open => {
                self.frame_input(&mut buf[at..], env);
                0
            }
            State::Closing | State::Closed => 0,
        }
    }

    /// Parses and answers one request head if `buf` holds a complete one; returns its length.
    pub(super) fn try_head<H: Handler>(
        &mut self,
        buf: &[u8],
        env: &mut Env<'_, H>,
    ) -> Option<usize> {
        let mut headers = [httparse::EMPTY_HEADER; HEADER_ARRAY];
        let limit = env.config.max_headers.min(HEADER_ARRAY);
        let (used, parsed) =
            match handshake::parse_head(buf, &mut headers[..limit], env.config.max_request_head) {
                Ok(Some(done)) => done,
                Ok(None) => return None,
                Err(refusal) => {
                    self.refuse(refusal, env);
                    return None;
                }
            };
        let verdict = handshake::evaluate(&parsed, env.config);
        let request = Request {
            method: parsed.method.unwrap_or(""),
            path: parsed.path.unwrap_or(""),
            minor_version: parsed.version.unwrap_or(0),
            headers: parsed.headers,
            subprotocol: match verdict {
                Verdict::Upgrade { subprotocol, .. } => subprotocol,
                _ => None,
            },
        };
        match verdict {
            Verdict::Refuse(refusal) => self.refuse(refusal, env),
            Verdict::Http => self.answer_http(&request, env),
            Verdict::Upgrade {
                accept,
                subprotocol,
                deflate,
            } => {
                let accepted = guard(env, |handler| handler.accept(&request)).unwrap_or(false);
                if !accepted {
                    self.refuse(Refusal::Forbidden, env);
                    return Some(used);
                }
                handshake::write_switching_protocols_with(
                    self.busy_mut(env.pool).out.appender(),
                    &accept,
                    subprotocol,
                    deflate.as_ref(),
                );
                if let Some(agreement) = deflate {
                    let bits = u16::from(agreement.server_window_bits.clamp(9, 15) - 8);
                    self.flags |= bits << DEFLATE_SHIFT;
                    self.take_context_over(&agreement, env.pool);
                }
                self.state = State::Open;
                self.flags |= OPENED;
                // The deadline was set at accept (or the last plain answer) to that moment
                // plus the handshake timeout.
                let since = self
                    .deadline
                    .saturating_sub(ms(env.config.handshake_timeout));
                env.stats
                    .handshake
                    .observe_ms(env.now.saturating_sub(since));
                self.deadline = env.config.idle_timeout.map_or(0, |t| env.now + ms(t));
                env.stats.opened.bump();
                self.call(env, |handler, conn| handler.on_open(conn, &request));
            }
        }
        Some(used)
    }

    pub(super) fn answer_http<H: Handler>(&mut self, request: &Request<'_>, env: &mut Env<'_, H>) {
        let response = match env.scrape.answer(request) {
            Some(body) => {
                env.stats.scrapes.bump();
                http::Response::new(200, crate::metrics::CONTENT_TYPE, body)
            }
            None => {
                env.stats.http_requests.bump();
                guard(env, |handler| handler.on_http(request))
                    .unwrap_or_else(|| http::Response::plain(500))
            }
        };
        // A request body is not read by this server: close after answering one that has it.
        let has_body = request.header("transfer-encoding").is_some()
            || request
                .header("content-length")
                .is_some_and(|v| v.trim_ascii() != b"0");
        let keep_alive = !request.wants_close() && !has_body;
        http::write_handler_response(
            self.busy_mut(env.pool).out.appender(),
            &response,
            request.method == "HEAD",
            keep_alive,
        );
        if keep_alive {
            self.deadline = env.now + ms(env.config.handshake_timeout);
        } else {
            self.close_after_output(env);
        }
    }

    pub(super) fn refuse<H: Handler>(&mut self, refusal: Refusal, env: &mut Env<'_, H>) {
        handshake::write_refusal(self.busy_mut(env.pool).out.appender(), refusal);
        let (status, _) = refusal.status();
        env.stats.refuse(RefusedBy::from_status(status));
        match refusal {
            Refusal::BadRequest(why) => log::debug!("upgrade refused: {status}: {why}"),
            _ => log::debug!("upgrade refused: {status}"),
        }
        self.close_after_output(env);
    }

    pub(super) fn close_after_output<H: Handler>(&mut self, env: &mut Env<'_, H>) {
        self.state = State::Closed;
        self.deadline = env.now + ms(env.config.close_timeout);
        if let Some(busy) = self.busy.as_mut() {
            busy.head.clear();
        }
    }
}
