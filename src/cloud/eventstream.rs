//! Bedrock's streaming answer (`application/vnd.amazon.eventstream`) made
//! into the SSE an Anthropic client expects.
//!
//! Each frame of the stream is checked (lengths and both CRCs, by AWS's
//! `aws-smithy-eventstream`) and then:
//!
//! - a `chunk` event carries one Anthropic event as base64 `bytes`; it
//!   becomes `event: <type>\ndata: <json>\n\n`, the type read from the
//!   JSON's own `type`;
//! - an exception (`throttlingException`, `modelStreamErrorException`, ...)
//!   becomes Anthropic's `event: error` with the type that classifies as
//!   the exception should ([`super::bedrock::anthropic_error_type`]), and
//!   ends the stream: the request path's event classifier then fails over
//!   before the response is committed, or ends the client's stream with
//!   that error after it;
//! - anything else (an unknown event type) is skipped.
//!
//! A broken stream itself (a bad CRC, an impossible length, a chunk that
//! is not an Anthropic event, an end in the middle of a frame) is a
//! [`DecodeError`], like a broken connection.

use super::bedrock::BedrockError;
use crate::outcome::ErrorClass;
use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use std::borrow::Cow;

/// Length of a frame's prelude (total length, headers length, CRC).
const PRELUDE: usize = 12;
/// The smallest frame: a prelude and the message CRC.
const MIN_FRAME: u32 = 16;
/// AWS event stream messages are at most 16 MiB of payload plus headers;
/// a longer frame is garbage, not something to buffer.
const MAX_FRAME: u32 = 16 * 1024 * 1024 + 128 * 1024 + 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("bedrock event stream is corrupt: {0}")]
    Corrupt(String),
    #[error("bedrock event stream frame of {0} bytes is not possible")]
    BadLength(u32),
    #[error("bedrock event stream ended inside a frame ({0} bytes of it arrived)")]
    Truncated(usize),
    #[error("bedrock sent a chunk that is not an Anthropic event: {0}")]
    BadChunk(&'static str),
}

impl DecodeError {
    /// A stream garbled on the way or cut short is the connection's
    /// failure; a well-formed frame with nonsense in it is Bedrock's.
    pub fn class(&self) -> ErrorClass {
        match self {
            DecodeError::Corrupt(_) | DecodeError::Truncated(_) => ErrorClass::Network,
            DecodeError::BadLength(_) | DecodeError::BadChunk(_) => ErrorClass::Server,
        }
    }
}

/// Turns eventstream bytes, in chunks cut anywhere, into SSE bytes.
#[derive(Default)]
pub struct EventStreamDecoder {
    buf: BytesMut,
    /// Set after an exception: the stream is over, later bytes are dropped.
    exception: Option<BedrockError>,
    /// An error found after some events of the same push: reported by the
    /// next call, so those events are not lost.
    pending: Option<DecodeError>,
    failed: bool,
}

impl EventStreamDecoder {
    pub fn new() -> Self {
        EventStreamDecoder::default()
    }

