//! `pavilion provider issue | revoke | status-list`: credentials a provider issues to its
//! members' wallets (SD-JWT VC or VC-JWT), their revocation bits, and the signed Bitstring
//! Status List; and `pavilion holder keygen | present`, the wallet's side. Credentials are
//! signed with the provider's registered Ed25519 key (its sealed key file), or with a key in
//! an HSM through PKCS#11 once `provider register-key` put that key in the provider's record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use ed25519_dalek::SigningKey;
use pavilion_credentials::credential::{
    self, jwk, key_from_jwk, provider_issuer, Format, Issuance,
};
use pavilion_credentials::jose::{self, JwsSigner, KeySigner};
use pavilion_credentials::status_list::{Bitstring, StatusEntry, StatusList, LIST_BITS};
use pavilion_keys::hsm::{HsmConfig, HsmKeyRing};
use pavilion_runtime::clock::epoch_millis;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use pavilion_credentials::bbs;
use pavilion_kafka::{ensure_topics, PlainProducer};
use pavilion_schemas::{Event, Provider, Registry, StatusListPublished};

use super::provider::{provider_topic, KeyFileArgs};
use crate::cli::{self, ClusterArgs};

/// The providers' public keys as relying parties read them (`provider keys`): per provider its
/// issuer id, state and keys — Ed25519 as RFC 8037 OKP JWKs, BBS (BLS12-381-SHA-256) as
/// `{"kty": "OKP", "crv": "BLS12381G2", "x": <the 96-byte compressed point>}` with its `alg`.
pub fn provider_keys<'a>(providers: impl IntoIterator<Item = &'a Provider>) -> serde_json::Value {
    let providers: Vec<serde_json::Value> = providers
        .into_iter()
        .map(|p| {
            let keys: Vec<serde_json::Value> = p
                .attestation_keys
                .iter()
                .filter_map(|k| {
                    let x = jose::base64url(&k.public_key);
                    let crv = match k.algorithm.as_str() {
                        "Ed25519" => "Ed25519",
                        bbs::KEY_ALGORITHM => "BLS12381G2",
                        _ => return None,
                    };
                    Some(serde_json::json!({
                        "kid": k.key_id,
                        "alg": if crv == "Ed25519" { "EdDSA" } else { bbs::KEY_ALGORITHM },
                        "kty": "OKP",
                        "crv": crv,
                        "x": x,
                    }))
                })
                .collect();
            serde_json::json!({
                "provider": p.provider_id,
                "issuer": provider_issuer(&p.provider_id),
                "state": format!("{:?}", p.state).to_lowercase(),
                "keys": keys,
            })
        })
        .collect();
    serde_json::json!({ "providers": providers })
}

/// Which format `provider issue` writes.
#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// SD-JWT VC (`dc+sd-jwt`): each attribute selectively disclosable, bound to the holder's
    /// key.
    SdJwtVc,
    /// W3C VC 2.0 as `vc+jwt`: every attribute in clear, presented in a holder-signed VP.
    VcJwt,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::SdJwtVc => Format::SdJwtVc,
            FormatArg::VcJwt => Format::VcJwt,
        }
    }
}

/// A provider's HSM token (PKCS#11) holding an issuer key.
#[derive(Args)]
pub struct ProviderHsmArgs {
    /// The HSM token; its user PIN comes from $PAVILION_HSM_PIN.
    #[arg(long, env = "PAVILION_PROVIDER_HSM_TOKEN")]
    pub hsm_token: Option<String>,
    /// The PKCS#11 module of the HSM.
    #[arg(
        long,
        env = "PAVILION_HSM_MODULE",
        default_value = "/usr/lib/softhsm/libsofthsm2.so"
    )]
    pub hsm_module: PathBuf,
}

impl ProviderHsmArgs {
    /// The token, if one is named.
    pub fn open(&self) -> Result<Option<HsmKeyRing>> {
        let Some(token) = &self.hsm_token else {
            return Ok(None);
        };
        let pin = std::env::var("PAVILION_HSM_PIN")
            .context("set PAVILION_HSM_PIN: the HSM token's user PIN")?;
        Ok(Some(HsmKeyRing::open(&HsmConfig {
            module: self.hsm_module.clone(),
            token: token.clone(),
            pin,
        })?))
    }
}

/// Which key signs: the provider's own (sealed key file), or the current key of an HSM
/// token (`--hsm-token`), which must be in the provider's record first (`pavilion provider
/// register-key`), or the broker knows no such issuer key.
#[derive(Args)]
pub struct IssuerKeyArgs {
    #[command(flatten)]
    pub keys: KeyFileArgs,
    #[command(flatten)]
    pub hsm: ProviderHsmArgs,
}

