//! AWS Bedrock's InvokeModel API as steadfast speaks it: endpoints, request
//! paths, and Bedrock's error answers made into Anthropic's, with the class
//! each one fails over as.
//!
//! Bedrock names an error by its type: `x-amzn-errortype` on an HTTP answer
//! (`ThrottlingException:http://internal.amazon.com/...`), `:exception-type`
//! on an exception frame of a stream (`throttlingException`). Both go
//! through [`anthropic_error_type`], so a throttled stream and a throttled
//! call are the same `rate_limit_error`.

use super::{anthropic_error_body, anthropic_status, class_of_error_type};
use crate::outcome::{classify_status, ErrorClass};
use bytes::Bytes;
use serde::Deserialize;
use std::borrow::Cow;

/// The `anthropic_version` Bedrock takes in the body.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
/// The content type of a streaming answer.
pub const EVENTSTREAM: &str = "application/vnd.amazon.eventstream";
/// The SigV4 signing name of the Bedrock runtime.
pub const SIGNING_SERVICE: &str = "bedrock";

pub fn default_base_url(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

pub fn invoke_path(model_id: &str) -> String {
    format!("/model/{}/invoke", encode_segment(model_id))
}

pub fn stream_path(model_id: &str) -> String {
    format!(
        "/model/{}/invoke-with-response-stream",
        encode_segment(model_id)
    )
}

/// A model id (`anthropic.claude-…-v1:0`, or an inference profile ARN with
/// `/` in it) as one path segment: everything but RFC 3986 unreserved
/// characters percent-encoded, as AWS's own SDKs do. The signature covers
/// this encoded form.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Anthropic error type for a Bedrock error or exception type (any
/// case of its first letter). `original_status` is what a
/// `modelStreamErrorException` says the model answered.
pub fn anthropic_error_type(bedrock_type: &str, original_status: Option<u16>) -> &'static str {
    let t = bedrock_type.to_ascii_lowercase();
    match t.as_str() {
        "throttlingexception" | "servicequotaexceededexception" => "rate_limit_error",
        "serviceunavailableexception" | "modelnotreadyexception" => "overloaded_error",
        "internalserverexception" | "modeltimeoutexception" | "modelerrorexception" => "api_error",
        "accessdeniedexception" => "permission_error",
        "expiredtokenexception"
        | "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception" => "authentication_error",
        "validationexception" => "invalid_request_error",
        "resourcenotfoundexception" => "not_found_error",
        "modelstreamerrorexception" => match original_status.map(classify_status) {
            Some(Some(ErrorClass::RateLimit)) => "rate_limit_error",
            Some(Some(ErrorClass::Request)) => "invalid_request_error",
            _ => "api_error",
        },
        _ => "api_error",
    }
}

/// Bedrock's error type from `x-amzn-errortype` (`Name:namespace-url`).
pub fn error_type_header(value: &str) -> &str {
    value.split(':').next().unwrap_or("").trim()
}

/// The JSON Bedrock puts in an error body or an exception frame.
#[derive(Deserialize, Default)]
struct ErrorPayload<'a> {
    #[serde(borrow, alias = "Message")]
    message: Option<Cow<'a, str>>,
    #[serde(rename = "originalStatusCode")]
    original_status: Option<u16>,
    #[serde(borrow, rename = "originalMessage")]
    original_message: Option<Cow<'a, str>>,
}

/// A Bedrock error made into Anthropic's: what the client is answered and
/// what the attempt is classified as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockError {
    /// Anthropic's status for [`BedrockError::anthropic_type`].
    pub status: u16,
    pub anthropic_type: &'static str,
    pub class: ErrorClass,
    /// Bedrock's own error type, when it said one.
    pub bedrock_type: Option<String>,
    pub message: String,
}

impl BedrockError {
    /// The Anthropic error body for the client.
    pub fn body(&self) -> Bytes {
        anthropic_error_body(self.anthropic_type, &self.message)
    }

    /// The same error as a final SSE event.
    pub fn event(&self) -> Bytes {
        super::anthropic_error_event(self.anthropic_type, &self.message)
    }

