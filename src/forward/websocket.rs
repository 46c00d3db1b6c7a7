//! WebSocket passthrough (OpenAI Realtime, Responses over WebSocket): an
//! HTTP/1.1 `Upgrade: websocket` request goes through the same failover
//! loop as any request (client auth, limiter slots, provider key, the
//! credential rule), keeping its upgrade headers. Anything but a valid 101
//! is an ordinary answer, classified and failed over like HTTP; a 101 hands
//! both connections to [`crate::tunnel`], which copies bytes until either
//! side closes.
//!
//! Pingora's sessions parse HTTP on both sides and may hold bytes that
//! belong to the tunnel (a provider's first frame read together with its
//! 101, a client's early frame read with its request). They are taken out
//! before the raw streams are, so nothing is lost; the client's session is
//! swapped for an inert placeholder that Pingora finishes afterwards.

use super::attempts::{describe, AttemptEnd, Attempts, Try};
use super::plan::Failed;
use super::Ctx;
use crate::headers;
use crate::outcome::{self, AttemptResult, ErrorClass};
use crate::record::WebSocketRecord;
use crate::telemetry;
use crate::tunnel::{self, TunnelEnd};
use bytes::{BufMut, Bytes, BytesMut};
use futures::FutureExt;
use http::header::{self, HeaderValue};
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::protocols::http::v1::server::HttpSession as ClientH1;
use pingora_core::protocols::http::ServerSession;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::time::Instant;

/// What kind of upgrade a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Upgrade {
    /// A plain request (an `Upgrade` to anything but WebSocket included:
    /// it goes on as HTTP, its hop-by-hop `Upgrade` removed).
    None,
    /// An HTTP/1.1 WebSocket opening handshake; the client's `Upgrade`.
    WebSocket(HeaderValue),
    /// A tunnel steadfast cannot offer: answered 400 with this message.
    Unsupported(&'static str),
}

/// Whether a comma-separated header holds `token` (case-insensitive; a
/// protocol version after `/` is ignored).
fn has_token<'a>(values: impl IntoIterator<Item = &'a HeaderValue>, token: &str) -> bool {
    values.into_iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                let name = t.trim().split('/').next().unwrap_or("");
                name.eq_ignore_ascii_case(token)
            })
        })
    })
}

/// Classify a request by the upgrade it asks for (RFC 6455 §4.1, RFC 9110
/// §7.8). Only HTTP/1.1 can upgrade; over HTTP/2 a WebSocket is an extended
/// CONNECT (RFC 8441), which steadfast does not offer (nor advertises).
pub(super) fn classify(req: &RequestHeader) -> Upgrade {
    if req.method == http::Method::CONNECT {
        return Upgrade::Unsupported(if req.version == http::Version::HTTP_2 {
            "WebSocket over HTTP/2 (extended CONNECT) is not supported; open the WebSocket over HTTP/1.1"
        } else {
            "CONNECT is not supported"
        });
    }
    if req.version != http::Version::HTTP_11 {
        return Upgrade::None;
    }
    let Some(upgrade) = req.headers.get(header::UPGRADE) else {
        return Upgrade::None;
    };
    if !has_token(req.headers.get_all(header::CONNECTION), "upgrade")
        || !has_token([upgrade], "websocket")
    {
        return Upgrade::None;
    }
    Upgrade::WebSocket(upgrade.clone())
}

/// Browser clients cannot set headers, so OpenAI accepts the key as a
/// subprotocol (`openai-insecure-api-key.<key>`). It is a client credential
/// like `Authorization`: removed when the provider has its own key.
const KEY_SUBPROTOCOL: &str = "openai-insecure-api-key.";

fn is_key_subprotocol(token: &str) -> bool {
    token
        .get(..KEY_SUBPROTOCOL.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(KEY_SUBPROTOCOL))
}

