//! `pavilion tenant …`: the tenant registry. Every change is a new revision of the tenant's
//! record on the compacted tenants topic; the registry is whatever that topic says.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use ed25519_dalek::SigningKey;
use pavilion_client::KeyFile;
use pavilion_kafka::PlainProducer;
use pavilion_runtime::clock::epoch_millis;
use pavilion_schemas::{Event, Registry, RequestSigningKey, Tenant, TenantConfig, TenantState};

use super::{read_latest, Writer};
use crate::cli::{self, ClusterArgs};
use crate::commands::acls::{self, Role};
use pavilion_kafka::acl::AccessAdmin;

/// Tenant registry commands.
#[derive(Subcommand)]
pub enum TenantCommand {
    /// Register a tenant (state `provisioned`, or `active` with --activate).
    Add(AddArgs),
    /// One line per tenant.
    List(ClusterArgs),
    /// A tenant's current record as JSON.
    Show(Target),
    /// Serve the tenant's requests (and grant its Kafka principal its ACLs again).
    Activate(ActivateArgs),
    /// Stop serving the tenant's requests (rejected as `tenant_suspended`); its Kafka ACLs and
    /// credential are revoked.
    Suspend(Target),
    /// Mark the tenant deleted (its requests are rejected as `unknown_tenant`); its Kafka ACLs
    /// and credential are revoked.
    Delete(Target),
    /// Register a request-signing key: a given public key, or a new key pair written to a file.
    AddKey(AddKeyArgs),
    /// Revoke a request-signing key from now on.
    RevokeKey(KeyTarget),
}

/// A tenant to act on.
#[derive(Args)]
pub struct Target {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Tenant id.
    pub tenant: String,
}

/// `tenant add`.
#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub target: Target,
    /// Display name.
    #[arg(long)]
    pub name: String,
    /// Sustained requests per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Requests allowed at once above the rate.
    #[arg(long, default_value_t = 100)]
    pub burst: i32,
    /// Requests per UTC day (none: unlimited).
    #[arg(long)]
    pub daily_quota: Option<i64>,
    /// Regions whose providers may answer; repeatable.
    #[arg(long = "region", default_value = "eu")]
    pub regions: Vec<String>,
    /// Decision topic (default `pavilion.decisions.<tenant>`).
    #[arg(long)]
    pub response_topic: Option<String>,
    /// Differential privacy budget of the tenant's analytics releases: ε per budget period
    /// (the analytics stage's `budget_period`). Default: the stage's `tenant_budget`.
    #[arg(long, value_name = "EPSILON")]
    pub privacy_budget: Option<f64>,
    /// Make it active at once.
    #[arg(long)]
    pub activate: bool,
    /// Issue the tenant's Kafka credential (its own SCRAM user, `<application>.tenant.<id>`)
    /// and write its client settings here, owner-only, for `--kafka-config`. An active
    /// tenant's principal may write requests and read its own decision topic, nothing else.
    #[arg(long, value_name = "FILE")]
    pub kafka_credentials: Option<PathBuf>,
}

/// `tenant activate`.
#[derive(Args)]
pub struct ActivateArgs {
    #[command(flatten)]
    pub target: Target,
    /// Issue a new Kafka credential (suspension revoked the old one) and write its client
    /// settings here, owner-only.
    #[arg(long, value_name = "FILE")]
    pub kafka_credentials: Option<PathBuf>,
}

/// `tenant add-key`.
#[derive(Args)]
pub struct AddKeyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Key id, unique for the tenant.
    #[arg(long)]
    pub key_id: String,
    /// The Ed25519 public key, 64 hex digits.
    #[arg(
        long,
        conflicts_with = "generate",
        required_unless_present = "generate"
    )]
    pub public_key: Option<String>,
    /// Generate a key pair and write it (secret included, mode 0600) to this file.
    #[arg(long, value_name = "KEYFILE")]
    pub generate: Option<PathBuf>,
    /// Valid for this long from now (default: until revoked).
    #[arg(long, value_parser = cli::parse_duration)]
    pub valid_for: Option<Duration>,
}

