//! What the fuzz targets (`fuzz_targets/`) and the seed generator (`examples/seeds.rs`) share:
//! fixed keys, so the seeds carry signatures the targets check, and the Avro framing of a
//! body under a schema of the contract.

use std::fmt::Debug;
use std::sync::LazyLock;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use pavilion_schemas::{
    fingerprint_json, AcceptedRequest, AnalyticsCounts, AnalyticsQuery, AnalyticsRelease,
    AnchorReceipt, AuditEntry, Checkpoint, DeadLetter, Decision, DecisionIssued, DemoEvent, Event,
    EvidenceRequest, EvidenceResponse, KeyCount, KeyTotal, MatchResult, PolicyDocument,
    PolicyOutcome, Provider, ProviderSetEntry, PsiJobChunk, PsiJobResult, Registry,
    RequestRejected, StatusListPublished, SubjectErasure, Tenant, VerificationRequest, MAGIC,
    SCHEMA_FILES,
};
use pavilion_signing::{DecisionSigner, JwsSigner};
use sha2::{Digest, Sha256};

/// Key id of the decision-signing key of the token seeds and round trips.
pub const KID: &str = "fuzz-2026";
/// Name of the checkpoint-note key.
pub const NOTE_NAME: &str = "pavilion.example/audit/0";

/// The one Ed25519 key of the targets (decisions and checkpoints); fixed, so the seeds'
/// signatures verify in the targets.
pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// Its public half.
pub fn verifying_key() -> VerifyingKey {
    signing_key().verifying_key()
}

/// A decision signer over [`signing_key`], kid [`KID`].
pub struct FixedSigner;

impl JwsSigner for FixedSigner {
    fn current_key_id(&self) -> Result<String, String> {
        Ok(KID.to_owned())
    }

    fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        if kid != KID {
            return Err(format!("no key {kid}"));
        }
        Ok(signing_key().sign(message).to_bytes().to_vec())
    }
}

impl DecisionSigner for FixedSigner {
    fn keyed_hash(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(Sha256::digest(message).to_vec())
    }
}

/// One schema file of the contract, as its records' header names it.
pub struct Version {
    /// Full name (`namespace.Name`) of the record it defines.
    pub name: String,
    /// Whether it is a released (frozen) version.
    pub released: bool,
    /// Its CRC-64-AVRO fingerprint, as in its records' header.
    pub fingerprint: [u8; 8],
}

/// Every file of [`SCHEMA_FILES`], in its order (read once: the targets frame every input).
pub fn versions() -> &'static [Version] {
    static VERSIONS: LazyLock<Vec<Version>> = LazyLock::new(|| {
        SCHEMA_FILES
            .iter()
            .map(|f| {
                let json: serde_json::Value = serde_json::from_str(f.json).expect("schema");
                let name = json["name"].as_str().unwrap_or_default();
                Version {
                    name: match json["namespace"].as_str() {
                        Some(ns) => format!("{ns}.{name}"),
                        None => name.to_owned(),
                    },
                    released: f.released,
                    fingerprint: fingerprint_json(f.json).expect("embedded schema"),
                }
            })
            .collect()
    });
    &VERSIONS
}

/// `body` behind the single-object header of the schema version `versions()[index]`.
pub fn framed(index: usize, body: &[u8]) -> Vec<u8> {
    [&MAGIC[..], &versions()[index].fingerprint, body].concat()
}

/// `body` behind the header of `E`'s current schema.
pub fn framed_current<E: Event>(body: &[u8]) -> Vec<u8> {
    let index = versions()
        .iter()
        .position(|v| !v.released && v.name == E::FULL_NAME)
        .expect("every event has a current schema");
    framed(index, body)
}

/// Decodes `bytes` as `E`, and checks what must hold of a record the contract reads: its Rust
/// mirror reads it too, encodes, and the encoding reads back to the same event (compared by
/// `Debug`, which also holds for a NaN) and encodes to the same bytes again.
pub fn round_trip<E: Event + Debug>(registry: &Registry, bytes: &[u8]) {
    let event = match registry.decode::<E>(bytes) {
        Ok(event) => event,
        Err(e) => panic!(
            "{} decodes generically but not as its event: {e}",
            E::FULL_NAME
        ),
    };
    let encoded = registry
        .encode(&event)
        .unwrap_or_else(|e| panic!("a decoded {} does not encode: {e}", E::FULL_NAME));
    let again: E = registry
        .decode(&encoded)
        .unwrap_or_else(|e| panic!("an encoded {} does not decode: {e}", E::FULL_NAME));
    assert_eq!(format!("{event:?}"), format!("{again:?}"));
    assert_eq!(registry.encode(&again).expect("encodes"), encoded);
}

/// A check of a framed record of one event type.
pub type Check = fn(&Registry, &[u8]);

/// Every event type by its schema's full name, with its [`round_trip`].
pub const EVENTS: &[(&str, Check)] = &[
    entry::<AcceptedRequest>(),
    entry::<AnalyticsCounts>(),
    entry::<AnalyticsQuery>(),
    entry::<AnalyticsRelease>(),
    entry::<AnchorReceipt>(),
    entry::<AuditEntry>(),
    entry::<Checkpoint>(),
    entry::<DeadLetter>(),
    entry::<Decision>(),
    entry::<DecisionIssued>(),
    entry::<DemoEvent>(),
    entry::<EvidenceRequest>(),
    entry::<EvidenceResponse>(),
    entry::<KeyCount>(),
    entry::<KeyTotal>(),
    entry::<MatchResult>(),
    entry::<PolicyDocument>(),
    entry::<PolicyOutcome>(),
    entry::<Provider>(),
    entry::<ProviderSetEntry>(),
    entry::<PsiJobChunk>(),
    entry::<PsiJobResult>(),
    entry::<RequestRejected>(),
    entry::<StatusListPublished>(),
    entry::<SubjectErasure>(),
    entry::<Tenant>(),
    entry::<VerificationRequest>(),
];

const fn entry<E: Event + Debug>() -> (&'static str, Check) {
    (E::FULL_NAME, round_trip::<E>)
}