/// A signer of the provider's: its software key or its HSM.
enum IssuerSigner {
    Software { kid: String, key: SigningKey },
    Hsm(HsmKeyRing),
}

impl JwsSigner for IssuerSigner {
    fn current_key_id(&self) -> Result<String, String> {
        match self {
            IssuerSigner::Software { kid, .. } => Ok(kid.clone()),
            IssuerSigner::Hsm(h) => h.current_key_id().map_err(|e| e.to_string()),
        }
    }
    fn sign(&self, kid: &str, message: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            IssuerSigner::Software { kid: own, key } => {
                KeySigner { kid: own, key }.sign(kid, message)
            }
            IssuerSigner::Hsm(h) => h.sign(kid, message).map_err(|e| e.to_string()),
        }
    }
}

impl IssuerKeyArgs {
    fn signer(&self, provider: &str) -> Result<IssuerSigner> {
        if let Some(hsm) = self.hsm.open()? {
            return Ok(IssuerSigner::Hsm(hsm));
        }
        let secrets = self.keys.open(provider)?;
        Ok(IssuerSigner::Software {
            kid: secrets.attestation_key_id,
            key: secrets.attestation,
        })
    }
}

/// The provider's record of issued credentials' status bits: which indices are taken and
/// which are revoked. Not secret (it holds no attribute and no holder), but the truth of its
/// status list: lose it and revocations are lost.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBook {
    /// The status list credential's id (URL).
    list: String,
    issued: BTreeSet<usize>,
    revoked: BTreeSet<usize>,
}

/// Where the status book is.
#[derive(Args, Clone)]
pub struct StatusFileArg {
    /// The provider's status book (default: `<NAME>.provider-status`): indices issued and
    /// revoked.
    #[arg(long)]
    pub status_file: Option<PathBuf>,
}

impl StatusFileArg {
    fn path(&self, provider: &str) -> PathBuf {
        self.status_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{provider}.provider-status")))
    }

    fn read(&self, provider: &str) -> Result<StatusBook> {
        let path = self.path(provider);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a status book", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StatusBook {
                list: format!("urn:pavilion:status-list:{provider}:1"),
                issued: BTreeSet::new(),
                revoked: BTreeSet::new(),
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Replaces the book atomically: a crash leaves the old one or the new one.
    fn write(&self, provider: &str, book: &StatusBook) -> Result<()> {
        let path = self.path(provider);
        let staged = path.with_extension("new");
        std::fs::write(&staged, serde_json::to_vec_pretty(book)?)
            .with_context(|| format!("writing {}", staged.display()))?;
        std::fs::rename(&staged, &path).with_context(|| format!("replacing {}", path.display()))
    }
}

#[derive(Args)]
pub struct IssueArgs {
    /// Provider id (the issuer).
    pub name: String,
    /// The holder's public key: an Ed25519 JWK file, as `pavilion holder keygen` writes it.
    /// Only whoever holds its private half can present the credential.
    #[arg(long, value_name = "FILE")]
    pub holder_key: PathBuf,
    /// An attribute to state, NAME=VALUE (repeatable), e.g. `--attribute country=DE`.
    #[arg(long = "attribute", value_name = "NAME=VALUE", value_parser = parse_attribute, required = true)]
    pub attributes: Vec<(String, String)>,
    /// Format.
    #[arg(long, value_enum, default_value = "sd-jwt-vc")]
    pub format: FormatArg,
    /// Valid from this time (RFC 3339, e.g. 2027-01-01T00:00:00Z; default: now).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub valid_from: Option<SystemTime>,
    /// Valid for this long from --valid-from (validUntil).
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    pub valid_for: Duration,
    /// Where to write the credential (the holder's copy).
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub key: IssuerKeyArgs,
    #[command(flatten)]
    pub status: StatusFileArg,
}

fn parse_attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

#[derive(Args)]
pub struct RevokeArgs {
    /// Provider id.
    pub name: String,
    /// The credential to revoke (its status list entry says which bit).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "index",
        conflicts_with = "index"
    )]
    pub credential: Option<PathBuf>,
    /// The status list index to revoke.
    #[arg(long)]
    pub index: Option<usize>,
    #[command(flatten)]
    pub status: StatusFileArg,
}

