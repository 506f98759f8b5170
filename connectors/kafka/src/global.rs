//! Keeps a task's global stores (see `pavilion_runtime::global`) up to date: one
//! group-less, read_committed consumer assigned every partition of every source topic,
//! including family members that appear while the task runs (a provider onboarded later).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use pavilion_runtime::global::{GlobalRecord, GlobalStores};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::settings::KafkaSettings;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the topic list is read again to find new family members.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
const BATCH: usize = 5_000;

type Owned = (String, i32, i64, Vec<u8>, Option<Vec<u8>>);

/// Feeds the global stores of one task.
pub struct GlobalReader {
    consumer: BaseConsumer,
    stores: Arc<GlobalStores>,
    assigned: BTreeSet<(String, i32)>,
    refreshed: Instant,
}

impl GlobalReader {
    /// A reader with nothing assigned yet.
    pub fn new(settings: &KafkaSettings, stores: Arc<GlobalStores>) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = settings
            .restore_consumer()
            .create()
            .context("creating the global-store consumer")?;
        Ok(GlobalReader {
            consumer,
            stores,
            assigned: BTreeSet::new(),
            refreshed: Instant::now(),
        })
    }

    /// Assigns source partitions not yet assigned, from the positions the stores remember.
    fn refresh(&mut self) -> anyhow::Result<()> {
        self.refreshed = Instant::now();
        let metadata = self
            .consumer
            .fetch_metadata(None, CALL_TIMEOUT)
            .context("listing topics for global stores")?;
        let mut new = TopicPartitionList::new();
        for topic in metadata.topics() {
            if self.stores.sources([topic.name()]).is_empty() {
                continue;
            }
            for partition in topic.partitions() {
                let key = (topic.name().to_owned(), partition.id());
                if self.assigned.contains(&key) {
                    continue;
                }
                let from = self.stores.position(topic.name(), partition.id())?;
                new.add_partition_offset(topic.name(), partition.id(), Offset::Offset(from))?;
                self.assigned.insert(key);
            }
        }
        if new.count() > 0 {
            tracing::info!(
                partitions = new.count(),
                "global stores: new source partitions"
            );
            self.consumer
                .incremental_assign(&new)
                .context("assigning global-store sources")?;
        }
        Ok(())
    }

    /// Reads every source to the end it has now; the task must not process before this.
    /// Returns `None` when `shutdown` was set first.
    ///
    /// A partition is caught up when the position the stores remember (the offset after the
    /// last record applied, kept with the data) reaches the end. The consumer's own position
    /// is no help on its own: it stays unset until a record is consumed, so a store already
    /// at the end of its source (every restart that keeps its state directory) never looked
    /// caught up. It still counts when ahead, for sources whose tail is not a keyed record
    /// (records without a key, or a transaction's commit marker).
    pub fn catch_up(
        &mut self,
        shutdown: &AtomicBool,
        progress: &dyn Fn(usize),
    ) -> anyhow::Result<Option<usize>> {
        self.refresh()?;
        let mut ends = Vec::new();
        for (topic, partition) in &self.assigned {
            let (_, high) = crate::client::watermarks(&self.consumer, topic, *partition)?;
            ends.push((topic.clone(), *partition, high));
        }
        let mut applied = 0;
        loop {
            let positions = self.consumer.position()?;
            let mut behind = false;
            for (topic, partition, end) in &ends {
                let consumed = match positions
                    .find_partition(topic, *partition)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(at)) => at,
                    _ => 0,
                };
                if self.stores.position(topic, *partition)?.max(consumed) < *end {
                    behind = true;
                    break;
                }
            }
            if !behind {
                return Ok(Some(applied));
            }
            if shutdown.load(Ordering::SeqCst) {
                return Ok(None);
            }
            let read = self.read(Duration::from_millis(100))?;
            if read > 0 {
                progress(read);
            }
            applied += read;
        }
    }

    /// Applies whatever has arrived, without waiting; looks for new sources now and then.
    pub fn poll_available(&mut self) -> anyhow::Result<usize> {
        if self.refreshed.elapsed() >= REFRESH_EVERY {
            self.refresh()?;
        }
        self.read(Duration::ZERO)
    }

    /// One batch: polls until `BATCH` records or nothing more is ready, then applies them in
    /// one write.
    fn read(&mut self, first_wait: Duration) -> anyhow::Result<usize> {
        let mut batch: Vec<Owned> = Vec::new();
        let mut wait = first_wait;
        while batch.len() < BATCH {
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    if let Some(key) = m.key() {
                        batch.push((
                            m.topic().to_owned(),
                            m.partition(),
                            m.offset(),
                            key.to_vec(),
                            m.payload().map(<[u8]>::to_vec),
                        ));
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => break,
                Some(Err(e)) => return Err(e).context("reading global-store sources"),
            }
            wait = Duration::ZERO;
        }
        let records: Vec<GlobalRecord<'_>> = batch
            .iter()
            .map(|(topic, partition, offset, key, value)| GlobalRecord {
                topic,
                partition: *partition,
                offset: *offset,
                key,
                value: value.as_deref(),
            })
            .collect();
        self.stores.apply(&records)?;
        Ok(records.len())
    }
}
