//! Disclosures as data: a provider whose members' attributes are BBS-signed, real proofs as
//! its answers. The claim is matched only on a proof that verifies with the registered key,
//! for this request's nonce, revealing exactly the attributes the plan lists.

use std::time::Duration;

use pavilion_credentials::bbs::{self, AttributeHeader, SignedAttributes, DISCLOSURE_EVIDENCE};
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::OutRecord;
use pavilion_schemas::{
    BbsDisclosure, DisclosedAttribute, EvidenceKind, EvidenceRequest, EvidenceResponse,
    EvidenceStatus, MatchResult, MatchStatus, PolicyOutcome, ProviderKey, Registry,
};
use pavilion_zk::{field_to_bytes, nonce_from_request_id};

use crate::tests::{driver, entry, outcome, plan, provider, T0};

fn bbs_key(provider: &str) -> bbs::SigningKey {
    bbs::SigningKey::derive(&[7; 32], provider.as_bytes()).unwrap()
}

/// What the provider signed about `subject`: birth date, country, income.
fn signed(provider: &str, subject: &str, expires_at_ms: i64) -> SignedAttributes {
    let values = match subject {
        "alice" => ["1990-04-01", "DE", "52000"],
        _ => ["1985-12-24", "FR", "41000"],
    };
    SignedAttributes::sign(
        &bbs_key(provider),
        AttributeHeader {
            issuer: provider.into(),
            schema: "pavilion.member.v1".into(),
            attributes: vec!["birthdate".into(), "country".into(), "income".into()],
            expires_at_ms,
        },
        values.map(String::from).to_vec(),
    )
    .unwrap()
}

/// The provider's answer revealing `names` of `signed`, for the nonce `asked` carries.
fn disclosed(
    asked: &EvidenceRequest,
    signed: &SignedAttributes,
    names: &[&str],
) -> EvidenceResponse {
    let key = bbs_key(&signed.header.issuer);
    let nonce: [u8; 32] = asked.nonce.as_slice().try_into().unwrap();
    let d = signed.disclose(key.public_key(), names, &nonce).unwrap();
    EvidenceResponse {
        provider_id: "bank".into(),
        set_key: asked.set_key.clone(),
        circuit: asked.circuit.clone(),
        bound: asked.bound,
        nonce: asked.nonce.clone(),
        status: EvidenceStatus::Proved,
        proof: None,
        detail: None,
        proved_at: T0,
        proving_ms: 3,
        disclosure: Some(BbsDisclosure {
            header: d.header,
            presentation_header: nonce.to_vec(),
            disclosed: d
                .disclosed
                .into_iter()
                .map(|(i, name, value)| DisclosedAttribute {
                    index: i as i32,
                    name,
                    value,
                })
                .collect(),
            proof: d.proof,
            public_key: key.public_key().to_bytes().to_vec(),
        }),
    }
}

fn world() -> TestDriver {
    let mut driver = driver();
    let mut bank = provider("bank", Some(T0));
    bank.attestation_keys.push(ProviderKey {
        key_id: "b1".into(),
        algorithm: bbs::KEY_ALGORITHM.into(),
        public_key: bbs_key("bank").public_key().to_bytes().to_vec(),
    });
    driver.send_global("providers", b"bank", Some(&bank));
    for subject in ["alice", "bob"] {
        let e = entry("bank", subject, &["residence"], T0);
        driver.send_global("sets.bank", &e.token.clone(), Some(&e));
    }
    driver
}

/// A `residence` request about `subject` whose plan discloses `country` by BBS proof.
fn ask_residence(id: &str, subject: &str) -> PolicyOutcome {
    let mut p = plan(0, "residence", &["bank"], &[EvidenceKind::BbsDisclosure]);
    p.disclosable_attributes = vec!["residence".into(), "country".into()];
    let mut o = outcome(subject, &["bank"], vec![p]);
    o.request.request_id = id.into();
    o
}

fn asks(out: &[OutRecord]) -> Vec<EvidenceRequest> {
    out.iter()
        .filter(|r| r.topic.starts_with("asks."))
        .map(|r| Registry::builtin().decode(&r.value).unwrap())
        .collect()
}

fn results(out: &[OutRecord]) -> Vec<MatchResult> {
    out.iter()
        .filter_map(|r| Registry::builtin().decode::<MatchResult>(&r.value).ok())
        .collect()
}

/// Asks about `subject` under request `id`, answers with `answer(ask)`, and returns the claim's
/// result after the punctuation.
fn round_trip(
    driver: &mut TestDriver,
    id: &str,
    subject: &str,
    answer: impl FnOnce(&EvidenceRequest) -> EvidenceResponse,
) -> pavilion_schemas::ClaimMatch {
    let asked = asks(&driver.send("outcomes", id, &ask_residence(id, subject)));
    assert_eq!(asked.len(), 1);
    let out = driver.send("answers", "k", &answer(&asked[0]));
    assert!(out.is_empty(), "an answer alone decides nothing");
    driver.clock().advance(Duration::from_millis(100));
    let out = driver.punctuate();
    let mut r = results(&out);
    assert_eq!(r.len(), 1, "{id}: {out:?}");
    r.remove(0).results.remove(0)
}

