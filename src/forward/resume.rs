//! Continuing a stream cut mid-answer on the next provider
//! (`retry.resume_streams`, opt-in). The policy (what can be continued, the
//! prefill request, the stitching) is in [`crate::resume`]; this is the
//! I/O: find a provider that takes the prefill, send the continuation, and
//! hand its stream to the relay.

use super::attempts::{Attempts, Sent, Try};
use super::decode::Decode;
use super::plan::{Failed, Step};
use super::relay::{is_sse, Sink, Stream};
use super::Ctx;
use crate::limits::Limiter;
use crate::outcome::{self, AttemptResult, ErrorClass};
use crate::resume::{self, Point, Stitcher};
use crate::telemetry;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_error::Error;
use pingora_proxy::Session;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// How a resumption went.
pub(super) enum Resumed {
    /// The continuation's stream, ready to be relayed.
    Yes(Box<(Stream, UpstreamSession)>),
    /// Nothing could continue: the stream ends as it would have.
    No,
    ClientGone(Box<Error>),
}

impl Attempts<'_> {
    /// The stream of `broken` broke with `class` while text was in progress:
    /// send the original request, with the text delivered so far as an
    /// assistant prefill, to the next provider that takes one.
    pub(super) async fn resume(
        &mut self,
        s: &mut Session,
        ctx: &mut Ctx,
        sink: &mut Sink,
        broken: &mut Stream,
        class: ErrorClass,
        detail: &str,
    ) -> Resumed {
        let from = broken.t.p.name().to_string();
        let Some(point) = sink.tracker.as_ref().and_then(resume::Tracker::point) else {
            telemetry::stream_resume(&ctx.rec, &from, "not_resumable");
            return Resumed::No;
        };
        let Some(body) = resume::continuation_body(ctx.api, &self.body, &point.delivered) else {
            telemetry::stream_resume(&ctx.rec, &from, "not_resumable");
            return Resumed::No;
        };
        // The broken attempt is judged now, before any continuation (the
        // attempt chain stays in order): it did break.
        self.judge(ctx, &broken.t, AttemptResult::Failed(class), None);
        telemetry::stream_interrupted(&ctx.rec, &from, class, detail);
        broken.judged = true;
        let deadline = ctx.rec.started + broken.t.p.settings.timeouts.total;
        let original = std::mem::replace(&mut self.body, body);
        let found = self.continuation(s, ctx, &point, deadline).await;
        self.body = original;
        match found {
            Ok(Some((t, up, peer))) => {
                telemetry::stream_resume(&ctx.rec, &from, "resumed");
                ctx.rec.resumed_from = Some(from);
                ctx.rec.resumed_at_tokens = Some(point.tokens_estimate());
                ctx.rec.provider = Some(t.p.name().to_string());
                sink.forget_error();
                let stitcher = Stitcher::new(ctx.api, point);
                Resumed::Yes(Box::new((
                    Stream {
                        t,
                        peer,
                        class: None,
                        retry_after: None,
                        decode: Decode::stitch(stitcher),
                        judged: false,
                    },
                    up,
                )))
            }
            Ok(None) => {
                telemetry::stream_resume(&ctx.rec, &from, "failed");
                Resumed::No
            }
            Err(e) => Resumed::ClientGone(e),
        }
    }

    /// Try the remaining providers, in the route's order, for one that
    /// answers the prefilled request with a stream.
    async fn continuation(
        &mut self,
        s: &mut Session,
        ctx: &mut Ctx,
        point: &Point,
        deadline: Instant,
    ) -> Result<
        Option<(
            Try,
            UpstreamSession,
            std::sync::Arc<pingora_core::upstreams::peer::HttpPeer>,
        )>,
        Box<Error>,
    > {
        let _ = point;
        loop {
            let c = match self.plan.next() {
                Step::Try(c) => c,
                Step::WaitFor(_) | Step::GiveUp => return Ok(None),
            };
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let p = self.route.providers[c.index].clone();
            // Same dialect only (a prefill does not translate), and a
            // provider that takes one.
            if p.settings.api != ctx.api || !p.takes_prefill() {
                continue;
            }
            let permit = match p.limiter.as_ref().map(Limiter::try_acquire) {
                Some(None) => continue,
                Some(Some(permit)) => Some(permit),
                None => None,
            };
            let Ok(out) = self.prepare(s.req_header(), ctx, &p) else {
                continue;
            };
            let Some(peer) = p.peer() else {
                continue;
            };
            let Some(is_probe) = p.health.begin_attempt(Instant::now(), c.forced) else {
                continue;
            };
            self.plan.started();
            let mut t = Try::new(&p, is_probe, out.span_id());
            let sent = self
                .send(
                    s,
                    &peer,
                    out.head(),
                    out.body(),
                    p.settings.timeouts.response_header_stream,
                    deadline,
                )
                .await;
            ctx.rec.upstream_wait += t.started.elapsed();
            let mut up = match sent {
                Ok(up) => up,
                Err(Sent::ClientGone(e)) => {
                    self.record_attempt(ctx, &t, AttemptResult::Failed(ErrorClass::Client));
                    return Err(e);
                }
                Err(Sent::Failed(failed, _detail)) => {
                    self.judge(ctx, &t, AttemptResult::Failed(failed.class), None);
                    continue;
                }
            };
            let Some(head) = up.resp_header().cloned() else {
                continue;
            };
            let status = head.status.as_u16();
            t.status = Some(status);
            t.ttfb = Some(t.started.elapsed());
            if (200..300).contains(&status) && is_sse(&head) {
                drop(permit);
                return Ok(Some((t, up, peer)));
            }
            let body = match super::attempts::read_held_body(
                &mut up,
                p.settings.timeouts.stream_idle,
                deadline,
                64 * 1024,
            )
            .await
            {
                super::attempts::Held::Complete(b) => b,
                _ => bytes::Bytes::new(),
            };
            if resume::prefill_rejected(status, &body) {
                // Learned: this provider takes no prefill, for the rest of
                // the process (prefill: auto). Not a fault of the provider,
                // and never the client's answer.
                if p.settings.prefill == crate::config::Prefill::Auto {
                    p.health.prefill_refused.store(true, Ordering::Relaxed);
                }
                telemetry::prefill_refused(&ctx.rec, p.name());
                self.judge(ctx, &t, AttemptResult::Failed(ErrorClass::Request), None);
                continue;
            }
            let class = outcome::classify_status(status).unwrap_or(ErrorClass::Server);
            let failed = Failed::new(class, false);
            self.judge(ctx, &t, AttemptResult::Failed(failed.class), None);
        }
    }
}
