//! State stores of one task on one partition: a RocksDB database that caches the stores'
//! compacted changelog topics.
//!
//! Writes go through two overlays. A record's writes are *staged*; when the record succeeds
//! they join the *transaction* overlay, when it fails they vanish with it. The transaction
//! overlay is what the executor writes to the changelog inside the Kafka transaction, and is
//! applied to RocksDB only after that transaction commits. So RocksDB only ever holds
//! committed state, and the local directory can be deleted at any time. A key written several
//! times in a transaction is one changelog record, its last value (as Kafka Streams' record
//! cache); a value staged typed is kept as it is and encoded once, when the transaction needs
//! its bytes, so a stage that rewrites one key per record does not pay an encoding per record.
//!
//! Each store has a *checkpoint*: a changelog offset up to which local state is known to be
//! complete. Restore replays the changelog from there (from the start when there is none).
//! Replaying from an earlier offset than needed is harmless: every changelog record carries
//! the full value of its key, so replay converges to the same state.

use std::any::Any;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

const CHECKPOINTS: &str = "__checkpoints";

/// Failure of the local store.
#[derive(Debug, thiserror::Error)]
#[error("state store {path}: {source}")]
pub struct StoreError {
    path: PathBuf,
    #[source]
    source: rocksdb::Error,
}

impl StoreError {
    pub(crate) fn new(path: &Path, source: rocksdb::Error) -> Self {
        StoreError {
            path: path.to_owned(),
            source,
        }
    }
}

/// Identity of one store within a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    /// Stage owning the store.
    pub stage: String,
    /// Store name.
    pub name: String,
    /// Its changelog topic.
    pub changelog: String,
}

impl StoreInfo {
    fn column_family(&self) -> String {
        format!("{}.{}", self.stage, self.name)
    }
}

/// A written value: its bytes, or a value a stage wrote typed (see [`PartitionStores::stage_typed`]).
enum Value {
    Bytes(Vec<u8>),
    Typed(Typed),
}

/// A value as its stage wrote it, encoded only when its bytes are needed: once per
/// transaction for the changelog and RocksDB, however often the stage rewrites it before.
struct Typed {
    value: Box<dyn Any + Send>,
    encode: fn(&dyn Any) -> Vec<u8>,
    bytes: OnceCell<Vec<u8>>,
}

impl Value {
    fn bytes(&self) -> &[u8] {
        match self {
            Value::Bytes(b) => b,
            Value::Typed(t) => t.bytes.get_or_init(|| (t.encode)(&*t.value)),
        }
    }
}

/// A read of [`PartitionStores::get_typed`].
pub enum Read<T> {
    /// The value a stage staged as a `T` in the open transaction, cloned.
    Typed(T),
    /// The value's bytes.
    Bytes(Vec<u8>),
}

type Overlay = BTreeMap<(usize, Vec<u8>), Option<Value>>;

/// A key and its value, as stored.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The stores of one task on one partition.
pub struct PartitionStores {
    db: DB,
    path: PathBuf,
    stores: Vec<StoreInfo>,
    transaction: Overlay,
    staged: Overlay,
}

