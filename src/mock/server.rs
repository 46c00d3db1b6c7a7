//! Connections: the accept loop, the per-connection request loop, and what
//! each request is answered with, faults included. Parsing and framing live
//! in `wire`, the bodies in `bodies`.

use super::bodies::{
    anthropic_message, chat_completion, error_event, error_json, keepalive, models_json,
    response_object, sse_event, Kind, Phase, Reply,
};
use super::wire::{put_head, Framing, ReqError, Request};
use super::{Behavior, RecordedRequest, Shared};
use bytes::BytesMut;
use serde::Deserialize;
use std::borrow::Cow;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

pub(super) const MODEL_FALLBACK: &str = "mock-model";

pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    // Every connection lives in this set so that stop() can abort them all,
    // including ones parked in a stall or a latency sleep.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    conns.spawn(serve_conn(stream, shared.clone()));
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning on the error.
                    log::warn!("mock {}: accept failed: {e}", shared.name);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// How the connection ends after a response.
enum Next {
    KeepAlive,
    /// Graceful close (FIN).
    Close,
    /// Abortive close (RST).
    Reset,
    /// The peer is already gone; nothing left to say.
    Drop,
}

/// One client connection and its reused buffers. Its methods are grouped by
/// job: reading requests in `wire`, the `/_mock/*` endpoints in `control`,
/// answering (faults included) here.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) shared: Arc<Shared>,
    pub(super) buf: BytesMut,
    // Reused across requests on the connection so a keep-alive benchmark does
    // not allocate response buffers per request.
    pub(super) out: Vec<u8>,
    pub(super) body: Vec<u8>,
    pub(super) head_only: bool,
}

async fn serve_conn(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        stream,
        shared,
        buf: BytesMut::with_capacity(8192),
        out: Vec::with_capacity(1024),
        body: Vec::with_capacity(1024),
        head_only: false,
    };
    loop {
        let next = match c.read_request().await {
            Ok(Some(req)) => c.handle(req).await,
            Ok(None) => return,
            Err(ReqError::Io(e)) => {
                log::debug!("mock {}: read failed: {e}", c.shared.name);
                return;
            }
            Err(e) => {
                c.reject(e).await;
                return;
            }
        };
        match next {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) => {
                let _ = c.stream.shutdown().await;
                return;
            }
            Ok(Next::Reset) => {
                // SO_LINGER 0 makes close() send RST instead of FIN.
                let _ = c.stream.set_zero_linger();
                return;
            }
            Ok(Next::Drop) => return,
            Err(e) => {
                log::debug!("mock {}: write failed: {e}", c.shared.name);
                return;
            }
        }
    }
}

