//! A provider's secrets in one sealed file (see [`crate::keystore`]): its OPRF key, the
//! Ed25519 key it signs attestations with and the BBS key it signs members' attributes with.
//! None ever goes to a topic; the registry holds only their public halves.

use ed25519_dalek::SigningKey;
use pavilion_credentials::bbs;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::keystore::{self, KeystoreError};
use crate::oprf::{OprfError, ProviderKey};

/// Why a secrets file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// Sealing or opening failed.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// The opened payload is not a secrets record.
    #[error("the key file opened but holds no provider secrets: {0}")]
    Payload(String),
    /// The OPRF key inside is malformed.
    #[error(transparent)]
    Oprf(#[from] OprfError),
    /// The BBS key could not be made or read.
    #[error(transparent)]
    Bbs(#[from] bbs::BbsError),
}

/// What the sealed file holds (hex inside JSON, so a future field is an easy addition).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    provider_id: String,
    oprf_key: String,
    attestation_key_id: String,
    attestation_seed: String,
    /// Absent in key files made before attributes were signed.
    #[serde(default)]
    bbs_key: Option<String>,
}

/// A provider's secret keys.
pub struct ProviderSecrets {
    /// Whose.
    pub provider_id: String,
    /// RFC 9497 key.
    pub oprf: ProviderKey,
    /// Id under which the attestation key is published.
    pub attestation_key_id: String,
    /// Ed25519 attestation key.
    pub attestation: SigningKey,
    /// BBS key over members' attributes (BLS12-381-SHA-256); `None` in key files made
    /// before it existed, whose providers cannot disclose attributes.
    pub bbs: Option<bbs::SigningKey>,
}

/// Id under which the BBS key is published in the provider's registry record (its algorithm
/// is `bbs::KEY_ALGORITHM`).
pub const BBS_KEY_ID: &str = "b1";

impl ProviderSecrets {
    /// Fresh keys.
    pub fn generate(provider_id: &str) -> Result<Self, SecretsError> {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        Ok(ProviderSecrets {
            provider_id: provider_id.to_owned(),
            oprf: ProviderKey::generate(),
            attestation_key_id: "a1".into(),
            attestation: SigningKey::from_bytes(&seed),
            bbs: Some(bbs::SigningKey::generate()?),
        })
    }

    /// The sealed file's bytes.
    pub fn seal(&self, passphrase: &[u8]) -> Result<Vec<u8>, SecretsError> {
        let payload = Payload {
            provider_id: self.provider_id.clone(),
            oprf_key: hex::encode(self.oprf.to_bytes()),
            attestation_key_id: self.attestation_key_id.clone(),
            attestation_seed: hex::encode(self.attestation.to_bytes()),
            bbs_key: self.bbs.as_ref().map(|k| hex::encode(k.secret_bytes())),
        };
        let json = serde_json::to_vec(&payload).expect("serializable");
        Ok(keystore::seal(&json, passphrase)?)
    }

    /// Opens a sealed file.
    pub fn open(sealed: &[u8], passphrase: &[u8]) -> Result<Self, SecretsError> {
        let json = keystore::open(sealed, passphrase)?;
        let payload: Payload =
            serde_json::from_slice(&json).map_err(|e| SecretsError::Payload(e.to_string()))?;
        let bad = |what: &str| SecretsError::Payload(format!("{what} is not well-formed"));
        let oprf = hex::decode(&payload.oprf_key).map_err(|_| bad("oprf_key"))?;
        let seed: [u8; 32] = hex::decode(&payload.attestation_seed)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("attestation_seed"))?;
        let bbs = match &payload.bbs_key {
            Some(k) => Some(bbs::SigningKey::from_secret_bytes(
                &hex::decode(k).map_err(|_| bad("bbs_key"))?,
            )?),
            None => None,
        };
        Ok(ProviderSecrets {
            provider_id: payload.provider_id,
            oprf: ProviderKey::from_bytes(&oprf)?,
            attestation_key_id: payload.attestation_key_id,
            attestation: SigningKey::from_bytes(&seed),
            bbs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_survive_sealing_and_refuse_a_wrong_passphrase() {
        let secrets = ProviderSecrets::generate("bank-a").unwrap();
        let sealed = secrets.seal(b"correct horse").unwrap();
        let hex_key = hex::encode(secrets.oprf.to_bytes());
        assert!(
            !sealed
                .windows(16)
                .any(|w| hex_key.as_bytes().starts_with(w)),
            "the OPRF key is not stored in the clear"
        );
        let opened = ProviderSecrets::open(&sealed, b"correct horse").unwrap();
        assert_eq!(opened.provider_id, "bank-a");
        assert_eq!(opened.oprf.public_key(), secrets.oprf.public_key());
        assert_eq!(
            opened.attestation.verifying_key(),
            secrets.attestation.verifying_key()
        );
        assert_eq!(
            opened.bbs.as_ref().unwrap().public_key(),
            secrets.bbs.as_ref().unwrap().public_key()
        );
        assert!(matches!(
            ProviderSecrets::open(&sealed, b"wrong"),
            Err(SecretsError::Keystore(KeystoreError::Rejected))
        ));
    }
}
