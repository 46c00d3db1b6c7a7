//! Provider health: a passive circuit breaker with jittered exponential
//! ejection, half-open trials, recovery probing of ejected providers,
//! rate-limit cooldowns, the verdict of active probes, and a peak-EWMA of
//! time to first byte.
//!
//! The circuit of one provider:
//!
//! - **closed**: takes traffic; `eject_after_failures` consecutive failures
//!   open it.
//! - **open** (`ejected`) for a jittered backoff that doubles per
//!   consecutive ejection up to `max_ejection`. During a long ejection a
//!   recovery probe goes out every `recovery_probe_interval`; one that
//!   passes closes the circuit early, so a provider that comes back is not
//!   left out for the rest of a long ejection.
//! - **half-open** once the ejection has run out: routable (and reported
//!   `healthy`) again. The next attempt is a trial, one at a time; when no
//!   request offers itself (a backup on a `priority` route) the prober sends
//!   a recovery probe as the trial instead, and the provider stays
//!   `ejected` until that probe's deadline at most. A failed trial or probe
//!   opens the circuit for the next, longer ejection; a success closes it.
//!   So the state is always decided: never "ejected" without an end.
//!
//! An operator may also **disable** a provider (the admin API, see
//! `crate::control`): until enabled again or until its TTL runs out it
//! takes no traffic at all, not even as a last resort, and is not probed.
//! That state sits above the circuit: the breaker keeps its history, and a
//! provider enabled again resumes from wherever its circuit was.
//!
//! A probe proves less than a real request (a server can list models and
//! still fail every completion), so a circuit closed by a probe is on
//! probation for `max_ejection`: its next counted failure re-opens it at
//! the backoff already reached, and only a real success resets that.
//!
//! The state machine is pure: every call takes `now`, so tests drive it with
//! a synthetic clock (see the simulation in `sim`), and it returns the
//! transitions it made instead of logging them, so the caller owns metrics
//! and logs. The probes' I/O lives in [`probe`]; when one is due is decided
//! here.

pub mod probe;
#[cfg(test)]
mod sim;

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
    /// Taken out by an operator (the admin API).
    Disabled,
}

impl ProviderState {
    pub const ALL: [ProviderState; 5] = [
        ProviderState::Healthy,
        ProviderState::Ejected,
        ProviderState::CoolingDown,
        ProviderState::Unhealthy,
        ProviderState::Disabled,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderState::Healthy => "healthy",
            ProviderState::Ejected => "ejected",
            ProviderState::CoolingDown => "cooling_down",
            ProviderState::Unhealthy => "unhealthy",
            ProviderState::Disabled => "disabled",
        }
    }
}

/// An operator's disable: since when, and until when (`None`: until
/// enabled again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disabled {
    pub since: Instant,
    pub until: Option<Instant>,
}

impl Disabled {
    /// Whether it still holds at `now`: a TTL ends by itself.
    pub fn holds(&self, now: Instant) -> bool {
        self.until.is_none_or(|t| now < t)
    }
}

/// Parameters of the breaker, from `health.*`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub eject_after_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_retry_after: Duration,
    pub recovery_probe_interval: Duration,
}

impl Policy {
    pub fn from_settings(h: &HealthSettings) -> Policy {
        Policy {
            eject_after_failures: h.eject_after_failures,
            base_ejection: h.base_ejection,
            max_ejection: h.max_ejection,
            max_retry_after: h.max_retry_after,
            recovery_probe_interval: h.recovery_probe_interval,
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

/// What showed that a provider is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A real attempt succeeded.
    Request,
    /// A health check or recovery probe passed.
    Probe,
}

impl Evidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Request => "request",
            Evidence::Probe => "probe",
        }
    }
}

/// A state change worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    Ejected {
        for_: Duration,
        class: ErrorClass,
        consecutive_ejections: u32,
    },
    Recovered {
        via: Evidence,
    },
    CoolingDown {
        for_: Duration,
    },
}

/// Whether a provider may take an attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Available,
    /// Half-open: the ejection has run out and the next attempt is the
    /// trial.
    TrialReady,
    /// Half-open with its one trial out (a request, or a probe overdue):
    /// routable again, but only as a last resort until the trial answers.
    TrialBusy,
    Unavailable(ProviderState),
}

