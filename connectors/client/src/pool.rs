//! The health of every evaluation endpoint one [`OprfClient`](crate::OprfClient) has used:
//! a circuit breaker per endpoint URL, the order a call tries endpoints in, and counters.
//!
//! Pure state: every transition takes the time as an argument (the tests pass their own
//! instants), and the I/O — attempts, hedges, probes — is `failover.rs`'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pavilion_provider::oprf::ELEMENT_LEN;

use crate::endpoints::{Endpoint, ProviderEndpoint, Residency};

/// How a client spreads its calls over a provider's endpoints.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// Deadline of an attempt carrying one blinded element (connecting, sending, the whole
    /// answer).
    pub attempt_timeout: Duration,
    /// Added to the deadline for each further element of a batch: a batch of 1,000 takes the
    /// service longer to evaluate and prove than one element.
    pub attempt_timeout_per_element: Duration,
    /// Consecutive failures (errors, timeouts, 5xx, failed probes) that open an endpoint's
    /// breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker keeps its endpoint behind the others; then one trial call
    /// may close it (half-open). A successful probe ends the wait early.
    pub breaker_cooldown: Duration,
    /// When the first attempt has not answered after this long, send the same signed
    /// request to the next endpoint too and take whichever answers first. `None`: no
    /// hedging.
    pub hedge_after: Option<Duration>,
    /// Deadline of a probe (`GET /v1/oprf/key`).
    pub probe_timeout: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            attempt_timeout: Duration::from_millis(500),
            attempt_timeout_per_element: Duration::from_millis(2),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(5),
            hedge_after: None,
            probe_timeout: Duration::from_millis(250),
        }
    }
}

impl FailoverConfig {
    /// The deadline of one attempt carrying `elements` blinded elements.
    pub fn deadline(&self, elements: usize) -> Duration {
        self.attempt_timeout
            + self
                .attempt_timeout_per_element
                .saturating_mul(elements.saturating_sub(1).try_into().unwrap_or(u32::MAX))
    }
}

/// An endpoint's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Too many failures: the endpoint is tried only after every other one, until the
    /// cooldown ends or a probe succeeds.
    Open,
    /// After the cooldown or a successful probe: the next call may try it (one trial);
    /// success closes the breaker, failure opens it again.
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed,
    Open { until: Instant },
    HalfOpen { trial_in_flight: bool },
}

/// What the pool knows of one endpoint.
#[derive(Debug, Clone)]
struct Health {
    provider_id: String,
    public_key: [u8; ELEMENT_LEN],
    zone: String,
    breaker: Breaker,
    consecutive_failures: u32,
    successes: u64,
    failures: u64,
    last_error: Option<String>,
}

impl Health {
    /// The breaker as of `now`: an open one whose cooldown has passed is half-open.
    fn settle(&mut self, now: Instant) {
        if let Breaker::Open { until } = self.breaker {
            if now >= until {
                self.breaker = Breaker::HalfOpen {
                    trial_in_flight: false,
                };
            }
        }
    }

    /// Whether a call should try this endpoint before the unhealthy ones.
    fn healthy(&self) -> bool {
        matches!(
            self.breaker,
            Breaker::Closed
                | Breaker::HalfOpen {
                    trial_in_flight: false
                }
        )
    }
}

/// One endpoint's health, as [`PoolStats`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStats {
    /// Provider.
    pub provider_id: String,
    /// Zone.
    pub zone: String,
    /// Base URL.
    pub url: String,
    /// Its breaker.
    pub breaker: BreakerState,
    /// Successful calls (answers, refusals included: the service was up).
    pub successes: u64,
    /// Failed calls and probes.
    pub failures: u64,
    /// The last failure's reason.
    pub last_error: Option<String>,
}

