//! Fail-over between two evaluation services of one provider (same key, zones `eu-a` and
//! `eu-b`), each its own OS process — this test binary started again as the service — so one
//! can be SIGKILLed or SIGSTOPped under paced load (20 token requests a second for 10 s, on
//! loopback). A third endpoint, in region `us`, is outside the calls' residency and must
//! never be called.
//!
//! Each case prints its figures (`cargo test -p pavilion-client --test failover --
//! --nocapture`) and asserts no failed request, no gap of a second or more between two
//! answers, and that the endpoint, once back, answers again — brought back by the probes: the
//! breakers' cooldown is longer than the test.

use std::io::{ErrorKind, Read as _};
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use pavilion_client::{
    BreakerState, ClientError, Endpoint, FailoverConfig, OprfClient, PoolStats, ProviderEndpoint,
    Residency, TenantCredentials,
};
use pavilion_provider::oprf::ProviderKey;
use pavilion_provider::protocol::KEY_PATH;
use pavilion_provider::service::{OprfService, ServiceLimits, TenantDirectory};
use pavilion_schemas::{RequestSigningKey, Tenant, TenantConfig, TenantState};

/// Set in a child process to the address it serves on.
const SERVE_ENV: &str = "PAVILION_TEST_OPRF_SERVE";
const RATE: u32 = 20;
const RUN: Duration = Duration::from_secs(10);
const FAULT_AT: Duration = Duration::from_millis(2_500);
const BACK_AT: Duration = Duration::from_millis(5_500);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

fn provider_key() -> ProviderKey {
    ProviderKey::derive(&[7; 32], b"test").unwrap()
}

fn tenant_key() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

/// Not a test of its own: the body of each evaluation service process the cases start (this
/// binary run again with `PAVILION_TEST_OPRF_SERVE=ADDR`). In a normal run it returns at once.
#[test]
fn evaluation_service_process() {
    let Ok(listen) = std::env::var(SERVE_ENV) else {
        return;
    };
    // Ends with the test that started it: its stdin is a pipe from the parent.
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let directory = Arc::new(TenantDirectory::default());
    directory.update(Tenant {
        stamp: None,
        tenant_id: "acme".into(),
        display_name: "acme".into(),
        state: TenantState::Active,
        signing_keys: vec![RequestSigningKey {
            key_id: "k1".into(),
            public_key: tenant_key().verifying_key().to_bytes().to_vec(),
            not_before: 0,
            not_after: None,
            revoked_at: None,
        }],
        config: TenantConfig {
            rate_limit_per_second: 1_000.0,
            burst: 1_000,
            daily_quota: None,
            allowed_regions: vec!["eu".into()],
            response_topic: "pavilion.decisions.acme".into(),
            privacy_budget_micro: None,
        },
        updated_at: 0,
        revision: 1,
    });
    let limits = ServiceLimits {
        rate_per_second: NonZeroU32::new(1_000_000).unwrap(),
        daily_quota: None,
        ..ServiceLimits::default()
    };
    let service = Arc::new(OprfService::new("bank", provider_key(), directory, limits).unwrap());
    let addr: SocketAddr = listen.parse().unwrap();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            pavilion_http::serve(listener, None, service.router(), std::future::pending())
                .await
                .unwrap();
        });
}

/// An evaluation service process on a fixed loopback port, killed when dropped.
struct Service {
    addr: SocketAddr,
    child: Option<Child>,
}

