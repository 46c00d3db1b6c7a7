//! Mock LLM provider for integration tests, `steadfast demo` and benchmarks.
//!
//! It speaks just enough HTTP/1.1 (hand-rolled on tokio) to look like the
//! Anthropic Messages and OpenAI Chat Completions / Responses APIs, and can be
//! told to fail in every way the proxy has to survive: error statuses,
//! latency, stalls, resets and streams cut in the middle. A generic HTTP
//! server would hide exactly the socket-level behaviour these faults need, and
//! would cost more per request than a benchmark target should.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

/// Infallible formatting into a Vec: io::Write for Vec<u8> never fails.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = ::std::io::Write::write_fmt($out, format_args!($($arg)*));
    }};
}
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;
const MAX_RECORDED: usize = 64;
/// Keeps a typo in body_size from exhausting memory.
const MAX_PAD: usize = 256 * 1024 * 1024;
const MODEL_FALLBACK: &str = "mock-model";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockApi {
    Anthropic,
    OpenAi,
}

/// What the mock does with each request. Can be swapped at runtime, also over
/// HTTP with `POST /_mock/behavior` (fields missing from the JSON take their
/// defaults; unknown fields are rejected so a typo cannot silently disable a
/// fault).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behavior {
    /// 200 = normal answer; anything else = error response in the dialect's format.
    pub status: u16,
    /// Retry-After header value to send (any status).
    pub retry_after: Option<String>,
    /// Extra response headers, e.g. x-ratelimit-reset-requests.
    pub extra_headers: Vec<(String, String)>,
    /// Delay before sending response headers.
    pub latency_ms: u64,
    /// Read the request, never answer (the socket stays open until the client
    /// closes it or the server is stopped).
    pub stall_before_headers: bool,
    /// Read the request, then close with TCP RST and no response.
    pub reset: bool,
    /// Read the request, then close cleanly (FIN) without a response.
    pub close_without_response: bool,
    /// Number of content delta events in SSE streams.
    pub events: usize,
    /// Delay between consecutive SSE events.
    pub event_delay_ms: u64,
    /// SSE: after this many deltas, stop sending but keep the connection open.
    /// Values above `events` never trigger.
    pub stall_mid_stream_after: Option<usize>,
    /// SSE: after this many deltas, reset the connection (RST).
    /// Values above `events` never trigger.
    pub cut_mid_stream_after: Option<usize>,
    /// Non-SSE: announce the full Content-Length, send only this many body
    /// bytes, then RST. No effect when the body is not longer than this.
    pub cut_body_after_bytes: Option<usize>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Extra padding bytes in the answer text, for large responses (spread
    /// over the deltas when streaming).
    pub body_size: usize,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            retry_after: None,
            extra_headers: Vec::new(),
            latency_ms: 0,
            stall_before_headers: false,
            reset: false,
            close_without_response: false,
            events: 3,
            event_delay_ms: 0,
            stall_mid_stream_after: None,
            cut_mid_stream_after: None,
            cut_body_after_bytes: None,
            input_tokens: 11,
            output_tokens: 7,
            body_size: 0,
        }
    }
}

impl Behavior {
    /// Rejects what would produce a broken response head rather than the fault
    /// the caller asked for.
    pub fn validate(&self) -> Result<(), String> {
        if !(200..=599).contains(&self.status) {
            return Err(format!("status {} is not in 200..=599", self.status));
        }
        if self.body_size > MAX_PAD {
            return Err(format!("body_size {} is above {MAX_PAD}", self.body_size));
        }
        if let Some(v) = &self.retry_after {
            if !valid_header_value(v) {
                return Err(format!("retry_after {v:?} is not a valid header value"));
            }
        }
        for (k, v) in &self.extra_headers {
            if k.is_empty() || !k.bytes().all(is_tchar) {
                return Err(format!("header name {k:?} is not a valid token"));
            }
            if !valid_header_value(v) {
                return Err(format!(
                    "header {k} value {v:?} is not a valid header value"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub api: MockApi,
    pub name: String,
    pub behavior: Behavior,
}

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent, query string included.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl RecordedRequest {
    /// First header of that name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    api: MockApi,
    name: String,
    // An Arc inside so each request takes a cheap snapshot instead of cloning
    // the header vectors.
    behavior: RwLock<Arc<Behavior>>,
    requests: AtomicUsize,
    recorded: Mutex<VecDeque<RecordedRequest>>,
}

impl Shared {
    fn behavior(&self) -> Arc<Behavior> {
        // A poisoned lock only means a test panicked elsewhere; the value is intact.
        self.behavior
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, r: RecordedRequest) {
        let mut q = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= MAX_RECORDED {
            q.pop_front();
        }
        q.push_back(r);
    }
}

pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // Dropping the sender (with the MockServer) also stops the server, so a
    // forgotten mock does not keep its port for the rest of the runtime.
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl MockServer {
    /// Bind and serve in the background on the current tokio runtime. `addr`
    /// may use port 0.
    pub async fn start(addr: SocketAddr, cfg: MockConfig) -> io::Result<MockServer> {
        if !valid_header_value(&cfg.name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mock name must be a valid header value",
            ));
        }
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            api: cfg.api,
            name: cfg.name,
            behavior: RwLock::new(Arc::new(cfg.behavior)),
            requests: AtomicUsize::new(0),
            recorded: Mutex::new(VecDeque::with_capacity(MAX_RECORDED)),
        });
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), rx));
        Ok(MockServer {
            addr,
            shared,
            shutdown: tx,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_behavior(&self, b: Behavior) {
        *self
            .shared
            .behavior
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(b);
    }

    pub fn behavior(&self) -> Behavior {
        (*self.shared.behavior()).clone()
    }

    /// Requests received, control endpoints and malformed requests excluded.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The last 64 requests, oldest first, bodies included.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        let q = self
            .shared
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect()
    }

    pub fn reset_counters(&self) {
        reset_counters(&self.shared);
    }

    /// Stop like a killed process: close the listener and abort every open
    /// connection, in-flight responses included, so that the port can be
    /// re-bound at once by a new `MockServer::start`.
    pub async fn stop(self) {
        let MockServer { shutdown, task, .. } = self;
        let _ = shutdown.send(());
        let _ = task.await;
    }
}

