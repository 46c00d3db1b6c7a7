//! WebSocket passthrough against the real binary: a real WebSocket client
//! (tokio-tungstenite) through steadfast to real WebSocket servers on
//! loopback. Handshake headers, failover before the 101, bytes the server
//! sends with its 101, both ways of closing, the idle timeout, drain.

mod common;

use common::http::{openai_body, Request};
use common::*;
use futures::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const PROVIDER_KEY: &str = "sk-ws-provider-key-9d2e61c0a7";
const CLIENT_TOKEN: &str = "sf-ws-client-token-4b8f2a93e1";
const CLIENT_OWN_KEY: &str = "sk-ws-browser-key-0c5d7e4f2b";

// ---------------------------------------------------------------- upstream

/// What a test WebSocket server does with each connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Echo text and binary messages until the client closes.
    Echo,
    /// Write the 101 and a first text frame ("hello") in one write, then echo.
    FrameFirst,
    /// Echo; on the message "bye", close from the server side.
    CloseOnBye,
    /// Answer every request with this status (no upgrade).
    Status(u16),
    /// Answer every request, upgrade or not, with a 101, then say nothing.
    Switch101,
}

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn get(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A WebSocket server on loopback that records what it saw.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// How each connection ended, as the server saw it.
    ends: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ends = Arc::new(Mutex::new(Vec::new()));
        let (s, e) = (seen.clone(), ends.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, e) = (s.clone(), e.clone());
                tokio::spawn(async move {
                    let end = serve(stream, mode, &s).await;
                    e.lock().unwrap().push(end);
                });
            }
        });
        Upstream {
            addr,
            seen,
            ends,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn ends(&self) -> Vec<String> {
        self.ends.lock().unwrap().clone()
    }
}

/// Read a request head by hand (for the modes that answer it by hand).
async fn read_head(stream: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8(buf).ok()?;
    let mut lines = text.trim_end().split("\r\n");
    let target = lines.next()?.split(' ').nth(1)?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Seen { target, headers })
}

async fn serve(mut stream: TcpStream, mode: Mode, seen: &Mutex<Vec<Seen>>) -> String {
    let ws = match mode {
        Mode::Echo | Mode::CloseOnBye => {
            // The callback's error type is tungstenite's, not ours.
            #[allow(clippy::result_large_err)]
            let record = |req: &WsRequest, mut resp: WsResponse| {
                let headers = req
                    .headers()
                    .iter()
                    .map(|(n, v)| {
                        (
                            n.as_str().to_string(),
                            String::from_utf8_lossy(v.as_bytes()).to_string(),
                        )
                    })
                    .collect();
                let target = req.uri().to_string();
                let offered = req
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if offered.split(',').any(|p| p.trim() == "realtime") {
                    resp.headers_mut()
                        .insert("sec-websocket-protocol", "realtime".parse().unwrap());
                }
                seen.lock().unwrap().push(Seen { target, headers });
                Ok(resp)
            };
            match tokio_tungstenite::accept_hdr_async(stream, record).await {
                Ok(ws) => ws,
                Err(e) => return format!("handshake failed: {e}"),
            }
        }
        Mode::FrameFirst => {
            let Some(req) = read_head(&mut stream).await else {
                return "no request".into();
            };
            let key = req.get("sec-websocket-key").first().copied().unwrap_or("");
            let accept = derive_accept_key(key.as_bytes());
            seen.lock().unwrap().push(req);
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            // An unmasked text frame "hello", in the same write as the 101.
            out.extend_from_slice(&[0x81, 5]);
            out.extend_from_slice(b"hello");
            stream.write_all(&out).await.unwrap();
            WebSocketStream::from_raw_socket(stream, Role::Server, None).await
        }
        Mode::Status(code) => {
            while let Some(req) = read_head(&mut stream).await {
                seen.lock().unwrap().push(req);
                let body = format!("{{\"error\":{{\"message\":\"status {code}\"}}}}");
                let resp = format!(
                    "HTTP/1.1 {code} Nope\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(resp.as_bytes()).await.is_err() {
                    break;
                }
            }
            return "status answered".into();
        }
        Mode::Switch101 => {
            let Some(req) = read_head(&mut stream).await else {
                return "no request".into();
            };
            seen.lock().unwrap().push(req);
            let resp = "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
            let _ = stream.write_all(resp.as_bytes()).await;
            // Hold the connection and say nothing more.
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
            return "switched".into();
        }
    };
    echo(ws, mode).await
}

