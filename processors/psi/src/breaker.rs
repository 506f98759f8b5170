//! One circuit breaker per provider, for zero-knowledge evidence: after `failures` failures in
//! a row (answers that never came, proofs that did not verify) the provider is not asked for a
//! `cooldown`; then one probe is let through (half-open), and its answer closes the breaker
//! or opens it again.
//!
//! A breaker is the health of a provider as this stream thread sees it, not data: it lives in
//! memory, starts closed after a restart, and is never part of a transaction.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u64,
    },
    Open {
        until_ms: i64,
    },
    /// One ask is out to find out whether the provider is back.
    HalfOpen,
}

/// What a change of state was, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    Opened,
    Closed,
}

/// The breakers of every provider this stage asked.
pub(crate) struct Breakers {
    failures_to_open: u64,
    cooldown_ms: i64,
    states: HashMap<String, State>,
}

impl Breakers {
    pub(crate) fn new(failures_to_open: u64, cooldown_ms: i64) -> Self {
        Breakers {
            failures_to_open: failures_to_open.max(1),
            cooldown_ms,
            states: HashMap::new(),
        }
    }

    /// Whether `provider` may be asked now. An open breaker whose cooldown is over lets this
    /// one ask through as the probe and refuses the others until the probe is answered.
    pub(crate) fn allow(&mut self, provider: &str, now_ms: i64) -> bool {
        let state = self
            .states
            .entry(provider.to_owned())
            .or_insert(State::Closed { failures: 0 });
        match *state {
            State::Closed { .. } => true,
            State::Open { until_ms } if now_ms >= until_ms => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    /// The provider answered in time with something that checks out.
    pub(crate) fn success(&mut self, provider: &str) -> Option<Transition> {
        let previous = self
            .states
            .insert(provider.to_owned(), State::Closed { failures: 0 });
        matches!(previous, Some(State::HalfOpen | State::Open { .. })).then_some(Transition::Closed)
    }

    /// The provider did not answer in time, or answered with a bad proof.
    pub(crate) fn failure(&mut self, provider: &str, now_ms: i64) -> Option<Transition> {
        let state = self
            .states
            .entry(provider.to_owned())
            .or_insert(State::Closed { failures: 0 });
        let open = State::Open {
            until_ms: now_ms + self.cooldown_ms,
        };
        match *state {
            State::Closed { failures } if failures + 1 >= self.failures_to_open => {
                *state = open;
                Some(Transition::Opened)
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                None
            }
            // A failed probe opens it again; failures of asks made before it opened change
            // nothing.
            State::HalfOpen => {
                *state = open;
                Some(Transition::Opened)
            }
            State::Open { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_probes_after_the_cooldown_and_closes_on_success() {
        let mut b = Breakers::new(3, 1_000);
        assert!(b.allow("p", 0));
        assert_eq!(b.failure("p", 0), None);
        assert_eq!(b.failure("p", 0), None);
        assert_eq!(b.failure("p", 10), Some(Transition::Opened));
        assert!(!b.allow("p", 500), "open during the cooldown");
        assert!(b.allow("other", 500), "breakers are per provider");
        assert!(b.allow("p", 1_010), "the probe goes through");
        assert!(!b.allow("p", 1_020), "only one probe at a time");
        assert_eq!(
            b.failure("p", 1_100),
            Some(Transition::Opened),
            "failed probe"
        );
        assert!(!b.allow("p", 2_000));
        assert!(b.allow("p", 2_100));
        assert_eq!(b.success("p"), Some(Transition::Closed));
        assert!(b.allow("p", 2_100));
        assert_eq!(b.success("p"), None);
    }
}
