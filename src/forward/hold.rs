//! Holding a 2xx stream until its first content.
//!
//! A provider under load often answers `200`, sends its setup events
//! (`message_start`, `ping`; a role-only chat chunk; `response.created`) and
//! then an error event, nothing at all, or the end of the stream. Until the
//! first content-bearing event nothing has reached the client, so the
//! request can still go to the next provider with the same bytes. The
//! status, headers and setup events are held, bounded in bytes and by
//! `timeouts.first_content_ms`; at the first content everything held is
//! written at once and the stream flows as before.
//!
//! [`Holder`] is the policy, fed chunk by chunk and unit-tested; [`hold`]
//! is the I/O around it.

use super::decode::Decode;
use super::intake::client_gone;
use crate::config::Api;
use crate::content::{self, ErrorVerdict};
use crate::outcome::{self, ErrorClass};
use crate::sse::{self, kind::EventKind, SseFramer};
use bytes::{Bytes, BytesMut};
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_error::Error;
use pingora_proxy::Session;
use std::time::{Duration, Instant};

/// Held bytes beyond which a stream is committed whatever it holds: a
/// provider that sends this much setup is answering, and the hold must not
/// grow without bound.
pub(super) const MAX_HELD: usize = 64 * 1024;

/// What one chunk did to the hold.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Nothing decided yet: keep reading.
    Wait,
    /// Content arrived (`content`), or the hold is full: commit with
    /// everything held.
    Commit { content: bool },
    /// An error event before any content.
    Error(ErrorVerdict),
}

/// The hold's state: the whole events seen so far and the framer that
/// keeps any partial one, both handed to the relay at commit.
pub(super) struct Holder {
    api: Api,
    framer: SseFramer,
    held: BytesMut,
    max: usize,
}

impl Holder {
    pub(super) fn new(api: Api, max: usize) -> Holder {
        Holder {
            api,
            framer: SseFramer::new(),
            held: BytesMut::new(),
            max,
        }
    }

    pub(super) fn push(&mut self, chunk: Bytes) -> Verdict {
        if let Some(events) = self.framer.push(chunk) {
            self.held.extend_from_slice(&events);
            for (name, data) in sse::events(&events) {
                match sse::kind::classify(self.api, name, &data) {
                    EventKind::Content => return Verdict::Commit { content: true },
                    EventKind::Error => return Verdict::Error(content::stream_error(&data)),
                    EventKind::Setup
                    | EventKind::Keepalive
                    | EventKind::Other
                    | EventKind::Terminal => {}
                }
            }
        }
        if self.held.len() + self.framer.partial_len() > self.max {
            return Verdict::Commit { content: false };
        }
        Verdict::Wait
    }

    /// The upstream ended its body: what it sent, the unterminated tail
    /// included.
    pub(super) fn finish(mut self) -> Bytes {
        if let Some(rest) = self.framer.finish() {
            self.held.extend_from_slice(&rest);
        }
        self.held.freeze()
    }

    pub(super) fn into_parts(self) -> (Bytes, SseFramer) {
        (self.held.freeze(), self.framer)
    }
}

/// How a hold ended.
pub(super) enum HoldEnd {
    /// Write `held`, then relay the rest through `framer`.
    Commit {
        held: Bytes,
        framer: SseFramer,
        /// Whether content was seen (not just the hold filling up).
        content: bool,
    },
    /// The attempt failed before any content.
    Failed {
        class: ErrorClass,
        detail: String,
        retry_after: Option<Duration>,
        /// What the provider sent, when it is a whole answer that could be
        /// returned as is (an error event, an empty stream).
        held: Option<(Bytes, SseFramer)>,
        /// The upstream body ended cleanly (the connection may be pooled).
        body_done: bool,
    },
    ClientGone(Box<Error>),
}

/// Time limits of one hold.
pub(super) struct Budget {
    /// First content must come before this (`first_content_ms` from the
    /// response header, within the request's total budget).
    pub(super) first_content: Instant,
    /// Longest silence between two chunks.
    pub(super) idle: Duration,
}

