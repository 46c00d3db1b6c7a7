//! The failover loop: ask the [`Plan`] for the next provider, make one
//! attempt at a time, and hold a failed attempt's response back until it is
//! known to be the last one. The sequencing policy lives in [`super::plan`];
//! this file is the I/O around it.

use super::cloud::CloudAttempt;
use super::decode::Decode;
use super::hold::{self, HoldEnd};
use super::intake::{acquire, client_gone, left_while_queued, Slot};
use super::plan::{Candidate, Failed, Plan, Step};
use super::relay::{self, Answer};
use super::reply::{respond_local, write_whole};
use super::{Ctx, Handled};
use crate::affinity::AffinityResult;
use crate::app::{App, Route, Runtime};
use crate::body::RequestMeta;
use crate::cloud::beta;
use crate::config::Api;
use crate::content;
use crate::dialect::LocalError;
use crate::headers::{self, UpstreamTarget};
use crate::health::{Availability, Offer};
use crate::limits::Limiter;
use crate::outcome::{self, AttemptResult, ErrorClass};
use crate::provider::{Provider, POOL_IDLE};
use crate::record::AttemptRecord;
use crate::routing::CandidateInfo;
use crate::telemetry;
use crate::translate;
use bytes::{Buf, Bytes, BytesMut};
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, OrErr, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::AsyncWriteExt;

/// Largest failed-attempt body held back for a possible replay to the
/// client; provider error bodies are a few hundred bytes.
const MAX_HELD_ERROR_BODY: usize = 64 * 1024;

/// Largest 2xx JSON answer read whole to check it holds content; a longer
/// one is not empty.
const MAX_EMPTY_CHECK: usize = 1024 * 1024;

/// A failed attempt's response, held in case it ends up being the answer.
pub(super) struct HeldResponse {
    pub(super) provider: String,
    pub(super) header: ResponseHeader,
    pub(super) body: Bytes,
    pub(super) class: ErrorClass,
}

/// One failed attempt, for the message of a 502/504 of our own.
pub(super) struct Failure {
    pub(super) provider: String,
    pub(super) class: ErrorClass,
    pub(super) detail: String,
    /// The provider could not take the request at all; nothing was sent.
    pub(super) skipped: bool,
}

/// What one attempt sends, built before it is counted.
pub(super) struct Outgoing {
    pub(super) head: BytesMut,
    pub(super) body: Bytes,
    pub(super) translation: Option<Translation>,
    /// The attempt's trace span (0 untraced), already in the head's
    /// `traceparent`.
    pub(super) span_id: u64,
    /// A cloud provider's attempt ([`super::cloud`]).
    pub(super) cloud: Option<CloudAttempt>,
}

/// A translated attempt: the dialects on each side and what the answer
/// needs to be written in the client's terms.
#[derive(Clone, Copy)]
pub(super) struct Translation {
    pub(super) client: Api,
    pub(super) upstream: Api,
    pub(super) reply: translate::ReplyContext,
}

pub(super) enum AttemptEnd {
    /// The client got its answer (success, or an error returned as is).
    Finished,
    /// The client connection must be dropped.
    Abort(Box<Error>),
    /// Nothing was sent to the client; try the next provider.
    Failed {
        failed: Failed,
        detail: String,
        held: Option<Box<HeldResponse>>,
    },
}

/// The failover loop over one route's providers.
pub(super) struct Attempts<'a> {
    pub(super) app: &'a App,
    pub(super) rt: &'a Runtime,
    pub(super) route: &'a Route,
    pub(super) body: Bytes,
    pub(super) meta: RequestMeta,
    /// Headers that carry a client token (never forwarded).
    pub(super) strip: Vec<http::HeaderName>,
    pub(super) plan: Plan,
    pub(super) failures: Vec<Failure>,
    pub(super) held: Option<Box<HeldResponse>>,
    /// A response to HEAD has no body whatever its framing headers say; the
    /// upstream session cannot know (the request went out as raw bytes), so
    /// its body is never read and its connection never pooled.
    pub(super) head_request: bool,
    /// The client's `Upgrade` value when the request is a WebSocket
    /// handshake: a 101 then opens a tunnel ([`super::websocket`]).
    pub(super) upgrade: Option<http::HeaderValue>,
    /// What session affinity did to the order, when the route has it.
    pub(super) affinity: Option<AffinityResult>,
}

