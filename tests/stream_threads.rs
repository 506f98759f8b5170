//! `pavilion run --threads N` (issue 15): one process runs each task on N stream threads, each
//! a member of the task's group with its own consumer, producer and transactions. Here both
//! threads of one process own partitions and commit records, every thread shows in `/readyz`,
//! and threads beyond the partitions stay idle yet ready. (The SIGKILL tests of
//! `exactly_once.rs` run on two threads as well.)

mod util;

use std::time::{Duration, Instant};

use util::*;

/// A per-thread sample of `/metrics` (`{task, thread}` labels, as the exposition orders them).
fn per_thread(metrics: &str, name: &str, task: &str, thread: usize) -> f64 {
    metric(
        metrics,
        &format!("{name}{{task=\"{task}\",thread=\"{thread}\"}}"),
    )
}

/// The counting topology on `partitions`, run by one process on `threads` threads, ready.
fn start(
    name: &str,
    partitions: u32,
    fused: bool,
    threads: usize,
) -> (TestTopology, Tally, u16, Pipeline) {
    let t = TestTopology::new(name, partitions, fused).threads(threads);
    let tally = Tally::start(&t.topic("totals"));
    let port = free_port();
    let mut pipeline = t.spawn("a", Some(port));
    pipeline.wait_ready(port, Duration::from_secs(60));
    (t, tally, port, pipeline)
}

#[test]
fn two_threads_of_one_process_share_the_partitions_and_both_process() {
    let _serial = serial();
    let (t, tally, port, mut pipeline) = start("threads", 6, false, 2);

    // Both members of each task's group hold half of the six partitions before input flows
    // (the first thread to join may briefly hold all six).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = http_get(port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        let split = ["counter", "totals"].iter().all(|task| {
            (0..2).all(|thread| {
                per_thread(&metrics, "pavilion_assigned_partitions", task, thread) == 3.0
            })
        });
        if split {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the threads never split the partitions 3/3:\n{metrics}\nlog:\n{}",
            pipeline.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, ready) = http_get(port, "/readyz").unwrap();
    for name in ["counter#0", "counter#1", "totals#0", "totals#1"] {
        assert!(ready.contains(&format!("\"{name}\": Running")), "{ready}");
    }

    produce_events(&t.topic("events"), 0, 6_000, 60, 20_000);
    tally.wait_for(6_000, Duration::from_secs(120), &[&pipeline]);
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    for task in ["counter", "totals"] {
        let committed: Vec<f64> = (0..2)
            .map(|thread| per_thread(&metrics, "pavilion_committed_records_total", task, thread))
            .collect();
        assert!(
            committed.iter().all(|&n| n > 0.0),
            "both threads of {task} commit records: {committed:?}\n{metrics}"
        );
        assert_eq!(
            committed.iter().sum::<f64>(),
            6_000.0,
            "{task}: {committed:?}"
        );
    }
    pipeline.stop();
    let log = std::fs::read_to_string(&pipeline.log).unwrap();
    assert!(log.contains("2 stream threads per task"), "{log}");
    assert_exactly_once(&t, &expected_per_key(6_000, 60));
}

#[test]
fn threads_beyond_the_partitions_stay_idle_and_ready() {
    let _serial = serial();
    let (t, tally, port, mut pipeline) = start("idle-threads", 2, true, 3);
    let (_, ready) = http_get(port, "/readyz").unwrap();
    assert_eq!(ready.matches(": Running").count(), 3, "{ready}");

    produce_events(&t.topic("events"), 0, 1_000, 10, 20_000);
    tally.wait_for(1_000, Duration::from_secs(120), &[&pipeline]);
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let owned: Vec<f64> = (0..3)
        .map(|thread| per_thread(&metrics, "pavilion_assigned_partitions", "counter", thread))
        .collect();
    assert_eq!(owned.iter().sum::<f64>(), 2.0, "{owned:?}");
    assert!(owned.contains(&0.0), "one thread is idle: {owned:?}");
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));
    pipeline.stop();
    assert_exactly_once(&t, &expected_per_key(1_000, 10));
}
