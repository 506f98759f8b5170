//! Idempotent retries on the real broker (issue 15): a request sent again under its id gets
//! its original decision — the very record on the tenant's topic, with its very audit event —
//! whether the producer resends the same bytes or `pavilion request --request-id` signs it
//! again; the same id asking another question is a conflict, which gets no second decision.
//! The auditor's replay accepts the re-deliveries, and finds a second, different decision.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use pavilion_kafka::PlainProducer;
use pavilion_schemas::{Decision, DecisionIssued, Registry, RejectionReason, RequestRejected};
use util::*;

/// Every value delivered per request id, in order.
fn by_request<T>(topic: &str, id: impl Fn(&T) -> String) -> BTreeMap<String, Vec<Vec<u8>>>
where
    T: pavilion_schemas::Event + serde::de::DeserializeOwned,
{
    let registry = Registry::builtin();
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for r in read_all(topic) {
        let value = r.value.unwrap();
        let event: T = registry.decode(&value).unwrap();
        out.entry(id(&event)).or_default().push(value);
    }
    out
}

fn decisions(t: &TestTopology) -> BTreeMap<String, Vec<Vec<u8>>> {
    by_request::<Decision>(&t.topic("decisions.acme"), |d| d.request_id.clone())
}

fn wait_for(what: &str, bound: Duration, mut done: impl FnMut() -> bool, pipeline: &Pipeline) {
    let deadline = Instant::now() + bound;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {bound:?}; log:\n{}",
            pipeline.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_retry_gets_the_original_decision_and_another_question_under_its_id_none() {
    let _serial = serial();
    let t = TestTopology::with_yaml("retries", |p| {
        with_audit(
            p,
            full_path_topology(p, &["age_over"], true),
            AUDIT_INPUTS,
            &[],
        )
    });
    let env = audit_env(&t);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let key = acme_with_age_policy(&t, &env);
    let port = free_port();
    let mut pipeline = t.spawn_with("a", Some(port), &env_refs);
    await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);

    // A producer that resends the very bytes (a retry after a timeout), once the original is
    // decided.
    let rp = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: t.topic("requests"),
    };
    let original = signed("acme", "r-bytes", "k1", &key);
    rp.send(&original);
    rp.flush();
    wait_for(
        "the original's decision",
        Duration::from_secs(60),
        || decisions(&t).contains_key("r-bytes"),
        &pipeline,
    );
    rp.send(&original);
    rp.flush();
    wait_for(
        "the retry's re-delivery",
        Duration::from_secs(60),
        || decisions(&t).get("r-bytes").is_some_and(|d| d.len() == 2),
        &pipeline,
    );

    // The relying party's CLI: the same command twice signs two requests (new nonce, new
    // timestamps) asking one question; the second prints the first's answer.
    let key_file = t.dir.path().join("acme-k1.json");
    let request = |threshold: &str, timeout: &str| {
        let claims = format!("age_over:threshold={threshold}");
        t.cli(&[
            "request",
            "--key",
            key_file.to_str().unwrap(),
            "--subject",
            "someone@example.com",
            "--claims",
            &claims,
            "--purpose",
            "onboarding",
            "--jurisdiction",
            "eu",
            "--request-id",
            "r-cli",
            "--wait",
            "--timeout",
            timeout,
            "--json",
        ])
    };
    let first: serde_json::Value = serde_json::from_str(&ok(request("21", "30s"))).unwrap();
    assert_eq!(first["format"], "jwt", "{first}");
    let again: serde_json::Value = serde_json::from_str(&ok(request("21", "30s"))).unwrap();
    assert_eq!(
        again, first,
        "a retry prints the original answer, token and all"
    );

    // Another question under the same id: a conflict, logged, never a second decision; the
    // CLI waits in vain and says why that may be.
    let conflict = request("18", "5s");
    assert!(!conflict.status.success());
    let stderr = String::from_utf8_lossy(&conflict.stderr);
    assert!(stderr.contains("no answer to request r-cli"), "{stderr}");
    assert!(stderr.contains("different request"), "{stderr}");
    let rejected = by_request::<RequestRejected>(&t.topic("rejected"), |r| {
        format!("{} {}", r.request_id, r.reason.as_str())
    });
    let reasons: BTreeSet<&str> = rejected.keys().map(String::as_str).collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["r-bytes duplicate", "r-cli conflict", "r-cli duplicate"]),
    );
    let registry = Registry::builtin();
    assert!(rejected.values().flatten().all(|v| {
        let r: RequestRejected = registry.decode(v).unwrap();
        r.reason == RejectionReason::Duplicate || r.reason == RejectionReason::Conflict
    }));
    // Everything logged and checkpointed before stopping.
    let log_complete = || {
        let logged = read_all(&t.topic("log")).len();
        let events: usize = AUDIT_INPUTS
            .iter()
            .map(|i| read_all(&t.topic(i)).len())
            .sum();
        logged == events
    };
    wait_for(
        "every event logged",
        Duration::from_secs(60),
        log_complete,
        &pipeline,
    );
    std::thread::sleep(Duration::from_secs(3)); // one punctuation: everything checkpointed
    pipeline.stop();

    // The tenant's topic: one decision per request id, each delivered twice byte for byte,
    // each delivery with its audit event, the very same one.
    let delivered = decisions(&t);
    assert_eq!(
        delivered.keys().collect::<Vec<_>>(),
        ["r-bytes", "r-cli"],
        "no decision for the conflict"
    );
    for (id, values) in &delivered {
        assert_eq!(
            values.len(),
            2,
            "{id}: the original and the retry's re-delivery"
        );
        assert_eq!(
            values[0], values[1],
            "{id}: the re-delivery is the very record"
        );
        let d: Decision = registry.decode(&values[0]).unwrap();
        assert!(d.rejection.is_none());
    }
    let issued = by_request::<DecisionIssued>(&t.topic("issued"), |i| i.request_id.clone());
    assert_eq!(issued.keys().collect::<Vec<_>>(), ["r-bytes", "r-cli"]);
    for (id, values) in &issued {
        assert_eq!(values.len(), 2, "{id}");
        assert_eq!(values[0], values[1], "{id}");
    }

    // The auditor: the log verifies, and the replay re-derives each decision once and takes
    // each re-delivery for what it is.
    let jwks = t.dir.path().join("jwks.json");
    std::fs::write(&jwks, ok(cli_env(&t, &env, &["keys", "jwks"]))).unwrap();
    let jwks = jwks.to_str().unwrap();
    let verified = ok(cli_env(&t, &[], &["audit", "verify", "--jwks", jwks]));
    assert!(verified.contains("ok:"), "{verified}");
    let replay = || cli_env(&t, &[], &["audit", "replay", "--decisions", "--jwks", jwks]);
    let replayed = ok(replay());
    assert!(
        replayed.contains("ok: 2 policy outcomes and 2 decisions re-derived identical")
            && replayed.contains("2 re-deliveries"),
        "{replayed}"
    );

    // A second, different decision for r-bytes on the tenant's topic (here: the first one
    // issued a second later) is found, though each record on its own may look fine.
    let mut forged: Decision = registry.decode(&delivered["r-bytes"][0]).unwrap();
    forged.issued_at += 1000;
    let producer = PlainProducer::new(&settings()).unwrap();
    producer
        .send(
            &t.topic("decisions.acme"),
            b"r-bytes",
            &registry.encode(&forged).unwrap(),
        )
        .unwrap();
    producer.flush().unwrap();
    let diverged = replay();
    let stdout = String::from_utf8_lossy(&diverged.stdout);
    assert!(!diverged.status.success(), "{stdout}");
    assert!(
        stdout.contains("DIVERGENCE: request r-bytes:")
            && stdout.contains("two different decisions"),
        "{stdout}"
    );
}
