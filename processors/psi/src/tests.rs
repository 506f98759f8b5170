//! Matching as data: a provider registry and sets in the global stores, policy outcomes in →
//! one line per claim out, on a manual clock.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use expect_test::{expect, Expect};
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::StageKinds;
use pavilion_schemas::{
    set_key, Attestation, ClaimPlan, ClaimRequest, EvidenceKind, MatchResult, PolicyEffect,
    PolicyOutcome, Provider, ProviderKey, ProviderSetEntry, ProviderState, PsiJobChunk,
    PsiJobResult, Registry, ResponseFormat, SubjectToken, VerificationRequest,
};

pub(crate) const TOPOLOGY: &str = "
application: t
dlq: dlq
topics:
  dlq: { schema: pavilion.DeadLetter }
  outcomes: { schema: pavilion.PolicyOutcome }
  matches: { schema: pavilion.MatchResult }
  jobs: { schema: pavilion.PsiJobChunk }
  results: { schema: pavilion.PsiJobResult }
  providers: { schema: pavilion.Provider, cleanup: compact }
  sets.{provider}: { schema: pavilion.ProviderSetEntry, cleanup: compact }
  asks.{provider}: { schema: pavilion.EvidenceRequest }
  answers: { schema: pavilion.EvidenceResponse }
  lists.{provider}: { schema: pavilion.StatusListPublished, cleanup: compact }
stages:
  psi:
    kind: psi
    inputs: [outcomes, jobs, answers]
    outputs: { matches: matches, results: results, proof_requests: 'asks.{provider}' }
    stores: [jobs, pending]
    punctuate_every: 100ms
    globals: { providers: providers, sets: 'sets.{provider}', status_lists: 'lists.{provider}' }
    config:
      max_set_age: 1d
      max_attestation_age: 30d
      job_timeout: 10m
      predicates:
        age_over: { circuit: date_le_cutoff, attribute: birthdate }
        income_over: { circuit: int_ge_threshold, attribute: income }
      proof_deadline: 3s
      proof_retry_after: 1s
      breaker_failures: 2
      breaker_cooldown: 10s
";

/// The driver's manual clock at start.
pub(crate) const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 24 * 3600 * 1000;

pub(crate) fn attestation_key(provider: &str) -> SigningKey {
    SigningKey::from_bytes(&[provider.len() as u8; 32])
}

pub(crate) fn provider(id: &str, loaded_at: Option<i64>) -> Provider {
    Provider {
        stamp: None,
        provider_id: id.into(),
        region: "eu".into(),
        claims: vec!["account_verified".into(), "fraud_listed".into()],
        oprf_suite: "ristretto255-SHA512".into(),
        oprf_public_key: vec![0; 32],
        attestation_keys: vec![ProviderKey {
            key_id: "a1".into(),
            algorithm: "Ed25519".into(),
            public_key: attestation_key(id).verifying_key().to_bytes().to_vec(),
        }],
        endpoints: BTreeMap::new(),
        state: ProviderState::Active,
        updated_at: T0,
        set_loaded_at: loaded_at,
        set_size: loaded_at.map(|_| 1),
    }
}

/// The token a subject has at a provider: stands in for `F_k(x)`.
pub(crate) fn token(provider: &str, subject: &str) -> Vec<u8> {
    format!("F[{provider}]({subject})").into_bytes()
}

pub(crate) fn entry(
    provider: &str,
    subject: &str,
    claims: &[&str],
    attested_at: i64,
) -> ProviderSetEntry {
    let key = set_key(provider, &token(provider, subject));
    let claims: Vec<String> = claims.iter().map(|c| c.to_string()).collect();
    let message = Attestation::signing_bytes(provider, &key, &claims, attested_at, "a1", &[]);
    ProviderSetEntry {
        provider_id: provider.into(),
        token: key.to_vec(),
        attestation: Attestation {
            claims,
            attested_at,
            signature: attestation_key(provider).sign(&message).to_bytes().to_vec(),
            key_id: "a1".into(),
            commitments: Vec::new(),
        },
    }
}

