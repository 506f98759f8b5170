//! Drive a task without a broker: records in → outputs and state out. Stage unit tests use
//! this with `expect![...]` snapshots; it runs the same [`TaskRunner`] the executor runs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pavilion_schemas::{DeadLetter, Event, Registry};

use crate::clock::{Clock, ManualClock};
use crate::global::{GlobalRecord, GlobalStores};
use crate::processor::{RawRecord, StageKinds};
use crate::store::PartitionStores;
use crate::task::{OutRecord, TaskRunner};
use crate::telemetry::Telemetry;
use crate::topology::Topology;

/// A task on one partition, with real RocksDB stores in a temporary directory and a manual
/// clock. Every `send` is its own committed transaction.
pub struct TestDriver {
    runner: TaskRunner,
    stores: PartitionStores,
    clock: ManualClock,
    registry: &'static Registry,
    offset: i64,
    partition: i32,
    globals: Arc<GlobalStores>,
    _dir: tempfile::TempDir,
}

impl TestDriver {
    /// Builds task `task` of a topology given inline; panics with every topology error.
    pub fn new(topology_yaml: &str, task: &str, kinds: &StageKinds) -> Self {
        let registry = Registry::builtin();
        let topology = Topology::parse(topology_yaml, kinds, &|s| registry.schema(s).is_some())
            .unwrap_or_else(|e| panic!("test topology is invalid:\n{e}"));
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let mut runner = TaskRunner::new(
            &topology,
            task,
            kinds,
            registry,
            Arc::new(clock.clone()),
            Telemetry::new(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("temp dir");
        let stores =
            PartitionStores::open(&dir.path().join("partition"), runner.store_infos().to_vec())
                .expect("open stores");
        let globals = Arc::new(
            GlobalStores::open(&dir.path().join("global"), topology.task_globals(task))
                .expect("open global stores"),
        );
        runner.attach_globals(globals.clone());
        TestDriver {
            runner,
            stores,
            clock,
            registry,
            offset: 0,
            partition: 0,
            globals,
            _dir: dir,
        }
    }

    /// The clock stages see.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Sends a typed event to `topic` and returns what the task produced.
    pub fn send<E: Event>(&mut self, topic: &str, key: &str, value: &E) -> Vec<OutRecord> {
        let bytes = self.registry.encode(value).expect("encodable test event");
        self.send_raw(topic, key.as_bytes(), &bytes)
    }

    /// Reads the next records from `partition` (0 until this is called), with the same stores:
    /// a record that some producer put on a partition its key does not hash to.
    pub fn on_partition(&mut self, partition: i32) -> &mut Self {
        self.partition = partition;
        self
    }

    /// Sends raw bytes (for malformed-input tests).
    pub fn send_raw(&mut self, topic: &str, key: &[u8], value: &[u8]) -> Vec<OutRecord> {
        let mut out = Vec::new();
        let raw = RawRecord {
            topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: crate::clock::epoch_millis(self.clock.now()),
            key: Some(key),
            value: Some(value),
        };
        self.offset += 1;
        // Global records are applied as they are sent: the stores are as fresh as they get.
        self.runner
            .process_caught_up(&mut self.stores, raw, &mut out);
        self.stores.apply_committed().expect("apply");
        out
    }

    /// Sends a typed event as the executor first does, with global stores that may lag
    /// their sources: `Processed::GlobalsBehind` (and nothing produced, nothing kept) when a
    /// stage asks for the record again once they are caught up.
    pub fn send_first_attempt<E: Event>(
        &mut self,
        topic: &str,
        key: &str,
        value: &E,
    ) -> (crate::Processed, Vec<OutRecord>) {
        let bytes = self.registry.encode(value).expect("encodable test event");
        let mut out = Vec::new();
        let raw = RawRecord {
            topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: crate::clock::epoch_millis(self.clock.now()),
            key: Some(key.as_bytes()),
            value: Some(&bytes),
        };
        self.offset += 1;
        let processed = self.runner.process(&mut self.stores, raw, &mut out);
        self.stores.apply_committed().expect("apply");
        (processed, out)
    }

    /// Gives the stages resources, as a binary would.
    pub fn attach_resources(&mut self, resources: crate::processor::Resources) {
        self.runner.attach_resources(resources);
    }

    /// Writes a record (`None`: a tombstone) to a global store's source topic, as the
    /// executor would apply it.
    pub fn send_global<E: Event>(&mut self, topic: &str, key: &[u8], value: Option<&E>) {
        let bytes = value.map(|v| self.registry.encode(v).expect("encodable test event"));
        self.send_global_raw(topic, key, bytes.as_deref());
    }

    /// Writes raw bytes to a global store's source topic (for malformed-input tests).
    pub fn send_global_raw(&mut self, topic: &str, key: &[u8], value: Option<&[u8]>) {
        let record = GlobalRecord {
            topic,
            partition: 0,
            offset: self.offset,
            key,
            value,
        };
        self.offset += 1;
        assert!(
            !self.globals.sources([topic]).is_empty(),
            "no global store of this task reads `{topic}`"
        );
        self.globals.apply(&[record]).expect("apply global record");
    }

    /// Runs every punctuation that is due.
    pub fn punctuate(&mut self) -> Vec<OutRecord> {
        let mut out = Vec::new();
        let due = self.runner.punctuations_due();
        self.runner.punctuate(&due, &mut self.stores, 0, &mut out);
        self.stores.apply_committed().expect("apply");
        out
    }

    /// Committed contents of a store as `key = json` lines.
    pub fn store(&self, stage: &str, store: &str) -> String {
        let index = self
            .stores
            .index(stage, store)
            .unwrap_or_else(|| panic!("no store {stage}.{store}"));
        self.stores
            .committed(index)
            .expect("read store")
            .into_iter()
            .map(|(k, v)| {
                format!(
                    "{} = {}\n",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(&v)
                )
            })
            .collect()
    }

    /// Renders produced records one per line, values decoded to JSON, for snapshots.
    pub fn render(&self, out: &[OutRecord]) -> String {
        out.iter()
            .map(|r| {
                if let Ok(dead) = self.registry.decode::<DeadLetter>(&r.value) {
                    return render_dead_letter(r, &dead);
                }
                let value = match self.registry.decode_value(&r.value) {
                    Ok((name, v)) => {
                        let json = serde_json::Value::try_from(v).map_or_else(
                            |e| format!("<{e}>"),
                            |j| crate::topology::sorted_json(j).to_string(),
                        );
                        format!("{name} {json}")
                    }
                    Err(e) => format!("<undecodable: {e}>"),
                };
                let partition = r.partition.map_or("*".to_owned(), |p| p.to_string());
                format!(
                    "{}[{partition}] {} {value}\n",
                    r.topic,
                    String::from_utf8_lossy(&r.key)
                )
            })
            .collect()
    }
}

/// A dead letter field by field, its bytes escaped, so snapshots show what was refused.
fn render_dead_letter(r: &OutRecord, d: &DeadLetter) -> String {
    let bytes = |b: &Option<Vec<u8>>| {
        b.as_ref()
            .map_or("none".into(), |b| format!("b\"{}\"", b.escape_ascii()))
    };
    let reason = serde_json::to_value(d.reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "{}[{}] {} DeadLetter stage={} reason={reason} from={}[{}]@{} at={} record_timestamp={:?}\n  detail: {}\n  key: {} value: {}\n",
        r.topic,
        r.partition.map_or("*".into(), |p| p.to_string()),
        String::from_utf8_lossy(&r.key),
        d.stage,
        d.source_topic,
        d.source_partition,
        d.source_offset,
        d.dead_lettered_at,
        d.record_timestamp,
        d.detail,
        bytes(&d.original_key),
        bytes(&d.original_value),
    )
}
