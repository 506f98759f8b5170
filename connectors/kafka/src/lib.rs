//! The only crate that speaks Kafka.
//!
//! [`run_task`] is the exactly-once executor every stage runs under; [`ensure_topics`]
//! provisions topics from the topology. Stages never see anything from here.

pub mod acl;
mod admin;
mod client;
mod executor;
mod global;
mod settings;

pub use admin::{delete_topics_with_prefix, ensure_topics, topics_with_prefix, TopicStatus};
pub use client::{reachable, GroupReader, PlainProducer, ReadRecord, TopicReader};
pub use executor::{run_task, RunnerFactory};
pub use settings::{read_client_properties, ClientConfigError, KafkaSettings};
