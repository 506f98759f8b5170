//! Key material at rest.
//!
//! - [`keystore`]: a secret sealed under an operator passphrase (Argon2id →
//!   XChaCha20-Poly1305).
//! - [`KeyRing`]: the broker's Ed25519 decision-signing keys in a directory: `ring.json`
//!   lists every key (id, public key, created, retired) and `<kid>.key` holds each sealed
//!   seed. The newest key that is not retired signs; every key, retired or not, stays in the
//!   JWKS so decisions signed before a rotation still verify.
#![deny(missing_docs)]

pub mod hsm;
pub mod keystore;
pub mod subjects;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What can go wrong with a key ring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// Reading or writing the directory.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `ring.json` is not a key ring.
    #[error("{0}: not a key ring: {1}")]
    Format(PathBuf, String),
    /// A sealed key does not open.
    #[error("key {kid}: {source}")]
    Sealed {
        /// Key id.
        kid: String,
        /// Cause.
        #[source]
        source: keystore::KeystoreError,
    },
    /// No key may sign.
    #[error("the key ring has no active key (run `pavilion keys generate`)")]
    NoActiveKey,
    /// The key is unknown or retired.
    #[error("key `{0}` is not an active key of this ring")]
    NotActive(String),
}

/// One key as listed in `ring.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    /// Key id (JWKS `kid`).
    pub kid: String,
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Retired (no longer signs), ms; `None` while active.
    pub retired_at: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ring {
    keys: Vec<KeyInfo>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyRingError + '_ {
    move |source| KeyRingError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A key with its opened secret.
type LoadedKey = (KeyInfo, SigningKey);

/// A key ring directory; signing keys are opened with the passphrase and reloaded when
/// `ring.json` changes (a rotation by another process is picked up).
pub struct KeyRing {
    dir: PathBuf,
    passphrase: Vec<u8>,
    loaded: Mutex<Option<(SystemTime, Vec<LoadedKey>)>>,
    /// The opened pseudonym secret: opening costs an Argon2id derivation, far too much to
    /// repeat per decision.
    pseudonym_secret: Mutex<Option<Vec<u8>>>,
}

impl KeyRing {
    /// A ring at `dir` (created by [`KeyRing::generate`]).
    pub fn new(dir: &Path, passphrase: &[u8]) -> Self {
        KeyRing {
            dir: dir.to_owned(),
            passphrase: passphrase.to_vec(),
            loaded: Mutex::new(None),
            pseudonym_secret: Mutex::new(None),
        }
    }

    fn ring_path(&self) -> PathBuf {
        self.dir.join("ring.json")
    }

    fn read_ring(&self) -> Result<Ring, KeyRingError> {
        let path = self.ring_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| KeyRingError::Format(path, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ring::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Writes `ring.json` atomically (temporary file, then rename).
    fn write_ring(&self, ring: &Ring) -> Result<(), KeyRingError> {
        let path = self.ring_path();
        let tmp = self.dir.join("ring.json.tmp");
        let text = serde_json::to_string_pretty(ring).expect("serializable") + "\n";
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Every key, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyRingError> {
        Ok(self.read_ring()?.keys)
    }

    /// HMAC-SHA256 of `message` under the ring's pseudonym secret (`pseudonym.key`, sealed,
    /// made with the ring's first key).
    pub fn keyed_hash(&self, message: &[u8]) -> Result<Vec<u8>, KeyRingError> {
        use hmac::Mac as _;
        let path = self.dir.join("pseudonym.key");
        let mut cached = self
            .pseudonym_secret
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cached.is_none() {
            let sealed = std::fs::read(&path).map_err(io(&path))?;
            let secret = keystore::open(&sealed, &self.passphrase).map_err(|source| {
                KeyRingError::Sealed {
                    kid: "pseudonym".into(),
                    source,
                }
            })?;
            *cached = Some(secret);
        }
        let secret = cached.as_deref().expect("opened above");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret)
            .map_err(|_| KeyRingError::Format(path, "not an HMAC key".into()))?;
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    /// Creates a new key; it becomes the signing key (earlier ones keep verifying).
    pub fn generate(&self) -> Result<KeyInfo, KeyRingError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let pseudonym = self.dir.join("pseudonym.key");
        if !pseudonym.exists() {
            let mut secret = [0u8; 32];
            OsRng.fill_bytes(&mut secret);
            let sealed = keystore::seal(&secret, &self.passphrase).map_err(|source| {
                KeyRingError::Sealed {
                    kid: "pseudonym".into(),
                    source,
                }
            })?;
            write_private(&pseudonym, &sealed)?;
        }
        let mut ring = self.read_ring()?;
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let mut suffix = [0u8; 4];
        OsRng.fill_bytes(&mut suffix);
        let created_at = now_ms();
        let kid = format!("k{created_at}-{}", hex::encode(suffix));
        let sealed =
            keystore::seal(&seed, &self.passphrase).map_err(|source| KeyRingError::Sealed {
                kid: kid.clone(),
                source,
            })?;
        let key_path = self.dir.join(format!("{kid}.key"));
        write_private(&key_path, &sealed)?;
        let info = KeyInfo {
            public_key: hex::encode(SigningKey::from_bytes(&seed).verifying_key().to_bytes()),
            kid,
            created_at,
            retired_at: None,
        };
        ring.keys.push(info.clone());
        self.write_ring(&ring)?;
        Ok(info)
    }

    /// Stops `kid` from signing; it stays published for verification.
    pub fn retire(&self, kid: &str) -> Result<KeyInfo, KeyRingError> {
        let mut ring = self.read_ring()?;
        let key = ring
            .keys
            .iter_mut()
            .find(|k| k.kid == kid && k.retired_at.is_none())
            .ok_or_else(|| KeyRingError::NotActive(kid.to_owned()))?;
        key.retired_at = Some(now_ms());
        let info = key.clone();
        self.write_ring(&ring)?;
        Ok(info)
    }

    /// The public keys as a JWKS, retired ones included.
    pub fn jwks(&self) -> Result<serde_json::Value, KeyRingError> {
        Ok(jwks(&self.list()?))
    }

    /// Runs `f` on the loaded keys, reloading them if `ring.json` changed.
    fn with_keys<T>(
        &self,
        f: impl FnOnce(&[LoadedKey]) -> Result<T, KeyRingError>,
    ) -> Result<T, KeyRingError> {
        let path = self.ring_path();
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(io(&path))?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.as_ref().is_none_or(|(at, _)| *at != modified) {
            let mut keys = Vec::new();
            for info in self.read_ring()?.keys {
                let key_path = self.dir.join(format!("{}.key", info.kid));
                let sealed = std::fs::read(&key_path).map_err(io(&key_path))?;
                let seed = keystore::open(&sealed, &self.passphrase).map_err(|source| {
                    KeyRingError::Sealed {
                        kid: info.kid.clone(),
                        source,
                    }
                })?;
                let seed: [u8; 32] = seed.try_into().map_err(|_| {
                    KeyRingError::Format(key_path.clone(), "not a 32-byte seed".into())
                })?;
                keys.push((info, SigningKey::from_bytes(&seed)));
            }
            *loaded = Some((modified, keys));
        }
        f(&loaded.as_ref().expect("loaded above").1)
    }

    /// The id of the key that signs now: the newest active one.
    pub fn current_key_id(&self) -> Result<String, KeyRingError> {
        self.with_keys(|keys| {
            keys.iter()
                .filter(|(k, _)| k.retired_at.is_none())
                .max_by_key(|(k, _)| k.created_at)
                .map(|(k, _)| k.kid.clone())
                .ok_or(KeyRingError::NoActiveKey)
        })
    }

    /// Signs with active key `kid`.
    pub fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, KeyRingError> {
        self.with_keys(|keys| {
            keys.iter()
                .find(|(k, _)| k.kid == kid && k.retired_at.is_none())
                .map(|(_, key)| key.sign(message).to_bytes().to_vec())
                .ok_or_else(|| KeyRingError::NotActive(kid.to_owned()))
        })
    }
}

/// Keys as a JWKS (RFC 7517; OKP/Ed25519 per RFC 8037).
pub fn jwks(keys: &[KeyInfo]) -> serde_json::Value {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            let x = hex::decode(&k.public_key).unwrap_or_default();
            json!({
                "kty": "OKP", "crv": "Ed25519", "x": B64URL.encode(x),
                "kid": k.kid, "alg": "EdDSA", "use": "sig",
            })
        })
        .collect();
    json!({ "keys": keys })
}

/// Creates a file readable by its owner only; refuses to overwrite one.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyRingError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    fn verify(jwks: &serde_json::Value, kid: &str, message: &[u8], signature: &[u8]) -> bool {
        let Some(jwk) = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
        else {
            return false;
        };
        let x: [u8; 32] = B64URL
            .decode(jwk["x"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        VerifyingKey::from_bytes(&x)
            .unwrap()
            .verify(message, &Signature::from_slice(signature).unwrap())
            .is_ok()
    }

    #[test]
    fn rotation_switches_the_signing_key_and_keeps_old_signatures_verifiable() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::new(dir.path(), b"pass");
        assert!(matches!(
            ring.current_key_id(),
            Err(KeyRingError::Io { .. })
        ));
        let first = ring.generate().unwrap();
        assert_eq!(ring.current_key_id().unwrap(), first.kid);
        let old = ring.sign(&first.kid, b"before").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        // Another process rotates: this one notices through ring.json.
        let second = KeyRing::new(dir.path(), b"pass").generate().unwrap();
        assert_eq!(ring.current_key_id().unwrap(), second.kid);
        let new = ring.sign(&second.kid, b"after").unwrap();
        ring.retire(&first.kid).unwrap();
        assert!(matches!(
            ring.sign(&first.kid, b"late"),
            Err(KeyRingError::NotActive(_))
        ));
        let jwks = ring.jwks().unwrap();
        assert_eq!(
            jwks["keys"].as_array().unwrap().len(),
            2,
            "retired keys stay published"
        );
        assert!(verify(&jwks, &first.kid, b"before", &old));
        assert!(verify(&jwks, &second.kid, b"after", &new));
        assert!(!verify(&jwks, &second.kid, b"before", &old));
        // The pseudonym secret: sealed, made once, the same for every process of the ring.
        let h = ring.keyed_hash(b"tenant|token").unwrap();
        assert_eq!(h.len(), 32);
        assert_eq!(
            KeyRing::new(dir.path(), b"pass")
                .keyed_hash(b"tenant|token")
                .unwrap(),
            h
        );
        assert_ne!(ring.keyed_hash(b"other|token").unwrap(), h);
        assert!(std::fs::read(dir.path().join("pseudonym.key"))
            .unwrap()
            .starts_with(b"PVK1"));
        // Seeds are sealed, and a wrong passphrase opens nothing.
        let sealed = std::fs::read(dir.path().join(format!("{}.key", first.kid))).unwrap();
        assert!(sealed.starts_with(b"PVK1"));
        assert!(matches!(
            KeyRing::new(dir.path(), b"wrong").current_key_id(),
            Err(KeyRingError::Sealed { .. })
        ));
    }
}
