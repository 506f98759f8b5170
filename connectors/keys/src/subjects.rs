//! Per-subject audit keys (crypto-shredding): one random 32-byte key per subject, wrapped
//! (XChaCha20-Poly1305, the key id as associated data) under a key-encryption key that is
//! itself sealed with the operator's passphrase (`kek.sealed`, one Argon2id derivation per
//! process). Erasing a subject writes a marker under `erased/` first, then deletes the
//! wrapped key: from then on the key is gone (the KEK alone cannot bring it back) and is
//! never created again under that id, so a re-processed event of an erased subject cannot
//! be encrypted under a fresh key either.
//!
//! Several processes may share the directory: creation is first-writer-wins (a temporary
//! file hard-linked into place), so they agree on one key per subject.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};

use crate::{io, keystore, write_private, KeyRingError};

/// A directory of subject keys.
pub struct SubjectKeyStore {
    dir: PathBuf,
    passphrase: Vec<u8>,
    kek: OnceLock<[u8; 32]>,
    /// Keys already read or created, so that each event of a known subject costs one look
    /// for its erasure marker, not a read and an unwrap. The marker is still looked for every
    /// time: an erasure by another process takes effect here at once.
    unwrapped: Mutex<HashMap<String, [u8; 32]>>,
}

/// Unwrapped keys kept in memory at most (about 10 MB); the cache starts over when full.
const UNWRAPPED_LIMIT: usize = 100_000;

/// What happened to a key on erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erased {
    /// The key existed and is deleted.
    Deleted,
    /// No key had been created for this id (its subject was never logged); it never will be.
    NeverCreated,
    /// Already erased before.
    Already,
}

fn valid_id(key_id: &str) -> bool {
    !key_id.is_empty() && key_id.len() <= 64 && key_id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl SubjectKeyStore {
    /// The store at `dir` (created on first use).
    pub fn new(dir: &Path, passphrase: &[u8]) -> Self {
        SubjectKeyStore {
            dir: dir.to_owned(),
            passphrase: passphrase.to_vec(),
            kek: OnceLock::new(),
            unwrapped: Mutex::new(HashMap::new()),
        }
    }

    fn unwrapped(&self) -> std::sync::MutexGuard<'_, HashMap<String, [u8; 32]>> {
        self.unwrapped.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, key_id: &str, key: [u8; 32]) -> [u8; 32] {
        let mut unwrapped = self.unwrapped();
        if unwrapped.len() >= UNWRAPPED_LIMIT {
            unwrapped.clear();
        }
        unwrapped.insert(key_id.to_owned(), key);
        key
    }

    fn kek(&self) -> Result<[u8; 32], KeyRingError> {
        if let Some(k) = self.kek.get() {
            return Ok(*k);
        }
        for sub in ["keys", "erased"] {
            let d = self.dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        let path = self.dir.join("kek.sealed");
        let sealed = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut kek = [0u8; 32];
                OsRng.fill_bytes(&mut kek);
                let sealed = keystore::seal(&kek, &self.passphrase).map_err(|source| {
                    KeyRingError::Sealed {
                        kid: "kek".into(),
                        source,
                    }
                })?;
                if publish_new(&path, &sealed)? {
                    sealed
                } else {
                    // Another thread or process created it first: everyone uses theirs.
                    std::fs::read(&path).map_err(io(&path))?
                }
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let kek: [u8; 32] = keystore::open(&sealed, &self.passphrase)
            .map_err(|source| KeyRingError::Sealed {
                kid: "kek".into(),
                source,
            })?
            .try_into()
            .map_err(|_| KeyRingError::Format(path.clone(), "not a 32-byte key".into()))?;
        Ok(*self.kek.get_or_init(|| kek))
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, KeyRingError> {
        Ok(XChaCha20Poly1305::new((&self.kek()?).into()))
    }

    fn paths(&self, key_id: &str) -> Result<(PathBuf, PathBuf), KeyRingError> {
        if !valid_id(key_id) {
            return Err(KeyRingError::Format(
                self.dir.clone(),
                format!("`{key_id}` is not a subject key id (hex)"),
            ));
        }
        Ok((
            self.dir.join("keys").join(key_id),
            self.dir.join("erased").join(key_id),
        ))
    }

    fn unwrap_key(
        &self,
        key_id: &str,
        path: &Path,
        wrapped: &[u8],
    ) -> Result<[u8; 32], KeyRingError> {
        let corrupt = || KeyRingError::Format(path.to_owned(), "wrapped key does not open".into());
        if wrapped.len() < 24 {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = wrapped.split_at(24);
        self.cipher()?
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: key_id.as_bytes(),
                },
            )
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(corrupt)
    }

    /// The key, if it exists and is not erased.
    pub fn get(&self, key_id: &str) -> Result<Option<[u8; 32]>, KeyRingError> {
        let (path, erased) = self.paths(key_id)?;
        if erased.exists() {
            self.unwrapped().remove(key_id);
            return Ok(None);
        }
        if let Some(key) = self.unwrapped().get(key_id) {
            return Ok(Some(*key));
        }
        match std::fs::read(&path) {
            Ok(wrapped) => self
                .unwrap_key(key_id, &path, &wrapped)
                .map(|key| Some(self.remember(key_id, key))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// The key, created on first use; `None` once erased.
    pub fn get_or_create(&self, key_id: &str) -> Result<Option<[u8; 32]>, KeyRingError> {
        if let Some(key) = self.get(key_id)? {
            return Ok(Some(key));
        }
        let (path, erased) = self.paths(key_id)?;
        if erased.exists() {
            return Ok(None);
        }
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let wrapped = self
            .cipher()?
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &key,
                    aad: key_id.as_bytes(),
                },
            )
            .expect("encrypting 32 bytes cannot fail");
        if publish_new(&path, &[nonce.as_slice(), &wrapped].concat())? {
            Ok(Some(self.remember(key_id, key)))
        } else {
            // Another thread or process made this subject's key first: everyone uses that one.
            self.get(key_id)
        }
    }

    /// Erases the key for good.
    pub fn erase(&self, key_id: &str) -> Result<Erased, KeyRingError> {
        let (path, erased) = self.paths(key_id)?;
        self.kek()?; // creates the directories
        let already = erased.exists();
        if !already {
            write_private(&erased, b"")?;
        }
        self.unwrapped().remove(key_id);
        let existed = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io(&path)(e)),
        };
        let keys = self.dir.join("keys");
        std::fs::File::open(&keys)
            .and_then(|d| d.sync_all())
            .map_err(io(&keys))?;
        Ok(match (already, existed) {
            (_, true) => Erased::Deleted,
            (true, false) => Erased::Already,
            (false, false) => Erased::NeverCreated,
        })
    }
}