impl Conn {
    /// Answer a request that cannot be served, then close: after a framing
    /// error the rest of the byte stream cannot be trusted.
    async fn reject(&mut self, e: ReqError) {
        let status = match e {
            ReqError::HeadTooLarge => 431,
            ReqError::BodyTooLarge => 413,
            _ => 400,
        };
        let msg = format!("mock {}: {e}", self.shared.name);
        let shared = self.shared.clone();
        self.body.clear();
        error_json(&mut self.body, shared.api, status, &msg);
        let n = shared.requests.load(Ordering::SeqCst);
        self.out.clear();
        put_head(
            &mut self.out,
            status,
            Framing::Length(self.body.len()),
            &shared.name,
            n,
            None,
            true,
        );
        self.out.extend_from_slice(&self.body);
        if self.stream.write_all(&self.out).await.is_err() {
            return;
        }
        // Half-close and drain for a moment: closing with unread request bytes
        // would make the kernel send RST, which can destroy the error response
        // before the client reads it.
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 8192];
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    async fn handle(&mut self, req: Request) -> io::Result<Next> {
        let keep = if req.close {
            Next::Close
        } else {
            Next::KeepAlive
        };
        // A HEAD answer must carry the head only, or the client would read the
        // body as the start of the next response.
        self.head_only = req.method == "HEAD";
        let path = req.target.split('?').next().unwrap_or("");
        if path.starts_with("/_mock/") {
            self.control(&req, path).await?;
            return Ok(keep);
        }
        let route = Route::of(&req.method, path);
        let shared = self.shared.clone();
        let n = shared.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let b = shared.behavior();
        let body = req.body.clone();
        // Recorded before any fault so a test can see what a failing provider got.
        shared.record(RecordedRequest {
            method: req.method,
            path: req.target,
            headers: req.headers,
            body: req.body,
        });
        if b.reset {
            return Ok(Next::Reset);
        }
        if b.close_without_response {
            return Ok(Next::Close);
        }
        if b.stall_before_headers {
            self.wait_for_peer_close().await;
            return Ok(Next::Drop);
        }
        if b.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(b.latency_ms)).await;
        }
        let probe = Probe::parse(&body);
        let prefill = probe.prefill();
        if b.reject_prefill && prefill.is_some() {
            self.body.clear();
            let msg = "This model does not support assistant message prefill. The conversation must end with a user message.";
            error_json(&mut self.body, shared.api, 400, msg);
            return self.send_fixed(400, n, &b, keep).await;
        }
        // Repeat the prefill's last words at the seam, as some models do.
        let echo = prefill.filter(|_| b.echo_prefill_words > 0).map(|p| {
            let words: Vec<&str> = p.split_whitespace().collect();
            let from = words.len().saturating_sub(b.echo_prefill_words);
            format!(" {}", words[from..].join(" "))
        });
        // An empty answer is an answer with no deltas and no text.
        let emptied;
        let b: &Behavior = if b.empty {
            emptied = Behavior {
                events: 0,
                body_size: 0,
                ..Behavior::clone(&b)
            };
            &emptied
        } else {
            &b
        };
        let r = Reply {
            name: &shared.name,
            n,
            model: if probe.model.is_empty() {
                MODEL_FALLBACK
            } else {
                &probe.model
            },
            b,
            echo: echo.as_deref(),
            include_usage: probe
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        self.body.clear();
        let status = if b.status != 200 {
            let msg = match &b.error_message {
                Some(m) => m.clone(),
                None => format!("mock {} returned {}", shared.name, b.status),
            };
            error_json(&mut self.body, shared.api, b.status, &msg);
            b.status
        } else {
            match route {
                Route::Api(kind) if probe.stream == Some(true) => {
                    return self.send_sse(kind, &r, keep).await
                }
                Route::Api(Kind::Messages) => {
                    anthropic_message(&mut self.body, &r);
                    200
                }
                Route::Api(Kind::Chat) => {
                    chat_completion(&mut self.body, &r);
                    200
                }
                Route::Api(Kind::Responses) => {
                    response_object(&mut self.body, &r, true, false);
                    200
                }
                Route::Models => {
                    models_json(&mut self.body, shared.api);
                    200
                }
                Route::WrongMethod => {
                    let msg = format!("mock {}: method not allowed", shared.name);
                    error_json(&mut self.body, shared.api, 405, &msg);
                    405
                }
                Route::NotFound => {
                    let msg = format!("mock {}: no such path", shared.name);
                    error_json(&mut self.body, shared.api, 404, &msg);
                    404
                }
            }
        };
        self.send_fixed(status, n, b, keep).await
    }

    /// Sends `self.body` as a JSON response, applying `cut_body_after_bytes`.
    async fn send_fixed(
        &mut self,
        status: u16,
        n: usize,
        b: &Behavior,
        keep: Next,
    ) -> io::Result<Next> {
        let close = matches!(keep, Next::Close);
        self.out.clear();
        put_head(
            &mut self.out,
            status,
            Framing::Length(self.body.len()),
            &self.shared.name,
            n,
            Some(b),
            close,
        );
        if self.head_only {
            self.stream.write_all(&self.out).await?;
            return Ok(keep);
        }
        let head_len = self.out.len();
        self.out.extend_from_slice(&self.body);
        if let Some(cut) = b.cut_body_after_bytes.filter(|&c| c < self.body.len()) {
            self.stream.write_all(&self.out[..head_len + cut]).await?;
            return Ok(Next::Reset);
        }
        self.stream.write_all(&self.out).await?;
        Ok(keep)
    }

    async fn send_sse(&mut self, kind: Kind, r: &Reply<'_>, keep: Next) -> io::Result<Next> {
        let b = r.b;
        let (pre, post) = kind.sse_shape(r.include_usage);
        let total = pre + b.events + post;
        self.out.clear();
        put_head(
            &mut self.out,
            200,
            Framing::Chunked,
            &self.shared.name,
            r.n,
            Some(b),
            matches!(keep, Next::Close),
        );
        let content_step = kind.first_content_step(pre);
        for step in 0..total {
            let phase = if step < pre {
                Phase::Pre(step)
            } else if step < pre + b.events {
                Phase::Delta(step - pre)
            } else {
                Phase::Post(step - pre - b.events)
            };
            if b.empty && kind.is_content_frame(phase) {
                continue;
            }
            if step > 0 && b.event_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(b.event_delay_ms)).await;
            }
            if step == content_step && b.pings_before_content_ms > 0 {
                // Alive but saying nothing: keep-alives only.
                let until =
                    tokio::time::Instant::now() + Duration::from_millis(b.pings_before_content_ms);
                while tokio::time::Instant::now() < until {
                    self.body.clear();
                    keepalive(&mut self.body, kind);
                    self.put_chunk();
                    self.flush_out().await?;
                    tokio::time::sleep(Duration::from_millis(b.ping_interval_ms)).await;
                }
            }
            // `sent` = deltas already written; it only equals a fault's count at
            // the boundary right after that many deltas.
            let sent = step.saturating_sub(pre);
            let error_now = match b.error_event_after {
                Some(0) => step == content_step,
                Some(n) => step >= pre && sent == n,
                None => false,
            };
            if error_now {
                self.body.clear();
                error_event(&mut self.body, kind, r, step);
                self.put_chunk();
                self.out.extend_from_slice(b"0\r\n\r\n");
                self.flush_out().await?;
                return Ok(keep);
            }
            if step >= pre && sent <= b.events {
                if b.cut_mid_stream_after == Some(sent) {
                    self.flush_out().await?;
                    return Ok(Next::Reset);
                }
                if b.stall_mid_stream_after == Some(sent) {
                    self.flush_out().await?;
                    self.wait_for_peer_close().await;
                    return Ok(Next::Drop);
                }
            }
            self.body.clear();
            sse_event(&mut self.body, kind, phase, r);
            self.put_chunk();
            if step + 1 == total {
                self.out.extend_from_slice(b"0\r\n\r\n");
            }
            // One write per event so the proxy sees each one as soon as it exists.
            self.flush_out().await?;
        }
        Ok(keep)
    }

    /// Frame `self.body` as one chunk of the chunked response.
    fn put_chunk(&mut self) {
        w!(&mut self.out, "{:x}\r\n", self.body.len());
        self.out.extend_from_slice(&self.body);
        self.out.extend_from_slice(b"\r\n");
    }

    async fn flush_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Parks the connection without answering. Reading (and discarding) lets
    /// the task end when the client gives up, so stalled benchmarks do not
    /// leak connections; stop() aborts it otherwise.
    async fn wait_for_peer_close(&mut self) {
        let mut sink = [0u8; 1024];
        while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
    }
}

