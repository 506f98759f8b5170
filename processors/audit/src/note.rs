//! Checkpoints as C2SP signed notes (tlog-checkpoint + signed-note): the body is
//! `<origin>\n<size>\n<base64 root>\n`; each signature line is `— <key name> <base64(key id ‖
//! signature)>`, where the key id is the first 4 bytes of SHA-256(name ‖ `\n` ‖ 0x01 ‖ Ed25519
//! public key). Verifiers are given keys as vkeys: `<name>+<hex key id>+<base64(0x01 ‖ key)>`,
//! the form Go's `golang.org/x/mod/sumdb/note` reads.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// Ed25519's algorithm byte in key ids and vkeys.
const ED25519: u8 = 0x01;

/// Why a note does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// Not a checkpoint note.
    #[error("malformed checkpoint note: {0}")]
    Malformed(String),
    /// No signature by a known key verifies.
    #[error("no signature on the note verifies under a known key ({0})")]
    Unverified(String),
    /// A vkey string cannot be read.
    #[error("malformed verifier key `{0}`")]
    BadVkey(String),
}

/// A checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    /// Origin line.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: [u8; 32],
}

impl CheckpointBody {
    /// The note body text.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    fn parse(text: &str) -> Result<CheckpointBody, NoteError> {
        let bad = |m: &str| NoteError::Malformed(m.to_owned());
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin line"))?;
        let size = lines
            .next()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("second line is not a tree size"))?;
        let root = lines
            .next()
            .and_then(|r| B64.decode(r).ok())
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or_else(|| bad("third line is not a base64 SHA-256 root"))?;
        Ok(CheckpointBody {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// The 4-byte id of an Ed25519 note key.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public_key);
    h.finalize()[..4].try_into().expect("4 bytes")
}

/// The verifier key string for `name` and `public_key`.
pub fn vkey(name: &str, public_key: &[u8; 32]) -> String {
    let mut key = vec![ED25519];
    key.extend_from_slice(public_key);
    format!(
        "{name}+{}+{}",
        hex::encode(key_id(name, public_key)),
        B64.encode(key)
    )
}

/// A known note key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteKey {
    /// Key name.
    pub name: String,
    /// Ed25519 public key.
    pub public_key: [u8; 32],
}

impl NoteKey {
    /// Reads a vkey string, checking its id against its name and key.
    pub fn from_vkey(vkey: &str) -> Result<NoteKey, NoteError> {
        let bad = || NoteError::BadVkey(vkey.to_owned());
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let key = B64.decode(key).map_err(|_| bad())?;
        let Some((&ED25519, public_key)) = key.split_first() else {
            return Err(bad());
        };
        let public_key: [u8; 32] = public_key.try_into().map_err(|_| bad())?;
        if hex::encode(key_id(name, &public_key)) != id {
            return Err(bad());
        }
        Ok(NoteKey {
            name: name.to_owned(),
            public_key,
        })
    }
}

/// The signed note: body, blank line, one signature line.
pub fn signed_note(
    body: &CheckpointBody,
    name: &str,
    public_key: &[u8; 32],
    signature: &[u8],
) -> String {
    let mut sig = key_id(name, public_key).to_vec();
    sig.extend_from_slice(signature);
    format!("{}\n— {name} {}\n", body.text(), B64.encode(sig))
}

/// Opens a checkpoint note: its body, if at least one signature line verifies under a key of
/// `known` with the same name and id. Signatures by unknown keys are ignored (a note may carry
/// witnesses' cosignatures), as the signed-note spec says.
pub fn open(note: &str, known: &[NoteKey]) -> Result<CheckpointBody, NoteError> {
    let (body, signatures) = note
        .split_once("\n\n")
        .ok_or_else(|| NoteError::Malformed("no blank line after the body".into()))?;
    let body = format!("{body}\n");
    let parsed = CheckpointBody::parse(&body)?;
    let mut tried = Vec::new();
    for line in signatures.lines() {
        let Some(rest) = line.strip_prefix("— ") else {
            return Err(NoteError::Malformed(format!(
                "not a signature line: {line:?}"
            )));
        };
        let Some((name, sig)) = rest.split_once(' ') else {
            return Err(NoteError::Malformed(format!(
                "not a signature line: {line:?}"
            )));
        };
        let Ok(sig) = B64.decode(sig) else {
            return Err(NoteError::Malformed(format!(
                "signature of `{name}` is not base64"
            )));
        };
        if sig.len() != 4 + 64 {
            tried.push(format!("{name}: not an Ed25519 signature"));
            continue;
        }
        let (id, sig) = sig.split_at(4);
        let Some(key) = known
            .iter()
            .find(|k| k.name == name && key_id(&k.name, &k.public_key) == id)
        else {
            tried.push(format!("{name}+{}: unknown key", hex::encode(id)));
            continue;
        };
        let verifies = VerifyingKey::from_bytes(&key.public_key)
            .ok()
            .zip(Signature::from_slice(sig).ok())
            .is_some_and(|(k, s)| k.verify_strict(body.as_bytes(), &s).is_ok());
        if verifies {
            return Ok(parsed);
        }
        tried.push(format!("{name}+{}: bad signature", hex::encode(id)));
    }
    Err(NoteError::Unverified(if tried.is_empty() {
        "no signature lines".into()
    } else {
        tried.join("; ")
    }))
}
