//! Policy documents, YAML with Cedar rules, as `pavilion policy check | test | push` read a
//! file and the policy stage reads a document's body off `pavilion.policies`.
//!
//! Input: the text of a file (UTF-8; other bytes are not a file the CLI reads).
//!
//! Asserts: nothing panics (check, parse, compile, template instantiation over
//! `examples/policies/age-verification.yaml`, evaluation of a request for every planned
//! claim); a document that parses has a canonical body that reads back, under its content
//! hash, to the same document; a document `policy check` finds no error in compiles (what
//! `policy test` and the stage do next); a body the stage accepts is its own canonical form's
//! document.
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pavilion_policy::check::check;
use pavilion_policy::document::{PolicySpec, Severity, SourceDocument};
use pavilion_policy::engine::CompiledPolicy;
use pavilion_schemas::{ClaimRequest, PolicyRef, VerificationRequest};
use sha2::{Digest, Sha256};

static TEMPLATE: LazyLock<PolicySpec> = LazyLock::new(|| {
    SourceDocument::parse(include_str!(
        "../../examples/policies/age-verification.yaml"
    ))
    .expect("the example template parses")
    .spec
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The stage's reading of a body: the canonical JSON under its hash.
    if let Ok(spec) = PolicySpec::from_body(text, &Sha256::digest(text)) {
        canonical_round_trip(&spec);
    }
    let findings = check(text);
    let errors = findings.iter().any(|f| f.severity == Severity::Error);
    let Ok(source) = SourceDocument::parse(text) else {
        assert!(errors, "a document that does not parse has an error");
        return;
    };
    let spec = source.spec;
    canonical_round_trip(&spec);
    let compiled = compile(spec.clone());
    assert!(
        errors || compiled.is_ok(),
        "`policy check` passed a document that does not compile: {:?}",
        compiled.err()
    );
    if let Ok(policy) = compiled {
        evaluate(&policy);
    }
    if let Ok(policy) = compile(spec.over(&TEMPLATE)) {
        evaluate(&policy);
    }
});

fn canonical_round_trip(spec: &PolicySpec) {
    let body = spec.canonical();
    assert_eq!(
        PolicySpec::from_body(&body, &spec.content_hash()).as_ref(),
        Ok(spec)
    );
}

fn compile(spec: PolicySpec) -> Result<CompiledPolicy, Vec<pavilion_policy::document::Finding>> {
    let reference = PolicyRef {
        policy_id: spec.policy.clone(),
        version: 1,
        content_hash: spec.content_hash(),
    };
    CompiledPolicy::compile(spec, reference)
}

/// Evaluates a request for every claim of the plan, and one the plan does not know.
fn evaluate(policy: &CompiledPolicy) {
    let claims = policy
        .spec
        .plan
        .keys()
        .map(String::as_str)
        .chain(["age_over"])
        .map(|name| ClaimRequest {
            name: name.to_owned(),
            params: BTreeMap::from([("threshold".to_owned(), "18".to_owned())]),
        })
        .collect::<Vec<_>>();
    let request = VerificationRequest {
        request_id: "r1".into(),
        tenant_id: policy.spec.tenant.clone().unwrap_or_default(),
        key_id: "k1".into(),
        signature: Vec::new(),
        signed_at: 1_767_268_800_000,
        nonce: "n1".into(),
        created_at: 1_767_268_800_000,
        claims,
        purpose: "onboarding".into(),
        subject_jurisdiction: "eu".into(),
        consent_ref: Some("consent".into()),
        subject_tokens: Vec::new(),
        response_format: None,
    };
    let evaluation = policy.evaluate(&request, &["eu".to_owned()], 1_767_268_800_000);
    assert_eq!(evaluation.plan.len(), request.claims.len());
}
