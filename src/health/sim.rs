//! Simulation of the default health policy on a synthetic clock: a provider
//! that is down for a minute, with and without traffic, for many jitter
//! seeds. It checks the promises the breaker makes to operators: a provider
//! that comes back serves again within 15 s, one that stays down is probed
//! no more often than the schedule allows, and the reported state is always
//! decided and consistent with routing.

use super::*;
use crate::config::{load, ConfigSource};
use ErrorClass::Network;

const TICK: Duration = Duration::from_millis(10);
/// The longest a live request takes to answer in the model.
const LIVE_LATENCY: Duration = Duration::from_secs(2);
/// `health.active.timeout_ms` by default.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// What the issue asks of the default settings.
const REQUIREMENT: Duration = Duration::from_secs(15);

fn default_policy() -> Policy {
    let cfg = load(&ConfigSource::Builtin, &|_| None).expect("built-in config");
    Policy::from_settings(&cfg.health)
}

/// splitmix64: a seeded source of jitter and latencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

struct Scenario {
    /// A request every this often (`None`: a backup nobody needs).
    traffic: Option<Duration>,
    /// The provider is down from 0 until this time.
    down_for: Duration,
    /// How long to run.
    horizon: Duration,
}

/// The ejection in progress, as the transitions told it.
struct Seen {
    ejected_at: Instant,
    level: u32,
}

struct Run {
    /// Since recovery: until the breaker offers it traffic again.
    routable_after: Option<Duration>,
    /// Since recovery: until a real request succeeded on it.
    served_after: Option<Duration>,
    /// Probes and live attempts sent while it was down.
    probes_while_down: usize,
    /// Of those probes, the ones sent as the half-open trial.
    trials_while_down: usize,
    attempts_while_down: usize,
    ejections: usize,
}

