//! Provider health: a passive circuit breaker with jittered exponential
//! ejection and single-probe half-open recovery, rate-limit cooldowns, the
//! verdict of active probes, and a peak-EWMA of time to first byte.
//!
//! The state machine is pure: every call takes `now`, so tests drive it with
//! a synthetic clock, and it returns the transitions it made instead of
//! logging them, so the caller owns metrics and logs. Active probes live
//! in [`probe`].

pub mod probe;

use crate::config::HealthSettings;
use crate::outcome::{AttemptResult, ErrorClass};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The label shown in `/health`, `/stats` and `steadfast_provider_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderState {
    Healthy,
    Ejected,
    CoolingDown,
    Unhealthy,
}

impl ProviderState {
    pub const ALL: [ProviderState; 4] = [
        ProviderState::Healthy,
        ProviderState::Ejected,
        ProviderState::CoolingDown,
        ProviderState::Unhealthy,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Healthy => "healthy",
            ProviderState::Ejected => "ejected",
            ProviderState::CoolingDown => "cooling_down",
            ProviderState::Unhealthy => "unhealthy",
        }
    }
}

/// Parameters of the breaker, from `health.*`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub eject_after_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_retry_after: Duration,
}

impl Policy {
    pub fn from_settings(h: &HealthSettings) -> Policy {
        Policy {
            eject_after_failures: h.eject_after_failures,
            base_ejection: h.base_ejection,
            max_ejection: h.max_ejection,
            max_retry_after: h.max_retry_after,
        }
    }

    /// Ceiling of the n-th consecutive ejection (n from 0): base · 2ⁿ, capped.
    pub fn backoff_ceiling(&self, n: u32) -> Duration {
        let factor = 1u64.checked_shl(n.min(32)).unwrap_or(u64::MAX);
        let ms = (self.base_ejection.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(self.max_ejection)
    }
}

/// Full jitter (uniform in [0, ceiling]), but never below 1/10 of the ceiling
/// nor below 1 ms: a zero-length ejection would re-admit a dead provider at
/// once and defeat the breaker.
pub fn jittered(ceiling: Duration, unit: f64) -> Duration {
    let floor = ceiling / 10;
    let d = ceiling.mul_f64(unit.clamp(0.0, 1.0)).max(floor);
    d.max(Duration::from_millis(1))
}

/// A state change worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    Ejected {
        for_: Duration,
        class: ErrorClass,
        consecutive_ejections: u32,
    },
    Recovered,
    CoolingDown {
        for_: Duration,
    },
}

/// Whether a provider may take an attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// The ejection has elapsed and no probe is out: the next attempt is the
    /// half-open probe.
    ProbeReady,
    Unavailable(ProviderState),
}

#[derive(Debug, Clone, Default)]
struct Breaker {
    consecutive_failures: u32,
    consecutive_ejections: u32,
    /// Set while the circuit is open (or half-open once the time has passed).
    ejected_until: Option<Instant>,
    probe_in_flight: bool,
    cooldown_until: Option<Instant>,
    last_error_class: Option<ErrorClass>,
    last_failure_at: Option<Instant>,
    /// Set by active probes; cleared by a passing probe or a real success.
    probe_failing: bool,
}

/// Snapshot for `/health` and `/stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshot {
    pub state: ProviderState,
    pub consecutive_failures: u32,
    pub ejected_until: Option<Instant>,
    pub cooldown_until: Option<Instant>,
    pub last_error_class: Option<ErrorClass>,
    pub ttfb_ewma: Option<Duration>,
}

/// Health of one provider; shared across config reloads by provider name.
pub struct ProviderHealth {
    breaker: Mutex<Breaker>,
    /// Peak-EWMA of time to first byte, in nanoseconds (0 = no sample yet).
    ewma_ns: AtomicU64,
    ewma_at_ns: AtomicU64,
    epoch: Instant,
    /// Attempts in flight to this provider (least_latency load term).
    pub inflight: AtomicUsize,
}

impl Default for ProviderHealth {
    fn default() -> Self {
        ProviderHealth::new()
    }
}

/// Decay constant of the latency EWMA.
const EWMA_TAU: Duration = Duration::from_secs(10);

