//! Rust mirrors of the record schemas the runtime and stages produce or consume.
//! Each type's field names and order follow its `.avsc` file; `tests::every_event_round_trips`
//! fails when they drift apart.

use serde::{Deserialize, Serialize};

use crate::Event;

/// `demo_event.avsc`: input of the sample counting topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoEvent {
    /// Partitioning key.
    pub key: String,
    /// Producer-assigned sequence number.
    pub seq: i64,
    /// Filler.
    pub payload: String,
}

impl Event for DemoEvent {
    const FULL_NAME: &'static str = "pavilion.DemoEvent";
}

/// `key_count.avsc`: running count per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    /// The key counted.
    pub key: String,
    /// Sequence number of the input event.
    pub seq: i64,
    /// Events of this key so far, this one included.
    pub count: i64,
}

impl Event for KeyCount {
    const FULL_NAME: &'static str = "pavilion.KeyCount";
}

/// `key_total.avsc`: running sum of counts per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyTotal {
    /// The key.
    pub key: String,
    /// Sequence number of the original input event.
    pub seq: i64,
    /// The count carried by the `KeyCount`.
    pub count: i64,
    /// Sum of all counts seen for this key.
    pub sum: i64,
}

impl Event for KeyTotal {
    const FULL_NAME: &'static str = "pavilion.KeyTotal";
}

/// `dead_letter.avsc`: why a record could not be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// A reason this reader does not know (evolution fallback).
    Unknown,
    /// The bytes are not a framed Avro record.
    Undecodable,
    /// The fingerprint names no schema of the contract.
    UnknownSchema,
    /// A record of another type than the stage reads.
    SchemaMismatch,
    /// The processor refused the record.
    ProcessorError,
    /// A request whose sender is not authenticated (unknown tenant or key, bad signature, too
    /// large to verify): it gets no decision, because a decision would carry a request id
    /// the sender has not proven it owns.
    Unauthenticated,
    /// A request for a subject of a jurisdiction this region does not serve. Residency: the
    /// dead letter keeps neither its key nor its bytes, only where it was.
    NotServed,
}

/// `dead_letter.avsc`: a record that could not be decoded or processed, with its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Stage that dead-lettered it.
    pub stage: String,
    /// Reason code.
    pub reason: DeadLetterReason,
    /// Human-readable detail.
    pub detail: String,
    /// Topic it was read from.
    pub source_topic: String,
    /// Partition it was read from.
    pub source_partition: i32,
    /// Offset (-1 for a record handed over inside a fused task).
    pub source_offset: i64,
    /// Original key.
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub original_key: Option<Vec<u8>>,
    /// Original value.
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub original_value: Option<Vec<u8>>,
    /// Kafka timestamp of the record, ms.
    pub record_timestamp: Option<i64>,
    /// When it was dead-lettered, ms.
    pub dead_lettered_at: i64,
}

impl Event for DeadLetter {
    const FULL_NAME: &'static str = "pavilion.DeadLetter";
}
