//! Claude on the clouds: providers of `kind: bedrock` (AWS Bedrock,
//! InvokeModel) and `kind: vertex` (Google Vertex AI, rawPredict).
//!
//! The request path stays the Anthropic Messages API on the client side;
//! this module owns what differs upstream, as self-contained pieces:
//!
//! - [`request`]: which paths a cloud serves, and the upstream request
//!   (path, body, headers) built from the client's, with [`body`] doing the
//!   JSON edit and [`beta`] the `anthropic-beta` flags;
//! - [`sigv4`] signs a Bedrock request, with credentials kept fresh by
//!   [`aws_credentials`]; [`gcp_token`] keeps a Vertex access token fresh;
//!   both hold their value in a [`refresh::Refreshed`] cell refreshed off
//!   the request path;
//! - [`eventstream`] turns Bedrock's `application/vnd.amazon.eventstream`
//!   response into the SSE an Anthropic client expects, and [`bedrock`] /
//!   [`vertex`] turn each cloud's error answers into Anthropic's;
//! - [`auth`] holds the process's two credential cells (on
//!   [`crate::app::App`], so they outlive reloads) and authorises one
//!   attempt; [`service`] runs their refresh loops while a provider needs
//!   them.
//!
//! The request path (`crate::forward`) uses these per attempt: a path a
//! cloud does not serve skips the provider, the request is built and then
//! signed (or given a token) right before it goes, a cloud's error answer
//! is rewritten and classified before the failover decision, and a Bedrock
//! stream is decoded into SSE before anything else looks at it.
//!
//! The error helpers here are the one place that maps Anthropic error types
//! to statuses and classes, so a cloud's error, rendered for the client and
//! classified again by type, lands in the same class.

pub mod auth;
pub mod aws_credentials;
pub mod bedrock;
pub mod beta;
pub mod body;
pub mod eventstream;
pub mod gcp_token;
pub mod refresh;
pub mod request;
pub mod service;
pub mod sigv4;
pub mod vertex;

use crate::config::ProviderKind;
use crate::outcome::{classify_status, ErrorClass};
use bytes::Bytes;

pub use refresh::CredentialStatus;
pub use request::{forwards_client_header, prepare, serves, CloudRequestError, UpstreamRequest};

/// The endpoint of a cloud provider without a `base_url`.
pub fn default_base_url(kind: &ProviderKind) -> String {
    match kind {
        ProviderKind::Direct => String::new(),
        ProviderKind::Bedrock { region } => bedrock::default_base_url(region),
        ProviderKind::Vertex { region, .. } => vertex::default_base_url(region),
    }
}

/// The status Anthropic's API answers an error type with.
pub fn anthropic_status(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// The class of an Anthropic error type: what a status of that
/// type would be classified as.
pub fn class_of_error_type(error_type: &str) -> ErrorClass {
    classify_status(anthropic_status(error_type)).unwrap_or(ErrorClass::Server)
}

/// Upstream text put into an error message is cut to this many bytes.
const MAX_MESSAGE: usize = 2048;

/// An Anthropic error body: `{"type":"error","error":{"type":..,"message":..}}`.
pub fn anthropic_error_body(error_type: &str, message: &str) -> Bytes {
    Bytes::from(anthropic_error_json(error_type, message).to_string())
}

/// The same error as the `event: error` of an SSE stream.
pub fn anthropic_error_event(error_type: &str, message: &str) -> Bytes {
    let data = anthropic_error_json(error_type, message);
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

fn anthropic_error_json(error_type: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "error",
        "error": { "type": error_type, "message": truncate(message, MAX_MESSAGE) }
    })
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_map_to_the_spec_classes() {
        use ErrorClass::*;
        for (ty, class) in [
            ("overloaded_error", Server),
            ("api_error", Server),
            ("rate_limit_error", RateLimit),
            ("authentication_error", Auth),
            ("permission_error", Auth),
            ("invalid_request_error", Request),
            ("not_found_error", Request),
            ("request_too_large", Request),
            ("something_new", Server),
        ] {
            assert_eq!(class_of_error_type(ty), class, "{ty}");
        }
    }

    #[test]
    fn error_bodies_and_events_are_anthropic_json() {
        let body = anthropic_error_body("rate_limit_error", "slow \"down\"\n");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["message"], "slow \"down\"\n");
        let ev = anthropic_error_event("api_error", "x");
        let text = std::str::from_utf8(&ev).unwrap();
        assert!(text.starts_with("event: error\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches('\n').count(), 3, "one data line: {text}");
        let long = "é".repeat(MAX_MESSAGE);
        let v: serde_json::Value =
            serde_json::from_slice(&anthropic_error_body("api_error", &long)).unwrap();
        assert!(v["error"]["message"].as_str().unwrap().len() <= MAX_MESSAGE);
    }

    #[test]
    fn cloud_endpoints_follow_the_region() {
        let b = ProviderKind::Bedrock {
            region: "eu-west-1".into(),
        };
        assert_eq!(
            default_base_url(&b),
            "https://bedrock-runtime.eu-west-1.amazonaws.com"
        );
        let v = ProviderKind::Vertex {
            region: "us-east5".into(),
            project: "p".into(),
        };
        assert_eq!(
            default_base_url(&v),
            "https://us-east5-aiplatform.googleapis.com"
        );
        let g = ProviderKind::Vertex {
            region: "global".into(),
            project: "p".into(),
        };
        assert_eq!(default_base_url(&g), "https://aiplatform.googleapis.com");
    }
}
