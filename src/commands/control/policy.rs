//! `pavilion policy …`: write, check, test, publish and roll back policies. Every lifecycle
//! change is an event on the policies topic; history is whatever that topic says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_policy::check::check;
use pavilion_policy::document::{document_event, PolicySpec, Severity, SourceDocument};
use pavilion_policy::engine::{CompiledPolicy, Evaluation};
use pavilion_runtime::clock::epoch_millis;
use pavilion_schemas::{
    ClaimRequest, ControlVersion, Event, PolicyDocument, PolicyEffect, PolicyRef, PolicyState,
    Registry, VerificationRequest, VersionOrder,
};
use serde::Deserialize;

use super::Writer;
use crate::cli::{self, ClusterArgs};

/// Policy commands.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file: YAML, Cedar syntax and schema, plan, and rules that are
    /// unreachable, shadowed or in conflict — each with its line. Exit 1 on any error.
    Check {
        /// The policy file (YAML).
        file: PathBuf,
    },
    /// Run table-driven cases against a policy file and show a diff for each failure.
    Test {
        /// The policy file.
        file: PathBuf,
        /// The cases (YAML list of {name, request, expect}).
        cases: PathBuf,
        /// A template file the policy instantiates, if any.
        #[arg(long)]
        template: Option<PathBuf>,
    },
    /// Publish a policy file as a new draft version (check passes first).
    Push(PushArgs),
    /// Make a version the tenant's active policy (default: the latest version).
    Activate(VersionArgs),
    /// Make an earlier version active again.
    Rollback(RollbackArgs),
    /// Retire the active version: the tenant then has no active policy and is denied.
    Retire(VersionArgs),
    /// Every event of a tenant's (or the templates') policies, oldest first.
    History(OwnerArgs),
    /// Line diff of two versions' canonical documents.
    Diff(DiffArgs),
}

/// Whose policies.
#[derive(Args)]
pub struct OwnerArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Tenant id; omit for shared templates.
    #[arg(long)]
    pub tenant: Option<String>,
}

/// `policy push`.
#[derive(Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The policy file.
    pub file: PathBuf,
    /// Author recorded with the version.
    #[arg(long, env = "USER", default_value = "unknown")]
    pub author: String,
    /// Activate it at once.
    #[arg(long)]
    pub activate: bool,
}

/// A policy version.
#[derive(Args)]
pub struct VersionArgs {
    #[command(flatten)]
    pub owner: OwnerArgs,
    /// Policy id.
    #[arg(long)]
    pub policy: String,
    /// Version (default: the latest).
    #[arg(long)]
    pub version: Option<i64>,
    /// Author recorded with the event.
    #[arg(long, env = "USER", default_value = "unknown")]
    pub author: String,
}

/// `policy rollback`.
#[derive(Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub owner: OwnerArgs,
    /// Policy id.
    #[arg(long)]
    pub policy: String,
    /// The version to go back to.
    #[arg(long)]
    pub to: i64,
    /// Author recorded with the event.
    #[arg(long, env = "USER", default_value = "unknown")]
    pub author: String,
}

/// `policy diff`.
#[derive(Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub owner: OwnerArgs,
    /// Policy id.
    #[arg(long)]
    pub policy: String,
    /// Older version.
    #[arg(long)]
    pub from: i64,
    /// Newer version.
    #[arg(long)]
    pub to: i64,
}

fn policies_topic(cluster: &ClusterArgs) -> Result<(String, i32)> {
    let topology = cli::load(&cluster.file)?;
    let topic = cli::topic_for(&topology, PolicyDocument::FULL_NAME)?;
    Ok((topic.name, topic.partitions))
}

/// Every policy event on the topic and on the other regions' copies of it, oldest version
/// first. Templates are written to every partition, so their copies are folded into one.
fn events(cluster: &ClusterArgs) -> Result<Vec<PolicyDocument>> {
    let (topic, _) = policies_topic(cluster)?;
    let topology = cli::load(&cluster.file)?;
    let sources = super::existing(cluster, &topology, &topic)?;
    let sources: Vec<&str> = sources.iter().map(String::as_str).collect();
    let records = TopicReader::new(&cli::settings(cluster, "cli")?, &sources)?
        .read_to_end(Duration::from_secs(30))
        .with_context(|| format!("reading {}", sources.join(", ")))?;
    let mut events: Vec<(VersionOrder, i32, i64, PolicyDocument)> = Vec::new();
    for r in records {
        let Some(value) = r.value else { continue };
        if let Ok(d) = Registry::builtin().decode::<PolicyDocument>(&value) {
            if d.tenant_id.is_none() && r.partition != 0 {
                continue;
            }
            events.push((d.order(), r.partition, r.offset, d));
        }
    }
    events.sort_by(|a, b| (&a.0, a.1, a.2).cmp(&(&b.0, b.1, b.2)));
    Ok(events.into_iter().map(|(_, _, _, d)| d).collect())
}