/// The client's request without a key subprotocol, when it offers one and
/// the provider has a key of its own (`None`: send the request as it is).
pub(super) fn without_key_subprotocol(
    req: &RequestHeader,
    provider_has_key: bool,
) -> Option<RequestHeader> {
    if !provider_has_key {
        return None;
    }
    let offered: Vec<&str> = req
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if !offered.iter().any(|t| is_key_subprotocol(t)) {
        return None;
    }
    let kept: Vec<&str> = offered
        .into_iter()
        .filter(|t| !is_key_subprotocol(t))
        .collect();
    let mut r = req.clone();
    r.remove_header(&header::SEC_WEBSOCKET_PROTOCOL);
    if !kept.is_empty() {
        // Made of tokens of a valid header value joined by ", ": valid.
        r.insert_header(header::SEC_WEBSOCKET_PROTOCOL, kept.join(", "))
            .ok()?;
    }
    Some(r)
}

/// A WebSocket handshake's head: the one [`headers::upstream_request`]
/// built by the HTTP rules (credentials, Host, hop-by-hop, request id),
/// plus the `Upgrade` / `Connection: upgrade` pair those rules remove from
/// plain requests. `Sec-WebSocket-*` are end-to-end and already there.
pub(super) fn with_upgrade(mut head: BytesMut, upgrade: &HeaderValue) -> Result<BytesMut> {
    // The head ends with an empty line; the upgrade pair goes before it.
    if !head.ends_with(b"\r\n\r\n") {
        return Error::e_explain(ErrorType::InternalError, "request head is not terminated");
    }
    head.truncate(head.len() - 2);
    head.put_slice(b"connection: upgrade\r\nupgrade: ");
    head.put_slice(upgrade.as_bytes());
    head.put_slice(b"\r\n\r\n");
    Ok(head)
}

/// The 101 for the client, from the provider's: its end-to-end headers
/// (`Sec-WebSocket-Accept`, `-Protocol`, `-Extensions`) as they are, the
/// upgrade pair, and the `x-steadfast-*` stamp. `Err` (a detail) when the
/// 101 does not switch to WebSocket or claims a body, which a 101 cannot
/// have (RFC 9110 §8.6): a protocol error, not a tunnel.
fn switching_response(
    head: ResponseHeader,
    request_id: &str,
    provider: &str,
    attempts: u32,
) -> std::result::Result<ResponseHeader, String> {
    let upgrade = match head.headers.get(header::UPGRADE) {
        Some(v) if has_token([v], "websocket") => v.clone(),
        Some(_) => return Err("101 switched to another protocol than websocket".into()),
        None => return Err("101 without an Upgrade header".into()),
    };
    if head.headers.contains_key(header::CONTENT_LENGTH)
        || head.headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Err("101 with body framing headers".into());
    }
    let mut resp = headers::client_response(head);
    // Pingora's session treats only an HTTP/1.1 101 as a switch.
    resp.set_version(http::Version::HTTP_11);
    let stamped = resp
        .insert_header(header::UPGRADE, upgrade)
        .and_then(|_| resp.insert_header(header::CONNECTION, "upgrade"))
        .and_then(|_| headers::stamp(&mut resp, request_id, provider, attempts, None));
    match stamped {
        Ok(()) => Ok(resp),
        Err(e) => Err(describe(&e)),
    }
}

/// Bytes the provider sent right behind its 101, which Pingora's parser
/// read along with the head (a server may send its first frame in the same
/// packet). The session has no call that returns only buffered bytes, so
/// its body read is polled once: buffered bytes come back at once; an empty
/// buffer means a socket read, which either has data (tunnel bytes too) or
/// is pending and dropped without having consumed anything.
fn upstream_leftover(up: &mut UpstreamSession) -> Result<Option<Bytes>> {
    match up.read_body_bytes().now_or_never() {
        None => Ok(Some(Bytes::new())),
        Some(r) => r,
    }
}

