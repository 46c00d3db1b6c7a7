//! The client connection edge: everything between accepting a connection
//! and Pingora handing a parsed request to [`crate::proxy`].
//!
//! Pingora's own connection loop (`ServerApp` for any `HttpServerApp`)
//! reads HTTP/1 heads up to a hard-coded 1 MiB with only a per-read
//! timeout, waits for the h2c preface with no timeout at all, and answers a
//! head it cannot parse with a bare `400` that no hook sees. [`Edge`]
//! replaces that loop for the proxy listener: it tells h2c from HTTP/1 under
//! `limits.header_timeout_ms`, hands h2 connections to Pingora with
//! `limits.max_header_bytes` as the h2 header-list limit, and runs the
//! HTTP/1 keep-alive loop itself over a `guard::HeadGuard`, which bounds
//! each head's size and time. A head refused there is answered by
//! `refuse` in the client's dialect and counted like any request.

mod guard;
mod refuse;
mod scan;

use crate::app::App;
use crate::proxy::SteadfastProxy;
use async_trait::async_trait;
use bytes::BytesMut;
pub use guard::REFUSAL;
use guard::{Handback, HeadGuard, HeadLimits};
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::v2::server::{default_h2_options, H2Options};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

/// The h2c connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first read of a connection: Pingora's initial request-head buffer.
/// Not smaller than the connection's read buffer (`server.rs`), so the read
/// goes straight into this buffer instead of through that one.
const FIRST_READ: usize = 4096;

/// Idle time allowed between requests on a keep-alive connection (the value
/// Pingora's own loop sets).
const KEEPALIVE_IDLE_SECS: u64 = 60;

/// The proxy listener's connection handler.
pub struct Edge {
    front: Arc<Front>,
    app: Arc<App>,
}

impl Edge {
    pub fn new(proxy: HttpProxy<SteadfastProxy>, app: Arc<App>) -> Edge {
        Edge {
            front: Arc::new(Front {
                proxy: Arc::new(proxy),
                app: app.clone(),
            }),
            app,
        }
    }

    fn head_limits(&self) -> HeadLimits {
        let rt = self.app.runtime();
        HeadLimits {
            max_bytes: rt.config.limits.max_header_bytes,
            timeout: rt.config.limits.header_timeout,
        }
    }

    /// Serve an HTTP/1 connection: Pingora's keep-alive loop, with every
    /// request head read through a [`HeadGuard`].
    async fn serve_h1(&self, stream: Stream, read: BytesMut, shutdown: &ShutdownWatch) {
        let handback: Handback = Arc::new(Mutex::new(None));
        let guard = HeadGuard::new(stream, self.head_limits(), handback.clone(), &read);
        let mut session = ServerSession::new_http1(Box::new(guard));
        if !read.is_empty() {
            session.set_pipelined_prefix(read);
        }
        session.set_keepalive(if *shutdown.borrow() {
            None
        } else {
            Some(KEEPALIVE_IDLE_SECS)
        });
        session.set_keepalive_reuses_remaining(
            self.front
                .server_options()
                .and_then(|o| o.keepalive_request_limit),
        );
        loop {
            let Some(reused) = self.front.process_new_http(session, shutdown).await else {
                let refused = handback.lock().ok().and_then(|mut slot| slot.take());
                if let Some((stream, refusal)) = refused {
                    refuse::answer(&self.app, stream, refusal).await;
                }
                return;
            };
            let (stream, persistent) = reused.consume();
            let Some(stream) = rearm(stream, self.head_limits()) else {
                return;
            };
            session = ServerSession::new_http1(stream);
            if let Some(p) = persistent {
                p.apply_to_session(&mut session);
            }
        }
    }
}

/// Watch the next head on a connection coming back from a request.
fn rearm(stream: Stream, limits: HeadLimits) -> Option<Stream> {
    // Every HTTP/1 stream handed to Pingora here is a HeadGuard.
    let mut guard = stream.into_any().downcast::<HeadGuard>().ok()?;
    guard.arm(limits);
    Some(guard)
}

/// Called by the request path once Pingora has parsed a request head: from
/// here on the connection carries the request's body, not head bytes.
/// Returns the length of an HTTP/1 head as Pingora parsed it (request line,
/// fields and the empty line).
pub fn head_accepted(s: &ServerSession) -> Option<usize> {
    let h1 = s.as_http1()?;
    if let Some(g) = h1.stream().as_ref().as_any().downcast_ref::<HeadGuard>() {
        g.accept();
    }
    Some(h1.get_headers_raw_bytes().len())
}

/// The message of a 431 for a head over `max` bytes.
pub fn too_large_message(max: usize) -> String {
    refuse::too_large(max)
}

enum Protocol {
    /// HTTP/1, with the bytes read to find out.
    H1(BytesMut),
    /// h2 (by h2c preface or ALPN) or a custom ALPN: Pingora's own loop.
    Other,
}

/// Tell h2c from HTTP/1. Pingora peeks exactly 24 bytes for the preface,
/// so an HTTP/1 request shorter than that waits for bytes that never come;
/// here one ordinary read usually decides, and its bytes go to Pingora's
/// parser as they are (a pipelined prefix), without being read twice.
async fn sniff(mut stream: Stream, h2c: bool) -> std::io::Result<(Stream, Protocol)> {
    if stream.get_ssl_digest().is_some() {
        let p = match stream.selected_alpn_proto() {
            Some(ALPN::H2) | Some(ALPN::Custom(_)) => Protocol::Other,
            _ => Protocol::H1(BytesMut::new()),
        };
        return Ok((stream, p));
    }
    if !h2c {
        return Ok((stream, Protocol::H1(BytesMut::new())));
    }
    let mut buf = BytesMut::with_capacity(FIRST_READ);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Ok((stream, Protocol::H1(buf)));
        }
        if n == H2_PREFACE.len() {
            // Put the bytes back for Pingora's h2 handshake, which peeks
            // them again. Plaintext connections are Pingora's TCP streams.
            let mut l4 = stream
                .into_any()
                .downcast::<L4Stream>()
                .map_err(|_| std::io::Error::other("h2c on a stream that cannot rewind"))?;
            l4.rewind(&buf);
            return Ok((l4, Protocol::Other));
        }
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let h2c = self.front.server_options().is_some_and(|o| o.h2c);
        let limit = self.head_limits().timeout;
        // A connection that sends nothing recognisable in time is closed
        // silently: there is no request to answer.
        match tokio::time::timeout(limit, sniff(stream, h2c)).await {
            Ok(Ok((stream, Protocol::H1(read)))) => self.serve_h1(stream, read, shutdown).await,
            // Pingora's loop peeks again (from the bytes put back) and
            // serves h2 with `Front::h2_options`.
            Ok(Ok((stream, Protocol::Other))) => {
                return self.front.process_new(stream, shutdown).await
            }
            Ok(Err(_)) | Err(_) => {}
        }
        None
    }

    async fn cleanup(&self) {
        // Wakes keep-alive connections waiting for their next request.
        self.front.proxy.http_cleanup().await;
    }
}

/// Pingora's proxy app, with the h2 header-list limit taken from the
/// config for each new connection.
struct Front {
    proxy: Arc<HttpProxy<SteadfastProxy>>,
    app: Arc<App>,
}

#[async_trait]
impl HttpServerApp for Front {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.proxy.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        let mut o = default_h2_options();
        let max = self.app.runtime().config.limits.max_header_bytes;
        // Validated to at most 1 MiB.
        o.max_header_list_size(u32::try_from(max).unwrap_or(u32::MAX));
        Some(o)
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.proxy.server_options.as_ref()
    }

    async fn http_cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
