//! Subject-linked fields of an audit entry, encrypted under a per-subject key so that erasing
//! the key (GDPR Art. 17) shreds them while the log still verifies.
//!
//! The subject is identified by its first OPRF token (by provider id), the same choice the
//! signing stage's pseudonyms make. The key id is a digest of that token (a pseudorandom
//! value, not personal data), so an erasure request names it without the broker ever storing
//! the token. The nonce is derived from the key id and the event's position: one event is
//! encrypted under one nonce, and re-processing it after a crash yields the same ciphertext.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use pavilion_schemas::{EncryptedFields, EventRef, VerificationRequest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The audit key id of the subject with this token at this provider.
pub fn key_id(provider_id: &str, token: &[u8]) -> String {
    hex::encode(
        &digest(&[
            b"pavilion.audit.subject-key.v1",
            provider_id.as_bytes(),
            token,
        ])[..16],
    )
}

/// What an entry keeps, encrypted, about the subject of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectFields {
    /// Tenant that asked.
    pub tenant_id: String,
    /// The subject's tokens, base64.
    pub subject_tokens: Vec<SubjectTokenField>,
}

/// One token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectTokenField {
    /// Provider.
    pub provider_id: String,
    /// Token, standard base64.
    pub token: String,
}

impl SubjectFields {
    /// The subject fields of a request, and the key id they go under; `None` without tokens.
    pub fn of(request: &VerificationRequest) -> Option<(String, SubjectFields)> {
        let first = request
            .subject_tokens
            .iter()
            .min_by(|a, b| a.provider_id.cmp(&b.provider_id))?;
        Some((
            key_id(&first.provider_id, &first.token),
            SubjectFields {
                tenant_id: request.tenant_id.clone(),
                subject_tokens: request
                    .subject_tokens
                    .iter()
                    .map(|t| SubjectTokenField {
                        provider_id: t.provider_id.clone(),
                        token: B64.encode(&t.token),
                    })
                    .collect(),
            },
        ))
    }
}

fn aad(event: &EventRef) -> Vec<u8> {
    digest(&[
        b"pavilion.audit.subject-fields.v1",
        event.topic.as_bytes(),
        &event.partition.to_be_bytes(),
        &event.offset.to_be_bytes(),
    ])
    .to_vec()
}

/// Encrypts `fields` of the event at `event` under `key`.
pub fn seal(
    key: &[u8; 32],
    key_id: &str,
    event: &EventRef,
    fields: &SubjectFields,
) -> EncryptedFields {
    let aad = aad(event);
    let nonce: [u8; 24] = digest(&[b"pavilion.audit.nonce.v1", key_id.as_bytes(), &aad])[..24]
        .try_into()
        .expect("24 bytes");
    let plaintext = serde_json::to_vec(fields).expect("serializable");
    let ciphertext = XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .expect("encryption of a small message cannot fail");
    EncryptedFields {
        ciphertext: [nonce.as_slice(), &ciphertext].concat(),
        key_id: key_id.to_owned(),
    }
}

/// Decrypts an entry's subject fields; `None` if the key does not open them.
pub fn open(key: &[u8; 32], event: &EventRef, sealed: &EncryptedFields) -> Option<SubjectFields> {
    if sealed.ciphertext.len() < 24 {
        return None;
    }
    let (nonce, ciphertext) = sealed.ciphertext.split_at(24);
    let plaintext = XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad(event),
            },
        )
        .ok()?;
    serde_json::from_slice(&plaintext).ok()
}
