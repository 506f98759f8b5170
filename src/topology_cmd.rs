//! `pavilion topology …` and `pavilion topics create`.

use std::path::Path;
use std::process::ExitCode;

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use pavilion_kafka::{ensure_topics, KafkaSettings, TopicReader, TopicStatus};
use pavilion_runtime::topology::{TopicSpec, Topology};
use pavilion_schemas::{Event, Registry};

use crate::{kinds, ClusterArgs, TopologyFile};

/// Reads and checks a topology file; every error is reported with `path:line:`.
pub fn load(file: &TopologyFile) -> Result<Topology> {
    let path = &file.topology;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, path)
}

/// Checks a topology's text; every error is reported with `path:line:`.
pub fn parse(text: &str, path: &Path) -> Result<Topology> {
    let registry = Registry::builtin();
    Topology::parse(text, &kinds::all(), &|s| registry.schema(s).is_some()).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| match e.line {
                Some(line) => format!("{}:{line}: {}", path.display(), e.message),
                None => format!("{}: {}", path.display(), e.message),
            })
            .collect();
        anyhow::anyhow!(
            "{} has {} error(s):\n{}",
            path.display(),
            lines.len(),
            lines.join("\n")
        )
    })
}

pub fn check(file: &TopologyFile) -> Result<ExitCode> {
    match load(file) {
        Ok(t) => {
            println!(
                "{}: ok ({} topics, {} stages, {} tasks)",
                file.topology.display(),
                t.topics.len(),
                t.stages.len(),
                t.tasks.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

pub fn show(file: &TopologyFile) -> Result<ExitCode> {
    let t = load(file)?;
    println!("application {}  (dlq: {})", t.application, t.dlq);
    for task in t.tasks.values() {
        let mode = if task.stages.len() > 1 {
            "fused"
        } else {
            "split"
        };
        println!(
            "\ntask {} [{mode}]  group {}",
            task.name,
            t.group_id(&task.name)
        );
        for name in &task.stages {
            let s = &t.stages[name];
            println!("  stage {name} (kind {})", s.kind);
            println!("    in:  {}", s.inputs.join(", "));
            for (output, topic) in &s.outputs {
                println!("    out: {output} -> {topic}");
            }
            for store in &s.stores {
                println!("    store {} <- changelog {}", store.name, store.changelog);
            }
        }
    }
    println!("\ntopics:");
    for topic in t.topics.values() {
        println!(
            "  {:<48} partitions {:>3}  replication {}  {}{}",
            topic.name,
            topic.partitions,
            topic.replication,
            topic.cleanup.as_kafka(),
            topic
                .schema
                .as_deref()
                .map(|s| format!("  {s}"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn create_topics(args: &ClusterArgs) -> Result<ExitCode> {
    let topology = load(&args.file)?;
    let settings = settings(args, "admin");
    let topics: Vec<_> = topology.topics.values().collect();
    let report = tokio::runtime::Runtime::new()?.block_on(ensure_topics(&settings, &topics))?;
    let mut differs = 0;
    for (name, status) in &report {
        match status {
            TopicStatus::Created => println!("created  {name}"),
            TopicStatus::Exists => println!("exists   {name}"),
            TopicStatus::Differs(d) => {
                differs += 1;
                println!("DIFFERS  {name}: {}", d.join("; "));
            }
        }
    }
    if differs > 0 {
        eprintln!("{differs} topic(s) differ from topology.yaml; nothing was changed on them");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Kafka settings from the command line.
pub fn settings(args: &ClusterArgs, instance: &str) -> KafkaSettings {
    let mut s = KafkaSettings::new(&args.bootstrap, instance, std::env::temp_dir());
    s.overrides = args.client_config.clone();
    s
}

/// The one topic (or topic family) of the topology whose records are `schema`: control-topic
/// commands find their topic by what it holds, not by a hard-coded name. Where the pipeline
/// also writes records of that schema elsewhere (the routed copy of requests), the one it
/// does not write is where outsiders produce.
pub fn topic_for(topology: &Topology, schema: &str) -> Result<TopicSpec> {
    let mut found: Vec<&TopicSpec> = topology
        .topics
        .values()
        .chain(topology.families.values())
        .filter(|t| t.schema.as_deref() == Some(schema))
        .collect();
    if found.len() > 1 {
        let written = |topic: &TopicSpec| {
            topology
                .stages
                .values()
                .any(|s| s.outputs.values().any(|o| *o == topic.name))
        };
        found.retain(|t| !written(t));
    }
    match found[..] {
        [one] => Ok(one.clone()),
        _ => bail!(
            "topology.yaml must declare exactly one topic with schema {schema} (found {:?})",
            found.iter().map(|t| &t.name).collect::<Vec<_>>()
        ),
    }
}

/// Every record of a topic, read_committed from the beginning, decoded; tombstones and
/// records that do not decode (reported) are skipped.
pub fn read_all<E: Event>(cluster: &ClusterArgs, topic: &str) -> Result<Vec<(Vec<u8>, E)>> {
    let records = TopicReader::new(&settings(cluster, "cli"), &[topic])?
        .read_to_end(Duration::from_secs(60))
        .with_context(|| format!("reading {topic}"))?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let Some(value) = r.value else { continue };
        match Registry::builtin().decode::<E>(&value) {
            Ok(e) => out.push((r.key, e)),
            Err(e) => eprintln!(
                "warning: skipping undecodable record at {topic}/{}@{}: {e}",
                r.partition, r.offset
            ),
        }
    }
    Ok(out)
}
