//! Restarts of the request path on the real broker (issue 14 §1): tenancy → policy → psi →
//! signing fused, psi's global stores restored from a provider's registry entry and its
//! loaded set, and the audit stage in its own task. A restart that keeps its state directory
//! (after SIGTERM, after SIGKILL mid-stream) and a broker restart under load each become ready
//! again within a bound, and every request gets exactly one decision on its tenant's topic;
//! SIGTERM stops a process that is still restoring. Each test prints its counts and its time
//! to ready (`cargo test --test restart -- --nocapture`).

mod util;

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use pavilion_kafka::PlainProducer;
use util::*;

/// The provider's set: what psi's global stores restore on every start.
const MEMBERS: &str =
    "email,claims\nalice@example.com,age_over\nbob@example.com,age_over\ncarol@example.com,age_over\n";

/// How long a (re)start may take to become ready: far above the seconds a good restart needs,
/// far below the ten minutes after which a stuck restore used to give up (and hang again).
const READY_BOUND: Duration = Duration::from_secs(60);

/// How long the decisions of the requests sent may take to arrive once the pipeline runs.
const DECIDED_BOUND: Duration = Duration::from_secs(60);

/// The request path of one test on topics of its own, with tenant `acme` (limits far above
/// the traffic here, so nothing is rate-limited), its policy, provider `registry` and its
/// set, and `pavilion run` as instance `a`.
struct RequestPath {
    t: TestTopology,
    env: Vec<(String, String)>,
    key: SigningKey,
    port: u16,
    pipeline: Pipeline,
}

impl RequestPath {
    /// Sets everything up and starts the pipeline on an empty state directory; waits until it
    /// is ready and has the tenant and its policy.
    fn start(name: &str) -> Self {
        let t = TestTopology::with_yaml(name, |p| {
            with_audit(
                p,
                full_path_topology(p, &["age_over"], true),
                AUDIT_INPUTS,
                &[],
            )
        });
        let env = audit_env(&t);
        let key = acme_with_age_policy(&t, &env);
        t.provider_with_set("registry", "age_over", MEMBERS);
        let port = free_port();
        let spawned = Instant::now();
        let mut path = RequestPath {
            pipeline: spawn(&t, &env, port),
            t,
            env,
            key,
            port,
        };
        // Tenants, policies and requests are different topics of one task, read in no fixed
        // order: a request ahead of its tenant would be dropped as unknown_tenant.
        await_stage_event(port, "tenant.updated", "acme", 2.0, &path.pipeline);
        await_stage_event(port, "policy.activated", "acme", 1.0, &path.pipeline);
        path.pipeline.wait_ready(port, READY_BOUND);
        println!(
            "{name}: first start (empty state directory) ready after {:.1?}",
            spawned.elapsed()
        );
        path
    }

    /// Starts the pipeline again as the same instance on the same state directory; the time
    /// until it is ready.
    fn restart(&mut self) -> Duration {
        self.pipeline = spawn(&self.t, &self.env, self.port);
        self.pipeline.wait_ready(self.port, READY_BOUND)
    }

    fn rp(&self) -> Rp {
        Rp {
            producer: PlainProducer::new(&settings()).unwrap(),
            topic: self.t.topic("requests"),
        }
    }

    /// Sends `n` requests at once (ids `<prefix>0000`, …); their ids.
    fn send(&self, prefix: &str, n: usize) -> Vec<String> {
        let rp = self.rp();
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
        for id in &ids {
            rp.send(&signed("acme", id, "k1", &self.key));
        }
        rp.flush();
        ids
    }

    fn decisions(&self) -> String {
        self.t.topic("decisions.acme")
    }

    /// Sends a few requests and waits for their decisions; their ids. The first decision
    /// creates the tenant's decision topic, which takes a while; and reading a topic to its
    /// end while many transactions a second land on it can take until they pause. So the
    /// steady traffic starts after this, and nothing waits on decisions while it runs fast.
    fn warm_up(&self) -> Vec<String> {
        let ids = self.send("warm-", 10);
        self.await_flowing(ids.len());
        ids
    }

    /// Waits until `n` requests have their decisions.
    fn await_flowing(&self, n: usize) {
        let deadline = Instant::now() + DECIDED_BOUND;
        while decisions_by_request(&self.decisions()).len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} decisions; log:\n{}",
                self.pipeline.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Asserts that every one of `ids` got exactly one decision, after printing the counts.
    fn assert_each_decided_once(&self, what: &str, ids: &[String]) {
        let count = await_decisions(&self.decisions(), ids, DECIDED_BOUND);
        println!("{what}: {count}");
        assert_eq!(
            (count.lost, count.duplicated),
            (0, 0),
            "{what}: {count}; log:\n{}",
            self.pipeline.log_tail()
        );
    }
}

