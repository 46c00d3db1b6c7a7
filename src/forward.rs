//! The request path (SPEC §3): route, authenticate, read the body, take a
//! limiter slot, then try providers in order until one answers in a way the
//! client should see.
//!
//! steadfast drives upstream connections itself (Pingora's transport
//! connector and HTTP/1 client) instead of using Pingora's proxy phases,
//! because the request body is buffered once and replayed to each provider
//! (failover for any body size, not just Pingora's 64 KiB retry buffer), a
//! failed attempt's response must be held back until we know whether it is
//! the last one, and a stream that breaks after commit must end with an
//! error event in the client's dialect.

use crate::app::{App, Route, Runtime};
use crate::config::Api;
use crate::dialect::{self, LocalError};
use crate::headers::{self, UpstreamTarget};
use crate::limits::Limiter;
use crate::outcome::{self, AttemptResult, ErrorClass};
use crate::provider::{Provider, POOL_IDLE};
use crate::record::{AttemptRecord, RequestRecord};
use crate::routing::CandidateInfo;
use crate::sse::SseFramer;
use crate::telemetry;
use crate::tokens::UsageMeter;
use bytes::{Bytes, BytesMut};
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::OwnedSemaphorePermit;

/// Largest failed-attempt body held back for a possible replay to the
/// client; provider error bodies are a few hundred bytes.
const MAX_HELD_ERROR_BODY: usize = 64 * 1024;

/// Per-request state shared with the Pingora phases in [`crate::proxy`].
pub struct Ctx {
    pub rec: RequestRecord,
    /// Dialect of errors produced for this request.
    pub api: Api,
    /// The status line went to the client: no failover, no error page.
    pub committed: bool,
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

/// A failed attempt's response, held in case it ends up being the answer.
struct HeldResponse {
    provider: String,
    header: ResponseHeader,
    body: Bytes,
    class: ErrorClass,
}

enum AttemptEnd {
    /// The client got its answer (success, or an error returned as is).
    Finished,
    /// The client connection must be dropped.
    Abort(Box<Error>),
    /// Nothing was sent to the client; try the next provider.
    Failed {
        class: ErrorClass,
        detail: String,
        held: Option<Box<HeldResponse>>,
    },
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
    if app.is_draining() {
        // Tell keep-alive clients to reconnect (to the new process, after an
        // upgrade) instead of reusing a connection that is about to close.
        s.set_keepalive(None);
    }
    let rt = app.runtime();
    let req = s.req_header();
    ctx.rec.request_id = headers::request_id(req);
    ctx.rec.method = req.method.to_string();
    ctx.rec.path = req.uri.path().to_string();

    let Some(route) = rt.route_for(&ctx.rec.path) else {
        ctx.api = dialect::guess_api(&ctx.rec.path, req.headers.contains_key("x-api-key"));
        let msg = format!("no route for path {}", ctx.rec.path);
        return respond_local(s, ctx, LocalError::NoRoute, &msg, None).await;
    };
    ctx.api = route.settings.api;
    ctx.rec.route = Some(route.settings.name.clone());

    let drop_header = match &rt.config.client_tokens {
        None => None,
        Some(tokens) => match authorized(&req.headers, tokens) {
            Some(h) => Some(h),
            None => return respond_local(
                s,
                ctx,
                LocalError::Unauthorized,
                "missing or invalid client token: send it as Authorization: Bearer or x-api-key",
                None,
            )
            .await,
        },
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
        Err(Slot::ClientGone(e)) => {
            ctx.rec.class = Some(ErrorClass::Client);
            return Handled::Abort(e);
        }
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

    Attempts::new(app, &rt, route, body, drop_header)
        .run(s, ctx)
        .await
}

/// The failover loop over one route's providers.
struct Attempts<'a> {
    app: &'a App,
    rt: &'a Runtime,
    route: &'a Route,
    body: Bytes,
    drop_header: Option<&'static str>,
    made: u32,
    failures: Vec<(String, ErrorClass, String)>,
    held: Option<Box<HeldResponse>>,
}

impl<'a> Attempts<'a> {
    fn new(
        app: &'a App,
        rt: &'a Runtime,
        route: &'a Route,
        body: Bytes,
        drop_header: Option<&'static str>,
    ) -> Self {
        Attempts {
            app,
            rt,
            route,
            body,
            drop_header,
            made: 0,
            failures: Vec::new(),
            held: None,
        }
    }

