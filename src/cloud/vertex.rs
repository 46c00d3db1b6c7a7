//! Google Vertex AI's rawPredict API for Claude as steadfast speaks it:
//! endpoints, request paths, the bearer token header, and Google's own
//! error answers made into Anthropic's.
//!
//! Vertex answers a model's errors in Anthropic's shape already (and
//! streams Anthropic's SSE unchanged); only errors from Google's front end
//! (quota, IAM, an unknown model) come as `{"error":{"code","message",
//! "status"}}` and are rewritten.

use super::anthropic_error_body;
use crate::outcome::{classify_status, ErrorClass};
use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;
use std::borrow::Cow;

/// The `anthropic_version` Vertex takes in the body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The OAuth2 scope a token needs for Vertex AI.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

pub fn default_base_url(region: &str) -> String {
    if region == "global" {
        "https://aiplatform.googleapis.com".to_string()
    } else {
        format!("https://{region}-aiplatform.googleapis.com")
    }
}

/// `…/models/{model}:rawPredict`, or `:streamRawPredict` for a stream.
pub fn predict_path(project: &str, region: &str, model: &str, stream: bool) -> String {
    let method = if stream {
        "streamRawPredict"
    } else {
        "rawPredict"
    };
    format!(
        "/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{}:{method}",
        encode_model(model)
    )
}

/// A Vertex model id (`claude-sonnet-4-5@20250929`) as one path segment:
/// `@` stays, as Google writes it; anything that could end or leave the
/// segment is percent-encoded.
fn encode_model(model: &str) -> String {
    let mut out = String::with_capacity(model.len());
    for b in model.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `authorization` header for an access token; marked sensitive so it
/// stays out of any debug output of a header map.
pub fn authorization(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

#[derive(Deserialize)]
struct GoogleError<'a> {
    #[serde(borrow)]
    error: GoogleErrorBody<'a>,
}

#[derive(Deserialize)]
struct GoogleErrorBody<'a> {
    /// Google's errors carry a numeric code; Anthropic's do not.
    #[allow(dead_code)]
    code: u16,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

/// A non-2xx Vertex answer for the client: its class, and its body in
/// Anthropic's shape (an Anthropic body is passed through untouched).
pub fn http_error(status: u16, body: &Bytes) -> (ErrorClass, Bytes) {
    let class = classify_status(status).unwrap_or(ErrorClass::Server);
    let Ok(g) = serde_json::from_slice::<GoogleError>(body) else {
        return (class, body.clone());
    };
    let ty = google_error_type(status, g.error.status.as_deref());
    let message = format!(
        "vertex {}: {}",
        g.error.status.as_deref().unwrap_or("error"),
        g.error.message.as_deref().unwrap_or("")
    );
    // The class follows the status Vertex sent, as for any upstream.
    (class, anthropic_error_body(ty, &message))
}

/// Anthropic's type for a Google error, by its canonical status name.
fn google_error_type(status: u16, name: Option<&str>) -> &'static str {
    match name {
        Some("RESOURCE_EXHAUSTED") => "rate_limit_error",
        Some("UNAUTHENTICATED") => "authentication_error",
        Some("PERMISSION_DENIED") => "permission_error",
        Some("NOT_FOUND") => "not_found_error",
        Some("INVALID_ARGUMENT") | Some("FAILED_PRECONDITION") | Some("OUT_OF_RANGE") => {
            "invalid_request_error"
        }
        Some("UNAVAILABLE") => "overloaded_error",
        _ => match classify_status(status) {
            Some(ErrorClass::RateLimit) => "rate_limit_error",
            Some(ErrorClass::Auth) if status == 401 => "authentication_error",
            Some(ErrorClass::Auth) => "permission_error",
            Some(ErrorClass::Request) => "invalid_request_error",
            _ => "api_error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_endpoints() {
        assert_eq!(
            predict_path("p-1", "us-east5", "claude-opus-4-1@20250805", false),
            "/v1/projects/p-1/locations/us-east5/publishers/anthropic/models/claude-opus-4-1@20250805:rawPredict"
        );
        assert!(predict_path("p", "global", "m", true).ends_with("/models/m:streamRawPredict"));
        assert_eq!(encode_model("a/b:c?d"), "a%2Fb%3Ac%3Fd");
        assert_eq!(
            default_base_url("europe-west1"),
            "https://europe-west1-aiplatform.googleapis.com"
        );
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let v = authorization("ya29.tok").unwrap();
        assert_eq!(v.to_str().unwrap(), "Bearer ya29.tok");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("ya29"));
        assert!(authorization("bad\ntoken").is_none());
    }

    #[test]
    fn google_errors_become_anthropic_ones() {
        let body = Bytes::from_static(
            br#"{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        let (class, out) = http_error(429, &body);
        assert_eq!(class, ErrorClass::RateLimit);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Quota exceeded"));
        for (status, name, ty) in [
            (401, "UNAUTHENTICATED", "authentication_error"),
            (403, "PERMISSION_DENIED", "permission_error"),
            (404, "NOT_FOUND", "not_found_error"),
            (400, "INVALID_ARGUMENT", "invalid_request_error"),
            (503, "UNAVAILABLE", "overloaded_error"),
            (500, "INTERNAL", "api_error"),
        ] {
            let b = Bytes::from(format!(
                r#"{{"error":{{"code":{status},"message":"m","status":"{name}"}}}}"#
            ));
            let (class, out) = http_error(status, &b);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["error"]["type"], ty, "{name}");
            assert_eq!(class, classify_status(status).unwrap());
        }
    }

    #[test]
    fn anthropic_errors_pass_through() {
        let body = Bytes::from_static(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        let (class, out) = http_error(529, &body);
        assert_eq!(class, ErrorClass::Server);
        assert_eq!(out.as_ptr(), body.as_ptr());
        let junk = Bytes::from_static(b"<html>");
        assert_eq!(http_error(502, &junk), (ErrorClass::Server, junk));
    }
}
