//! `pavilion provider …`: what a data provider's operator runs. Onboarding registers the
//! provider and creates its keys; loading encodes its records as OPRF outputs and publishes
//! what changed (with commitments to its members' numeric attributes); `serve-oprf` answers
//! relying parties' blinded evaluations; `serve-evidence` (in `evidence.rs`) proves predicates
//! over the committed attributes for the broker.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use pavilion_client::{endpoints_of, registry_endpoints, OprfUrl};
use pavilion_kafka::{ensure_topics, PlainProducer, TopicReader};
use pavilion_provider::attributes::{AttributeBook, AttributeSpec};
use pavilion_provider::normalize::IdentifierKind;
use pavilion_provider::oprf::SUITE;
use pavilion_provider::secrets::{ProviderSecrets, BBS_KEY_ID};
use pavilion_provider::service::{OprfService, ServiceLimits, TenantDirectory};
use pavilion_provider::set::{self, EncodedSet};
use pavilion_provider::source::{self, Columns};
use pavilion_runtime::clock::epoch_millis;
use pavilion_schemas::{
    Event, EvidenceRequest, Provider, ProviderKey, ProviderSetEntry, ProviderState, Registry,
    StatusListPublished, Tenant,
};

use super::tenant;
use super::{read_latest, Writer};
use crate::cli::{self, parse_duration, ClusterArgs};

#[derive(Subcommand)]
pub enum ProviderCommand {
    /// Register a provider: create its OPRF and attestation keys (sealed in a key file that
    /// never leaves the provider), its set topic, and its entry on the provider registry.
    Onboard(OnboardArgs),
    /// Encode the provider's records (CSV or a PostgreSQL table) as H(F_k(x)) with signed
    /// attestations and publish what changed since the last load.
    Load(LoadArgs),
    /// Serve OPRF evaluations over HTTP to registered tenants, with per-tenant rate limits.
    ServeOprf(ServeArgs),
    /// Answer the broker's proof requests: prove predicates ("born on or before", "at
    /// least") over the attributes `load --attribute` committed to, with Groth16.
    ServeEvidence(super::evidence::ServeEvidenceArgs),
    /// List registered providers.
    List(ClusterArgs),
    /// Print every registered provider's public keys as one JSON document (its issuer id,
    /// state, and each key as a JWK: Ed25519 issuer keys, BBS keys), for relying parties to
    /// check credentials and disclosures with the providers' keys alone: publish it beside
    /// the broker's JWKS.
    Keys(ProviderKeysArgs),
    /// Issue a credential about a member to the member's wallet (SD-JWT VC or VC-JWT), with
    /// a bit of its own in the provider's status list.
    Issue(super::credentials::IssueArgs),
    /// Revoke an issued credential: set its bit for the next `status-list`.
    Revoke(super::credentials::RevokeArgs),
    /// Sign the provider's Bitstring Status List (revoked credentials) with a TTL.
    StatusList(super::credentials::StatusListArgs),
    /// Suspend a provider: the broker stops asking it and stops trusting the credentials it
    /// issued, until `activate`.
    Suspend(StateArgs),
    /// Make a suspended provider active again.
    Activate(StateArgs),
    /// Put the current key of an HSM token in the provider's record as an issuer key, so
    /// credentials `issue --hsm-token` signs verify against the registry.
    RegisterKey(RegisterKeyArgs),
}

/// Where the provider's sealed keys are and how to open them.
#[derive(Args, Clone)]
pub struct KeyFileArgs {
    /// The sealed key file (default: `<NAME>.provider-key` in the current directory).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// A file holding the passphrase; otherwise $PAVILION_PROVIDER_PASSPHRASE.
    #[arg(long, env = "PAVILION_PROVIDER_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl KeyFileArgs {
    fn path(&self, provider: &str) -> PathBuf {
        self.key_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{provider}.provider-key")))
    }