/// The stamp of an event of `owner`'s policies: after the newest one, homed where the
/// owner's first policy was pushed.
fn stamp(
    cluster: &ClusterArgs,
    all: &[PolicyDocument],
    owner: &Option<String>,
) -> Result<Option<ControlVersion>> {
    let previous = all
        .iter()
        .rev()
        .filter(|d| d.tenant_id == *owner)
        .find_map(|d| d.stamp.as_ref());
    let what = match owner {
        Some(tenant) => format!("the policies of tenant `{tenant}`"),
        None => "the policy templates".to_owned(),
    };
    Writer::of(&cluster.file).stamp(&what, previous, None)
}

fn of_owner<'a>(
    events: &'a [PolicyDocument],
    tenant: &Option<String>,
    policy: &str,
) -> Vec<&'a PolicyDocument> {
    events
        .iter()
        .filter(|d| d.tenant_id == *tenant && d.policy_id == policy)
        .collect()
}

fn publish(cluster: &ClusterArgs, document: &PolicyDocument) -> Result<()> {
    let (topic, partitions) = policies_topic(cluster)?;
    let producer = PlainProducer::new(&cli::settings(cluster, "cli")?)?;
    let value = Registry::builtin().encode(document)?;
    match &document.tenant_id {
        Some(tenant) => producer.send(&topic, tenant.as_bytes(), &value)?,
        // Every partition's policy stage needs the templates.
        None => {
            for partition in 0..partitions {
                producer.send_to(&topic, partition, document.policy_id.as_bytes(), &value)?;
            }
        }
    }
    producer.flush()?;
    println!(
        "{} {}@v{} {:?} (content {})",
        document.tenant_id.as_deref().unwrap_or("template"),
        document.policy_id,
        document.version,
        document.state,
        hex::encode(&document.content_hash[..8])
    );
    Ok(())
}

fn print_findings(file: &Path, findings: &[pavilion_policy::document::Finding]) -> bool {
    for f in findings {
        match f.line {
            Some(_) => eprintln!("{}:{f}", file.display()),
            None => eprintln!("{}: {f}", file.display()),
        }
    }
    findings.iter().any(|f| f.severity == Severity::Error)
}

fn read(file: &Path) -> Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
}

