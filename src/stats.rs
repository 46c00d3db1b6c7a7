//! The `/stats` document: totals since start, latency percentiles
//! over a bounded recent window, errors by provider and by class, provider
//! state and peaks.
//!
//! Recording is lock-free (atomic adds and one atomic store into a ring),
//! so it can run on the request path; all the work (sorting the window,
//! reading /proc) happens when `/stats` is requested.

use crate::app::Runtime;
use crate::gauges;
use crate::name_cache::NameCache;
use crate::outcome::{AttemptResult, ErrorClass, RequestOutcome};
use crate::record::RequestRecord;
use once_cell::sync::Lazy;
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The latency window holds the last `WINDOW_LEN` requests…
pub const WINDOW_LEN: usize = 4096;
/// …of which those that finished within `WINDOW_AGE` count.
pub const WINDOW_AGE: Duration = Duration::from_secs(300);

const CLASSES: usize = ErrorClass::ALL.len();

/// Attempt results per provider: index 0 is success, 1 + class otherwise.
#[derive(Default)]
struct ProviderCounters {
    results: [AtomicU64; 1 + CLASSES],
}

fn result_index(r: AttemptResult) -> usize {
    match r {
        AttemptResult::Success => 0,
        AttemptResult::Failed(c) => 1 + class_index(c),
    }
}

fn class_index(c: ErrorClass) -> usize {
    ErrorClass::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

fn outcome_index(o: RequestOutcome) -> usize {
    RequestOutcome::ALL
        .iter()
        .position(|x| *x == o)
        .unwrap_or(0)
}

/// Recent request durations in a fixed ring of packed atomics:
/// `(finished_at_seconds + 1) << 32 | duration_micros`. Zero is an empty
/// slot. Old entries are overwritten, never freed: memory is constant.
struct LatencyWindow {
    slots: Box<[AtomicU64]>,
    next: AtomicUsize,
    epoch: Instant,
}

impl LatencyWindow {
    fn new(epoch: Instant) -> Self {
        LatencyWindow {
            slots: (0..WINDOW_LEN).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
            epoch,
        }
    }

    fn record(&self, finished: Instant, d: Duration) {
        let secs = finished
            .saturating_duration_since(self.epoch)
            .as_secs()
            .min(u32::MAX as u64 - 1)
            + 1;
        // u32 µs saturate at ~71 min, beyond any total timeout worth having.
        let us = d.as_micros().min(u32::MAX as u128) as u64;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % WINDOW_LEN;
        self.slots[i].store(secs << 32 | us, Ordering::Relaxed);
    }

    /// Durations (µs) of the requests in the window at `now`, sorted.
    fn sorted(&self, now: Instant) -> Vec<u64> {
        let now_secs = now.saturating_duration_since(self.epoch).as_secs() + 1;
        let mut v: Vec<u64> = self
            .slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&x| x != 0 && now_secs.saturating_sub(x >> 32) <= WINDOW_AGE.as_secs())
            .map(|x| x & 0xffff_ffff)
            .collect();
        v.sort_unstable();
        v
    }
}

/// Nearest-rank percentile of sorted data: monotonic in `p`, so
/// p50 ≤ p95 ≤ p99 always holds.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(us: Option<u64>) -> Value {
    match us {
        Some(us) => json!(us as f64 / 1000.0),
        None => Value::Null,
    }
}

pub struct Stats {
    started: Instant,
    outcomes: [AtomicU64; 5],
    /// Requests by final class (errors only).
    final_class: [AtomicU64; CLASSES],
    attempts: [AtomicU64; 1 + CLASSES],
    failovers: AtomicU64,
    stream_interruptions: AtomicU64,
    limiter: [AtomicU64; 2],
    tokens: [AtomicU64; 4],
    peak_rss: AtomicU64,
    providers: NameCache<ProviderCounters>,
    window: LatencyWindow,
}

static STATS: Lazy<Stats> = Lazy::new(|| Stats::new(Instant::now()));

pub fn global() -> &'static Stats {
    &STATS
}

impl Stats {
    pub fn new(now: Instant) -> Stats {
        Stats {
            started: now,
            outcomes: Default::default(),
            final_class: Default::default(),
            attempts: Default::default(),
            failovers: AtomicU64::new(0),
            stream_interruptions: AtomicU64::new(0),
            limiter: Default::default(),
            tokens: Default::default(),
            peak_rss: AtomicU64::new(0),
            providers: NameCache::new(),
            window: LatencyWindow::new(now),
        }
    }

