//! Batch verification: one random linear combination of the pending proofs' equations.
//!
//! Each proof i of a circuit with key (α, β, γ, δ, IC) must satisfy
//! `e(Aᵢ, Bᵢ) = e(α, β) · e(Lᵢ, γ) · e(Cᵢ, δ)` with `Lᵢ = IC₀ + Σⱼ xᵢⱼ·ICⱼ`. With random
//! 128-bit weights rᵢ, the batch checks the single equation
//!
//! `Πᵢ e(rᵢ·Aᵢ, Bᵢ) · Π_circuits e(−(Σrᵢ)·α, β) · e(Σrᵢ·Lᵢ, −γ) · e(Σrᵢ·Cᵢ, −δ) = 1`
//!
//! in one multi-Miller loop and one final exponentiation: n + 3 pairings' Miller loops per
//! circuit in the batch instead of 3n plus n final exponentiations. A batch holding a bad proof
//! passes with probability at most 2⁻¹²⁷ (the weights are secret and fresh per call). No
//! maintained crate on crates.io batch-verifies arkworks Groth16 proofs (bellman/bellperson's
//! `verify_proofs_batch` is for their own curves and types), so this composes arkworks' own
//! MSM and pairing operations; it implements no curve arithmetic.
//!
//! When the combination fails, the batch is split in halves, each checked the same way, down
//! to single proofs checked by [`crate::verify`]: one bad proof among n costs about 2·log₂ n
//! extra batch checks, and each proof gets its own result.

use ark_bn254::{Bn254, Fr, G1Affine, G1Projective};
use ark_ec::pairing::Pairing;
use ark_ec::{AffineRepr, CurveGroup, VariableBaseMSM};
use ark_ff::{One, Zero};

use crate::rand::{CryptoRng, RngCore};
use crate::{verify, Circuit, Proof, PublicInputs, VerifyError};

/// Verifies every `(circuit, public inputs, proof)` and returns one result per item, in order.
/// Proofs are checked together (see the module docs); when the batch fails, the bad ones are
/// found by bisection, so a result of `Err` always names a proof that fails on its own.
pub fn verify_batch<R: RngCore + CryptoRng>(
    items: &[(Circuit, PublicInputs, Proof)],
    rng: &mut R,
) -> Vec<Result<(), VerifyError>> {
    let mut results: Vec<Result<(), VerifyError>> = vec![Ok(()); items.len()];
    let mut pending = Vec::with_capacity(items.len());
    for (i, (circuit, _, _)) in items.iter().enumerate() {
        match circuit.keys() {
            Ok(_) => pending.push(i),
            Err(e) => results[i] = Err(e.into()),
        }
    }
    settle(items, &pending, rng, &mut results);
    results
}

fn settle<R: RngCore + CryptoRng>(
    items: &[(Circuit, PublicInputs, Proof)],
    indices: &[usize],
    rng: &mut R,
    results: &mut [Result<(), VerifyError>],
) {
    match indices {
        [] => {}
        [i] => {
            let (circuit, public_inputs, proof) = &items[*i];
            results[*i] = verify(*circuit, public_inputs, proof);
        }
        _ => {
            if !combination_holds(items, indices, rng) {
                let (left, right) = indices.split_at(indices.len() / 2);
                settle(items, left, rng, results);
                settle(items, right, rng, results);
            }
        }
    }
}

/// A nonzero 128-bit weight, as the two limbs `mul_bigint` takes and as a field element.
fn weight<R: RngCore>(rng: &mut R) -> ([u64; 2], Fr) {
    loop {
        let limbs = [rng.next_u64(), rng.next_u64()];
        if limbs != [0, 0] {
            let value = (u128::from(limbs[1]) << 64) | u128::from(limbs[0]);
            return (limbs, Fr::from(value));
        }
    }
}

/// Whether the random linear combination of the equations of `indices` holds. Every index's
/// circuit has loaded keys (checked by the caller).
fn combination_holds<R: RngCore + CryptoRng>(
    items: &[(Circuit, PublicInputs, Proof)],
    indices: &[usize],
    rng: &mut R,
) -> bool {
    let mut g1: Vec<G1Projective> = Vec::with_capacity(indices.len() + 6);
    let mut g2: Vec<<Bn254 as Pairing>::G2Prepared> = Vec::with_capacity(indices.len() + 6);

    for circuit in Circuit::ALL {
        let Ok(keys) = circuit.keys() else {
            continue;
        };
        let mut ic_scalars = [Fr::zero(); 4];
        let mut c_points: Vec<G1Affine> = Vec::new();
        let mut c_scalars: Vec<Fr> = Vec::new();
        for &i in indices {
            let (item_circuit, public_inputs, proof) = &items[i];
            if *item_circuit != circuit {
                continue;
            }
            let (limbs, r) = weight(rng);
            ic_scalars[0] += r;
            for (scalar, x) in ic_scalars[1..]
                .iter_mut()
                .zip(public_inputs.to_field_elements())
            {
                *scalar += r * x;
            }
            c_points.push(proof.0.c);
            c_scalars.push(r);
            g1.push(proof.0.a.mul_bigint(limbs));
            g2.push(proof.0.b.into());
        }
        if c_points.is_empty() {
            continue;
        }
        let vk = &keys.prepared.vk;
        let sum_r = ic_scalars[0];
        g1.push(vk.alpha_g1 * (-sum_r));
        g2.push(keys.beta_g2.clone());
        g1.push(G1Projective::msm_unchecked(&vk.gamma_abc_g1, &ic_scalars));
        g2.push(keys.prepared.gamma_g2_neg_pc.clone());
        g1.push(G1Projective::msm_unchecked(&c_points, &c_scalars));
        g2.push(keys.prepared.delta_g2_neg_pc.clone());
    }

    let g1 = G1Projective::normalize_batch(&g1);
    let miller = Bn254::multi_miller_loop(g1, g2);
    Bn254::final_exponentiation(miller).is_some_and(|out| out.0.is_one())
}
