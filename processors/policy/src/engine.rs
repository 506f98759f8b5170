//! Compiling a policy to a Cedar policy set and evaluating a request against it, claim by
//! claim. Each tenant's policy is its own set, so a decision evaluates only that tenant's
//! rules.

use std::collections::BTreeSet;
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, Policy, PolicyId, PolicySet, Request,
    RestrictedExpression,
};
use pavilion_schemas::{
    ClaimPlan, PolicyEffect, PolicyRef, ResponseFormat, ResponseTemplate, VerificationRequest,
};

use crate::document::{Finding, PolicySpec};

/// The Cedar schema requests are evaluated under; `pavilion policy check` validates rules
/// against it.
pub const CEDAR_SCHEMA: &str = r#"
entity Tenant;
entity Claim;
action "verify" appliesTo {
  principal: [Tenant],
  resource: [Claim],
  context: {
    purpose: String,
    subject_region: String,
    consent: Bool,
    hour_utc: Long,
    threshold: Long,
    tenant_regions: Set<String>,
  }
};
"#;

/// Rule name used when a claim is denied because no permit rule matched.
pub const DEFAULT_DENY: &str = "default-deny";

/// A policy ready to evaluate.
pub struct CompiledPolicy {
    /// The revision (of the tenant document) it was compiled from.
    pub reference: PolicyRef,
    /// The effective document (template applied).
    pub spec: PolicySpec,
    policies: PolicySet,
}

/// Byte offset → index of the rule text it belongs to, for messages.
fn line_in(rules: &str, offset: usize) -> usize {
    rules[..offset.min(rules.len())].matches('\n').count()
}

/// Parses Cedar rules, naming each rule by its `@id` annotation (or its line). `first_line`
/// is the file line of the rules' first line, for findings.
pub fn parse_rules(
    rules: &str,
    first_line: usize,
) -> Result<Vec<(String, usize, Policy)>, Vec<Finding>> {
    let parsed = PolicySet::from_str(rules).map_err(|errors| {
        use miette::Diagnostic;
        errors
            .iter()
            .map(|e| {
                let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
                Finding::error(
                    offset.map(|o| first_line + line_in(rules, o)),
                    format!("cedar: {e}"),
                )
            })
            .collect::<Vec<_>>()
    })?;
    let mut named = Vec::new();
    let mut seen = BTreeSet::new();
    let mut findings = Vec::new();
    let mut search_from = 0;
    let mut policies: Vec<&Policy> = parsed.policies().collect();
    // PolicySet ids are `policy0`, `policy1`, … in source order.
    policies.sort_by_key(|p| {
        p.id()
            .to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(0)
    });
    for policy in policies {
        let text = policy.to_string();
        let offset = rules[search_from..]
            .find(text.lines().next().unwrap_or_default().trim())
            .map_or(search_from, |o| o + search_from);
        search_from = offset + 1;
        let line = first_line + line_in(rules, offset);
        let name = policy
            .annotation("id")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("rule-at-line-{line}"));
        if !seen.insert(name.clone()) {
            findings.push(Finding::error(
                Some(line),
                format!("two rules are named `{name}`"),
            ));
        }
        named.push((name.clone(), line, policy.new_id(PolicyId::new(name))));
    }
    if findings.is_empty() {
        Ok(named)
    } else {
        Err(findings)
    }
}

impl CompiledPolicy {
    /// Compiles an effective document.
    pub fn compile(spec: PolicySpec, reference: PolicyRef) -> Result<CompiledPolicy, Vec<Finding>> {
        let mut policies = PolicySet::new();
        for (_, _, policy) in parse_rules(&spec.rules, 1)? {
            policies
                .add(policy)
                .map_err(|e| vec![Finding::error(None, format!("cedar: {e}"))])?;
        }
        Ok(CompiledPolicy {
            reference,
            spec,
            policies,
        })
    }

