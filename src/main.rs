//! `pavilion`: the one binary. Parsing and validation live here; the work lives in the
//! crates under `processors/`, `connectors/` and `schemas/`. This file is the command line
//! and its dispatch: the commands are in `commands/`, `bench/` and `demo/`, what they share
//! in `cli`.

mod bench;
mod cli;
mod commands;
mod demo;
mod kinds;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cli::{ClusterArgs, TopologyFile};
use crate::commands::audit::{self, anchor};
use crate::commands::control::{credentials, policy, provider, tenant};
use crate::commands::{acls, analytics, keys, psi, request, run, schemas, topology};

/// Pavilion trust broker: an exactly-once stream-processing pipeline on Apache Kafka.
///
/// Start the local broker with `scripts/infra up`, then try `pavilion demo`.
#[derive(Parser)]
#[command(name = "pavilion", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and validate topology.yaml.
    Topology {
        #[command(subcommand)]
        command: TopologyCommand,
    },
    /// Provision Kafka topics from topology.yaml.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Kafka access: each component's principal and ACLs, derived from topology.yaml.
    Acls {
        #[command(subcommand)]
        command: acls::AclsCommand,
    },
    /// Manage tenants: registry entries, lifecycle, request-signing keys.
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// Policies: check, test, push, activate, rollback, retire, history, diff.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Data providers: onboard, load a set (CSV or PostgreSQL), serve OPRF evaluations.
    Provider {
        #[command(subcommand)]
        command: provider::ProviderCommand,
    },
    /// A member's wallet: a holder key, and presentations of the credentials providers
    /// issued to it (`provider issue`), bound to a verifier's nonce.
    Holder {
        #[command(subcommand)]
        command: credentials::HolderCommand,
    },
    /// Batch private set intersection against a provider's set.
    Psi {
        #[command(subcommand)]
        command: psi::PsiCommand,
    },
    /// Differentially private analytics of the request path: releases under each tenant's
    /// privacy budget, the budget, an HTML report.
    Analytics {
        #[command(subcommand)]
        command: analytics::AnalyticsCommand,
    },
    /// Send a verification request as a relying party: OPRF tokens from the providers,
    /// signed with the tenant's key; --wait prints the answer.
    Request(request::RequestArgs),
    /// The broker's decision-signing keys: generate, rotate, retire, list, JWKS.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Verify a decision token against a JWKS (EdDSA only; `none`, HS256 and unknown kids
    /// are refused). Exit 1 when invalid.
    Verify(keys::VerifyArgs),
    /// Run the pipeline's tasks (all, or those named) until SIGTERM/SIGINT.
    Run(run::RunArgs),
    /// The whole path on the local infrastructure: tenants, providers with synthetic
    /// populations, the pipeline, audit and anchoring, a request mix, a summary and one
    /// decision verified end to end.
    Demo(demo::DemoArgs),
    /// Benchmarks; results are printed and written as JSON under bench/results/.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// The audit log: verify it, prove inclusion and consistency, serve proofs.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Anchor the audit log's checkpoints on an Ethereum-compatible chain.
    Anchor {
        #[command(subcommand)]
        command: anchor::AnchorCommand,
    },
    /// Data subjects: erase one from the audit log (crypto-shredding).
    Subject {
        #[command(subcommand)]
        command: audit::SubjectCommand,
    },
    /// The Avro wire contract in schemas/.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Check the file and list every error with its line; exit 1 if there is any.
    Check(TopologyFile),
    /// Print the tasks, their stages, topics and derived names.
    Show(TopologyFile),
    /// Print what may cross into region --to, from `regions:` and `replication:`: a
    /// MirrorMaker 2 `topics` allow-list (a regular expression of exact names), which
    /// `scripts/infra regions up` uses for every flow into that region.
    Replication(topology::ReplicationArgs),
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create missing topics (declared ones and store changelogs); report existing ones that
    /// differ from their declaration. Idempotent.
    Create(ClusterArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Records/s through the two-stage exactly-once topology vs a plain produce→consume
    /// pass-through on the same broker, in one run.
    Passthrough(bench::passthrough::PassthroughArgs),
    /// Policy evaluations/s for one tenant's policy vs the bare Cedar authorizer, and vs one
    /// unindexed set of every tenant's rules.
    Policy(bench::policy::PolicyArgs),
    /// Private matching: OPRF service vs raw voprf, batch PSI vs OpenMined PSI, provider set
    /// load rate (a million records by default).
    Psi(bench::psi::PsiBenchArgs),
    /// Signatures/s with software keys vs an HSM (SoftHSM2), and the signing stage's
    /// decisions/s per response format.
    Signing(bench::signing::SigningBenchArgs),
    /// Merkle log appends/s vs the bare hash, the audit stage's entries/s, proof times,
    /// signed checkpoints/s and gas per anchor on a local anvil.
    Audit(bench::audit::AuditBenchArgs),
    /// The whole path on the broker: raw pass-through vs split vs fused; sustainable
    /// requests/s, latency at half load, peak RSS, records written per request.
    E2e(bench::e2e::E2eBenchArgs),
    /// Zero-knowledge predicates: proving time on one core, verification one by one vs
    /// batched, a predicate claim's latency and throughput through the broker and the
    /// provider vs a membership-only claim, proof and key sizes; min/median/max of --runs.
    ///
    /// The end-to-end figures run the pipeline and bank-eu's OPRF and evidence services as
    /// child processes of this binary on Kafka (`scripts/infra up`): run it in release,
    /// `cargo run --release -- bench zk`. The defaults take three to five minutes on 2 cores;
    /// `--skip-e2e` (proving, verification and sizes only, no Kafka) about one.
    Zk(bench::zk::ZkBenchArgs),
    /// Selective disclosure by BBS (BLS12-381-SHA-256) over 10 attributes: sign, derive a
    /// proof disclosing 1 and 5 of them, verify it, verify the signature, µs p50/p99 vs
    /// Ed25519 over the same octets, and proof sizes; a `residence` claim's latency through the
    /// broker and the provider vs a membership-only claim; min/median/max of --runs.
    ///
    /// The end-to-end figures run the pipeline and bank-eu's OPRF and evidence services as
    /// child processes of this binary on Kafka (`scripts/infra up`): run it in release,
    /// `cargo run --release -- bench disclosure`. The defaults take about three minutes on 2
    /// cores; `--skip-e2e` (the BBS and Ed25519 operations and sizes only, no Kafka) under one.
    Disclosure(bench::disclosure::DisclosureBenchArgs),
    /// The analytics stage in process (its RocksDB stores, no Kafka): a release's latency,
    /// µs p50/p99, against the bare OpenDP sample it rests on; a release of 21 cells; and the
    /// empirical error of released counts against their stated bound at ε 0.1, 0.5, 1 and 2;
    /// min/median/max of --runs. Its share of the request path's CPU is in `bench e2e`. Run
    /// it in release from the repository: `cargo run --release -- bench analytics`.
    Analytics(bench::analytics::AnalyticsBenchArgs),
    /// Two regions on this machine (`scripts/infra regions up eu,us`: a secured KRaft broker
    /// each, MirrorMaker 2 copying the control topics both ways): (1) a control record's lag
    /// from one region to the other, p50/p99/max, against produce → visible on one cluster;
    /// (2) provider endpoint fail-over under paced token requests, one of two evaluation
    /// services SIGKILLed or SIGSTOPped, against no fault; (3) MirrorMaker 2's CPU and RSS,
    /// idle and replicating, against a broker's; (4) region us lost and started again: the
    /// first error its producer sees, the time until it takes and replicates records again,
    /// and the eu producer's longest gap meanwhile. min/median/max of --runs.
    ///
    /// Each figure comes with its baseline from the same run (a ratio where one makes
    /// sense), and every run's value goes to bench/results/regions.json with what it means.
    /// The regions get a run dir and ports of their own (`--run-dir`, `--base-port`), never
    /// the tests'; the benchmark starts them, and stops them at the end unless they were
    /// already running or `--keep-running`; (4) SIGKILLs the us broker of whichever regions
    /// it uses. librdkafka's connection errors on stderr during (4) are the outage itself.
    /// Run it from the repository: `cargo run -- bench regions`. The defaults take about
    /// four minutes on 2 cores.
    Regions(bench::regions::RegionsBenchArgs),
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// List record schemas with their fingerprints.
    List,
    /// Check the contract: every file parses, every released version is readable.
    Check,
    /// Freeze current schemas that changed into schemas/released/ (after `check` passes).
    Release {
        /// The schemas folder.
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` is a service and logs what it does; the other commands print their own output.
    let default_filter = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAVILION_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Topology { command } => match command {
            TopologyCommand::Check(f) => topology::check(&f),
            TopologyCommand::Show(f) => topology::show(&f),
            TopologyCommand::Replication(a) => topology::replication(&a),
        },
        Command::Topics { command } => match command {
            TopicsCommand::Create(args) => topology::create_topics(&args),
        },
        Command::Acls { command } => acls::run(command),
        Command::Tenant { command } => tenant::run(command),
        Command::Policy { command } => policy::run(command),
        Command::Provider { command } => provider::run(command),
        Command::Holder { command } => credentials::holder(command),
        Command::Request(args) => request::run(args),
        Command::Analytics { command } => analytics::run(command),
        Command::Psi { command } => psi::run(command),
        Command::Keys { command } => keys::run(command),
        Command::Verify(args) => keys::verify(args),
        Command::Run(args) => run::run(args),
        Command::Audit { command } => audit::run(command),
        Command::Anchor { command } => anchor::run(command),
        Command::Subject { command } => audit::subject(command),
        Command::Demo(args) => demo::demo(args),
        Command::Bench { command } => match command {
            BenchCommand::Passthrough(args) => bench::passthrough::passthrough(args),
            BenchCommand::Policy(args) => bench::policy::policy(args),
            BenchCommand::Psi(args) => bench::psi::psi(args),
            BenchCommand::Signing(args) => bench::signing::signing(args),
            BenchCommand::Audit(args) => bench::audit::audit(args),
            BenchCommand::E2e(args) => bench::e2e::e2e(args),
            BenchCommand::Zk(args) => bench::zk::zk(args),
            BenchCommand::Analytics(args) => bench::analytics::analytics(args),
            BenchCommand::Disclosure(args) => bench::disclosure::disclosure(args),
            BenchCommand::Regions(args) => bench::regions::regions(args),
        },
        Command::Schemas { command } => match command {
            SchemasCommand::List => schemas::list(),
            SchemasCommand::Check => schemas::check(),
            SchemasCommand::Release { dir } => schemas::release(&dir),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every subcommand's flags are well-formed (clap checks them only when parsed).
    #[test]
    fn the_command_line_is_consistent() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