    async fn run(mut self, s: &mut Session, ctx: &mut Ctx) -> Handled {
        let now = Instant::now();
        let infos: Vec<CandidateInfo> = self
            .route
            .providers
            .iter()
            .map(|p| CandidateInfo {
                available: !matches!(
                    p.health.availability(now),
                    crate::health::Availability::Unavailable(_)
                ),
                weight: p.settings.weight,
                cost: p.health.load_cost(now),
                last_failure_at: p.health.last_failure_at(),
            })
            .collect();
        // (index into route.providers, tried although unavailable)
        let mut queue: VecDeque<(usize, bool)> = self
            .route
            .selector
            .order(&infos)
            .into_iter()
            .map(|i| (i, !infos[i].available))
            .collect();
        let mut again: Vec<(usize, bool)> = Vec::new();
        let mut skipped_full: Vec<usize> = Vec::new();
        let mut pending_failover: Option<(String, ErrorClass)> = None;
        let max = self.rt.config.retry.max_attempts;

        while self.made < max {
            let (ci, forced, permit) = match queue.pop_front() {
                Some((ci, forced)) => {
                    let p = &self.route.providers[ci];
                    match p.limiter.as_ref().map(Limiter::try_acquire) {
                        Some(None) => {
                            skipped_full.push(ci);
                            continue;
                        }
                        Some(Some(permit)) => (ci, forced, Some(permit)),
                        None => (ci, forced, None),
                    }
                }
                None if !again.is_empty() => {
                    queue.extend(again.drain(..));
                    continue;
                }
                None if self.made == 0 && !skipped_full.is_empty() => {
                    // Every provider is at its own cap: wait for the first
                    // one's slot like for the global limiter.
                    let ci = skipped_full.remove(0);
                    let Some(limiter) = self.route.providers[ci].limiter.clone() else {
                        continue;
                    };
                    let wait = self
                        .rt
                        .config
                        .limits
                        .queue_timeout
                        .saturating_sub(ctx.rec.started.elapsed());
                    match acquire(s, &limiter, wait).await {
                        Ok(p) => (ci, true, Some(p)),
                        Err(Slot::ClientGone(e)) => {
                            ctx.rec.class = Some(ErrorClass::Client);
                            return Handled::Abort(e);
                        }
                        Err(Slot::Rejected) => {
                            ctx.rec.rejected_scope = Some("provider");
                            telemetry::limiter_rejected(&ctx.rec, "provider");
                            let msg = format!(
                                "every provider of route {} is at its concurrency limit; retry later",
                                self.route.settings.name
                            );
                            return respond_local(s, ctx, LocalError::Overloaded, &msg, None).await;
                        }
                    }
                }
                None => break,
            };
            let provider = self.route.providers[ci].clone();
            let Some(is_probe) = provider.health.begin_attempt(Instant::now(), forced) else {
                // Half-open and its one probe is already out.
                continue;
            };
            // Logged only now that the next attempt really happens.
            if let Some((from, class)) = pending_failover.take() {
                telemetry::failover(&ctx.rec, &from, class);
            }
            self.made += 1;
            let more = self.made < max && (!queue.is_empty() || !again.is_empty());
            let end = self.attempt(s, ctx, &provider, is_probe, more).await;
            drop(permit);
            match end {
                AttemptEnd::Finished => return Handled::Responded,
                AttemptEnd::Abort(e) => return Handled::Abort(e),
                AttemptEnd::Failed {
                    class,
                    detail,
                    held,
                } => {
                    let name = provider.name().to_string();
                    let name_for_log = name.clone();
                    if let Some(h) = held {
                        self.held = Some(h);
                    }
                    self.failures.push((name, class, detail));
                    if !self.rt.config.retry.fails_over(class) {
                        break;
                    }
                    if is_transient(class) {
                        again.push((ci, false));
                    }
                    pending_failover = Some((name_for_log, class));
                }
            }
        }
        self.give_up(s, ctx).await
    }

