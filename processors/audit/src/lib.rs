//! `audit`: appends every event it reads to an append-only RFC 6962/9162 Merkle log, one log
//! (shard) per partition of its inputs, origin `<origin>/<partition>`, and signs a C2SP
//! checkpoint of each shard every `checkpoint_every` entries and at every punctuation that
//! finds new entries.
//!
//! An entry ([`pavilion_schemas::AuditEntry`]) commits to the event's position, type and
//! SHA-256 digest, its request id, and — for events that carry a subject's OPRF tokens — those
//! tokens encrypted under a per-subject key ([`subject`]), so erasing the key shreds them
//! while every hash still verifies. The shard's append state is a [`log::Frontier`] in the
//! `log` store: appends and roots cost O(log n) and survive crashes exactly once with the
//! rest of the task's state. Readers rebuild an origin's tree from `pavilion.audit.log` with
//! [`log::LogView`] (ct-merkle) for proofs and verification.

pub mod log;
pub mod note;
mod processor;
pub mod subject;
pub mod verify;

pub use processor::{AuditInput, AuditStage};

use std::sync::Arc;

use pavilion_runtime::{parse_config, StageKind};
use serde::Deserialize;

/// Name of the resource holding the [`SharedCheckpointSigner`].
pub const CHECKPOINT_SIGNER: &str = "checkpoint_signer";
/// Name of the resource holding the [`SharedSubjectKeys`].
pub const SUBJECT_KEYS: &str = "subject_keys";

/// Signs checkpoint notes with the deployment's current Ed25519 key.
pub trait CheckpointSigner: Send + Sync {
    /// The current key's public half and its signature of `message`, in one call so a
    /// rotation in between cannot pair one key's id with another's signature.
    fn sign(&self, message: &[u8]) -> Result<([u8; 32], Vec<u8>), String>;
}

/// Per-subject audit keys (crypto-shredding).
pub trait SubjectKeys: Send + Sync {
    /// The key with this id, created on first use; `None` once erased (a re-processed event
    /// of an erased subject is then logged without its subject fields, never under a new key).
    fn key(&self, key_id: &str) -> Result<Option<[u8; 32]>, String>;
}

/// How stages hold a checkpoint signer.
pub type SharedCheckpointSigner = Arc<dyn CheckpointSigner>;
/// How stages hold the subject key store.
pub type SharedSubjectKeys = Arc<dyn SubjectKeys>;

/// `config:` of an audit stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The log's name: the checkpoints' key name and the prefix of each shard's origin.
    pub origin: String,
    /// A checkpoint at least every this many entries of a shard.
    #[serde(deserialize_with = "pavilion_runtime::yaml_count")]
    pub checkpoint_every: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            origin: "pavilion/audit".into(),
            checkpoint_every: 1000,
        }
    }
}

/// The stage alone, on short topic names: what its tests drive.
pub const STANDALONE_TOPOLOGY: &str = "
application: t
dlq: dlq
topics:
  dlq: { schema: pavilion.DeadLetter }
  requests: { schema: pavilion.VerificationRequest }
  issued: { schema: pavilion.DecisionIssued }
  tenants: { schema: pavilion.Tenant }
  erasures: { schema: pavilion.SubjectErasure }
  log: { schema: pavilion.AuditEntry }
  checkpoints: { schema: pavilion.Checkpoint }
stages:
  audit:
    kind: audit
    inputs: [requests, issued, tenants, erasures]
    outputs: { log: log, checkpoints: checkpoints }
    stores: [log]
    punctuate_every: 5s
    config: { origin: test/audit, checkpoint_every: 4 }
";

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "audit",
    outputs: &["log", "checkpoints"],
    stores: &["log"],
    globals: &[],
    check_config: |c| {
        let config = parse_config::<AuditConfig>(c)?;
        if config.checkpoint_every == 0 {
            return Err("checkpoint_every must be at least 1".into());
        }
        if config.origin.is_empty() || config.origin.contains(['\n', ' ', '+']) {
            return Err(
                "origin must be non-empty, without spaces, `+` or newlines (it names the note key)"
                    .into(),
            );
        }
        Ok(())
    },
    build: |c| Ok(Box::new(AuditStage::new(parse_config(c)?))),
};

#[cfg(test)]
mod tests;