    pub(crate) fn passphrase(&self) -> Result<Vec<u8>> {
        let phrase = match &self.passphrase_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            None => std::env::var("PAVILION_PROVIDER_PASSPHRASE").map_err(|_| {
                anyhow::anyhow!(
                    "the key file's passphrase is needed: set PAVILION_PROVIDER_PASSPHRASE or pass --passphrase-file"
                )
            })?,
        };
        if phrase.is_empty() {
            bail!("the passphrase is empty");
        }
        Ok(phrase.into_bytes())
    }

    pub(crate) fn open(&self, provider: &str) -> Result<ProviderSecrets> {
        let path = self.path(provider);
        let sealed = std::fs::read(&path).with_context(|| {
            format!(
                "reading the key file {} (made by `pavilion provider onboard {provider}`)",
                path.display()
            )
        })?;
        let secrets = ProviderSecrets::open(&sealed, &self.passphrase()?)
            .with_context(|| format!("opening {}", path.display()))?;
        if secrets.provider_id != provider {
            bail!(
                "{} holds the keys of provider `{}`, not `{provider}`",
                path.display(),
                secrets.provider_id
            );
        }
        Ok(secrets)
    }
}

#[derive(Args)]
pub struct OnboardArgs {
    /// Provider id: letters, digits, `-`, `_` (it names the set topic).
    pub name: String,
    /// Region the provider's data resides in (policies filter providers by region).
    #[arg(long)]
    pub region: String,
    /// Claims it can answer, comma-separated (e.g. account_verified,fraud_listed).
    #[arg(long, value_delimiter = ',', required = true)]
    pub claims: Vec<String>,
    /// An endpoint of its OPRF evaluation service (`pavilion provider serve-oprf`), as URL
    /// or ZONE=URL; repeatable. The one plain URL is the primary endpoint, in --region; each
    /// ZONE=URL is one more, in the zone's region (the label up to its first `-`: eu-b is in
    /// region eu). Clients fail over between them, within the regions a request allows.
    #[arg(
        long = "oprf-url",
        value_name = "[ZONE=]URL",
        default_value = "http://127.0.0.1:8700",
        value_parser = clap::value_parser!(OprfUrl)
    )]
    pub oprf_urls: Vec<OprfUrl>,
    #[command(flatten)]
    pub keys: KeyFileArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args)]
pub struct LoadArgs {
    /// Provider id.
    pub name: String,
    /// A CSV file with a header row, or a postgres:// URL (then --table is required).
    #[arg(long)]
    pub from: String,
    /// Table to read with --from postgres://… (`name` or `schema.name`).
    #[arg(long)]
    pub table: Option<String>,
    /// Kind of identifier: email (case-folded), phone (E.164) or id (opaque); all NFC.
    #[arg(long, default_value = "email", value_parser = ["email", "phone", "id"])]
    pub id_kind: String,
    /// Identifier column (default: the kind's name).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Column listing the claims that hold for each record, separated by `;`.
    #[arg(long)]
    pub claims_column: Option<String>,
    /// A claim every record has (repeatable), e.g. `--claim fraud_listed` for a fraud list.
    #[arg(long = "claim")]
    pub claims: Vec<String>,
    /// An attribute, from the column of the same name (repeatable): `birthdate:date`
    /// (YYYY-MM-DD), `income:int` or `country:text`. Each member's entry carries a
    /// commitment to its dates and integers, which the broker checks predicate proofs
    /// against; all of a member's attributes are signed with the provider's BBS key, for
    /// selective disclosure. Values, salts and signatures go only to the sealed attributes
    /// file, for `serve-evidence`.
    #[arg(long = "attribute", value_name = "NAME:KIND", value_parser = AttributeSpec::parse)]
    pub attributes: Vec<AttributeSpec>,
    /// How long the BBS signatures over attributes vouch for them: a disclosure after that
    /// is refused until the provider loads again.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub attributes_valid_for: Duration,
    #[command(flatten)]
    pub book: AttributesFileArg,
    /// Records that are not valid identifiers tolerated before the load is refused (nothing
    /// is published when it is).
    #[arg(long, default_value_t = 0)]
    pub max_invalid: usize,
    /// Compute and report the changes without publishing them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub keys: KeyFileArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Where the sealed attribute values and salts are.
#[derive(Args, Clone)]
pub struct AttributesFileArg {
    /// The sealed attributes file (default: `<NAME>.provider-attributes`), opened with the
    /// key file's passphrase.
    #[arg(long)]
    pub attributes_file: Option<PathBuf>,
}

impl AttributesFileArg {
    pub(crate) fn path(&self, provider: &str) -> PathBuf {
        self.attributes_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{provider}.provider-attributes")))
    }

