//! What a cloud provider is sent for a client's request, decided before the
//! first attempt and the same for every attempt on that provider: whether it
//! can serve the request at all, the upstream path, the body, and the
//! headers it needs. Pure; signing and tokens are added per attempt
//! ([`super::sigv4`], [`super::vertex::authorization`]).

use super::bedrock;
use super::beta;
use super::body::{BodyError, ClientBody};
use super::vertex;
use crate::config::{ProviderKind, ProviderSettings};
use crate::outcome::ErrorClass;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

/// The only request a cloud serves: Anthropic's Messages call.
pub const MESSAGES_PATH: &str = "/v1/messages";

/// Whether a provider of `kind` can serve `method path` (the normalised
/// path, without query). Failover skips a provider that cannot: Bedrock's
/// InvokeModel and Vertex's rawPredict have no `/v1/models`, token
/// counting or batches in Anthropic's shape.
pub fn serves(kind: &ProviderKind, method: &Method, path: &str) -> bool {
    match kind {
        ProviderKind::Direct => true,
        ProviderKind::Bedrock { .. } | ProviderKind::Vertex { .. } => {
            method == Method::POST && path == MESSAGES_PATH
        }
    }
}

/// What the body says about the response that will come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// One JSON document.
    Json,
    /// Anthropic's SSE, passed through (Vertex).
    Sse,
    /// `application/vnd.amazon.eventstream` frames, to be decoded into SSE
    /// with [`super::eventstream::EventStreamDecoder`] (Bedrock).
    EventStream,
}

/// The request to send to a cloud provider, the same for every attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    /// Request path, percent-encoded, starting with '/'; goes after the
    /// provider's `upstream.path_prefix`, with no query string.
    pub path: String,
    pub body: Bytes,
    /// Headers to send with exactly these values (besides `host`,
    /// `content-length` and the per-attempt credentials), replacing any
    /// the client sent under these names.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub response: ResponseFormat,
    /// The model the cloud is asked for (after the `models` map).
    pub model: String,
}

impl UpstreamRequest {
    /// Whether the answer is a stream (a 2xx one, that is).
    pub fn streaming(&self) -> bool {
        self.response != ResponseFormat::Json
    }
}

/// Why a request cannot go to a cloud provider. Each is answered to the
/// client in Anthropic's dialect ([`CloudRequestError::body`]); only
/// [`CloudRequestError::NotServed`] lets failover try the next provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudRequestError {
    #[error(
        "{method} {path} is not available on {kind} providers: they serve POST /v1/messages only"
    )]
    NotServed {
        kind: &'static str,
        method: String,
        path: String,
    },
    #[error("{0}")]
    Body(#[from] BodyError),
    #[error(
        "the request body has no \"model\" string: {kind} providers need one to pick the model"
    )]
    NoModel { kind: &'static str },
    #[error("not a cloud provider")]
    NotCloud,
}

impl CloudRequestError {
    pub fn anthropic_type(&self) -> &'static str {
        match self {
            CloudRequestError::NotServed { .. } => "not_found_error",
            CloudRequestError::Body(_) | CloudRequestError::NoModel { .. } => {
                "invalid_request_error"
            }
            CloudRequestError::NotCloud => "api_error",
        }
    }

    pub fn status(&self) -> u16 {
        super::anthropic_status(self.anthropic_type())
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            CloudRequestError::NotCloud => ErrorClass::Internal,
            _ => ErrorClass::Request,
        }
    }

    /// The Anthropic error body for the client.
    pub fn body(&self) -> Bytes {
        super::anthropic_error_body(self.anthropic_type(), &self.to_string())
    }
}

