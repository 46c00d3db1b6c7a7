//! Commit: send an attempt's response to the client and relay its body,
//! SSE event by event; a body that breaks after commit ends with an error
//! event (SSE) or a cut connection (anything else).

use super::attempts::{describe, AttemptEnd, Attempts, Try};
use super::decode::{Decode, End as DecodeEnd};
use super::intake::client_gone;
use super::resume::Resumed;
use super::Ctx;
use crate::config::Api;
use crate::content;
use crate::dialect;
use crate::headers;
use crate::outcome::{self, AttemptResult, ErrorClass};
use crate::resume;
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
            decode,
        } = a;
        let p = t.p.clone();
        let sse = is_sse(&head);
        // A stream cut mid-text may be continued elsewhere with the same
        // request (`retry.resume_streams`): then, and only then, the body
        // is kept. Otherwise no attempt needs it again, and a long stream
        // must not pin a large prompt for its whole life.
        let resume = self.rt.config.retry.resume_streams
            && sse
            && matches!(decode, Decode::Plain)
            && matches!(ctx.api, Api::Anthropic | Api::OpenAi);
        if !resume {
            self.body = Bytes::new();
        }
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
        // A stream's body is the client's, not the provider's: translated,
        // stitched to a continuation, or closed with an error event of
        // ours. The provider's length (some servers stream with one) would
        // cut it short or leave the client waiting for bytes never sent.
        if sse && !body_done {
            resp.remove_header(&http::header::CONTENT_LENGTH);
        }
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
            // The status line goes out as the provider wrote it; an
            // HTTP/1.0 one cannot announce chunked framing.
            resp.set_version(http::Version::HTTP_11);
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
        if body_done {
            ctx.finished = true;
            self.release(up, &peer).await;
            let verdict = class.map_or(AttemptResult::Success, AttemptResult::Failed);
            self.judge(ctx, &t, verdict, retry_after);
            return AttemptEnd::Finished;
        }

        // The relay's state (sink, framer, the pump, resumption) lives in a
        // future of its own: inline, it would make every commit's future,
        // non-stream answers' too, several KiB larger, and each such future
        // is copied whole when it is built.
        Box::pin(async move {
            let mut sink = Sink::new(ctx.api, sse, resume);
            let mut framer = framer.or_else(|| sse.then(SseFramer::new));
            if let Some(prefix) = prefix {
                // An error event in what was held is the answer itself (a
                // request error): nothing to continue, it goes out at once.
                let sent = match sink.forward(s, ctx, prefix).await {
                    Ok(Flow::Go) => Ok(()),
                    Ok(Flow::Stop) => sink.release_error(s).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    sink.keep_usage(ctx, &decode);
                    return self.client_left(ctx, &t, e);
                }
            }
            let mut cur = Stream {
                t,
                peer,
                class,
                retry_after,
                decode,
                judged: false,
            };
            let mut resumed = false;
            loop {
                let idle = cur.t.p.settings.timeouts.stream_idle;
                let end = pump(
                    s,
                    ctx,
                    &mut up,
                    &mut cur.decode,
                    &mut framer,
                    &mut sink,
                    idle,
                )
                .await;
                // A break mid-text with resumption on: continue on the next
                // provider, once.
                let broke = match &end {
                    End::Broken(c, d) if !ctx.finished => Some((*c, d.clone())),
                    End::ErrorEvent(v) => Some((v.class, v.message.clone())),
                    _ => None,
                };
                if let (Some((bc, detail)), false) = (broke, resumed || !sink.resumable()) {
                    match Box::pin(self.resume(s, ctx, &mut sink, &mut cur, bc, &detail)).await {
                        Resumed::Yes(next) => {
                            let (next, next_up) = *next;
                            resumed = true;
                            cur = next;
                            up = next_up;
                            framer = Some(SseFramer::new());
                            continue;
                        }
                        Resumed::ClientGone(e) => {
                            sink.keep_usage(ctx, &cur.decode);
                            return AttemptEnd::Abort(e);
                        }
                        Resumed::No => {}
                    }
                }
                return self.end_stream(s, ctx, cur, up, framer, sink, end).await;
            }
        })
        .await
    }

    /// The relay's end: the last bytes, the verdict on the provider, and
    /// what the client sees when the stream broke.
    #[expect(
        clippy::too_many_arguments,
        reason = "the pieces of a stream at its end, each consumed once"
    )]
    async fn end_stream(
        &mut self,
        s: &mut Session,
        ctx: &mut Ctx,
        cur: Stream,
        up: UpstreamSession,
        mut framer: Option<SseFramer>,
        mut sink: Sink,
        end: End,
    ) -> AttemptEnd {
        let Stream {
            t,
            peer,
            class,
            retry_after,
            mut decode,
            judged,
        } = cur;
        let p = t.p.clone();
        let verdict = class.map_or(AttemptResult::Success, AttemptResult::Failed);
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
                        if let Err(e) = sink.forward(s, ctx, tail).await {
                            sink.keep_usage(ctx, &decode);
                            return self.client_left(ctx, &t, e);
                        }
                    }
                }
                if how == DecodeEnd::Truncated && sink.watch.error.is_none() {
                    sink.keep_usage(ctx, &decode);
                    let detail = "the provider's stream ended before its last event";
                    self.interrupted(ctx, &t, judged, ErrorClass::Network, detail);
                    let msg = format!("upstream {} failed mid-stream ({detail})", p.name());
                    let event = dialect::sse_error_event(ctx.api, ErrorClass::Network, &msg);
                    return match s.write_response_body(Some(event), true).await {
                        Ok(()) => AttemptEnd::Finished,
                        Err(e) => AttemptEnd::Abort(e),
                    };
                }
                if let Some(rest) = framer.as_mut().and_then(SseFramer::finish) {
                    if let Err(e) = sink.forward(s, ctx, rest).await {
                        sink.keep_usage(ctx, &decode);
                        return self.client_left(ctx, &t, e);
                    }
                }
                sink.keep_usage(ctx, &decode);
                ctx.finished = true;
                if let Err(e) = s.write_response_body(None, true).await {
                    return self.client_left(ctx, &t, e);
                }
                self.release(up, &peer).await;
                match sink.watch.error.take() {
                    // The provider ended its stream with an error event
                    // after content: the client has it already; it is a
                    // broken answer all the same.
                    Some(v) if class.is_none() => {
                        self.interrupted(ctx, &t, judged, v.class, &v.message)
                    }
                    _ => self.judge_once(ctx, &t, judged, verdict, retry_after),
                }
                AttemptEnd::Finished
            }
            // The provider's error event was held back for a continuation
            // that did not happen: it goes out as the provider sent it.
            End::ErrorEvent(v) => {
                sink.keep_usage(ctx, &decode);
                self.interrupted(ctx, &t, judged, v.class, &v.message);
                let held = sink.held_error.take().unwrap_or_default();
                match s.write_response_body(Some(held), true).await {
                    Ok(()) => AttemptEnd::Finished,
                    Err(e) => AttemptEnd::Abort(e),
                }
            }
            // The stream's last event went out: the client may stop
            // reading (Codex CLI does, at response.completed) and the
            // upstream may close as it likes; the answer is complete.
            End::ClientGone(e) if ctx.finished => {
                sink.keep_usage(ctx, &decode);
                self.judge_once(ctx, &t, judged, verdict, retry_after);
                AttemptEnd::Abort(e)
            }
            End::Broken(..) if ctx.finished => {
                sink.keep_usage(ctx, &decode);
                self.judge_once(ctx, &t, judged, verdict, retry_after);
                match s.write_response_body(None, true).await {
                    Ok(()) => AttemptEnd::Finished,
                    Err(e) => AttemptEnd::Abort(e),
                }
            }
            End::ClientGone(e) => {
                sink.keep_usage(ctx, &decode);
                self.client_left(ctx, &t, e)
            }
            End::Broken(bc, detail) => {
                sink.keep_usage(ctx, &decode);
                if let Some(v) = sink.watch.error.take() {
                    // Its own error event went out already; end there.
                    self.interrupted(ctx, &t, judged, v.class, &v.message);
                    return match s.write_response_body(None, true).await {
                        Ok(()) => AttemptEnd::Finished,
                        Err(e) => AttemptEnd::Abort(e),
                    };
                }
                self.interrupted(ctx, &t, judged, bc, &detail);
                if sink.sse {
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

    /// A committed response broke: recorded once, the provider judged
    /// (unless that happened when a continuation was tried).
    fn interrupted(
        &mut self,
        ctx: &mut Ctx,
        t: &Try,
        judged: bool,
        class: ErrorClass,
        detail: &str,
    ) {
        ctx.rec.class = Some(class);
        ctx.rec.stream_interrupted = Some(class);
        if !judged {
            telemetry::stream_interrupted(&ctx.rec, t.p.name(), class, detail);
            self.judge(ctx, t, AttemptResult::Failed(class), None);
        }
    }

    fn judge_once(
        &mut self,
        ctx: &mut Ctx,
        t: &Try,
        judged: bool,
        verdict: AttemptResult,
        retry_after: Option<Duration>,
    ) {
        if !judged {
            self.judge(ctx, t, verdict, retry_after);
        }
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

/// The attempt whose body is being relayed (the committed one, or the
/// continuation of a stream resumed on another provider).
pub(super) struct Stream {
    pub(super) t: Try,
    pub(super) peer: Arc<HttpPeer>,
    pub(super) class: Option<ErrorClass>,
    pub(super) retry_after: Option<Duration>,
    pub(super) decode: Decode,
    /// Already judged (its break was recorded when a continuation was
    /// tried).
    pub(super) judged: bool,
}

/// Relay the upstream body to the client until it ends, breaks, or the
/// client leaves.
pub(super) async fn pump(
    s: &mut Session,
    ctx: &mut Ctx,
    up: &mut UpstreamSession,
    decode: &mut Decode,
    framer: &mut Option<SseFramer>,
    sink: &mut Sink,
    idle: Duration,
) -> End {
    loop {
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
                    // An undecodable stream is a broken one.
                    Err(b) => return End::Broken(b.class, b.detail),
                };
                let out = match framer.as_mut() {
                    Some(f) => f.push(chunk),
                    None => Some(chunk),
                };
                if let Some(out) = out {
                    match sink.forward(s, ctx, out).await {
                        Ok(Flow::Go) => {}
                        Ok(Flow::Stop) => {
                            if let Some(v) = sink.watch.error.take() {
                                return End::ErrorEvent(v);
                            }
                        }
                        Err(e) => return End::ClientGone(e),
                    }
                }
            }
            Step::Upstream(Ok(Ok(None))) => return End::Done,
            Step::Upstream(Ok(Err(e))) => {
                return End::Broken(outcome::classify_transport(e.etype()), describe(&e))
            }
            Step::Upstream(Err(_)) => {
                return End::Broken(
                    ErrorClass::Timeout,
                    format!("no data for {} ms", idle.as_millis()),
                )
            }
            Step::ClientGone(e) => return End::ClientGone(e),
        }
    }
}