impl Availability {
    /// Whether routing should offer this provider an attempt before the
    /// ones it keeps as a last resort.
    pub fn takes_traffic(self) -> bool {
        matches!(self, Availability::Available | Availability::TrialReady)
    }

    /// How routing may use the provider. A disabled one is never offered:
    /// an operator who takes a provider out during an incident (a leaked
    /// key, a provider returning garbage with 200s, a billing stop) means
    /// "no traffic", and a last-resort attempt would be exactly the request
    /// that should not have gone out. An ejected or cooling one still is:
    /// the breaker's verdict is a guess that may be stale.
    pub fn offer(self) -> Offer {
        match self {
            Availability::Available | Availability::TrialReady => Offer::First,
            Availability::Unavailable(ProviderState::Disabled) => Offer::Never,
            Availability::TrialBusy | Availability::Unavailable(_) => Offer::LastResort,
        }
    }
}

/// Where a provider goes in a request's order of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// In the strategy's order.
    First,
    /// After every provider that takes traffic, when nothing else is left.
    LastResort,
    /// Not at all (disabled by an operator).
    Never,
}

/// What a probe found, for [`ProviderHealth::record_probe`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeReport {
    /// When it was sent: a verdict older than the ejection in progress is
    /// stale and leaves the circuit alone.
    pub sent_at: Instant,
    /// `Ok` when the provider answered as a live one does, else the class
    /// of the failure.
    pub verdict: Result<(), ErrorClass>,
    /// A failed health check seen often enough in a row to mark the
    /// provider `unhealthy`.
    pub mark_unhealthy: bool,
    /// Whether this is the recovery probe claimed with
    /// [`ProviderHealth::begin_recovery_probe`].
    pub recovery: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Circuit {
    #[default]
    Closed,
    Open {
        since: Instant,
        until: Instant,
    },
    /// The ejection that ended at `since` has not been decided yet.
    HalfOpen {
        since: Instant,
    },
}

#[derive(Debug, Clone, Default)]
struct Breaker {
    circuit: Circuit,
    consecutive_failures: u32,
    consecutive_ejections: u32,
    /// When the live half-open trial went out; `None` when none is out.
    trial_since: Option<Instant>,
    /// Closed by a probe and not yet confirmed by a real success: the next
    /// counted failure re-opens the circuit at the backoff reached.
    probation_until: Option<Instant>,
    /// When the last recovery probe went out: spaces out the next one.
    last_probe_sent: Option<Instant>,
    /// While a recovery probe is out: when it will have answered or timed
    /// out.
    recovery_deadline: Option<Instant>,
    cooldown_until: Option<Instant>,
    last_error_class: Option<ErrorClass>,
    last_failure_at: Option<Instant>,
    /// Set by active probes; cleared by a passing probe or a real success.
    probe_failing: bool,
    /// Set by an operator; an elapsed one is ignored until
    /// [`ProviderHealth::expire`]
    /// clears it (so that its end is reported once).
    disabled: Option<Disabled>,
}

