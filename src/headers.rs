//! Header rules at the two edges: what goes to a provider (credentials
//! swapped, hop-by-hop removed, Host rewritten) and what goes back to the
//! client (hop-by-hop removed, `x-steadfast-*` and `x-request-id` added).

use http::header::{self, HeaderName};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_PROVIDER: &str = "x-steadfast-provider";
pub const X_ATTEMPTS: &str = "x-steadfast-attempts";
pub const X_ERROR_CLASS: &str = "x-steadfast-error-class";

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1),
/// plus the framing headers we always recompute.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Client credential headers. All are removed when the provider has its own
/// key; the one that carried a steadfast client token is always removed.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

fn is_hop_by_hop(name: &str, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name)
}

/// Header names listed in `Connection:` are hop-by-hop too.
fn connection_listed(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// What the upstream request needs to know about its provider.
pub struct UpstreamTarget<'a> {
    pub host_header: &'a str,
    pub path_prefix: &'a str,
    /// (header name, value) of the provider's own key, when it has one.
    pub key: Option<(&'a HeaderName, &'a http::HeaderValue)>,
}

/// Build the request sent to a provider from the client's request.
///
/// `drop_header` is the credential header that carried a steadfast client
/// token, which must never reach a provider.
pub fn upstream_request(
    client: &RequestHeader,
    target: &UpstreamTarget<'_>,
    drop_header: Option<&str>,
    request_id: &str,
    body_len: usize,
) -> Result<RequestHeader> {
    let pq = client
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let path = if target.path_prefix.is_empty() {
        std::borrow::Cow::Borrowed(pq)
    } else {
        std::borrow::Cow::Owned(format!("{}{}", target.path_prefix, pq))
    };
    let mut req = RequestHeader::build(
        client.method.clone(),
        path.as_bytes(),
        Some(client.headers.len() + 4),
    )?;
    let listed = connection_listed(&client.headers);
    for (name, value) in client.headers.iter() {
        let n = name.as_str();
        if is_hop_by_hop(n, &listed)
            || matches!(
                n,
                "host" | "content-length" | "expect" | "accept-encoding" | "x-request-id"
            )
        {
            continue;
        }
        if CREDENTIAL_HEADERS.contains(&n) && (target.key.is_some() || drop_header == Some(n)) {
            continue;
        }
        req.append_header(name.clone(), value.clone())?;
    }
    req.insert_header(header::HOST, target.host_header)?;
    if body_len > 0 || client.method != http::Method::GET && client.method != http::Method::HEAD {
        req.insert_header(header::CONTENT_LENGTH, body_len.to_string())?;
    }
    // Identity keeps usage accounting possible and costs nothing on the
    // loopback hop to the client; LLM bodies are small next to their latency.
    req.insert_header(header::ACCEPT_ENCODING, "identity")?;
    req.insert_header(X_REQUEST_ID, request_id)?;
    if let Some((name, value)) = target.key {
        req.insert_header(name.clone(), value.clone())?;
    }
    Ok(req)
}

/// The provider's response header, cleaned for the client in place (it is
/// ours already: no second copy of every header).
pub fn client_response(mut resp: ResponseHeader) -> ResponseHeader {
    let listed = connection_listed(&resp.headers);
    let drop: Vec<HeaderName> = resp
        .headers
        .keys()
        .filter(|n| is_hop_by_hop(n.as_str(), &listed))
        .cloned()
        .collect();
    for name in drop {
        resp.remove_header(&name);
    }
    resp
}

/// Stamp the `x-steadfast-*` headers (SPEC §4) on a response to the client.
pub fn stamp(
    resp: &mut ResponseHeader,
    request_id: &str,
    provider: &str,
    attempts: u32,
    error_class: Option<&str>,
) -> Result<()> {
    resp.insert_header(X_REQUEST_ID, request_id)?;
    resp.insert_header(X_PROVIDER, provider)?;
    resp.insert_header(X_ATTEMPTS, attempts.to_string())?;
    match error_class {
        Some(c) => resp.insert_header(X_ERROR_CLASS, c)?,
        None => {
            resp.remove_header(X_ERROR_CLASS);
        }
    }
    Ok(())
}