/// What the relay learns from the events it forwards.
#[derive(Default)]
struct Watch {
    /// An error event the provider sent after the response was committed.
    error: Option<content::ErrorVerdict>,
}

#[derive(Debug, PartialEq)]
pub(super) enum Flow {
    Go,
    /// An error event arrived while the stream could still be continued:
    /// it was held back, not sent.
    Stop,
}

/// The client side of the relay: writes the body, reading it on the way.
pub(super) struct Sink {
    sse: bool,
    meter: UsageMeter,
    watch: Watch,
    /// What the client has of a stream that may be continued elsewhere.
    pub(super) tracker: Option<resume::Tracker>,
    /// An error event held back while a continuation is tried.
    held_error: Option<Bytes>,
}

impl Sink {
    pub(super) fn new(api: Api, sse: bool, resume: bool) -> Sink {
        Sink {
            sse,
            meter: UsageMeter::new(api, sse),
            watch: Watch::default(),
            tracker: resume.then(|| resume::Tracker::new(api)),
            held_error: None,
        }
    }

    fn resumable(&self) -> bool {
        self.tracker.is_some()
    }

    /// An error event held back where no continuation can happen: it goes
    /// out as the provider sent it, and the stream is not continued.
    async fn release_error(&mut self, s: &mut Session) -> Result<()> {
        self.tracker = None;
        match self.held_error.take() {
            Some(held) => s.write_response_body(Some(held), false).await,
            None => Ok(()),
        }
    }

