//! `pavilion demo`: the sample counting pipeline, end to end, on the local broker.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use pavilion_kafka::{ensure_topics, PlainProducer, TopicReader};
use pavilion_runtime::topology::Topology;
use pavilion_schemas::{DemoEvent, KeyTotal, Registry};

use crate::run::{self, RunArgs};

/// Options of the demo.
#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Events to send.
    #[arg(long, env = "PAVILION_DEMO_EVENTS", default_value_t = 20_000)]
    pub events: u64,
    /// Distinct keys the events are spread over.
    #[arg(long, env = "PAVILION_DEMO_KEYS", default_value_t = 100)]
    pub keys: u64,
    /// Malformed records mixed in, to show the dead-letter path.
    #[arg(long, env = "PAVILION_DEMO_GARBAGE", default_value_t = 10)]
    pub garbage: u64,
    /// Give up waiting for the pipeline after this long.
    #[arg(long, default_value = "120s", value_parser = crate::parse_duration)]
    pub timeout: Duration,
}

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

pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let topology = Arc::new(crate::topology_cmd::load(&args.run.cluster.file)?);
    let (input, output) = sample_topics(&topology)?;
    let settings = args.run.settings();
    println!(
        "▸ provisioning {} topics from {}",
        topology.topics.len(),
        args.run.cluster.file.topology.display()
    );
    let topics: Vec<_> = topology.topics.values().collect();
    tokio::runtime::Runtime::new()?
        .block_on(ensure_topics(&settings, &topics))
        .context("is Kafka running? start it with `scripts/infra up`")?;

    println!(
        "▸ starting tasks {} (exactly-once, state in {})",
        run::select_tasks(&topology, &[])?.join(", "),
        settings.state_dir.display()
    );
    let pipeline = run::InProcess::start(&topology, &settings, |_| true, args.timeout)?;
    let prefix = format!("demo{}", std::process::id());
    let reader = TopicReader::new(&settings, &[&output])?;
    println!(
        "▸ sending {} events over {} keys (+{} malformed) to {input}",
        args.events, args.keys, args.garbage
    );
    let t0 = Instant::now();
    produce_events(
        &PlainProducer::new(&settings)?,
        &input,
        &prefix,
        args.events,
        args.keys,
        args.garbage,
        64,
    )?;
    let registry = Registry::builtin();
    let mut totals: BTreeMap<String, KeyTotal> = BTreeMap::new();
    let mut seen = 0u64;
    let mut last_report = Instant::now();
    while seen < args.events {
        if t0.elapsed() > args.timeout {
            bail!(
                "only {seen} of {} results after {:?}",
                args.events,
                args.timeout
            );
        }
        if let Some(record) = reader.poll(Duration::from_millis(100))? {
            let Some(value) = record.value else { continue };
            let total: KeyTotal = registry.decode(&value)?;
            if total.key.starts_with(&prefix) {
                seen += 1;
                totals.insert(total.key.clone(), total);
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let rate = seen as f64 / t0.elapsed().as_secs_f64();
            println!("  {seen:>8}/{} results  {rate:>9.0} /s", args.events);
            last_report = Instant::now();
        }
    }
    let took = t0.elapsed();

    let wrong: Vec<_> = totals
        .values()
        .filter(|t| t.sum != t.count * (t.count + 1) / 2)
        .collect();
    let metrics = pipeline.telemetry.render();
    pipeline.stop()?;
    let dead = metric_sum(&metrics, "pavilion_dead_letters_total");
    let commits = metric_sum(&metrics, "pavilion_transactions_total{");
    println!("\n  events sent        {}", args.events);
    println!("  results read       {seen} (read_committed from {output})");
    println!(
        "  keys               {} (sums checked: {} wrong)",
        totals.len(),
        wrong.len()
    );
    println!("  dead-lettered      {dead} (reason: undecodable)");
    println!("  transactions       {commits}");
    println!(
        "  end-to-end rate    {:.0} events/s over {:.2?}",
        args.events as f64 / took.as_secs_f64(),
        took
    );
    if !wrong.is_empty() {
        bail!(
            "{} keys have a wrong running sum, e.g. {:?}",
            wrong.len(),
            wrong[0]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Sums every sample of a metric family in Prometheus text.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
