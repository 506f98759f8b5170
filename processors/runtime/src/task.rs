//! A task's processing, independent of Kafka: run a record through the task's chain of
//! stages, make each stage's effects on one record atomic, route failures to the DLQ, hand
//! intermediate records to the next fused stage. The Kafka executor (connectors/kafka) and
//! the test driver ([`crate::testing`]) both drive this same code.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pavilion_schemas::{DeadLetter, DeadLetterReason, Registry};

use crate::clock::{epoch_millis, Clock};
use crate::context::{Context, Emitted, StageWiring};
use crate::global::GlobalStores;
use crate::processor::{DynProcessor, ProcessError, RawRecord, Resources, StageError, StageKinds};
use crate::store::{PartitionStores, StoreInfo};
use crate::telemetry::Telemetry;
use crate::topology::Topology;

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic")
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Topic.
    pub topic: String,
    /// Explicit partition when the record stays on its input partition (co-partitioned
    /// topics); `None` lets the producer hash the key.
    pub partition: Option<i32>,
    /// Key.
    pub key: Vec<u8>,
    /// Framed value.
    pub value: Vec<u8>,
}

struct Stage {
    wiring: StageWiring,
    processor: Box<dyn DynProcessor>,
    punctuate_every: Option<Duration>,
    last_punctuation: Option<SystemTime>,
}

/// The stages of one task, ready to process.
pub struct TaskRunner {
    stages: Vec<Stage>,
    stores: Vec<StoreInfo>,
    input_partitions: i32,
    topic_partitions: std::collections::BTreeMap<String, i32>,
    dlq: String,
    registry: &'static Registry,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    globals: Option<Arc<GlobalStores>>,
    resources: Resources,
}

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Processed {
    /// Processed, or dead-lettered.
    Done,
    /// A stage needs global entries not read yet; nothing of the record was kept.
    GlobalsBehind,
}

