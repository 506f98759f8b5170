//! Zero-knowledge predicates as data: a provider's set with committed birth dates, real
//! Groth16 proofs as its answers, on a manual clock. What a hostile or silent provider can do
//! to a claim, and what it cannot.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::Signer;
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::OutRecord;
use pavilion_schemas::{
    set_key, Attestation, AttributeCommitment, EvidenceKind, EvidenceRequest, EvidenceResponse,
    EvidenceStatus, MatchResult, PolicyOutcome, ProviderSetEntry, Registry,
};
use pavilion_zk::{
    commitment, field_to_bytes, nonce_from_request_id, subject_binding, AttributeType, Circuit,
    Proof, Prover, PublicInputs, Salt, WitnessInputs,
};

use crate::tests::{attestation_key, driver, outcome, plan, provider, token, T0};

/// `T0` is 2023-11-14 (UTC): 18 years before is 2005-11-14.
const CUTOFF_18: i64 = 20051114;

/// Birth dates of the registry's members: alice is an adult, bob turns 18 on T0's day, carol
/// the day after.
const MEMBERS: [(&str, u64); 3] = [("alice", 20000101), ("bob", 20051114), ("carol", 20051115)];

fn salt(subject: &str) -> Salt {
    let mut bytes = [0u8; 31];
    bytes[..subject.len()].copy_from_slice(subject.as_bytes());
    bytes[30] = 1;
    Salt::from_bytes(&bytes).unwrap()
}

fn birthdate(subject: &str) -> u64 {
    MEMBERS.iter().find(|(s, _)| *s == subject).unwrap().1
}

fn key_of(provider: &str, subject: &str) -> [u8; 32] {
    set_key(provider, &token(provider, subject))
}

fn commitment_of(provider: &str, subject: &str) -> Vec<u8> {
    field_to_bytes(commitment(
        birthdate(subject),
        AttributeType::named("birthdate"),
        subject_binding(&key_of(provider, subject)),
        &salt(subject),
    ))
    .to_vec()
}

/// A member with a signed commitment to its birth date.
fn entry(provider: &str, subject: &str) -> ProviderSetEntry {
    let key = key_of(provider, subject);
    let claims = vec!["age_over".to_owned()];
    let commitments = vec![AttributeCommitment {
        attribute: "birthdate".into(),
        commitment: commitment_of(provider, subject),
    }];
    let message = Attestation::signing_bytes(provider, &key, &claims, T0, "a1", &commitments);
    ProviderSetEntry {
        provider_id: provider.into(),
        token: key.to_vec(),
        attestation: Attestation {
            claims,
            attested_at: T0,
            signature: attestation_key(provider).sign(&message).to_bytes().to_vec(),
            key_id: "a1".into(),
            commitments,
        },
    }
}

/// An `age_over` request about `subject` (request id `id`) that the plan answers by proof
/// from `providers`, in order.
fn ask_age(id: &str, subject: &str, threshold: u32, providers: &[&str]) -> PolicyOutcome {
    let mut o = outcome(
        subject,
        providers,
        vec![plan(0, "age_over", providers, &[EvidenceKind::ZkPredicate])],
    );
    o.request.request_id = id.into();
    o.request.claims[0].params = BTreeMap::from([("threshold".into(), threshold.to_string())]);
    o
}

/// A real proof: `circuit` over `subject`'s birth date and opening, for `bound` and request
/// `request_id`.
fn prove(circuit: Circuit, provider: &str, subject: &str, bound: i64, request_id: &str) -> Vec<u8> {
    let inputs = WitnessInputs {
        attribute: birthdate(subject),
        attribute_type: AttributeType::named("birthdate"),
        subject_binding: subject_binding(&key_of(provider, subject)),
        salt: salt(subject),
        bound: bound as u64,
        nonce: nonce_from_request_id(request_id.as_bytes()),
    };
    Prover::new(circuit)
        .unwrap()
        .prove(&inputs, &mut pavilion_zk::rand::OsRng)
        .unwrap()
        .to_bytes()
}

/// The provider's answer to `asked`, as it would echo it.
fn answer(
    asked: &EvidenceRequest,
    status: EvidenceStatus,
    proof: Option<Vec<u8>>,
) -> EvidenceResponse {
    EvidenceResponse {
        provider_id: "registry".into(),
        set_key: asked.set_key.clone(),
        circuit: asked.circuit.clone(),
        bound: asked.bound,
        nonce: asked.nonce.clone(),
        status,
        proof,
        detail: None,
        proved_at: T0,
        proving_ms: 20,
        disclosure: None,
    }
}

struct World {
    driver: TestDriver,
}

