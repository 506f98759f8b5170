//! Signing as data: match results and rejections in → decisions on the tenant's topic and
//! audit events out; every signature is checked with ed25519-dalek against the key it names.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use expect_test::{expect, Expect};
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::{Resources, StageKinds};
use pavilion_schemas::{
    ClaimMatch, ClaimPlan, ClaimRequest, Decision, DecisionIssued, EvidenceKind, EvidenceRef,
    MatchResult, MatchStatus, Payload, PolicyEffect, PolicyOutcome, Registry, RejectionReason,
    RequestRejected, ResponseFormat, ResponseTemplate, SubjectToken, VerificationRequest,
    ZkEvidence,
};

use crate::{jose, DecisionSigner, JwsSigner, SharedSigner, SIGNER};

/// Keys by kid; the newest is current. Rotation is pushing a key.
#[derive(Default)]
struct TestKeys(Mutex<Vec<(String, SigningKey)>>);

impl JwsSigner for TestKeys {
    fn current_key_id(&self) -> Result<String, String> {
        self.0
            .lock()
            .unwrap()
            .last()
            .map(|(k, _)| k.clone())
            .ok_or("no key".into())
    }
    fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        let keys = self.0.lock().unwrap();
        let (_, key) = keys.iter().find(|(k, _)| k == kid).ok_or("unknown kid")?;
        Ok(key.sign(message).to_bytes().to_vec())
    }
}

impl DecisionSigner for TestKeys {
    fn keyed_hash(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        // Stand-in for HMAC: keyed by a fixed secret, deterministic, as the stage needs.
        Ok(
            <sha2::Sha256 as sha2::Digest>::digest([b"secret".as_slice(), message].concat())
                .to_vec(),
        )
    }
}

impl TestKeys {
    fn verify(&self, kid: &str, message: &[u8], signature: &[u8]) -> bool {
        let keys = self.0.lock().unwrap();
        let Some((_, key)) = keys.iter().find(|(k, _)| k == kid) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        key.verifying_key().verify(message, &signature).is_ok()
    }
}

fn driver(keys: &Arc<TestKeys>) -> TestDriver {
    let mut d = TestDriver::new(
        crate::STANDALONE_TOPOLOGY,
        "signing",
        &StageKinds::new([&crate::KIND]),
    );
    let mut resources = Resources::default();
    resources.insert::<SharedSigner>(SIGNER, keys.clone());
    d.attach_resources(resources);
    d
}

fn matched(id: &str, format: ResponseFormat, statuses: &[(&str, MatchStatus)]) -> MatchResult {
    let plan: Vec<ClaimPlan> = statuses
        .iter()
        .enumerate()
        .map(|(i, (name, _))| ClaimPlan {
            claim_index: i as i32,
            claim_name: name.to_string(),
            effect: PolicyEffect::Permit,
            denying_rules: Vec::new(),
            providers: vec!["bank".into()],
            evidence_required: Vec::new(),
            disclosable_attributes: Vec::new(),
            max_credential_age_ms: None,
        })
        .collect();
    MatchResult {
        outcome: PolicyOutcome {
            request: VerificationRequest {
                request_id: id.into(),
                tenant_id: "acme".into(),
                key_id: "k1".into(),
                signature: vec![0; 64],
                signed_at: 0,
                nonce: format!("nonce-{id}"),
                created_at: 0,
                claims: statuses
                    .iter()
                    .map(|(n, _)| ClaimRequest {
                        name: n.to_string(),
                        params: BTreeMap::new(),
                    })
                    .collect(),
                purpose: "kyc".into(),
                subject_jurisdiction: "DE".into(),
                consent_ref: None,
                subject_tokens: vec![SubjectToken {
                    provider_id: "bank".into(),
                    token: vec![0xAB; 64],
                }],
                response_format: None,
            },
            policy: None,
            effect: PolicyEffect::Permit,
            denying_rules: Vec::new(),
            plan,
            response_format: format,
            response_template: None,
            evaluated_at: 0,
        },
        results: statuses
            .iter()
            .enumerate()
            .map(|(i, (name, status))| ClaimMatch {
                claim_index: i as i32,
                claim_name: name.to_string(),
                status: *status,
                reason: (*status == MatchStatus::Unavailable).then(|| "bank: set_stale".into()),
                evidence: Vec::new(),
            })
            .collect(),
        matched_at: 0,
    }
}

