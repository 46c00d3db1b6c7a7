//! An HTTP/1 client connection with its request heads watched.
//!
//! Pingora reads request heads itself, up to a hard-coded 1 MiB and with
//! only a per-read timeout, so a slow client can grow a head for as long as
//! it keeps trickling bytes. This wrapper sits between Pingora and the
//! connection's byte stream: while Pingora reads a head it counts the head's
//! bytes and times it, fails the read once the head is over
//! `limits.max_header_bytes` or later than `limits.header_timeout_ms`, and
//! notices Pingora answering a head it could not parse. Pingora then drops
//! the connection; the wrapper hands it back to the edge ([`super`]), which
//! answers in the client's dialect.
//!
//! On the common path (a head that arrives in one read) the cost is one scan
//! of the head for its end: no copy, no extra read, no timer.

use super::scan::{self, HeadScan};
use crate::config::Api;
use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Over `limits.max_header_bytes` before it ended.
    TooLarge,
    /// Not complete within `limits.header_timeout_ms` of its first byte.
    Timeout,
    /// Pingora could not parse it (it answers such heads with a bare 400).
    Malformed,
}

/// A refused head, as far as it was seen.
#[derive(Debug)]
pub struct Refusal {
    pub kind: Refused,
    /// Method and path of the request line, when the head spanned reads
    /// (only then is it worth copying them).
    pub method: Option<String>,
    pub path: Option<String>,
    /// The dialect the request target suggests.
    pub api_hint: Option<Api>,
    /// When the head's first bytes arrived (as near as is known).
    pub since: Instant,
}

/// Where a refused connection goes once Pingora lets go of it.
pub type Handback = Arc<Mutex<Option<(Stream, Refusal)>>>;

