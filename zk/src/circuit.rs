//! The circuits, their compiled artifacts and their keys.

use std::sync::OnceLock;

use ark_bn254::{Bn254, Fr};
use ark_circom::circom::{R1CSFile, R1CS};
use ark_ec::pairing::Pairing;
use ark_groth16::{PreparedVerifyingKey, ProvingKey, VerifyingKey};
use ark_serialize::{CanonicalDeserialize, Compress, Validate};
use sha2::{Digest, Sha256};

use crate::ArtifactError;

/// One predicate circuit. Its public inputs are, in order: the commitment, the bound, the nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Circuit {
    /// The committed date (YYYYMMDD) is on or before the public cutoff (YYYYMMDD):
    /// "18 or older on 2026-05-14" is "born on or before 2008-05-14".
    DateLeCutoff,
    /// The committed unsigned integer (below 2^64) is at least the public threshold.
    IntGeThreshold,
}

/// The artifacts of one circuit, as `zk/scripts/build-artifacts.sh` wrote them.
pub(crate) struct Artifacts {
    pub r1cs: &'static [u8],
    pub wasm: &'static [u8],
    pub proving_key: &'static [u8],
    pub verifying_key: &'static [u8],
}

macro_rules! artifacts {
    ($id:literal) => {
        Artifacts {
            r1cs: include_bytes!(concat!("../artifacts/", $id, "/circuit.r1cs")),
            wasm: include_bytes!(concat!("../artifacts/", $id, "/witness.wasm")),
            proving_key: include_bytes!(concat!("../artifacts/", $id, "/proving_key.bin")),
            verifying_key: include_bytes!(concat!("../artifacts/", $id, "/verifying_key.bin")),
        }
    };
}

static DATE_LE_CUTOFF: Artifacts = artifacts!("date_le_cutoff");
static INT_GE_THRESHOLD: Artifacts = artifacts!("int_ge_threshold");

/// The verifying key with what batch verification needs prepared beside it.
pub(crate) struct Keys {
    pub prepared: PreparedVerifyingKey<Bn254>,
    pub beta_g2: <Bn254 as Pairing>::G2Prepared,
}

static KEYS: [OnceLock<Result<Keys, ArtifactError>>; 2] = [OnceLock::new(), OnceLock::new()];

impl Circuit {
    /// Every circuit.
    pub const ALL: [Circuit; 2] = [Circuit::DateLeCutoff, Circuit::IntGeThreshold];

    /// The stable id: the circuit's file name in `zk/circuits/`, and what a decision names it by.
    pub fn id(self) -> &'static str {
        match self {
            Circuit::DateLeCutoff => "date_le_cutoff",
            Circuit::IntGeThreshold => "int_ge_threshold",
        }
    }

    /// The circuit with this id.
    pub fn from_id(id: &str) -> Option<Circuit> {
        Circuit::ALL.into_iter().find(|c| c.id() == id)
    }

    /// Bits of the range check on the attribute and the bound (the comparison is sound below it).
    pub fn bits(self) -> u32 {
        match self {
            Circuit::DateLeCutoff => 32,
            Circuit::IntGeThreshold => 64,
        }
    }

    /// Whether `attribute` satisfies the predicate for `bound` (what the circuit proves).
    pub fn holds(self, attribute: u64, bound: u64) -> bool {
        match self {
            Circuit::DateLeCutoff => attribute <= bound,
            Circuit::IntGeThreshold => attribute >= bound,
        }
    }

    /// The verifying key, serialized (compressed arkworks encoding), as pinned in the manifest.
    pub fn verifying_key_bytes(self) -> &'static [u8] {
        self.artifacts().verifying_key
    }

    /// SHA-256 of [`Circuit::verifying_key_bytes`]: what a decision names the key by.
    pub fn verifying_key_hash(self) -> [u8; 32] {
        Sha256::digest(self.verifying_key_bytes()).into()
    }

    /// The size in bytes of each artifact compiled into the crate, by its file name in
    /// `zk/artifacts/<id>/`: the R1CS, the witness generator, the proving key and the
    /// verifying key.
    pub fn artifact_sizes(self) -> [(&'static str, usize); 4] {
        let a = self.artifacts();
        [
            ("circuit.r1cs", a.r1cs.len()),
            ("witness.wasm", a.wasm.len()),
            ("proving_key.bin", a.proving_key.len()),
            ("verifying_key.bin", a.verifying_key.len()),
        ]
    }

    /// The verifying key.
    pub fn verifying_key(self) -> Result<&'static VerifyingKey<Bn254>, ArtifactError> {
        Ok(&self.keys()?.prepared.vk)
    }

    pub(crate) fn artifacts(self) -> &'static Artifacts {
        match self {
            Circuit::DateLeCutoff => &DATE_LE_CUTOFF,
            Circuit::IntGeThreshold => &INT_GE_THRESHOLD,
        }
    }

    pub(crate) fn keys(self) -> Result<&'static Keys, ArtifactError> {
        KEYS[self as usize]
            .get_or_init(|| {
                let vk = crate::proof::decode_verifying_key(self.verifying_key_bytes())
                    .map_err(|e| self.artifact_error("verifying key", e))?;
                if vk.gamma_abc_g1.len() != 4 {
                    return Err(self.artifact_error(
                        "verifying key",
                        format!(
                            "{} public inputs, the circuit has 3",
                            vk.gamma_abc_g1.len().saturating_sub(1)
                        ),
                    ));
                }
                Ok(Keys {
                    beta_g2: vk.beta_g2.into(),
                    prepared: ark_groth16::prepare_verifying_key(&vk),
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The proving key. Read without the subgroup checks (they dominate loading time): the
    /// bytes are compiled in and pinned by the manifest test, and a bad proving key could only
    /// produce proofs that fail verification.
    pub(crate) fn proving_key(self) -> Result<ProvingKey<Bn254>, ArtifactError> {
        ProvingKey::deserialize_with_mode(self.artifacts().proving_key, Compress::Yes, Validate::No)
            .map_err(|e| self.artifact_error("proving key", e))
    }

    /// The R1CS, with circom's wire-to-label map dropped: the witness generator already
    /// produces values in wire order.
    pub(crate) fn r1cs(self) -> Result<R1CS<Fr>, ArtifactError> {
        let file = R1CSFile::<Fr>::new(std::io::Cursor::new(self.artifacts().r1cs))
            .map_err(|e| self.artifact_error("r1cs", e))?;
        let mut r1cs = R1CS::from(file);
        r1cs.wire_mapping = None;
        Ok(r1cs)
    }

    pub(crate) fn artifact_error(
        self,
        artifact: &'static str,
        reason: impl ToString,
    ) -> ArtifactError {
        ArtifactError {
            circuit: self,
            artifact,
            reason: reason.to_string(),
        }
    }
}

impl std::fmt::Display for Circuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}
