//! Errors. None of them carries an attribute value or a salt: they end up in logs.

use crate::Circuit;

/// An artifact compiled into the crate (key, R1CS, witness generator) could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{circuit}: cannot load the {artifact} from zk/artifacts/ ({reason}); rebuild with zk/scripts/build-artifacts.sh")]
#[non_exhaustive]
pub struct ArtifactError {
    /// The circuit whose artifact failed.
    pub circuit: Circuit,
    /// Which artifact: "proving key", "verifying key", "r1cs", "witness generator".
    pub artifact: &'static str,
    /// What went wrong.
    pub reason: String,
}

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProveError {
    /// The attribute does not satisfy the circuit's predicate for this bound: there is no proof.
    #[error("{circuit}: the committed attribute does not satisfy the predicate for bound {bound}")]
    PredicateFalse {
        /// The circuit asked for.
        circuit: Circuit,
        /// The public bound (a cutoff date or a threshold).
        bound: u64,
    },
    /// An input does not fit the circuit's range check (the bound, or the attribute).
    #[error("{circuit}: the {input} does not fit in {bits} bits, the circuit's range")]
    OutOfRange {
        /// The circuit asked for.
        circuit: Circuit,
        /// "attribute" or "bound".
        input: &'static str,
        /// The circuit's range in bits.
        bits: u32,
    },
    /// circom's witness generator could not run or returned an unusable witness (a trap, an
    /// input it does not know, public signals other than those given).
    #[error("{circuit}: witness generation failed: {reason}")]
    Witness {
        /// The circuit asked for.
        circuit: Circuit,
        /// The generator's message.
        reason: String,
    },
    /// The witness does not satisfy the circuit's R1CS, so no valid proof exists for it.
    #[error(
        "{circuit}: the witness does not satisfy constraint {constraint} of the circuit's R1CS"
    )]
    Unsatisfied {
        /// The circuit asked for.
        circuit: Circuit,
        /// The index of the first unsatisfied constraint in the circuit's R1CS.
        constraint: usize,
    },
    /// Groth16 proving itself failed.
    #[error("{circuit}: proving failed: {source}")]
    Groth16 {
        /// The circuit asked for.
        circuit: Circuit,
        /// arkworks' error.
        source: ark_relations::gr1cs::SynthesisError,
    },
    /// An artifact could not be loaded.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// Why a proof was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The Groth16 equation does not hold: the proof is forged, or was made for another
    /// commitment, bound, nonce or circuit than the one it is checked against.
    #[error("{circuit}: the proof does not verify for these public inputs (forged, or made for another commitment, bound, nonce or circuit)")]
    Rejected {
        /// The circuit the proof was checked against.
        circuit: Circuit,
    },
    /// The pairing check could not be evaluated (a degenerate input).
    #[error("{circuit}: the proof could not be checked: {reason}")]
    Malformed {
        /// The circuit the proof was checked against.
        circuit: Circuit,
        /// arkworks' reason.
        reason: String,
    },
    /// The circuit's verifying key could not be loaded.
    #[error("{0}")]
    Key(String),
}

impl From<ArtifactError> for VerifyError {
    fn from(e: ArtifactError) -> Self {
        VerifyError::Key(e.to_string())
    }
}

/// Bytes that are not a valid encoding of what they claim to be.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length is wrong.
    #[error("{what}: expected {expected} bytes, got {actual}")]
    Length {
        /// What was being decoded.
        what: &'static str,
        /// The encoding's length.
        expected: usize,
        /// The input's length.
        actual: usize,
    },
    /// arkworks rejected the bytes (not a point on the curve, not in the subgroup, not canonical).
    #[error("{what}: {source}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// arkworks' reason.
        source: ark_serialize::SerializationError,
    },
    /// The bytes decode, but are not the one encoding of what they decode to: arkworks reads
    /// a compressed point whose infinity flag is set as the identity, whatever its other bits.
    #[error("{what}: not the canonical encoding of its points")]
    NonCanonical {
        /// What was being decoded.
        what: &'static str,
    },
    /// A coordinate of a proof point (`"A"`, `"B"`, `"C"`) in EIP-197's layout is not below
    /// the base field's modulus.
    #[error("EIP-197 proof: a coordinate of point {point} is not below the base field's modulus")]
    CoordinateOutOfRange {
        /// The proof point: "A", "B" or "C".
        point: &'static str,
    },
    /// A proof point (`"A"`, `"B"`, `"C"`) in EIP-197's layout is not on the curve.
    #[error("EIP-197 proof: point {point} is not on the curve")]
    NotOnCurve {
        /// The proof point: "A", "B" or "C".
        point: &'static str,
    },
    /// A proof point (`"A"`, `"B"`, `"C"`) in EIP-197's layout is on the curve but outside
    /// the prime-order subgroup (only possible for B, in G2).
    #[error("EIP-197 proof: point {point} is not in the prime-order subgroup")]
    NotInSubgroup {
        /// The proof point: "A", "B" or "C".
        point: &'static str,
    },
    /// There are not exactly three public inputs (commitment, bound, nonce).
    #[error("public inputs: expected 3 (commitment, bound, nonce), got {actual}")]
    PublicInputCount {
        /// How many were given.
        actual: usize,
    },
    /// A public input is not a canonical decimal number in its range.
    #[error("public input {input}: {reason}")]
    PublicInput {
        /// "commitment", "bound" or "nonce".
        input: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A salt is too short, too long, or not below the field's modulus.
    #[error("salt: {0}")]
    Salt(&'static str),
    /// A field element (commitment, nonce) is not 32 bytes or not below the field's modulus.
    #[error("field element: {0}")]
    Field(&'static str),
}
