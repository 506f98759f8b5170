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
use pavilion_keys::KeyRing;
use pavilion_signing::jose::{self, JwsError};
use pavilion_signing::DecisionSigner;

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

/// Where the key ring is.
#[derive(Args)]
pub struct RingArgs {
    /// Key ring directory; its passphrase comes from $PAVILION_SIGNING_PASSPHRASE.
    #[arg(long, env = "PAVILION_SIGNING_KEYS")]
    pub dir: PathBuf,
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

/// The key ring as the signing stage's signer.
pub struct RingSigner(pub Arc<KeyRing>);

impl DecisionSigner for RingSigner {
    fn current_key_id(&self) -> Result<String, String> {
        self.0.current_key_id().map_err(|e| e.to_string())
    }
    fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        self.0.sign(kid, message).map_err(|e| e.to_string())
    }
}

pub fn run(command: KeysCommand) -> Result<ExitCode> {
    match command {
        KeysCommand::Generate(a) | KeysCommand::Rotate(a) => {
            let key = open_ring(&a.dir)?.generate()?;
            println!("{} now signs (public key {})", key.kid, key.public_key);
        }
        KeysCommand::Retire { ring, kid } => {
            open_ring(&ring.dir)?.retire(&kid)?;
            println!("{kid} retired: it no longer signs and stays in the JWKS");
        }
        KeysCommand::List(a) => {
            let ring = open_ring(&a.dir)?;
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
            println!(
                "{}",
                serde_json::to_string_pretty(&open_ring(&a.dir)?.jwks()?)?
            );
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