#[test]
fn a_disclosure_is_asked_for_exactly_the_planned_attributes_and_verified() {
    let mut driver = world();
    let asked = asks(&driver.send("outcomes", "r1", &ask_residence("r1", "alice")));
    let q = &asked[0];
    assert_eq!(q.circuit, DISCLOSURE_EVIDENCE);
    assert_eq!(
        q.disclose,
        ["country"],
        "the claim's own name is not an attribute"
    );
    assert_eq!(q.nonce, field_to_bytes(nonce_from_request_id(b"r1")));

    let alice = signed("bank", "alice", T0 + 86_400_000);
    driver.send("answers", "k", &disclosed(q, &alice, &["country"]));
    driver.clock().advance(Duration::from_millis(100));
    let m = results(&driver.punctuate()).remove(0).results.remove(0);
    assert_eq!(m.status, MatchStatus::Matched, "{:?}", m.reason);
    let e = &m.evidence[1];
    assert_eq!(e.kind, EvidenceKind::BbsDisclosure);
    let d = e.disclosure.clone().unwrap();
    assert_eq!(
        d.disclosed,
        [DisclosedAttribute {
            index: 1,
            name: "country".into(),
            value: "DE".into()
        }]
    );
    // What the decision will carry verifies with the provider's key alone.
    bbs::Disclosure {
        header: d.header.clone(),
        disclosed: vec![(1, "country".into(), "DE".into())],
        proof: d.proof.clone(),
    }
    .verify(
        &bbs::PublicKey::from_bytes(&d.public_key).unwrap(),
        &d.presentation_header.clone().try_into().unwrap(),
    )
    .unwrap();
    let text = format!("{m:?}");
    assert!(!text.contains("1990-04-01") && !text.contains("52000"));
}

#[test]
fn disclosures_not_as_asked_are_refused_each_with_its_reason() {
    let alice = signed("bank", "alice", T0 + 86_400_000);
    type Answer<'a> = Box<dyn FnOnce(&EvidenceRequest) -> EvidenceResponse + 'a>;
    let cases: Vec<(&str, Answer<'_>)> = vec![
        (
            "disclosure_not_as_asked",
            Box::new(|q| disclosed(q, &alice, &["country", "birthdate"])),
        ),
        (
            "disclosure_not_as_asked",
            Box::new(|q| disclosed(q, &alice, &["income"])),
        ),
        (
            "bad_disclosure",
            Box::new(|q| {
                let mut r = disclosed(q, &alice, &["country"]);
                r.disclosure.as_mut().unwrap().disclosed[0].value = "FR".into();
                r
            }),
        ),
        (
            "bad_disclosure",
            Box::new(|q| {
                // A proof made for another request.
                let mut other = q.clone();
                other.nonce = field_to_bytes(nonce_from_request_id(b"elsewhere")).to_vec();
                let mut r = disclosed(&other, &alice, &["country"]);
                r.nonce = q.nonce.clone();
                r
            }),
        ),
        (
            "bad_disclosure",
            // Signed by another key than the one registered.
            Box::new(|q| {
                disclosed(
                    q,
                    &signed("mallory", "alice", T0 + 86_400_000),
                    &["country"],
                )
            }),
        ),
        (
            "disclosure_expired",
            Box::new(|q| disclosed(q, &signed("bank", "alice", T0 - 1), &["country"])),
        ),
    ];
    for (i, (reason, answer)) in cases.into_iter().enumerate() {
        // A world each: the provider's breaker would open after three refusals in a row.
        let m = round_trip(&mut world(), &format!("r{i}"), "alice", answer);
        assert_eq!(m.status, MatchStatus::Unavailable, "case {i}");
        assert_eq!(
            m.reason.as_deref(),
            Some(format!("bank: {reason}").as_str()),
            "case {i}"
        );
    }
}

#[test]
fn a_provider_without_a_bbs_key_cannot_disclose() {
    let mut driver = driver();
    driver.send_global("providers", b"bank", Some(&provider("bank", Some(T0))));
    let e = entry("bank", "alice", &["residence"], T0);
    driver.send_global("sets.bank", &e.token.clone(), Some(&e));
    let out = driver.send("outcomes", "r1", &ask_residence("r1", "alice"));
    assert!(asks(&out).is_empty());
    let m = results(&out).remove(0).results.remove(0);
    assert_eq!(m.reason.as_deref(), Some("bank: no_bbs_key"));
}