impl World {
    fn new() -> Self {
        let mut driver = driver();
        for p in ["registry", "registry2"] {
            driver.send_global("providers", p.as_bytes(), Some(&provider(p, Some(T0))));
            for (subject, _) in MEMBERS {
                let e = entry(p, subject);
                driver.send_global(&format!("sets.{p}"), &e.token.clone(), Some(&e));
            }
        }
        World { driver }
    }

    /// Sends the outcome; returns the proof requests it caused (and checks nothing else left).
    fn ask(&mut self, outcome: &PolicyOutcome) -> Vec<EvidenceRequest> {
        let out = self
            .driver
            .send("outcomes", &outcome.request.request_id, outcome);
        requests(&out)
    }

    fn answer(&mut self, response: &EvidenceResponse) {
        let out = self.driver.send("answers", "k", response);
        assert!(out.is_empty(), "an answer alone decides nothing: {out:?}");
    }

    fn advance(&mut self, by: Duration) -> Vec<OutRecord> {
        self.driver.clock().advance(by);
        self.driver.punctuate()
    }
}

fn requests(out: &[OutRecord]) -> Vec<EvidenceRequest> {
    out.iter()
        .filter(|r| r.topic.starts_with("asks."))
        .map(|r| Registry::builtin().decode(&r.value).unwrap())
        .collect()
}

/// Each match result's claims as `status (reason) [evidence]`.
fn verdicts(out: &[OutRecord]) -> Vec<String> {
    out.iter()
        .filter_map(|r| Registry::builtin().decode::<MatchResult>(&r.value).ok())
        .flat_map(|m| m.results)
        .map(|r| {
            let evidence: Vec<String> = r
                .evidence
                .iter()
                .map(|e| format!("{:?}@{}", e.kind, e.provider_id))
                .collect();
            format!(
                "{:?} ({}) [{}]",
                r.status,
                r.reason.unwrap_or_default(),
                evidence.join(", ")
            )
        })
        .collect()
}

#[test]
fn a_predicate_is_answered_by_a_verified_proof_never_by_the_providers_word() {
    let mut w = World::new();
    let asked = w.ask(&ask_age("r1", "alice", 18, &["registry"]));
    assert_eq!(asked.len(), 1, "one proof request, no decision yet");
    let q = &asked[0];
    // Only the set key, the predicate, the bound and the nonce; the bound and nonce are the
    // broker's own.
    assert_eq!(q.set_key, key_of("registry", "alice"));
    assert_eq!(
        (q.circuit.as_str(), q.attribute.as_str()),
        ("date_le_cutoff", "birthdate")
    );
    assert_eq!(q.bound, CUTOFF_18);
    assert_eq!(q.nonce, field_to_bytes(nonce_from_request_id(b"r1")));
    assert_eq!(q.attempt, 1);

    let proof = prove(Circuit::DateLeCutoff, "registry", "alice", CUTOFF_18, "r1");
    w.answer(&answer(q, EvidenceStatus::Proved, Some(proof)));
    let out = w.advance(Duration::from_millis(100));
    assert_eq!(
        verdicts(&out),
        ["Matched () [OprfMatch@registry, ZkPredicate@registry]"]
    );
    // The evidence is the proof with its public inputs: it verifies on its own.
    let m: MatchResult = Registry::builtin().decode(&out[0].value).unwrap();
    let zk = m.results[0].evidence[1].zk.clone().unwrap();
    assert_eq!(zk.commitment, commitment_of("registry", "alice"));
    assert_eq!(
        (zk.bound, zk.nonce.as_slice()),
        (CUTOFF_18, q.nonce.as_slice())
    );
    let inputs = PublicInputs {
        commitment: pavilion_zk::field_from_bytes(&zk.commitment).unwrap(),
        bound: zk.bound as u64,
        nonce: pavilion_zk::field_from_bytes(&zk.nonce).unwrap(),
    };
    pavilion_zk::verify(
        Circuit::DateLeCutoff,
        &inputs,
        &Proof::from_eip197(&zk.proof).unwrap(),
    )
    .unwrap();
    assert_eq!(
        zk.verifying_key_sha256,
        Circuit::DateLeCutoff.verifying_key_hash()
    );
    assert!(
        w.driver.store("psi", "pending").is_empty(),
        "nothing left waiting"
    );

    // Born exactly on the cutoff day: old enough. A day later: the provider cannot prove it
    // and says so; that is an answer (not matched), not an outage.
    let bob = w.ask(&ask_age("r2", "bob", 18, &["registry"]));
    let carol = w.ask(&ask_age("r3", "carol", 18, &["registry"]));
    let proof = prove(Circuit::DateLeCutoff, "registry", "bob", CUTOFF_18, "r2");
    w.answer(&answer(&bob[0], EvidenceStatus::Proved, Some(proof)));
    w.answer(&answer(&carol[0], EvidenceStatus::DoesNotHold, None));
    let out = w.advance(Duration::from_millis(100));
    let mut v = verdicts(&out);
    v.sort();
    assert_eq!(
        v,
        [
            "Matched () [OprfMatch@registry, ZkPredicate@registry]",
            "NotMatched () []"
        ]
    );
}