    /// From an error type and a JSON payload, for both an HTTP answer and
    /// an exception frame. Without a type, `status` decides.
    pub fn new(bedrock_type: Option<&str>, status: u16, payload: &[u8]) -> BedrockError {
        let p: ErrorPayload = serde_json::from_slice(payload).unwrap_or_default();
        let anthropic_type = match bedrock_type {
            Some(t) if !t.is_empty() => anthropic_error_type(t, p.original_status),
            _ => status_type(status),
        };
        let detail = p
            .original_message
            .or(p.message)
            .map(|m| m.into_owned())
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&payload[..payload.len().min(512)]).into_owned()
            });
        let message = match bedrock_type {
            Some(t) if !t.is_empty() => format!("bedrock {t}: {detail}"),
            _ => format!("bedrock HTTP {status}: {detail}"),
        };
        BedrockError {
            status: anthropic_status(anthropic_type),
            anthropic_type,
            class: class_of_error_type(anthropic_type),
            bedrock_type: bedrock_type.filter(|t| !t.is_empty()).map(str::to_string),
            message,
        }
    }
}

/// A non-2xx InvokeModel answer: its status, `x-amzn-errortype` header
/// (if any) and body.
pub fn http_error(status: u16, errortype_header: Option<&str>, body: &[u8]) -> BedrockError {
    BedrockError::new(errortype_header.map(error_type_header), status, body)
}

/// The Anthropic type of a Bedrock status with no error type.
fn status_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_are_one_encoded_segment() {
        assert_eq!(
            invoke_path("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
        );
        assert_eq!(
            stream_path("arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.x"),
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123%3Ainference-profile%2Fus.anthropic.x/invoke-with-response-stream"
        );
        assert_eq!(encode_segment("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn bedrock_errors_land_in_the_spec_classes() {
        use ErrorClass::*;
        let cases = [
            (
                429,
                Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
                RateLimit,
                429,
            ),
            (503, Some("ServiceUnavailableException"), Server, 529),
            (429, Some("ModelNotReadyException"), Server, 529),
            (403, Some("AccessDeniedException"), Auth, 403),
            (403, Some("ExpiredTokenException"), Auth, 401),
            (403, Some("UnrecognizedClientException"), Auth, 401),
            (403, Some("InvalidSignatureException"), Auth, 401),
            (400, Some("ValidationException"), Request, 400),
            (404, Some("ResourceNotFoundException"), Request, 404),
            (408, Some("ModelTimeoutException"), Server, 500),
            (424, Some("ModelErrorException"), Server, 500),
            (400, Some("ServiceQuotaExceededException"), RateLimit, 429),
            (500, Some("InternalServerException"), Server, 500),
            (500, Some("SomethingNewException"), Server, 500),
            (429, None, RateLimit, 429),
            (403, None, Auth, 403),
            (502, None, Server, 500),
            (400, Some(""), Request, 400),
        ];
        for (status, ty, class, client_status) in cases {
            let e = http_error(status, ty, br#"{"message":"m"}"#);
            assert_eq!(
                (e.class, e.status),
                (class, client_status),
                "{status} {ty:?}"
            );
            assert_eq!(crate::outcome::classify_status(e.status), Some(class));
        }
    }

    #[test]
    fn the_message_survives_and_is_rendered_in_anthropic_shape() {
        let e = http_error(
            400,
            Some("ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"prompt is too long: 215000 tokens > 200000 maximum"}"#,
        );
        assert_eq!(e.bedrock_type.as_deref(), Some("ValidationException"));
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("prompt is too long"), "{msg}");
        assert!(msg.contains("ValidationException"), "{msg}");
        // `Message` (capitalised) and bodies that are not JSON.
        let e = http_error(403, None, br#"{"Message":"User is not authorized"}"#);
        assert!(
            e.message.contains("User is not authorized"),
            "{}",
            e.message
        );
        let e = http_error(502, None, b"<html>bad gateway</html>");
        assert!(e.message.contains("bad gateway"), "{}", e.message);
        let ev = e.event();
        assert!(ev.starts_with(b"event: error\ndata: "));
    }

    #[test]
    fn stream_errors_use_the_models_own_status() {
        let e = BedrockError::new(
            Some("modelStreamErrorException"),
            200,
            br#"{"message":"x","originalStatusCode":429,"originalMessage":"Too many tokens"}"#,
        );
        assert_eq!(e.class, ErrorClass::RateLimit);
        assert!(e.message.contains("Too many tokens"));
        let e = BedrockError::new(
            Some("modelStreamErrorException"),
            200,
            br#"{"message":"x"}"#,
        );
        assert_eq!(e.class, ErrorClass::Server);
        let e = BedrockError::new(Some("throttlingException"), 200, b"");
        assert_eq!(e.anthropic_type, "rate_limit_error");
    }
}
