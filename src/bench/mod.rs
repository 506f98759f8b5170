//! `pavilion bench …`: each benchmark measures against a baseline in the same run and writes
//! its figures as JSON under bench/results/. `sample`: the sample counting pipeline's helpers
//! (counter → totals), which `passthrough` runs.

pub mod audit;
pub mod e2e;
pub mod passthrough;
pub mod policy;
pub mod psi;
pub mod sample;
pub mod signing;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use pavilion_kafka::TopicReader;

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

/// Writes a benchmark's figures to `path` (creating its folder) and says where.
pub(crate) fn write_result(path: &std::path::Path, json: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(json)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}
