//! Answering a request head the edge refused (too large, too slow, or one
//! Pingora could not parse): a complete error response in the client's
//! dialect, the request counted like any other, then a lingering close so
//! the answer is not lost to a connection reset.

use super::guard::{Refusal, Refused};
use crate::app::App;
use crate::config::LimitSettings;
use crate::dialect::{self, LocalError};
use crate::record::RequestRecord;
use pingora_core::protocols::Stream;
use pingora_http::ResponseHeader;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest time spent writing the answer to a client that does not read.
const WRITE_LIMIT: Duration = Duration::from_secs(5);
/// Longest time spent reading what the client still sends after the answer.
const LINGER: Duration = Duration::from_secs(2);

pub async fn answer(app: &App, mut stream: Stream, r: Refusal) {
    let rt = app.runtime();
    let route = r.path.as_deref().and_then(|p| rt.route_for(p));
    let api = route
        .map(|rt| rt.settings.api)
        .or(r.api_hint)
        .unwrap_or_else(|| dialect::guess_api("", false));
    let (kind, message) = describe(r.kind, &rt.config.limits);
    let mut rec = RequestRecord::new(r.since);
    rec.request_id = crate::headers::new_request_id();
    rec.method = r.method.unwrap_or_default();
    rec.path = r.path.unwrap_or_default();
    rec.route = route.map(|rt| rt.settings.name.clone());
    rec.status = kind.status();
    rec.class = Some(kind.class());
    let mut written = false;
    if let Ok((resp, body)) = crate::forward::local_error(api, kind, &message, &rec.request_id) {
        let bytes = wire(&resp, &body);
        let write = tokio::time::timeout(WRITE_LIMIT, async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        });
        written = matches!(write.await, Ok(Ok(())));
    }
    if written {
        rec.ttfb = Some(rec.started.elapsed());
    }
    rec.finished = Some(Instant::now());
    crate::telemetry::request_finished(&rec, &rt.config);
    if written {
        linger(&mut stream).await;
    }
}

fn describe(kind: Refused, limits: &LimitSettings) -> (LocalError, String) {
    match kind {
        Refused::TooLarge => (
            LocalError::HeaderTooLarge,
            too_large(limits.max_header_bytes),
        ),
        Refused::Timeout => (
            LocalError::HeaderTimeout,
            format!(
                "request header was not received within {} ms",
                limits.header_timeout.as_millis()
            ),
        ),
        Refused::Malformed => (
            LocalError::BadRequest,
            "malformed request: the request line or header fields could not be parsed".into(),
        ),
    }
}

/// The message of a 431, also used when the parsed head is checked.
pub fn too_large(max: usize) -> String {
    format!("request header block is larger than the limit of {max} bytes")
}

/// The response as HTTP/1.1 bytes, closing the connection.
fn wire(resp: &ResponseHeader, body: &[u8]) -> Vec<u8> {
    let status = resp.status;
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in resp.headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Close after the answer without losing it: closing a socket with unread
/// input makes the kernel send a reset, which can destroy the answer in the
/// client's buffers before it is read. So: half-close, then read (and
/// drop) what the client still sends, for a bounded time.
async fn linger(stream: &mut Stream) {
    if AsyncWriteExt::shutdown(stream).await.is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
        if n == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Api;

    #[test]
    fn answers_are_complete_http_responses_that_close() {
        let (resp, body) =
            crate::forward::local_error(Api::Anthropic, LocalError::HeaderTooLarge, "m", "rid")
                .unwrap();
        let bytes = wire(&resp, &body);
        let text = String::from_utf8(bytes).unwrap();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains("\r\nx-request-id: rid"));
        assert!(head.contains("\r\nx-steadfast-error-class: request"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", rest.len())));
        let v: serde_json::Value = serde_json::from_str(rest).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }

    #[test]
    fn each_refusal_has_its_status() {
        let l = LimitSettings {
            max_inflight: 1,
            queue_timeout: Duration::ZERO,
            max_body_bytes: 1,
            max_header_bytes: 4096,
            header_timeout: Duration::from_millis(1500),
        };
        let (k, m) = describe(Refused::TooLarge, &l);
        assert_eq!((k.status(), m.contains("4096")), (431, true));
        let (k, m) = describe(Refused::Timeout, &l);
        assert_eq!((k.status(), m.contains("1500 ms")), (408, true));
        assert_eq!(describe(Refused::Malformed, &l).0.status(), 400);
    }
}
