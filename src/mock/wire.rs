//! HTTP/1.1 on the wire: reading a request (head, Content-Length or chunked
//! body, `Expect: 100-continue`) off a connection, strict head parsing, and
//! writing response heads.

use super::server::Conn;
use super::Behavior;
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(super) enum ReqError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("request head too large")]
    HeadTooLarge,
    #[error("request body too large")]
    BodyTooLarge,
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub(super) struct Request {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Bytes,
    pub(super) close: bool,
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

impl Conn {
    async fn fill(&mut self) -> Result<usize, ReqError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.buf).await?)
    }

    /// `Ok(None)` when the peer closed cleanly between requests.
    pub(super) async fn read_request(&mut self) -> Result<Option<Request>, ReqError> {
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
}

pub(super) enum Framing {
    Length(usize),
    Chunked,
}

pub(super) fn put_head(
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

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
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

pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn valid_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Head, ReqError> {
        // read_request hands parse_head the head up to and including the
        // last header line's CRLF.
        let raw = raw.strip_suffix("\r\n").unwrap_or(raw);
        parse_head(raw.as_bytes())
    }

    fn malformed(raw: &str) -> &'static str {
        match head(raw) {
            Err(ReqError::Malformed(m)) => m,
            other => panic!(
                "{raw:?}: expected Malformed, got {:?}",
                other.map(|h| h.target)
            ),
        }
    }

    #[test]
    fn parse_head_reads_framing_and_connection_headers() {
        let h = head(
            "POST /v1/messages?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length:  12 \r\nConnection: keep-alive, close\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (h.method.as_str(), h.target.as_str()),
            ("POST", "/v1/messages?x=1")
        );
        assert_eq!(h.content_length, Some(12));
        assert!(h.close && h.expect_continue && !h.chunked);
        assert_eq!(h.headers[1], ("Content-Length".into(), "12".into()));
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(h.close, "HTTP/1.0 closes unless asked to keep alive");
        let h = head("GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(!h.close);
        let h = head("POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
        assert!(h.chunked && h.content_length.is_none() && !h.close);
        // Same length twice is harmless; too many digits is "too large", not malformed.
        let h = head("POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n").unwrap();
        assert_eq!(h.content_length, Some(5));
        let h = head("POST / HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n").unwrap();
        assert_eq!(h.content_length, Some(usize::MAX));
    }

    #[test]
    fn parse_head_refuses_ambiguous_framing() {
        assert_eq!(
            malformed("POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"),
            "both content-length and transfer-encoding"
        );
        assert_eq!(
            malformed("POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n"),
            "unsupported transfer-encoding"
        );
        assert_eq!(
            malformed("POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n"),
            "bad content-length"
        );
        assert_eq!(
            malformed("GET / HTTP/1.1\nhost: a\r\n\r\n"),
            "bare LF in request head"
        );
        assert_eq!(malformed("GET  / HTTP/1.1\r\n\r\n"), "bad request line");
        assert_eq!(
            malformed("GET / HTTP/1.1\r\nbad name: x\r\n\r\n"),
            "bad header name"
        );
        assert_eq!(
            malformed("GET / HTTP/1.1\r\nx: a\u{7f}\r\n\r\n"),
            "bad header value"
        );
    }

    #[test]
    fn chunk_size_and_whitespace_helpers() {
        assert_eq!(parse_hex(b"1a"), Some(26));
        assert_eq!(parse_hex(b"FF"), Some(255));
        assert_eq!(parse_hex(b""), None);
        assert_eq!(parse_hex(b"0x1"), None);
        assert_eq!(
            parse_hex(&[b'f'; 17]),
            None,
            "overflow is an error, not a wrap"
        );
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        assert_eq!(trim_ows(b" \t"), b"");
        assert_eq!(find(b"abc\r\n\r\n", b"\r\n\r\n"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
    }
}
