//! Failover sequencing as policy: which provider to try
//! next, what a failed attempt does to that order, and when to stop.
//!
//! Pure: the attempt loop reports facts (a provider was at its own
//! concurrency cap, an attempt failed with a class) and asks for the next
//! step. No sockets, clocks or shared state live here, so unit tests drive
//! every path. The model is Pingora's retry loop, where the decision is data
//! on the error, and linkerd2-proxy's retry `Policy`.

use crate::health::Offer;
use crate::outcome::{ClassSet, ErrorClass};
use std::collections::VecDeque;

/// One provider of the route, by its index in the route's provider list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub index: usize,
    /// Tried although its circuit is open or it is cooling down: nothing
    /// better is left.
    pub forced: bool,
}

/// What the attempt loop should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Try this provider (if its own limiter and breaker admit it now).
    Try(Candidate),
    /// Every provider was at its own concurrency cap before anything was
    /// tried: wait for this one's slot, as for the global limiter.
    WaitFor(usize),
    /// Nothing more to try: answer with what the attempts produced.
    GiveUp,
}

/// How an attempt failed, as far as sequencing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed {
    pub class: ErrorClass,
    /// A quick failure that often clears at once (a reset, a 5xx): worth one
    /// more try on the same provider once every untried one has had its
    /// turn. Not a refused connection (nobody is listening; asking again at
    /// once only adds latency) and not a timeout (a provider that just took
    /// the whole budget to say nothing would double the client's wait).
    pub retry_same: bool,
}

impl Failed {
    pub fn new(class: ErrorClass, retry_same: bool) -> Failed {
        Failed { class, retry_same }
    }
}

/// The sequencing state of one client request.
#[derive(Debug)]
pub struct Plan {
    queue: VecDeque<Candidate>,
    /// Second chances on providers that failed transiently, after every
    /// untried provider.
    again: Vec<Candidate>,
    /// Providers skipped because their own limiter was full.
    at_cap: Vec<usize>,
    made: u32,
    max: u32,
    failover_on: ClassSet,
    stopped: bool,
    /// Providers of the route left out altogether (disabled).
    excluded: usize,
}

impl Plan {
    /// `order` is the strategy's order of `(index, offer)`: last-resort
    /// providers come last (the strategy puts them there) and are forced;
    /// those never to be offered are left out.
    pub fn new(
        order: impl IntoIterator<Item = (usize, Offer)>,
        max_attempts: u32,
        failover_on: ClassSet,
    ) -> Plan {
        let mut excluded = 0;
        let queue = order
            .into_iter()
            .filter_map(|(index, offer)| match offer {
                Offer::First => Some(Candidate {
                    index,
                    forced: false,
                }),
                Offer::LastResort => Some(Candidate {
                    index,
                    forced: true,
                }),
                Offer::Never => {
                    excluded += 1;
                    None
                }
            })
            .collect();
        Plan {
            queue,
            again: Vec::new(),
            at_cap: Vec::new(),
            made: 0,
            max: max_attempts,
            failover_on,
            stopped: false,
            excluded,
        }
    }

    /// How many of the route's providers were left out (disabled).
    pub fn excluded(&self) -> usize {
        self.excluded
    }

    /// The next step. A `Try` that the loop cannot take (its limiter is
    /// full: report [`Plan::at_cap`]; its half-open probe slot is taken:
    /// just ask again) costs no attempt.
    pub fn next(&mut self) -> Step {
        if self.stopped || self.made >= self.max {
            return Step::GiveUp;
        }
        if self.queue.is_empty() {
            self.queue.extend(self.again.drain(..));
        }
        if let Some(c) = self.queue.pop_front() {
            return Step::Try(c);
        }
        if self.made == 0 && !self.at_cap.is_empty() {
            return Step::WaitFor(self.at_cap.remove(0));
        }
        Step::GiveUp
    }

    /// The candidate just offered could not be tried: its provider is at
    /// its own concurrency cap.
    pub fn at_cap(&mut self, index: usize) {
        self.at_cap.push(index);
    }

    /// An attempt is really being made (counts against `max_attempts`).
    pub fn started(&mut self) {
        self.made += 1;
    }

    pub fn made(&self) -> u32 {
        self.made
    }

    /// Whether a failure of this kind, on the attempt now in progress,
    /// would be followed by another attempt. Decides whether that attempt's
    /// error response is held back (it is only the answer if nothing better
    /// comes) or is the answer.
    pub fn would_continue(&self, f: Failed) -> bool {
        !self.stopped
            && self.failover_on.contains(f.class)
            && self.made < self.max
            && (!self.queue.is_empty() || !self.again.is_empty() || f.retry_same)
    }

