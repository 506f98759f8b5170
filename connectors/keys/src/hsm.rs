//! Decision-signing keys inside an HSM, through PKCS#11 (`cryptoki`): Ed25519 key pairs
//! generated on the token (CKM_EC_EDWARDS_KEY_PAIR_GEN), signatures with CKM_EDDSA; the
//! private keys never leave it. Keys are token objects labelled with their kid
//! (`k<created ms>-<random>`), so every process logged in to the token sees the same ring.
//! Tested with SoftHSM2.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rand_core::{OsRng, RngCore};

use crate::{now_ms, KeyInfo};

/// `edwards25519` as a PrintableString: the curve parameter SoftHSM2 expects (the same as
/// the Ed25519 OID for this purpose).
/// Label of the HMAC secret behind subject pseudonyms.
const PSEUDONYM_LABEL: &[u8] = b"pavilion-pseudonym";

const ED25519_PARAMS: [u8; 14] = [
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];

/// Why the HSM cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("PKCS#11 ({what}): {message}")]
pub struct HsmError {
    what: &'static str,
    message: String,
}

fn hsm(what: &'static str) -> impl FnOnce(cryptoki::error::Error) -> HsmError {
    move |e| HsmError {
        what,
        message: e.to_string(),
    }
}

/// Where the HSM is.
#[derive(Debug, Clone)]
pub struct HsmConfig {
    /// The PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
    pub module: PathBuf,
    /// Label of the token holding the keys.
    pub token: String,
    /// User PIN.
    pub pin: String,
}

/// A logged-in session on the token that holds the keys.
pub struct HsmKeyRing {
    session: Mutex<Session>,
    /// Private-key handles by kid: a lookup on the token per signature would cost more than
    /// the signature.
    handles: Mutex<HashMap<String, ObjectHandle>>,
    /// The current kid and when it was read; re-read after a second so a rotation by another
    /// process is picked up.
    current: Mutex<Option<(Instant, String)>>,
    _pkcs11: Pkcs11,
}

impl HsmKeyRing {
    /// Loads the module, finds the token by label and logs in.
    pub fn open(config: &HsmConfig) -> Result<Self, HsmError> {
        let pkcs11 = Pkcs11::new(&config.module).map_err(hsm("loading the module"))?;
        pkcs11
            .initialize(CInitializeArgs::OsThreads)
            .map_err(hsm("initialize"))?;
        let slot = pkcs11
            .get_slots_with_token()
            .map_err(hsm("listing slots"))?
            .into_iter()
            .find(|slot| {
                pkcs11
                    .get_token_info(*slot)
                    .is_ok_and(|t| t.label().trim() == config.token)
            })
            .ok_or_else(|| HsmError {
                what: "finding the token",
                message: format!("no token labelled `{}`", config.token),
            })?;
        let session = pkcs11
            .open_rw_session(slot)
            .map_err(hsm("opening a session"))?;
        session
            .login(UserType::User, Some(&AuthPin::new(config.pin.clone())))
            .map_err(hsm("login"))?;
        Ok(HsmKeyRing {
            session: Mutex::new(session),
            handles: Mutex::new(HashMap::new()),
            current: Mutex::new(None),
            _pkcs11: pkcs11,
        })
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// HMAC-SHA256 of `message` inside the token, under its pseudonym secret (a generic
    /// secret object made with the first key).
    pub fn keyed_hash(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(PSEUDONYM_LABEL.to_vec()),
        ];
        let session = self.session();
        let key = session
            .find_objects(&template)
            .map_err(hsm("finding the pseudonym secret"))?
            .into_iter()
            .next()
            .ok_or_else(|| HsmError {
                what: "pseudonyms",
                message: "the token has no pseudonym secret (run `pavilion keys generate`)".into(),
            })?;
        session
            .sign(&Mechanism::Sha256Hmac, key, message)
            .map_err(hsm("HMAC"))
    }