    /// The book, if the file exists.
    pub(crate) fn open(&self, provider: &str, passphrase: &[u8]) -> Result<Option<AttributeBook>> {
        let path = self.path(provider);
        let sealed = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let book = AttributeBook::open(&sealed, passphrase)
            .with_context(|| format!("opening {}", path.display()))?;
        if book.provider_id() != provider {
            bail!(
                "{} holds the attributes of provider `{}`, not `{provider}`",
                path.display(),
                book.provider_id()
            );
        }
        Ok(Some(book))
    }
}

#[derive(Args)]
pub struct ServeArgs {
    /// Provider id.
    pub name: String,
    /// Address to listen on.
    #[arg(long, env = "PAVILION_OPRF_LISTEN", default_value = "127.0.0.1:8700")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub http: crate::cli::HttpServerArgs,
    /// Also serve this file, the provider's signed status list (`provider status-list
    /// --out FILE`, re-signed within every TTL), to anyone at GET /v1/status-list.
    #[arg(long, value_name = "FILE")]
    pub status_list: Option<PathBuf>,
    /// Blinded elements per request, at most.
    #[arg(long, default_value_t = 1000)]
    pub max_batch: usize,
    /// Sustained evaluations per second per tenant.
    #[arg(long, default_value_t = NonZeroU32::new(100).expect("non-zero"))]
    pub rate: NonZeroU32,
    /// Evaluations a tenant may make at once; at least --max-batch.
    #[arg(long, default_value_t = NonZeroU32::new(1000).expect("non-zero"))]
    pub burst: NonZeroU32,
    /// Evaluations per tenant per UTC day; 0 for no quota.
    #[arg(long, default_value_t = 100_000)]
    pub daily_quota: u64,
    /// How far a request's timestamp may be from this clock.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub clock_skew: Duration,
    /// Worker threads evaluating batches.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[command(flatten)]
    pub keys: KeyFileArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args)]
pub struct ProviderKeysArgs {
    /// Write the document here instead of printing it.
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args)]
pub struct StateArgs {
    /// Provider id.
    pub name: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args)]
pub struct RegisterKeyArgs {
    /// Provider id.
    pub name: String,
    /// The HSM token (required) whose current key becomes an issuer key of the provider.
    #[command(flatten)]
    pub hsm: super::credentials::ProviderHsmArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

pub fn run(command: ProviderCommand) -> Result<ExitCode> {
    match command {
        ProviderCommand::Onboard(a) => onboard(a),
        ProviderCommand::Load(a) => load(a),
        ProviderCommand::ServeOprf(a) => serve(a),
        ProviderCommand::ServeEvidence(a) => super::evidence::serve(a),
        ProviderCommand::List(cluster) => list(&cluster),
        ProviderCommand::Keys(a) => keys(a),
        ProviderCommand::Issue(a) => super::credentials::issue(a),
        ProviderCommand::Revoke(a) => super::credentials::revoke(a),
        ProviderCommand::StatusList(a) => super::credentials::status_list(a),
        ProviderCommand::Suspend(a) => set_state(a, ProviderState::Suspended),
        ProviderCommand::Activate(a) => set_state(a, ProviderState::Active),
        ProviderCommand::RegisterKey(a) => register_key(a),
    }
}

fn valid_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!("provider id `{id}` must be 1-64 letters, digits, `-` or `_`");
    }
    Ok(())
}

fn now_ms() -> i64 {
    epoch_millis(SystemTime::now())
}

