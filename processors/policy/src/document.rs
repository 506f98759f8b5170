//! A policy document as operators write it (YAML), its canonical form and content hash, and
//! template instantiation.

use std::collections::BTreeMap;
use std::fmt;

use pavilion_schemas::{EvidenceKind, PolicyRef, ResponseFormat, ResponseTemplate};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A policy: Cedar rules deciding *whether* each claim may be asked, and a verification plan
/// saying *how* a permitted claim is answered.
///
/// ```yaml
/// policy: acme-age            # id, unique per tenant
/// tenant: acme                # absent for a shared template
/// template: age-verification  # optional: the template this instantiates and overrides
/// rules: |
///   @id("adults-onboarding")
///   permit(principal, action == Action::"verify", resource == Claim::"age_over")
///   when { context.purpose == "onboarding" && context.threshold >= 18 };
/// plan:
///   age_over:
///     providers: [{ id: registry-eu, region: eu }]
///     evidence: [zk_predicate]
///     disclose: [age_over]
/// response_format: jwt
/// response:                   # optional: how the signed payload is shaped
///   audience: https://shop.example/age-gate
///   lifetime: 5m
///   claim_names: { age_over: age_over_18 }
///   evidence: false
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Policy id.
    pub policy: String,
    /// Owning tenant; `None` for a shared template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Template instantiated (its id, optionally `@version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Cedar permit/forbid rules; forbid overrides permit; no permit means deny.
    #[serde(default)]
    pub rules: String,
    /// Per claim: who answers and with what evidence.
    #[serde(default)]
    pub plan: BTreeMap<String, ClaimPlanSpec>,
    /// Response format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Shape of the signed payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseSpec>,
}

/// The `response:` section: how this tenant's decisions look. Every field is optional; a
/// tenant policy's fields override its template's, `claim_names` entry by entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// `aud` of the payload (default: the tenant id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// How long a decision may be relied on (default: the signing stage's `decision_ttl`).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub lifetime: Option<std::time::Duration>,
    /// Payload name of a claim, by the name tenants request it under.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claim_names: BTreeMap<String, String>,
    /// Whether the payload lists evidence references (default: yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<bool>,
}

impl ResponseSpec {
    /// This section over the template's.
    fn over(&self, template: &ResponseSpec) -> ResponseSpec {
        let mut claim_names = template.claim_names.clone();
        claim_names.extend(self.claim_names.clone());
        ResponseSpec {
            audience: self.audience.clone().or(template.audience.clone()),
            lifetime: self.lifetime.or(template.lifetime),
            claim_names,
            evidence: self.evidence.or(template.evidence),
        }
    }

    /// As the signing stage receives it.
    pub fn template(&self) -> ResponseTemplate {
        ResponseTemplate {
            audience: self.audience.clone(),
            lifetime_ms: self.lifetime.map(|d| d.as_millis() as i64),
            claim_names: self.claim_names.clone(),
            evidence: self.evidence.unwrap_or(true),
        }
    }
}

/// How one claim is answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimPlanSpec {
    /// Providers that may answer, in the order they are asked.
    pub providers: Vec<ProviderSpec>,
    /// Evidence the answer must carry.
    #[serde(default)]
    pub evidence: Vec<EvidenceKind>,
    /// Attributes the response may disclose.
    #[serde(default)]
    pub disclose: Vec<String>,
    /// With `credential` evidence: how long ago a presented credential may have been issued
    /// (e.g. `90d`); absent: any age while it is valid.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub max_credential_age: Option<std::time::Duration>,
}

/// A provider and the region its data lives in (data residency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Provider id.
    pub id: String,
    /// Region.
    pub region: String,
}

/// A problem found in a policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line in the YAML file, when known.
    pub line: Option<usize>,
    /// Whether it makes the document unusable.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Refused.
    Error,
    /// Allowed, but probably not what was meant.
    Warning,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.line {
            Some(line) => write!(f, "{line}: {severity}: {}", self.message),
            None => write!(f, "{severity}: {}", self.message),
        }
    }
}

impl Finding {
    pub(crate) fn error(line: Option<usize>, message: impl Into<String>) -> Self {
        Finding {
            line,
            severity: Severity::Error,
            message: message.into(),
        }
    }