/// The limits a head is read under; taken from the config at each head, so
/// a reload applies to the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// One head being read.
#[derive(Debug, Default)]
struct Watch {
    scan: HeadScan,
    /// No byte of it read yet.
    fresh: bool,
    api_hint: Option<Api>,
    method: Option<String>,
    path: Option<String>,
    /// Armed when a read of the head first has to wait.
    deadline: Option<Pin<Box<Sleep>>>,
    since: Option<Instant>,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            fresh: true,
            ..Watch::default()
        }
    }

    /// Account for head bytes as they are read.
    fn feed(&mut self, got: &[u8]) {
        let first = std::mem::take(&mut self.fresh);
        let line = if first { scan::request_line(got) } else { None };
        if let Some((_, rest)) = line {
            self.api_hint = Some(scan::api_hint(rest));
        }
        if self.scan.feed(got).is_some() {
            return;
        }
        // The head spans reads (the slow path): its clock starts, and what
        // answering a refusal needs is kept, as later reads will not have it.
        self.since.get_or_insert_with(Instant::now);
        if let Some((method, rest)) = line {
            self.method = Some(String::from_utf8_lossy(method).into_owned());
            self.path = Some(scan::target_path(rest));
        }
    }

    /// Whether the head is late. Its clock runs from the first read that
    /// did not complete it; the timer is set only when a read has to wait,
    /// so a head that arrives whole costs none.
    fn late(&mut self, cx: &mut Context<'_>, timeout: Duration) -> bool {
        if self.fresh {
            // Idle between requests: Pingora's keep-alive timeout applies.
            return false;
        }
        let since = self.since.get_or_insert_with(Instant::now);
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until((*since + timeout).into())));
        deadline.as_mut().poll(cx).is_ready()
    }

    fn refusal(self, kind: Refused) -> Refusal {
        Refusal {
            kind,
            method: self.method,
            path: self.path,
            api_hint: self.api_hint,
            since: self.since.unwrap_or_else(Instant::now),
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Reading (or Pingora parsing) a request head.
    Head(Watch),
    /// Pingora handed the request to steadfast: everything passes through.
    Body,
    /// The head was refused: reads fail and writes are dropped until the
    /// stream is handed back.
    Refused(Refusal),
}

#[derive(Debug)]
pub struct HeadGuard {
    /// `None` only once handed back.
    inner: Option<Stream>,
    /// Set by the request path when Pingora has parsed the head (see
    /// [`super::head_accepted`]); read here only while a head is watched.
    accepted: AtomicBool,
    phase: Phase,
    limits: HeadLimits,
    handback: Handback,
}

impl HeadGuard {
    /// `read` is what was read from the connection before it was known to
    /// be HTTP/1 (the start of its first head), which Pingora gets as a
    /// pipelined prefix.
    pub fn new(inner: Stream, limits: HeadLimits, handback: Handback, read: &[u8]) -> HeadGuard {
        let mut watch = Watch::new();
        if !read.is_empty() {
            watch.feed(read);
        }
        HeadGuard {
            inner: Some(inner),
            accepted: AtomicBool::new(false),
            phase: Phase::Head(watch),
            limits,
            handback,
        }
    }

    /// Watch the next request head on this connection.
    pub fn arm(&mut self, limits: HeadLimits) {
        self.accepted.store(false, Ordering::Relaxed);
        self.phase = Phase::Head(Watch::new());
        self.limits = limits;
    }

    /// The current head reached steadfast: stop watching.
    pub fn accept(&self) {
        self.accepted.store(true, Ordering::Relaxed);
    }

    fn refuse(&mut self, kind: Refused) {
        if let Phase::Head(w) = std::mem::replace(&mut self.phase, Phase::Body) {
            self.phase = Phase::Refused(w.refusal(kind));
        }
    }

    fn is_refused(&self) -> bool {
        matches!(self.phase, Phase::Refused(_))
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection handed back")
}

/// Starts the error Pingora gets (and logs) for a refused head.
pub const REFUSAL: &str = "request head refused by steadfast";

fn refused_error(kind: Refused) -> io::Error {
    let why = match kind {
        Refused::TooLarge => "over limits.max_header_bytes",
        Refused::Timeout => "not complete within limits.header_timeout_ms",
        Refused::Malformed => "malformed",
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("{REFUSAL}: {why}"))
}

/// Whether Pingora is writing its own `400 Bad Request` (the status line
/// of `pingora_core`'s pre-built error response).
fn is_bare_400(buf: &[u8]) -> bool {
    buf.starts_with(b"HTTP/1.") && buf.get(8..13) == Some(b" 400 ")
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.phase, Phase::Head(_)) && this.accepted.load(Ordering::Relaxed) {
            this.phase = Phase::Body;
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let watch = match &mut this.phase {
            Phase::Body => return Pin::new(inner).poll_read(cx, buf),
            Phase::Refused(r) => return Poll::Ready(Err(refused_error(r.kind))),
            // Still counted after the empty line that ends it: Pingora reads
            // again before handing the request on only if its parser did not
            // see the end there, and then the head goes on.
            Phase::Head(w) => w,
        };
        let limits = this.limits;
        // Refused at the read after the one that crossed the limit: that
        // read may have completed the head after all (its empty line was
        // carried over from a pipelined request, unseen here), and then
        // Pingora parses it without reading again and the request path
        // checks the parsed head exactly.
        let kind = if watch.scan.seen > limits.max_bytes {
            Refused::TooLarge
        } else {
            let before = buf.filled().len();
            match Pin::new(inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    let got = &buf.filled()[before..];
                    if !got.is_empty() {
                        watch.feed(got);
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending if watch.late(cx, limits.timeout) => Refused::Timeout,
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        };
        this.refuse(kind);
        Poll::Ready(Err(refused_error(kind)))
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Phase::Head(w) = &this.phase {
            if this.accepted.load(Ordering::Relaxed) {
                this.phase = Phase::Body;
            } else if is_bare_400(buf) {
                // Pingora refused the head before any hook ran (it cannot
                // parse it, or its own 1 MiB cap). Drop its bare answer; the
                // edge answers instead once the connection is handed back.
                let kind = if w.scan.seen > this.limits.max_bytes {
                    Refused::TooLarge
                } else {
                    Refused::Malformed
                };
                this.refuse(kind);
            } else {
                // Another answer of Pingora's own (405 to CONNECT): as is.
                this.phase = Phase::Body;
            }
        }
        if this.is_refused() {
            return Poll::Ready(Ok(buf.len()));
        }
        match this.inner.as_mut() {
            Some(s) => Pin::new(s).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match (&this.phase, this.inner.as_mut()) {
            (Phase::Body, Some(s)) => Pin::new(s).poll_write_vectored(cx, bufs),
            _ => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                Pin::new(this).poll_write(cx, first)
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_refused() {
            return Poll::Ready(Ok(()));
        }
        match this.inner.as_mut() {
            Some(s) => Pin::new(s).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.is_refused() {
            return Poll::Ready(Ok(()));
        }
        match this.inner.as_mut() {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Err(gone())),
        }
    }
}

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        // A refused connection stays open for the edge's answer.
        if self.is_refused() {
            return;
        }
        if let Some(s) = self.inner.as_mut() {
            s.shutdown().await;
        }
    }
}

impl Drop for HeadGuard {
    fn drop(&mut self) {
        if let Phase::Refused(r) = std::mem::replace(&mut self.phase, Phase::Body) {
            if let (Some(s), Ok(mut slot)) = (self.inner.take(), self.handback.lock()) {
                *slot = Some((s, r));
            }
        }
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner
            .as_ref()
            .map_or(UniqueIDType::default(), |s| s.id())
    }
}

impl Ssl for HeadGuard {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.as_ref().and_then(|s| s.get_ssl())
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.as_ref().and_then(|s| s.get_ssl_digest())
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.as_ref().and_then(|s| s.selected_alpn_proto())
    }
}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner
            .as_ref()
            .map_or_else(Vec::new, |s| s.get_timing_digest())
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |s| s.get_read_pending_time())
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner
            .as_ref()
            .map_or(Duration::ZERO, |s| s.get_write_pending_time())
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.as_ref().and_then(|s| s.get_proxy_digest())
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        if let Some(s) = self.inner.as_mut() {
            s.set_proxy_digest(digest);
        }
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.as_ref().and_then(|s| s.get_socket_digest())
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        if let Some(s) = self.inner.as_mut() {
            s.set_socket_digest(digest);
        }
    }
}

