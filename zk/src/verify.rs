//! Verifying one proof.

use ark_bn254::{Bn254, Fr};
use ark_groth16::Groth16;

use crate::{Circuit, Proof, VerifyError};

/// A proof's public inputs, which the verifier rebuilds from what it trusts: the commitment
/// from the provider's signed set entry, the bound from the request and the claim, the nonce
/// from the request id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicInputs {
    /// The provider's commitment to the attribute.
    pub commitment: Fr,
    /// The cutoff date (YYYYMMDD) or the threshold.
    pub bound: u64,
    /// The request's nonce.
    pub nonce: Fr,
}

impl PublicInputs {
    /// The circuit's public inputs in its order: commitment, bound, nonce.
    pub fn to_field_elements(&self) -> [Fr; 3] {
        [self.commitment, Fr::from(self.bound), self.nonce]
    }
}

/// Checks one proof of `circuit` against `public_inputs` with the circuit's pinned verifying key.
pub fn verify(
    circuit: Circuit,
    public_inputs: &PublicInputs,
    proof: &Proof,
) -> Result<(), VerifyError> {
    let keys = circuit.keys()?;
    match Groth16::<Bn254>::verify_proof(
        &keys.prepared,
        &proof.0,
        &public_inputs.to_field_elements(),
    ) {
        Ok(true) => Ok(()),
        Ok(false) => Err(VerifyError::Rejected { circuit }),
        Err(e) => Err(VerifyError::Malformed {
            circuit,
            reason: e.to_string(),
        }),
    }
}
