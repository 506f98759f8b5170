//! snarkjs' JSON for verifying keys, proofs and public inputs, so that an independent Groth16
//! implementation (`snarkjs groth16 verify vk.json public.json proof.json`, or py_ecc) can check
//! a proof without this crate. Numbers are decimal strings; points are projective with z = 1
//! (the point at infinity is snarkjs' `[0, 1, 0]`); G2 coordinates are `[c0, c1]`.

use ark_bn254::{Bn254, Fq, Fq2, G1Affine, G2Affine};
use ark_ec::AffineRepr;
use ark_ff::PrimeField;
use ark_groth16::VerifyingKey;
use num_bigint::BigUint;
use serde_json::{json, Value};

use crate::{Proof, PublicInputs};

fn decimal<F: PrimeField>(x: F) -> String {
    let value: BigUint = x.into();
    value.to_string()
}

fn fq2(x: Fq2) -> Value {
    json!([decimal(x.c0), decimal(x.c1)])
}

fn g1(p: &G1Affine) -> Value {
    match p.xy() {
        Some((x, y)) => json!([decimal::<Fq>(x), decimal::<Fq>(y), "1"]),
        None => json!(["0", "1", "0"]),
    }
}

fn g2(p: &G2Affine) -> Value {
    match p.xy() {
        Some((x, y)) => json!([fq2(x), fq2(y), ["1", "0"]]),
        None => json!([["0", "0"], ["1", "0"], ["0", "0"]]),
    }
}

/// A verifying key as snarkjs' `verification_key.json`.
pub fn verifying_key_json(vk: &VerifyingKey<Bn254>) -> Value {
    json!({
        "protocol": "groth16",
        "curve": "bn128",
        "nPublic": vk.gamma_abc_g1.len().saturating_sub(1),
        "vk_alpha_1": g1(&vk.alpha_g1),
        "vk_beta_2": g2(&vk.beta_g2),
        "vk_gamma_2": g2(&vk.gamma_g2),
        "vk_delta_2": g2(&vk.delta_g2),
        "IC": vk.gamma_abc_g1.iter().map(g1).collect::<Vec<_>>(),
    })
}

/// A proof as snarkjs' `proof.json`.
pub fn proof_json(proof: &Proof) -> Value {
    json!({
        "pi_a": g1(&proof.0.a),
        "pi_b": g2(&proof.0.b),
        "pi_c": g1(&proof.0.c),
        "protocol": "groth16",
        "curve": "bn128",
    })
}

/// Public inputs as snarkjs' `public.json`: commitment, bound, nonce.
pub fn public_json(public_inputs: &PublicInputs) -> Value {
    Value::Array(
        public_inputs
            .to_field_elements()
            .into_iter()
            .map(|x| Value::String(decimal(x)))
            .collect(),
    )
}
