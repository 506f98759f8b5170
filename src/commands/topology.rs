//! `pavilion topology …` and `pavilion topics create`.

use std::process::ExitCode;

use anyhow::Result;
use pavilion_kafka::{ensure_topics, TopicStatus};

use crate::cli::{load, settings, ClusterArgs, TopologyFile};

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

#[derive(clap::Args)]
pub struct ReplicationArgs {
    #[command(flatten)]
    pub file: TopologyFile,
    /// The region the copies go to.
    #[arg(long)]
    pub to: String,
}

/// `topology replication --to REGION`: the allow-list of MirrorMaker 2's flows into `to`.
pub fn replication(args: &ReplicationArgs) -> Result<ExitCode> {
    let t = load(&args.file)?;
    if !t.regions.regions.contains_key(&args.to) {
        anyhow::bail!(
            "--to {}: not one of the regions of {} ({})",
            args.to,
            args.file.topology.display(),
            t.regions
                .regions
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let names = t.regions.crossing(&args.to);
    if names.is_empty() {
        anyhow::bail!(
            "nothing crosses into {}: `replication:` names no topic",
            args.to
        );
    }
    let escaped: Vec<String> = names.iter().map(|n| n.replace('.', "\\.")).collect();
    println!("{}", escaped.join("|"));
    Ok(ExitCode::SUCCESS)
}

pub fn create_topics(args: &ClusterArgs) -> Result<ExitCode> {
    let topology = load(&args.file)?;
    let settings = settings(args, "admin")?;
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
