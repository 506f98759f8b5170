//! `/healthz` tells an operator about a task that is stuck (issue 14 §1): here a zombie's
//! transaction holds input offsets of the task's group and is never committed, so the task
//! cannot learn its committed offsets, fails, restarts, and never leaves `Restoring`. Past
//! `--stuck-after` `/healthz` answers 503 and names the task; once the transaction is aborted,
//! the task becomes ready and healthy.

mod util;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use util::*;

#[test]
fn a_task_stuck_restoring_fails_healthz_until_it_moves_on() {
    let _serial = serial();
    let t = TestTopology::with_yaml("health", |p| full_path_topology(p, &["age_over"], false));
    // A zombie: a transaction with offsets of the task's group in it, left open. Readers of
    // committed offsets that must be stable (the executor's restore) wait until it ends.
    let group: BaseConsumer = settings()
        .client()
        .set("group.id", format!("{}.tenancy", t.prefix))
        .create()
        .unwrap();
    let zombie: ThreadedProducer<_> = settings()
        .client()
        .set("transactional.id", format!("{}-zombie", t.prefix))
        .set("transaction.timeout.ms", "300000")
        .create()
        .unwrap();
    zombie.init_transactions(Duration::from_secs(30)).unwrap();
    zombie.begin_transaction().unwrap();
    let mut offsets = TopicPartitionList::new();
    for partition in 0..3 {
        offsets
            .add_partition_offset(&t.topic("requests"), partition, Offset::Offset(0))
            .unwrap();
    }
    zombie
        .send_offsets_to_transaction(
            &offsets,
            &group.group_metadata().unwrap(),
            Duration::from_secs(30),
        )
        .unwrap();

    let port = free_port();
    let mut pipeline = t.spawn_with("a", Some(port), &[("PAVILION_STUCK_AFTER", "3s")]);
    let healthz = || http_get(port, "/healthz");
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        match healthz() {
            Some((503, body)) => break body,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "/healthz still {other:?}; log:\n{}",
                    pipeline.log_tail()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert!(
        report.contains("task tenancy#0: Restoring, no progress for"),
        "{report}"
    );
    assert_ne!(http_get(port, "/readyz").map(|(s, _)| s), Some(200));

    zombie.abort_transaction(Duration::from_secs(30)).unwrap();
    let took = pipeline.wait_ready(port, Duration::from_secs(60));
    assert_eq!(healthz().map(|(s, _)| s), Some(200));
    println!("stuck reported: {report:?}; ready {took:?} after the transaction was aborted");
    pipeline.stop();
}
