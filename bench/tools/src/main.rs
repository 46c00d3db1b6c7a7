//! sfbench: the small pieces of the steadfast benchmark that no stock tool
//! does well.
//!
//! * `upstream`: an OpenAI-style SSE upstream. Every request gets a
//!   `text/event-stream` response whose first event is sent at once and the
//!   rest `--event-delay-ms` apart. The first event carries the role *and*
//!   the first token, as providers send it (a proxy that holds a stream
//!   until its first content, as steadfast does, commits on it; a role-only
//!   first chunk would make the first-event figure measure that hold:
//!   `--setup-events N` puts N role-only chunks first, to see it). With a
//!   long delay (`--events 2 --event-delay-ms 600000`) it holds streams open
//!   for the RSS figure; `--cut-after N` resets the connection (RST) where
//!   the (N+1)th content event was due, for the resumption figure; `--word`
//!   names the tokens ("tok0 tok1 ..."). A connection the peer closes is
//!   dropped at once, so held streams do not pile up across peers.
//! * `ttfe`: sequential streaming requests over one keep-alive connection;
//!   reports time to the first whole SSE event and to the end of the stream
//!   (microseconds, percentiles) as one JSON line. `--expect TEXT` counts a
//!   stream whose body lacks TEXT as an error.
//! * `gap`: sequential streaming requests through a route whose first
//!   provider cuts the stream mid-text and whose next one continues it;
//!   times, at the client, the gap between the last token before the cut
//!   and the first token of the continuation (whose tokens contain
//!   `--mark`), against the stream's own gaps between tokens.
//! * `hold`: opens N streaming requests, waits until each has received its
//!   first event, prints one JSON line, and keeps them open until stdin
//!   closes (or `--hold-s` passes).
//! * `flood`: opens N keep-alive connections that each make one request
//!   and read the whole answer, prints one JSON line once all have, and
//!   keeps them open until stdin closes; then closes them all at once.
//! * `shapes`: prints the byte sizes of the setup events a stream carries
//!   before its first content (this upstream's, and an Anthropic stream's
//!   `message_start` + `ping`) as one JSON line.
//! * `otlp-sink`: an OTLP/gRPC receiver that accepts every export and
//!   throws it away (for steadfast with `telemetry.otlp_endpoint` set).
//!
//! Plain HTTP/1.1 over loopback, tokio only (HTTP/2 through h2 for the
//! sink); nothing here is steadfast code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().cloned() else {
        usage();
    };
    let opts = Opts::parse(&args[1..]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = match cmd.as_str() {
        "upstream" => rt.block_on(upstream(opts)),
        "ttfe" => rt.block_on(ttfe(opts)),
        "hold" => rt.block_on(hold(opts)),
        "flood" => rt.block_on(flood(opts)),
        "gap" => rt.block_on(gap(opts)),
        "shapes" => shapes(),
        "otlp-sink" => rt.block_on(otlp_sink(opts)),
        _ => usage(),
    };
    if let Err(e) = r {
        eprintln!("sfbench {cmd}: {e}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage:\n  sfbench upstream --listen ADDR [--events N] [--event-delay-ms D] [--word W] [--setup-events N] [--cut-after N]\n  \
         sfbench ttfe --addr HOST:PORT --path P --body-file F [--n N] [--warmup W] [--header 'K: V']... [--expect TEXT]...\n  \
         sfbench gap --addr HOST:PORT --path P --body-file F --mark WORD [--n N] [--warmup W] [--header 'K: V']...\n  \
         sfbench hold --addr HOST:PORT --path P --body-file F --streams N [--parallel P] [--timeout-s T] [--hold-s H]\n  \
         sfbench flood --addr HOST:PORT --path P --body-file F --conns N [--parallel P] [--timeout-s T] [--hold-s H]\n  \
         sfbench shapes\n  \
         sfbench otlp-sink --listen ADDR"
    );
    std::process::exit(2)
}

struct Opts(BTreeMap<String, Vec<String>>);

impl Opts {
    fn parse(a: &[String]) -> Opts {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut i = 0;
        while i < a.len() {
            let k = a[i]
                .strip_prefix("--")
                .unwrap_or_else(|| usage())
                .to_string();
            let v = a.get(i + 1).cloned().unwrap_or_else(|| usage());
            m.entry(k).or_default().push(v);
            i += 2;
        }
        Opts(m)
    }
    fn str(&self, k: &str) -> String {
        match self.0.get(k).and_then(|v| v.last()) {
            Some(v) => v.clone(),
            None => {
                eprintln!("missing --{k}");
                usage()
            }
        }
    }
    fn num(&self, k: &str, default: u64) -> u64 {
        self.0
            .get(k)
            .and_then(|v| v.last())
            .map(|v| v.parse().unwrap_or_else(|_| usage()))
            .unwrap_or(default)
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.0.get(k).cloned().unwrap_or_default()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length / chunked / close-delimited framing of one message.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

struct Head {
    status: u16,
    framing: Framing,
    close: bool,
}

fn parse_head(head: &[u8], is_response: bool) -> Res<Head> {
    let text = std::str::from_utf8(head)?;
    let mut lines = text.split("\r\n");
    let first = lines.next().ok_or("empty head")?;
    let status = if is_response {
        first
            .split_whitespace()
            .nth(1)
            .ok_or("bad status line")?
            .parse()?
    } else {
        0
    };
    let mut framing = if is_response {
        Framing::Close
    } else {
        Framing::Length(0)
    };
    let mut close = false;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            // transfer-encoding wins over content-length
            "content-length" if !matches!(framing, Framing::Chunked) => {
                framing = Framing::Length(v.parse()?)
            }
            "transfer-encoding" if v.contains("chunked") => framing = Framing::Chunked,
            "connection" if v.contains("close") => close = true,
            _ => {}
        }
    }
    if is_response && (status == 204 || status == 304) {
        framing = Framing::Length(0);
    }
    Ok(Head {
        status,
        framing,
        close,
    })
}

/// A buffered HTTP/1.1 connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn fill(&mut self) -> Res<usize> {
        let mut tmp = [0u8; 16384];
        let n = self.s.read(&mut tmp).await?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    async fn read_head(&mut self, is_response: bool) -> Res<Option<Head>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let h = parse_head(&self.buf[..i], is_response)?;
                self.buf.drain(..i + 4);
                if is_response && h.status >= 100 && h.status < 200 && h.status != 101 {
                    continue; // interim response
                }
                return Ok(Some(h));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err("eof in head".into())
                };
            }
        }
    }

    /// Read one CRLF-terminated line (without the CRLF).
    async fn line(&mut self) -> Res<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let l = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(l);
            }
            if self.fill().await? == 0 {
                return Err("eof in chunk framing".into());
            }
        }
    }

    /// Read a body, handing decoded bytes to `on` as soon as they arrive.
    async fn body(&mut self, f: Framing, mut on: impl FnMut(&[u8])) -> Res<()> {
        match f {
            Framing::Length(mut left) => {
                while left > 0 {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        return Err("eof in body".into());
                    }
                    let n = left.min(self.buf.len());
                    on(&self.buf[..n]);
                    self.buf.drain(..n);
                    left -= n;
                }
            }
            Framing::Close => loop {
                if !self.buf.is_empty() {
                    on(&self.buf);
                    self.buf.clear();
                }
                if self.fill().await? == 0 {
                    return Ok(());
                }
            },
            Framing::Chunked => loop {
                let l = self.line().await?;
                let l = String::from_utf8_lossy(&l);
                let size = usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16)?;
                if size == 0 {
                    // trailers, up to the empty line
                    while !self.line().await?.is_empty() {}
                    return Ok(());
                }
                let mut left = size;
                while left > 0 {
                    if self.buf.is_empty() && self.fill().await? == 0 {
                        return Err("eof in chunk".into());
                    }
                    let n = left.min(self.buf.len());
                    on(&self.buf[..n]);
                    self.buf.drain(..n);
                    left -= n;
                }
                if !self.line().await?.is_empty() {
                    return Err("bad chunk terminator".into());
                }
            },
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- upstream