    pub fn attempt_finished(&self, provider: &str, result: AttemptResult) {
        let i = result_index(result);
        self.attempts[i].fetch_add(1, Ordering::Relaxed);
        self.providers
            .get(provider, ProviderCounters::default)
            .results[i]
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn limiter_rejected(&self, scope: &str) {
        let i = usize::from(scope != "global");
        self.limiter[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_interrupted(&self) {
        self.stream_interruptions.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self, rec: &RequestRecord) {
        self.outcomes[outcome_index(rec.outcome_label())].fetch_add(1, Ordering::Relaxed);
        if let Some(c) = rec.class {
            self.final_class[class_index(c)].fetch_add(1, Ordering::Relaxed);
        }
        self.failovers.fetch_add(
            rec.attempts.len().saturating_sub(1) as u64,
            Ordering::Relaxed,
        );
        let u = &rec.usage;
        for (slot, n) in self
            .tokens
            .iter()
            .zip([u.input, u.output, u.cache_read, u.cache_write])
        {
            if n > 0 {
                slot.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.window.record(
            rec.finished.unwrap_or_else(Instant::now),
            rec.response_duration(),
        );
    }

    /// The `/stats` JSON for the current runtime.
    pub fn render(&self, rt: &Runtime, now: Instant) -> Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // One load per counter, so the totals agree with their parts even
        // while requests finish concurrently.
        let outcomes = self.outcomes.each_ref().map(load);
        let by_outcome: Map<String, Value> = RequestOutcome::ALL
            .iter()
            .zip(outcomes)
            .map(|(o, n)| (o.as_str().to_string(), json!(n)))
            .collect();
        let total: u64 = outcomes.iter().sum();
        let success = outcomes[outcome_index(RequestOutcome::Success)];
        let by_class: Map<String, Value> = ErrorClass::ALL
            .iter()
            .zip(&self.final_class)
            .map(|(c, n)| (c.as_str().to_string(), json!(load(n))))
            .collect();
        let attempt_classes =
            |counts: &[AtomicU64; 1 + CLASSES], skip_zero: bool| -> Map<String, Value> {
                std::iter::once("success")
                    .chain(ErrorClass::ALL.iter().map(|c| c.as_str()))
                    .zip(counts.iter())
                    .filter(|(_, n)| !skip_zero || load(n) > 0)
                    .map(|(c, n)| (c.to_string(), json!(load(n))))
                    .collect()
            };
        let mut attempts_by_class = attempt_classes(&self.attempts, false);
        // Attempts never end as concurrency or internal: keep the document
        // to classes an attempt can have.
        attempts_by_class.remove("concurrency");
        attempts_by_class.remove("internal");

        let mut errors_by_provider = Map::new();
        let mut provider_counts = std::collections::HashMap::new();
        for (name, c) in self.providers.entries() {
            let mut by = attempt_classes(&c.results, true);
            let attempts: u64 = c.results.iter().map(load).sum();
            let successes = by.remove("success").and_then(|v| v.as_u64()).unwrap_or(0);
            // A client that left mid-attempt is not the provider's error.
            let client = by.remove("client").and_then(|v| v.as_u64()).unwrap_or(0);
            let errors = attempts.saturating_sub(successes + client);
            provider_counts.insert(name.clone(), (attempts, successes, errors));
            errors_by_provider.insert(name, json!({"total": errors, "by_class": by}));
        }

        let providers: Vec<Value> = rt
            .providers
            .iter()
            .map(|p| {
                let s = p.health.snapshot(now);
                let (attempts, successes, errors) =
                    provider_counts.get(p.name()).copied().unwrap_or_default();
                json!({
                    "name": p.name(),
                    "state": p.state(now).as_str(),
                    "consecutive_failures": s.consecutive_failures,
                    "last_error_class": s.last_error_class.map(|c| c.as_str()),
                    "ttfb_ewma_ms": s.ttfb_ewma.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
                    "attempts": attempts,
                    "successes": successes,
                    "errors": errors,
                })
            })
            .collect();

        let sorted = self.window.sorted(now);
        let rss = gauges::rss_bytes();
        let peak_rss = self
            .peak_rss
            .fetch_max(rss.max(gauges::peak_rss_bytes()), Ordering::Relaxed)
            .max(rss);
        let inflight = gauges::inflight();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": now.saturating_duration_since(self.started).as_secs(),
            "requests": {
                "total": total,
                "success": success,
                "errors": total - success,
                "by_outcome": by_outcome,
            },
            "errors_by_class": by_class,
            "errors_by_provider": errors_by_provider,
            "attempts": {
                "total": self.attempts.iter().map(load).sum::<u64>(),
                "failovers": load(&self.failovers),
                "by_class": attempts_by_class,
            },
            "latency_ms": {
                "window": format!("last {WINDOW_LEN} requests finished within the last {} s", WINDOW_AGE.as_secs()),
                "samples": sorted.len(),
                "p50": ms(percentile(&sorted, 0.50)),
                "p95": ms(percentile(&sorted, 0.95)),
                "p99": ms(percentile(&sorted, 0.99)),
                "max": ms(sorted.last().copied()),
            },
            "stream_interruptions": load(&self.stream_interruptions),
            "limiter_rejections": {"global": load(&self.limiter[0]), "provider": load(&self.limiter[1])},
            "tokens": {
                "input": load(&self.tokens[0]),
                "output": load(&self.tokens[1]),
                "cache_read": load(&self.tokens[2]),
                "cache_write": load(&self.tokens[3]),
            },
            "inflight": {
                "current": inflight,
                "peak": gauges::peak_inflight(),
                "max": rt.config.limits.max_inflight,
            },
            "memory": {"rss_bytes": rss, "peak_rss_bytes": peak_rss},
            "providers": providers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_and_ordered() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), Some(50));
        assert_eq!(percentile(&v, 0.95), Some(95));
        assert_eq!(percentile(&v, 0.99), Some(99));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn window_is_bounded_and_ages_out() {
        let epoch = Instant::now();
        let w = LatencyWindow::new(epoch);
        for i in 0..(WINDOW_LEN as u64 + 10) {
            w.record(epoch, Duration::from_micros(i + 1));
        }
        let s = w.sorted(epoch);
        assert_eq!(s.len(), WINDOW_LEN);
        // The 10 oldest were overwritten.
        assert_eq!(s[0], 11);
        let later = epoch + WINDOW_AGE + Duration::from_secs(2);
        assert!(w.sorted(later).is_empty());
    }

    #[test]
    fn peak_rss_is_read_from_proc() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(gauges::peak_rss_bytes() > 0);
        }
    }
}
