//! Compact JWS (RFC 7515) with EdDSA (RFC 8037): building one through a [`DecisionSigner`],
//! and the allow-list checks a verifier applies before any signature check. The signature
//! itself is Ed25519 from the signer; this module only frames it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::DecisionSigner;

/// The only algorithm issued and accepted.
pub const ALGORITHM: &str = "EdDSA";

/// A compact JWS over `payload` with the signer's current key: `(token, kid)`.
pub fn compact(
    signer: &dyn DecisionSigner,
    typ: &str,
    payload: &[u8],
) -> Result<(String, String), String> {
    compact_with(signer, &[("typ", typ)], payload)
}

/// [`compact`] with more header parameters (`typ`, `cty`, …) after `alg` and `kid`.
pub fn compact_with(
    signer: &dyn DecisionSigner,
    parameters: &[(&str, &str)],
    payload: &[u8],
) -> Result<(String, String), String> {
    let kid = signer.current_key_id()?;
    let mut header = format!("{{\"alg\":{},\"kid\":{}", json!(ALGORITHM), json!(kid));
    for (name, value) in parameters {
        header += &format!(",{}:{}", json!(name), json!(value));
    }
    header.push('}');
    let signing_input = format!("{}.{}", B64URL.encode(header), B64URL.encode(payload));
    let signature = signer.sign(&kid, signing_input.as_bytes())?;
    Ok((format!("{signing_input}.{}", B64URL.encode(signature)), kid))
}

/// Why a token is refused before or at signature verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not three base64url parts with a JSON header.
    #[error("not a compact JWS: {0}")]
    Malformed(String),
    /// `alg` is not EdDSA (`none`, `HS256` and the rest are refused, whatever the key).
    #[error("algorithm `{0}` is not allowed (only EdDSA)")]
    Algorithm(String),
    /// No key with this `kid` is published.
    #[error("no published key has kid `{0}`")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("the signature does not verify under key `{0}`")]
    BadSignature(String),
}

/// A compact JWS split and checked against the allow-list: header, payload, signing input,
/// signature, kid. The caller verifies the signature with the key of that kid.
pub struct Parsed {
    /// Header.
    pub header: Value,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// `header.payload`, what was signed.
    pub signing_input: String,
    /// Signature bytes.
    pub signature: Vec<u8>,
    /// Key id.
    pub kid: String,
}

/// Splits and checks a compact JWS.
pub fn parse(token: &str) -> Result<Parsed, JwsError> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [h, p, s] = parts[..] else {
        return Err(JwsError::Malformed(format!("{} parts, not 3", parts.len())));
    };
    let decode = |part: &str, what: &str| {
        B64URL
            .decode(part)
            .map_err(|e| JwsError::Malformed(format!("{what}: {e}")))
    };
    let header: Value = serde_json::from_slice(&decode(h, "header")?)
        .map_err(|e| JwsError::Malformed(format!("header: {e}")))?;
    let alg = header["alg"].as_str().unwrap_or("(missing)");
    if alg != ALGORITHM {
        return Err(JwsError::Algorithm(alg.to_owned()));
    }
    let kid = header["kid"]
        .as_str()
        .ok_or_else(|| JwsError::Malformed("header has no kid".into()))?
        .to_owned();
    Ok(Parsed {
        payload: decode(p, "payload")?,
        signature: decode(s, "signature")?,
        signing_input: format!("{h}.{p}"),
        header,
        kid,
    })
}