impl PartitionStores {
    /// Opens (or creates) the database at `path` with a column family per store.
    pub fn open(path: &Path, stores: Vec<StoreInfo>) -> Result<Self, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let families = stores
            .iter()
            .map(StoreInfo::column_family)
            .chain([CHECKPOINTS.to_owned()])
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let err = |source| StoreError {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).ok();
        let db = DB::open_cf_descriptors(&options, path, families).map_err(err)?;
        Ok(PartitionStores {
            db,
            path: path.to_owned(),
            stores,
            transaction: Overlay::new(),
            staged: Overlay::new(),
        })
    }

    fn err(&self, source: rocksdb::Error) -> StoreError {
        StoreError {
            path: self.path.clone(),
            source,
        }
    }

    /// The stores, in index order.
    pub fn infos(&self) -> &[StoreInfo] {
        &self.stores
    }

    /// Index of a stage's store.
    pub fn index(&self, stage: &str, name: &str) -> Option<usize> {
        self.stores
            .iter()
            .position(|s| s.stage == stage && s.name == name)
    }

    /// Reads a key: staged writes first, then the open transaction, then committed state.
    pub fn get(&self, store: usize, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let k = (store, key.to_vec());
        if let Some(v) = self.staged.get(&k).or_else(|| self.transaction.get(&k)) {
            return Ok(v.as_ref().map(|v| v.bytes().to_vec()));
        }
        let cf = self.cf(store);
        self.db.get_cf(cf, key).map_err(|e| self.err(e))
    }

    /// Like [`PartitionStores::get`], but a value staged as a `T` by
    /// [`PartitionStores::stage_typed`] in the open transaction comes back as a clone of
    /// itself, without decoding.
    pub fn get_typed<T: Any + Clone>(
        &self,
        store: usize,
        key: &[u8],
    ) -> Result<Option<Read<T>>, StoreError> {
        let k = (store, key.to_vec());
        if let Some(v) = self.staged.get(&k).or_else(|| self.transaction.get(&k)) {
            return Ok(v.as_ref().map(|v| match v {
                Value::Typed(t) => match t.value.downcast_ref::<T>() {
                    Some(value) => Read::Typed(value.clone()),
                    None => Read::Bytes(v.bytes().to_vec()),
                },
                Value::Bytes(b) => Read::Bytes(b.clone()),
            }));
        }
        let cf = self.cf(store);
        Ok(self
            .db
            .get_cf(cf, key)
            .map_err(|e| self.err(e))?
            .map(Read::Bytes))
    }

    /// Live keys in `[from, to)`, in key order, at most `limit` of them, as the current
    /// record sees them (committed state overlaid with the open transaction and the record's
    /// staged writes).
    pub fn scan(
        &self,
        store: usize,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut view: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let mode = rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(self.cf(store), mode) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            // Overlay deletes may hide some of these, so read past `limit` by their number.
            if &*k >= to || view.len() >= limit + self.transaction.len() + self.staged.len() {
                break;
            }
            view.insert(k.to_vec(), Some(v.to_vec()));
        }
        for overlay in [&self.transaction, &self.staged] {
            for ((_, k), v) in overlay.range((store, from.to_vec())..(store, to.to_vec())) {
                view.insert(k.clone(), v.as_ref().map(|v| v.bytes().to_vec()));
            }
        }
        Ok(view
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .take(limit)
            .collect())
    }

    /// Stages a write (`None` deletes).
    pub fn stage(&mut self, store: usize, key: &[u8], value: Option<Vec<u8>>) {
        self.staged
            .insert((store, key.to_vec()), value.map(Value::Bytes));
    }

    /// Stages a write of a typed value, encoded by `encode` (given the value) only when the
    /// transaction needs its bytes; until then [`PartitionStores::get_typed`] hands it back as
    /// it is. `encode` must not fail, and decoding what it writes must give an equal value
    /// (a read after the commit decodes it).
    pub fn stage_typed<T: Any + Send>(
        &mut self,
        store: usize,
        key: &[u8],
        value: T,
        encode: fn(&dyn Any) -> Vec<u8>,
    ) {
        let typed = Typed {
            value: Box::new(value),
            encode,
            bytes: OnceCell::new(),
        };
        self.staged
            .insert((store, key.to_vec()), Some(Value::Typed(typed)));
    }

    /// The record succeeded: its writes join the transaction.
    pub fn keep_staged(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        self.transaction.extend(staged);
    }

    /// The record failed: its writes are dropped.
    pub fn drop_staged(&mut self) {
        self.staged.clear();
    }

    /// The transaction's writes, last value per key, as changelog records.
    pub fn changelog_records(&self) -> impl Iterator<Item = (&str, &[u8], Option<&[u8]>)> {
        self.transaction.iter().map(|((store, key), value)| {
            (
                self.stores[*store].changelog.as_str(),
                key.as_slice(),
                value.as_ref().map(Value::bytes),
            )
        })
    }

    /// The transaction committed in Kafka: make its writes local state.
    pub fn apply_committed(&mut self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for ((store, key), value) in std::mem::take(&mut self.transaction) {
            let cf = self.cf(store);
            match value {
                Some(v) => batch.put_cf(cf, key, v.bytes()),
                None => batch.delete_cf(cf, key),
            }
        }
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// The transaction aborted: forget its writes.
    pub fn discard(&mut self) {
        self.transaction.clear();
        self.staged.clear();
    }

    /// Offset of the changelog up to which local state is complete.
    pub fn checkpoint(&self, changelog: &str) -> Result<Option<i64>, StoreError> {
        let cf = self
            .db
            .cf_handle(CHECKPOINTS)
            .expect("checkpoint family exists");
        let raw = self.db.get_cf(cf, changelog).map_err(|e| self.err(e))?;
        Ok(raw.and_then(|b| b.try_into().ok()).map(i64::from_be_bytes))
    }

    /// Applies changelog records read during restore, and moves the checkpoint to `next_offset`
    /// in the same atomic write.
    pub fn restore(
        &mut self,
        store: usize,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
        next_offset: i64,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let cf = self.cf(store);
        for (key, value) in records {
            match value {
                Some(v) => batch.put_cf(cf, key, v),
                None => batch.delete_cf(cf, key),
            }
        }
        let checkpoints = self
            .db
            .cf_handle(CHECKPOINTS)
            .expect("checkpoint family exists");
        batch.put_cf(
            checkpoints,
            &self.stores[store].changelog,
            next_offset.to_be_bytes(),
        );
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// Committed contents of a store, in key order (tests, tooling).
    pub fn committed(&self, store: usize) -> Result<Vec<Entry>, StoreError> {
        self.db
            .iterator_cf(self.cf(store), rocksdb::IteratorMode::Start)
            .map(|item| {
                item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }

    fn cf(&self, store: usize) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(&self.stores[store].column_family())
            .expect("every store has its column family")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &dyn Any) -> Vec<u8> {
        serde_json::to_vec(v.downcast_ref::<Vec<u32>>().unwrap()).unwrap()
    }

    /// A key written by every record of a transaction is one changelog record, its last
    /// value; a typed value is read back as itself, and encoded only for the changelog.
    #[test]
    fn a_transaction_writes_each_key_once_with_its_last_value() {
        let dir = tempfile::tempdir().unwrap();
        let info = StoreInfo {
            stage: "s".into(),
            name: "n".into(),
            changelog: "t.s.n.changelog".into(),
        };
        let mut stores = PartitionStores::open(dir.path(), vec![info]).unwrap();
        for n in 1..=5u32 {
            let mut value: Vec<u32> = match stores.get_typed(0, b"shard").unwrap() {
                None => Vec::new(),
                Some(Read::Typed(v)) => v,
                Some(Read::Bytes(_)) => panic!("staged typed, read as bytes"),
            };
            value.push(n);
            stores.stage_typed(0, b"shard", value, encode);
            stores.stage(0, format!("k{}", n % 2).as_bytes(), Some(vec![n as u8]));
            stores.keep_staged();
        }
        // A failed record's typed write is dropped like any other.
        stores.stage_typed(0, b"shard", vec![99u32], encode);
        stores.drop_staged();
        let records: Vec<_> = stores
            .changelog_records()
            .map(|(t, k, v)| (t.to_owned(), k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            records,
            [
                ("t.s.n.changelog".into(), b"k0".to_vec(), Some(vec![4])),
                ("t.s.n.changelog".into(), b"k1".to_vec(), Some(vec![5])),
                (
                    "t.s.n.changelog".into(),
                    b"shard".to_vec(),
                    Some(b"[1,2,3,4,5]".to_vec())
                ),
            ]
        );
        assert_eq!(
            stores.get(0, b"shard").unwrap(),
            Some(b"[1,2,3,4,5]".to_vec())
        );
        stores.apply_committed().unwrap();
        assert!(matches!(
            stores.get_typed::<Vec<u32>>(0, b"shard").unwrap(),
            Some(Read::Bytes(b)) if b == b"[1,2,3,4,5]"
        ));
        assert_eq!(stores.changelog_records().count(), 0);
    }
}
