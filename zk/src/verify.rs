//! Verifying one proof.

use ark_bn254::{Bn254, Fr};
use ark_ff::PrimeField;
use ark_groth16::Groth16;
use num_bigint::BigUint;

use crate::{Circuit, DecodeError, Proof, VerifyError};

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

    /// The public inputs as decimal strings, in the circuit's order (commitment, bound, nonce):
    /// how snarkjs and JSON evidence carry them.
    pub fn to_decimal_strings(&self) -> [String; 3] {
        self.to_field_elements()
            .map(|x| BigUint::from(x.into_bigint()).to_string())
    }

    /// Public inputs from their decimal strings (as [`PublicInputs::to_decimal_strings`] writes
    /// them). Only the canonical form is accepted — digits alone, no sign, no leading zero, the
    /// field elements below the scalar field's modulus and the bound within 64 bits — so that
    /// one statement has one encoding.
    pub fn from_decimal_strings<S: AsRef<str>>(inputs: &[S]) -> Result<PublicInputs, DecodeError> {
        let [commitment, bound, nonce] = inputs else {
            return Err(DecodeError::PublicInputCount {
                actual: inputs.len(),
            });
        };
        let bound = canonical_decimal(bound.as_ref(), "bound")?;
        Ok(PublicInputs {
            commitment: field_from_decimal(commitment.as_ref(), "commitment")?,
            bound: u64::try_from(&bound).map_err(|_| DecodeError::PublicInput {
                input: "bound",
                reason: "does not fit in 64 bits",
            })?,
            nonce: field_from_decimal(nonce.as_ref(), "nonce")?,
        })
    }
}

/// A decimal string as a number, refused unless canonical (see
/// [`PublicInputs::from_decimal_strings`]).
fn canonical_decimal(text: &str, input: &'static str) -> Result<BigUint, DecodeError> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(DecodeError::PublicInput {
            input,
            reason: "not a canonical decimal number (digits only, no sign or leading zero)",
        });
    }
    Ok(text
        .parse()
        .expect("a non-empty string of ASCII digits is a decimal number"))
}

fn field_from_decimal(text: &str, input: &'static str) -> Result<Fr, DecodeError> {
    let value = canonical_decimal(text, input)?;
    if value >= BigUint::from(Fr::MODULUS) {
        return Err(DecodeError::PublicInput {
            input,
            reason: "not below the BN254 scalar field's modulus",
        });
    }
    Ok(Fr::from(value))
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
