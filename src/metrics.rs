//! Prometheus metrics on a registry of our own, so nothing a
//! dependency registers in the default one leaks into `/metrics`.
//!
//! Every label value is bounded: routes and providers come from the config
//! (requests without a route are `route="none"`), classes and outcomes are
//! closed sets, and the `model` label of token counters keeps the first
//! [`MAX_MODELS`] distinct models and folds the rest into `"other"`.
//!
//! The request path touches metrics once per attempt and once per request.
//! Handles for routes and providers are resolved once and cached in a
//! read-mostly map that is read without locks, so the hot path costs a
//! hash lookup and a few atomic adds.

use crate::app::Runtime;
use crate::health::ProviderState;
use crate::name_cache::NameCache;
use crate::outcome::{AttemptResult, ErrorClass, RequestOutcome};
use crate::record::{AttemptRecord, RequestRecord, Usage};
use crate::tunnel::Direction;
use arc_swap::ArcSwap;
use once_cell::sync::Lazy;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `route` label of requests that matched no route.
pub const NO_ROUTE: &str = "none";
/// `provider` label when no provider answered (never expected for tokens).
pub const NO_PROVIDER: &str = "none";
/// Distinct `model` label values kept before folding into [`OTHER_MODEL`].
pub const MAX_MODELS: usize = 100;
pub const OTHER_MODEL: &str = "other";
/// `model` label of usage reported without a model name.
pub const UNKNOWN_MODEL: &str = "unknown";
/// Longer model names are not plausible and go to "other".
const MAX_MODEL_LEN: usize = 128;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Whole client-observed responses: from a few ms (a local error) to
/// streams of several minutes (total_ms defaults to 15 min).
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
    600.0, 900.0,
];
/// Time spent in steadfast itself: tens of µs when all is well, ms when
/// something is wrong.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,
];
/// Upstream time to first byte: a cached small answer to a long prompt
/// queued at a busy provider.
const TTFB_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
];

/// Attempt classes exposed by `steadfast_upstream_attempts_total`, in the
/// order of the cached handles. `client` (the client left mid-attempt) is an
/// extension: it is not the provider's fault but the attempt did happen.
const ATTEMPT_CLASSES: [&str; 10] = [
    "success",
    "network",
    "timeout",
    "rate_limit",
    "server",
    "auth",
    "request",
    "client",
    "empty",
    "context_length",
];

fn attempt_index(r: AttemptResult) -> Option<usize> {
    match r {
        AttemptResult::Success => Some(0),
        AttemptResult::Failed(c) => match c {
            ErrorClass::Network => Some(1),
            ErrorClass::Timeout => Some(2),
            ErrorClass::RateLimit => Some(3),
            ErrorClass::Server => Some(4),
            ErrorClass::Auth => Some(5),
            ErrorClass::Request => Some(6),
            ErrorClass::Client => Some(7),
            ErrorClass::Empty => Some(8),
            ErrorClass::ContextLength => Some(9),
            ErrorClass::Concurrency | ErrorClass::Internal => None,
        },
    }
}

fn outcome_index(o: RequestOutcome) -> usize {
    match o {
        RequestOutcome::Success => 0,
        RequestOutcome::RequestError => 1,
        RequestOutcome::UpstreamError => 2,
        RequestOutcome::Rejected => 3,
        RequestOutcome::ClientClosed => 4,
    }
}

/// Keeps the set of label values of an unbounded dimension bounded: the
/// first `cap` distinct values are kept, later ones map to "other".
struct BoundedLabels {
    seen: ArcSwap<HashSet<Box<str>>>,
    cap: usize,
}

impl BoundedLabels {
    fn new(cap: usize) -> Self {
        BoundedLabels {
            seen: ArcSwap::from_pointee(HashSet::new()),
            cap,
        }
    }

