//! The runtime's guarantees, proven on the real broker with the real binary: SIGKILLs
//! mid-stream, deleted local state, a dead group member, poison records.

mod util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pavilion_schemas::{DeadLetterReason, DemoEvent, KeyTotal, Registry};
use rand::Rng;
use util::*;

const EVENTS: u64 = 20_000;
const KEYS: u64 = 50;

/// Kills the pipeline (each task on `threads` stream threads) with SIGKILL at random moments
/// while events stream in, restarts it each time, and then checks every output and store
/// against the fault-free result.
fn survives_sigkills(fused: bool, threads: usize) {
    let _serial = serial();
    let name = format!("kill-{}-{threads}", if fused { "fused" } else { "split" });
    let t = TestTopology::new(&name, 4, fused).threads(threads);
    let tally = Tally::start(&t.topic("totals"));
    let input = t.topic("events");
    let producer = std::thread::spawn(move || produce_events(&input, 0, EVENTS, KEYS, 1_500));

    let mut pipeline = t.spawn("a", None);
    let mut rng = rand::rng();
    let mut kills_mid_stream = Vec::new();
    while kills_mid_stream.len() < 6 {
        std::thread::sleep(Duration::from_millis(rng.random_range(700..2_500)));
        let at = tally.get();
        if at >= EVENTS {
            break;
        }
        pipeline.sigkill();
        kills_mid_stream.push(at);
        pipeline = t.spawn("a", None);
    }
    producer.join().unwrap();
    assert!(
        kills_mid_stream.len() >= 5,
        "the stream ended before 5 kills (killed at {kills_mid_stream:?}); slow the producer down"
    );
    tally.wait_for(EVENTS, Duration::from_secs(240), &[&pipeline]);
    pipeline.stop();
    eprintln!("killed at outputs {kills_mid_stream:?}");
    assert_exactly_once(&t, &expected_per_key(EVENTS, KEYS));
}

#[test]
fn split_pipeline_survives_sigkill_mid_stream() {
    survives_sigkills(false, 1);
}

#[test]
fn fused_pipeline_survives_sigkill_mid_stream() {
    survives_sigkills(true, 1);
}

#[test]
fn split_pipeline_on_two_stream_threads_survives_sigkill_mid_stream() {
    survives_sigkills(false, 2);
}

#[test]
fn fused_pipeline_on_two_stream_threads_survives_sigkill_mid_stream() {
    survives_sigkills(true, 2);
}

/// Local RocksDB is a cache: deleting it between runs loses nothing.
#[test]
fn deleted_local_state_is_restored_from_the_changelog() {
    let _serial = serial();
    let t = TestTopology::new("restore", 3, false);
    let tally = Tally::start(&t.topic("totals"));

    let mut first = t.spawn("a", None);
    produce_events(&t.topic("events"), 0, 3_000, 20, 100_000);
    tally.wait_for(3_000, Duration::from_secs(120), &[&first]);
    first.stop();
    let state = t.state_dir("a");
    assert!(state.exists(), "the first run kept local state");
    std::fs::remove_dir_all(&state).unwrap();

    let mut second = t.spawn("a", None);
    produce_events(&t.topic("events"), 3_000, 3_000, 20, 100_000);
    tally.wait_for(6_000, Duration::from_secs(120), &[&second]);
    second.stop();
    let log = std::fs::read_to_string(&second.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("partition restored") && !l.contains("replayed=0")),
        "the second run must have replayed changelog records:\n{log}"
    );
    assert_exactly_once(&t, &expected_per_key(6_000, 20));
}

