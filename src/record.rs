//! What happened to one client request: filled in by the request path,
//! consumed once at the end by logs, metrics and stats.

use crate::affinity::{AffinityResult, SessionSource};
use crate::otel::TraceContext;
use crate::outcome::{AttemptResult, ErrorClass, RequestOutcome};
use crate::tunnel::TunnelEnd;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub provider: String,
    pub result: AttemptResult,
    /// When the attempt began (its trace span starts here).
    pub started: Instant,
    /// The attempt's trace span, sent upstream in `traceparent`; 0 when
    /// the request is not traced.
    pub span_id: u64,
    /// Upstream status, when one was received.
    pub status: Option<u16>,
    /// From sending the request to the upstream's response header.
    pub ttfb: Option<Duration>,
    /// The provider's own id for the request (`request-id`, `x-request-id`),
    /// which its support asks for.
    pub upstream_request_id: Option<String>,
    /// From sending the request to the first content-bearing event of a
    /// 2xx stream.
    pub first_content: Option<Duration>,
    /// The attempt failed inside a 2xx, before its first content.
    pub pre_content: bool,
    /// `client->provider` dialects of a translated attempt.
    pub translated: Option<String>,
    /// How long the attempt waited on the provider before it ended or its
    /// response was committed.
    pub waited: Duration,
}

impl AttemptRecord {
    /// An attempt with nothing known beyond its provider and result.
    pub fn new(provider: &str, result: AttemptResult) -> AttemptRecord {
        AttemptRecord {
            provider: provider.to_string(),
            result,
            started: Instant::now(),
            span_id: 0,
            status: None,
            ttfb: None,
            upstream_request_id: None,
            first_content: None,
            pre_content: false,
            translated: None,
            waited: Duration::ZERO,
        }
    }
}

/// Token usage reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// A WebSocket upgrade request: whether it became a tunnel, and how that
/// tunnel ended.
#[derive(Debug, Clone, Default)]
pub struct WebSocketRecord {
    /// How the tunnel ended; `None` when none was established.
    pub end: Option<TunnelEnd>,
    /// Key-free description of what broke, when a side did.
    pub detail: Option<String>,
    pub from_client: u64,
    pub from_upstream: u64,
    /// From the client's 101 to the end of the tunnel.
    pub open_for: Duration,
}

impl WebSocketRecord {
    /// The `result` label of `steadfast_websocket_sessions_total`.
    pub fn result(&self) -> &'static str {
        self.end.map_or("failed", TunnelEnd::as_str)
    }
}

#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub request_id: String,
    pub started: Instant,
    pub method: String,
    /// Path only: query strings can carry keys and are never recorded.
    pub path: String,
    pub route: Option<String>,
    /// The provider whose response the client got.
    pub provider: Option<String>,
    pub attempts: Vec<AttemptRecord>,
    pub status: u16,
    /// Final class; `None` for a success.
    pub class: Option<ErrorClass>,
    /// Client-observed time to the response header.
    pub ttfb: Option<Duration>,
    /// Time spent waiting on upstreams (connect, send, headers, body reads).
    pub upstream_wait: Duration,
    /// Set when a committed response broke (class of the break).
    pub stream_interrupted: Option<ErrorClass>,
    /// Limiter that refused the request: "global" or "provider".
    pub rejected_scope: Option<&'static str>,
    pub model: Option<String>,
    pub usage: Usage,
    /// A stream cut mid-text was continued on another provider: the one
    /// whose stream broke, and about how many tokens the client had then.
    pub resumed_from: Option<String>,
    pub resumed_at_tokens: Option<u64>,
    /// The continuation repeated the end of the delivered text and the
    /// repetition was trimmed at the seam.
    pub resumed_overlap_trimmed: Option<bool>,
    /// Set for WebSocket upgrade requests.
    pub websocket: Option<WebSocketRecord>,
    /// Set while tracing is on ([`crate::otel`]).
    pub trace: Option<Box<TraceContext>>,
    /// On a route with session affinity: what it did, and where the
    /// session key came from.
    pub affinity: Option<AffinityResult>,
    pub session_source: Option<SessionSource>,
    pub finished: Option<Instant>,
}

impl RequestRecord {
    pub fn new(started: Instant) -> Self {
        RequestRecord {
            request_id: String::new(),
            started,
            method: String::new(),
            path: String::new(),
            route: None,
            provider: None,
            attempts: Vec::new(),
            status: 0,
            class: None,
            ttfb: None,
            upstream_wait: Duration::ZERO,
            stream_interrupted: None,
            rejected_scope: None,
            model: None,
            usage: Usage::default(),
            resumed_from: None,
            resumed_at_tokens: None,
            resumed_overlap_trimmed: None,
            websocket: None,
            trace: None,
            affinity: None,
            session_source: None,
            finished: None,
        }
    }

    pub fn duration(&self) -> Duration {
        self.finished
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(self.started)
    }

    /// How long the client waited for its response: the whole request,
    /// except for a WebSocket tunnel, whose response is its 101 (the
    /// session after it can last an hour and says nothing about latency).
    pub fn response_duration(&self) -> Duration {
        match (&self.websocket, self.ttfb) {
            (Some(ws), Some(handshake)) if ws.end.is_some() => handshake,
            _ => self.duration(),
        }
    }

    /// Time spent in steadfast itself.
    pub fn overhead(&self) -> Duration {
        self.duration().saturating_sub(self.upstream_wait)
    }

    pub fn outcome(&self) -> RequestOutcome {
        RequestOutcome::from_class(self.class)
    }

    /// The `outcome` label of a finished request in metrics, stats and the
    /// access log. A client turned away by steadfast's own client auth made
    /// no upstream attempt: that is the client's error, not an upstream
    /// one, whatever its class says.
    pub fn outcome_label(&self) -> RequestOutcome {
        match self.outcome() {
            RequestOutcome::UpstreamError
                if self.class == Some(ErrorClass::Auth) && self.attempts.is_empty() =>
            {
                RequestOutcome::RequestError
            }
            o => o,
        }
    }
}