impl TaskRunner {
    /// Builds the processors of task `task` from the topology.
    pub fn new(
        topology: &Topology,
        task: &str,
        kinds: &StageKinds,
        registry: &'static Registry,
        clock: Arc<dyn Clock>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, String> {
        let spec = topology
            .tasks
            .get(task)
            .ok_or_else(|| format!("no task `{task}` in the topology"))?;
        let mut stages = Vec::new();
        let mut stores = Vec::new();
        for name in &spec.stages {
            let stage = &topology.stages[name];
            let kind = kinds
                .get(&stage.kind)
                .ok_or_else(|| format!("unknown kind `{}`", stage.kind))?;
            let processor =
                (kind.build)(&stage.config).map_err(|e| format!("stage `{name}`: {e}"))?;
            let first = stores.len();
            stores.extend(stage.stores.iter().map(|s| StoreInfo {
                stage: name.clone(),
                name: s.name.clone(),
                changelog: s.changelog.clone(),
            }));
            stages.push(Stage {
                wiring: StageWiring {
                    name: name.clone(),
                    inputs: stage.inputs.clone(),
                    outputs: stage.outputs.clone(),
                    stores: first..stores.len(),
                },
                processor,
                punctuate_every: stage.punctuate_every,
                last_punctuation: None,
            });
        }
        Ok(TaskRunner {
            stages,
            stores,
            input_partitions: topology.task_partitions(spec),
            topic_partitions: topology
                .topics
                .iter()
                .map(|(n, t)| (n.clone(), t.partitions))
                .collect(),
            dlq: topology.dlq.clone(),
            registry,
            clock,
            telemetry,
            globals: None,
            resources: Resources::default(),
        })
    }

    /// Gives the stages the binary's resources (see [`Resources`]).
    pub fn attach_resources(&mut self, resources: Resources) {
        self.resources = resources;
    }

    /// Gives the stages their global stores (opened by whoever drives the task).
    pub fn attach_globals(&mut self, globals: Arc<GlobalStores>) {
        self.globals = Some(globals);
    }

    /// The stores every partition of this task has.
    pub fn store_infos(&self) -> &[StoreInfo] {
        &self.stores
    }

    /// Runs one input record through the chain; appends what to produce to `out`. With
    /// global stores that may lag their sources, `Processed::GlobalsBehind` asks the caller
    /// to catch them up and call [`TaskRunner::process_caught_up`] with the same record;
    /// nothing of the record was kept.
    pub fn process(
        &mut self,
        stores: &mut PartitionStores,
        raw: RawRecord<'_>,
        out: &mut Vec<OutRecord>,
    ) -> Processed {
        let first = self.first_stage(raw.topic);
        self.run_stage(first, true, stores, raw, out)
    }

    /// Like [`TaskRunner::process`], with global stores read to their sources' end: a record
    /// that still finds its global entry missing is dead-lettered.
    pub fn process_caught_up(
        &mut self,
        stores: &mut PartitionStores,
        raw: RawRecord<'_>,
        out: &mut Vec<OutRecord>,
    ) {
        let first = self.first_stage(raw.topic);
        let _done = self.run_stage(first, false, stores, raw, out);
    }

    /// A fused task also reads later stages' side inputs: a record starts at the first stage
    /// that reads its topic.
    fn first_stage(&self, topic: &str) -> usize {
        self.stages
            .iter()
            .position(|s| s.wiring.inputs.iter().any(|t| t == topic))
            .unwrap_or(0)
    }

    /// `may_retry`: a stage finding its global stores behind may ask for the record again
    /// (only the record's first stage, before anything of it was kept, and only once).
    fn run_stage(
        &mut self,
        index: usize,
        may_retry: bool,
        stores: &mut PartitionStores,
        raw: RawRecord<'_>,
        out: &mut Vec<OutRecord>,
    ) -> Processed {
        let started = Instant::now();
        let mut emitted = Vec::new();
        let stage = &mut self.stages[index];
        let result = {
            let mut ctx = Context::new(
                &stage.wiring,
                stores,
                &mut emitted,
                self.registry,
                &self.telemetry,
                self.clock.now(),
                raw.partition,
            )
            .with_partitions(self.input_partitions)
            .with_globals(self.globals.as_deref())
            .with_resources(&self.resources);
            // A panicking stage must not take the task down: the record is dead-lettered
            // like any other processor error and its staged writes are dropped.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                stage.processor.process_raw(&mut ctx, raw)
            }))
            .unwrap_or_else(|panic| {
                Err(StageError::Process(ProcessError::new(format!(
                    "stage panicked: {}",
                    panic_message(&*panic)
                ))))
            })
        };
        let stage_name = stage.wiring.name.clone();
        self.telemetry
            .record_processed(&stage_name, started.elapsed());
        let key = raw.key.unwrap_or_default();
        let result = result.and_then(|()| {
            let rekeyed = emitted.iter().find_map(|e| {
                self.reader_after(index, &e.topic)
                    .filter(|_| e.key != key)
                    .map(|reader| (reader, &e.topic))
            });
            match rekeyed {
                Some((reader, topic)) => Err(StageError::Process(ProcessError::new(format!(
                    "re-keyed a record for fused stage `{}` on {topic}; stages fused together must keep the key",
                    self.stages[reader].wiring.name
                )))),
                None => Ok(()),
            }
        });
        match result {
            Ok(()) => {
                stores.keep_staged();
                for e in emitted {
                    let reader = self.reader_after(index, &e.topic);
                    self.push(&stage_name, raw.partition, key, &e, out);
                    if let Some(reader) = reader {
                        let next = RawRecord {
                            topic: &e.topic,
                            partition: raw.partition,
                            offset: -1,
                            timestamp_ms: raw.timestamp_ms,
                            key: Some(&e.key),
                            value: Some(&e.value),
                        };
                        let _done = self.run_stage(reader, false, stores, next, out);
                    }
                }
            }
            Err(StageError::Process(e)) if may_retry && e.is_globals_behind() => {
                stores.drop_staged();
                return Processed::GlobalsBehind;
            }
            Err(error) => {
                stores.drop_staged();
                self.dead_letter(&stage_name, &error, raw, out);
            }
        }
        Processed::Done
    }

    /// The first later stage of the chain that reads `topic`: a record emitted there is
    /// handed to it in-process (the chain does not consume its own topics). Not only the next
    /// stage: a later one may read an earlier one's side output (tenancy's rejections are
    /// signed by the signing stage, past policy and psi).
    fn reader_after(&self, index: usize, topic: &str) -> Option<usize> {
        (index + 1..self.stages.len())
            .find(|&i| self.stages[i].wiring.inputs.iter().any(|t| t == topic))
    }

    /// Queues an emitted record. A record that keeps its input's key on a topic with as many
    /// partitions stays on the input partition (so state and ordering stay where they were,
    /// split or fused, whatever partitioner the original producer used); a re-keyed record is
    /// placed by the producer's key hash; a routed one where its key belongs.
    fn push(
        &self,
        stage: &str,
        partition: i32,
        input_key: &[u8],
        e: &Emitted,
        out: &mut Vec<OutRecord>,
    ) {
        self.telemetry.record_emitted(stage, &e.topic);
        let partitions = self.topic_partitions.get(&e.topic).copied();
        let partition = if e.routed {
            partitions.map(|n| crate::partitioner::partition_for(&e.key, n))
        } else {
            let copartitioned = e.key == input_key && partitions == Some(self.input_partitions);
            copartitioned.then_some(partition)
        };
        out.push(OutRecord {
            topic: e.topic.clone(),
            partition,
            key: e.key.clone(),
            value: e.value.clone(),
        });
    }

    fn dead_letter(
        &self,
        stage: &str,
        error: &StageError,
        raw: RawRecord<'_>,
        out: &mut Vec<OutRecord>,
    ) {
        let reason = error.reason();
        let detail = error.to_string();
        let reason_name = serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.telemetry.record_dead_lettered(
            stage,
            &reason_name,
            &detail,
            raw.topic,
            raw.partition,
            raw.offset,
        );
        // A record refused for residency must leave no copy of itself in this region.
        let keeps_payload = reason != DeadLetterReason::NotServed;
        let record = DeadLetter {
            stage: stage.to_owned(),
            reason,
            detail,
            source_topic: raw.topic.to_owned(),
            source_partition: raw.partition,
            source_offset: raw.offset,
            original_key: raw.key.filter(|_| keeps_payload).map(<[u8]>::to_vec),
            original_value: raw.value.filter(|_| keeps_payload).map(<[u8]>::to_vec),
            record_timestamp: Some(raw.timestamp_ms),
            dead_lettered_at: epoch_millis(self.clock.now()),
        };
        let value = self
            .registry
            .encode(&record)
            .expect("the DeadLetter schema encodes every DeadLetter");
        out.push(OutRecord {
            topic: self.dlq.clone(),
            partition: None,
            key: raw.key.unwrap_or_default().to_vec(),
            value,
        });
    }

    /// Stages whose punctuation is due now; marks them as punctuated. The executor then calls
    /// [`TaskRunner::punctuate`] with them for every assigned partition.
    pub fn punctuations_due(&mut self) -> Vec<usize> {
        // The injected clock, not `Instant`: tests move time by hand and punctuation follows.
        let now = self.clock.now();
        let mut due = Vec::new();
        for (index, stage) in self.stages.iter_mut().enumerate() {
            let Some(every) = stage.punctuate_every else {
                continue;
            };
            if stage
                .last_punctuation
                .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= every)
            {
                stage.last_punctuation = Some(now);
                due.push(index);
            }
        }
        due
    }

    /// Punctuates the given stages on one partition's stores.
    pub fn punctuate(
        &mut self,
        due: &[usize],
        stores: &mut PartitionStores,
        partition: i32,
        out: &mut Vec<OutRecord>,
    ) {
        for &index in due {
            let stage = &mut self.stages[index];
            let mut emitted = Vec::new();
            let result = {
                let mut ctx = Context::new(
                    &stage.wiring,
                    stores,
                    &mut emitted,
                    self.registry,
                    &self.telemetry,
                    self.clock.now(),
                    partition,
                )
                .with_partitions(self.input_partitions)
                .with_globals(self.globals.as_deref())
                .with_resources(&self.resources);
                stage.processor.punctuate(&mut ctx)
            };
            let name = stage.wiring.name.clone();
            match result {
                Ok(()) => {
                    stores.keep_staged();
                    // Like a processed record's outputs, a punctuator's are handed to the
                    // later stage of a fused chain that reads them (the chain does not
                    // consume its own topics).
                    for e in &emitted {
                        self.push(&name, partition, &e.key, e, out);
                        if let Some(reader) = self.reader_after(index, &e.topic) {
                            let next = RawRecord {
                                topic: &e.topic,
                                partition,
                                offset: -1,
                                timestamp_ms: epoch_millis(self.clock.now()),
                                key: Some(&e.key),
                                value: Some(&e.value),
                            };
                            let _done = self.run_stage(reader, false, stores, next, out);
                        }
                    }
                }
                Err(e) => {
                    stores.drop_staged();
                    tracing::error!(stage = name, error = %e, "punctuation failed; its effects were dropped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