/// Read the stream until its first content, an error, its end or a limit.
/// Pings do not move the first-content deadline.
pub(super) async fn hold(
    s: &mut Session,
    up: &mut UpstreamSession,
    api: Api,
    budget: Budget,
    decode: &mut Decode,
) -> HoldEnd {
    let mut holder = Holder::new(api, MAX_HELD);
    loop {
        let now = Instant::now();
        let first_left = budget.first_content.saturating_duration_since(now);
        let wait = first_left.min(budget.idle);
        let read = tokio::select! {
            biased;
            r = tokio::time::timeout(wait, up.read_body_bytes()) => r,
            e = client_gone(s) => return HoldEnd::ClientGone(e),
        };
        match read {
            Ok(Ok(Some(chunk))) => {
                // The client's dialect, whatever the provider speaks.
                let chunk = match decode.push(chunk) {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => continue,
                    Err(b) => {
                        return HoldEnd::Failed {
                            class: b.class,
                            detail: format!("the stream broke before any content: {}", b.detail),
                            retry_after: None,
                            held: None,
                            body_done: false,
                        }
                    }
                };
                if let Some(end) = decided(&mut holder, chunk, false) {
                    return end;
                }
            }
            Ok(Ok(None)) => {
                // A translation's closing events may still hold the first
                // content (a short answer) or an error.
                if let (Some(tail), _) = decode.finish() {
                    if let Some(end) = decided(&mut holder, tail, true) {
                        return end;
                    }
                }
                return HoldEnd::Failed {
                    class: ErrorClass::Empty,
                    detail: "the stream ended before any content".into(),
                    retry_after: None,
                    held: Some((holder.finish(), SseFramer::new())),
                    body_done: true,
                };
            }
            Ok(Err(e)) => {
                return HoldEnd::Failed {
                    class: outcome::classify_transport(e.etype()),
                    detail: format!(
                        "the stream broke before any content: {}",
                        super::attempts::describe(&e)
                    ),
                    retry_after: None,
                    held: None,
                    body_done: false,
                }
            }
            Err(_) => {
                let detail = if wait == first_left {
                    "no content within first_content_ms".to_string()
                } else {
                    format!(
                        "no data for {} ms before any content",
                        budget.idle.as_millis()
                    )
                };
                return HoldEnd::Failed {
                    class: ErrorClass::Timeout,
                    detail,
                    retry_after: None,
                    held: None,
                    body_done: false,
                };
            }
        }
    }
}

