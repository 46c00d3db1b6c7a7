//! Errors from a translated provider, in the client's dialect: error
//! bodies of a failed status, and error events inside a stream. The error
//! *type* survives the trip, so what steadfast classifies on the
//! translated answer is what the provider meant.

use super::{chat, messages, responses};
use crate::config::Api;
use bytes::{Bytes, BytesMut};
use std::borrow::Cow;

/// What an error means, whoever said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    /// The prompt does not fit the model's context window.
    ContextLength,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    RateLimit,
    Overloaded,
    Server,
}

impl ErrorKind {
    /// From an Anthropic error type (and its message: Anthropic says
    /// "prompt is too long" as an invalid request).
    pub fn from_anthropic(kind: &str, message: &str) -> ErrorKind {
        match kind {
            "invalid_request_error" if says_context_length(message) => ErrorKind::ContextLength,
            "invalid_request_error" => ErrorKind::InvalidRequest,
            "authentication_error" => ErrorKind::Authentication,
            "permission_error" | "billing_error" => ErrorKind::Permission,
            "not_found_error" => ErrorKind::NotFound,
            "request_too_large" => ErrorKind::TooLarge,
            "rate_limit_error" => ErrorKind::RateLimit,
            "overloaded_error" => ErrorKind::Overloaded,
            _ => ErrorKind::Server,
        }
    }

    /// From an OpenAI error's type and code (either may be absent), with
    /// the HTTP status as the fallback witness.
    pub fn from_openai(
        kind: Option<&str>,
        code: Option<&str>,
        message: &str,
        status: u16,
    ) -> ErrorKind {
        match code {
            Some("context_length_exceeded" | "string_above_max_length") => {
                return ErrorKind::ContextLength
            }
            Some("rate_limit_exceeded" | "insufficient_quota") => return ErrorKind::RateLimit,
            Some("invalid_api_key" | "invalid_authentication") => return ErrorKind::Authentication,
            Some("model_not_found") => return ErrorKind::NotFound,
            Some("server_is_overloaded" | "engine_overloaded" | "slow_down") => {
                return ErrorKind::Overloaded
            }
            Some("server_error" | "internal_error") => return ErrorKind::Server,
            _ => {}
        }
        match kind {
            Some("invalid_request_error") if says_context_length(message) => {
                ErrorKind::ContextLength
            }
            Some("invalid_request_error") if status == 404 => ErrorKind::NotFound,
            Some("invalid_request_error") if status == 401 => ErrorKind::Authentication,
            Some("invalid_request_error") if status == 403 => ErrorKind::Permission,
            Some("invalid_request_error") if status == 429 => ErrorKind::RateLimit,
            Some("invalid_request_error") => ErrorKind::InvalidRequest,
            Some("authentication_error") => ErrorKind::Authentication,
            Some("permission_error") => ErrorKind::Permission,
            Some("insufficient_quota" | "requests" | "tokens" | "rate_limit_error") => {
                ErrorKind::RateLimit
            }
            Some("server_error" | "api_error") if status == 503 => ErrorKind::Overloaded,
            Some("server_error" | "api_error") => ErrorKind::Server,
            _ => ErrorKind::from_status(status),
        }
    }

    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            401 => ErrorKind::Authentication,
            403 => ErrorKind::Permission,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::TooLarge,
            429 => ErrorKind::RateLimit,
            503 | 529 => ErrorKind::Overloaded,
            400..=499 => ErrorKind::InvalidRequest,
            _ => ErrorKind::Server,
        }
    }

    pub fn anthropic(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::ContextLength => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Permission => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::TooLarge => "request_too_large",
            ErrorKind::RateLimit => "rate_limit_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Server => "api_error",
        }
    }

    /// OpenAI's (type, code).
    pub fn openai(self) -> (&'static str, Option<&'static str>) {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::TooLarge => ("invalid_request_error", None),
            ErrorKind::ContextLength => ("invalid_request_error", Some("context_length_exceeded")),
            ErrorKind::Authentication => ("authentication_error", Some("invalid_api_key")),
            ErrorKind::Permission => ("permission_error", None),
            ErrorKind::NotFound => ("invalid_request_error", Some("model_not_found")),
            ErrorKind::RateLimit => ("rate_limit_error", Some("rate_limit_exceeded")),
            ErrorKind::Overloaded => ("server_error", Some("server_is_overloaded")),
            ErrorKind::Server => ("server_error", Some("server_error")),
        }
    }

    /// The status to answer a client of `client` with, for an error the
    /// provider answered with `status`: Anthropic's 529 is not an OpenAI
    /// status.
    pub fn status_for(self, client: Api, status: u16) -> u16 {
        match (client, status) {
            (Api::Anthropic, _) => status,
            (_, 529) => 503,
            _ => status,
        }
    }
}

/// Anthropic's and OpenAI's wording of a prompt over the context window.
fn says_context_length(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prompt is too long")
        || m.contains("context length")
        || m.contains("context window")
        || m.contains("maximum context")
}

/// An error as read from any dialect.
pub(crate) struct Parsed<'a> {
    pub kind: ErrorKind,
    pub message: Cow<'a, str>,
}