    fn label<'a>(&self, value: &'a str) -> &'a str {
        if value.is_empty() || value.len() > MAX_MODEL_LEN || value.chars().any(char::is_control) {
            return OTHER_MODEL;
        }
        let seen = self.seen.load();
        if seen.contains(value) {
            return value;
        }
        if seen.len() >= self.cap {
            return OTHER_MODEL;
        }
        drop(seen);
        let mut admitted = false;
        self.seen.rcu(|s| {
            admitted = s.contains(value) || s.len() < self.cap;
            let mut s = HashSet::clone(s);
            if admitted {
                s.insert(value.into());
            }
            s
        });
        if admitted {
            value
        } else {
            OTHER_MODEL
        }
    }
}

struct RouteHandles {
    requests: [IntCounter; 5],
    duration: Histogram,
    overhead: Histogram,
}

struct ProviderHandles {
    attempts: [IntCounter; ATTEMPT_CLASSES.len()],
    ttfb: Histogram,
    first_content: Histogram,
    ejections: IntCounter,
    /// Token counters by (bounded) model label, in `TOKEN_KINDS` order.
    tokens: NameCache<[IntCounter; 4]>,
}

const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_read", "cache_write"];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    attempts: IntCounterVec,
    ttfb: HistogramVec,
    first_content: HistogramVec,
    overhead: HistogramVec,
    failovers: IntCounterVec,
    inflight: IntGauge,
    limiter_rejections: IntCounterVec,
    provider_state: IntGaugeVec,
    provider_disabled: IntGaugeVec,
    key_reloads: IntCounterVec,
    route_available: IntGaugeVec,
    ejections: IntCounterVec,
    stream_interruptions: IntCounterVec,
    tokens: IntCounterVec,
    config_reloads: IntCounterVec,
    websocket_sessions: IntCounterVec,
    websocket_open: IntGaugeVec,
    websocket_bytes: IntCounterVec,
    translations: IntCounterVec,
    stream_resumes: IntCounterVec,
    affinity: IntCounterVec,
    trace_spans_exported: IntCounter,
    trace_spans_dropped: IntCounterVec,
    routes: NameCache<RouteHandles>,
    providers: NameCache<ProviderHandles>,
    models: BoundedLabels,
    /// Serialises scrapes: the state gauges are rebuilt from scratch each
    /// time and a concurrent scrape must not see them half-built.
    scrape: Mutex<()>,
}

static METRICS: Lazy<Metrics> = Lazy::new(|| {
    Metrics::new().expect("metric definitions are static and valid (see the unit tests)")
});

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

