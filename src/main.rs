//! `pavilion`: the one binary. Parsing and validation live here; the work lives in the
//! crates under `processors/`, `connectors/` and `schemas/`.

mod anchor_cmd;
mod audit_cmd;
mod bench;
mod bench_audit;
mod bench_e2e;
mod bench_psi;
mod bench_signing;
mod demo;
mod keys_cmd;
mod kinds;
mod policy_cmd;
mod provider_cmd;
mod psi_cmd;
mod replay_cmd;
mod request_cmd;
mod run;
mod sample;
mod schemas_cmd;
mod tenant_cmd;
mod topology_cmd;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// Manage tenants: registry entries, lifecycle, request-signing keys.
    Tenant {
        #[command(subcommand)]
        command: tenant_cmd::TenantCommand,
    },
    /// Policies: check, test, push, activate, rollback, retire, history, diff.
    Policy {
        #[command(subcommand)]
        command: policy_cmd::PolicyCommand,
    },
    /// Data providers: onboard, load a set (CSV or PostgreSQL), serve OPRF evaluations.
    Provider {
        #[command(subcommand)]
        command: provider_cmd::ProviderCommand,
    },
    /// Batch private set intersection against a provider's set.
    Psi {
        #[command(subcommand)]
        command: psi_cmd::PsiCommand,
    },
    /// Send a verification request as a relying party: OPRF tokens from the providers,
    /// signed with the tenant's key; --wait prints the answer.
    Request(request_cmd::RequestArgs),
    /// The broker's decision-signing keys: generate, rotate, retire, list, JWKS.
    Keys {
        #[command(subcommand)]
        command: keys_cmd::KeysCommand,
    },
    /// Verify a decision token against a JWKS (EdDSA only; `none`, HS256 and unknown kids
    /// are refused). Exit 1 when invalid.
    Verify(keys_cmd::VerifyArgs),
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
        command: audit_cmd::AuditCommand,
    },
    /// Anchor the audit log's checkpoints on an Ethereum-compatible chain.
    Anchor {
        #[command(subcommand)]
        command: anchor_cmd::AnchorCommand,
    },
    /// Data subjects: erase one from the audit log (crypto-shredding).
    Subject {
        #[command(subcommand)]
        command: audit_cmd::SubjectCommand,
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
    Passthrough(bench::PassthroughArgs),
    /// Policy evaluations/s for one tenant's policy vs the bare Cedar authorizer, and vs one
    /// unindexed set of every tenant's rules.
    Policy(bench::PolicyArgs),
    /// Requests/s through tenancy + policy on the broker, split vs fused, same requests.
    RequestPath(bench::RequestPathArgs),
    /// Private matching: OPRF service vs raw voprf, batch PSI vs OpenMined PSI, provider set
    /// load rate (a million records by default).
    Psi(bench_psi::PsiBenchArgs),
    /// Signatures/s with software keys vs an HSM (SoftHSM2), and the signing stage's
    /// decisions/s per response format.
    Signing(bench_signing::SigningBenchArgs),
    /// Merkle log appends/s vs the bare hash, the audit stage's entries/s, proof times,
    /// signed checkpoints/s and gas per anchor on a local anvil.
    Audit(bench_audit::AuditBenchArgs),
    /// The whole path on the broker: raw pass-through vs split vs fused; sustainable
    /// requests/s, latency at half load, peak RSS, records written per request.
    E2e(bench_e2e::E2eBenchArgs),
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

/// Where topology.yaml is.
#[derive(Args, Clone)]
pub struct TopologyFile {
    /// Path of the topology file.
    #[arg(
        long,
        short = 't',
        env = "PAVILION_TOPOLOGY",
        default_value = DEFAULT_TOPOLOGY
    )]
    pub topology: PathBuf,
}

/// `--topology` when neither the flag nor $PAVILION_TOPOLOGY is given.
pub const DEFAULT_TOPOLOGY: &str = "topology.yaml";

/// How to reach Kafka, and which topology.
#[derive(Args, Clone)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub file: TopologyFile,
    /// Kafka bootstrap servers.
    #[arg(
        long,
        short = 'b',
        env = "PAVILION_BOOTSTRAP",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap: String,
    /// Extra librdkafka client setting, repeatable (e.g. `-X security.protocol=SASL_SSL`).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub client_config: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

/// Parses `100ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 100ms, 2s, 1m)"))
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
            TopologyCommand::Check(f) => topology_cmd::check(&f),
            TopologyCommand::Show(f) => topology_cmd::show(&f),
        },
        Command::Topics { command } => match command {
            TopicsCommand::Create(args) => topology_cmd::create_topics(&args),
        },
        Command::Tenant { command } => tenant_cmd::run(command),
        Command::Policy { command } => policy_cmd::run(command),
        Command::Provider { command } => provider_cmd::run(command),
        Command::Request(args) => request_cmd::run(args),
        Command::Psi { command } => psi_cmd::run(command),
        Command::Keys { command } => keys_cmd::run(command),
        Command::Verify(args) => keys_cmd::verify(args),
        Command::Run(args) => run::run(args),
        Command::Audit { command } => audit_cmd::run(command),
        Command::Anchor { command } => anchor_cmd::run(command),
        Command::Subject { command } => audit_cmd::subject(command),
        Command::Demo(args) => demo::demo(args),
        Command::Bench { command } => match command {
            BenchCommand::Passthrough(args) => bench::passthrough(args),
            BenchCommand::Policy(args) => bench::policy(args),
            BenchCommand::RequestPath(args) => bench::request_path(args),
            BenchCommand::Psi(args) => bench_psi::psi(args),
            BenchCommand::Signing(args) => bench_signing::signing(args),
            BenchCommand::Audit(args) => bench_audit::audit(args),
            BenchCommand::E2e(args) => bench_e2e::e2e(args),
        },
        Command::Schemas { command } => match command {
            SchemasCommand::List => schemas_cmd::list(),
            SchemasCommand::Check => schemas_cmd::check(),
            SchemasCommand::Release { dir } => schemas_cmd::release(&dir),
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
