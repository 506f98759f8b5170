//! Embeds every `.avsc` in this folder (current) and in `released/` (every version ever
//! published) so the binary carries the whole wire contract.
use std::{env, fs, path::Path};

fn main() {
    // Read at run time, not with env!(): a build-script binary is reused across checkouts
    // with the same target dir, and a path baked in at its compile time points at another
    // checkout (seen: every schema of the current tree silently missing).
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").unwrap();
    let root = Path::new(&manifest_dir);
    let mut out = String::from("&[\n");
    for (dir, released) in [(root.to_path_buf(), false), (root.join("released"), true)] {
        println!("cargo:rerun-if-changed={}", dir.display());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "avsc"))
            .collect();
        files.sort();
        for f in files {
            println!("cargo:rerun-if-changed={}", f.display());
            out.push_str(&format!(
                "    SchemaFile {{ file: {:?}, released: {released}, json: include_str!({:?}) }},\n",
                f.strip_prefix(root).unwrap().display().to_string(),
                f.display().to_string()
            ));
        }
    }
    out.push(']');
    fs::write(
        Path::new(&env::var("OUT_DIR").unwrap()).join("schema_files.rs"),
        out,
    )
    .unwrap();
}
