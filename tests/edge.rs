//! The client connection edge against the real binary, with raw bytes:
//! broken request framing gets a 400 in the route's dialect and a closed
//! connection, request heads are bounded in size (431) and time (408), and
//! none of it breaks keep-alive, pipelining or h2c.

mod common;

use common::http::{anthropic_body, Conn, Request, Response};
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: usize = 65536;

/// Two routes: `r` (anthropic, `/v1/messages`) and `o` (openai,
/// `/v1/chat/completions`), each to its own mock.
fn two_routes(a: SocketAddr, o: SocketAddr, limits: &str) -> String {
    format!(
        "{limits}providers:\n{}{}routes:\n  - {{ name: r, paths: [\"/v1/messages\"], providers: [pa] }}\n  - {{ name: o, paths: [\"/v1/chat/completions\"], providers: [po] }}\n",
        provider("pa", "anthropic", a, ""),
        provider("po", "openai", o, ""),
    )
}

struct Setup {
    px: Proxy,
    a: MockServer,
    o: MockServer,
}

async fn setup(name: &str, limits: &str) -> Setup {
    let a = anthropic("pa").await;
    let o = mock(MockApi::OpenAi, "po", Behavior::default()).await;
    let px = Proxy::builder(name, &two_routes(a.addr(), o.addr(), limits))
        .start()
        .await;
    // /ready can answer a moment before the proxy listener is bound.
    poll("the proxy listener", || async {
        tokio::net::TcpStream::connect(px.proxy)
            .await
            .ok()
            .map(drop)
    })
    .await;
    Setup { px, a, o }
}

async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `steadfast_requests_total{route, outcome}` from `/metrics`.
async fn requests(px: &Proxy, route: &str, outcome: &str) -> f64 {
    let r = common::http::send(px.admin, Request::get("/metrics")).await;
    assert_eq!(r.status, 200);
    let lines = r
        .text()
        .lines()
        .map(|l| Ok(l.to_string()))
        .collect::<Vec<_>>();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).expect("metrics parse");
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "steadfast_requests_total"
                && s.labels.get("route") == Some(route)
                && s.labels.get("outcome") == Some(outcome)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// Wait until `/metrics` counts `n` requests of this route and outcome.
async fn wait_count(px: &Proxy, route: &str, outcome: &str, n: f64) {
    poll(&format!("{n} {outcome} requests on {route}"), || async {
        (requests(px, route, outcome).await == n).then_some(())
    })
    .await;
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> Conn {
    let mut c = Conn::connect(addr).await;
    c.stream.write_all(bytes).await.expect("write");
    c
}

async fn response(c: &mut Conn) -> Response {
    tokio::time::timeout(Duration::from_secs(10), c.read_response(false))
        .await
        .expect("a response within 10 s")
}

/// The server closed the connection (EOF or reset) within a few seconds.
async fn closed(c: &mut Conn) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), c.stream.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn assert_anthropic_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(r.complete, "answer cut short: {}", r.text());
    let v = r.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(r.header("x-steadfast-error-class"), Some("request"));
    assert!(r.header("x-request-id").is_some());
}

fn assert_openai_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    assert_eq!(v["error"]["code"], "request", "{v}");
}

fn chunked_head(path: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
}

/// A request whose head (request line to the empty line) is exactly `size`
/// bytes. The padding header is named in `Connection`, so it is not
/// forwarded and the upstream sees an ordinary head.
fn head_of_size(path: &str, size: usize, body: &[u8]) -> Vec<u8> {
    let fixed = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: x-pad\r\nx-pad: \r\n\r\n",
        body.len()
    );
    assert!(size > fixed.len());
    let pad = "a".repeat(size - fixed.len());
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: x-pad\r\nx-pad: {pad}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    assert_eq!(out.len(), size);
    out.extend_from_slice(body);
    out
}

fn msg_body() -> Vec<u8> {
    anthropic_body("m", false)
}

// ------------------------------------------------------------ framing

