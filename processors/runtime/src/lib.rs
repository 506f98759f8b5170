//! What a stage sees, and nothing about Kafka.
//!
//! A stage is a [`Processor`]: typed records in, [`Context`] with state stores and `emit`,
//! records out. [`TaskRunner`] runs a chain of stages (one, or several fused) on a partition's
//! [`PartitionStores`], making each record's effects atomic and sending failures to the
//! dead-letter topic. The Kafka executor in `connectors/kafka` wraps that in transactions;
//! [`testing::TestDriver`] runs it in-process for unit tests.
#![deny(missing_docs)]

pub mod clock;
mod context;
pub mod global;
pub mod partitioner;
mod processor;
pub mod store;
mod task;
pub mod telemetry;
pub mod testing;
pub mod topology;

pub use context::{Context, Emitted, GlobalStore, StageWiring, Store};
pub use processor::{
    parse_config, yaml_count, yaml_scalar, DynProcessor, GlobalKind, Input, ProcessError,
    Processor, RawRecord, Record, Resources, StageError, StageKind, StageKinds, REGION,
};
pub use task::{OutRecord, Processed, TaskRunner};