/// Two processes share the partitions; one dies for good; the other takes over its
/// partitions and state and finishes with exact counts.
#[test]
fn a_surviving_instance_takes_over_a_dead_ones_partitions() {
    let _serial = serial();
    let t = TestTopology::new("takeover", 4, false);
    let tally = Tally::start(&t.topic("totals"));
    let (port_a, port_b) = (free_port(), free_port());
    let mut a = t.spawn("a", Some(port_a));
    let mut b = t.spawn("b", Some(port_b));
    let input = t.topic("events");
    let producer = std::thread::spawn(move || produce_events(&input, 0, EVENTS, KEYS, 2_000));

    let records_in = |port| {
        http_get(port, "/metrics")
            .map_or(0.0, |(_, body)| metric(&body, "pavilion_records_in_total"))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while records_in(port_a) == 0.0 || records_in(port_b) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "both instances should process records:\n{}\n----\n{}",
            a.log_tail(),
            b.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port_b, "/readyz").map(|(s, _)| s) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "b never became ready: {:?}",
            http_get(port_b, "/readyz")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(port_a, "/healthz").map(|(s, _)| s), Some(200));
    let at = tally.get();
    b.sigkill();
    producer.join().unwrap();
    assert!(at < EVENTS, "b died mid-stream");
    tally.wait_for(EVENTS, Duration::from_secs(180), &[&a]);
    a.stop();
    assert_exactly_once(&t, &expected_per_key(EVENTS, KEYS));
}

/// Poison records land in the DLQ, with reasons and their original bytes, in the same
/// transactions as the good records' outputs; the stage never stops.
#[test]
fn poison_records_are_dead_lettered_and_good_ones_processed() {
    let _serial = serial();
    let t = TestTopology::new("poison", 3, true);
    let registry = Registry::builtin();
    let producer = pavilion_kafka::PlainProducer::new(&settings()).unwrap();
    let topic = t.topic("events");
    let mut poison: BTreeMap<Vec<u8>, DeadLetterReason> = BTreeMap::new();
    let mut good = 0u64;
    for i in 0..2_100u64 {
        let key = format!("k{}", i % 10);
        let value = if i % 21 == 20 {
            let n = poison.len();
            let (bytes, reason) = match n % 3 {
                0 => (
                    format!("garbage {n}").into_bytes(),
                    DeadLetterReason::Undecodable,
                ),
                1 => {
                    let wrong = KeyTotal {
                        key: key.clone(),
                        seq: n as i64,
                        count: 1,
                        sum: 1,
                    };
                    (
                        registry.encode(&wrong).unwrap(),
                        DeadLetterReason::SchemaMismatch,
                    )
                }
                _ => {
                    let refused = DemoEvent {
                        key: key.clone(),
                        seq: 100_000 + n as i64,
                        payload: "poison".into(),
                    };
                    (
                        registry.encode(&refused).unwrap(),
                        DeadLetterReason::ProcessorError,
                    )
                }
            };
            poison.insert(bytes.clone(), reason);
            bytes
        } else {
            let seq = good;
            good += 1;
            let key = format!("k{}", seq % 10);
            let event = DemoEvent {
                key: key.clone(),
                seq: seq as i64,
                payload: String::new(),
            };
            producer
                .send(&topic, key.as_bytes(), &registry.encode(&event).unwrap())
                .unwrap();
            continue;
        };
        producer.send(&topic, key.as_bytes(), &value).unwrap();
    }
    producer.flush().unwrap();
    assert_eq!((poison.len(), good), (100, 2_000));

    let tally = Tally::start(&t.topic("totals"));
    let mut pipeline = t.spawn("a", None);
    tally.wait_for(good, Duration::from_secs(120), &[&pipeline]);
    pipeline.stop();

    let dead = dead_letters(&t);
    assert_eq!(dead.len(), 100, "every poison record is dead-lettered once");
    for d in &dead {
        let original = d.original_value.clone().unwrap();
        assert_eq!(poison.get(&original), Some(&d.reason), "reason of {d:?}");
        assert_eq!(d.stage, "counter");
        assert_eq!(d.source_topic, topic);
        assert!(d.source_offset >= 0 && !d.detail.is_empty());
    }
    assert_exactly_once(&t, &expected_per_key(good, 10));
}