/// Build the upstream request for a cloud provider from the client's
/// method, normalised path, headers and body.
pub fn prepare(
    provider: &ProviderSettings,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<UpstreamRequest, CloudRequestError> {
    let kind = provider.kind.as_str();
    if !provider.kind.is_cloud() {
        return Err(CloudRequestError::NotCloud);
    }
    if !serves(&provider.kind, method, path) {
        return Err(CloudRequestError::NotServed {
            kind,
            method: method.as_str().to_string(),
            path: path.to_string(),
        });
    }
    let client = ClientBody::parse(body)?;
    let model = client
        .model
        .as_deref()
        .filter(|m| !m.is_empty())
        .ok_or(CloudRequestError::NoModel { kind })?;
    let model = provider
        .models
        .get(model)
        .map_or(model, String::as_str)
        .to_string();
    let mut flags = beta::client_flags(headers);
    for f in &client.betas {
        beta::push_unique(&mut flags, f);
    }
    let flags = beta::filter(&provider.anthropic_beta, flags);
    let json = HeaderValue::from_static("application/json");
    let ct = (http::header::CONTENT_TYPE, json.clone());
    Ok(match &provider.kind {
        ProviderKind::Bedrock { .. } => {
            let body = client.write(&["stream"], bedrock::ANTHROPIC_VERSION, &flags);
            let (path, headers, response) = if client.stream {
                (
                    bedrock::stream_path(&model),
                    vec![
                        ct,
                        (
                            http::header::ACCEPT,
                            HeaderValue::from_static(bedrock::EVENTSTREAM),
                        ),
                        (HeaderName::from_static("x-amzn-bedrock-accept"), json),
                    ],
                    ResponseFormat::EventStream,
                )
            } else {
                (
                    bedrock::invoke_path(&model),
                    vec![ct, (http::header::ACCEPT, json)],
                    ResponseFormat::Json,
                )
            };
            UpstreamRequest {
                path,
                body,
                headers,
                response,
                model,
            }
        }
        ProviderKind::Vertex { region, project } => {
            // Vertex reads `stream` from the body as Anthropic does.
            let body = client.write(&[], vertex::ANTHROPIC_VERSION, &flags);
            UpstreamRequest {
                path: vertex::predict_path(project, region, &model, client.stream),
                body,
                // What Anthropic's own Vertex SDK sends, streams included.
                headers: vec![ct, (http::header::ACCEPT, json)],
                response: if client.stream {
                    ResponseFormat::Sse
                } else {
                    ResponseFormat::Json
                },
                model,
            }
        }
        ProviderKind::Direct => return Err(CloudRequestError::NotCloud),
    })
}

/// Whether a client header may go on to a provider of `kind`. A cloud gets
/// none of: the client's credentials, Anthropic's version and beta headers
/// (they travel in the body), the headers [`prepare`] sets, and the cloud's
/// own control headers (`x-amz-*` would spoil the signature, and
/// `x-goog-user-project` would bill another project).
pub fn forwards_client_header(kind: &ProviderKind, name: &str) -> bool {
    if !kind.is_cloud() {
        return true;
    }
    let n = name.to_ascii_lowercase();
    !(crate::headers::CREDENTIAL_HEADERS.contains(&n.as_str())
        || matches!(
            n.as_str(),
            "anthropic-version" | "anthropic-beta" | "content-type" | "accept" | "host"
        )
        || n.starts_with("x-amz-")
        || n.starts_with("x-amzn-")
        || n.starts_with("x-goog-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BetaFilter;
    use std::collections::BTreeMap;

    fn settings(kind: ProviderKind) -> ProviderSettings {
        let mut p = crate::config::builtin_default().providers[0].clone();
        p.kind = Some(kind.as_str().into());
        p.base_url = String::new();
        match &kind {
            ProviderKind::Bedrock { region } => p.region = Some(region.clone()),
            ProviderKind::Vertex { region, project } => {
                p.region = Some(region.clone());
                p.project = Some(project.clone());
            }
            ProviderKind::Direct => p.base_url = "https://api.anthropic.com".into(),
        }
        let mut f = crate::config::schema::FileConfig {
            providers: vec![p],
            ..crate::config::builtin_default()
        };
        f.routes.truncate(1);
        let c =
            crate::config::validate(&f, crate::config::ConfigSource::Builtin, &|_| None).unwrap();
        c.providers[0].clone()
    }

    fn bedrock() -> ProviderSettings {
        let mut s = settings(ProviderKind::Bedrock {
            region: "us-east-1".into(),
        });
        s.models = BTreeMap::from([(
            "claude-sonnet-4-5".to_string(),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0".to_string(),
        )]);
        s.anthropic_beta = BetaFilter {
            allow: vec![],
            deny: vec!["context-1m-2025-08-07".into()],
        };
        s
    }

    fn vertex(region: &str) -> ProviderSettings {
        settings(ProviderKind::Vertex {
            region: region.into(),
            project: "my-proj".into(),
        })
    }

    fn betas(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("anthropic-beta", HeaderValue::from_str(v).unwrap());
        h
    }

    fn header<'a>(r: &'a UpstreamRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn bedrock_streaming_request() {
        let body = br#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":5,"messages":[]}"#;
        let r = prepare(
            &bedrock(),
            &Method::POST,
            "/v1/messages",
            &betas("context-1m-2025-08-07, interleaved-thinking-2025-05-14"),
            body,
        )
        .unwrap();
        assert_eq!(
            r.path,
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
        );
        assert_eq!(r.response, ResponseFormat::EventStream);
        assert!(r.streaming());
        assert_eq!(r.model, "us.anthropic.claude-sonnet-4-5-20250929-v1:0");
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[],"anthropic_beta":["interleaved-thinking-2025-05-14"]}"#
        );
        assert_eq!(header(&r, "content-type"), Some("application/json"));
        assert_eq!(
            header(&r, "accept"),
            Some("application/vnd.amazon.eventstream")
        );
        assert_eq!(
            header(&r, "x-amzn-bedrock-accept"),
            Some("application/json")
        );
    }

    #[test]
    fn bedrock_plain_request_keeps_an_unmapped_model() {
        let body = br#"{"model":"anthropic.claude-3-haiku-20240307-v1:0","max_tokens":5,"messages":[],"stream":false}"#;
        let r = prepare(
            &bedrock(),
            &Method::POST,
            "/v1/messages",
            &HeaderMap::new(),
            body,
        )
        .unwrap();
        assert_eq!(
            r.path,
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke"
        );
        assert_eq!(r.response, ResponseFormat::Json);
        assert_eq!(header(&r, "accept"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v.get("stream").is_none() && v.get("model").is_none());
        assert!(v.get("anthropic_beta").is_none());
    }

    #[test]
    fn vertex_requests_by_region() {
        let body = br#"{"model":"claude-sonnet-4-5@20250929","stream":true,"anthropic_beta":["b-1"],"messages":[]}"#;
        let r = prepare(
            &vertex("europe-west1"),
            &Method::POST,
            "/v1/messages",
            &betas("b-2"),
            body,
        )
        .unwrap();
        assert_eq!(
            r.path,
            "/v1/projects/my-proj/locations/europe-west1/publishers/anthropic/models/claude-sonnet-4-5@20250929:streamRawPredict"
        );
        assert_eq!(r.response, ResponseFormat::Sse);
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"anthropic_version":"vertex-2023-10-16","stream":true,"messages":[],"anthropic_beta":["b-2","b-1"]}"#
        );
        let plain = br#"{"model":"claude-haiku-4-5@20251001","messages":[]}"#;
        let r = prepare(
            &vertex("global"),
            &Method::POST,
            "/v1/messages",
            &HeaderMap::new(),
            plain,
        )
        .unwrap();
        assert_eq!(
            r.path,
            "/v1/projects/my-proj/locations/global/publishers/anthropic/models/claude-haiku-4-5@20251001:rawPredict"
        );
        assert_eq!(r.response, ResponseFormat::Json);
        assert_eq!(vertex("global").upstream.host, "aiplatform.googleapis.com");
    }

    #[test]
    fn unserved_paths_and_bad_bodies_are_typed_errors() {
        let b = bedrock();
        let h = HeaderMap::new();
        for (m, p) in [
            (Method::POST, "/v1/messages/count_tokens"),
            (Method::GET, "/v1/models"),
            (Method::POST, "/v1/messages/batches"),
            (Method::GET, "/v1/messages"),
            (Method::POST, "/v1/chat/completions"),
        ] {
            assert!(!serves(&b.kind, &m, p), "{m} {p}");
            let e = prepare(&b, &m, p, &h, b"{}").unwrap_err();
            assert!(matches!(e, CloudRequestError::NotServed { .. }), "{e:?}");
            assert_eq!((e.status(), e.class()), (404, ErrorClass::Request));
            let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(v["error"]["type"], "not_found_error");
            assert!(v["error"]["message"].as_str().unwrap().contains(p));
        }
        assert!(serves(&ProviderKind::Direct, &Method::GET, "/v1/models"));
        let e = prepare(&b, &Method::POST, "/v1/messages", &h, b"[]").unwrap_err();
        assert_eq!(
            (e.status(), e.anthropic_type()),
            (400, "invalid_request_error")
        );
        let e = prepare(&b, &Method::POST, "/v1/messages", &h, br#"{"model":""}"#).unwrap_err();
        assert_eq!(e, CloudRequestError::NoModel { kind: "bedrock" });
        let direct = settings(ProviderKind::Direct);
        assert_eq!(
            prepare(&direct, &Method::POST, "/v1/messages", &h, b"{}"),
            Err(CloudRequestError::NotCloud)
        );
    }

    #[test]
    fn clouds_get_none_of_the_client_credentials_or_control_headers() {
        let b = bedrock().kind;
        for n in [
            "authorization",
            "X-Api-Key",
            "anthropic-version",
            "anthropic-beta",
            "content-type",
            "x-amz-date",
            "x-amz-security-token",
            "x-amzn-bedrock-trace",
            "x-goog-user-project",
        ] {
            assert!(!forwards_client_header(&b, n), "{n}");
        }
        assert!(forwards_client_header(&b, "user-agent"));
        assert!(forwards_client_header(
            &ProviderKind::Direct,
            "anthropic-beta"
        ));
    }
}
