//! Byte encodings: compressed arkworks serialization of proofs and verifying keys, and proofs
//! in EIP-197's uncompressed layout for verifiers outside this crate.

use ark_bn254::{Bn254, Fq, Fq2, G1Affine, G2Affine};
use ark_ec::short_weierstrass::{Affine, SWCurveConfig};
use ark_ec::AffineRepr;
use ark_ff::{AdditiveGroup, BigInteger, PrimeField};
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
        let proof = ark_groth16::Proof::deserialize_compressed(bytes)
            .map(Proof)
            .map_err(|source| DecodeError::Invalid {
                what: "proof",
                source,
            })?;
        // arkworks reads a point flagged as infinity as the identity whatever its other bits:
        // many encodings of one proof. Only the one `to_bytes` writes is accepted.
        if proof.to_bytes() != bytes {
            return Err(DecodeError::NonCanonical { what: "proof" });
        }
        Ok(proof)
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

/// Length of a proof in EIP-197's uncompressed layout ([`Proof::to_eip197`]): A and C as G1
/// points (64 bytes each), B as a G2 point (128).
pub const EIP197_PROOF_BYTES: usize = 256;

/// Length of one base-field coordinate in EIP-197's layout (big-endian).
const COORDINATE_BYTES: usize = 32;

impl Proof {
    /// The proof as [`EIP197_PROOF_BYTES`] bytes in the layout of Ethereum's BN254 pairing
    /// precompile (EIP-197), which on-chain and other independent verifiers take as it is:
    /// A (G1: x, y), B (G2: x.c1, x.c0, y.c1, y.c0 — the imaginary part first), C (G1), every
    /// coordinate 32 bytes big-endian. The point at infinity is all zeros, as in EIP-197.
    pub fn to_eip197(&self) -> [u8; EIP197_PROOF_BYTES] {
        let mut out = [0u8; EIP197_PROOF_BYTES];
        let (a, rest) = out.split_at_mut(2 * COORDINATE_BYTES);
        let (b, c) = rest.split_at_mut(4 * COORDINATE_BYTES);
        write_g1(&self.0.a, a);
        write_g2(&self.0.b, b);
        write_g1(&self.0.c, c);
        out
    }

    /// A proof from EIP-197's layout (see [`Proof::to_eip197`]); rejects a wrong length, a
    /// coordinate not below the base field's modulus (so one proof has one encoding), and a
    /// point off the curve or outside the prime-order subgroup, naming the point.
    pub fn from_eip197(bytes: &[u8]) -> Result<Proof, DecodeError> {
        if bytes.len() != EIP197_PROOF_BYTES {
            return Err(DecodeError::Length {
                what: "EIP-197 proof",
                expected: EIP197_PROOF_BYTES,
                actual: bytes.len(),
            });
        }
        let (a, rest) = bytes.split_at(2 * COORDINATE_BYTES);
        let (b, c) = rest.split_at(4 * COORDINATE_BYTES);
        Ok(Proof(ark_groth16::Proof {
            a: read_g1(a, "A")?,
            b: read_g2(b, "B")?,
            c: read_g1(c, "C")?,
        }))
    }
}

/// Writes `value` as 32 big-endian bytes into `out`.
fn write_fq(value: Fq, out: &mut [u8]) {
    out.copy_from_slice(&value.into_bigint().to_bytes_be());
}

/// A coordinate from 32 big-endian bytes, or `None` unless it is below the modulus.
fn read_fq(bytes: &[u8]) -> Option<Fq> {
    let value = Fq::from_be_bytes_mod_order(bytes);
    // Reduction would silently map x and x + p to one point; re-encoding catches it.
    (value.into_bigint().to_bytes_be() == bytes).then_some(value)
}

fn write_g1(point: &G1Affine, out: &mut [u8]) {
    // The point at infinity stays all zeros.
    if let Some((x, y)) = point.xy() {
        let (x_out, y_out) = out.split_at_mut(COORDINATE_BYTES);
        write_fq(x, x_out);
        write_fq(y, y_out);
    }
}

fn write_g2(point: &G2Affine, out: &mut [u8]) {
    if let Some((x, y)) = point.xy() {
        for (value, chunk) in [x.c1, x.c0, y.c1, y.c0]
            .into_iter()
            .zip(out.chunks_exact_mut(COORDINATE_BYTES))
        {
            write_fq(value, chunk);
        }
    }
}

fn read_g1(bytes: &[u8], point: &'static str) -> Result<G1Affine, DecodeError> {
    if bytes.iter().all(|&b| b == 0) {
        // (0, 0) is not on y² = x³ + 3, so EIP-197 uses it for the point at infinity.
        return Ok(G1Affine::identity());
    }
    let (x, y) = bytes.split_at(COORDINATE_BYTES);
    let (Some(x), Some(y)) = (read_fq(x), read_fq(y)) else {
        return Err(DecodeError::CoordinateOutOfRange { point });
    };
    check_point(G1Affine::new_unchecked(x, y), point)
}

