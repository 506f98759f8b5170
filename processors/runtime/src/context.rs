//! The context a processor works through: its stores, `emit`, the clock. No Kafka in sight.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::SystemTime;

use pavilion_schemas::{Event, Registry};
use serde::{de::DeserializeOwned, Serialize};

use crate::global::GlobalStores;
use crate::processor::{ProcessError, Resources};
use crate::store::{PartitionStores, Read};
use crate::telemetry::Telemetry;
use crate::topology::{family_prefix, valid_member};

/// A record a processor emitted, encoded, addressed to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Destination topic.
    pub topic: String,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Framed Avro value.
    pub value: Vec<u8>,
    /// Sent with [`Context::route`]: placed where its key belongs, not on the input partition.
    pub routed: bool,
}

/// How one stage is wired inside its task.
#[derive(Debug, Clone)]
pub struct StageWiring {
    /// Stage name.
    pub name: String,
    /// Input topics.
    pub inputs: Vec<String>,
    /// Output name → topic.
    pub outputs: BTreeMap<String, String>,
    /// Its stores' indexes in [`PartitionStores`].
    pub stores: Range<usize>,
}

/// What a processor can do while handling a record or a punctuation.
pub struct Context<'a> {
    wiring: &'a StageWiring,
    stores: &'a mut PartitionStores,
    emitted: &'a mut Vec<Emitted>,
    registry: &'static Registry,
    telemetry: &'a Telemetry,
    now: SystemTime,
    partition: i32,
    partitions: i32,
    globals: Option<&'a GlobalStores>,
    resources: Option<&'a Resources>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        wiring: &'a StageWiring,
        stores: &'a mut PartitionStores,
        emitted: &'a mut Vec<Emitted>,
        registry: &'static Registry,
        telemetry: &'a Telemetry,
        now: SystemTime,
        partition: i32,
    ) -> Self {
        Context {
            wiring,
            stores,
            emitted,
            registry,
            telemetry,
            now,
            partition,
            partitions: 1,
            globals: None,
            resources: None,
        }
    }

    /// How many partitions the task's inputs have (where [`Context::owns_key`] looks).
    pub(crate) fn with_partitions(mut self, partitions: i32) -> Self {
        self.partitions = partitions;
        self
    }

    pub(crate) fn with_resources(mut self, resources: &'a Resources) -> Self {
        self.resources = Some(resources);
        self
    }

    /// The binary's resource `name` (see [`Resources`]); an error names what is missing.
    pub fn resource<T: std::any::Any + Send + Sync>(
        &self,
        name: &str,
    ) -> Result<&'a T, ProcessError> {
        self.resources
            .and_then(|r| r.get::<T>(name))
            .ok_or_else(|| {
                ProcessError::new(format!(
                    "stage `{}` needs the resource `{name}`, which this process was not given",
                    self.wiring.name
                ))
            })
    }

    pub(crate) fn with_globals(mut self, globals: Option<&'a GlobalStores>) -> Self {
        self.globals = globals;
        self
    }

    /// Encodes `value` and sends it to the topic mapped to `output` in topology.yaml.
    pub fn emit<E: Event>(
        &mut self,
        output: &str,
        key: impl Into<Vec<u8>>,
        value: &E,
    ) -> Result<(), ProcessError> {
        self.send(output, key.into(), value, false)
    }

    /// Whether a record keyed `key` belongs on the partition being processed, by Kafka's
    /// default partitioner over the task's input partitions (see [`Context::route`]).
    pub fn owns_key(&self, key: &[u8]) -> bool {
        crate::partitioner::partition_for(key, self.partitions) == self.partition
    }

    /// Like [`Context::emit`], but the record goes to the partition where `key` belongs by
    /// Kafka's default partitioner, wherever the record being processed was read: the
    /// repartition step of a stage whose state is per key, for records that producers with
    /// other partitioners (or other keys) put elsewhere.
    pub fn route<E: Event>(
        &mut self,
        output: &str,
        key: impl Into<Vec<u8>>,
        value: &E,
    ) -> Result<(), ProcessError> {
        self.send(output, key.into(), value, true)
    }

    fn send<E: Event>(
        &mut self,
        output: &str,
        key: Vec<u8>,
        value: &E,
        routed: bool,
    ) -> Result<(), ProcessError> {
        let topic = self.wiring.outputs.get(output).ok_or_else(|| {
            ProcessError::new(format!(
                "stage `{}` emitted to undeclared output `{output}`",
                self.wiring.name
            ))
        })?;
        if family_prefix(topic).is_some() {
            return Err(ProcessError::new(format!(
                "output `{output}` is the topic family `{topic}`; use emit_to_member"
            )));
        }
        let value = self.registry.encode(value).map_err(|e| {
            ProcessError::new(format!("encoding {} for `{output}`: {e}", E::FULL_NAME))
        })?;
        self.emitted.push(Emitted {
            topic: topic.clone(),
            key,
            value,
            routed,
        });
        Ok(())
    }

    /// Encodes `value` and sends it to member `member` of the topic family mapped to
    /// `output` (e.g. `pavilion.decisions.{tenant}` and a tenant id). The member must be a
    /// valid topic-name part; the runtime creates the member topic from the family's settings
    /// if it does not exist yet. Returns the encoded record, for a stage that attests to the
    /// exact bytes it sent (a digest of them) without encoding them a second time.
    pub fn emit_to_member<E: Event>(
        &mut self,
        output: &str,
        member: &str,
        key: impl Into<Vec<u8>>,
        value: &E,
    ) -> Result<&[u8], ProcessError> {
        let topic = self.member_topic(output, member)?;
        let value = self.registry.encode(value).map_err(|e| {
            ProcessError::new(format!("encoding {} for `{output}`: {e}", E::FULL_NAME))
        })?;
        self.emitted.push(Emitted {
            topic,
            key: key.into(),
            value,
            routed: false,
        });
        Ok(&self.emitted.last().expect("pushed above").value)
    }

    /// The topic of member `member` of the family mapped to `output`.
    pub fn member_topic(&self, output: &str, member: &str) -> Result<String, ProcessError> {
        let pattern = self.wiring.outputs.get(output).ok_or_else(|| {
            ProcessError::new(format!(
                "stage `{}` emitted to undeclared output `{output}`",
                self.wiring.name
            ))
        })?;
        let prefix = family_prefix(pattern).ok_or_else(|| {
            ProcessError::new(format!(
                "output `{output}` is the topic `{pattern}`, not a family; use emit"
            ))
        })?;
        if !valid_member(member) {
            return Err(ProcessError::new(format!(
                "`{member}` cannot name a member of `{pattern}` (letters, digits, `.`, `_`, `-`)"
            )));
        }
        Ok(format!("{prefix}{member}"))
    }

    /// A state store of this stage.
    pub fn store(&mut self, name: &str) -> Result<Store<'_>, ProcessError> {
        let index = self
            .wiring
            .stores
            .clone()
            .find(|&i| self.stores.infos()[i].name == name)
            .ok_or_else(|| {
                ProcessError::new(format!(
                    "stage `{}` has no store `{name}`",
                    self.wiring.name
                ))
            })?;
        Ok(Store {
            stores: self.stores,
            index,
        })
    }

    /// A global store of this stage: read-only, the same on every partition.
    pub fn global(&self, name: &str) -> Result<GlobalStore<'a>, ProcessError> {
        let missing = || {
            ProcessError::new(format!(
                "stage `{}` has no global store `{name}` (or the runtime attached none)",
                self.wiring.name
            ))
        };
        let globals = self.globals.ok_or_else(missing)?;
        let index = globals.index(&self.wiring.name, name).ok_or_else(missing)?;
        Ok(GlobalStore {
            globals,
            index,
            registry: self.registry,
        })
    }

    /// The current time from the runtime's clock.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// The partition being processed; stores are per partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// Counts a stage-specific event in `pavilion_stage_events_total{stage, event, label}`
    /// (e.g. `ctx.count("breaker.opened", provider)`). Keep labels low-cardinality, and never
    /// a tenant's request volumes: those are released only with differential privacy.
    pub fn count(&self, event: &str, label: &str) {
        self.telemetry.stage_event(&self.wiring.name, event, label);
    }

    /// The schema registry, for stages that decode nested payloads.
    pub fn registry(&self) -> &'static Registry {
        self.registry
    }
}

