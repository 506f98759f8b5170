//! Everything observable about a running pipeline, in one place: metric names, the events
//! that move them (each logs and counts), and the health of every stream thread of every task
//! for `/readyz` and `/healthz`.
//!
//! Stages never count their own inputs and outputs; the runtime does it around them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry as PromRegistry,
};

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Creating clients, joining the group.
    Starting,
    /// Replaying changelogs into local stores.
    Restoring,
    /// Processing.
    Running,
    /// Stopped after shutdown.
    Stopped,
}

/// One of a task's stream threads in this process (`pavilion run --threads`), named
/// `<task>#<index>` in logs, `/readyz` and `/healthz`. Each has its own consumer, producer and
/// health; metrics keep the `task` label, and only the per-thread ones add `thread`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamThread<'a> {
    /// The task.
    pub task: &'a str,
    /// 0 to `--threads` − 1.
    pub index: usize,
}

impl fmt::Display for StreamThread<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.task, self.index)
    }
}

/// Prometheus metrics of one process.
pub struct Telemetry {
    registry: PromRegistry,
    records_in: IntCounterVec,
    records_out: IntCounterVec,
    dead_letters: IntCounterVec,
    transactions: IntCounterVec,
    transaction_seconds: HistogramVec,
    processing_seconds: HistogramVec,
    consumer_lag: IntGaugeVec,
    restore_remaining: IntGaugeVec,
    restored_records: IntCounterVec,
    restarts: IntCounterVec,
    stage_events: IntCounterVec,
    committed_records: IntCounterVec,
    assigned_partitions: IntGaugeVec,
    /// By task, then stream thread.
    states: Mutex<BTreeMap<String, BTreeMap<usize, TaskHealth>>>,
}

/// A stream thread's state, and when it last did useful work.
#[derive(Debug, Clone, Copy)]
struct TaskHealth {
    state: TaskState,
    /// Last time the thread ran its loop while running, or applied records while restoring.
    /// Moving between `Starting` and `Restoring` (a thread that keeps failing and restarting)
    /// is not progress.
    progressed: Instant,
}

