//! Building the artifacts: compiling the circuits with circom2 and the development setup, and
//! the manifest that pins both. `zk/scripts/build-artifacts.sh` drives it (through
//! `examples/ceremony.rs`); `tests/manifest.rs` re-runs it and compares.
//!
//! The setup here is single-party and seeded with a public seed: whoever knows the seed knows
//! the toxic waste and can prove anything. It is for development and tests only; see
//! `zk/README.md` for what production does instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ark_bn254::{Bn254, Fr};
use ark_circom::circom::{R1CSFile, R1CS};
use ark_circom::{CircomCircuit, CircomReduction};
use ark_groth16::Groth16;
use ark_serialize::CanonicalSerialize;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Circuit;

/// Arguments given to circom2 after the circuit's source file (run in `zk/`).
pub const COMPILER_ARGS: [&str; 5] = ["-l", "node_modules", "--O2", "--r1cs", "--wasm"];

/// The files each circuit is compiled from, relative to `zk/`: its own source, the shared
/// template file, and the npm lock file that pins circom2 and circomlib.
pub fn sources(circuit: Circuit) -> [String; 3] {
    [
        format!("circuits/{}.circom", circuit.id()),
        "circuits/commitment.circom".to_owned(),
        "package-lock.json".to_owned(),
    ]
}

/// The artifacts' file names in `zk/artifacts/<circuit id>/`.
pub const ARTIFACT_FILES: [&str; 5] = [
    "circuit.r1cs",
    "witness.wasm",
    "proving_key.bin",
    "verifying_key.bin",
    "verification_key.json",
];

/// Something in the ceremony failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// circom2 could not be run or failed.
    #[error("compiling {circuit} with circom2: {reason}")]
    Compile {
        /// The circuit.
        circuit: Circuit,
        /// What happened (circom2's output when it ran).
        reason: String,
    },
    /// The R1CS could not be read, or the setup failed.
    #[error("setup of {circuit}: {reason}")]
    Setup {
        /// The circuit.
        circuit: Circuit,
        /// What happened.
        reason: String,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("manifest: {0}")]
    Manifest(#[from] serde_json::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CeremonyError + '_ {
    move |source| CeremonyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// SHA-256 as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The development setup's seed for a circuit: SHA-256 of a tag that says what it is and the
/// circuit id. Public on purpose.
pub fn development_seed(circuit: Circuit) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"pavilion-zk development setup v1, NOT FOR PRODUCTION: ")
        .chain_update(circuit.id())
        .finalize()
        .into()
}

/// The keys a setup produced, serialized (compressed arkworks encoding).
pub struct SetupOutput {
    /// The proving key.
    pub proving_key: Vec<u8>,
    /// The verifying key.
    pub verifying_key: Vec<u8>,
}

/// Groth16 setup for a circuit from its R1CS bytes, with circom's QAP reduction and all
/// randomness from `ChaCha20Rng::from_seed(seed)`: the same R1CS and seed give the same keys.
pub fn development_setup(
    circuit: Circuit,
    r1cs: &[u8],
    seed: [u8; 32],
) -> Result<SetupOutput, CeremonyError> {
    let setup_error = |reason: String| CeremonyError::Setup { circuit, reason };
    let file = R1CSFile::<Fr>::new(std::io::Cursor::new(r1cs))
        .map_err(|e| setup_error(format!("reading the r1cs: {e}")))?;
    let mut r1cs = R1CS::from(file);
    r1cs.wire_mapping = None;
    let synthesizer = CircomCircuit {
        r1cs,
        witness: None,
    };
    let mut rng = ChaCha20Rng::from_seed(seed);
    let proving_key = Groth16::<Bn254, CircomReduction>::generate_random_parameters_with_reduction(
        synthesizer,
        &mut rng,
    )
    .map_err(|e| setup_error(e.to_string()))?;
    let mut pk_bytes = Vec::new();
    let mut vk_bytes = Vec::new();
    proving_key
        .serialize_compressed(&mut pk_bytes)
        .and_then(|()| proving_key.vk.serialize_compressed(&mut vk_bytes))
        .map_err(|e| setup_error(e.to_string()))?;
    Ok(SetupOutput {
        proving_key: pk_bytes,
        verifying_key: vk_bytes,
    })
}