    /// Feed one chunk of the upstream body; returns the SSE of every frame
    /// it completed (possibly empty). After an error, or once an exception
    /// has ended the stream, further input yields nothing.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Bytes, DecodeError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if self.failed || self.exception.is_some() {
            return Ok(Bytes::new());
        }
        self.buf.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(frame) = match self.next_frame() {
            Ok(f) => f,
            Err(e) => return self.fail(e, out),
        } {
            let msg = match read_message_from(frame) {
                Ok(m) => m,
                Err(e) => return self.fail(DecodeError::Corrupt(e.to_string()), out),
            };
            match self.sse(&msg) {
                Ok(Some(sse)) => out.put_slice(&sse),
                Ok(None) => {}
                Err(e) => return self.fail(e, out),
            }
            if self.exception.is_some() {
                self.buf.clear();
                break;
            }
        }
        Ok(out.freeze())
    }

    /// At the end of the upstream body: an error if a frame was left half
    /// way (or an error is still to be reported).
    pub fn finish(&mut self) -> Result<(), DecodeError> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if !self.failed && !self.buf.is_empty() {
            self.failed = true;
            return Err(DecodeError::Truncated(self.buf.len()));
        }
        Ok(())
    }

    /// The exception that ended the stream, if one did.
    pub fn exception(&self) -> Option<&BedrockError> {
        self.exception.as_ref()
    }

    fn fail(&mut self, e: DecodeError, out: BytesMut) -> Result<Bytes, DecodeError> {
        self.failed = true;
        self.buf.clear();
        if out.is_empty() {
            Err(e)
        } else {
            self.pending = Some(e);
            Ok(out.freeze())
        }
    }

    /// The next whole frame in the buffer, if one has arrived.
    fn next_frame(&mut self) -> Result<Option<Bytes>, DecodeError> {
        if self.buf.len() < PRELUDE {
            return Ok(None);
        }
        let total = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if !(MIN_FRAME..=MAX_FRAME).contains(&total) {
            return Err(DecodeError::BadLength(total));
        }
        if self.buf.len() < total as usize {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(total as usize).freeze()))
    }

    /// The SSE for one message, `None` for one that says nothing.
    fn sse(&mut self, msg: &Message) -> Result<Option<Bytes>, DecodeError> {
        match header_str(msg, ":message-type").unwrap_or("event") {
            "event" => match header_str(msg, ":event-type") {
                Some("chunk") => chunk_to_sse(msg.payload()).map(Some),
                _ => Ok(None),
            },
            "exception" => {
                let ty = header_str(msg, ":exception-type").unwrap_or("unknownException");
                Ok(Some(self.end_with(BedrockError::new(
                    Some(ty),
                    200,
                    msg.payload(),
                ))))
            }
            "error" => {
                // Generic eventstream errors carry their text in headers.
                let code = header_str(msg, ":error-code").unwrap_or("unknownError");
                let text = header_str(msg, ":error-message").unwrap_or("");
                let payload = serde_json::json!({ "message": text }).to_string();
                Ok(Some(self.end_with(BedrockError::new(
                    Some(code),
                    200,
                    payload.as_bytes(),
                ))))
            }
            _ => Ok(None),
        }
    }

    fn end_with(&mut self, e: BedrockError) -> Bytes {
        let event = e.event();
        self.exception = Some(e);
        event
    }
}

fn header_str<'a>(msg: &'a Message, name: &str) -> Option<&'a str> {
    msg.headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

/// `{"bytes":"<base64 of an Anthropic event>"}` as one SSE event.
fn chunk_to_sse(payload: &[u8]) -> Result<Bytes, DecodeError> {
    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow)]
        bytes: Cow<'a, str>,
    }
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(borrow, rename = "type")]
        kind: Cow<'a, str>,
    }
    let chunk: Chunk = serde_json::from_slice(payload)
        .map_err(|_| DecodeError::BadChunk("no base64 \"bytes\""))?;
    let json = aws_smithy_types::base64::decode(chunk.bytes.as_ref())
        .map_err(|_| DecodeError::BadChunk("\"bytes\" is not base64"))?;
    let event: Event =
        serde_json::from_slice(&json).map_err(|_| DecodeError::BadChunk("no JSON \"type\""))?;
    let kind = event.kind.as_ref();
    if kind.is_empty()
        || !kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(DecodeError::BadChunk(
            "an event type that cannot be an SSE event name",
        ));
    }
    // A data line must not break: JSON with line breaks in its whitespace
    // is written again on one line (strings hold them only as escapes).
    let data: Cow<[u8]> = if json.iter().any(|&b| b == b'\n' || b == b'\r') {
        let v: serde_json::Value =
            serde_json::from_slice(&json).map_err(|_| DecodeError::BadChunk("invalid JSON"))?;
        Cow::Owned(v.to_string().into_bytes())
    } else {
        Cow::Borrowed(&json)
    };
    let mut out = BytesMut::with_capacity(data.len() + kind.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(&data);
    out.put_slice(b"\n\n");
    Ok(out.freeze())
}

/// Eventstream frames as Bedrock writes them; for tests and fakes.
pub mod encode {
    use aws_smithy_eventstream::frame::write_message_to;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    use bytes::Bytes;