    fn ensure_pseudonym_secret(&self) -> Result<(), HsmError> {
        let session = self.session();
        let label = Attribute::Label(PSEUDONYM_LABEL.to_vec());
        let found = session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), label.clone()])
            .map_err(hsm("finding the pseudonym secret"))?;
        if found.is_empty() {
            session
                .generate_key(
                    &Mechanism::GenericSecretKeyGen,
                    &[
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Sign(true),
                        Attribute::ValueLen(32.into()),
                        label,
                    ],
                )
                .map_err(hsm("generating the pseudonym secret"))?;
        }
        Ok(())
    }

    /// Generates a key pair on the token; it signs from now on.
    pub fn generate(&self) -> Result<KeyInfo, HsmError> {
        self.ensure_pseudonym_secret()?;
        let mut suffix = [0u8; 4];
        OsRng.fill_bytes(&mut suffix);
        let kid = format!("k{}-{}", now_ms(), hex::encode(suffix));
        let label = Attribute::Label(kid.clone().into_bytes());
        let public = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            label.clone(),
        ];
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            label,
        ];
        self.session()
            .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
            .map_err(hsm("generating an Ed25519 key pair"))?;
        self.list()?
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| HsmError {
                what: "generating",
                message: "the new key is not on the token".into(),
            })
    }

    fn find(&self, class: ObjectClass, kid: Option<&str>) -> Result<Vec<ObjectHandle>, HsmError> {
        let mut template = vec![
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC_EDWARDS),
        ];
        if let Some(kid) = kid {
            template.push(Attribute::Label(kid.as_bytes().to_vec()));
        }
        self.session()
            .find_objects(&template)
            .map_err(hsm("finding keys"))
    }

    /// Every Ed25519 key on the token, oldest first.
    pub fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        let mut keys = Vec::new();
        for handle in self.find(ObjectClass::PUBLIC_KEY, None)? {
            let attributes = self
                .session()
                .get_attributes(handle, &[AttributeType::Label, AttributeType::EcPoint])
                .map_err(hsm("reading a public key"))?;
            let (mut kid, mut point) = (None, None);
            for a in attributes {
                match a {
                    Attribute::Label(l) => kid = String::from_utf8(l).ok(),
                    // A DER OCTET STRING around the 32-byte point.
                    Attribute::EcPoint(p) if p.len() >= 32 => {
                        point = Some(p[p.len() - 32..].to_vec())
                    }
                    _ => {}
                }
            }
            let (Some(kid), Some(point)) = (kid, point) else {
                continue;
            };
            let created_at = kid
                .strip_prefix('k')
                .and_then(|k| k.split('-').next())
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            keys.push(KeyInfo {
                kid,
                public_key: hex::encode(point),
                created_at,
                retired_at: None,
            });
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    /// The newest key (read from the token at most once a second).
    pub fn current_key_id(&self) -> Result<String, HsmError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, kid)) = current.as_ref() {
            if at.elapsed() < Duration::from_secs(1) {
                return Ok(kid.clone());
            }
        }
        let kid = self.list()?.pop().map(|k| k.kid).ok_or(HsmError {
            what: "choosing a key",
            message: "the token holds no Ed25519 key (run `pavilion keys generate --hsm-…`)".into(),
        })?;
        *current = Some((Instant::now(), kid.clone()));
        Ok(kid)
    }

    /// Ed25519 signature of `message` by key `kid`, made inside the token.
    pub fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let cached = self
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .copied();
        let key = match cached {
            Some(handle) => handle,
            None => {
                let handle = self
                    .find(ObjectClass::PRIVATE_KEY, Some(kid))?
                    .into_iter()
                    .next()
                    .ok_or_else(|| HsmError {
                        what: "signing",
                        message: format!("no private key `{kid}` on the token"),
                    })?;
                self.handles
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(kid.to_owned(), handle);
                handle
            }
        };
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        self.session()
            .sign(&mechanism, key, message)
            .map_err(hsm("signing"))
    }
}