/// Prefix of the keys [`Store::put_until`] adds to a store's own.
pub const EXPIRY_INDEX: &str = "exp\0";

/// One key-value store, scoped to the current partition. Values are JSON-encoded.
pub struct Store<'a> {
    stores: &'a mut PartitionStores,
    index: usize,
}

impl Store<'_> {
    /// Reads a value.
    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ProcessError> {
        let raw = self
            .stores
            .get(self.index, key)
            .map_err(|e| ProcessError::new(e.to_string()))?;
        raw.map(|bytes| serde_json::from_slice(&bytes))
            .transpose()
            .map_err(|e| ProcessError::new(format!("corrupt state value: {e}")))
    }

    /// Writes a value.
    pub fn put<T: Serialize>(&mut self, key: &[u8], value: &T) -> Result<(), ProcessError> {
        let bytes = serde_json::to_vec(value).map_err(|e| ProcessError::new(e.to_string()))?;
        self.stores.stage(self.index, key, Some(bytes));
        Ok(())
    }

    /// Reads a value like [`Store::get`]; a value written by [`Store::put_cached`] in the open
    /// transaction comes back as a clone, without decoding its JSON.
    pub fn get_cached<T: DeserializeOwned + Clone + 'static>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, ProcessError> {
        let read = self
            .stores
            .get_typed::<T>(self.index, key)
            .map_err(|e| ProcessError::new(e.to_string()))?;
        match read {
            None => Ok(None),
            Some(Read::Typed(value)) => Ok(Some(value)),
            Some(Read::Bytes(bytes)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ProcessError::new(format!("corrupt state value: {e}"))),
        }
    }

    /// Writes a value like [`Store::put`], but keeps it as it is until the transaction needs
    /// its bytes: a key rewritten by every record is encoded once per transaction, not once
    /// per record. For values whose JSON round-trips to an equal value (a read after the
    /// commit decodes it) and always encodes (no map with non-string keys); debug builds check
    /// both at every write.
    pub fn put_cached<T>(&mut self, key: &[u8], value: T) -> Result<(), ProcessError>
    where
        T: Serialize + DeserializeOwned + Clone + PartialEq + Send + 'static,
    {
        if cfg!(debug_assertions) {
            let bytes = serde_json::to_vec(&value).map_err(|e| ProcessError::new(e.to_string()))?;
            let back: T = serde_json::from_slice(&bytes)
                .map_err(|e| ProcessError::new(format!("does not decode: {e}")))?;
            assert!(
                back == value,
                "a value written with put_cached must round-trip through JSON"
            );
        }
        self.stores
            .stage_typed(self.index, key, value, encode_json::<T>);
        Ok(())
    }

    /// Writes `value` under `key` and remembers it until `expires_ms` in an index by time, so
    /// that [`Store::expire`] forgets it (tenancy's seen request ids, signing's kept decisions).
    /// Keys starting with [`EXPIRY_INDEX`] are the index's.
    pub fn put_until<T: Serialize>(
        &mut self,
        key: &[u8],
        expires_ms: i64,
        value: &T,
    ) -> Result<(), ProcessError> {
        self.put(key, value)?;
        let mut index = format!("{EXPIRY_INDEX}{expires_ms:020}\0").into_bytes();
        index.extend_from_slice(key);
        self.put(&index, &expires_ms)
    }

    /// Forgets the values written by [`Store::put_until`] whose time is `now_ms` or earlier,
    /// oldest first, at most `batch` of them, so a punctuation stays short. Returns how many.
    pub fn expire(&mut self, now_ms: i64, batch: usize) -> Result<usize, ProcessError> {
        let upto = format!("{EXPIRY_INDEX}{now_ms:020}\u{1}").into_bytes();
        let due = self.scan::<i64>(EXPIRY_INDEX.as_bytes(), &upto, batch)?;
        // Index keys are the prefix, 20 digits, a NUL, then the value's own key.
        let skip = EXPIRY_INDEX.len() + 21;
        for (index, _) in &due {
            self.delete(&index[skip..]);
            self.delete(index);
        }
        Ok(due.len())
    }

    /// Keys in `[from, to)` with their values, in key order, at most `limit`.
    pub fn scan<T: DeserializeOwned>(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, ProcessError> {
        let entries = self
            .stores
            .scan(self.index, from, to, limit)
            .map_err(|e| ProcessError::new(e.to_string()))?;
        entries
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v)
                    .map(|v| (k, v))
                    .map_err(|e| ProcessError::new(format!("corrupt state value: {e}")))
            })
            .collect()
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: &[u8]) {
        self.stores.stage(self.index, key, None);
    }
}

/// The JSON of a value staged by [`Store::put_cached`].
fn encode_json<T: Serialize + 'static>(value: &dyn std::any::Any) -> Vec<u8> {
    let value = value
        .downcast_ref::<T>()
        .expect("staged with the encoder of its type");
    serde_json::to_vec(value).expect("put_cached values always encode")
}

/// A read-only global store. Values are the source topic's framed Avro records.
pub struct GlobalStore<'a> {
    globals: &'a GlobalStores,
    index: usize,
    registry: &'static Registry,
}

impl GlobalStore<'_> {
    /// The current record under `key` from family member `member` (`""` for a plain topic).
    /// An undecodable record is an error, not an absence, so a stage can tell the two apart.
    pub fn get<E: Event>(&self, member: &str, key: &[u8]) -> Result<Option<E>, ProcessError> {
        let raw = self
            .globals
            .get(self.index, member, key)
            .map_err(|e| ProcessError::new(e.to_string()))?;
        raw.map(|bytes| self.registry.decode::<E>(&bytes))
            .transpose()
            .map_err(|e| ProcessError::new(format!("global record `{member}`: {e}")))
    }
}