    /// A continuation took over: the broken stream's error is moot.
    pub(super) fn forget_error(&mut self) {
        self.held_error = None;
        self.watch.error = None;
    }

    /// Send one piece of body to the client, reading it on the way: usage,
    /// the stream's terminal event (after which the client has its whole
    /// answer), an error event. Cheap for the common event: a byte search
    /// first, events are parsed only when a marker occurs.
    async fn forward(&mut self, s: &mut Session, ctx: &mut Ctx, mut out: Bytes) -> Result<Flow> {
        let mut flow = Flow::Go;
        if self.sse {
            if self.watch.error.is_none() && memchr::memmem::find(&out, b"error").is_some() {
                if let Some((at, v)) = error_event(ctx.api, &out) {
                    if self.tracker.is_some() {
                        // Hold the error back: a continuation may make it
                        // moot.
                        self.held_error = Some(out.split_off(at));
                        flow = Flow::Stop;
                    }
                    self.watch.error = Some(v);
                }
            }
            if !ctx.finished && kind::holds_terminal(ctx.api, &out) {
                ctx.finished = true;
            }
            if let Some(t) = self.tracker.as_mut() {
                t.observe(&out);
            }
        }
        self.meter.feed(&out);
        if !out.is_empty() {
            s.write_response_body(Some(out), false).await?;
        }
        Ok(flow)
    }