/// A tenant's key.
#[derive(Args)]
pub struct KeyTarget {
    #[command(flatten)]
    pub target: Target,
    /// Key id.
    #[arg(long)]
    pub key_id: String,
}

struct TenantRegistry {
    topic: String,
    tenants: BTreeMap<String, Tenant>,
}

/// The registry as this region's tenancy sees it: its topic and the other regions' copies.
fn load(cluster: &ClusterArgs) -> Result<TenantRegistry> {
    let topology = cli::load(&cluster.file)?;
    let topic = cli::topic_for(&topology, Tenant::FULL_NAME)?.name;
    let tenants = read_latest(
        cluster,
        &topology,
        &topic,
        |t: &Tenant| t.tenant_id.clone(),
        Tenant::order,
    )?;
    Ok(TenantRegistry { topic, tenants })
}

/// An active tenant's own topics: its decisions (the topology's `pavilion.Decision` family)
/// and its analytics releases, where the topology has them.
fn ensure_tenant_topics(cluster: &ClusterArgs, tenant: &str) -> Result<()> {
    let topology = cli::load(&cluster.file)?;
    let families = cli::topic_for(&topology, pavilion_schemas::Decision::FULL_NAME)
        .ok()
        .map(|f| f.name)
        .into_iter()
        .chain(acls::tenant_releases(&topology));
    let specs: Vec<_> = families
        .filter_map(|family| topology.family_topic(&family, tenant))
        .collect();
    if specs.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    tokio::runtime::Runtime::new()?
        .block_on(pavilion_kafka::ensure_topics(
            &cli::settings(cluster, "cli")?,
            &specs.iter().collect::<Vec<_>>(),
        ))
        .with_context(|| format!("creating {}", names.join(", ")))?;
    Ok(())
}

/// Publishes the tenant's next revision, and brings its Kafka principal in line: an active
/// tenant has its ACLs (and, with `credentials`, a new credential written there); any other
/// loses them and its credential before the record says so, so there is no moment when a
/// suspended tenant may still read.
fn publish(
    cluster: &ClusterArgs,
    topic: &str,
    tenant: &Tenant,
    credentials: Option<&std::path::Path>,
) -> Result<()> {
    let topology = cli::load(&cluster.file)?;
    let settings = cli::settings(cluster, "cli")?;
    // A broker whose clients do not authenticate has no principals: nothing to grant.
    let secured = acls::secured(&settings);
    if credentials.is_some() && !secured {
        bail!("--kafka-credentials: this broker takes no credentials (no SASL user in --kafka-config)");
    }
    let admin = AccessAdmin::new(&settings)?;
    let role = Role::Tenant(tenant.tenant_id.clone());
    let user = role.user(&topology.application);
    if tenant.state == TenantState::Active {
        ensure_tenant_topics(cluster, &tenant.tenant_id)?;
    } else if secured {
        let removed = acls::revoke(&admin, &user)
            .with_context(|| format!("revoking {user}'s Kafka access"))?;
        println!("revoked User:{user}: {removed} ACLs and its credential");
    }
    let producer = PlainProducer::new(&cli::settings(cluster, "cli")?)?;
    producer.send(
        topic,
        tenant.tenant_id.as_bytes(),
        &Registry::builtin().encode(tenant)?,
    )?;
    producer.flush()?;
    println!(
        "{} revision {}: {:?}, {} key(s)",
        tenant.tenant_id,
        tenant.revision,
        tenant.state,
        tenant.signing_keys.len()
    );
    if let Some(path) = credentials {
        acls::write_credential(&admin, &settings, &user, path)?;
        println!("credential of User:{user} written to {}", path.display());
    }
    if tenant.state == TenantState::Active && secured {
        let rules = role.acls(&topology)?;
        admin
            .create(&rules)
            .with_context(|| format!("granting {user} its ACLs"))?;
        println!("User:{user}: {} ACLs", rules.len());
    }
    Ok(())
}

