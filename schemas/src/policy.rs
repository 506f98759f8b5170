//! Rust mirrors of the policy records: versioned documents and evaluation outcomes.

use serde::{Deserialize, Serialize};

use crate::{Event, ResponseFormat, VerificationRequest};

/// Lifecycle of a policy version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum PolicyState {
    Unknown,
    Draft,
    Active,
    Retired,
}

/// One content-addressed revision of a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// Policy id.
    pub policy_id: String,
    /// Version, from 1.
    pub version: i64,
    /// SHA-256 of the canonical document.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub content_hash: Vec<u8>,
}

/// `policy_document.avsc`: a policy version, or a lifecycle event of one (activation,
/// rollback, retirement) that repeats its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    /// Owning tenant; `None` for a shared template.
    pub tenant_id: Option<String>,
    /// Policy id.
    pub policy_id: String,
    /// Version.
    pub version: i64,
    /// Who made this event.
    pub author: String,
    /// When, ms.
    pub created_at: i64,
    /// The state this event puts the version in.
    pub state: PolicyState,
    /// SHA-256 of `body`.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub content_hash: Vec<u8>,
    /// Canonical JSON of the document.
    pub body: String,
    /// The template revision it instantiates.
    pub template: Option<PolicyRef>,
    /// Version stamp (several regions); `None` when written without one.
    #[serde(default)]
    pub stamp: Option<crate::ControlVersion>,
}

impl PolicyDocument {
    /// Where this record stands among the versions of its key (see [`crate::VersionOrder`]).
    pub fn order(&self) -> crate::VersionOrder {
        crate::VersionOrder::of(self.stamp.as_ref(), self.created_at)
    }
}

impl Event for PolicyDocument {
    const FULL_NAME: &'static str = "pavilion.PolicyDocument";
}

/// Permit or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum PolicyEffect {
    Unknown,
    Permit,
    Deny,
}

/// Evidence a claim's answer must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum EvidenceKind {
    Unknown,
    OprfMatch,
    ZkPredicate,
    ProviderSignature,
    BbsDisclosure,
    Credential,
}

/// The entries of a claim's `disclose` list that name attributes to reveal by a provider's
/// BBS proof: all but the claim itself (which makes the outcome disclosable in an SD-JWT) and
/// the names the signing stage and batch PSI give a meaning of their own.
pub fn disclosed_attributes<'a>(
    claim: &'a str,
    disclose: &'a [String],
) -> impl Iterator<Item = &'a String> + 'a {
    disclose
        .iter()
        .filter(move |d| *d != claim && !["subject_ref", "intersection"].contains(&d.as_str()))
}

/// The plan for one requested claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimPlan {
    /// Position of the claim in the request.
    pub claim_index: i32,
    /// Claim name.
    pub claim_name: String,
    /// Permit or deny for this claim.
    pub effect: PolicyEffect,
    /// Rules that denied it.
    pub denying_rules: Vec<String>,
    /// Providers that may answer, in order.
    pub providers: Vec<String>,
    /// Evidence required.
    pub evidence_required: Vec<EvidenceKind>,
    /// Attributes that may be disclosed.
    pub disclosable_attributes: Vec<String>,
    /// For `credential` evidence: how long ago the credential may have been issued, ms;
    /// `None`: any age while it is valid.
    #[serde(default)]
    pub max_credential_age_ms: Option<i64>,
}

/// `policy_outcome.avsc`: what the policy stage decided for a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyOutcome {
    /// The request.
    pub request: VerificationRequest,
    /// The policy revision applied (`None`: the tenant had no active policy).
    pub policy: Option<PolicyRef>,
    /// Permit if any claim is permitted.
    pub effect: PolicyEffect,
    /// Every rule that denied a claim.
    pub denying_rules: Vec<String>,
    /// Per claim.
    pub plan: Vec<ClaimPlan>,
    /// Format the response must take.
    pub response_format: ResponseFormat,
    /// How the payload is shaped (`None`: defaults).
    pub response_template: Option<ResponseTemplate>,
    /// When, ms.
    pub evaluated_at: i64,
}

/// The policy's shaping of the signed payload (its `response:` section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseTemplate {
    /// `aud`; `None`: the tenant id.
    pub audience: Option<String>,
    /// Validity of a decision, ms; `None`: the signing stage's default.
    pub lifetime_ms: Option<i64>,
    /// Payload name of a claim, by requested name.
    pub claim_names: std::collections::BTreeMap<String, String>,
    /// Whether the payload lists evidence references.
    pub evidence: bool,
}

impl Default for ResponseTemplate {
    /// The broker's defaults: the schema's field defaults.
    fn default() -> Self {
        ResponseTemplate {
            audience: None,
            lifetime_ms: None,
            claim_names: Default::default(),
            evidence: true,
        }
    }
}

impl Event for PolicyOutcome {
    const FULL_NAME: &'static str = "pavilion.PolicyOutcome";
}
