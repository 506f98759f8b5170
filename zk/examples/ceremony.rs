//! Rebuilds `zk/artifacts/` from the circuit sources: compiles each circuit with circom2, runs
//! the seeded development setup, writes the keys (arkworks and snarkjs JSON) and the manifest.
//! Run it through `zk/scripts/build-artifacts.sh`, which installs circom2 first.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use pavilion_zk::ceremony::{self, CeremonyError};
use pavilion_zk::{decode_verifying_key, snarkjs, Circuit};

fn write(path: &Path, bytes: &[u8]) -> Result<(), CeremonyError> {
    std::fs::write(path, bytes).map_err(|source| CeremonyError::Io {
        path: path.to_owned(),
        source,
    })
}

fn run(zk_dir: &Path) -> Result<(), CeremonyError> {
    let scratch = zk_dir.join("target-ceremony");
    for circuit in Circuit::ALL {
        let out = scratch.join(circuit.id());
        std::fs::create_dir_all(&out).map_err(|source| CeremonyError::Io {
            path: out.clone(),
            source,
        })?;
        let compiled = ceremony::compile(circuit, zk_dir, &out)?;
        let seed = ceremony::development_seed(circuit);
        let keys = ceremony::development_setup(circuit, &compiled.r1cs, seed)?;
        let vk = decode_verifying_key(&keys.verifying_key).map_err(|e| CeremonyError::Setup {
            circuit,
            reason: e.to_string(),
        })?;
        let vk_json = serde_json::to_string_pretty(&snarkjs::verifying_key_json(&vk))?;

        let dir = zk_dir.join("artifacts").join(circuit.id());
        std::fs::create_dir_all(&dir).map_err(|source| CeremonyError::Io {
            path: dir.clone(),
            source,
        })?;
        write(&dir.join("circuit.r1cs"), &compiled.r1cs)?;
        write(&dir.join("witness.wasm"), &compiled.wasm)?;
        write(&dir.join("proving_key.bin"), &keys.proving_key)?;
        write(&dir.join("verifying_key.bin"), &keys.verifying_key)?;
        write(
            &dir.join("verification_key.json"),
            format!("{vk_json}\n").as_bytes(),
        )?;
        println!(
            "{}: r1cs {} B, wasm {} B, proving key {} B, verifying key {} B",
            circuit.id(),
            compiled.r1cs.len(),
            compiled.wasm.len(),
            keys.proving_key.len(),
            keys.verifying_key.len()
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let manifest = ceremony::manifest_of(zk_dir, ceremony::compiler_version(zk_dir)?)?;
    let text = serde_json::to_string_pretty(&manifest)?;
    write(
        &zk_dir.join("artifacts/manifest.json"),
        format!("{text}\n").as_bytes(),
    )?;
    println!("wrote {}", zk_dir.join("artifacts/manifest.json").display());
    Ok(())
}

fn main() -> ExitCode {
    let zk_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match run(&zk_dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceremony: {e}");
            ExitCode::FAILURE
        }
    }
}
