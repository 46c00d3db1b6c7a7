//! The upstream exchange, the held-body reader and the relay pump, driven
//! over in-memory duplex streams: each test scripts the peer's bytes and
//! checks what steadfast wrote and decided.

use super::attempts::{exchange, read_held_body, Held};
use super::decode::Decode;
use super::relay::{pump, End, Sink};
use super::Ctx;
use crate::config::Api;
use crate::outcome::{self, ErrorClass};
use crate::sse::SseFramer;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn peer() -> HttpPeer {
    HttpPeer::new(
        std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        false,
        "h".into(),
    )
}

/// Read one request (head and Content-Length body) from the upstream side.
async fn read_request(s: &mut DuplexStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).await.unwrap();
        assert!(n > 0, "request ended early");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= i + 4 + len {
                return buf;
            }
        }
    }
}

/// An upstream session whose response header has been read, with `rest`
/// (the body, and maybe a cut) left for the test to write.
async fn upstream_answering(head: &'static str) -> (UpstreamSession, DuplexStream) {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let up = tokio::spawn(async move {
        exchange(
            Box::new(ours),
            &peer(),
            b"GET / HTTP/1.1\r\nhost: h\r\n\r\n",
            b"",
        )
        .await
    });
    read_request(&mut theirs).await;
    theirs.write_all(head.as_bytes()).await.unwrap();
    (up.await.unwrap().unwrap(), theirs)
}

#[tokio::test]
async fn the_request_goes_out_whole_and_interim_responses_are_skipped() {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let head = b"POST /v1/messages HTTP/1.1\r\nhost: h\r\ncontent-length: 7\r\n\r\n";
    let upstream = tokio::spawn(async move {
        let got = read_request(&mut theirs).await;
        theirs
            .write_all(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            )
            .await
            .unwrap();
        (got, theirs)
    });
    let up = exchange(Box::new(ours), &peer(), head, b"{\"a\":1}")
        .await
        .unwrap();
    assert_eq!(up.resp_header().unwrap().status.as_u16(), 200);
    let (got, _theirs) = upstream.await.unwrap();
    assert_eq!(got, [&head[..], b"{\"a\":1}"].concat());
}

#[tokio::test]
async fn only_a_connection_closed_before_any_answer_is_a_dead_pooled_one() {
    // Closed at once: what a pooled connection the upstream dropped while
    // idle looks like on first use.
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    drop(theirs);
    let e = exchange(Box::new(ours), &peer(), b"GET / HTTP/1.1\r\n\r\n", b"")
        .await
        .err()
        .expect("no answer");
    assert!(outcome::dead_pooled_connection(&e), "{e}");

    // Garbage is the provider's doing, not a stale connection's.
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    let upstream = tokio::spawn(async move {
        read_request(&mut theirs).await;
        theirs.write_all(b"SSH-2.0-OpenSSH\r\n\r\n").await.unwrap();
        theirs
    });
    let e = exchange(Box::new(ours), &peer(), b"GET / HTTP/1.1\r\n\r\n", b"")
        .await
        .err()
        .expect("garbage");
    assert!(!outcome::dead_pooled_connection(&e), "{e}");
    drop(upstream.await);
}

#[tokio::test]
async fn a_held_body_is_bounded_in_size_and_time() {
    let (mut up, mut theirs) =
        upstream_answering("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 10\r\n\r\n").await;
    theirs.write_all(b"0123456789").await.unwrap();
    let far = Instant::now() + Duration::from_secs(10);
    assert!(matches!(
        read_held_body(&mut up, Duration::from_secs(5), far, 1024).await,
        Held::Complete(b) if b == "0123456789"
    ));

    let (mut up, mut theirs) =
        upstream_answering("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n").await;
    theirs.write_all(&[b'x'; 100]).await.unwrap();
    assert!(matches!(
        read_held_body(&mut up, Duration::from_secs(5), far, 10).await,
        Held::TooLarge(_)
    ));

    // Half a body, then silence: broken within the idle bound.
    let (mut up, mut theirs) =
        upstream_answering("HTTP/1.1 500 Oops\r\ncontent-length: 100\r\n\r\n").await;
    theirs.write_all(b"half").await.unwrap();
    assert!(matches!(
        read_held_body(&mut up, Duration::from_millis(50), far, 1024).await,
        Held::Broken
    ));
}