/// The same for the client: after its 101 Pingora reads the rest of the
/// connection as raw bytes, starting with any it had buffered (a frame
/// sent right behind the request). A client that already closed or broke
/// is seen by the tunnel's first read, so only bytes matter here.
fn client_leftover(h1: &mut ClientH1) -> Bytes {
    match h1.read_body_bytes().now_or_never() {
        Some(Ok(Some(b))) => b,
        _ => Bytes::new(),
    }
}

/// What stands in for the client's session once its connection is taken
/// for the tunnel: a parsed request on an in-memory stream, so that
/// whatever Pingora asks of the session afterwards (request summary,
/// finish) is answered, and nothing reaches the real connection.
async fn placeholder() -> ServerSession {
    let stream = std::io::Cursor::new(b"GET / HTTP/1.1\r\nhost: steadfast\r\n\r\n".to_vec());
    let mut p = ServerSession::new_http1(Box::new(stream));
    // Parsing a complete head from memory cannot fail or wait.
    let _ = p.read_request().await;
    p
}

/// Take the client's HTTP/1 session out of Pingora's, leaving the
/// placeholder (`None`, and nothing changed, for another kind of session).
async fn take_client(s: &mut Session) -> Option<ClientH1> {
    s.as_downstream().as_http1()?;
    match std::mem::replace(s.as_downstream_mut(), placeholder().await) {
        ServerSession::H1(h1) => Some(h1),
        other => {
            *s.as_downstream_mut() = other;
            None
        }
    }
}

