//! A plain Python consumer (confluent-kafka + fastavro), knowing only `schemas/`, decodes what
//! the pipeline produced. The test command provides the interpreter in `PAVILION_PYTHON`.

mod util;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use pavilion_schemas::{KeyTotal, Registry};
use util::*;

#[test]
fn a_python_consumer_decodes_pipeline_output_from_schemas_alone() {
    let _serial = serial();
    let python = std::env::var("PAVILION_PYTHON").expect(
        "PAVILION_PYTHON must name a Python with examples/python/requirements.txt installed (scripts/test sets it up)",
    );
    let t = TestTopology::new("python", 2, true);
    let tally = Tally::start(&t.topic("totals"));
    let mut pipeline = t.spawn("a", None);
    produce_events(&t.topic("events"), 0, 40, 4, 100_000);
    let producer = pavilion_kafka::PlainProducer::new(&settings()).unwrap();
    producer
        .send(&t.topic("events"), b"k0", b"not avro")
        .unwrap();
    producer.flush().unwrap();
    tally.wait_for(40, Duration::from_secs(60), &[&pipeline]);
    pipeline.stop();

    let rust_view: BTreeSet<String> = read_all(&t.topic("totals"))
        .into_iter()
        .map(|r| {
            let t: KeyTotal = Registry::builtin().decode(&r.value.unwrap()).unwrap();
            format!("{} {} {} {}", t.key, t.seq, t.count, t.sum)
        })
        .collect();

    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/python/consume.py"
        ))
        .args([
            "--bootstrap",
            &bootstrap(),
            "--topic",
            &t.topic("totals"),
            "--topic",
            &t.topic("dlq"),
        ])
        .args(["--max", "41", "--idle-timeout", "15"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "consume.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let python_view: BTreeSet<String> = lines
        .iter()
        .filter(|l| l["schema"] == "pavilion.KeyTotal")
        .map(|l| {
            let v = &l["value"];
            format!(
                "{} {} {} {}",
                v["key"].as_str().unwrap(),
                v["seq"],
                v["count"],
                v["sum"]
            )
        })
        .collect();
    assert_eq!(
        python_view, rust_view,
        "Python and Rust decode the same totals"
    );

    let dead: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["schema"] == "pavilion.DeadLetter")
        .collect();
    assert_eq!(dead.len(), 1, "{stdout}");
    assert_eq!(dead[0]["value"]["reason"], "undecodable");
    assert_eq!(dead[0]["value"]["original_value"], hex(b"not avro"));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