    /// Record a failed attempt on `c`; returns whether to go on.
    pub fn failed(&mut self, c: Candidate, f: Failed) -> bool {
        if !self.failover_on.contains(f.class) {
            self.stopped = true;
            return false;
        }
        if f.retry_same {
            self.again.push(Candidate {
                index: c.index,
                forced: false,
            });
        }
        self.made < self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorClass::*;

    fn defaults() -> ClassSet {
        [Network, Timeout, RateLimit, Server, Auth]
            .into_iter()
            .collect()
    }

    fn plan(avail: &[bool], max: u32) -> Plan {
        let offer = |a: bool| if a { Offer::First } else { Offer::LastResort };
        Plan::new(avail.iter().map(|&a| offer(a)).enumerate(), max, defaults())
    }

    /// Run a plan to the end, failing every attempt with `f(index)`;
    /// returns the providers tried, in order.
    fn drive(mut p: Plan, f: impl Fn(usize) -> Failed) -> Vec<usize> {
        let mut tried = Vec::new();
        loop {
            match p.next() {
                Step::Try(c) => {
                    p.started();
                    tried.push(c.index);
                    if !p.failed(c, f(c.index)) {
                        break;
                    }
                }
                Step::WaitFor(i) => panic!("unexpected wait for {i}"),
                Step::GiveUp => break,
            }
        }
        tried
    }

    #[test]
    fn providers_are_tried_in_strategy_order_up_to_max_attempts() {
        let tried = drive(plan(&[true, true, true, true], 3), |_| {
            Failed::new(Server, false)
        });
        assert_eq!(tried, vec![0, 1, 2]);
    }

    #[test]
    fn unavailable_providers_are_forced_last_resorts() {
        let mut p = Plan::new([(1, Offer::First), (0, Offer::LastResort)], 3, defaults());
        assert_eq!(
            p.next(),
            Step::Try(Candidate {
                index: 1,
                forced: false
            })
        );
        p.started();
        p.failed(
            Candidate {
                index: 1,
                forced: false,
            },
            Failed::new(Timeout, false),
        );
        assert_eq!(
            p.next(),
            Step::Try(Candidate {
                index: 0,
                forced: true
            })
        );
    }

    #[test]
    fn disabled_providers_are_never_tried_not_even_as_a_last_resort() {
        let order = [
            (2, Offer::Never),
            (1, Offer::First),
            (0, Offer::LastResort),
            (3, Offer::Never),
        ];
        let p = Plan::new(order, 5, defaults());
        assert_eq!(p.excluded(), 2);
        // Every attempt fails with a transient error worth a second try:
        // still, only the two offered providers are ever tried.
        let tried = drive(p, |_| Failed::new(Server, true));
        assert_eq!(tried, vec![1, 0, 1, 0, 1]);
        // All disabled: nothing at all to try.
        let mut p = Plan::new([(0, Offer::Never), (1, Offer::Never)], 3, defaults());
        assert_eq!(p.excluded(), 2);
        assert_eq!(p.next(), Step::GiveUp);
        assert_eq!(p.made(), 0);
    }

    #[test]
    fn a_transient_failure_is_retried_only_after_every_untried_provider() {
        // p0 resets (worth a second try), p1 and p2 are untried: they come
        // first, then p0 again.
        let tried = drive(plan(&[true, true, true], 4), |i| {
            Failed::new(if i == 0 { Network } else { Server }, i == 0)
        });
        assert_eq!(tried, vec![0, 1, 2, 0]);
    }

    #[test]
    fn a_refused_connection_is_not_retried_while_untried_providers_remain() {
        // Refused: no second chance at all, even with attempts to spare.
        let tried = drive(plan(&[true, true], 3), |i| Failed::new(Network, i != 0));
        assert_eq!(tried, vec![0, 1, 1]);
    }

    #[test]
    fn a_single_provider_gets_its_second_chance() {
        let tried = drive(plan(&[true], 3), |_| Failed::new(Server, true));
        assert_eq!(tried, vec![0, 0, 0]);
    }

    #[test]
    fn a_class_outside_failover_on_stops_at_once() {
        let tried = drive(plan(&[true, true, true], 3), |_| {
            Failed::new(Request, false)
        });
        assert_eq!(tried, vec![0]);
        let mut p = plan(&[true, true], 3);
        let c = match p.next() {
            Step::Try(c) => c,
            s => panic!("{s:?}"),
        };
        p.started();
        assert!(!p.would_continue(Failed::new(Request, false)));
        assert!(p.would_continue(Failed::new(Server, false)));
        assert!(!p.failed(c, Failed::new(Request, false)));
        assert_eq!(p.next(), Step::GiveUp);
    }

    #[test]
    fn would_continue_knows_the_last_attempt() {
        let mut p = plan(&[true, true], 2);
        for _ in 0..2 {
            let Step::Try(c) = p.next() else {
                panic!("expected a try")
            };
            p.started();
            let last = p.made() == 2;
            assert_eq!(p.would_continue(Failed::new(Server, true)), !last);
            p.failed(c, Failed::new(Server, true));
        }
        assert_eq!(p.next(), Step::GiveUp);
        // Alone and refused: nothing else to try, so the error is the answer.
        let mut p = plan(&[true], 3);
        let Step::Try(_) = p.next() else {
            panic!("expected a try")
        };
        p.started();
        assert!(!p.would_continue(Failed::new(Network, false)));
        assert!(p.would_continue(Failed::new(Network, true)));
    }

    #[test]
    fn providers_at_their_cap_are_waited_for_only_before_any_attempt() {
        let mut p = plan(&[true, true], 3);
        for i in 0..2 {
            assert_eq!(
                p.next(),
                Step::Try(Candidate {
                    index: i,
                    forced: false
                })
            );
            p.at_cap(i);
        }
        assert_eq!(p.next(), Step::WaitFor(0));

        // Once an attempt was made, a full provider is not waited for.
        let mut p = plan(&[true, true], 3);
        let Step::Try(c) = p.next() else {
            panic!("expected a try")
        };
        p.started();
        p.failed(c, Failed::new(Server, false));
        assert!(matches!(p.next(), Step::Try(c) if c.index == 1));
        p.at_cap(1);
        assert_eq!(p.next(), Step::GiveUp);
    }

    #[test]
    fn skipped_offers_cost_no_attempt() {
        // A half-open provider whose probe is out is offered and skipped.
        let mut p = plan(&[true, true], 1);
        assert!(matches!(p.next(), Step::Try(c) if c.index == 0));
        assert!(matches!(p.next(), Step::Try(c) if c.index == 1));
        p.started();
        assert_eq!(p.made(), 1);
    }
}