    /// Evaluates every claim of a request: Cedar decides permit or deny (forbid overrides
    /// permit, nothing permitted is denied), then the plan names the providers — only those in
    /// the tenant's allowed regions — the evidence and what may be disclosed.
    pub fn evaluate(
        &self,
        request: &VerificationRequest,
        tenant_regions: &[String],
        now_ms: i64,
    ) -> Evaluation {
        let authorizer = Authorizer::new();
        let principal = uid("Tenant", &request.tenant_id);
        let action = uid("Action", "verify");
        let mut plan = Vec::new();
        for (index, claim) in request.claims.iter().enumerate() {
            let threshold = claim
                .params
                .get("threshold")
                .and_then(|t| t.parse::<i64>().ok())
                .unwrap_or(0);
            let context = Context::from_pairs([
                (
                    "purpose".to_owned(),
                    RestrictedExpression::new_string(request.purpose.clone()),
                ),
                (
                    "subject_region".to_owned(),
                    RestrictedExpression::new_string(request.subject_jurisdiction.clone()),
                ),
                (
                    "consent".to_owned(),
                    RestrictedExpression::new_bool(request.consent_ref.is_some()),
                ),
                (
                    "hour_utc".to_owned(),
                    RestrictedExpression::new_long(now_ms.div_euclid(3_600_000).rem_euclid(24)),
                ),
                (
                    "threshold".to_owned(),
                    RestrictedExpression::new_long(threshold),
                ),
                (
                    "tenant_regions".to_owned(),
                    RestrictedExpression::new_set(
                        tenant_regions
                            .iter()
                            .map(|r| RestrictedExpression::new_string(r.clone())),
                    ),
                ),
            ])
            .expect("context keys are distinct");
            let cedar_request = Request::new(
                principal.clone(),
                action.clone(),
                uid("Claim", &claim.name),
                context,
                None,
            )
            .expect("requests are built without a schema");
            let response =
                authorizer.is_authorized(&cedar_request, &self.policies, &Entities::empty());
            let mut entry = ClaimPlan {
                claim_index: index as i32,
                claim_name: claim.name.clone(),
                effect: PolicyEffect::Deny,
                denying_rules: Vec::new(),
                providers: Vec::new(),
                evidence_required: Vec::new(),
                disclosable_attributes: Vec::new(),
                max_credential_age_ms: None,
            };
            match response.decision() {
                Decision::Deny => {
                    let mut rules: Vec<String> = response
                        .diagnostics()
                        .reason()
                        .map(ToString::to_string)
                        .collect();
                    if rules.is_empty() {
                        rules.push(DEFAULT_DENY.to_owned());
                    }
                    // A rule that fails to evaluate (e.g. a missing attribute) denies, visibly.
                    rules.extend(
                        response
                            .diagnostics()
                            .errors()
                            .map(|e| format!("error: {e}")),
                    );
                    entry.denying_rules = rules;
                }
                Decision::Allow => match self.spec.plan.get(&claim.name) {
                    None => entry.denying_rules = vec![format!("no-plan-for:{}", claim.name)],
                    Some(claim_plan) => {
                        entry.providers = claim_plan
                            .providers
                            .iter()
                            .filter(|p| tenant_regions.contains(&p.region))
                            .map(|p| p.id.clone())
                            .collect();
                        if entry.providers.is_empty() {
                            entry.denying_rules = vec!["no-provider-in-allowed-regions".to_owned()];
                        } else {
                            entry.effect = PolicyEffect::Permit;
                            entry.evidence_required = claim_plan.evidence.clone();
                            entry.disclosable_attributes = claim_plan.disclose.clone();
                            entry.max_credential_age_ms = claim_plan
                                .max_credential_age
                                .map(|age| age.as_millis() as i64);
                        }
                    }
                },
            }
            plan.push(entry);
        }
        let mut evaluation = Evaluation::from_plan(
            plan,
            self.spec
                .response_format
                .or(request.response_format)
                .unwrap_or(ResponseFormat::Json),
        );
        evaluation.response_template = self.spec.response.as_ref().map(|r| r.template());
        evaluation
    }
}

/// What a policy decided for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Permit if any claim is permitted.
    pub effect: PolicyEffect,
    /// Every rule that denied a claim, deduplicated.
    pub denying_rules: Vec<String>,
    /// Per claim.
    pub plan: Vec<ClaimPlan>,
    /// Response format.
    pub response_format: ResponseFormat,
    /// Payload shape.
    pub response_template: Option<ResponseTemplate>,
}

impl Evaluation {
    fn from_plan(plan: Vec<ClaimPlan>, response_format: ResponseFormat) -> Self {
        let effect = if plan.iter().any(|c| c.effect == PolicyEffect::Permit) {
            PolicyEffect::Permit
        } else {
            PolicyEffect::Deny
        };
        let denying_rules: BTreeSet<String> = plan
            .iter()
            .flat_map(|c| c.denying_rules.iter().cloned())
            .collect();
        Evaluation {
            effect,
            denying_rules: denying_rules.into_iter().collect(),
            plan,
            response_format,
            response_template: None,
        }
    }

    /// Every claim denied by one rule (no policy, or a policy that cannot be used).
    pub fn deny_all(request: &VerificationRequest, rule: &str) -> Self {
        let plan = request
            .claims
            .iter()
            .enumerate()
            .map(|(index, claim)| ClaimPlan {
                claim_index: index as i32,
                claim_name: claim.name.clone(),
                effect: PolicyEffect::Deny,
                denying_rules: vec![rule.to_owned()],
                providers: Vec::new(),
                evidence_required: Vec::new(),
                disclosable_attributes: Vec::new(),
                max_credential_age_ms: None,
            })
            .collect();
        Evaluation::from_plan(
            plan,
            request.response_format.unwrap_or(ResponseFormat::Json),
        )
    }
}

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(
        kind.parse().expect("valid type name"),
        cedar_policy::EntityId::new(id),
    )
}
