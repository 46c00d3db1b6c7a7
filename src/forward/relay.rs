//! Commit: send an attempt's response to the client and relay its body,
//! SSE event by event; a body that breaks after commit ends with an error
//! event (SSE) or a cut connection (anything else).

use super::attempts::{describe, AttemptEnd, Attempts, Try};
use super::decode::{Decode, End as DecodeEnd};
use super::intake::client_gone;
use super::Ctx;
use crate::content;
use crate::dialect;
use crate::headers;
use crate::outcome::{self, AttemptResult, ErrorClass};
use crate::sse::{kind, SseFramer};
use crate::telemetry;
use crate::tokens::UsageMeter;
use bytes::Bytes;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The attempt whose response goes to the client, as it stands when the
/// response is committed.
pub(super) struct Answer {
    pub(super) t: Try,
    pub(super) up: UpstreamSession,
    pub(super) peer: Arc<HttpPeer>,
    pub(super) head: ResponseHeader,
    /// `None` for a success; else the class of an error returned as is.
    pub(super) class: Option<ErrorClass>,
    pub(super) retry_after: Option<Duration>,
    /// Body bytes already read: a held stream's setup and first content
    /// (whole events), or a body read before deciding.
    pub(super) prefix: Option<Bytes>,
    /// The SSE framer of a held stream, with any partial event in it.
    pub(super) framer: Option<SseFramer>,
    /// What turns the provider's stream into the client's (a translation).
    pub(super) decode: Decode,
}

