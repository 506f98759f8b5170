//! Byte encodings: compressed arkworks serialization of proofs and verifying keys.

use ark_bn254::Bn254;
use ark_groth16::VerifyingKey;
use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};

use crate::DecodeError;

/// Length of an encoded [`Proof`]: A and C compressed in G1 (32 bytes each), B in G2 (64).
pub const PROOF_BYTES: usize = 128;

/// A Groth16 proof on BN254. Every `Proof` holds points on the curve and in the prime-order
/// subgroups: it comes from the prover or from [`Proof::from_bytes`], which checks them (batch
/// verification relies on it).
///
/// Groth16 proofs are malleable: anyone can re-randomize a valid proof into another valid proof
/// of the same statement with different bytes. Never de-duplicate or key anything on proof bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Proof(pub(crate) ark_groth16::Proof<Bn254>);

impl Proof {
    /// The proof as [`PROOF_BYTES`] bytes (compressed arkworks encoding).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PROOF_BYTES);
        self.0
            .serialize_compressed(&mut out)
            .expect("serializing into a Vec cannot fail");
        out
    }

    /// A proof from its bytes; rejects a wrong length, points off the curve or outside the
    /// subgroup, and non-canonical encodings.
    pub fn from_bytes(bytes: &[u8]) -> Result<Proof, DecodeError> {
        if bytes.len() != PROOF_BYTES {
            return Err(DecodeError::Length {
                what: "proof",
                expected: PROOF_BYTES,
                actual: bytes.len(),
            });
        }
        ark_groth16::Proof::deserialize_compressed(bytes)
            .map(Proof)
            .map_err(|source| DecodeError::Invalid {
                what: "proof",
                source,
            })
    }

    /// The arkworks proof.
    pub fn as_ark(&self) -> &ark_groth16::Proof<Bn254> {
        &self.0
    }

    /// A fresh proof of the same statement (see [`Proof`] on malleability).
    pub fn rerandomize<R: crate::rand::RngCore + crate::rand::CryptoRng>(
        &self,
        vk: &VerifyingKey<Bn254>,
        rng: &mut R,
    ) -> Proof {
        Proof(ark_groth16::Groth16::<Bn254>::rerandomize_proof(
            vk, &self.0, rng,
        ))
    }
}

/// A verifying key from its compressed arkworks bytes (as [`crate::Circuit::verifying_key_bytes`]),
/// with every point checked; trailing bytes are rejected.
pub fn decode_verifying_key(bytes: &[u8]) -> Result<VerifyingKey<Bn254>, DecodeError> {
    let mut reader = bytes;
    let vk = VerifyingKey::deserialize_compressed(&mut reader).map_err(|source| {
        DecodeError::Invalid {
            what: "verifying key",
            source,
        }
    })?;
    if !reader.is_empty() {
        return Err(DecodeError::Length {
            what: "verifying key",
            expected: bytes.len() - reader.len(),
            actual: bytes.len(),
        });
    }
    Ok(vk)
}