#[derive(Args)]
pub struct StatusListArgs {
    /// Provider id.
    pub name: String,
    /// How long a verifier may rely on this list (its `ttl`): a revocation takes at most this
    /// long to reach verifiers that follow the list.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Where to write the signed list (`vc+jwt`), e.g. for the provider's web server.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Publish it to the broker: the provider's member of the status-list topic family,
    /// keyed by the list's id. Run it at least once per TTL (a cron job), or the broker
    /// answers the provider's credentials `unavailable` once its copy is older than the TTL.
    #[arg(long, required_unless_present = "out")]
    pub publish: bool,
    #[command(flatten)]
    pub key: IssuerKeyArgs,
    #[command(flatten)]
    pub status: StatusFileArg,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

fn now_ms() -> i64 {
    epoch_millis(SystemTime::now())
}

pub fn issue(a: IssueArgs) -> Result<ExitCode> {
    let holder_jwk: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&a.holder_key)
            .with_context(|| format!("reading {}", a.holder_key.display()))?,
    )
    .with_context(|| format!("{} is not a JWK", a.holder_key.display()))?;
    let holder =
        key_from_jwk(&holder_jwk).with_context(|| format!("{}", a.holder_key.display()))?;
    let attributes: BTreeMap<String, String> = a.attributes.iter().cloned().collect();
    ensure!(
        attributes.len() == a.attributes.len(),
        "an attribute is given twice"
    );
    let signer = a.key.signer(&a.name)?;
    let mut book = a.status.read(&a.name)?;
    ensure!(
        book.issued.len() < LIST_BITS / 2,
        "the status list is half full ({} credentials): start a new list before issuing more",
        book.issued.len()
    );
    // A random free index: consecutive ones would tell verifiers who was issued when.
    let index = loop {
        let i = rand::rng().random_range(0..LIST_BITS);
        if !book.issued.contains(&i) {
            break i;
        }
    };
    let now = now_ms();
    let valid_from = a.valid_from.map_or(now, epoch_millis);
    let issuer = provider_issuer(&a.name);
    let token = credential::issue(
        a.format.into(),
        &Issuance {
            issuer: &issuer,
            attributes: &attributes,
            holder: &holder,
            issued_at: now,
            valid_from,
            valid_until: valid_from + a.valid_for.as_millis() as i64,
            status: Some(StatusEntry {
                list: book.list.clone(),
                index,
            }),
        },
        &signer,
    )?;
    // The index is taken before the credential exists anywhere: a crash between the two
    // wastes an index, never gives one to two credentials.
    book.issued.insert(index);
    a.status.write(&a.name, &book)?;
    std::fs::write(&a.out, &token).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "issued a {} credential to the holder of {} ({} attributes: {}), valid for {}",
        Format::from(a.format).name(),
        a.holder_key.display(),
        attributes.len(),
        attributes.keys().cloned().collect::<Vec<_>>().join(", "),
        humantime::format_duration(a.valid_for)
    );
    println!("  written to:  {}", a.out.display());
    println!(
        "  signed with: {}",
        signer.current_key_id().map_err(anyhow::Error::msg)?
    );
    println!("  status:      {} #{index}", book.list);
    Ok(ExitCode::SUCCESS)
}

/// The status list index a credential file names.
fn index_of(credential: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(credential)
        .with_context(|| format!("reading {}", credential.display()))?;
    let signed = text.trim().split('~').next().unwrap_or_default();
    let payload = jose::parse(signed)
        .and_then(|jws| jws.json())
        .with_context(|| format!("{} is not a credential", credential.display()))?;
    let entry = StatusEntry::from_json(&payload["credentialStatus"])?
        .with_context(|| format!("{} has no status list entry", credential.display()))?;
    Ok(entry.index)
}

pub fn revoke(a: RevokeArgs) -> Result<ExitCode> {
    let index = match (&a.credential, a.index) {
        (Some(path), _) => index_of(path)?,
        (None, Some(i)) => i,
        (None, None) => unreachable!("clap requires one"),
    };
    let mut book = a.status.read(&a.name)?;
    if !book.issued.contains(&index) {
        bail!(
            "no credential of `{}` has status index {index} (see {})",
            a.name,
            a.status.path(&a.name).display()
        );
    }
    if !book.revoked.insert(index) {
        println!("index {index} was already revoked");
        return Ok(ExitCode::SUCCESS);
    }
    a.status.write(&a.name, &book)?;
    println!(
        "revoked index {index} of {}; verifiers see it once they read a status list made from now on (`pavilion provider status-list {}`)",
        book.list, a.name
    );
    Ok(ExitCode::SUCCESS)
}

