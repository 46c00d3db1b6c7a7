//! Route matching and the provider-ordering strategies.
//!
//! Each strategy is a pure function over plain numbers; [`Selector`] holds
//! the little state they need between requests (a round-robin cursor, the
//! smooth-weighted counters). Session affinity ([`crate::affinity`]) then
//! puts a session's preferred provider first.

use crate::affinity::{self, AffinityResult, SessionKey};
use crate::config::{RouteSettings, Strategy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// First route with a path prefix matching `path` (config order wins).
/// `path` is the normalised path ([`crate::path::normalise`]), no query.
pub fn match_route(routes: &[RouteSettings], path: &str) -> Option<usize> {
    routes.iter().position(|r| matches(&r.paths, path))
}

/// Whether any of a route's path prefixes matches `path`.
pub fn matches(prefixes: &[String], path: &str) -> bool {
    prefixes.iter().any(|p| prefix_matches(p, path))
}

/// Prefix match on segment boundaries: `/v1/messages` matches
/// itself and what lies below it, never `/v1/messagesX`. A prefix ending in
/// `/` (`/` itself included) matches everything below it.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The bare `HEAD /` or `GET /` that clients send to see whether anything
/// listens (Claude Code does on every start): answered locally when no
/// route claims `/`.
pub fn is_liveness_probe(method: &http::Method, path: &str) -> bool {
    path == "/" && (method == http::Method::GET || method == http::Method::HEAD)
}

/// What the ordering needs to know about one provider of a route.
#[derive(Debug, Clone, Copy)]
pub struct CandidateInfo {
    pub available: bool,
    /// Half-open: its next attempt is the trial that decides whether it
    /// has recovered.
    pub trial: bool,
    pub weight: u32,
    /// least_latency cost (peak-EWMA × load); lower is better.
    pub cost: f64,
    pub last_failure_at: Option<Instant>,
}

/// Per-route selection state; lives as long as the route's config.
pub struct Selector {
    strategy: Strategy,
    cursor: AtomicUsize,
    swrr: Mutex<Vec<i64>>,
    /// With `affinity: session`: each provider's rendezvous seed (the hash
    /// of its name), in route order.
    affinity: Option<Vec<u64>>,
}

impl Selector {
    pub fn new(strategy: Strategy, n: usize) -> Self {
        Selector {
            strategy,
            cursor: AtomicUsize::new(0),
            swrr: Mutex::new(vec![0; n]),
            affinity: None,
        }
    }

    /// Turn session affinity on, for the route's providers by name (route
    /// order). Only names and weights decide a session's provider, never
    /// this process's state: every replica agrees.
    pub fn with_affinity<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        self.affinity = Some(names.into_iter().map(affinity::provider_seed).collect());
        self
    }

    /// Whether the route wants session keys (`affinity: session`).
    pub fn wants_session(&self) -> bool {
        self.affinity.is_some()
    }

    /// The order for one request: the strategy's, with the session's
    /// preferred provider first when affinity is on and it may take the
    /// request. The result says what affinity did (`None`: not applied).
    pub fn order_for(
        &self,
        cands: &[CandidateInfo],
        session: Option<SessionKey>,
    ) -> (Vec<usize>, Option<AffinityResult>) {
        let order = self.order(cands);
        let (Some(seeds), Some(key)) = (&self.affinity, session) else {
            return (order, None);
        };
        let weight = |i: usize| cands.get(i).map_or(0, |c| c.weight);
        match affinity::preferred(key.hash, seeds, weight) {
            Some(p) => {
                let (order, result) = affinity::apply(order, cands, p);
                (order, Some(result))
            }
            None => (order, None),
        }
    }

    /// Indexes of the route's providers in the order to try them: available
    /// ones by strategy, then unavailable ones, least recently failed first
    /// (they are still tried when nothing else is left).
    pub fn order(&self, cands: &[CandidateInfo]) -> Vec<usize> {
        let avail: Vec<usize> = (0..cands.len()).filter(|&i| cands[i].available).collect();
        let mut out = match self.strategy {
            Strategy::Priority => avail,
            Strategy::RoundRobin => {
                let tick = self.cursor.fetch_add(1, Ordering::Relaxed);
                round_robin(&avail, tick)
            }
            Strategy::Weighted => {
                let mut cur = self.swrr.lock().unwrap_or_else(|p| p.into_inner());
                weighted(&avail, cands, &mut cur)
            }
            Strategy::LeastLatency => least_latency(
                &avail,
                cands,
                fastrand::usize(..usize::MAX),
                fastrand::usize(..usize::MAX),
            ),
        };
        let mut rest: Vec<usize> = (0..cands.len()).filter(|&i| !cands[i].available).collect();
        rest.sort_by_key(|&i| cands[i].last_failure_at);
        out.extend(rest);
        out
    }
}

