//! The exactly-once executor: consume → process → produce, one Kafka transaction at a time.
//!
//! Per task and stream thread (`pavilion run --threads`): a group consumer (read_committed,
//! static membership), a transactional producer (transactional.id = application.task.instance,
//! the instance suffixed `-<thread>` for threads ≥ 1), and a restore consumer for changelogs.
//! Threads of one task share nothing but the state directory, where a partition's stores are
//! opened by at most one of them at a time ([`Claim`]). Every transaction carries the task's outputs, its dead letters,
//! the changelog records of its store writes, and its input offsets
//! (`send_offsets_to_transaction` with the group metadata, the KIP-447 model). Local stores
//! change only after the commit. On revoke the open transaction commits; on lost partitions,
//! and on any transaction error, the task aborts, drops its clients and starts again from the
//! committed offsets and changelogs.
//!
//! All of it is blocking librdkafka work and runs on the stream thread itself, never on an
//! async executor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use pavilion_runtime::global::GlobalStores;
use pavilion_runtime::store::PartitionStores;
use pavilion_runtime::telemetry::{StreamThread, TaskState, Telemetry};
use pavilion_runtime::topology::Topology;
use pavilion_runtime::{OutRecord, Processed, RawRecord, TaskRunner};
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::global::GlobalReader;
use crate::settings::KafkaSettings;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const RESTORE_BATCH: usize = 2_000;
/// A drained transaction commits once it is this many times as old as the last commit took.
const COMMIT_SHARE_BOUND: u32 = 3;

/// Builds a fresh [`TaskRunner`] each time the task (re)starts.
pub type RunnerFactory = dyn Fn() -> Result<TaskRunner, String> + Send + Sync;

