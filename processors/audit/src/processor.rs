use apache_avro::types::Value;
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::topology::RegionSpec;
use pavilion_runtime::{Context, Input, ProcessError, Processor, Record, REGION};
use pavilion_schemas::{
    AcceptedRequest, AuditEntry, Checkpoint, CodecError, DecisionIssued, Event, EventRef,
    MatchResult, NoteSignature, PolicyOutcome, PsiJobResult, Registry, RequestRejected,
    VerificationRequest,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::log::Frontier;
use crate::note::{key_id, signed_note, CheckpointBody};
use crate::subject::SubjectFields;
use crate::{
    AuditConfig, SharedCheckpointSigner, SharedSubjectKeys, CHECKPOINT_SIGNER, SUBJECT_KEYS,
};

/// The audit stage.
pub struct AuditStage {
    config: AuditConfig,
}

impl AuditStage {
    /// A stage with its config.
    pub fn new(config: AuditConfig) -> Self {
        AuditStage { config }
    }
}

/// Any record: its type, digest, request id and subject fields. Records of every type are
/// logged (by digest), and so are bytes this build cannot read as a record of the contract
/// (unframed, an unknown schema, a body that does not decode) as [`EventRef::UNDECODABLE`]:
/// the first stage that reads them dead-letters them, so a dead letter from here too would
/// count each bad record twice, while the log must still account for every position it reads.
pub struct AuditInput {
    event_type: String,
    digest: [u8; 32],
    request_id: Option<String>,
    subject: Option<(String, SubjectFields)>,
    /// The subject's jurisdiction, when the record holds the whole request.
    jurisdiction: Option<String>,
}

impl Input for AuditInput {
    /// Never fails (see [`AuditInput`]).
    fn decode(registry: &Registry, _topic: &str, bytes: &[u8]) -> Result<Self, CodecError> {
        let digest = Sha256::digest(bytes).into();
        Ok(
            AuditInput::decoded(registry, bytes, digest).unwrap_or_else(|_| AuditInput {
                // Nothing the bytes claim is trusted: no type, no request id, no subject.
                event_type: EventRef::UNDECODABLE.to_owned(),
                digest,
                request_id: None,
                subject: None,
                jurisdiction: None,
            }),
        )
    }
}

impl AuditInput {
    /// The input of a record of the contract.
    ///
    /// Records that carry a request id are decoded whole (a body that does not decode is
    /// [`EventRef::UNDECODABLE`]), but only into Avro's generic value: of that, only the
    /// request (or its id) becomes a struct. Records of other types are not decoded.
    fn decoded(registry: &Registry, bytes: &[u8], digest: [u8; 32]) -> Result<Self, CodecError> {
        let event_type = registry.name_of(bytes)?;
        // Where the request sits in the record, or that only its id is there.
        let path: &[&str] = match event_type {
            VerificationRequest::FULL_NAME => &[],
            AcceptedRequest::FULL_NAME | PolicyOutcome::FULL_NAME => &["request"],
            MatchResult::FULL_NAME => &["outcome", "request"],
            RequestRejected::FULL_NAME | DecisionIssued::FULL_NAME | PsiJobResult::FULL_NAME => {
                &["request_id"]
            }
            _ => {
                return Ok(AuditInput {
                    event_type: event_type.to_owned(),
                    digest,
                    request_id: None,
                    subject: None,
                    jurisdiction: None,
                })
            }
        };
        let (event_type, value) = registry.decode_value(bytes)?;
        let not_there = || CodecError::SchemaMismatch {
            expected: format!("{event_type} with {}", path.join(".")),
            found: event_type.to_owned(),
        };
        let value = path
            .iter()
            .try_fold(&value, |v, name| field(v, name))
            .ok_or_else(not_there)?;
        let (request_id, subject, jurisdiction) = match value {
            Value::String(id) => (Some(id.clone()), None, None),
            request => {
                let request: VerificationRequest =
                    apache_avro::from_value(request).map_err(|e| CodecError::Avro {
                        op: "decode",
                        schema: VerificationRequest::FULL_NAME.into(),
                        source: Box::new(e),
                    })?;
                let subject = SubjectFields::of(&request);
                (
                    Some(request.request_id),
                    subject,
                    Some(request.subject_jurisdiction),
                )
            }
        };
        Ok(AuditInput {
            event_type: event_type.to_owned(),
            digest,
            request_id,
            subject,
            jurisdiction,
        })
    }
}

/// A field of a record value.
fn field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    match value {
        Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        _ => None,
    }
}

/// A shard's state in the `log` store.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Shard {
    frontier: Frontier,
    /// Size of the last checkpoint.
    checkpointed: u64,
}

