//! Rust mirrors of the request path's records (tenancy in and out) and the tenant registry,
//! plus the canonical bytes a request's signature covers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Event;

/// `verification_request.avsc`: a relying party's signed request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationRequest {
    /// Unique per tenant; the idempotency key.
    pub request_id: String,
    /// Tenant asking; also the record key.
    pub tenant_id: String,
    /// Signing key used.
    pub key_id: String,
    /// Ed25519 signature over [`VerificationRequest::signing_bytes`].
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub signature: Vec<u8>,
    /// When it was signed, ms.
    pub signed_at: i64,
    /// Fresh per request.
    pub nonce: String,
    /// When it was created, ms.
    pub created_at: i64,
    /// Claims asked.
    pub claims: Vec<ClaimRequest>,
    /// Declared purpose.
    pub purpose: String,
    /// Subject's jurisdiction or region.
    pub subject_jurisdiction: String,
    /// Consent reference, if any.
    pub consent_ref: Option<String>,
    /// OPRF outputs per provider; never a raw identifier.
    pub subject_tokens: Vec<SubjectToken>,
    /// Preferred response format.
    pub response_format: Option<ResponseFormat>,
}

/// The claim parameter carrying a holder's credential presentation, for `credential`
/// evidence (psi checks it; tenancy bounds its length by its own limit).
pub const PRESENTATION_PARAM: &str = "presentation";

/// One claim asked, with parameters (e.g. `threshold` of `age_over`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// Claim name.
    pub name: String,
    /// Parameters.
    pub params: BTreeMap<String, String>,
}

/// An OPRF token for one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectToken {
    /// Provider.
    pub provider_id: String,
    /// `F_k(x)` under the provider's key.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub token: Vec<u8>,
}

/// Response formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Evolution fallback.
    Unknown,
    /// Signed JSON envelope.
    Json,
    /// Compact JWS.
    Jws,
    /// JWT.
    Jwt,
    /// W3C VC 2.0 with VC-JOSE-COSE.
    VcJose,
    /// SD-JWT.
    SdJwt,
}

impl Event for VerificationRequest {
    const FULL_NAME: &'static str = "pavilion.VerificationRequest";
}

/// Domain tag that starts every request signing input.
pub const REQUEST_SIGNING_TAG: &[u8] = b"pavilion.VerificationRequest.v1";

impl VerificationRequest {
    /// The bytes the Ed25519 signature covers: every field but `signature`, in schema order,
    /// strings and byte strings as u32 big-endian length + bytes, timestamps as i64
    /// big-endian, arrays as u32 count + items, claim parameters sorted by name, optional
    /// fields as 0x00 (absent) or 0x01 + value, the response format as its symbol, all after
    /// [`REQUEST_SIGNING_TAG`]. Not the Avro encoding: Avro maps have no canonical order.
    pub fn signing_bytes(&self) -> Vec<u8> {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u32).to_be_bytes());
            out.extend_from_slice(b);
        }
        fn count(out: &mut Vec<u8>, n: usize) {
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        let mut out = Vec::with_capacity(256);
        bytes(&mut out, REQUEST_SIGNING_TAG);
        bytes(&mut out, self.request_id.as_bytes());
        bytes(&mut out, self.tenant_id.as_bytes());
        bytes(&mut out, self.key_id.as_bytes());
        out.extend_from_slice(&self.signed_at.to_be_bytes());
        bytes(&mut out, self.nonce.as_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        count(&mut out, self.claims.len());
        for claim in &self.claims {
            bytes(&mut out, claim.name.as_bytes());
            count(&mut out, claim.params.len());
            for (k, v) in &claim.params {
                bytes(&mut out, k.as_bytes());
                bytes(&mut out, v.as_bytes());
            }
        }
        bytes(&mut out, self.purpose.as_bytes());
        bytes(&mut out, self.subject_jurisdiction.as_bytes());
        match &self.consent_ref {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                bytes(&mut out, c.as_bytes());
            }
        }
        count(&mut out, self.subject_tokens.len());
        for t in &self.subject_tokens {
            bytes(&mut out, t.provider_id.as_bytes());
            bytes(&mut out, &t.token);
        }
        match self.response_format {
            None => out.push(0),
            Some(f) => {
                out.push(1);
                let symbol = serde_json::to_value(f)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                bytes(&mut out, symbol.as_bytes());
            }
        }
        out
    }
}