fn chunk(payload: &str) -> String {
    format!("{:x}\r\n{}\r\n", payload.len(), payload)
}

/// The response head of every stream.
const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

fn chat_chunk(delta: &str, fin: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{fin}}}]}}\n\n"
    )
}

/// A role-only chunk: setup, no content (the shape `--setup-events` sends).
fn setup_event() -> String {
    chat_chunk(r#"{"role":"assistant","content":""}"#, "null")
}

/// Content event `i` (the first one opens with the role unless setup
/// events did), or the last, finishing one.
fn event(word: &str, i: u64, last: bool, role: bool) -> String {
    if last {
        return chat_chunk("{}", r#""stop""#);
    }
    let delta = if i == 0 && role {
        format!(r#"{{"role":"assistant","content":"{word}{i} "}}"#)
    } else {
        format!(r#"{{"content":"{word}{i} "}}"#)
    };
    chat_chunk(&delta, "null")
}

/// An Anthropic stream's setup as the Messages API sends it today:
/// `message_start` (usage with the cache fields and service tier) and a
/// `ping`. In Anthropic's documented order the ping follows the first
/// `content_block_start`; a stream whose ping comes first is the worst
/// case for a proxy that holds setup events.
const ANTHROPIC_MESSAGE_START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":2,\"service_tier\":\"standard\"}}}\n\n";
const ANTHROPIC_PING: &str = "event: ping\ndata: {\"type\": \"ping\"}\n\n";

/// Byte sizes of what a stream sends before its first content, for the
/// held-bytes figure (SSE bytes as the proxy reads them, chunk framing
/// removed).
fn shapes() -> Res<()> {
    let first = event("tok", 0, false, true);
    println!(
        "{{\"bench_setup_bytes\":0,\"bench_first_event_bytes\":{},\"role_only_chunk_bytes\":{},\"upstream_head_bytes\":{},\"anthropic_message_start_bytes\":{},\"anthropic_ping_bytes\":{},\"anthropic_setup_bytes\":{}}}",
        first.len(),
        setup_event().len(),
        SSE_HEAD.len(),
        ANTHROPIC_MESSAGE_START.len(),
        ANTHROPIC_PING.len(),
        ANTHROPIC_MESSAGE_START.len() + ANTHROPIC_PING.len()
    );
    Ok(())
}

// ---------------------------------------------------------------- otlp-sink

/// Accept every gRPC call (OTLP's TraceService/Export among them), read
/// its request, answer with an empty message and status OK. Decoding
/// nothing keeps the sink's CPU out of steadfast's figures.
async fn otlp_sink(o: Opts) -> Res<()> {
    let listener = TcpListener::bind(o.str("listen")).await?;
    println!("sfbench otlp-sink listening on {}", listener.local_addr()?);
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut conn) = h2::server::handshake(sock).await else {
                return;
            };
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(grpc_ok(req, respond));
            }
        });
    }
}