impl Attempts<'_> {
    /// The provider switched protocols: answer the client's handshake and
    /// tunnel until either side closes. Failures before the client's 101
    /// leave nothing sent, so the loop tries the next provider.
    pub(super) async fn tunnel(
        &mut self,
        s: &mut Session,
        ctx: &mut Ctx,
        t: Try,
        mut up: UpstreamSession,
        head: ResponseHeader,
    ) -> AttemptEnd {
        let p = t.p.clone();
        let resp = match switching_response(head, &ctx.rec.request_id, p.name(), self.plan.made()) {
            Ok(r) => r,
            Err(detail) => {
                return self.fail(
                    ctx,
                    &t,
                    Failed::new(ErrorClass::Network, false),
                    detail,
                    None,
                    None,
                )
            }
        };
        let from_upstream = match upstream_leftover(&mut up) {
            Ok(Some(b)) => b,
            Ok(None) => {
                let detail = "closed the connection right after its 101".to_string();
                return self.fail(
                    ctx,
                    &t,
                    Failed::new(ErrorClass::Network, false),
                    detail,
                    None,
                    None,
                );
            }
            Err(e) => {
                let class = outcome::classify_transport(e.etype());
                let failed = Failed::new(class, false);
                return self.fail(ctx, &t, failed, describe(&e), None, None);
            }
        };
        let upstream = up.into_inner();
        let Some(mut h1) = take_client(s).await else {
            // Not reached: only HTTP/1.1 requests are upgrades.
            let detail = "the client connection cannot be upgraded".to_string();
            return self.fail(
                ctx,
                &t,
                Failed::new(ErrorClass::Request, false),
                detail,
                None,
                None,
            );
        };
        // Committed: no attempt will need the request body again.
        self.body = Bytes::new();
        ctx.committed = true;
        ctx.rec.provider = Some(p.name().to_string());
        ctx.rec.status = 101;
        ctx.rec.class = None;
        if let Err(e) = h1.write_response_header(Box::new(resp)).await {
            return self.client_left(ctx, &t, e);
        }
        ctx.rec.ttfb = Some(ctx.rec.started.elapsed());
        self.judge(ctx, &t, AttemptResult::Success, None);
        let from_client = client_leftover(&mut h1);
        let client = h1.into_inner();

        let open = telemetry::websocket_opened(&ctx.rec, p.name());
        let opened = Instant::now();
        // No total_ms cut: a Realtime session lasts as long as the
        // conversation. A tunnel ends when a side closes, when nothing
        // moves either way for stream_idle_ms, or at drain.
        let summary = tunnel::run(
            client,
            upstream,
            from_client,
            from_upstream,
            p.settings.timeouts.stream_idle,
            &|dir, n| open.count(dir, n),
        )
        .await;
        drop(open);
        ctx.rec.upstream_wait += opened.elapsed();
        if summary.end == TunnelEnd::UpstreamError {
            ctx.rec.class = Some(ErrorClass::Network);
        }
        ctx.rec.websocket = Some(WebSocketRecord {
            end: Some(summary.end),
            detail: summary.detail,
            from_client: summary.from_client,
            from_upstream: summary.from_upstream,
            open_for: opened.elapsed(),
        });
        AttemptEnd::Finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::UpstreamTarget;

    fn req(lines: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/v1/realtime?model=m", None).unwrap();
        for (n, v) in lines {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn only_an_http11_websocket_handshake_is_an_upgrade() {
        let ws = [("upgrade", "websocket"), ("connection", "Upgrade")];
        assert_eq!(
            classify(&req(&ws)),
            Upgrade::WebSocket(HeaderValue::from_static("websocket"))
        );
        // Tokens are case-insensitive and may share the header with others.
        let mixed = [
            ("upgrade", "WebSocket"),
            ("connection", "keep-alive, UPGRADE"),
        ];
        assert!(matches!(classify(&req(&mixed)), Upgrade::WebSocket(_)));
        // Upgrade not listed in Connection, another protocol, or none.
        assert_eq!(classify(&req(&[("upgrade", "websocket")])), Upgrade::None);
        let h2c = [("upgrade", "h2c"), ("connection", "upgrade")];
        assert_eq!(classify(&req(&h2c)), Upgrade::None);
        assert_eq!(classify(&req(&[])), Upgrade::None);
        // HTTP/1.0 cannot upgrade.
        let mut old = req(&ws);
        old.set_version(http::Version::HTTP_10);
        assert_eq!(classify(&old), Upgrade::None);
        // RFC 8441 over HTTP/2 is answered, not forwarded.
        let mut connect = RequestHeader::build("CONNECT", b"/v1/realtime", None).unwrap();
        connect.set_version(http::Version::HTTP_2);
        assert!(matches!(
            classify(&connect),
            Upgrade::Unsupported(m) if m.contains("HTTP/2")
        ));
    }

    /// The head as (name, value) lines after the request line.
    fn lines(w: &[u8]) -> Vec<(String, String)> {
        let text = std::str::from_utf8(w).unwrap();
        let head = text
            .strip_suffix("\r\n\r\n")
            .expect("one empty line at the end");
        assert!(!head.contains("\r\n\r\n"), "empty line inside the head");
        head.split("\r\n")
            .skip(1)
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_string(), v.to_string())
            })
            .collect()
    }

    fn get<'a>(l: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        l.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The handshake head the way an attempt builds it.
    fn upstream_head(
        client: &RequestHeader,
        target: &UpstreamTarget<'_>,
        strip: &[http::HeaderName],
        upgrade: &HeaderValue,
    ) -> BytesMut {
        let stripped = without_key_subprotocol(client, target.key.is_some());
        let head = headers::upstream_request(
            stripped.as_ref().unwrap_or(client),
            target,
            client.uri.path(),
            strip,
            "rid",
            0,
        )
        .unwrap();
        with_upgrade(head, upgrade).unwrap()
    }

    #[test]
    fn handshake_keeps_upgrade_headers_swaps_credentials_and_strips_key_subprotocols() {
        let client = req(&[
            ("host", "127.0.0.1:8787"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
            (
                "sec-websocket-protocol",
                "realtime, openai-insecure-api-key.sk-client, openai-beta.realtime-v1",
            ),
            ("sec-websocket-extensions", "permessage-deflate"),
            ("authorization", "Bearer client-secret"),
        ]);
        let name = http::header::HeaderName::from_static("authorization");
        let value = HeaderValue::from_static("Bearer provider-key");
        let target = UpstreamTarget::direct("api.openai.com", "", Some((&name, &value)));
        let upgrade = HeaderValue::from_static("websocket");
        let w = upstream_head(&client, &target, &[], &upgrade);
        assert!(w.starts_with(b"GET /v1/realtime?model=m HTTP/1.1\r\n"));
        let l = lines(&w);
        assert_eq!(get(&l, "upgrade"), ["websocket"]);
        assert_eq!(get(&l, "connection"), ["upgrade"]);
        assert_eq!(get(&l, "host"), ["api.openai.com"]);
        assert_eq!(get(&l, "authorization"), ["Bearer provider-key"]);
        assert_eq!(get(&l, "sec-websocket-key"), ["dGhlIHNhbXBsZSBub25jZQ=="]);
        assert_eq!(get(&l, "sec-websocket-version"), ["13"]);
        assert_eq!(get(&l, "sec-websocket-extensions"), ["permessage-deflate"]);
        assert_eq!(
            get(&l, "sec-websocket-protocol"),
            ["realtime, openai-beta.realtime-v1"]
        );
        assert!(get(&l, "content-length").is_empty());

        // Without a provider key the client's own credentials pass, except
        // a steadfast token.
        let passthrough = UpstreamTarget {
            key: None,
            ..target
        };
        let w = upstream_head(
            &client,
            &passthrough,
            &[http::HeaderName::from_static("authorization")],
            &upgrade,
        );
        let l = lines(&w);
        assert!(get(&l, "authorization").is_empty());
        assert!(get(&l, "sec-websocket-protocol")[0].contains("openai-insecure-api-key.sk-client"));
    }

    #[test]
    fn a_key_subprotocol_alone_leaves_no_empty_header() {
        let client = req(&[("sec-websocket-protocol", "OpenAI-Insecure-API-Key.sk-x")]);
        let r = without_key_subprotocol(&client, true).unwrap();
        assert!(r.headers.get(header::SEC_WEBSOCKET_PROTOCOL).is_none());
        assert!(without_key_subprotocol(&client, false).is_none());
        let plain = req(&[("sec-websocket-protocol", "realtime")]);
        assert!(without_key_subprotocol(&plain, true).is_none());
    }

    fn switching(extra: &[(&str, &str)]) -> ResponseHeader {
        let mut h = ResponseHeader::build(101, None).unwrap();
        for (n, v) in extra {
            h.append_header(n.to_string(), *v).unwrap();
        }
        h
    }

    #[test]
    fn the_clients_101_keeps_the_handshake_and_is_stamped() {
        let up = switching(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ("sec-websocket-protocol", "realtime"),
            ("keep-alive", "timeout=5"),
        ]);
        let r = switching_response(up, "rid", "p1", 2).unwrap();
        assert_eq!(r.status.as_u16(), 101);
        assert_eq!(r.version, http::Version::HTTP_11);
        assert_eq!(r.headers["upgrade"], "websocket");
        assert_eq!(r.headers["connection"], "upgrade");
        assert_eq!(
            r.headers["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(r.headers["sec-websocket-protocol"], "realtime");
        assert!(r.headers.get("keep-alive").is_none());
        assert_eq!(r.headers["x-steadfast-provider"], "p1");
        assert_eq!(r.headers["x-steadfast-attempts"], "2");
        assert_eq!(r.headers["x-request-id"], "rid");
    }

    #[test]
    fn a_101_that_is_not_a_websocket_switch_is_refused() {
        assert!(switching_response(switching(&[]), "r", "p", 1).is_err());
        let other = switching(&[("upgrade", "h2c"), ("connection", "upgrade")]);
        assert!(switching_response(other, "r", "p", 1).is_err());
        let framed = switching(&[("upgrade", "websocket"), ("content-length", "0")]);
        assert!(switching_response(framed, "r", "p", 1).is_err());
    }
}
