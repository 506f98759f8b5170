//! Proving: circom's witness generator (the compiled `.wasm`, run by ark-circom under wasmer),
//! then Groth16 with circom's QAP reduction.

use std::sync::Mutex;

use ark_bn254::{Bn254, Fr};
use ark_circom::circom::R1CS;
use ark_circom::{CircomCircuit, CircomReduction, WitnessCalculator};
use ark_ff::PrimeField;
use ark_groth16::{Groth16, ProvingKey};
use num_bigint::{BigInt, BigUint};
use wasmer::{Module, Store};

use crate::rand::{CryptoRng, RngCore};
use crate::{
    commitment, ArtifactError, AttributeType, Circuit, Proof, ProveError, PublicInputs, Salt,
};

/// What the provider knows for one proof: the private attribute and its opening, and the
/// request's public bound and nonce. Its `Debug` redacts the attribute and the salt.
#[derive(Clone)]
pub struct WitnessInputs {
    /// The attribute: a date as YYYYMMDD for [`Circuit::DateLeCutoff`], an integer otherwise.
    pub attribute: u64,
    /// The attribute's type, as committed.
    pub attribute_type: AttributeType,
    /// The subject binding, as committed (see [`crate::subject_binding`]).
    pub subject_binding: Fr,
    /// The salt, as committed.
    pub salt: Salt,
    /// The public bound: the cutoff date (YYYYMMDD) or the threshold.
    pub bound: u64,
    /// The request's nonce (see [`crate::nonce_from_request_id`]).
    pub nonce: Fr,
}

impl WitnessInputs {
    /// The commitment these inputs open.
    pub fn commitment(&self) -> Fr {
        commitment(
            self.attribute,
            self.attribute_type,
            self.subject_binding,
            &self.salt,
        )
    }

    /// The public inputs a proof from these inputs verifies against.
    pub fn public_inputs(&self) -> PublicInputs {
        PublicInputs {
            commitment: self.commitment(),
            bound: self.bound,
            nonce: self.nonce,
        }
    }
}

impl std::fmt::Debug for WitnessInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitnessInputs")
            .field("attribute", &"<redacted>")
            .field("attribute_type", &self.attribute_type)
            .field("subject_binding", &self.subject_binding)
            .field("salt", &self.salt)
            .field("bound", &self.bound)
            .field("nonce", &self.nonce)
            .finish()
    }
}

/// A loaded prover for one circuit: R1CS, proving key and the compiled witness generator. Load
/// once and reuse (compiling the witness generator takes the most time of loading); one per
/// worker for concurrent proving — `prove` takes `&mut self`.
pub struct Prover {
    circuit: Circuit,
    r1cs: R1CS<Fr>,
    proving_key: ProvingKey<Bn254>,
    store: Store,
    module: Module,
    /// The instantiated generator; dropped after a failure and instantiated again from `module`.
    calculator: Option<WitnessCalculator>,
}

impl Prover {
    /// Loads the circuit's artifacts and compiles its witness generator.
    pub fn new(circuit: Circuit) -> Result<Prover, ArtifactError> {
        let r1cs = circuit.r1cs()?;
        let proving_key = circuit.proving_key()?;
        let store = Store::default();
        let module = Module::new(&store, circuit.artifacts().wasm)
            .map_err(|e| circuit.artifact_error("witness generator", e))?;
        Ok(Prover {
            circuit,
            r1cs,
            proving_key,
            store,
            module,
            calculator: None,
        })
    }

    /// The circuit this prover proves.
    pub fn circuit(&self) -> Circuit {
        self.circuit
    }

    /// Proves the circuit's predicate over `inputs`. Fails without proving when the predicate
    /// does not hold or an input is out of the circuit's range.
    pub fn prove<R: RngCore + CryptoRng>(
        &mut self,
        inputs: &WitnessInputs,
        rng: &mut R,
    ) -> Result<Proof, ProveError> {
        let circuit = self.circuit;
        let limit = 1u128 << circuit.bits();
        if u128::from(inputs.bound) >= limit {
            return Err(ProveError::OutOfRange {
                circuit,
                input: "bound",
                bits: circuit.bits(),
            });
        }
        if u128::from(inputs.attribute) >= limit {
            return Err(ProveError::OutOfRange {
                circuit,
                input: "attribute",
                bits: circuit.bits(),
            });
        }
        if !circuit.holds(inputs.attribute, inputs.bound) {
            return Err(ProveError::PredicateFalse {
                circuit,
                bound: inputs.bound,
            });
        }
        self.prove_unchecked(inputs, &inputs.public_inputs(), rng)
    }

    /// Proves `public` from `inputs` without the checks in Rust, leaving a false predicate or
    /// a commitment the inputs do not open to the witness generator and the constraint check.
    /// Tests use it to show the circuit itself refuses.
    pub(crate) fn prove_unchecked<R: RngCore + CryptoRng>(
        &mut self,
        inputs: &WitnessInputs,
        public: &PublicInputs,
        rng: &mut R,
    ) -> Result<Proof, ProveError> {
        let circuit = self.circuit;
        let witness = self.witness(inputs, public)?;

        // circom's generator, as ark-circom runs it, does not stop at a failed constraint
        // (`===`); check them all here so a false statement is an error naming the constraint,
        // never an invalid proof.
        if let Some(constraint) = first_unsatisfied(&self.r1cs, &witness) {
            return Err(ProveError::Unsatisfied {
                circuit,
                constraint,
            });
        }
        let synthesizer = CircomCircuit {
            r1cs: self.r1cs.clone(),
            witness: Some(witness),
        };
        Groth16::<Bn254, CircomReduction>::create_random_proof_with_reduction(
            synthesizer,
            &self.proving_key,
            rng,
        )
        .map(Proof)
        .map_err(|source| ProveError::Groth16 { circuit, source })
    }

