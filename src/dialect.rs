//! Errors that steadfast itself produces, in the client's API dialect, and
//! the final SSE error event of an interrupted stream.

use crate::config::Api;
use crate::outcome::ErrorClass;
use bytes::Bytes;

/// The situations in which steadfast answers by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalError {
    NoRoute,
    Unauthorized,
    BodyTooLarge,
    BadRequest,
    /// The request head is over `limits.max_header_bytes`.
    HeaderTooLarge,
    /// The request head did not arrive within `limits.header_timeout_ms`.
    HeaderTimeout,
    Overloaded,
    AllNetwork,
    AllTimeout,
    /// Every provider of the route is disabled by an operator: no upstream
    /// was contacted (like Envoy's "no healthy upstream").
    NoProvider,
    Internal,
}

impl LocalError {
    pub fn status(self) -> u16 {
        match self {
            LocalError::NoRoute => 404,
            LocalError::Unauthorized => 401,
            LocalError::BodyTooLarge => 413,
            LocalError::BadRequest => 400,
            LocalError::HeaderTooLarge => 431,
            LocalError::HeaderTimeout => 408,
            LocalError::Overloaded => 503,
            LocalError::AllNetwork => 502,
            LocalError::AllTimeout => 504,
            LocalError::NoProvider => 503,
            LocalError::Internal => 500,
        }
    }

    /// The `x-steadfast-error-class` of this answer.
    pub fn class(self) -> ErrorClass {
        match self {
            LocalError::NoRoute
            | LocalError::BodyTooLarge
            | LocalError::BadRequest
            | LocalError::HeaderTooLarge
            | LocalError::HeaderTimeout => ErrorClass::Request,
            LocalError::Unauthorized => ErrorClass::Auth,
            LocalError::Overloaded => ErrorClass::Concurrency,
            // No upstream could be reached, as far as the client can tell;
            // the message says why.
            LocalError::AllNetwork | LocalError::NoProvider => ErrorClass::Network,
            LocalError::AllTimeout => ErrorClass::Timeout,
            LocalError::Internal => ErrorClass::Internal,
        }
    }

    /// Whether the same request can only get the same answer. Such
    /// answers carry `x-should-retry: false`, which the official SDKs obey
    /// over their status-based retries: Claude Code otherwise retries a
    /// refused client token for minutes before saying the key is wrong.
    /// Overload and upstream trouble keep the client's own policy.
    pub fn retry_is_futile(self) -> bool {
        match self {
            LocalError::NoRoute
            | LocalError::Unauthorized
            | LocalError::BodyTooLarge
            | LocalError::BadRequest
            | LocalError::HeaderTooLarge => true,
            LocalError::HeaderTimeout
            | LocalError::Overloaded
            | LocalError::AllNetwork
            | LocalError::AllTimeout
            | LocalError::NoProvider
            | LocalError::Internal => false,
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            LocalError::NoRoute => "not_found_error",
            LocalError::Unauthorized => "authentication_error",
            LocalError::BodyTooLarge => "request_too_large",
            // Anthropic's own API has no type for these; it answers
            // framing and header problems as invalid requests.
            LocalError::BadRequest | LocalError::HeaderTooLarge | LocalError::HeaderTimeout => {
                "invalid_request_error"
            }
            LocalError::Overloaded => "overloaded_error",
            LocalError::AllNetwork
            | LocalError::AllTimeout
            | LocalError::NoProvider
            | LocalError::Internal => "api_error",
        }
    }

    fn openai_type(self) -> &'static str {
        match self {
            LocalError::NoRoute
            | LocalError::BodyTooLarge
            | LocalError::BadRequest
            | LocalError::HeaderTooLarge
            | LocalError::HeaderTimeout => "invalid_request_error",
            LocalError::Unauthorized => "authentication_error",
            LocalError::Overloaded
            | LocalError::AllNetwork
            | LocalError::AllTimeout
            | LocalError::NoProvider => "server_error",
            LocalError::Internal => "server_error",
        }
    }
}

/// JSON error body for `kind` in `api`'s dialect.
pub fn error_body(api: Api, kind: LocalError, message: &str) -> Bytes {
    let v = match api {
        Api::Anthropic => serde_json::json!({
            "type": "error",
            "error": { "type": kind.anthropic_type(), "message": message }
        }),
        Api::OpenAi | Api::OpenAiResponses => serde_json::json!({
            "error": {
                "message": message,
                "type": kind.openai_type(),
                "code": kind.class().as_str(),
            }
        }),
    };
    Bytes::from(v.to_string())
}

/// The last event of an SSE stream that broke after it was committed. It is
/// a complete event, so a client's SSE parser surfaces it as an error rather
/// than as a silently short answer.
pub fn sse_error_event(api: Api, class: ErrorClass, message: &str) -> Bytes {
    match api {
        Api::Anthropic => {
            let data = serde_json::json!({
                "type": "error",
                "error": { "type": "api_error", "message": message }
            });
            Bytes::from(format!("event: error\ndata: {data}\n\n"))
        }
        Api::OpenAi => {
            let data = serde_json::json!({
                "error": { "message": message, "type": "server_error", "code": class.as_str() }
            });
            Bytes::from(format!("data: {data}\n\n"))
        }
        // The Responses API's own stream error event.
        Api::OpenAiResponses => {
            let data = serde_json::json!({
                "type": "error", "code": class.as_str(), "message": message, "param": null
            });
            Bytes::from(format!("event: error\ndata: {data}\n\n"))
        }
    }
}

