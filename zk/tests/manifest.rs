//! The artifacts still match their sources and pinned setup (artifacts/manifest.json).
//! On a mismatch: run zk/scripts/build-artifacts.sh and commit what it rewrites.

use std::path::PathBuf;

use pavilion_zk::ceremony::{self, Manifest};
use pavilion_zk::Circuit;

const FIX: &str = "run zk/scripts/build-artifacts.sh and commit zk/artifacts/";

fn zk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed() -> Manifest {
    let text = std::fs::read_to_string(zk_dir().join("artifacts/manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read(relative: &str) -> Vec<u8> {
    std::fs::read(zk_dir().join(relative)).unwrap()
}

#[test]
fn sources_and_artifacts_hash_to_the_manifest() {
    let manifest = committed();
    let on_disk = ceremony::manifest_of(&zk_dir(), manifest.compiler.clone()).unwrap();
    for (id, entry) in &manifest.circuits {
        let now = &on_disk.circuits[id];
        assert_eq!(
            now.sources, entry.sources,
            "{id}: a circuit source or the npm lock changed since the artifacts were built; {FIX}"
        );
        assert_eq!(
            now.artifacts, entry.artifacts,
            "{id}: an artifact no longer matches the manifest; {FIX}"
        );
    }
    assert_eq!(on_disk, manifest, "{FIX}");
}

#[test]
fn the_compiled_in_keys_are_the_manifest_s() {
    let manifest = committed();
    for circuit in Circuit::ALL {
        let entry = &manifest.circuits[circuit.id()];
        assert_eq!(
            hex::encode(circuit.verifying_key_hash()),
            entry.artifacts["verifying_key.bin"],
            "{circuit}"
        );
        assert_eq!(
            entry.setup_seed,
            hex::encode(ceremony::development_seed(circuit))
        );
    }
}

/// The keys are the seeded setup of the committed R1CS: re-running it gives the same bytes.
#[test]
fn the_setup_reproduces_the_keys_from_the_r1cs_and_seed() {
    for circuit in Circuit::ALL {
        let id = circuit.id();
        let r1cs = read(&format!("artifacts/{id}/circuit.r1cs"));
        let keys = ceremony::development_setup(circuit, &r1cs, ceremony::development_seed(circuit))
            .unwrap();
        assert!(
            keys.verifying_key == read(&format!("artifacts/{id}/verifying_key.bin")),
            "{id}: verifying key differs from the setup's; {FIX}"
        );
        assert!(
            keys.proving_key == read(&format!("artifacts/{id}/proving_key.bin")),
            "{id}: proving key differs from the setup's; {FIX}"
        );
    }
}

/// The R1CS and witness generator are what circom2 makes of the sources today. Needs the pinned
/// compiler (`npm ci --prefix zk`, as scripts/test does); without it the test fails rather than
/// pass with the recompilation unchecked.
#[test]
fn recompiling_the_sources_reproduces_the_r1cs_and_wasm() {
    let zk = zk_dir();
    assert!(
        zk.join("node_modules/.bin/circom2").exists(),
        "circom2 is not installed in zk/node_modules: run npm ci --prefix zk"
    );
    let manifest = committed();
    assert_eq!(
        ceremony::compiler_version(&zk).unwrap(),
        manifest.compiler,
        "the installed circom2 is not the one the artifacts were built with"
    );
    let out = tempfile::tempdir().unwrap();
    for circuit in Circuit::ALL {
        let compiled = ceremony::compile(circuit, &zk, out.path()).unwrap();
        let entry = &manifest.circuits[circuit.id()];
        assert_eq!(
            ceremony::sha256_hex(&compiled.r1cs),
            entry.artifacts["circuit.r1cs"],
            "{circuit}: {FIX}"
        );
        assert_eq!(
            ceremony::sha256_hex(&compiled.wasm),
            entry.artifacts["witness.wasm"],
            "{circuit}: {FIX}"
        );
    }
}
