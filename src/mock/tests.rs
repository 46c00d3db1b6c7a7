//! End-to-end tests of the mock over real sockets: bodies, faults, framing
//! and control endpoints, seen the way the proxy sees them.

use super::server::MODEL_FALLBACK;
use super::wire::find;
use super::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
            usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end]).unwrap(), 16).unwrap();
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
    // The event sequence of a real Responses stream (Codex prints nothing
    // without the item and part events).
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(["response.output_text.delta"; 3]);
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
    let datas: Vec<Value> = r
        .events()
        .into_iter()
        .map(|(_, d)| serde_json::from_str(&d).unwrap())
        .collect();
    for (i, (d, name)) in datas.iter().zip(&names).enumerate() {
        assert_eq!(&d["type"], name.as_str());
        assert_eq!(d["sequence_number"], i, "{d}");
    }
    assert_eq!(datas[2]["item"]["type"], "message");
    assert_eq!(datas[9]["item"]["content"][0]["text"], "Hello from m1");
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