/// Drives one provider through `s` with the policy's breaker, checking the
/// invariants at every tick.
fn run(s: &Scenario, policy: &Policy, seed: u64) -> Run {
    let mut rng = Rng(seed);
    let h = ProviderHealth::new();
    let t0 = Instant::now();
    let up = |now: Instant| now >= t0 + s.down_for;
    let every = policy.recovery_probe_interval;

    // (answer due, sent at)
    let mut probes: Vec<(Instant, Instant)> = Vec::new();
    // (answer due, was the trial)
    let mut attempts: Vec<(Instant, bool)> = Vec::new();
    let mut next_request = t0;
    let mut last_probe: Option<Instant> = None;
    let mut seen = Seen {
        ejected_at: t0,
        level: 0,
    };
    let mut out = Run {
        routable_after: None,
        served_after: None,
        probes_while_down: 0,
        trials_while_down: 0,
        attempts_while_down: 0,
        ejections: 0,
    };
    let note = |tr: Option<Transition>, now: Instant, seen: &mut Seen, out: &mut Run| {
        if let Some(Transition::Ejected {
            consecutive_ejections,
            ..
        }) = tr
        {
            seen.ejected_at = now;
            seen.level = consecutive_ejections;
            out.ejections += 1;
        }
    };

    // The provider went down under traffic: the threshold of failures
    // ejects it (a backup was being used at that moment too).
    for _ in 0..policy.eject_after_failures {
        assert_eq!(h.begin_attempt(t0, false), Some(false));
        let tr = h.record(
            t0,
            AttemptResult::Failed(Network),
            false,
            None,
            policy,
            rng.unit(),
        );
        note(tr, t0, &mut seen, &mut out);
        out.attempts_while_down += 1;
    }
    assert_eq!(out.ejections, 1);

    let mut now = t0;
    while now < t0 + s.horizon {
        now += TICK;

        // Answers that have arrived.
        let (done, pending): (Vec<_>, Vec<_>) = attempts.iter().partition(|(at, _)| *at <= now);
        attempts = pending;
        for (_, trial) in done {
            let result = if up(now) {
                out.served_after
                    .get_or_insert(now.saturating_duration_since(t0 + s.down_for));
                AttemptResult::Success
            } else {
                AttemptResult::Failed(Network)
            };
            let tr = h.record(now, result, trial, None, policy, rng.unit());
            note(tr, now, &mut seen, &mut out);
        }
        let (done, pending): (Vec<_>, Vec<_>) = probes.iter().partition(|(at, _)| *at <= now);
        probes = pending;
        for (_, sent_at) in done {
            let report = ProbeReport {
                sent_at,
                verdict: if up(now) { Ok(()) } else { Err(Network) },
                mark_unhealthy: false,
                recovery: true,
            };
            let tr = h.record_probe(now, report, policy, rng.unit());
            note(tr, now, &mut seen, &mut out);
        }

        // The prober and the requests race for the half-open trial.
        let prober_first = rng.next().is_multiple_of(2);
        for prober in [prober_first, !prober_first] {
            if prober {
                let before = h.snapshot(now);
                if h.begin_recovery_probe(now, policy, PROBE_TIMEOUT) {
                    if !up(now) {
                        out.probes_while_down += 1;
                        if before.ejected_until.is_none() {
                            out.trials_while_down += 1;
                        }
                        let gap_from =
                            last_probe.map_or(seen.ejected_at, |l| l.max(seen.ejected_at));
                        if before.ejected_until.is_some() {
                            assert!(
                                now - gap_from >= every,
                                "seed {seed}: probe inside an ejection {:?} after the last one",
                                now - gap_from
                            );
                        }
                        if let Some(l) = last_probe {
                            // Never more often than the interval or the shortest
                            // ejection at the backoff reached, whichever is less.
                            let shortest =
                                policy.backoff_ceiling(seen.level.saturating_sub(1)) / 10;
                            let bound = every.min(shortest).saturating_sub(TICK);
                            assert!(
                                now - l >= bound,
                                "seed {seed}: probes {:?} apart at level {}",
                                now - l,
                                seen.level
                            );
                        }
                    }
                    last_probe = Some(now);
                    // A dead host refuses at once, or (blackholed) lets the
                    // probe time out.
                    let latency = if !up(now) && rng.next().is_multiple_of(4) {
                        PROBE_TIMEOUT
                    } else {
                        rng.ms(1, 40)
                    };
                    probes.push((now + latency, now));
                }
            } else {
                // Live traffic, priority route: the provider is offered each
                // request it will take; the others go to the backup.
                if let Some(gap) = s.traffic {
                    while next_request <= now {
                        next_request += gap;
                        if let Some(trial) = h.begin_attempt(now, false) {
                            if !up(now) {
                                out.attempts_while_down += 1;
                            }
                            // Refused at once while down; a real answer takes a while.
                            let latency = if up(now) {
                                rng.ms(200, LIVE_LATENCY.as_millis() as u64)
                            } else {
                                Duration::ZERO
                            };
                            attempts.push((now + latency, trial));
                        }
                    }
                }
            }
        }

        // What is reported agrees with what routing does.
        let snap = h.snapshot(now);
        let avail = h.availability(now);
        assert_eq!(
            snap.state == ProviderState::Ejected,
            snap.ejected_until.is_some(),
            "seed {seed}: {snap:?}"
        );
        assert!(snap.ejected_until.is_none_or(|u| u > now));
        match avail {
            Availability::Unavailable(st) => assert_eq!(st, snap.state, "seed {seed}"),
            _ => assert_eq!(snap.state, ProviderState::Healthy, "seed {seed}"),
        }
        if up(now) && out.routable_after.is_none() && avail.takes_traffic() {
            out.routable_after = Some(now - (t0 + s.down_for));
        }
        if out.routable_after.is_some() && (s.traffic.is_none() || out.served_after.is_some()) {
            break;
        }
    }
    out
}

fn seeds() -> impl Iterator<Item = u64> {
    (0..200u64).map(|i| i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed)
}

/// The recovery bound the schedule gives: the next probe within two
/// intervals, its answer, and a tick of scheduling slack.
fn design_bound(p: &Policy) -> Duration {
    2 * p.recovery_probe_interval + Duration::from_millis(100)
}