/// The dialect of a routed request's client: the route's, except that an
/// OpenAI route serves Chat Completions and Responses clients alike (one
/// route for both is the usual setup), and each must get its own API's
/// stream error event.
pub fn client_api(route: Api, path: &str) -> Api {
    match (route, Api::of_endpoint(path)) {
        (Api::OpenAi | Api::OpenAiResponses, Some(a @ (Api::OpenAi | Api::OpenAiResponses))) => a,
        _ => route,
    }
}

/// Best guess of the dialect for a request that matched no route: the path
/// family, else the credential header the client used.
pub fn guess_api(path: &str, has_x_api_key: bool) -> Api {
    if path.starts_with("/v1/chat/") || path.starts_with("/v1/responses") {
        Api::OpenAi
    } else if path.starts_with("/v1/messages") || has_x_api_key {
        Api::Anthropic
    } else {
        Api::OpenAi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(b: &Bytes) -> serde_json::Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn anthropic_errors_use_spec_types() {
        let cases = [
            (LocalError::NoRoute, 404, "not_found_error"),
            (LocalError::Unauthorized, 401, "authentication_error"),
            (LocalError::BodyTooLarge, 413, "request_too_large"),
            (LocalError::BadRequest, 400, "invalid_request_error"),
            (LocalError::HeaderTooLarge, 431, "invalid_request_error"),
            (LocalError::HeaderTimeout, 408, "invalid_request_error"),
            (LocalError::Overloaded, 503, "overloaded_error"),
            (LocalError::AllNetwork, 502, "api_error"),
            (LocalError::AllTimeout, 504, "api_error"),
            (LocalError::NoProvider, 503, "api_error"),
        ];
        for (kind, status, ty) in cases {
            assert_eq!(kind.status(), status);
            let v = json(&error_body(Api::Anthropic, kind, "m"));
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], ty);
            assert_eq!(v["error"]["message"], "m");
        }
    }

    #[test]
    fn openai_errors_carry_class_as_code() {
        let v = json(&error_body(Api::OpenAi, LocalError::Overloaded, "busy"));
        assert_eq!(v["error"]["message"], "busy");
        assert_eq!(v["error"]["code"], "concurrency");
        assert!(v["error"]["type"].is_string());
    }

    #[test]
    fn messages_are_json_escaped() {
        let v = json(&error_body(
            Api::Anthropic,
            LocalError::AllNetwork,
            "a \"quoted\"\nline",
        ));
        assert_eq!(v["error"]["message"], "a \"quoted\"\nline");
    }

    #[test]
    fn an_openai_route_answers_each_endpoint_in_its_own_dialect() {
        assert_eq!(
            client_api(Api::OpenAi, "/v1/responses"),
            Api::OpenAiResponses
        );
        assert_eq!(
            client_api(Api::OpenAi, "/openai/v1/responses"),
            Api::OpenAiResponses
        );
        assert_eq!(client_api(Api::OpenAi, "/v1/chat/completions"), Api::OpenAi);
        assert_eq!(
            client_api(Api::OpenAiResponses, "/v1/chat/completions"),
            Api::OpenAi
        );
        // Other OpenAI paths (retrieving a response, models) keep the route's.
        assert_eq!(client_api(Api::OpenAi, "/v1/responses/resp_1"), Api::OpenAi);
        assert_eq!(client_api(Api::OpenAi, "/v1/models"), Api::OpenAi);
        // Never across families: an Anthropic route stays Anthropic.
        assert_eq!(client_api(Api::Anthropic, "/v1/responses"), Api::Anthropic);
        assert_eq!(client_api(Api::Anthropic, "/v1/messages"), Api::Anthropic);
    }

    #[test]
    fn sse_error_events_are_complete_events() {
        let a = sse_error_event(Api::Anthropic, ErrorClass::Network, "cut");
        let s = std::str::from_utf8(&a).unwrap();
        assert!(s.starts_with("event: error\ndata: {"));
        assert!(s.ends_with("\n\n"));
        let data = s.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["error"]["type"], "api_error");

        let o = sse_error_event(Api::OpenAi, ErrorClass::Timeout, "idle");
        let s = std::str::from_utf8(&o).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(s.trim().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["error"]["code"], "timeout");
    }

    #[test]
    fn responses_clients_get_the_responses_error_event() {
        let r = sse_error_event(Api::OpenAiResponses, ErrorClass::Network, "cut");
        let s = std::str::from_utf8(&r).unwrap();
        assert!(s.starts_with("event: error\ndata: {"), "{s}");
        let v: serde_json::Value =
            serde_json::from_str(s.lines().nth(1).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "network");
        let b = json(&error_body(
            Api::OpenAiResponses,
            LocalError::BadRequest,
            "m",
        ));
        assert_eq!(b["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn dialect_guess() {
        assert_eq!(guess_api("/v1/chat/completions", false), Api::OpenAi);
        assert_eq!(guess_api("/v1/messages", false), Api::Anthropic);
        assert_eq!(guess_api("/other", true), Api::Anthropic);
        assert_eq!(guess_api("/other", false), Api::OpenAi);
    }
}