const SHARD: &[u8] = b"shard";

impl AuditStage {
    fn origin(&self, ctx: &Context<'_>) -> String {
        format!("{}/{}", self.config.origin, ctx.partition())
    }

    fn checkpoint(
        &self,
        ctx: &mut Context<'_>,
        origin: &str,
        shard: &mut Shard,
    ) -> Result<(), ProcessError> {
        let body = CheckpointBody {
            origin: origin.to_owned(),
            size: shard.frontier.size,
            root: shard.frontier.root(),
        };
        let signer = ctx.resource::<SharedCheckpointSigner>(CHECKPOINT_SIGNER)?;
        let (public_key, signature) = signer
            .sign(body.text().as_bytes())
            .map_err(|e| ProcessError::new(format!("checkpoint signing: {e}")))?;
        let name = &self.config.origin;
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            tree_size: body.size as i64,
            root_hash: body.root.to_vec(),
            note: signed_note(&body, name, &public_key, &signature),
            signatures: vec![NoteSignature {
                key_name: name.clone(),
                key_id: key_id(name, &public_key).to_vec(),
                signature,
            }],
            created_at: epoch_millis(ctx.now()),
        };
        shard.checkpointed = shard.frontier.size;
        // Routed by origin whether a record or a punctuation wrote it: a shard's checkpoints
        // must share one partition to be read in order (an emit from punctuation would stay
        // on the partition being punctuated, one from a record would go where the origin
        // hashes, and `anchor run` would then skip the older ones as already covered).
        ctx.route("checkpoints", origin.to_owned(), &checkpoint)
    }
}

impl Processor for AuditStage {
    type Input = AuditInput;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<AuditInput>,
    ) -> Result<(), ProcessError> {
        if record.offset < 0 {
            // Positions identify entries and derive encryption nonces: a fused hand-over has
            // none yet.
            return Err(ProcessError::new(
                "the audit stage must read committed topics: do not fuse it with its producers",
            ));
        }
        let origin = self.origin(ctx);
        let input = record.value;
        let event = EventRef {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            event_type: input.event_type,
        };
        // A request this region does not serve (misrouted; tenancy refuses it) is logged, but
        // nothing of its subject is kept here, not even a key for it.
        let served = match (&input.jurisdiction, ctx.resource::<RegionSpec>(REGION)) {
            (Some(jurisdiction), Ok(region)) => region.serves(jurisdiction),
            _ => true,
        };
        if !served {
            ctx.count("subject_not_served", "");
        }
        let encrypted_fields = match input.subject.filter(|_| served) {
            None => None,
            Some((key_id, fields)) => {
                let keys = ctx.resource::<SharedSubjectKeys>(SUBJECT_KEYS)?;
                match keys
                    .key(&key_id)
                    .map_err(|e| ProcessError::new(format!("subject key store: {e}")))?
                {
                    Some(key) => Some(crate::subject::seal(&key, &key_id, &event, &fields)),
                    None => {
                        ctx.count("subject_erased", "");
                        None
                    }
                }
            }
        };
        // Read and written typed: its JSON is encoded once per transaction, not per entry.
        let mut shard: Shard = ctx.store("log")?.get_cached(SHARD)?.unwrap_or_default();
        let mut entry = AuditEntry {
            origin: origin.clone(),
            index: shard.frontier.size as i64,
            leaf_hash: Vec::new(),
            event,
            event_digest: input.digest.to_vec(),
            request_id: input.request_id,
            encrypted_fields,
            appended_at: epoch_millis(ctx.now()),
        };
        let leaf_hash = entry.computed_leaf_hash();
        entry.leaf_hash = leaf_hash.to_vec();
        shard.frontier.append(leaf_hash);
        ctx.count("entries", &entry.event.event_type);
        ctx.emit("log", origin.clone(), &entry)?;
        if shard.frontier.size - shard.checkpointed >= self.config.checkpoint_every {
            self.checkpoint(ctx, &origin, &mut shard)?;
        }
        ctx.store("log")?.put_cached(SHARD, shard)
    }

    /// A checkpoint of whatever was appended since the last one, so a quiet log is still
    /// checkpointed (and anchored) within one punctuation interval.
    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let mut shard: Shard = match ctx.store("log")?.get_cached(SHARD)? {
            Some(s) => s,
            None => return Ok(()),
        };
        if shard.frontier.size == shard.checkpointed {
            return Ok(());
        }
        let origin = self.origin(ctx);
        self.checkpoint(ctx, &origin, &mut shard)?;
        ctx.store("log")?.put_cached(SHARD, shard)
    }
}
