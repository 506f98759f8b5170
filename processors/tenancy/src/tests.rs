//! Tenancy as data: tenant updates and requests in → accepted or rejected out, on a manual
//! clock.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use expect_test::{expect, Expect};
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::StageKinds;
use pavilion_schemas::{
    ClaimRequest, PolicyDocument, PolicyState, Registry, RequestRejected, RequestSigningKey,
    SubjectToken, Tenant, TenantConfig, TenantState, VerificationRequest,
};

const TOPOLOGY: &str = "
application: t
dlq: dlq
topics:
  dlq: { schema: pavilion.DeadLetter }
  requests: { schema: pavilion.VerificationRequest }
  routed: { schema: pavilion.VerificationRequest }
  tenants: { schema: pavilion.Tenant, cleanup: compact }
  policies: { schema: pavilion.PolicyDocument, retention: forever }
  accepted: { schema: pavilion.AcceptedRequest }
  rejected: { schema: pavilion.RequestRejected }
stages:
  tenancy:
    kind: tenancy
    inputs: [requests, routed, tenants, policies]
    outputs: { accepted: accepted, rejected: rejected, routed: routed }
    stores: [tenants, seen, limits, policies]
    punctuate_every: 1m
    config:
      allowed_claims: [age_over, account_verified]
      clock_skew: 1m
      idempotency_window: 1h
";

/// 2023-11-14T22:13:20Z, the driver's manual clock at start.
const T0: i64 = 1_700_000_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn tenant(id: &str, state: TenantState, revision: i64) -> Tenant {
    Tenant {
        stamp: None,
        tenant_id: id.into(),
        display_name: format!("Tenant {id}"),
        state,
        signing_keys: vec![RequestSigningKey {
            key_id: "k1".into(),
            public_key: key(1).verifying_key().to_bytes().to_vec(),
            not_before: T0 - 1000,
            not_after: None,
            revoked_at: None,
        }],
        config: TenantConfig {
            rate_limit_per_second: 2.0,
            burst: 3,
            daily_quota: Some(100),
            allowed_regions: vec!["eu".into()],
            response_topic: format!("pavilion.decisions.{id}"),
            privacy_budget_micro: None,
        },
        updated_at: T0,
        revision,
    }
}

fn request(tenant: &str, id: &str, at: i64) -> VerificationRequest {
    let mut r = VerificationRequest {
        request_id: id.into(),
        tenant_id: tenant.into(),
        key_id: "k1".into(),
        signature: Vec::new(),
        signed_at: at,
        nonce: format!("nonce-{id}"),
        created_at: at,
        claims: vec![ClaimRequest {
            name: "age_over".into(),
            params: BTreeMap::from([("threshold".into(), "18".into())]),
        }],
        purpose: "onboarding".into(),
        subject_jurisdiction: "eu".into(),
        consent_ref: None,
        subject_tokens: vec![SubjectToken {
            provider_id: "registry".into(),
            token: vec![7; 64],
        }],
        response_format: None,
    };
    sign(&mut r, &key(1));
    r
}

fn sign(r: &mut VerificationRequest, key: &SigningKey) {
    r.signature = key.sign(&r.signing_bytes()).to_bytes().to_vec();
}

