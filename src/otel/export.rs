//! The export side: a bounded queue that request tasks hand finished spans
//! to without waiting, and a background service that sends them in batches
//! to the OTLP/gRPC receiver (`opentelemetry-otlp`'s tonic exporter).
//!
//! The bound counts spans from the moment they are queued until their
//! export has ended, so memory stays bounded while the receiver is slow or
//! gone. Spans that find the queue full, or whose export fails, are
//! dropped and counted in `steadfast_trace_spans_dropped_total{reason}`;
//! nothing on the request path ever waits for the receiver.

use crate::logging::event;
use crate::metrics;
use async_trait::async_trait;
use log::Level;
use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Spans sent in one export at most (the OpenTelemetry SDK default).
const MAX_BATCH: usize = 512;
/// How long a span waits for a batch to fill before it is sent anyway.
const SCHEDULE_DELAY: Duration = Duration::from_secs(1);
/// One log line per this interval at most while exports keep failing.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

enum Msg {
    Spans(Vec<SpanData>),
    /// Export what is queued, then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The request side of the queue.
pub(super) struct Sink {
    tx: mpsc::UnboundedSender<Msg>,
    queued: Arc<AtomicUsize>,
    max: usize,
}

impl Sink {
    /// Queue one request's spans, or drop and count them when the queue
    /// is full. Never waits.
    pub(super) fn submit(&self, spans: Vec<SpanData>) {
        let n = spans.len();
        if !reserve(&self.queued, n, self.max) {
            metrics::global().trace_spans_dropped("queue_full", n as u64);
            return;
        }
        if self.tx.send(Msg::Spans(spans)).is_err() {
            // The exporter is gone (the process is stopping).
            self.queued.fetch_sub(n, Ordering::Relaxed);
            metrics::global().trace_spans_dropped("export_failed", n as u64);
        }
    }

    /// Export what is queued, waiting at most `limit` (at exit).
    pub(super) fn flush(&self, limit: Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(limit);
        }
    }
}

/// Take room for `n` spans if the queue has it.
fn reserve(queued: &AtomicUsize, n: usize, max: usize) -> bool {
    queued
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
            (q + n <= max).then_some(q + n)
        })
        .is_ok()
}

/// The background service that owns the OTLP exporter.
pub(super) struct Exporter {
    rx: Mutex<Option<mpsc::UnboundedReceiver<Msg>>>,
    queued: Arc<AtomicUsize>,
    endpoint: String,
    timeout: Duration,
}

pub(super) fn channel(endpoint: &str, max_queued: usize, timeout: Duration) -> (Sink, Exporter) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Sink {
            tx,
            queued: queued.clone(),
            max: max_queued,
        },
        Exporter {
            rx: Mutex::new(Some(rx)),
            queued,
            endpoint: endpoint.to_string(),
            timeout,
        },
    )
}

/// `service.name` is `steadfast` unless the standard variables
/// (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`) say otherwise.
fn resource() -> Resource {
    let service_name = Key::from_static_str("service.name");
    let from_env = Resource::builder().build();
    let named = from_env
        .get(&service_name)
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let b = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        b.build()
    } else {
        b.with_service_name("steadfast").build()
    }
}

struct Batcher {
    exporter: opentelemetry_otlp::SpanExporter,
    queued: Arc<AtomicUsize>,
    batch: Vec<SpanData>,
    last_failure_log: Option<Instant>,
}

impl Batcher {
    async fn export(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let spans = std::mem::take(&mut self.batch);
        let n = spans.len();
        let result = self.exporter.export(spans).await;
        self.queued.fetch_sub(n, Ordering::Relaxed);
        match result {
            Ok(()) => metrics::global().trace_spans_exported(n as u64),
            Err(e) => {
                metrics::global().trace_spans_dropped("export_failed", n as u64);
                if self
                    .last_failure_log
                    .is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY)
                {
                    self.last_failure_log = Some(Instant::now());
                    event(Level::Warn, "trace_export_failed")
                        .field("spans", n)
                        .field("error", e.to_string())
                        .emit();
                }
            }
        }
    }

    async fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Spans(s) => {
                self.batch.extend(s);
                if self.batch.len() >= MAX_BATCH {
                    self.export().await;
                }
            }
            Msg::Flush(done) => {
                self.export().await;
                let _ = done.send(());
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Exporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = self.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        // Built here: its gRPC channel lives on this service's runtime.
        let built = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(self.endpoint.clone())
            .with_timeout(self.timeout)
            .build();
        let mut exporter = match built {
            Ok(e) => e,
            Err(e) => {
                event(Level::Error, "trace_export_failed")
                    .field("error", format!("cannot build the OTLP exporter: {e}"))
                    .emit();
                // Keep draining, so the queue's bound and counters hold.
                while let Some(msg) = rx.recv().await {
                    if let Msg::Spans(s) = msg {
                        self.queued.fetch_sub(s.len(), Ordering::Relaxed);
                        metrics::global().trace_spans_dropped("export_failed", s.len() as u64);
                    }
                }
                return;
            }
        };
        exporter.set_resource(&resource());
        let mut b = Batcher {
            exporter,
            queued: self.queued.clone(),
            batch: Vec::new(),
            last_failure_log: None,
        };
        let mut tick = tokio::time::interval(SCHEDULE_DELAY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Shutdown only hurries the export on: requests still draining
        // finish after it, and their spans count too. The last ones are
        // flushed by the exit itself (`flush_at_exit`).
        let mut stopping = false;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => b.take(m).await,
                    None => break,
                },
                _ = tick.tick() => b.export().await,
                changed = shutdown.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        while let Ok(m) = rx.try_recv() {
                            b.take(m).await;
                        }
                        b.export().await;
                    }
                }
            }
        }
        b.export().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_bound_counts_spans_not_requests() {
        let q = AtomicUsize::new(0);
        assert!(reserve(&q, 3, 4));
        assert!(!reserve(&q, 2, 4), "3 + 2 spans exceed 4");
        assert!(reserve(&q, 1, 4));
        assert!(!reserve(&q, 1, 4));
        q.fetch_sub(4, Ordering::Relaxed);
        assert!(reserve(&q, 4, 4));
    }
}
