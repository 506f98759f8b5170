//! What the runtime does around any stage: punctuation on the injected clock, a panic
//! contained to one dead-lettered record, a record retried once global stores caught up.

use std::time::Duration;

use expect_test::expect;
use pavilion_schemas::{DemoEvent, KeyCount};

use crate::testing::TestDriver;
use crate::{parse_config, Context, ProcessError, Processor, Record, StageKind, StageKinds};

/// Counts events in `seen`; panics (after staging a write) on payload `boom`, finds its
/// global stores behind on `behind`; on every punctuation emits the number seen so far.
struct Ticker;

impl Processor for Ticker {
    type Input = DemoEvent;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<DemoEvent>,
    ) -> Result<(), ProcessError> {
        let mut seen = ctx.store("seen")?;
        let n = seen.get::<i64>(b"n")?.unwrap_or(0) + 1;
        seen.put(b"n", &n)?;
        if record.value.payload == "boom" {
            panic!("boom at seq {}", record.value.seq);
        }
        if record.value.payload == "behind" {
            return Err(ProcessError::globals_behind("an entry not read yet"));
        }
        Ok(())
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let n = ctx.store("seen")?.get::<i64>(b"n")?.unwrap_or(0);
        let at = crate::clock::epoch_millis(ctx.now());
        ctx.emit(
            "ticks",
            "tick",
            &KeyCount {
                key: "tick".into(),
                seq: at,
                count: n,
            },
        )
    }
}

static TICKER: StageKind = StageKind {
    name: "ticker",
    outputs: &["ticks"],
    stores: &["seen"],
    globals: &[],
    check_config: |c| parse_config::<serde_json::Map<String, serde_json::Value>>(c).map(drop),
    build: |_| Ok(Box::new(Ticker)),
};

const TOPOLOGY: &str = "
application: t
dlq: dlq
topics:
  dlq: { schema: pavilion.DeadLetter }
  events: { schema: pavilion.DemoEvent }
  ticks: { schema: pavilion.KeyCount }
stages:
  ticker:
    kind: ticker
    inputs: [events]
    outputs: { ticks: ticks }
    stores: [seen]
    punctuate_every: 10s
";

fn event(seq: i64, payload: &str) -> DemoEvent {
    DemoEvent {
        key: "k".into(),
        seq,
        payload: payload.into(),
    }
}

#[test]
fn punctuation_follows_the_injected_clock() {
    let mut driver = TestDriver::new(TOPOLOGY, "ticker", &StageKinds::new([&TICKER]));
    driver.send("events", "k", &event(0, ""));
    driver.send("events", "k", &event(1, ""));
    let ticks = driver.punctuate();
    let mut rendered = driver.render(&ticks);
    rendered += &format!("again at once: {:?}\n", driver.punctuate());
    driver.clock().advance(Duration::from_secs(9));
    rendered += &format!("after 9s: {:?}\n", driver.punctuate());
    driver.send("events", "k", &event(2, ""));
    driver.clock().advance(Duration::from_secs(1));
    let ticks = driver.punctuate();
    rendered += &driver.render(&ticks);
    expect![[r#"
        ticks[0] tick pavilion.KeyCount {"count":2,"key":"tick","seq":1700000000000}
        again at once: []
        after 9s: []
        ticks[0] tick pavilion.KeyCount {"count":3,"key":"tick","seq":1700000010000}
    "#]]
    .assert_eq(&rendered);
}

#[test]
fn a_panicking_stage_dead_letters_the_record_and_goes_on() {
    let mut driver = TestDriver::new(TOPOLOGY, "ticker", &StageKinds::new([&TICKER]));
    driver.send("events", "k", &event(0, ""));
    let out = driver.send("events", "k", &event(1, "boom"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "dlq");
    let dead: pavilion_schemas::DeadLetter = pavilion_schemas::Registry::builtin()
        .decode(&out[0].value)
        .unwrap();
    assert_eq!(dead.detail, "stage panicked: boom at seq 1");
    assert_eq!(
        dead.reason,
        pavilion_schemas::DeadLetterReason::ProcessorError
    );
    driver.send("events", "k", &event(2, ""));
    // The panicking record's write was dropped: 2 events counted, not 3.
    expect![[r#"
        n = 2
    "#]]
    .assert_eq(&driver.store("ticker", "seen"));
}

#[test]
fn a_stage_behind_its_global_stores_gets_the_record_again_once_then_dead_letters_it() {
    let mut driver = TestDriver::new(TOPOLOGY, "ticker", &StageKinds::new([&TICKER]));
    driver.send("events", "k", &event(0, ""));
    // First attempt: the caller is asked to catch up; nothing produced, the write dropped.
    let (processed, out) = driver.send_first_attempt("events", "k", &event(1, "behind"));
    assert_eq!(processed, crate::Processed::GlobalsBehind);
    assert!(out.is_empty());
    expect![[r#"
        n = 1
    "#]]
    .assert_eq(&driver.store("ticker", "seen"));
    // Caught up and still missing: a dead letter, not another retry.
    let out = driver.send("events", "k", &event(1, "behind"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "dlq");
    // A record a stage processes is done on the first attempt.
    let (processed, out) = driver.send_first_attempt("events", "k", &event(2, ""));
    assert_eq!((processed, out.len()), (crate::Processed::Done, 0));
}
