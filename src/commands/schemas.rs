//! `pavilion schemas …`: the wire contract.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use pavilion_schemas::{fingerprint_json, Registry, SCHEMA_FILES};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn list() -> Result<ExitCode> {
    for f in SCHEMA_FILES.iter().filter(|f| !f.released) {
        let fp = fingerprint_json(f.json)?;
        println!("{}  {}", hex(&fp), f.file);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn check() -> Result<ExitCode> {
    match Registry::load(SCHEMA_FILES) {
        Ok(r) => {
            println!(
                "schemas: ok ({} record types, {} files)",
                r.names().len(),
                SCHEMA_FILES.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("schemas/{e}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// Copies every current schema whose fingerprint has no released copy to
/// `released/<name>.<fingerprint>.avsc`. Reads the folder, not the embedded copy, so it sees
/// edits made since the binary was built.
pub fn release(dir: &Path) -> Result<ExitCode> {
    let released_dir = dir.join("released");
    std::fs::create_dir_all(&released_dir)?;
    let mut released = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&released_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "avsc") {
            released.insert(fingerprint_json(&std::fs::read_to_string(&path)?)?);
        }
    }
    let mut count = 0;
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    for path in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "avsc"))
    {
        let text = std::fs::read_to_string(&path)?;
        let fp = fingerprint_json(&text).with_context(|| path.display().to_string())?;
        if released.contains(&fp) {
            continue;
        }
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        let target = released_dir.join(format!("{stem}.{}.avsc", hex(&fp)));
        std::fs::write(&target, &text)?;
        println!("released {}", target.display());
        count += 1;
    }
    println!("{count} schema(s) released; rebuild and run `pavilion schemas check`");
    Ok(ExitCode::SUCCESS)
}