#[test]
fn hostile_answers_are_refused_each_with_its_reason() {
    let alice_proof = prove(
        Circuit::DateLeCutoff,
        "registry",
        "alice",
        CUTOFF_18,
        "r-old",
    );
    let mut forged = alice_proof.clone();
    // A and C swapped: both still points on the curve, the equation no longer holds.
    forged[..32].copy_from_slice(&alice_proof[96..]);
    forged[96..].copy_from_slice(&alice_proof[..32]);
    let cases: Vec<(&str, &str, Option<Vec<u8>>, &str)> = vec![
        ("forged", "alice", Some(forged), "bad_proof"),
        (
            "another subject's commitment",
            "alice",
            Some(prove(
                Circuit::DateLeCutoff,
                "registry",
                "bob",
                CUTOFF_18,
                "r-hostile-1",
            )),
            "bad_proof",
        ),
        (
            "replayed from an earlier request",
            "alice",
            Some(alice_proof.clone()),
            "bad_proof",
        ),
        (
            "a wrong bound",
            "alice",
            Some(prove(
                Circuit::DateLeCutoff,
                "registry",
                "alice",
                CUTOFF_18 - 1,
                "r-hostile-3",
            )),
            "bad_proof",
        ),
        (
            // Carol is 17: "birth date ≥ cutoff" holds and proves under the other circuit.
            "another circuit's key",
            "carol",
            Some(prove(
                Circuit::IntGeThreshold,
                "registry",
                "carol",
                CUTOFF_18,
                "r-hostile-4",
            )),
            "bad_proof",
        ),
        ("garbled", "alice", Some(vec![0x5a; 128]), "bad_proof"),
        ("oversized", "alice", Some(vec![0; 4096]), "bad_response"),
        ("no proof at all", "alice", None, "bad_proof"),
    ];
    for (i, (case, subject, proof, reason)) in cases.into_iter().enumerate() {
        // A world each: every bad answer counts against the provider's breaker.
        let mut w = World::new();
        let id = format!("r-hostile-{i}");
        let asked = w.ask(&ask_age(&id, subject, 18, &["registry"]));
        w.answer(&answer(&asked[0], EvidenceStatus::Proved, proof));
        let out = w.advance(Duration::from_millis(100));
        assert_eq!(
            verdicts(&out),
            [format!("Unavailable (registry: {reason}) []")],
            "{case}"
        );
    }
    // An answer to a question nobody asked (another bound, another nonce) waits for nothing,
    // and bytes that are no answer at all are a dead letter with the reason.
    let mut w = World::new();
    let asked = w.ask(&ask_age("r-late", "alice", 18, &["registry"]));
    let mut other = answer(&asked[0], EvidenceStatus::DoesNotHold, None);
    other.bound += 1;
    w.answer(&other);
    let out = w.driver.send_raw("answers", b"k", b"\xc3\x01garbage");
    assert!(
        w.driver.render(&out).contains("dlq"),
        "{}",
        w.driver.render(&out)
    );
    assert!(verdicts(&w.advance(Duration::from_millis(100))).is_empty());
}

