//! `pavilion acls plan|apply`: least-privilege Kafka principals, derived from the topology and
//! the registries, never written by hand.
//!
//! Every component authenticates as its own SCRAM user, `<application>.<role>[.<name>]`:
//! each task of the pipeline, the anchor, an auditor, each registered provider, each active
//! tenant. What a principal may do follows from the topics the topology says it reads and
//! writes (found by the schema they hold, as every control command finds its topic); the
//! operator is the cluster's super-user and needs no ACL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use pavilion_kafka::acl::{AccessAdmin, Acl, Operation, Pattern, Resource};
use pavilion_kafka::KafkaSettings;
use pavilion_runtime::topology::{family_prefix, Topology};
use pavilion_schemas::{
    AnchorReceipt, Checkpoint, Decision, Event, EvidenceRequest, EvidenceResponse, Provider,
    ProviderSetEntry, StatusListPublished, Tenant, TenantState, VerificationRequest,
};

use crate::cli::{self, ClusterArgs};

/// `pavilion acls …`.
#[derive(Subcommand)]
pub enum AclsCommand {
    /// Show every principal's ACLs as the topology and registries derive them, marked against
    /// the broker: `+` missing, `=` in place, `-` drift (a rule for a managed principal that
    /// the plan does not have). With --check, exit 1 when anything differs.
    Plan(PlanArgs),
    /// Make the broker match the plan: create missing ACLs, delete drift, and give each
    /// principal without a SCRAM credential a new one, written to --credentials-dir.
    Apply(ApplyArgs),
}

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Exit 1 when the broker differs from the plan.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where each new credential goes, as `<principal>.properties` (librdkafka settings for
    /// `--kafka-config`, owner-only). Without it, principals lacking a credential are listed
    /// and left without one.
    #[arg(long, value_name = "DIR")]
    pub credentials_dir: Option<PathBuf>,
}

/// Who a principal is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// One task of the pipeline (a fused group is named after its first stage).
    Task(String),
    /// `pavilion audit anchor`.
    Anchor,
    /// Read-only: the audit log, its inputs and the anchors.
    Auditor,
    /// A provider's services and loader.
    Provider(String),
    /// A relying party.
    Tenant(String),
}

impl Role {
    /// The SCRAM user: `<application>.task.<task>`, `<application>.tenant.<id>`, ….
    pub fn user(&self, application: &str) -> String {
        match self {
            Role::Task(task) => format!("{application}.task.{task}"),
            Role::Anchor => format!("{application}.anchor"),
            Role::Auditor => format!("{application}.auditor"),
            Role::Provider(id) => format!("{application}.provider.{id}"),
            Role::Tenant(id) => format!("{application}.tenant.{id}"),
        }
    }

