//! Credential evidence as data: a provider registered with its issuer key, its status list
//! in the global store, and holders' presentations in the requests. Each way a presentation
//! can fail has its own reason, `unavailable` only while the revocation status is unknown.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use pavilion_credentials::credential::{issue, present, Format, Issuance};
use pavilion_credentials::jose::KeySigner;
use pavilion_credentials::status_list::{Bitstring, StatusEntry, StatusList};
use pavilion_runtime::testing::TestDriver;
use pavilion_schemas::{
    ClaimMatch, EvidenceKind, MatchResult, MatchStatus, PolicyOutcome, ProviderState, Registry,
    StatusListPublished, PRESENTATION_PARAM,
};

use crate::tests::{attestation_key, driver, outcome, plan, provider, T0};

const ISSUER: &str = "urn:pavilion:provider:bank";
const LIST: &str = "urn:pavilion:status-list:bank:1";
const DAY: i64 = 86_400_000;

fn holder() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// A credential of bank's about the holder, with status index `index`.
fn credential(
    format: Format,
    attributes: &[(&str, &str)],
    times: (i64, i64, i64),
    index: usize,
) -> String {
    let attributes: BTreeMap<String, String> = attributes
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let (issued_at, valid_from, valid_until) = times;
    issue(
        format,
        &Issuance {
            issuer: ISSUER,
            attributes: &attributes,
            holder: &holder().verifying_key(),
            issued_at,
            valid_from,
            valid_until,
            status: Some(StatusEntry {
                list: LIST.into(),
                index,
            }),
        },
        &KeySigner {
            kid: "a1",
            key: &attestation_key("bank"),
        },
    )
    .unwrap()
}

fn usual(index: usize) -> String {
    credential(
        Format::SdJwtVc,
        &[("country", "DE"), ("birthdate", "1990-04-01")],
        (T0 - DAY, T0 - DAY, T0 + 30 * DAY),
        index,
    )
}

/// bank's status list with `revoked` set, made at `at`, trusted for five minutes.
fn publish_list(driver: &mut TestDriver, revoked: &[usize], at: i64) {
    let mut bits = Bitstring::default();
    for &i in revoked {
        bits.set(i).unwrap();
    }
    let list = StatusList {
        url: LIST.into(),
        issuer: ISSUER.into(),
        valid_from: at,
        ttl_ms: 300_000,
        bits,
    };
    let token = list
        .issue(&KeySigner {
            kid: "a1",
            key: &attestation_key("bank"),
        })
        .unwrap();
    let record = StatusListPublished {
        provider_id: "bank".into(),
        list_id: LIST.into(),
        credential: token,
        published_at: at,
    };
    driver.send_global("lists.bank", LIST.as_bytes(), Some(&record));
}

fn world() -> TestDriver {
    let mut driver = driver();
    driver.send_global("providers", b"bank", Some(&provider("bank", Some(T0))));
    driver.send_global("providers", b"telco", Some(&provider("telco", Some(T0))));
    publish_list(&mut driver, &[7], T0);
    driver
}

/// A `residence` request whose plan takes credential evidence from `providers`, disclosing
/// `country` at most, with `presentation` (if any) in the claim.
fn ask(providers: &[&str], presentation: Option<String>, max_age: Option<i64>) -> PolicyOutcome {
    let mut p = plan(0, "residence", providers, &[EvidenceKind::Credential]);
    p.disclosable_attributes = vec!["residence".into(), "country".into()];
    p.max_credential_age_ms = max_age;
    let mut o = outcome("alice", &[], vec![p]);
    if let Some(presentation) = presentation {
        o.request.claims[0]
            .params
            .insert(PRESENTATION_PARAM.into(), presentation);
    }
    o
}

fn presentation(credential: &str, disclose: &[&str], nonce: &str) -> String {
    let disclose: Vec<String> = disclose.iter().map(|s| s.to_string()).collect();
    present(credential, &disclose, &holder(), "pavilion", nonce, T0).unwrap()
}

fn result(driver: &mut TestDriver, outcome: &PolicyOutcome) -> ClaimMatch {
    let out = driver.send("outcomes", "acme", outcome);
    let mut results: Vec<MatchResult> = out
        .iter()
        .filter_map(|r| Registry::builtin().decode(&r.value).ok())
        .collect();
    assert_eq!(results.len(), 1, "{out:?}");
    results.remove(0).results.remove(0)
}

fn verdict(driver: &mut TestDriver, outcome: &PolicyOutcome) -> (MatchStatus, String) {
    let r = result(driver, outcome);
    (r.status, r.reason.unwrap_or_default())
}

#[test]
fn a_valid_presentation_verifies_the_claim_with_the_disclosed_attribute() {
    let mut driver = world();
    let p = presentation(&usual(3), &["country"], "n");
    let r = result(&mut driver, &ask(&["bank"], Some(p.clone()), None));
    assert_eq!(r.status, MatchStatus::Matched, "{r:?}");
    let evidence = &r.evidence[0];
    assert_eq!(evidence.kind, EvidenceKind::Credential);
    assert_eq!(evidence.provider_id, "bank");
    let c = evidence.credential.as_ref().unwrap();
    assert_eq!(c.format, "sd-jwt-vc");
    assert_eq!(c.issuer, ISSUER);
    assert_eq!(c.key_id, "a1");
    assert_eq!(
        c.attributes,
        BTreeMap::from([("country".into(), "DE".into())])
    );
    assert_eq!((c.status_list.as_str(), c.status_index), (LIST, 3));
    assert_eq!(c.presentation, p);
    // No set was asked: the holder's credential is the provider's statement.
    assert!(evidence.attestation_digest.is_none());

    // A VC-JWT stating only what the plan allows, in a holder-signed VP.
    let vc = credential(
        Format::VcJwt,
        &[("country", "FR")],
        (T0 - DAY, T0 - DAY, T0 + DAY),
        4,
    );
    let r = result(
        &mut driver,
        &ask(&["bank"], Some(presentation(&vc, &[], "n")), None),
    );
    assert_eq!(r.status, MatchStatus::Matched, "{r:?}");
    assert_eq!(r.evidence[0].credential.as_ref().unwrap().format, "vc-jwt");
}