/// Runs stream thread `thread` of one task until `shutdown` is set, restarting it after fatal
/// or transaction errors. Every thread of a task is a member of the task's group with its own
/// identity (`KafkaSettings::for_thread`), so they share the partitions like processes do.
#[allow(clippy::too_many_arguments)]
pub fn run_task(
    topology: &Topology,
    task: &str,
    thread: usize,
    build: &RunnerFactory,
    settings: &KafkaSettings,
    telemetry: Arc<Telemetry>,
    shutdown: &AtomicBool,
) -> anyhow::Result<()> {
    let me = StreamThread {
        task,
        index: thread,
    };
    let settings = &settings.for_thread(thread);
    let mut backoff = Duration::from_millis(500);
    loop {
        telemetry.task_state(me, TaskState::Starting);
        match run_once(topology, me, build, settings, telemetry.clone(), shutdown) {
            Ok(()) => {
                telemetry.task_state(me, TaskState::Stopped);
                return Ok(());
            }
            Err(e) if shutdown.load(Ordering::SeqCst) => {
                // Stopping cuts restores and retries short; what was committed stays.
                tracing::warn!(task, thread, error = %format!("{e:#}"), "stopped while failing");
                telemetry.task_state(me, TaskState::Stopped);
                return Ok(());
            }
            Err(e) => {
                telemetry.task_restarted(me, &format!("{e:#}"));
                let resume = Instant::now() + backoff;
                while Instant::now() < resume {
                    if shutdown.load(Ordering::SeqCst) {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

struct OpenTransaction {
    started: Instant,
    records: usize,
    offsets: BTreeMap<(String, i32), i64>,
}

/// What the processing loop and the rebalance callbacks share.
struct Core {
    task: String,
    thread: usize,
    runner: TaskRunner,
    producer: ThreadedProducer<DefaultProducerContext>,
    partitions: BTreeMap<i32, OwnedPartition>,
    pending_restore: BTreeSet<i32>,
    transaction: Option<OpenTransaction>,
    failure: Option<anyhow::Error>,
    out: Vec<OutRecord>,
    state_dir: std::path::PathBuf,
    telemetry: Arc<Telemetry>,
    members: MemberTopics,
}

/// Topic-family members this task has produced to (or made sure exist).
struct MemberTopics {
    topology: Topology,
    settings: KafkaSettings,
    known: BTreeSet<String>,
}

impl MemberTopics {
    /// Creates a family member's topic from the family's settings the first time it is used,
    /// so a tenant whose decision topic was never provisioned does not stall the task on a
    /// produce error (and its transaction with it).
    fn ensure(&mut self, topic: &str) -> anyhow::Result<()> {
        if self.known.contains(topic) {
            return Ok(());
        }
        if let Some(spec) = self.topology.family_of(topic) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(crate::ensure_topics(&self.settings, &[&spec]))
                .with_context(|| format!("creating family member topic {topic}"))?;
        }
        self.known.insert(topic.to_owned());
        Ok(())
    }
}

struct TaskContext {
    core: Arc<Mutex<Core>>,
    task: String,
    thread: usize,
    telemetry: Arc<Telemetry>,
}

impl TaskContext {
    fn me(&self) -> StreamThread<'_> {
        StreamThread {
            task: &self.task,
            index: self.thread,
        }
    }
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ClientContext for TaskContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.telemetry
                        .lag_observed(&self.task, topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for TaskContext {
    /// rdkafka's default, less its question about the rebalance protocol: asked while the
    /// consumer closes in the middle of a group join, that call waits on a lock the closing
    /// consumer holds (librdkafka#4041), and SIGTERM at that moment hung the task forever.
    /// The task's consumer uses the eager range assignor, so the answer is known.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        let rebalance = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(partitions),
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(partitions),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let assigned = match &rebalance {
            Rebalance::Assign(list) => consumer.assign(list),
            _ => consumer.unassign(),
        };
        if let Err(e) = assigned {
            lock(&self.core)
                .failure
                .get_or_insert(anyhow!("applying a rebalance: {e}"));
        }
        self.post_rebalance(consumer, &rebalance);
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut core = lock(&self.core);
        match rebalance {
            Rebalance::Revoke(list) => {
                if consumer.assignment_lost() {
                    core.abort("partitions lost");
                    // Its session timed out (the broker gone past session.timeout.ms, say).
                    // librdkafka's own rejoin from here can hang for good under static
                    // membership (librdkafka#3437; CI saw a task never assigned again after its
                    // region's cluster was back): the task starts again with fresh clients,
                    // whose join replaces the old member.
                    core.failure
                        .get_or_insert(anyhow!("partitions lost: the group session timed out"));
                } else if let Some(metadata) = consumer.group_metadata() {
                    if let Err(e) = core.commit(&metadata) {
                        core.failure.get_or_insert(e.context("commit on revoke"));
                    }
                }
                // Dropping a partition's stores closes its RocksDB and then releases the claim
                // another thread of this process may be waiting for.
                for element in list.elements() {
                    core.partitions.remove(&element.partition());
                    core.pending_restore.remove(&element.partition());
                }
                self.telemetry
                    .partitions_assigned(self.me(), core.partitions.len());
            }
            Rebalance::Error(e) => {
                core.failure.get_or_insert(anyhow!("rebalance failed: {e}"));
            }
            Rebalance::Assign(_) => {}
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let mut core = lock(&self.core);
            let partitions: BTreeSet<i32> = list.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(
                task = self.task,
                thread = self.thread,
                ?partitions,
                "partitions assigned"
            );
            // A thread without partitions (more threads than partitions) is idle and ready.
            let state = if partitions.is_empty() {
                TaskState::Running
            } else {
                TaskState::Restoring
            };
            self.telemetry
                .partitions_assigned(self.me(), partitions.len());
            core.pending_restore.extend(partitions);
            self.telemetry.task_state(self.me(), state);
        }
    }
}

/// The task's group consumer, closed within a bound when the task ends.
///
/// Closing serves a rebalance still in flight through the same queue it polls, and applying
/// an assignment from there waits on that queue (librdkafka#4041): a consumer dropped while
/// its group join was under way (SIGTERM right after a start) never finished closing. After
/// the bound the close goes on, or hangs, on its own thread; the task has committed what it
/// had, and static membership means the group does not wait for a leave anyway.
struct GroupConsumer(Option<BaseConsumer<TaskContext>>);

const CLOSE_BOUND: Duration = Duration::from_secs(5);

impl std::ops::Deref for GroupConsumer {
    type Target = BaseConsumer<TaskContext>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("open until dropped")
    }
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let (closed, done) = std::sync::mpsc::channel();
        let closing = std::thread::Builder::new()
            .name("consumer-close".into())
            .spawn(move || {
                drop(consumer);
                closed.send(()).ok();
            });
        if closing.is_ok() && done.recv_timeout(CLOSE_BOUND).is_err() {
            tracing::warn!(
                "the group consumer did not close within {CLOSE_BOUND:?} (a rebalance in flight); left closing on its own"
            );
        }
    }
}

fn run_once(
    topology: &Topology,
    me: StreamThread<'_>,
    build: &RunnerFactory,
    settings: &KafkaSettings,
    telemetry: Arc<Telemetry>,
    shutdown: &AtomicBool,
) -> anyhow::Result<()> {
    let (task, thread) = (me.task, me.index);
    let spec = &topology.tasks[task];
    let mut runner = build().map_err(|e| anyhow!(e))?;
    let state_dir = settings.state_dir.join(&topology.application).join(task);
    let globals = topology.task_globals(task);
    let mut global_reader = if globals.is_empty() {
        None
    } else {
        // One copy per thread: each thread's reader applies the sources between its own
        // transactions. Thread 0 keeps the directory a one-thread process had.
        let dir = match thread {
            0 => state_dir.join("global"),
            n => state_dir.join(format!("global-{n}")),
        };
        let stores = Arc::new(GlobalStores::open(&dir, globals)?);
        runner.attach_globals(stores.clone());
        let mut reader = GlobalReader::new(settings, stores)?;
        telemetry.task_state(me, TaskState::Restoring);
        let started = Instant::now();
        let Some(applied) = reader.catch_up(shutdown, &|_| telemetry.task_alive(me))? else {
            return Ok(());
        };
        tracing::info!(task, thread, applied, took = ?started.elapsed(), "global stores caught up");
        Some(reader)
    };
    let producer: ThreadedProducer<DefaultProducerContext> = settings
        .producer(&topology.transactional_id(task, &settings.instance))
        .create()
        .context("creating the transactional producer")?;
    producer
        .init_transactions(CALL_TIMEOUT)
        .context("init_transactions (fences any previous instance with the same id)")?;
    let core = Arc::new(Mutex::new(Core {
        task: task.to_owned(),
        thread,
        runner,
        producer,
        partitions: BTreeMap::new(),
        pending_restore: BTreeSet::new(),
        transaction: None,
        failure: None,
        out: Vec::new(),
        state_dir,
        telemetry: telemetry.clone(),
        members: MemberTopics {
            topology: topology.clone(),
            settings: settings.clone(),
            known: BTreeSet::new(),
        },
    }));
    let consumer = GroupConsumer(Some(
        settings
            .consumer(&topology.group_id(task))
            .create_with_context(TaskContext {
                core: core.clone(),
                task: task.to_owned(),
                thread,
                telemetry: telemetry.clone(),
            })
            .context("creating the group consumer")?,
    ));
    let inputs: Vec<&str> = spec.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs).context("subscribing")?;
    let restorer: BaseConsumer = settings
        .restore_consumer()
        .create()
        .context("creating the restore consumer")?;

    let commit_interval = settings.commit_interval;
    let idle_commit_after = settings.idle_commit_after;
    // How long the last commit took: a drained transaction stays open at least
    // COMMIT_SHARE_BOUND times that, so commits take at most about a quarter of the task's
    // time however slowly the broker answers. On an idle broker commits take a few ms and
    // `idle_commit_after` rules; on a busy one, committing every 10 ms would stall the task
    // more than it works, and it would fall behind at a load it sustains in bulk.
    let mut last_commit = Duration::ZERO;
    let max_records = settings.max_records_per_transaction;
    loop {
        telemetry.task_alive(me);
        if shutdown.load(Ordering::SeqCst) {
            if let Some(metadata) = consumer.group_metadata() {
                lock(&core).commit(&metadata).context("final commit")?;
            }
            tracing::info!(task, thread, "shut down cleanly");
            return Ok(());
        }
        if let Some(reader) = &mut global_reader {
            reader.poll_available()?;
        }
        // With a transaction open, wait for input no longer than until it may commit when
        // idle; from then on, an empty poll means the input is drained.
        let idle_after = idle_commit_after.max(last_commit * COMMIT_SHARE_BOUND);
        let open_since = lock(&core).transaction.as_ref().map(|t| t.started);
        let wait = open_since.map_or(POLL, |started| {
            (started + idle_after)
                .saturating_duration_since(Instant::now())
                .min(POLL)
        });
        let message = consumer.poll(wait);
        let drained = message.is_none();
        let mut core = lock(&core);
        if let Some(e) = core.failure.take() {
            core.abort("task failure");
            return Err(e);
        }
        if !core.pending_restore.is_empty() {
            core.restore(&consumer, &inputs, &restorer, shutdown)?;
        }
        match message {
            Some(Ok(m)) => core.process(&m, global_reader.as_mut(), shutdown)?,
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                if matches!(&e, KafkaError::MessageConsumptionFatal(_)) {
                    return Err(e).context("consumer failed");
                }
                tracing::warn!(task, thread, error = %e, "consumer error");
            }
        }
        core.punctuate()?;
        let due = core.transaction.as_ref().is_some_and(|t| {
            let age = t.started.elapsed();
            age >= commit_interval || t.records >= max_records || (drained && age >= idle_after)
        });
        if due {
            let metadata = consumer
                .group_metadata()
                .ok_or_else(|| anyhow!("consumer has no group metadata"))?;
            let started = Instant::now();
            core.commit(&metadata)?;
            last_commit = started.elapsed();
        }
    }
}

impl Core {
    fn me(&self) -> StreamThread<'_> {
        StreamThread {
            task: &self.task,
            index: self.thread,
        }
    }

    fn begin(&mut self) -> anyhow::Result<()> {
        if self.transaction.is_none() {
            self.producer
                .begin_transaction()
                .context("begin_transaction")?;
            self.transaction = Some(OpenTransaction {
                started: Instant::now(),
                records: 0,
                offsets: BTreeMap::new(),
            });
        }
        Ok(())
    }

    fn process(
        &mut self,
        message: &BorrowedMessage<'_>,
        global_reader: Option<&mut GlobalReader>,
        shutdown: &AtomicBool,
    ) -> anyhow::Result<()> {
        let partition = message.partition();
        self.begin()?;
        let raw = RawRecord {
            topic: message.topic(),
            partition,
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
            key: message.key(),
            value: message.payload(),
        };
        let stores = self.partitions.get_mut(&partition).ok_or_else(|| {
            anyhow!("record from partition {partition}, which has no open stores")
        })?;
        let mut out = std::mem::take(&mut self.out);
        if self.runner.process(stores, raw, &mut out) == Processed::GlobalsBehind {
            // An input names a global entry (a policy revision) this task has not read yet.
            let caught_up = match global_reader {
                Some(reader) => reader.catch_up(shutdown, &|_| {})?.is_some(),
                None => true,
            };
            if !caught_up {
                self.out = out;
                bail!("stopping while catching global stores up");
            }
            self.runner.process_caught_up(stores, raw, &mut out);
        }
        let sent = self.send_all(&mut out);
        self.out = out;
        sent?;
        let transaction = self.transaction.as_mut().expect("begun above");
        transaction.records += 1;
        transaction.offsets.insert(
            (message.topic().to_owned(), partition),
            message.offset() + 1,
        );
        Ok(())
    }

    fn punctuate(&mut self) -> anyhow::Result<()> {
        let due = self.runner.punctuations_due();
        if due.is_empty() || self.partitions.is_empty() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.out);
        for (partition, stores) in &mut self.partitions {
            self.runner.punctuate(&due, stores, *partition, &mut out);
        }
        // A punctuation that emitted nothing and changed no store (the usual one, at a short
        // interval such as psi's) opens no transaction: an idle task commits nothing.
        let changed = !out.is_empty()
            || self
                .partitions
                .values()
                .any(|stores| stores.changelog_records().next().is_some());
        if changed {
            self.begin()?;
        }
        let sent = self.send_all(&mut out);
        self.out = out;
        sent
    }

    fn send_all(&mut self, out: &mut Vec<OutRecord>) -> anyhow::Result<()> {
        for record in out.drain(..) {
            self.members.ensure(&record.topic)?;
            send(
                &self.producer,
                &record.topic,
                record.partition,
                &record.key,
                Some(&record.value),
            )?;
        }
        Ok(())
    }

    /// Commits the open transaction: changelog records, offsets, commit; then local state.
    fn commit(&mut self, metadata: &ConsumerGroupMetadata) -> anyhow::Result<()> {
        let Some(transaction) = self.transaction.take() else {
            return Ok(());
        };
        let started = Instant::now();
        let result = self.commit_transaction(&transaction, metadata);
        if let Err(e) = result {
            self.transaction = Some(transaction);
            self.abort(&format!("{e:#}"));
            return Err(e);
        }
        for stores in self.partitions.values_mut() {
            stores.apply_committed()?;
        }
        self.telemetry
            .transaction_committed(self.me(), transaction.records, started.elapsed());
        Ok(())
    }

    fn commit_transaction(
        &self,
        transaction: &OpenTransaction,
        metadata: &ConsumerGroupMetadata,
    ) -> anyhow::Result<()> {
        for (partition, stores) in &self.partitions {
            for (changelog, key, value) in stores.changelog_records() {
                send(&self.producer, changelog, Some(*partition), key, value)?;
            }
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &transaction.offsets {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        if offsets.count() > 0 {
            self.producer
                .send_offsets_to_transaction(&offsets, metadata, CALL_TIMEOUT)
                .context("send_offsets_to_transaction")?;
        }
        await_delivery(&self.producer, CALL_TIMEOUT)?;
        self.producer
            .commit_transaction(CALL_TIMEOUT)
            .context("commit_transaction")?;
        Ok(())
    }

    /// Aborts the open transaction, if any, and forgets its store writes.
    fn abort(&mut self, why: &str) {
        if self.transaction.take().is_some() {
            if let Err(e) = self.producer.abort_transaction(CALL_TIMEOUT) {
                tracing::warn!(task = self.task, thread = self.thread, error = %e, "abort_transaction failed; the broker will time the transaction out");
            }
            self.telemetry.transaction_aborted(self.me(), why);
        }
        for stores in self.partitions.values_mut() {
            stores.discard();
        }
    }

    /// Opens the stores of newly assigned partitions and replays their changelogs to the end.
    ///
    /// First it reads the partitions' committed input offsets. Reading read_committed, that
    /// call waits while a previous owner's transaction still holds pending offsets — and only
    /// once that transaction is resolved are all its changelog records in the log. Reading the
    /// changelog end before that could miss records the previous owner's producer had queued
    /// but not yet written, while its offsets still commit: state would silently lose updates.
    fn restore(
        &mut self,
        consumer: &BaseConsumer<TaskContext>,
        inputs: &[&str],
        restorer: &BaseConsumer,
        shutdown: &AtomicBool,
    ) -> anyhow::Result<()> {
        let partitions = std::mem::take(&mut self.pending_restore);
        let mut assigned = TopicPartitionList::new();
        for topic in inputs {
            for partition in &partitions {
                assigned.add_partition(topic, *partition);
            }
        }
        consumer
            .committed_offsets(assigned, CALL_TIMEOUT)
            .context("waiting for stable committed offsets of the assigned partitions")?;
        for partition in partitions {
            let started = Instant::now();
            let path = self.state_dir.join(partition.to_string());
            let claim = Claim::acquire(&path, shutdown)?;
            let mut stores = PartitionStores::open(&path, self.runner.store_infos().to_vec())?;
            let mut replayed = 0;
            for index in 0..stores.infos().len() {
                replayed += restore_store(
                    restorer,
                    &mut stores,
                    index,
                    partition,
                    self.me(),
                    &self.telemetry,
                    shutdown,
                )?;
            }
            tracing::info!(task = self.task, thread = self.thread, partition, replayed, took = ?started.elapsed(), "partition restored");
            self.partitions.insert(
                partition,
                OwnedPartition {
                    stores,
                    _claim: claim,
                },
            );
        }
        self.telemetry.task_state(self.me(), TaskState::Running);
        Ok(())
    }
}

/// Replays one store's changelog partition from its checkpoint to the end offset seen when
/// the restore starts. Reading read_committed, the end is reached only once any transaction
/// still open there (a dead previous owner's) is resolved, so nothing committed is missed.
fn restore_store(
    restorer: &BaseConsumer,
    stores: &mut PartitionStores,
    index: usize,
    partition: i32,
    thread: StreamThread<'_>,
    telemetry: &Telemetry,
    shutdown: &AtomicBool,
) -> anyhow::Result<usize> {
    let changelog = stores.infos()[index].changelog.clone();
    let (_, end) = crate::client::watermarks(restorer, &changelog, partition)?;
    let start = stores.checkpoint(&changelog)?.unwrap_or(0);
    if start >= end {
        stores.restore(index, &[], end)?;
        return Ok(0);
    }
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(&changelog, partition, Offset::Offset(start))?;
    restorer.assign(&list)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut batch = Vec::with_capacity(RESTORE_BATCH);
    let mut replayed = 0;
    loop {
        match restorer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => batch.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().map(<[u8]>::to_vec),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                return Err(e).with_context(|| format!("reading {changelog}/{partition}"))
            }
        }
        let position = position(restorer, &changelog, partition)?;
        if batch.len() >= RESTORE_BATCH || position >= end {
            replayed += batch.len();
            stores.restore(index, &batch, position.max(start))?;
            telemetry.restore_progressed(
                thread,
                &changelog,
                partition,
                batch.len(),
                (end - position).max(0),
            );
            batch.clear();
        }
        if position >= end {
            break;
        }
        if shutdown.load(Ordering::SeqCst) {
            bail!("stopped while restoring {changelog}/{partition} (at {position} of {end})");
        }
        if Instant::now() > deadline {
            bail!("restore of {changelog}/{partition} made no progress to offset {end} (at {position})");
        }
    }
    restorer.unassign()?;
    Ok(replayed)
}