    /// The ACLs of this role: everything it needs and nothing more.
    pub fn acls(&self, topology: &Topology) -> Result<Vec<Acl>> {
        let mut g = Grants {
            principal: format!("User:{}", self.user(&topology.application)),
            topology,
            acls: BTreeSet::new(),
        };
        let topic = |schema: &str| cli::topic_for(topology, schema).map(|t| t.name);
        match self {
            Role::Task(task) => {
                let spec = topology
                    .tasks
                    .get(task)
                    .with_context(|| format!("no task `{task}` in the topology"))?;
                for input in &spec.inputs {
                    g.topic(input, &[Operation::Read]);
                }
                for stage in &spec.stages {
                    let stage = &topology.stages[stage];
                    for output in stage.outputs.values() {
                        if family_prefix(output).is_some() {
                            // The runtime creates a member at its first record.
                            g.topic(
                                output,
                                &[
                                    Operation::Write,
                                    Operation::Create,
                                    Operation::DescribeConfigs,
                                ],
                            );
                        } else {
                            g.topic(output, &[Operation::Write]);
                        }
                    }
                    for global in &stage.globals {
                        g.topic(&global.topic, &[Operation::Read]);
                    }
                    for store in &stage.stores {
                        g.topic(&store.changelog, &[Operation::Read, Operation::Write]);
                    }
                }
                g.topic(&topology.dlq, &[Operation::Write]);
                g.add(
                    Resource::Group,
                    Pattern::Literal,
                    &topology.group_id(task),
                    &[Operation::Read],
                );
                // Transactional ids are `<application>.<task>.<instance>`, one per instance.
                g.add(
                    Resource::TransactionalId,
                    Pattern::Prefixed,
                    &topology.transactional_id(task, ""),
                    &[Operation::Write, Operation::Describe],
                );
            }
            Role::Anchor => {
                g.topic(&topic(Checkpoint::FULL_NAME)?, &[Operation::Read]);
                g.topic(&topic(AnchorReceipt::FULL_NAME)?, &[Operation::Write]);
            }
            Role::Auditor => {
                let audit = topology
                    .stages
                    .values()
                    .find(|s| s.kind == "audit")
                    .context("the topology has no audit stage")?;
                for t in audit.inputs.iter().chain(audit.outputs.values()) {
                    g.topic(t, &[Operation::Read]);
                }
                g.topic(&topic(AnchorReceipt::FULL_NAME)?, &[Operation::Read]);
                // `audit replay --decisions` compares each issued decision with the record
                // delivered to its tenant.
                if let Ok(decisions) = topic(Decision::FULL_NAME) {
                    g.topic(&decisions, &[Operation::Read]);
                }
            }
            Role::Provider(id) => {
                let set = member(topology, &topic(ProviderSetEntry::FULL_NAME)?, id)?;
                g.topic(
                    &set,
                    &[
                        Operation::Read,
                        Operation::Write,
                        Operation::DescribeConfigs,
                    ],
                );
                // The registry (its own record and set size) and the tenants' request-signing
                // keys, which its OPRF service checks.
                g.topic(&topic(Provider::FULL_NAME)?, &[Operation::Read]);
                g.topic(&topic(Tenant::FULL_NAME)?, &[Operation::Read]);
                // Its status lists: written, and created by `status-list --publish` for a
                // provider onboarded before the topology had them.
                if let Ok(lists) = topic(StatusListPublished::FULL_NAME) {
                    g.topic(
                        &member(topology, &lists, id)?,
                        &[
                            Operation::Write,
                            Operation::Create,
                            Operation::DescribeConfigs,
                        ],
                    );
                }
                if let Ok(asks) = topic(EvidenceRequest::FULL_NAME) {
                    let asks = member(topology, &asks, id)?;
                    g.topic(&asks, &[Operation::Read, Operation::DescribeConfigs]);
                    g.topic(&topic(EvidenceResponse::FULL_NAME)?, &[Operation::Write]);
                    g.add(
                        Resource::Group,
                        Pattern::Literal,
                        &format!("{}.evidence.{id}", topology.application),
                        &[Operation::Read],
                    );
                }
            }
            Role::Tenant(id) => {
                g.topic(&topic(VerificationRequest::FULL_NAME)?, &[Operation::Write]);
                // Its own decisions, in a topology that signs them (without a signing stage
                // the answers are on shared topics, which no tenant may read).
                if let Ok(family) = topic(Decision::FULL_NAME) {
                    g.topic(&member(topology, &family, id)?, &[Operation::Read]);
                }
                // Its own differentially private releases (never the raw increments, the
                // queries or anyone else's releases).
                if let Some(family) = tenant_releases(topology) {
                    g.topic(&member(topology, &family, id)?, &[Operation::Read]);
                }
            }
        }
        // Every principal owns the consumer groups named under it: its readers' (which
        // assign and commit nothing, but librdkafka still looks up their coordinator) and,
        // for a tenant, those it reads its decisions with.
        g.add(
            Resource::Group,
            Pattern::Prefixed,
            &format!("{}.", self.user(&topology.application)),
            &[Operation::Read],
        );
        Ok(g.acls.into_iter().collect())
    }
}

/// The family each tenant's analytics releases go to: the analytics stage's
/// `tenant_releases` output (its schema is also the operator's releases topic's).
pub fn tenant_releases(topology: &Topology) -> Option<String> {
    crate::commands::analytics::stage(topology)
        .ok()?
        .outputs
        .get("tenant_releases")
        .cloned()
}

/// A family's member topic, by the family's pattern.
fn member(topology: &Topology, pattern: &str, id: &str) -> Result<String> {
    topology
        .family_topic(pattern, id)
        .map(|t| t.name)
        .with_context(|| format!("`{id}` cannot name a member of {pattern}"))
}

struct Grants<'a> {
    principal: String,
    topology: &'a Topology,
    acls: BTreeSet<Acl>,
}