/// Applies `change` to the current record of `target.tenant` and publishes the next revision.
fn update(
    target: &Target,
    credentials: Option<&std::path::Path>,
    change: impl FnOnce(&mut Tenant, i64) -> Result<()>,
) -> Result<ExitCode> {
    let registry = load(&target.cluster)?;
    let Some(mut tenant) = registry.tenants.get(&target.tenant).cloned() else {
        bail!(
            "no tenant `{}` on {} (add it with `pavilion tenant add`)",
            target.tenant,
            registry.topic
        );
    };
    let now = epoch_millis(SystemTime::now());
    change(&mut tenant, now)?;
    tenant.stamp = Writer::of(&target.cluster.file).stamp(
        &format!("tenant `{}`", tenant.tenant_id),
        tenant.stamp.as_ref(),
        None,
    )?;
    tenant.revision += 1;
    tenant.updated_at = now;
    publish(&target.cluster, &registry.topic, &tenant, credentials)?;
    Ok(ExitCode::SUCCESS)
}

fn valid_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("`{id}` is not a valid id: 1-64 letters, digits, `-`, `_` or `.`");
    }
    Ok(())
}

pub fn run(command: TenantCommand) -> Result<ExitCode> {
    match command {
        TenantCommand::Add(a) => {
            valid_id(&a.target.tenant)?;
            let registry = load(&a.target.cluster)?;
            if registry.tenants.contains_key(&a.target.tenant) {
                bail!(
                    "tenant `{}` exists; change it with activate/suspend/add-key",
                    a.target.tenant
                );
            }
            if a.rate <= 0.0 || a.burst < 1 {
                bail!("--rate must be > 0 and --burst at least 1");
            }
            let now = epoch_millis(SystemTime::now());
            let tenant = Tenant {
                // A new tenant's home is the region it is added in.
                stamp: Writer::of(&a.target.cluster.file).stamp(
                    &format!("tenant `{}`", a.target.tenant),
                    None,
                    None,
                )?,
                tenant_id: a.target.tenant.clone(),
                display_name: a.name,
                state: if a.activate {
                    TenantState::Active
                } else {
                    TenantState::Provisioned
                },
                signing_keys: Vec::new(),
                config: TenantConfig {
                    rate_limit_per_second: a.rate,
                    burst: a.burst,
                    daily_quota: a.daily_quota,
                    allowed_regions: a.regions,
                    response_topic: a
                        .response_topic
                        .unwrap_or_else(|| format!("pavilion.decisions.{}", a.target.tenant)),
                    privacy_budget_micro: a.privacy_budget.map(micro_epsilon).transpose()?,
                },
                updated_at: now,
                revision: 1,
            };
            publish(
                &a.target.cluster,
                &registry.topic,
                &tenant,
                a.kafka_credentials.as_deref(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::List(cluster) => {
            let registry = load(&cluster)?;
            if registry.tenants.is_empty() {
                println!("no tenants on {}", registry.topic);
            }
            for t in registry.tenants.values() {
                let live = t
                    .signing_keys
                    .iter()
                    .filter(|k| k.revoked_at.is_none())
                    .count();
                println!(
                    "{:<24} {:<12} rev {:<4} {:>8.1}/s burst {:<5} keys {live}/{}  {}",
                    t.tenant_id,
                    format!("{:?}", t.state).to_lowercase(),
                    t.revision,
                    t.config.rate_limit_per_second,
                    t.config.burst,
                    t.signing_keys.len(),
                    t.display_name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Show(target) => {
            let registry = load(&target.cluster)?;
            let tenant = registry
                .tenants
                .get(&target.tenant)
                .with_context(|| format!("no tenant `{}`", target.tenant))?;
            let mut json = serde_json::to_value(tenant)?;
            for key in json["signing_keys"].as_array_mut().into_iter().flatten() {
                let bytes: Vec<u8> =
                    serde_json::from_value(key["public_key"].take()).unwrap_or_default();
                key["public_key"] = hex::encode(bytes).into();
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
        TenantCommand::Activate(a) => update(&a.target, a.kafka_credentials.as_deref(), |t, _| {
            set_state(t, TenantState::Active)
        }),
        TenantCommand::Suspend(t) => update(&t, None, |tenant, _| {
            set_state(tenant, TenantState::Suspended)
        }),
        TenantCommand::Delete(t) => update(&t, None, |tenant, _| {
            set_state(tenant, TenantState::Deleted)
        }),
        TenantCommand::AddKey(a) => {
            valid_id(&a.key_id)?;
            let public = match (&a.public_key, &a.generate) {
                (Some(hex_key), _) => {
                    let bytes = hex::decode(hex_key.trim()).context("--public-key is not hex")?;
                    let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                        anyhow::anyhow!("--public-key must be 32 bytes (64 hex digits)")
                    })?;
                    ed25519_dalek::VerifyingKey::from_bytes(&array)
                        .context("--public-key is not a valid Ed25519 point")?;
                    bytes
                }
                (None, Some(path)) => {
                    if path.exists() {
                        bail!(
                            "{} exists; refusing to overwrite a key file",
                            path.display()
                        );
                    }
                    let mut seed = [0u8; 32];
                    rand::Rng::fill(&mut rand::rng(), &mut seed);
                    let signing = SigningKey::from_bytes(&seed);
                    let file = KeyFile {
                        tenant_id: a.target.tenant.clone(),
                        key_id: a.key_id.clone(),
                        secret_key: hex::encode(seed),
                        public_key: hex::encode(signing.verifying_key().to_bytes()),
                    };
                    write_secret(path, &serde_json::to_vec_pretty(&file)?)?;
                    eprintln!("wrote key pair to {} (keep it secret)", path.display());
                    signing.verifying_key().to_bytes().to_vec()
                }
                (None, None) => unreachable!("clap requires one of them"),
            };
            update(&a.target, None, |tenant, now| {
                if tenant.signing_keys.iter().any(|k| k.key_id == a.key_id) {
                    bail!(
                        "tenant `{}` already has a key `{}`",
                        tenant.tenant_id,
                        a.key_id
                    );
                }
                tenant.signing_keys.push(RequestSigningKey {
                    key_id: a.key_id.clone(),
                    public_key: public,
                    not_before: now,
                    not_after: a.valid_for.map(|d| now + d.as_millis() as i64),
                    revoked_at: None,
                });
                Ok(())
            })
        }
        TenantCommand::RevokeKey(k) => update(&k.target, None, |tenant, now| {
            let key = tenant
                .signing_keys
                .iter_mut()
                .find(|key| key.key_id == k.key_id)
                .with_context(|| format!("tenant has no key `{}`", k.key_id))?;
            key.revoked_at = Some(now);
            Ok(())
        }),
    }
}

fn set_state(tenant: &mut Tenant, state: TenantState) -> Result<()> {
    if tenant.state == TenantState::Deleted {
        bail!("tenant `{}` is deleted", tenant.tenant_id);
    }
    tenant.state = state;
    Ok(())
}

pub fn write_secret(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    Ok(pavilion_keys::write_private(path, bytes)?)
}

/// Replaces a secret file atomically (written beside it, owner-only, then renamed over it), so
/// a reader never sees half of it.
pub fn replace_secret(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".new");
    let staged = path.with_file_name(name);
    match std::fs::remove_file(&staged) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", staged.display()))
        }
        _ => {}
    }
    write_secret(&staged, bytes)?;
    std::fs::rename(&staged, path)
        .with_context(|| format!("renaming {} to {}", staged.display(), path.display()))
}

/// A budget of ε as the ledger keeps it (`pavilion_analytics::micro_floor`), once checked.
fn micro_epsilon(epsilon: f64) -> Result<i64> {
    if !(epsilon.is_finite() && epsilon > 0.0 && epsilon <= 1e6) {
        bail!("--privacy-budget must be a positive ε of at most 10^6 (got {epsilon})");
    }
    Ok(pavilion_analytics::micro_floor(epsilon))
}