    /// No attempt produced an answer for the client: return the last held
    /// upstream response as is, else a 502/504 of our own.
    async fn give_up(self, s: &mut Session, ctx: &mut Ctx) -> Handled {
        if let Some(h) = self.held {
            ctx.rec.provider = Some(h.provider.clone());
            ctx.rec.status = h.header.status.as_u16();
            ctx.rec.class = Some(h.class);
            let mut resp = match headers::client_response(&h.header) {
                Ok(r) => r,
                Err(e) => return Handled::Abort(e),
            };
            resp.remove_header("content-length");
            if let Err(e) = resp
                .insert_header("content-length", h.body.len().to_string())
                .and_then(|_| {
                    headers::stamp(
                        &mut resp,
                        &ctx.rec.request_id,
                        &h.provider,
                        self.made,
                        Some(h.class.as_str()),
                    )
                })
            {
                return Handled::Abort(e);
            }
            return write_whole(s, ctx, resp, h.body).await;
        }
        let classes: Vec<ErrorClass> = self.failures.iter().map(|f| f.1).collect();
        let kind = match outcome::status_for_failed_attempts(&classes) {
            (504, _) => LocalError::AllTimeout,
            _ => LocalError::AllNetwork,
        };
        let tried: Vec<String> = self
            .failures
            .iter()
            .map(|(p, c, d)| format!("{p} ({c}: {d})"))
            .collect();
        let msg = match self.made {
            0 => format!(
                "no provider of route {} could be tried",
                self.route.settings.name
            ),
            1 => format!("the only attempt failed: {}", tried.join(", ")),
            n => format!("all {n} attempts failed: {}", tried.join(", ")),
        };
        respond_local(s, ctx, kind, &msg, Some(self.made)).await
    }