    fn frame(headers: Vec<(&str, &str)>, payload: Vec<u8>) -> Bytes {
        let headers = headers
            .into_iter()
            .map(|(n, v)| Header::new(n.to_string(), HeaderValue::String(v.to_string().into())))
            .collect();
        let msg = Message::new_from_parts(headers, payload);
        let mut out = Vec::new();
        // Header names are short and payloads small: cannot fail.
        let _ = write_message_to(&msg, &mut out);
        Bytes::from(out)
    }

    /// A `chunk` event carrying one Anthropic event's JSON.
    pub fn chunk(anthropic_event_json: &str) -> Bytes {
        let payload = serde_json::json!({
            "bytes": aws_smithy_types::base64::encode(anthropic_event_json),
            "p": "abcdefghij",
        });
        frame(
            vec![
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.to_string().into_bytes(),
        )
    }

    /// An exception frame such as `throttlingException`.
    pub fn exception(exception_type: &str, message: &str) -> Bytes {
        frame(
            vec![
                (":exception-type", exception_type),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            serde_json::json!({ "message": message })
                .to_string()
                .into_bytes(),
        )
    }

    /// Any frame, for the odd cases.
    pub fn raw(headers: Vec<(&str, &str)>, payload: &[u8]) -> Bytes {
        frame(headers, payload.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{chunk, exception, raw};
    use super::*;
    use crate::sse::kind::{classify, EventKind};
    use proptest::prelude::*;

    const START: &str = r#"{"type":"message_start","message":{"id":"msg_bdrk_1","type":"message","role":"assistant","model":"claude","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}"#;
    const DELTA: &str = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"h\u00e9llo \"x\"\n"}}"#;
    const STOP: &str =
        r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":3}}"#;

    fn stream() -> (Vec<u8>, String) {
        let mut wire = Vec::new();
        let mut sse = String::new();
        for ev in [START, DELTA, STOP] {
            wire.extend_from_slice(&chunk(ev));
            let ty: serde_json::Value = serde_json::from_str(ev).unwrap();
            sse.push_str(&format!(
                "event: {}\ndata: {ev}\n\n",
                ty["type"].as_str().unwrap()
            ));
        }
        (wire, sse)
    }

    fn decode_all(chunks: &[&[u8]]) -> (String, Result<(), DecodeError>) {
        let mut d = EventStreamDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            match d.push(c) {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (String::from_utf8(out).unwrap(), Err(e)),
            }
        }
        let end = d.finish();
        (String::from_utf8(out).unwrap(), end)
    }

    #[test]
    fn chunks_become_anthropic_sse() {
        let (wire, sse) = stream();
        let (out, end) = decode_all(&[&wire]);
        assert_eq!(out, sse);
        assert_eq!(end, Ok(()));
        let events: Vec<_> = crate::sse::events(out.as_bytes()).collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1].0, Some("content_block_delta"));
        let v: serde_json::Value = serde_json::from_str(&events[1].1).unwrap();
        assert_eq!(v["delta"]["text"], "h\u{e9}llo \"x\"\n");
        assert_eq!(
            classify(crate::config::Api::Anthropic, events[2].0, &events[2].1),
            EventKind::Terminal
        );
    }

    proptest! {
        #[test]
        fn frames_split_anywhere_decode_the_same(cuts in proptest::collection::vec(0usize..2000, 0..12)) {
            let (wire, sse) = stream();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts {
                pieces.push(&wire[at..c]);
                at = c;
            }
            pieces.push(&wire[at..]);
            let (out, end) = decode_all(&pieces);
            prop_assert_eq!(out, sse);
            prop_assert_eq!(end, Ok(()));
        }

        #[test]
        fn any_flipped_byte_is_caught(at in 0usize..10_000, bit in 0u8..8) {
            let (wire, _) = stream();
            let mut bad = wire.clone();
            let at = at % bad.len();
            bad[at] ^= 1 << bit;
            let (_, end) = decode_all(&[&bad]);
            prop_assert!(end.is_err(), "flip at {} went unnoticed", at);
        }
    }

    #[test]
    fn exceptions_become_classified_error_events() {
        for (ty, anthropic, class) in [
            (
                "throttlingException",
                "rate_limit_error",
                ErrorClass::RateLimit,
            ),
            (
                "serviceUnavailableException",
                "overloaded_error",
                ErrorClass::Server,
            ),
            ("modelStreamErrorException", "api_error", ErrorClass::Server),
            ("internalServerException", "api_error", ErrorClass::Server),
            (
                "validationException",
                "invalid_request_error",
                ErrorClass::Request,
            ),
            ("modelTimeoutException", "api_error", ErrorClass::Server),
        ] {
            let mut wire = chunk(START).to_vec();
            wire.extend_from_slice(&exception(ty, "Too many requests, please wait"));
            wire.extend_from_slice(&chunk(DELTA));
            let mut d = EventStreamDecoder::new();
            let out = d.push(&wire).unwrap();
            assert_eq!(d.finish(), Ok(()));
            let events: Vec<_> = crate::sse::events(&out).collect();
            assert_eq!(events.len(), 2, "{ty}: nothing after the exception");
            assert_eq!(events[1].0, Some("error"));
            assert_eq!(
                classify(crate::config::Api::Anthropic, events[1].0, &events[1].1),
                EventKind::Error
            );
            let v: serde_json::Value = serde_json::from_str(&events[1].1).unwrap();
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], anthropic, "{ty}");
            assert_eq!(crate::cloud::class_of_error_type(anthropic), class);
            assert!(v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("please wait"));
            assert_eq!(d.exception().unwrap().class, class);
            assert!(d.push(&chunk(DELTA)).unwrap().is_empty());
        }
        let err = raw(
            vec![
                (":message-type", "error"),
                (":error-code", "ThrottlingException"),
                (":error-message", "slow"),
            ],
            b"",
        );
        let mut d = EventStreamDecoder::new();
        let out = d.push(&err).unwrap();
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains("rate_limit_error"));
    }

    #[test]
    fn unknown_events_are_skipped() {
        let odd = raw(
            vec![(":message-type", "event"), (":event-type", "metrics")],
            b"{}",
        );
        let (out, end) = decode_all(&[&odd, &chunk(STOP)]);
        assert!(out.starts_with("event: message_stop\n"), "{out}");
        assert_eq!(end, Ok(()));
    }

    #[test]
    fn broken_streams_are_errors_and_events_before_them_survive() {
        let (wire, _) = stream();
        // Cut inside the last frame.
        let (out, end) = decode_all(&[&wire[..wire.len() - 5]]);
        assert_eq!(out.matches("event: ").count(), 2);
        assert!(matches!(end, Err(DecodeError::Truncated(_))));
        assert_eq!(end.unwrap_err().class(), ErrorClass::Network);
        // A corrupt second frame: the first event is returned, the error next.
        let mut bad = chunk(START).to_vec();
        let mut second = chunk(DELTA).to_vec();
        let last = second.len() - 1;
        second[last] ^= 0xff;
        bad.extend_from_slice(&second);
        let mut d = EventStreamDecoder::new();
        let first = d.push(&bad).unwrap();
        assert!(first.starts_with(b"event: message_start\n"));
        assert!(matches!(d.push(b""), Err(DecodeError::Corrupt(_))));
        assert_eq!(d.finish(), Ok(()));
        // An absurd length is not buffered.
        let (_, end) = decode_all(&[&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]]);
        assert!(matches!(end, Err(DecodeError::BadLength(_))));
        // Chunks that are not Anthropic events.
        for payload in [
            &br#"{"nobytes":1}"#[..],
            br#"{"bytes":"***"}"#,
            br#"{"bytes":"bm90IGpzb24="}"#,
            br#"{"bytes":"eyJ0eXBlIjoiYVxuYiJ9"}"#,
        ] {
            let f = raw(
                vec![(":message-type", "event"), (":event-type", "chunk")],
                payload,
            );
            let (_, end) = decode_all(&[&f]);
            assert!(matches!(end, Err(DecodeError::BadChunk(_))), "{payload:?}");
        }
    }

    #[test]
    fn pretty_printed_json_stays_on_one_data_line() {
        let (out, end) = decode_all(&[&chunk("{\n  \"type\": \"ping\"\n}")]);
        assert_eq!(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
        assert_eq!(end, Ok(()));
    }
}
