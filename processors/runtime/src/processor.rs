//! The shape every stage has: typed records in, state stores, records out.

use pavilion_schemas::{CodecError, Event, Registry};

use crate::context::Context;

/// A record as a processor sees it: decoded value plus where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<T> {
    /// The record key (empty when the record had none).
    pub key: Vec<u8>,
    /// The decoded value.
    pub value: T,
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Offset, or -1 for a record handed over inside a fused task before it has one.
    pub offset: i64,
    /// Record timestamp, milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// What a processor reads: one event type, or an enum over the types of several inputs.
pub trait Input: Sized {
    /// Decodes the framed bytes read from `topic`.
    fn decode(registry: &Registry, topic: &str, bytes: &[u8]) -> Result<Self, CodecError>;
}

impl<E: Event> Input for E {
    fn decode(registry: &Registry, _topic: &str, bytes: &[u8]) -> Result<Self, CodecError> {
        registry.decode(bytes)
    }
}

/// A stage's failure on one record: the record goes to the dead-letter topic with this reason
/// and nothing it wrote or emitted survives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProcessError {
    message: String,
    reason: pavilion_schemas::DeadLetterReason,
    globals_behind: bool,
}

impl ProcessError {
    /// An error with a message (dead-lettered as `processor_error`).
    pub fn new(message: impl Into<String>) -> Self {
        ProcessError {
            message: message.into(),
            reason: pavilion_schemas::DeadLetterReason::ProcessorError,
            globals_behind: false,
        }
    }

    /// The record names a global entry this process has not read yet, though an input says
    /// it exists (an accepted request names a policy revision another task read): the
    /// runtime catches the global stores up to their sources' current end and processes the
    /// record once more. Only if it is still missing then is the record dead-lettered.
    pub fn globals_behind(message: impl Into<String>) -> Self {
        ProcessError {
            globals_behind: true,
            ..ProcessError::new(message)
        }
    }

    /// Whether this is [`ProcessError::globals_behind`].
    pub fn is_globals_behind(&self) -> bool {
        self.globals_behind
    }

    /// A record the stage refuses for a reason of the contract, not a fault (e.g.
    /// `unauthenticated`): operators tell the two apart by the dead letter's reason.
    pub fn refused(reason: pavilion_schemas::DeadLetterReason, message: impl Into<String>) -> Self {
        ProcessError {
            message: message.into(),
            reason,
            globals_behind: false,
        }
    }
}

/// A stage's logic. It never sees Kafka: the runtime decodes input, hands it a [`Context`]
/// with its stores and an `emit`, and makes the effects of each record atomic.
pub trait Processor: Send {
    /// What the stage reads.
    type Input: Input;

    /// Handles one record.
    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<Self::Input>,
    ) -> Result<(), ProcessError>;

    /// Called every `punctuate_every` (topology.yaml) for each assigned partition, with the
    /// context's clock; for expiry and periodic output.
    fn punctuate(&mut self, _ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        Ok(())
    }
}

/// Why a raw record could not be processed; names the dead-letter reason code.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The bytes are not a record of the contract.
    #[error(transparent)]
    Decode(#[from] CodecError),
    /// The processor refused the record.
    #[error(transparent)]
    Process(#[from] ProcessError),
}

impl StageError {
    /// The dead-letter reason code (`DeadLetterReason` in `dead_letter.avsc`).
    pub fn reason(&self) -> pavilion_schemas::DeadLetterReason {
        use pavilion_schemas::DeadLetterReason as R;
        match self {
            StageError::Decode(CodecError::SchemaMismatch { .. }) => R::SchemaMismatch,
            StageError::Decode(CodecError::UnknownFingerprint(_)) => R::UnknownSchema,
            StageError::Decode(_) => R::Undecodable,
            StageError::Process(e) => e.reason,
        }
    }
}

/// A raw record as the runtime hands it over.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset (-1 inside a fused task).
    pub offset: i64,
    /// Timestamp, ms.
    pub timestamp_ms: i64,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub value: Option<&'a [u8]>,
}

/// A processor with its input type erased, so the runtime can hold stages of any kind.
pub trait DynProcessor: Send {
    /// Decodes and processes one raw record.
    fn process_raw(&mut self, ctx: &mut Context<'_>, raw: RawRecord<'_>) -> Result<(), StageError>;
    /// Punctuates.
    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError>;
}

impl<P: Processor> DynProcessor for P {
    fn process_raw(&mut self, ctx: &mut Context<'_>, raw: RawRecord<'_>) -> Result<(), StageError> {
        let bytes = raw.value.unwrap_or_default();
        let value = P::Input::decode(ctx.registry(), raw.topic, bytes)?;
        let record = Record {
            key: raw.key.unwrap_or_default().to_vec(),
            value,
            topic: raw.topic.to_owned(),
            partition: raw.partition,
            offset: raw.offset,
            timestamp_ms: raw.timestamp_ms,
        };
        Ok(self.process(ctx, record)?)
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        Processor::punctuate(self, ctx)
    }
}

