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
//! (32-byte ristretto255 elements; proof `c ‖ s`, 64 bytes). [`parse_evaluate_request`] and
//! [`parse_evaluate_response`] read both bodies (the service's and the client's untrusted
//! input) into those bytes.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::oprf::{ELEMENT_LEN, PROOF_LEN};

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
/// `GET`: the provider's newest signed Bitstring Status List (`application/vc+jwt`), as
/// `pavilion provider status-list --out` wrote it; anyone may fetch it.
pub const STATUS_LIST_PATH: &str = "/v1/status-list";

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

/// Why an evaluation body (a request's or an answer's) is not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Not the JSON of the body.
    #[error("not a {what} body: {message}")]
    Json {
        /// `{"blinded": [base64, ...]}` or `{"evaluated": [base64, ...], "proof": base64}`.
        what: &'static str,
        /// The JSON parser's message.
        message: String,
    },
    /// A request with no element.
    #[error("send at least one blinded element")]
    EmptyBatch,
    /// A request with more elements than the service evaluates at once.
    #[error("{count} elements; at most {max} per request")]
    BatchTooLarge {
        /// Elements sent.
        count: usize,
        /// The service's limit.
        max: usize,
    },
    /// An element is not base64 of 32 bytes.
    #[error("element {index} is not base64 of a 32-byte ristretto255 element")]
    Element {
        /// Position in the batch.
        index: usize,
    },
    /// The proof is not base64 of 64 bytes.
    #[error("the proof is not base64 of 64 bytes")]
    Proof,
}

/// Reads a `POST /v1/oprf/evaluate` body: 1 to `max_batch` blinded elements, each 32 bytes.
/// Whether they are valid points is the evaluation's check.
pub fn parse_evaluate_request(body: &[u8], max_batch: usize) -> Result<Vec<Vec<u8>>, BodyError> {
    let request: EvaluateRequest = serde_json::from_slice(body).map_err(|e| BodyError::Json {
        what: r#"{"blinded": [base64, ...]}"#,
        message: e.to_string(),
    })?;
    let count = request.blinded.len();
    if count == 0 {
        return Err(BodyError::EmptyBatch);
    }
    if count > max_batch {
        return Err(BodyError::BatchTooLarge {
            count,
            max: max_batch,
        });
    }
    request
        .blinded
        .iter()
        .enumerate()
        .map(|(index, b)| {
            B64.decode(b)
                .ok()
                .filter(|bytes| bytes.len() == ELEMENT_LEN)
                .ok_or(BodyError::Element { index })
        })
        .collect()
}

/// Reads an evaluation answer: the evaluated elements, 32 bytes each, and the 64-byte proof.
/// Whether they are valid and the proof verifies is the client's next step.
pub fn parse_evaluate_response(
    body: &[u8],
) -> Result<(Vec<[u8; ELEMENT_LEN]>, [u8; PROOF_LEN]), BodyError> {
    let answer: EvaluateResponse = serde_json::from_slice(body).map_err(|e| BodyError::Json {
        what: r#"{"evaluated": [base64, ...], "proof": base64}"#,
        message: e.to_string(),
    })?;
    let evaluated = answer
        .evaluated
        .iter()
        .enumerate()
        .map(|(index, e)| {
            B64.decode(e)
                .ok()
                .and_then(|b| <[u8; ELEMENT_LEN]>::try_from(b.as_slice()).ok())
                .ok_or(BodyError::Element { index })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let proof = B64
        .decode(&answer.proof)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(BodyError::Proof)?;
    Ok((evaluated, proof))
}