/// A partition's stores, owned by one stream thread, with its claim on their directory.
/// Fields drop in order: RocksDB closes before the claim is released.
struct OwnedPartition {
    stores: PartitionStores,
    _claim: Claim,
}

impl std::ops::Deref for OwnedPartition {
    type Target = PartitionStores;

    fn deref(&self) -> &PartitionStores {
        &self.stores
    }
}

impl std::ops::DerefMut for OwnedPartition {
    fn deref_mut(&mut self) -> &mut PartitionStores {
        &mut self.stores
    }
}

/// Partition directories whose RocksDB a thread of this process has open.
static CLAIMED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static RELEASED: Condvar = Condvar::new();
/// How long a thread waits for another thread of this process to close a partition's stores.
const CLAIM_WAIT: Duration = Duration::from_secs(30);

/// This thread's exclusive use of a partition's state directory within the process.
///
/// The threads of a task share `--state-dir/<application>/<task>/<partition>`, so a partition
/// that moves between threads of one process at a rebalance keeps its local state (no
/// restore from the start). RocksDB allows one open handle per directory: the eager protocol
/// has the old owner revoke, and close, before the new assignment exists, but an old owner
/// that fell out of the group (blocked in a restore or a call past the rebalance timeout)
/// still has it open when the new owner starts. The new owner waits here, briefly; past
/// `CLAIM_WAIT` it fails and restarts, letting go of what it holds, so two threads waiting on
/// each other cannot wait forever.
struct Claim(PathBuf);

