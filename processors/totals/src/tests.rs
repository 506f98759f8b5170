//! Totals as data, alone and fused behind the counter: records in → records out and stores.

use expect_test::{expect, Expect};
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::{
    parse_config, Context, ProcessError, Processor, Record, StageKind, StageKinds,
};
use pavilion_schemas::{DemoEvent, KeyCount};

use crate::{Totals, TotalsConfig};

/// A task of a topology given inline, and the stores to show after the run.
struct Setup {
    yaml: &'static str,
    /// The kind of the `totals` stage (a test double replaces the real one).
    totals_kind: &'static str,
    task: &'static str,
    stores: &'static [(&'static str, &'static str)],
}

const ALONE: Setup = Setup {
    yaml: r#"
application: test
dlq: dlq
topics:
  dlq: { schema: pavilion.DeadLetter }
  counts: { schema: pavilion.KeyCount }
  totals: { schema: pavilion.KeyTotal }
stages:
  totals:
    kind: totals
    inputs: [counts]
    outputs: { totals: totals }
    stores: [totals]
"#,
    totals_kind: "totals",
    task: "totals",
    stores: &[("totals", "totals")],
};

const FUSED: Setup = Setup {
    yaml: r#"
application: test
dlq: dlq
topics:
  dlq: { schema: pavilion.DeadLetter }
  events: { schema: pavilion.DemoEvent }
  counts: { schema: pavilion.KeyCount }
  totals: { schema: pavilion.KeyTotal }
stages:
  counter:
    kind: counter
    inputs: [events]
    outputs: { counts: counts }
    stores: [counts]
  totals:
    kind: totals
    inputs: [counts]
    outputs: { totals: totals }
    stores: [totals]
fuse:
  - [counter, totals]
"#,
    totals_kind: "totals",
    task: "counter",
    stores: &[("counter", "counts"), ("totals", "totals")],
};

/// [`FUSED`] with a second stage that fails on counts of 2 or more.
const FUSED_PICKY: Setup = Setup {
    totals_kind: "picky-totals",
    ..FUSED
};

/// Real [`Totals`], which then refuses counts of 2 or more: so the failing record has both
/// written to the store and emitted before it fails, and all of that must vanish.
struct PickyTotals;

impl Processor for PickyTotals {
    type Input = KeyCount;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<KeyCount>,
    ) -> Result<(), ProcessError> {
        let count = record.value.count;
        Totals.process(ctx, record)?;
        if count >= 2 {
            return Err(ProcessError::new(format!("refusing count {count}")));
        }
        Ok(())
    }
}

static PICKY_TOTALS: StageKind = StageKind {
    name: "picky-totals",
    outputs: &["totals"],
    stores: &["totals"],
    globals: &[],
    check_config: |c| parse_config::<TotalsConfig>(c).map(drop),
    build: |_| Ok(Box::new(PickyTotals)),
};