/// Read an error body (or error event data) of `upstream`'s dialect.
pub(crate) fn parse(upstream: Api, status: u16, body: &[u8]) -> Parsed<'_> {
    let fallback = || Parsed {
        kind: ErrorKind::from_status(status),
        message: Cow::Owned(format!("the provider answered {status}")),
    };
    match upstream {
        Api::Anthropic => match serde_json::from_slice::<messages::ErrorEnvelope>(body) {
            Ok(e) => Parsed {
                kind: ErrorKind::from_anthropic(&e.error.kind, &e.error.message),
                message: e.error.message,
            },
            Err(_) => fallback(),
        },
        Api::OpenAi | Api::OpenAiResponses => {
            if let Ok(e) = serde_json::from_slice::<chat::ErrorEnvelope>(body) {
                return openai(e.error, status);
            }
            // The Responses stream's `error` event: code and message at top level.
            match serde_json::from_slice::<responses::Event>(body) {
                Ok(ev) if ev.message.is_some() => Parsed {
                    kind: ErrorKind::from_openai(
                        None,
                        ev.code.as_deref(),
                        ev.message.as_deref().unwrap_or(""),
                        status,
                    ),
                    message: ev.message.unwrap_or_default(),
                },
                _ => fallback(),
            }
        }
    }
}

pub(crate) fn openai(e: chat::ErrorBody<'_>, status: u16) -> Parsed<'_> {
    Parsed {
        kind: ErrorKind::from_openai(e.kind.as_deref(), e.code.as_deref(), &e.message, status),
        message: e.message,
    }
}

/// The message a client gets: the provider's, or for a context overflow
/// one that names it in the client's vendor's words too, since clients
/// (and steadfast) recognise it by those.
fn message_for<'a>(client: Api, kind: ErrorKind, message: &'a str) -> Cow<'a, str> {
    if kind == ErrorKind::ContextLength && client == Api::Anthropic && !says_context_length(message)
    {
        return Cow::Owned(format!("prompt is too long: {message}"));
    }
    Cow::Borrowed(message)
}

/// An error body in `client`'s dialect.
pub(crate) fn body(client: Api, kind: ErrorKind, message: &str) -> Bytes {
    let message = message_for(client, kind, message);
    let v = match client {
        Api::Anthropic => serde_json::to_vec(&messages::ErrorEnvelope {
            kind: "error",
            error: messages::ErrorBody {
                kind: Cow::Borrowed(kind.anthropic()),
                message,
            },
        }),
        Api::OpenAi | Api::OpenAiResponses => {
            let (ty, code) = kind.openai();
            serde_json::to_vec(&chat::ErrorEnvelope {
                error: chat::ErrorBody {
                    message,
                    kind: Some(Cow::Borrowed(ty)),
                    param: None,
                    code: code.map(Cow::Borrowed),
                },
            })
        }
    };
    Bytes::from(v.unwrap_or_default())
}

/// An error event in `client`'s stream dialect.
pub(crate) fn event(client: Api, kind: ErrorKind, message: &str, out: &mut BytesMut) {
    let b = body(client, kind, message);
    let name = (client == Api::Anthropic).then_some("error");
    super::json::sse_raw(out, name, &b);
}

/// An error answer of a translated provider, in the client's dialect: the
/// status to send and the body. The type is kept (a 429 stays a rate limit,
/// an overload stays an overload, a context overflow stays one).
pub fn translate_error(upstream: Api, client: Api, status: u16, body: &[u8]) -> (u16, Bytes) {
    let p = parse(upstream, status, body);
    (
        p.kind.status_for(client, status),
        self::body(client, p.kind, &p.message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &[u8]) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn openai_rate_limit_becomes_anthropic_rate_limit() {
        let body = br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let (status, out) = translate_error(Api::OpenAi, Api::Anthropic, 429, body);
        assert_eq!(status, 429);
        let v = json(&out);
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "Rate limit reached for gpt-4o");
    }

    #[test]
    fn anthropic_overload_becomes_openai_503() {
        let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#;
        let (status, out) = translate_error(Api::Anthropic, Api::OpenAi, 529, body);
        assert_eq!(status, 503);
        let v = json(&out);
        assert_eq!(v["error"]["type"], "server_error");
        assert_eq!(v["error"]["code"], "server_is_overloaded");
        assert_eq!(v["error"]["message"], "Overloaded");
    }

    #[test]
    fn context_length_survives_both_ways() {
        let oa = br#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        let (s, out) = translate_error(Api::OpenAi, Api::Anthropic, 400, oa);
        assert_eq!(s, 400);
        let v = json(&out);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("prompt is too long")
                || v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("context length")
        );
        let an = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        let (_, out) = translate_error(Api::Anthropic, Api::OpenAi, 400, an);
        let v = json(&out);
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn kinds_map_to_spec_types() {
        let cases = [
            (
                401,
                r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
                "authentication_error",
            ),
            (
                500,
                r#"{"error":{"message":"boom","type":"server_error","code":null}}"#,
                "api_error",
            ),
            (
                503,
                r#"{"error":{"message":"busy","type":"server_error"}}"#,
                "overloaded_error",
            ),
            (
                400,
                r#"{"error":{"message":"bad","type":"invalid_request_error","param":"x"}}"#,
                "invalid_request_error",
            ),
            (
                403,
                r#"{"error":{"message":"no","type":"permission_error"}}"#,
                "permission_error",
            ),
            (502, "<html>bad gateway</html>", "api_error"),
        ];
        for (status, body, want) in cases {
            let (_, out) = translate_error(Api::OpenAi, Api::Anthropic, status, body.as_bytes());
            assert_eq!(json(&out)["error"]["type"], want, "{body}");
        }
        let (_, out) = translate_error(
            Api::Anthropic,
            Api::OpenAi,
            401,
            br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
        );
        assert_eq!(json(&out)["error"]["type"], "authentication_error");
    }

    #[test]
    fn responses_stream_error_events_are_read() {
        let p = parse(
            Api::OpenAiResponses,
            200,
            br#"{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null,"sequence_number":3}"#,
        );
        assert_eq!(p.kind, ErrorKind::RateLimit);
        assert_eq!(p.message, "slow down");
    }
}
