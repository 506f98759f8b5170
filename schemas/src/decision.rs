//! Rust mirrors of the signed-response records: the decision a tenant receives and its audit
//! event.

use serde::{Deserialize, Serialize};

use crate::{Event, EvidenceRef, PolicyRef, RequestRejected, ResponseFormat};

/// Outcome of one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Verdict {
    Unknown,
    Verified,
    NotVerified,
    Unavailable,
    Denied,
}

/// The decision for one requested claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimOutcome {
    /// Position in the request.
    pub claim_index: i32,
    /// Claim name.
    pub claim_name: String,
    /// Outcome.
    pub outcome: Verdict,
    /// Why unavailable or denied.
    pub reason: Option<String>,
    /// Evidence it rests on.
    pub evidence: Vec<EvidenceRef>,
}

/// A signed payload: text (JSON, compact JWS/JWT, SD-JWT) or bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Payload {
    /// Text formats.
    Text(String),
    /// Binary formats.
    Binary(#[serde(with = "apache_avro::serde_avro_bytes")] Vec<u8>),
}

// The union `["string", "bytes"]` decodes by what the datum is, not by trying variants in
// order (serde's untagged would read bytes as a string).
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Payload;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or bytes")
            }
            fn visit_str<E>(self, v: &str) -> Result<Payload, E> {
                Ok(Payload::Text(v.to_owned()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload::Binary(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload::Binary(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `decision.avsc`: what a tenant receives on its decision topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Request decided.
    pub request_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Per claim; empty for a rejection.
    pub outcomes: Vec<ClaimOutcome>,
    /// Policy revision applied.
    pub policy: Option<PolicyRef>,
    /// When issued, ms.
    pub issued_at: i64,
    /// Not to be relied on after, ms.
    pub expires_at: i64,
    /// The request's nonce.
    pub nonce: String,
    /// Per-tenant pseudonym of the subject, when allowed.
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub subject_pseudonym: Option<Vec<u8>>,
    /// Format of `payload`.
    pub format: ResponseFormat,
    /// The signed decision.
    pub payload: Payload,
    /// Detached signature (JSON envelope).
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub signature: Option<Vec<u8>>,
    /// Signing key id (JWKS `kid`).
    pub signing_key_id: String,
    /// Audit log index of the request's entry, when known.
    pub audit_log_index: Option<i64>,
    /// Set for a tenancy rejection.
    pub rejection: Option<RequestRejected>,
}

impl Event for Decision {
    const FULL_NAME: &'static str = "pavilion.Decision";
}

/// `decision_issued.avsc`: the audit event of an issued decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionIssued {
    /// Request decided.
    pub request_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Delivery topic.
    pub topic: String,
    /// SHA-256 of the delivered Decision value.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub decision_digest: Vec<u8>,
    /// SHA-256 of the signed payload.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub payload_digest: Vec<u8>,
    /// Format.
    pub format: ResponseFormat,
    /// Signing key.
    pub signing_key_id: String,
    /// Policy revision applied.
    pub policy: Option<PolicyRef>,
    /// When, ms.
    pub issued_at: i64,
}

impl Event for DecisionIssued {
    const FULL_NAME: &'static str = "pavilion.DecisionIssued";
}