/// Rotate the available list by `tick`.
pub fn round_robin(avail: &[usize], tick: usize) -> Vec<usize> {
    if avail.is_empty() {
        return Vec::new();
    }
    let k = tick % avail.len();
    avail[k..].iter().chain(&avail[..k]).copied().collect()
}

/// Smooth weighted round robin (as in nginx): every pick adds each weight to
/// its counter, takes the largest counter and subtracts the total from it.
/// Gives an exact weight ratio with the picks of each provider spread out.
/// The pick goes first; the rest follow by weight for failover.
pub fn weighted(avail: &[usize], cands: &[CandidateInfo], current: &mut [i64]) -> Vec<usize> {
    let Some(pick) = swrr_pick(avail, cands, current) else {
        return Vec::new();
    };
    let mut out = vec![pick];
    let mut rest: Vec<usize> = avail.iter().copied().filter(|&i| i != pick).collect();
    rest.sort_by(|&a, &b| cands[b].weight.cmp(&cands[a].weight));
    out.extend(rest);
    out
}

pub fn swrr_pick(avail: &[usize], cands: &[CandidateInfo], current: &mut [i64]) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for &i in avail {
        let w = i64::from(cands[i].weight);
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

/// Power of two choices over the cost: pick two distinct random candidates
/// and lead with the cheaper; the rest follow by cost for failover.
pub fn least_latency(avail: &[usize], cands: &[CandidateInfo], r1: usize, r2: usize) -> Vec<usize> {
    let n = avail.len();
    if n < 2 {
        return avail.to_vec();
    }
    let a = avail[r1 % n];
    let b = avail[(r1 % n + 1 + r2 % (n - 1)) % n];
    let first = if cands[b].cost < cands[a].cost { b } else { a };
    let mut rest: Vec<usize> = avail.iter().copied().filter(|&i| i != first).collect();
    rest.sort_by(|&x, &y| cands[x].cost.total_cmp(&cands[y].cost));
    let mut out = vec![first];
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(available: bool, weight: u32, cost: f64) -> CandidateInfo {
        CandidateInfo {
            available,
            trial: false,
            weight,
            cost,
            last_failure_at: None,
        }
    }

    fn route(name: &str, paths: &[&str]) -> RouteSettings {
        RouteSettings {
            name: name.into(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            strategy: Strategy::Priority,
            providers: vec![0],
            api: crate::config::Api::Anthropic,
            translate: false,
            affinity: crate::config::Affinity::Off,
        }
    }

    #[test]
    fn first_matching_prefix_wins() {
        let routes = vec![
            route("count", &["/v1/messages/count_tokens"]),
            route("messages", &["/v1/messages"]),
            route("chat", &["/v1/chat/completions", "/v1/responses"]),
        ];
        assert_eq!(match_route(&routes, "/v1/messages"), Some(1));
        assert_eq!(match_route(&routes, "/v1/messages/count_tokens"), Some(0));
        assert_eq!(match_route(&routes, "/v1/responses/abc"), Some(2));
        assert_eq!(match_route(&routes, "/v2/other"), None);
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let p = "/v1/messages";
        assert!(prefix_matches(p, "/v1/messages"));
        assert!(prefix_matches(p, "/v1/messages/"));
        assert!(prefix_matches(p, "/v1/messages/count_tokens"));
        assert!(!prefix_matches(p, "/v1/messagesX"));
        assert!(!prefix_matches(p, "/v1/messages_evil/x"));
        assert!(!prefix_matches(p, "/v1/message"));
        assert!(!prefix_matches(p, "/v2/messages"));
        // A trailing '/' in the prefix: everything below it, not the bare name.
        assert!(prefix_matches("/v1/", "/v1/anything/below"));
        assert!(prefix_matches("/v1/", "/v1/"));
        assert!(!prefix_matches("/v1/", "/v1"));
        assert!(!prefix_matches("/v1/", "/v10/x"));
        assert!(prefix_matches("/", "/"));
        assert!(prefix_matches("/", "/v1/messages"));
    }

    #[test]
    fn segment_boundaries_decide_between_routes() {
        let routes = vec![
            route("responses", &["/v1/responses"]),
            route("catch_all", &["/"]),
        ];
        assert_eq!(match_route(&routes, "/v1/responses/abc"), Some(0));
        assert_eq!(match_route(&routes, "/v1/responses_x"), Some(1));
        assert_eq!(match_route(&routes[..1], "/v1/responsesX"), None);
    }

    #[test]
    fn liveness_probe_is_bare_get_or_head_of_root() {
        use http::Method;
        assert!(is_liveness_probe(&Method::HEAD, "/"));
        assert!(is_liveness_probe(&Method::GET, "/"));
        assert!(!is_liveness_probe(&Method::POST, "/"));
        assert!(!is_liveness_probe(&Method::GET, "/v1"));
        assert!(!is_liveness_probe(&Method::OPTIONS, "/"));
    }

    #[test]
    fn priority_keeps_order_and_puts_unavailable_last() {
        let s = Selector::new(Strategy::Priority, 3);
        let t = Instant::now();
        let mut c = vec![cand(false, 1, 0.0), cand(true, 1, 0.0), cand(false, 1, 0.0)];
        c[0].last_failure_at = Some(t + std::time::Duration::from_secs(1));
        c[2].last_failure_at = Some(t);
        assert_eq!(s.order(&c), vec![1, 2, 0]);
    }

    #[test]
    fn all_unavailable_still_yields_every_provider() {
        let s = Selector::new(Strategy::RoundRobin, 2);
        let c = vec![cand(false, 1, 0.0), cand(false, 1, 0.0)];
        assert_eq!(s.order(&c).len(), 2);
    }

    #[test]
    fn round_robin_distribution_is_even() {
        let s = Selector::new(Strategy::RoundRobin, 3);
        let c = vec![cand(true, 1, 0.0); 3];
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[s.order(&c)[0]] += 1;
        }
        for n in counts {
            assert!((3333..=3334).contains(&n), "{counts:?}");
        }
    }

    #[test]
    fn smooth_weighted_matches_weights_exactly_and_spreads() {
        let s = Selector::new(Strategy::Weighted, 3);
        let c = vec![cand(true, 5, 0.0), cand(true, 1, 0.0), cand(true, 1, 0.0)];
        let mut counts = [0usize; 3];
        let mut seq = Vec::new();
        for _ in 0..10_010 {
            let o = s.order(&c);
            assert_eq!(o.len(), 3);
            counts[o[0]] += 1;
            seq.push(o[0]);
        }
        assert_eq!(counts, [7150, 1430, 1430]);
        // nginx's classic sequence for 5:1:1 is a a b a c a a.
        assert_eq!(&seq[..7], &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weighted_skips_unavailable() {
        let s = Selector::new(Strategy::Weighted, 2);
        let c = vec![cand(false, 100, 0.0), cand(true, 1, 0.0)];
        for _ in 0..100 {
            assert_eq!(s.order(&c)[0], 1);
        }
    }

    #[test]
    fn least_latency_prefers_cheaper_of_two() {
        let c = vec![cand(true, 1, 10.0), cand(true, 1, 1.0), cand(true, 1, 5.0)];
        let avail = [0, 1, 2];
        // Every pair choice leads with its cheaper member.
        for r1 in 0..3 {
            for r2 in 0..2 {
                let o = least_latency(&avail, &c, r1, r2);
                assert_eq!(o.len(), 3);
                let a = avail[r1 % 3];
                let b = avail[(r1 % 3 + 1 + r2 % 2) % 3];
                assert_ne!(a, b);
                let cheaper = if c[a].cost <= c[b].cost { a } else { b };
                assert_eq!(o[0], cheaper);
            }
        }
    }

    #[test]
    fn least_latency_distribution_favours_fast_provider() {
        let s = Selector::new(Strategy::LeastLatency, 3);
        let c = vec![
            cand(true, 1, 100.0),
            cand(true, 1, 10.0),
            cand(true, 1, 50.0),
        ];
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            counts[s.order(&c)[0]] += 1;
        }
        // P2C over 3: the fastest wins both pairs it is in (2/3 of picks),
        // the middle one wins 1/3, the slowest never leads.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 6_000 && counts[1] < 7_300, "{counts:?}");
        assert!(counts[2] > 2_700 && counts[2] < 4_000, "{counts:?}");
    }

    fn session(k: u32) -> Option<SessionKey> {
        Some(SessionKey::of(
            crate::affinity::SessionSource::Header,
            format!("session-{k}").as_bytes(),
        ))
    }

    fn sticky(strategy: Strategy, names: &[&str]) -> Selector {
        Selector::new(strategy, names.len()).with_affinity(names.iter().copied())
    }

    #[test]
    fn affinity_is_the_same_on_every_replica_whatever_the_strategy_did_before() {
        let names = ["anthropic-a", "anthropic-b", "bedrock-us"];
        let c = vec![cand(true, 1, 0.0); 3];
        // Replica 1 has served other traffic (its round-robin cursor moved);
        // replica 2 is fresh. Sessions land on the same provider anyway.
        let r1 = sticky(Strategy::RoundRobin, &names);
        for _ in 0..7 {
            r1.order(&c);
        }
        for k in 0..500 {
            let r2 = sticky(Strategy::RoundRobin, &names);
            let (o1, a1) = r1.order_for(&c, session(k));
            let (o2, a2) = r2.order_for(&c, session(k));
            assert_eq!(o1[0], o2[0], "session {k}");
            assert_eq!(
                (a1, a2),
                (Some(AffinityResult::Hit), Some(AffinityResult::Hit))
            );
            // Failover order still holds every provider once.
            let mut sorted = o1.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2]);
        }
        // Without a key, or without affinity, the strategy alone decides.
        assert_eq!(r1.order_for(&c, None).1, None);
        let plain = Selector::new(Strategy::Priority, 3);
        assert_eq!(plain.order_for(&c, session(1)), (vec![0, 1, 2], None));
    }

    #[test]
    fn weighted_providers_keep_their_share_of_sessions() {
        let s = sticky(Strategy::Priority, &["big", "small"]);
        let c = vec![cand(true, 3, 0.0), cand(true, 1, 0.0)];
        let mut counts = [0usize; 2];
        for k in 0..10_000 {
            counts[s.order_for(&c, session(k)).0[0]] += 1;
        }
        // Priority alone would send all 10 000 to "big"; 3:1 is 7500:2500.
        assert!((7300..=7700).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn an_unavailable_preferred_provider_falls_back_to_the_strategy_then_comes_back() {
        let names = ["p0", "p1", "p2"];
        let s = sticky(Strategy::RoundRobin, &names);
        let up = vec![cand(true, 1, 0.0); 3];
        let key = session(42);
        let (o, a) = s.order_for(&up, key);
        assert_eq!(a, Some(AffinityResult::Hit));
        let home = o[0];
        // Ejected: round robin over the other two, the home provider last.
        let mut down = up.clone();
        down[home].available = false;
        let mut firsts = std::collections::BTreeSet::new();
        for _ in 0..6 {
            let (o, a) = s.order_for(&down, key);
            assert_eq!(a, Some(AffinityResult::Moved));
            assert_ne!(o[0], home);
            assert_eq!(o[2], home);
            firsts.insert(o[0]);
        }
        assert_eq!(firsts.len(), 2, "the strategy chose, not affinity");
        // Half-open: its trial decides; the session waits for the verdict.
        let mut half = up.clone();
        half[home].trial = true;
        assert_eq!(s.order_for(&half, key).1, Some(AffinityResult::Moved));
        // Closed again: the session is home, every time.
        for _ in 0..6 {
            let (o, a) = s.order_for(&up, key);
            assert_eq!((o[0], a), (home, Some(AffinityResult::Hit)));
        }
    }
}
