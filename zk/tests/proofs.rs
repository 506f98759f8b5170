//! Proving and verifying both circuits: bounds, wrong public inputs, garbled bytes, batches.

use pavilion_zk::rand::OsRng;
use pavilion_zk::{
    commitment, decode_verifying_key, nonce_from_request_id, prove, subject_binding, verify,
    verify_batch, AttributeType, Circuit, DecodeError, Fr, Proof, ProveError, PublicInputs, Salt,
    VerifyError, WitnessInputs, PROOF_BYTES,
};

const INCOME: AttributeType = AttributeType(2);

fn inputs(circuit: Circuit, attribute: u64, bound: u64, request: &str) -> WitnessInputs {
    WitnessInputs {
        attribute,
        attribute_type: match circuit {
            Circuit::DateLeCutoff => AttributeType::BIRTH_DATE,
            Circuit::IntGeThreshold => INCOME,
        },
        subject_binding: subject_binding(&[0x11; 32]),
        salt: Salt::from_bytes(&[0x42; 31]).unwrap(),
        bound,
        nonce: nonce_from_request_id(request.as_bytes()),
    }
}

/// Proves `inputs(circuit, attribute, bound, request)` and checks that the proof verifies:
/// the honest starting point the wrong-input cases depart from.
fn honest_proof(
    circuit: Circuit,
    attribute: u64,
    bound: u64,
    request: &str,
) -> (WitnessInputs, Proof) {
    let witness = inputs(circuit, attribute, bound, request);
    let proof = prove(circuit, &witness, &mut OsRng).unwrap();
    verify(circuit, &witness.public_inputs(), &proof).unwrap();
    (witness, proof)
}

#[test]
fn born_exactly_on_the_cutoff_proves_and_verifies_a_day_later_does_not_prove() {
    let (_, proof) = honest_proof(Circuit::DateLeCutoff, 20_080_514, 20_080_514, "req-1");
    assert_eq!(proof.to_bytes().len(), PROOF_BYTES);
    honest_proof(Circuit::DateLeCutoff, 19_700_101, 20_080_514, "req-1");

    let a_day_late = inputs(Circuit::DateLeCutoff, 20_080_515, 20_080_514, "req-1");
    let err = prove(Circuit::DateLeCutoff, &a_day_late, &mut OsRng).unwrap_err();
    assert!(
        matches!(
            err,
            ProveError::PredicateFalse {
                circuit: Circuit::DateLeCutoff,
                bound: 20_080_514
            }
        ),
        "{err}"
    );
    // The message names the bound, never the attribute.
    assert!(!err.to_string().contains("20080515"), "{err}");
}

#[test]
fn integer_at_the_threshold_proves_one_below_does_not() {
    honest_proof(Circuit::IntGeThreshold, 50_000, 50_000, "req-2");
    honest_proof(Circuit::IntGeThreshold, u64::MAX, 0, "req-2");

    let below = inputs(Circuit::IntGeThreshold, 49_999, 50_000, "req-2");
    let err = prove(Circuit::IntGeThreshold, &below, &mut OsRng).unwrap_err();
    assert!(matches!(err, ProveError::PredicateFalse { .. }), "{err}");
}

