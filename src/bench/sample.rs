//! The sample counting pipeline (counter → totals): its topics, an event generator with
//! malformed records mixed in, and a metric reader — for `pavilion bench passthrough` and
//! the exactly-once tests' figures.

use anyhow::{bail, Result};
use pavilion_kafka::PlainProducer;
use pavilion_runtime::topology::Topology;
use pavilion_schemas::{DemoEvent, Registry};

/// The topics of the sample pipeline: the counter's input and the totals' output.
pub fn sample_topics(topology: &Topology) -> Result<(String, String)> {
    let by_kind = |kind: &str| topology.stages.values().find(|s| s.kind == kind);
    let (Some(counter), Some(totals)) = (by_kind("counter"), by_kind("totals")) else {
        bail!("the topology has no `counter` and `totals` stages to run the sample pipeline");
    };
    Ok((counter.inputs[0].clone(), totals.outputs["totals"].clone()))
}

/// Sends `count` demo events over `keys` keys named `{prefix}-{n}`, with `garbage`
/// undecodable records spread among them.
pub fn produce_events(
    producer: &PlainProducer,
    topic: &str,
    prefix: &str,
    count: u64,
    keys: u64,
    garbage: u64,
    payload: usize,
) -> Result<()> {
    let registry = Registry::builtin();
    let filler = "x".repeat(payload);
    let garbage_every = count.checked_div(garbage).map_or(u64::MAX, |n| n.max(1));
    let mut sent_garbage = 0;
    for seq in 0..count {
        let key = format!("{prefix}-{}", seq % keys);
        let event = DemoEvent {
            key: key.clone(),
            seq: seq as i64,
            payload: filler.clone(),
        };
        producer.send(topic, key.as_bytes(), &registry.encode(&event)?)?;
        if seq % garbage_every == 0 && sent_garbage < garbage {
            producer.send(topic, key.as_bytes(), b"\x00not avro at all")?;
            sent_garbage += 1;
        }
    }
    producer.flush()
}

/// Sums every sample of a metric family in Prometheus text.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