/// One line per output: topic, and for a decision its format, key id, whether the signature
/// verifies, and the signed claims set.
fn check(
    keys: &TestKeys,
    d: &mut TestDriver,
    topic: &str,
    value: &impl pavilion_schemas::Event,
    expect: Expect,
) {
    let out = d.send(topic, "acme", value);
    let registry = Registry::builtin();
    let mut text = String::new();
    for r in &out {
        if let Ok(decision) = registry.decode::<Decision>(&r.value) {
            let Payload::Text(payload) = &decision.payload else {
                panic!("text payload")
            };
            let (claims, verified) = match decision.format {
                ResponseFormat::Json => (
                    payload.clone(),
                    keys.verify(
                        &decision.signing_key_id,
                        payload.as_bytes(),
                        decision.signature.as_deref().unwrap_or_default(),
                    ),
                ),
                _ => {
                    // An SD-JWT is `jwt~disclosure~…~`; every disclosure's digest must be in
                    // the signed `_sd`.
                    let mut parts = payload.split('~');
                    let compact = parts.next().unwrap();
                    let jws = jose::parse(compact).unwrap();
                    // The header as issued (a parsed Value's key order would depend on the
                    // build's serde_json features).
                    let header = String::from_utf8(
                        B64URL.decode(compact.split('.').next().unwrap()).unwrap(),
                    )
                    .unwrap();
                    assert_eq!(jws.kid, decision.signing_key_id);
                    let body: serde_json::Value = serde_json::from_slice(&jws.payload).unwrap();
                    let mut disclosed = String::new();
                    for d in parts.filter(|p| !p.is_empty()) {
                        let digest = B64URL.encode(<sha2::Sha256 as sha2::Digest>::digest(d));
                        assert!(
                            body["_sd"].as_array().unwrap().iter().any(|x| x == &digest),
                            "disclosure not committed to"
                        );
                        let array: serde_json::Value =
                            serde_json::from_slice(&B64URL.decode(d).unwrap()).unwrap();
                        disclosed += &format!(" ~{}={}", array[1], array[2]);
                    }
                    (
                        {
                            // Digests depend on random salts: checked above, masked here.
                            let mut text = String::from_utf8(jws.payload.clone()).unwrap();
                            for digest in body["_sd"].as_array().into_iter().flatten() {
                                text = text.replace(digest.as_str().unwrap(), "<digest>");
                            }
                            format!("{header} {text}{disclosed}")
                        },
                        keys.verify(&jws.kid, jws.signing_input.as_bytes(), &jws.signature),
                    )
                }
            };
            assert!(
                !claims.contains("q6vr") && !payload.contains(&B64URL.encode([0xABu8; 64])),
                "the OPRF token must not reach the decision"
            );
            text += &format!(
                "{} {:?} kid={} verified={verified}\n  {claims}\n",
                r.topic, decision.format, decision.signing_key_id
            );
        } else if let Ok(issued) = registry.decode::<DecisionIssued>(&r.value) {
            let decision = out
                .iter()
                .find(|o| o.topic == issued.topic)
                .expect("the decision is in the same output");
            assert_eq!(
                issued.decision_digest,
                <sha2::Sha256 as sha2::Digest>::digest(&decision.value).to_vec(),
                "the audit event attests to the decision record as sent"
            );
            text += &format!(
                "{} {} -> {} kid={}\n",
                r.topic, issued.request_id, issued.topic, issued.signing_key_id
            );
        } else {
            text += &d.render(std::slice::from_ref(r));
        }
    }
    expect.assert_eq(&text);
}

fn keys() -> Arc<TestKeys> {
    let keys = Arc::new(TestKeys::default());
    keys.0
        .lock()
        .unwrap()
        .push(("k-2025".into(), SigningKey::from_bytes(&[1; 32])));
    keys
}