impl ProviderHealth {
    pub fn new() -> Self {
        ProviderHealth {
            breaker: Mutex::new(Breaker::default()),
            ewma_ns: AtomicU64::new(0),
            ewma_at_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            inflight: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // A panic while holding this lock cannot leave the breaker in a
        // state worse than stale counters, so recover rather than propagate.
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn availability(&self, now: Instant) -> Availability {
        let b = self.lock();
        availability(&b, now)
    }

    /// Claim the right to send an attempt. A half-open provider admits one
    /// probe at a time; `force` admits regardless (the last resort when
    /// nothing else is left). Returns whether this attempt is the probe.
    pub fn begin_attempt(&self, now: Instant, force: bool) -> Option<bool> {
        let mut b = self.lock();
        match availability(&b, now) {
            Availability::Available => Some(false),
            Availability::ProbeReady => {
                b.probe_in_flight = true;
                Some(true)
            }
            Availability::Unavailable(_) if force => Some(false),
            Availability::Unavailable(_) => None,
        }
    }

    /// Record the result of an attempt. `retry_after` is the cooldown the
    /// upstream asked for (429, or 503 with Retry-After).
    pub fn record(
        &self,
        now: Instant,
        result: AttemptResult,
        was_probe: bool,
        retry_after: Option<Duration>,
        policy: &Policy,
        jitter_unit: f64,
    ) -> Option<Transition> {
        let mut b = self.lock();
        record(
            &mut b,
            now,
            result,
            was_probe,
            retry_after,
            policy,
            jitter_unit,
        )
    }

    /// The verdict of an active health probe. A failing probe marks the
    /// provider unhealthy; a passing one clears that and, once an ejection
    /// has run its course, closes the circuit without waiting for a live
    /// request to serve as the half-open probe.
    pub fn record_probe(&self, now: Instant, ok: bool) -> Option<Transition> {
        let mut b = self.lock();
        let was_failing = b.probe_failing;
        b.probe_failing = !ok;
        if !ok {
            return None;
        }
        let ejection_over = b.ejected_until.is_some_and(|t| now >= t) && !b.probe_in_flight;
        if ejection_over {
            b.ejected_until = None;
            b.consecutive_failures = 0;
            b.consecutive_ejections = 0;
            return Some(Transition::Recovered);
        }
        (was_failing && b.ejected_until.is_none()).then_some(Transition::Recovered)
    }

    pub fn snapshot(&self, now: Instant) -> HealthSnapshot {
        let b = self.lock();
        let state = match availability(&b, now) {
            Availability::Available => ProviderState::Healthy,
            // Ejection elapsed but not yet proven healthy.
            Availability::ProbeReady => ProviderState::Ejected,
            Availability::Unavailable(s) => s,
        };
        HealthSnapshot {
            state,
            consecutive_failures: b.consecutive_failures,
            ejected_until: b.ejected_until.filter(|t| *t > now),
            cooldown_until: b.cooldown_until.filter(|t| *t > now),
            last_error_class: b.last_error_class,
            ttfb_ewma: self.ttfb_ewma(),
        }
    }

    /// When this provider last failed: the tie-breaker among unavailable
    /// providers (least recently failed is tried first).
    pub fn last_failure_at(&self) -> Option<Instant> {
        self.lock().last_failure_at
    }

    /// Feed a time-to-first-byte sample into the peak-EWMA: a slower sample
    /// is taken at once (peak), a faster one decays the average towards it.
    pub fn observe_ttfb(&self, now: Instant, ttfb: Duration) {
        let sample = ttfb.as_nanos().min(u64::MAX as u128) as u64;
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let prev = self.ewma_ns.load(Ordering::Relaxed);
        let prev_at = self.ewma_at_ns.swap(now_ns, Ordering::Relaxed);
        let next = peak_ewma(prev, sample, now_ns.saturating_sub(prev_at));
        self.ewma_ns.store(next.max(1), Ordering::Relaxed);
    }

    pub fn ttfb_ewma(&self) -> Option<Duration> {
        match self.ewma_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// least_latency cost: expected latency scaled by outstanding work. The
    /// estimate decays while no sample arrives, so a provider that was slow
    /// once is tried again later instead of being starved forever.
    pub fn load_cost(&self, now: Instant) -> f64 {
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let idle = now_ns.saturating_sub(self.ewma_at_ns.load(Ordering::Relaxed)) as f64;
        let decay = (-idle / EWMA_TAU.as_nanos() as f64).exp();
        let ewma = self.ewma_ns.load(Ordering::Relaxed) as f64 * decay;
        let pending = self.inflight.load(Ordering::Relaxed) as f64;
        // An unmeasured provider is tried before a measured one would be
        // starved of samples forever.
        if self.ewma_ns.load(Ordering::Relaxed) == 0 {
            return pending;
        }
        ewma * (pending + 1.0)
    }
}

fn peak_ewma(prev: u64, sample: u64, dt_ns: u64) -> u64 {
    if prev == 0 || sample > prev {
        return sample;
    }
    let w = (-(dt_ns as f64) / EWMA_TAU.as_nanos() as f64).exp();
    (prev as f64 * w + sample as f64 * (1.0 - w)) as u64
}

fn availability(b: &Breaker, now: Instant) -> Availability {
    if let Some(until) = b.ejected_until {
        if now < until {
            return Availability::Unavailable(ProviderState::Ejected);
        }
        if b.probe_in_flight {
            return Availability::Unavailable(ProviderState::Ejected);
        }
        return Availability::ProbeReady;
    }
    if b.cooldown_until.is_some_and(|t| now < t) {
        return Availability::Unavailable(ProviderState::CoolingDown);
    }
    if b.probe_failing {
        return Availability::Unavailable(ProviderState::Unhealthy);
    }
    Availability::Available
}

fn record(
    b: &mut Breaker,
    now: Instant,
    result: AttemptResult,
    was_probe: bool,
    retry_after: Option<Duration>,
    policy: &Policy,
    jitter_unit: f64,
) -> Option<Transition> {
    if was_probe {
        b.probe_in_flight = false;
    }
    let class = match result {
        AttemptResult::Success => {
            let recovered = b.ejected_until.is_some() || b.probe_failing;
            b.consecutive_failures = 0;
            b.consecutive_ejections = 0;
            b.ejected_until = None;
            b.probe_failing = false;
            return recovered.then_some(Transition::Recovered);
        }
        AttemptResult::Failed(c) => c,
    };
    let mut transition = None;
    if let Some(ra) = retry_after {
        let for_ = ra.min(policy.max_retry_after);
        let until = now + for_;
        if b.cooldown_until.is_none_or(|t| t < until) {
            b.cooldown_until = Some(until);
            transition = Some(Transition::CoolingDown { for_ });
        }
    }
    match class {
        ErrorClass::RateLimit => {
            b.last_error_class = Some(class);
            b.last_failure_at = Some(now);
            if retry_after.is_none() {
                // A 429 without a hint still deserves a short pause.
                let for_ = policy.base_ejection.min(policy.max_retry_after);
                let until = now + for_;
                if b.cooldown_until.is_none_or(|t| t < until) {
                    b.cooldown_until = Some(until);
                    transition = Some(Transition::CoolingDown { for_ });
                }
            }
            transition
        }
        ErrorClass::Auth => {
            // A rejected key does not fix itself: eject for the longest
            // backoff straight away, and re-probe on that schedule.
            b.last_error_class = Some(class);
            b.last_failure_at = Some(now);
            b.consecutive_failures += 1;
            b.consecutive_ejections = b.consecutive_ejections.saturating_add(1);
            b.ejected_until = Some(now + policy.max_ejection);
            Some(Transition::Ejected {
                for_: policy.max_ejection,
                class,
                consecutive_ejections: b.consecutive_ejections,
            })
        }
        c if c.counts_against_provider() => {
            b.last_error_class = Some(class);
            b.last_failure_at = Some(now);
            b.consecutive_failures += 1;
            let open = b.ejected_until.is_some();
            if was_probe || (!open && b.consecutive_failures >= policy.eject_after_failures) {
                let ceiling = policy.backoff_ceiling(b.consecutive_ejections);
                let for_ = jittered(ceiling, jitter_unit);
                b.consecutive_ejections = b.consecutive_ejections.saturating_add(1);
                b.ejected_until = Some(now + for_);
                return Some(Transition::Ejected {
                    for_,
                    class,
                    consecutive_ejections: b.consecutive_ejections,
                });
            }
            transition
        }
        // request, client, concurrency, internal: not the provider's fault.
        _ => transition,
    }
}

/// Parse a cooldown hint from an upstream response: `Retry-After` as
/// delta-seconds or HTTP-date, else the `x-ratelimit-reset-*` family
/// (OpenAI durations like "6m0s" / "1.5s" / "20ms", Anthropic RFC 3339).
pub fn retry_after(headers: &http::HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    if let Some(v) = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(secs) = v.parse::<f64>() {
            if secs.is_finite() && secs >= 0.0 {
                return Some(Duration::from_secs_f64(secs.min(1e9)));
            }
        }
        if let Ok(t) = httpdate::parse_http_date(v) {
            return Some(t.duration_since(now).unwrap_or(Duration::ZERO));
        }
    }
    if let Some(v) = headers.get("retry-after-ms").and_then(|v| v.to_str().ok()) {
        if let Ok(ms) = v.trim().parse::<f64>() {
            if ms.is_finite() && ms >= 0.0 {
                return Some(Duration::from_secs_f64((ms / 1000.0).min(1e9)));
            }
        }
    }
    let mut best: Option<Duration> = None;
    for (name, value) in headers.iter() {
        let n = name.as_str();
        let is_reset = n.starts_with("x-ratelimit-reset")
            || (n.starts_with("anthropic-ratelimit-") && n.ends_with("-reset"));
        if !is_reset {
            continue;
        }
        let Ok(v) = value.to_str() else { continue };
        let d = parse_go_duration(v.trim()).or_else(|| {
            crate::clock::parse_rfc3339(v.trim())
                .map(|t| t.duration_since(now).unwrap_or(Duration::ZERO))
        });
        if let Some(d) = d {
            // The most constrained limit is the one that matters.
            best = Some(best.map_or(d, |b| b.max(d)));
        }
    }
    best
}

/// "1h2m3.5s", "6m0s", "20ms", "1.5s", "30" (seconds).
fn parse_go_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(Duration::from_secs_f64(total.min(1e9)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    fn policy() -> Policy {
        Policy {
            eject_after_failures: 3,
            base_ejection: Duration::from_millis(1000),
            max_ejection: Duration::from_millis(8000),
            max_retry_after: Duration::from_secs(60),
        }
    }

    fn fail(h: &ProviderHealth, now: Instant, c: ErrorClass, probe: bool) -> Option<Transition> {
        h.record(now, AttemptResult::Failed(c), probe, None, &policy(), 1.0)
    }

    #[test]
    fn ejects_after_consecutive_failures_then_probes_once() {
        let h = ProviderHealth::new();
        let t0 = Instant::now();
        assert_eq!(fail(&h, t0, Server, false), None);
        assert_eq!(fail(&h, t0, Network, false), None);
        let tr = fail(&h, t0, Timeout, false);
        assert!(
            matches!(tr, Some(Transition::Ejected { for_, .. }) if for_ == Duration::from_millis(1000))
        );
        assert_eq!(
            h.availability(t0),
            Availability::Unavailable(ProviderState::Ejected)
        );
        assert_eq!(
            h.begin_attempt(t0 + Duration::from_millis(999), false),
            None
        );

        // Backoff elapsed: exactly one probe is admitted.
        let t1 = t0 + Duration::from_millis(1000);
        assert_eq!(h.availability(t1), Availability::ProbeReady);
        assert_eq!(h.begin_attempt(t1, false), Some(true));
        assert_eq!(h.begin_attempt(t1, false), None, "second probe admitted");
        // The last resort is still admitted.
        assert_eq!(h.begin_attempt(t1, true), Some(false));

        // Probe succeeds: closed, backoff reset.
        let tr = h.record(t1, AttemptResult::Success, true, None, &policy(), 1.0);
        assert_eq!(tr, Some(Transition::Recovered));
        assert_eq!(h.availability(t1), Availability::Available);
        assert_eq!(h.snapshot(t1).consecutive_failures, 0);
    }

    #[test]
    fn failed_probe_doubles_backoff_up_to_max() {
        let h = ProviderHealth::new();
        let mut now = Instant::now();
        for _ in 0..3 {
            fail(&h, now, Server, false);
        }
        let mut expected = [2000u64, 4000, 8000, 8000].into_iter();
        let mut last = Duration::from_millis(1000);
        for _ in 0..4 {
            now += last;
            assert_eq!(h.begin_attempt(now, false), Some(true));
            match fail(&h, now, Server, true) {
                Some(Transition::Ejected { for_, .. }) => {
                    assert_eq!(for_, Duration::from_millis(expected.next().unwrap()));
                    last = for_;
                }
                other => panic!("expected ejection, got {other:?}"),
            }
        }
    }

    #[test]
    fn success_resets_failure_count() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        fail(&h, t, Server, false);
        fail(&h, t, Server, false);
        h.record(t, AttemptResult::Success, false, None, &policy(), 1.0);
        assert_eq!(fail(&h, t, Server, false), None);
        assert_eq!(h.availability(t), Availability::Available);
    }

    #[test]
    fn request_and_client_errors_do_not_count() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..10 {
            fail(&h, t, Request, false);
            fail(&h, t, Client, false);
        }
        assert_eq!(h.availability(t), Availability::Available);
    }

    #[test]
    fn rate_limit_is_a_cooldown_not_a_circuit_failure() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..5 {
            let tr = h.record(
                t,
                AttemptResult::Failed(RateLimit),
                false,
                Some(Duration::from_secs(7)),
                &policy(),
                1.0,
            );
            assert!(matches!(tr, Some(Transition::CoolingDown { .. }) | None));
        }
        let s = h.snapshot(t);
        assert_eq!(s.state, ProviderState::CoolingDown);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(
            h.availability(t + Duration::from_secs(7)),
            Availability::Available
        );
    }

