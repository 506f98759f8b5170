//! Global stores: read-only tables a stage consults on every partition, each filled from
//! every partition of a compacted topic (or of a family of topics such as one per provider).
//! Kafka Streams calls this a GlobalKTable.
//!
//! The source topic is its own changelog: nothing is written back, and the local RocksDB is
//! a cache that remembers, in the same write batch as the data, the next offset of every
//! source partition, so a restart resumes where it stopped. The executor brings a global
//! store up to the source's end before its task processes anything, then keeps applying new
//! records between transactions. Lookups therefore see the source as of some recent point
//! that is not tied to the input's offsets: a result that depends on a global store is a
//! fact about when it was computed, recorded in the stage's output (which is what the audit
//! log keeps), not something a replay of the input alone reproduces.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

use crate::store::StoreError;
use crate::topology::GlobalSpec;

const POSITIONS: &str = "__positions";

/// One record from a source topic: an upsert, or a delete (tombstone).
#[derive(Debug, Clone)]
pub struct GlobalRecord<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Record key (records without a key are ignored).
    pub key: &'a [u8],
    /// Framed value; `None` deletes the key.
    pub value: Option<&'a [u8]>,
}

/// The global stores of one task in one process.
pub struct GlobalStores {
    db: DB,
    path: PathBuf,
    specs: Vec<GlobalSpec>,
}