#[derive(Clone, Copy)]
enum Route {
    Api(Kind),
    Models,
    WrongMethod,
    NotFound,
}

impl Route {
    fn of(method: &str, path: &str) -> Route {
        match (path, method) {
            ("/v1/messages", "POST") => Route::Api(Kind::Messages),
            ("/v1/chat/completions", "POST") => Route::Api(Kind::Chat),
            ("/v1/responses", "POST") => Route::Api(Kind::Responses),
            ("/v1/models", "GET" | "HEAD") => Route::Models,
            ("/v1/messages" | "/v1/chat/completions" | "/v1/responses" | "/v1/models", _) => {
                Route::WrongMethod
            }
            _ => Route::NotFound,
        }
    }
}

/// The few request fields the mock reacts to. Borrowed and skipping the rest
/// so a 1 MiB prompt is not turned into a `serde_json::Value` tree.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Probe<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    messages: Vec<ProbeMessage>,
}

/// Just enough of a message to see a final assistant prefill.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ProbeMessage {
    role: String,
    content: serde_json::Value,
}

impl Probe<'_> {
    /// The text of a final assistant message, if the request ends with one.
    fn prefill(&self) -> Option<String> {
        let last = self.messages.last().filter(|m| m.role == "assistant")?;
        match &last.content {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(blocks) => Some(
                blocks
                    .iter()
                    .filter_map(|b| b["text"].as_str())
                    .collect::<String>(),
            ),
            _ => None,
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

impl<'a> Probe<'a> {
    /// Loose on purpose: a body that is not the JSON we expect still gets a
    /// normal answer, which is what load generators posting junk need.
    fn parse(body: &'a [u8]) -> Probe<'a> {
        serde_json::from_slice(body).unwrap_or_default()
    }
}
