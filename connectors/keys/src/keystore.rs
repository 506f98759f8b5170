//! A secret at rest (a provider's keys, the broker's signing keys): sealed with
//! XChaCha20-Poly1305 under a key derived from the operator's passphrase with Argon2id
//! (RFC 9106 defaults of the `argon2` crate). The file
//! is `PVK1` ‖ 16-byte salt ‖ 24-byte nonce ‖ ciphertext with tag; the magic is also the
//! associated data, so a file of another format or version cannot be opened as this one.

use argon2::Argon2;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};

const MAGIC: &[u8; 4] = b"PVK1";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = MAGIC.len() + SALT_LEN + NONCE_LEN;

/// Why a sealed key cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// The bytes are not a sealed provider key.
    #[error("not a sealed Pavilion provider key (expected the PVK1 format)")]
    NotAKeyFile,
    /// Authentication failed: wrong passphrase, or the file was altered.
    #[error("wrong passphrase, or the key file was altered")]
    Rejected,
    /// The passphrase is empty.
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,
}

fn key_encryption_key(passphrase: &[u8], salt: &[u8]) -> Result<XChaCha20Poly1305, KeystoreError> {
    if passphrase.is_empty() {
        return Err(KeystoreError::EmptyPassphrase);
    }
    let mut kek = [0u8; 32];
    Argon2::default()
        .hash_password_into(passphrase, salt, &mut kek)
        .map_err(|_| KeystoreError::Rejected)?;
    Ok(XChaCha20Poly1305::new(&kek.into()))
}

/// Seals `secret` under `passphrase`.
pub fn seal(secret: &[u8], passphrase: &[u8]) -> Result<Vec<u8>, KeystoreError> {
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut nonce);
    let cipher = key_encryption_key(passphrase, &salt)?;
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: MAGIC,
            },
        )
        .map_err(|_| KeystoreError::Rejected)?;
    Ok([MAGIC.as_slice(), &salt, &nonce, &sealed].concat())
}

/// Opens what [`seal`] made.
pub fn open(sealed: &[u8], passphrase: &[u8]) -> Result<Vec<u8>, KeystoreError> {
    if sealed.len() < HEADER_LEN || &sealed[..MAGIC.len()] != MAGIC {
        return Err(KeystoreError::NotAKeyFile);
    }
    let (salt, rest) = sealed[MAGIC.len()..].split_at(SALT_LEN);
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    key_encryption_key(passphrase, salt)?
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: MAGIC,
            },
        )
        .map_err(|_| KeystoreError::Rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_passphrase_and_unaltered() {
        let mut secret = [0u8; 64];
        OsRng.fill_bytes(&mut secret);
        let sealed = seal(&secret, b"correct horse").unwrap();
        assert!(
            !sealed.windows(32).any(|w| w == &secret[..32]),
            "the secret is not in the file"
        );
        assert_eq!(open(&sealed, b"correct horse").unwrap(), secret);

        assert_eq!(
            open(&sealed, b"battery staple"),
            Err(KeystoreError::Rejected)
        );
        for index in [0, 5, HEADER_LEN - 1, HEADER_LEN, sealed.len() - 1] {
            let mut altered = sealed.clone();
            altered[index] ^= 1;
            assert!(
                open(&altered, b"correct horse").is_err(),
                "flipped byte {index} must be refused"
            );
        }
        assert_eq!(open(b"PVK1", b"x"), Err(KeystoreError::NotAKeyFile));
        assert_eq!(seal(b"s", b""), Err(KeystoreError::EmptyPassphrase));
        assert_ne!(
            seal(b"s", b"p").unwrap(),
            seal(b"s", b"p").unwrap(),
            "fresh salt and nonce each time"
        );
    }
}
