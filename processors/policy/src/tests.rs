//! Policy as data: documents and accepted requests in → outcomes out; and the checker's
//! findings for a file.

use std::collections::BTreeMap;

use expect_test::{expect, Expect};
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::StageKinds;
use pavilion_schemas::{
    AcceptedRequest, ClaimRequest, PolicyOutcome, PolicyRef, PolicyState, Registry,
    VerificationRequest,
};

use crate::check::check;
use crate::document::{document_event, PolicySpec, SourceDocument};

const TOPOLOGY: &str = "
application: t
dlq: dlq
topics:
  dlq: { schema: pavilion.DeadLetter }
  accepted: { schema: pavilion.AcceptedRequest }
  policies: { schema: pavilion.PolicyDocument }
  outcomes: { schema: pavilion.PolicyOutcome }
stages:
  policy:
    kind: policy
    inputs: [accepted, policies]
    outputs: { outcomes: outcomes }
    stores: [documents, active]
";

const T0: i64 = 1_700_000_000_000;

const V1: &str = r#"
policy: acme-main
tenant: acme
rules: |
  @id("onboarding-adults")
  permit(principal, action == Action::"verify", resource == Claim::"age_over")
  when { context.purpose == "onboarding" && context.threshold >= 18 };
  @id("accounts")
  permit(principal, action == Action::"verify", resource == Claim::"account_verified");
plan:
  age_over:
    providers: [{ id: registry-us, region: us }, { id: registry-eu, region: eu }]
    evidence: [zk_predicate]
    disclose: [age_over]
  account_verified:
    providers: [{ id: bank-us, region: us }]
    evidence: [oprf_match, provider_signature]
response_format: jwt
"#;

fn spec(yaml: &str) -> PolicySpec {
    SourceDocument::parse(yaml)
        .unwrap_or_else(|f| panic!("{f}"))
        .spec
}

fn v2() -> PolicySpec {
    let mut s = spec(V1);
    s.rules += "@id(\"no-marketing\")\nforbid(principal, action, resource) when { context.purpose == \"marketing\" };\n";
    s
}

fn accepted(id: &str, purpose: &str, claims: &[(&str, &str)], at: i64) -> AcceptedRequest {
    AcceptedRequest {
        request: VerificationRequest {
            request_id: id.into(),
            tenant_id: "acme".into(),
            key_id: "k1".into(),
            signature: vec![0; 64],
            signed_at: at,
            nonce: "n".into(),
            created_at: at,
            claims: claims
                .iter()
                .map(|(name, threshold)| ClaimRequest {
                    name: (*name).into(),
                    params: if threshold.is_empty() {
                        BTreeMap::new()
                    } else {
                        BTreeMap::from([("threshold".into(), (*threshold).into())])
                    },
                })
                .collect(),
            purpose: purpose.into(),
            subject_jurisdiction: "eu".into(),
            consent_ref: None,
            subject_tokens: Vec::new(),
            response_format: None,
        },
        tenant_revision: 1,
        tenant_allowed_regions: vec!["eu".into()],
        accepted_at: at,
    }
}

enum Step {
    Doc(pavilion_schemas::PolicyDocument),
    Req(AcceptedRequest),
    Raw(Vec<u8>),
}

fn check_stage(steps: Vec<Step>, expect_out: Expect) {
    let mut driver = TestDriver::new(TOPOLOGY, "policy", &StageKinds::new([&crate::KIND]));
    let registry = Registry::builtin();
    let mut rendered = String::new();
    for step in steps {
        let out = match step {
            Step::Doc(d) => driver.send("policies", "acme", &d),
            Step::Req(r) => driver.send("accepted", "acme", &r),
            Step::Raw(bytes) => driver.send_raw("policies", b"acme", &bytes),
        };
        for record in out {
            if record.topic == "dlq" {
                let d: pavilion_schemas::DeadLetter = registry.decode(&record.value).unwrap();
                rendered += &format!("dead letter: {}\n", d.detail);
                continue;
            }
            let o: PolicyOutcome = registry.decode(&record.value).unwrap();
            let policy = o.policy.map_or("none".to_owned(), |p| {
                format!("{}@v{}", p.policy_id, p.version)
            });
            rendered += &format!(
                "{} under {policy}: {:?} {:?} as {:?}\n",
                o.request.request_id, o.effect, o.denying_rules, o.response_format
            );
            if let Some(t) = o.response_template {
                rendered += &format!(
                    "  response: aud={:?} lifetime_ms={:?} names={:?} evidence={}\n",
                    t.audience, t.lifetime_ms, t.claim_names, t.evidence
                );
            }
            for c in o.plan {
                rendered += &format!(
                    "  {} {:?} providers={:?} evidence={:?} disclose={:?} denied_by={:?}\n",
                    c.claim_name,
                    c.effect,
                    c.providers,
                    c.evidence_required,
                    c.disclosable_attributes,
                    c.denying_rules
                );
            }
        }
    }
    expect_out.assert_eq(&rendered);
}

