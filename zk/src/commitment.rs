//! The provider's commitment to one attribute of one subject, the same Poseidon as the
//! circuits' (`zk/circuits/commitment.circom`), computed outside them.

use ark_ff::{BigInteger, PrimeField};
use light_poseidon::{Poseidon, PoseidonHasher};
use sha2::{Digest, Sha256};

use crate::rand::{CryptoRng, RngCore};
use crate::{DecodeError, Fr};

/// What kind of attribute a commitment is to; committed alongside it, so a commitment to an
/// income cannot be opened as a birth date. The codes are the caller's registry; the crate
/// names only the one its date circuit is meant for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttributeType(pub u64);

impl AttributeType {
    /// A date of birth, as YYYYMMDD (the `date_le_cutoff` circuit).
    pub const BIRTH_DATE: AttributeType = AttributeType(1);

    /// The type of a named attribute (`birthdate`, `income`): the first 8 bytes of SHA-256
    /// over a domain tag and the name, so provider and verifier agree on it from the name
    /// alone and no registry of codes has to be kept in step.
    pub fn named(name: &str) -> AttributeType {
        let digest = Sha256::new()
            .chain_update(b"pavilion-zk/attribute-type/v1\0")
            .chain_update(name.as_bytes())
            .finalize();
        let mut code = [0u8; 8];
        code.copy_from_slice(&digest[..8]);
        AttributeType(u64::from_be_bytes(code))
    }
}

/// The commitment's salt: a field element of at least 128 random bits, which is what keeps a
/// commitment to a low-entropy attribute (there are only ~40,000 plausible birth dates) from
/// being opened by trying them all. Its `Debug` is redacted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Salt(Fr);

impl Salt {
    /// Fewest bytes accepted: 128 bits.
    pub const MIN_BYTES: usize = 16;

    /// A fresh salt of 248 random bits (31 bytes, always below the field's modulus).
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Salt {
        let mut bytes = [0u8; 31];
        rng.fill_bytes(&mut bytes);
        Salt(Fr::from_be_bytes_mod_order(&bytes))
    }

    /// A salt from 16 to 32 big-endian bytes. A value at or above the field's modulus is
    /// rejected rather than reduced, so the stored bytes and the committed salt are one thing.
    pub fn from_bytes(bytes: &[u8]) -> Result<Salt, DecodeError> {
        if bytes.len() < Self::MIN_BYTES {
            return Err(DecodeError::Salt("shorter than 16 bytes (128 bits)"));
        }
        if bytes.len() > 32 {
            return Err(DecodeError::Salt("longer than 32 bytes"));
        }
        let value = Fr::from_be_bytes_mod_order(bytes);
        let mut padded = [0u8; 32];
        padded[32 - bytes.len()..].copy_from_slice(bytes);
        if value.into_bigint().to_bytes_be() != padded {
            return Err(DecodeError::Salt(
                "not below the BN254 scalar field's modulus",
            ));
        }
        Ok(Salt(value))
    }

    /// The salt as 32 big-endian bytes, for storage beside the attribute.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.0.into_bigint().to_bytes_be());
        out
    }

    pub(crate) fn field(&self) -> Fr {
        self.0
    }
}

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt(<redacted>)")
    }
}

/// A field element as 32 big-endian bytes: how commitments and nonces travel.
pub fn field_to_bytes(value: Fr) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&value.into_bigint().to_bytes_be());
    out
}

/// A field element from exactly 32 big-endian bytes, refused unless below the modulus (so one
/// element has one encoding).
pub fn field_from_bytes(bytes: &[u8]) -> Result<Fr, DecodeError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| DecodeError::Field("not 32 bytes"))?;
    let value = Fr::from_be_bytes_mod_order(&array);
    if field_to_bytes(value) != array {
        return Err(DecodeError::Field(
            "not below the BN254 scalar field's modulus",
        ));
    }
    Ok(value)
}

/// A subject binding from 32 bytes (the provider's set key for the subject, say), reduced
/// modulo the scalar field. Two keys collide only if they differ by a multiple of the ~2^254
/// modulus, which is as hard as a hash collision.
pub fn subject_binding(bytes: &[u8; 32]) -> Fr {
    Fr::from_be_bytes_mod_order(bytes)
}

/// A proof request's nonce from its request id: SHA-256 under a domain tag, reduced modulo the
/// scalar field. The broker derives it itself, so a proof made for one request does not verify
/// for another.
pub fn nonce_from_request_id(request_id: &[u8]) -> Fr {
    let digest = Sha256::new()
        .chain_update(b"pavilion-zk/nonce/v1\0")
        .chain_update(request_id)
        .finalize();
    Fr::from_be_bytes_mod_order(&digest)
}

/// `Poseidon(attribute, attribute_type, subject_binding, salt)` with circomlib's parameters
/// for four inputs — the value the circuits constrain their public `commitment` to.
pub fn commitment(
    attribute: u64,
    attribute_type: AttributeType,
    subject_binding: Fr,
    salt: &Salt,
) -> Fr {
    // light-poseidon ships circomlib's constants for 1 to 12 inputs and fails only for an
    // input count outside them; both counts here are constants.
    let mut poseidon =
        Poseidon::<Fr>::new_circom(4).expect("circomlib's Poseidon has parameters for 4 inputs");
    poseidon
        .hash(&[
            Fr::from(attribute),
            Fr::from(attribute_type.0),
            subject_binding,
            salt.field(),
        ])
        .expect("4 inputs for a 4-input Poseidon")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn poseidon_matches_circomlib_reference_vector() {
        // circomlib's published test vector: poseidon([1, 2, 3, 4]).
        let mut poseidon = Poseidon::<Fr>::new_circom(4).unwrap();
        let hash = poseidon
            .hash(&[
                Fr::from(1u64),
                Fr::from(2u64),
                Fr::from(3u64),
                Fr::from(4u64),
            ])
            .unwrap();
        let expected = Fr::from_str(
            "18821383157269793795438455681495246036402687001665670618754263018637548127333",
        )
        .unwrap();
        assert_eq!(hash, expected);
    }

    #[test]
    fn salt_round_trips_and_rejects_short_long_and_unreduced() {
        let salt = Salt::random(&mut rand_core::OsRng);
        assert_eq!(Salt::from_bytes(&salt.to_bytes()).unwrap(), salt);
        assert_eq!(format!("{salt:?}"), "Salt(<redacted>)");

        assert!(Salt::from_bytes(&[7u8; 16]).is_ok());
        assert!(matches!(
            Salt::from_bytes(&[7u8; 15]),
            Err(DecodeError::Salt(_))
        ));
        assert!(matches!(
            Salt::from_bytes(&[7u8; 33]),
            Err(DecodeError::Salt(_))
        ));
        assert!(matches!(
            Salt::from_bytes(&[0xff; 32]),
            Err(DecodeError::Salt(_))
        ));
    }

    #[test]
    fn nonce_depends_on_the_request_id() {
        assert_ne!(
            nonce_from_request_id(b"req-1"),
            nonce_from_request_id(b"req-2")
        );
        assert_eq!(
            nonce_from_request_id(b"req-1"),
            nonce_from_request_id(b"req-1")
        );
    }
}