/// What a client's calls have done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Evaluation requests sent, hedges and fail-overs included.
    pub attempts: u64,
    /// Attempts sent because the one before failed.
    pub failovers: u64,
    /// Attempts sent because the first was slow.
    pub hedges: u64,
    /// Times a breaker opened.
    pub breaker_opens: u64,
    /// Probes sent.
    pub probes: u64,
    /// Probes that failed.
    pub probe_failures: u64,
    /// Every endpoint known, by URL.
    pub endpoints: Vec<EndpointStats>,
}

#[derive(Default)]
struct Counters {
    attempts: AtomicU64,
    failovers: AtomicU64,
    hedges: AtomicU64,
    breaker_opens: AtomicU64,
    probes: AtomicU64,
    probe_failures: AtomicU64,
}

/// Why an attempt started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    First,
    Failover,
    Hedge,
}

/// An endpoint a probe should ask.
pub(crate) struct ProbeTarget {
    pub provider_id: String,
    pub url: String,
    pub public_key: [u8; ELEMENT_LEN],
}

/// The health of every endpoint a client has been allowed to call, shared by all its calls
/// and its probe thread.
pub(crate) struct Pool {
    pub config: FailoverConfig,
    health: Mutex<HashMap<String, Health>>,
    counters: Counters,
}