/// A processor kind: what `kind:` in topology.yaml names. Each stage crate exports one.
pub struct StageKind {
    /// The name used in topology.yaml.
    pub name: &'static str,
    /// Output names the processor emits to; the topology maps each to a topic.
    pub outputs: &'static [&'static str],
    /// Stores the processor opens.
    pub stores: &'static [&'static str],
    /// Global stores the processor reads (see [`crate::global`]).
    pub globals: &'static [GlobalKind],
    /// Validates the `config:` section without building anything.
    pub check_config: fn(&serde_json::Value) -> Result<(), String>,
    /// Builds a processor from a checked config.
    pub build: fn(&serde_json::Value) -> Result<Box<dyn DynProcessor>, String>,
}

/// How a kind keys the entries of one of its global stores.
pub type GlobalKeyFn = fn(value: &[u8]) -> Result<Vec<u8>, String>;

/// A global store a kind reads: by default a table of its source's latest value per record
/// key (Kafka Streams' GlobalKTable). A kind may instead key each entry by what the record
/// holds (`keyed`), as Kafka Streams' global stores with a state-update processor do: the
/// policy stage finds a document by tenant, policy id and version on a topic keyed by tenant.
#[derive(Clone, Copy)]
pub struct GlobalKind {
    /// The store's name (`globals:` in topology.yaml maps it to a topic).
    pub name: &'static str,
    /// The entry key of a source value, when not the record key. Tombstones and values it
    /// refuses are skipped: such a store never deletes.
    pub key: Option<GlobalKeyFn>,
    /// The version of a source value, as bytes that sort like versions, when the source is
    /// written in several regions: an entry is replaced only by a value of a version at least
    /// its own, whichever region's copy arrives first, and tombstones are ignored (deletes are
    /// versioned records). `None`: the last record read wins.
    pub version: Option<GlobalKeyFn>,
}

impl GlobalKind {
    /// A table keyed by record key.
    pub const fn table(name: &'static str) -> Self {
        GlobalKind {
            name,
            key: None,
            version: None,
        }
    }

    /// A store keyed by `key(value)`.
    pub const fn keyed(name: &'static str, key: GlobalKeyFn) -> Self {
        GlobalKind {
            name,
            key: Some(key),
            version: None,
        }
    }

    /// The same store, keeping per entry the value of the greatest `version(value)`.
    pub const fn versioned(self, version: GlobalKeyFn) -> Self {
        GlobalKind {
            version: Some(version),
            ..self
        }
    }
}

/// The kinds a binary knows, by name.
#[derive(Default)]
pub struct StageKinds(Vec<&'static StageKind>);

impl StageKinds {
    /// A set of kinds.
    pub fn new(kinds: impl IntoIterator<Item = &'static StageKind>) -> Self {
        StageKinds(kinds.into_iter().collect())
    }

    /// Looks a kind up.
    pub fn get(&self, name: &str) -> Option<&'static StageKind> {
        self.0.iter().copied().find(|k| k.name == name)
    }

    /// Every kind's name.
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|k| k.name).collect()
    }
}

/// A count in a stage's config (`#[serde(deserialize_with = "pavilion_runtime::yaml_count")]`):
/// the topology hands every YAML scalar over as a string.
pub fn yaml_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    yaml_scalar(d)
}

/// Any number in a stage's config (`deserialize_with = "pavilion_runtime::yaml_scalar"`),
/// given as a YAML scalar (a string) or as a JSON number.
pub fn yaml_scalar<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + std::str::FromStr,
{
    use serde::Deserialize;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar<T> {
        Number(T),
        Text(String),
    }
    match Scalar::<T>::deserialize(d)? {
        Scalar::Number(n) => Ok(n),
        Scalar::Text(t) => t
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{t}` is not a number of this kind"))),
    }
}

/// Deserializes a stage config strictly (the config struct should deny unknown fields).
pub fn parse_config<T: serde::de::DeserializeOwned>(
    value: &serde_json::Value,
) -> Result<T, String> {
    serde_json::from_value(value.clone()).map_err(|e| e.to_string())
}

/// The resource naming the region this process runs in (a
/// [`crate::topology::RegionSpec`]): given when the topology has regions and the process was
/// told its own; stages that care (tenancy's residency check) find it under this name.
pub const REGION: &str = "region";

/// Things from outside the topology a binary hands its stages (a signing key ring, an HSM
/// session), by name. Stages stay free of connectors: they name the interface, the binary
/// supplies the implementation.
#[derive(Clone, Default)]
pub struct Resources(
    std::collections::BTreeMap<String, std::sync::Arc<dyn std::any::Any + Send + Sync>>,
);

impl Resources {
    /// Adds `value` under `name`.
    pub fn insert<T: std::any::Any + Send + Sync>(&mut self, name: &str, value: T) {
        self.0.insert(name.to_owned(), std::sync::Arc::new(value));
    }

    /// The resource `name`, if it is a `T`.
    pub fn get<T: std::any::Any + Send + Sync>(&self, name: &str) -> Option<&T> {
        self.0.get(name)?.downcast_ref()
    }
}
