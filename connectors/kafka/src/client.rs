//! Plain clients for the edges (demo load, benchmarks, tests): an idempotent producer and a
//! read_committed reader that reads whole topics. Stages never use these.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::settings::KafkaSettings;

const TIMEOUT: Duration = Duration::from_secs(30);

/// An idempotent, non-transactional producer, as an RP back end would use.
pub struct PlainProducer {
    inner: BaseProducer,
}

impl PlainProducer {
    /// Connects.
    pub fn new(settings: &KafkaSettings) -> Result<Self> {
        let inner = settings
            .client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random")
            .create()
            .context("creating producer")?;
        Ok(PlainProducer { inner })
    }

    /// Queues a record, waiting while the local queue is full.
    pub fn send(&self, topic: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.enqueue(BaseRecord::to(topic).key(key).payload(value))
    }

    /// Queues a tombstone: deletes `key` from a compacted topic.
    pub fn delete(&self, topic: &str, key: &[u8]) -> Result<()> {
        self.enqueue(BaseRecord::to(topic).key(key))
    }

    /// Queues a record for one partition explicitly (e.g. a broadcast to every partition).
    pub fn send_to(&self, topic: &str, partition: i32, key: &[u8], value: &[u8]) -> Result<()> {
        self.enqueue(
            BaseRecord::to(topic)
                .partition(partition)
                .key(key)
                .payload(value),
        )
    }

    fn enqueue(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
        let topic = record.topic.to_owned();
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.inner.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e).with_context(|| format!("producing to {topic}")),
            }
        }
    }

    /// Waits until every queued record is acknowledged.
    pub fn flush(&self) -> Result<()> {
        // Not rdkafka's `flush`: it polls in 100 ms slices and each slice runs to its end, so
        // even a record acknowledged in a millisecond took 100 ms to flush.
        let deadline = Instant::now() + TIMEOUT;
        while self.inner.in_flight_count() > 0 {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "flushing producer: {} records not acknowledged within {TIMEOUT:?}",
                    self.inner.in_flight_count()
                );
            }
            self.inner.poll(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// A record read back.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Vec<u8>,
    /// Value (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
    /// Timestamp, ms.
    pub timestamp_ms: i64,
}

/// Reads every partition of some topics from the beginning, read_committed, without a group.
///
/// A broker answers one connection's requests in order, and a fetch that finds nothing new
/// is parked there for `fetch.wait.max.ms` (500 ms by default). So the reader starts every
/// partition at an explicit offset (a logical one is resolved partition by partition, and
/// the first fetch, sent for the partitions resolved first, parks while the others wait),
/// and asks end offsets through a second client that never fetches (behind a parked fetch,
/// each query would wait for it).
pub struct TopicReader {
    consumer: BaseConsumer,
    offsets: BaseConsumer,
}

/// Where a [`TopicReader`] starts in each partition.
#[derive(Clone, Copy)]
enum Start {
    Beginning,
    End,
}

impl TopicReader {
    /// Assigns every partition of `topics` from the beginning.
    pub fn new(settings: &KafkaSettings, topics: &[&str]) -> Result<Self> {
        Self::assigned(settings, topics, Start::Beginning)
    }

    /// Assigns every partition of `topics` from their current end: sees only what is
    /// committed after this call (e.g. the answer to a request about to be sent).
    pub fn at_end(settings: &KafkaSettings, topics: &[&str]) -> Result<Self> {
        // The end offsets as of now, not librdkafka's logical End (resolved at the first
        // fetch, which could come after the records this caller is waiting for).
        Self::assigned(settings, topics, Start::End)
    }

