//! Plain clients for the edges (demo load, benchmarks, tests): an idempotent producer and a
//! read_committed reader that reads whole topics. Stages never use these.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::settings::KafkaSettings;

const TIMEOUT: Duration = Duration::from_secs(30);

/// What librdkafka reports only to a client's context, kept so a call can fail with it: a
/// connection refused for its credentials or its TLS (otherwise a call just times out), and
/// the first record the broker would not take (otherwise a flush just ends).
#[derive(Default)]
pub(crate) struct Reported {
    refused: Mutex<Option<String>>,
    undelivered: Mutex<Option<String>>,
    /// Connections closed by the broker at their first request: what a TLS listener does to
    /// a plaintext client (librdkafka says so only in an info-level log, and retries).
    closed_at_hello: std::sync::atomic::AtomicU32,
}

/// After this many connections closed at their first request, a client is taken to be
/// speaking the wrong protocol rather than meeting a broker that is restarting.
const CLOSED_AT_HELLO: u32 = 2;

impl Reported {
    /// Why the broker refused the connection, if it did.
    pub(crate) fn refused(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Clients with this context log at info level whatever the process's log filter: the sign
/// of a plaintext client at a TLS port is an info-level message (rust-rdkafka otherwise asks
/// librdkafka for no more than the `log` crate's level).
impl ClientContext for Reported {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // rdkafka's default, as every other client's logs go.
        DefaultClientContext.log(level, facility, message);
        if message.contains("Disconnected") && message.contains("in state APIVERSION_QUERY") {
            let n = self
                .closed_at_hello
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n + 1 == CLOSED_AT_HELLO {
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                    "{message}; the broker closes the connection at its first request, as a TLS \
                     listener does to a plaintext client: check security.protocol (--kafka-config)"
                ));
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        ) {
            *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
        }
    }
}

impl ConsumerContext for Reported {}

impl ProducerContext for Reported {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, record)) = result {
            let mut first = self.undelivered.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| format!("{}: {e}", record.topic()));
        }
    }
}

/// Hands a consumer's pending events (errors, logs) to its context: a poll serves one at most.
fn serve_events(consumer: &BaseConsumer<Reported>) {
    for _ in 0..100 {
        if consumer.poll(Duration::ZERO).is_none() {
            return;
        }
    }
}

/// Metadata of `topic` (or of the cluster), failing at once, with the broker's reason, when
/// the connection is refused rather than after the whole timeout. `serve` hands the client's
/// pending events to its context (a consumer's come only through its poll).
pub(crate) fn metadata<C: ClientContext>(
    client: &Client<C>,
    reported: &Reported,
    serve: impl Fn(),
    bootstrap: &str,
    topic: Option<&str>,
) -> Result<Metadata> {
    metadata_within(client, reported, serve, bootstrap, topic, TIMEOUT)
}

fn metadata_within<C: ClientContext>(
    client: &Client<C>,
    reported: &Reported,
    serve: impl Fn(),
    bootstrap: &str,
    topic: Option<&str>,
    within: Duration,
) -> Result<Metadata> {
    let deadline = Instant::now() + within;
    loop {
        match client.fetch_metadata(topic, Duration::from_secs(1)) {
            Ok(m) => return Ok(m),
            Err(e) => {
                serve();
                if let Some(reason) = reported.refused() {
                    bail!("{bootstrap} refused the connection: {reason}");
                }
                if Instant::now() > deadline {
                    return Err(e).with_context(|| format!("no metadata from {bootstrap}"));
                }
            }
        }
    }
}

/// Whether the cluster answers within `within`: a client about to depend on one cluster
/// (a region's) fails fast when it is down, instead of after every call's own timeout.
pub fn reachable(settings: &KafkaSettings, within: Duration) -> Result<()> {
    let consumer: BaseConsumer<Reported> = settings
        .client()
        .set("group.id", settings.unused_group("probe"))
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(Reported::default())
        .context("creating a metadata client")?;
    metadata_within(
        consumer.client(),
        consumer.context(),
        || serve_events(&consumer),
        &settings.bootstrap,
        None,
        within,
    )
    .map(drop)
}

/// The cluster's metadata, through a client of its own that says why a connection is refused
/// (an admin client's events reach no context in rust-rdkafka).
pub(crate) fn cluster_metadata(settings: &KafkaSettings) -> Result<Metadata> {
    let consumer: BaseConsumer<Reported> = settings
        .client()
        .set("group.id", settings.unused_group("reader"))
        .set_log_level(RDKafkaLogLevel::Info)
        .create_with_context(Reported::default())
        .context("creating a metadata client")?;
    let serve = || serve_events(&consumer);
    metadata(
        consumer.client(),
        consumer.context(),
        serve,
        &settings.bootstrap,
        None,
    )
}

/// Metadata of one topic, which must exist and be readable by this client's principal.
fn topic_metadata(
    consumer: &BaseConsumer<Reported>,
    settings: &KafkaSettings,
    topic: &str,
) -> Result<Metadata> {
    // Nothing is assigned to it: a poll only serves its events.
    let serve = || serve_events(consumer);
    let m = metadata(
        consumer.client(),
        consumer.context(),
        serve,
        &settings.bootstrap,
        Some(topic),
    )?;
    if let Some(code) = m.topics().iter().find_map(|t| t.error()) {
        let code = RDKafkaErrorCode::from(code);
        if code == RDKafkaErrorCode::TopicAuthorizationFailed {
            bail!("{topic}: not authorized ({code}): {}", settings.principal());
        }
        bail!("{topic}: {code}");
    }
    Ok(m)
}