pub fn run(command: PolicyCommand) -> Result<ExitCode> {
    match command {
        PolicyCommand::Check { file } => {
            let findings = check(&read(&file)?);
            let failed = print_findings(&file, &findings);
            if !failed {
                println!("{}: ok ({} warning(s))", file.display(), findings.len());
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        PolicyCommand::Test {
            file,
            cases,
            template,
        } => test(&file, &cases, template.as_deref()),
        PolicyCommand::Push(args) => {
            let text = read(&args.file)?;
            if print_findings(&args.file, &check(&text)) {
                bail!("{} has errors; nothing was pushed", args.file.display());
            }
            let spec = SourceDocument::parse(&text)
                .map_err(|f| anyhow::anyhow!("{f}"))?
                .spec;
            let all = events(&args.cluster)?;
            let versions = of_owner(&all, &spec.tenant, &spec.policy);
            if let Some(last) = versions.iter().max_by_key(|d| d.version) {
                if last.content_hash == spec.content_hash() {
                    println!("unchanged: identical to v{}", last.version);
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let version = versions.iter().map(|d| d.version).max().unwrap_or(0) + 1;
            let template = match &spec.template {
                None => None,
                Some(name) => Some(template_ref(&all, name)?),
            };
            let state = if args.activate {
                PolicyState::Active
            } else {
                PolicyState::Draft
            };
            let now = epoch_millis(SystemTime::now());
            let mut event = document_event(&spec, version, state, &args.author, now, template);
            event.stamp = stamp(&args.cluster, &all, &spec.tenant)?;
            publish(&args.cluster, &event)?;
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Activate(args) => lifecycle(
            &args.owner,
            &args.policy,
            args.version,
            PolicyState::Active,
            &args.author,
        ),
        PolicyCommand::Retire(args) => lifecycle(
            &args.owner,
            &args.policy,
            args.version,
            PolicyState::Retired,
            &args.author,
        ),
        PolicyCommand::Rollback(args) => {
            let all = events(&args.owner.cluster)?;
            let active = of_owner(&all, &args.owner.tenant, &args.policy)
                .into_iter()
                .rfind(|d| d.state == PolicyState::Active)
                .context("nothing of this policy was ever active")?;
            if args.to >= active.version {
                bail!(
                    "rollback goes to an earlier version than the active v{}",
                    active.version
                );
            }
            lifecycle(
                &args.owner,
                &args.policy,
                Some(args.to),
                PolicyState::Active,
                &args.author,
            )
        }
        PolicyCommand::History(owner) => {
            for d in events(&owner.cluster)?
                .iter()
                .filter(|d| d.tenant_id == owner.tenant)
            {
                println!(
                    "{}  {:<24} v{:<4} {:<8} by {:<12} content {}{}",
                    humantime::format_rfc3339_millis(
                        SystemTime::UNIX_EPOCH + Duration::from_millis(d.created_at as u64)
                    ),
                    d.policy_id,
                    d.version,
                    format!("{:?}", d.state).to_lowercase(),
                    d.author,
                    hex::encode(&d.content_hash[..8]),
                    d.template
                        .as_ref()
                        .map(|t| format!("  template {}@v{}", t.policy_id, t.version))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Diff(args) => {
            let all = events(&args.owner.cluster)?;
            let versions = of_owner(&all, &args.owner.tenant, &args.policy);
            let body = |v: i64| -> Result<String> {
                let d = versions
                    .iter()
                    .find(|d| d.version == v)
                    .with_context(|| format!("no v{v} of {}", args.policy))?;
                let spec: PolicySpec = serde_json::from_str(&d.body)?;
                Ok(readable(&spec))
            };
            let (old, new) = (body(args.from)?, body(args.to)?);
            print!(
                "{}",
                similar::TextDiff::from_lines(&old, &new)
                    .unified_diff()
                    .header(&format!("v{}", args.from), &format!("v{}", args.to))
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A readable rendering of a document for diffs: pretty JSON with the rules as their lines.
fn readable(spec: &PolicySpec) -> String {
    let mut json = serde_json::to_value(spec).expect("serializes");
    json["rules"] = serde_json::Value::Array(spec.rules.lines().map(|l| l.into()).collect());
    serde_json::to_string_pretty(&json).expect("serializes") + "\n"
}

fn template_ref(all: &[PolicyDocument], name: &str) -> Result<PolicyRef> {
    let (id, version) = match name.split_once('@') {
        Some((id, v)) => (
            id,
            Some(
                v.trim_start_matches('v')
                    .parse::<i64>()
                    .context("template version")?,
            ),
        ),
        None => (name, None),
    };
    let candidates = of_owner(all, &None, id);
    let chosen = match version {
        Some(v) => candidates.into_iter().find(|d| d.version == v),
        None => candidates
            .into_iter()
            .filter(|d| d.state == PolicyState::Active)
            .max_by_key(|d| d.version),
    }
    .with_context(|| {
        format!(
            "no {} template `{name}` (push and activate it first)",
            if version.is_some() { "such" } else { "active" }
        )
    })?;
    Ok(PolicyRef {
        policy_id: chosen.policy_id.clone(),
        version: chosen.version,
        content_hash: chosen.content_hash.clone(),
    })
}

fn lifecycle(
    owner: &OwnerArgs,
    policy: &str,
    version: Option<i64>,
    state: PolicyState,
    author: &str,
) -> Result<ExitCode> {
    let all = events(&owner.cluster)?;
    let versions = of_owner(&all, &owner.tenant, policy);
    let version = match version {
        Some(v) => v,
        None => versions
            .iter()
            .map(|d| d.version)
            .max()
            .with_context(|| format!("no policy `{policy}`"))?,
    };
    let original = versions
        .iter()
        .find(|d| d.version == version)
        .with_context(|| format!("no v{version} of `{policy}`"))?;
    let mut event = (*original).clone();
    event.state = state;
    event.author = author.to_owned();
    event.created_at = epoch_millis(SystemTime::now());
    event.stamp = stamp(&owner.cluster, &all, &owner.tenant)?;
    publish(&owner.cluster, &event)?;
    Ok(ExitCode::SUCCESS)
}

/// One row of `policy test`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    request: CaseRequest,
    /// claim → permit | deny
    expect: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    #[serde(default = "default_tenant")]
    tenant: String,
    claims: Vec<String>,
    #[serde(default)]
    threshold: Option<String>,
    purpose: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    consent: bool,
    #[serde(default = "default_regions")]
    tenant_regions: Vec<String>,
    /// Evaluation time, RFC 3339 (default 2026-01-01T12:00:00Z).
    #[serde(default)]
    at: Option<String>,
}

fn default_tenant() -> String {
    "tenant".into()
}
fn default_region() -> String {
    "eu".into()
}
fn default_regions() -> Vec<String> {
    vec!["eu".into()]
}

fn test(file: &Path, cases_file: &Path, template: Option<&Path>) -> Result<ExitCode> {
    let text = read(file)?;
    if print_findings(file, &check(&text)) {
        bail!("{} has errors", file.display());
    }
    let mut spec = SourceDocument::parse(&text)
        .map_err(|f| anyhow::anyhow!("{f}"))?
        .spec;
    if let Some(t) = template {
        let t = SourceDocument::parse(&read(t)?)
            .map_err(|f| anyhow::anyhow!("{f}"))?
            .spec;
        spec = spec.over(&t);
    }
    let reference = PolicyRef {
        policy_id: spec.policy.clone(),
        version: 0,
        content_hash: spec.content_hash(),
    };
    let compiled = CompiledPolicy::compile(spec, reference).map_err(|f| {
        anyhow::anyhow!(
            "{}",
            f.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let cases: Vec<Case> = marked_yaml::from_yaml_with_options(
        0,
        &read(cases_file)?,
        marked_yaml::LoaderOptions::default().toplevel_sequence(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", cases_file.display()))?;
    let mut failed = 0;
    for case in &cases {
        let r = &case.request;
        let at = match &r.at {
            Some(t) => {
                humantime::parse_rfc3339(t).with_context(|| format!("case `{}`: at", case.name))?
            }
            None => humantime::parse_rfc3339("2026-01-01T12:00:00Z").expect("valid"),
        };
        let now = epoch_millis(at);
        let request = VerificationRequest {
            request_id: case.name.clone(),
            tenant_id: r.tenant.clone(),
            key_id: String::new(),
            signature: Vec::new(),
            signed_at: now,
            nonce: String::new(),
            created_at: now,
            claims: r
                .claims
                .iter()
                .map(|c| ClaimRequest {
                    name: c.clone(),
                    params: r
                        .threshold
                        .iter()
                        .map(|t| ("threshold".to_owned(), t.clone()))
                        .collect(),
                })
                .collect(),
            purpose: r.purpose.clone(),
            subject_jurisdiction: r.region.clone(),
            consent_ref: r.consent.then(|| "consent".to_owned()),
            subject_tokens: Vec::new(),
            response_format: None,
        };
        let evaluation: Evaluation = compiled.evaluate(&request, &r.tenant_regions, now);
        let got: BTreeMap<String, String> = evaluation
            .plan
            .iter()
            .map(|c| {
                let effect = if c.effect == PolicyEffect::Permit {
                    "permit".to_owned()
                } else {
                    format!("deny ({})", c.denying_rules.join(", "))
                };
                (c.claim_name.clone(), effect)
            })
            .collect();
        let mismatches: Vec<String> = case
            .expect
            .iter()
            .filter(|(claim, want)| {
                got.get(*claim)
                    .is_none_or(|g| !g.starts_with(want.as_str()))
            })
            .map(|(claim, want)| {
                format!(
                    "    {claim}: expected {want}, got {}",
                    got.get(claim).map_or("nothing (not asked)", String::as_str)
                )
            })
            .collect();
        if mismatches.is_empty() {
            println!("ok    {}", case.name);
        } else {
            failed += 1;
            println!("FAIL  {}\n{}", case.name, mismatches.join("\n"));
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