    #[test]
    fn retry_after_is_capped() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        let tr = h.record(
            t,
            AttemptResult::Failed(RateLimit),
            false,
            Some(Duration::from_secs(3600)),
            &policy(),
            1.0,
        );
        assert_eq!(
            tr,
            Some(Transition::CoolingDown {
                for_: Duration::from_secs(60)
            })
        );
    }

    #[test]
    fn auth_failure_ejects_for_the_long_backoff_at_once() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        let tr = fail(&h, t, Auth, false);
        assert!(
            matches!(tr, Some(Transition::Ejected { for_, .. }) if for_ == Duration::from_millis(8000))
        );
        assert_eq!(
            h.availability(t + Duration::from_millis(7999)),
            Availability::Unavailable(ProviderState::Ejected)
        );
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let c = Duration::from_millis(1000);
        assert_eq!(jittered(c, 1.0), c);
        assert_eq!(jittered(c, 0.0), Duration::from_millis(100));
        assert_eq!(jittered(c, 0.5), Duration::from_millis(500));
        assert_eq!(jittered(Duration::ZERO, 0.5), Duration::from_millis(1));
    }

    #[test]
    fn active_probe_marks_unhealthy_and_back() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        assert_eq!(h.record_probe(t, false), None);
        assert_eq!(
            h.availability(t),
            Availability::Unavailable(ProviderState::Unhealthy)
        );
        assert_eq!(h.record_probe(t, true), Some(Transition::Recovered));
        assert_eq!(h.availability(t), Availability::Available);
    }

    #[test]
    fn passing_probe_closes_an_elapsed_ejection_only() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        // Still inside the ejection: a probe success does not cut it short.
        assert_eq!(h.record_probe(t, true), None);
        assert_eq!(
            h.availability(t),
            Availability::Unavailable(ProviderState::Ejected)
        );
        let later = t + Duration::from_secs(2);
        assert_eq!(h.record_probe(later, true), Some(Transition::Recovered));
        assert_eq!(h.availability(later), Availability::Available);
    }

    #[test]
    fn peak_ewma_takes_peaks_and_decays() {
        assert_eq!(peak_ewma(0, 100, 0), 100);
        assert_eq!(peak_ewma(100, 500, 0), 500);
        // No time passed: a faster sample does not move the average.
        assert_eq!(peak_ewma(500, 100, 0), 500);
        // Long after: converges to the sample.
        let v = peak_ewma(500, 100, Duration::from_secs(100).as_nanos() as u64);
        assert!(v <= 101, "{v}");
    }

    #[test]
    fn load_cost_scales_with_inflight_and_decays_when_idle() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        assert_eq!(h.load_cost(t), 0.0, "unmeasured and idle: tried first");
        h.observe_ttfb(t, Duration::from_millis(100));
        let fresh = h.load_cost(t);
        assert!((fresh - 1e8).abs() < 1e6, "{fresh}");
        h.inflight.store(1, Ordering::Relaxed);
        assert!(h.load_cost(t) > 1.9e8);
        h.inflight.store(0, Ordering::Relaxed);
        assert!(h.load_cost(t + Duration::from_secs(100)) < 1e5);
    }

    #[test]
    fn retry_after_forms() {
        use std::time::SystemTime;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert("retry-after", date.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        let mut h = http::HeaderMap::new();
        h.insert("x-ratelimit-reset-requests", "1m30s".parse().unwrap());
        h.insert("x-ratelimit-reset-tokens", "20ms".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(90)));
        let mut h = http::HeaderMap::new();
        h.insert(
            "anthropic-ratelimit-requests-reset",
            "2023-11-14T22:13:40Z".parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(20)));
        assert_eq!(retry_after(&http::HeaderMap::new(), now), None);
    }
}