fn counter(r: &PromRegistry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &PromRegistry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(
    r: &PromRegistry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Telemetry {
    /// Fresh metrics, registered in their own registry.
    pub fn new() -> Arc<Self> {
        let r = PromRegistry::new();
        Arc::new(Telemetry {
            records_in: counter(
                &r,
                "pavilion_records_in_total",
                "Records handed to a stage.",
                &["stage"],
            ),
            records_out: counter(
                &r,
                "pavilion_records_out_total",
                "Records a stage emitted, by topic.",
                &["stage", "topic"],
            ),
            dead_letters: counter(
                &r,
                "pavilion_dead_letters_total",
                "Records sent to the dead-letter topic.",
                &["stage", "reason"],
            ),
            transactions: counter(
                &r,
                "pavilion_transactions_total",
                "Kafka transactions ended, by outcome.",
                &["task", "outcome"],
            ),
            transaction_seconds: histogram(
                &r,
                "pavilion_transaction_commit_seconds",
                "Time to commit a transaction (changelog flush, offsets, commit).",
                &["task"],
                prometheus::exponential_buckets(0.001, 2.0, 14).expect("buckets"),
            ),
            processing_seconds: histogram(
                &r,
                "pavilion_processing_seconds",
                "Time a stage spends on one record.",
                &["stage"],
                prometheus::exponential_buckets(0.000_005, 2.0, 18).expect("buckets"),
            ),
            consumer_lag: gauge(
                &r,
                "pavilion_consumer_lag",
                "Records behind the end of each input partition.",
                &["task", "topic", "partition"],
            ),
            restore_remaining: gauge(
                &r,
                "pavilion_restore_remaining_records",
                "Changelog records left to restore.",
                &["task", "changelog", "partition"],
            ),
            restored_records: counter(
                &r,
                "pavilion_restored_records_total",
                "Changelog records replayed into local stores.",
                &["task", "changelog"],
            ),
            restarts: counter(
                &r,
                "pavilion_task_restarts_total",
                "Task restarts after a fatal or transaction error.",
                &["task"],
            ),
            stage_events: counter(
                &r,
                "pavilion_stage_events_total",
                "Things a stage counts itself, e.g. rejections per reason, proofs per circuit.",
                &["stage", "event", "label"],
            ),
            committed_records: counter(
                &r,
                "pavilion_committed_records_total",
                "Input records whose transaction committed, by task and stream thread.",
                &["task", "thread"],
            ),
            assigned_partitions: gauge(
                &r,
                "pavilion_assigned_partitions",
                "Partitions of its inputs a stream thread owns (0 for an idle thread).",
                &["task", "thread"],
            ),
            states: Mutex::new(BTreeMap::new()),
            registry: r,
        })
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_utf8(&families, &mut out)
            .expect("text encoding cannot fail");
        out
    }

    /// A stage handled a record.
    pub fn record_processed(&self, stage: &str, took: Duration) {
        self.records_in.with_label_values(&[stage]).inc();
        self.processing_seconds
            .with_label_values(&[stage])
            .observe(took.as_secs_f64());
    }

    /// A stage emitted a record.
    pub fn record_emitted(&self, stage: &str, topic: &str) {
        self.records_out.with_label_values(&[stage, topic]).inc();
    }

    /// A record went to the dead-letter topic.
    pub fn record_dead_lettered(
        &self,
        stage: &str,
        reason: &str,
        detail: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        tracing::info!(
            stage,
            reason,
            detail,
            topic,
            partition,
            offset,
            "record dead-lettered"
        );
        self.dead_letters.with_label_values(&[stage, reason]).inc();
    }

    /// A transaction committed.
    pub fn transaction_committed(&self, thread: StreamThread<'_>, records: usize, took: Duration) {
        let task = thread.task;
        tracing::trace!(
            task,
            thread = thread.index,
            records,
            ?took,
            "transaction committed"
        );
        self.transactions
            .with_label_values(&[task, "committed"])
            .inc();
        self.transaction_seconds
            .with_label_values(&[task])
            .observe(took.as_secs_f64());
        self.committed_records
            .with_label_values(&[task, &thread.index.to_string()])
            .inc_by(records as u64);
    }

    /// A transaction aborted.
    pub fn transaction_aborted(&self, thread: StreamThread<'_>, why: &str) {
        let task = thread.task;
        tracing::warn!(task, thread = thread.index, why, "transaction aborted");
        self.transactions
            .with_label_values(&[task, "aborted"])
            .inc();
    }

    /// A stream thread is restarting after an error.
    pub fn task_restarted(&self, thread: StreamThread<'_>, error: &str) {
        let task = thread.task;
        tracing::error!(
            task,
            thread = thread.index,
            error,
            "task failed; restarting"
        );
        self.restarts.with_label_values(&[task]).inc();
    }

    /// A stream thread's consumer now owns `partitions` partitions of each input.
    pub fn partitions_assigned(&self, thread: StreamThread<'_>, partitions: usize) {
        self.assigned_partitions
            .with_label_values(&[thread.task, &thread.index.to_string()])
            .set(partitions as i64);
    }

    /// Lag of an input partition, from the consumer's statistics.
    pub fn lag_observed(&self, task: &str, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[task, topic, &partition.to_string()])
            .set(lag);
    }

    /// Restore moved on.
    pub fn restore_progressed(
        &self,
        thread: StreamThread<'_>,
        changelog: &str,
        partition: i32,
        applied: usize,
        remaining: i64,
    ) {
        let task = thread.task;
        if applied > 0 {
            self.task_alive(thread);
        }
        self.restored_records
            .with_label_values(&[task, changelog])
            .inc_by(applied as u64);
        self.restore_remaining
            .with_label_values(&[task, changelog, &partition.to_string()])
            .set(remaining);
    }

    /// A stage counted one of its own events (see `Context::count`).
    pub fn stage_event(&self, stage: &str, event: &str, label: &str) {
        self.stage_events
            .with_label_values(&[stage, event, label])
            .inc();
    }

    /// A stream thread changed state (the first call registers it).
    pub fn task_state(&self, thread: StreamThread<'_>, state: TaskState) {
        tracing::info!(
            task = thread.task,
            thread = thread.index,
            ?state,
            "task state"
        );
        let now = Instant::now();
        let mut states = self.states.lock().expect("states lock");
        let health = states
            .entry(thread.task.to_owned())
            .or_default()
            .entry(thread.index)
            .or_insert(TaskHealth {
                state,
                progressed: now,
            });
        health.state = state;
        if state == TaskState::Running {
            health.progressed = now;
        }
    }

    /// A stream thread did useful work: a turn of its processing loop, or records restored.
    pub fn task_alive(&self, thread: StreamThread<'_>) {
        let mut states = self.states.lock().expect("states lock");
        if let Some(health) = states
            .get_mut(thread.task)
            .and_then(|t| t.get_mut(&thread.index))
        {
            health.progressed = Instant::now();
        }
    }

    /// Ready when every stream thread of every task is running (an idle thread, without
    /// partitions, runs too).
    pub fn ready(&self) -> bool {
        let states = self.states.lock().expect("states lock");
        !states.is_empty()
            && states
                .values()
                .flat_map(BTreeMap::values)
                .all(|h| h.state == TaskState::Running)
    }

    /// The state of every stream thread, by `<task>#<thread>`, for `/readyz`.
    pub fn states(&self) -> BTreeMap<String, TaskState> {
        let states = self.states.lock().expect("states lock");
        states
            .iter()
            .flat_map(|(task, threads)| {
                threads
                    .iter()
                    .map(move |(index, h)| (format!("{task}#{index}"), h.state))
            })
            .collect()
    }

    /// Stream threads that have made no progress for longer than `bound` (stopped ones
    /// excepted), as lines for `/healthz` naming `<task>#<thread>`: a thread stuck restoring,
    /// or a processing loop blocked in a call.
    pub fn stuck(&self, bound: Duration) -> Vec<String> {
        let states = self.states.lock().expect("states lock");
        states
            .iter()
            .flat_map(|(task, threads)| threads.iter().map(move |(index, h)| (task, index, h)))
            .filter(|(_, _, h)| h.state != TaskState::Stopped && h.progressed.elapsed() > bound)
            .map(|(task, index, h)| {
                format!(
                    "task {task}#{index}: {:?}, no progress for {} s",
                    h.state,
                    h.progressed.elapsed().as_secs()
                )
            })
            .collect()
    }
}

/// Checks a Prometheus text exposition with `promtool check metrics` (the format, and the
/// naming lint: counters end in `_total`, base units, help text), for the tests of every
/// process that serves `/metrics`. `$PROMTOOL` names the binary, default `promtool` on PATH
/// (Debian package `prometheus`; `scripts/test` installs it).
///
/// # Panics
///
/// When promtool rejects the text, or cannot be found while `$CI` is set (so CI cannot pass
/// without the check). Elsewhere a missing promtool only prints a notice.
pub fn assert_promtool_accepts(what: &str, exposition: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
            assert!(
                !ci,
                "{what}: `{promtool}` not found, and CI is set: install Debian's `prometheus` \
                 package (scripts/test does) or point $PROMTOOL at promtool"
            );
            eprintln!(
                "SKIPPED promtool check of {what}: `{promtool}` not found (install Debian's \
                 `prometheus` package, or set $PROMTOOL)"
            );
            return;
        }
        Err(e) => panic!("{what}: running `{promtool} check metrics`: {e}"),
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    let text = exposition.to_owned();
    // promtool reads everything before it answers; a thread keeps a large input from
    // filling the pipe while nobody reads its output.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{what}: waiting for `{promtool} check metrics`: {e}"));
    let written = writer.join().expect("writer thread");
    // The verdict first: a promtool that quit early also breaks the pipe.
    assert!(
        output.status.success(),
        "{what}: `{promtool} check metrics` failed ({}):\n{}{}\n--- exposition ---\n{exposition}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    written.unwrap_or_else(|e| panic!("{what}: writing to `{promtool} check metrics`: {e}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(task: &str, index: usize) -> StreamThread<'_> {
        StreamThread { task, index }
    }

    #[test]
    fn a_thread_without_progress_past_the_bound_is_reported_stuck() {
        let t = Telemetry::new();
        let (path, audit, audit_1) = (thread("path", 0), thread("audit", 0), thread("audit", 1));
        t.task_state(path, TaskState::Starting);
        t.task_state(path, TaskState::Restoring);
        t.task_state(audit, TaskState::Running);
        t.task_state(audit_1, TaskState::Running);
        std::thread::sleep(Duration::from_millis(30));
        t.task_alive(audit);
        let stuck = t.stuck(Duration::from_millis(20));
        assert_eq!(stuck.len(), 2, "{stuck:?}");
        assert!(stuck[0].starts_with("task audit#1: Running"), "{stuck:?}");
        assert!(stuck[1].starts_with("task path#0: Restoring"), "{stuck:?}");
        t.task_alive(audit_1);
        // Failing and restarting is not progress; restoring records is.
        t.task_state(path, TaskState::Starting);
        assert_eq!(t.stuck(Duration::from_millis(20)).len(), 1);
        t.restore_progressed(path, "changelog", 0, 10, 5);
        assert!(t.stuck(Duration::from_millis(20)).is_empty());
        t.task_state(path, TaskState::Stopped);
        std::thread::sleep(Duration::from_millis(30));
        t.task_alive(audit);
        t.task_alive(audit_1);
        assert!(t.stuck(Duration::from_millis(20)).is_empty());
    }

    /// `/readyz` waits for every thread of every task; a thread without partitions runs.
    #[test]
    fn ready_when_every_thread_of_every_task_runs() {
        let t = Telemetry::new();
        assert!(!t.ready(), "nothing registered yet");
        t.task_state(thread("totals", 0), TaskState::Running);
        t.task_state(thread("totals", 1), TaskState::Restoring);
        assert!(!t.ready());
        t.task_state(thread("totals", 1), TaskState::Running);
        assert!(t.ready());
        assert_eq!(
            format!("{:?}", t.states()),
            r#"{"totals#0": Running, "totals#1": Running}"#
        );
    }

    /// Every family, with samples, as `/metrics` shows it; promtool accepts the result.
    #[test]
    fn every_metric_family_renders_and_passes_promtool() {
        let t = Telemetry::new();
        t.record_processed("tenancy", Duration::from_micros(40));
        t.record_emitted("tenancy", "pavilion.requests.accepted");
        t.record_dead_lettered("tenancy", "decode", "bad avro", "pavilion.requests", 0, 7);
        let tenancy = StreamThread {
            task: "tenancy",
            index: 1,
        };
        t.transaction_committed(tenancy, 12, Duration::from_millis(9));
        t.transaction_aborted(tenancy, "fenced");
        t.task_restarted(tenancy, "broker gone");
        t.partitions_assigned(tenancy, 3);
        t.lag_observed("tenancy", "pavilion.requests", 3, 42);
        t.restore_progressed(tenancy, "pavilion.tenancy.seen.changelog", 3, 100, 900);
        t.stage_event("signing", "decisions", "jwt");
        let text = t.render();
        for line in [
            "pavilion_records_in_total{stage=\"tenancy\"} 1",
            "pavilion_records_out_total{stage=\"tenancy\",topic=\"pavilion.requests.accepted\"} 1",
            "pavilion_dead_letters_total{reason=\"decode\",stage=\"tenancy\"} 1",
            "pavilion_transactions_total{outcome=\"committed\",task=\"tenancy\"} 1",
            "pavilion_transactions_total{outcome=\"aborted\",task=\"tenancy\"} 1",
            "pavilion_transaction_commit_seconds_count{task=\"tenancy\"} 1",
            "pavilion_processing_seconds_count{stage=\"tenancy\"} 1",
            "pavilion_consumer_lag{partition=\"3\",task=\"tenancy\",topic=\"pavilion.requests\"} 42",
            "pavilion_restore_remaining_records{changelog=\"pavilion.tenancy.seen.changelog\",partition=\"3\",task=\"tenancy\"} 900",
            "pavilion_restored_records_total{changelog=\"pavilion.tenancy.seen.changelog\",task=\"tenancy\"} 100",
            "pavilion_task_restarts_total{task=\"tenancy\"} 1",
            "pavilion_committed_records_total{task=\"tenancy\",thread=\"1\"} 12",
            "pavilion_assigned_partitions{task=\"tenancy\",thread=\"1\"} 3",
            "pavilion_stage_events_total{event=\"decisions\",label=\"jwt\",stage=\"signing\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert_promtool_accepts("pipeline telemetry", &text);
    }
}
