//! Header rules at the two edges: what goes to a provider (credentials
//! swapped, hop-by-hop removed, Host rewritten) and what goes back to the
//! client (hop-by-hop removed, `x-steadfast-*` and `x-request-id` added).

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderName};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use std::fmt::Write as _;

pub const X_REQUEST_ID: &str = "x-request-id";
pub const X_PROVIDER: &str = "x-steadfast-provider";
pub const X_ATTEMPTS: &str = "x-steadfast-attempts";
pub const X_ERROR_CLASS: &str = "x-steadfast-error-class";
/// The provider's own request id, kept for its support.
pub const X_UPSTREAM_REQUEST_ID: &str = "x-steadfast-upstream-request-id";
/// The official SDKs' retry hint: "false" stops their automatic retries.
pub const X_SHOULD_RETRY: &str = "x-should-retry";

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
/// key; any header that carries a steadfast client token is always removed
/// ([`crate::credentials::carrying_tokens`]).
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
    /// The path to send instead of the client's, without its query: a
    /// translated request goes to the target dialect's endpoint.
    pub path: Option<&'a str>,
    /// Client headers that mean nothing, or the wrong thing, to this
    /// provider (another dialect's version and beta headers).
    pub drop: &'a [&'a str],
    /// Headers this provider needs, replacing any the client sent.
    pub extra: &'a [(&'a str, &'a str)],
    /// Every client credential header goes, whether or not the provider
    /// has a key of its own: a key for one vendor never reaches another.
    pub drop_credentials: bool,
}

impl<'a> UpstreamTarget<'a> {
    /// The client's request, forwarded: only host and key swapped.
    pub fn direct(
        host_header: &'a str,
        path_prefix: &'a str,
        key: Option<(&'a HeaderName, &'a http::HeaderValue)>,
    ) -> UpstreamTarget<'a> {
        UpstreamTarget {
            host_header,
            path_prefix,
            key,
            path: None,
            drop: &[],
            extra: &[],
            drop_credentials: false,
        }
    }
}

/// Build the request head sent to a provider, as HTTP/1.1 wire bytes.
///
/// Written straight to the wire rather than through a `RequestHeader`: the
/// head and the body then leave in one write (one syscall and one wake-up of
/// the provider per attempt, not two), and no header map is built only to be
/// serialised at once.
///
/// `path` is the normalised request path ([`crate::path::normalise`]): the
/// client's raw one never goes upstream, so the provider resolves nothing
/// steadfast did not match a route against. The query goes as the client
/// sent it. `strip` names the headers that carry a steadfast client token,
/// which must never reach a provider.
pub fn upstream_request(
    client: &RequestHeader,
    target: &UpstreamTarget<'_>,
    path: &str,
    strip: &[HeaderName],
    request_id: &str,
    body_len: usize,
) -> Result<BytesMut> {
    upstream_request_traced(client, target, path, strip, request_id, body_len, None)
}