/// Feed one piece of the stream to the holder; `Some` once the hold is
/// decided. `body_done`: the upstream body has ended already.
fn decided(holder: &mut Holder, chunk: Bytes, body_done: bool) -> Option<HoldEnd> {
    match holder.push(chunk) {
        Verdict::Wait => None,
        Verdict::Commit { content } => {
            let (held, framer) = std::mem::replace(holder, Holder::new(holder.api, 0)).into_parts();
            Some(HoldEnd::Commit {
                held,
                framer,
                content,
            })
        }
        Verdict::Error(ErrorVerdict {
            class,
            retry_after,
            message,
        }) => Some(HoldEnd::Failed {
            class,
            detail: format!("error event before any content: {message}"),
            retry_after,
            held: Some(std::mem::replace(holder, Holder::new(holder.api, 0)).into_parts()),
            body_done,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_all(h: &mut Holder, chunks: &[&'static str]) -> Verdict {
        let mut last = Verdict::Wait;
        for c in chunks {
            last = h.push(Bytes::from_static(c.as_bytes()));
            if last != Verdict::Wait {
                return last;
            }
        }
        last
    }

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":3}}}\n\n";
    const PING: &str = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
    const BLOCK: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    const OVERLOADED: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

    #[test]
    fn setup_and_pings_are_held_until_the_first_content() {
        let mut h = Holder::new(Api::Anthropic, MAX_HELD);
        assert_eq!(push_all(&mut h, &[START, PING, PING]), Verdict::Wait);
        assert_eq!(
            h.push(Bytes::from_static(BLOCK.as_bytes())),
            Verdict::Commit { content: true }
        );
        let (held, _) = h.into_parts();
        assert_eq!(held, format!("{START}{PING}{PING}{BLOCK}"));
    }

    #[test]
    fn an_error_event_before_content_is_classified_with_the_stream_kept() {
        let mut h = Holder::new(Api::Anthropic, MAX_HELD);
        let v = push_all(&mut h, &[START, PING, OVERLOADED]);
        let Verdict::Error(e) = v else {
            panic!("{v:?}")
        };
        assert_eq!(e.class, ErrorClass::Server);
        assert_eq!(e.message, "Overloaded");
        let (held, _) = h.into_parts();
        assert!(held.ends_with(OVERLOADED.as_bytes()));
        assert_eq!(
            sse::events(&held)
                .filter(|(n, _)| *n == Some("message_start"))
                .count(),
            1
        );
    }

    #[test]
    fn events_split_anywhere_give_the_same_verdict() {
        let whole = format!("{START}{PING}{BLOCK}");
        for cut in 1..whole.len() {
            let mut h = Holder::new(Api::Anthropic, MAX_HELD);
            let a = Bytes::copy_from_slice(&whole.as_bytes()[..cut]);
            let b = Bytes::copy_from_slice(&whole.as_bytes()[cut..]);
            let first = h.push(a);
            let v = if first == Verdict::Wait {
                h.push(b)
            } else {
                first
            };
            assert_eq!(v, Verdict::Commit { content: true }, "cut at {cut}");
            let (held, mut framer) = h.into_parts();
            let rest = framer.finish().unwrap_or_default();
            assert_eq!([held, rest].concat(), whole.as_bytes(), "cut at {cut}");
        }
    }

    #[test]
    fn openai_chat_role_chunk_is_setup_and_a_delta_is_content() {
        let mut h = Holder::new(Api::OpenAi, MAX_HELD);
        let role = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
        let keepalive = ": keep-alive\n\n";
        let delta = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        assert_eq!(push_all(&mut h, &[role, keepalive]), Verdict::Wait);
        assert_eq!(
            h.push(Bytes::from_static(delta.as_bytes())),
            Verdict::Commit { content: true }
        );
        let mut h = Holder::new(Api::OpenAi, MAX_HELD);
        let err = "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n";
        assert!(matches!(
            push_all(&mut h, &[role, err]),
            Verdict::Error(ErrorVerdict {
                class: ErrorClass::Server,
                ..
            })
        ));
    }

    #[test]
    fn responses_setup_events_are_held() {
        let mut h = Holder::new(Api::OpenAi, MAX_HELD);
        let created =
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n";
        let item = "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"item\":{\"type\":\"message\"}}\n\n";
        let delta = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n";
        assert_eq!(push_all(&mut h, &[created, item]), Verdict::Wait);
        assert_eq!(
            h.push(Bytes::from_static(delta.as_bytes())),
            Verdict::Commit { content: true }
        );
    }

    #[test]
    fn the_hold_is_bounded_in_bytes() {
        let mut h = Holder::new(Api::Anthropic, 200);
        assert_eq!(push_all(&mut h, &[START]), Verdict::Wait);
        // Pings alone past the bound: commit rather than hold forever.
        let v = push_all(&mut h, &[PING, PING, PING, PING]);
        assert_eq!(v, Verdict::Commit { content: false });
        // A partial event counts too.
        let mut h = Holder::new(Api::Anthropic, 100);
        let partial: &'static str = Box::leak("data: ".repeat(40).into_boxed_str());
        assert_eq!(
            h.push(Bytes::from_static(partial.as_bytes())),
            Verdict::Commit { content: false }
        );
    }

    #[test]
    fn a_stream_that_ends_empty_keeps_what_it_sent() {
        let mut h = Holder::new(Api::Anthropic, MAX_HELD);
        let stop = "event: message_delta\ndata: {\"type\":\"message_delta\"}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}";
        assert_eq!(push_all(&mut h, &[START, stop]), Verdict::Wait);
        let all = h.finish();
        assert!(all.ends_with(b"{\"type\":\"message_stop\"}"));
    }
}