/// circom2's compiler line (`circom compiler 2.2.3`) and package line, as run from `zk_dir`.
pub fn compiler_version(zk_dir: &Path) -> Result<String, CeremonyError> {
    let output = Command::new(zk_dir.join("node_modules/.bin/circom2"))
        .arg("--version")
        .current_dir(zk_dir)
        .output()
        .map_err(io(&zk_dir.join("node_modules/.bin/circom2")))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().map(str::trim).collect::<Vec<_>>().join("; "))
}

/// The compiled R1CS and witness generator of one circuit.
pub struct Compiled {
    /// `<id>.r1cs`.
    pub r1cs: Vec<u8>,
    /// `<id>_js/<id>.wasm`.
    pub wasm: Vec<u8>,
}

/// Compiles a circuit with `zk_dir/node_modules/.bin/circom2` (run in `zk_dir`, as its WASI
/// sandbox needs) into `out_dir`, and reads the results.
pub fn compile(circuit: Circuit, zk_dir: &Path, out_dir: &Path) -> Result<Compiled, CeremonyError> {
    let compiler = zk_dir.join("node_modules/.bin/circom2");
    let output = Command::new(&compiler)
        .arg(format!("circuits/{}.circom", circuit.id()))
        .args(COMPILER_ARGS)
        .arg("-o")
        .arg(out_dir)
        .current_dir(zk_dir)
        .output()
        .map_err(|e| CeremonyError::Compile {
            circuit,
            reason: format!("running {}: {e} (run `npm ci` in zk/)", compiler.display()),
        })?;
    if !output.status.success() {
        return Err(CeremonyError::Compile {
            circuit,
            reason: format!(
                "{}\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        });
    }
    let id = circuit.id();
    let r1cs_path = out_dir.join(format!("{id}.r1cs"));
    let wasm_path = out_dir.join(format!("{id}_js/{id}.wasm"));
    Ok(Compiled {
        r1cs: std::fs::read(&r1cs_path).map_err(io(&r1cs_path))?,
        wasm: std::fs::read(&wasm_path).map_err(io(&wasm_path))?,
    })
}

/// `zk/artifacts/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What this file is.
    pub note: String,
    /// circom2's version lines.
    pub compiler: String,
    /// The compiler's arguments after the source file.
    pub compiler_args: Vec<String>,
    /// How the keys were made.
    pub setup: String,
    /// Per circuit id.
    pub circuits: BTreeMap<String, CircuitEntry>,
}

/// One circuit in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitEntry {
    /// SHA-256 of each source file (path relative to `zk/`).
    pub sources: BTreeMap<String, String>,
    /// The development setup's seed, hex.
    pub setup_seed: String,
    /// SHA-256 of each artifact in `artifacts/<id>/`.
    pub artifacts: BTreeMap<String, String>,
}

/// The manifest for the sources and artifacts now on disk under `zk_dir`.
pub fn manifest_of(zk_dir: &Path, compiler: String) -> Result<Manifest, CeremonyError> {
    let hash_file = |relative: &str| -> Result<String, CeremonyError> {
        let path = zk_dir.join(relative);
        Ok(sha256_hex(&std::fs::read(&path).map_err(io(&path))?))
    };
    let mut circuits = BTreeMap::new();
    for circuit in Circuit::ALL {
        let mut sources_hashed = BTreeMap::new();
        for source in sources(circuit) {
            sources_hashed.insert(source.clone(), hash_file(&source)?);
        }
        let mut artifacts = BTreeMap::new();
        for file in ARTIFACT_FILES {
            artifacts.insert(
                file.to_owned(),
                hash_file(&format!("artifacts/{}/{file}", circuit.id()))?,
            );
        }
        circuits.insert(
            circuit.id().to_owned(),
            CircuitEntry {
                sources: sources_hashed,
                setup_seed: hex::encode(development_seed(circuit)),
                artifacts,
            },
        );
    }
    Ok(Manifest {
        note: "Written by zk/scripts/build-artifacts.sh; checked by `cargo test -p pavilion-zk` \
               (tests/manifest.rs). Development keys only: see zk/README.md."
            .to_owned(),
        compiler,
        compiler_args: COMPILER_ARGS.iter().map(|s| (*s).to_owned()).collect(),
        setup: "Groth16 on BN254 with circom's QAP reduction: ark-groth16 0.6 \
                generate_random_parameters_with_reduction::<CircomReduction> driven by \
                ChaCha20Rng::from_seed(setup_seed), setup_seed = SHA-256(\"pavilion-zk \
                development setup v1, NOT FOR PRODUCTION: \" || circuit id)"
            .to_owned(),
        circuits,
    })
}