impl Service {
    fn start() -> Self {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut service = Service { addr, child: None };
        service.restart();
        service
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the process (again, on the same port) and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "evaluation_service_process", "--nocapture"])
            .env(SERVE_ENV, self.addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        let key = format!("{}{KEY_PATH}", self.url());
        while ureq::get(&key)
            .timeout(Duration::from_millis(200))
            .call()
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the service on {} did not come up",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL, also when stopped
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

enum Fault {
    /// SIGKILL, then a new process on the same port.
    Kill,
    /// SIGSTOP (hung: connections are accepted by the kernel, never answered), then SIGCONT.
    Stop,
}

struct Figures {
    requests: usize,
    failed: Vec<String>,
    longest_gap: Duration,
    slowest: Duration,
    /// Successful calls of endpoint 1 when it came back, and at the end.
    primary_answers: (u64, u64),
    stats: PoolStats,
}

fn primary_successes(stats: &PoolStats, url: &str) -> u64 {
    stats
        .endpoints
        .iter()
        .find(|e| e.url == url)
        .map_or(0, |e| e.successes)
}

/// Two services and a forbidden endpoint; `RATE` token requests a second for `RUN`, each on
/// a thread of its own at its scheduled time (a hung request does not delay the next), and
/// `fault` to endpoint 1 from `FAULT_AT` to `BACK_AT`.
fn run(fault: Fault) -> Figures {
    let mut primary = Service::start();
    let secondary = Service::start();
    // Region `us`: residency forbids it. A listener that would see any connection.
    let forbidden = TcpListener::bind("127.0.0.1:0").unwrap();
    forbidden.set_nonblocking(true).unwrap();
    let provider = ProviderEndpoint {
        provider_id: "bank".into(),
        endpoints: vec![
            Endpoint::in_zone(
                "us-a",
                &format!("http://{}", forbidden.local_addr().unwrap()),
            ),
            Endpoint::in_zone("eu-a", &primary.url()),
            Endpoint::in_zone("eu-b", &secondary.url()),
        ],
        public_key: provider_key().public_key(),
    };
    let residency = Residency::regions(["eu"]);
    let client = OprfClient::new(credentials(tenant_key())).with_failover(FailoverConfig {
        attempt_timeout: ATTEMPT_TIMEOUT,
        hedge_after: Some(Duration::from_millis(150)),
        breaker_threshold: 3,
        // Longer than the run: only a probe brings endpoint 1 back.
        breaker_cooldown: Duration::from_secs(60),
        probe_timeout: Duration::from_millis(200),
        ..FailoverConfig::default()
    });
    client.track(&provider, &residency);
    client.start_probes(Duration::from_millis(200)).unwrap();
    let key = provider_key();
    let answers: Mutex<Vec<(Instant, Duration)>> = Mutex::new(Vec::new());
    let failed: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let requests = (RATE as f64 * RUN.as_secs_f64()) as usize;
    let start = Instant::now();
    let mut back_at_successes = 0;
    std::thread::scope(|s| {
        // The fault, on its own schedule.
        let (primary, primary_url) = (&mut primary, provider.endpoints[1].url.clone());
        let client = &client;
        let back = s.spawn(move || {
            std::thread::sleep(FAULT_AT.saturating_sub(start.elapsed()));
            match fault {
                Fault::Kill => primary.kill(),
                Fault::Stop => primary.signal("-STOP"),
            }
            std::thread::sleep(BACK_AT.saturating_sub(start.elapsed()));
            match fault {
                Fault::Kill => primary.restart(),
                Fault::Stop => primary.signal("-CONT"),
            }
            primary_successes(&client.stats(), &primary_url)
        });
        for i in 0..requests {
            let at = start + Duration::from_secs_f64(i as f64 / RATE as f64);
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let (provider, residency, key, answers, failed) =
                (&provider, &residency, &key, &answers, &failed);
            s.spawn(move || {
                let input = format!("user{i}@example.com").into_bytes();
                let sent = Instant::now();
                match client.tokens_in(provider, residency, std::slice::from_ref(&input)) {
                    Ok(tokens) if tokens == [key.evaluate(&input).unwrap()] => {
                        let now = Instant::now();
                        answers.lock().unwrap().push((now, now - sent));
                    }
                    Ok(_) => failed
                        .lock()
                        .unwrap()
                        .push(format!("request {i}: a wrong token")),
                    Err(e) => failed.lock().unwrap().push(format!("request {i}: {e}")),
                }
            });
        }
        back_at_successes = back.join().unwrap();
    });
    let mut answers = answers.into_inner().unwrap();
    answers.sort();
    let longest_gap = answers
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    let slowest = answers.iter().map(|a| a.1).max().unwrap_or_default();
    match forbidden.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the endpoint outside the allowed regions was called: {other:?}"),
    }
    let stats = client.stats();
    Figures {
        requests,
        failed: failed.into_inner().unwrap(),
        longest_gap,
        slowest,
        primary_answers: (
            back_at_successes,
            primary_successes(&stats, &provider.endpoints[1].url),
        ),
        stats,
    }
}