impl<'a> Attempts<'a> {
    pub(super) fn new(
        app: &'a App,
        rt: &'a Runtime,
        route: &'a Route,
        body: Bytes,
        meta: RequestMeta,
        strip: Vec<http::HeaderName>,
    ) -> Self {
        let now = Instant::now();
        let least_latency = route.settings.strategy == crate::config::Strategy::LeastLatency;
        let (offers, infos): (Vec<Offer>, Vec<CandidateInfo>) = route
            .providers
            .iter()
            .map(|p| {
                let (availability, last_failure_at) = p.health.candidate(now);
                let offer = availability.offer();
                let info = CandidateInfo {
                    available: offer == Offer::First,
                    trial: availability == Availability::TrialReady,
                    weight: p.settings.weight,
                    // Only least_latency orders by it.
                    cost: if least_latency {
                        p.health.load_cost(now)
                    } else {
                        0.0
                    },
                    last_failure_at,
                };
                (offer, info)
            })
            .unzip();
        let (order, affinity) = route.selector.order_for(&infos, meta.session);
        let plan = Plan::new(
            order.into_iter().map(|i| (i, offers[i])),
            rt.config.retry.max_attempts,
            rt.config.retry.failover_on,
        );
        Attempts {
            app,
            rt,
            route,
            body,
            meta,
            strip,
            plan,
            failures: Vec::new(),
            held: None,
            head_request: false,
            upgrade: None,
            affinity,
        }
    }

    /// Make the attempts a WebSocket handshake with this `Upgrade` value.
    pub(super) fn websocket(mut self, upgrade: Option<http::HeaderValue>) -> Self {
        self.upgrade = upgrade;
        self
    }

