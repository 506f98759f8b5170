//! `signing`: turns every match result (and every tenancy rejection) into a signed decision
//! on the tenant's own topic (`pavilion.decisions.<tenant>`), with its audit event on
//! `pavilion.decisions.issued` in the same transaction — no decision is visible without it.
//! One decision per request id: each is kept (`decisions` store, for the idempotency window)
//! and a retry gets that very record again, never a second one.
//!
//! The format is the policy's: a signed JSON envelope (detached Ed25519 signature), or a
//! compact JWS / JWT (RFC 7515/7519, EdDSA). Signing goes through a [`DecisionSigner`] the
//! binary provides as the resource [`SIGNER`] (software keys or an HSM), so the stage holds
//! no key material. A decision never carries an OPRF token or a cross-tenant identifier.

mod formats;
mod processor;

pub use pavilion_credentials::jose;
pub use pavilion_credentials::jose::JwsSigner;
pub use processor::{SigningInput, SigningStage};

use std::sync::Arc;
use std::time::Duration;

use pavilion_runtime::{parse_config, StageKind};
use serde::Deserialize;

/// Name of the resource holding the `SharedSigner`.
pub const SIGNER: &str = "signer";

/// Version of the decision payload's shape; every payload carries it.
pub const RESPONSE_SCHEMA: &str = "pavilion.decision/1";

/// Signs decisions with the current key of a key ring (software or HSM).
pub trait DecisionSigner: JwsSigner {
    /// HMAC-SHA256 of `message` under the deployment's pseudonym secret (held beside the
    /// signing keys, never on a topic): what per-tenant subject pseudonyms are made of.
    fn keyed_hash(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// What a policy lists under `disclose` for a claim to give the tenant a subject reference.
pub const SUBJECT_REFERENCE: &str = "subject_ref";

/// How stages hold a signer.
pub type SharedSigner = Arc<dyn DecisionSigner>;

/// `config:` of a signing stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// `iss` of every payload.
    pub issuer: String,
    /// How long a decision may be relied on.
    #[serde(with = "humantime_serde")]
    pub decision_ttl: Duration,
    /// How long a decision is kept to be delivered again to a retry of its request: at least
    /// the tenancy stage's `idempotency_window` (a retry tenancy still recognises must find
    /// it here).
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Expired decisions removed per partition per punctuation, so a punctuation stays short.
    pub expire_batch: usize,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            issuer: "pavilion".into(),
            decision_ttl: Duration::from_secs(600),
            idempotency_window: Duration::from_secs(24 * 3600),
            expire_batch: 10_000,
        }
    }
}

/// The stage alone, on short topic names: what its tests and `pavilion bench signing` drive.
pub const STANDALONE_TOPOLOGY: &str = "
application: t
dlq: dlq
topics:
  dlq: { schema: pavilion.DeadLetter }
  matches: { schema: pavilion.MatchResult }
  rejected: { schema: pavilion.RequestRejected }
  issued: { schema: pavilion.DecisionIssued }
  decisions.{tenant}: { schema: pavilion.Decision }
stages:
  signing:
    kind: signing
    inputs: [matches, rejected]
    outputs: { decisions: 'decisions.{tenant}', issued: issued }
    stores: [decisions]
    punctuate_every: 1m
    config: { issuer: test-broker, decision_ttl: 5m, idempotency_window: 1h }
";

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "signing",
    outputs: &["decisions", "issued"],
    stores: &["decisions"],
    globals: &[],
    check_config: |c| parse_config::<SigningConfig>(c).map(drop),
    build: |c| Ok(Box::new(SigningStage::new(parse_config(c)?))),
};

#[cfg(test)]
mod tests;
