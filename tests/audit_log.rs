//! The audit log on the real broker: the request path fused, signing, and the audit stage in
//! its own task. Every event of every input topic becomes exactly one leaf, across SIGKILLs,
//! and so does a record that is no event (dead-lettered once, by tenancy, not by audit);
//! `pavilion audit verify` replays it; inclusion and consistency proofs and the signed
//! checkpoints are verified by an independent implementation (Go: transparency-dev/merkle
//! and x/mod/sumdb/note); a flipped byte, a removed entry and a swapped pair are each found
//! at their index; erasing a subject shreds its fields while the log still verifies; and a
//! SIGKILLed audit stage writes the same log as a fault-free one.

mod util;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use pavilion_audit::log::LogView;
use pavilion_chain::dev::{Anvil, DEV_KEY};
use pavilion_kafka::PlainProducer;
use pavilion_keys::subjects::SubjectKeyStore;
use pavilion_schemas::{
    AnchorReceipt, AuditEntry, Checkpoint, DecisionIssued, EventRef, Registry, ResponseFormat,
};
use sha2::Digest as _;
use util::*;

const POLICY: &str = r#"policy: main
tenant: acme
rules: |
  @id("adults")
  permit(principal, action == Action::"verify", resource == Claim::"age_over") when { context.threshold >= 18 };
plan:
  age_over:
    providers: [{ id: registry, region: eu }]
    evidence: [oprf_match]
response_format: jwt
"#;

fn entries(topic: &str) -> Vec<(i32, AuditEntry)> {
    let registry = Registry::builtin();
    read_all(topic)
        .into_iter()
        .map(|r| (r.partition, registry.decode(&r.value.unwrap()).unwrap()))
        .collect()
}

/// Runs the Go verifier on `lines`; its summary line.
fn go_verify(verifier: &std::path::Path, lines: &str) -> String {
    let mut child = Command::new(verifier)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "Go verifier:\n{text}\ninput:\n{lines}"
    );
    text.lines().last().unwrap_or_default().to_owned()
}

/// A request whose subject token is `[i; 64]`.
/// Request `i`; a `stale` one is an hour old, so it is rejected (a signed decision too).
fn request(
    i: u8,
    key: &ed25519_dalek::SigningKey,
    stale: bool,
) -> pavilion_schemas::VerificationRequest {
    let mut r = signed("acme", &format!("r{i:03}"), "k1", key);
    r.subject_tokens[0].token = vec![i; 64];
    if stale {
        r.created_at -= 3_600_000;
    }
    r.signature = key.sign(&r.signing_bytes()).to_bytes().to_vec();
    r
}

#[test]
fn every_event_is_one_leaf_provable_elsewhere_and_tampering_is_found_at_its_index() {
    logged_provable_and_tamper_evident(1);
}

/// The same with each task on two stream threads.
#[test]
fn the_same_on_two_stream_threads() {
    logged_provable_and_tamper_evident(2);
}

