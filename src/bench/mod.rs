//! `pavilion bench …`: each benchmark measures against a baseline in the same run and writes
//! its figures as JSON under bench/results/. `sample`: the sample counting pipeline's helpers
//! (counter → totals), which `passthrough` runs; `runs`: figures over several runs (median,
//! min, max), which `zk` and `disclosure` report; `evidence`: their end-to-end harness, claims
//! that take a round trip to a provider's evidence service against membership-only ones.

pub mod analytics;
pub mod audit;
pub mod disclosure;
pub mod e2e;
mod evidence;
pub mod passthrough;
pub mod policy;
pub mod psi;
pub mod regions;
mod runs;
pub mod sample;
pub mod signing;
pub mod zk;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use pavilion_kafka::TopicReader;
use pavilion_runtime::topology::Topology;

use crate::cli::{ClusterArgs, TopologyFile};
use crate::demo::processes::Cli;

/// Waits until `count` records arrived on the reader's topics; returns when the last did.
pub(crate) fn await_records(
    reader: &TopicReader,
    count: u64,
    timeout: Duration,
) -> Result<Instant> {
    let started = Instant::now();
    let mut seen = 0;
    while seen < count {
        if reader.poll(Duration::from_millis(100))?.is_some() {
            seen += 1;
        } else if started.elapsed() > timeout {
            bail!("only {seen} of {count} records within {timeout:?}");
        }
    }
    Ok(Instant::now())
}

/// A fresh state folder for the benchmark's pipeline.
pub(crate) fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("pavilion-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A benchmark run's own folder (in the temp dir, named after the run) with its topology
/// written there, and what reaches it: the topology parsed, cluster arguments naming it, and
/// the `pavilion` commands run against it.
pub(crate) struct RunFolder {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) topology: Topology,
    pub(crate) cluster: ClusterArgs,
    pub(crate) cli: Cli,
}

impl RunFolder {
    pub(crate) fn create(run: &str, topology: &str, cluster: &ClusterArgs) -> Result<RunFolder> {
        let dir = std::env::temp_dir().join(run);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("topology.yaml");
        std::fs::write(&path, topology)?;
        let cli = Cli::for_run(
            &dir,
            &path,
            &cluster.bootstrap,
            cluster.kafka_config.as_deref(),
            "warn",
        );
        let file = TopologyFile {
            topology: path,
            region: None,
            away_from_home: false,
        };
        Ok(RunFolder {
            topology: crate::cli::load(&file)?,
            cluster: ClusterArgs {
                file,
                ..cluster.clone()
            },
            dir,
            cli,
        })
    }
}

/// Writes a benchmark's figures to `path` (creating its folder) and says where.
pub(crate) fn write_result(path: &std::path::Path, json: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(json)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}