/// Snapshot for `/health` and `/stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshot {
    pub state: ProviderState,
    pub consecutive_failures: u32,
    /// Set exactly when `state` is `Ejected`.
    pub ejected_until: Option<Instant>,
    pub cooldown_until: Option<Instant>,
    pub last_error_class: Option<ErrorClass>,
    pub ttfb_ewma: Option<Duration>,
    /// Set exactly when `state` is `Disabled`.
    pub disabled: Option<Disabled>,
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
    /// A 400 said it takes no assistant prefill (`prefill: auto`): learned
    /// for the rest of the process, across reloads.
    pub prefill_refused: std::sync::atomic::AtomicBool,
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
            prefill_refused: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The breaker brought up to `now`: an ejection that has run out is
    /// half-open, a probation that has lapsed is over.
    fn at(&self, now: Instant) -> std::sync::MutexGuard<'_, Breaker> {
        // A panic while holding this lock cannot leave the breaker in a
        // state worse than stale counters, so recover rather than propagate.
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        settle(&mut b, now);
        b
    }

    pub fn availability(&self, now: Instant) -> Availability {
        availability(&self.at(now), now)
    }

    /// What ordering a request's candidates needs, under one lock (the
    /// request path reads every provider of a route per request; several
    /// lock round trips per provider are shared cache lines on every core).
    pub fn candidate(&self, now: Instant) -> (Availability, Option<Instant>) {
        let b = self.at(now);
        (availability(&b, now), b.last_failure_at)
    }

    /// Claim the right to send an attempt. A half-open provider admits one
    /// trial at a time; `force` admits regardless (the last resort when
    /// nothing else is left). Returns whether this attempt is the trial.
    pub fn begin_attempt(&self, now: Instant, force: bool) -> Option<bool> {
        let mut b = self.at(now);
        match availability(&b, now) {
            Availability::Available => Some(false),
            Availability::TrialReady => {
                b.trial_since = Some(now);
                Some(true)
            }
            // Not even forced: a disable that lands while a request is in
            // its failover loop holds for that request's next attempt too.
            Availability::Unavailable(ProviderState::Disabled) => None,
            Availability::TrialBusy | Availability::Unavailable(_) if force => Some(false),
            Availability::TrialBusy | Availability::Unavailable(_) => None,
        }
    }

    /// Record the result of an attempt. `retry_after` is the cooldown the
    /// upstream asked for (429, or 503 with Retry-After).
    pub fn record(
        &self,
        now: Instant,
        result: AttemptResult,
        was_trial: bool,
        retry_after: Option<Duration>,
        policy: &Policy,
        jitter_unit: f64,
    ) -> Option<Transition> {
        let mut b = self.at(now);
        record(
            &mut b,
            now,
            result,
            was_trial,
            retry_after,
            policy,
            jitter_unit,
        )
    }

    /// When the next recovery probe is due (`None`: none is wanted, or one
    /// is out). The prober sleeps until then.
    pub fn recovery_probe_due(&self, now: Instant, policy: &Policy) -> Option<Instant> {
        recovery_due(&self.at(now), policy, now)
    }

    /// Claim a recovery probe if one is due at `now`; it gives up after
    /// `timeout`. The claimant must report it with
    /// [`ProviderHealth::record_probe`] (`recovery: true`) or give it back
    /// with [`ProviderHealth::abandon_recovery_probe`].
    pub fn begin_recovery_probe(&self, now: Instant, policy: &Policy, timeout: Duration) -> bool {
        let mut b = self.at(now);
        if recovery_due(&b, policy, now).is_none_or(|t| t > now) {
            return false;
        }
        b.recovery_deadline = Some(now + timeout);
        b.last_probe_sent = Some(now);
        true
    }

    pub fn abandon_recovery_probe(&self) {
        self.breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recovery_deadline = None;
    }

    /// The verdict of a health check or recovery probe.
    pub fn record_probe(
        &self,
        now: Instant,
        report: ProbeReport,
        policy: &Policy,
        jitter_unit: f64,
    ) -> Option<Transition> {
        let mut b = self.at(now);
        record_probe(&mut b, now, report, policy, jitter_unit)
    }

    pub fn snapshot(&self, now: Instant) -> HealthSnapshot {
        let b = self.at(now);
        let state = match availability(&b, now) {
            Availability::Unavailable(s) => s,
            // The ejection is over: routable, whatever the trial will say.
            Availability::Available | Availability::TrialReady | Availability::TrialBusy => {
                ProviderState::Healthy
            }
        };
        HealthSnapshot {
            state,
            consecutive_failures: b.consecutive_failures,
            ejected_until: match (state, b.circuit) {
                (ProviderState::Ejected, Circuit::Open { until, .. }) => Some(until),
                (ProviderState::Ejected, _) => b.recovery_deadline,
                _ => None,
            },
            cooldown_until: b.cooldown_until.filter(|t| *t > now),
            last_error_class: b.last_error_class,
            ttfb_ewma: self.ttfb_ewma(),
            disabled: b.disabled.filter(|d| d.holds(now)),
        }
    }

    /// Take the provider out of routing from `now` until `until` (`None`:
    /// until [`ProviderHealth::enable`]). A second disable replaces the
    /// first. Returns the disable now in force.
    pub fn disable(&self, now: Instant, until: Option<Instant>) -> Disabled {
        let mut b = self.at(now);
        let d = Disabled { since: now, until };
        b.disabled = Some(d);
        d
    }

    /// Put the provider back; returns the disable it ended, if one was in
    /// force.
    pub fn enable(&self, now: Instant) -> Option<Disabled> {
        let mut b = self.at(now);
        b.disabled.take().filter(|d| d.holds(now))
    }

    /// The disable in force at `now`, if any.
    pub fn disabled(&self, now: Instant) -> Option<Disabled> {
        self.at(now).disabled.filter(|d| d.holds(now))
    }

    /// Clear a disable whose TTL has run out; returns it, once, so that
    /// its end is logged exactly once.
    pub fn expire(&self, now: Instant) -> Option<Disabled> {
        let mut b = self.at(now);
        match b.disabled {
            Some(d) if !d.holds(now) => b.disabled.take(),
            _ => None,
        }
    }

    /// When this provider last failed: the tie-breaker among unavailable
    /// providers (least recently failed is tried first).
    pub fn last_failure_at(&self) -> Option<Instant> {
        self.breaker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_failure_at
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

/// Time-driven changes, applied before anything reads or writes the
/// breaker: keeps every decision a function of the state and `now`.
fn settle(b: &mut Breaker, now: Instant) {
    if let Circuit::Open { until, .. } = b.circuit {
        if now >= until {
            b.circuit = Circuit::HalfOpen { since: until };
        }
    }
    if b.probation_until.is_some_and(|t| now >= t) {
        b.probation_until = None;
        b.consecutive_ejections = 0;
    }
}

/// Assumes a settled breaker. Precedence: an operator's disable, then an
/// open circuit, then a cooldown, then a failing health check.
fn availability(b: &Breaker, now: Instant) -> Availability {
    if b.disabled.is_some_and(|d| d.holds(now)) {
        return Availability::Unavailable(ProviderState::Disabled);
    }
    if let Circuit::Open { .. } = b.circuit {
        return Availability::Unavailable(ProviderState::Ejected);
    }
    if b.cooldown_until.is_some_and(|t| now < t) {
        return Availability::Unavailable(ProviderState::CoolingDown);
    }
    if b.probe_failing {
        return Availability::Unavailable(ProviderState::Unhealthy);
    }
    match b.circuit {
        // One trial at a time, be it a request or a probe. While it is out
        // the provider is routable as a last resort and reported healthy:
        // its ejection is over, and flipping it back to `ejected` for the
        // few ms a probe takes would only make /health flicker. A failed
        // trial ejects it again, a real change.
        Circuit::HalfOpen { .. } if b.trial_since.is_some() || b.recovery_deadline.is_some() => {
            Availability::TrialBusy
        }
        Circuit::HalfOpen { .. } => Availability::TrialReady,
        Circuit::Closed | Circuit::Open { .. } => Availability::Available,
    }
}

/// Open the circuit for the next backoff (the longest at once for a
/// rejected key, which does not fix itself).
fn eject(
    b: &mut Breaker,
    now: Instant,
    class: ErrorClass,
    policy: &Policy,
    jitter_unit: f64,
) -> Transition {
    let for_ = if class == ErrorClass::Auth {
        policy.max_ejection
    } else {
        jittered(policy.backoff_ceiling(b.consecutive_ejections), jitter_unit)
    };
    b.consecutive_ejections = b.consecutive_ejections.saturating_add(1);
    b.circuit = Circuit::Open {
        since: now,
        until: now + for_,
    };
    b.probation_until = None;
    Transition::Ejected {
        for_,
        class,
        consecutive_ejections: b.consecutive_ejections,
    }
}

fn record(
    b: &mut Breaker,
    now: Instant,
    result: AttemptResult,
    was_trial: bool,
    retry_after: Option<Duration>,
    policy: &Policy,
    jitter_unit: f64,
) -> Option<Transition> {
    if was_trial {
        b.trial_since = None;
    }
    let class = match result {
        AttemptResult::Success => {
            // A probe already announced the recovery of a provider on
            // probation; a real success only confirms it.
            let recovered = b.circuit != Circuit::Closed || b.probe_failing;
            b.circuit = Circuit::Closed;
            b.consecutive_failures = 0;
            b.consecutive_ejections = 0;
            b.probation_until = None;
            b.probe_failing = false;
            return recovered.then_some(Transition::Recovered {
                via: Evidence::Request,
            });
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
            b.last_error_class = Some(class);
            b.last_failure_at = Some(now);
            b.consecutive_failures += 1;
            Some(eject(b, now, class, policy, jitter_unit))
        }
        c if c.counts_against_provider() => {
            b.last_error_class = Some(class);
            b.last_failure_at = Some(now);
            b.consecutive_failures += 1;
            let reopen = match b.circuit {
                // A forced last-resort attempt: already out.
                Circuit::Open { .. } => false,
                // Only the trial speaks for the provider now; an attempt
                // that started before the ejection is old news.
                Circuit::HalfOpen { .. } => was_trial,
                Circuit::Closed => {
                    b.probation_until.is_some()
                        || b.consecutive_failures >= policy.eject_after_failures
                }
            };
            if reopen {
                return Some(eject(b, now, class, policy, jitter_unit));
            }
            transition
        }
        // request, client, concurrency, internal: not the provider's fault.
        _ => transition,
    }
}

/// When the next recovery probe is due, on a settled breaker.
///
/// - Half-open: at once (a live trial out for less than an interval
///   decides instead): the state must not stay undecided.
/// - Open: at `until`, and before that at `until - k·interval`, but never
///   sooner than an interval after the ejection began or the last probe
///   went out. So probes are at least an interval apart except where an
///   ejection shorter than the interval ends, and a provider that comes
///   back is found within two intervals.
fn recovery_due(b: &Breaker, policy: &Policy, now: Instant) -> Option<Instant> {
    // A disabled provider is not probed: no traffic means none at all.
    if b.recovery_deadline.is_some() || b.disabled.is_some_and(|d| d.holds(now)) {
        return None;
    }
    let every = policy.recovery_probe_interval.max(Duration::from_millis(1));
    match b.circuit {
        Circuit::Closed => None,
        Circuit::HalfOpen { since } => Some(match b.trial_since {
            Some(t) => since.max(t + every),
            None => since,
        }),
        Circuit::Open { since, until } => {
            let lower = b.last_probe_sent.map_or(since, |l| l.max(since)) + every;
            if until <= lower {
                return Some(until);
            }
            let k = (until - lower).as_nanos() / every.as_nanos();
            let back = every.as_nanos().saturating_mul(k);
            Some(until - Duration::from_nanos(back.min(u64::MAX as u128) as u64))
        }
    }
}

fn record_probe(
    b: &mut Breaker,
    now: Instant,
    r: ProbeReport,
    policy: &Policy,
    jitter_unit: f64,
) -> Option<Transition> {
    if r.recovery {
        b.recovery_deadline = None;
    }
    // An ejection that began after the probe went out rests on newer
    // evidence than the probe's.
    let stale = matches!(b.circuit, Circuit::Open { since, .. } if since > r.sent_at);
    match r.verdict {
        Ok(()) => {
            let was_failing = std::mem::replace(&mut b.probe_failing, false);
            match b.circuit {
                Circuit::Closed => was_failing.then_some(Transition::Recovered {
                    via: Evidence::Probe,
                }),
                Circuit::Open { .. } if stale => None,
                Circuit::Open { .. } | Circuit::HalfOpen { .. } => {
                    b.circuit = Circuit::Closed;
                    b.consecutive_failures = 0;
                    b.probation_until = Some(now + policy.max_ejection);
                    Some(Transition::Recovered {
                        via: Evidence::Probe,
                    })
                }
            }
        }
        Err(class) => {
            if r.mark_unhealthy {
                b.probe_failing = true;
            }
            if stale || b.circuit == Circuit::Closed {
                return None;
            }
            b.last_error_class = Some(class);
            b.last_failure_at = Some(now);
            match b.circuit {
                Circuit::HalfOpen { .. } => Some(eject(b, now, class, policy, jitter_unit)),
                Circuit::Open { .. } | Circuit::Closed => None,
            }
        }
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
pub fn parse_go_duration(s: &str) -> Option<Duration> {
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
            recovery_probe_interval: Duration::from_millis(2000),
        }
    }

    const REQUEST: Option<Transition> = Some(Transition::Recovered {
        via: Evidence::Request,
    });
    const PROBE: Option<Transition> = Some(Transition::Recovered {
        via: Evidence::Probe,
    });

    fn probe(h: &ProviderHealth, now: Instant, sent_at: Instant, ok: bool) -> Option<Transition> {
        let report = ProbeReport {
            sent_at,
            verdict: if ok { Ok(()) } else { Err(Network) },
            mark_unhealthy: !ok,
            recovery: false,
        };
        h.record_probe(now, report, &policy(), 1.0)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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

        // Backoff elapsed: exactly one trial is admitted.
        let t1 = t0 + Duration::from_millis(1000);
        assert_eq!(h.availability(t1), Availability::TrialReady);
        assert_eq!(h.begin_attempt(t1, false), Some(true));
        assert_eq!(h.begin_attempt(t1, false), None, "second trial admitted");
        assert_eq!(h.availability(t1), Availability::TrialBusy);
        // The last resort is still admitted.
        assert_eq!(h.begin_attempt(t1, true), Some(false));

        // Trial succeeds: closed, backoff reset.
        let tr = h.record(t1, AttemptResult::Success, true, None, &policy(), 1.0);
        assert_eq!(tr, REQUEST);
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
        assert_eq!(probe(&h, t, t, false), None);
        assert_eq!(
            h.availability(t),
            Availability::Unavailable(ProviderState::Unhealthy)
        );
        assert_eq!(h.snapshot(t).state, ProviderState::Unhealthy);
        assert_eq!(probe(&h, t, t, true), PROBE);
        assert_eq!(h.availability(t), Availability::Available);
    }

    #[test]
    fn passing_probe_closes_the_circuit_on_probation() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        let t1 = t + ms(10);
        assert_eq!(probe(&h, t1, t1, true), PROBE, "cuts the ejection short");
        assert_eq!(h.availability(t1), Availability::Available);
        assert_eq!(h.snapshot(t1).consecutive_failures, 0);
        // A probe proves less than a request: the first real failure
        // re-opens at the backoff already reached (the second ejection).
        match fail(&h, t1, Server, false) {
            Some(Transition::Ejected {
                for_,
                consecutive_ejections: 2,
                ..
            }) => assert_eq!(for_, ms(2000)),
            other => panic!("expected the second ejection, got {other:?}"),
        }
    }

    #[test]
    fn a_real_success_ends_probation_and_resets_the_backoff() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        assert_eq!(probe(&h, t, t, true), PROBE);
        let tr = h.record(t, AttemptResult::Success, false, None, &policy(), 1.0);
        assert_eq!(tr, None, "recovery was announced once already");
        assert_eq!(fail(&h, t, Server, false), None, "back to the threshold");
        assert_eq!(fail(&h, t, Server, false), None);
        assert!(matches!(
            fail(&h, t, Server, false),
            Some(Transition::Ejected { for_, consecutive_ejections: 1, .. }) if for_ == ms(1000)
        ));
    }

    #[test]
    fn probation_lapses_after_max_ejection() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        assert_eq!(probe(&h, t, t, true), PROBE);
        let later = t + policy().max_ejection;
        assert_eq!(fail(&h, later, Server, false), None);
        assert_eq!(h.availability(later), Availability::Available);
    }

    #[test]
    fn a_probe_sent_before_the_ejection_is_stale() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        let sent = t - ms(5);
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        assert_eq!(probe(&h, t + ms(1), sent, true), None);
        assert_eq!(
            h.availability(t + ms(1)),
            Availability::Unavailable(ProviderState::Ejected)
        );
    }

    #[test]
    fn an_elapsed_ejection_is_reported_routable_never_ejected_without_an_end() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        let s = h.snapshot(t);
        assert_eq!(s.state, ProviderState::Ejected);
        assert_eq!(s.ejected_until, Some(t + ms(1000)));
        // Nothing is sent to it (a backup nobody needs): still decided.
        let later = t + ms(1000);
        let s = h.snapshot(later);
        assert_eq!((s.state, s.ejected_until), (ProviderState::Healthy, None));
        assert_eq!(s.consecutive_failures, 3, "the history is kept");
        // Also while its trial is out.
        assert_eq!(h.begin_attempt(later, false), Some(true));
        assert_eq!(h.snapshot(later).state, ProviderState::Healthy);
    }

    #[test]
    fn recovery_probe_at_the_end_of_an_ejection_decides_it() {
        let p = policy();
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        let end = t + ms(1000);
        // Shorter than the interval: no probe inside it, one at its end.
        assert_eq!(h.recovery_probe_due(t, &p), Some(end));
        assert!(!h.begin_recovery_probe(end - ms(1), &p, ms(500)));
        assert!(h.begin_recovery_probe(end, &p, ms(500)));
        assert!(!h.begin_recovery_probe(end, &p, ms(500)), "one at a time");
        assert_eq!(h.recovery_probe_due(end, &p), None);
        let failed = ProbeReport {
            sent_at: end,
            verdict: Err(Network),
            mark_unhealthy: false,
            recovery: true,
        };
        match h.record_probe(end + ms(5), failed, &p, 1.0) {
            Some(Transition::Ejected {
                for_,
                class: Network,
                consecutive_ejections: 2,
            }) => assert_eq!(for_, ms(2000)),
            other => panic!("a failed end probe re-ejects: {other:?}"),
        }
        let s = h.snapshot(end + ms(5));
        assert_eq!(s.state, ProviderState::Ejected);
        assert_eq!(s.ejected_until, Some(end + ms(2005)));
        // A 2 s ejection with a 2 s interval: again only the end.
        assert_eq!(h.recovery_probe_due(end, &p), Some(end + ms(2005)));
        assert!(h.begin_recovery_probe(end + ms(2005), &p, ms(500)));
        let passed = ProbeReport {
            sent_at: end + ms(2005),
            verdict: Ok(()),
            mark_unhealthy: false,
            recovery: true,
        };
        assert_eq!(h.record_probe(end + ms(2010), passed, &p, 1.0), PROBE);
        assert_eq!(h.recovery_probe_due(end + ms(2010), &p), None);
    }

    #[test]
    fn recovery_probes_during_a_long_ejection_count_back_from_its_end() {
        let p = policy();
        let h = ProviderHealth::new();
        let t = Instant::now();
        fail(&h, t, Auth, false); // 8 s at once
        let end = t + ms(8000);
        let mut sent = Vec::new();
        let mut now = t;
        while now <= end {
            if h.begin_recovery_probe(now, &p, ms(500)) {
                sent.push(now - t);
                let r = ProbeReport {
                    sent_at: now,
                    verdict: Err(Auth),
                    mark_unhealthy: false,
                    recovery: true,
                };
                h.record_probe(now, r, &p, 1.0);
            }
            now += ms(1);
        }
        // 2 s apart, never sooner than 2 s after the start, the last at the end.
        assert_eq!(sent, [ms(2000), ms(4000), ms(6000), ms(8000)]);
        assert_eq!(
            h.snapshot(end).ejected_until,
            Some(end + ms(8000)),
            "a rejected key stays out for the longest backoff"
        );
    }

    #[test]
    fn a_provider_waiting_for_its_end_probe_is_routable_but_takes_no_second_trial() {
        let p = policy();
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        let end = t + ms(1000);
        assert!(h.begin_recovery_probe(end, &p, ms(500)));
        // The ejection is over: reported routable, with no flicker back to
        // `ejected` while the probe is out...
        let s = h.snapshot(end + ms(1));
        assert_eq!((s.state, s.ejected_until), (ProviderState::Healthy, None));
        // ...but the probe is the one trial: live traffic only as a last
        // resort until it answers.
        assert_eq!(h.availability(end + ms(1)), Availability::TrialBusy);
        assert_eq!(h.begin_attempt(end, false), None, "the probe is the trial");
        let late = end + ms(500);
        let s = h.snapshot(late);
        assert_eq!((s.state, s.ejected_until), (ProviderState::Healthy, None));
        assert_eq!(h.availability(late), Availability::TrialBusy);
        // A failing verdict ejects it again, a real change of state.
        let tr = probe(&h, late, end, false);
        assert!(matches!(tr, Some(Transition::Ejected { .. })), "{tr:?}");
        assert_eq!(h.snapshot(late).state, ProviderState::Ejected);
    }

    #[test]
    fn a_live_trial_in_flight_holds_off_the_end_probe_for_an_interval() {
        let p = policy();
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        let end = t + ms(1000);
        assert_eq!(h.begin_attempt(end, false), Some(true));
        assert_eq!(h.recovery_probe_due(end, &p), Some(end + ms(2000)));
        // An abandoned claim is given back.
        assert!(h.begin_recovery_probe(end + ms(2000), &p, ms(500)));
        h.abandon_recovery_probe();
        assert_eq!(
            h.recovery_probe_due(end + ms(2000), &p),
            Some(end + ms(2000))
        );
    }

    #[test]
    fn a_half_open_provider_cooling_down_is_not_offered_a_trial() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        h.record(
            t,
            AttemptResult::Failed(RateLimit),
            false,
            Some(Duration::from_secs(5)),
            &policy(),
            1.0,
        );
        let later = t + ms(1000);
        assert_eq!(
            h.availability(later),
            Availability::Unavailable(ProviderState::CoolingDown)
        );
        assert_eq!(h.begin_attempt(later, false), None);
    }

    #[test]
    fn a_disabled_provider_is_never_offered_not_even_forced() {
        let p = policy();
        let h = ProviderHealth::new();
        let t = Instant::now();
        h.disable(t, None);
        assert_eq!(
            h.availability(t),
            Availability::Unavailable(ProviderState::Disabled)
        );
        assert_eq!(h.availability(t).offer(), Offer::Never);
        assert_eq!(h.begin_attempt(t, false), None);
        assert_eq!(h.begin_attempt(t, true), None, "not even as a last resort");
        let s = h.snapshot(t);
        assert_eq!(s.state, ProviderState::Disabled);
        assert_eq!(
            s.disabled,
            Some(Disabled {
                since: t,
                until: None
            })
        );
        // Disabled goes before an open circuit, and the circuit is kept.
        for _ in 0..3 {
            fail(&h, t, Server, false);
        }
        assert_eq!(h.snapshot(t).state, ProviderState::Disabled);
        assert_eq!(h.snapshot(t).ejected_until, None);
        assert_eq!(h.recovery_probe_due(t, &p), None, "not probed");
        assert_eq!(
            h.enable(t),
            Some(Disabled {
                since: t,
                until: None
            })
        );
        assert_eq!(h.enable(t), None, "enabling twice ends nothing");
        assert_eq!(h.snapshot(t).state, ProviderState::Ejected);
        assert_eq!(h.availability(t).offer(), Offer::LastResort);
        assert!(h.recovery_probe_due(t, &p).is_some());
        // When its ejection ends it would get a recovery probe, but not
        // while disabled.
        let end = t + ms(1000);
        h.disable(end, None);
        assert!(!h.begin_recovery_probe(end, &p, ms(500)));
        h.enable(end);
        assert!(h.begin_recovery_probe(end, &p, ms(500)));
    }

    #[test]
    fn a_disable_ttl_ends_by_itself_and_is_reported_once() {
        let h = ProviderHealth::new();
        let t = Instant::now();
        let until = t + ms(1000);
        h.disable(t, Some(until));
        assert_eq!(h.expire(t + ms(999)), None, "not yet");
        assert_eq!(h.snapshot(t + ms(999)).state, ProviderState::Disabled);
        // At its end it no longer holds, whether or not anyone expired it.
        assert_eq!(h.availability(until), Availability::Available);
        assert_eq!(h.snapshot(until).state, ProviderState::Healthy);
        assert_eq!(h.snapshot(until).disabled, None);
        assert_eq!(h.disabled(until), None);
        assert_eq!(
            h.expire(until),
            Some(Disabled {
                since: t,
                until: Some(until)
            })
        );
        assert_eq!(h.expire(until), None, "reported once");
        // An elapsed disable is nothing to enable.
        h.disable(t, Some(until));
        assert_eq!(h.enable(until + ms(1)), None);
        // A second disable replaces the first.
        h.disable(t, Some(until));
        h.disable(t + ms(10), None);
        assert_eq!(h.disabled(until + ms(1)).map(|d| d.until), Some(None));
    }

    #[test]
    fn offers_follow_availability() {
        use Availability::*;
        assert_eq!(Available.offer(), Offer::First);
        assert_eq!(TrialReady.offer(), Offer::First);
        assert_eq!(TrialBusy.offer(), Offer::LastResort);
        for s in [
            ProviderState::Ejected,
            ProviderState::CoolingDown,
            ProviderState::Unhealthy,
        ] {
            assert_eq!(Unavailable(s).offer(), Offer::LastResort);
        }
        assert_eq!(Unavailable(ProviderState::Disabled).offer(), Offer::Never);
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