/// The cases measure latency: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn check(case: &str, f: &Figures) {
    println!(
        "{case}: {} requests, {} failed, longest gap between answers {:?}, slowest answer {:?}; \
         attempts {}, fail-overs {}, hedges {}, breakers opened {}, probes {} ({} failed); \
         endpoint 1 answered {} times before it came back, {} after",
        f.requests,
        f.failed.len(),
        f.longest_gap,
        f.slowest,
        f.stats.attempts,
        f.stats.failovers,
        f.stats.hedges,
        f.stats.breaker_opens,
        f.stats.probes,
        f.stats.probe_failures,
        f.primary_answers.0,
        f.primary_answers.1 - f.primary_answers.0,
    );
    assert!(
        f.failed.is_empty(),
        "{case}: failed requests: {:#?}",
        f.failed
    );
    assert!(
        f.longest_gap < Duration::from_secs(1),
        "{case}: no answer for {:?}",
        f.longest_gap
    );
    assert!(
        f.stats.breaker_opens >= 1,
        "{case}: the fault went unnoticed"
    );
    assert!(
        f.primary_answers.1 > f.primary_answers.0 + 10,
        "{case}: endpoint 1 was not used again after it came back: {:#?}",
        f.stats
    );
    assert!(
        f.stats
            .endpoints
            .iter()
            .all(|e| e.breaker == BreakerState::Closed),
        "{case}: {:#?}",
        f.stats.endpoints
    );
}

fn credentials(key: SigningKey) -> TenantCredentials {
    TenantCredentials {
        tenant_id: "acme".into(),
        key_id: "k1".into(),
        signing_key: key,
    }
}

/// A loopback URL nothing listens on.
fn dead_url() -> String {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    format!("http://{addr}")
}

/// A refusal is the same at every endpoint, so it is returned at once; a transport error
/// moves on; an outage of every allowed endpoint lists each; no allowed endpoint, no call.
#[test]
fn refusals_are_returned_failures_move_on_and_an_outage_lists_every_endpoint() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let service = Service::start();
    let (dead, other_dead) = (dead_url(), dead_url());
    let provider = |endpoints: &[(&str, &str)]| ProviderEndpoint {
        provider_id: "bank".into(),
        endpoints: endpoints
            .iter()
            .map(|(zone, url)| Endpoint::in_zone(zone, url))
            .collect(),
        public_key: provider_key().public_key(),
    };
    let input = vec![b"email:alice@example.com".to_vec()];
    let eu = Residency::regions(["eu"]);

    let mallory = OprfClient::new(credentials(SigningKey::from_bytes(&[2; 32])));
    let both = provider(&[("eu-a", &service.url()), ("eu-b", &dead)]);
    match mallory.tokens_in(&both, &eu, &input) {
        Err(ClientError::Refused { status: 401, .. }) => {}
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(
        (mallory.stats().attempts, mallory.stats().failovers),
        (1, 0)
    );

    let client = OprfClient::new(credentials(tenant_key()));
    let dead_first = provider(&[("eu-a", &dead), ("eu-b", &service.url())]);
    let tokens = client.tokens_in(&dead_first, &eu, &input).unwrap();
    assert_eq!(tokens, [provider_key().evaluate(&input[0]).unwrap()]);
    assert_eq!((client.stats().attempts, client.stats().failovers), (2, 1));

    let outage = provider(&[("eu-a", &dead), ("eu-b", &other_dead)]);
    match client.tokens_in(&outage, &eu, &input) {
        Err(e @ ClientError::Unavailable { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with("provider `bank`: no endpoint answered: ")
                    && text.contains(&format!("{dead} (zone eu-a): "))
                    && text.contains(&format!("{other_dead} (zone eu-b): "))
                    && text.matches("Connection refused").count() == 2,
                "{text}"
            );
        }
        other => panic!("expected every endpoint to fail, got {other:?}"),
    }

    let before = client.stats().attempts;
    match client.tokens_in(&outage, &Residency::regions(["us"]), &input) {
        Err(e @ ClientError::NoAllowedEndpoint { .. }) => assert_eq!(
            e.to_string(),
            "provider `bank` has no OPRF endpoint in region us (its endpoints: eu-a in region eu, eu-b in region eu)"
        ),
        other => panic!("expected no allowed endpoint, got {other:?}"),
    }
    assert_eq!(client.stats().attempts, before, "nothing was called");
}

#[test]
fn a_killed_endpoint_costs_no_request_and_is_used_again_once_restarted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let figures = run(Fault::Kill);
    check("SIGKILL", &figures);
    assert!(figures.stats.failovers >= 1 || figures.stats.probe_failures >= 1);
}

#[test]
fn a_hung_endpoint_is_hedged_around_and_used_again_once_it_answers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let figures = run(Fault::Stop);
    check("SIGSTOP", &figures);
    assert!(figures.stats.hedges >= 1, "no hedge: {:#?}", figures.stats);
    // Without hedging, the requests in flight to the hung endpoint would wait for the
    // attempt's deadline before failing over.
    assert!(
        figures.slowest < ATTEMPT_TIMEOUT,
        "an answer took {:?}, the attempt's deadline is {ATTEMPT_TIMEOUT:?}",
        figures.slowest
    );
}
