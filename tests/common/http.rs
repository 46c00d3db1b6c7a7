//! A deliberately small HTTP/1.1 client for tests: it exposes exactly what
//! the assertions need (raw framing, whether the body ended cleanly, when
//! each chunk arrived) which general-purpose clients hide.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended as its framing says (Content-Length reached or the
    /// terminating chunk seen). False means the connection broke mid-body.
    pub complete: bool,
    /// Body pieces with the time each arrived (chunks or reads).
    pub pieces: Vec<(Instant, Vec<u8>)>,
    pub sent_at: Instant,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// SSE events as (event name, data).
    pub fn events(&self) -> Vec<(Option<String>, String)> {
        let text = self.text();
        text.split("\n\n")
            .filter(|b| !b.trim().is_empty())
            .map(|block| {
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                (name, data)
            })
            .collect()
    }
}

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: Vec<u8>,
}

impl<'a> Request<'a> {
    pub fn post(path: &'a str, body: impl Into<Vec<u8>>) -> Self {
        Request {
            method: "POST",
            path,
            headers: vec![("content-type", "application/json".into())],
            body: body.into(),
        }
    }

    pub fn get(path: &'a str) -> Self {
        Request {
            method: "GET",
            path,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.headers.push((k, v.into()));
        self
    }

    fn encode(&self, host: &str) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\nhost: {host}\r\n", self.method, self.path);
        let mut has_len = false;
        for (k, v) in &self.headers {
            has_len |= k.eq_ignore_ascii_case("content-length")
                || k.eq_ignore_ascii_case("transfer-encoding");
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_len && (!self.body.is_empty() || self.method == "POST") {
            out.push_str(&format!("content-length: {}\r\n", self.body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Send one request on a fresh connection and read the whole response.
pub async fn send(addr: SocketAddr, req: Request<'_>) -> Response {
    send_timeout(addr, req, Duration::from_secs(30))
        .await
        .expect("request timed out")
}

/// Like [`send`], but None when the connection is refused or the limit passes.
pub async fn send_timeout(addr: SocketAddr, req: Request<'_>, limit: Duration) -> Option<Response> {
    let mut conn = Conn::try_connect(addr).await?;
    tokio::time::timeout(limit, conn.round_trip(&req))
        .await
        .ok()
}

/// A client connection that can carry several requests (keep-alive).
pub struct Conn {
    pub stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).await.expect("connect to proxy")
    }

    pub async fn try_connect(addr: SocketAddr) -> Option<Conn> {
        let stream = TcpStream::connect(addr).await.ok()?;
        stream.set_nodelay(true).ok();
        Some(Conn {
            stream,
            addr,
            buf: Vec::new(),
        })
    }

    pub async fn write_request(&mut self, req: &Request<'_>) {
        let bytes = req.encode(&self.addr.to_string());
        self.stream.write_all(&bytes).await.expect("write request");
    }

    /// Several requests in one write (pipelining).
    pub async fn write_requests(&mut self, reqs: &[Request<'_>]) {
        let host = self.addr.to_string();
        let bytes: Vec<u8> = reqs.iter().flat_map(|r| r.encode(&host)).collect();
        self.stream.write_all(&bytes).await.expect("write requests");
    }

    pub async fn round_trip(&mut self, req: &Request<'_>) -> Response {
        let sent_at = Instant::now();
        self.write_request(req).await;
        let mut r = self.read_response(req.method == "HEAD").await;
        r.sent_at = sent_at;
        r
    }

    async fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16384];
        match self.stream.read(&mut tmp).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// Read the response header; None if the connection closed first.
    pub async fn read_head(&mut self) -> Option<(u16, Vec<(String, String)>)> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                let mut lines = head.split("\r\n");
                let status_line = lines.next()?;
                let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                if (100..200).contains(&status) && status != 101 {
                    continue;
                }
                return Some((status, headers));
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    pub async fn read_response(&mut self, head_only: bool) -> Response {
        let sent_at = Instant::now();
        let Some((status, headers)) = self.read_head().await else {
            return Response {
                status: 0,
                headers: Vec::new(),
                body: Vec::new(),
                complete: false,
                pieces: Vec::new(),
                sent_at,
            };
        };
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        let mut pieces = Vec::new();
        let no_body = head_only || status == 204 || status == 304;
        let complete = if no_body {
            true
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            self.read_chunked(&mut body, &mut pieces).await
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            while self.buf.len() < len {
                if !self.fill().await {
                    break;
                }
            }
            let n = self.buf.len().min(len);
            body.extend(self.buf.drain(..n));
            pieces.push((Instant::now(), body.clone()));
            body.len() == len
        } else {
            while self.fill().await {}
            body.append(&mut self.buf);
            true
        };
        Response {
            status,
            headers,
            body,
            complete,
            pieces,
            sent_at,
        }
    }

    async fn read_chunked(
        &mut self,
        body: &mut Vec<u8>,
        pieces: &mut Vec<(Instant, Vec<u8>)>,
    ) -> bool {
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if !self.fill().await {
                    return false;
                }
            };
            let size_str = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size =
                match usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16) {
                    Ok(s) => s,
                    Err(_) => return false,
                };
            while self.buf.len() < line_end + 2 + size + 2 {
                if !self.fill().await {
                    return false;
                }
            }
            let data: Vec<u8> = self.buf[line_end + 2..line_end + 2 + size].to_vec();
            self.buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return true;
            }
            pieces.push((Instant::now(), data.clone()));
            body.extend_from_slice(&data);
        }
    }

    /// Read one body chunk of a chunked response as it arrives.
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        let line_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            if !self.fill().await {
                return None;
            }
        };
        let size_str = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_str.trim(), 16).ok()?;
        while self.buf.len() < line_end + 2 + size + 2 {
            if !self.fill().await {
                return None;
            }
        }
        body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
        self.buf.drain(..line_end + 2 + size + 2);
        Some(body)
    }
}

/// Open a streaming request and return once its first event has arrived,
/// so the request is known to be in flight (holding its limiter slots).
pub async fn open_stream(addr: SocketAddr, req: &Request<'_>) -> Conn {
    let mut c = Conn::connect(addr).await;
    c.write_request(req).await;
    let (status, _) = c.read_head().await.expect("response head");
    assert_eq!(status, 200, "stream did not start");
    c.next_chunk().await.expect("first event");
    c
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn anthropic_body(model: &str, stream: bool) -> Vec<u8> {
    serde_json::json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello"}],
    })
    .to_string()
    .into_bytes()
}

pub fn openai_body(model: &str, stream: bool) -> Vec<u8> {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hello"}],
    })
    .to_string()
    .into_bytes()
}
