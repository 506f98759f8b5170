//! `pavilion policy check`: everything wrong with a policy file, with lines — parse errors,
//! Cedar schema violations, plan mistakes, and rules that can never matter.

use cedar_policy::{Policy, PolicySet, Schema, ValidationMode, Validator};
use serde_json::Value;

use pavilion_schemas::{disclosed_attributes, EvidenceKind};

use crate::document::{Finding, ResponseSpec, SourceDocument};
use crate::engine::{parse_rules, CEDAR_SCHEMA};

/// Checks a policy file. Templates are checked on their own; a tenant policy's own rules too.
pub fn check(yaml: &str) -> Vec<Finding> {
    let source = match SourceDocument::parse(yaml) {
        Ok(s) => s,
        Err(f) => return vec![f],
    };
    let spec = &source.spec;
    let mut findings = Vec::new();
    if spec.policy.is_empty() || spec.policy.contains('\0') {
        findings.push(Finding::error(Some(1), "`policy` must be a non-empty id"));
    }
    if spec.tenant.is_none() && spec.template.is_some() {
        findings.push(Finding::error(
            Some(1),
            "a template (no `tenant`) cannot itself use a `template`",
        ));
    }
    for (claim, plan) in &spec.plan {
        let line = source.plan_lines.get(claim).copied();
        if plan.providers.is_empty() {
            findings.push(Finding::error(
                line,
                format!("plan for `{claim}` names no provider"),
            ));
        }
        if plan.evidence.is_empty() {
            findings.push(Finding::warning(
                line,
                format!("plan for `{claim}` requires no evidence"),
            ));
        }
    }
    if let Some(response) = &spec.response {
        check_response(response, spec, source.response_line, &mut findings);
    }
    let rules = match parse_rules(&spec.rules, source.rules_line) {
        Ok(r) => r,
        Err(mut f) => {
            findings.append(&mut f);
            return sorted(findings);
        }
    };
    let (schema, _) =
        Schema::from_cedarschema_str(CEDAR_SCHEMA).expect("the built-in schema parses");
    let mut set = PolicySet::new();
    for (_, _, policy) in &rules {
        set.add(policy.clone()).ok();
    }
    let validation = Validator::new(schema).validate(&set, ValidationMode::Strict);
    for error in validation.validation_errors() {
        let line = rules
            .iter()
            .find(|(name, _, _)| *name == error.policy_id().to_string())
            .map(|(_, line, _)| *line);
        findings.push(Finding::error(line, format!("cedar: {error}")));
    }

    let scopes: Vec<Scope> = rules
        .iter()
        .map(|(name, line, policy)| Scope::of(name, *line, policy))
        .collect();
    for permit in scopes.iter().filter(|s| s.permit) {
        if let Some(claim) = &permit.claim {
            if !spec.plan.contains_key(claim) && spec.template.is_none() {
                findings.push(Finding::warning(
                    Some(permit.line),
                    format!("rule `{}` permits `{claim}`, which the plan does not answer: it can never take effect", permit.name),
                ));
            }
        }
        for forbid in scopes
            .iter()
            .filter(|s| !s.permit && s.unconditional && s.covers(permit))
        {
            let what = if permit.unconditional && permit.same_scope(forbid) {
                "conflicts with"
            } else {
                "is shadowed by"
            };
            findings.push(Finding::error(
                Some(permit.line),
                format!(
                    "rule `{}` {what} forbid `{}` (line {}): it can never permit anything",
                    permit.name, forbid.name, forbid.line
                ),
            ));
        }
    }
    for (claim, plan) in &spec.plan {
        let line = source.plan_lines.get(claim).copied();
        let has = |k: EvidenceKind| plan.evidence.contains(&k);
        if has(EvidenceKind::BbsDisclosure) && has(EvidenceKind::ZkPredicate) {
            findings.push(Finding::error(
                line,
                format!("`{claim}`: one claim takes a zk_predicate or a bbs_disclosure, not both (ask for two claims)"),
            ));
        }
        if has(EvidenceKind::Credential)
            && (has(EvidenceKind::BbsDisclosure) || has(EvidenceKind::ZkPredicate))
        {
            findings.push(Finding::error(
                line,
                format!("`{claim}`: credential evidence comes from the holder, not from a provider's proof: it takes no zk_predicate or bbs_disclosure beside it (ask for two claims)"),
            ));
        }
        if plan.max_credential_age.is_some() && !has(EvidenceKind::Credential) {
            findings.push(Finding::error(
                line,
                format!("`{claim}`: max_credential_age applies to credential evidence, which this claim does not ask for"),
            ));
        }
        let attributes = disclosed_attributes(claim, &plan.disclose).next().is_some();
        if has(EvidenceKind::BbsDisclosure) && !attributes {
            findings.push(Finding::error(
                line,
                format!("`{claim}`: bbs_disclosure evidence needs the attributes to reveal under `disclose` (e.g. `disclose: [country]`)"),
            ));
        }
    }
    if spec.template.is_none() {
        for (claim, line) in &source.plan_lines {
            let permitted = scopes
                .iter()
                .any(|s| s.permit && s.claim.as_ref().is_none_or(|c| c == claim));
            if !permitted {
                findings.push(Finding::warning(
                    Some(*line),
                    format!("no rule permits `{claim}`: it is always denied"),
                ));
            }
        }
    }
    sorted(findings)
}