/// Count a config reload (SIGHUP or file change); `success` is false when
/// the new config was rejected and the old one keeps serving.
pub fn config_reloaded(success: bool) {
    let result = if success { "success" } else { "failure" };
    global().config_reloads.with_label_values(&[result]).inc();
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, prometheus::Error> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let r = Registry::new();
        let requests = counter_vec(
            &r,
            "steadfast_requests_total",
            "Client requests by route and outcome (one per client request, however many attempts).",
            &["route", "outcome"],
        )?;
        let request_duration = histogram_vec(
            &r,
            "steadfast_request_duration_seconds",
            "Client-observed duration of whole responses.",
            &["route"],
            REQUEST_BUCKETS,
        )?;
        let attempts = counter_vec(
            &r,
            "steadfast_upstream_attempts_total",
            "Upstream attempts by provider and result class.",
            &["provider", "class"],
        )?;
        let ttfb = histogram_vec(
            &r,
            "steadfast_upstream_time_to_first_byte_seconds",
            "From sending an attempt to the upstream's response header.",
            &["provider"],
            TTFB_BUCKETS,
        )?;
        let first_content = histogram_vec(
            &r,
            "steadfast_time_to_first_content_seconds",
            "From sending an attempt to the first content-bearing event of its 2xx stream.",
            &["provider"],
            TTFB_BUCKETS,
        )?;
        let overhead = histogram_vec(
            &r,
            "steadfast_overhead_seconds",
            "Time spent in steadfast itself: request duration minus time waiting on upstreams.",
            &["route"],
            OVERHEAD_BUCKETS,
        )?;
        let failovers = counter_vec(
            &r,
            "steadfast_failovers_total",
            "Moves to another attempt after a failed one, by the provider and class that failed.",
            &["route", "from_provider", "class"],
        )?;
        let inflight = IntGauge::new(
            "steadfast_inflight_requests",
            "Client requests holding a global limiter slot.",
        )?;
        r.register(Box::new(inflight.clone()))?;
        let limiter_rejections = counter_vec(
            &r,
            "steadfast_limiter_rejections_total",
            "Requests refused by a concurrency limiter.",
            &["scope"],
        )?;
        let provider_state = gauge_vec(
            &r,
            "steadfast_provider_state",
            "1 for the provider's current state, 0 for the others.",
            &["provider", "state"],
        )?;
        let provider_disabled = gauge_vec(
            &r,
            "steadfast_provider_disabled",
            "1 while an operator has the provider disabled (admin API), else 0.",
            &["provider"],
        )?;
        let key_reloads = counter_vec(
            &r,
            "steadfast_provider_key_reloads_total",
            "Re-reads of a changed api_key_file: success (new key in use) or failure (old key kept).",
            &["provider", "result"],
        )?;
        let route_available = gauge_vec(
            &r,
            "steadfast_route_available_providers",
            "Providers of the route that are healthy now; 0 makes /health unhealthy.",
            &["route"],
        )?;
        let ejections = counter_vec(
            &r,
            "steadfast_provider_ejections_total",
            "Times a provider's circuit opened.",
            &["provider"],
        )?;
        let stream_interruptions = counter_vec(
            &r,
            "steadfast_stream_interruptions_total",
            "Responses that broke after they were committed to the client.",
            &["provider", "class"],
        )?;
        let tokens = counter_vec(
            &r,
            "steadfast_tokens_total",
            "Tokens reported by providers in JSON and SSE usage.",
            &["provider", "model", "kind"],
        )?;
        let config_reloads = counter_vec(
            &r,
            "steadfast_config_reloads_total",
            "Config reloads by result.",
            &["result"],
        )?;
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        let stream_resumes = counter_vec(
            &r,
            "steadfast_stream_resumes_total",
            "Streams cut mid-answer with resume_streams on, by the provider whose stream broke and what came of it.",
            &["provider", "result"],
        )?;
        let translations = counter_vec(
            &r,
            "steadfast_translations_total",
            "Attempts whose request was translated from the client's dialect into the provider's.",
            &["from_api", "to_api"],
        )?;
        let websocket_sessions = counter_vec(
            &r,
            "steadfast_websocket_sessions_total",
            "WebSocket upgrade requests by how they ended: failed (no tunnel), or how the tunnel ended.",
            &["route", "result"],
        )?;
        let websocket_open = gauge_vec(
            &r,
            "steadfast_websocket_open_sessions",
            "WebSocket tunnels open now.",
            &["route"],
        )?;
        let websocket_bytes = counter_vec(
            &r,
            "steadfast_websocket_bytes_total",
            "Bytes relayed through WebSocket tunnels, as they move.",
            &["route", "direction"],
        )?;
        for scope in ["global", "provider"] {
            limiter_rejections.with_label_values(&[scope]);
        }
        let affinity = counter_vec(
            &r,
            "steadfast_affinity_total",
            "Requests on routes with session affinity: hit (the session's provider led), moved (it was unavailable; the strategy chose).",
            &["route", "result"],
        )?;
        let trace_spans_exported = IntCounter::new(
            "steadfast_trace_spans_exported_total",
            "Trace spans the OTLP receiver accepted.",
        )?;
        r.register(Box::new(trace_spans_exported.clone()))?;
        let trace_spans_dropped = counter_vec(
            &r,
            "steadfast_trace_spans_dropped_total",
            "Trace spans lost: queue_full (the export queue was at telemetry.max_queued_spans), export_failed (the receiver did not take them).",
            &["reason"],
        )?;
        for reason in ["queue_full", "export_failed"] {
            trace_spans_dropped.with_label_values(&[reason]);
        }
        let build_info = gauge_vec(
            &r,
            "steadfast_build_info",
            "Always 1; the version is the label.",
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(process::ProcessMetrics::new()?))?;
        Ok(Metrics {
            registry: r,
            requests,
            request_duration,
            attempts,
            ttfb,
            first_content,
            overhead,
            failovers,
            inflight,
            limiter_rejections,
            provider_state,
            provider_disabled,
            key_reloads,
            route_available,
            ejections,
            stream_interruptions,
            tokens,
            config_reloads,
            websocket_sessions,
            websocket_open,
            websocket_bytes,
            translations,
            stream_resumes,
            affinity,
            trace_spans_exported,
            trace_spans_dropped,
            routes: NameCache::new(),
            providers: NameCache::new(),
            models: BoundedLabels::new(MAX_MODELS),
            scrape: Mutex::new(()),
        })
    }

    fn route(&self, name: &str) -> Arc<RouteHandles> {
        self.routes.get(name, || RouteHandles {
            requests: RequestOutcome::ALL
                .map(|o| self.requests.with_label_values(&[name, o.as_str()])),
            duration: self.request_duration.with_label_values(&[name]),
            overhead: self.overhead.with_label_values(&[name]),
        })
    }

    fn provider(&self, name: &str) -> Arc<ProviderHandles> {
        self.providers.get(name, || ProviderHandles {
            attempts: ATTEMPT_CLASSES.map(|c| self.attempts.with_label_values(&[name, c])),
            ttfb: self.ttfb.with_label_values(&[name]),
            first_content: self.first_content.with_label_values(&[name]),
            ejections: self.ejections.with_label_values(&[name]),
            tokens: NameCache::new(),
        })
    }

    pub fn attempt_finished(&self, a: &AttemptRecord) {
        let h = self.provider(&a.provider);
        match attempt_index(a.result) {
            Some(i) => h.attempts[i].inc(),
            None => self
                .attempts
                .with_label_values(&[a.provider.as_str(), a.result.label()])
                .inc(),
        }
        if let Some(t) = a.ttfb {
            h.ttfb.observe(t.as_secs_f64());
        }
        if let Some(t) = a.first_content {
            h.first_content.observe(t.as_secs_f64());
        }
    }

    pub fn stream_resume(&self, provider: &str, result: &str) {
        self.stream_resumes
            .with_label_values(&[provider, result])
            .inc();
    }

    /// A changed key file was re-read: `success` when its key is now in use,
    /// false when it was unusable and the old key kept.
    pub fn key_reloaded(&self, provider: &str, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.key_reloads
            .with_label_values(&[provider, result])
            .inc();
    }

    pub fn translated(&self, from: crate::config::Api, to: crate::config::Api) {
        self.translations
            .with_label_values(&[from.as_str(), to.as_str()])
            .inc();
    }

    pub fn provider_ejected(&self, provider: &str) {
        self.provider(provider).ejections.inc();
    }

    pub fn limiter_rejected(&self, scope: &str) {
        self.limiter_rejections.with_label_values(&[scope]).inc();
    }

    pub fn stream_interrupted(&self, provider: &str, class: ErrorClass) {
        self.stream_interruptions
            .with_label_values(&[provider, class.as_str()])
            .inc();
    }

    /// Everything counted once per client request.
    pub fn request_finished(&self, rec: &RequestRecord) {
        let route = rec.route.as_deref().unwrap_or(NO_ROUTE);
        let h = self.route(route);
        h.requests[outcome_index(rec.outcome_label())].inc();
        h.duration.observe(rec.response_duration().as_secs_f64());
        h.overhead.observe(rec.overhead().as_secs_f64());
        // Counted from the attempt chain: every attempt followed by another
        // is exactly one failover, whatever path the loop took.
        if rec.attempts.len() > 1 {
            for a in &rec.attempts[..rec.attempts.len() - 1] {
                self.failovers
                    .with_label_values(&[route, a.provider.as_str(), a.result.label()])
                    .inc();
            }
        }
        if let Some(a) = rec.affinity {
            self.affinity.with_label_values(&[route, a.as_str()]).inc();
        }
        if let Some(ws) = &rec.websocket {
            self.websocket_sessions
                .with_label_values(&[route, ws.result()])
                .inc();
        }
        if !rec.usage.is_empty() {
            let provider = rec.provider.as_deref().unwrap_or(NO_PROVIDER);
            let model = rec
                .model
                .as_deref()
                .map_or(UNKNOWN_MODEL, |m| self.models.label(m));
            self.add_tokens(provider, model, &rec.usage);
        }
    }

    /// Trace spans the OTLP receiver accepted.
    pub fn trace_spans_exported(&self, n: u64) {
        self.trace_spans_exported.inc_by(n);
    }

    /// Trace spans lost, and why (`queue_full`, `export_failed`).
    pub fn trace_spans_dropped(&self, reason: &str, n: u64) {
        self.trace_spans_dropped
            .with_label_values(&[reason])
            .inc_by(n);
    }

    /// A WebSocket tunnel opened on `route`: counted open until the handle
    /// is dropped, and its bytes counted as they move.
    pub fn websocket_opened(&self, route: &str) -> OpenTunnel {
        let open = self.websocket_open.with_label_values(&[route]);
        open.inc();
        OpenTunnel {
            open,
            bytes: [Direction::FromClient, Direction::FromUpstream]
                .map(|d| self.websocket_bytes.with_label_values(&[route, d.as_str()])),
        }
    }

    fn add_tokens(&self, provider: &str, model: &str, u: &Usage) {
        let counters = self.provider(provider).tokens.get(model, || {
            TOKEN_KINDS.map(|kind| self.tokens.with_label_values(&[provider, model, kind]))
        });
        for (c, n) in counters
            .iter()
            .zip([u.input, u.output, u.cache_read, u.cache_write])
        {
            c.inc_by(n);
        }
    }

    /// Bring the scrape-time gauges up to date with `rt` and encode
    /// everything in the text format.
    pub fn scrape(&self, rt: &Runtime, now: Instant) -> Result<Vec<u8>, MetricsError> {
        let _serial = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.inflight.set(crate::gauges::inflight() as i64);
        // Rebuilt from the current runtime only, so a provider or route
        // removed by a reload stops being reported.
        self.provider_state.reset();
        self.provider_disabled.reset();
        self.route_available.reset();
        let mut healthy = Vec::with_capacity(rt.providers.len());
        for p in &rt.providers {
            let state = p.state(now);
            healthy.push(state == ProviderState::Healthy);
            for s in ProviderState::ALL {
                self.provider_state
                    .with_label_values(&[p.name(), s.as_str()])
                    .set(i64::from(s == state));
            }
            self.provider_disabled
                .with_label_values(&[p.name()])
                .set(i64::from(state == ProviderState::Disabled));
            if p.settings.key_file.is_some() {
                for result in ["success", "failure"] {
                    self.key_reloads.with_label_values(&[p.name(), result]);
                }
            }
            // Series exist from the start, so rate() and increase() see
            // the first event. A stream can only break as network or timeout.
            self.provider(p.name());
            for class in [ErrorClass::Network, ErrorClass::Timeout] {
                self.stream_interruptions
                    .with_label_values(&[p.name(), class.as_str()]);
            }
        }
        for r in &rt.routes {
            let name = r.settings.name.as_str();
            self.route(name);
            self.websocket_open.with_label_values(&[name]);
            let available = r
                .settings
                .providers
                .iter()
                .filter(|&&i| healthy.get(i).copied().unwrap_or(false))
                .count();
            self.route_available
                .with_label_values(&[name])
                .set(available as i64);
        }
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&families, &mut out)?;
        Ok(out)
    }
}