    /// One attempt against one provider.
    async fn attempt(
        &mut self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Arc<Provider>,
        is_probe: bool,
        more: bool,
    ) -> AttemptEnd {
        let _load = LoadGuard::new(p);
        let mut t = Try {
            p: p.clone(),
            is_probe,
            started: Instant::now(),
            ttfb: None,
            status: None,
        };
        let deadline = ctx.rec.started + p.settings.timeouts.total;

        let Some(peer) = p.peer() else {
            return self.fail(
                ctx,
                &t,
                ErrorClass::Network,
                "host not resolved yet".into(),
                None,
                None,
            );
        };
        let body = if self.route.rewrites_models {
            crate::body::rewrite_model(&self.body, &p.settings.models)
        } else {
            self.body.clone()
        };
        let target = UpstreamTarget {
            host_header: &p.host_header,
            path_prefix: &p.settings.upstream.path_prefix,
            key: p.key_header(),
        };
        let up_req = match headers::upstream_request(
            s.req_header(),
            &target,
            self.drop_header,
            &ctx.rec.request_id,
            body.len(),
        ) {
            Ok(r) => r,
            Err(e) => {
                let detail = format!("cannot build upstream request: {}", describe(&e));
                return self.fail(ctx, &t, ErrorClass::Request, detail, None, None);
            }
        };

        // Connect, send, and wait for the response header. A pooled
        // connection that the upstream closed while idle fails on first use;
        // that says nothing about the provider, so retry once on a fresh one.
        let mut fresh = false;
        let exchanged = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err((ErrorClass::Timeout, "total timeout reached".to_string()));
            }
            let connect = async {
                if fresh {
                    self.app
                        .transport
                        .new_stream(&*peer)
                        .await
                        .map(|s| (s, false))
                } else {
                    self.app.transport.get_stream(&*peer).await
                }
            };
            let (stream, reused) = match tokio::time::timeout(left, connect).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => break Err((outcome::classify_transport(e.etype()), describe(&e))),
                Err(_) => {
                    break Err((
                        ErrorClass::Timeout,
                        "total timeout reached while connecting".into(),
                    ))
                }
            };
            let mut up = UpstreamSession::new_with_options(stream, &*peer);
            let budget = p
                .settings
                .timeouts
                .response_header
                .min(deadline.saturating_duration_since(Instant::now()));
            let step = {
                let exchange = tokio::time::timeout(budget, exchange(&mut up, &up_req, &body));
                tokio::select! {
                    r = exchange => Ok(r),
                    e = client_gone(s) => Err(e),
                }
            };
            match step {
                Err(e) => {
                    ctx.rec.upstream_wait += t.started.elapsed();
                    ctx.rec.class = Some(ErrorClass::Client);
                    self.record_attempt(ctx, &t, AttemptResult::Failed(ErrorClass::Client));
                    if t.is_probe {
                        // Give the probe slot back: the provider was not judged.
                        p.health.record(
                            Instant::now(),
                            AttemptResult::Failed(ErrorClass::Client),
                            true,
                            None,
                            &self.rt.policy,
                            1.0,
                        );
                    }
                    return AttemptEnd::Abort(e);
                }
                Ok(Ok(Ok(()))) => break Ok(up),
                Ok(Ok(Err(_))) if reused && !fresh => {
                    fresh = true;
                    continue;
                }
                Ok(Ok(Err(e))) => {
                    break Err((outcome::classify_transport(e.etype()), describe(&e)))
                }
                Ok(Err(_)) => {
                    break Err((
                        ErrorClass::Timeout,
                        format!("no response header within {} ms", budget.as_millis()),
                    ))
                }
            }
        };
        ctx.rec.upstream_wait += t.started.elapsed();
        let mut up = match exchanged {
            Ok(up) => up,
            Err((class, detail)) => return self.fail(ctx, &t, class, detail, None, None),
        };
        let ttfb = t.started.elapsed();
        t.ttfb = Some(ttfb);
        p.health.observe_ttfb(Instant::now(), ttfb);
        let Some(head) = up.resp_header().cloned() else {
            return self.fail(
                ctx,
                &t,
                ErrorClass::Network,
                "no response header".into(),
                None,
                None,
            );
        };
        let status = head.status.as_u16();
        t.status = Some(status);
        let class = outcome::classify_status(status);
        let retry_after = match status {
            429 | 503 => crate::health::retry_after(&head.headers, SystemTime::now()),
            _ => None,
        };

        let max = self.rt.config.retry.max_attempts;
        let fails_over = |c: ErrorClass| {
            self.rt.config.retry.fails_over(c) && self.made < max && (more || is_transient(c))
        };
        let mut prefix = None;
        if let Some(c) = class.filter(|c| fails_over(*c)) {
            // Hold the error back: it is only the answer if nothing better
            // comes from the next providers.
            let waited = Instant::now();
            let held = read_held_body(&mut up, p.settings.timeouts.stream_idle, deadline).await;
            ctx.rec.upstream_wait += waited.elapsed();
            let detail = format!("status {status}");
            match held {
                Held::Complete(body) => {
                    self.release(up, &peer).await;
                    let h = Box::new(HeldResponse {
                        provider: p.name().to_string(),
                        header: head,
                        body,
                        class: c,
                    });
                    return self.fail(ctx, &t, c, detail, retry_after, Some(h));
                }
                Held::Broken => {
                    return self.fail(
                        ctx,
                        &t,
                        c,
                        format!("{detail}, then the body broke"),
                        retry_after,
                        None,
                    );
                }
                // Too big to hold: this one is the answer after all.
                Held::TooLarge(bytes) => prefix = Some(bytes),
            }
        }
        self.commit(
            s,
            ctx,
            t,
            up,
            &peer,
            head,
            class,
            retry_after,
            prefix,
            deadline,
        )
        .await
    }

    /// Send this attempt's response to the client and relay its body.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &mut self,
        s: &mut Session,
        ctx: &mut Ctx,
        t: Try,
        mut up: UpstreamSession,
        peer: &pingora_core::upstreams::peer::HttpPeer,
        head: ResponseHeader,
        class: Option<ErrorClass>,
        retry_after: Option<Duration>,
        prefix: Option<Bytes>,
        deadline: Instant,
    ) -> AttemptEnd {
        let p = t.p.clone();
        let mut resp = match headers::client_response(&head) {
            Ok(r) => r,
            Err(e) => return self.fail(ctx, &t, ErrorClass::Network, describe(&e), None, None),
        };
        if let Err(e) = headers::stamp(
            &mut resp,
            &ctx.rec.request_id,
            p.name(),
            self.made,
            class.map(ErrorClass::as_str),
        ) {
            return self.fail(ctx, &t, ErrorClass::Network, describe(&e), None, None);
        }
        let sse = is_sse(&head);
        let body_done = prefix.is_none() && up.is_body_done();
        // An HTTP/1.1 body of unknown length must be chunked, or the client
        // could only find its end by the connection closing (and a cut
        // stream would look complete).
        if !body_done
            && resp.headers.get(http::header::CONTENT_LENGTH).is_none()
            && !s.as_downstream().is_http2()
        {
            if let Err(e) = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked") {
                return self.fail(ctx, &t, ErrorClass::Network, describe(&e), None, None);
            }
        }
        ctx.committed = true;
        // A client that stops reading must not pin the upstream forever.
        s.set_write_timeout(Some(p.settings.timeouts.stream_idle));
        ctx.rec.provider = Some(p.name().to_string());
        ctx.rec.status = head.status.as_u16();
        ctx.rec.class = class;
        if let Err(e) = s.write_response_header(Box::new(resp), body_done).await {
            return self.client_left(ctx, &t, e);
        }
        ctx.rec.ttfb = Some(ctx.rec.started.elapsed());
        // Record the attempt's verdict on the provider now for statuses; a
        // success is confirmed when the body completes.
        let mut meter = UsageMeter::new(ctx.api, sse);
        if body_done {
            self.release(up, peer).await;
            let result = class.map_or(AttemptResult::Success, AttemptResult::Failed);
            self.judge(ctx, &t, result, retry_after);
            return AttemptEnd::Finished;
        }

        let mut framer = sse.then(SseFramer::new);
        let idle = p.settings.timeouts.stream_idle;
        if let Some(prefix) = prefix {
            if let Err(e) = s.write_response_body(Some(prefix), false).await {
                return self.client_left(ctx, &t, e);
            }
        }
        // One timer for the whole relay, not one per chunk.
        let total = tokio::time::sleep_until(deadline.into());
        tokio::pin!(total);
        let end = loop {
            let waited = Instant::now();
            let step = tokio::select! {
                // Polled in order: a client that closes right after the last
                // byte of a complete body must not turn it into client_closed.
                biased;
                _ = &mut total => Step::Deadline,
                r = tokio::time::timeout(idle, up.read_body_bytes()) => Step::Upstream(r),
                e = client_gone(s) => Step::ClientGone(e),
            };
            ctx.rec.upstream_wait += waited.elapsed();
            match step {
                Step::Upstream(Ok(Ok(Some(chunk)))) => {
                    let out = match framer.as_mut() {
                        Some(f) => f.push(chunk),
                        None => Some(chunk),
                    };
                    if let Some(out) = out {
                        meter.feed(&out);
                        if let Err(e) = s.write_response_body(Some(out), false).await {
                            break End::ClientGone(e);
                        }
                    }
                }
                Step::Upstream(Ok(Ok(None))) => break End::Done,
                Step::Upstream(Ok(Err(e))) => {
                    break End::Broken(outcome::classify_transport(e.etype()), describe(&e))
                }
                Step::Upstream(Err(_)) => {
                    break End::Broken(
                        ErrorClass::Timeout,
                        format!("no data for {} ms", idle.as_millis()),
                    )
                }
                Step::Deadline => {
                    break End::Broken(ErrorClass::Timeout, "total timeout reached".into())
                }
                Step::ClientGone(e) => break End::ClientGone(e),
            }
        };
        match end {
            End::Done => {
                if let Some(rest) = framer.as_mut().and_then(SseFramer::finish) {
                    meter.feed(&rest);
                    if let Err(e) = s.write_response_body(Some(rest), false).await {
                        return self.client_left(ctx, &t, e);
                    }
                }
                let (usage, model) = meter.finish();
                ctx.rec.usage = usage;
                ctx.rec.model = model;
                if let Err(e) = s.write_response_body(None, true).await {
                    return self.client_left(ctx, &t, e);
                }
                self.release(up, peer).await;
                let result = class.map_or(AttemptResult::Success, AttemptResult::Failed);
                self.judge(ctx, &t, result, retry_after);
                AttemptEnd::Finished
            }
            End::ClientGone(e) => self.client_left(ctx, &t, e),
            End::Broken(bc, detail) => {
                let (usage, model) = meter.finish();
                ctx.rec.usage = usage;
                ctx.rec.model = model;
                ctx.rec.class = Some(bc);
                ctx.rec.stream_interrupted = Some(bc);
                telemetry::stream_interrupted(&ctx.rec, p.name(), bc, &detail);
                self.judge(ctx, &t, AttemptResult::Failed(bc), None);
                if sse {
                    // The half event the upstream left behind is dropped by
                    // the framer; end with a whole error event instead.
                    let msg = format!("upstream {} failed mid-stream ({bc}: {detail})", p.name());
                    let event = dialect::sse_error_event(ctx.api, bc, &msg);
                    if let Err(e) = s.write_response_body(Some(event), true).await {
                        return AttemptEnd::Abort(e);
                    }
                    AttemptEnd::Finished
                } else {
                    // No way to signal an error inside a plain body: cut the
                    // connection so the client sees it broken, not complete.
                    AttemptEnd::Abort(Error::explain(
                        ErrorType::ConnectionClosed,
                        "upstream body broke after commit",
                    ))
                }
            }
        }
    }

    /// The client went away after commit: stop, and do not blame the provider.
    fn client_left(&mut self, ctx: &mut Ctx, t: &Try, e: Box<Error>) -> AttemptEnd {
        ctx.rec.class = Some(ErrorClass::Client);
        self.record_attempt(ctx, t, AttemptResult::Failed(ErrorClass::Client));
        if t.is_probe {
            t.p.health.record(
                Instant::now(),
                AttemptResult::Failed(ErrorClass::Client),
                true,
                None,
                &self.rt.policy,
                1.0,
            );
        }
        AttemptEnd::Abort(e)
    }

    /// Record a failed attempt that sent nothing to the client.
    fn fail(
        &mut self,
        ctx: &mut Ctx,
        t: &Try,
        class: ErrorClass,
        detail: String,
        retry_after: Option<Duration>,
        held: Option<Box<HeldResponse>>,
    ) -> AttemptEnd {
        self.judge(ctx, t, AttemptResult::Failed(class), retry_after);
        AttemptEnd::Failed {
            class,
            detail,
            held,
        }
    }

    /// Record the attempt and feed its result to the provider's health.
    fn judge(&self, ctx: &mut Ctx, t: &Try, result: AttemptResult, retry_after: Option<Duration>) {
        self.record_attempt(ctx, t, result);
        let transition = t.p.health.record(
            Instant::now(),
            result,
            t.is_probe,
            retry_after,
            &self.rt.policy,
            fastrand::f64(),
        );
        if let Some(tr) = transition {
            telemetry::provider_transition(t.p.name(), &tr);
        }
    }

    fn record_attempt(&self, ctx: &mut Ctx, t: &Try, result: AttemptResult) {
        telemetry::attempt_finished(t.p.name(), result, t.ttfb);
        ctx.rec.attempts.push(AttemptRecord {
            provider: t.p.name().to_string(),
            result,
            status: t.status,
            ttfb: t.ttfb,
        });
    }

    /// Return a finished upstream connection to the pool when it can carry
    /// another request.
    async fn release(
        &self,
        mut up: UpstreamSession,
        peer: &pingora_core::upstreams::peer::HttpPeer,
    ) {
        up.respect_keepalive();
        if let Some(stream) = up.reuse().await {
            use pingora_core::upstreams::peer::Peer;
            self.app
                .transport
                .release_stream(stream, peer.reuse_hash(), Some(POOL_IDLE));
        }
    }
}