#[test]
fn out_of_range_inputs_are_refused_before_proving() {
    let wide_cutoff = inputs(Circuit::DateLeCutoff, 20_000_101, 1 << 32, "req-3");
    let err = prove(Circuit::DateLeCutoff, &wide_cutoff, &mut OsRng).unwrap_err();
    assert!(
        matches!(
            err,
            ProveError::OutOfRange {
                input: "bound",
                bits: 32,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_proof_is_rejected_for_another_commitment_bound_nonce_or_circuit() {
    let (honest, proof) = honest_proof(Circuit::DateLeCutoff, 19_990_101, 20_080_514, "req-4");
    let public = honest.public_inputs();
    let other_subject = commitment(
        honest.attribute,
        honest.attribute_type,
        subject_binding(&[0x22; 32]),
        &honest.salt,
    );
    // Each case changes one thing the verifier rebuilds: an input, or the circuit whose key
    // checks the proof.
    let cases = [
        (
            "another subject's commitment",
            Circuit::DateLeCutoff,
            PublicInputs {
                commitment: other_subject,
                ..public
            },
        ),
        (
            "a wrong bound",
            Circuit::DateLeCutoff,
            PublicInputs {
                bound: public.bound - 1,
                ..public
            },
        ),
        (
            "an earlier request's nonce",
            Circuit::DateLeCutoff,
            PublicInputs {
                nonce: nonce_from_request_id(b"req-3"),
                ..public
            },
        ),
        ("another circuit's key", Circuit::IntGeThreshold, public),
    ];
    for (case, circuit, wrong) in cases {
        assert_eq!(
            verify(circuit, &wrong, &proof),
            Err(VerifyError::Rejected { circuit }),
            "{case}"
        );
    }
}

#[test]
fn garbled_proof_bytes_are_an_error_not_a_panic() {
    let (honest, proof) = honest_proof(Circuit::IntGeThreshold, 70_000, 60_000, "req-5");
    let public = honest.public_inputs();
    let bytes = proof.to_bytes();
    assert_eq!(Proof::from_bytes(&bytes).unwrap(), proof);

    for position in [0, 5, 31, 32, 47, 63, 64, 90, 127] {
        let mut garbled = bytes.clone();
        garbled[position] ^= 0x01;
        match Proof::from_bytes(&garbled) {
            Err(
                DecodeError::Invalid { what: "proof", .. }
                | DecodeError::NonCanonical { what: "proof" },
            ) => {}
            Ok(decoded) => assert!(
                matches!(
                    verify(Circuit::IntGeThreshold, &public, &decoded),
                    Err(VerifyError::Rejected { .. })
                ),
                "byte {position} flipped still verifies"
            ),
            Err(e) => panic!("byte {position}: unexpected error {e}"),
        }
    }
    assert!(matches!(
        Proof::from_bytes(&bytes[..100]),
        Err(DecodeError::Length { actual: 100, .. })
    ));
    assert!(matches!(
        Proof::from_bytes(&[0xff; PROOF_BYTES]),
        Err(DecodeError::Invalid { .. })
    ));
    assert!(Proof::from_bytes(&[]).is_err());
}

#[test]
fn a_proof_point_flagged_infinity_over_other_bits_is_refused() {
    // Found by fuzz/fuzz_targets/evidence_request.rs: B's last byte has the infinity flag set
    // and its other bits are not zero. arkworks decoded it as the identity, so these bytes
    // were a second encoding of the proof `to_bytes` writes with B's bits all zero.
    let bytes = include_bytes!("regressions/proof_b_flagged_infinity_over_other_bits.bin");
    assert!(matches!(
        Proof::from_bytes(bytes),
        Err(DecodeError::NonCanonical { what: "proof" })
    ));
}

#[test]
fn verifying_keys_round_trip_and_hash_to_what_decisions_name() {
    for circuit in Circuit::ALL {
        let vk = circuit.verifying_key().unwrap();
        let decoded = decode_verifying_key(circuit.verifying_key_bytes()).unwrap();
        assert_eq!(&decoded, vk);
        assert_eq!(Circuit::from_id(circuit.id()), Some(circuit));
        let mut trailing = circuit.verifying_key_bytes().to_vec();
        trailing.push(0);
        assert!(decode_verifying_key(&trailing).is_err());
    }
    assert_ne!(
        Circuit::DateLeCutoff.verifying_key_hash(),
        Circuit::IntGeThreshold.verifying_key_hash()
    );
    assert_eq!(Circuit::from_id("age_over"), None);
}

/// `n` valid items over both circuits: two real proofs re-randomized (every item's bytes differ).
fn valid_batch(n: usize) -> Vec<(Circuit, PublicInputs, Proof)> {
    let date = inputs(Circuit::DateLeCutoff, 19_800_229, 20_080_514, "req-6");
    let income = inputs(Circuit::IntGeThreshold, 120_000, 100_000, "req-7");
    let date_proof = prove(Circuit::DateLeCutoff, &date, &mut OsRng).unwrap();
    let income_proof = prove(Circuit::IntGeThreshold, &income, &mut OsRng).unwrap();
    (0..n)
        .map(|i| {
            let (circuit, witness, proof) = if i % 3 == 0 {
                (Circuit::IntGeThreshold, &income, &income_proof)
            } else {
                (Circuit::DateLeCutoff, &date, &date_proof)
            };
            let vk = circuit.verifying_key().unwrap();
            (
                circuit,
                witness.public_inputs(),
                proof.rerandomize(vk, &mut OsRng),
            )
        })
        .collect()
}

#[test]
fn a_batch_of_valid_proofs_passes() {
    let batch = valid_batch(16);
    let results = verify_batch(&batch, &mut OsRng);
    assert_eq!(results.len(), 16);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(verify_batch(&[], &mut OsRng).is_empty());
    assert_eq!(verify_batch(&batch[..1], &mut OsRng), vec![Ok(())]);
}

#[test]
fn a_batch_with_one_forged_proof_fails_and_the_fallback_points_at_it() {
    let mut batch = valid_batch(16);
    // Forged: a valid proof's C moved by the generator, still a point of the right group.
    let mut bytes = batch[11].2.to_bytes();
    shift_c(&mut bytes);
    batch[11].2 = Proof::from_bytes(&bytes).unwrap();
    let results = verify_batch(&batch, &mut OsRng);
    for (i, result) in results.iter().enumerate() {
        if i == 11 {
            assert!(
                matches!(result, Err(VerifyError::Rejected { .. })),
                "{i}: {result:?}"
            );
        } else {
            assert_eq!(result, &Ok(()), "{i}");
        }
    }

    // A replayed proof (right bytes, an earlier request's nonce) and a proof under the other
    // circuit's key, in one batch: exactly those two fail.
    let mut batch = valid_batch(16);
    batch[3].1.nonce = Fr::from(999u64);
    batch[8].0 = Circuit::IntGeThreshold;
    let failed: Vec<usize> = verify_batch(&batch, &mut OsRng)
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, vec![3, 8]);
}

/// Forges from bytes, as an attacker holding a valid proof would: moves C (the last 32 bytes,
/// a compressed G1 point) by the group generator, which keeps it a valid point.
fn shift_c(bytes: &mut [u8]) {
    use ark_bn254::G1Affine;
    use ark_ec::{AffineRepr, CurveGroup};
    use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
    let c = G1Affine::deserialize_compressed(&bytes[96..128]).unwrap();
    let moved = (c + G1Affine::generator()).into_affine();
    let mut out = Vec::new();
    moved.serialize_compressed(&mut out).unwrap();
    bytes[96..128].copy_from_slice(&out);
}