#[test]
fn versions_activation_rollback_and_the_version_active_at_acceptance() {
    let v1 = spec(V1);
    let v2 = v2();
    let both = [("age_over", "18"), ("account_verified", "")];
    check_stage(
        vec![
            Step::Req(accepted("r-none", "onboarding", &both, T0)),
            Step::Doc(document_event(&v1, 1, PolicyState::Draft, "ops", T0, None)),
            Step::Req(accepted("r-draft-only", "onboarding", &both, T0 + 1)),
            Step::Doc(document_event(
                &v1,
                1,
                PolicyState::Active,
                "ops",
                T0 + 10,
                None,
            )),
            Step::Req(accepted("r-v1", "onboarding", &both, T0 + 11)),
            Step::Req(accepted(
                "r-v1-minor",
                "onboarding",
                &[("age_over", "16")],
                T0 + 12,
            )),
            Step::Doc(document_event(
                &v2,
                2,
                PolicyState::Active,
                "ops",
                T0 + 20,
                None,
            )),
            Step::Req(accepted("r-v2-marketing", "marketing", &both, T0 + 21)),
            Step::Req(accepted("r-late-from-v1-time", "marketing", &both, T0 + 15)),
            Step::Doc(document_event(
                &v1,
                1,
                PolicyState::Active,
                "ops",
                T0 + 30,
                None,
            )),
            Step::Req(accepted(
                "r-rolled-back",
                "marketing",
                &[("account_verified", "")],
                T0 + 31,
            )),
            Step::Doc(document_event(
                &v1,
                1,
                PolicyState::Retired,
                "ops",
                T0 + 40,
                None,
            )),
            Step::Req(accepted("r-retired", "onboarding", &both, T0 + 41)),
        ],
        expect![[r#"
            r-none under none: Deny ["no-active-policy"] as Json
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["no-active-policy"]
              account_verified Deny providers=[] evidence=[] disclose=[] denied_by=["no-active-policy"]
            r-draft-only under none: Deny ["no-active-policy"] as Json
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["no-active-policy"]
              account_verified Deny providers=[] evidence=[] disclose=[] denied_by=["no-active-policy"]
            r-v1 under acme-main@v1: Permit ["no-provider-in-allowed-regions"] as Jwt
              age_over Permit providers=["registry-eu"] evidence=[ZkPredicate] disclose=["age_over"] denied_by=[]
              account_verified Deny providers=[] evidence=[] disclose=[] denied_by=["no-provider-in-allowed-regions"]
            r-v1-minor under acme-main@v1: Deny ["default-deny"] as Jwt
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["default-deny"]
            r-v2-marketing under acme-main@v2: Deny ["no-marketing"] as Jwt
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["no-marketing"]
              account_verified Deny providers=[] evidence=[] disclose=[] denied_by=["no-marketing"]
            r-late-from-v1-time under acme-main@v1: Deny ["default-deny", "no-provider-in-allowed-regions"] as Jwt
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["default-deny"]
              account_verified Deny providers=[] evidence=[] disclose=[] denied_by=["no-provider-in-allowed-regions"]
            r-rolled-back under acme-main@v1: Deny ["no-provider-in-allowed-regions"] as Jwt
              account_verified Deny providers=[] evidence=[] disclose=[] denied_by=["no-provider-in-allowed-regions"]
            r-retired under none: Deny ["no-active-policy"] as Json
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["no-active-policy"]
              account_verified Deny providers=[] evidence=[] disclose=[] denied_by=["no-active-policy"]
        "#]],
    );
}

#[test]
fn templates_are_instantiated_and_overridden() {
    let template = spec(
        r#"
policy: age-verification
rules: |
  @id("adults")
  permit(principal, action == Action::"verify", resource == Claim::"age_over") when { context.threshold >= 18 };
plan:
  age_over:
    providers: [{ id: registry-eu, region: eu }]
    evidence: [zk_predicate]
response_format: vc_jose
response:
  audience: https://age.example
  lifetime: 5m
  claim_names: { age_over: age_over_18 }
"#,
    );
    let tenant = spec(
        r#"
policy: acme-age
tenant: acme
template: age-verification
rules: |
  @id("not-at-night")
  forbid(principal, action, resource) when { context.hour_utc < 6 };
plan:
  age_over:
    providers: [{ id: bank-eu, region: eu }, { id: registry-eu, region: eu }]
    evidence: [zk_predicate, provider_signature]
    disclose: [age_over]
response:
  lifetime: 1m
  evidence: false
"#,
    );
    let template_ref = PolicyRef {
        policy_id: "age-verification".into(),
        version: 1,
        content_hash: template.content_hash(),
    };
    check_stage(
        vec![
            Step::Doc(document_event(
                &template,
                1,
                PolicyState::Active,
                "ops",
                T0,
                None,
            )),
            Step::Doc(document_event(
                &tenant,
                1,
                PolicyState::Active,
                "ops",
                T0,
                Some(template_ref),
            )),
            // T0 is 22:13 UTC.
            Step::Req(accepted(
                "evening",
                "onboarding",
                &[("age_over", "21")],
                T0 + 1,
            )),
            Step::Req(accepted(
                "small-hours",
                "onboarding",
                &[("age_over", "21")],
                T0 + 3 * 3_600_000,
            )),
        ],
        expect![[r#"
            evening under acme-age@v1: Permit [] as VcJose
              response: aud=Some("https://age.example") lifetime_ms=Some(60000) names={"age_over": "age_over_18"} evidence=false
              age_over Permit providers=["bank-eu", "registry-eu"] evidence=[ZkPredicate, ProviderSignature] disclose=["age_over"] denied_by=[]
            small-hours under acme-age@v1: Deny ["not-at-night"] as VcJose
              response: aud=Some("https://age.example") lifetime_ms=Some(60000) names={"age_over": "age_over_18"} evidence=false
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["not-at-night"]
        "#]],
    );
}

#[test]
fn tampered_and_conflicting_documents_are_dead_lettered() {
    let v1 = spec(V1);
    let mut tampered = document_event(&v1, 1, PolicyState::Active, "ops", T0, None);
    tampered.body = tampered.body.replace("onboarding", "anything");
    let mut other = v2();
    other.description = Some("same version, other content".into());
    check_stage(
        vec![
            Step::Doc(tampered),
            Step::Doc(document_event(&v1, 1, PolicyState::Draft, "ops", T0, None)),
            Step::Doc(document_event(
                &other,
                1,
                PolicyState::Draft,
                "ops",
                T0,
                None,
            )),
            Step::Raw(b"not a policy".to_vec()),
        ],
        expect![[r#"
            dead letter: policy acme-main v1: body does not match its content hash
            dead letter: policy acme-main v1 already exists with other content; versions are immutable
            dead letter: not a single-object-encoded Avro record (expected C3 01 + 8-byte fingerprint, got 12 bytes starting 6e6f74206120706f6c69)
        "#]],
    );
}

#[test]
fn check_reports_every_finding_with_its_line() {
    let findings = check(
        r#"policy: acme-main
tenant: acme
rules: |
  @id("accounts")
  permit(principal, action == Action::"verify", resource == Claim::"account_verified");
  @id("everything-forbidden")
  forbid(principal, action, resource == Claim::"account_verified");
  @id("scores")
  permit(principal, action == Action::"verify", resource == Claim::"credit_score");
  @id("typo")
  permit(principal, action, resource) when { context.purpos == "x" };
plan:
  account_verified:
    providers: []
  age_over:
    providers: [{ id: registry-eu, region: eu }]
    evidence: [zk_predicate]
response:
  lifetime: 0s
  claim_names: { account_verified: aud, age_over: verified, credit_score: verified }
"#,
    );
    let rendered: String = findings.iter().map(|f| format!("{f}\n")).collect();
    expect![[r#"
        4: error: rule `accounts` is shadowed by forbid `everything-forbidden` (line 6): it can never permit anything
        8: warning: rule `scores` permits `credit_score`, which the plan does not answer: it can never take effect
        10: error: cedar: for policy `typo`, attribute `purpos` in context for Action::"verify" not found
        13: error: plan for `account_verified` names no provider
        13: warning: plan for `account_verified` requires no evidence
        18: error: `response.lifetime` is zero: every decision would be expired when issued
        18: error: `response.claim_names`: `account_verified` cannot be named `aud` (empty or a name the payload itself uses)
        18: error: `response.claim_names`: `age_over` and `credit_score` are both named `verified`
        18: warning: `response.claim_names` renames `credit_score`, which the plan does not answer
    "#]].assert_eq(&rendered);

    let syntax = check("policy: p\ntenant: t\nrules: |\n  permit(principal, action, resource)\n  when { context.purpose == };\n");
    let rendered: String = syntax.iter().map(|f| format!("{f}\n")).collect();
    expect![[r#"
        5: error: cedar: unexpected token `}`
    "#]]
    .assert_eq(&rendered);
}