    pub(super) async fn run(mut self, s: &mut Session, ctx: &mut Ctx) -> Handled {
        self.head_request = s.req_header().method == http::Method::HEAD;
        // Known before any provider answers, so every access log line of a
        // routed request names its model (a commit refines it).
        ctx.rec.model = self.meta.model.clone();
        ctx.rec.affinity = self.affinity;
        if let Some(t) = ctx.rec.trace.as_deref_mut().filter(|t| t.sampled) {
            t.request_model = self.meta.model.clone();
        }
        ctx.rec.session_source = self.meta.session.map(|k| k.source);
        let mut pending_failover: Option<(String, ErrorClass)> = None;
        loop {
            let (c, permit) = match self.plan.next() {
                Step::Try(c) => {
                    let p = &self.route.providers[c.index];
                    match p.limiter.as_ref().map(Limiter::try_acquire) {
                        Some(None) => {
                            self.plan.at_cap(c.index);
                            continue;
                        }
                        Some(Some(permit)) => (c, Some(permit)),
                        None => (c, None),
                    }
                }
                Step::WaitFor(index) => {
                    // Every provider is at its own cap: wait for the first
                    // one's slot like for the global limiter.
                    let Some(limiter) = self.route.providers[index].limiter.clone() else {
                        continue;
                    };
                    let wait = self
                        .rt
                        .config
                        .limits
                        .queue_timeout
                        .saturating_sub(ctx.rec.started.elapsed());
                    match acquire(s, &limiter, wait).await {
                        Ok(p) => (
                            Candidate {
                                index,
                                forced: true,
                            },
                            Some(p),
                        ),
                        Err(Slot::ClientGone(e)) => return left_while_queued(ctx, "provider", e),
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
                Step::GiveUp => break,
            };
            let provider = self.route.providers[c.index].clone();
            // What this provider is sent, or why it cannot take the request
            // (a dialect it does not translate to, a feature it lacks): then
            // the route goes on without counting an attempt.
            let out = match self.prepare(s.req_header(), ctx, &provider) {
                Ok(out) => out,
                Err(why) => {
                    telemetry::provider_skipped(&ctx.rec, provider.name(), &why);
                    self.failures.push(Failure {
                        provider: provider.name().to_string(),
                        class: ErrorClass::Request,
                        detail: why,
                        skipped: true,
                    });
                    continue;
                }
            };
            let Some(is_probe) = provider.health.begin_attempt(Instant::now(), c.forced) else {
                // Half-open and its one trial is already out.
                continue;
            };
            // Logged only now that the next attempt really happens.
            if let Some((from, class)) = pending_failover.take() {
                telemetry::failover(&ctx.rec, &from, class);
            }
            self.plan.started();
            let end = self.attempt(s, ctx, &provider, is_probe, out).await;
            drop(permit);
            match end {
                AttemptEnd::Finished => return Handled::Responded,
                AttemptEnd::Abort(e) => return Handled::Abort(e),
                AttemptEnd::Failed {
                    failed,
                    detail,
                    held,
                } => {
                    if held.is_some() {
                        self.held = held;
                    }
                    let name = provider.name().to_string();
                    self.failures.push(Failure {
                        provider: name.clone(),
                        class: failed.class,
                        detail,
                        skipped: false,
                    });
                    if !self.plan.failed(c, failed) {
                        break;
                    }
                    pending_failover = Some((name, failed.class));
                }
            }
        }
        self.give_up(s, ctx).await
    }

    /// No attempt produced an answer for the client: return the last held
    /// upstream response as is, else a 502/504 of our own.
    async fn give_up(self, s: &mut Session, ctx: &mut Ctx) -> Handled {
        let made = self.plan.made();
        if let Some(h) = self.held {
            ctx.rec.provider = Some(h.provider.clone());
            ctx.rec.status = h.header.status.as_u16();
            ctx.rec.class = Some(h.class);
            let resp = headers::for_client(
                h.header,
                &ctx.rec.request_id,
                &h.provider,
                made,
                Some(h.class.as_str()),
            )
            .and_then(|mut resp| {
                resp.remove_header("content-length");
                resp.insert_header("content-length", h.body.len().to_string())?;
                Ok(resp)
            });
            return match resp {
                Ok(resp) => write_whole(s, ctx, resp, h.body).await,
                Err(e) => Handled::Abort(e),
            };
        }
        if made == 0 && self.plan.excluded() == self.route.providers.len() {
            let names: Vec<&str> = self.route.providers.iter().map(|p| p.name()).collect();
            let msg = format!(
                "every provider of route {} is disabled by an operator ({}); \
                 see GET /providers on the admin listener",
                self.route.settings.name,
                names.join(", ")
            );
            return respond_local(s, ctx, LocalError::NoProvider, &msg, Some(0)).await;
        }
        let classes: Vec<ErrorClass> = self.failures.iter().map(|f| f.class).collect();
        let kind = match outcome::status_for_failed_attempts(&classes) {
            // No provider could take the request as it is: the request's
            // problem, not an outage; a path no provider here serves (a
            // route of clouds asked for /v1/models) is not found.
            _ if made == 0
                && !self.failures.is_empty()
                && self.failures.iter().all(|f| f.skipped) =>
            {
                if self.path_served_nowhere(&s.req_header().method, &ctx.rec.path) {
                    LocalError::NoRoute
                } else {
                    LocalError::BadRequest
                }
            }
            (504, _) => LocalError::AllTimeout,
            _ => LocalError::AllNetwork,
        };
        let tried: Vec<String> = self
            .failures
            .iter()
            .map(|f| format!("{} ({}: {})", f.provider, f.class, f.detail))
            .collect();
        let msg = match made {
            0 if !tried.is_empty() => format!(
                "no provider of route {} can take this request: {}",
                self.route.settings.name,
                tried.join(", ")
            ),
            0 => format!(
                "no provider of route {} could be tried",
                self.route.settings.name
            ),
            1 => format!("the only attempt failed: {}", tried.join(", ")),
            n => format!("all {n} attempts failed: {}", tried.join(", ")),
        };
        respond_local(s, ctx, kind, &msg, Some(made)).await
    }

    /// The request body translated into `p`'s dialect, and what writing
    /// its answer back in the client's dialect needs. Logged as a
    /// translation; `Err` says why it cannot be translated.
    pub(super) fn translate_for(
        &self,
        ctx: &Ctx,
        p: &Provider,
    ) -> std::result::Result<(Bytes, Translation), String> {
        let route = &self.route.settings;
        let t =
            translate::translate_request(route.api, p.settings.api, &self.body, &p.settings.models)
                .map_err(|e| e.to_string())?;
        telemetry::translated(&ctx.rec, p.name(), route.api, p.settings.api, &t.notes);
        let mut reply = t.reply;
        reply.created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let tr = Translation {
            client: route.api,
            upstream: p.settings.api,
            reply,
        };
        Ok((t.body, tr))
    }

    /// The request as this provider takes it: body (model mapped, or
    /// translated into its dialect) and head. `Err` says why it cannot
    /// take it at all.
    pub(super) fn prepare(
        &self,
        req: &pingora_http::RequestHeader,
        ctx: &Ctx,
        p: &Provider,
    ) -> std::result::Result<Outgoing, String> {
        if p.settings.kind.is_cloud() {
            return self.prepare_cloud(req, ctx, p);
        }
        let route = &self.route.settings;
        let plan = if route.translate {
            translate::plan(route.api, p.settings.api, &ctx.rec.path)
        } else {
            translate::Plan::Passthrough
        };
        let (body, translation, path) = match plan {
            translate::Plan::Passthrough => {
                let body = if self.route.rewrites_models {
                    crate::body::rewrite_model(&self.body, &p.settings.models)
                } else {
                    self.body.clone()
                };
                (body, None, None)
            }
            translate::Plan::Refuse(why) => return Err(why.to_string()),
            translate::Plan::Translate { path } => {
                let (body, tr) = self.translate_for(ctx, p)?;
                (body, Some(tr), Some(path))
            }
        };
        // Another dialect's headers mean nothing there; a translated
        // Anthropic attempt needs the version header Anthropic requires.
        let (drop, extra): (&[&str], &[(&str, &str)]) = match translation {
            None => (&[], &[]),
            Some(t) if t.upstream == Api::Anthropic => (
                &["openai-organization", "openai-project", "openai-beta"],
                &[
                    ("anthropic-version", "2023-06-01"),
                    ("content-type", "application/json"),
                ],
            ),
            Some(_) => (
                &[
                    "anthropic-version",
                    "anthropic-beta",
                    "anthropic-dangerous-direct-browser-access",
                ],
                &[("content-type", "application/json")],
            ),
        };
        // One snapshot of the key for the whole attempt: a rotation now
        // reaches the next attempt, never half of this one.
        let key = p.key();
        // The provider's `anthropic_beta` allow/deny list, applied to the
        // header a direct Anthropic provider reads its flags from.
        let beta = match p.settings.api {
            Api::Anthropic => beta::header_edit(&p.settings.anthropic_beta, &req.headers),
            _ => beta::HeaderEdit::Keep,
        };
        let (fewer, more): (Vec<&str>, Vec<(&str, &str)>);
        let (drop, extra) = match &beta {
            beta::HeaderEdit::Keep => (drop, extra),
            beta::HeaderEdit::Remove => {
                fewer = [drop, &[beta::HEADER]].concat();
                (&fewer[..], extra)
            }
            beta::HeaderEdit::Replace(v) => {
                more = [extra, &[(beta::HEADER, v.to_str().unwrap_or_default())]].concat();
                (drop, &more[..])
            }
        };
        let target = UpstreamTarget {
            path,
            drop,
            extra,
            drop_credentials: translation.is_some(),
            ..UpstreamTarget::direct(
                &p.host_header,
                &p.settings.upstream.path_prefix,
                key.as_deref().map(|k| (&k.name, &k.value)),
            )
        };
        // A WebSocket handshake may carry a key as a subprotocol.
        let ws_request = self
            .upgrade
            .as_ref()
            .and_then(|_| super::websocket::without_key_subprotocol(req, target.key.is_some()));
        // The attempt's span, named to the provider in `traceparent`.
        let span_id = ctx.rec.trace.as_ref().map_or(0, |_| crate::otel::span_id());
        let trace = ctx.rec.trace.as_ref().map(|tc| tc.propagation(span_id));
        // The access log's path is the normalised one that goes upstream.
        let head = headers::upstream_request_traced(
            ws_request.as_ref().unwrap_or(req),
            &target,
            &ctx.rec.path,
            &self.strip,
            &ctx.rec.request_id,
            body.len(),
            trace.as_ref(),
        )
        .and_then(|head| match &self.upgrade {
            Some(upgrade) => super::websocket::with_upgrade(head, upgrade),
            None => Ok(head),
        })
        .map_err(|e| format!("cannot build the upstream request: {}", describe(&e)))?;
        Ok(Outgoing {
            head,
            body,
            translation,
            span_id,
            cloud: None,
        })
    }

    /// One attempt against one provider.
    async fn attempt(
        &mut self,
        s: &mut Session,
        ctx: &mut Ctx,
        p: &Arc<Provider>,
        is_probe: bool,
        out: Outgoing,
    ) -> AttemptEnd {
        let _load = LoadGuard::new(p);
        let Outgoing {
            head: up_head,
            body,
            translation,
            span_id,
            cloud,
        } = out;
        let mut t = Try {
            p: p.clone(),
            is_probe,
            started: Instant::now(),
            span_id,
            ttfb: None,
            status: None,
            upstream_request_id: None,
            first_content: None,
            pre_content: false,
            translated: translation.map(|t| (t.client, t.upstream)),
        };
        // The budget for getting an answer: every attempt and the wait for
        // each response header. A committed stream is bounded by
        // stream_idle_ms alone (see relay): a long, healthy answer is
        // never cut.
        let deadline = ctx.rec.started + p.settings.timeouts.total;
        if let Some(why) = cloud.as_ref().and_then(|c| c.unavailable.clone()) {
            // Nothing to sign with: not a mystery 403 from the cloud, but
            // the reason, and the provider judged as for a rejected key.
            let failed = Failed::new(ErrorClass::Auth, false);
            return self.fail(ctx, &t, failed, why, None, None);
        }

        let Some(peer) = p.peer() else {
            return self.fail(
                ctx,
                &t,
                Failed::new(ErrorClass::Network, false),
                "host not resolved yet".into(),
                None,
                None,
            );
        };
        // A streamed answer starts with its header at once; a whole answer
        // comes when the model is done thinking, which can take minutes.
        let header_budget = if self.meta.stream {
            p.settings.timeouts.response_header_stream
        } else {
            p.settings.timeouts.response_header
        };

        let exchanged = self
            .send(s, &peer, &up_head, &body, header_budget, deadline)
            .await;
        ctx.rec.upstream_wait += t.started.elapsed();
        let mut up = match exchanged {
            Ok(up) => up,
            Err(Sent::ClientGone(e)) => return self.client_left(ctx, &t, e),
            Err(Sent::Failed(failed, detail)) => {
                return self.fail(ctx, &t, failed, detail, None, None)
            }
        };
        let ttfb = t.started.elapsed();
        t.ttfb = Some(ttfb);
        p.health.observe_ttfb(Instant::now(), ttfb);
        let Some(mut head) = up.resp_header().cloned() else {
            return self.fail(
                ctx,
                &t,
                Failed::new(ErrorClass::Network, false),
                "no response header".into(),
                None,
                None,
            );
        };
        let mut status = head.status.as_u16();
        t.status = Some(status);
        t.upstream_request_id = headers::upstream_request_id(&head.headers);
        if status == 101 {
            if self.upgrade.is_some() {
                drop((up_head, body));
                // Boxed: a tunnel's state must not enlarge every request's.
                return Box::pin(self.tunnel(s, ctx, t, up, head)).await;
            }
            // Switching protocols on a request that asked for no switch:
            // what follows is not HTTP, and relaying it would hang the client.
            let detail = "101 Switching Protocols to a request that asked for no upgrade".into();
            return self.fail(
                ctx,
                &t,
                Failed::new(ErrorClass::Network, false),
                detail,
                None,
                None,
            );
        }
        let idle = p.settings.timeouts.stream_idle;
        let mut detail = format!("status {status}");
        // The body read before deciding: a 4xx that may say the prompt is
        // too long, a 2xx JSON answer checked for content, a cloud's error.
        let mut read: Option<Held> = None;
        // A cloud's error answer is Anthropic's before anything judges it:
        // its class follows the cloud's error type, not only the status.
        if let Some(c) = cloud
            .as_ref()
            .filter(|_| !(200..300).contains(&status) && !self.head_request)
        {
            let held = self
                .read_body(ctx, &mut up, idle, deadline, MAX_HELD_ERROR_BODY)
                .await;
            read = Some(match held {
                Held::Complete(b) => {
                    let e = c.error(status, &head.headers, &b);
                    if let Err(err) = replace_body(&mut head, e.status, e.body.len()) {
                        let failed = Failed::new(ErrorClass::Network, false);
                        return self.fail(ctx, &t, failed, describe(&err), None, None);
                    }
                    if e.status != status {
                        detail = format!("status {status}, answered as {}", e.status);
                    }
                    status = e.status;
                    Held::Complete(e.body)
                }
                other => other,
            });
        }
        let mut class = outcome::classify_status(status);
        if class == Some(ErrorClass::Auth) {
            // The cloud refused the credentials held (expired, revoked):
            // fetch new ones now rather than at the next scheduled refresh.
            if let Some(c) = &cloud {
                c.credential.refresh_soon();
            }
        }
        let mut retry_after = match status {
            429 | 503 => crate::health::retry_after(&head.headers, SystemTime::now()),
            _ => None,
        };

        // A 4xx the status calls `request` may be a context-window
        // overflow, which the next provider's model may take: its body
        // decides (class `context_length`).
        if class == Some(ErrorClass::Request)
            && matches!(status, 400 | 413 | 422)
            && !self.head_request
        {
            let held = match read.take() {
                Some(h) => h,
                None => {
                    self.read_body(ctx, &mut up, idle, deadline, MAX_HELD_ERROR_BODY)
                        .await
                }
            };
            if let Held::Complete(b) = &held {
                let v = content::request_error(b);
                class = Some(v.class);
                if !v.message.is_empty() {
                    detail = format!("status {status}: {}", v.message);
                }
            }
            read = Some(held);
        }

        // A Bedrock stream is the SSE it will be decoded into.
        let eventstream = match &cloud {
            Some(c) if class.is_none() && (200..300).contains(&status) => {
                match c.stream_head(&mut head) {
                    Ok(e) => e,
                    Err(e) => {
                        let failed = Failed::new(ErrorClass::Network, false);
                        return self.fail(ctx, &t, failed, describe(&e), None, None);
                    }
                }
            }
            _ => false,
        };

        // A 2xx JSON answer with no content and no tool call is `empty`:
        // read whole before anything is sent (a whole answer reaches the
        // client no sooner anyway), so that it can fail over, or go back
        // marked as what it is.
        let sse = relay::is_sse(&head);
        if class.is_none()
            && (200..300).contains(&status)
            && !self.head_request
            && !sse
            && is_json(&head)
            && self.rt.config.retry.fails_over(ErrorClass::Empty)
        {
            let held = self
                .read_body(ctx, &mut up, idle, deadline, MAX_EMPTY_CHECK)
                .await;
            if matches!(&held, Held::Complete(b) if content::is_empty_answer(b)) {
                class = Some(ErrorClass::Empty);
                detail = format!("status {status} with no content");
            }
            read = Some(held);
        }

        // A translated answer that is not a stream is read whole and
        // rewritten in the client's dialect: an error in its error shape
        // (status mapped), an answer in its answer shape.
        if let Some(tr) = translation.filter(|_| !sse && !self.head_request) {
            let held = match read.take() {
                Some(h) => h,
                None => {
                    let max = if class.is_none() {
                        MAX_EMPTY_CHECK
                    } else {
                        MAX_HELD_ERROR_BODY
                    };
                    self.read_body(ctx, &mut up, idle, deadline, max).await
                }
            };
            read = Some(match held {
                Held::Complete(b) => {
                    let (status, body) = if (200..300).contains(&status) {
                        match translate::translate_response(tr.upstream, tr.client, &b, &tr.reply) {
                            Ok(r) => (status, r.body),
                            Err(e) => {
                                let failed = Failed::new(ErrorClass::Server, false);
                                return self.fail(ctx, &t, failed, e.to_string(), None, None);
                            }
                        }
                    } else {
                        translate::translate_error(tr.upstream, tr.client, status, &b)
                    };
                    if let Err(e) = replace_body(&mut head, status, body.len()) {
                        let failed = Failed::new(ErrorClass::Network, false);
                        return self.fail(ctx, &t, failed, describe(&e), None, None);
                    }
                    Held::Complete(body)
                }
                Held::TooLarge(_) => {
                    let failed = Failed::new(ErrorClass::Server, false);
                    let detail = "the answer is too large to translate".to_string();
                    return self.fail(ctx, &t, failed, detail, None, None);
                }
                Held::Broken => Held::Broken,
            });
        }

        let mut prefix = None;
        // A 5xx often clears at once; a 429 or a rejected key does not.
        if let Some(failed) = class
            .map(|c| Failed::new(c, c == ErrorClass::Server))
            .filter(|f| self.plan.would_continue(*f))
        {
            // Hold the error back: it is only the answer if nothing better
            // comes from the next providers.
            let held = match read.take() {
                Some(h) => h,
                None if self.head_request => Held::Complete(Bytes::new()),
                None => {
                    self.read_body(ctx, &mut up, idle, deadline, MAX_HELD_ERROR_BODY)
                        .await
                }
            };
            match held {
                Held::Complete(body) => {
                    self.release(up, &peer).await;
                    let h = Box::new(HeldResponse {
                        provider: p.name().to_string(),
                        header: head,
                        body,
                        class: failed.class,
                    });
                    return self.fail(ctx, &t, failed, detail, retry_after, Some(h));
                }
                Held::Broken => {
                    return self.fail(
                        ctx,
                        &t,
                        failed,
                        format!("{detail}, then the body broke"),
                        retry_after,
                        None,
                    );
                }
                // Too big to hold: this one is the answer after all.
                Held::TooLarge(bytes) => prefix = Some(bytes),
            }
        } else if let Some(held) = read {
            match held {
                Held::Complete(b) | Held::TooLarge(b) => prefix = Some(b),
                Held::Broken => {
                    let failed = Failed::new(ErrorClass::Network, true);
                    let detail = format!("{detail}, then the body broke");
                    return self.fail(ctx, &t, failed, detail, None, None);
                }
            }
        }

        // A 2xx stream is held until its first content: an error event,
        // an end or a silence before it still fails over. A
        // translated one is held as the client will see it.
        let mut framer = None;
        let mut decode = match translation {
            Some(tr) if sse => Decode::translate(tr.upstream, tr.client, &tr.reply),
            _ => Decode::Plain,
        };
        if eventstream {
            decode = Decode::eventstream(decode);
        }
        if class.is_none() && (200..300).contains(&status) && !self.head_request && sse {
            let waited = Instant::now();
            let budget = hold::Budget {
                first_content: (waited + p.settings.timeouts.first_content).min(deadline),
                idle,
            };
            let end = hold::hold(s, &mut up, ctx.api, budget, &mut decode).await;
            ctx.rec.upstream_wait += waited.elapsed();
            match end {
                HoldEnd::ClientGone(e) => return self.client_left(ctx, &t, e),
                HoldEnd::Commit {
                    held,
                    framer: f,
                    content,
                } => {
                    if content {
                        t.first_content = Some(t.started.elapsed());
                    }
                    prefix = Some(held);
                    framer = Some(f);
                }
                HoldEnd::Failed {
                    class: c,
                    detail: d,
                    retry_after: hint,
                    held,
                    body_done,
                } => {
                    t.pre_content = true;
                    let failed = Failed::new(c, c == ErrorClass::Server);
                    if self.plan.would_continue(failed) {
                        let kept = held.map(|(body, _)| {
                            Box::new(HeldResponse {
                                provider: p.name().to_string(),
                                header: head,
                                body,
                                class: c,
                            })
                        });
                        if body_done {
                            self.release(up, &peer).await;
                        }
                        return self.fail(ctx, &t, failed, d, hint, kept);
                    }
                    match held {
                        // The last word: what the provider sent goes to the
                        // client as is, as one well-formed stream.
                        Some((b, f)) => {
                            class = Some(c);
                            retry_after = hint;
                            prefix = Some(b);
                            framer = Some(f);
                        }
                        None => return self.fail(ctx, &t, failed, d, None, None),
                    }
                }
            }
        }

        // Not needed while the response streams: keep them out of the
        // state a long stream carries.
        drop((up_head, body));
        self.commit(
            s,
            ctx,
            Answer {
                t,
                up,
                peer,
                head,
                class,
                retry_after,
                prefix,
                framer,
                decode,
            },
        )
        .await
    }

    /// Connect (a pooled connection first), send the request, and wait
    /// for the response header. A pooled connection that the upstream
    /// closed while idle fails on first use; that says nothing about the
    /// provider, so it goes again on a fresh one.
    pub(super) async fn send(
        &self,
        s: &mut Session,
        peer: &HttpPeer,
        head: &[u8],
        body: &[u8],
        header_budget: Duration,
        deadline: Instant,
    ) -> std::result::Result<UpstreamSession, Sent> {
        let mut fresh = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Sent::Failed(
                    Failed::new(ErrorClass::Timeout, false),
                    "total timeout reached".to_string(),
                ));
            }
            let connect = async {
                let pooled = if fresh {
                    None
                } else {
                    self.app.transport.reused_stream(peer).await
                };
                match pooled {
                    Some(s) => Ok((s, true)),
                    // Connecting (TCP + TLS) is a future of several KiB;
                    // boxed, it does not enlarge the state every request
                    // (streams included) carries for its whole life, and
                    // it is only paid for when the pool has nothing.
                    None => Box::pin(self.app.transport.new_stream(peer))
                        .await
                        .map(|s| (s, false)),
                }
            };
            let (stream, reused) = match tokio::time::timeout(left, connect).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let (f, d) = transport_failure(&e);
                    return Err(Sent::Failed(f, d));
                }
                Err(_) => {
                    return Err(Sent::Failed(
                        Failed::new(ErrorClass::Timeout, false),
                        "total timeout reached while connecting".into(),
                    ))
                }
            };
            let budget = header_budget.min(deadline.saturating_duration_since(Instant::now()));
            let step = {
                let exchange = tokio::time::timeout(budget, exchange(stream, peer, head, body));
                tokio::select! {
                    r = exchange => Ok(r),
                    e = client_gone(s) => Err(e),
                }
            };
            match step {
                Err(e) => return Err(Sent::ClientGone(e)),
                Ok(Ok(Ok(up))) => return Ok(up),
                Ok(Ok(Err(e))) if reused && !fresh && outcome::dead_pooled_connection(&e) => {
                    fresh = true;
                }
                Ok(Ok(Err(e))) => {
                    let (f, d) = transport_failure(&e);
                    return Err(Sent::Failed(f, d));
                }
                Ok(Err(_)) => {
                    return Err(Sent::Failed(
                        Failed::new(ErrorClass::Timeout, false),
                        format!("no response header within {} ms", budget.as_millis()),
                    ))
                }
            }
        }
    }

    /// Read an upstream body before deciding what to do with the response,
    /// bounded in size and time; the wait counts as upstream time.
    async fn read_body(
        &self,
        ctx: &mut Ctx,
        up: &mut UpstreamSession,
        idle: Duration,
        deadline: Instant,
        max: usize,
    ) -> Held {
        let waited = Instant::now();
        let held = read_held_body(up, idle, deadline, max).await;
        ctx.rec.upstream_wait += waited.elapsed();
        held
    }

    /// The client went away: stop, and do not blame the provider.
    pub(super) fn client_left(&mut self, ctx: &mut Ctx, t: &Try, e: Box<Error>) -> AttemptEnd {
        ctx.rec.class = Some(ErrorClass::Client);
        self.record_attempt(ctx, t, AttemptResult::Failed(ErrorClass::Client));
        if t.is_probe {
            // Give the probe slot back: the provider was not judged.
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
    pub(super) fn fail(
        &mut self,
        ctx: &mut Ctx,
        t: &Try,
        failed: Failed,
        detail: String,
        retry_after: Option<Duration>,
        held: Option<Box<HeldResponse>>,
    ) -> AttemptEnd {
        self.judge(ctx, t, AttemptResult::Failed(failed.class), retry_after);
        AttemptEnd::Failed {
            failed,
            detail,
            held,
        }
    }

    /// Record the attempt and feed its result to the provider's health.
    pub(super) fn judge(
        &self,
        ctx: &mut Ctx,
        t: &Try,
        result: AttemptResult,
        retry_after: Option<Duration>,
    ) {
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
            if matches!(tr, crate::health::Transition::Ejected { .. }) {
                // Its recovery probes are scheduled from now on.
                crate::health::probe::wake();
            }
            telemetry::provider_transition(t.p.name(), &tr);
        }
    }

    pub(super) fn record_attempt(&self, ctx: &mut Ctx, t: &Try, result: AttemptResult) {
        let a = AttemptRecord {
            provider: t.p.name().to_string(),
            result,
            started: t.started,
            span_id: t.span_id,
            status: t.status,
            ttfb: t.ttfb,
            upstream_request_id: t.upstream_request_id.clone(),
            first_content: t.first_content,
            pre_content: t.pre_content,
            translated: t
                .translated
                .map(|(from, to)| format!("{}->{}", from.as_str(), to.as_str())),
            waited: t.started.elapsed(),
        };
        telemetry::attempt_finished(&a);
        ctx.rec.attempts.push(a);
    }

    /// Return a finished upstream connection to the pool when it can carry
    /// another request.
    pub(super) async fn release(&self, mut up: UpstreamSession, peer: &HttpPeer) {
        if self.head_request {
            return;
        }
        up.respect_keepalive();
        // Boxed for the same reason as connecting: a large future awaited
        // once at the end should not enlarge every stream's state.
        if let Some(stream) = Box::pin(up.reuse()).await {
            use pingora_core::upstreams::peer::Peer;
            self.app
                .transport
                .release_stream(stream, peer.reuse_hash(), Some(POOL_IDLE));
        }
    }
}