pub(crate) fn plan(
    index: i32,
    claim: &str,
    providers: &[&str],
    evidence: &[EvidenceKind],
) -> ClaimPlan {
    ClaimPlan {
        claim_index: index,
        claim_name: claim.into(),
        effect: PolicyEffect::Permit,
        denying_rules: Vec::new(),
        providers: providers.iter().map(|p| p.to_string()).collect(),
        evidence_required: evidence.to_vec(),
        disclosable_attributes: Vec::new(),
        max_credential_age_ms: None,
    }
}

/// An outcome asking `plans` about `subject`, with a token for each of `tokens_for`.
pub(crate) fn outcome(subject: &str, tokens_for: &[&str], plans: Vec<ClaimPlan>) -> PolicyOutcome {
    PolicyOutcome {
        request: VerificationRequest {
            request_id: format!("r-{subject}"),
            tenant_id: "acme".into(),
            key_id: "k1".into(),
            signature: vec![0; 64],
            signed_at: T0,
            nonce: "n".into(),
            created_at: T0,
            claims: plans
                .iter()
                .map(|p| ClaimRequest {
                    name: p.claim_name.clone(),
                    params: BTreeMap::new(),
                })
                .collect(),
            purpose: "kyc".into(),
            subject_jurisdiction: "DE".into(),
            consent_ref: None,
            subject_tokens: tokens_for
                .iter()
                .map(|p| SubjectToken {
                    provider_id: p.to_string(),
                    token: token(p, subject),
                })
                .collect(),
            response_format: None,
        },
        policy: None,
        effect: PolicyEffect::Permit,
        denying_rules: Vec::new(),
        plan: plans,
        response_format: ResponseFormat::Json,
        response_template: None,
        evaluated_at: T0,
    }
}

struct World {
    driver: TestDriver,
}

/// The stage alone on one partition, with real RocksDB and a manual clock at `T0`.
pub(crate) fn driver() -> TestDriver {
    TestDriver::new(TOPOLOGY, "psi", &StageKinds::new([&crate::KIND]))
}

impl World {
    fn new() -> Self {
        let mut driver = driver();
        driver.send_global("providers", b"bank", Some(&provider("bank", Some(T0))));
        driver.send_global("providers", b"telco", Some(&provider("telco", Some(T0))));
        for e in [
            entry("bank", "alice", &["account_verified"], T0),
            entry("bank", "bob", &["fraud_listed"], T0),
            entry("telco", "carol", &["account_verified"], T0),
        ] {
            let topic = format!("sets.{}", e.provider_id);
            driver.send_global(&topic, &e.token.clone(), Some(&e));
        }
        World { driver }
    }

    fn check(&mut self, outcome: PolicyOutcome, expect: Expect) {
        let out = self.driver.send("outcomes", "acme", &outcome);
        let registry = Registry::builtin();
        let mut text = String::new();
        for record in &out {
            if let Ok(r) = registry.decode::<PsiJobResult>(&record.value) {
                text += &render_job(&r);
                continue;
            }
            let Ok(m) = registry.decode::<MatchResult>(&record.value) else {
                text += &self.driver.render(std::slice::from_ref(record));
                continue;
            };
            for r in &m.results {
                let evidence: Vec<String> = r
                    .evidence
                    .iter()
                    .map(|e| format!("{:?}@{}", e.kind, e.provider_id))
                    .collect();
                let reason = r
                    .reason
                    .as_ref()
                    .map_or(String::new(), |r| format!(" ({r})"));
                let evidence = if evidence.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", evidence.join(", "))
                };
                text += &format!(
                    "{} {}: {:?}{reason}{evidence}\n",
                    record.topic, r.claim_name, r.status,
                );
            }
        }
        expect.assert_eq(&text);
    }
}

