//! The request path: normalise the path, route, authenticate,
//! read the body, take a limiter slot, then try providers in order until one
//! answers in a way the client should see.
//!
//! steadfast drives upstream connections itself (Pingora's transport
//! connector and HTTP/1 client) instead of using Pingora's proxy phases,
//! because the request body is buffered once and replayed to each provider
//! (failover for any body size, not just Pingora's 64 KiB retry buffer), a
//! failed attempt's response must be held back until we know whether it is
//! the last one, and a stream that breaks after commit must end with an
//! error event in the client's dialect.

mod attempts;
mod cloud;
mod decode;
mod hold;
mod intake;
mod plan;
mod relay;
mod reply;
mod resume;
mod websocket;

pub use reply::{local_error, respond_local};

use crate::affinity::{self, SessionKey, SessionSource};
use crate::app::App;
use crate::body::RequestMeta;
use crate::config::Api;
use crate::credentials;
use crate::dialect::{self, LocalError};
use crate::headers;
use crate::outcome::ErrorClass;
use crate::record::RequestRecord;
use crate::routing;
use crate::telemetry;
use attempts::Attempts;
use intake::{acquire, left_while_queued, read_body, BodyError, Slot};
use pingora_error::Error;
use pingora_proxy::Session;
use std::time::Instant;
use tokio::sync::OwnedSemaphorePermit;

/// Per-request state shared with the Pingora phases in [`crate::proxy`].
pub struct Ctx {
    pub rec: RequestRecord,
    /// Dialect of errors produced for this request.
    pub api: Api,
    /// The status line went to the client: no failover, no error page.
    pub committed: bool,
    /// The response reached its end (its last byte, or the stream's
    /// terminal event, went out): a client that leaves now has its answer.
    pub finished: bool,
    /// The global limiter slot, held until the request's end.
    pub _slot: Option<GlobalSlot>,
    /// Counts the request for drain from its first byte to its last.
    pub _active: crate::gauges::ActiveGuard,
}

/// A global limiter slot and the in-flight gauge that counts it. Fields
/// drop in declaration order: the gauge falls before the slot is freed, so
/// the next request can never be counted while this one still is, and the
/// gauge (and its peak) never reads above `limits.max_inflight`.
pub struct GlobalSlot {
    _inflight: crate::gauges::InflightGuard,
    _permit: OwnedSemaphorePermit,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            rec: RequestRecord::new(Instant::now()),
            api: Api::Anthropic,
            committed: false,
            finished: false,
            _slot: None,
            _active: crate::gauges::ActiveGuard::new(),
        }
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}

/// How one request ended, for the Pingora glue: whether the client
/// connection may be reused or must be dropped (a cut response, a client
/// that left).
pub enum Handled {
    /// A complete response was written.
    Responded,
    /// The connection must be closed without finishing the response.
    Abort(Box<Error>),
}