/// One attempt's identity and timing.
pub(super) struct Try {
    pub(super) p: Arc<Provider>,
    pub(super) is_probe: bool,
    pub(super) started: Instant,
    /// The attempt's trace span; 0 when the request is not traced.
    pub(super) span_id: u64,
    pub(super) ttfb: Option<Duration>,
    pub(super) status: Option<u16>,
    pub(super) upstream_request_id: Option<String>,
    /// From sending the request to the first content-bearing event.
    pub(super) first_content: Option<Duration>,
    /// The attempt failed inside a 2xx, before its first content.
    pub(super) pre_content: bool,
    /// (client, provider) dialects of a translated attempt.
    pub(super) translated: Option<(Api, Api)>,
}

impl Try {
    pub(super) fn new(p: &Arc<Provider>, is_probe: bool, span_id: u64) -> Try {
        Try {
            p: p.clone(),
            is_probe,
            started: Instant::now(),
            span_id,
            ttfb: None,
            status: None,
            upstream_request_id: None,
            first_content: None,
            pre_content: false,
            translated: None,
        }
    }
}

impl Outgoing {
    pub(super) fn head(&self) -> &[u8] {
        &self.head
    }

    pub(super) fn body(&self) -> &[u8] {
        &self.body
    }

    pub(super) fn span_id(&self) -> u64 {
        self.span_id
    }
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

/// The header of an answer whose body steadfast rewrote: its status and
/// length are the new body's.
fn replace_body(head: &mut ResponseHeader, status: u16, len: usize) -> Result<()> {
    head.set_status(status)?;
    head.remove_header(&http::header::TRANSFER_ENCODING);
    head.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    head.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    Ok(())
}

fn is_json(h: &ResponseHeader) -> bool {
    h.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"))
}

/// Why no response header came back.
pub(super) enum Sent {
    ClientGone(Box<Error>),
    Failed(Failed, String),
}

/// A transport error as the plan sees it, with a key-free description.
fn transport_failure(e: &Error) -> (Failed, String) {
    let class = outcome::classify_transport(e.etype());
    let retry = class == ErrorClass::Network && outcome::transport_worth_retrying(e.etype());
    (Failed::new(class, retry), describe(e))
}

/// A short, key-free description of a transport error.
pub(super) fn describe(e: &Error) -> String {
    let root = e.root_cause().to_string();
    if e.cause.is_none() || root.is_empty() {
        e.etype().as_str().to_string()
    } else {
        format!("{}: {root}", e.etype().as_str())
    }
}

/// Send the request head and body in one write, then read up to the final
/// response header.
pub(super) async fn exchange(
    mut stream: Stream,
    peer: &HttpPeer,
    head: &[u8],
    body: &[u8],
) -> Result<UpstreamSession> {
    let mut wire = head.chain(body);
    stream
        .write_all_buf(&mut wire)
        .await
        .or_err(ErrorType::WriteError, "while sending the request")?;
    stream
        .flush()
        .await
        .or_err(ErrorType::WriteError, "while sending the request")?;
    let mut up = UpstreamSession::new_with_options(stream, peer);
    loop {
        up.read_response().await?;
        match up.resp_header() {
            // 1xx (other than 101) are interim: the real answer follows.
            Some(h) if h.status.is_informational() && h.status.as_u16() != 101 => continue,
            Some(_) => return Ok(up),
            None => return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header"),
        }
    }
}

pub(super) enum Held {
    Complete(Bytes),
    TooLarge(Bytes),
    Broken,
}

/// Read a response body whole, bounded in size and time.
pub(super) async fn read_held_body(
    up: &mut UpstreamSession,
    idle: Duration,
    deadline: Instant,
    max: usize,
) -> Held {
    let mut buf = BytesMut::new();
    loop {
        let budget = idle.min(deadline.saturating_duration_since(Instant::now()));
        match tokio::time::timeout(budget, up.read_body_bytes()).await {
            Ok(Ok(Some(chunk))) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > max {
                    return Held::TooLarge(buf.freeze());
                }
            }
            Ok(Ok(None)) => return Held::Complete(buf.freeze()),
            Ok(Err(_)) | Err(_) => return Held::Broken,
        }
    }
}