/// Creates `path` with `bytes` unless it exists (then `false`), never showing anyone a
/// half-written file: the bytes go to a temporary file of this attempt's own, which is
/// hard-linked into place. Stream threads of one process create a subject's key (and the
/// key-encryption key) at the same moment — its request and its decision are logged by
/// different audit shards — so a name shared by the process let one thread remove the other's
/// file before it was linked ("No such file or directory"), and writing `path` in place let
/// one read it half-written (`NotAKeyFile`); both were seen in CI and demo runs.
fn publish_new(path: &Path, bytes: &[u8]) -> Result<bool, KeyRingError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{:016x}",
        std::process::id(),
        OsRng.next_u64()
    ));
    write_private(&tmp, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_creating_one_subjects_key_at_once_all_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SubjectKeyStore::new(dir.path(), b"pass"));
        for round in 0..40 {
            // Every few rounds a store of its own, so the key-encryption key is created by
            // racing threads too.
            let store = match round % 4 {
                0 => std::sync::Arc::new(SubjectKeyStore::new(
                    &dir.path().join(round.to_string()),
                    b"pass",
                )),
                _ => store.clone(),
            };
            let id = format!("{round:04x}");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(6));
            let threads: Vec<_> = (0..6)
                .map(|_| {
                    let (store, barrier, id) = (store.clone(), barrier.clone(), id.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        store.get_or_create(&id)
                    })
                })
                .collect();
            let keys: Vec<[u8; 32]> = threads
                .into_iter()
                .map(|t| t.join().unwrap().unwrap().unwrap())
                .collect();
            assert!(keys.iter().all(|k| *k == keys[0]), "round {round}");
        }
    }

    #[test]
    fn keys_are_stable_shared_and_gone_for_good_once_erased() {
        let dir = tempfile::tempdir().unwrap();
        let store = SubjectKeyStore::new(dir.path(), b"pass");
        let id = "00ff";
        let key = store.get_or_create(id).unwrap().unwrap();
        assert_eq!(store.get_or_create(id).unwrap(), Some(key));
        // Another process with the same directory and passphrase sees the same key.
        let other = SubjectKeyStore::new(dir.path(), b"pass");
        assert_eq!(other.get(id).unwrap(), Some(key));
        // The wrapped file is not the key.
        let wrapped = std::fs::read(dir.path().join("keys").join(id)).unwrap();
        assert!(!wrapped.windows(32).any(|w| w == key));
        assert!(SubjectKeyStore::new(dir.path(), b"wrong").get(id).is_err());

        assert_eq!(store.erase(id).unwrap(), Erased::Deleted);
        assert_eq!(store.get(id).unwrap(), None);
        assert_eq!(other.get_or_create(id).unwrap(), None, "never again");
        assert_eq!(store.erase(id).unwrap(), Erased::Already);
        assert_eq!(store.erase("abcd").unwrap(), Erased::NeverCreated);
        assert!(store.get_or_create("../x").is_err());
    }
}