/// [`upstream_request`] for a traced request: the client's `traceparent`
/// and `tracestate` are replaced by `trace`'s, which names the attempt's
/// span as the provider's parent. Untraced, they pass through unchanged.
pub fn upstream_request_traced(
    client: &RequestHeader,
    target: &UpstreamTarget<'_>,
    path: &str,
    strip: &[HeaderName],
    request_id: &str,
    body_len: usize,
    trace: Option<&crate::otel::Propagation<'_>>,
) -> Result<BytesMut> {
    let (path, query) = match target.path {
        Some(p) => (p, None),
        None => (path, client.uri.query()),
    };
    let target_ok = |b: &[u8]| b.iter().all(|c| c.is_ascii_graphic());
    if !target_ok(target.path_prefix.as_bytes())
        || !path.starts_with('/')
        || !target_ok(path.as_bytes())
        || !query.is_none_or(|q| target_ok(q.as_bytes()))
    {
        return Error::e_explain(ErrorType::InvalidHTTPHeader, "request target not sendable");
    }
    let listed = connection_listed(&client.headers);
    let mut w = BytesMut::with_capacity(512 + client.headers.len() * 48);
    w.put_slice(client.method.as_str().as_bytes());
    w.put_u8(b' ');
    w.put_slice(target.path_prefix.as_bytes());
    w.put_slice(path.as_bytes());
    if let Some(q) = query {
        w.put_u8(b'?');
        w.put_slice(q.as_bytes());
    }
    w.put_slice(b" HTTP/1.1\r\n");
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
        if ((target.key.is_some() || target.drop_credentials) && CREDENTIAL_HEADERS.contains(&n))
            || strip.contains(name)
            || target.drop.contains(&n)
            || target.extra.iter().any(|(e, _)| *e == n)
        {
            continue;
        }
        if trace.is_some() && matches!(n, "traceparent" | "tracestate") {
            continue;
        }
        put_header(&mut w, n.as_bytes(), value.as_bytes())?;
    }
    put_header(&mut w, b"host", target.host_header.as_bytes())?;
    for (name, value) in target.extra {
        put_header(&mut w, name.as_bytes(), value.as_bytes())?;
    }
    if body_len > 0 || client.method != http::Method::GET && client.method != http::Method::HEAD {
        // Digits written in place: no String per attempt.
        w.put_slice(b"content-length: ");
        let _ = write!(w, "{body_len}");
        w.put_slice(b"\r\n");
    }
    // Identity keeps usage accounting possible and costs nothing on the
    // loopback hop to the client; LLM bodies are small next to their latency.
    put_header(&mut w, b"accept-encoding", b"identity")?;
    put_header(&mut w, X_REQUEST_ID.as_bytes(), request_id.as_bytes())?;
    if let Some((name, value)) = target.key {
        put_header(&mut w, name.as_str().as_bytes(), value.as_bytes())?;
    }
    if let Some(t) = trace {
        put_header(&mut w, b"traceparent", &t.traceparent)?;
        if let Some(state) = t.tracestate {
            put_header(&mut w, b"tracestate", state.as_bytes())?;
        }
    }
    w.put_slice(b"\r\n");
    Ok(w)
}

/// One `name: value` line. Parsed headers and `HeaderValue`s cannot hold a
/// line break, but the host and request id are plain strings: check them all.
fn put_header(w: &mut BytesMut, name: &[u8], value: &[u8]) -> Result<()> {
    if value.iter().any(|&c| c == b'\r' || c == b'\n' || c == 0) {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            format!("header {} has a line break", String::from_utf8_lossy(name)),
        );
    }
    w.put_slice(name);
    w.put_slice(b": ");
    w.put_slice(value);
    w.put_slice(b"\r\n");
    Ok(())
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

/// The provider's id for a request, from its response: Anthropic's
/// `request-id`, else the OpenAI-style `x-request-id`, else AWS's
/// `x-amzn-requestid` (Bedrock). Upstream bytes are hostile: only a short
/// run of visible ASCII is taken.
pub fn upstream_request_id(h: &http::HeaderMap) -> Option<String> {
    ["request-id", X_REQUEST_ID, "x-amzn-requestid"]
        .iter()
        .filter_map(|n| h.get(*n))
        .map(http::HeaderValue::as_bytes)
        .find(|v| !v.is_empty() && v.len() <= 128 && v.iter().all(u8::is_ascii_graphic))
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

/// A provider's response header made into the client's: hop-by-hop
/// headers removed, the provider's request id kept as
/// `x-steadfast-upstream-request-id` (our `x-request-id` replaces its own),
/// and the `x-steadfast-*` headers stamped.
pub fn for_client(
    head: ResponseHeader,
    request_id: &str,
    provider: &str,
    attempts: u32,
    error_class: Option<&str>,
) -> Result<ResponseHeader> {
    let upstream_id = upstream_request_id(&head.headers);
    let mut resp = client_response(head);
    match upstream_id {
        Some(id) => resp.insert_header(X_UPSTREAM_REQUEST_ID, id)?,
        None => {
            resp.remove_header(X_UPSTREAM_REQUEST_ID);
        }
    }
    stamp(&mut resp, request_id, provider, attempts, error_class)?;
    Ok(resp)
}

/// Stamp the `x-steadfast-*` headers on a response to the client.
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
    new_request_id()
}