    fn assigned(settings: &KafkaSettings, topics: &[&str], start: Start) -> Result<Self> {
        let client = || -> Result<BaseConsumer> {
            settings
                .client()
                .set("group.id", "pavilion-reader-unused")
                .set("isolation.level", "read_committed")
                .set("enable.auto.commit", "false")
                .set("auto.offset.reset", "earliest")
                .create()
                .context("creating reader")
        };
        let (consumer, offsets) = (client()?, client()?);
        let mut list = TopicPartitionList::new();
        for topic in topics {
            let metadata = offsets
                .fetch_metadata(Some(topic), TIMEOUT)
                .with_context(|| format!("metadata of {topic}"))?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    let (low, high) = watermarks(&offsets, topic, p.id())?;
                    let offset = match start {
                        Start::Beginning => low,
                        Start::End => high,
                    };
                    list.add_partition_offset(topic, p.id(), Offset::Offset(offset))?;
                }
            }
        }
        consumer.assign(&list)?;
        Ok(TopicReader { consumer, offsets })
    }

    /// The next record, if one arrives within `timeout`.
    pub fn poll(&self, timeout: Duration) -> Result<Option<ReadRecord>> {
        next_record(&self.consumer, timeout)
    }

    /// Reads until every assigned partition's position reaches the end offset it had when
    /// called (committed data only), or `timeout` passes.
    pub fn read_to_end(&self, timeout: Duration) -> Result<Vec<ReadRecord>> {
        let assignment = self.consumer.assignment()?;
        let mut ends = BTreeMap::new();
        for e in assignment.elements() {
            let (_, high) = watermarks(&self.offsets, e.topic(), e.partition())?;
            ends.insert((e.topic().to_owned(), e.partition()), high);
        }
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        // Positions are checked before waiting, not only after a poll came back empty: the
        // last record would otherwise cost a whole poll timeout.
        let mut check = true;
        loop {
            if check {
                let positions = self.consumer.position()?;
                let done = ends.iter().all(|((topic, partition), end)| {
                    *end == 0
                        || matches!(positions.find_partition(topic, *partition).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *end)
                });
                if done {
                    return Ok(out);
                }
                if Instant::now() > deadline {
                    anyhow::bail!("reader did not reach the end offsets {ends:?} within {timeout:?}; positions {positions:?}");
                }
            }
            match self.poll(Duration::from_millis(100))? {
                Some(r) => {
                    // Only a partition's last record can complete the read.
                    check = ends
                        .get(&(r.topic.clone(), r.partition))
                        .is_some_and(|end| r.offset + 1 >= *end);
                    out.push(r);
                }
                None => check = true,
            }
        }
    }
}

/// A consumer-group member for a service that answers requests from a topic (the provider's
/// evidence service): read_committed, and a record's offset is committed (automatically,
/// every few seconds) only once the caller says it is [`GroupReader::done`] with it, so a
/// restart reads again what was not answered.
pub struct GroupReader {
    consumer: BaseConsumer,
}

impl GroupReader {
    /// Joins `group` as static member `instance` and subscribes to `topics`; a group without
    /// committed offsets starts at the beginning.
    ///
    /// Static membership (`group.instance.id`) is what lets a restarted service take its
    /// partitions back at once: a killed dynamic member would hold them until its session
    /// timed out, and nothing would be answered meanwhile.
    pub fn subscribe(
        settings: &KafkaSettings,
        group: &str,
        instance: &str,
        topics: &[&str],
    ) -> Result<Self> {
        let consumer: BaseConsumer = settings
            .client()
            .set("group.id", group)
            .set("group.instance.id", format!("{group}.{instance}"))
            .set("session.timeout.ms", "10000")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .context("creating group consumer")?;
        consumer
            .subscribe(topics)
            .with_context(|| format!("subscribing to {topics:?}"))?;
        Ok(GroupReader { consumer })
    }

    /// The next record, if one arrives within `timeout`.
    pub fn poll(&self, timeout: Duration) -> Result<Option<ReadRecord>> {
        next_record(&self.consumer, timeout)
    }

    /// Marks a record as handled: the next automatic commit moves past it.
    pub fn done(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        // librdkafka stores offset + 1, the position after the record.
        self.consumer
            .store_offset(topic, partition, offset)
            .with_context(|| format!("storing the offset of {topic}/{partition}@{offset}"))
    }
}

fn next_record(consumer: &BaseConsumer, timeout: Duration) -> Result<Option<ReadRecord>> {
    match consumer.poll(timeout) {
        None | Some(Err(KafkaError::PartitionEOF(_))) => Ok(None),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(m)) => Ok(Some(ReadRecord {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().unwrap_or_default().to_vec(),
            value: m.payload().map(<[u8]>::to_vec),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
        })),
    }
}

/// A partition's low and high watermarks, retried for a few seconds while its leadership is
/// still settling (a topic created a moment ago answers NotLeaderForPartition at first).
pub(crate) fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match consumer.fetch_watermarks(topic, partition, TIMEOUT) {
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition,
            )) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            result => return result.with_context(|| format!("end offset of {topic}/{partition}")),
        }
    }
}