/// `accepted_request.avsc`: tenancy's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptedRequest {
    /// The request as received.
    pub request: VerificationRequest,
    /// Tenant revision it was accepted under.
    pub tenant_revision: i64,
    /// Tenant's allowed regions at that revision.
    pub tenant_allowed_regions: Vec<String>,
    /// When, ms.
    pub accepted_at: i64,
    /// The tenant's policy revision active at acceptance, which the request is evaluated
    /// under; `None` when it had none.
    #[serde(default)]
    pub policy: Option<crate::PolicyRef>,
}

impl Event for AcceptedRequest {
    const FULL_NAME: &'static str = "pavilion.AcceptedRequest";
}

/// Why tenancy rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum RejectionReason {
    Unknown,
    BadSignature,
    UnknownTenant,
    UnknownKey,
    RevokedKey,
    ExpiredKey,
    KeyNotYetValid,
    TenantSuspended,
    TenantInactive,
    InvalidSchema,
    Oversize,
    ClaimNotAllowed,
    ClockSkew,
    MissingNonce,
    /// A retry of a decided request: same request id, same question. Not a refusal: the
    /// original decision is re-delivered.
    Duplicate,
    RateLimited,
    QuotaExceeded,
    /// The request id of a decided request, asking a different question: never delivered,
    /// the id already has its answer.
    Conflict,
}

impl RejectionReason {
    /// The symbol as the schema spells it.
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// `request_rejected.avsc`: a request tenancy refused, with its reason code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRejected {
    /// Request id as given.
    pub request_id: String,
    /// Tenant, when known.
    pub tenant_id: Option<String>,
    /// Reason code.
    pub reason: RejectionReason,
    /// Human-readable detail.
    pub detail: String,
    /// When a new request can succeed (rate limits and quotas; final for this request id).
    pub retry_after_ms: Option<i64>,
    /// When, ms.
    pub rejected_at: i64,
}

impl Event for RequestRejected {
    const FULL_NAME: &'static str = "pavilion.RequestRejected";
}

/// Tenant lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum TenantState {
    Unknown,
    Provisioned,
    Active,
    Suspended,
    Deleted,
}

/// A registered Ed25519 request-signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSigningKey {
    /// Key id, unique per tenant.
    pub key_id: String,
    /// 32-byte Ed25519 public key.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub public_key: Vec<u8>,
    /// Valid from, ms.
    pub not_before: i64,
    /// Valid until, ms.
    pub not_after: Option<i64>,
    /// Revoked at, ms.
    pub revoked_at: Option<i64>,
}

/// Per-tenant limits and routing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantConfig {
    /// Sustained requests per second.
    pub rate_limit_per_second: f64,
    /// Requests allowed at once.
    pub burst: i32,
    /// Requests per UTC day.
    pub daily_quota: Option<i64>,
    /// Regions whose providers may answer.
    pub allowed_regions: Vec<String>,
    /// Decision topic.
    pub response_topic: String,
    /// Differential privacy budget of the tenant's analytics releases, millionths of ε per
    /// budget period; `None`: the analytics stage's default.
    #[serde(default)]
    pub privacy_budget_micro: Option<i64>,
}

/// Whether a region serving `served` (ISO 3166 codes) serves subjects of `jurisdiction`
/// (`VerificationRequest::subject_jurisdiction`): the code itself, or, for a subdivision such
/// as `US-CA`, its country.
pub fn jurisdiction_served(served: &[String], jurisdiction: &str) -> bool {
    let country = jurisdiction.split('-').next().unwrap_or(jurisdiction);
    served.iter().any(|j| j == jurisdiction || j == country)
}

/// `tenant.avsc`: the registry entry of a tenant (compacted, keyed by tenant id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    /// Id.
    pub tenant_id: String,
    /// Display name.
    pub display_name: String,
    /// Lifecycle state.
    pub state: TenantState,
    /// Request-signing keys, current and past.
    pub signing_keys: Vec<RequestSigningKey>,
    /// Limits and routing.
    pub config: TenantConfig,
    /// When this revision was made, ms.
    pub updated_at: i64,
    /// Increases with every change.
    pub revision: i64,
    /// Version stamp (several regions); `None` when written without one.
    #[serde(default)]
    pub stamp: Option<crate::ControlVersion>,
}

impl Tenant {
    /// Where this record stands among the versions of its key (see [`crate::VersionOrder`]).
    pub fn order(&self) -> crate::VersionOrder {
        crate::VersionOrder::of(self.stamp.as_ref(), self.revision)
    }
}

impl Event for Tenant {
    const FULL_NAME: &'static str = "pavilion.Tenant";
}