#[test]
fn each_format_is_signed_delivered_to_the_tenant_and_audited_in_the_same_output() {
    let keys = keys();
    let mut d = driver(&keys);
    let statuses = [
        ("account_verified", MatchStatus::Matched),
        ("fraud_listed", MatchStatus::NotMatched),
        ("age_over", MatchStatus::Unavailable),
    ];
    check(
        &keys,
        &mut d,
        "matches",
        &matched("r1", ResponseFormat::Jwt, &statuses),
        expect![[r#"
            decisions.acme Jwt kid=k-2025 verified=true
              {"alg":"EdDSA","kid":"k-2025","typ":"JWT"} {"iss":"test-broker","aud":"acme","jti":"r1","iat":1700000000,"exp":1700000300,"nonce":"nonce-r1","response_schema":"pavilion.decision/1","policy":null,"claims":[{"index":0,"name":"account_verified","outcome":"verified","reason":null,"evidence":[]},{"index":1,"name":"fraud_listed","outcome":"not_verified","reason":null,"evidence":[]},{"index":2,"name":"age_over","outcome":"unavailable","reason":"bank: set_stale","evidence":[]}],"rejection":null}
            issued r1 -> decisions.acme kid=k-2025
        "#]],
    );
    check(
        &keys,
        &mut d,
        "matches",
        &matched("r2", ResponseFormat::Json, &statuses[..1]),
        expect![[r#"
            decisions.acme Json kid=k-2025 verified=true
              {"iss":"test-broker","aud":"acme","jti":"r2","iat":1700000000,"exp":1700000300,"nonce":"nonce-r2","response_schema":"pavilion.decision/1","policy":null,"claims":[{"index":0,"name":"account_verified","outcome":"verified","reason":null,"evidence":[]}],"rejection":null}
            issued r2 -> decisions.acme kid=k-2025
        "#]],
    );
    // Rotation: later decisions name the new key; the old one still verifies old ones.
    keys.0
        .lock()
        .unwrap()
        .push(("k-2026".into(), SigningKey::from_bytes(&[2; 32])));
    check(
        &keys,
        &mut d,
        "matches",
        &matched("r3", ResponseFormat::Jws, &statuses[..1]),
        expect![[r#"
            decisions.acme Jws kid=k-2026 verified=true
              {"alg":"EdDSA","kid":"k-2026","typ":"pavilion-decision+jws"} {"iss":"test-broker","aud":"acme","jti":"r3","iat":1700000000,"exp":1700000300,"nonce":"nonce-r3","response_schema":"pavilion.decision/1","policy":null,"claims":[{"index":0,"name":"account_verified","outcome":"verified","reason":null,"evidence":[]}],"rejection":null}
            issued r3 -> decisions.acme kid=k-2026
        "#]],
    );
}

#[test]
fn denials_and_rejections_are_decisions_too_but_unknown_tenants_get_none() {
    let keys = keys();
    let mut d = driver(&keys);
    let mut denied = matched(
        "r1",
        ResponseFormat::Jwt,
        &[("account_verified", MatchStatus::Unavailable)],
    );
    denied.outcome.plan[0].effect = PolicyEffect::Deny;
    denied.outcome.plan[0].denying_rules = vec!["no-marketing".into()];
    check(
        &keys,
        &mut d,
        "matches",
        &denied,
        expect![[r#"
            decisions.acme Jwt kid=k-2025 verified=true
              {"alg":"EdDSA","kid":"k-2025","typ":"JWT"} {"iss":"test-broker","aud":"acme","jti":"r1","iat":1700000000,"exp":1700000300,"nonce":"nonce-r1","response_schema":"pavilion.decision/1","policy":null,"claims":[{"index":0,"name":"account_verified","outcome":"denied","reason":"denied by policy: no-marketing","evidence":[]}],"rejection":null}
            issued r1 -> decisions.acme kid=k-2025
        "#]],
    );
    let rejected = |tenant: Option<&str>, reason| RequestRejected {
        request_id: "r2".into(),
        tenant_id: tenant.map(str::to_owned),
        reason,
        detail: "rate limit 2/s exceeded".into(),
        retry_after_ms: Some(500),
        rejected_at: 0,
    };
    check(
        &keys,
        &mut d,
        "rejected",
        &rejected(Some("acme"), RejectionReason::RateLimited),
        expect![[r#"
            decisions.acme Json kid=k-2025 verified=true
              {"iss":"test-broker","aud":"acme","jti":"r2","iat":1700000000,"exp":1700000300,"nonce":"","response_schema":"pavilion.decision/1","policy":null,"claims":[],"rejection":{"reason":"rate_limited","detail":"rate limit 2/s exceeded","retry_after_ms":500}}
            issued r2 -> decisions.acme kid=k-2025
        "#]],
    );
    check(
        &keys,
        &mut d,
        "rejected",
        &rejected(Some("made-up"), RejectionReason::UnknownTenant),
        expect![[r#""#]],
    );
}

#[test]
fn a_verifiable_credential_and_an_sd_jwt_disclosing_only_what_the_policy_allows() {
    let keys = keys();
    let mut d = driver(&keys);
    let statuses = [
        ("account_verified", MatchStatus::Matched),
        ("fraud_listed", MatchStatus::NotMatched),
    ];
    check(
        &keys,
        &mut d,
        "matches",
        &matched("r1", ResponseFormat::VcJose, &statuses),
        expect![[r#"
            decisions.acme VcJose kid=k-2025 verified=true
              {"alg":"EdDSA","kid":"k-2025","typ":"vc+jwt","cty":"vc"} {"@context":["https://www.w3.org/ns/credentials/v2"],"type":["VerifiableCredential","PavilionDecision"],"id":"urn:pavilion:decision:r1","issuer":"test-broker","validFrom":"2023-11-14T22:13:20Z","validUntil":"2023-11-14T22:18:20Z","credentialSubject":{"iss":"test-broker","aud":"acme","jti":"r1","iat":1700000000,"exp":1700000300,"nonce":"nonce-r1","response_schema":"pavilion.decision/1","policy":null,"claims":[{"index":0,"name":"account_verified","outcome":"verified","reason":null,"evidence":[]},{"index":1,"name":"fraud_listed","outcome":"not_verified","reason":null,"evidence":[]}],"rejection":null}}
            issued r1 -> decisions.acme kid=k-2025
        "#]],
    );
    // Only account_verified is disclosable: fraud_listed is not in the token at all.
    let mut sd = matched("r2", ResponseFormat::SdJwt, &statuses);
    sd.outcome.plan[0].disclosable_attributes = vec!["account_verified".into()];
    check(
        &keys,
        &mut d,
        "matches",
        &sd,
        expect![[r#"
            decisions.acme SdJwt kid=k-2025 verified=true
              {"alg":"EdDSA","kid":"k-2025","typ":"pavilion-decision+sd-jwt"} {"iss":"test-broker","aud":"acme","jti":"r2","iat":1700000000,"exp":1700000300,"nonce":"nonce-r2","response_schema":"pavilion.decision/1","policy":null,"_sd_alg":"sha-256","_sd":["<digest>"]} ~"account_verified"={"outcome":"verified","reason":null}
            issued r2 -> decisions.acme kid=k-2025
        "#]],
    );
}

#[test]
fn the_policys_response_template_shapes_the_payload_but_not_the_record() {
    let keys = keys();
    let mut d = driver(&keys);
    let template = ResponseTemplate {
        audience: Some("https://shop.example/age-gate".into()),
        lifetime_ms: Some(60_000),
        claim_names: BTreeMap::from([("age_over".into(), "age_over_18".into())]),
        evidence: true,
    };
    let statuses = [
        ("age_over", MatchStatus::Matched),
        ("fraud_listed", MatchStatus::NotMatched),
    ];
    let mut m = matched("r1", ResponseFormat::Jwt, &statuses);
    m.results[0].evidence = vec![
        EvidenceRef {
            provider_id: "bank".into(),
            kind: EvidenceKind::OprfMatch,
            attestation_digest: Some(vec![7; 32]),
            proof_digest: None,
            zk: None,
            disclosure: None,
            credential: None,
        },
        // A proof travels whole, with its public inputs as decimal field elements.
        EvidenceRef {
            provider_id: "bank".into(),
            kind: EvidenceKind::ZkPredicate,
            attestation_digest: Some(vec![7; 32]),
            proof_digest: Some(vec![8; 32]),
            zk: Some(ZkEvidence {
                circuit: "date_le_cutoff".into(),
                verifying_key_sha256: vec![0xab; 32],
                commitment: [vec![0; 31], vec![1]].concat(),
                bound: 20081205,
                nonce: [vec![0; 30], vec![1, 0]].concat(),
                proof: vec![9; 6],
            }),
            disclosure: None,
            credential: None,
        },
    ];
    m.outcome.response_template = Some(template.clone());
    check(
        &keys,
        &mut d,
        "matches",
        &m,
        expect![[r#"
            decisions.acme Jwt kid=k-2025 verified=true
              {"alg":"EdDSA","kid":"k-2025","typ":"JWT"} {"iss":"test-broker","aud":"https://shop.example/age-gate","jti":"r1","iat":1700000000,"exp":1700000060,"nonce":"nonce-r1","response_schema":"pavilion.decision/1","policy":null,"claims":[{"index":0,"name":"age_over_18","outcome":"verified","reason":null,"evidence":[{"provider":"bank","kind":"oprf_match","attestation_digest":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc","proof_digest":null},{"provider":"bank","kind":"zk_predicate","attestation_digest":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc","proof_digest":"CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg","zk":{"circuit":"date_le_cutoff","verifying_key_sha256":"abababababababababababababababababababababababababababababababab","public_inputs":["1","20081205","256"],"proof":"CQkJCQkJ"}}]},{"index":1,"name":"fraud_listed","outcome":"not_verified","reason":null,"evidence":[]}],"rejection":null}
            issued r1 -> decisions.acme kid=k-2025
        "#]],
    );
    // The record keeps the requested names and the evidence: auditors see what was asked.
    let out = d.send("matches", "acme", &m);
    let record: Decision = Registry::builtin().decode(&out[0].value).unwrap();
    assert_eq!(record.outcomes[0].claim_name, "age_over");
    assert_eq!(record.outcomes[0].evidence.len(), 2);
    assert_eq!(record.expires_at - record.issued_at, 60_000);
    // SD-JWT: the disclosure carries the payload name.
    let mut sd = matched("r2", ResponseFormat::SdJwt, &statuses);
    sd.outcome.plan[0].disclosable_attributes = vec!["age_over".into()];
    sd.outcome.response_template = Some(template);
    check(
        &keys,
        &mut d,
        "matches",
        &sd,
        expect![[r#"
        decisions.acme SdJwt kid=k-2025 verified=true
          {"alg":"EdDSA","kid":"k-2025","typ":"pavilion-decision+sd-jwt"} {"iss":"test-broker","aud":"https://shop.example/age-gate","jti":"r2","iat":1700000000,"exp":1700000060,"nonce":"nonce-r2","response_schema":"pavilion.decision/1","policy":null,"_sd_alg":"sha-256","_sd":["<digest>"]} ~"age_over_18"={"outcome":"verified","reason":null}
        issued r2 -> decisions.acme kid=k-2025
    "#]],
    );
}

#[test]
fn an_unknown_format_is_a_dead_letter_not_a_silent_substitute() {
    let keys = keys();
    let mut d = driver(&keys);
    let out = d.send(
        "matches",
        "acme",
        &matched(
            "r1",
            ResponseFormat::Unknown,
            &[("account_verified", MatchStatus::Matched)],
        ),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "dlq");
}

#[test]
fn a_subject_reference_is_a_pseudonym_per_tenant_only_when_the_policy_discloses_it() {
    let keys = keys();
    let mut d = driver(&keys);
    let registry = Registry::builtin();
    let mut asked = 0;
    let mut pseudonym = |tenant: &str, disclose: bool| {
        // A request id each: one id is decided once.
        asked += 1;
        let mut m = matched(
            &format!("r{asked}"),
            ResponseFormat::Jwt,
            &[("account_verified", MatchStatus::Matched)],
        );
        m.outcome.request.tenant_id = tenant.into();
        if disclose {
            m.outcome.plan[0].disclosable_attributes = vec![crate::SUBJECT_REFERENCE.into()];
        }
        let out = d.send("matches", tenant, &m);
        registry
            .decode::<Decision>(&out[0].value)
            .unwrap()
            .subject_pseudonym
    };
    let acme = pseudonym("acme", true).expect("disclosed");
    assert_eq!(
        pseudonym("acme", true),
        Some(acme.clone()),
        "stable for one tenant"
    );
    let beta = pseudonym("beta", true).expect("disclosed");
    assert_ne!(acme, beta, "unlinkable across tenants");
    assert_eq!(
        pseudonym("acme", false),
        None,
        "absent unless the policy discloses it"
    );
    assert!(!acme.windows(8).any(|w| w == [0xAB; 8]), "not the token");
}

/// Each output as `topic request-id sha256-prefix`: what tells the very record from another.
fn fingerprints(out: &[(String, Vec<u8>)]) -> String {
    let registry = Registry::builtin();
    out.iter()
        .map(|(topic, value)| {
            let id = registry
                .decode::<Decision>(value)
                .map(|d| d.request_id)
                .or_else(|_| {
                    registry
                        .decode::<DecisionIssued>(value)
                        .map(|i| i.request_id)
                })
                .unwrap_or_default();
            let digest = <sha2::Sha256 as sha2::Digest>::digest(value);
            format!("{topic} {id} {}\n", hex_prefix(&digest))
        })
        .collect()
}

/// Sends, and keeps each output's topic and value.
fn send(
    d: &mut TestDriver,
    topic: &str,
    value: &impl pavilion_schemas::Event,
) -> Vec<(String, Vec<u8>)> {
    d.send(topic, "acme", value)
        .into_iter()
        .map(|r| (r.topic, r.value))
        .collect()
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The kept decisions, keys only (values are whole records).
fn kept_keys(d: &TestDriver) -> String {
    d.store("signing", "decisions")
        .lines()
        .map(|l| format!("{}\n", l.split(" = ").next().unwrap().replace('\0', "/")))
        .collect()
}

#[test]
fn one_decision_per_request_id_a_retry_gets_the_very_record_again() {
    let keys = keys();
    let mut d = driver(&keys);
    let marker = |id: &str, reason| RequestRejected {
        request_id: id.into(),
        tenant_id: Some("acme".into()),
        reason,
        detail: "retry".into(),
        retry_after_ms: None,
        rejected_at: 0,
    };
    let first = send(
        &mut d,
        "matches",
        &matched(
            "r1",
            ResponseFormat::Jwt,
            &[("age_over", MatchStatus::Matched)],
        ),
    );
    // Later, under a rotated key: a retry is not signed again, it is the same record.
    d.clock().advance(std::time::Duration::from_secs(60));
    keys.0
        .lock()
        .unwrap()
        .push(("k-2026".into(), SigningKey::from_bytes(&[2; 32])));
    let retry = send(
        &mut d,
        "rejected",
        &marker("r1", RejectionReason::Duplicate),
    );
    assert_eq!(
        first, retry,
        "a retry gets the very decision record and audit event again"
    );
    // The same id for another question: nothing (the id has its answer). An input for an id
    // already decided (tenancy forgot it first): the kept decision, not a second one.
    let conflict = send(&mut d, "rejected", &marker("r1", RejectionReason::Conflict));
    let mut again = matched(
        "r1",
        ResponseFormat::Json,
        &[("fraud_listed", MatchStatus::NotMatched)],
    );
    again.outcome.request.nonce = "another".into();
    let decided_again = send(&mut d, "matches", &again);
    assert_eq!(first[0].1, decided_again[0].1);
    // A retry overtaking its original (split stages, other topics): nothing yet; the
    // original's decision answers both.
    let early = send(
        &mut d,
        "rejected",
        &marker("r2", RejectionReason::Duplicate),
    );
    let late = send(
        &mut d,
        "matches",
        &matched(
            "r2",
            ResponseFormat::Json,
            &[("age_over", MatchStatus::Matched)],
        ),
    );
    // A rate-limited rejection is final for its id: a retry gets it again.
    let mut limited = marker("r3", RejectionReason::RateLimited);
    limited.retry_after_ms = Some(500);
    let limited_out = send(&mut d, "rejected", &limited);
    let limited_retry = send(
        &mut d,
        "rejected",
        &marker("r3", RejectionReason::Duplicate),
    );
    assert_eq!(limited_out[0].1, limited_retry[0].1);
    let kept = kept_keys(&d);
    // Past the window (1 h) punctuation forgets them, a bounded batch at a time.
    d.clock().advance(std::time::Duration::from_secs(3600));
    d.punctuate();
    let forgotten = send(
        &mut d,
        "rejected",
        &marker("r1", RejectionReason::Duplicate),
    );
    expect![[r#"
        first:
        decisions.acme r1 fc5720f4f3aa
        issued r1 3ff4bf413b7e
        retry:
        decisions.acme r1 fc5720f4f3aa
        issued r1 3ff4bf413b7e
        conflict:
        decided again:
        decisions.acme r1 fc5720f4f3aa
        issued r1 3ff4bf413b7e
        early retry:
        late original:
        decisions.acme r2 57cc464367a4
        issued r2 d68f93156277
        rate limited, and its retry:
        decisions.acme r3 a584efbf392c
        issued r3 016dd37ee925
        decisions.acme r3 a584efbf392c
        issued r3 016dd37ee925
        kept:
        exp/00000001700003600000/id/acme/r1
        exp/00000001700003660000/id/acme/r2
        exp/00000001700003660000/id/acme/r3
        id/acme/r1
        id/acme/r2
        id/acme/r3
        after the window:
        kept: 
    "#]]
    .assert_eq(&format!(
        "first:\n{}retry:\n{}conflict:\n{}decided again:\n{}early retry:\n{}late original:\n{}rate limited, and its retry:\n{}{}kept:\n{kept}after the window:\n{}kept: {}\n",
        fingerprints(&first),
        fingerprints(&retry),
        fingerprints(&conflict),
        fingerprints(&decided_again),
        fingerprints(&early),
        fingerprints(&late),
        fingerprints(&limited_out),
        fingerprints(&limited_retry),
        fingerprints(&forgotten),
        kept_keys(&d),
    ));
}

#[test]
fn disclosed_attributes_are_in_the_payload_with_the_proof_that_reveals_them() {
    let keys = keys();
    let mut d = driver(&keys);
    let mut m = matched(
        "r1",
        ResponseFormat::Json,
        &[("residence", MatchStatus::Matched)],
    );
    m.results[0].evidence = vec![EvidenceRef {
        provider_id: "bank".into(),
        kind: EvidenceKind::BbsDisclosure,
        attestation_digest: Some(vec![7; 32]),
        proof_digest: Some(vec![8; 32]),
        zk: None,
        disclosure: Some(pavilion_schemas::BbsDisclosure {
            header: b"pavilion.attributes.v1\nissuer=bank".to_vec(),
            presentation_header: vec![1; 4],
            disclosed: vec![pavilion_schemas::DisclosedAttribute {
                index: 1,
                name: "country".into(),
                value: "DE".into(),
            }],
            proof: vec![9; 6],
            public_key: vec![2; 6],
        }),
        credential: None,
    }];
    check(
        &keys,
        &mut d,
        "matches",
        &m,
        expect![[r#"
            decisions.acme Json kid=k-2025 verified=true
              {"iss":"test-broker","aud":"acme","jti":"r1","iat":1700000000,"exp":1700000300,"nonce":"nonce-r1","response_schema":"pavilion.decision/1","policy":null,"claims":[{"index":0,"name":"residence","outcome":"verified","reason":null,"attributes":{"country":"DE"},"evidence":[{"provider":"bank","kind":"bbs_disclosure","attestation_digest":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc","proof_digest":"CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg","bbs":{"ciphersuite":"BLS12-381-SHA-256","public_key":"AgICAgIC","header":"cGF2aWxpb24uYXR0cmlidXRlcy52MQppc3N1ZXI9YmFuaw","presentation_header":"AQEBAQ","disclosed":[{"index":1,"name":"country","value":"DE"}],"proof":"CQkJCQkJ"}}]}],"rejection":null}
            issued r1 -> decisions.acme kid=k-2025
        "#]],
    );
}
