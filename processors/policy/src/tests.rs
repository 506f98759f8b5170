//! Policy as data: documents (a global store) and accepted requests stamped with a revision
//! in → outcomes out; and the checker's findings for a file. Which revision a request is
//! stamped with is tenancy's business (its tests cover activation order).

use std::collections::BTreeMap;

use expect_test::{expect, Expect};
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::StageKinds;
use pavilion_schemas::{
    AcceptedRequest, ClaimRequest, PolicyDocument, PolicyOutcome, PolicyRef, PolicyState, Registry,
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
  policies: { schema: pavilion.PolicyDocument, retention: forever }
  outcomes: { schema: pavilion.PolicyOutcome }
stages:
  policy:
    kind: policy
    inputs: [accepted]
    outputs: { outcomes: outcomes }
    globals: { documents: policies }
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

/// The revision a document is, as tenancy stamps it.
fn revision(d: &PolicyDocument) -> Option<PolicyRef> {
    Some(PolicyRef {
        policy_id: d.policy_id.clone(),
        version: d.version,
        content_hash: d.content_hash.clone(),
    })
}

fn accepted(
    id: &str,
    purpose: &str,
    claims: &[(&str, &str)],
    at: i64,
    policy: Option<PolicyRef>,
) -> AcceptedRequest {
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
        policy,
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
            Step::Doc(d) => {
                driver.send_global("policies", b"acme", Some(&d));
                continue;
            }
            Step::Req(r) => driver.send("accepted", &r.request.request_id.clone(), &r),
            Step::Raw(bytes) => {
                driver.send_global_raw("policies", b"acme", Some(&bytes));
                continue;
            }
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
fn each_request_is_evaluated_under_the_revision_it_was_accepted_under() {
    let v1 = document_event(&spec(V1), 1, PolicyState::Active, "ops", T0 + 10, None);
    let v2 = document_event(&v2(), 2, PolicyState::Active, "ops", T0 + 20, None);
    let mut changed = revision(&v1);
    if let Some(r) = changed.as_mut() {
        r.content_hash[0] ^= 1;
    }
    let both = [("age_over", "18"), ("account_verified", "")];
    check_stage(
        vec![
            Step::Req(accepted("r-none", "onboarding", &both, T0, None)),
            Step::Doc(v1.clone()),
            Step::Req(accepted(
                "r-v1",
                "onboarding",
                &both,
                T0 + 11,
                revision(&v1),
            )),
            Step::Req(accepted(
                "r-v1-minor",
                "onboarding",
                &[("age_over", "16")],
                T0 + 12,
                revision(&v1),
            )),
            Step::Doc(v2.clone()),
            Step::Req(accepted(
                "r-v2-marketing",
                "marketing",
                &both,
                T0 + 21,
                revision(&v2),
            )),
            // Read after v2 arrived, accepted under v1: the stamp decides, not arrival.
            Step::Req(accepted(
                "r-v1-read-late",
                "marketing",
                &both,
                T0 + 22,
                revision(&v1),
            )),
            Step::Req(accepted("r-changed", "onboarding", &both, T0 + 23, changed)),
        ],
        expect![[r#"
            r-none under none: Deny ["no-active-policy"] as Json
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
            r-v1-read-late under acme-main@v1: Deny ["default-deny", "no-provider-in-allowed-regions"] as Jwt
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["default-deny"]
              account_verified Deny providers=[] evidence=[] disclose=[] denied_by=["no-provider-in-allowed-regions"]
            r-changed under none: Deny ["policy-changed:acme-main@1"] as Json
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["policy-changed:acme-main@1"]
              account_verified Deny providers=[] evidence=[] disclose=[] denied_by=["policy-changed:acme-main@1"]
        "#]],
    );
}

#[test]
fn a_revision_missing_even_after_catching_up_is_a_dead_letter() {
    let v1 = document_event(&spec(V1), 1, PolicyState::Active, "ops", T0, None);
    check_stage(
        vec![Step::Req(accepted(
            "r-unknown-revision",
            "onboarding",
            &[("age_over", "18")],
            T0,
            revision(&v1),
        ))],
        expect![[r#"
            dead letter: policy acme-main@1 named by the accepted request is not on pavilion.policies
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
    let tenant_doc = document_event(
        &tenant,
        1,
        PolicyState::Active,
        "ops",
        T0,
        Some(template_ref),
    );
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
            Step::Doc(tenant_doc.clone()),
            // T0 is 22:13 UTC.
            Step::Req(accepted(
                "evening",
                "onboarding",
                &[("age_over", "21")],
                T0 + 1,
                revision(&tenant_doc),
            )),
            Step::Req(accepted(
                "small-hours",
                "onboarding",
                &[("age_over", "21")],
                T0 + 3 * 3_600_000,
                revision(&tenant_doc),
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
fn a_tampered_document_denies_and_garbage_is_skipped() {
    let v1 = spec(V1);
    let mut tampered = document_event(&v1, 1, PolicyState::Active, "ops", T0, None);
    tampered.body = tampered.body.replace("onboarding", "anything");
    check_stage(
        vec![
            Step::Raw(b"not a policy".to_vec()),
            Step::Doc(tampered.clone()),
            Step::Req(accepted(
                "r-tampered",
                "onboarding",
                &[("age_over", "18")],
                T0 + 1,
                revision(&tampered),
            )),
        ],
        expect![[r#"
            r-tampered under none: Deny ["policy-invalid:acme-main@1: body does not match its content hash"] as Json
              age_over Deny providers=[] evidence=[] disclose=[] denied_by=["policy-invalid:acme-main@1: body does not match its content hash"]
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
  residence:
    providers: [{ id: registry-eu, region: eu }]
    evidence: [bbs_disclosure]
    disclose: [residence, subject_ref]
  age_and_country:
    providers: [{ id: registry-eu, region: eu }]
    evidence: [zk_predicate, bbs_disclosure]
    disclose: [country]
  wallet_age:
    providers: [{ id: registry-eu, region: eu }]
    evidence: [credential, zk_predicate]
  old_members:
    providers: [{ id: registry-eu, region: eu }]
    evidence: [oprf_match]
    max_credential_age: 90d
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
        18: error: `residence`: bbs_disclosure evidence needs the attributes to reveal under `disclose` (e.g. `disclose: [country]`)
        22: error: `age_and_country`: one claim takes a zk_predicate or a bbs_disclosure, not both (ask for two claims)
        26: error: `wallet_age`: credential evidence comes from the holder, not from a provider's proof: it takes no zk_predicate or bbs_disclosure beside it (ask for two claims)
        29: error: `old_members`: max_credential_age applies to credential evidence, which this claim does not ask for
        33: error: `response.lifetime` is zero: every decision would be expired when issued
        33: error: `response.claim_names`: `account_verified` cannot be named `aud` (empty or a name the payload itself uses)
        33: error: `response.claim_names`: `age_over` and `credit_score` are both named `verified`
        33: warning: `response.claim_names` renames `credit_score`, which the plan does not answer
    "#]].assert_eq(&rendered);

    let syntax = check("policy: p\ntenant: t\nrules: |\n  permit(principal, action, resource)\n  when { context.purpose == };\n");
    let rendered: String = syntax.iter().map(|f| format!("{f}\n")).collect();
    expect![[r#"
        5: error: cedar: unexpected token `}`
    "#]]
    .assert_eq(&rendered);
}