#[test]
fn members_match_non_members_do_not_and_unattested_claims_do_not() {
    let mut w = World::new();
    let both = |subject| {
        outcome(
            subject,
            &["bank"],
            vec![
                plan(
                    0,
                    "account_verified",
                    &["bank"],
                    &[EvidenceKind::ProviderSignature],
                ),
                plan(1, "fraud_listed", &["bank"], &[]),
            ],
        )
    };
    w.check(
        both("alice"),
        expect![[r#"
            matches account_verified: Matched [OprfMatch@bank, ProviderSignature@bank]
            matches fraud_listed: NotMatched
        "#]],
    );
    w.check(
        both("bob"),
        expect![[r#"
            matches account_verified: NotMatched
            matches fraud_listed: Matched [OprfMatch@bank]
        "#]],
    );
    w.check(
        both("mallory"),
        expect![[r#"
            matches account_verified: NotMatched
            matches fraud_listed: NotMatched
        "#]],
    );
}

#[test]
fn providers_are_tried_in_plan_order_and_unavailability_is_never_a_silent_false() {
    let mut w = World::new();
    let ask = |subject, tokens: &[&str], providers: &[&str]| {
        outcome(
            subject,
            tokens,
            vec![plan(0, "account_verified", providers, &[])],
        )
    };
    // carol is only at telco: bank says no, telco says yes.
    w.check(
        ask("carol", &["bank", "telco"], &["bank", "telco"]),
        expect![[r#"
        matches account_verified: Matched [OprfMatch@telco]
    "#]],
    );
    // No token for bank, and telco does not know alice: one provider could not answer.
    w.check(
        ask("alice", &["telco"], &["bank", "telco"]),
        expect![[r#"
        matches account_verified: Unavailable (bank: no_token_for_provider)
    "#]],
    );
    // A provider nobody registered, and no provider at all.
    w.check(
        ask("alice", &["nobody"], &["nobody"]),
        expect![[r#"
        matches account_verified: Unavailable (nobody: provider_unknown)
    "#]],
    );
    w.check(
        ask("alice", &["bank"], &[]),
        expect![[r#"
        matches account_verified: Unavailable (no_provider_planned)
    "#]],
    );
}

#[test]
fn missing_or_stale_sets_and_bad_attestations_are_unavailable() {
    let mut w = World::new();
    let ask = |subject| {
        outcome(
            subject,
            &["bank"],
            vec![plan(
                0,
                "account_verified",
                &["bank"],
                &[EvidenceKind::ProviderSignature],
            )],
        )
    };
    // A set older than max_set_age (1 day).
    w.driver
        .clock()
        .advance(Duration::from_millis(2 * DAY as u64));
    w.check(
        ask("alice"),
        expect![[r#"
        matches account_verified: Unavailable (bank: set_stale)
    "#]],
    );
    // Reloaded now: alice's attestation (from T0) is within max_attestation_age; a forged
    // one for dave is signed with another provider's key.
    let now = T0 + 2 * DAY;
    w.driver
        .send_global("providers", b"bank", Some(&provider("bank", Some(now))));
    let mut forged = entry("bank", "dave", &["account_verified"], now);
    forged.attestation.signature = entry("telco", "dave", &["account_verified"], now)
        .attestation
        .signature;
    w.driver
        .send_global("sets.bank", &forged.token.clone(), Some(&forged));
    w.check(
        ask("alice"),
        expect![[r#"
        matches account_verified: Matched [OprfMatch@bank, ProviderSignature@bank]
    "#]],
    );
    w.check(
        ask("dave"),
        expect![[r#"
        matches account_verified: Unavailable (bank: attestation_signature_invalid)
    "#]],
    );
    // 40 days on, the set is fresh again but alice's attestation is older than 30 days.
    w.driver
        .clock()
        .advance(Duration::from_millis(38 * DAY as u64));
    w.driver.send_global(
        "providers",
        b"bank",
        Some(&provider("bank", Some(T0 + 40 * DAY))),
    );
    w.check(
        ask("alice"),
        expect![[r#"
        matches account_verified: Unavailable (bank: attestation_stale)
    "#]],
    );
    // A provider whose set was never loaded, or that is suspended.
    w.driver
        .send_global("providers", b"bank", Some(&provider("bank", None)));
    w.check(
        ask("alice"),
        expect![[r#"
        matches account_verified: Unavailable (bank: no_set_loaded)
    "#]],
    );
    let mut suspended = provider("bank", Some(now));
    suspended.state = ProviderState::Suspended;
    w.driver.send_global("providers", b"bank", Some(&suspended));
    w.check(
        ask("alice"),
        expect![[r#"
        matches account_verified: Unavailable (bank: provider_not_active)
    "#]],
    );
}

#[test]
fn a_tombstoned_member_stops_matching_and_denied_claims_are_not_looked_up() {
    let mut w = World::new();
    let ask = || {
        let mut o = outcome(
            "alice",
            &["bank"],
            vec![
                plan(0, "account_verified", &["bank"], &[]),
                plan(1, "fraud_listed", &["bank"], &[]),
            ],
        );
        o.plan[1].effect = PolicyEffect::Deny;
        o
    };
    w.check(
        ask(),
        expect![[r#"
        matches account_verified: Matched [OprfMatch@bank]
        matches fraud_listed: Unavailable (denied_by_policy)
    "#]],
    );
    let key = set_key("bank", &token("bank", "alice"));
    w.driver
        .send_global::<ProviderSetEntry>("sets.bank", &key, None);
    w.check(
        ask(),
        expect![[r#"
        matches account_verified: NotMatched
        matches fraud_listed: Unavailable (denied_by_policy)
    "#]],
    );
}

#[test]
fn a_claim_without_a_predicate_cannot_be_answered_by_proof() {
    let mut w = World::new();
    w.check(
        outcome(
            "alice",
            &["bank"],
            vec![plan(
                0,
                "account_verified",
                &["bank"],
                &[EvidenceKind::ZkPredicate],
            )],
        ),
        expect![[r#"
            matches account_verified: Unavailable (bank: no_predicate_for_claim)
        "#]],
    );
}

fn render_job(r: &PsiJobResult) -> String {
    format!(
        "results job {} ({} tokens vs {}): {:?} {:?} cardinality={:?} matched={:?}{}\n",
        r.job_id,
        r.submitted,
        r.provider_id,
        r.status,
        r.disclosure,
        r.cardinality,
        r.matched,
        r.reason
            .as_ref()
            .map_or(String::new(), |r| format!(" ({r})"))
    )
}

/// A batch job asking about `subjects` at `provider`: its signed request's outcome (policy
/// permits with `disclose`) and its chunks of `per_chunk` tokens.
fn job(
    id: &str,
    provider: &str,
    subjects: &[&str],
    reveal: &str,
    disclose: &[&str],
    per_chunk: usize,
) -> (PolicyOutcome, Vec<PsiJobChunk>) {
    let tokens: Vec<Vec<u8>> = subjects.iter().map(|s| token(provider, s)).collect();
    let digest: String = pavilion_schemas::job_tokens_digest(tokens.iter().map(Vec::as_slice))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut plan = plan(0, "record_link", &[provider], &[]);
    plan.disclosable_attributes = disclose.iter().map(|d| d.to_string()).collect();
    let mut o = outcome("job", &[], vec![plan]);
    o.request.request_id = id.to_owned();
    o.request.claims[0].params = BTreeMap::from([
        ("job".to_owned(), id.to_owned()),
        ("provider".to_owned(), provider.to_owned()),
        ("count".to_owned(), tokens.len().to_string()),
        ("tokens_sha256".to_owned(), digest),
        ("reveal".to_owned(), reveal.to_owned()),
    ]);
    let parts: Vec<&[Vec<u8>]> = tokens.chunks(per_chunk).collect();
    let chunks = parts
        .iter()
        .enumerate()
        .map(|(i, part)| PsiJobChunk {
            job_id: id.into(),
            tenant_id: "acme".into(),
            chunk: i as i32,
            chunks: parts.len() as i32,
            tokens: part
                .iter()
                .map(|t| pavilion_schemas::AvroBytes(t.clone()))
                .collect(),
            submitted_at: T0,
        })
        .collect();
    (o, chunks)
}

impl World {
    fn chunk(&mut self, chunk: &PsiJobChunk, expect: Expect) {
        let out = self.driver.send("jobs", "acme", chunk);
        let text: String = out
            .iter()
            .map(
                |r| match Registry::builtin().decode::<PsiJobResult>(&r.value) {
                    Ok(result) => render_job(&result),
                    Err(_) => self.driver.render(std::slice::from_ref(r)),
                },
            )
            .collect();
        expect.assert_eq(&text);
    }
}

#[test]
fn a_batch_job_answers_once_all_its_chunks_and_its_request_are_in_in_any_order() {
    let mut w = World::new();
    let subjects = ["mallory", "alice", "bob", "eve", "trent"];
    // Chunks first: nothing to say until the request's outcome arrives.
    let (o, chunks) = job(
        "j1",
        "bank",
        &subjects,
        "intersection",
        &["intersection"],
        2,
    );
    w.chunk(&chunks[0], expect![[r#""#]]);
    w.chunk(&chunks[2], expect![[r#""#]]);
    w.chunk(&chunks[1], expect![[r#""#]]);
    w.check(
        o,
        expect![[r#"
        results job j1 (5 tokens vs bank): Completed Intersection cardinality=Some(2) matched=[1, 2]
    "#]],
    );
    // Request first; the policy allows only the cardinality.
    let (o, chunks) = job("j2", "bank", &subjects, "intersection", &[], 3);
    w.check(o, expect![[r#""#]]);
    w.chunk(&chunks[0], expect![[r#""#]]);
    w.chunk(&chunks[1], expect![[r#"
        results job j2 (5 tokens vs bank): Completed Cardinality cardinality=Some(2) matched=[] (the policy allows only the cardinality)
    "#]]);
}

#[test]
fn a_batch_job_fails_closed_on_tampering_denial_missing_sets_and_timeouts() {
    let mut w = World::new();
    // A chunk whose tokens differ from what the request signed.
    let (o, mut chunks) = job("j1", "bank", &["alice", "bob"], "cardinality", &[], 5);
    chunks[0].tokens[1] = pavilion_schemas::AvroBytes(token("bank", "carol"));
    w.check(o, expect![[r#""#]]);
    w.chunk(&chunks[0], expect![[r#"
        results job j1 (2 tokens vs bank): Failed None cardinality=None matched=[] (the chunks hold 2 tokens with digest 684940594ce976e329ac1618dc887eff307e1cc33df03a58f97ab166ab19240a; the signed request says 2 with 5f064e86bc15c72dae423a04d8f9a719a4434a1c18f6728855a0d673196e601c)
    "#]]);
    // Denied by policy, and a provider without a set.
    let (mut o, chunks) = job("j2", "bank", &["alice"], "cardinality", &[], 5);
    o.plan[0].effect = PolicyEffect::Deny;
    w.check(o, expect![[r#""#]]);
    w.chunk(&chunks[0], expect![[r#"
        results job j2 (1 tokens vs bank): Denied None cardinality=None matched=[] (denied_by_policy)
    "#]]);
    w.driver
        .send_global("providers", b"bank", Some(&provider("bank", None)));
    let (o, chunks) = job("j3", "bank", &["alice"], "cardinality", &[], 5);
    w.check(o, expect![[r#""#]]);
    w.chunk(&chunks[0], expect![[r#"
        results job j3 (1 tokens vs bank): Unavailable None cardinality=None matched=[] (no_set_loaded)
    "#]]);
    // A job sent under another request id could not meet its chunks (keyed by job id).
    let (mut o, _) = job("j5", "bank", &["alice"], "cardinality", &[], 5);
    o.request.request_id = "not-j5".into();
    w.check(o, expect![[r#"
        results job j5 (0 tokens vs ): Failed None cardinality=None matched=[] (job `j5` must be sent as request `j5`, not `not-j5`)
    "#]]);
    // Half a job, then silence: failed at the timeout, its state gone.
    let (o, chunks) = job("j4", "bank", &["alice", "bob"], "cardinality", &[], 1);
    w.check(o, expect![[r#""#]]);
    w.chunk(&chunks[0], expect![[r#""#]]);
    w.driver.clock().advance(Duration::from_secs(11 * 60));
    let out = w.driver.punctuate();
    expect![[r#"
        results job j4 (0 tokens vs ): Failed None cardinality=None matched=[] (incomplete after 600s: 1 of 2 chunks arrived)
    "#]].assert_eq(
        &out.iter()
            .map(|r| render_job(&Registry::builtin().decode(&r.value).unwrap()))
            .collect::<String>(),
    );
    expect![[r#""#]].assert_eq(&w.driver.store("psi", "jobs"));
}