    /// Runs the witness generator; checks that the witness's public signals are the ones asked.
    fn witness(
        &mut self,
        inputs: &WitnessInputs,
        public: &PublicInputs,
    ) -> Result<Vec<Fr>, ProveError> {
        let circuit = self.circuit;
        let (bound_name, attribute_name) = match circuit {
            Circuit::DateLeCutoff => ("cutoff", "date"),
            Circuit::IntGeThreshold => ("threshold", "value"),
        };
        let signals = [
            ("commitment", public.commitment),
            (bound_name, Fr::from(public.bound)),
            ("nonce", public.nonce),
            (attribute_name, Fr::from(inputs.attribute)),
            ("attributeType", Fr::from(inputs.attribute_type.0)),
            ("subjectBinding", inputs.subject_binding),
            ("salt", inputs.salt.field()),
        ]
        .map(|(name, value)| (name.to_owned(), vec![to_bigint(value)]));

        let calculator = match &mut self.calculator {
            Some(calculator) => calculator,
            slot => slot.insert(
                WitnessCalculator::from_module(&mut self.store, self.module.clone()).map_err(
                    |e| ProveError::Witness {
                        circuit,
                        reason: format!("instantiating the generator: {e}"),
                    },
                )?,
            ),
        };
        let result = calculator.calculate_witness_element::<Fr, _>(&mut self.store, signals, false);
        let witness = match result {
            Ok(witness) => witness,
            Err(e) => {
                self.calculator = None;
                return Err(ProveError::Witness {
                    circuit,
                    reason: e.to_string(),
                });
            }
        };
        let expected = public.to_field_elements();
        if witness.len() != self.r1cs.num_variables || witness[1..=3] != expected {
            return Err(ProveError::Witness {
                circuit,
                reason: "the generator's public signals differ from the inputs given".to_owned(),
            });
        }
        Ok(witness)
    }
}

/// The index of the first R1CS constraint `A·w * B·w = C·w` the witness `w` does not satisfy
/// (a wire index past the witness counts as unsatisfied).
fn first_unsatisfied(r1cs: &R1CS<Fr>, witness: &[Fr]) -> Option<usize> {
    let evaluate = |lc: &[(usize, Fr)]| -> Option<Fr> {
        lc.iter()
            .map(|(wire, coefficient)| witness.get(*wire).map(|value| *value * coefficient))
            .sum()
    };
    r1cs.constraints
        .iter()
        .position(|(a, b, c)| match (evaluate(a), evaluate(b), evaluate(c)) {
            (Some(a), Some(b), Some(c)) => a * b != c,
            _ => true,
        })
}

fn to_bigint(value: Fr) -> BigInt {
    BigInt::from(BigUint::from(value.into_bigint()))
}

static PROVERS: [Mutex<Option<Prover>>; 2] = [Mutex::new(None), Mutex::new(None)];

/// Proves with a process-wide [`Prover`] per circuit, loaded on first use; calls for one
/// circuit take turns. A service proving concurrently keeps a [`Prover`] per worker instead.
pub fn prove<R: RngCore + CryptoRng>(
    circuit: Circuit,
    inputs: &WitnessInputs,
    rng: &mut R,
) -> Result<Proof, ProveError> {
    // A panic while proving leaves nothing a later proof depends on (each witness starts from
    // the generator's `init`), so a poisoned lock is taken over.
    let mut slot = PROVERS[circuit as usize]
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let prover = match &mut *slot {
        Some(prover) => prover,
        empty => empty.insert(Prover::new(circuit)?),
    };
    prover.prove(inputs, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify;

    fn birth_date(date: u64, cutoff: u64) -> WitnessInputs {
        WitnessInputs {
            attribute: date,
            attribute_type: AttributeType::BIRTH_DATE,
            subject_binding: Fr::from(424_242u64),
            salt: Salt::from_bytes(&[0x5a; 16]).unwrap(),
            bound: cutoff,
            nonce: Fr::from(77u64),
        }
    }

    #[test]
    fn debug_redacts_the_attribute_and_salt() {
        let shown = format!("{:?}", birth_date(19_871_231, 20_080_514));
        assert!(!shown.contains("19871231"), "{shown}");
        assert!(!shown.contains("5a5a"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    /// Past the checks in Rust, the circuit itself refuses a date after the cutoff, and a
    /// commitment that Poseidon over the inputs does not give (so the Rust Poseidon and the
    /// circuit's agree: the honest proofs in tests/ pass this same constraint).
    #[test]
    fn the_circuit_refuses_a_false_predicate_and_a_wrong_commitment() {
        let mut prover = Prover::new(Circuit::DateLeCutoff).unwrap();
        let rng = &mut rand_core::OsRng;

        let late = birth_date(20_080_515, 20_080_514);
        let err = prover
            .prove_unchecked(&late, &late.public_inputs(), rng)
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProveError::Unsatisfied { .. } | ProveError::Witness { .. }
            ),
            "{err}"
        );

        let honest = birth_date(20_080_514, 20_080_514);
        let mut public = honest.public_inputs();
        public.commitment += Fr::from(1u64);
        let err = prover.prove_unchecked(&honest, &public, rng).unwrap_err();
        assert!(
            matches!(
                err,
                ProveError::Unsatisfied { .. } | ProveError::Witness { .. }
            ),
            "{err}"
        );

        // The prover recovers from both failures.
        let proof = prover.prove(&honest, rng).unwrap();
        verify(Circuit::DateLeCutoff, &honest.public_inputs(), &proof).unwrap();
    }
}