/// One step of a scenario.
enum Step {
    Tenant(Tenant),
    Policy(PolicyDocument),
    Request(VerificationRequest),
    /// A request on the wrong key.
    Misrouted(VerificationRequest, &'static str),
    Advance(Duration),
    Punctuate,
}

fn check(steps: Vec<Step>, expect_out: Expect) {
    let mut driver = TestDriver::new(TOPOLOGY, "tenancy", &StageKinds::new([&crate::KIND]));
    let mut rendered = String::new();
    for step in steps {
        let out = match step {
            Step::Tenant(t) => driver.send("tenants", &t.tenant_id.clone(), &t),
            Step::Policy(d) => {
                let key = d.tenant_id.clone().unwrap_or_else(|| d.policy_id.clone());
                driver.send("policies", &key, &d)
            }
            Step::Request(r) => driver.send("requests", &r.tenant_id.clone(), &r),
            Step::Misrouted(r, key) => driver.send("requests", key, &r),
            Step::Advance(d) => {
                driver.clock().advance(d);
                continue;
            }
            Step::Punctuate => driver.punctuate(),
        };
        for record in out {
            let line = line(&record.topic, &record.value);
            if record.topic == "accepted" || record.topic == "rejected" {
                // From tenancy on, a request is keyed by its id.
                let id = line.split_whitespace().nth(1).unwrap_or_default();
                assert_eq!(String::from_utf8_lossy(&record.key), id, "key of {line}");
            }
            rendered += &line;
        }
    }
    expect_out.assert_eq(&rendered);
}

/// `accepted <request>` or `rejected <request> <reason> [retry after] — detail`.
fn line(topic: &str, value: &[u8]) -> String {
    let registry = Registry::builtin();
    match topic {
        "accepted" => {
            let a: pavilion_schemas::AcceptedRequest = registry.decode(value).unwrap();
            let policy = a
                .policy
                .map(|p| format!(" under {}@v{}", p.policy_id, p.version))
                .unwrap_or_default();
            format!(
                "accepted {} (tenant revision {}){policy}\n",
                a.request.request_id, a.tenant_revision
            )
        }
        "rejected" => {
            let r: RequestRejected = registry.decode(value).unwrap();
            let retry = r
                .retry_after_ms
                .map(|ms| format!(" retry after {ms} ms"))
                .unwrap_or_default();
            format!(
                "rejected {} {}{retry} — {}\n",
                r.request_id,
                r.reason.as_str(),
                r.detail
            )
        }
        "routed" => {
            let r: VerificationRequest = registry.decode(value).unwrap();
            format!("routed {}\n", r.request_id)
        }
        _ => {
            let d: pavilion_schemas::DeadLetter = registry.decode(value).unwrap();
            format!("dead letter ({:?}): {}\n", d.reason, d.detail)
        }
    }
}

#[test]
fn authentication_and_lifecycle() {
    let mut forged = request("acme", "forged", T0);
    sign(&mut forged, &key(9));
    let mut tampered = request("acme", "tampered", T0);
    tampered.purpose = "marketing".into();
    let mut unknown_key = request("acme", "unknown-key", T0);
    unknown_key.key_id = "k9".into();
    let mut revoked = tenant("acme", TenantState::Active, 4);
    revoked.signing_keys[0].revoked_at = Some(T0);
    let mut rotated = tenant("acme", TenantState::Active, 5);
    rotated.signing_keys.push(RequestSigningKey {
        key_id: "k2".into(),
        public_key: key(2).verifying_key().to_bytes().to_vec(),
        not_before: T0,
        not_after: None,
        revoked_at: None,
    });
    rotated.signing_keys[0].revoked_at = Some(T0);
    let mut with_k2 = request("acme", "with-k2", T0);
    with_k2.key_id = "k2".into();
    sign(&mut with_k2, &key(2));
    check(
        vec![
            Step::Request(request("acme", "before-registration", T0)),
            Step::Tenant(tenant("acme", TenantState::Provisioned, 1)),
            Step::Request(request("acme", "provisioned", T0)),
            Step::Tenant(tenant("acme", TenantState::Active, 2)),
            Step::Request(request("acme", "ok", T0)),
            Step::Request(forged),
            Step::Request(tampered),
            Step::Request(unknown_key),
            Step::Tenant(tenant("acme", TenantState::Suspended, 3)),
            Step::Request(request("acme", "suspended", T0)),
            Step::Tenant(tenant("acme", TenantState::Active, 1)),
            Step::Request(request("acme", "stale-revision-ignored", T0)),
            Step::Tenant(revoked),
            Step::Request(request("acme", "revoked", T0)),
            Step::Tenant(rotated),
            Step::Request(with_k2),
            Step::Misrouted(request("acme", "misrouted", T0), "other"),
        ],
        expect![[r#"
            dead letter (Unauthenticated): unknown_tenant: no tenant `acme`
            rejected provisioned tenant_inactive — tenant is not active yet
            accepted ok (tenant revision 2)
            dead letter (Unauthenticated): bad_signature: signature does not verify
            dead letter (Unauthenticated): bad_signature: signature does not verify
            dead letter (Unauthenticated): unknown_key: no key `k9` for this tenant
            rejected suspended tenant_suspended — tenant is suspended
            rejected stale-revision-ignored tenant_suspended — tenant is suspended
            dead letter (Unauthenticated): revoked_key: key `k1` is revoked
            accepted with-k2 (tenant revision 5)
            routed misrouted
        "#]],
    );
}

#[test]
fn validation_has_a_reason_per_failure() {
    let resign = |mut r: VerificationRequest| {
        sign(&mut r, &key(1));
        r
    };
    let mut no_nonce = request("acme", "no-nonce", T0);
    no_nonce.nonce.clear();
    let mut skewed = request("acme", "skewed", T0 + 61_000);
    skewed.signed_at = T0;
    let mut big = request("acme", "big-purpose", T0);
    big.purpose = "x".repeat(300);
    let mut many = request("acme", "many-claims", T0);
    many.claims = vec![many.claims[0].clone(); 17];
    let mut fat_token = request("acme", "fat-token", T0);
    fat_token.subject_tokens[0].token = vec![0; 65];
    let mut not_served = request("acme", "not-served", T0);
    not_served.claims[0].name = "credit_score".into();
    let mut none = request("acme", "no-claims", T0);
    none.claims.clear();
    check(
        vec![
            Step::Tenant(tenant("acme", TenantState::Active, 1)),
            Step::Request(resign(no_nonce)),
            Step::Request(resign(skewed)),
            Step::Request(resign(big)),
            Step::Request(resign(many)),
            Step::Request(resign(fat_token)),
            Step::Request(resign(not_served)),
            Step::Request(resign(none)),
        ],
        expect![[r#"
            rejected no-nonce missing_nonce — nonce is empty
            rejected skewed clock_skew — created_at is 61000 ms from now, over 60000
            rejected big-purpose oversize — purpose is 300 bytes, over 256
            rejected many-claims oversize — 17 claims and 1 tokens, over 16 / 16
            rejected fat-token oversize — a token for `registry` is 65 bytes, over 64
            rejected not-served claim_not_allowed — claim `credit_score` is not served
            rejected no-claims invalid_schema — no claims asked
        "#]],
    );
}

#[test]
fn duplicates_within_the_window_and_expiry_by_punctuation() {
    let later = T0 + 3_601_000;
    check(
        vec![
            Step::Tenant(tenant("acme", TenantState::Active, 1)),
            Step::Punctuate,
            Step::Request(request("acme", "r1", T0)),
            Step::Request(request("acme", "r1", T0)),
            Step::Tenant(tenant("beta", TenantState::Active, 1)),
            Step::Request(request("beta", "r1", T0)),
            Step::Advance(Duration::from_secs(3601)),
            Step::Punctuate,
            Step::Request(request("acme", "r1", later)),
        ],
        expect![[r#"
            accepted r1 (tenant revision 1)
            rejected r1 duplicate — retry of request_id `r1`: its decision is delivered again
            accepted r1 (tenant revision 1)
            accepted r1 (tenant revision 1)
        "#]],
    );
}

#[test]
fn rate_limit_with_burst_then_daily_quota() {
    let mut steps = vec![Step::Tenant(tenant("acme", TenantState::Active, 1))];
    // Burst 3 at 2/s: three pass at once, the fourth waits 500 ms.
    for i in 0..4 {
        steps.push(Step::Request(request("acme", &format!("b{i}"), T0)));
    }
    steps.push(Step::Advance(Duration::from_millis(500)));
    // The rejection is final for its id (the same question again is a retry of it); a new
    // request id after `retry_after_ms` passes.
    steps.push(Step::Request(request("acme", "b3", T0 + 500)));
    steps.push(Step::Request(request("acme", "b4", T0 + 500)));
    check(
        steps,
        expect![[r#"
            accepted b0 (tenant revision 1)
            accepted b1 (tenant revision 1)
            accepted b2 (tenant revision 1)
            rejected b3 rate_limited retry after 500 ms — over 2 requests/s (burst 3)
            rejected b3 duplicate — retry of request_id `b3`: its decision is delivered again
            accepted b4 (tenant revision 1)
        "#]],
    );

    let mut small = tenant("acme", TenantState::Active, 1);
    small.config.daily_quota = Some(2);
    small.config.rate_limit_per_second = 1000.0;
    check(
        vec![
            Step::Tenant(small),
            Step::Request(request("acme", "q1", T0)),
            Step::Request(request("acme", "q2", T0)),
            Step::Request(request("acme", "q3", T0)),
            // The next UTC day starts 6,400,000 ms after T0.
            Step::Advance(Duration::from_millis(6_400_000)),
            Step::Request(request("acme", "q3", T0 + 6_400_000)),
        ],
        expect![[r#"
            accepted q1 (tenant revision 1)
            accepted q2 (tenant revision 1)
            rejected q3 quota_exceeded retry after 6400000 ms — daily quota of 2 used
            accepted q3 (tenant revision 1)
        "#]],
    );
}

/// Whoever can write to the ingest topic can name any tenant and request id; without the
/// tenant's key that gets them a dead letter, not a signed answer under the victim's id, and
/// the victim's own request with that id is still decided.
#[test]
fn a_forged_request_neither_gets_a_decision_nor_uses_up_the_victims_id() {
    let mut forged = request("acme", "victim-1", T0);
    sign(&mut forged, &key(9));
    check(
        vec![
            Step::Tenant(tenant("acme", TenantState::Active, 1)),
            Step::Request(forged),
            Step::Request(request("acme", "victim-1", T0)),
        ],
        expect![[r#"
            dead letter (Unauthenticated): bad_signature: signature does not verify
            accepted victim-1 (tenant revision 1)
        "#]],
    );
}

/// Producers may partition requests as they like: one read on a partition that is not its
/// tenant's, or keyed otherwise, goes to its tenant's partition first, keyed by tenant id, and
/// is decided when it is read back from there.
#[test]
fn requests_away_from_their_tenants_partition_are_routed_there() {
    let topology = TOPOLOGY.replace("topics:", "defaults: { partitions: 4 }\ntopics:");
    let mut driver = TestDriver::new(&topology, "tenancy", &StageKinds::new([&crate::KIND]));
    let home = pavilion_runtime::partitioner::partition_for(b"acme", 4);
    driver.on_partition(home);
    driver.send("tenants", "acme", &tenant("acme", TenantState::Active, 1));
    let routed = |out: Vec<pavilion_runtime::OutRecord>| {
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (
                out[0].topic.as_str(),
                out[0].partition,
                out[0].key.as_slice()
            ),
            ("routed", Some(home), b"acme".as_slice())
        );
        out[0].value.clone()
    };
    let away =
        driver
            .on_partition((home + 1) % 4)
            .send("requests", "acme", &request("acme", "away", T0));
    let away = routed(away);
    let rekeyed = driver.on_partition(home).send(
        "requests",
        "not-the-tenant",
        &request("acme", "rekeyed", T0),
    );
    let rekeyed = routed(rekeyed);
    let mut decided = String::new();
    for value in [away, rekeyed] {
        for record in driver.send_raw("routed", b"acme", &value) {
            decided += &line(&record.topic, &record.value);
        }
    }
    expect![[r#"
        accepted away (tenant revision 1)
        accepted rekeyed (tenant revision 1)
    "#]]
    .assert_eq(&decided);
}

/// Many generated hostile requests: none is accepted, each is rejected with a reason or
/// dead-lettered, and the stage still accepts a good request afterwards.
#[test]
fn a_thousand_hostile_requests_accept_nothing() {
    let mut driver = TestDriver::new(TOPOLOGY, "tenancy", &StageKinds::new([&crate::KIND]));
    driver.send("tenants", "acme", &tenant("acme", TenantState::Active, 1));
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let registry = Registry::builtin();
    for i in 0..1_200u32 {
        let mut r = request("acme", &format!("h{i}"), T0);
        let (key, raw): (String, Option<Vec<u8>>) = match i % 8 {
            0 => {
                r.signature[i as usize % 64] ^= 1;
                ("acme".into(), None)
            }
            1 => {
                r.tenant_id = format!("ghost{i}");
                sign(&mut r, &key(1));
                (r.tenant_id.clone(), None)
            }
            2 => {
                r.nonce = "n".repeat(257 + i as usize % 50);
                sign(&mut r, &key(1));
                ("acme".into(), None)
            }
            3 => {
                r.created_at = T0 - 3_600_000 - i64::from(i);
                sign(&mut r, &key(1));
                ("acme".into(), None)
            }
            4 => {
                r.request_id = "ok".into(); // the first one is accepted below, then duplicates
                sign(&mut r, &key(1));
                ("acme".into(), None)
            }
            5 => {
                let mut bytes = registry.encode(&r).unwrap();
                let cut = 11 + i as usize % (bytes.len() - 11);
                bytes.truncate(cut);
                ("acme".into(), Some(bytes))
            }
            6 => ("acme".into(), Some(format!("junk {i}").into_bytes())),
            _ => {
                r.key_id = "k1".into();
                r.signature = vec![0; 64];
                ("acme".into(), None)
            }
        };
        if i == 4 {
            // Make exactly one legitimate request the target of the duplicates.
            let out = driver.send("requests", "acme", &request("acme", "ok", T0));
            assert!(line(&out[0].topic, &out[0].value).starts_with("accepted"));
        }
        let out = match raw {
            Some(bytes) => driver.send_raw("requests", key.as_bytes(), &bytes),
            None => driver.send("requests", &key, &r),
        };
        assert_eq!(out.len(), 1, "exactly one outcome per hostile record");
        let text = line(&out[0].topic, &out[0].value);
        assert!(
            !text.starts_with("accepted"),
            "accepted a hostile request: {text}"
        );
        let reason = if text.starts_with("dead") {
            format!("dead: {}", text.split(['(', ')']).nth(1).unwrap())
        } else {
            text.split_whitespace().nth(2).unwrap().to_owned()
        };
        *reasons.entry(reason).or_default() += 1;
    }
    expect![[r#"
        {"clock_skew": 150, "dead: Unauthenticated": 450, "dead: Undecodable": 300, "duplicate": 150, "oversize": 150}
    "#]]
    .assert_eq(&format!("{reasons:?}\n"));
    let out = driver.send("requests", "acme", &request("acme", "after", T0));
    assert!(line(&out[0].topic, &out[0].value).starts_with("accepted after"));
}

fn policy_event(
    tenant: Option<&str>,
    id: &str,
    version: i64,
    state: PolicyState,
) -> PolicyDocument {
    PolicyDocument {
        stamp: None,
        tenant_id: tenant.map(str::to_owned),
        policy_id: id.into(),
        version,
        author: "ops".into(),
        created_at: T0,
        state,
        content_hash: vec![version as u8; 32],
        body: String::new(),
        template: None,
    }
}

#[test]
fn accepted_requests_name_the_policy_revision_active_when_read() {
    let acme = Some("acme");
    check(
        vec![
            Step::Tenant(tenant("acme", TenantState::Active, 1)),
            Step::Request(request("acme", "before-any", T0)),
            Step::Policy(policy_event(acme, "main", 1, PolicyState::Draft)),
            Step::Advance(Duration::from_secs(1)),
            Step::Request(request("acme", "draft-only", T0)),
            Step::Policy(policy_event(acme, "main", 1, PolicyState::Active)),
            Step::Advance(Duration::from_secs(1)),
            Step::Request(request("acme", "after-v1", T0)),
            Step::Policy(policy_event(None, "template", 1, PolicyState::Active)),
            Step::Policy(policy_event(acme, "main", 2, PolicyState::Active)),
            Step::Advance(Duration::from_secs(1)),
            Step::Request(request("acme", "after-v2", T0)),
            // Rollback: v1 activated again.
            Step::Policy(policy_event(acme, "main", 1, PolicyState::Active)),
            Step::Advance(Duration::from_secs(1)),
            Step::Request(request("acme", "after-rollback", T0)),
            // Retiring a revision that is not active changes nothing; retiring the active
            // one leaves none.
            Step::Policy(policy_event(acme, "main", 2, PolicyState::Retired)),
            Step::Advance(Duration::from_secs(1)),
            Step::Request(request("acme", "after-retiring-v2", T0)),
            Step::Policy(policy_event(acme, "main", 1, PolicyState::Retired)),
            Step::Advance(Duration::from_secs(1)),
            Step::Request(request("acme", "after-retiring-v1", T0)),
        ],
        expect![[r#"
            accepted before-any (tenant revision 1)
            accepted draft-only (tenant revision 1)
            accepted after-v1 (tenant revision 1) under main@v1
            accepted after-v2 (tenant revision 1) under main@v2
            accepted after-rollback (tenant revision 1) under main@v1
            accepted after-retiring-v2 (tenant revision 1) under main@v1
            accepted after-retiring-v1 (tenant revision 1)
        "#]],
    );
}

/// A request id is answered once: the same question again (as sent, or signed again later) is
/// a retry whatever has changed since (tenant state, clock, limits), another question under
/// the id a conflict; rejections are answers too; neither a retry nor a conflict is
/// remembered in place of the answer.
#[test]
fn a_request_id_is_answered_once_retries_and_conflicts() {
    let mut other_question = request("acme", "r1", T0);
    other_question.claims[0]
        .params
        .insert("threshold".into(), "21".into());
    sign(&mut other_question, &key(1));
    let mut no_nonce = request("acme", "r2", T0);
    no_nonce.nonce.clear();
    sign(&mut no_nonce, &key(1));
    check(
        vec![
            Step::Tenant(tenant("acme", TenantState::Active, 1)),
            Step::Request(request("acme", "r1", T0)),
            Step::Request(request("acme", "r1", T0)),
            Step::Request(other_question),
            Step::Request(no_nonce),
            Step::Request(request("acme", "r2", T0)),
            Step::Tenant(tenant("acme", TenantState::Suspended, 2)),
            // Ten minutes on (past the clock skew), the same bytes, and signed again.
            Step::Advance(Duration::from_secs(600)),
            Step::Request(request("acme", "r1", T0)),
            Step::Request(request("acme", "r1", T0 + 600_000)),
            Step::Request(request("acme", "r3", T0 + 600_000)),
            Step::Advance(Duration::from_secs(3600)),
            Step::Punctuate,
            Step::Tenant(tenant("acme", TenantState::Active, 3)),
            Step::Request(request("acme", "r1", T0 + 4_200_000)),
        ],
        expect![[r#"
            accepted r1 (tenant revision 1)
            rejected r1 duplicate — retry of request_id `r1`: its decision is delivered again
            rejected r1 conflict — request_id `r1` was answered for a different request; remembered until 1700003600000 ms
            rejected r2 missing_nonce — nonce is empty
            rejected r2 duplicate — retry of request_id `r2`: its decision is delivered again
            rejected r1 duplicate — retry of request_id `r1`: its decision is delivered again
            rejected r1 duplicate — retry of request_id `r1`: its decision is delivered again
            rejected r3 tenant_suspended — tenant is suspended
            accepted r1 (tenant revision 3)
        "#]],
    );
}

#[test]
fn a_region_refuses_subjects_it_does_not_serve_and_keeps_nothing_of_them() {
    use pavilion_runtime::topology::RegionSpec;
    use pavilion_runtime::{Resources, REGION};
    use pavilion_schemas::{DeadLetter, DeadLetterReason};

    let mut driver = TestDriver::new(TOPOLOGY, "tenancy", &StageKinds::new([&crate::KIND]));
    let mut resources = Resources::default();
    resources.insert(
        REGION,
        RegionSpec {
            name: "us".into(),
            jurisdictions: vec!["US".into()],
        },
    );
    driver.attach_resources(resources);
    driver.send("tenants", "acme", &tenant("acme", TenantState::Active, 1));
    let in_jurisdiction = |id: &str, jurisdiction: &str| {
        let mut r = request("acme", id, T0);
        r.subject_jurisdiction = jurisdiction.into();
        sign(&mut r, &key(1));
        r
    };
    // On its tenant's partition, and misplaced (which would otherwise be routed, a copy).
    for out in [
        driver.send("requests", "acme", &in_jurisdiction("eu-subject", "DE")),
        driver.send("requests", "other", &in_jurisdiction("eu-misplaced", "FR")),
    ] {
        assert_eq!(out.len(), 1, "one dead letter and nothing else");
        assert_eq!(out[0].topic, "dlq");
        let letter: DeadLetter = Registry::builtin().decode(&out[0].value).unwrap();
        assert_eq!(letter.reason, DeadLetterReason::NotServed);
        assert_eq!((letter.original_key, letter.original_value), (None, None));
        assert_eq!(letter.detail, "region us does not serve the subject's jurisdiction: send the request to the region that does");
    }
    // A subdivision is served where its country is.
    let out = driver.send("requests", "acme", &in_jurisdiction("us-subject", "US-CA"));
    assert_eq!(
        line(&out[0].topic, &out[0].value),
        "accepted us-subject (tenant revision 1)\n"
    );
}

#[test]
fn tenant_records_from_every_region_apply_by_version_in_any_order() {
    use pavilion_schemas::ControlVersion;
    let stamped = |state, revision, region: &str, hlc| Tenant {
        stamp: Some(ControlVersion {
            region: region.into(),
            home: "eu".into(),
            epoch: 0,
            hlc,
        }),
        ..tenant("acme", state, revision)
    };
    // Written concurrently: suspended away from home (later clock), activated at home. The
    // revisions say the opposite; the stamps decide.
    let away = || stamped(TenantState::Suspended, 2, "us", 20);
    let home = || stamped(TenantState::Active, 3, "eu", 10);
    for steps in [[away(), home()], [home(), away()]] {
        let [first, second] = steps;
        check(
            vec![
                Step::Tenant(first),
                Step::Tenant(second),
                Step::Request(request("acme", "r", T0)),
                // An unstamped record (a one-cluster tool) is older than any stamped one.
                Step::Tenant(tenant("acme", TenantState::Active, 9)),
                Step::Request(request("acme", "r2", T0)),
            ],
            expect![[r#"
                rejected r tenant_suspended — tenant is suspended
                rejected r2 tenant_suspended — tenant is suspended
            "#]],
        );
    }
}
