//! Session affinity (`routes[].affinity: session`): every request
//! of one agent session goes to the same provider, so that provider's
//! prompt cache (and the response ids and encrypted reasoning it issued)
//! stays useful.
//!
//! Stateless by design: the preferred provider is a pure function of the
//! session key and the route's provider names and weights, so every replica
//! of a sidecar fleet, and every restart, picks the same one. The choice is
//! weighted rendezvous hashing (highest random weight, logarithmic method):
//! each provider scores `weight / -ln(u)`, where `u` in (0, 1) comes from a
//! fixed, seedless 64-bit hash of the provider's name and the session key
//! (FNV-1a 64, then the SplitMix64 finaliser); the highest score wins. A
//! provider is preferred by a share of sessions equal to its share of the
//! route's total weight, and adding or removing one provider moves only the
//! sessions that it gains or loses.
//!
//! This module owns the hashing, the choice and how it reorders the
//! strategy's order; finding the key in a request is [`crate::body`]'s job
//! (body fields) and the request path's (the header).

use crate::routing::CandidateInfo;

/// The header Claude Code sends with its session id; the strongest key.
pub const SESSION_HEADER: &str = "x-claude-code-session-id";

/// Where a request's session key came from (the access log says, so an
/// operator can see why sessions spread or stick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionSource {
    /// `x-claude-code-session-id`.
    Header,
    /// `metadata.user_id` (Anthropic; Claude Code puts its session id in it).
    MetadataUserId,
    /// `prompt_cache_key` (OpenAI).
    PromptCacheKey,
    /// `previous_response_id` (OpenAI Responses).
    PreviousResponseId,
    /// `user` (OpenAI).
    User,
    /// No key: a hash of the system prompt and the first message, which
    /// stay the same for the whole conversation.
    Prompt,
}

impl SessionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionSource::Header => "header",
            SessionSource::MetadataUserId => "metadata.user_id",
            SessionSource::PromptCacheKey => "prompt_cache_key",
            SessionSource::PreviousResponseId => "previous_response_id",
            SessionSource::User => "user",
            SessionSource::Prompt => "prompt",
        }
    }
}

/// A request's session: its key, hashed, and where the key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    pub hash: u64,
    pub source: SessionSource,
}

impl SessionKey {
    pub fn of(source: SessionSource, key: &[u8]) -> SessionKey {
        SessionKey {
            hash: fnv1a64(key),
            source,
        }
    }
}

/// What affinity did for one request (`result` of
/// `steadfast_affinity_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffinityResult {
    /// The session's preferred provider leads the order.
    Hit,
    /// The preferred provider is unavailable: the route's strategy chose.
    Moved,
}

impl AffinityResult {
    pub const ALL: [AffinityResult; 2] = [AffinityResult::Hit, AffinityResult::Moved];