/// Serve one request. Errors are already answered in the client's dialect;
/// only I/O on a dead client connection is returned as `Abort`.
pub async fn handle(app: &App, s: &mut Session, ctx: &mut Ctx) -> Handled {
    // Pingora has parsed the head: stop the edge watching it.
    let head_len = crate::edge::head_accepted(s.as_downstream());
    // Test-only trigger for panic isolation; compiled out of release builds.
    #[cfg(debug_assertions)]
    if s.req_header()
        .headers
        .contains_key("x-steadfast-test-panic")
    {
        panic!("panic requested by x-steadfast-test-panic");
    }
    // A client may send its next request while this response is still
    // streaming (RFC 9112 §9.3.2). Without this, Pingora reports those bytes
    // as an error while we watch for the client leaving, which would cut the
    // stream and lose both requests; with it they wait for their turn.
    s.as_downstream_mut().set_pipelining_enabled(true);
    if app.is_draining() {
        // Tell keep-alive clients to reconnect (to the new process, after an
        // upgrade) instead of reusing a connection that is about to close.
        s.set_keepalive(None);
    }
    let rt = app.runtime();
    let req = s.req_header();
    ctx.rec.request_id = headers::request_id(req);
    ctx.rec.trace = crate::otel::start(&req.headers);
    ctx.rec.method = req.method.to_string();

    // Routes are matched against, and providers sent, the normalised path
    // only; the access log records it too.
    let raw_path = req.uri.path();
    match crate::path::normalise(raw_path) {
        Ok(p) => ctx.rec.path = p.into_owned(),
        Err(e) => {
            ctx.api = dialect::guess_api(raw_path, req.headers.contains_key("x-api-key"));
            ctx.rec.path = raw_path.to_string();
            let msg = format!("invalid request path: {e}");
            return respond_local(s, ctx, LocalError::BadRequest, &msg, None).await;
        }
    }

    let route = rt.route_for(&ctx.rec.path);
    match route {
        Some(r) => {
            ctx.api = dialect::client_api(r.settings.api, &ctx.rec.path);
            ctx.rec.route = Some(r.settings.name.clone());
        }
        None => {
            ctx.api = dialect::guess_api(&ctx.rec.path, req.headers.contains_key("x-api-key"));
        }
    }
    if let Some((kind, msg)) = head_problem(head_len, req, rt.config.limits.max_header_bytes) {
        // A client that gets framing wrong cannot be trusted with the next
        // request on this connection either.
        s.set_keepalive(None);
        return respond_local(s, ctx, kind, &msg, None).await;
    }
    let Some(route) = route else {
        if routing::is_liveness_probe(&req.method, &ctx.rec.path) {
            return reply::respond_probe(s, ctx).await;
        }
        let msg = format!("no route for path {}", ctx.rec.path);
        return respond_local(s, ctx, LocalError::NoRoute, &msg, None).await;
    };

    // Headers that carry a client token, whichever they are: none of them
    // is forwarded. Found once here, not per attempt.
    let strip = match &rt.config.client_tokens {
        None => Vec::new(),
        Some(tokens) => {
            if !credentials::authenticated(&req.headers, tokens) {
                const MSG: &str = "missing or invalid client token: send it as \
                                   Authorization: Bearer or x-api-key";
                return respond_local(s, ctx, LocalError::Unauthorized, MSG, None).await;
            }
            credentials::carrying_tokens(&req.headers, tokens)
        }
    };

    let upgrade = match websocket::classify(s.req_header()) {
        websocket::Upgrade::None => None,
        websocket::Upgrade::WebSocket(v) => {
            ctx.rec.websocket = Some(Default::default());
            Some(v)
        }
        websocket::Upgrade::Unsupported(msg) => {
            return respond_local(s, ctx, LocalError::BadRequest, msg, None).await;
        }
    };

    // Read here: reading the body below needs the session mutably.
    let session_header = if route.selector.wants_session() {
        session_header(req)
    } else {
        None
    };

    let max_body = rt.config.limits.max_body_bytes;
    let body = match read_body(s, max_body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            // The rest of the body is not read, so the connection cannot
            // carry another request.
            s.set_keepalive(None);
            let msg = format!("request body is larger than the limit of {max_body} bytes");
            return respond_local(s, ctx, LocalError::BodyTooLarge, &msg, None).await;
        }
        Err(BodyError::Malformed) => {
            // The rest of the body cannot be framed, so nothing after it can
            // be either.
            s.set_keepalive(None);
            let msg = "malformed request body: invalid chunked transfer encoding";
            return respond_local(s, ctx, LocalError::BadRequest, msg, None).await;
        }
        Err(BodyError::Client(e)) => {
            ctx.rec.class = Some(ErrorClass::Client);
            return Handled::Abort(e);
        }
    };

    match acquire(s, &rt.limiter, rt.config.limits.queue_timeout).await {
        Ok(p) => {
            ctx._slot = Some(GlobalSlot {
                _inflight: crate::gauges::InflightGuard::new(),
                _permit: p,
            })
        }
        Err(Slot::ClientGone(e)) => return left_while_queued(ctx, "global", e),
        Err(Slot::Rejected) => {
            ctx.rec.rejected_scope = Some("global");
            telemetry::limiter_rejected(&ctx.rec, "global");
            let msg = format!(
                "steadfast is at its concurrency limit ({} requests in flight); retry later",
                rt.limiter.max()
            );
            return respond_local(s, ctx, LocalError::Overloaded, &msg, None).await;
        }
    }

    // A session key is looked for only where affinity uses it; the
    // header, when present, wins and saves looking in the body.
    let meta = match (route.selector.wants_session(), session_header) {
        (true, None) => RequestMeta::parse_with_session(&body),
        (_, header) => RequestMeta {
            session: header,
            ..RequestMeta::parse(&body)
        },
    };
    // Boxed: the failover loop's future is several KiB, and left inline it
    // would be copied whole each time the futures around it are built and
    // moved (Pingora boxes request_filter's future on every request).
    Box::pin(
        Attempts::new(app, &rt, route, body, meta, strip)
            .websocket(upgrade)
            .run(s, ctx),
    )
    .await
}

/// The session key a client sent as `x-claude-code-session-id`.
fn session_header(req: &pingora_http::RequestHeader) -> Option<SessionKey> {
    req.headers
        .get(affinity::SESSION_HEADER)
        .map(http::HeaderValue::as_bytes)
        .filter(|v| !v.is_empty())
        .map(|v| SessionKey::of(SessionSource::Header, v))
}

/// What is wrong with a parsed request head, if anything: over
/// `limits.max_header_bytes` (`head_len` is its size on the wire, HTTP/1
/// only; h2 enforces the limit in its decoder), or an HTTP/1.1 request
/// without `Host` (RFC 9112 §3.2).
fn head_problem(
    head_len: Option<usize>,
    req: &pingora_http::RequestHeader,
    max_header_bytes: usize,
) -> Option<(LocalError, String)> {
    if head_len.is_some_and(|n| n > max_header_bytes) {
        return Some((
            LocalError::HeaderTooLarge,
            crate::edge::too_large_message(max_header_bytes),
        ));
    }
    if req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST) {
        return Some((
            LocalError::BadRequest,
            "HTTP/1.1 request without a Host header".to_string(),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: http::Version, host: bool) -> pingora_http::RequestHeader {
        let mut r = pingora_http::RequestHeader::build("POST", b"/v1/messages", None).unwrap();
        r.set_version(version);
        if host {
            r.insert_header("host", "x").unwrap();
        }
        r
    }

    #[test]
    fn head_problems() {
        let ok = req(http::Version::HTTP_11, true);
        assert!(head_problem(Some(100), &ok, 100).is_none());
        assert!(head_problem(None, &ok, 100).is_none());
        let (k, m) = head_problem(Some(101), &ok, 100).unwrap();
        assert_eq!(k, LocalError::HeaderTooLarge);
        assert!(m.contains("100 bytes"), "{m}");
        let no_host = req(http::Version::HTTP_11, false);
        assert_eq!(
            head_problem(Some(10), &no_host, 100).map(|p| p.0),
            Some(LocalError::BadRequest)
        );
        // HTTP/1.0 and h2 (":authority") need no Host header.
        assert!(head_problem(Some(10), &req(http::Version::HTTP_10, false), 100).is_none());
        assert!(head_problem(None, &req(http::Version::HTTP_2, false), 100).is_none());
    }
}

/// In-process tests of the request path's I/O pieces: bytes scripted into
/// the upstream exchange and through the relay, without starting the
/// binary.
#[cfg(test)]
mod io_tests;