/// An idempotent, non-transactional producer, as an RP back end would use.
pub struct PlainProducer {
    inner: BaseProducer<Reported>,
}

impl PlainProducer {
    /// Connects.
    pub fn new(settings: &KafkaSettings) -> Result<Self> {
        let inner = settings
            .client()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random")
            .set_log_level(RDKafkaLogLevel::Info)
            .create_with_context(Reported::default())
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

    /// Waits until every queued record is acknowledged; fails if the broker refused one
    /// (naming the first) or the connection.
    pub fn flush(&self) -> Result<()> {
        // Not rdkafka's `flush`: it polls in 100 ms slices and each slice runs to its end, so
        // even a record acknowledged in a millisecond took 100 ms to flush.
        let deadline = Instant::now() + TIMEOUT;
        let context = self.inner.context();
        while self.inner.in_flight_count() > 0 {
            if let Some(reason) = context.refused() {
                bail!("the broker refused the connection: {reason}");
            }
            if Instant::now() > deadline {
                bail!(
                    "flushing producer: {} records not acknowledged within {TIMEOUT:?}",
                    self.inner.in_flight_count()
                );
            }
            self.inner.poll(Duration::from_millis(1));
        }
        let undelivered = context
            .undelivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(first) = undelivered {
            bail!("the broker refused a record: {first}");
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
/// each query would wait for it). Even explicit offsets are validated partition by partition
/// (KIP-320 leader epochs), so a first fetch may hold only partitions that have nothing to
/// read, and park while the one with data waits behind it (a test saw 20 s, 2 runs in 12):
/// partitions that are empty when the reader starts are assigned only once
/// [`TopicReader::read_to_end`] is done or the caller [`TopicReader::poll`]s for new records.
pub struct TopicReader {
    consumer: BaseConsumer,
    offsets: BaseConsumer<Reported>,
    /// Partitions empty at the start, not assigned yet.
    deferred: std::sync::Mutex<Option<TopicPartitionList>>,
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
        let mut config = settings.client();
        config
            .set("group.id", settings.unused_group("reader"))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = config.create().context("creating reader")?;
        let offsets: BaseConsumer<Reported> = config
            .set_log_level(RDKafkaLogLevel::Info)
            .create_with_context(Reported::default())
            .context("creating reader")?;
        let (mut list, mut deferred) = (TopicPartitionList::new(), TopicPartitionList::new());
        for topic in topics {
            let metadata = topic_metadata(&offsets, settings, topic)?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    let (low, high) = watermarks(&offsets, topic, p.id())?;
                    let (offset, into) = match start {
                        Start::Beginning if low < high => (low, &mut list),
                        Start::Beginning => (low, &mut deferred),
                        Start::End => (high, &mut list),
                    };
                    into.add_partition_offset(topic, p.id(), Offset::Offset(offset))?;
                }
            }
        }
        consumer.assign(&list)?;
        let deferred = (deferred.count() > 0).then_some(deferred);
        Ok(TopicReader {
            consumer,
            offsets,
            deferred: std::sync::Mutex::new(deferred),
        })
    }

    /// Assigns the partitions that were empty at the start.
    fn assign_deferred(&self) -> Result<()> {
        let mut deferred = self.deferred.lock().expect("not poisoned");
        if let Some(list) = deferred.take() {
            self.consumer.incremental_assign(&list)?;
        }
        Ok(())
    }

    /// The next record, if one arrives within `timeout`.
    pub fn poll(&self, timeout: Duration) -> Result<Option<ReadRecord>> {
        self.assign_deferred()?;
        self.next(timeout)
    }

    fn next(&self, timeout: Duration) -> Result<Option<ReadRecord>> {
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
                    self.consumer.resume(&self.consumer.assignment()?)?;
                    self.assign_deferred()?;
                    return Ok(out);
                }
                if Instant::now() > deadline {
                    anyhow::bail!("reader did not reach the end offsets {ends:?} within {timeout:?}; positions {positions:?}");
                }
            }
            match self.next(Duration::from_millis(100))? {
                Some(r) => {
                    // Only a partition's last record can complete the read.
                    check = ends
                        .get(&(r.topic.clone(), r.partition))
                        .is_some_and(|end| r.offset + 1 >= *end);
                    if check {
                        // Read to its end: a fetch holding only this partition would park.
                        let mut done = TopicPartitionList::new();
                        done.add_partition(&r.topic, r.partition);
                        self.consumer.pause(&done)?;
                    }
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

    /// Marks a record as handled: the next automatic commit moves past it. A record of a
    /// partition that a rebalance gave another member meanwhile is not marked (librdkafka
    /// refuses with `_STATE`): that member reads it again, and the answer is given twice.
    pub fn done(&self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        // librdkafka stores offset + 1, the position after the record.
        match self.consumer.store_offset(topic, partition, offset) {
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                tracing::debug!(
                    topic,
                    partition,
                    offset,
                    "handled a record of a partition no longer assigned"
                );
                Ok(())
            }
            stored => stored
                .with_context(|| format!("storing the offset of {topic}/{partition}@{offset}")),
        }
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
pub(crate) fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
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