/// `member` (the family member, empty for a plain topic) + 0x00 + record key.
fn entry_key(member: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(member.len() + 1 + key.len());
    k.extend_from_slice(member.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

fn position_key(topic: &str, partition: i32) -> Vec<u8> {
    format!("{topic}\0{partition}").into_bytes()
}

impl GlobalStores {
    /// Opens (or creates) the cache at `path` with a column family per global store.
    pub fn open(path: &Path, specs: Vec<GlobalSpec>) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = specs
            .iter()
            .map(GlobalSpec::column_family)
            .chain([POSITIONS.to_owned()])
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        std::fs::create_dir_all(path).ok();
        let db = DB::open_cf_descriptors(&options, path, families)
            .map_err(|source| StoreError::new(path, source))?;
        Ok(GlobalStores {
            db,
            path: path.to_owned(),
            specs,
        })
    }

    fn err(&self, source: rocksdb::Error) -> StoreError {
        StoreError::new(&self.path, source)
    }

    /// The stores, in index order.
    pub fn specs(&self) -> &[GlobalSpec] {
        &self.specs
    }

    /// Index of a stage's global store.
    pub fn index(&self, stage: &str, name: &str) -> Option<usize> {
        self.specs
            .iter()
            .position(|s| s.stage == stage && s.name == name)
    }

    /// Applies records in one atomic write, with the source positions they advance.
    pub fn apply(&self, records: &[GlobalRecord<'_>]) -> Result<(), StoreError> {
        if records.is_empty() {
            // The task polls its global sources between records; most polls bring nothing.
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        // What this batch has put so far, for versioned stores to compare against.
        let mut written: HashMap<(usize, Vec<u8>), &[u8]> = HashMap::new();
        let positions = self.db.cf_handle(POSITIONS).expect("positions family");
        for record in records {
            for (index, spec) in self.specs.iter().enumerate() {
                let Some(member) = spec.member_of(record.topic) else {
                    continue;
                };
                let cf = self
                    .db
                    .cf_handle(&spec.column_family())
                    .expect("global family");
                let skip = |why: &str| {
                    tracing::warn!(
                        topic = record.topic,
                        partition = record.partition,
                        offset = record.offset,
                        store = %spec.name,
                        "global store skips a record: {why}"
                    )
                };
                let key = match (spec.keyed_by, record.value) {
                    (None, _) => entry_key(member, record.key),
                    (Some(key_of), Some(v)) => match (key_of.0)(v) {
                        Ok(key) => entry_key(member, &key),
                        Err(why) => {
                            skip(&why);
                            continue;
                        }
                    },
                    // A store keyed by content cannot tell what a tombstone deletes.
                    (Some(_), None) => continue,
                };
                let Some(value) = record.value else {
                    // Deletes of a versioned store are versioned records: a bare tombstone
                    // (compaction's, or another region's) says nothing about which is newer.
                    if spec.versioned_by.is_none() {
                        batch.delete_cf(cf, key);
                    }
                    continue;
                };
                if let Some(version_of) = spec.versioned_by {
                    let new = match (version_of.0)(value) {
                        Ok(version) => version,
                        Err(why) => {
                            skip(&why);
                            continue;
                        }
                    };
                    let current = match written.get(&(index, key.clone())) {
                        Some(v) => Some(v.to_vec()),
                        None => self.db.get_cf(cf, &key).map_err(|e| self.err(e))?,
                    };
                    if current.is_some_and(|c| (version_of.0)(&c).is_ok_and(|old| old > new)) {
                        continue;
                    }
                    written.insert((index, key.clone()), value);
                }
                batch.put_cf(cf, key, value);
            }
            batch.put_cf(
                positions,
                position_key(record.topic, record.partition),
                (record.offset + 1).to_be_bytes(),
            );
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// The next offset to read from a source partition (0 when never read).
    pub fn position(&self, topic: &str, partition: i32) -> Result<i64, StoreError> {
        let positions = self.db.cf_handle(POSITIONS).expect("positions family");
        let raw = self
            .db
            .get_cf(positions, position_key(topic, partition))
            .map_err(|e| self.err(e))?;
        Ok(raw
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map_or(0, i64::from_be_bytes))
    }

    /// The framed value of `key` from family member `member` (empty for a plain topic).
    pub fn get(
        &self,
        store: usize,
        member: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let cf = self
            .db
            .cf_handle(&self.specs[store].column_family())
            .expect("global family");
        self.db
            .get_cf(cf, entry_key(member, key))
            .map_err(|e| self.err(e))
    }

    /// Every source topic in `topics` that feeds one of these stores.
    pub fn sources<'t>(&self, topics: impl IntoIterator<Item = &'t str>) -> Vec<&'t str> {
        topics
            .into_iter()
            .filter(|t| self.specs.iter().any(|s| s.member_of(t).is_some()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::GlobalKey;

    #[test]
    fn a_versioned_store_keeps_the_greatest_version_from_any_region() {
        let dir = tempfile::tempdir().unwrap();
        let spec = GlobalSpec {
            stage: "s".into(),
            name: "registry".into(),
            topic: "registry".into(),
            // The version is the value's first byte.
            versioned_by: Some(GlobalKey(|v| Ok(v[..1].to_vec()))),
            mirrors: vec!["us".into()],
            ..Default::default()
        };
        let stores = GlobalStores::open(dir.path(), vec![spec]).unwrap();
        let record = |topic, offset, value: Option<&'static [u8]>| GlobalRecord {
            topic,
            partition: 0,
            offset,
            key: b"k",
            value,
        };
        let current = || stores.get(0, "", b"k").unwrap();
        // In one batch, and across batches: an older copy never replaces a newer record.
        stores
            .apply(&[
                record("registry", 0, Some(b"2 local")),
                record("us.registry", 0, Some(b"1 from us")),
            ])
            .unwrap();
        assert_eq!(current().as_deref(), Some(&b"2 local"[..]));
        stores
            .apply(&[record("us.registry", 1, Some(b"1 from us again"))])
            .unwrap();
        assert_eq!(current().as_deref(), Some(&b"2 local"[..]));
        stores
            .apply(&[record("us.registry", 2, Some(b"3 from us"))])
            .unwrap();
        assert_eq!(current().as_deref(), Some(&b"3 from us"[..]));
        // A bare tombstone is not a versioned delete.
        stores.apply(&[record("registry", 1, None)]).unwrap();
        assert_eq!(current().as_deref(), Some(&b"3 from us"[..]));
        // Every source's position moved on all the same.
        assert_eq!(stores.position("us.registry", 0).unwrap(), 3);
        assert_eq!(stores.position("registry", 0).unwrap(), 2);
        // Another region's copy is not read.
        assert!(stores.sources(["ap.registry"]).is_empty());
    }
}