#[test]
fn a_primary_back_after_a_minute_serves_again_within_15s_under_traffic() {
    let p = default_policy();
    let mut worst = Duration::ZERO;
    for seed in seeds() {
        let mut rng = Rng(seed);
        let s = Scenario {
            traffic: Some(Duration::from_millis(100)),
            down_for: Duration::from_secs(60) + rng.ms(0, 5000),
            horizon: Duration::from_secs(120),
        };
        let r = run(&s, &p, seed);
        let served = r
            .served_after
            .unwrap_or_else(|| panic!("seed {seed}: never served again"));
        // The answer of the first request takes up to 2 s in the model.
        assert!(
            served <= REQUIREMENT,
            "seed {seed}: served again {served:?} after recovery"
        );
        // Found by a probe, or by a live trial that then takes its time
        // to answer.
        assert!(
            served <= design_bound(&p) + LIVE_LATENCY,
            "seed {seed}: {served:?}"
        );
        // One trial per ejection (a request or a probe), after the
        // threshold that opened the first.
        assert!(
            r.attempts_while_down + r.trials_while_down
                <= p.eject_after_failures as usize + r.ejections,
            "seed {seed}: {} attempts and {} probes as trials while down, {} ejections",
            r.attempts_while_down,
            r.trials_while_down,
            r.ejections
        );
        worst = worst.max(served);
    }
    eprintln!("worst time to serve again: {worst:?}");
}

#[test]
fn a_backup_nobody_needs_is_routable_within_15s_of_coming_back() {
    let p = default_policy();
    let mut worst = Duration::ZERO;
    for seed in seeds() {
        let mut rng = Rng(seed);
        let s = Scenario {
            traffic: None,
            down_for: Duration::from_secs(60) + rng.ms(0, 5000),
            horizon: Duration::from_secs(120),
        };
        let r = run(&s, &p, seed);
        let routable = r
            .routable_after
            .unwrap_or_else(|| panic!("seed {seed}: never routable again"));
        assert!(routable <= REQUIREMENT, "seed {seed}: {routable:?}");
        assert!(routable <= design_bound(&p), "seed {seed}: {routable:?}");
        assert_eq!(r.attempts_while_down, p.eject_after_failures as usize);
        worst = worst.max(routable);
    }
    eprintln!("worst time to routable: {worst:?}");
}

#[test]
fn a_provider_that_stays_down_is_probed_no_more_often_than_the_schedule() {
    let p = default_policy();
    let horizon = Duration::from_secs(600);
    let mut most = 0;
    for seed in seeds().take(20) {
        for traffic in [None, Some(Duration::from_millis(100))] {
            let s = Scenario {
                traffic,
                down_for: Duration::from_secs(10 * 365 * 86_400),
                horizon,
            };
            let r = run(&s, &p, seed);
            assert_eq!(r.routable_after, None);
            // At most one probe per ejection plus one per interval inside
            // them.
            let budget = r.ejections
                + (horizon.as_millis() / p.recovery_probe_interval.as_millis()) as usize;
            assert!(
                r.probes_while_down <= budget,
                "seed {seed}: {} probes, {} ejections in {horizon:?}",
                r.probes_while_down,
                r.ejections
            );
            assert!(
                r.attempts_while_down + r.trials_while_down
                    <= p.eject_after_failures as usize + r.ejections,
                "seed {seed}: one trial per ejection"
            );
            // All told, on average less than one per interval, beyond the
            // few of the first, short ejections.
            let sent = r.probes_while_down + r.attempts_while_down;
            most = most.max(sent);
            let per_interval = horizon.as_millis() / p.recovery_probe_interval.as_millis();
            assert!(
                sent <= per_interval as usize + 10,
                "seed {seed}: {} probes and {} attempts in 10 min",
                r.probes_while_down,
                r.attempts_while_down
            );
        }
    }
    eprintln!("most probes and attempts in {horizon:?} of outage: {most}");
}