async fn echo(mut ws: WebSocketStream<TcpStream>, mode: Mode) -> String {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) if mode == Mode::CloseOnBye && t.as_str() == "bye" => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "server says bye".into(),
                };
                if ws.close(Some(frame)).await.is_err() {
                    return "close failed".into();
                }
            }
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    return "send failed".into();
                }
            }
            Ok(_) => {}
            Err(e) => return format!("error: {e}"),
        }
    }
    "closed".into()
}

// ---------------------------------------------------------------- helpers

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type WsResp = tokio_tungstenite::tungstenite::handshake::client::Response;

/// Open a WebSocket through the proxy with extra request headers.
async fn connect(px: &Proxy, headers: &[(&str, &str)]) -> Result<(Ws, WsResp), WsError> {
    let url = format!("ws://{}/v1/realtime?model=gpt-realtime", px.proxy);
    let mut req = url.into_client_request().unwrap();
    for (n, v) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = n.parse().unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .expect("the handshake hung")
}

fn header<'a>(resp: &'a WsResp, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The next data message, failing the test on anything else or a hang.
async fn next_data(ws: &mut Ws) -> Message {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
            .expect("the connection ended")
            .expect("a WebSocket error");
        if matches!(m, Message::Text(_) | Message::Binary(_)) {
            return m;
        }
    }
}

/// Read until the connection ends; returns the close frame the peer sent,
/// if any, and how long it took.
async fn until_closed(ws: &mut Ws, limit: Duration) -> (Option<CloseFrame>, Duration) {
    let start = Instant::now();
    let mut close = None;
    loop {
        match tokio::time::timeout(limit, ws.next()).await {
            Err(_) => panic!("the tunnel was not closed within {limit:?}"),
            Ok(None) | Ok(Some(Err(_))) => return (close, start.elapsed()),
            Ok(Some(Ok(Message::Close(f)))) => close = f,
            Ok(Some(Ok(_))) => {}
        }
    }
}

fn ws_route(providers: &[(&str, SocketAddr)], extra: &str) -> String {
    let mut yaml = String::from("providers:\n");
    for (name, addr) in providers {
        yaml.push_str(&provider(
            name,
            "openai",
            *addr,
            &format!("    api_key_env: WS_PROVIDER_KEY\n{extra}"),
        ));
    }
    let names: Vec<&str> = providers.iter().map(|p| p.0).collect();
    yaml.push_str(&format!(
        "routes:\n  - {{ name: ws, paths: [\"/v1/realtime\"], providers: [{}] }}\nretry:\n  max_attempts: 3\n",
        names.join(", ")
    ));
    yaml
}

async fn start(name: &str, body: &str) -> Proxy {
    start_with(Proxy::builder(name, body)).await
}

