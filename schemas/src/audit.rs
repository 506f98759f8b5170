//! Rust mirrors of the audit records: log entries, signed checkpoints, anchor receipts and
//! erasures, and the leaf input every entry commits to.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Event;

/// Position and type of a logged event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRef {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Avro full name of the event's schema, or [`EventRef::UNDECODABLE`].
    pub event_type: String,
}

impl EventRef {
    /// The type of an entry for bytes that are no record of the contract (garbage, an unknown
    /// schema, a body that does not decode): it keeps their place in the log and commits to
    /// their digest, nothing else. Every schema of the contract is in the `pavilion`
    /// namespace, so this names none of them.
    pub const UNDECODABLE: &'static str = "undecodable";
}

/// Subject-linked fields, encrypted under a per-subject key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedFields {
    /// AEAD nonce ‖ ciphertext.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub ciphertext: Vec<u8>,
    /// Per-subject key id.
    pub key_id: String,
}

/// `audit_entry.avsc`: one leaf of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Log (shard) origin.
    pub origin: String,
    /// Leaf index.
    pub index: i64,
    /// RFC 6962 leaf hash of [`AuditEntry::leaf_input`].
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub leaf_hash: Vec<u8>,
    /// The event logged.
    pub event: EventRef,
    /// SHA-256 of the event's value bytes.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub event_digest: Vec<u8>,
    /// The event's request, when it has one.
    pub request_id: Option<String>,
    /// Encrypted subject-linked fields.
    pub encrypted_fields: Option<EncryptedFields>,
    /// When appended, ms (informational: not part of the leaf).
    pub appended_at: i64,
}

impl Event for AuditEntry {
    const FULL_NAME: &'static str = "pavilion.AuditEntry";
}

impl AuditEntry {
    /// The bytes the leaf hash commits to: a domain tag, then every field but `index`,
    /// `leaf_hash` and `appended_at`, each length-prefixed (u32 big-endian) so no two entries
    /// share an encoding. Digests and ciphertext only: nothing personal, nothing low-entropy.
    pub fn leaf_input(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut field = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        field(b"pavilion.audit.leaf.v1");
        field(self.origin.as_bytes());
        field(self.event.topic.as_bytes());
        field(&self.event.partition.to_be_bytes());
        field(&self.event.offset.to_be_bytes());
        field(self.event.event_type.as_bytes());
        field(&self.event_digest);
        field(self.request_id.as_deref().unwrap_or_default().as_bytes());
        match &self.encrypted_fields {
            Some(f) => {
                field(f.key_id.as_bytes());
                field(&f.ciphertext);
            }
            None => {
                field(b"");
                field(b"");
            }
        }
        out
    }

    /// RFC 6962 leaf hash: SHA-256(0x00 ‖ leaf input).
    pub fn computed_leaf_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(self.leaf_input());
        h.finalize().into()
    }
}

/// One signature line of a signed note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteSignature {
    /// Key name.
    pub key_name: String,
    /// 4-byte key id.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub key_id: Vec<u8>,
    /// Signature.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub signature: Vec<u8>,
}

/// `checkpoint.avsc`: a signed checkpoint (C2SP tlog-checkpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Origin.
    pub origin: String,
    /// Tree size.
    pub tree_size: i64,
    /// Root hash.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub root_hash: Vec<u8>,
    /// The whole signed note.
    pub note: String,
    /// Its signatures.
    pub signatures: Vec<NoteSignature>,
    /// When, ms.
    pub created_at: i64,
}

impl Event for Checkpoint {
    const FULL_NAME: &'static str = "pavilion.Checkpoint";
}

/// Which checkpoint an anchor is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// Origin.
    pub origin: String,
    /// Tree size.
    pub tree_size: i64,
    /// Root hash.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub root_hash: Vec<u8>,
}

/// `anchor_receipt.avsc`: a checkpoint anchored on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorReceipt {
    /// The checkpoint.
    pub checkpoint: CheckpointRef,
    /// EIP-155 chain id.
    pub chain_id: i64,
    /// Anchor contract.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub contract_address: Vec<u8>,
    /// Transaction hash.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub tx_hash: Vec<u8>,
    /// Block.
    pub block_number: i64,
    /// Gas used.
    pub gas_used: i64,
    /// When observed, ms.
    pub anchored_at: i64,
}

impl Event for AnchorReceipt {
    const FULL_NAME: &'static str = "pavilion.AnchorReceipt";
}

/// `subject_erasure.avsc`: a subject's audit key was deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectErasure {
    /// The deleted key's id.
    pub key_id: String,
    /// Who asked.
    pub requested_by: String,
    /// When, ms.
    pub erased_at: i64,
}

impl Event for SubjectErasure {
    const FULL_NAME: &'static str = "pavilion.SubjectErasure";
}
