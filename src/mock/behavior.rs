//! The fault switchboard: what the mock does with each request, and the
//! check that keeps a requested fault from turning into a broken response.

use super::wire::{is_tchar, valid_header_value};
use serde::{Deserialize, Serialize};

/// Keeps a typo in body_size from exhausting memory.
const MAX_PAD: usize = 256 * 1024 * 1024;

/// What the mock does with each request. Can be swapped at runtime, also over
/// HTTP with `POST /_mock/behavior` (fields missing from the JSON take their
/// defaults; unknown fields are rejected so a typo cannot silently disable a
/// fault).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// 200 = normal answer; anything else = error response in the dialect's format.
    pub status: u16,
    /// Message of that error response (default: "mock NAME returned STATUS"),
    /// e.g. "prompt is too long: 210000 tokens > 200000 maximum".
    pub error_message: Option<String>,
    /// Retry-After header value to send (any status).
    pub retry_after: Option<String>,
    /// Extra response headers, e.g. x-ratelimit-reset-requests.
    pub extra_headers: Vec<(String, String)>,
    /// Delay before sending response headers.
    pub latency_ms: u64,
    /// Read the request, never answer (the socket stays open until the client
    /// closes it or the server is stopped).
    pub stall_before_headers: bool,
    /// Read the request, then close with TCP RST and no response.
    pub reset: bool,
    /// Read the request, then close cleanly (FIN) without a response.
    pub close_without_response: bool,
    /// Number of content delta events in SSE streams.
    pub events: usize,
    /// Delay between consecutive SSE events.
    pub event_delay_ms: u64,
    /// SSE: after this many deltas, stop sending but keep the connection open.
    /// Values above `events` never trigger.
    pub stall_mid_stream_after: Option<usize>,
    /// SSE: after this many deltas, reset the connection (RST).
    /// Values above `events` never trigger.
    pub cut_mid_stream_after: Option<usize>,
    /// Non-SSE: announce the full Content-Length, send only this many body
    /// bytes, then RST. No effect when the body is not longer than this.
    pub cut_body_after_bytes: Option<usize>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Extra padding bytes in the answer text, for large responses (spread
    /// over the deltas when streaming).
    pub body_size: usize,
    /// SSE: after this many content deltas, send an error event in the
    /// dialect and end the stream cleanly. 0 = before any content, right
    /// after the setup events (a 200 that fails as Anthropic's overloaded
    /// streams do).
    pub error_event_after: Option<usize>,
    /// Anthropic error type of that event (`overloaded_error`,
    /// `rate_limit_error`, `api_error`, `invalid_request_error`, ...);
    /// mapped to the OpenAI equivalent for the OpenAI dialects.
    pub error_event_type: String,
    /// Message of that event.
    pub error_event_message: String,
    /// A 2xx answer with no content: an empty message (JSON), or a stream
    /// of setup and end events only.
    pub empty: bool,
    /// SSE: before the first content, send keep-alives (`ping` events,
    /// SSE comments) every `ping_interval_ms` for this long.
    pub pings_before_content_ms: u64,
    pub ping_interval_ms: u64,
    /// A request ending with an assistant message (a prefill) gets a 400
    /// saying the model takes none, as recent Claude models answer.
    pub reject_prefill: bool,
    /// Answering a prefilled request, start by repeating its last N words,
    /// as some models do at the seam of a continuation.
    pub echo_prefill_words: usize,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            error_message: None,
            retry_after: None,
            extra_headers: Vec::new(),
            latency_ms: 0,
            stall_before_headers: false,
            reset: false,
            close_without_response: false,
            events: 3,
            event_delay_ms: 0,
            stall_mid_stream_after: None,
            cut_mid_stream_after: None,
            cut_body_after_bytes: None,
            input_tokens: 11,
            output_tokens: 7,
            body_size: 0,
            error_event_after: None,
            error_event_type: "overloaded_error".into(),
            error_event_message: "Overloaded".into(),
            empty: false,
            pings_before_content_ms: 0,
            ping_interval_ms: 100,
            reject_prefill: false,
            echo_prefill_words: 0,
        }
    }
}

impl Behavior {
    /// Rejects what would produce a broken response head rather than the fault
    /// the caller asked for.
    pub fn validate(&self) -> Result<(), String> {
        if !(200..=599).contains(&self.status) {
            return Err(format!("status {} is not in 200..=599", self.status));
        }
        if self.ping_interval_ms == 0 && self.pings_before_content_ms > 0 {
            return Err("ping_interval_ms must be at least 1".into());
        }
        if self.error_event_type.is_empty() || !self.error_event_type.bytes().all(is_tchar) {
            return Err(format!(
                "error_event_type {:?} is not a plain token",
                self.error_event_type
            ));
        }
        if self.body_size > MAX_PAD {
            return Err(format!("body_size {} is above {MAX_PAD}", self.body_size));
        }
        if let Some(v) = &self.retry_after {
            if !valid_header_value(v) {
                return Err(format!("retry_after {v:?} is not a valid header value"));
            }
        }
        for (k, v) in &self.extra_headers {
            if k.is_empty() || !k.bytes().all(is_tchar) {
                return Err(format!("header name {k:?} is not a valid token"));
            }
            if !valid_header_value(v) {
                return Err(format!(
                    "header {k} value {v:?} is not a valid header value"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_what_would_break_the_response_head() {
        assert_eq!(Behavior::default().validate(), Ok(()));
        let bad = [
            Behavior {
                status: 199,
                ..Behavior::default()
            },
            Behavior {
                status: 600,
                ..Behavior::default()
            },
            Behavior {
                body_size: MAX_PAD + 1,
                ..Behavior::default()
            },
            Behavior {
                retry_after: Some("1\r\nx-injected: 1".into()),
                ..Behavior::default()
            },
            Behavior {
                extra_headers: vec![("bad name".into(), "v".into())],
                ..Behavior::default()
            },
            Behavior {
                extra_headers: vec![(String::new(), "v".into())],
                ..Behavior::default()
            },
            Behavior {
                extra_headers: vec![("x-ok".into(), "v\nw".into())],
                ..Behavior::default()
            },
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
        let edge = Behavior {
            status: 599,
            body_size: MAX_PAD,
            retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT".into()),
            extra_headers: vec![("x-ratelimit-reset-requests".into(), "1s\tok".into())],
            ..Behavior::default()
        };
        assert_eq!(edge.validate(), Ok(()));
    }
}