#[test]
fn a_silent_provider_is_retried_then_times_out_and_its_breaker_opens_and_closes() {
    let mut w = World::new();
    let asked = w.ask(&ask_age("r1", "alice", 18, &["registry"]));
    assert_eq!(asked.len(), 1);
    // Retries with backoff within the deadline (retry after 1 s, then 2 s; deadline 3 s).
    let out = w.advance(Duration::from_millis(1_000));
    let retries = requests(&out);
    assert_eq!(retries.len(), 1);
    assert_eq!(
        (retries[0].attempt, &retries[0].nonce),
        (2, &asked[0].nonce)
    );
    // Under a key of its own, so that it may reach another partition (another instance).
    let keys: Vec<String> = out
        .iter()
        .filter(|r| r.topic.starts_with("asks."))
        .map(|r| String::from_utf8(r.key.clone()).unwrap())
        .collect();
    assert_eq!(keys, [format!("{}.2", hex::encode(&asked[0].nonce))]);
    assert!(verdicts(&out).is_empty());
    let out = w.advance(Duration::from_millis(1_000));
    assert!(requests(&out).is_empty() && verdicts(&out).is_empty());
    let out = w.advance(Duration::from_millis(1_000));
    assert_eq!(
        verdicts(&out),
        ["Unavailable (registry: provider_timeout) []"]
    );
    // A late answer finds nobody waiting.
    w.answer(&answer(&asked[0], EvidenceStatus::DoesNotHold, None));

    // The second failure in a row opens the breaker (breaker_failures: 2): the provider is
    // not asked at all.
    w.ask(&ask_age("r2", "bob", 18, &["registry"]));
    let out = w.advance(Duration::from_millis(3_000));
    assert_eq!(
        verdicts(&out),
        ["Unavailable (registry: provider_timeout) []"]
    );
    let out = w
        .driver
        .send("outcomes", "r3", &ask_age("r3", "bob", 18, &["registry"]));
    assert!(requests(&out).is_empty());
    assert_eq!(verdicts(&out), ["Unavailable (registry: circuit_open) []"]);

    // After the cooldown one probe goes through; its answer closes the breaker.
    w.advance(Duration::from_secs(10));
    let probe = w.ask(&ask_age("r4", "carol", 18, &["registry"]));
    assert_eq!(probe.len(), 1, "the probe is asked");
    let out = w
        .driver
        .send("outcomes", "r5", &ask_age("r5", "carol", 18, &["registry"]));
    assert_eq!(
        verdicts(&out),
        ["Unavailable (registry: circuit_open) []"],
        "one probe at a time"
    );
    w.answer(&answer(&probe[0], EvidenceStatus::DoesNotHold, None));
    assert_eq!(
        verdicts(&w.advance(Duration::from_millis(100))),
        ["NotMatched () []"]
    );
    assert_eq!(
        w.ask(&ask_age("r6", "carol", 18, &["registry"])).len(),
        1,
        "closed again"
    );
}

#[test]
fn when_a_provider_fails_the_next_one_in_the_plan_is_asked() {
    let mut w = World::new();
    let asked = w.ask(&ask_age("r1", "alice", 18, &["registry", "registry2"]));
    assert_eq!(asked.len(), 1);
    // registry answers with garbage: the claim goes on to registry2, which proves it.
    w.answer(&answer(
        &asked[0],
        EvidenceStatus::Proved,
        Some(vec![1; 128]),
    ));
    let out = w.advance(Duration::from_millis(100));
    assert!(verdicts(&out).is_empty());
    let next = requests(&out);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].set_key, key_of("registry2", "alice"));
    let proof = prove(Circuit::DateLeCutoff, "registry2", "alice", CUTOFF_18, "r1");
    let mut response = answer(&next[0], EvidenceStatus::Proved, Some(proof));
    response.provider_id = "registry2".into();
    w.answer(&response);
    assert_eq!(
        verdicts(&w.advance(Duration::from_millis(100))),
        ["Matched () [OprfMatch@registry2, ZkPredicate@registry2]"]
    );
    // Both silent: unavailable with both reasons, never a silent not-matched.
    w.ask(&ask_age("r2", "bob", 18, &["registry", "registry2"]));
    w.advance(Duration::from_secs(3));
    let out = w.advance(Duration::from_secs(3));
    assert_eq!(
        verdicts(&out),
        ["Unavailable (registry: provider_timeout; registry2: provider_timeout) []"]
    );
}

#[test]
fn answers_received_together_are_verified_in_one_batch_and_a_bad_one_is_found() {
    let mut w = World::new();
    let alice = w.ask(&ask_age("r1", "alice", 18, &["registry"]));
    let bob = w.ask(&ask_age("r2", "bob", 18, &["registry"]));
    let alice_again = w.ask(&ask_age("r3", "alice", 18, &["registry"]));
    let good =
        |subject: &str, id: &str| prove(Circuit::DateLeCutoff, "registry", subject, CUTOFF_18, id);
    w.answer(&answer(
        &alice[0],
        EvidenceStatus::Proved,
        Some(good("alice", "r1")),
    ));
    w.answer(&answer(
        &bob[0],
        EvidenceStatus::Proved,
        Some(good("bob", "r2")),
    ));
    // r3's answer is r1's proof again: the batch fails, bisection finds it.
    w.answer(&answer(
        &alice_again[0],
        EvidenceStatus::Proved,
        Some(good("alice", "r1")),
    ));
    let out = w.advance(Duration::from_millis(100));
    let mut v = verdicts(&out);
    v.sort();
    assert_eq!(
        v,
        [
            "Matched () [OprfMatch@registry, ZkPredicate@registry]",
            "Matched () [OprfMatch@registry, ZkPredicate@registry]",
            "Unavailable (registry: bad_proof) []",
        ]
    );
    let m: Vec<MatchResult> = out
        .iter()
        .filter_map(|r| Registry::builtin().decode::<MatchResult>(&r.value).ok())
        .collect();
    let refused = m
        .iter()
        .find(|m| m.results[0].status != pavilion_schemas::MatchStatus::Matched);
    assert_eq!(refused.unwrap().outcome.request.request_id, "r3");
}