/// The registry topic and the provider's current record, if any (the greatest version of
/// this region's and the other regions' copies).
fn registry(cluster: &ClusterArgs, provider: &str) -> Result<(String, Option<Provider>)> {
    let topology = cli::load(&cluster.file)?;
    let topic = cli::topic_for(&topology, Provider::FULL_NAME)?.name;
    let mut latest = read_latest(
        cluster,
        &topology,
        &topic,
        |p: &Provider| p.provider_id.clone(),
        Provider::order,
    )?;
    Ok((topic, latest.remove(provider)))
}

/// The provider's member of the topic family holding `schema` (its set, its proof requests).
pub(crate) fn provider_topic(
    cluster: &ClusterArgs,
    schema: &str,
    provider: &str,
) -> Result<pavilion_runtime::topology::TopicSpec> {
    let topology = cli::load(&cluster.file)?;
    let family = cli::topic_for(&topology, schema)?;
    topology
        .family_topic(&family.name, provider)
        .with_context(|| format!("`{}` is not a topic family", family.name))
}

fn set_topic(
    cluster: &ClusterArgs,
    provider: &str,
) -> Result<pavilion_runtime::topology::TopicSpec> {
    provider_topic(cluster, ProviderSetEntry::FULL_NAME, provider)
}

/// Publishes `provider`, changed from the record [`registry`] read, stamped after it; a
/// provider's home is the region its data resides in.
fn publish_provider(cluster: &ClusterArgs, topic: &str, provider: &Provider) -> Result<()> {
    let mut provider = provider.clone();
    provider.stamp = Writer::of(&cluster.file).stamp(
        &format!("provider `{}`", provider.provider_id),
        provider.stamp.as_ref(),
        Some(&provider.region),
    )?;
    let producer = PlainProducer::new(&cli::settings(cluster, "cli")?)?;
    producer.send(
        topic,
        provider.provider_id.as_bytes(),
        &Registry::builtin().encode(&provider)?,
    )?;
    producer.flush()
}

fn onboard(a: OnboardArgs) -> Result<ExitCode> {
    valid_id(&a.name)?;
    let endpoints = registry_endpoints(&a.region, &a.oprf_urls)
        .map_err(|e| anyhow::anyhow!("--oprf-url:\n{e}"))?;
    let (registry_topic, existing) = registry(&a.cluster, &a.name)?;
    if existing.is_some() {
        bail!(
            "provider `{}` is already registered on {registry_topic}",
            a.name
        );
    }
    let set = set_topic(&a.cluster, &a.name)?;
    // Proof requests, where the topology answers predicates by proof (it declares the family).
    let topology = cli::load(&a.cluster.file)?;
    let asks = cli::topic_for(&topology, EvidenceRequest::FULL_NAME)
        .is_ok()
        .then(|| provider_topic(&a.cluster, EvidenceRequest::FULL_NAME, &a.name))
        .transpose()?;
    // Revocation lists of the credentials it issues, where the topology checks them.
    let status_lists = cli::topic_for(&topology, StatusListPublished::FULL_NAME)
        .is_ok()
        .then(|| provider_topic(&a.cluster, StatusListPublished::FULL_NAME, &a.name))
        .transpose()?;
    let path = a.keys.path(&a.name);
    if path.exists() {
        bail!(
            "{} exists; refusing to overwrite a key file",
            path.display()
        );
    }
    let passphrase = a.keys.passphrase()?;
    let secrets = ProviderSecrets::generate(&a.name)?;
    tenant::write_secret(&path, &secrets.seal(&passphrase)?)?;
    let settings = cli::settings(&a.cluster, "cli")?;
    tokio::runtime::Runtime::new()?
        .block_on(ensure_topics(
            &settings,
            &std::iter::once(&set)
                .chain(&asks)
                .chain(&status_lists)
                .collect::<Vec<_>>(),
        ))
        .with_context(|| format!("creating {}", set.name))?;
    let provider = Provider {
        stamp: None,
        provider_id: a.name.clone(),
        region: a.region,
        claims: a.claims,
        oprf_suite: SUITE.to_owned(),
        oprf_public_key: secrets.oprf.public_key().to_vec(),
        attestation_keys: std::iter::once(ProviderKey {
            key_id: secrets.attestation_key_id.clone(),
            algorithm: "Ed25519".into(),
            public_key: secrets.attestation.verifying_key().to_bytes().to_vec(),
        })
        .chain(secrets.bbs.as_ref().map(|k| ProviderKey {
            key_id: BBS_KEY_ID.into(),
            algorithm: pavilion_credentials::bbs::KEY_ALGORITHM.into(),
            public_key: k.public_key().to_bytes().to_vec(),
        }))
        .collect(),
        endpoints,
        state: ProviderState::Active,
        updated_at: now_ms(),
        set_loaded_at: None,
        set_size: None,
    };
    publish_provider(&a.cluster, &registry_topic, &provider)?;
    println!(
        "onboarded provider `{}` (region {}, claims {})",
        provider.provider_id,
        provider.region,
        provider.claims.join(",")
    );
    println!("  keys (sealed):   {}", path.display());
    println!(
        "  OPRF public key: {}",
        hex::encode(&provider.oprf_public_key)
    );
    for e in endpoints_of(&provider.region, &provider.endpoints) {
        println!(
            "  OPRF endpoint:   {} (zone {}, region {})",
            e.url, e.zone, e.region
        );
    }
    println!("  set topic:       {}", set.name);
    if let Some(asks) = &asks {
        println!("  proof requests:  {}", asks.name);
    }
    if let Some(lists) = &status_lists {
        println!("  status lists:    {}", lists.name);
    }
    println!(
        "next: `pavilion provider load {0} --from members.csv --claims-column claims [--attribute birthdate:date]`, `pavilion provider serve-oprf {0}` and, for predicates, `pavilion provider serve-evidence {0}`",
        provider.provider_id
    );
    Ok(ExitCode::SUCCESS)
}

