//! RFC 9497 VOPRF, suite ristretto255-SHA512, through the `voprf` crate: the provider's key,
//! batch evaluation with one DLEQ proof per batch, and the client's blind / verify / finalize.
//! Everything crosses the wire as fixed-size byte strings: elements 32 bytes, proofs 64,
//! outputs 64.

use rand_core::{CryptoRng, OsRng, RngCore};
use voprf::{
    BlindedElement, EvaluationElement, Group, Proof, Ristretto255, VoprfClient, VoprfServer,
};

/// The ciphersuite, as RFC 9497 names it.
pub const SUITE: &str = "ristretto255-SHA512";
/// Bytes of a serialized group element (blinded or evaluated) and of a public key.
pub const ELEMENT_LEN: usize = 32;
/// Bytes of a DLEQ proof.
pub const PROOF_LEN: usize = 64;
/// Bytes of an OPRF output, `F_k(x)`.
pub const OUTPUT_LEN: usize = 64;
/// Most elements one evaluation request may carry.
pub const MAX_BATCH: usize = 1_000;

/// An OPRF output.
pub type Output = [u8; OUTPUT_LEN];

/// What can go wrong evaluating or finalizing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OprfError {
    /// An element is not a valid ristretto255 encoding (or is the identity).
    #[error("element {index} is not a valid ristretto255 point")]
    BadElement {
        /// Position in the batch.
        index: usize,
    },
    /// The batch is empty or too large.
    #[error("a batch holds 1 to {MAX_BATCH} elements, not {0}")]
    BatchSize(usize),
    /// Inputs, states and evaluated elements do not line up.
    #[error(
        "{inputs} inputs, {states} blinded states and {evaluated} evaluated elements do not match"
    )]
    Mismatch {
        /// Inputs.
        inputs: usize,
        /// Blinding states.
        states: usize,
        /// Evaluated elements.
        evaluated: usize,
    },
    /// The input is empty or longer than 65,535 bytes.
    #[error("an OPRF input must be 1 to 65535 bytes")]
    Input,
    /// The proof is malformed or does not verify under the provider's public key.
    #[error("the evaluation proof does not verify against the provider's public key")]
    BadProof,
    /// A key is not well-formed.
    #[error("not a valid {SUITE} key")]
    BadKey,
}

/// A provider's OPRF key pair. The secret never leaves the provider: it is stored encrypted
/// at rest and is never written to a topic.
pub struct ProviderKey(VoprfServer<Ristretto255>);