    pub(crate) fn warning(line: Option<usize>, message: impl Into<String>) -> Self {
        Finding {
            line,
            severity: Severity::Warning,
            message: message.into(),
        }
    }
}

/// A parsed document and where its parts are in the file.
#[derive(Debug, Clone)]
pub struct SourceDocument {
    /// The document.
    pub spec: PolicySpec,
    /// Line where the Cedar text starts (its first line is this line).
    pub rules_line: usize,
    /// Line of each plan claim.
    pub plan_lines: BTreeMap<String, usize>,
    /// Line of the `response:` section.
    pub response_line: Option<usize>,
}

impl SourceDocument {
    /// Parses YAML, remembering lines for findings.
    pub fn parse(yaml: &str) -> Result<SourceDocument, Finding> {
        let options = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        let node = marked_yaml::parse_yaml_with_options(0, yaml, options)
            .map_err(|e| Finding::error(None, e.to_string()))?;
        let spec: PolicySpec = marked_yaml::from_node(&node)
            .map_err(|e| Finding::error(e.start_mark().map(|m| m.line()), e.to_string()))?;
        let map = node.as_mapping();
        let rules_line = map
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == "rules"))
            .map_or(1, |(key, _)| {
                let line = key.span().start().map_or(1, |m| m.line());
                // A block scalar (`rules: |`) starts on the next line.
                let text = yaml.lines().nth(line - 1).unwrap_or_default().trim_end();
                if text.ends_with('|')
                    || text.ends_with('>')
                    || text.ends_with("|-")
                    || text.ends_with(">-")
                {
                    line + 1
                } else {
                    line
                }
            });
        let plan_lines = map
            .and_then(|m| m.get_mapping("plan"))
            .map(|plan| {
                plan.iter()
                    .map(|(k, _)| {
                        (
                            k.as_str().to_owned(),
                            k.span().start().map_or(1, |m| m.line()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let response_line = map
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() == "response"))
            .and_then(|(key, _)| key.span().start().map(|m| m.line()));
        Ok(SourceDocument {
            spec,
            rules_line,
            plan_lines,
            response_line,
        })
    }
}

impl PolicySpec {
    /// Canonical JSON: fixed field order, sorted maps, no insignificant whitespace. Its SHA-256
    /// is the revision's content hash, recorded in every outcome.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("a policy serializes")
    }

    /// SHA-256 of [`PolicySpec::canonical`].
    pub fn content_hash(&self) -> Vec<u8> {
        Sha256::digest(self.canonical().as_bytes()).to_vec()
    }

    /// Parses the canonical body of a `PolicyDocument`, checking it against its hash.
    pub fn from_body(body: &str, content_hash: &[u8]) -> Result<PolicySpec, String> {
        if Sha256::digest(body.as_bytes()).as_slice() != content_hash {
            return Err("body does not match its content hash".into());
        }
        serde_json::from_str(body).map_err(|e| format!("body is not a policy document: {e}"))
    }

    /// This document over `template`: the template's rules then these, the template's plan
    /// with these claims replacing its entries, this format and response shape unless absent.
    pub fn over(&self, template: &PolicySpec) -> PolicySpec {
        let mut plan = template.plan.clone();
        plan.extend(self.plan.clone());
        PolicySpec {
            policy: self.policy.clone(),
            tenant: self.tenant.clone(),
            template: self.template.clone(),
            description: self.description.clone(),
            rules: format!("{}\n{}", template.rules, self.rules),
            plan,
            response_format: self.response_format.or(template.response_format),
            response: match (&self.response, &template.response) {
                (Some(own), Some(inherited)) => Some(own.over(inherited)),
                (own, inherited) => own.clone().or(inherited.clone()),
            },
        }
    }
}

/// The `PolicyDocument` event for a version of `spec` in `state`, made at `created_at`.
pub fn document_event(
    spec: &PolicySpec,
    version: i64,
    state: pavilion_schemas::PolicyState,
    author: &str,
    created_at: i64,
    template: Option<PolicyRef>,
) -> pavilion_schemas::PolicyDocument {
    pavilion_schemas::PolicyDocument {
        stamp: None,
        tenant_id: spec.tenant.clone(),
        policy_id: spec.policy.clone(),
        version,
        author: author.to_owned(),
        created_at,
        state,
        content_hash: spec.content_hash(),
        body: spec.canonical(),
        template,
    }
}
