//! The request path (SPEC §3): normalise the path, route, authenticate,
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
mod intake;
mod plan;
mod relay;
mod reply;
mod websocket;

pub use reply::respond_local;

use crate::app::App;
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
    pub _permit: Option<OwnedSemaphorePermit>,
    pub _inflight: Option<telemetry::InflightGuard>,
    /// Counts the request for drain from its first byte to its last.
    pub _active: telemetry::ActiveGuard,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            rec: RequestRecord::new(Instant::now()),
            api: Api::Anthropic,
            committed: false,
            finished: false,
            _permit: None,
            _inflight: None,
            _active: telemetry::ActiveGuard::new(),
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
    ctx.rec.method = req.method.to_string();

    // Routes are matched against, and providers sent, the normalised path
    // only (SPEC §9); the access log records it too.
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

    let Some(route) = rt.route_for(&ctx.rec.path) else {
        if routing::is_liveness_probe(&req.method, &ctx.rec.path) {
            return reply::respond_probe(s, ctx).await;
        }
        ctx.api = dialect::guess_api(&ctx.rec.path, req.headers.contains_key("x-api-key"));
        let msg = format!("no route for path {}", ctx.rec.path);
        return respond_local(s, ctx, LocalError::NoRoute, &msg, None).await;
    };
    ctx.api = route.settings.api;
    ctx.rec.route = Some(route.settings.name.clone());

    // Headers that carry a client token, whichever they are: none of them
    // is forwarded (SPEC §9). Found once here, not per attempt.
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
        Err(BodyError::Client(e)) => {
            ctx.rec.class = Some(ErrorClass::Client);
            return Handled::Abort(e);
        }
    };

    match acquire(s, &rt.limiter, rt.config.limits.queue_timeout).await {
        Ok(p) => ctx._permit = Some(p),
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
    ctx._inflight = Some(telemetry::InflightGuard::new());

    let meta = crate::body::RequestMeta::parse(&body);
    Attempts::new(app, &rt, route, body, meta, strip)
        .websocket(upgrade)
        .run(s, ctx)
        .await
}
