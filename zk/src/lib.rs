//! Zero-knowledge predicates over committed attributes.
//!
//! A provider commits to a subject's attribute (a birth date, an income) with
//! [`commitment`] — Poseidon over the attribute, its type, a subject binding and a salt of at
//! least 128 bits — and later proves a predicate over it ("born on or before this cutoff",
//! "at least this threshold") without revealing it. The broker checks the proof against the
//! commitment it already trusts, the public bound and the request's nonce.
//!
//! - The circuits are circom 2 ([`Circuit`]; source in `zk/circuits/`), compiled with the
//!   `circom2` npm package; their artifacts (R1CS, witness generator, keys) are compiled into
//!   this crate from `zk/artifacts/`, whose `manifest.json` pins their hashes.
//! - Proofs are Groth16 on BN254 (`ark-groth16`, with circom's QAP reduction so that a key from
//!   a snarkjs ceremony would fit). Witnesses come from circom's own witness `.wasm`, run by
//!   `ark-circom` under wasmer ([`Prover`]).
//! - [`verify`] checks one proof; [`verify_batch`] checks many with one random linear
//!   combination and, when that fails, bisects to the bad ones.
//! - [`snarkjs`] exports keys, proofs and public inputs in snarkjs' JSON, for independent
//!   verifiers.
//!
//! The keys in `zk/artifacts/` come from a seeded, single-party setup ([`ceremony`]): anyone
//! who knows the seed can forge proofs. They serve development and tests only; `zk/README.md`
//! says what production needs instead.
//!
//! **Privacy invariant:** nothing in this crate writes an attribute or a salt into an error,
//! a `Debug` string or a log line; [`WitnessInputs`] redacts them.

#![deny(missing_docs)]

mod batch;
pub mod ceremony;
mod circuit;
mod commitment;
mod error;
mod proof;
mod prover;
pub mod snarkjs;
mod verify;

pub use ark_bn254::Fr;
pub use batch::verify_batch;
pub use circuit::Circuit;
pub use commitment::{
    commitment, field_from_bytes, field_to_bytes, nonce_from_request_id, subject_binding,
    AttributeType, Salt,
};
pub use error::{ArtifactError, DecodeError, ProveError, VerifyError};
pub use proof::{decode_verifying_key, Proof, EIP197_PROOF_BYTES, PROOF_BYTES};
pub use prover::{prove, Prover, WitnessInputs};
pub use verify::{verify, PublicInputs};

/// The RNG traits this crate's randomized functions take (rand_core 0.6, as arkworks 0.6
/// uses), and `OsRng` for callers without one of their own.
pub mod rand {
    pub use rand_core::{CryptoRng, OsRng, RngCore};
}
