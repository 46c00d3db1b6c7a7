//! Commit: send an attempt's response to the client and relay its body,
//! SSE event by event; a body that breaks after commit ends with an error
//! event (SSE) or a cut connection (anything else).

use super::attempts::{describe, AttemptEnd, Attempts, Try};
use super::intake::client_gone;
use super::Ctx;
use crate::dialect;
use crate::headers;
use crate::outcome::{self, AttemptResult, ErrorClass};
use crate::sse::SseFramer;
use crate::telemetry;
use crate::tokens::UsageMeter;
use bytes::Bytes;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::{Duration, Instant};

impl Attempts<'_> {
    /// Send this attempt's response to the client and relay its body.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn commit(
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
        // Committed: no attempt will need the request body again. A long
        // stream must not pin a large prompt for its whole life.
        self.body = Bytes::new();
        let sse = is_sse(&head);
        let mut resp = headers::client_response(head);
        if let Err(e) = headers::stamp(
            &mut resp,
            &ctx.rec.request_id,
            p.name(),
            self.made,
            class.map(ErrorClass::as_str),
        ) {
            return self.fail(ctx, &t, ErrorClass::Network, describe(&e), None, None);
        }
        let body_done = prefix.is_none() && (self.head_request || up.is_body_done());
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
        ctx.rec.status = resp.status.as_u16();
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