#[async_trait]
impl Peek for HeadGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        match self.inner.as_mut() {
            Some(s) => s.try_peek(buf).await,
            None => Err(gone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn guard(max_bytes: usize, timeout_ms: u64) -> (HeadGuard, DuplexStream, Handback) {
        let (server, client) = duplex(1 << 20);
        let handback: Handback = Arc::new(Mutex::new(None));
        let limits = HeadLimits {
            max_bytes,
            timeout: Duration::from_millis(timeout_ms),
        };
        let g = HeadGuard::new(Box::new(server), limits, handback.clone(), b"");
        (g, client, handback)
    }

    fn taken(h: &Handback) -> Option<(Stream, Refusal)> {
        h.lock().unwrap().take()
    }

    /// Read everything available now (the duplex holds what was written).
    async fn drain(g: &mut HeadGuard, want: usize) -> io::Result<usize> {
        let mut buf = vec![0u8; 4096];
        let mut total = 0;
        while total < want {
            total += g.read(&mut buf).await?;
        }
        Ok(total)
    }

    #[tokio::test]
    async fn a_head_over_the_limit_fails_the_next_read_and_is_handed_back() {
        let (mut g, mut c, hb) = guard(64, 10_000);
        let mut head = b"POST /v1/messages?k=s HTTP/1.1\r\nx: ".to_vec();
        head.extend_from_slice(&[b'a'; 100]);
        c.write_all(&head).await.unwrap();
        // The read that crosses the limit still delivers its bytes...
        assert_eq!(drain(&mut g, head.len()).await.unwrap(), head.len());
        // ...the next one fails, and keeps failing.
        assert_eq!(
            g.read(&mut [0u8; 8]).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(g.read(&mut [0u8; 8]).await.is_err());
        // Pingora's answer and shutdown do not reach the client.
        g.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
        g.flush().await.unwrap();
        Shutdown::shutdown(&mut g).await;
        assert!(taken(&hb).is_none(), "handed back only once dropped");
        drop(g);
        let (mut s, r) = taken(&hb).expect("handed back");
        assert_eq!(r.kind, Refused::TooLarge);
        assert_eq!(r.method.as_deref(), Some("POST"));
        assert_eq!(r.path.as_deref(), Some("/v1/messages"));
        assert_eq!(r.api_hint, Some(Api::Anthropic));
        s.write_all(b"ours").await.unwrap();
        s.flush().await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ours");
    }

    #[tokio::test]
    async fn bytes_after_the_end_of_a_head_do_not_count() {
        let (mut g, mut c, hb) = guard(64, 10_000);
        // A body far over the limit, with no empty line in it, read
        // together with the head: only the head counts.
        let mut bytes = b"POST / HTTP/1.1\r\nh: v\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[b'b'; 5000]);
        c.write_all(&bytes).await.unwrap();
        let mut buf = vec![0u8; 8192];
        assert_eq!(g.read(&mut buf).await.unwrap(), bytes.len());
        // Pingora parsed it; the request path takes it and reads the body.
        g.accept();
        c.write_all(&[b'b'; 5000]).await.unwrap();
        assert_eq!(drain(&mut g, 5000).await.unwrap(), 5000);
        drop(g);
        assert!(taken(&hb).is_none());
    }

    #[tokio::test]
    async fn a_head_read_on_past_its_empty_line_is_still_watched() {
        // Only if Pingora's parser disagreed about the end would it read on
        // before handing the request over; the head is then still counted.
        let (mut g, mut c, _hb) = guard(64, 10_000);
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drain(&mut g, 18).await.unwrap();
        c.write_all(&[b'x'; 100]).await.unwrap();
        drain(&mut g, 100).await.unwrap();
        assert!(g.read(&mut [0u8; 8]).await.is_err());
    }

    #[tokio::test]
    async fn an_accepted_head_is_not_watched_and_rearming_watches_the_next() {
        let (mut g, mut c, _hb) = guard(64, 10_000);
        // A head whose end the guard did not see (it came with the previous
        // request): the request path accepts it.
        c.write_all(b"h: v\r\n").await.unwrap();
        drain(&mut g, 6).await.unwrap();
        g.accept();
        c.write_all(&[b'b'; 5000]).await.unwrap();
        assert_eq!(drain(&mut g, 5000).await.unwrap(), 5000);
        g.arm(g.limits);
        c.write_all(&[b'c'; 100]).await.unwrap();
        drain(&mut g, 100).await.unwrap();
        assert!(g.read(&mut [0u8; 8]).await.is_err());
    }

    #[tokio::test]
    async fn a_head_that_stalls_times_out_but_an_idle_connection_does_not() {
        let (mut g, mut c, hb) = guard(65536, 100);
        // Idle before any byte: Pingora's keep-alive timeout applies, not
        // the head's.
        let idle = tokio::time::timeout(Duration::from_millis(300), g.read(&mut [0u8; 8])).await;
        assert!(idle.is_err(), "an idle connection must not time out");
        c.write_all(b"GET /v1/chat/completions HTTP/1.1\r\n")
            .await
            .unwrap();
        drain(&mut g, 35).await.unwrap();
        let started = Instant::now();
        let e = g.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(g);
        let (_, r) = taken(&hb).unwrap();
        assert_eq!(r.kind, Refused::Timeout);
        assert_eq!(r.api_hint, Some(Api::OpenAi));
    }

    #[tokio::test]
    async fn pingoras_own_400_is_replaced_and_other_answers_pass() {
        let (mut g, mut c, hb) = guard(65536, 10_000);
        let head = b"GET /v1/messages HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n";
        c.write_all(head).await.unwrap();
        drain(&mut g, head.len()).await.unwrap();
        g.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        drop(g);
        let (_, r) = taken(&hb).unwrap();
        assert_eq!(r.kind, Refused::Malformed);
        // Not copied for a head that arrived whole, but its dialect is known.
        assert_eq!(r.path, None);
        assert_eq!(r.api_hint, Some(Api::Anthropic));

        let (mut g, mut c, hb) = guard(65536, 10_000);
        c.write_all(b"CONNECT x:1 HTTP/1.1\r\n\r\n").await.unwrap();
        drain(&mut g, 24).await.unwrap();
        let answer = b"HTTP/1.1 405 Method Not Allowed\r\n\r\n";
        g.write_all(answer).await.unwrap();
        g.flush().await.unwrap();
        let mut got = vec![0u8; answer.len()];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got, answer);
        drop(g);
        assert!(taken(&hb).is_none());
    }

    #[tokio::test]
    async fn bytes_read_before_the_guard_count_toward_the_first_head() {
        let (server, mut c) = duplex(1 << 16);
        let hb: Handback = Arc::new(Mutex::new(None));
        let limits = HeadLimits {
            max_bytes: 64,
            timeout: Duration::from_secs(10),
        };
        // 51 bytes before the guard, 20 through it: 71 > 64.
        let first = [b"POST /v1/messages HTTP/1.1\r\nx: ".as_slice(), &[b'a'; 20]].concat();
        let mut g = HeadGuard::new(Box::new(server), limits, hb.clone(), &first);
        c.write_all(&[b'a'; 20]).await.unwrap();
        drain(&mut g, 20).await.unwrap();
        assert!(g.read(&mut [0u8; 8]).await.is_err());
        drop(g);
        let (_, r) = taken(&hb).unwrap();
        assert_eq!(r.kind, Refused::TooLarge);
        assert_eq!(r.path.as_deref(), Some("/v1/messages"));
    }
}
