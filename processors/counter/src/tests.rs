//! The counter as data: records in → records out and the `counts` store.

use expect_test::{expect, Expect};
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::StageKinds;
use pavilion_schemas::{DemoEvent, KeyCount};

const TOPOLOGY: &str = r#"
application: test
dlq: dlq
topics:
  dlq: { schema: pavilion.DeadLetter }
  events: { schema: pavilion.DemoEvent }
  counts: { schema: pavilion.KeyCount }
stages:
  counter:
    kind: counter
    inputs: [events]
    outputs: { counts: counts }
    stores: [counts]
    config: { refuse_payload_prefix: poison }
"#;

/// One record sent to `events`, keyed by `key`.
enum In {
    /// A `DemoEvent`; its `seq` is its position in the input.
    Event(&'static str, &'static str),
    /// Bytes that are not a framed record.
    Raw(&'static str, &'static [u8]),
    /// A record of the wrong type.
    Count(&'static str, i64),
}

/// Sends `inputs` one by one (each its own transaction); renders each input followed by what
/// it produced, then the committed `counts` store.
fn check(inputs: &[In], outputs: Expect, state: Expect) {
    let mut driver = TestDriver::new(TOPOLOGY, "counter", &StageKinds::new([&crate::KIND]));
    let mut rendered = String::new();
    for (seq, input) in (0..).zip(inputs) {
        let out = match input {
            In::Event(key, payload) => {
                rendered += &format!("> {key} {payload:?}\n");
                let event = DemoEvent {
                    key: (*key).into(),
                    seq,
                    payload: (*payload).into(),
                };
                driver.send("events", key, &event)
            }
            In::Raw(key, bytes) => {
                rendered += &format!("> {key} raw b\"{}\"\n", bytes.escape_ascii());
                driver.send_raw("events", key.as_bytes(), bytes)
            }
            In::Count(key, count) => {
                rendered += &format!("> {key} KeyCount {count}\n");
                let count = KeyCount {
                    key: (*key).into(),
                    seq,
                    count: *count,
                };
                driver.send("events", key, &count)
            }
        };
        rendered += &driver.render(&out);
    }
    outputs.assert_eq(&rendered);
    state.assert_eq(&driver.store("counter", "counts"));
}

#[test]
fn counts_per_key() {
    check(
        &[
            In::Event("a", "x"),
            In::Event("b", "x"),
            In::Event("a", "x"),
            In::Event("c", "x"),
            In::Event("a", "x"),
            In::Event("b", "x"),
        ],
        expect![[r#"
            > a "x"
            counts[0] a pavilion.KeyCount {"count":1,"key":"a","seq":0}
            > b "x"
            counts[0] b pavilion.KeyCount {"count":1,"key":"b","seq":1}
            > a "x"
            counts[0] a pavilion.KeyCount {"count":2,"key":"a","seq":2}
            > c "x"
            counts[0] c pavilion.KeyCount {"count":1,"key":"c","seq":3}
            > a "x"
            counts[0] a pavilion.KeyCount {"count":3,"key":"a","seq":4}
            > b "x"
            counts[0] b pavilion.KeyCount {"count":2,"key":"b","seq":5}
        "#]],
        expect![[r#"
            a = 3
            b = 2
            c = 1
        "#]],
    );
}

#[test]
fn undecodable_bytes_are_dead_lettered_without_touching_state() {
    check(
        &[
            In::Event("a", "x"),
            In::Raw("a", b"\x00garbage"),
            In::Event("a", "x"),
        ],
        expect![[r#"
            > a "x"
            counts[0] a pavilion.KeyCount {"count":1,"key":"a","seq":0}
            > a raw b"\x00garbage"
            dlq[*] a DeadLetter stage=counter reason=undecodable from=events[0]@1 at=1700000000000 record_timestamp=Some(1700000000000)
              detail: not a single-object-encoded Avro record (expected C3 01 + 8-byte fingerprint, got 8 bytes starting 0067617262616765)
              key: b"a" value: b"\x00garbage"
            > a "x"
            counts[0] a pavilion.KeyCount {"count":2,"key":"a","seq":2}
        "#]],
        expect![[r#"
            a = 2
        "#]],
    );
}

#[test]
fn a_record_of_another_type_is_a_schema_mismatch() {
    check(
        &[In::Count("a", 7)],
        expect![[r#"
            > a KeyCount 7
            dlq[*] a DeadLetter stage=counter reason=schema_mismatch from=events[0]@0 at=1700000000000 record_timestamp=Some(1700000000000)
              detail: schema mismatch: expected pavilion.DemoEvent, record is pavilion.KeyCount
              key: b"a" value: b"\xc3\x01c\xbb\x1fy3f\x0e?\x02a\x00\x0e"
        "#]],
        expect![[r#""#]],
    );
}

#[test]
fn a_refused_payload_is_a_processor_error_and_changes_nothing() {
    check(
        &[
            In::Event("a", "x"),
            In::Event("a", "poison pill"),
            In::Event("a", "not poison"),
        ],
        expect![[r#"
            > a "x"
            counts[0] a pavilion.KeyCount {"count":1,"key":"a","seq":0}
            > a "poison pill"
            dlq[*] a DeadLetter stage=counter reason=processor_error from=events[0]@1 at=1700000000000 record_timestamp=Some(1700000000000)
              detail: payload starts with refused prefix `poison`
              key: b"a" value: b"\xc3\x01\xe3\xfbv\xefa`<P\x02a\x02\x16poison pill"
            > a "not poison"
            counts[0] a pavilion.KeyCount {"count":2,"key":"a","seq":2}
        "#]],
        expect![[r#"
            a = 2
        "#]],
    );
}