/// A request id: the client's when it sent a sane one, else a fresh random one.
pub fn request_id(client: &RequestHeader) -> String {
    if let Some(v) = client
        .headers
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
    {
        if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) {
            return v.to_string();
        }
    }
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The value of a header as text, if present and valid.
pub fn header_str<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Credential the client presented: `Authorization: Bearer X`, or `x-api-key: X`
/// / `api-key: X`, with the header it came in.
pub fn client_credentials(h: &http::HeaderMap) -> impl Iterator<Item = (&'static str, &str)> {
    CREDENTIAL_HEADERS.iter().filter_map(move |name| {
        let v = header_str(h, name)?;
        let token = if *name == "authorization" {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))?
        } else {
            v
        };
        Some((*name, token.trim()))
    })
}

pub fn bad_header(e: impl std::fmt::Display) -> Box<Error> {
    Error::explain(ErrorType::InternalError, format!("invalid header: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_req() -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/messages?beta=true", None).unwrap();
        r.insert_header("host", "127.0.0.1:8787").unwrap();
        r.insert_header("authorization", "Bearer client-secret")
            .unwrap();
        r.insert_header("x-api-key", "client-key").unwrap();
        r.insert_header("anthropic-version", "2023-06-01").unwrap();
        r.insert_header("connection", "keep-alive, x-hop").unwrap();
        r.insert_header("x-hop", "1").unwrap();
        r.insert_header("transfer-encoding", "chunked").unwrap();
        r.insert_header("accept-encoding", "gzip").unwrap();
        r.insert_header("content-length", "999").unwrap();
        r
    }

    #[test]
    fn provider_key_replaces_every_client_credential() {
        let name = HeaderName::from_static("x-api-key");
        let value = http::HeaderValue::from_static("provider-key");
        let t = UpstreamTarget {
            host_header: "api.anthropic.com",
            path_prefix: "/base",
            key: Some((&name, &value)),
        };
        let r = upstream_request(&client_req(), &t, None, "rid", 12).unwrap();
        assert_eq!(r.uri.to_string(), "/base/v1/messages?beta=true");
        assert_eq!(r.headers["host"], "api.anthropic.com");
        assert_eq!(r.headers["x-api-key"], "provider-key");
        assert!(r.headers.get("authorization").is_none());
        assert_eq!(r.headers["content-length"], "12");
        assert_eq!(r.headers["anthropic-version"], "2023-06-01");
        assert_eq!(r.headers["x-request-id"], "rid");
        assert_eq!(r.headers["accept-encoding"], "identity");
        for h in ["connection", "x-hop", "transfer-encoding"] {
            assert!(r.headers.get(h).is_none(), "{h} forwarded");
        }
    }

    #[test]
    fn passthrough_keeps_client_key_but_drops_steadfast_token() {
        let t = UpstreamTarget {
            host_header: "h",
            path_prefix: "",
            key: None,
        };
        let r = upstream_request(&client_req(), &t, Some("authorization"), "rid", 0).unwrap();
        assert!(r.headers.get("authorization").is_none());
        assert_eq!(r.headers["x-api-key"], "client-key");
        assert_eq!(r.uri.to_string(), "/v1/messages?beta=true");
        assert_eq!(r.headers["content-length"], "0");
    }

    #[test]
    fn response_headers_are_cleaned_and_stamped() {
        let mut up = ResponseHeader::build(429, None).unwrap();
        up.insert_header("retry-after", "7").unwrap();
        up.insert_header("transfer-encoding", "chunked").unwrap();
        up.insert_header("connection", "close").unwrap();
        let mut r = client_response(up);
        stamp(&mut r, "rid", "p1", 2, Some("rate_limit")).unwrap();
        assert_eq!(r.status.as_u16(), 429);
        assert_eq!(r.headers["retry-after"], "7");
        assert!(r.headers.get("transfer-encoding").is_none());
        assert!(r.headers.get("connection").is_none());
        assert_eq!(r.headers[X_PROVIDER], "p1");
        assert_eq!(r.headers[X_ATTEMPTS], "2");
        assert_eq!(r.headers[X_ERROR_CLASS], "rate_limit");
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut r = client_req();
        let generated = request_id(&r);
        assert_eq!(generated.len(), 32);
        r.insert_header("x-request-id", "abc-123").unwrap();
        assert_eq!(request_id(&r), "abc-123");
        r.insert_header("x-request-id", "has space").unwrap();
        assert_ne!(request_id(&r), "has space");
    }

    #[test]
    fn credentials_are_found_in_all_forms() {
        let r = client_req();
        let found: Vec<_> = client_credentials(&r.headers).collect();
        assert!(found.contains(&("authorization", "client-secret")));
        assert!(found.contains(&("x-api-key", "client-key")));
    }
}