impl Pool {
    pub fn new(config: FailoverConfig) -> Self {
        Pool {
            config,
            health: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, HashMap<String, Health>> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoints of `provider` that `residency` allows, in the order a call tries them:
    /// healthy before unhealthy, the provider's order otherwise. The pool learns them here,
    /// so probes ask only endpoints some call was allowed to use.
    pub fn order(
        &self,
        provider: &ProviderEndpoint,
        residency: &Residency,
        now: Instant,
    ) -> Vec<Endpoint> {
        let mut health = self.health();
        let mut ranked: Vec<(bool, Endpoint)> = provider
            .allowed(residency)
            .map(|e| {
                let h = health.entry(e.url.clone()).or_insert_with(|| Health {
                    provider_id: provider.provider_id.clone(),
                    public_key: provider.public_key,
                    zone: e.zone.clone(),
                    breaker: Breaker::Closed,
                    consecutive_failures: 0,
                    successes: 0,
                    failures: 0,
                    last_error: None,
                });
                h.settle(now);
                (h.healthy(), e.clone())
            })
            .collect();
        ranked.sort_by_key(|(healthy, _)| !healthy); // stable
        ranked.into_iter().map(|(_, e)| e).collect()
    }

    /// An attempt on `url` starts: a half-open endpoint's first attempt is its trial (the
    /// others go elsewhere first until it ends).
    pub fn start(&self, url: &str, why: Start, now: Instant) {
        let c = &self.counters;
        c.attempts.fetch_add(1, Ordering::Relaxed);
        match why {
            Start::First => {}
            Start::Failover => {
                c.failovers.fetch_add(1, Ordering::Relaxed);
            }
            Start::Hedge => {
                c.hedges.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(h) = self.health().get_mut(url) {
            h.settle(now);
            if let Breaker::HalfOpen { .. } = h.breaker {
                h.breaker = Breaker::HalfOpen {
                    trial_in_flight: true,
                };
            }
        }
    }

    /// The endpoint answered (an evaluation or a refusal): its breaker closes.
    pub fn succeeded(&self, url: &str) {
        if let Some(h) = self.health().get_mut(url) {
            h.breaker = Breaker::Closed;
            h.consecutive_failures = 0;
            h.successes += 1;
        }
    }

    /// The endpoint failed (transport error, timeout, 5xx, an answer that does not verify,
    /// a failed probe).
    pub fn failed(&self, url: &str, why: &str, now: Instant) {
        let mut health = self.health();
        let Some(h) = health.get_mut(url) else {
            return;
        };
        h.settle(now);
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        h.failures += 1;
        h.last_error = Some(why.to_owned());
        let open = Breaker::Open {
            until: now + self.config.breaker_cooldown,
        };
        match h.breaker {
            Breaker::Closed if h.consecutive_failures >= self.config.breaker_threshold => {
                h.breaker = open;
                self.counters.breaker_opens.fetch_add(1, Ordering::Relaxed);
            }
            Breaker::Closed => {}
            Breaker::HalfOpen { .. } => {
                h.breaker = open;
                self.counters.breaker_opens.fetch_add(1, Ordering::Relaxed);
            }
            // Tried as a last resort while open, and failed again: the cooldown restarts.
            Breaker::Open { .. } => h.breaker = open,
        }
    }

    /// Every endpoint to probe.
    pub fn probe_targets(&self) -> Vec<ProbeTarget> {
        let mut targets: Vec<ProbeTarget> = self
            .health()
            .iter()
            .map(|(url, h)| ProbeTarget {
                provider_id: h.provider_id.clone(),
                url: url.clone(),
                public_key: h.public_key,
            })
            .collect();
        targets.sort_by(|a, b| a.url.cmp(&b.url));
        targets
    }

    /// A probe's outcome: a failure counts as any other; a success lets an open breaker's
    /// endpoint have its trial call now rather than after the cooldown.
    pub fn probed(&self, url: &str, outcome: Result<(), String>, now: Instant) {
        self.counters.probes.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                if let Some(h) = self.health().get_mut(url) {
                    if let Breaker::Open { .. } = h.breaker {
                        h.breaker = Breaker::HalfOpen {
                            trial_in_flight: false,
                        };
                    }
                }
            }
            Err(why) => {
                self.counters.probe_failures.fetch_add(1, Ordering::Relaxed);
                self.failed(url, &format!("probe: {why}"), now);
            }
        }
    }

    pub fn stats(&self, now: Instant) -> PoolStats {
        let c = &self.counters;
        let mut endpoints: Vec<EndpointStats> = self
            .health()
            .iter_mut()
            .map(|(url, h)| {
                h.settle(now);
                EndpointStats {
                    provider_id: h.provider_id.clone(),
                    zone: h.zone.clone(),
                    url: url.clone(),
                    breaker: match h.breaker {
                        Breaker::Closed => BreakerState::Closed,
                        Breaker::Open { .. } => BreakerState::Open,
                        Breaker::HalfOpen { .. } => BreakerState::HalfOpen,
                    },
                    successes: h.successes,
                    failures: h.failures,
                    last_error: h.last_error.clone(),
                }
            })
            .collect();
        endpoints.sort_by(|a, b| a.url.cmp(&b.url));
        PoolStats {
            attempts: c.attempts.load(Ordering::Relaxed),
            failovers: c.failovers.load(Ordering::Relaxed),
            hedges: c.hedges.load(Ordering::Relaxed),
            breaker_opens: c.breaker_opens.load(Ordering::Relaxed),
            probes: c.probes.load(Ordering::Relaxed),
            probe_failures: c.probe_failures.load(Ordering::Relaxed),
            endpoints,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn provider() -> ProviderEndpoint {
        ProviderEndpoint {
            provider_id: "bank".into(),
            endpoints: vec![
                Endpoint::in_zone("eu-a", "http://a"),
                Endpoint::in_zone("eu-b", "http://b"),
                Endpoint::in_zone("us-a", "http://c"),
            ],
            public_key: [0; ELEMENT_LEN],
        }
    }

    fn pool() -> Pool {
        Pool::new(FailoverConfig {
            breaker_threshold: 2,
            breaker_cooldown: 10 * SECOND,
            ..FailoverConfig::default()
        })
    }

    fn order(pool: &Pool, residency: &Residency, now: Instant) -> Vec<String> {
        pool.order(&provider(), residency, now)
            .into_iter()
            .map(|e| e.url)
            .collect()
    }

    fn breaker(pool: &Pool, url: &str, now: Instant) -> BreakerState {
        let stats = pool.stats(now);
        stats
            .endpoints
            .iter()
            .find(|e| e.url == url)
            .unwrap()
            .breaker
    }

    #[test]
    fn residency_filters_and_healthy_endpoints_go_first_in_listed_order() {
        let (pool, t0) = (pool(), Instant::now());
        let eu = Residency::regions(["eu"]);
        assert_eq!(order(&pool, &eu, t0), ["http://a", "http://b"]);
        assert_eq!(
            pool.probe_targets().len(),
            2,
            "an endpoint no call may use is not known, so never probed"
        );
        pool.failed("http://a", "refused", t0);
        assert_eq!(
            order(&pool, &eu, t0),
            ["http://a", "http://b"],
            "one failure is below the threshold"
        );
        pool.failed("http://a", "refused", t0);
        assert_eq!(breaker(&pool, "http://a", t0), BreakerState::Open);
        assert_eq!(
            order(&pool, &Residency::Anywhere, t0),
            ["http://b", "http://c", "http://a"]
        );
        assert_eq!(pool.stats(t0).breaker_opens, 1);
    }

    #[test]
    fn a_success_resets_the_count_of_consecutive_failures() {
        let (pool, t0) = (pool(), Instant::now());
        order(&pool, &Residency::Anywhere, t0);
        pool.failed("http://a", "timeout", t0);
        pool.succeeded("http://a");
        pool.failed("http://a", "timeout", t0);
        assert_eq!(breaker(&pool, "http://a", t0), BreakerState::Closed);
    }

    #[test]
    fn after_the_cooldown_one_trial_call_closes_or_reopens_the_breaker() {
        let (pool, t0) = (pool(), Instant::now());
        let anywhere = Residency::Anywhere;
        order(&pool, &anywhere, t0);
        pool.failed("http://a", "timeout", t0);
        pool.failed("http://a", "timeout", t0);
        let t1 = t0 + 10 * SECOND;
        assert_eq!(breaker(&pool, "http://a", t1), BreakerState::HalfOpen);
        assert_eq!(order(&pool, &anywhere, t1)[0], "http://a", "its trial");
        pool.start("http://a", Start::First, t1);
        assert_eq!(
            order(&pool, &anywhere, t1),
            ["http://b", "http://c", "http://a"],
            "one trial at a time"
        );
        pool.failed("http://a", "timeout", t1);
        assert_eq!(breaker(&pool, "http://a", t1), BreakerState::Open);
        assert_eq!(pool.stats(t1).breaker_opens, 2);
        let t2 = t1 + 10 * SECOND;
        pool.start("http://a", Start::First, t2);
        pool.succeeded("http://a");
        assert_eq!(breaker(&pool, "http://a", t2), BreakerState::Closed);
        assert_eq!(order(&pool, &anywhere, t2)[0], "http://a");
    }

    #[test]
    fn probes_open_a_dead_endpoint_and_readmit_a_recovered_one_before_the_cooldown() {
        let (pool, t0) = (pool(), Instant::now());
        order(&pool, &Residency::Anywhere, t0);
        pool.probed("http://b", Err("connection refused".into()), t0);
        pool.probed("http://b", Err("connection refused".into()), t0);
        assert_eq!(breaker(&pool, "http://b", t0), BreakerState::Open);
        let t1 = t0 + SECOND;
        pool.probed("http://b", Ok(()), t1);
        assert_eq!(breaker(&pool, "http://b", t1), BreakerState::HalfOpen);
        assert_eq!(
            order(&pool, &Residency::Anywhere, t1),
            ["http://a", "http://b", "http://c"]
        );
        let stats = pool.stats(t1);
        assert_eq!((stats.probes, stats.probe_failures), (3, 2));
    }

    #[test]
    fn the_deadline_grows_with_the_batch() {
        let config = FailoverConfig::default();
        assert_eq!(config.deadline(1), Duration::from_millis(500));
        assert_eq!(config.deadline(1_000), Duration::from_millis(500 + 999 * 2));
    }
}