async fn start_with(b: ProxyBuilder) -> Proxy {
    let px = b.env("WS_PROVIDER_KEY", PROVIDER_KEY).start().await;
    // /ready can answer a moment before the proxy listener is bound.
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(px.proxy).await.is_err() {
        assert!(Instant::now() < deadline, "proxy listener never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    px
}

/// The access log line of the request with this id, once written.
async fn access_line(px: &Proxy, request_id: &str) -> serde_json::Value {
    px.wait_event("request", |v| v["request_id"] == request_id)
        .await
}

/// Poll `/metrics` until the series (exact text before the value) has
/// this value.
async fn wait_metric(px: &Proxy, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = common::http::send(px.admin, Request::get("/metrics"))
            .await
            .text();
        let got = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok());
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got:?}, not {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn messages_echo_through_with_the_provider_key_and_without_client_credentials() {
    let up = Upstream::start(Mode::Echo).await;
    let body = format!(
        "{}client_auth:\n  tokens_env: WS_TOKENS\n",
        ws_route(&[("p1", up.addr)], "")
    );
    let px = start_with(Proxy::builder("ws-echo", &body).env("WS_TOKENS", CLIENT_TOKEN)).await;
    let bearer = format!("Bearer {CLIENT_TOKEN}");
    let offered = format!("realtime, openai-insecure-api-key.{CLIENT_OWN_KEY}");
    let (mut ws, resp) = connect(
        &px,
        &[
            ("authorization", &bearer),
            ("sec-websocket-protocol", &offered),
            ("openai-beta", "realtime=v1"),
        ],
    )
    .await
    .expect("handshake through steadfast");
    assert_eq!(resp.status(), 101);
    assert_eq!(header(&resp, "x-steadfast-provider"), "p1");
    assert_eq!(header(&resp, "x-steadfast-attempts"), "1");
    assert_eq!(header(&resp, "sec-websocket-protocol"), "realtime");
    assert!(header(&resp, "transfer-encoding").is_empty());

    ws.send(Message::text("hi there")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("hi there"));
    let blob: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::binary(blob));
    ws.close(None).await.unwrap();
    let _ = until_closed(&mut ws, Duration::from_secs(10)).await;

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.target, "/v1/realtime?model=gpt-realtime");
    assert_eq!(r.get("authorization"), [format!("Bearer {PROVIDER_KEY}")]);
    assert_eq!(r.get("host"), [up.addr.to_string()]);
    assert_eq!(r.get("upgrade"), ["websocket"]);
    assert_eq!(r.get("connection"), ["upgrade"]);
    assert_eq!(r.get("sec-websocket-version"), ["13"]);
    assert_eq!(r.get("sec-websocket-key").len(), 1);
    assert_eq!(r.get("sec-websocket-protocol"), ["realtime"]);
    assert_eq!(r.get("openai-beta"), ["realtime=v1"]);
    let all = format!("{:?}", r.headers);
    assert!(!all.contains(CLIENT_TOKEN), "client token forwarded: {all}");
    assert!(!all.contains(CLIENT_OWN_KEY), "client key forwarded: {all}");

    let line = access_line(&px, header(&resp, "x-request-id")).await;
    assert_eq!(line["status"], 101);
    assert_eq!(line["provider"], "p1");
    assert_eq!(line["class"], "success");
    let w = &line["websocket"];
    assert!(w["bytes_from_client"].as_u64().unwrap() > 70_000, "{line}");
    assert!(
        w["bytes_from_upstream"].as_u64().unwrap() > 70_000,
        "{line}"
    );
    // A clean WebSocket close: the server closes its TCP connection first
    // (RFC 6455 §7.1.1).
    assert_eq!(w["result"], "upstream_closed", "{line}");
    wait_metric(
        &px,
        "steadfast_websocket_sessions_total{result=\"upstream_closed\",route=\"ws\"}",
        1.0,
    )
    .await;
    wait_metric(&px, "steadfast_websocket_open_sessions{route=\"ws\"}", 0.0).await;
    wait_metric(
        &px,
        "steadfast_requests_total{outcome=\"success\",route=\"ws\"}",
        1.0,
    )
    .await;

    // Without the client token, no upgrade reaches the provider.
    let err = connect(&px, &[])
        .await
        .expect_err("unauthenticated upgrade");
    match err {
        WsError::Http(r) => assert_eq!(r.status(), 401),
        other => panic!("{other:?}"),
    }
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn refused_and_503_providers_are_failed_over_before_the_101() {
    let refused = free_addr();
    let busy = Upstream::start(Mode::Status(503)).await;
    let good = Upstream::start(Mode::Echo).await;
    let body = ws_route(&[("p1", refused), ("p2", busy.addr), ("p3", good.addr)], "");
    let px = start("ws-failover", &body).await;
    let (mut ws, resp) = connect(&px, &[]).await.expect("failed over to p3");
    assert_eq!(header(&resp, "x-steadfast-provider"), "p3");
    assert_eq!(header(&resp, "x-steadfast-attempts"), "3");
    ws.send(Message::text("after failover")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("after failover"));
    // The 503 provider got a real upgrade request too.
    assert_eq!(busy.seen()[0].get("upgrade"), ["websocket"]);
    drop(ws);
    let line = access_line(&px, header(&resp, "x-request-id")).await;
    let chain: Vec<(String, String)> = line["attempt_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap().to_string(),
                a["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        chain,
        [
            ("p1".to_string(), "network".to_string()),
            ("p2".to_string(), "server".to_string()),
            ("p3".to_string(), "success".to_string()),
        ],
        "{line}"
    );
}

#[tokio::test]
async fn when_every_provider_refuses_the_client_gets_the_last_answer() {
    let busy = Upstream::start(Mode::Status(503)).await;
    let body = ws_route(&[("p1", free_addr()), ("p2", busy.addr)], "");
    let px = start("ws-all-fail", &body).await;
    let err = connect(&px, &[]).await.expect_err("no provider upgraded");
    let WsError::Http(r) = err else {
        panic!("{err:?}")
    };
    assert_eq!(r.status(), 503);
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert_eq!(h("x-steadfast-provider"), "p2");
    assert_eq!(h("x-steadfast-error-class"), "server");
    let body = String::from_utf8(r.body().clone().unwrap_or_default()).unwrap();
    assert!(body.contains("status 503"), "{body}");
    let rid = h("x-request-id").to_string();
    let line = access_line(&px, &rid).await;
    assert_eq!(line["websocket"]["result"], "failed", "{line}");
    wait_metric(
        &px,
        "steadfast_websocket_sessions_total{result=\"failed\",route=\"ws\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_frame_sent_with_the_101_reaches_the_client() {
    let up = Upstream::start(Mode::FrameFirst).await;
    let px = start("ws-frame-first", &ws_route(&[("p1", up.addr)], "")).await;
    let (mut ws, _) = connect(&px, &[]).await.expect("handshake");
    assert_eq!(next_data(&mut ws).await, Message::text("hello"));
    ws.send(Message::text("and back")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("and back"));
}

#[tokio::test]
async fn a_frame_sent_with_the_request_reaches_the_provider() {
    let up = Upstream::start(Mode::Echo).await;
    let px = start("ws-client-early", &ws_route(&[("p1", up.addr)], "")).await;
    let mut tcp = TcpStream::connect(px.proxy).await.unwrap();
    let mut out = format!(
        "GET /v1/realtime HTTP/1.1\r\nhost: {}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        px.proxy
    )
    .into_bytes();
    // A masked text frame "early", in the same write as the request.
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&[0x81, 0x80 | 5]);
    out.extend_from_slice(&mask);
    out.extend(b"early".iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    tcp.write_all(&out).await.unwrap();
    // The 101 head, byte by byte so that no frame byte is taken with it.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "closed in the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("no echo of the early frame")
        .expect("closed")
        .expect("a WebSocket error");
    assert_eq!(echoed, Message::text("early"));
}

#[tokio::test]
async fn a_client_that_leaves_and_a_server_that_closes_both_end_the_tunnel() {
    let up = Upstream::start(Mode::CloseOnBye).await;
    let px = start("ws-close", &ws_route(&[("p1", up.addr)], "")).await;

    // The client drops its connection without a closing handshake.
    let (mut ws, resp) = connect(&px, &[]).await.expect("handshake");
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("one"));
    drop(ws);
    let line = access_line(&px, header(&resp, "x-request-id")).await;
    assert_eq!(line["websocket"]["result"], "client_closed", "{line}");
    assert_eq!(line["class"], "success", "{line}");
    // The provider saw its connection end too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.ends().is_empty() {
        assert!(Instant::now() < deadline, "the provider's side stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The server closes with a close frame, which reaches the client.
    let (mut ws, resp) = connect(&px, &[]).await.expect("handshake");
    ws.send(Message::text("bye")).await.unwrap();
    let (close, _) = until_closed(&mut ws, Duration::from_secs(10)).await;
    let close = close.expect("the server's close frame");
    assert_eq!(close.code, CloseCode::Normal);
    assert_eq!(close.reason.as_str(), "server says bye");
    drop(ws);
    let line = access_line(&px, header(&resp, "x-request-id")).await;
    assert_eq!(line["websocket"]["result"], "upstream_closed", "{line}");

    for result in ["client_closed", "upstream_closed"] {
        wait_metric(
            &px,
            &format!("steadfast_websocket_sessions_total{{result=\"{result}\",route=\"ws\"}}"),
            1.0,
        )
        .await;
    }
    wait_metric(&px, "steadfast_websocket_open_sessions{route=\"ws\"}", 0.0).await;
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_at_the_idle_timeout() {
    let up = Upstream::start(Mode::Echo).await;
    let idle = "    timeouts: { stream_idle_ms: 600 }\n";
    let px = start("ws-idle", &ws_route(&[("p1", up.addr)], idle)).await;
    let (mut ws, resp) = connect(&px, &[]).await.expect("handshake");
    // Traffic keeps it open past the idle timeout (900 ms of it)...
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ws.send(Message::text(format!("keepalive {i}")))
            .await
            .unwrap();
        assert_eq!(
            next_data(&mut ws).await,
            Message::text(format!("keepalive {i}"))
        );
    }
    // ...silence closes it.
    let (_, after) = until_closed(&mut ws, Duration::from_secs(10)).await;
    assert!(
        after >= Duration::from_millis(350),
        "closed after {after:?}"
    );
    let line = access_line(&px, header(&resp, "x-request-id")).await;
    assert_eq!(line["websocket"]["result"], "idle_timeout", "{line}");
    wait_metric(
        &px,
        "steadfast_websocket_sessions_total{result=\"idle_timeout\",route=\"ws\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_101_to_a_plain_request_is_a_network_failure_and_fails_over() {
    let switcher = Upstream::start(Mode::Switch101).await;
    let m = mock(MockApi::OpenAi, "p2", Behavior::default()).await;
    let body = format!(
        "providers:\n{}{}routes:\n  - {{ name: chat, paths: [\"/v1/chat/completions\"], providers: [p1, p2] }}\n",
        provider("p1", "openai", switcher.addr, ""),
        provider("p2", "openai", m.addr(), ""),
    );
    let px = start("ws-stray-101", &body).await;
    let req = Request::post("/v1/chat/completions", openai_body("gpt", false));
    let r = common::http::send_timeout(px.proxy, req, Duration::from_secs(10))
        .await
        .expect("the request hung on a 101");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-steadfast-provider"), Some("p2"));
    let line = access_line(&px, r.header("x-request-id").unwrap()).await;
    assert_eq!(line["attempt_chain"][0]["result"], "network", "{line}");
    assert_eq!(line["attempt_chain"][0]["status"], 101, "{line}");
    assert!(line.get("websocket").is_none(), "{line}");
}

#[tokio::test]
async fn sigterm_drain_waits_for_an_open_tunnel_then_closes_it_within_shutdown_timeout() {
    let up = Upstream::start(Mode::Echo).await;
    let server = "server:\n  threads: 2\n  pid_file: steadfast.pid\n  upgrade_sock: upgrade.sock\n  drain_delay_ms: 0\n  shutdown_timeout_ms: 2000\n";
    let body = format!("{server}{}", ws_route(&[("p1", up.addr)], ""));
    let mut px = start("ws-drain", &body).await;
    let (mut ws, resp) = connect(&px, &[]).await.expect("handshake");
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("before"));

    px.signal("TERM");
    let signalled = Instant::now();
    // The tunnel still works while the process drains.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(Message::text("during drain")).await.unwrap();
    assert_eq!(next_data(&mut ws).await, Message::text("during drain"));

    let (_, _) = until_closed(&mut ws, Duration::from_secs(10)).await;
    let closed_at = signalled.elapsed();
    let status = px
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the process did not exit");
    let exited_at = signalled.elapsed();
    eprintln!("tunnel closed after {closed_at:?}, process exited after {exited_at:?}");
    assert!(status.success(), "{status:?}");
    assert!(
        closed_at >= Duration::from_millis(1000),
        "tunnel cut early, after {closed_at:?}"
    );
    assert!(
        exited_at <= Duration::from_millis(2600),
        "drain hung past shutdown_timeout: exited after {exited_at:?}"
    );
    let line = access_line(&px, header(&resp, "x-request-id")).await;
    assert_eq!(line["websocket"]["result"], "shutdown", "{line}");
    let ev = px.events("shutdown");
    assert_eq!(ev.last().unwrap()["abandoned_requests"], 0, "{ev:?}");
}