pub fn status_list(a: StatusListArgs) -> Result<ExitCode> {
    let book = a.status.read(&a.name)?;
    let mut bits = Bitstring::default();
    for &i in &book.revoked {
        bits.set(i)?;
    }
    let list = StatusList {
        url: book.list.clone(),
        issuer: provider_issuer(&a.name),
        valid_from: now_ms(),
        ttl_ms: a.ttl.as_millis() as i64,
        bits,
    };
    let token = list
        .issue(&a.key.signer(&a.name)?)
        .map_err(anyhow::Error::msg)?;
    let summary = format!(
        "status list {} ({} revoked of {} issued), fresh for {}",
        list.url,
        book.revoked.len(),
        book.issued.len(),
        humantime::format_duration(a.ttl),
    );
    if let Some(out) = &a.out {
        std::fs::write(out, &token).with_context(|| format!("writing {}", out.display()))?;
        println!("{summary}, written to {}", out.display());
    }
    if a.publish {
        let topic = provider_topic(&a.cluster, StatusListPublished::FULL_NAME, &a.name)?;
        let settings = cli::settings(&a.cluster, "cli")?;
        // Providers onboarded before status lists existed have no topic yet.
        tokio::runtime::Runtime::new()?
            .block_on(ensure_topics(&settings, &[&topic]))
            .with_context(|| format!("creating {}", topic.name))?;
        let record = StatusListPublished {
            provider_id: a.name.clone(),
            list_id: list.url.clone(),
            credential: token,
            published_at: now_ms(),
        };
        let producer = PlainProducer::new(&settings)?;
        producer.send(
            &topic.name,
            list.url.as_bytes(),
            &Registry::builtin().encode(&record)?,
        )?;
        producer.flush()?;
        println!("{summary}, published on {}", topic.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pavilion holder …`: what a member's wallet does with a credential.
#[derive(Subcommand)]
pub enum HolderCommand {
    /// Make a holder key pair: the private JWK (owner-only file) and its public JWK beside it
    /// (`<FILE>.pub`), which the provider issues credentials to.
    Keygen {
        /// The private key's file.
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Present a credential to a verifier: disclose the attributes named (an SD-JWT VC) and
    /// bind the presentation to the verifier's nonce and audience with the holder's key.
    Present(PresentArgs),
}

#[derive(Args)]
pub struct PresentArgs {
    /// The credential file.
    #[arg(long, value_name = "FILE")]
    pub credential: PathBuf,
    /// The holder's private key (from `pavilion holder keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Attributes to disclose, comma-separated (an SD-JWT VC discloses only these; a VC-JWT
    /// always shows all of its attributes).
    #[arg(long, value_delimiter = ',')]
    pub disclose: Vec<String>,
    /// The verifier's nonce (a request's nonce).
    #[arg(long)]
    pub nonce: String,
    /// The verifier.
    #[arg(long, default_value = "pavilion")]
    pub audience: String,
    /// Where to write the presentation (default: stdout).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
}

pub fn holder(command: HolderCommand) -> Result<ExitCode> {
    match command {
        HolderCommand::Keygen { out } => {
            let key = SigningKey::from_bytes(&rand::rng().random());
            let public = jwk(&key.verifying_key());
            let mut private = public.clone();
            private["d"] = serde_json::json!(jose::base64url(key.to_bytes()));
            super::tenant::write_secret(&out, private.to_string().as_bytes())?;
            let public_path = PathBuf::from(format!("{}.pub", out.display()));
            std::fs::write(&public_path, public.to_string())
                .with_context(|| format!("writing {}", public_path.display()))?;
            println!(
                "holder key: {} (private, owner-only), {} (public: give it to the issuer)",
                out.display(),
                public_path.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        HolderCommand::Present(a) => {
            let credential = std::fs::read_to_string(&a.credential)
                .with_context(|| format!("reading {}", a.credential.display()))?;
            let key = holder_key(&a.key)?;
            let presentation = credential::present(
                &credential,
                &a.disclose,
                &key,
                &a.audience,
                &a.nonce,
                now_ms(),
            )?;
            match &a.out {
                Some(path) => std::fs::write(path, &presentation)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{presentation}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn holder_key(path: &Path) -> Result<SigningKey> {
    let jwk: serde_json::Value = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a JWK", path.display()))?;
    let d = jwk["d"]
        .as_str()
        .and_then(|d| jose::base64url_decode(d).ok())
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .with_context(|| format!("{} holds no Ed25519 private key (d)", path.display()))?;
    let key = SigningKey::from_bytes(&d);
    ensure!(
        key_from_jwk(&jwk)? == key.verifying_key(),
        "{}: its private and public halves do not match",
        path.display()
    );
    Ok(key)
}