fn logged_provable_and_tamper_evident(threads: usize) {
    let _serial = serial();
    let t = TestTopology::with_yaml(&format!("audit-{threads}"), |p| {
        with_audit(
            p,
            full_path_topology(p, &["age_over"], true),
            AUDIT_INPUTS,
            &["flipped", "removed", "swapped"],
        )
    })
    .threads(threads);
    let env = audit_env(&t);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ok(cli_env(&t, &env, &["keys", "generate"]));
    let key = t.active_tenant("acme", "k1");
    std::fs::write(t.dir.path().join("acme.yaml"), POLICY).unwrap();
    t.cli_ok(&[
        "policy",
        "push",
        t.dir.path().join("acme.yaml").to_str().unwrap(),
        "--activate",
    ]);
    let port = free_port();
    let mut pipeline = t.spawn_with("a", Some(port), &env_refs);
    await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);

    // 120 requests, 8 of them too old (rejections), 3 records that are no request at all,
    // two SIGKILLs mid-stream.
    let rp = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: t.topic("requests"),
    };
    let garbage = |i: u8| format!("garbage {i}").into_bytes();
    // Who dead-lettered which garbage record.
    let garbage_dead = || -> Vec<String> {
        let mut dead: Vec<String> = dead_letters(&t)
            .into_iter()
            .filter_map(|d| {
                let value = String::from_utf8(d.original_value?).ok()?;
                value
                    .starts_with("garbage ")
                    .then(|| format!("{}: {value}", d.stage))
            })
            .collect();
        dead.sort();
        dead
    };
    for i in 0..120u8 {
        rp.send(&request(i, &key, i % 15 == 14));
        if i % 40 == 10 {
            rp.send_raw("acme", &garbage(i));
        }
        if i % 20 == 19 {
            rp.flush();
            std::thread::sleep(Duration::from_millis(150));
        }
        if i == 40 || i == 80 {
            pipeline.sigkill();
            pipeline = t.spawn_with("a", Some(port), &env_refs);
        }
    }
    rp.flush();

    // Every record of every input topic, logged exactly once.
    let all_inputs = || -> BTreeMap<(String, i32, i64), usize> {
        AUDIT_INPUTS
            .iter()
            .flat_map(|i| read_all(&t.topic(i)))
            .map(|r| ((r.topic, r.partition, r.offset), 0))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let logged = loop {
        let issued = read_all(&t.topic("issued")).len();
        let mut expected = all_inputs();
        let log = entries(&t.topic("log"));
        // Tenancy dead-letters each garbage record; the audit stage, which reads the same
        // topic, must not do so a second time.
        let dead = garbage_dead();
        assert!(
            dead.len() <= 3,
            "dead letters of 3 garbage records: {dead:?}"
        );
        for (_, e) in &log {
            *expected
                .entry((e.event.topic.clone(), e.event.partition, e.event.offset))
                .or_insert(0) += 1;
        }
        if issued == 120 && expected.values().all(|n| *n >= 1) {
            assert!(
                expected.values().all(|n| *n == 1),
                "an event logged twice: {:?}",
                expected
                    .iter()
                    .filter(|(_, n)| **n != 1)
                    .collect::<Vec<_>>()
            );
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "{issued} decisions, {} of {} events logged; log:\n{}",
            expected.values().filter(|n| **n > 0).count(),
            expected.len(),
            pipeline.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Each garbage record: exactly one dead letter, and an entry in its place that commits to
    // its bytes' digest and nothing else (the auditor below re-checks those digests).
    assert_eq!(
        garbage_dead(),
        [
            "tenancy: garbage 10",
            "tenancy: garbage 50",
            "tenancy: garbage 90"
        ],
        "one dead letter per undecodable record"
    );
    let mut undecodable: Vec<&AuditEntry> = logged
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.event.event_type == EventRef::UNDECODABLE)
        .collect();
    undecodable.sort_by_key(|e| e.event.offset);
    let digests: Vec<Vec<u8>> = undecodable.iter().map(|e| e.event_digest.clone()).collect();
    let sent: Vec<Vec<u8>> = [10, 50, 90]
        .map(|i| sha2::Sha256::digest(garbage(i)).to_vec())
        .into();
    assert_eq!(digests, sent, "one entry per garbage record, by digest");
    assert!(undecodable
        .iter()
        .all(|e| e.request_id.is_none() && e.encrypted_fields.is_none()));
    let jwks = t.dir.path().join("jwks.json");
    std::fs::write(&jwks, ok(cli_env(&t, &env, &["keys", "jwks"]))).unwrap();
    let jwks_arg = jwks.to_str().unwrap();

    // Erasure of subject 7 (its key deleted, the erasure logged), while the stage runs.
    let store = SubjectKeyStore::new(&t.dir.path().join("subjects"), b"subjects");
    let key_id = pavilion_audit::subject::key_id("registry", &[7; 64]);
    let before: Vec<&AuditEntry> = logged
        .iter()
        .map(|(_, e)| e)
        .filter(|e| {
            e.encrypted_fields
                .as_ref()
                .is_some_and(|f| f.key_id == key_id)
        })
        .collect();
    assert!(
        before.len() >= 4,
        "request, accepted, outcome, match of r007"
    );
    let subject_key = store.get(&key_id).unwrap().expect("created by the stage");
    for e in &before {
        let fields = pavilion_audit::subject::open(
            &subject_key,
            &e.event,
            e.encrypted_fields.as_ref().unwrap(),
        )
        .expect("decrypts before erasure");
        assert_eq!(fields.subject_tokens[0].token, B64.encode([7u8; 64]));
    }
    let erased = ok(cli_env(
        &t,
        &env,
        &[
            "subject",
            "erase",
            &B64.encode([7u8; 64]),
            "--provider",
            "registry",
            "--requested-by",
            "dpo-ticket-17",
        ],
    ));
    assert!(erased.contains("deleted"), "{erased}");
    assert_eq!(store.get(&key_id).unwrap(), None, "the key is gone");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !entries(&t.topic("log"))
        .iter()
        .any(|(_, e)| e.event.event_type == "pavilion.SubjectErasure")
    {
        assert!(Instant::now() < deadline, "the erasure was not logged");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3)); // one punctuation: everything checkpointed
    pipeline.stop();

    // The auditor: every leaf, root, checkpoint signature and event digest.
    let verified = ok(cli_env(&t, &[], &["audit", "verify", "--jwks", jwks_arg]));
    assert!(verified.contains("ok:"), "{verified}");
    assert!(!verified.contains("not yet checkpointed"), "{verified}");

    // The replay: every outcome and decision re-derived from the log by the stages' code.
    let replayed = ok(cli_env(
        &t,
        &[],
        &["audit", "replay", "--decisions", "--jwks", jwks_arg],
    ));
    assert!(
        replayed.contains("ok: 112 policy outcomes and 120 decisions re-derived identical"),
        "{replayed}"
    );

    // …and a replay under another signing config (another issuer) finds the difference.
    let impostor = t.dir.path().join("impostor.yaml");
    let yaml = std::fs::read_to_string(&t.path).unwrap();
    std::fs::write(
        &impostor,
        yaml.replacen(
            "kind: signing\n",
            "kind: signing\n    config: { issuer: impostor }\n",
            1,
        ),
    )
    .unwrap();
    let out = cli_env(
        &t,
        &[],
        &[
            "audit",
            "replay",
            "--decisions",
            "--jwks",
            jwks_arg,
            "--topology",
            impostor.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("is not the delivered one"), "{text}");

    // Proofs for one request, checked by the Go verifier with only the JWKS-derived vkeys.
    let verifier = tlog_verifier(t.dir.path());
    let proofs = ok(cli_env(
        &t,
        &[],
        &[
            "audit",
            "prove",
            "--request-id",
            "r011",
            "--jwks",
            jwks_arg,
            "--json",
        ],
    ));
    let summary = go_verify(&verifier, &proofs);
    // Keyed by request id after tenancy, a request's events may sit on several shards: one
    // checkpoint proof per shard.
    let shards: std::collections::BTreeSet<String> = proofs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("origin").and_then(|o| o.as_str()).map(str::to_owned))
        .collect();
    assert!(!shards.is_empty(), "proofs name their shards:\n{proofs}");
    assert_eq!(
        summary,
        format!("{} passed, 0 failed", 5 + shards.len()),
        "request, accepted, outcome, match, issued + a checkpoint per shard:\n{proofs}"
    );
    let human = ok(cli_env(
        &t,
        &[],
        &["audit", "prove", "--request-id", "r011", "--jwks", jwks_arg],
    ));
    assert!(human.contains("verified"), "{human}");
    // Consistency between the first checkpoint and the latest of that shard.
    let checkpoints: Vec<Checkpoint> = read_all(&t.topic("checkpoints"))
        .into_iter()
        .map(|r| Registry::builtin().decode(&r.value.unwrap()).unwrap())
        .collect();
    // The busiest shard: acme's partition.
    let origin = &logged
        .iter()
        .find(|(_, e)| e.request_id.as_deref() == Some("r011"))
        .unwrap()
        .1
        .origin;
    let sizes: Vec<i64> = checkpoints
        .iter()
        .filter(|c| &c.origin == origin)
        .map(|c| c.tree_size)
        .collect();
    let (first, latest) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(first < latest, "several checkpoints of {origin}: {sizes:?}");
    let consistency = ok(cli_env(
        &t,
        &[],
        &[
            "audit",
            "consistency",
            "--origin",
            origin,
            "--from",
            &first.to_string(),
            "--to",
            &latest.to_string(),
            "--jwks",
            jwks_arg,
            "--json",
        ],
    ));
    assert_eq!(
        go_verify(&verifier, &consistency),
        "3 passed, 0 failed",
        "{consistency}"
    );

    // The same proofs over HTTP.
    let serve_port = free_port();
    let mut server = Command::new(BIN)
        .args([
            "audit",
            "serve",
            "--jwks",
            jwks_arg,
            "--addr",
            &format!("127.0.0.1:{serve_port}"),
        ])
        .env("PAVILION_TOPOLOGY", &t.path)
        .env("PAVILION_BOOTSTRAP", bootstrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let served = loop {
        if let Some((200, body)) = http_get(serve_port, "/v1/audit/prove?request_id=r011") {
            break body;
        }
        assert!(Instant::now() < deadline, "audit serve did not answer");
        std::thread::sleep(Duration::from_millis(200));
    };
    let lines: Vec<serde_json::Value> = serde_json::from_str(&served).unwrap();
    let jsonl: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(
        go_verify(&verifier, &jsonl),
        summary,
        "the server proves what the CLI proves"
    );
    let (status, body) = http_get(serve_port, "/v1/audit/prove?request_id=nope").unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no entry of request"), "{body}");
    server.kill().unwrap();
    server.wait().unwrap();

    // After the erasure: no key, so no decryption; the log above verified all the same.
    assert!(store.get(&key_id).unwrap().is_none());

    // Privacy: no subject token in the log or the checkpoints, in any form.
    for topic in ["log", "checkpoints"] {
        for r in read_all(&t.topic(topic)) {
            let v = r.value.unwrap();
            // (Token 0 is all zeros, which any encoding may contain.)
            for i in 1..120u8 {
                assert!(!v.windows(16).any(|w| w == [i; 16]), "token {i} in {topic}");
            }
        }
    }

    // Anchoring on our own anvil, through an outage: stopped after the first anchor,
    // restarted (with its chain) seconds later; every checkpoint anchored once, in order.
    let state = t.dir.path().join("anvil-state.json");
    let anvil_log = t.dir.path().join("anvil.log");
    let anvil_port = free_port();
    let anvil = Anvil::start(anvil_port, Some(&state), &anvil_log);
    let chain_env = vec![
        ("PAVILION_CHAIN_RPC".to_owned(), anvil.url()),
        ("PAVILION_CHAIN_KEY".to_owned(), DEV_KEY.to_owned()),
    ];
    let contract = ok(cli_env(&t, &chain_env, &["anchor", "deploy"]))
        .trim()
        .to_owned();
    let anchor_log = t.dir.path().join("anchor.log");
    let mut anchoring = Command::new(BIN)
        .args([
            "anchor",
            "run",
            "--contract",
            &contract,
            "--metrics-addr",
            "off",
        ])
        .env("PAVILION_TOPOLOGY", &t.path)
        .env("PAVILION_BOOTSTRAP", bootstrap())
        .envs(chain_env.iter().map(|(k, v)| (k, v)))
        .stdout(std::fs::File::create(&anchor_log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let receipts = || -> Vec<AnchorReceipt> {
        read_all(&t.topic("anchors"))
            .into_iter()
            .map(|r| Registry::builtin().decode(&r.value.unwrap()).unwrap())
            .collect()
    };
    let wait_for = |n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while receipts().len() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} anchored; anchor log:\n{}",
                receipts().len(),
                std::fs::read_to_string(&anchor_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(1, "before the outage");
    anvil.stop();
    std::thread::sleep(Duration::from_secs(6));
    let anvil = Anvil::start(anvil_port, Some(&state), &anvil_log);
    wait_for(checkpoints.len(), "after the outage");
    Command::new("kill")
        .args(["-TERM", &anchoring.id().to_string()])
        .status()
        .unwrap();
    assert!(anchoring.wait().unwrap().success());
    let anchored = receipts();
    assert_eq!(
        anchored.len(),
        checkpoints.len(),
        "one anchor per checkpoint"
    );
    let gas: Vec<i64> = anchored.iter().map(|r| r.gas_used).collect();
    println!("gas per anchor: {gas:?}");
    assert!(gas.iter().all(|g| *g < 30_000), "{gas:?}");
    let verified = ok(cli_env(
        &t,
        &[],
        &[
            "audit",
            "verify",
            "--jwks",
            jwks_arg,
            "--rpc-url",
            &anvil.url(),
        ],
    ));
    assert!(verified.contains("each found on chain"), "{verified}");
    drop(anvil);

    // Tampering, each on a copy of the log: found at its index.
    let log = entries(&t.topic("log"));
    let registry = Registry::builtin();
    let producer = PlainProducer::new(&settings()).unwrap();
    let shard: Vec<&(i32, AuditEntry)> = log.iter().filter(|(_, e)| &e.origin == origin).collect();
    type Shard = Vec<(i32, AuditEntry)>;
    let copy = |name: &str, edit: &dyn Fn(Shard) -> Shard| {
        let topic = t.topic(name);
        for (partition, e) in edit(shard.iter().map(|x| (*x).clone()).collect()) {
            producer
                .send_to(
                    &topic,
                    partition,
                    e.origin.as_bytes(),
                    &registry.encode(&e).unwrap(),
                )
                .unwrap();
        }
        producer.flush().unwrap();
        let out = cli_env(
            &t,
            &[],
            &[
                "audit",
                "verify",
                "--jwks",
                jwks_arg,
                "--log-topic",
                &topic,
                "--no-events",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{name} not detected");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let flipped = copy("flipped", &|mut s| {
        s[5].1.event_digest[3] ^= 0x10;
        s
    });
    assert!(
        flipped.contains(&format!("{origin}: entry 5: altered")),
        "{flipped}"
    );
    let removed = copy("removed", &|mut s| {
        s.remove(7);
        s
    });
    assert!(
        removed.contains(&format!("{origin}: entry 7: missing")),
        "{removed}"
    );
    let swapped = copy("swapped", &|mut s| {
        s.swap(3, 4);
        s
    });
    assert!(
        swapped.contains(&format!("{origin}: entry 3:")),
        "{swapped}"
    );
}

/// A SIGKILLed audit stage, restarted each time, writes exactly the log a fault-free one
/// writes over the same input (one input topic, so each partition's order is the topic's),
/// on one stream thread and on two.
#[test]
fn a_killed_audit_stage_writes_the_same_log_as_a_fault_free_one() {
    let _serial = serial();
    let source = TestTopology::with_yaml("audit-src", |p| {
        format!(
            "application: {p}\ndlq: {p}.dlq\ndefaults: {{ partitions: 3 }}\ntopics:\n  {p}.dlq: {{ schema: pavilion.DeadLetter }}\n  {p}.issued: {{ schema: pavilion.DecisionIssued }}\nstages: {{}}\n"
        )
    });
    let input = source.topic("issued");
    let producer = PlainProducer::new(&settings()).unwrap();
    let registry = Registry::builtin();
    for i in 0..1500 {
        let e = DecisionIssued {
            request_id: format!("r{i}"),
            tenant_id: format!("t{}", i % 7),
            topic: "d".into(),
            decision_digest: vec![i as u8; 32],
            payload_digest: vec![1; 32],
            format: ResponseFormat::Jwt,
            signing_key_id: "k".into(),
            policy: None,
            issued_at: i,
        };
        producer
            .send(
                &input,
                e.tenant_id.as_bytes(),
                &registry.encode(&e).unwrap(),
            )
            .unwrap();
    }
    producer.flush().unwrap();

    let run = |name: &str,
               kill_every: Option<Duration>,
               threads: usize|
     -> BTreeMap<String, Vec<(String, i64, Vec<u8>)>> {
        let t = TestTopology::with_yaml(name, |p| {
            format!(
                "application: {p}\ndlq: {p}.dlq\ndefaults: {{ partitions: 3 }}\ntopics:\n  {p}.dlq: {{ schema: pavilion.DeadLetter }}\n  {input}: {{ schema: pavilion.DecisionIssued }}\n  {p}.log: {{ schema: pavilion.AuditEntry }}\n  {p}.checkpoints: {{ schema: pavilion.Checkpoint }}\nstages:\n  audit:\n    kind: audit\n    inputs: [{input}]\n    outputs: {{ log: {p}.log, checkpoints: {p}.checkpoints }}\n    stores: [log]\n    config: {{ origin: test/audit, checkpoint_every: 100 }}\n"
            )
        })
        .threads(threads);
        let env = audit_env(&t);
        ok(cli_env(&t, &env, &["keys", "generate"]));
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut pipeline = t.spawn_with("a", None, &env_refs);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last_kill = Instant::now();
        loop {
            let log = entries(&t.topic("log"));
            if log.len() >= 1500 {
                assert_eq!(log.len(), 1500, "entries written twice");
                break;
            }
            if let Some(every) = kill_every {
                if last_kill.elapsed() > every {
                    pipeline.sigkill();
                    pipeline = t.spawn_with("a", None, &env_refs);
                    last_kill = Instant::now();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} of 1500 entries; log:\n{}",
                log.len(),
                pipeline.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        pipeline.stop();
        // Every checkpoint's root is the root of the log it covers.
        let mut by_origin: BTreeMap<String, Vec<(String, i64, Vec<u8>)>> = BTreeMap::new();
        let mut views: BTreeMap<String, LogView> = BTreeMap::new();
        for (_, e) in entries(&t.topic("log")) {
            views
                .entry(e.origin.clone())
                .or_default()
                .push(e.leaf_input());
            by_origin.entry(e.origin.clone()).or_default().push((
                e.event.topic.clone(),
                e.event.offset,
                e.leaf_hash.clone(),
            ));
        }
        for r in read_all(&t.topic("checkpoints")) {
            let c: Checkpoint = registry.decode(&r.value.unwrap()).unwrap();
            assert_eq!(
                views[&c.origin].root(c.tree_size as u64).unwrap().to_vec(),
                c.root_hash
            );
        }
        by_origin
    };
    let fault_free = run("audit-a", None, 1);
    assert_eq!(fault_free.values().map(Vec::len).sum::<usize>(), 1500);
    let killed = run("audit-b", Some(Duration::from_millis(1500)), 1);
    assert_eq!(killed, fault_free, "the killed run's log differs");
    // Each shard's log is a function of its partition's order, whichever thread owns it.
    let killed = run("audit-c", Some(Duration::from_millis(1500)), 2);
    assert_eq!(
        killed, fault_free,
        "the killed run's log on two threads differs"
    );
}