fn spawn(t: &TestTopology, env: &[(String, String)], port: u16) -> Pipeline {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    t.spawn_with("a", Some(port), &env)
}

#[test]
fn restart_after_sigterm_keeping_the_state_directory_is_ready_and_decides_each_request_once() {
    let _serial = serial();
    let mut path = RequestPath::start("restart-term");
    let mut ids = path.send("before-", 100);
    path.await_flowing(ids.len());
    path.pipeline.stop();
    // Requests that arrive while it is down wait for the restarted process.
    ids.extend(path.send("down-", 50));
    let ready = path.restart();
    println!("restart after SIGTERM, state directory kept: ready after {ready:.1?}");
    ids.extend(path.send("after-", 100));
    path.assert_each_decided_once("restart after SIGTERM", &ids);
    path.pipeline.stop();
}

#[test]
fn restart_after_sigkill_mid_stream_keeping_the_state_directory_is_ready_and_decides_each_request_once(
) {
    let _serial = serial();
    let mut path = RequestPath::start("restart-kill");
    let mut ids = path.warm_up();
    let traffic = Traffic::start(path.rp(), "acme", "k1", &path.key, "r", 25, 300);
    // A third of the way in: requests decided, in flight and still to come.
    traffic.wait_sent(100);
    path.pipeline.sigkill();
    let at_kill = traffic.sent();
    let ready = path.restart();
    println!(
        "restart after SIGKILL at request {at_kill} of 300, state directory kept: ready after {ready:.1?}"
    );
    ids.extend(traffic.join());
    path.assert_each_decided_once("restart after SIGKILL", &ids);
    path.pipeline.stop();
}

#[test]
fn a_broker_restart_under_load_is_survived_ready_again_and_decides_each_request_once() {
    let _serial = serial();
    let infra = match Infra::managing_the_broker() {
        Ok(infra) => infra,
        Err(why) => {
            println!("skipped: the test restarts the broker, and {why}");
            return;
        }
    };
    let mut path = RequestPath::start("restart-broker");
    let mut ids = path.warm_up();
    let traffic = Traffic::start(path.rp(), "acme", "k1", &path.key, "r", 8, 400);
    traffic.wait_sent(16);
    let before = traffic.sent();
    let down = infra.restart_kafka();
    let at_up = traffic.sent();
    println!(
        "broker restart: {before} requests before, {} while it restarted ({down:.1?})",
        at_up - before
    );
    assert!(
        path.pipeline.running(),
        "the pipeline exited during the broker restart; log:\n{}",
        path.pipeline.log_tail()
    );
    let ready = path.pipeline.wait_ready(path.port, READY_BOUND);
    // Ready is not enough: a task can look running until its first transaction after the
    // restart fails. Every request sent until the broker was back must be decided too.
    let up_ids: Vec<String> = (0..at_up).map(|i| format!("r{i:04}")).collect();
    let started = Instant::now();
    let caught_up = await_decisions(&path.decisions(), &up_ids, DECIDED_BOUND);
    println!(
        "broker restart: ready {ready:.1?} after the broker was back; the requests sent until \
         then decided {:.1?} after ready ({caught_up})",
        started.elapsed()
    );
    traffic.wait_sent(at_up + 24);
    ids.extend(traffic.finish());
    path.assert_each_decided_once("broker restart under load", &ids);
    path.pipeline.wait_ready(path.port, Duration::from_secs(5));
    path.pipeline.stop();
}

#[test]
fn sigterm_stops_a_restart_that_is_still_restoring() {
    let _serial = serial();
    let mut path = RequestPath::start("restart-sigterm");
    let ids = path.send("r", 20);
    path.await_flowing(ids.len());
    path.pipeline.stop();
    path.pipeline = spawn(&path.t, &path.env, path.port);
    // /readyz answers once the signal handlers are in place, and lists each task's state:
    // SIGTERM goes in as soon as a task restores (or, if restoring is too quick to be seen,
    // once all run).
    let deadline = Instant::now() + READY_BOUND;
    let states = loop {
        match http_get(path.port, "/readyz") {
            Some((200, states)) => break states,
            Some((_, states)) if states.contains("Restoring") => break states,
            answer => assert!(
                Instant::now() < deadline,
                "neither restoring nor ready within {READY_BOUND:?}: {answer:?}; log:\n{}",
                path.pipeline.log_tail()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("SIGTERM while /readyz says {}", states.trim());
    let took = path.pipeline.stop_within(Duration::from_secs(15));
    println!("SIGTERM: exited after {took:.1?}");
}