/// One open WebSocket tunnel in the metrics.
pub struct OpenTunnel {
    open: IntGauge,
    /// In `Direction` order: from the client, from the provider.
    bytes: [IntCounter; 2],
}

impl OpenTunnel {
    pub fn count(&self, dir: Direction, n: u64) {
        let i = match dir {
            Direction::FromClient => 0,
            Direction::FromUpstream => 1,
        };
        self.bytes[i].inc_by(n);
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.open.dec();
    }
}

#[cfg(target_os = "linux")]
mod process {
    use prometheus::core::{Collector, Desc};
    use prometheus::process_collector::ProcessCollector;
    use prometheus::proto::MetricFamily;
    use prometheus::{Counter, Opts};

    const CPU: &str = "process_cpu_seconds_total";
    /// /proc reports CPU time in USER_HZ ticks, which Linux fixes at 100
    /// for user space on every architecture.
    const USER_HZ: f64 = 100.0;

    /// The prometheus crate's process collector, except that CPU time is
    /// exact to the tick: the crate truncates it to whole seconds, which
    /// makes `rate()` of an idle-ish sidecar read as 0 or 1 core.
    pub struct ProcessMetrics {
        inner: ProcessCollector,
        cpu: Counter,
    }

    impl ProcessMetrics {
        pub fn new() -> Result<Self, prometheus::Error> {
            Ok(ProcessMetrics {
                inner: ProcessCollector::for_self(),
                cpu: Counter::with_opts(Opts::new(
                    CPU,
                    "Total user and system CPU time spent in seconds.",
                ))?,
            })
        }
    }