/// One attempt's identity and timing.
struct Try {
    p: Arc<Provider>,
    is_probe: bool,
    started: Instant,
    ttfb: Option<Duration>,
    status: Option<u16>,
}

/// Counts the attempt in the provider's load (least_latency) while alive.
struct LoadGuard(Arc<Provider>);

impl LoadGuard {
    fn new(p: &Arc<Provider>) -> Self {
        p.health.inflight.fetch_add(1, Ordering::Relaxed);
        LoadGuard(p.clone())
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.health.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Step {
    Upstream(std::result::Result<Result<Option<Bytes>>, tokio::time::error::Elapsed>),
    ClientGone(Box<Error>),
    Deadline,
}

enum End {
    Done,
    Broken(ErrorClass, String),
    ClientGone(Box<Error>),
}

/// Classes worth another try on the same provider within one request:
/// quick failures that often clear at once. Not timeouts: a provider that
/// just took `response_header_ms` to say nothing would only double the
/// client's wait.
fn is_transient(c: ErrorClass) -> bool {
    matches!(c, ErrorClass::Network | ErrorClass::Server)
}

fn is_sse(h: &ResponseHeader) -> bool {
    h.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// A short, key-free description of a transport error.
fn describe(e: &Error) -> String {
    let root = e.root_cause().to_string();
    if e.cause.is_none() || root.is_empty() {
        e.etype().as_str().to_string()
    } else {
        format!("{}: {root}", e.etype().as_str())
    }
}

/// Send the request and read up to the final response header.
async fn exchange(
    up: &mut UpstreamSession,
    req: &pingora_http::RequestHeader,
    body: &Bytes,
) -> Result<()> {
    up.write_request_header(Box::new(req.clone())).await?;
    if !body.is_empty() {
        up.write_body(body).await?;
    }
    up.finish_body().await?;
    loop {
        up.read_response().await?;
        match up.resp_header() {
            // 1xx (other than 101) are interim: the real answer follows.
            Some(h) if h.status.is_informational() && h.status.as_u16() != 101 => continue,
            Some(_) => return Ok(()),
            None => return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header"),
        }
    }
}

enum Held {
    Complete(Bytes),
    TooLarge(Bytes),
    Broken,
}

/// Read a failed attempt's body, bounded in size and time.
async fn read_held_body(up: &mut UpstreamSession, idle: Duration, deadline: Instant) -> Held {
    let mut buf = BytesMut::new();
    loop {
        let budget = idle.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(budget, up.read_body_bytes()).await {
            Ok(Ok(Some(chunk))) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_HELD_ERROR_BODY {
                    return Held::TooLarge(buf.freeze());
                }
            }
            Ok(Ok(None)) => return Held::Complete(buf.freeze()),
            Ok(Err(_)) | Err(_) => return Held::Broken,
        }
    }
}

/// Resolves when the client closes its connection (or misbehaves) while we
/// wait on something else.
async fn client_gone(s: &mut Session) -> Box<Error> {
    loop {
        match s.read_body_or_idle(true).await {
            Err(e) => return e,
            // Extra bytes after the body: the client is pipelining; keep
            // waiting rather than guessing.
            Ok(_) => std::future::pending::<()>().await,
        }
    }
}

enum BodyError {
    TooLarge,
    Client(Box<Error>),
}

/// Read the whole request body, refusing more than `max` bytes.
async fn read_body(s: &mut Session, max: usize) -> std::result::Result<Bytes, BodyError> {
    let declared = s
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let expects_continue = s
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        s.write_continue_response()
            .await
            .map_err(BodyError::Client)?;
    }
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    while let Some(chunk) = s.read_request_body().await.map_err(BodyError::Client)? {
        let total = buf.len() + first.as_ref().map_or(0, Bytes::len) + chunk.len();
        if total > max {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            // The usual single-chunk body is kept without a copy.
            None if buf.is_empty() => first = Some(chunk),
            prev => {
                if let Some(p) = prev {
                    buf.reserve(declared.map_or(0, |n| n as usize));
                    buf.extend_from_slice(&p);
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

enum Slot {
    Rejected,
    ClientGone(Box<Error>),
}

/// Take a limiter slot, giving up when the queue timeout passes or the
/// client leaves while queued.
async fn acquire(
    s: &mut Session,
    limiter: &Limiter,
    wait: Duration,
) -> std::result::Result<OwnedSemaphorePermit, Slot> {
    if let Some(p) = limiter.try_acquire() {
        return Ok(p);
    }
    tokio::select! {
        r = limiter.acquire(wait) => r.map_err(|_| Slot::Rejected),
        e = client_gone(s) => Err(Slot::ClientGone(e)),
    }
}

/// The client token the request presents, if it is one of ours; returns the
/// header it came in so it is never forwarded.
fn authorized(h: &http::HeaderMap, tokens: &[crate::config::Secret]) -> Option<&'static str> {
    headers::client_credentials(h).find_map(|(name, presented)| {
        tokens
            .iter()
            .any(|t| constant_time_eq(t.expose().as_bytes(), presented.as_bytes()))
            .then_some(name)
    })
}

/// Comparison whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Write a whole response (header and body) built by steadfast.
async fn write_whole(s: &mut Session, ctx: &mut Ctx, resp: ResponseHeader, body: Bytes) -> Handled {
    ctx.committed = true;
    if let Err(e) = s
        .write_response_header(Box::new(resp), body.is_empty())
        .await
    {
        return Handled::Abort(e);
    }
    ctx.rec.ttfb = Some(ctx.rec.started.elapsed());
    if !body.is_empty() {
        if let Err(e) = s.write_response_body(Some(body), true).await {
            return Handled::Abort(e);
        }
    }
    Handled::Responded
}

/// Answer with an error of steadfast's own, in the route's dialect.
pub async fn respond_local(
    s: &mut Session,
    ctx: &mut Ctx,
    kind: LocalError,
    message: &str,
    attempts: Option<u32>,
) -> Handled {
    ctx.rec.status = kind.status();
    ctx.rec.class = Some(kind.class());
    if ctx.rec.request_id.is_empty() {
        ctx.rec.request_id = headers::request_id(s.req_header());
    }
    let body = dialect::error_body(ctx.api, kind, message);
    let resp = match local_header(kind, &ctx.rec.request_id, attempts.unwrap_or(0), body.len()) {
        Ok(r) => r,
        Err(e) => return Handled::Abort(e),
    };
    write_whole(s, ctx, resp, body).await
}

fn local_header(
    kind: LocalError,
    request_id: &str,
    attempts: u32,
    len: usize,
) -> Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(kind.status(), Some(8))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    if kind == LocalError::Overloaded {
        resp.insert_header(http::header::RETRY_AFTER, "1")?;
    }
    headers::stamp(
        &mut resp,
        request_id,
        "none",
        attempts,
        Some(kind.class().as_str()),
    )?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn client_token_is_matched_in_either_header() {
        let tokens = vec![crate::config::Secret::new("tok".into())];
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer tok".parse().unwrap());
        assert_eq!(authorized(&h, &tokens), Some("authorization"));
        let mut h = http::HeaderMap::new();
        h.insert("x-api-key", "tok".parse().unwrap());
        assert_eq!(authorized(&h, &tokens), Some("x-api-key"));
        let mut h = http::HeaderMap::new();
        h.insert("x-api-key", "nope".parse().unwrap());
        assert_eq!(authorized(&h, &tokens), None);
        assert_eq!(authorized(&http::HeaderMap::new(), &tokens), None);
    }

    #[test]
    fn local_error_headers() {
        let h = local_header(LocalError::Overloaded, "rid", 0, 10).unwrap();
        assert_eq!(h.status.as_u16(), 503);
        assert_eq!(h.headers["retry-after"], "1");
        assert_eq!(h.headers["x-steadfast-error-class"], "concurrency");
        assert_eq!(h.headers["x-steadfast-provider"], "none");
        assert_eq!(h.headers["x-request-id"], "rid");
    }
}