fn read_g2(bytes: &[u8], point: &'static str) -> Result<G2Affine, DecodeError> {
    if bytes.iter().all(|&b| b == 0) {
        return Ok(G2Affine::identity());
    }
    let mut coordinates = [Fq::ZERO; 4];
    for (value, chunk) in coordinates
        .iter_mut()
        .zip(bytes.chunks_exact(COORDINATE_BYTES))
    {
        *value = read_fq(chunk).ok_or(DecodeError::CoordinateOutOfRange { point })?;
    }
    let [x_c1, x_c0, y_c1, y_c0] = coordinates;
    check_point(
        G2Affine::new_unchecked(Fq2::new(x_c0, x_c1), Fq2::new(y_c0, y_c1)),
        point,
    )
}

/// `candidate` if it is on the curve and in the prime-order subgroup. G1 of BN254 has
/// cofactor 1, so only G2 can fail the second check, but both are asked for uniformity.
fn check_point<P: SWCurveConfig>(
    candidate: Affine<P>,
    point: &'static str,
) -> Result<Affine<P>, DecodeError> {
    if !candidate.is_on_curve() {
        return Err(DecodeError::NotOnCurve { point });
    }
    if !candidate.is_in_correct_subgroup_assuming_on_curve() {
        return Err(DecodeError::NotInSubgroup { point });
    }
    Ok(candidate)
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

#[cfg(test)]
mod tests {
    use ark_ec::CurveGroup;
    use num_bigint::BigUint;

    use super::*;
    use crate::rand::OsRng;
    use crate::{
        nonce_from_request_id, prove, snarkjs, subject_binding, verify, AttributeType, Circuit,
        PublicInputs, Salt, VerifyError, WitnessInputs,
    };

    fn real_proof() -> (PublicInputs, Proof) {
        let inputs = WitnessInputs {
            attribute: 19_900_101,
            attribute_type: AttributeType::BIRTH_DATE,
            subject_binding: subject_binding(&[0x33; 32]),
            salt: Salt::from_bytes(&[0x5a; 31]).unwrap(),
            bound: 20_080_514,
            nonce: nonce_from_request_id(b"eip197"),
        };
        let proof = prove(Circuit::DateLeCutoff, &inputs, &mut OsRng).unwrap();
        (inputs.public_inputs(), proof)
    }

    /// The 32-byte big-endian coordinate at `index` of an EIP-197 encoding, in decimal.
    fn coordinate(bytes: &[u8], index: usize) -> String {
        BigUint::from_bytes_be(&bytes[index * 32..(index + 1) * 32]).to_string()
    }

    #[test]
    fn eip197_round_trips_and_matches_the_snarkjs_export() {
        let (public, proof) = real_proof();
        let bytes = proof.to_eip197();
        assert_eq!(Proof::from_eip197(&bytes).unwrap(), proof);
        verify(
            Circuit::DateLeCutoff,
            &public,
            &Proof::from_eip197(&bytes).unwrap(),
        )
        .unwrap();

        let json = snarkjs::proof_json(&proof);
        let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
        // A: x, y.
        assert_eq!(coordinate(&bytes, 0), text(&json["pi_a"][0]));
        assert_eq!(coordinate(&bytes, 1), text(&json["pi_a"][1]));
        // B: EIP-197 puts the imaginary part first; snarkjs writes [c0, c1].
        assert_eq!(coordinate(&bytes, 2), text(&json["pi_b"][0][1]));
        assert_eq!(coordinate(&bytes, 3), text(&json["pi_b"][0][0]));
        assert_eq!(coordinate(&bytes, 4), text(&json["pi_b"][1][1]));
        assert_eq!(coordinate(&bytes, 5), text(&json["pi_b"][1][0]));
        // C: x, y.
        assert_eq!(coordinate(&bytes, 6), text(&json["pi_c"][0]));
        assert_eq!(coordinate(&bytes, 7), text(&json["pi_c"][1]));
    }

    #[test]
    fn a_flipped_eip197_byte_is_refused_or_does_not_verify() {
        let (public, proof) = real_proof();
        let bytes = proof.to_eip197();
        for position in (0..EIP197_PROOF_BYTES).step_by(7).chain([255]) {
            let mut garbled = bytes;
            garbled[position] ^= 0x01;
            match Proof::from_eip197(&garbled) {
                Err(DecodeError::NotOnCurve { point })
                | Err(DecodeError::NotInSubgroup { point })
                | Err(DecodeError::CoordinateOutOfRange { point }) => {
                    let expected = match position / 64 {
                        0 => "A",
                        1 | 2 => "B",
                        _ => "C",
                    };
                    assert_eq!(point, expected, "byte {position}");
                }
                Ok(decoded) => assert!(
                    matches!(
                        verify(Circuit::DateLeCutoff, &public, &decoded),
                        Err(VerifyError::Rejected { .. })
                    ),
                    "byte {position} flipped still verifies"
                ),
                Err(e) => panic!("byte {position}: unexpected error {e}"),
            }
        }
    }

    #[test]
    fn eip197_refuses_wrong_lengths_unreduced_coordinates_and_points_outside_the_groups() {
        let (_, proof) = real_proof();
        let bytes = proof.to_eip197();
        assert!(matches!(
            Proof::from_eip197(&bytes[..255]),
            Err(DecodeError::Length {
                expected: EIP197_PROOF_BYTES,
                actual: 255,
                ..
            })
        ));
        assert!(matches!(
            Proof::from_eip197(&[bytes.as_slice(), &[0]].concat()),
            Err(DecodeError::Length { actual: 257, .. })
        ));

        // C's x plus the modulus: the same point after reduction, so it must be refused.
        let mut unreduced = bytes;
        let x = BigUint::from_bytes_be(&bytes[192..224]) + BigUint::from(Fq::MODULUS);
        // The modulus is below 2^254, so x + p still fits in 32 bytes.
        unreduced[192..224].copy_from_slice(&x.to_bytes_be());
        assert!(matches!(
            Proof::from_eip197(&unreduced),
            Err(DecodeError::CoordinateOutOfRange { point: "C" })
        ));
        let mut all_ones = bytes;
        all_ones[64..96].fill(0xff);
        assert!(matches!(
            Proof::from_eip197(&all_ones),
            Err(DecodeError::CoordinateOutOfRange { point: "B" })
        ));

        // A point of the G2 curve outside the prime-order subgroup: the curve's points are
        // found by trying x until x³ + b is a square; a random one is outside the subgroup
        // (the cofactor is large) with overwhelming probability.
        let mut x = Fq2::from(1u64);
        let off_subgroup = loop {
            if let Some(point) = G2Affine::get_point_from_x_unchecked(x, false) {
                if !point.is_in_correct_subgroup_assuming_on_curve() {
                    break point;
                }
            }
            x += Fq2::from(1u64);
        };
        let mut outside = bytes;
        write_g2(&off_subgroup, &mut outside[64..192]);
        assert!(matches!(
            Proof::from_eip197(&outside),
            Err(DecodeError::NotInSubgroup { point: "B" })
        ));

        // A with y + 1 is off the curve.
        let mut off_curve = bytes;
        let a = proof.0.a;
        let moved = G1Affine::new_unchecked(a.x, a.y + Fq::from(1u64));
        write_g1(&moved, &mut off_curve[..64]);
        assert!(matches!(
            Proof::from_eip197(&off_curve),
            Err(DecodeError::NotOnCurve { point: "A" })
        ));

        // The point at infinity is all zeros, both ways.
        let mut infinity = proof.clone();
        infinity.0.c = (proof.0.c + (-proof.0.c)).into_affine();
        let encoded = infinity.to_eip197();
        assert!(encoded[192..].iter().all(|&b| b == 0));
        assert_eq!(Proof::from_eip197(&encoded).unwrap(), infinity);
    }

    #[test]
    fn public_inputs_round_trip_through_decimal_strings_and_refuse_non_canonical_ones() {
        let (public, _) = real_proof();
        let strings = public.to_decimal_strings();
        assert_eq!(strings[1], "20080514");
        assert_eq!(
            PublicInputs::from_decimal_strings(&strings).unwrap(),
            public
        );
        // The same strings snarkjs' public.json carries.
        let json = snarkjs::public_json(&public);
        for (i, s) in strings.iter().enumerate() {
            assert_eq!(json[i].as_str().unwrap(), s);
        }

        let modulus = BigUint::from(crate::Fr::MODULUS).to_string();
        let cases: [(&[&str], &str); 8] = [
            (&["1", "2"], "count"),
            (&["1", "2", "3", "4"], "count"),
            (&["", "2", "3"], "commitment"),
            (&["1", "+2", "3"], "bound"),
            (&["1", "02", "3"], "bound"),
            (&["1", "18446744073709551616", "3"], "bound"),
            (&["1", "2", " 3"], "nonce"),
            (&["1", "2", &modulus], "nonce"),
        ];
        for (strings, expected) in cases {
            match PublicInputs::from_decimal_strings(strings) {
                Err(DecodeError::PublicInputCount { actual }) => {
                    assert_eq!((expected, actual), ("count", strings.len()))
                }
                Err(DecodeError::PublicInput { input, .. }) => {
                    assert_eq!(input, expected, "{strings:?}")
                }
                other => panic!("{strings:?}: {other:?}"),
            }
        }
        let max = PublicInputs::from_decimal_strings(&["0", "18446744073709551615", "0"]).unwrap();
        assert_eq!(max.bound, u64::MAX);
    }
}
