//! `pavilion keys …` (the broker's decision-signing key ring) and `pavilion verify` (check a
//! decision token against a published JWKS, with the algorithm allow-list).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use clap::{Args, Subcommand};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use pavilion_keys::hsm::{HsmConfig, HsmKeyRing};
use pavilion_keys::{KeyInfo, KeyRing};
use pavilion_signing::jose::{self, JwsError};
use pavilion_signing::{DecisionSigner, JwsSigner};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a new signing key; it signs from now on (a rotation when the ring has keys).
    Generate(RingArgs),
    /// Same as generate: the new key signs, earlier ones stay published for verification.
    Rotate(RingArgs),
    /// Stop a key from signing; it stays in the JWKS.
    Retire {
        #[command(flatten)]
        ring: RingArgs,
        /// Key id.
        kid: String,
    },
    /// List the keys: id, created, retired, which one signs.
    List(RingArgs),
    /// Print the JWKS (every key, retired ones included).
    Jwks(RingArgs),
}

/// Where the signing keys are: a key ring directory, or an HSM token.
#[derive(Args, Clone)]
pub struct RingArgs {
    /// Key ring directory; its passphrase comes from $PAVILION_SIGNING_PASSPHRASE.
    #[arg(
        long = "signing-keys",
        visible_alias = "dir",
        env = "PAVILION_SIGNING_KEYS",
        conflicts_with = "hsm_token"
    )]
    pub dir: Option<PathBuf>,
    /// Keep the keys in this HSM token instead (PKCS#11); its user PIN comes from
    /// $PAVILION_HSM_PIN.
    #[arg(long, env = "PAVILION_HSM_TOKEN")]
    pub hsm_token: Option<String>,
    /// The PKCS#11 module of the HSM.
    #[arg(
        long,
        env = "PAVILION_HSM_MODULE",
        default_value = "/usr/lib/softhsm/libsofthsm2.so"
    )]
    pub hsm_module: PathBuf,
}

/// The broker's signing keys, in software or in an HSM.
pub enum SigningKeys {
    /// Sealed key files.
    Software(KeyRing),
    /// PKCS#11 token.
    Hsm(HsmKeyRing),
}

impl SigningKeys {
    /// Opens what `args` names; `None` when it names nothing.
    pub fn open(args: &RingArgs) -> Result<Option<Self>> {
        match (&args.dir, &args.hsm_token) {
            (Some(dir), None) => Ok(Some(SigningKeys::Software(open_ring(dir)?))),
            (None, Some(token)) => {
                let pin = std::env::var("PAVILION_HSM_PIN")
                    .context("set PAVILION_HSM_PIN: the HSM token's user PIN")?;
                let ring = HsmKeyRing::open(&HsmConfig {
                    module: args.hsm_module.clone(),
                    token: token.clone(),
                    pin,
                })?;
                Ok(Some(SigningKeys::Hsm(ring)))
            }
            _ => Ok(None),
        }
    }

    /// Where the keys are, for messages.
    pub fn describe(args: &RingArgs) -> String {
        match (&args.dir, &args.hsm_token) {
            (Some(dir), _) => dir.display().to_string(),
            (_, Some(token)) => format!("HSM token `{token}` ({})", args.hsm_module.display()),
            _ => "nowhere".into(),
        }
    }

    fn generate(&self) -> Result<KeyInfo> {
        Ok(match self {
            SigningKeys::Software(r) => r.generate()?,
            SigningKeys::Hsm(h) => h.generate()?,
        })
    }

    fn list(&self) -> Result<Vec<KeyInfo>> {
        Ok(match self {
            SigningKeys::Software(r) => r.list()?,
            SigningKeys::Hsm(h) => h.list()?,
        })
    }

    /// The JWKS of every key.
    pub fn jwks(&self) -> Result<serde_json::Value> {
        Ok(pavilion_keys::jwks(&self.list()?))
    }
}

impl JwsSigner for SigningKeys {
    fn current_key_id(&self) -> Result<String, String> {
        match self {
            SigningKeys::Software(r) => r.current_key_id().map_err(|e| e.to_string()),
            SigningKeys::Hsm(h) => h.current_key_id().map_err(|e| e.to_string()),
        }
    }
    fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            SigningKeys::Software(r) => r.sign(kid, message).map_err(|e| e.to_string()),
            SigningKeys::Hsm(h) => h.sign(kid, message).map_err(|e| e.to_string()),
        }
    }
}

impl DecisionSigner for SigningKeys {
    fn keyed_hash(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            SigningKeys::Software(r) => r.keyed_hash(message).map_err(|e| e.to_string()),
            SigningKeys::Hsm(h) => h.keyed_hash(message).map_err(|e| e.to_string()),
        }
    }
}