/// Names the payload itself uses (JWT, SD-JWT and our own): an SD-JWT disclosure of a claim
/// renamed to one of them would overwrite that field once disclosed.
const RESERVED_PAYLOAD_NAMES: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "nonce",
    "cnf",
    "vct",
    "status",
    "_sd",
    "_sd_alg",
    "...",
    "response_schema",
    "policy",
    "claims",
    "rejection",
];

fn check_response(
    response: &ResponseSpec,
    spec: &crate::document::PolicySpec,
    line: Option<usize>,
    findings: &mut Vec<Finding>,
) {
    if response
        .audience
        .as_deref()
        .is_some_and(|a| a.trim().is_empty())
    {
        findings.push(Finding::error(line, "`response.audience` is empty"));
    }
    if response.lifetime.is_some_and(|l| l.is_zero()) {
        findings.push(Finding::error(
            line,
            "`response.lifetime` is zero: every decision would be expired when issued",
        ));
    }
    let mut seen = std::collections::BTreeMap::new();
    for (claim, name) in &response.claim_names {
        if name.is_empty() || RESERVED_PAYLOAD_NAMES.contains(&name.as_str()) {
            findings.push(Finding::error(
                line,
                format!("`response.claim_names`: `{claim}` cannot be named `{name}` (empty or a name the payload itself uses)"),
            ));
        }
        if let Some(other) = seen.insert(name, claim) {
            findings.push(Finding::error(
                line,
                format!("`response.claim_names`: `{other}` and `{claim}` are both named `{name}`"),
            ));
        }
        if spec.template.is_none() && !spec.plan.contains_key(claim) {
            findings.push(Finding::warning(
                line,
                format!("`response.claim_names` renames `{claim}`, which the plan does not answer"),
            ));
        }
    }
}

fn sorted(mut findings: Vec<Finding>) -> Vec<Finding> {
    findings.sort_by_key(|f| (f.line.unwrap_or(0), f.severity));
    findings
}

/// What a rule applies to, read from Cedar's JSON form of it.
struct Scope {
    name: String,
    line: usize,
    permit: bool,
    unconditional: bool,
    principal: Value,
    action: Value,
    resource: Value,
    /// `Claim::"x"` when the resource is exactly one claim.
    claim: Option<String>,
}

impl Scope {
    fn of(name: &str, line: usize, policy: &Policy) -> Scope {
        let json = policy.to_json().unwrap_or(Value::Null);
        let resource = json["resource"].clone();
        let claim = (resource["op"] == "==" && resource["entity"]["type"] == "Claim")
            .then(|| resource["entity"]["id"].as_str().map(str::to_owned))
            .flatten();
        Scope {
            name: name.to_owned(),
            line,
            permit: json["effect"] == "permit",
            unconditional: json["conditions"].as_array().is_none_or(Vec::is_empty),
            principal: json["principal"].clone(),
            action: json["action"].clone(),
            resource,
            claim,
        }
    }

    /// Whether every request this rule's scope matches is also matched by `other`'s scope.
    fn covers(&self, other: &Scope) -> bool {
        let part = |mine: &Value, theirs: &Value| mine["op"] == "All" || mine == theirs;
        part(&self.principal, &other.principal)
            && part(&self.action, &other.action)
            && part(&self.resource, &other.resource)
    }

    fn same_scope(&self, other: &Scope) -> bool {
        self.principal == other.principal
            && self.action == other.action
            && self.resource == other.resource
    }
}
