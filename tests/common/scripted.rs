//! An upstream that answers every request with a fixed SSE script, for the
//! few tests that need exact control of the stream's tail (lingering,
//! resetting) or a stream the mock provider cannot produce (tool calls in
//! another dialect). It records each request it received.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the scripted upstream ends after writing its events.
#[derive(Clone, Copy)]
pub enum Then {
    /// End the chunked body properly.
    End,
    /// Keep the connection open without ending the body.
    Linger,
    /// Reset the connection without ending the body.
    Reset,
    /// Send the events as a body of announced length (Content-Length, not
    /// chunked), as some OpenAI-compatible servers stream.
    Length,
    /// Answer as an HTTP/1.0 server: no framing, the body ends when the
    /// connection closes.
    Http10,
}

/// A request the scripted upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request line and headers, lower-cased.
    pub head: String,
    pub body: Vec<u8>,
}

pub struct Scripted {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Scripted {
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// Serve `events` (whole SSE events) as a chunked `200 text/event-stream`
/// to every request, then do `then`.
pub async fn upstream(events: Vec<String>, then: Then) -> Scripted {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let rec = received.clone();
    let events = Arc::new(events);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(serve(s, events.clone(), then, rec.clone()));
        }
    });
    Scripted { addr, received }
}

async fn serve(
    mut s: TcpStream,
    events: Arc<Vec<String>>,
    then: Then,
    received: Arc<Mutex<Vec<Received>>>,
) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut tmp).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut tmp).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    received.lock().unwrap().push(Received {
        head,
        body: buf[head_end..head_end + len].to_vec(),
    });
    let mut out = Vec::new();
    if let Then::Http10 = then {
        out.extend_from_slice(b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n\r\n");
        out.extend_from_slice(events.concat().as_bytes());
        let _ = s.write_all(&out).await;
        return;
    }
    if let Then::Length = then {
        let body = events.concat();
        out.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nrequest-id: req_scripted_1\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let _ = s.write_all(&out).await;
        return;
    }
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nrequest-id: req_scripted_1\r\n\r\n",
    );
    for e in events.iter() {
        out.extend_from_slice(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes());
    }
    if let Then::End = then {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    let _ = s.write_all(&out).await;
    match then {
        Then::End | Then::Length | Then::Http10 => {}
        Then::Linger => tokio::time::sleep(Duration::from_secs(30)).await,
        Then::Reset => {
            let _ = s.set_zero_linger();
            drop(s);
        }
    }
}

/// The events of an SSE file, each with its blank-line terminator.
pub fn events_of(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| format!("{e}\n\n"))
        .collect()
}