    pub fn as_str(self) -> &'static str {
        match self {
            AffinityResult::Hit => "hit",
            AffinityResult::Moved => "moved",
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental FNV-1a, 64 bits: fixed constants, no seed, the same value in
/// every process and on every platform.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(FNV_OFFSET)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(bytes);
    h.finish()
}

/// SplitMix64's finaliser: spreads FNV's weak high bits over the word.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A provider's fixed contribution to every score: the hash of its name.
pub fn provider_seed(name: &str) -> u64 {
    mix64(fnv1a64(name.as_bytes()))
}

/// Weighted rendezvous score of one provider for one session.
fn score(key: u64, seed: u64, weight: u32) -> f64 {
    let h = mix64(key ^ seed);
    // 53 random bits, strictly inside (0, 1).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// The session's preferred provider among `seeds` (one per provider of the
/// route, see [`provider_seed`]) with these weights: independent of which
/// providers are available right now, so a session returns to it.
pub fn preferred(key: u64, seeds: &[u64], weights: impl Fn(usize) -> u32) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &seed) in seeds.iter().enumerate() {
        let s = score(key, seed, weights(i));
        // Ties (practically impossible) go to the earlier provider.
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// Put the session's preferred provider first in the strategy's `order`
/// when it may take the request; otherwise keep the strategy's order (the
/// session moves, and comes back once its provider recovers).
///
/// A provider counts as recovered once its circuit is closed again, not
/// while it is half-open: the trial request that decides it is whatever
/// the strategy sends there, and sessions only follow a settled verdict.
/// How often that verdict can change is bounded by the breaker's
/// exponential ejection backoff, so sessions do not flap.
pub fn apply(
    mut order: Vec<usize>,
    cands: &[CandidateInfo],
    preferred: usize,
) -> (Vec<usize>, AffinityResult) {
    let settled = cands
        .get(preferred)
        .is_some_and(|c| c.available && !c.trial);
    if !settled {
        return (order, AffinityResult::Moved);
    }
    if let Some(pos) = order.iter().position(|&i| i == preferred) {
        order.remove(pos);
    }
    order.insert(0, preferred);
    (order, AffinityResult::Hit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        // From the FNV reference (Noll): the empty string, "a", "foobar".
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let mut h = Fnv::default();
        h.write(b"foo");
        h.write(b"bar");
        assert_eq!(h.finish(), fnv1a64(b"foobar"));
    }

    #[test]
    fn preference_is_a_pure_function_of_key_names_and_weights() {
        let names = ["anthropic-a", "anthropic-b", "bedrock-us"];
        // Two "replicas" computing from scratch agree, for every key.
        let seeds1: Vec<u64> = names.iter().map(|n| provider_seed(n)).collect();
        let seeds2: Vec<u64> = names.iter().map(|n| provider_seed(n)).collect();
        for k in 0..1000u32 {
            let key = fnv1a64(format!("session-{k}").as_bytes());
            assert_eq!(
                preferred(key, &seeds1, |_| 1),
                preferred(key, &seeds2, |_| 1)
            );
        }
        // Pinned values (checked against an independent implementation of
        // the documented algorithm): a change would move every session of
        // a running fleet, so it must be deliberate.
        let key = fnv1a64(b"session-0");
        assert_eq!(key, 0x1688_585d_cf49_169a);
        assert_eq!(preferred(key, &seeds1, |_| 1), Some(2));
    }

    #[test]
    fn weighted_shares_hold_across_ten_thousand_sessions() {
        let seeds = [provider_seed("heavy"), provider_seed("light")];
        let mut counts = [0usize; 2];
        for k in 0..10_000u32 {
            let key = fnv1a64(format!("user-{k}").as_bytes());
            counts[preferred(key, &seeds, |i| [3, 1][i]).unwrap()] += 1;
        }
        // 3:1 is 7500:2500; five standard deviations is about ±220.
        assert!((7300..=7700).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn equal_weights_spread_evenly_and_removal_moves_only_the_removed_share() {
        let names = ["p0", "p1", "p2", "p3"];
        let seeds: Vec<u64> = names.iter().map(|n| provider_seed(n)).collect();
        let mut counts = [0usize; 4];
        let mut moved = 0;
        for k in 0..10_000u32 {
            let key = fnv1a64(format!("k{k}").as_bytes());
            let all = preferred(key, &seeds, |_| 1).unwrap();
            counts[all] += 1;
            // Without p3: only p3's sessions move.
            let three = preferred(key, &seeds[..3], |_| 1).unwrap();
            if all != 3 {
                assert_eq!(three, all);
            } else {
                moved += 1;
            }
        }
        for c in counts {
            assert!((2300..=2700).contains(&c), "{counts:?}");
        }
        assert_eq!(moved, counts[3]);
    }

    fn cand(available: bool, trial: bool) -> CandidateInfo {
        CandidateInfo {
            available,
            trial,
            weight: 1,
            cost: 0.0,
            last_failure_at: None,
        }
    }

    #[test]
    fn apply_leads_with_the_preferred_provider_only_when_it_is_settled() {
        let up = [cand(true, false), cand(true, false), cand(true, false)];
        assert_eq!(
            apply(vec![0, 1, 2], &up, 2),
            (vec![2, 0, 1], AffinityResult::Hit)
        );
        assert_eq!(
            apply(vec![1, 0, 2], &up, 1),
            (vec![1, 0, 2], AffinityResult::Hit)
        );
        // Ejected or cooling down: the strategy's order, untouched.
        let down = [cand(true, false), cand(true, false), cand(false, false)];
        assert_eq!(
            apply(vec![1, 0, 2], &down, 2),
            (vec![1, 0, 2], AffinityResult::Moved)
        );
        // Half-open: not yet; the strategy may still send it the trial.
        let half = [cand(true, false), cand(true, true)];
        assert_eq!(
            apply(vec![1, 0], &half, 1),
            (vec![1, 0], AffinityResult::Moved)
        );
    }
}