/// One record sent to the task's input topic, keyed by `key`.
enum In {
    /// A `DemoEvent` to `events`; its `seq` is its position in the input.
    Event(&'static str),
    /// A `KeyCount` to `counts`; its `seq` is its position in the input.
    Count(&'static str, i64),
}

/// Sends `inputs` one by one (each its own transaction); renders each input followed by what
/// it produced, then the committed stores of `setup`.
fn check(setup: &Setup, inputs: &[In], outputs: Expect, state: Expect) {
    let kinds = StageKinds::new([&pavilion_counter::KIND, &crate::KIND, &PICKY_TOTALS]);
    let yaml = setup
        .yaml
        .replace("kind: totals", &format!("kind: {}", setup.totals_kind));
    let mut driver = TestDriver::new(&yaml, setup.task, &kinds);
    let mut rendered = String::new();
    for (seq, input) in (0..).zip(inputs) {
        let out = match input {
            In::Event(key) => {
                rendered += &format!("> events {key}\n");
                let event = DemoEvent {
                    key: (*key).into(),
                    seq,
                    payload: "x".into(),
                };
                driver.send("events", key, &event)
            }
            In::Count(key, count) => {
                rendered += &format!("> counts {key} {count}\n");
                let value = KeyCount {
                    key: (*key).into(),
                    seq,
                    count: *count,
                };
                driver.send("counts", key, &value)
            }
        };
        rendered += &driver.render(&out);
    }
    outputs.assert_eq(&rendered);
    let stores: String = setup
        .stores
        .iter()
        .map(|(stage, store)| format!("{stage}.{store}:\n{}", driver.store(stage, store)))
        .collect();
    state.assert_eq(&stores);
}

#[test]
fn sums_counts_per_key() {
    check(
        &ALONE,
        &[
            In::Count("a", 1),
            In::Count("b", 5),
            In::Count("a", 2),
            In::Count("a", 3),
        ],
        expect![[r#"
            > counts a 1
            totals[0] a pavilion.KeyTotal {"count":1,"key":"a","seq":0,"sum":1}
            > counts b 5
            totals[0] b pavilion.KeyTotal {"count":5,"key":"b","seq":1,"sum":5}
            > counts a 2
            totals[0] a pavilion.KeyTotal {"count":2,"key":"a","seq":2,"sum":3}
            > counts a 3
            totals[0] a pavilion.KeyTotal {"count":3,"key":"a","seq":3,"sum":6}
        "#]],
        expect![[r#"
            totals.totals:
            a = 6
            b = 5
        "#]],
    );
}

#[test]
fn fused_behind_the_counter_one_event_yields_the_count_and_the_total() {
    check(
        &FUSED,
        &[
            In::Event("a"),
            In::Event("b"),
            In::Event("a"),
            In::Event("a"),
        ],
        expect![[r#"
            > events a
            counts[0] a pavilion.KeyCount {"count":1,"key":"a","seq":0}
            totals[0] a pavilion.KeyTotal {"count":1,"key":"a","seq":0,"sum":1}
            > events b
            counts[0] b pavilion.KeyCount {"count":1,"key":"b","seq":1}
            totals[0] b pavilion.KeyTotal {"count":1,"key":"b","seq":1,"sum":1}
            > events a
            counts[0] a pavilion.KeyCount {"count":2,"key":"a","seq":2}
            totals[0] a pavilion.KeyTotal {"count":2,"key":"a","seq":2,"sum":3}
            > events a
            counts[0] a pavilion.KeyCount {"count":3,"key":"a","seq":3}
            totals[0] a pavilion.KeyTotal {"count":3,"key":"a","seq":3,"sum":6}
        "#]],
        expect![[r#"
            counter.counts:
            a = 3
            b = 1
            totals.totals:
            a = 6
            b = 1
        "#]],
    );
}

#[test]
fn fused_a_failing_second_stage_dead_letters_only_the_intermediate_record() {
    check(
        &FUSED_PICKY,
        &[In::Event("a"), In::Event("a"), In::Event("b")],
        expect![[r#"
            > events a
            counts[0] a pavilion.KeyCount {"count":1,"key":"a","seq":0}
            totals[0] a pavilion.KeyTotal {"count":1,"key":"a","seq":0,"sum":1}
            > events a
            counts[0] a pavilion.KeyCount {"count":2,"key":"a","seq":1}
            dlq[*] a DeadLetter stage=totals reason=processor_error from=counts[0]@-1 at=1700000000000 record_timestamp=Some(1700000000000)
              detail: refusing count 2
              key: b"a" value: b"\xc3\x01c\xbb\x1fy3f\x0e?\x02a\x02\x04"
            > events b
            counts[0] b pavilion.KeyCount {"count":1,"key":"b","seq":2}
            totals[0] b pavilion.KeyTotal {"count":1,"key":"b","seq":2,"sum":1}
        "#]],
        expect![[r#"
            counter.counts:
            a = 2
            b = 1
            totals.totals:
            a = 1
            b = 1
        "#]],
    );
}