impl Grants<'_> {
    /// A topic, or every member of a topic family (a prefixed rule).
    fn topic(&mut self, name: &str, operations: &[Operation]) {
        match family_prefix(name) {
            Some(prefix) if self.topology.families.contains_key(name) => {
                self.add(Resource::Topic, Pattern::Prefixed, prefix, operations)
            }
            _ => self.add(Resource::Topic, Pattern::Literal, name, operations),
        }
    }

    fn add(&mut self, resource: Resource, pattern: Pattern, name: &str, operations: &[Operation]) {
        for &operation in operations {
            self.acls.insert(Acl {
                principal: self.principal.clone(),
                resource,
                pattern,
                name: name.to_owned(),
                operation,
            });
        }
    }
}

/// Every principal the topology and registries call for: tasks, anchor, auditor, each
/// registered provider and each active tenant.
pub fn roles(cluster: &ClusterArgs, topology: &Topology) -> Result<Vec<Role>> {
    let mut roles: Vec<Role> = topology.tasks.keys().cloned().map(Role::Task).collect();
    // The anchor and the auditor exist where there is an audit log to anchor and read.
    if topology.stages.values().any(|s| s.kind == "audit") {
        roles.push(Role::Auditor);
        if cli::topic_for(topology, AnchorReceipt::FULL_NAME).is_ok() {
            roles.push(Role::Anchor);
        }
    }
    let providers = cli::topic_for(topology, Provider::FULL_NAME)?.name;
    let registered: BTreeSet<String> = cli::read_all::<Provider>(cluster, &providers)?
        .into_iter()
        .map(|(_, p)| p.provider_id)
        .collect();
    roles.extend(registered.into_iter().map(Role::Provider));
    // The latest record of each tenant decides.
    let tenants = cli::topic_for(topology, Tenant::FULL_NAME)?.name;
    let latest: BTreeMap<String, Tenant> = cli::read_all::<Tenant>(cluster, &tenants)?
        .into_iter()
        .map(|(_, t)| (t.tenant_id.clone(), t))
        .collect();
    roles.extend(
        latest
            .into_values()
            .filter(|t| t.state == TenantState::Active)
            .map(|t| Role::Tenant(t.tenant_id)),
    );
    Ok(roles)
}

/// The plan: each principal's ACLs.
fn plan(cluster: &ClusterArgs, topology: &Topology) -> Result<BTreeMap<String, Vec<Acl>>> {
    roles(cluster, topology)?
        .into_iter()
        .map(|role| Ok((role.user(&topology.application), role.acls(topology)?)))
        .collect()
}

/// Rules on the broker for principals this topology manages (`User:<application>.…`) that the
/// plan does not have.
fn drift(topology: &Topology, planned: &BTreeSet<&Acl>, present: &[Acl]) -> Vec<Acl> {
    let managed = format!("User:{}.", topology.application);
    present
        .iter()
        .filter(|a| a.principal.starts_with(&managed) && !planned.contains(a))
        .cloned()
        .collect()
}