async fn grpc_ok(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
) {
    let mut body = req.into_body();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(c) => {
                let _ = body.flow_control().release_capacity(c.len());
            }
            Err(_) => return,
        }
    }
    let head = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .expect("static response head");
    let Ok(mut send) = respond.send_response(head, false) else {
        return;
    };
    // One uncompressed gRPC message of length 0: an empty response.
    let _ = send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), false);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
}

/// What every stream of one `upstream` looks like.
struct Shape {
    events: u64,
    delay: Duration,
    word: String,
    setup_events: u64,
    /// Reset the connection where content event `n` was due.
    cut_after: Option<u64>,
}

async fn upstream(o: Opts) -> Res<()> {
    let shape = Arc::new(Shape {
        events: o.num("events", 3).max(2),
        delay: Duration::from_millis(o.num("event-delay-ms", 10)),
        word: o
            .0
            .get("word")
            .and_then(|v| v.last())
            .cloned()
            .unwrap_or_else(|| "tok".into()),
        setup_events: o.num("setup-events", 0),
        cut_after: o.0.get("cut-after").map(|_| o.num("cut-after", 0)),
    });
    let addrs = o.all("listen");
    if addrs.is_empty() {
        usage();
    }
    let mut listeners = Vec::new();
    for a in &addrs {
        listeners.push(TcpListener::bind(a).await?);
    }
    println!("sfbench upstream listening on {}", addrs.join(" "));
    let mut tasks = Vec::new();
    for l in listeners {
        let shape = shape.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    // EMFILE and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                s.set_nodelay(true).ok();
                let shape = shape.clone();
                tokio::spawn(async move {
                    let _ = serve(Conn { s, buf: Vec::new() }, &shape).await;
                });
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

async fn serve(mut c: Conn, shape: &Shape) -> Res<()> {
    let events = shape.events;
    loop {
        let Some(h) = c.read_head(false).await? else {
            return Ok(());
        };
        c.body(h.framing, |_| {}).await?;
        let mut first = String::from(SSE_HEAD);
        for _ in 0..shape.setup_events {
            first.push_str(&chunk(&setup_event()));
        }
        first.push_str(&chunk(&event(
            &shape.word,
            0,
            false,
            shape.setup_events == 0,
        )));
        c.s.write_all(first.as_bytes()).await?;
        for i in 1..events {
            // Wait, but notice a peer that goes away meanwhile.
            let mut tmp = [0u8; 1024];
            tokio::select! {
                _ = tokio::time::sleep(shape.delay) => {}
                r = c.s.read(&mut tmp) => match r {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(n) => c.buf.extend_from_slice(&tmp[..n]),
                },
            }
            if shape.cut_after == Some(i) {
                // A provider dying mid-answer: RST, not a clean end. With
                // a zero linger the close does not block.
                #[allow(deprecated)]
                c.s.set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            let mut out = chunk(&event(&shape.word, i, i + 1 == events, false));
            if i + 1 == events {
                out.push_str(&chunk("data: [DONE]\n\n"));
                out.push_str("0\r\n\r\n");
            }
            c.s.write_all(out.as_bytes()).await?;
        }
        if h.close {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------- clients

struct Target {
    addr: String,
    request: Vec<u8>,
}

impl Target {
    fn from(o: &Opts) -> Res<Target> {
        let addr = o.str("addr");
        let path = o.str("path");
        let body = std::fs::read(o.str("body-file"))?;
        let accept =
            o.0.get("accept")
                .and_then(|v| v.last())
                .cloned()
                .unwrap_or_else(|| "text/event-stream".into());
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: {accept}\r\nContent-Length: {}\r\n",
            body.len()
        );
        for h in o.all("header") {
            req.push_str(&h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let mut request = req.into_bytes();
        request.extend_from_slice(&body);
        Ok(Target { addr, request })
    }

    async fn connect(&self) -> Res<Conn> {
        let s = TcpStream::connect(&self.addr).await?;
        s.set_nodelay(true)?;
        Ok(Conn { s, buf: Vec::new() })
    }
}

/// One streaming request on `c`, timed from `t0` (which includes the connect
/// when the previous response could not leave the connection reusable):
/// (status, time to first event, time to end, reusable). With `expect`,
/// the whole body is kept and must contain each of them.
async fn one_stream(
    c: &mut Conn,
    t: &Target,
    t0: Instant,
    expect: &[String],
) -> Res<(u16, Duration, Duration, bool)> {
    c.s.write_all(&t.request).await?;
    let h = c
        .read_head(true)
        .await?
        .ok_or("connection closed before response")?;
    let mut seen: Vec<u8> = Vec::new();
    let mut first: Option<Duration> = None;
    c.body(h.framing, |d| {
        if first.is_none() || !expect.is_empty() {
            seen.extend_from_slice(d);
        }
        if first.is_none() && (find(&seen, b"\n\n").is_some() || find(&seen, b"\r\n\r\n").is_some())
        {
            first = Some(t0.elapsed());
        }
    })
    .await?;
    let end = t0.elapsed();
    let reusable = !h.close && !matches!(h.framing, Framing::Close);
    if h.status == 200 {
        for e in expect {
            if find(&seen, e.as_bytes()).is_none() {
                return Err(format!(
                    "the stream lacks {e:?}: {:?}",
                    String::from_utf8_lossy(&seen[..seen.len().min(300)])
                )
                .into());
            }
        }
    }
    Ok((h.status, first.unwrap_or(end), end, reusable))
}

fn summary(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "null".into();
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[(((v.len() as f64) * q).ceil() as usize).clamp(1, v.len()) - 1];
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!(
        "{{\"min\":{:.1},\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"max\":{:.1},\"mean\":{:.1}}}",
        v[0],
        p(0.50),
        p(0.90),
        p(0.99),
        v[v.len() - 1],
        mean
    )
}

async fn ttfe(o: Opts) -> Res<()> {
    let t = Target::from(&o)?;
    let n = o.num("n", 200);
    let warmup = o.num("warmup", 20);
    let expect = o.all("expect");
    let deadline = Instant::now() + Duration::from_secs(o.num("timeout-s", 120));
    let mut conn: Option<Conn> = None;
    let (mut firsts, mut ends) = (Vec::new(), Vec::new());
    let mut errors = 0u64;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut last_error = String::new();
    let mut connects = 0u64;
    for i in 0..(n + warmup) {
        if Instant::now() > deadline {
            last_error = "timeout-s reached".into();
            break;
        }
        let t0 = Instant::now();
        let mut c = match conn.take() {
            Some(c) => c,
            None => {
                if i >= warmup {
                    connects += 1;
                }
                t.connect().await?
            }
        };
        match tokio::time::timeout(Duration::from_secs(30), one_stream(&mut c, &t, t0, &expect))
            .await
        {
            Ok(Ok((status, first, end, reusable))) => {
                if reusable {
                    conn = Some(c);
                }
                if i < warmup {
                    continue;
                }
                *statuses.entry(status).or_default() += 1;
                if status == 200 {
                    firsts.push(first.as_secs_f64() * 1e6);
                    ends.push(end.as_secs_f64() * 1e6);
                } else {
                    errors += 1;
                }
            }
            Ok(Err(e)) => {
                errors += 1;
                last_error = e.to_string();
            }
            Err(_) => {
                errors += 1;
                last_error = "request timed out after 30 s".into();
            }
        }
    }
    let st: Vec<String> = statuses
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    println!(
        "{{\"ok\":{},\"errors\":{errors},\"connects\":{connects},\"statuses\":{{{}}},\"last_error\":{:?},\"first_event_us\":{},\"end_us\":{}}}",
        firsts.len(),
        st.join(","),
        last_error,
        summary(&mut firsts),
        summary(&mut ends)
    );
    Ok(())
}

async fn hold(o: Opts) -> Res<()> {
    // Until the first whole event arrives.
    park_many(o, "streams", |t| async move {
        let mut c = t.connect().await?;
        c.s.write_all(&t.request).await?;
        let h = c.read_head(true).await?.ok_or("closed before response")?;
        if h.status != 200 {
            return Err(format!("status {}", h.status).into());
        }
        while find(&c.buf, b"\n\n").is_none() {
            if c.fill().await? == 0 {
                return Err("closed before first event".into());
            }
        }
        Res::Ok(c)
    })
    .await
}

async fn flood(o: Opts) -> Res<()> {
    // One whole request and answer; the connection then idles (keep-alive).
    park_many(o, "conns", |t| async move {
        let mut c = t.connect().await?;
        c.s.write_all(&t.request).await?;
        let h = c.read_head(true).await?.ok_or("closed before response")?;
        c.body(h.framing, |_| {}).await?;
        if h.status != 200 {
            return Err(format!("status {}", h.status).into());
        }
        Res::Ok(c)
    })
    .await
}

/// Open `--<count>` connections, `--parallel` establishing at a time, each
/// made ready by `open`; print one JSON line once all are ready (or failed),
/// keep them until stdin closes or `--hold-s` passes, then close them all
/// at once.
async fn park_many<F, Fut>(o: Opts, count: &str, open: F) -> Res<()>
where
    F: Fn(Arc<Target>) -> Fut,
    Fut: std::future::Future<Output = Res<Conn>> + Send + 'static,
{
    let t = Arc::new(Target::from(&o)?);
    let streams = o.num(count, 1000) as usize;
    let parallel = o.num("parallel", 256) as usize;
    let timeout = Duration::from_secs(o.num("timeout-s", 120));
    let hold_for = Duration::from_secs(o.num("hold-s", 600));
    let held = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let last_err = Arc::new(std::sync::Mutex::new(String::new()));
    for _ in 0..streams {
        let (held, failed, gate, mut rx, last_err) = (
            held.clone(),
            failed.clone(),
            gate.clone(),
            release_rx.clone(),
            last_err.clone(),
        );
        let r = open(t.clone());
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            match tokio::time::timeout(timeout, r).await {
                Ok(Ok(c)) => {
                    held.fetch_add(1, Ordering::SeqCst);
                    drop(permit);
                    let _ = rx.wait_for(|v| *v).await;
                    drop(c);
                }
                Ok(Err(e)) => {
                    failed.fetch_add(1, Ordering::SeqCst);
                    *last_err.lock().unwrap() = e.to_string();
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::SeqCst);
                    *last_err.lock().unwrap() = "timed out before ready".into();
                }
            }
        });
    }
    while held.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst) < streams
        && started.elapsed() < timeout + Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{{\"requested\":{streams},\"held\":{},\"failed\":{},\"establish_s\":{:.2},\"last_error\":{:?}}}",
        held.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64(),
        last_err.lock().unwrap().as_str()
    );
    // Hold until stdin closes or hold-s passes, then close every connection.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::time::sleep(hold_for) => {}
    }
    let _ = release_tx.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// One event of a stream as the client got it: when, and what.
struct Seen {
    at: Instant,
    text: String,
}

/// One streaming request: every whole event with its arrival time, and
/// whether the connection can carry another request.
async fn timed_events(c: &mut Conn, t: &Target) -> Res<(u16, Vec<Seen>, bool)> {
    c.s.write_all(&t.request).await?;
    let h = c
        .read_head(true)
        .await?
        .ok_or("connection closed before response")?;
    let mut pending: Vec<u8> = Vec::new();
    let mut seen = Vec::new();
    c.body(h.framing, |d| {
        let at = Instant::now();
        pending.extend_from_slice(d);
        while let Some(i) = find(&pending, b"\n\n") {
            seen.push(Seen {
                at,
                text: String::from_utf8_lossy(&pending[..i]).into_owned(),
            });
            pending.drain(..i + 2);
        }
    })
    .await?;
    let reusable = !h.close && !matches!(h.framing, Framing::Close);
    Ok((h.status, seen, reusable))
}

/// Whether a chat chunk carries text (`"content":"` with something in it).
fn has_text(ev: &str) -> bool {
    ev.contains("\"content\":\"") && !ev.contains("\"content\":\"\"")
}

async fn gap(o: Opts) -> Res<()> {
    let t = Target::from(&o)?;
    let n = o.num("n", 100);
    let warmup = o.num("warmup", 5);
    let mark = o.str("mark");
    let deadline = Instant::now() + Duration::from_secs(o.num("timeout-s", 120));
    let mut conn: Option<Conn> = None;
    let (mut gaps, mut normals, mut extras) = (Vec::new(), Vec::new(), Vec::new());
    let (mut errors, mut not_resumed) = (0u64, 0u64);
    let mut last_error = String::new();
    for i in 0..(n + warmup) {
        if Instant::now() > deadline {
            last_error = "timeout-s reached".into();
            break;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => t.connect().await?,
        };
        let r = tokio::time::timeout(Duration::from_secs(30), timed_events(&mut c, &t)).await;
        let (status, seen, reusable) = match r {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                errors += 1;
                last_error = e.to_string();
                continue;
            }
            Err(_) => {
                errors += 1;
                last_error = "request timed out after 30 s".into();
                continue;
            }
        };
        if reusable {
            conn = Some(c);
        }
        if i < warmup {
            continue;
        }
        if status != 200 {
            errors += 1;
            last_error = format!("status {status}");
            continue;
        }
        let text: Vec<&Seen> = seen.iter().filter(|e| has_text(&e.text)).collect();
        let done = seen.last().is_some_and(|e| e.text.trim() == "data: [DONE]");
        let Some(k) = text.iter().position(|e| e.text.contains(mark.as_str())) else {
            not_resumed += 1;
            last_error = format!(
                "no continuation token: {:?}",
                seen.last().map(|e| e.text.as_str()).unwrap_or("")
            );
            continue;
        };
        if k == 0 || !done {
            errors += 1;
            last_error = if done {
                "the continuation came first".into()
            } else {
                "the stream did not end with [DONE]".into()
            };
            continue;
        }
        let us = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64() * 1e6;
        let g = us(text[k - 1].at, text[k].at);
        let mut before: Vec<f64> = (1..k).map(|j| us(text[j - 1].at, text[j].at)).collect();
        before.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let normal = before.get(before.len() / 2).copied().unwrap_or(0.0);
        gaps.push(g);
        normals.push(normal);
        extras.push(g - normal);
    }
    println!(
        "{{\"ok\":{},\"errors\":{errors},\"not_resumed\":{not_resumed},\"last_error\":{:?},\"gap_us\":{},\"normal_gap_us\":{},\"extra_us\":{}}}",
        gaps.len(),
        last_error,
        summary(&mut gaps),
        summary(&mut normals),
        summary(&mut extras)
    );
    Ok(())
}