fn set_state(a: StateArgs, state: ProviderState) -> Result<ExitCode> {
    let (registry_topic, existing) = registry(&a.cluster, &a.name)?;
    let Some(mut provider) = existing else {
        bail!(
            "provider `{}` is not registered on {registry_topic}",
            a.name
        );
    };
    if provider.state == state {
        println!("provider `{}` is already {state:?}", a.name);
        return Ok(ExitCode::SUCCESS);
    }
    if provider.state == ProviderState::Retired {
        bail!("provider `{}` is retired: it cannot come back", a.name);
    }
    let was = provider.state;
    provider.state = state;
    provider.updated_at = now_ms();
    publish_provider(&a.cluster, &registry_topic, &provider)?;
    println!("provider `{}`: {was:?} → {state:?}", a.name);
    Ok(ExitCode::SUCCESS)
}

fn register_key(a: RegisterKeyArgs) -> Result<ExitCode> {
    let (registry_topic, existing) = registry(&a.cluster, &a.name)?;
    let Some(mut provider) = existing else {
        bail!(
            "provider `{}` is not registered on {registry_topic}",
            a.name
        );
    };
    let hsm = a
        .hsm
        .open()?
        .context("name the HSM token with --hsm-token (or $PAVILION_PROVIDER_HSM_TOKEN)")?;
    let kid = hsm.current_key_id()?;
    let info = hsm
        .list()?
        .into_iter()
        .find(|k| k.kid == kid)
        .with_context(|| format!("the HSM lists no key `{kid}`"))?;
    if provider.attestation_keys.iter().any(|k| k.key_id == kid) {
        println!("`{kid}` is already a key of provider `{}`", a.name);
        return Ok(ExitCode::SUCCESS);
    }
    provider.attestation_keys.push(ProviderKey {
        key_id: kid.clone(),
        algorithm: "Ed25519".into(),
        public_key: hex::decode(&info.public_key).context("the HSM's public key")?,
    });
    provider.updated_at = now_ms();
    publish_provider(&a.cluster, &registry_topic, &provider)?;
    println!(
        "registered HSM key `{kid}` (token `{}`) as an issuer key of provider `{}`",
        a.hsm.hsm_token.as_deref().unwrap_or_default(),
        a.name
    );
    Ok(ExitCode::SUCCESS)
}