pub fn run(command: AclsCommand) -> Result<ExitCode> {
    match command {
        AclsCommand::Plan(a) => {
            let topology = cli::load(&a.cluster.file)?;
            let plan = plan(&a.cluster, &topology)?;
            let admin = AccessAdmin::new(&cli::settings(&a.cluster, "acls")?)?;
            let present = admin.list()?;
            let users: BTreeSet<String> = admin.users()?.into_iter().collect();
            let present_set: BTreeSet<&Acl> = present.iter().collect();
            let planned: BTreeSet<&Acl> = plan.values().flatten().collect();
            let mut missing = 0;
            for (user, acls) in &plan {
                let credential = if users.contains(user) {
                    "credential present"
                } else {
                    "no credential"
                };
                println!("User:{user}  ({credential})");
                for acl in acls {
                    let mark = if present_set.contains(acl) {
                        "="
                    } else {
                        missing += 1;
                        "+"
                    };
                    println!(
                        "  {mark} {:<16} {}",
                        format!("{:?}", acl.operation),
                        rule(acl)
                    );
                }
            }
            let extra = drift(&topology, &planned, &present);
            for acl in &extra {
                println!("  - {acl}");
            }
            println!(
                "{} principals, {} rules: {missing} to add, {} to remove",
                plan.len(),
                planned.len(),
                extra.len()
            );
            Ok(if a.check && missing + extra.len() > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        AclsCommand::Apply(a) => {
            let topology = cli::load(&a.cluster.file)?;
            let plan = plan(&a.cluster, &topology)?;
            let settings = cli::settings(&a.cluster, "acls")?;
            let admin = AccessAdmin::new(&settings)?;
            let present = admin.list()?;
            let present_set: BTreeSet<&Acl> = present.iter().collect();
            let planned: BTreeSet<&Acl> = plan.values().flatten().collect();
            let missing: Vec<Acl> = planned
                .iter()
                .filter(|a| !present_set.contains(*a))
                .map(|a| (*a).clone())
                .collect();
            let extra = drift(&topology, &planned, &present);
            admin.create(&missing)?;
            let removed = admin.delete(&extra)?;
            let users: BTreeSet<String> = admin.users()?.into_iter().collect();
            let mut issued = Vec::new();
            let mut without = Vec::new();
            for user in plan.keys().filter(|u| !users.contains(*u)) {
                match &a.credentials_dir {
                    Some(dir) => {
                        issued.push(issue_credential(&admin, &settings, user, dir)?);
                    }
                    None => without.push(user.as_str()),
                }
            }
            println!(
                "{} principals: {} rules added, {removed} removed, {} credentials issued",
                plan.len(),
                missing.len(),
                issued.len()
            );
            for path in &issued {
                println!("  wrote {}", path.display());
            }
            if !without.is_empty() {
                println!(
                    "without a credential (rerun with --credentials-dir DIR): {}",
                    without.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn rule(acl: &Acl) -> String {
    let pattern = match acl.pattern {
        Pattern::Literal => "",
        Pattern::Prefixed => "*",
    };
    format!("{:?} {}{pattern}", acl.resource, acl.name)
}

/// Gives `user` a new random SCRAM password and writes its client settings to
/// `<dir>/<user>.properties`: the admin's connection settings (protocol, mechanism, CA) with
/// this user's name and password. Replaces an older file atomically.
pub fn issue_credential(
    admin: &AccessAdmin,
    admin_settings: &KafkaSettings,
    user: &str,
    dir: &Path,
) -> Result<PathBuf> {
    let path = dir.join(format!("{user}.properties"));
    write_credential(admin, admin_settings, user, &path)?;
    Ok(path)
}

/// As [`issue_credential`], to a named file.
pub fn write_credential(
    admin: &AccessAdmin,
    admin_settings: &KafkaSettings,
    user: &str,
    path: &Path,
) -> Result<()> {
    let password = hex::encode(rand::random::<[u8; 24]>());
    let mut text = format!("# Kafka client settings of {user} (made by pavilion; keep private)\n");
    for (key, value) in &admin_settings.overrides {
        if matches!(
            key.as_str(),
            "security.protocol" | "sasl.mechanism" | "ssl.ca.location"
        ) {
            text.push_str(&format!("{key}={value}\n"));
        }
    }
    text.push_str(&format!("sasl.username={user}\nsasl.password={password}\n"));
    if !admin_settings
        .overrides
        .iter()
        .any(|(k, v)| k == "sasl.mechanism" && v.starts_with("SCRAM"))
    {
        bail!("the admin's client settings use no SCRAM mechanism: this broker takes no SCRAM credentials");
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    admin.set_password(user, &password)?;
    crate::commands::control::tenant::replace_secret(path, text.as_bytes())
        .with_context(|| format!("writing {user}'s credential"))?;
    Ok(())
}

/// Whether clients authenticate (a SASL user in their settings): only then does the broker
/// have principals to grant ACLs to and credentials to issue.
pub fn secured(settings: &KafkaSettings) -> bool {
    settings.overrides.iter().any(|(k, _)| k == "sasl.username")
}

/// Revokes a principal: deletes every ACL naming it and its SCRAM credential.
pub fn revoke(admin: &AccessAdmin, user: &str) -> Result<usize> {
    let principal = format!("User:{user}");
    let mine: Vec<Acl> = admin
        .list()?
        .into_iter()
        .filter(|a| a.principal == principal)
        .collect();
    let removed = admin.delete(&mine)?;
    if admin.users()?.iter().any(|u| u == user) {
        admin.delete_password(user)?;
    }
    Ok(removed)
}