    /// Usage seen so far is kept whatever happens next: the provider billed
    /// it. A translated stream's usage comes from the translator, which saw
    /// the provider's own counts (a translated message_start cannot know the
    /// input tokens yet).
    fn keep_usage(&mut self, ctx: &mut Ctx, decode: &Decode) {
        let meter = std::mem::replace(&mut self.meter, UsageMeter::new(ctx.api, self.sse));
        let (usage, model) = meter.finish();
        let (mut usage, model) = match decode.summary() {
            Some(sum) => (sum.usage, sum.model.clone().or(model)),
            None => (usage, model),
        };
        if let Decode::Stitch(st) = decode {
            // A continuation's message_start is not forwarded; its input
            // was billed all the same.
            usage.input += st.stitcher.input_tokens;
            ctx.rec.resumed_overlap_trimmed = Some(st.stitcher.trimmed);
        }
        ctx.rec.usage = usage;
        if model.is_some() {
            if let Some(t) = ctx.rec.trace.as_deref_mut().filter(|t| t.sampled) {
                t.response_model = model.clone();
            }
            ctx.rec.model = model;
        }
    }
}

/// Where the first error event in these framed bytes starts, and what it
/// says.
fn error_event(api: Api, framed: &Bytes) -> Option<(usize, content::ErrorVerdict)> {
    let mut at = 0;
    while at < framed.len() {
        let end = event_end(&framed[at..]).map_or(framed.len(), |e| at + e);
        let block = &framed[at..end];
        if let Some((name, data)) = crate::sse::events(block).next() {
            if kind::classify(api, name, &data) == kind::EventKind::Error {
                return Some((at, content::stream_error(&data)));
            }
        }
        at = end;
    }
    None
}

/// The length of the first whole event (up to and including its blank
/// line), if these bytes hold one.
fn event_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\n' && b[i + 1] == b'\n' {
            return Some(i + 2);
        }
        if b[i] == b'\n' && b[i + 1] == b'\r' && b.get(i + 2) == Some(&b'\n') {
            return Some(i + 3);
        }
        i += 1;
    }
    None
}

enum Step {
    Upstream(std::result::Result<Result<Option<Bytes>>, tokio::time::error::Elapsed>),
    ClientGone(Box<Error>),
}

pub(super) enum End {
    Done,
    Broken(ErrorClass, String),
    /// An error event held back while the stream could be continued.
    ErrorEvent(content::ErrorVerdict),
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