/// What is published now: set key → member (tombstoned keys removed).
fn published_set(cluster: &ClusterArgs, topic: &str) -> Result<EncodedSet> {
    let settings = cli::settings(cluster, "cli")?;
    let records = TopicReader::new(&settings, &[topic])?
        .read_to_end(Duration::from_secs(300))
        .with_context(|| format!("reading {topic}"))?;
    let mut set = EncodedSet::with_capacity(records.len());
    for r in records {
        let Ok(key) = <[u8; 32]>::try_from(r.key.as_slice()) else {
            continue;
        };
        match r.value {
            None => {
                set.remove(&key);
            }
            Some(v) => {
                let entry: ProviderSetEntry = Registry::builtin()
                    .decode(&v)
                    .with_context(|| format!("{topic}/{}@{}", r.partition, r.offset))?;
                set.insert(key, set::Member::of(entry));
            }
        }
    }
    Ok(set)
}

fn load(a: LoadArgs) -> Result<ExitCode> {
    let kind = IdentifierKind::parse(&a.id_kind).expect("clap checked the kind");
    if a.claims_column.is_none() && a.claims.is_empty() {
        bail!("say which claims hold: --claims-column COLUMN (per record) or --claim NAME (for every record)");
    }
    let secrets = a.keys.open(&a.name)?;
    let (registry_topic, provider) = registry(&a.cluster, &a.name)?;
    let Some(mut provider) = provider else {
        bail!(
            "provider `{}` is not registered (run `pavilion provider onboard` first)",
            a.name
        );
    };
    if provider.oprf_public_key != secrets.oprf.public_key() {
        bail!(
            "the key file's OPRF key is not the one registered for `{}`",
            a.name
        );
    }
    let columns = Columns {
        identifier: a.id_column.clone().unwrap_or_else(|| a.id_kind.clone()),
        claims: a.claims_column.clone(),
        fixed_claims: a.claims.clone(),
        attributes: a.attributes.iter().map(|s| s.name.clone()).collect(),
    };
    let passphrase = a.keys.passphrase()?;
    let previous_book = a.book.open(&a.name, &passphrase)?;
    let started = Instant::now();
    let records = if a.from.starts_with("postgres://") || a.from.starts_with("postgresql://") {
        let table = a
            .table
            .as_deref()
            .context("--from postgres://… needs --table NAME")?;
        source::read_postgres(&a.from, table, &columns)?
    } else {
        source::read_csv(Path::new(&a.from), &columns)?
    };
    let read_took = started.elapsed();
    eprintln!(
        "read {} records from {} in {read_took:.1?}",
        records.len(),
        a.from
    );

    let progress = cli::bar(records.len() as u64, "encoding");
    let done = AtomicUsize::new(0);
    let encode_started = Instant::now();
    let (mut encoded, values, rejected) =
        set::encode(&secrets, kind, &a.attributes, &records, &|n| {
            let total = done.fetch_add(n, Ordering::Relaxed) + n;
            progress.set_position(total as u64);
        });
    progress.finish_and_clear();
    let encode_took = encode_started.elapsed();
    for r in rejected.iter().take(10) {
        eprintln!("  invalid record at line {}: {}", r.line, r.error);
    }
    if rejected.len() > a.max_invalid {
        bail!(
            "{} invalid record(s) (at most {} allowed with --max-invalid); nothing was published",
            rejected.len(),
            a.max_invalid
        );
    }
    let mut book = (!a.attributes.is_empty())
        .then(|| AttributeBook::reloaded(&a.name, &values, previous_book.as_ref()));
    match (&mut book, &secrets.bbs) {
        (Some(book), Some(key)) => {
            let progress = cli::bar(values.len() as u64, "signing attributes (BBS)");
            let names: Vec<String> = a.attributes.iter().map(|s| s.name.clone()).collect();
            let expires = now_ms() + a.attributes_valid_for.as_millis() as i64;
            book.sign(key, &names, &values, expires, &|n| progress.inc(n as u64))?;
            progress.finish_and_clear();
        }
        (Some(_), None) => eprintln!(
            "warning: the key file of `{}` predates BBS keys: attributes are committed to but not signed, so none can be disclosed (onboard the provider again for a BBS key)",
            a.name
        ),
        (None, _) => {}
    }
    if let Some(book) = &book {
        set::commit(&mut encoded, book)?;
    }
    let set_topic = set_topic(&a.cluster, &a.name)?;
    let published = published_set(&a.cluster, &set_topic.name)?;
    let changes = set::changes(&encoded, &published);
    println!(
        "{} records → {} members: {} new or changed, {} removed, {} unchanged, {} invalid",
        records.len(),
        encoded.len(),
        changes.upserts.len(),
        changes.removals.len(),
        changes.unchanged,
        rejected.len()
    );
    if a.dry_run {
        println!("dry run: nothing published");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(book) = &book {
        // Before the entries: the evidence service must be able to open every commitment
        // the moment the broker sees it. A load that fails after this leaves the book ahead
        // of the set; the next load keeps its salts, so it publishes the same commitments.
        let path = a.book.path(&a.name);
        tenant::replace_secret(&path, &book.seal(&passphrase)?)?;
        println!(
            "attributes {} of {} members sealed in {} (for `pavilion provider serve-evidence {}`)",
            a.attributes
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            book.len(),
            path.display(),
            a.name
        );
    }
    let publish_started = Instant::now();
    let producer = PlainProducer::new(&cli::settings(&a.cluster, "cli")?)?;
    let attested_at = now_ms();
    let progress = cli::bar(
        (changes.upserts.len() + changes.removals.len()) as u64,
        "publishing",
    );
    let registry = Registry::builtin();
    for chunk in changes.upserts.chunks(4_096) {
        use rayon::prelude::*;
        let entries: Vec<ProviderSetEntry> = chunk
            .par_iter()
            .map(|(key, member)| set::attest(&secrets, key, member, attested_at))
            .collect();
        for entry in &entries {
            producer.send(&set_topic.name, &entry.token, &registry.encode(entry)?)?;
        }
        progress.inc(chunk.len() as u64);
    }
    for key in &changes.removals {
        producer.delete(&set_topic.name, key)?;
        progress.inc(1);
    }
    producer.flush()?;
    progress.finish_and_clear();
    // Only now is the set complete: the registry's load time is what the psi stage's
    // freshness rule reads.
    provider.set_loaded_at = Some(now_ms());
    provider.set_size = Some(encoded.len() as i64);
    provider.updated_at = now_ms();
    publish_provider(&a.cluster, &registry_topic, &provider)?;
    let total = started.elapsed();
    println!(
        "published to {} in {:.1?} (read {:.1?}, encode {:.1?} = {:.0} records/s, publish {:.1?}); {:.0} records/s overall",
        set_topic.name,
        total,
        read_took,
        encode_took,
        records.len() as f64 / encode_took.as_secs_f64().max(1e-9),
        publish_started.elapsed(),
        records.len() as f64 / total.as_secs_f64().max(1e-9),
    );
    Ok(ExitCode::SUCCESS)
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    let tls = a.http.tls(a.listen, "--listen")?;
    let secrets = a.keys.open(&a.name)?;
    let (_, provider) = registry(&a.cluster, &a.name)?;
    match provider {
        None => bail!("provider `{}` is not registered", a.name),
        Some(p) if p.oprf_public_key != secrets.oprf.public_key() => {
            bail!(
                "the key file's OPRF key is not the one registered for `{}`",
                a.name
            )
        }
        Some(_) => {}
    }
    let topology = cli::load(&a.cluster.file)?;
    let tenants_topic = cli::topic_for(&topology, Tenant::FULL_NAME)?.name;
    let directory = Arc::new(TenantDirectory::default());
    let settings = cli::settings(&a.cluster, "cli")?;
    // The registry of the region this serves in, and the other regions' copies of it.
    let sources = super::existing(&a.cluster, &topology, &tenants_topic)?;
    let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
    let reader = TopicReader::new(&settings, &sources)?;
    let mut known = BTreeSet::new();
    for r in reader.read_to_end(Duration::from_secs(60))? {
        if let Some(t) = r
            .value
            .and_then(|v| Registry::builtin().decode::<Tenant>(&v).ok())
        {
            known.insert(t.tenant_id.clone());
            directory.update(t);
        }
    }
    // Follow tenant changes (new keys, suspensions) while serving.
    let follow = directory.clone();
    std::thread::Builder::new()
        .name("tenants".into())
        .spawn(move || loop {
            match reader.poll(Duration::from_millis(500)) {
                Ok(Some(r)) => {
                    if let Some(t) = r
                        .value
                        .and_then(|v| Registry::builtin().decode::<Tenant>(&v).ok())
                    {
                        follow.update(t);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading tenants");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })?;
    let limits = ServiceLimits {
        max_batch: a.max_batch,
        rate_per_second: a.rate,
        burst: a.burst,
        daily_quota: (a.daily_quota > 0).then_some(a.daily_quota),
        clock_skew: a.clock_skew,
    };
    let mut service =
        OprfService::new(&a.name, secrets.oprf, directory, limits).map_err(anyhow::Error::msg)?;
    if let Some(path) = &a.status_list {
        service = service.with_status_list(path.clone());
    }
    let service = Arc::new(service);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(a.workers.max(1))
        .enable_all()
        .build()?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())?;
    }
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        eprintln!(
            "serving OPRF evaluations for `{}` on {}://{}{} ({} tenants known; POST /v1/oprf/evaluate, GET /v1/oprf/key, /v1/status-list, /metrics)",
            a.name,
            a.http.scheme(),
            listener.local_addr()?,
            if tls.as_ref().is_some_and(|t| t.requires_client_certificates()) {
                ", client certificates required"
            } else {
                ""
            },
            known.len()
        );
        pavilion_http::serve(listener, tls, service.router(), cli::until(shutdown))
            .await
            .context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}

fn keys(a: ProviderKeysArgs) -> Result<ExitCode> {
    let topology = cli::load(&a.cluster.file)?;
    let topic = cli::topic_for(&topology, Provider::FULL_NAME)?.name;
    let mut latest = std::collections::BTreeMap::new();
    for (_, p) in cli::read_all::<Provider>(&a.cluster, &topic)? {
        latest.insert(p.provider_id.clone(), p);
    }
    let document = super::credentials::provider_keys(latest.values());
    let text = serde_json::to_string_pretty(&document)? + "\n";
    match &a.out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn list(cluster: &ClusterArgs) -> Result<ExitCode> {
    let topology = cli::load(&cluster.file)?;
    let topic = cli::topic_for(&topology, Provider::FULL_NAME)?.name;
    let mut latest = std::collections::BTreeMap::new();
    for (_, p) in cli::read_all::<Provider>(cluster, &topic)? {
        latest.insert(p.provider_id.clone(), p);
    }
    for p in latest.values() {
        let loaded = match (p.set_loaded_at, p.set_size) {
            (Some(at), Some(n)) => format!(
                "{n} members, loaded {}",
                humantime::format_rfc3339_seconds(
                    SystemTime::UNIX_EPOCH + Duration::from_millis(at as u64)
                )
            ),
            _ => "no set loaded".into(),
        };
        let endpoints: Vec<String> = endpoints_of(&p.region, &p.endpoints)
            .iter()
            .map(|e| e.to_string())
            .collect();
        println!(
            "{:<16} {:?} region={} claims={} oprf={} ({loaded})",
            p.provider_id,
            p.state,
            p.region,
            p.claims.join(","),
            if endpoints.is_empty() {
                "-".to_owned()
            } else {
                endpoints.join(", ")
            },
        );
    }
    if latest.is_empty() {
        println!("no providers on {topic} (add one with `pavilion provider onboard`)");
    }
    Ok(ExitCode::SUCCESS)
}
