//! `pavilion bench passthrough`: what exactly-once costs, against the same broker in the same
//! run. Baseline: a plain relay (read `in`, produce to `out`, no transactions). Then the
//! two-stage counting topology, split (two transactional hops) and fused (one).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use pavilion_kafka::{ensure_topics, KafkaSettings, PlainProducer, TopicReader};
use pavilion_runtime::topology::Topology;
use pavilion_schemas::Registry;
use serde_json::json;

use super::{await_records, sample, tempfile_dir, write_result};
use crate::cli::{self, ClusterArgs};
use crate::commands::run;
use crate::kinds;

/// Options of the pass-through benchmark.
#[derive(Args)]
pub struct PassthroughArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Records per measurement.
    #[arg(long, default_value_t = 50_000)]
    pub records: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Partitions of every benchmark topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Transaction commit interval of the pipeline.
    #[arg(long, default_value = "100ms", value_parser = cli::parse_duration)]
    pub commit_interval: Duration,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/passthrough.json")]
    pub out: std::path::PathBuf,
}

fn topology_text(run: &str, partitions: u32, fused: bool) -> String {
    let fuse = if fused {
        "fuse:\n  - [counter, totals]\n"
    } else {
        ""
    };
    format!(
        "application: {run}\ndlq: {run}.dlq\ndefaults: {{ partitions: {partitions} }}\ntopics:\n  {run}.dlq: {{}}\n  {run}.events: {{ schema: pavilion.DemoEvent }}\n  {run}.counts: {{ schema: pavilion.KeyCount }}\n  {run}.totals: {{ schema: pavilion.KeyTotal }}\n  {run}.raw-in: {{}}\n  {run}.raw-out: {{}}\nstages:\n  counter: {{ kind: counter, inputs: [{run}.events], outputs: {{ counts: {run}.counts }}, stores: [counts] }}\n  totals: {{ kind: totals, inputs: [{run}.counts], outputs: {{ totals: {run}.totals }}, stores: [totals] }}\n{fuse}"
    )
}

pub(crate) fn raw_relay(
    settings: &KafkaSettings,
    run: &str,
    args: &PassthroughArgs,
) -> Result<f64> {
    let (input, output) = (format!("{run}.raw-in"), format!("{run}.raw-out"));
    let stop = Arc::new(AtomicBool::new(false));
    let relay = {
        let (settings, input, output, stop) = (
            settings.clone(),
            input.clone(),
            output.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || -> Result<()> {
            let reader = TopicReader::new(&settings, &[&input])?;
            let producer = PlainProducer::new(&settings)?;
            while !stop.load(Ordering::SeqCst) {
                if let Some(r) = reader.poll(Duration::from_millis(50))? {
                    producer.send(&output, &r.key, r.value.as_deref().unwrap_or_default())?;
                }
            }
            producer.flush()
        })
    };
    let reader = TopicReader::new(settings, &[&output])?;
    let t0 = Instant::now();
    sample::produce_events(
        &PlainProducer::new(settings)?,
        &input,
        "raw",
        args.records,
        1000,
        0,
        args.payload,
    )?;
    let t1 = await_records(&reader, args.records, Duration::from_secs(300))?;
    stop.store(true, Ordering::SeqCst);
    relay.join().expect("relay thread")?;
    Ok(args.records as f64 / (t1 - t0).as_secs_f64())
}

fn eos_pipeline(
    settings: &KafkaSettings,
    topology: Topology,
    args: &PassthroughArgs,
) -> Result<(f64, u64)> {
    let topology = Arc::new(topology);
    let (input, output) = sample::sample_topics(&topology)?;
    // One stream thread per task, as the published figures were measured.
    let pipeline = run::InProcess::start(
        &topology,
        settings,
        None,
        1,
        |_| true,
        Duration::from_secs(60),
    )?;
    let reader = TopicReader::new(settings, &[&output])?;
    let t0 = Instant::now();
    sample::produce_events(
        &PlainProducer::new(settings)?,
        &input,
        "eos",
        args.records,
        1000,
        0,
        args.payload,
    )?;
    let t1 = await_records(&reader, args.records, Duration::from_secs(300))?;
    let commits = sample::metric_sum(&pipeline.telemetry.render(), "pavilion_transactions_total{");
    pipeline.stop()?;
    Ok((
        args.records as f64 / (t1 - t0).as_secs_f64(),
        commits as u64,
    ))
}

pub fn passthrough(args: PassthroughArgs) -> Result<ExitCode> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let state = tempfile_dir()?;
    let mut settings = cli::settings(&args.cluster, "bench")?;
    settings.state_dir = state.clone();
    settings.commit_interval = args.commit_interval;
    let registry = Registry::builtin();
    let parse = |text: &str| {
        Topology::parse(text, &kinds::all(), &|s| registry.schema(s).is_some())
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut results = Vec::new();
    for (mode, fused) in [("raw", false), ("split", false), ("fused", true)] {
        let run = format!("bench-{stamp}-{mode}");
        let topology = parse(&topology_text(&run, args.partitions, fused))?;
        runtime.block_on(ensure_topics(
            &settings,
            &topology.topics.values().collect::<Vec<_>>(),
        ))?;
        let (rate, commits) = if mode == "raw" {
            (raw_relay(&settings, &run, &args)?, 0)
        } else {
            eos_pipeline(&settings, topology, &args)?
        };
        println!(
            "{mode:>6}: {rate:>10.0} records/s  ({} records, {} B payload{})",
            args.records,
            args.payload,
            if commits > 0 {
                format!(", {commits} transactions")
            } else {
                String::new()
            }
        );
        results.push((mode, rate, commits));
    }
    let raw = results[0].1;
    for (mode, rate, _) in &results[1..] {
        println!("{mode:>6}/raw: {:.2}", rate / raw);
    }
    let json = json!({
        "benchmark": "passthrough",
        "records": args.records,
        "payload_bytes": args.payload,
        "partitions": args.partitions,
        "commit_interval_ms": args.commit_interval.as_millis() as u64,
        "baseline": "plain relay: read_committed reader -> idempotent producer, no transactions, one hop",
        "results": results.iter().map(|(mode, rate, commits)| json!({
            "mode": mode, "records_per_s": rate.round(), "ratio_to_raw": (rate / raw * 1000.0).round() / 1000.0,
            "transactions": commits,
        })).collect::<Vec<_>>(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "unix_time": stamp,
    });
    write_result(&args.out, &json)?;
    std::fs::remove_dir_all(state).ok();
    Ok(ExitCode::SUCCESS)
}