impl Claim {
    fn acquire(path: &Path, shutdown: &AtomicBool) -> anyhow::Result<Claim> {
        let deadline = Instant::now() + CLAIM_WAIT;
        let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
        while claimed.contains(path) {
            if shutdown.load(Ordering::SeqCst) {
                bail!("stopped while waiting for {} to be closed", path.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} is still open in another stream thread after {CLAIM_WAIT:?}",
                    path.display()
                );
            }
            claimed = RELEASED
                .wait_timeout(claimed, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        claimed.insert(path.to_owned());
        Ok(Claim(path.to_owned()))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
        RELEASED.notify_all();
    }
}

fn position(consumer: &BaseConsumer, topic: &str, partition: i32) -> anyhow::Result<i64> {
    let list = consumer.position()?;
    Ok(
        match list.find_partition(topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => 0,
        },
    )
}

/// Waits until every record produced so far is acknowledged (or failed), so that
/// `commit_transaction` finds nothing in flight.
///
/// rdkafka 0.39's `flush` (which its `commit_transaction` calls first) polls the event queue
/// until a 100 ms deadline passes whether or not the last acknowledgement came sooner, which
/// made every commit last ≥ 100 ms. librdkafka's own flush does what is needed: it sends
/// batches still lingering (`linger.ms`) at once, then returns as soon as the count of
/// undelivered records reaches zero; the producer's polling thread serves the delivery events
/// that bring it there.
fn await_delivery(
    producer: &ThreadedProducer<DefaultProducerContext>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the pointer is the live producer handle `producer` owns; rd_kafka_flush is
    // thread-safe and only reads the handle.
    let code =
        unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), timeout_ms) };
    if code != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        bail!(
            "{} records still unacknowledged after {timeout:?} ({})",
            producer.in_flight_count(),
            RDKafkaErrorCode::from(code)
        );
    }
    Ok(())
}

/// Produces one record, waiting while the producer queue is full.
fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    value: Option<&[u8]>,
) -> anyhow::Result<()> {
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key);
    if let Some(p) = partition {
        record = record.partition(p);
    }
    if let Some(v) = value {
        record = record.payload(v);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e).with_context(|| format!("producing to {topic}")),
        }
    }
}