/// `pavilion verify`.
#[derive(Args)]
pub struct VerifyArgs {
    /// A compact JWS/JWT decision token.
    pub token: String,
    /// The JWKS to verify against (a file, e.g. from `pavilion keys jwks` or the broker's
    /// /.well-known/jwks.json).
    #[arg(long)]
    pub jwks: PathBuf,
}

/// Opens the ring at `dir` with $PAVILION_SIGNING_PASSPHRASE.
pub fn open_ring(dir: &Path) -> Result<KeyRing> {
    let passphrase = std::env::var("PAVILION_SIGNING_PASSPHRASE")
        .context("set PAVILION_SIGNING_PASSPHRASE: it seals the signing keys at rest")?;
    if passphrase.is_empty() {
        bail!("PAVILION_SIGNING_PASSPHRASE is empty");
    }
    Ok(KeyRing::new(dir, passphrase.as_bytes()))
}

/// The keys as the signing stage's signer.
pub struct SharedKeys(pub Arc<SigningKeys>);

impl JwsSigner for SharedKeys {
    fn current_key_id(&self) -> Result<String, String> {
        self.0.current_key_id()
    }
    fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        self.0.sign(kid, message)
    }
}

impl DecisionSigner for SharedKeys {
    fn keyed_hash(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.0.keyed_hash(message)
    }
}

/// Checkpoints are signed with the current decision-signing key: the JWKS that verifies
/// decisions verifies the log (`pavilion audit vkeys`).
impl pavilion_audit::CheckpointSigner for SharedKeys {
    fn sign(&self, message: &[u8]) -> Result<([u8; 32], Vec<u8>), String> {
        let kid = self.0.current_key_id()?;
        let info = self
            .0
            .list()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| format!("key {kid} is not listed"))?;
        let public_key = hex::decode(&info.public_key)
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| format!("key {kid}: public key is not 32 bytes of hex"))?;
        Ok((public_key, self.0.sign(&kid, message)?))
    }
}

fn keys(args: &RingArgs) -> Result<SigningKeys> {
    SigningKeys::open(args)?.context(
        "say where the keys are: --dir DIR (or $PAVILION_SIGNING_KEYS), or --hsm-token LABEL",
    )
}

pub fn run(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Generate(a) | KeysCommand::Rotate(a) => {
            let key = keys(&a)?.generate()?;
            println!("{} now signs (public key {})", key.kid, key.public_key);
        }
        KeysCommand::Retire { ring, kid } => {
            let SigningKeys::Software(ring) = keys(&ring)? else {
                bail!("retiring is for key ring directories; on an HSM, destroy the key with the token's tools");
            };
            ring.retire(&kid)?;
            println!("{kid} retired: it no longer signs and stays in the JWKS");
        }
        KeysCommand::List(a) => {
            let ring = keys(&a)?;
            let current = ring.current_key_id().ok();
            for k in ring.list()? {
                let state = match (k.retired_at, current.as_deref() == Some(k.kid.as_str())) {
                    (Some(_), _) => "retired",
                    (None, true) => "signing",
                    (None, false) => "active",
                };
                println!(
                    "{}  {state:<8} created {}  {}",
                    k.kid, k.created_at, k.public_key
                );
            }
        }
        KeysCommand::Jwks(a) => {
            println!("{}", serde_json::to_string_pretty(&keys(&a)?.jwks()?)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks a token: allow-listed algorithm, a published kid, a valid Ed25519 signature.
pub fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let jwks: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&a.jwks).with_context(|| format!("reading {}", a.jwks.display()))?,
    )
    .with_context(|| format!("{} is not JSON", a.jwks.display()))?;
    let refuse = |e: JwsError| -> Result<ExitCode> {
        eprintln!("invalid: {e}");
        Ok(ExitCode::from(1))
    };
    let parsed = match jose::parse(&a.token) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == parsed.kid.as_str() && k["kty"] == "OKP" && k["crv"] == "Ed25519")
        .and_then(|k| B64URL.decode(k["x"].as_str()?).ok())
        .and_then(|x| <[u8; 32]>::try_from(x.as_slice()).ok())
        .and_then(|x| VerifyingKey::from_bytes(&x).ok());
    let Some(key) = key else {
        return refuse(JwsError::UnknownKey(parsed.kid));
    };
    let valid = Signature::from_slice(&parsed.signature)
        .is_ok_and(|s| key.verify(parsed.signing_input.as_bytes(), &s).is_ok());
    if !valid {
        return refuse(JwsError::BadSignature(parsed.kid));
    }
    println!("valid: signed by {}", parsed.kid);
    println!("{}", String::from_utf8_lossy(&parsed.payload));
    Ok(ExitCode::SUCCESS)
}
