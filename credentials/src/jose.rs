//! Compact JWS (RFC 7515) with EdDSA (RFC 8037): building one through a [`JwsSigner`] (the
//! broker's decision keys, a provider's key, an HSM), the allow-list checks a verifier applies
//! before any signature check, and the check itself. The signature is Ed25519 from the signer
//! or from `ed25519-dalek`; this module only frames it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};

/// base64url without padding, as JOSE writes every binary value.
pub fn base64url(bytes: impl AsRef<[u8]>) -> String {
    B64URL.encode(bytes)
}

/// Reads [`base64url`].
pub fn base64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    B64URL.decode(text)
}

/// What signs a JWS: a key ring whose current key signs new tokens.
pub trait JwsSigner: Send + Sync {
    /// Id (JWKS `kid`) of the key new tokens are signed with.
    fn current_key_id(&self) -> Result<String, String>;
    /// Ed25519 signature of `message` with key `kid`.
    fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// One Ed25519 key under a fixed `kid` (a provider's software key, a holder's key).
pub struct KeySigner<'a> {
    /// Its `kid`.
    pub kid: &'a str,
    /// The key.
    pub key: &'a ed25519_dalek::SigningKey,
}

impl JwsSigner for KeySigner<'_> {
    fn current_key_id(&self) -> Result<String, String> {
        Ok(self.kid.to_owned())
    }
    fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        use ed25519_dalek::Signer as _;
        if kid != self.kid {
            return Err(format!("no key `{kid}` (this signer holds `{}`)", self.kid));
        }
        Ok(self.key.sign(message).to_bytes().to_vec())
    }
}

/// The only algorithm issued and accepted.
pub const ALGORITHM: &str = "EdDSA";

/// A compact JWS over `payload` with the signer's current key: `(token, kid)`.
pub fn compact(
    signer: &dyn JwsSigner,
    typ: &str,
    payload: &[u8],
) -> Result<(String, String), String> {
    compact_with(signer, &[("typ", typ)], payload)
}

/// [`compact`] with more header parameters (`typ`, `cty`, …) after `alg` and `kid`.
pub fn compact_with(
    signer: &dyn JwsSigner,
    parameters: &[(&str, &str)],
    payload: &[u8],
) -> Result<(String, String), String> {
    let kid = signer.current_key_id()?;
    // A signer without a key id (a holder: its key is the one its credential binds) names none.
    let mut header = format!("{{\"alg\":{}", json!(ALGORITHM));
    if !kid.is_empty() {
        header += &format!(",\"kid\":{}", json!(kid));
    }
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

/// Splits and checks a compact JWS that names its key (`kid`).
pub fn parse(token: &str) -> Result<Parsed, JwsError> {
    let parsed = parse_unkeyed(token)?;
    if parsed.kid.is_empty() {
        return Err(JwsError::Malformed("header has no kid".into()));
    }
    Ok(parsed)
}

/// [`parse`] for a JWS whose key is known otherwise (a key binding JWT: the holder's key is
/// in the credential); `kid` is empty when the header has none.
pub fn parse_unkeyed(token: &str) -> Result<Parsed, JwsError> {
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
    let kid = header["kid"].as_str().unwrap_or_default().to_owned();
    Ok(Parsed {
        payload: decode(p, "payload")?,
        signature: decode(s, "signature")?,
        signing_input: format!("{h}.{p}"),
        header,
        kid,
    })
}

impl Parsed {
    /// Checks the signature with `public_key` (32 bytes, Ed25519); names `kid` when it fails.
    pub fn verify(&self, public_key: &[u8]) -> Result<(), JwsError> {
        let bad = || JwsError::BadSignature(self.kid.clone());
        let key = <[u8; 32]>::try_from(public_key)
            .ok()
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
            .ok_or_else(bad)?;
        let signature = ed25519_dalek::Signature::from_slice(&self.signature).map_err(|_| bad())?;
        key.verify_strict(self.signing_input.as_bytes(), &signature)
            .map_err(|_| bad())
    }

    /// The payload as JSON.
    pub fn json(&self) -> Result<Value, JwsError> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| JwsError::Malformed(format!("payload: {e}")))
    }
}
