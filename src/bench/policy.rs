//! `pavilion bench policy`: policy evaluations/s for one tenant's policy against the bare Cedar
//! authorizer on the same rules, and against one unindexed set of every tenant's rules.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::write_result;

/// Options of the policy benchmark.
#[derive(Args)]
pub struct PolicyArgs {
    /// Rules in the tenant's policy.
    #[arg(long, default_value_t = 50)]
    pub rules: usize,
    /// Tenants in the unindexed comparison (one policy set holding every tenant's rules).
    #[arg(long, default_value_t = 14)]
    pub tenants: usize,
    /// Evaluations per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub evaluations: usize,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/policy.json")]
    pub out: std::path::PathBuf,
}

/// A policy of `rules` rules for `tenant`: permits for claims with conditions, and forbids on
/// purposes, so evaluation has real work on both sides.
pub(crate) fn policy_rules(tenant: &str, rules: usize, scoped: bool) -> String {
    let principal = if scoped {
        format!("principal == Tenant::\"{tenant}\"")
    } else {
        "principal".to_owned()
    };
    (0..rules)
        .map(|i| {
            if i % 2 == 0 {
                format!(
                    "@id(\"{tenant}-permit-{i}\")\npermit({principal}, action == Action::\"verify\", resource == Claim::\"claim_{}\") when {{ context.threshold >= {} && context.subject_region == \"eu\" }};\n",
                    i / 2,
                    i % 21
                )
            } else {
                format!(
                    "@id(\"{tenant}-forbid-{i}\")\nforbid({principal}, action, resource) when {{ context.purpose == \"purpose_{i}\" && !context.consent }};\n"
                )
            }
        })
        .collect()
}