/// A client session that has sent a request and been answered with an SSE
/// header; returns it with the client's end of the connection.
async fn client_streaming() -> (Session, DuplexStream) {
    let (ours, mut theirs) = tokio::io::duplex(1 << 16);
    theirs
        .write_all(b"POST /v1/messages HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    let mut s = Session::new_h1(Box::new(ours));
    assert!(s.read_request().await.unwrap());
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.insert_header("content-type", "text/event-stream")
        .unwrap();
    resp.insert_header("transfer-encoding", "chunked").unwrap();
    s.write_response_header(Box::new(resp), false)
        .await
        .unwrap();
    (s, theirs)
}

/// Everything the client received so far, de-chunked loosely (the test
/// only looks for whole events in it).
async fn received(client: &mut DuplexStream) -> String {
    let mut buf = vec![0u8; 1 << 16];
    let n = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf))
        .await
        .map_or(0, |r| r.unwrap_or(0));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n";
const BLOCK: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
const DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";

fn chunk(s: &str) -> String {
    format!("{:x}\r\n{s}\r\n", s.len())
}

#[tokio::test]
async fn a_stream_cut_mid_event_relays_only_whole_events() {
    let (mut s, mut client) = client_streaming().await;
    let (mut up, mut theirs) = upstream_answering(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await;
    // Two whole events, then half of the third, then the connection dies.
    let half = &DELTA[..DELTA.len() / 2];
    theirs
        .write_all(format!("{}{}", chunk(&format!("{START}{BLOCK}")), chunk(half)).as_bytes())
        .await
        .unwrap();
    drop(theirs);
    let mut ctx = Ctx::new();
    ctx.api = Api::Anthropic;
    let mut sink = Sink::new(Api::Anthropic, true, false);
    let mut decode = Decode::Plain;
    let mut framer = Some(SseFramer::new());
    let end = pump(
        &mut s,
        &mut ctx,
        &mut up,
        &mut decode,
        &mut framer,
        &mut sink,
        Duration::from_secs(5),
    )
    .await;
    assert!(
        matches!(end, End::Broken(ErrorClass::Network, _)),
        "a cut is a network break"
    );
    let got = received(&mut client).await;
    assert!(got.contains("message_start") && got.contains("content_block_start"));
    assert!(
        !got.contains("text_delta"),
        "half an event reached the client: {got}"
    );
}

#[tokio::test]
async fn the_terminal_event_marks_the_answer_finished() {
    let (mut s, _client) = client_streaming().await;
    let (mut up, mut theirs) = upstream_answering(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await;
    let stop = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    theirs
        .write_all(format!("{}{}0\r\n\r\n", chunk(START), chunk(stop)).as_bytes())
        .await
        .unwrap();
    let mut ctx = Ctx::new();
    ctx.api = Api::Anthropic;
    let mut sink = Sink::new(Api::Anthropic, true, false);
    let end = pump(
        &mut s,
        &mut ctx,
        &mut up,
        &mut Decode::Plain,
        &mut Some(SseFramer::new()),
        &mut sink,
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(end, End::Done));
    assert!(ctx.finished, "message_stop went out: the answer is whole");
}

#[tokio::test]
async fn with_resumption_on_an_error_event_is_held_back_from_the_client() {
    let (mut s, mut client) = client_streaming().await;
    let (mut up, mut theirs) = upstream_answering(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .await;
    let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    // The error arrives in the same chunk as the text before it.
    theirs
        .write_all(chunk(&format!("{START}{BLOCK}{DELTA}{error}")).as_bytes())
        .await
        .unwrap();
    let mut ctx = Ctx::new();
    ctx.api = Api::Anthropic;
    let mut sink = Sink::new(Api::Anthropic, true, true);
    let end = pump(
        &mut s,
        &mut ctx,
        &mut up,
        &mut Decode::Plain,
        &mut Some(SseFramer::new()),
        &mut sink,
        Duration::from_secs(5),
    )
    .await;
    let End::ErrorEvent(v) = end else {
        panic!("expected the held error event")
    };
    assert_eq!(v.class, ErrorClass::Server);
    let got = received(&mut client).await;
    assert!(
        got.contains("text_delta"),
        "the text before it went out: {got}"
    );
    assert!(
        !got.contains("overloaded_error"),
        "the error was held back: {got}"
    );
    let point = sink
        .tracker
        .as_ref()
        .and_then(|t| t.point())
        .expect("resumable");
    assert_eq!(point.delivered, "Hi");
}