    impl Collector for ProcessMetrics {
        fn desc(&self) -> Vec<&Desc> {
            // The inner collector already describes process_cpu_seconds_total.
            self.inner.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let mut out = self.inner.collect();
            if let Some(secs) = cpu_seconds() {
                let past = self.cpu.get();
                if secs > past {
                    self.cpu.inc_by(secs - past);
                }
                out.retain(|mf| mf.name() != CPU);
                out.extend(self.cpu.collect());
            }
            out
        }
    }

    /// utime + stime of this process, from /proc/self/stat.
    pub fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may contain spaces and parentheses: fields are
        // counted from the last ')'. utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((utime + stime) as f64 / USER_HZ)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    fn rec(
        route: Option<&str>,
        attempts: &[(&str, AttemptResult)],
        class: Option<ErrorClass>,
    ) -> RequestRecord {
        let mut r = RequestRecord::new(Instant::now());
        r.route = route.map(str::to_string);
        r.attempts = attempts
            .iter()
            .map(|(p, res)| AttemptRecord::new(p, *res))
            .collect();
        r.provider = attempts.last().map(|a| a.0.to_string());
        r.class = class;
        r.finished = Some(Instant::now());
        r
    }

    fn text(m: &Metrics) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn definitions_register_and_carry_build_info() {
        let m = Metrics::new().unwrap();
        let t = text(&m);
        assert!(
            t.contains(&format!(
                "steadfast_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{t}"
        );
        assert!(
            t.contains("steadfast_config_reloads_total{result=\"failure\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("steadfast_limiter_rejections_total{scope=\"global\"} 0"),
            "{t}"
        );
    }

    #[test]
    fn a_failover_is_one_request_and_two_attempts() {
        let m = Metrics::new().unwrap();
        let mut failed = AttemptRecord::new("p1", AttemptResult::Failed(ErrorClass::Server));
        failed.ttfb = Some(Duration::from_millis(5));
        m.attempt_finished(&failed);
        let mut served = AttemptRecord::new("p2", AttemptResult::Success);
        served.ttfb = Some(Duration::from_millis(7));
        served.first_content = Some(Duration::from_millis(9));
        m.attempt_finished(&served);
        m.request_finished(&rec(
            Some("messages"),
            &[
                ("p1", AttemptResult::Failed(ErrorClass::Server)),
                ("p2", AttemptResult::Success),
            ],
            None,
        ));
        let t = text(&m);
        assert!(
            t.contains("steadfast_requests_total{outcome=\"success\",route=\"messages\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("steadfast_requests_total{outcome=\"upstream_error\",route=\"messages\"} 0"),
            "{t}"
        );
        assert!(t.contains("steadfast_failovers_total{class=\"server\",from_provider=\"p1\",route=\"messages\"} 1"), "{t}");
        assert!(
            t.contains("steadfast_upstream_attempts_total{class=\"server\",provider=\"p1\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("steadfast_upstream_attempts_total{class=\"success\",provider=\"p2\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("steadfast_upstream_time_to_first_byte_seconds_count{provider=\"p2\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("steadfast_time_to_first_content_seconds_count{provider=\"p2\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("steadfast_time_to_first_content_seconds_count{provider=\"p1\"} 0"),
            "{t}"
        );
    }

    #[test]
    fn requests_without_a_route_are_labelled_none() {
        let m = Metrics::new().unwrap();
        m.request_finished(&rec(None, &[], Some(ErrorClass::Request)));
        assert!(text(&m)
            .contains("steadfast_requests_total{outcome=\"request_error\",route=\"none\"} 1"));
    }

    #[test]
    fn failed_client_auth_is_a_request_error() {
        let m = Metrics::new().unwrap();
        m.request_finished(&rec(Some("messages"), &[], Some(ErrorClass::Auth)));
        m.request_finished(&rec(
            Some("messages"),
            &[("p1", AttemptResult::Failed(ErrorClass::Auth))],
            Some(ErrorClass::Auth),
        ));
        let t = text(&m);
        assert!(
            t.contains("steadfast_requests_total{outcome=\"request_error\",route=\"messages\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("steadfast_requests_total{outcome=\"upstream_error\",route=\"messages\"} 1"),
            "{t}"
        );
    }

    #[test]
    fn websocket_sessions_are_counted_by_result_and_open_tunnels_by_gauge() {
        let m = Metrics::new().unwrap();
        let open = m.websocket_opened("rt");
        open.count(Direction::FromClient, 5);
        open.count(Direction::FromUpstream, 7);
        assert!(text(&m).contains("steadfast_websocket_open_sessions{route=\"rt\"} 1"));
        drop(open);
        let mut tunnelled = rec(Some("rt"), &[("p1", AttemptResult::Success)], None);
        // A ten-second session whose handshake took 3 ms.
        tunnelled.started = Instant::now() - Duration::from_secs(10);
        tunnelled.ttfb = Some(Duration::from_millis(3));
        tunnelled.websocket = Some(crate::record::WebSocketRecord {
            end: Some(crate::tunnel::TunnelEnd::IdleTimeout),
            ..Default::default()
        });
        m.request_finished(&tunnelled);
        let mut refused = rec(Some("rt"), &[], Some(ErrorClass::Network));
        refused.websocket = Some(Default::default());
        m.request_finished(&refused);
        let t = text(&m);
        assert!(
            t.contains("steadfast_websocket_open_sessions{route=\"rt\"} 0"),
            "{t}"
        );
        assert!(
            t.contains("steadfast_websocket_bytes_total{direction=\"from_client\",route=\"rt\"} 5"),
            "{t}"
        );
        assert!(
            t.contains(
                "steadfast_websocket_bytes_total{direction=\"from_upstream\",route=\"rt\"} 7"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "steadfast_websocket_sessions_total{result=\"idle_timeout\",route=\"rt\"} 1"
            ),
            "{t}"
        );
        assert!(
            t.contains("steadfast_websocket_sessions_total{result=\"failed\",route=\"rt\"} 1"),
            "{t}"
        );
        // The tunnel's request duration is its handshake, not the session.
        assert!(
            t.contains("steadfast_request_duration_seconds_bucket{route=\"rt\",le=\"0.005\"} 2"),
            "{t}"
        );
    }

    #[test]
    fn model_label_is_bounded() {
        let b = BoundedLabels::new(3);
        assert_eq!(b.label("a"), "a");
        assert_eq!(b.label("b"), "b");
        assert_eq!(b.label("c"), "c");
        assert_eq!(b.label("d"), OTHER_MODEL);
        assert_eq!(b.label("a"), "a");
        assert_eq!(b.label(""), OTHER_MODEL);
        assert_eq!(b.label(&"x".repeat(500)), OTHER_MODEL);
    }

    #[test]
    fn tokens_are_counted_per_provider_model_and_kind() {
        let m = Metrics::new().unwrap();
        let mut r = rec(Some("messages"), &[("p1", AttemptResult::Success)], None);
        r.model = Some("claude-x".into());
        r.usage = Usage {
            input: 10,
            output: 3,
            cache_read: 0,
            cache_write: 2,
        };
        m.request_finished(&r);
        let t = text(&m);
        assert!(
            t.contains(
                "steadfast_tokens_total{kind=\"input\",model=\"claude-x\",provider=\"p1\"} 10"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "steadfast_tokens_total{kind=\"cache_write\",model=\"claude-x\",provider=\"p1\"} 2"
            ),
            "{t}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_cpu_time_is_not_truncated_to_whole_seconds() {
        // Burn CPU until the time so far is not a whole number of seconds.
        let mut x = 0u64;
        let before = loop {
            let secs = process::cpu_seconds().unwrap();
            if secs.fract() >= 0.05 {
                break secs;
            }
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        };
        let t = text(&Metrics::new().unwrap());
        let line = t
            .lines()
            .find(|l| l.starts_with("process_cpu_seconds_total "))
            .unwrap_or_else(|| panic!("{t}"));
        let v: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        // Truncation would report floor(before) < before.
        assert!(v >= before, "{line} < {before}");
        assert_eq!(
            t.matches("# TYPE process_cpu_seconds_total counter")
                .count(),
            1,
            "{t}"
        );
        assert!(t.contains("process_resident_memory_bytes"), "{t}");
    }

    /// Every metric family steadfast exposes, whether or not it has a
    /// series yet: the descriptors of every collector field (the pattern is
    /// exhaustive, so a new metric field does not compile until it is named
    /// here), plus what a fresh registry already exposes (build info, the
    /// process collector).
    fn family_names(m: &Metrics) -> BTreeSet<String> {
        use prometheus::core::Collector;
        let Metrics {
            registry,
            requests,
            request_duration,
            attempts,
            ttfb,
            first_content,
            overhead,
            failovers,
            inflight,
            limiter_rejections,
            provider_state,
            provider_disabled,
            key_reloads,
            route_available,
            ejections,
            stream_interruptions,
            tokens,
            config_reloads,
            websocket_sessions,
            websocket_open,
            websocket_bytes,
            translations,
            stream_resumes,
            affinity,
            trace_spans_exported,
            trace_spans_dropped,
            routes: _,
            providers: _,
            models: _,
            scrape: _,
        } = m;
        let collectors: [&dyn Collector; 25] = [
            requests,
            request_duration,
            attempts,
            ttfb,
            first_content,
            overhead,
            failovers,
            inflight,
            limiter_rejections,
            provider_state,
            provider_disabled,
            key_reloads,
            route_available,
            ejections,
            stream_interruptions,
            tokens,
            config_reloads,
            websocket_sessions,
            websocket_open,
            websocket_bytes,
            translations,
            stream_resumes,
            affinity,
            trace_spans_exported,
            trace_spans_dropped,
        ];
        let mut names: BTreeSet<String> = collectors
            .iter()
            .flat_map(|c| c.desc())
            .map(|d| d.fq_name.clone())
            .collect();
        names.extend(registry.gather().iter().map(|f| f.name().to_string()));
        names
    }

    /// docs/reference.md names every metric, and names no metric that
    /// does not exist (a histogram's `_bucket`, `_sum`, `_count` series
    /// count as their family).
    #[test]
    fn reference_doc_lists_exactly_the_exposed_metrics() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let names = family_names(&Metrics::new().unwrap());
        assert!(names.contains("steadfast_build_info"), "{names:?}");
        assert!(names.contains("steadfast_tokens_total"), "{names:?}");
        let word = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        let mentioned: BTreeSet<&str> = doc
            .split(|c: char| !word(c))
            .filter(|w| w.starts_with("steadfast_") || w.starts_with("process_"))
            .collect();
        let undocumented: Vec<&String> = names
            .iter()
            .filter(|n| !mentioned.contains(n.as_str()))
            .collect();
        let family = |w: &str| -> bool {
            names.contains(w)
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| w.strip_suffix(s).is_some_and(|f| names.contains(f)))
        };
        let unknown: Vec<&&str> = mentioned
            .iter()
            // The process collector is registered on Linux only.
            .filter(|w| !family(w) && (cfg!(target_os = "linux") || w.starts_with("steadfast_")))
            .collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "docs/reference.md is out of step with Metrics::new():\n  exposed but not \
             documented: {undocumented:?}\n  documented but not exposed: {unknown:?}"
        );
    }

    #[test]
    fn histogram_buckets_are_increasing() {
        for b in [REQUEST_BUCKETS, OVERHEAD_BUCKETS, TTFB_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(OVERHEAD_BUCKETS[0], 0.00001);
        assert_eq!(*TTFB_BUCKETS.last().unwrap(), 60.0);
    }
}
