//! The OPRF evaluation service's HTTP contract, shared by the service and every client.
//!
//! - `GET /v1/oprf/key` → [`KeyInfo`].
//! - `POST /v1/oprf/evaluate`, body [`EvaluateRequest`] (JSON), answered by
//!   [`EvaluateResponse`]; errors are 4xx with [`ErrorBody`].
//!
//! A request is authenticated by the tenant's registered Ed25519 request-signing key: headers
//! [`TENANT_HEADER`], [`KEY_ID_HEADER`], [`TIMESTAMP_HEADER`] (ms since the epoch) and
//! [`SIGNATURE_HEADER`] (standard base64 of the signature over [`auth_message`]). Elements,
//! evaluated elements and the proof are standard base64 of their RFC 9497 serializations
//! (32-byte ristretto255 elements; proof `c ‖ s`, 64 bytes).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Tenant id header.
pub const TENANT_HEADER: &str = "x-pavilion-tenant";
/// Request-signing key id header.
pub const KEY_ID_HEADER: &str = "x-pavilion-key-id";
/// Signing time header, ms since the epoch.
pub const TIMESTAMP_HEADER: &str = "x-pavilion-timestamp";
/// Signature header.
pub const SIGNATURE_HEADER: &str = "x-pavilion-signature";
/// Path of the evaluation endpoint.
pub const EVALUATE_PATH: &str = "/v1/oprf/evaluate";
/// Path of the key endpoint.
pub const KEY_PATH: &str = "/v1/oprf/key";

/// The bytes a tenant signs for one evaluation request:
/// `pavilion-oprf-v1\n{provider}\n{tenant}\n{key_id}\n{timestamp}\n{hex(sha256(body))}`.
/// Binding the provider stops a request to one provider being replayed to another; binding
/// the body hash stops a signature being reused for other elements.
pub fn auth_message(
    provider: &str,
    tenant: &str,
    key_id: &str,
    timestamp_ms: i64,
    body: &[u8],
) -> Vec<u8> {
    let body_hash: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("pavilion-oprf-v1\n{provider}\n{tenant}\n{key_id}\n{timestamp_ms}\n{body_hash}")
        .into_bytes()
}

/// `GET /v1/oprf/key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Provider id.
    pub provider: String,
    /// `ristretto255-SHA512`.
    pub suite: String,
    /// `voprf`.
    pub mode: String,
    /// Public key, base64.
    pub public_key: String,
}

/// `POST /v1/oprf/evaluate` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    /// Blinded elements, base64.
    pub blinded: Vec<String>,
}

/// `POST /v1/oprf/evaluate` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluateResponse {
    /// Evaluated elements in request order, base64.
    pub evaluated: Vec<String>,
    /// One batch DLEQ proof, base64.
    pub proof: String,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `rate_limited`.
    pub error: String,
    /// What went wrong and what to do, for a human.
    pub message: String,
}