#[test]
fn every_refusal_has_its_reason() {
    use MatchStatus::{NotMatched, Unavailable};
    let mut driver = world();
    let mut check = |outcome: PolicyOutcome, expected: (MatchStatus, &str)| {
        let (status, reason) = verdict(&mut driver, &outcome);
        assert_eq!((status, reason.as_str()), expected);
    };
    let ok = |c: &str| Some(presentation(c, &["country"], "n"));
    check(ask(&["bank"], None, None), (Unavailable, "no_presentation"));
    check(
        ask(
            &["bank"],
            Some(presentation(&usual(3), &["country"], "another")),
            None,
        ),
        (NotMatched, "credential_key_binding"),
    );
    let unbound = {
        let p = presentation(&usual(3), &["country"], "n");
        p[..p.rfind('~').unwrap() + 1].to_owned()
    };
    check(
        ask(&["bank"], Some(unbound), None),
        (NotMatched, "credential_no_key_binding"),
    );
    check(
        ask(
            &["bank"],
            Some(presentation(&usual(3), &["country", "birthdate"], "n")),
            None,
        ),
        (NotMatched, "credential_discloses_too_much"),
    );
    check(
        ask(&["bank"], ok(&usual(7)), None),
        (NotMatched, "credential_revoked"),
    );
    check(
        ask(&["telco"], ok(&usual(3)), None),
        (NotMatched, "credential_unknown_issuer"),
    );
    let expired = credential(
        Format::SdJwtVc,
        &[("country", "DE")],
        (T0 - 2 * DAY, T0 - 2 * DAY, T0 - DAY),
        3,
    );
    check(
        ask(&["bank"], ok(&expired), None),
        (NotMatched, "credential_expired"),
    );
    let early = credential(
        Format::SdJwtVc,
        &[("country", "DE")],
        (T0, T0 + DAY, T0 + 2 * DAY),
        3,
    );
    check(
        ask(&["bank"], ok(&early), None),
        (NotMatched, "credential_not_yet_valid"),
    );
    check(
        ask(&["bank"], ok(&usual(3)), Some(DAY / 2)),
        (NotMatched, "credential_too_old"),
    );
    let mut tampered = presentation(&usual(3), &["country"], "n").into_bytes();
    tampered[20] ^= 1;
    check(
        ask(
            &["bank"],
            Some(String::from_utf8_lossy(&tampered).into_owned()),
            None,
        ),
        (NotMatched, "credential_malformed"),
    );
}

#[test]
fn revocation_status_is_only_taken_from_a_list_younger_than_its_ttl() {
    let mut driver = world();
    let ask_usual = |index| {
        ask(
            &["bank"],
            Some(presentation(&usual(index), &["country"], "n")),
            None,
        )
    };
    assert_eq!(verdict(&mut driver, &ask_usual(3)).0, MatchStatus::Matched);
    // Revoked after the last list: verifiers see it with the next one.
    publish_list(&mut driver, &[3, 7], T0 + 1_000);
    assert_eq!(
        verdict(&mut driver, &ask_usual(3)),
        (MatchStatus::NotMatched, "credential_revoked".into())
    );
    // The list's TTL passes without a new one: nothing can be said about index 5.
    driver.clock().advance(Duration::from_secs(400));
    let late = |index| {
        let now = T0 + 400_000;
        let c = credential(
            Format::SdJwtVc,
            &[("country", "DE")],
            (now - DAY, now - DAY, now + DAY),
            index,
        );
        let disclose = vec!["country".to_owned()];
        let p = present(&c, &disclose, &holder(), "pavilion", "n", now).unwrap();
        ask(&["bank"], Some(p), None)
    };
    assert_eq!(
        verdict(&mut driver, &late(5)),
        (
            MatchStatus::Unavailable,
            "credential_status_unavailable".into()
        )
    );
    publish_list(&mut driver, &[3, 7], T0 + 400_000);
    assert_eq!(verdict(&mut driver, &late(5)).0, MatchStatus::Matched);
}

#[test]
fn a_suspended_or_unlisted_issuer_is_not_trusted() {
    let mut driver = world();
    let p = presentation(&usual(3), &["country"], "n");
    let mut bank = provider("bank", Some(T0));
    bank.state = ProviderState::Suspended;
    driver.send_global("providers", b"bank", Some(&bank));
    assert_eq!(
        verdict(&mut driver, &ask(&["bank"], Some(p.clone()), None)),
        (MatchStatus::NotMatched, "credential_issuer_inactive".into())
    );
    // A bare tombstone deletes nothing from the versioned registry (deletes are versioned
    // records): the issuer is still known, and still suspended.
    driver.send_global("providers", b"bank", None::<&pavilion_schemas::Provider>);
    assert_eq!(
        verdict(&mut driver, &ask(&["bank"], Some(p.clone()), None)),
        (MatchStatus::NotMatched, "credential_issuer_inactive".into())
    );
    // A registry that never knew the issuer.
    let mut unlisted = self::driver();
    publish_list(&mut unlisted, &[7], T0);
    assert_eq!(
        verdict(&mut unlisted, &ask(&["bank"], Some(p), None)),
        (MatchStatus::NotMatched, "credential_unknown_issuer".into())
    );
}