fn reset_counters(shared: &Shared) {
    shared.requests.store(0, Ordering::SeqCst);
    shared
        .recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
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

#[derive(Debug, thiserror::Error)]
enum ReqError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head too large")]
    HeadTooLarge,
    #[error("request body too large")]
    BodyTooLarge,
    #[error(transparent)]
    Io(#[from] io::Error),
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    close: bool,
}

struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
    expect_continue: bool,
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

struct Conn {
    stream: TcpStream,
    shared: Arc<Shared>,
    buf: BytesMut,
    // Reused across requests on the connection so a keep-alive benchmark does
    // not allocate response buffers per request.
    out: Vec<u8>,
    body: Vec<u8>,
    head_only: bool,
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
    async fn fill(&mut self) -> Result<usize, ReqError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.buf).await?)
    }

    /// `Ok(None)` when the peer closed cleanly between requests.
    async fn read_request(&mut self) -> Result<Option<Request>, ReqError> {
        let mut searched = 0;
        let head_end = loop {
            // RFC 9112 §2.2: ignore empty lines before a request line.
            while self.buf.starts_with(b"\r\n") {
                self.buf.advance(2);
                searched = 0;
            }
            if let Some(i) = find(&self.buf[searched..], b"\r\n\r\n") {
                break searched + i;
            }
            searched = self.buf.len().saturating_sub(3);
            if self.buf.len() > MAX_HEAD {
                return Err(ReqError::HeadTooLarge);
            }
            if self.fill().await? == 0 {
                if self.buf.is_empty() || self.buf.as_ref() == b"\r" {
                    return Ok(None);
                }
                return Err(ReqError::Malformed(
                    "connection closed inside the request head",
                ));
            }
        };
        if head_end > MAX_HEAD {
            return Err(ReqError::HeadTooLarge);
        }
        let raw = self.buf.split_to(head_end + 4);
        let head = parse_head(&raw[..head_end + 2])?;
        let body = if head.chunked {
            if head.expect_continue && self.buf.is_empty() {
                self.stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await?;
            }
            self.read_chunked().await?
        } else if let Some(n) = head.content_length.filter(|&n| n > 0) {
            if n > MAX_BODY {
                return Err(ReqError::BodyTooLarge);
            }
            if head.expect_continue && self.buf.len() < n {
                self.stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await?;
            }
            if self.buf.len() < n {
                // One allocation for the whole body instead of repeated doubling.
                self.buf.reserve(n - self.buf.len());
            }
            while self.buf.len() < n {
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(ReqError::Malformed(
                        "connection closed inside the request body",
                    ));
                }
            }
            self.buf.split_to(n).freeze()
        } else {
            Bytes::new()
        };
        Ok(Some(Request {
            method: head.method,
            target: head.target,
            headers: head.headers,
            body,
            close: head.close,
        }))
    }

    async fn read_chunked(&mut self) -> Result<Bytes, ReqError> {
        enum St {
            Size,
            Data(usize),
            DataEnd,
            Trailers(usize),
        }
        let mut body = BytesMut::new();
        let mut st = St::Size;
        loop {
            'parse: loop {
                match st {
                    St::Size => {
                        let Some(i) = find(&self.buf, b"\r\n") else {
                            if self.buf.len() > 1024 {
                                return Err(ReqError::Malformed("chunk size line too long"));
                            }
                            break 'parse;
                        };
                        // Chunk extensions (";name=value") are allowed and ignored.
                        let line = &self.buf[..i];
                        let size_part = line.split(|&b| b == b';').next().unwrap_or(line);
                        let size = parse_hex(trim_ows(size_part))
                            .ok_or(ReqError::Malformed("bad chunk size"))?;
                        if size > MAX_BODY || body.len() + size > MAX_BODY {
                            return Err(ReqError::BodyTooLarge);
                        }
                        self.buf.advance(i + 2);
                        if size == 0 {
                            st = St::Trailers(0);
                        } else {
                            body.reserve(size);
                            st = St::Data(size);
                        }
                    }
                    St::Data(n) => {
                        if self.buf.is_empty() {
                            break 'parse;
                        }
                        let k = n.min(self.buf.len());
                        body.extend_from_slice(&self.buf[..k]);
                        self.buf.advance(k);
                        st = if k == n { St::DataEnd } else { St::Data(n - k) };
                    }
                    St::DataEnd => {
                        if self.buf.len() < 2 {
                            break 'parse;
                        }
                        if &self.buf[..2] != b"\r\n" {
                            return Err(ReqError::Malformed("chunk data not followed by CRLF"));
                        }
                        self.buf.advance(2);
                        st = St::Size;
                    }
                    St::Trailers(seen) => {
                        let Some(i) = find(&self.buf, b"\r\n") else {
                            if seen + self.buf.len() > MAX_HEAD {
                                return Err(ReqError::HeadTooLarge);
                            }
                            break 'parse;
                        };
                        self.buf.advance(i + 2);
                        if i == 0 {
                            return Ok(body.freeze());
                        }
                        // Trailer fields carry nothing the mock needs.
                        st = St::Trailers(seen + i + 2);
                    }
                }
            }
            if self.fill().await? == 0 {
                return Err(ReqError::Malformed(
                    "connection closed inside a chunked body",
                ));
            }
        }
    }

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
        let r = Reply {
            name: &shared.name,
            n,
            model: if probe.model.is_empty() {
                MODEL_FALLBACK
            } else {
                &probe.model
            },
            b: &b,
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
            let msg = format!("mock {} returned {}", shared.name, b.status);
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
        self.send_fixed(status, n, &b, keep).await
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
        for step in 0..total {
            if step > 0 && b.event_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(b.event_delay_ms)).await;
            }
            // `sent` = deltas already written; it only equals a fault's count at
            // the boundary right after that many deltas.
            let sent = step.saturating_sub(pre);
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
            let phase = if step < pre {
                Phase::Pre(step)
            } else if step < pre + b.events {
                Phase::Delta(step - pre)
            } else {
                Phase::Post(step - pre - b.events)
            };
            self.body.clear();
            sse_event(&mut self.body, kind, phase, r);
            w!(&mut self.out, "{:x}\r\n", self.body.len());
            self.out.extend_from_slice(&self.body);
            self.out.extend_from_slice(b"\r\n");
            if step + 1 == total {
                self.out.extend_from_slice(b"0\r\n\r\n");
            }
            // One write per event so the proxy sees each one as soon as it exists.
            self.flush_out().await?;
        }
        Ok(keep)
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

    async fn control(&mut self, req: &Request, path: &str) -> io::Result<()> {
        let shared = self.shared.clone();
        self.body.clear();
        let status = match (req.method.as_str(), path) {
            ("GET", "/_mock/stats") => {
                let api = match shared.api {
                    MockApi::Anthropic => "anthropic",
                    MockApi::OpenAi => "openai",
                };
                let q = shared.recorded.lock().map(|q| q.len()).unwrap_or(0);
                w!(
                    &mut self.body,
                    r#"{{"name":"{}","api":"{}","requests":{},"recorded":{}}}"#,
                    Esc(&shared.name),
                    api,
                    shared.requests.load(Ordering::SeqCst),
                    q
                );
                200
            }
            ("GET", "/_mock/behavior") => {
                let b = shared.behavior();
                json_or_error(&mut self.body, &*b)
            }
            ("POST", "/_mock/behavior") => {
                let parsed = if req.body.iter().all(u8::is_ascii_whitespace) {
                    Ok(Behavior::default())
                } else {
                    serde_json::from_slice::<Behavior>(&req.body).map_err(|e| e.to_string())
                };
                match parsed.and_then(|b| b.validate().map(|()| b)) {
                    Ok(b) => {
                        let status = json_or_error(&mut self.body, &b);
                        *shared.behavior.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(b);
                        status
                    }
                    Err(e) => {
                        w!(&mut self.body, r#"{{"error":"{}"}}"#, Esc(&e));
                        400
                    }
                }
            }
            ("POST", "/_mock/reset") => {
                reset_counters(&shared);
                self.body.extend_from_slice(br#"{"ok":true}"#);
                200
            }
            _ => {
                self.body
                    .extend_from_slice(br#"{"error":"no such control endpoint"}"#);
                404
            }
        };
        let n = shared.requests.load(Ordering::SeqCst);
        self.out.clear();
        put_head(
            &mut self.out,
            status,
            Framing::Length(self.body.len()),
            &shared.name,
            n,
            None,
            req.close,
        );
        if !self.head_only {
            self.out.extend_from_slice(&self.body);
        }
        self.stream.write_all(&self.out).await
    }
}

fn json_or_error<T: Serialize + ?Sized>(w: &mut Vec<u8>, v: &T) -> u16 {
    match serde_json::to_writer(&mut *w, v) {
        Ok(()) => 200,
        Err(e) => {
            w.clear();
            w!(w, r#"{{"error":"{}"}}"#, Esc(&e.to_string()));
            500
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Messages,
    Chat,
    Responses,
}

impl Kind {
    /// Events before and after the deltas.
    fn sse_shape(self, include_usage: bool) -> (usize, usize) {
        match self {
            Kind::Messages => (3, 3),
            Kind::Chat => (0, if include_usage { 3 } else { 2 }),
            Kind::Responses => (1, 2),
        }
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

#[derive(Clone, Copy)]
enum Phase {
    Pre(usize),
    Delta(usize),
    Post(usize),
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

struct Reply<'a> {
    name: &'a str,
    n: usize,
    model: &'a str,
    b: &'a Behavior,
    include_usage: bool,
    created: u64,
}

/// JSON string contents (no quotes), escaped while formatting.
struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut start = 0;
        for (i, &c) in s.as_bytes().iter().enumerate() {
            let esc = match c {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            // Slicing is safe: the byte at `i` is ASCII, hence a char boundary.
            f.write_str(&s[start..i])?;
            if esc.is_empty() {
                write!(f, "\\u{c:04x}")?;
            } else {
                f.write_str(esc)?;
            }
            start = i + 1;
        }
        f.write_str(&s[start..])
    }
}

/// `n` filler characters for large responses.
struct Pad(usize);

impl fmt::Display for Pad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const X: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        let mut left = self.0;
        while left > 0 {
            let k = left.min(X.len());
            f.write_str(&X[..k])?;
            left -= k;
        }
        Ok(())
    }
}

enum Framing {
    Length(usize),
    Chunked,
}

fn put_head(
    out: &mut Vec<u8>,
    status: u16,
    framing: Framing,
    name: &str,
    n: usize,
    b: Option<&Behavior>,
    close: bool,
) {
    w!(out, "HTTP/1.1 {} {}\r\n", status, reason(status));
    match framing {
        Framing::Length(len) => w!(out, "content-type: application/json\r\ncontent-length: {len}\r\n"),
        Framing::Chunked => out.extend_from_slice(
            b"content-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n",
        ),
    }
    w!(
        out,
        "x-mock-provider: {name}\r\nx-mock-request-count: {n}\r\n"
    );
    if let Some(b) = b {
        // Behavior set through set_behavior() is not validated; skipping a bad
        // header beats emitting a head that splits in two.
        if let Some(v) = b.retry_after.as_deref().filter(|v| valid_header_value(v)) {
            w!(out, "retry-after: {v}\r\n");
        }
        for (k, v) in &b.extra_headers {
            if !k.is_empty() && k.bytes().all(is_tchar) && valid_header_value(v) {
                w!(out, "{k}: {v}\r\n");
            }
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Mock Status",
    }
}

fn error_json(w: &mut Vec<u8>, api: MockApi, status: u16, msg: &str) {
    match api {
        MockApi::Anthropic => {
            let t = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                500..=599 => "api_error",
                _ => "invalid_request_error",
            };
            w!(
                w,
                r#"{{"type":"error","error":{{"type":"{t}","message":"{}"}}}}"#,
                Esc(msg)
            );
        }
        MockApi::OpenAi => {
            let t = match status {
                429 => "rate_limit_exceeded",
                500..=599 => "server_error",
                _ => "invalid_request_error",
            };
            w!(
                w,
                r#"{{"error":{{"message":"{}","type":"{t}","param":null,"code":null}}}}"#,
                Esc(msg)
            );
        }
    }
}

fn models_json(w: &mut Vec<u8>, api: MockApi) {
    w.extend_from_slice(match api {
        MockApi::Anthropic => {
            br#"{"data":[{"type":"model","id":"mock-model","display_name":"Mock Model","created_at":"2025-01-01T00:00:00Z"}],"has_more":false,"first_id":"mock-model","last_id":"mock-model"}"#
                as &[u8]
        }
        MockApi::OpenAi => {
            br#"{"object":"list","data":[{"id":"mock-model","object":"model","created":1735689600,"owned_by":"mock"}]}"#
        }
    });
}

fn anthropic_message(w: &mut Vec<u8>, r: &Reply) {
    w!(
        w,
        r#"{{"id":"msg_mock_{}","type":"message","role":"assistant","model":"{}","content":[{{"type":"text","text":"Hello from {}{}"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":{}}}}}"#,
        r.n,
        Esc(r.model),
        Esc(r.name),
        Pad(r.b.body_size),
        r.b.input_tokens,
        r.b.output_tokens
    );
}

fn chat_completion(w: &mut Vec<u8>, r: &Reply) {
    w!(
        w,
        r#"{{"id":"chatcmpl-mock-{}","object":"chat.completion","created":{},"model":"{}","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello from {}{}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}}}"#,
        r.n,
        r.created,
        Esc(r.model),
        Esc(r.name),
        Pad(r.b.body_size),
        r.b.input_tokens,
        r.b.output_tokens,
        r.b.input_tokens.saturating_add(r.b.output_tokens)
    );
}

/// A Responses API object; `done` = final form with output and usage.
fn response_object(w: &mut Vec<u8>, r: &Reply, done: bool, streamed: bool) {
    let status = if done { "completed" } else { "in_progress" };
    w!(
        w,
        r#"{{"id":"resp_mock_{}","object":"response","created_at":{},"status":"{status}","model":"{}","output":["#,
        r.n,
        r.created,
        Esc(r.model)
    );
    if done {
        w!(
            w,
            r#"{{"type":"message","id":"msg_mock_{}","status":"completed","role":"assistant","content":[{{"type":"output_text","text":""#,
            r.n
        );
        if streamed {
            full_text(w, r);
        } else {
            w!(w, "Hello from {}{}", Esc(r.name), Pad(r.b.body_size));
        }
        w!(
            w,
            r#"","annotations":[]}}]}}],"usage":{{"input_tokens":{},"output_tokens":{},"total_tokens":{}}}}}"#,
            r.b.input_tokens,
            r.b.output_tokens,
            r.b.input_tokens.saturating_add(r.b.output_tokens)
        );
    } else {
        w.extend_from_slice(br#"],"usage":null}"#);
    }
}

/// The answer text, escaped. Streams are the concatenation of their deltas.
fn full_text(w: &mut Vec<u8>, r: &Reply) {
    for i in 0..r.b.events {
        delta_text(w, r, i);
    }
}

/// Delta `i` of the streamed answer: "Hello", " from", " <name>", then
/// " again" for any further ones; fewer than 3 deltas carry the rest of the
/// sentence in the last one. Padding is spread evenly over the deltas.
fn delta_text(w: &mut Vec<u8>, r: &Reply, i: usize) {
    let events = r.b.events;
    let (from, to) = if i + 1 == events && events < 3 {
        (i, 3)
    } else if i < 3 {
        (i, i + 1)
    } else {
        (3, 4)
    };
    for word in from..to {
        match word {
            0 => w.extend_from_slice(b"Hello"),
            1 => w.extend_from_slice(b" from"),
            2 => w!(w, " {}", Esc(r.name)),
            _ => w.extend_from_slice(b" again"),
        }
    }
    let per = events.max(1);
    let pad = r.b.body_size / per + usize::from(i < r.b.body_size % per);
    w!(w, "{}", Pad(pad));
}

fn sse_event(w: &mut Vec<u8>, kind: Kind, phase: Phase, r: &Reply) {
    let (n, m) = (r.n, Esc(r.model));
    match (kind, phase) {
        (Kind::Messages, Phase::Pre(0)) => w!(
            w,
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_mock_{n}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"{m}\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"output_tokens\":1}}}}}}\n\n",
            r.b.input_tokens
        ),
        (Kind::Messages, Phase::Pre(1)) => w.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        ),
        (Kind::Messages, Phase::Pre(_)) => w.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"),
        (Kind::Messages, Phase::Delta(i)) => {
            w.extend_from_slice(
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"",
            );
            delta_text(w, r, i);
            w.extend_from_slice(b"\"}}\n\n");
        }
        (Kind::Messages, Phase::Post(0)) => w.extend_from_slice(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        ),
        (Kind::Messages, Phase::Post(1)) => w!(
            w,
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
            r.b.output_tokens
        ),
        (Kind::Messages, Phase::Post(_)) => {
            w.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
        }
        (Kind::Chat, Phase::Post(k)) if k + 1 == kind.sse_shape(r.include_usage).1 => {
            w.extend_from_slice(b"data: [DONE]\n\n")
        }
        (Kind::Chat, phase) => {
            w!(
                w,
                "data: {{\"id\":\"chatcmpl-mock-{n}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":\"{m}\",",
                r.created
            );
            match phase {
                Phase::Delta(i) => {
                    w.extend_from_slice(br#""choices":[{"index":0,"delta":{"#);
                    if i == 0 {
                        w.extend_from_slice(br#""role":"assistant","#);
                    }
                    w.extend_from_slice(br#""content":""#);
                    delta_text(w, r, i);
                    w.extend_from_slice(br#""},"logprobs":null,"finish_reason":null}]"#);
                }
                Phase::Post(0) | Phase::Pre(_) => w.extend_from_slice(
                    br#""choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]"#,
                ),
                Phase::Post(_) => {
                    w!(
                        w,
                        r#""choices":[],"usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}}}"#,
                        r.b.input_tokens,
                        r.b.output_tokens,
                        r.b.input_tokens.saturating_add(r.b.output_tokens)
                    );
                    w.extend_from_slice(b"\n\n");
                    return;
                }
            }
            // Real OpenAI streams carry "usage":null on every chunk once usage was asked for.
            if r.include_usage {
                w.extend_from_slice(br#","usage":null"#);
            }
            w.extend_from_slice(b"}\n\n");
        }
        (Kind::Responses, Phase::Pre(_)) => {
            w.extend_from_slice(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":");
            response_object(w, r, false, true);
            w.extend_from_slice(b"}\n\n");
        }
        (Kind::Responses, Phase::Delta(i)) => {
            w!(
                w,
                "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_mock_{n}\",\"output_index\":0,\"content_index\":0,\"delta\":\""
            );
            delta_text(w, r, i);
            w.extend_from_slice(b"\"}\n\n");
        }
        (Kind::Responses, Phase::Post(0)) => {
            w!(
                w,
                "event: response.output_text.done\ndata: {{\"type\":\"response.output_text.done\",\"item_id\":\"msg_mock_{n}\",\"output_index\":0,\"content_index\":0,\"text\":\""
            );
            full_text(w, r);
            w.extend_from_slice(b"\"}\n\n");
        }
        (Kind::Responses, Phase::Post(_)) => {
            w.extend_from_slice(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":");
            response_object(w, r, true, true);
            w.extend_from_slice(b"}\n\n");
        }
    }
}

fn parse_head(h: &[u8]) -> Result<Head, ReqError> {
    use ReqError::Malformed;
    let mut lines = h.split(|&b| b == b'\n').peekable();
    let first = lines.next().unwrap_or_default();
    let first = first
        .strip_suffix(b"\r")
        .ok_or(Malformed("bare LF in request head"))?;
    let mut parts = first.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed("bad request line"));
    };
    if method.is_empty() || !method.iter().copied().all(is_tchar) {
        return Err(Malformed("bad method"));
    }
    if target.is_empty() || !target.iter().all(|&b| b > 0x20 && b != 0x7f) {
        return Err(Malformed("bad request target"));
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(Malformed("unsupported HTTP version")),
    };
    let mut head = Head {
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        headers: Vec::with_capacity(16),
        content_length: None,
        chunked: false,
        close: false,
        expect_continue: false,
    };
    let (mut te_seen, mut conn_close, mut conn_keep) = (false, false, false);
    while let Some(line) = lines.next() {
        // Only the piece after the final CRLF may be empty.
        if line.is_empty() && lines.peek().is_none() {
            break;
        }
        let line = line
            .strip_suffix(b"\r")
            .ok_or(Malformed("bare LF in request head"))?;
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(Malformed("obsolete header line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(Malformed("header line without colon"))?;
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.is_empty() || !name.iter().copied().all(is_tchar) {
            return Err(Malformed("bad header name"));
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        {
            return Err(Malformed("bad header value"));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        if name.eq_ignore_ascii_case("content-length") {
            // Too many digits to fit is simply "too large", not malformed.
            let n = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                value.parse::<usize>().unwrap_or(usize::MAX)
            } else {
                return Err(Malformed("bad content-length"));
            };
            if head.content_length.is_some_and(|old| old != n) {
                return Err(Malformed("conflicting content-length headers"));
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if te_seen || !value.eq_ignore_ascii_case("chunked") {
                return Err(Malformed("unsupported transfer-encoding"));
            }
            te_seen = true;
            head.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                conn_close |= token.eq_ignore_ascii_case("close");
                conn_keep |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
        head.headers.push((name, value));
    }
    // Both framings at once is the classic smuggling vector; refuse rather than guess.
    if te_seen && head.content_length.is_some() {
        return Err(Malformed("both content-length and transfer-encoding"));
    }
    head.close = conn_close || (http10 && !conn_keep);
    Ok(head)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0usize, |acc, &b| {
        acc.checked_mul(16)?
            .checked_add((b as char).to_digit(16)? as usize)
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn valid_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// `steadfast mock-provider --listen ADDR [--api anthropic|openai] [--name NAME] [fault flags]`
#[derive(clap::Args, Debug, Clone)]
pub struct MockArgs {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Wire dialect: decides the error format and the model list.
    #[arg(long, default_value = "anthropic", value_parser = ["anthropic", "openai"])]
    pub api: String,
    /// Name reported in answers and in the x-mock-provider header.
    #[arg(long, default_value = "mock")]
    pub name: String,
    /// 200 = normal answers; anything else = that error status.
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Retry-After header value to send.
    #[arg(long, value_name = "VALUE")]
    pub retry_after: Option<String>,
    /// Extra response header, "name: value" (repeatable).
    #[arg(long, value_name = "NAME: VALUE")]
    pub header: Vec<String>,
    /// Delay before response headers.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,
    /// Read each request and never answer.
    #[arg(long)]
    pub stall_before_headers: bool,
    /// Read each request, then reset the connection (RST).
    #[arg(long)]
    pub reset: bool,
    /// Read each request, then close the connection (FIN) without answering.
    #[arg(long)]
    pub close_without_response: bool,
    /// Content delta events per SSE stream.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub events: usize,
    /// Delay between SSE events.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub event_delay_ms: u64,
    /// SSE: go silent (connection kept open) after N deltas.
    #[arg(long, value_name = "N")]
    pub stall_mid_stream_after: Option<usize>,
    /// SSE: reset the connection after N deltas.
    #[arg(long, value_name = "N")]
    pub cut_mid_stream_after: Option<usize>,
    /// JSON: send only this many body bytes, then reset.
    #[arg(long, value_name = "BYTES")]
    pub cut_body_after_bytes: Option<usize>,
    /// Input tokens reported in usage.
    #[arg(long, default_value_t = 11, value_name = "N")]
    pub input_tokens: u64,
    /// Output tokens reported in usage.
    #[arg(long, default_value_t = 7, value_name = "N")]
    pub output_tokens: u64,
    /// Extra padding bytes in the answer text.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub body_size: usize,
}

impl MockArgs {
    pub fn to_config(&self) -> Result<MockConfig, String> {
        let api = match self.api.to_ascii_lowercase().as_str() {
            "anthropic" => MockApi::Anthropic,
            "openai" => MockApi::OpenAi,
            other => {
                return Err(format!(
                    "--api: unknown dialect {other:?} (anthropic|openai)"
                ))
            }
        };
        if self.name.is_empty() || !valid_header_value(&self.name) {
            return Err(format!(
                "--name: {:?} cannot be sent as a header value",
                self.name
            ));
        }
        let mut extra_headers = Vec::with_capacity(self.header.len());
        for h in &self.header {
            let (k, v) = h
                .split_once(':')
                .ok_or_else(|| format!("--header: {h:?} is not \"name: value\""))?;
            extra_headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let behavior = Behavior {
            status: self.status,
            retry_after: self.retry_after.clone(),
            extra_headers,
            latency_ms: self.latency_ms,
            stall_before_headers: self.stall_before_headers,
            reset: self.reset,
            close_without_response: self.close_without_response,
            events: self.events,
            event_delay_ms: self.event_delay_ms,
            stall_mid_stream_after: self.stall_mid_stream_after,
            cut_mid_stream_after: self.cut_mid_stream_after,
            cut_body_after_bytes: self.cut_body_after_bytes,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            body_size: self.body_size,
        };
        behavior.validate()?;
        Ok(MockConfig {
            api,
            name: self.name.clone(),
            behavior,
        })
    }
}

/// Runs until SIGTERM/SIGINT; prints `mock-provider <name> listening on
/// <addr>` to stdout once bound. Returns the process exit code.
pub fn run_cli(args: MockArgs) -> i32 {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mock-provider: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mock-provider: cannot start runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        // Handlers go in before the "listening" line: a test that signals as
        // soon as it reads the line must not hit the default (kill) action.
        let signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mock-provider: cannot install signal handlers: {e}");
                return 1;
            }
        };
        let name = cfg.name.clone();
        let server = match MockServer::start(args.listen, cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mock-provider: cannot listen on {}: {e}", args.listen);
                return 1;
            }
        };
        {
            use std::io::Write as _;
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "mock-provider {name} listening on {}", server.addr());
            let _ = out.flush();
        }
        signals.wait().await;
        server.stop().await;
        0
    })
}

#[cfg(unix)]
struct Signals(tokio::signal::unix::Signal, tokio::signal::unix::Signal);

#[cfg(unix)]
impl Signals {
    fn new() -> io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals(
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.0.recv() => {}
            _ = self.1.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> io::Result<Signals> {
        Ok(Signals)
    }

    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .field("requests", &self.requests())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const T: Duration = Duration::from_secs(5);

    async fn start(api: MockApi, b: Behavior) -> MockServer {
        let cfg = MockConfig {
            api,
            name: "m1".into(),
            behavior: b,
        };
        MockServer::start("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .unwrap()
    }

    fn with(f: impl FnOnce(&mut Behavior)) -> Behavior {
        let mut b = Behavior::default();
        f(&mut b);
        b
    }

    fn post(path: &str, body: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn msg(stream: bool) -> String {
        json!({"model": "claude-x", "max_tokens": 5, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            .to_string()
    }

    fn chat(stream: bool, usage: bool) -> String {
        let mut v = json!({"model": "gpt-x", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        if usage {
            v["stream_options"] = json!({"include_usage": true});
        }
        v.to_string()
    }

    #[derive(Debug)]
    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        chunks: Vec<Vec<u8>>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
        }
        /// (event name, data) per SSE event, asserting one event per chunk.
        fn events(&self) -> Vec<(Option<String>, String)> {
            self.chunks.iter().map(|c| parse_event(c)).collect()
        }
    }

    fn parse_event(c: &[u8]) -> (Option<String>, String) {
        let s = std::str::from_utf8(c).unwrap();
        assert!(
            s.ends_with("\n\n") && s.matches("\n\n").count() == 1,
            "not one event per chunk: {s:?}"
        );
        let mut name = None;
        let mut data = String::new();
        for line in s.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        (name, data)
    }

    struct Client {
        s: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> Client {
            Client {
                s: TcpStream::connect(addr).await.unwrap(),
                buf: Vec::new(),
            }
        }

        async fn send(&mut self, raw: &[u8]) {
            self.s.write_all(raw).await.unwrap();
        }

        async fn fill(&mut self) -> io::Result<()> {
            let mut tmp = [0u8; 16384];
            match tokio::time::timeout(T, self.s.read(&mut tmp)).await {
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
                Ok(Ok(0)) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(Ok(n)) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    Ok(())
                }
                Ok(Err(e)) => Err(e),
            }
        }

        async fn head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
            let end = loop {
                if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let text = String::from_utf8(self.buf.drain(..end + 4).collect()).unwrap();
            let mut lines = text.split("\r\n");
            let status = lines.next().unwrap()[9..12].parse().unwrap();
            let headers = lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once(':').unwrap();
                    (k.to_ascii_lowercase(), v.trim().to_string())
                })
                .collect();
            Ok((status, headers))
        }

        async fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
            while self.buf.len() < n {
                self.fill().await?;
            }
            Ok(self.buf.drain(..n).collect())
        }

        /// Next chunk of a chunked body; None at the terminating chunk.
        async fn chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).unwrap(), 16)
                    .unwrap();
            self.buf.drain(..line_end + 2);
            let data = self.exact(size + 2).await?;
            assert_eq!(&data[size..], b"\r\n");
            Ok((size > 0).then(|| data[..size].to_vec()))
        }

        async fn response(&mut self) -> io::Result<Resp> {
            let (status, headers) = self.head().await?;
            let mut r = Resp {
                status,
                headers,
                body: Vec::new(),
                chunks: Vec::new(),
            };
            if r.header("transfer-encoding") == Some("chunked") {
                while let Some(c) = self.chunk().await? {
                    r.body.extend_from_slice(&c);
                    r.chunks.push(c);
                }
            } else {
                let n = r.header("content-length").unwrap().parse().unwrap();
                r.body = self.exact(n).await?;
            }
            Ok(r)
        }

        /// Waits for the server to close; true if it did (EOF or reset) with no data.
        async fn closed(&mut self, limit: Duration) -> bool {
            let mut tmp = [0u8; 1024];
            matches!(
                tokio::time::timeout(limit, self.s.read(&mut tmp)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        }
    }

    /// The peer must have reset the connection. Linux reports an RST as
    /// ECONNRESET, which tells it apart from a clean close; elsewhere accept EOF.
    fn assert_reset(r: io::Result<Vec<u8>>) {
        match r {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
            Ok(data) => {
                assert!(
                    data.is_empty(),
                    "got data: {:?}",
                    String::from_utf8_lossy(&data)
                );
                if cfg!(target_os = "linux") {
                    panic!("clean EOF instead of RST");
                }
            }
        }
    }

    /// Same for an error from `Client`, which reports EOF as UnexpectedEof.
    fn assert_reset_err(e: io::Error) {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            assert_reset(Ok(Vec::new()));
        } else {
            assert_reset(Err(e));
        }
    }

    async fn roundtrip(addr: SocketAddr, raw: &str) -> Resp {
        let mut c = Client::connect(addr).await;
        c.send(raw.as_bytes()).await;
        c.response().await.unwrap()
    }

    #[tokio::test]
    async fn anthropic_json_answer_with_usage() {
        let m = start(MockApi::Anthropic, Behavior::default()).await;
        let r = roundtrip(m.addr(), &post("/v1/messages", &msg(false))).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("x-mock-provider"), Some("m1"));
        assert_eq!(r.header("x-mock-request-count"), Some("1"));
        let v = r.json();
        assert_eq!(v["id"], "msg_mock_1");
        assert_eq!(v["type"], "message");
        assert_eq!(v["model"], "claude-x");
        assert_eq!(v["content"][0]["text"], "Hello from m1");
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["usage"], json!({"input_tokens": 11, "output_tokens": 7}));
        m.stop().await;
    }

    #[tokio::test]
    async fn openai_chat_and_responses_json_answers() {
        let m = start(
            MockApi::OpenAi,
            with(|b| {
                b.input_tokens = 3;
                b.output_tokens = 4;
                b.body_size = 10
            }),
        )
        .await;
        let v = roundtrip(m.addr(), &post("/v1/chat/completions", &chat(false, false)))
            .await
            .json();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Hello from m1xxxxxxxxxx"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
        let v = roundtrip(
            m.addr(),
            &post("/v1/responses", r#"{"model":"gpt-r","input":"hi"}"#),
        )
        .await
        .json();
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["model"], "gpt-r");
        assert_eq!(
            v["output"][0]["content"][0]["text"],
            "Hello from m1xxxxxxxxxx"
        );
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 3, "output_tokens": 4, "total_tokens": 7})
        );
        let v = roundtrip(m.addr(), "GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .json();
        assert_eq!(v["object"], "list");
        assert_eq!(m.requests(), 3);
        m.stop().await;
    }

    #[tokio::test]
    async fn anthropic_sse_event_order_and_count() {
        let m = start(MockApi::Anthropic, with(|b| b.events = 4)).await;
        let r = roundtrip(m.addr(), &post("/v1/messages", &msg(true))).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        let ev = r.events();
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
        let mut want = vec!["message_start", "content_block_start", "ping"];
        want.extend(["content_block_delta"; 4]);
        want.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names, want);
        let data: Vec<Value> = ev
            .iter()
            .map(|(_, d)| serde_json::from_str(d).unwrap())
            .collect();
        for (n, d) in names.iter().zip(&data) {
            assert_eq!(d["type"], *n);
        }
        assert_eq!(data[0]["message"]["usage"]["input_tokens"], 11);
        assert_eq!(data[0]["message"]["model"], "claude-x");
        let text: String = data[3..7]
            .iter()
            .map(|d| d["delta"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Hello from m1 again");
        assert_eq!(data[8]["usage"]["output_tokens"], 7);
        assert_eq!(data[8]["delta"]["stop_reason"], "end_turn");
        m.stop().await;
    }

    #[tokio::test]
    async fn openai_sse_with_and_without_include_usage() {
        let m = start(MockApi::OpenAi, Behavior::default()).await;
        for usage in [false, true] {
            let r = roundtrip(m.addr(), &post("/v1/chat/completions", &chat(true, usage))).await;
            assert_eq!(r.status, 200);
            let ev = r.events();
            assert!(ev.iter().all(|(n, _)| n.is_none()));
            assert_eq!(ev.last().unwrap().1, "[DONE]");
            let chunks: Vec<Value> = ev[..ev.len() - 1]
                .iter()
                .map(|(_, d)| serde_json::from_str(d).unwrap())
                .collect();
            assert_eq!(chunks.len(), if usage { 5 } else { 4 }, "{ev:?}");
            let text: String = chunks[..3]
                .iter()
                .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
                .collect();
            assert_eq!(text, "Hello from m1");
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            assert!(chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "gpt-x"));
            assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
            if usage {
                assert_eq!(chunks[4]["choices"], json!([]));
                assert_eq!(
                    chunks[4]["usage"],
                    json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18})
                );
            } else {
                assert!(chunks.iter().all(|c| c.get("usage").is_none()));
            }
        }
        let r = roundtrip(
            m.addr(),
            &post("/v1/responses", r#"{"model":"r","stream":true}"#),
        )
        .await;
        let names: Vec<String> = r.events().into_iter().map(|(n, _)| n.unwrap()).collect();
        assert_eq!(names.first().unwrap(), "response.created");
        assert_eq!(
            names
                .iter()
                .filter(|n| *n == "response.output_text.delta")
                .count(),
            3
        );
        assert_eq!(names.last().unwrap(), "response.completed");
        let (_, last) = r.events().pop().unwrap();
        let last: Value = serde_json::from_str(&last).unwrap();
        assert_eq!(last["response"]["usage"]["output_tokens"], 7);
        assert_eq!(
            last["response"]["output"][0]["content"][0]["text"],
            "Hello from m1"
        );
        m.stop().await;
    }

    #[tokio::test]
    async fn error_status_retry_after_and_extra_headers() {
        let b = Behavior {
            status: 429,
            retry_after: Some("7".into()),
            extra_headers: vec![("x-ratelimit-reset-requests".into(), "2s".into())],
            ..Behavior::default()
        };
        let m = start(MockApi::Anthropic, b).await;
        let r = roundtrip(m.addr(), &post("/v1/messages", &msg(true))).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert_eq!(r.header("x-ratelimit-reset-requests"), Some("2s"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "mock m1 returned 429"}})
        );
        for (status, t) in [
            (529, "overloaded_error"),
            (503, "api_error"),
            (401, "authentication_error"),
            (422, "invalid_request_error"),
        ] {
            m.set_behavior(Behavior {
                status,
                ..Behavior::default()
            });
            let r = roundtrip(m.addr(), &post("/v1/messages", &msg(false))).await;
            assert_eq!(r.status, status);
            assert_eq!(r.json()["error"]["type"], t);
            assert_eq!(r.header("retry-after"), None);
        }
        let o = start(MockApi::OpenAi, with(|b| b.status = 503)).await;
        let r = roundtrip(o.addr(), &post("/v1/chat/completions", &chat(false, false))).await;
        assert_eq!(r.status, 503);
        assert_eq!(
            r.json(),
            json!({"error": {"message": "mock m1 returned 503", "type": "server_error", "param": null, "code": null}})
        );
    }

    #[tokio::test]
    async fn unknown_path_is_404_in_dialect() {
        let m = start(MockApi::Anthropic, Behavior::default()).await;
        let r = roundtrip(m.addr(), &post("/v2/nope", "{}")).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"]["type"], "not_found_error");
        let o = start(MockApi::OpenAi, Behavior::default()).await;
        let r = roundtrip(o.addr(), "GET /v1/messages HTTP/1.1\r\n\r\n").await;
        assert_eq!(r.status, 405);
        assert!(r.json()["error"]["message"].is_string());
        // The Anthropic path is served by an OpenAI-dialect mock too.
        let r = roundtrip(o.addr(), &post("/v1/messages", &msg(false))).await;
        assert_eq!(r.json()["type"], "message");
    }

    #[tokio::test]
    async fn stall_before_headers_never_answers() {
        let m = start(MockApi::Anthropic, with(|b| b.stall_before_headers = true)).await;
        let mut c = Client::connect(m.addr()).await;
        c.send(post("/v1/messages", &msg(false)).as_bytes()).await;
        let mut tmp = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_millis(200), c.s.read(&mut tmp)).await;
        assert!(r.is_err(), "expected the read to time out, got {r:?}");
        assert_eq!(m.requests(), 1);
        m.stop().await;
    }

    #[tokio::test]
    async fn reset_and_close_without_response() {
        let m = start(MockApi::Anthropic, with(|b| b.reset = true)).await;
        let mut c = Client::connect(m.addr()).await;
        c.send(post("/v1/messages", &msg(false)).as_bytes()).await;
        let mut tmp = [0u8; 64];
        let r = tokio::time::timeout(T, c.s.read(&mut tmp)).await.unwrap();
        assert_reset(r.map(|n| tmp[..n].to_vec()));
        m.set_behavior(Behavior {
            close_without_response: true,
            ..Behavior::default()
        });
        let mut c = Client::connect(m.addr()).await;
        c.send(post("/v1/messages", &msg(false)).as_bytes()).await;
        let n = tokio::time::timeout(T, c.s.read(&mut tmp))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "FIN expected");
        assert_eq!(m.requests(), 2);
    }

    #[tokio::test]
    async fn cut_mid_stream_sends_exactly_n_deltas_then_resets() {
        for (api, path, body) in [
            (MockApi::Anthropic, "/v1/messages", msg(true)),
            (MockApi::OpenAi, "/v1/chat/completions", chat(true, true)),
        ] {
            let m = start(
                api,
                Behavior {
                    events: 5,
                    cut_mid_stream_after: Some(2),
                    ..Behavior::default()
                },
            )
            .await;
            let mut c = Client::connect(m.addr()).await;
            c.send(post(path, &body).as_bytes()).await;
            let (status, _) = c.head().await.unwrap();
            assert_eq!(status, 200);
            let mut deltas = 0;
            let err = loop {
                match c.chunk().await {
                    Ok(Some(ch)) => {
                        let s = String::from_utf8(ch).unwrap();
                        if s.contains("content_block_delta") || s.contains("\"content\":\"") {
                            deltas += 1;
                        }
                    }
                    Ok(None) => panic!("stream terminated cleanly"),
                    Err(e) => break e,
                }
            };
            assert_eq!(deltas, 2);
            assert_reset_err(err);
        }
    }

    #[tokio::test]
    async fn stall_mid_stream_keeps_connection_open() {
        let m = start(
            MockApi::Anthropic,
            with(|b| b.stall_mid_stream_after = Some(1)),
        )
        .await;
        let mut c = Client::connect(m.addr()).await;
        c.send(post("/v1/messages", &msg(true)).as_bytes()).await;
        c.head().await.unwrap();
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(parse_event(&c.chunk().await.unwrap().unwrap()).0.unwrap());
        }
        assert_eq!(
            names.last().map(String::as_str),
            Some("content_block_delta")
        );
        let mut tmp = [0u8; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(300), c.s.read(&mut tmp))
                .await
                .is_err()
        );
        m.stop().await;
        assert!(c.closed(T).await, "stop() must close the stalled stream");
    }

    #[tokio::test]
    async fn cut_body_sends_partial_body_then_resets() {
        let m = start(
            MockApi::Anthropic,
            with(|b| b.cut_body_after_bytes = Some(20)),
        )
        .await;
        let mut c = Client::connect(m.addr()).await;
        c.send(post("/v1/messages", &msg(false)).as_bytes()).await;
        let (status, headers) = c.head().await.unwrap();
        assert_eq!(status, 200);
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert!(len > 20);
        let err = c.exact(len).await.unwrap_err();
        assert_reset_err(err);
        assert_eq!(c.buf.len(), 20);
    }

    #[tokio::test]
    async fn latency_delays_headers() {
        let m = start(MockApi::Anthropic, with(|b| b.latency_ms = 150)).await;
        let t0 = std::time::Instant::now();
        let r = roundtrip(m.addr(), &post("/v1/messages", &msg(false))).await;
        assert_eq!(r.status, 200);
        assert!(t0.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn keep_alive_pipelining_and_connection_close() {
        let m = start(MockApi::Anthropic, Behavior::default()).await;
        let mut c = Client::connect(m.addr()).await;
        c.send(post("/v1/messages", &msg(false)).as_bytes()).await;
        let r1 = c.response().await.unwrap();
        c.send(post("/v1/messages", &msg(true)).as_bytes()).await;
        let r2 = c.response().await.unwrap();
        assert_eq!(r1.header("x-mock-request-count"), Some("1"));
        assert_eq!(r2.header("x-mock-request-count"), Some("2"));
        assert_eq!(r2.events().len(), 9);
        // Two requests in one write are answered in order.
        let two = format!(
            "{}{}",
            post("/v1/messages", &msg(false)),
            post("/v1/messages", &msg(false))
        );
        c.send(two.as_bytes()).await;
        assert_eq!(c.response().await.unwrap().json()["id"], "msg_mock_3");
        assert_eq!(c.response().await.unwrap().json()["id"], "msg_mock_4");
        let close = post("/v1/messages", &msg(false))
            .replace("host: x\r\n", "host: x\r\nconnection: close\r\n");
        c.send(close.as_bytes()).await;
        let r = c.response().await.unwrap();
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed(T).await);
        assert_eq!(m.requests(), 5);
    }

    #[tokio::test]
    async fn stop_closes_inflight_and_port_can_be_rebound() {
        let m = start(MockApi::Anthropic, with(|b| b.stall_before_headers = true)).await;
        let addr = m.addr();
        let mut stalled = Client::connect(addr).await;
        stalled
            .send(post("/v1/messages", &msg(false)).as_bytes())
            .await;
        let mut idle = Client::connect(addr).await;
        let deadline = std::time::Instant::now() + T;
        while m.requests() < 1 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        m.stop().await;
        assert!(
            stalled.closed(T).await,
            "stalled connection not closed by stop()"
        );
        assert!(idle.closed(T).await, "idle connection not closed by stop()");
        let cfg = MockConfig {
            api: MockApi::Anthropic,
            name: "again".into(),
            behavior: Behavior::default(),
        };
        let m2 = MockServer::start(addr, cfg)
            .await
            .expect("re-bind after stop");
        assert_eq!(m2.addr(), addr);
        let r = roundtrip(addr, &post("/v1/messages", &msg(false))).await;
        assert_eq!(r.json()["content"][0]["text"], "Hello from again");
        m2.stop().await;
    }

    #[tokio::test]
    async fn control_endpoints() {
        let m = start(MockApi::Anthropic, Behavior::default()).await;
        roundtrip(m.addr(), &post("/v1/messages", &msg(false))).await;
        let r = roundtrip(
            m.addr(),
            &post("/_mock/behavior", r#"{"status":503,"retry_after":"3"}"#),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["status"], 503);
        assert_eq!(r.json()["events"], 3, "missing fields take defaults");
        assert_eq!(m.behavior().retry_after.as_deref(), Some("3"));
        let r = roundtrip(m.addr(), &post("/v1/messages", &msg(false))).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("3"));
        let r = roundtrip(m.addr(), "GET /_mock/stats HTTP/1.1\r\n\r\n").await;
        assert_eq!(r.json()["name"], "m1");
        assert_eq!(r.json()["requests"], 2);
        for bad in [
            r#"{"statsu":500}"#,
            r#"{"status":"x"}"#,
            r#"{"status":99}"#,
            "nope",
        ] {
            let r = roundtrip(m.addr(), &post("/_mock/behavior", bad)).await;
            assert_eq!(r.status, 400, "{bad}");
        }
        assert_eq!(
            m.behavior().status,
            503,
            "a rejected update changes nothing"
        );
        let r = roundtrip(m.addr(), &post("/_mock/behavior", "")).await;
        assert_eq!(r.status, 200);
        assert_eq!(m.behavior(), Behavior::default());
        assert_eq!(
            roundtrip(m.addr(), &post("/_mock/reset", "")).await.status,
            200
        );
        assert_eq!(m.requests(), 0);
        assert!(m.recorded().is_empty());
        assert_eq!(
            roundtrip(m.addr(), "GET /_mock/nope HTTP/1.1\r\n\r\n")
                .await
                .status,
            404
        );
        assert_eq!(m.requests(), 0, "control endpoints are not counted");
    }

    #[tokio::test]
    async fn recorded_captures_headers_body_and_keeps_64() {
        let m = start(MockApi::Anthropic, Behavior::default()).await;
        let body = msg(false);
        let raw = post("/v1/messages?beta=true", &body)
            .replace("host: x\r\n", "Host: x\r\nX-Api-Key: sk-test\r\n");
        roundtrip(m.addr(), &raw).await;
        let rec = m.recorded();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].method, "POST");
        assert_eq!(rec[0].path, "/v1/messages?beta=true");
        assert_eq!(rec[0].header("x-api-key"), Some("sk-test"));
        assert_eq!(rec[0].header("HOST"), Some("x"));
        assert_eq!(rec[0].header("authorization"), None);
        assert_eq!(rec[0].body.as_ref(), body.as_bytes());
        let mut c = Client::connect(m.addr()).await;
        for i in 0..70 {
            c.send(post("/v1/messages", &format!(r#"{{"model":"m{i}"}}"#)).as_bytes())
                .await;
            c.response().await.unwrap();
        }
        let rec = m.recorded();
        assert_eq!(rec.len(), 64);
        assert_eq!(rec[63].body.as_ref(), br#"{"model":"m69"}"#);
        assert_eq!(m.requests(), 71);
        m.reset_counters();
        assert_eq!(m.requests(), 0);
        assert!(m.recorded().is_empty());
    }

    #[tokio::test]
    async fn chunked_request_body_and_expect_continue() {
        let m = start(MockApi::Anthropic, Behavior::default()).await;
        let mut c = Client::connect(m.addr()).await;
        c.send(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\n{\"mod\r\n").await;
        c.send(b"d\r\nel\":\"chunky\"}\r\n0\r\nx-trailer: 1\r\n\r\n")
            .await;
        let r = c.response().await.unwrap();
        assert_eq!(r.json()["model"], "chunky");
        assert_eq!(m.recorded()[0].body.as_ref(), br#"{"model":"chunky"}"#);
        let big = "y".repeat(100_000);
        let body = format!(r#"{{"model":"big","pad":"{big}"}}"#);
        let head = format!(
            "POST /v1/messages HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        c.send(head.as_bytes()).await;
        let (status, _) = c.head().await.unwrap();
        assert_eq!(status, 100);
        c.send(body.as_bytes()).await;
        let r = c.response().await.unwrap();
        assert_eq!(r.json()["model"], "big");
        assert_eq!(m.recorded()[1].body.len(), body.len());
    }

    #[tokio::test]
    async fn malformed_requests_get_400_and_close() {
        let m = start(MockApi::OpenAi, Behavior::default()).await;
        for raw in [
            "GARBAGE\r\n\r\n",
            "POST /v1/messages HTTP/1.1\r\ncontent-length: abc\r\n\r\n",
            "POST /v1/messages HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "POST /v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nbad header\r\n\r\n",
            "GET / HTTP/1.1\r\n folded: x\r\n\r\n",
        ] {
            let mut c = Client::connect(m.addr()).await;
            c.send(raw.as_bytes()).await;
            let r = c.response().await.unwrap();
            assert_eq!(r.status, 400, "{raw:?}");
            assert_eq!(r.json()["error"]["type"], "invalid_request_error");
            assert_eq!(r.header("connection"), Some("close"));
            assert!(c.closed(T).await, "{raw:?}");
        }
        let r = roundtrip(
            m.addr(),
            "POST /v1/messages HTTP/1.1\r\ncontent-length: 67108865\r\n\r\n",
        )
        .await;
        assert_eq!(r.status, 413);
        let r = roundtrip(
            m.addr(),
            &format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(70_000)),
        )
        .await;
        assert_eq!(r.status, 431);
        assert_eq!(m.requests(), 0);
        // Non-JSON bodies are answered normally: load generators post junk.
        let r = roundtrip(m.addr(), &post("/v1/chat/completions", "not json")).await;
        assert_eq!(r.json()["model"], MODEL_FALLBACK);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        mock: MockArgs,
    }

    #[test]
    fn cli_flags_map_to_behavior() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "openai",
            "--name",
            "p9",
            "--status",
            "429",
            "--retry-after",
            "5",
            "--header",
            "x-a: 1",
            "--header",
            "x-b:2",
            "--latency-ms",
            "10",
            "--events",
            "2",
            "--cut-mid-stream-after",
            "1",
            "--body-size",
            "100",
            "--reset",
        ])
        .unwrap();
        let cfg = cli.mock.to_config().unwrap();
        assert_eq!(cfg.api, MockApi::OpenAi);
        assert_eq!(cfg.name, "p9");
        let b = cfg.behavior;
        assert_eq!(b.status, 429);
        assert_eq!(b.retry_after.as_deref(), Some("5"));
        assert_eq!(
            b.extra_headers,
            vec![("x-a".into(), "1".into()), ("x-b".into(), "2".into())]
        );
        assert_eq!(
            (b.latency_ms, b.events, b.cut_mid_stream_after, b.body_size),
            (10, 2, Some(1), 100)
        );
        assert!(b.reset && !b.stall_before_headers);
        let d = Cli::try_parse_from(["x", "--listen", "127.0.0.1:0"])
            .unwrap()
            .mock
            .to_config()
            .unwrap();
        assert_eq!(d.api, MockApi::Anthropic);
        assert_eq!(d.name, "mock");
        assert_eq!(d.behavior, Behavior::default());
        assert!(Cli::try_parse_from(["x", "--listen", "127.0.0.1:0", "--api", "gemini"]).is_err());
        assert!(Cli::try_parse_from(["x"]).is_err());
        let bad =
            Cli::try_parse_from(["x", "--listen", "127.0.0.1:0", "--header", "nocolon"]).unwrap();
        assert!(bad.mock.to_config().is_err());
        let bad = Cli::try_parse_from(["x", "--listen", "127.0.0.1:0", "--status", "42"]).unwrap();
        assert!(bad.mock.to_config().is_err());
    }
}