impl ProviderKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        ProviderKey(VoprfServer::new(&mut OsRng).expect("OsRng yields a key"))
    }

    /// The key RFC 9497 `DeriveKeyPair` makes from a 32-byte seed and key info.
    pub fn derive(seed: &[u8; 32], info: &[u8]) -> Result<Self, OprfError> {
        VoprfServer::new_from_seed(seed, info)
            .map(ProviderKey)
            .map_err(|_| OprfError::BadKey)
    }

    /// Secret scalar followed by the public key (64 bytes), for encrypted storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.serialize().to_vec()
    }

    /// Reads [`ProviderKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, OprfError> {
        VoprfServer::deserialize(bytes)
            .map(ProviderKey)
            .map_err(|_| OprfError::BadKey)
    }

    /// The public key clients verify proofs against.
    pub fn public_key(&self) -> [u8; ELEMENT_LEN] {
        Ristretto255::serialize_elem(self.0.get_public_key()).into()
    }

    /// Evaluates a batch of blinded elements; one proof covers the whole batch.
    pub fn evaluate_batch(
        &self,
        blinded: &[Vec<u8>],
    ) -> Result<(Vec<[u8; ELEMENT_LEN]>, [u8; PROOF_LEN]), OprfError> {
        self.evaluate_batch_with(&mut OsRng, blinded)
    }

    /// [`ProviderKey::evaluate_batch`] with the proof's randomness from `rng` (test vectors).
    pub fn evaluate_batch_with<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        blinded: &[Vec<u8>],
    ) -> Result<(Vec<[u8; ELEMENT_LEN]>, [u8; PROOF_LEN]), OprfError> {
        if blinded.is_empty() || blinded.len() > MAX_BATCH {
            return Err(OprfError::BatchSize(blinded.len()));
        }
        let elements = blinded
            .iter()
            .enumerate()
            .map(|(index, bytes)| {
                BlindedElement::<Ristretto255>::deserialize(bytes)
                    .map_err(|_| OprfError::BadElement { index })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let result = self
            .0
            .batch_blind_evaluate(rng, &elements)
            .map_err(|_| OprfError::BatchSize(blinded.len()))?;
        let evaluated = result
            .messages
            .iter()
            .map(|m| m.serialize().into())
            .collect();
        Ok((evaluated, result.proof.serialize().into()))
    }

    /// `F_k(x)` computed directly with the secret key: how a provider encodes its own set.
    pub fn evaluate(&self, input: &[u8]) -> Result<Output, OprfError> {
        check_input(input)?;
        self.0
            .evaluate(input)
            .map(Into::into)
            .map_err(|_| OprfError::Input)
    }
}

/// Pavilion never evaluates an empty input (normalization refuses empty identifiers); the
/// RFC's upper bound is 65,535 bytes.
fn check_input(input: &[u8]) -> Result<(), OprfError> {
    if input.is_empty() || input.len() > usize::from(u16::MAX) {
        return Err(OprfError::Input);
    }
    Ok(())
}

/// A client's blinded input: the state to keep and the element to send.
pub struct Blinded {
    state: VoprfClient<Ristretto255>,
    /// The blinded element, for the provider's evaluation request.
    pub element: [u8; ELEMENT_LEN],
}

impl Blinded {
    fn from_result(result: voprf::VoprfClientBlindResult<Ristretto255>) -> Self {
        Blinded {
            element: result.message.serialize().into(),
            state: result.state,
        }
    }
}

/// Blinds an input with a given blinding scalar (RFC test vectors only).
#[cfg(test)]
fn blind_with(input: &[u8], blind: &[u8]) -> Result<Blinded, OprfError> {
    let scalar = Ristretto255::deserialize_scalar(blind).map_err(|_| OprfError::Input)?;
    VoprfClient::deterministic_blind_unchecked(input, scalar)
        .map(Blinded::from_result)
        .map_err(|_| OprfError::Input)
}

/// Blinds an input with a fresh random factor.
pub fn blind(input: &[u8]) -> Result<Blinded, OprfError> {
    check_input(input)?;
    VoprfClient::blind(input, &mut OsRng)
        .map(Blinded::from_result)
        .map_err(|_| OprfError::Input)
}

/// Verifies the provider's proof over the whole batch and unblinds: `F_k(x)` per input.
pub fn finalize_batch(
    inputs: &[&[u8]],
    blinded: &[Blinded],
    evaluated: &[[u8; ELEMENT_LEN]],
    proof: &[u8; PROOF_LEN],
    public_key: &[u8; ELEMENT_LEN],
) -> Result<Vec<Output>, OprfError> {
    if inputs.len() != blinded.len() || inputs.len() != evaluated.len() {
        return Err(OprfError::Mismatch {
            inputs: inputs.len(),
            states: blinded.len(),
            evaluated: evaluated.len(),
        });
    }
    let public_key = Ristretto255::deserialize_elem(public_key).map_err(|_| OprfError::BadKey)?;
    let proof = Proof::<Ristretto255>::deserialize(proof).map_err(|_| OprfError::BadProof)?;
    let messages = evaluated
        .iter()
        .enumerate()
        .map(|(index, bytes)| {
            EvaluationElement::<Ristretto255>::deserialize(bytes)
                .map_err(|_| OprfError::BadElement { index })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let states: Vec<VoprfClient<Ristretto255>> = blinded.iter().map(|b| b.state.clone()).collect();
    let inputs: Vec<&[u8]> = inputs.to_vec();
    let outputs = VoprfClient::batch_finalize(&inputs, &states, &messages, &proof, public_key)
        .map_err(|_| OprfError::BadProof)?;
    outputs
        .map(|o| o.map(Into::into).map_err(|_| OprfError::Input))
        .collect()
}

#[cfg(test)]
mod tests;