impl Attempts<'_> {
    /// Send this attempt's response to the client and relay its body.
    ///
    /// Once committed, a response is bounded by `stream_idle_ms` between
    /// chunks, not by `total_ms`: the total budget is for getting an answer,
    /// and a long, healthy answer (an agent turn with a large max_tokens
    /// streams for many minutes) must never be cut by it.
    pub(super) async fn commit(&mut self, s: &mut Session, ctx: &mut Ctx, a: Answer) -> AttemptEnd {
        let Answer {
            t,
            mut up,
            peer,
            head,
            class,
            retry_after,
            prefix,
            framer,
            mut decode,
        } = a;
        let p = t.p.clone();
        // Committed: no attempt will need the request body again. A long
        // stream must not pin a large prompt for its whole life.
        self.body = Bytes::new();
        let sse = is_sse(&head);
        let mut resp = match headers::for_client(
            head,
            &ctx.rec.request_id,
            p.name(),
            self.plan.made(),
            class.map(ErrorClass::as_str),
        ) {
            Ok(r) => r,
            Err(e) => return self.fail_commit(ctx, &t, &e),
        };
        let body_done = prefix.is_none() && (self.head_request || up.is_body_done());
        // An HTTP/1.1 body of unknown length must be chunked, or the client
        // could only find its end by the connection closing (and a cut
        // stream would look complete).
        if !body_done
            && resp.headers.get(http::header::CONTENT_LENGTH).is_none()
            && !s.as_downstream().is_http2()
        {
            if let Err(e) = resp.insert_header(http::header::TRANSFER_ENCODING, "chunked") {
                return self.fail_commit(ctx, &t, &e);
            }
        }
        ctx.committed = true;
        // A client that stops reading must not pin the upstream forever.
        s.set_write_timeout(Some(p.settings.timeouts.stream_idle));
        ctx.rec.provider = Some(p.name().to_string());
        ctx.rec.status = resp.status.as_u16();
        ctx.rec.class = class;
        // The model asked for; a usage event naming the model that answered
        // replaces it.
        ctx.rec.model = self.meta.model_for(&p.settings.models).map(str::to_string);
        if let Err(e) = s.write_response_header(Box::new(resp), body_done).await {
            return self.client_left(ctx, &t, e);
        }
        ctx.rec.ttfb = Some(ctx.rec.started.elapsed());
        let verdict = class.map_or(AttemptResult::Success, AttemptResult::Failed);
        if body_done {
            ctx.finished = true;
            self.release(up, &peer).await;
            self.judge(ctx, &t, verdict, retry_after);
            return AttemptEnd::Finished;
        }

        let mut meter = UsageMeter::new(ctx.api, sse);
        let mut framer = framer.or_else(|| sse.then(SseFramer::new));
        let mut watch = Watch::default();
        let idle = p.settings.timeouts.stream_idle;
        if let Some(prefix) = prefix {
            if let Err(e) = forward(s, ctx, sse, &mut meter, &mut watch, prefix).await {
                keep_usage(ctx, meter, &decode);
                return self.client_left(ctx, &t, e);
            }
        }
        let end = loop {
            let waited = Instant::now();
            let step = tokio::select! {
                // Polled in order: a client that closes right after the last
                // byte of a complete body must not turn it into client_closed.
                biased;
                r = tokio::time::timeout(idle, up.read_body_bytes()) => Step::Upstream(r),
                e = client_gone(s) => Step::ClientGone(e),
            };
            ctx.rec.upstream_wait += waited.elapsed();
            match step {
                Step::Upstream(Ok(Ok(Some(chunk)))) => {
                    let chunk = match decode.push(chunk) {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => continue,
                        Err(b) => break End::Broken(b.class, b.detail),
                    };
                    let out = match framer.as_mut() {
                        Some(f) => f.push(chunk),
                        None => Some(chunk),
                    };
                    if let Some(out) = out {
                        if let Err(e) = forward(s, ctx, sse, &mut meter, &mut watch, out).await {
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
                Step::ClientGone(e) => break End::ClientGone(e),
            }
        };
        match end {
            End::Done => {
                // A translation's closing events (or the news that the
                // provider stopped short of its end).
                let (tail, how) = decode.finish();
                if let Some(tail) = tail {
                    let tail = match framer.as_mut() {
                        Some(f) => f.push(tail),
                        None => Some(tail),
                    };
                    if let Some(tail) = tail {
                        if let Err(e) = forward(s, ctx, sse, &mut meter, &mut watch, tail).await {
                            keep_usage(ctx, meter, &decode);
                            return self.client_left(ctx, &t, e);
                        }
                    }
                }
                if how == DecodeEnd::Truncated && watch.error.is_none() {
                    keep_usage(ctx, meter, &decode);
                    let detail = "the provider's stream ended before its last event";
                    self.interrupted(ctx, &t, ErrorClass::Network, detail);
                    let msg = format!("upstream {} failed mid-stream ({detail})", p.name());
                    let event = dialect::sse_error_event(ctx.api, ErrorClass::Network, &msg);
                    return match s.write_response_body(Some(event), true).await {
                        Ok(()) => AttemptEnd::Finished,
                        Err(e) => AttemptEnd::Abort(e),
                    };
                }
                if let Some(rest) = framer.as_mut().and_then(SseFramer::finish) {
                    if let Err(e) = forward(s, ctx, sse, &mut meter, &mut watch, rest).await {
                        keep_usage(ctx, meter, &decode);
                        return self.client_left(ctx, &t, e);
                    }
                }
                keep_usage(ctx, meter, &decode);
                ctx.finished = true;
                if let Err(e) = s.write_response_body(None, true).await {
                    return self.client_left(ctx, &t, e);
                }
                self.release(up, &peer).await;
                let verdict = match watch.error.take() {
                    // The provider ended its stream with an error event
                    // after content: the client has it already; it is a
                    // broken answer all the same.
                    Some(v) if class.is_none() => {
                        self.interrupted(ctx, &t, v.class, &v.message);
                        return AttemptEnd::Finished;
                    }
                    _ => verdict,
                };
                self.judge(ctx, &t, verdict, retry_after);
                AttemptEnd::Finished
            }
            // The stream's last event went out: the client may stop
            // reading (Codex CLI does, at response.completed) and the
            // upstream may close as it likes; the answer is complete.
            End::ClientGone(e) if ctx.finished => {
                keep_usage(ctx, meter, &decode);
                self.judge(ctx, &t, verdict, retry_after);
                AttemptEnd::Abort(e)
            }
            End::Broken(..) if ctx.finished => {
                keep_usage(ctx, meter, &decode);
                self.judge(ctx, &t, verdict, retry_after);
                match s.write_response_body(None, true).await {
                    Ok(()) => AttemptEnd::Finished,
                    Err(e) => AttemptEnd::Abort(e),
                }
            }
            End::ClientGone(e) => {
                keep_usage(ctx, meter, &decode);
                self.client_left(ctx, &t, e)
            }
            End::Broken(bc, detail) => {
                keep_usage(ctx, meter, &decode);
                if let Some(v) = watch.error.take() {
                    // Its own error event went out already; end there.
                    self.interrupted(ctx, &t, v.class, &v.message);
                    return match s.write_response_body(None, true).await {
                        Ok(()) => AttemptEnd::Finished,
                        Err(e) => AttemptEnd::Abort(e),
                    };
                }
                self.interrupted(ctx, &t, bc, &detail);
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

    /// A committed response broke: recorded once, the provider judged.
    fn interrupted(&mut self, ctx: &mut Ctx, t: &Try, class: ErrorClass, detail: &str) {
        ctx.rec.class = Some(class);
        ctx.rec.stream_interrupted = Some(class);
        telemetry::stream_interrupted(&ctx.rec, t.p.name(), class, detail);
        self.judge(ctx, t, AttemptResult::Failed(class), None);
    }

    /// The response could not be turned into the client's (a header the
    /// upstream sent that cannot be re-encoded): nothing was sent yet, so
    /// this counts as a failed attempt.
    fn fail_commit(&mut self, ctx: &mut Ctx, t: &Try, e: &Error) -> AttemptEnd {
        self.fail(
            ctx,
            t,
            super::plan::Failed::new(ErrorClass::Network, false),
            describe(e),
            None,
            None,
        )
    }
}

/// What the relay learns from the events it forwards.
#[derive(Default)]
struct Watch {
    /// An error event the provider sent after the response was committed.
    error: Option<content::ErrorVerdict>,
}

/// Send one piece of body to the client, reading it on the way: usage,
/// the stream's terminal event (after which the client has its whole
/// answer), an error event. Cheap for the common event: a byte search
/// first, events are parsed only when a marker occurs.
async fn forward(
    s: &mut Session,
    ctx: &mut Ctx,
    sse: bool,
    meter: &mut UsageMeter,
    watch: &mut Watch,
    out: Bytes,
) -> Result<()> {
    meter.feed(&out);
    if sse {
        if !ctx.finished && kind::holds_terminal(ctx.api, &out) {
            ctx.finished = true;
        }
        if watch.error.is_none() && memchr::memmem::find(&out, b"error").is_some() {
            watch.error = crate::sse::events(&out)
                .find(|(name, data)| kind::classify(ctx.api, *name, data) == kind::EventKind::Error)
                .map(|(_, data)| content::stream_error(&data));
        }
    }
    s.write_response_body(Some(out), false).await
}

/// Usage seen so far is kept whatever happens next: the provider billed it.
/// A translated stream's usage comes from the translator, which saw the
/// provider's own counts (a translated message_start cannot know the input
/// tokens yet).
fn keep_usage(ctx: &mut Ctx, meter: UsageMeter, decode: &Decode) {
    let (usage, model) = meter.finish();
    let (usage, model) = match decode.summary() {
        Some(sum) => (sum.usage, sum.model.clone().or(model)),
        None => (usage, model),
    };
    ctx.rec.usage = usage;
    if model.is_some() {
        ctx.rec.model = model;
    }
}

enum Step {
    Upstream(std::result::Result<Result<Option<Bytes>>, tokio::time::error::Elapsed>),
    ClientGone(Box<Error>),
}

enum End {
    Done,
    Broken(ErrorClass, String),
    ClientGone(Box<Error>),
}

pub(super) fn is_sse(h: &ResponseHeader) -> bool {
    h.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}