pub fn policy(args: PolicyArgs) -> Result<ExitCode> {
    use pavilion_policy::document::{ClaimPlanSpec, PolicySpec, ProviderSpec};
    use pavilion_policy::engine::CompiledPolicy;
    use pavilion_schemas::{ClaimRequest, PolicyRef, VerificationRequest};
    use std::str::FromStr;

    let claims = args.rules.div_ceil(2);
    let plan = (0..claims)
        .map(|i| {
            let providers = vec![ProviderSpec {
                id: format!("p{i}"),
                region: "eu".into(),
            }];
            (
                format!("claim_{i}"),
                ClaimPlanSpec {
                    providers,
                    evidence: Vec::new(),
                    disclose: Vec::new(),
                    max_credential_age: None,
                },
            )
        })
        .collect();
    let spec = PolicySpec {
        policy: "bench".into(),
        tenant: Some("t0".into()),
        template: None,
        description: None,
        rules: policy_rules("t0", args.rules, false),
        plan,
        response_format: None,
        response: None,
    };
    let reference = PolicyRef {
        policy_id: "bench".into(),
        version: 1,
        content_hash: spec.content_hash(),
    };
    let compiled =
        CompiledPolicy::compile(spec.clone(), reference).map_err(|f| anyhow::anyhow!("{f:?}"))?;
    let request = |i: usize| VerificationRequest {
        request_id: format!("r{i}"),
        tenant_id: "t0".into(),
        key_id: String::new(),
        signature: Vec::new(),
        signed_at: 0,
        nonce: String::new(),
        created_at: 0,
        claims: vec![ClaimRequest {
            name: format!("claim_{}", i % claims),
            params: [("threshold".to_owned(), (i % 30).to_string())].into(),
        }],
        purpose: format!("purpose_{}", i % 60),
        subject_jurisdiction: "eu".into(),
        consent_ref: None,
        subject_tokens: Vec::new(),
        response_format: None,
    };
    let requests: Vec<VerificationRequest> = (0..1000).map(request).collect();
    let regions = vec!["eu".to_owned()];
    let time = |f: &mut dyn FnMut(usize)| {
        let start = Instant::now();
        for i in 0..args.evaluations {
            f(i);
        }
        args.evaluations as f64 / start.elapsed().as_secs_f64()
    };
    let mut permits = 0usize;
    let engine_rate = time(&mut |i| {
        let e = compiled.evaluate(&requests[i % requests.len()], &regions, 1_700_000_000_000);
        permits += usize::from(e.effect == pavilion_schemas::PolicyEffect::Permit);
    });

    // Baselines: the bare Cedar authorizer on the same rules, and on one set holding every
    // tenant's rules (what evaluating without a per-tenant index costs).
    let raw = |set: &cedar_policy::PolicySet, tenant: &str| -> Result<f64> {
        let authorizer = cedar_policy::Authorizer::new();
        let entities = cedar_policy::Entities::empty();
        let principal = cedar_policy::EntityUid::from_str(&format!("Tenant::\"{tenant}\""))?;
        let action = cedar_policy::EntityUid::from_str("Action::\"verify\"")?;
        let prepared: Vec<cedar_policy::Request> = (0..1000)
            .map(|i| {
                let context = cedar_policy::Context::from_pairs([
                    (
                        "purpose".to_owned(),
                        cedar_policy::RestrictedExpression::new_string(format!(
                            "purpose_{}",
                            i % 60
                        )),
                    ),
                    (
                        "subject_region".to_owned(),
                        cedar_policy::RestrictedExpression::new_string("eu".into()),
                    ),
                    (
                        "consent".to_owned(),
                        cedar_policy::RestrictedExpression::new_bool(false),
                    ),
                    (
                        "threshold".to_owned(),
                        cedar_policy::RestrictedExpression::new_long((i % 30) as i64),
                    ),
                ])
                .expect("distinct keys");
                let resource =
                    cedar_policy::EntityUid::from_str(&format!("Claim::\"claim_{}\"", i % claims))
                        .expect("uid");
                cedar_policy::Request::new(
                    principal.clone(),
                    action.clone(),
                    resource,
                    context,
                    None,
                )
                .expect("request")
            })
            .collect();
        let start = Instant::now();
        for i in 0..args.evaluations {
            std::hint::black_box(authorizer.is_authorized(
                &prepared[i % prepared.len()],
                set,
                &entities,
            ));
        }
        Ok(args.evaluations as f64 / start.elapsed().as_secs_f64())
    };
    let own: cedar_policy::PolicySet = policy_rules("t0", args.rules, false)
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let raw_rate = raw(&own, "t0")?;
    let all_text: String = (0..args.tenants)
        .map(|t| policy_rules(&format!("t{t}"), args.rules, true))
        .collect();
    let all: cedar_policy::PolicySet = all_text.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let unindexed_rate = raw(&all, "t0")?;

    println!(
        "policy of {} rules, {} evaluations each, one thread:",
        args.rules, args.evaluations
    );
    println!("  pavilion engine (Cedar + plan)      {engine_rate:>10.0} evaluations/s  {:>7.1} µs  ({permits} permits)", 1e6 / engine_rate);
    println!("  bare Cedar, tenant's own set        {raw_rate:>10.0} evaluations/s  {:>7.1} µs  engine/bare {:.2}", 1e6 / raw_rate, engine_rate / raw_rate);
    println!(
        "  bare Cedar, one set of {} rules     {unindexed_rate:>10.0} evaluations/s  {:>7.1} µs  indexed/unindexed {:.1}×",
        args.rules * args.tenants,
        1e6 / unindexed_rate,
        raw_rate / unindexed_rate
    );
    let json = json!({
        "benchmark": "policy",
        "rules": args.rules,
        "evaluations": args.evaluations,
        "engine_per_s": engine_rate.round(),
        "bare_cedar_per_s": raw_rate.round(),
        "engine_over_bare": (engine_rate / raw_rate * 1000.0).round() / 1000.0,
        "unindexed_rules": args.rules * args.tenants,
        "unindexed_per_s": unindexed_rate.round(),
        "indexed_over_unindexed": (raw_rate / unindexed_rate * 10.0).round() / 10.0,
    });
    write_result(&args.out, &json)?;
    Ok(ExitCode::SUCCESS)
}