/// Each kind of broken chunked framing gets a 400 in the route's dialect,
/// then the connection is closed, and the request counts as a request
/// error of its route, never as a client that left.
#[tokio::test]
async fn chunked_framing_errors_get_a_400_in_the_dialect_and_close() {
    let s = setup("edge-framing", "").await;
    let cases: [(&str, &str); 8] = [
        ("invalid size", "zz\r\nhello\r\n0\r\n\r\n"),
        ("negative size", "-5\r\nhello\r\n0\r\n\r\n"),
        (
            "size over 16 hex digits",
            "10000000000000000\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "size overflowing the buffer index",
            "FFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
        ),
        ("chunk longer than declared", "3\r\nhello\r\n0\r\n\r\n"),
        ("no CRLF after the chunk data", "5\r\nhelloXY0\r\n\r\n"),
        ("bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
        ("CR without LF after the size", "5\rhello\r\n0\r\n\r\n"),
    ];
    for (what, body) in cases {
        let mut c = raw(
            s.px.proxy,
            format!("{}{body}", chunked_head("/v1/messages")).as_bytes(),
        )
        .await;
        let r = response(&mut c).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_anthropic_error(&r, 400);
        assert!(closed(&mut c).await, "{what}: connection left open");
    }
    // The same on an OpenAI route, in its dialect.
    let mut c = raw(
        s.px.proxy,
        format!(
            "{}-1\r\nx\r\n0\r\n\r\n",
            chunked_head("/v1/chat/completions")
        )
        .as_bytes(),
    )
    .await;
    assert_openai_error(&response(&mut c).await, 400);
    assert!(closed(&mut c).await);

    wait_count(&s.px, "r", "request_error", cases.len() as f64).await;
    wait_count(&s.px, "o", "request_error", 1.0).await;
    assert_eq!(requests(&s.px, "r", "client_closed").await, 0.0);
    assert_eq!(requests(&s.px, "o", "client_closed").await, 0.0);
    assert_eq!(
        s.a.requests() + s.o.requests(),
        0,
        "nothing reaches a provider"
    );
}

/// A client that really leaves mid-body is still a client that left.
#[tokio::test]
async fn a_client_leaving_mid_body_is_client_closed() {
    let s = setup("edge-left", "").await;
    // Half of a valid chunked body, then the connection closes.
    let c = raw(
        s.px.proxy,
        format!("{}5\r\nhel", chunked_head("/v1/messages")).as_bytes(),
    )
    .await;
    drop(c);
    // A Content-Length body cut short.
    let c = raw(
        s.px.proxy,
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"model\"",
    )
    .await;
    drop(c);
    wait_count(&s.px, "r", "client_closed", 2.0).await;
    assert_eq!(requests(&s.px, "r", "request_error").await, 0.0);
    assert_eq!(s.a.requests(), 0);
}

/// RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400; HTTP/1.0 may
/// omit it.
#[tokio::test]
async fn http11_without_host_is_a_400() {
    let s = setup("edge-host", "").await;
    let body = msg_body();
    let mut req = format!(
        "POST /v1/messages HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let mut c = raw(s.px.proxy, &req).await;
    assert_anthropic_error(&response(&mut c).await, 400);
    assert!(closed(&mut c).await);
    assert_eq!(s.a.requests(), 0);
    wait_count(&s.px, "r", "request_error", 1.0).await;

    let mut req = format!(
        "POST /v1/messages HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let mut c = raw(s.px.proxy, &req).await;
    let r = response(&mut c).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Heads Pingora refuses before any hook runs (here: two Host fields) are
/// answered in the dialect the path suggests and counted.
#[tokio::test]
async fn a_head_pingora_cannot_take_gets_a_400_in_the_dialect() {
    let s = setup("edge-malformed", "").await;
    let mut c = raw(
        s.px.proxy,
        b"POST /v1/messages HTTP/1.1\r\nhost: a\r\nhost: b\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert_anthropic_error(&response(&mut c).await, 400);
    assert!(closed(&mut c).await);
    let mut c = raw(
        s.px.proxy,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\nhost: b\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert_openai_error(&response(&mut c).await, 400);
    assert!(closed(&mut c).await);
    // Never parsed, so never routed.
    wait_count(&s.px, "none", "request_error", 2.0).await;
    assert_eq!(s.a.requests() + s.o.requests(), 0);
}

// ------------------------------------------------------------ head size

/// The default `limits.max_header_bytes` (64 KiB): a head of exactly the
/// limit is served; one byte more is a 431 in the dialect, then close;
/// a head that never ends is cut off at the limit the same way.
#[tokio::test]
async fn header_block_over_the_limit_is_a_431() {
    let s = setup("edge-431", "").await;
    let mut c = raw(
        s.px.proxy,
        &head_of_size("/v1/messages", LIMIT, &msg_body()),
    )
    .await;
    let r = response(&mut c).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let mut c = raw(
        s.px.proxy,
        &head_of_size("/v1/messages", LIMIT + 1, &msg_body()),
    )
    .await;
    let r = response(&mut c).await;
    assert_anthropic_error(&r, 431);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("65536"));
    assert!(closed(&mut c).await);

    // 256 KiB of header that never ends: refused once past the limit,
    // without reading it all.
    let mut c = Conn::connect(s.px.proxy).await;
    let mut head = b"POST /v1/chat/completions?key=sk-secret HTTP/1.1\r\nhost: x\r\n".to_vec();
    let line = format!("x-pad: {}\r\n", "b".repeat(1000));
    while head.len() < 256 * 1024 {
        head.extend_from_slice(line.as_bytes());
    }
    // The proxy may stop reading (and close) before all of it is written.
    let _ = c.stream.write_all(&head).await;
    assert_openai_error(&response(&mut c).await, 431);
    assert!(closed(&mut c).await);

    wait_count(&s.px, "r", "request_error", 1.0).await;
    wait_count(&s.px, "o", "request_error", 1.0).await;
    assert_eq!(s.a.requests(), 1);
    assert_eq!(s.o.requests(), 0);
    let logs = s.px.logs();
    assert!(!logs.contains("sk-secret"), "query string logged");
    // Refused heads are the client's problem, not errors of the proxy.
    assert!(
        !logs.contains("\"level\":\"error\""),
        "error-level log line: {logs}"
    );
}

/// The limit holds for every request on a keep-alive connection, not just
/// the first.
#[tokio::test]
async fn the_head_limit_applies_to_later_requests_on_a_connection() {
    let s = setup("edge-keepalive", "").await;
    let mut c = Conn::connect(s.px.proxy).await;
    let ok = Request::post("/v1/messages", msg_body());
    assert_eq!(c.round_trip(&ok).await.status, 200);
    c.stream
        .write_all(&head_of_size("/v1/messages", LIMIT, &msg_body()))
        .await
        .unwrap();
    assert_eq!(response(&mut c).await.status, 200);
    c.stream
        .write_all(&head_of_size("/v1/messages", LIMIT + 1, &msg_body()))
        .await
        .unwrap();
    assert_anthropic_error(&response(&mut c).await, 431);
    assert!(closed(&mut c).await);

    // And a never-ending head as the second request.
    let mut c = Conn::connect(s.px.proxy).await;
    assert_eq!(c.round_trip(&ok).await.status, 200);
    let mut head = b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n".to_vec();
    head.extend(std::iter::repeat_n(b'c', 100 * 1024));
    let _ = c.stream.write_all(&head).await;
    assert_anthropic_error(&response(&mut c).await, 431);
    assert!(closed(&mut c).await);

    wait_count(&s.px, "r", "request_error", 2.0).await;
    assert_eq!(s.a.requests(), 3);
}

/// Pipelined requests are answered in order, and a pipelined head over the
/// limit is refused like any other (its bytes arrive with the request
/// before it).
#[tokio::test]
async fn pipelined_requests_work_and_each_head_is_checked() {
    let s = setup("edge-pipelined", "").await;
    let mut c = Conn::connect(s.px.proxy).await;
    let mut all = Vec::new();
    for id in ["one", "two"] {
        let r = Request::post("/v1/messages", msg_body()).header("x-request-id", id);
        let mut b = format!(
            "{} {} HTTP/1.1\r\nhost: x\r\nx-request-id: {id}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            r.method,
            r.path,
            r.body.len()
        )
        .into_bytes();
        b.extend_from_slice(&r.body);
        all.extend(b);
    }
    all.extend(head_of_size("/v1/messages", LIMIT, &msg_body()));
    all.extend(head_of_size("/v1/messages", LIMIT + 1, &msg_body()));
    c.stream.write_all(&all).await.unwrap();
    for id in ["one", "two"] {
        let r = response(&mut c).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.header("x-request-id"), Some(id));
    }
    assert_eq!(response(&mut c).await.status, 200);
    assert_anthropic_error(&response(&mut c).await, 431);
    assert!(closed(&mut c).await);
    assert_eq!(s.a.requests(), 3);
}

/// A reload changes the limit for the next request.
#[tokio::test]
async fn the_head_limit_follows_a_reload() {
    let s = setup("edge-reload", "").await;
    let head = head_of_size("/v1/messages", 4000, &msg_body());
    let mut c = raw(s.px.proxy, &head).await;
    assert_eq!(response(&mut c).await.status, 200);
    s.px.write_config(&two_routes(
        s.a.addr(),
        s.o.addr(),
        "limits:\n  max_header_bytes: 2048\n",
    ));
    s.px.signal("HUP");
    s.px.wait_event("config_reloaded", |v| v["generation"].as_u64() >= Some(2))
        .await;
    let mut c = raw(s.px.proxy, &head).await;
    let r = response(&mut c).await;
    assert_anthropic_error(&r, 431);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2048"));
}

// ------------------------------------------------------------ head time

/// A head trickled in slower than `limits.header_timeout_ms` gets a 408
/// in the dialect and a closed connection; the clock starts at the head's
/// first byte, so a keep-alive connection may idle longer than that
/// between requests.
#[tokio::test]
async fn a_slow_head_gets_a_408() {
    let s = setup("edge-408", "limits:\n  header_timeout_ms: 400\n").await;
    let mut c = Conn::connect(s.px.proxy).await;
    c.stream
        .write_all(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut rd, mut wr) = c.stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if wr.write_all(b"x-slow: 1\r\n").await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut got)).await;
    let took = started.elapsed();
    trickle.abort();
    assert!(read.is_ok(), "connection not closed within 5 s");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("invalid_request_error"), "{text}");
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
    wait_count(&s.px, "r", "request_error", 1.0).await;

    // Idle longer than the header timeout between two requests: fine.
    let mut c = Conn::connect(s.px.proxy).await;
    let ok = Request::post("/v1/messages", msg_body());
    assert_eq!(c.round_trip(&ok).await.status, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(c.round_trip(&ok).await.status, 200);
}

/// A connection that never sends a byte is closed after the header
/// timeout (Pingora would wait for the h2c preface forever).
#[tokio::test]
async fn a_silent_connection_is_closed() {
    let s = setup("edge-silent", "limits:\n  header_timeout_ms: 300\n").await;
    let mut c = Conn::connect(s.px.proxy).await;
    let started = Instant::now();
    assert!(closed(&mut c).await);
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// An HTTP/1 request shorter than the 24-byte h2c preface is answered at
/// once instead of waiting for bytes that never come.
#[tokio::test]
async fn a_request_shorter_than_the_h2c_preface_is_served() {
    let s = setup("edge-short", "").await;
    let mut c = raw(s.px.proxy, b"GET /x HTTP/1.0\r\n\r\n").await;
    let r = tokio::time::timeout(Duration::from_secs(3), c.read_response(false))
        .await
        .expect("answered at once");
    assert_eq!(r.status, 404);
}

// ------------------------------------------------------------ h2c

/// h2c still works, and its header-list limit is `limits.max_header_bytes`.
#[tokio::test]
async fn h2c_works_and_honours_the_header_limit() {
    let s = setup("edge-h2c", "limits:\n  max_header_bytes: 8192\n").await;
    let tcp = tokio::net::TcpStream::connect(s.px.proxy).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);
    let send = |pad: usize| {
        let client = client.clone();
        async move {
            let req = ::http::Request::builder()
                .method("POST")
                .uri(format!("http://{}/v1/messages", "x"))
                .header("content-type", "application/json")
                .header("x-pad", "p".repeat(pad))
                .body(())
                .unwrap();
            let mut client = client.ready().await.unwrap();
            let (resp, mut body) = client.send_request(req, false).unwrap();
            body.send_data(msg_body().into(), true).unwrap();
            let resp = resp.await.expect("h2 response");
            let status = resp.status().as_u16();
            let mut b = resp.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = b.data().await {
                let chunk = chunk.unwrap();
                let _ = b.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            (status, bytes)
        }
    };
    let (status, body) = send(1000).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _) = send(9000).await;
    assert_eq!(status, 431);
    assert_eq!(s.a.requests(), 1);
}