/// A fresh random request id.
pub fn new_request_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The value of a header as text, if present and valid.
pub fn header_str<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
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

    /// The request line and headers of a wire head, checked for framing.
    struct Wire {
        target: String,
        headers: Vec<(String, String)>,
    }

    impl Wire {
        fn parse(w: &[u8]) -> Wire {
            let text = std::str::from_utf8(w).unwrap();
            let head = text
                .strip_suffix("\r\n\r\n")
                .expect("head ends with an empty line");
            let mut lines = head.split("\r\n");
            let line: Vec<&str> = lines.next().unwrap().split(' ').collect();
            assert_eq!(line.len(), 3, "request line {line:?}");
            assert_eq!(line[2], "HTTP/1.1");
            let headers = lines
                .map(|l| {
                    let (n, v) = l.split_once(": ").expect("name: value");
                    (n.to_string(), v.to_string())
                })
                .collect();
            Wire {
                target: line[1].to_string(),
                headers,
            }
        }

        fn get(&self, name: &str) -> Option<&str> {
            let mut all = self.headers.iter().filter(|(n, _)| n == name);
            let first = all.next().map(|(_, v)| v.as_str());
            assert!(all.next().is_none(), "{name} sent twice");
            first
        }
    }

    #[test]
    fn provider_key_replaces_every_client_credential() {
        let name = HeaderName::from_static("x-api-key");
        let value = http::HeaderValue::from_static("provider-key");
        let t = UpstreamTarget::direct("api.anthropic.com", "/base", Some((&name, &value)));
        let w = upstream_request(&client_req(), &t, "/v1/messages", &[], "rid", 12).unwrap();
        assert!(w.starts_with(b"POST "));
        let r = Wire::parse(&w);
        assert_eq!(r.target, "/base/v1/messages?beta=true");
        assert_eq!(r.get("host"), Some("api.anthropic.com"));
        assert_eq!(r.get("x-api-key"), Some("provider-key"));
        assert_eq!(r.get("authorization"), None);
        assert_eq!(r.get("content-length"), Some("12"));
        assert_eq!(r.get("anthropic-version"), Some("2023-06-01"));
        assert_eq!(r.get("x-request-id"), Some("rid"));
        assert_eq!(r.get("accept-encoding"), Some("identity"));
        for h in ["connection", "x-hop", "transfer-encoding"] {
            assert_eq!(r.get(h), None, "{h} forwarded");
        }
    }

    #[test]
    fn passthrough_keeps_client_key_but_drops_steadfast_token() {
        let t = UpstreamTarget::direct("h", "", None);
        let strip = [header::AUTHORIZATION];
        let r = Wire::parse(
            &upstream_request(&client_req(), &t, "/v1/messages", &strip, "rid", 0).unwrap(),
        );
        assert_eq!(r.get("authorization"), None);
        assert_eq!(r.get("x-api-key"), Some("client-key"));
        assert_eq!(r.target, "/v1/messages?beta=true");
        assert_eq!(r.get("content-length"), Some("0"));
    }

    #[test]
    fn bodyless_get_has_no_length_and_line_breaks_are_refused() {
        let mut get = RequestHeader::build("GET", b"/v1/models", None).unwrap();
        get.insert_header("x-keep", "yes").unwrap();
        let t = UpstreamTarget::direct("h", "", None);
        let r = Wire::parse(&upstream_request(&get, &t, "/v1/models", &[], "rid", 0).unwrap());
        assert_eq!(r.get("content-length"), None);
        assert_eq!(r.get("x-keep"), Some("yes"));
        assert!(upstream_request(&get, &t, "/v1/models", &[], "bad\r\nx-evil: 1", 0).is_err());
        let evil_host = UpstreamTarget {
            host_header: "h\r\nx-evil: 1",
            ..t
        };
        assert!(upstream_request(&get, &evil_host, "/v1/models", &[], "rid", 0).is_err());
        let spaced = UpstreamTarget {
            path_prefix: "/a b",
            ..t
        };
        assert!(upstream_request(&get, &spaced, "/v1/models", &[], "rid", 0).is_err());
        for bad_path in ["/a b", "v1/models", "", "/x\r\nx-evil: 1"] {
            assert!(upstream_request(&get, &t, bad_path, &[], "rid", 0).is_err());
        }
    }

    #[test]
    fn the_given_path_goes_upstream_with_the_clients_query() {
        let raw = RequestHeader::build("POST", b"/v1/messages/../../admin?beta=true&x=../y", None)
            .unwrap();
        let t = UpstreamTarget::direct("h", "/prefix", None);
        let r = Wire::parse(&upstream_request(&raw, &t, "/admin", &[], "rid", 0).unwrap());
        assert_eq!(r.target, "/prefix/admin?beta=true&x=../y");
        let no_query = RequestHeader::build("POST", b"/v1/messages", None).unwrap();
        let r =
            Wire::parse(&upstream_request(&no_query, &t, "/v1/messages", &[], "rid", 0).unwrap());
        assert_eq!(r.target, "/prefix/v1/messages");
    }

    #[test]
    fn every_stripped_header_is_left_out() {
        let mut req = client_req();
        req.insert_header("x-custom", "tok").unwrap();
        let t = UpstreamTarget::direct("h", "", None);
        let strip = [
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("x-custom"),
        ];
        let r = Wire::parse(&upstream_request(&req, &t, "/v1/messages", &strip, "rid", 0).unwrap());
        for h in ["authorization", "x-api-key", "x-custom"] {
            assert_eq!(r.get(h), None, "{h} forwarded");
        }
        assert_eq!(r.get("anthropic-version"), Some("2023-06-01"));
    }

    #[test]
    fn a_traced_attempt_names_its_own_span_and_never_the_clients() {
        let mut req = client_req();
        let client_tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        req.append_header("traceparent", client_tp).unwrap();
        req.append_header("traceparent", "junk").unwrap();
        req.append_header("tracestate", "evil=1").unwrap();
        let t = UpstreamTarget::direct("h", "", None);
        let ours = crate::otel::Propagation {
            traceparent: crate::otel::format_traceparent(
                0x4bf92f3577b34da6a3ce929d0e0e4736,
                0xab,
                true,
            ),
            tracestate: Some("rojo=1"),
        };
        let w =
            upstream_request_traced(&req, &t, "/v1/messages", &[], "rid", 0, Some(&ours)).unwrap();
        let r = Wire::parse(&w);
        assert_eq!(
            r.get("traceparent"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00000000000000ab-01")
        );
        assert_eq!(r.get("tracestate"), Some("rojo=1"));
        // No tracestate of the client's: none is sent.
        let bare = crate::otel::Propagation {
            tracestate: None,
            ..ours
        };
        let r = Wire::parse(
            &upstream_request_traced(&req, &t, "/v1/messages", &[], "rid", 0, Some(&bare)).unwrap(),
        );
        assert_eq!(r.get("tracestate"), None);
        // Tracing off: a transparent proxy, the client's headers as sent.
        let w = upstream_request(&req, &t, "/v1/messages", &[], "rid", 0).unwrap();
        let text = String::from_utf8_lossy(&w);
        assert!(
            text.contains(&format!("traceparent: {client_tp}\r\n")),
            "{text}"
        );
        assert!(text.contains("tracestate: evil=1\r\n"), "{text}");
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
    fn provider_request_id_is_kept_apart_from_ours() {
        let mut up = ResponseHeader::build(200, None).unwrap();
        up.insert_header("x-request-id", "req_openai_1").unwrap();
        let r = for_client(up, "ours", "p1", 1, None).unwrap();
        assert_eq!(r.headers[X_REQUEST_ID], "ours");
        assert_eq!(r.headers[X_UPSTREAM_REQUEST_ID], "req_openai_1");

        let mut up = ResponseHeader::build(529, None).unwrap();
        up.insert_header("request-id", "req_011CS").unwrap();
        up.insert_header("x-request-id", "other").unwrap();
        let r = for_client(up, "ours", "p1", 2, Some("server")).unwrap();
        assert_eq!(r.headers[X_UPSTREAM_REQUEST_ID], "req_011CS");
        assert_eq!(r.headers["request-id"], "req_011CS");

        // A provider cannot plant one of its own choosing, nor junk.
        let mut up = ResponseHeader::build(200, None).unwrap();
        up.insert_header(X_UPSTREAM_REQUEST_ID, "forged").unwrap();
        up.insert_header("request-id", "has space").unwrap();
        let r = for_client(up, "ours", "p1", 1, None).unwrap();
        assert!(r.headers.get(X_UPSTREAM_REQUEST_ID).is_none());
        let mut h = http::HeaderMap::new();
        h.insert("request-id", "x".repeat(129).parse().unwrap());
        assert_eq!(upstream_request_id(&h), None);
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
}
