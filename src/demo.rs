//! `pavilion demo`: the whole path on the local infrastructure, as its users would drive it.
//!
//! A topology of its own (the repository's, on topic names unique to the run), signing and
//! subject keys, three tenants with different policies, two providers in two regions with
//! synthetic populations generated from a seed and loaded through the provider connector,
//! their OPRF services, the pipeline, the anchor contract and loop — every one of them the
//! `pavilion` command a person would run, as child processes. Then a mix of requests through
//! the client library (matches, non-matches, denials by policy, a burst over a tenant's rate
//! limit, duplicates, malformed records, a batch record linkage), a live progress line, a
//! summary, and one decision verified end to end: its signature against the JWKS, its
//! inclusion in a signed checkpoint, that checkpoint's root on chain. The processes it ran
//! stop with it; the `restart.sh` it leaves in its folder starts them again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Args;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use indicatif::{ProgressBar, ProgressStyle};
use pavilion_client::{
    sign_request, OprfClient, ProviderEndpoint, RequestDraft, TenantCredentials,
};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_schemas::{
    AnchorReceipt, Checkpoint, ClaimRequest, Decision, Event, Provider, Registry, SubjectToken,
    Verdict, VerificationRequest,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::ClusterArgs;

/// Options of the demo; every one has an environment variable.
#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Working directory: the run's topology, keys, populations, logs (replaced each run).
    #[arg(long, env = "PAVILION_DEMO_DIR", default_value = ".pavilion-demo")]
    pub dir: PathBuf,
    /// Synthetic subjects per provider population.
    #[arg(long, env = "PAVILION_DEMO_SUBJECTS", default_value_t = 100_000)]
    pub subjects: usize,
    /// Seed of the populations and of the request mix.
    #[arg(long, env = "PAVILION_DEMO_SEED", default_value_t = 7)]
    pub seed: u64,
    /// Verification requests to send (besides the burst, duplicates and malformed ones).
    #[arg(long, env = "PAVILION_DEMO_REQUESTS", default_value_t = 600)]
    pub requests: usize,
    /// Malformed records mixed in.
    #[arg(long, env = "PAVILION_DEMO_MALFORMED", default_value_t = 5)]
    pub malformed: usize,
    /// The chain to anchor on (anvil from `scripts/infra up` by default).
    #[arg(
        long,
        env = "PAVILION_CHAIN_RPC",
        default_value = "http://127.0.0.1:8545"
    )]
    /// The anchoring account's key comes from $PAVILION_CHAIN_KEY (never a flag); without it,
    /// anvil's first dev account.
    pub rpc_url: String,
    /// Give up waiting for the pipeline after this long.
    #[arg(long, env = "PAVILION_DEMO_TIMEOUT", default_value = "300s", value_parser = crate::parse_duration)]
    pub timeout: Duration,
}

/// Child processes, stopped (SIGTERM) when the demo ends, however it ends.
pub(crate) struct Children(pub(crate) Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for (name, child) in &mut self.0 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!("  {name} ignored SIGTERM; killed");
                let _ = child.kill();
            }
        }
    }
}

/// Runs `pavilion` commands against the run's topology.
pub(crate) struct Cli {
    pub(crate) dir: PathBuf,
    pub(crate) env: Vec<(String, String)>,
    /// What `spawn` started, by name, with its arguments: written down for a restart.
    spawned: RefCell<Vec<(String, Vec<String>)>>,
}

impl Cli {
    /// The commands of one run: its topology, and keys sealed under a fixed passphrase in
    /// `dir` (a demo's or a benchmark's, never a secret).
    pub(crate) fn for_run(dir: &Path, topology: &Path, bootstrap: &str, log: &str) -> Cli {
        let passphrase = "demo passphrase (not a secret)".to_owned();
        let path = |p: &str| dir.join(p).display().to_string();
        Cli {
            dir: dir.to_owned(),
            env: vec![
                ("PAVILION_TOPOLOGY".into(), topology.display().to_string()),
                ("PAVILION_BOOTSTRAP".into(), bootstrap.to_owned()),
                ("PAVILION_SIGNING_KEYS".into(), path("keys")),
                ("PAVILION_SIGNING_PASSPHRASE".into(), passphrase.clone()),
                ("PAVILION_SUBJECT_KEYS".into(), path("subjects")),
                (
                    "PAVILION_SUBJECT_KEYS_PASSPHRASE".into(),
                    passphrase.clone(),
                ),
                ("PAVILION_PROVIDER_PASSPHRASE".into(), passphrase),
                ("PAVILION_LOG".into(), log.to_owned()),
            ],
            spawned: RefCell::default(),
        }
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(std::env::current_exe().expect("own path"));
        c.args(args)
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs to completion; its output when it succeeds, its error output when not.
    pub(crate) fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.command(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!(
                "`pavilion {}` failed:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts a long-running command, its output in `<dir>/<log>.log`.
    pub(crate) fn spawn(&self, children: &mut Children, log: &str, args: &[&str]) -> Result<()> {
        let file = std::fs::File::create(self.dir.join(format!("{log}.log")))?;
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        children.0.push((log.to_owned(), child));
        self.spawned.borrow_mut().push((
            log.to_owned(),
            args.iter().map(|a| (*a).to_owned()).collect(),
        ));
        Ok(())
    }

    /// Writes `restart.sh` into the run's folder: the environment and the exact command of
    /// every process `spawn` started, to start them again after the run stopped them. Secrets
    /// stay off command lines and out of the script: each is read from a file in `secrets/`
    /// (mode 600), or, if named in `inherited`, from the caller's environment, as the run got
    /// it. Returns what to print: the script's environment and commands.
    pub(crate) fn write_restart(&self, run: &str, inherited: &[&str]) -> Result<String> {
        let secrets = self.dir.join("secrets");
        let mut env = Vec::new();
        for (name, value) in &self.env {
            let is_secret = ["_PASSPHRASE", "_KEY", "_PIN"]
                .iter()
                .any(|s| name.ends_with(s));
            if inherited.contains(&name.as_str()) {
                env.push(format!(
                    ": \"${{{name}:?set {name} as for the demo; it is never written down}}\"\nexport {name}"
                ));
            } else if is_secret {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&secrets)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(secrets.join(name))
                    .and_then(|mut f| f.write_all(value.as_bytes()))
                    .with_context(|| format!("writing secrets/{name}"))?;
                env.push(format!("export {name}=\"$(cat secrets/{name})\""));
            } else {
                env.push(format!("export {name}={}", sh_quote(value)));
            }
        }
        let exe = std::env::current_exe()?.display().to_string();
        let spawned = self.spawned.borrow();
        let names: Vec<&str> = spawned.iter().map(|(n, _)| n.as_str()).collect();
        let commands: Vec<(&str, String)> = spawned
            .iter()
            .map(|(name, args)| {
                let args: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
                (name.as_str(), args.join(" "))
            })
            .collect();
        let cases: String = commands
            .iter()
            .map(|(name, args)| format!("    {name}) start {name} \"$PAVILION\" {args} ;;\n"))
            .collect();
        let script = format!(
            r#"#!/bin/sh
# Starts again what `pavilion demo` ran for run {run} (the demo stopped them when it ended),
# each in the background, its output appended to NAME.log here and its pid in NAME.pid:
#   ./restart.sh              all of them: {all}
#   ./restart.sh NAME...      only those
# Stop one with: kill "$(cat NAME.pid)" (SIGTERM: it finishes what it is doing and exits).
# Secrets are read from secrets/ (mode 600) or your environment, never put on a command line.
set -eu
cd {dir}
PAVILION={exe}
{env}

start() {{
    name=$1
    shift
    if [ -f "$name.pid" ] && kill -0 "$(cat "$name.pid")" 2>/dev/null; then
        echo "$name is already running (pid $(cat "$name.pid"))"
        return
    fi
    "$@" >>"$name.log" 2>&1 &
    echo $! >"$name.pid"
    echo "started $name (pid $!, log $name.log)"
}}

[ $# -gt 0 ] || set -- {all}
for name in "$@"; do
    case $name in
{cases}    *) echo "no process $name here ({all})" >&2; exit 2 ;;
    esac
done
"#,
            all = names.join(" "),
            dir = sh_quote(&self.dir.display().to_string()),
            exe = sh_quote(&exe),
            env = env.join("\n"),
        );
        let path = self.dir.join("restart.sh");
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        let mut shown = format!("  cd {}\n", sh_quote(&self.dir.display().to_string()));
        for line in &env {
            shown += &format!("  {}\n", line.replace('\n', "\n  "));
        }
        for (name, args) in &commands {
            shown += &format!("  pavilion {args} >>{name}.log 2>&1 &\n");
        }
        Ok(shown)
    }
}

/// `s` as one word of a POSIX shell command line.
fn sh_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn step(text: &str) {
    println!("▸ {text}");
}

/// Onboards both providers, loads the populations `populations` wrote and starts their OPRF
/// services (`rate` evaluations/s per tenant, no daily quota); how long each load took.
pub(crate) fn start_providers(
    cli: &Cli,
    children: &mut Children,
    rate: &str,
) -> Result<Vec<(&'static str, Duration)>> {
    let mut loads = Vec::new();
    for (name, region, claims, load) in [
        (
            "bank-eu",
            "eu",
            "account_verified,age_over",
            ["--claims-column", "claims"],
        ),
        (
            "fraud-us",
            "us",
            "fraud_listed",
            ["--claim", "fraud_listed"],
        ),
    ] {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        cli.ok(&[
            "provider",
            "onboard",
            name,
            "--region",
            region,
            "--claims",
            claims,
            "--oprf-url",
            &url,
        ])?;
        let csv = format!("{name}.csv");
        let t = Instant::now();
        cli.ok(&["provider", "load", name, "--from", &csv, load[0], load[1]])?;
        loads.push((name, t.elapsed()));
        let listen = format!("127.0.0.1:{port}");
        cli.spawn(
            children,
            &format!("oprf-{name}"),
            &[
                "provider",
                "serve-oprf",
                name,
                "--listen",
                &listen,
                "--rate",
                rate,
                "--burst",
                rate,
                "--daily-quota",
                "0",
            ],
        )?;
    }
    Ok(loads)
}

const FIRST: [&str; 12] = [
    "ada", "bram", "chioma", "dario", "elif", "farah", "goran", "hana", "ines", "jonas", "kemal",
    "lena",
];
const LAST: [&str; 10] = [
    "novak", "okafor", "petrov", "quinn", "rossi", "sato", "tanaka", "urban", "varga", "weber",
];

/// Subject `i`'s e-mail address: the same for every run with the same seed.
pub(crate) fn email(seed: u64, i: usize) -> String {
    let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    format!(
        "{}.{}{}@{}.example",
        FIRST[rng.random_range(0..FIRST.len())],
        LAST[rng.random_range(0..LAST.len())],
        i,
        ["mail", "post", "inbox"][rng.random_range(0..3)]
    )
}

/// Writes both providers' populations: bank-eu (EU accounts: most verified, adults marked),
/// fraud-us (a US fraud list). Subject `i` is a member of each with a fixed probability.
pub(crate) fn populations(dir: &Path, seed: u64, subjects: usize) -> Result<(usize, usize)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bank = std::io::BufWriter::new(std::fs::File::create(dir.join("bank-eu.csv"))?);
    let mut fraud = std::io::BufWriter::new(std::fs::File::create(dir.join("fraud-us.csv"))?);
    writeln!(bank, "email,claims")?;
    writeln!(fraud, "email")?;
    let (mut members, mut listed) = (0, 0);
    for i in 0..subjects {
        let roll: f64 = rng.random();
        if roll < 0.7 {
            let adult = rng.random::<f64>() < 0.85;
            let claims = if adult {
                "account_verified;age_over"
            } else {
                "account_verified"
            };
            writeln!(bank, "{},{claims}", email(seed, i))?;
            members += 1;
        }
        if rng.random::<f64>() < 0.05 {
            writeln!(fraud, "{}", email(seed, i))?;
            listed += 1;
        }
    }
    bank.flush()?;
    fraud.flush()?;
    Ok((members, listed))
}

const SHOP_POLICY: &str = r#"policy: age-gate
tenant: shop
description: An online shop checks that buyers of age-restricted goods are adults.
rules: |
  @id("adults-at-checkout")
  permit(principal, action == Action::"verify", resource == Claim::"age_over")
  when { context.purpose == "age_gate" && context.threshold >= 18 };
plan:
  age_over:
    providers: [{ id: bank-eu, region: eu }]
    evidence: [oprf_match]
    disclose: [age_over]
response_format: sd_jwt
response:
  audience: https://shop.example/checkout
  lifetime: 5m
  claim_names: { age_over: age_over_18 }
"#;

pub(crate) const BANK_POLICY: &str = r#"policy: kyc
tenant: lender
description: A lender verifies accounts and screens for fraud when onboarding, never for marketing.
rules: |
  @id("kyc-accounts")
  permit(principal, action == Action::"verify", resource == Claim::"account_verified")
  when { context.purpose == "kyc" };
  @id("kyc-fraud-screening")
  permit(principal, action == Action::"verify", resource == Claim::"fraud_listed")
  when { context.purpose == "kyc" };
plan:
  account_verified:
    providers: [{ id: bank-eu, region: eu }]
    evidence: [oprf_match]
  fraud_listed:
    providers: [{ id: fraud-us, region: us }]
    evidence: [oprf_match]
response_format: jwt
"#;

const LINKER_POLICY: &str = r#"policy: linkage
tenant: insurer
description: An insurer links its customer list against the bank's accounts (intersection disclosed).
rules: |
  @id("claims-linkage")
  permit(principal, action == Action::"verify", resource == Claim::"record_link")
  when { context.purpose == "claims_fraud" };
  @id("single-checks")
  permit(principal, action == Action::"verify", resource == Claim::"account_verified")
  when { context.purpose == "claims_fraud" };
plan:
  record_link:
    providers: [{ id: bank-eu, region: eu }]
    evidence: [oprf_match]
    disclose: [intersection]
  account_verified:
    providers: [{ id: bank-eu, region: eu }]
    evidence: [oprf_match]
response_format: jws
"#;

/// The repository's topology on topic names of this run's own (`<run>.…`), so a demo never
/// meets an earlier run's tenants, policies or logs.
pub(crate) fn run_topology(repo: &str, run: &str) -> String {
    let mut out = String::new();
    for line in repo.lines() {
        let line = if line.starts_with("application:") {
            format!("application: {run}")
        } else {
            // Topic names start `pavilion.` and a lower-case letter; schema names an upper-case one.
            let mut l = String::new();
            let mut rest = line;
            while let Some(at) = rest.find("pavilion.") {
                let after = &rest[at + "pavilion.".len()..];
                l.push_str(&rest[..at]);
                if after.starts_with(|c: char| c.is_ascii_lowercase() || c == '{') {
                    l.push_str(run);
                    l.push('.');
                } else {
                    l.push_str("pavilion.");
                }
                rest = after;
            }
            l.push_str(rest);
            l
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One kind of request in the mix: who asks what, for which purpose, with whose tokens.
struct Scenario {
    /// Cumulative share of the mix: chosen when the roll is below this (and above the
    /// previous one's).
    up_to: f64,
    tenant: &'static str,
    kind: &'static str,
    claims: &'static [(&'static str, &'static [(&'static str, &'static str)])],
    purpose: &'static str,
    providers: &'static [&'static str],
}

const MIX: [Scenario; 4] = [
    Scenario {
        up_to: 0.45,
        tenant: "shop",
        kind: "age check",
        claims: &[("age_over", &[("threshold", "18")])],
        purpose: "age_gate",
        providers: &["bank-eu"],
    },
    Scenario {
        up_to: 0.85,
        tenant: "lender",
        kind: "kyc",
        claims: &[("account_verified", &[]), ("fraud_listed", &[])],
        purpose: "kyc",
        providers: &["bank-eu", "fraud-us"],
    },
    // Not a purpose the lender's policy allows: denied, claim by claim.
    Scenario {
        up_to: 0.93,
        tenant: "lender",
        kind: "marketing (denied)",
        claims: &[("account_verified", &[])],
        purpose: "marketing",
        providers: &["bank-eu"],
    },
    Scenario {
        up_to: 1.0,
        tenant: "insurer",
        kind: "account check",
        claims: &[("account_verified", &[])],
        purpose: "claims_fraud",
        providers: &["bank-eu"],
    },
];

/// What the demo sends, per request.
struct Sent {
    tenant: &'static str,
    kind: &'static str,
    at: Instant,
}

/// The repository's topology.yaml, built in: what the demo runs when there is no
/// topology.yaml where it is started, so that it runs from any directory.
const REPO_TOPOLOGY: &str = include_str!("../topology.yaml");

/// The topology the demo renames for its run, and where it comes from: `--topology` or
/// $PAVILION_TOPOLOGY, else `./topology.yaml`, else the built-in copy of the repository's.
fn demo_topology(file: &Path) -> Result<(String, String)> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok((text, file.display().to_string())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && file == Path::new(crate::DEFAULT_TOPOLOGY) =>
        {
            Ok((
                REPO_TOPOLOGY.to_owned(),
                "the repository's topology.yaml (built in)".to_owned(),
            ))
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "reading the demo's topology {} (give one with --topology FILE or \
                 PAVILION_TOPOLOGY=FILE; without either, ./topology.yaml or the built-in one)",
                file.display()
            )
        }),
    }
}

pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let run = format!("demo{}", std::process::id());
    // The topology first: nothing is written or deleted for a run that cannot start.
    let (repo_topology, topology_source) = demo_topology(&args.cluster.file.topology)?;
    let run_text = run_topology(&repo_topology, &run);
    let topology = crate::topology_cmd::parse(&run_text, Path::new(&topology_source))?;
    let marker = args.dir.join(".pavilion-demo");
    if args.dir.exists() {
        let Ok(previous) = std::fs::read_to_string(&marker) else {
            bail!(
                "{} exists and is not a demo directory; choose another --dir",
                args.dir.display()
            );
        };
        // The previous run's topics go with its files: a broker collecting every run's
        // partitions gets slow to start.
        if let Some(previous) = previous.lines().next().filter(|r| r.starts_with("demo")) {
            let deleted = tokio::runtime::Runtime::new()?.block_on(
                pavilion_kafka::delete_topics_with_prefix(
                    &crate::topology_cmd::settings(&args.cluster, "demo"),
                    &format!("{previous}."),
                ),
            );
            if let Ok(n) = deleted {
                println!("(deleted the {n} topics of the previous run, {previous})");
            }
        }
        std::fs::remove_dir_all(&args.dir)?;
    }
    std::fs::create_dir_all(&args.dir)?;
    std::fs::write(
        &marker,
        format!("{run}\nmade by `pavilion demo`; replaced, with its topics, by the next run\n"),
    )?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let topology_path = dir.join("topology.yaml");
    std::fs::write(&topology_path, &run_text)?;
    let run_cluster = ClusterArgs {
        file: crate::TopologyFile {
            topology: topology_path.clone(),
        },
        ..args.cluster.clone()
    };
    let mut cli = Cli::for_run(&dir, &topology_path, &args.cluster.bootstrap, "info");
    cli.env.extend([
        ("PAVILION_CHAIN_RPC".into(), args.rpc_url.clone()),
        (
            "PAVILION_CHAIN_KEY".into(),
            std::env::var("PAVILION_CHAIN_KEY")
                .unwrap_or_else(|_| pavilion_chain::dev::DEV_KEY.to_owned()),
        ),
    ]);
    let mut children = Children(Vec::new());
    println!(
        "Pavilion demo: run `{run}` of {topology_source}, files in {}",
        dir.display()
    );

    step("provisioning topics from topology.yaml");
    cli.ok(&["topics", "create"])
        .context("is Kafka running? start it with `scripts/infra up`")?;
    step("decision-signing keys and per-subject audit keys");
    cli.ok(&["keys", "generate"])?;
    std::fs::write(dir.join("jwks.json"), cli.ok(&["keys", "jwks"])?)?;

    step(&format!("two providers: bank-eu (accounts, EU) and fraud-us (fraud list, US), {} synthetic subjects each, seed {}", args.subjects, args.seed));
    let (members, listed) = populations(&dir, args.seed, args.subjects)?;
    for ((name, took), n) in start_providers(&cli, &mut children, "5000")?
        .into_iter()
        .zip([members, listed])
    {
        println!("  {name}: loaded in {took:.1?} ({n} members)");
    }

    step("three tenants: shop (age gate, SD-JWT), lender (KYC + fraud, JWT), insurer (record linkage, JWS)");
    for (tenant, name, regions, rate, burst, policy) in [
        ("shop", "Example Shop", vec!["eu"], "20", "30", SHOP_POLICY),
        (
            "lender",
            "Example Lender",
            vec!["eu", "us"],
            "1000",
            "2000",
            BANK_POLICY,
        ),
        (
            "insurer",
            "Example Insurer",
            vec!["eu"],
            "1000",
            "2000",
            LINKER_POLICY,
        ),
    ] {
        let mut add = vec![
            "tenant",
            "add",
            tenant,
            "--name",
            name,
            "--rate",
            rate,
            "--burst",
            burst,
            "--activate",
        ];
        for r in &regions {
            add.extend(["--region", r]);
        }
        cli.ok(&add)?;
        let key = format!("{tenant}-k1.json");
        cli.ok(&[
            "tenant",
            "add-key",
            tenant,
            "--key-id",
            "k1",
            "--generate",
            &key,
        ])?;
        let file = format!("{tenant}.policy.yaml");
        std::fs::write(dir.join(&file), policy)?;
        cli.ok(&["policy", "push", &file, "--activate"])?;
    }

    step("anchor contract and the pipeline (tenancy → policy → psi → signing fused; audit; anchoring)");
    let contract = cli
        .ok(&["anchor", "deploy"])
        .context("is anvil running? `scripts/infra up` starts it")?
        .trim()
        .to_owned();
    println!("  AuditAnchor at {contract} on {}", args.rpc_url);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    cli.spawn(
        &mut children,
        "pipeline",
        &[
            "run",
            "--instance",
            "demo",
            "--state-dir",
            "state",
            "--metrics-addr",
            &metrics,
            // The request path and the audit log; not the sample counting pipeline.
            "--task",
            "tenancy",
            "--task",
            "policy",
            "--task",
            "audit",
        ],
    )?;
    cli.spawn(
        &mut children,
        "anchor",
        &[
            "anchor",
            "run",
            "--contract",
            &contract,
            "--metrics-addr",
            &format!("127.0.0.1:{}", free_port()?),
        ],
    )?;
    // Written now, so that it is there however the run ends.
    let chain_key_given = std::env::var_os("PAVILION_CHAIN_KEY").is_some();
    let restart = cli.write_restart(
        &run,
        if chain_key_given {
            &["PAVILION_CHAIN_KEY"]
        } else {
            &[]
        },
    )?;

    // Readers first, so every decision of this run is seen.
    let settings = crate::topology_cmd::settings(&args.cluster, "demo");
    let decision_family = crate::topology_cmd::topic_for(&topology, Decision::FULL_NAME)?;
    let tenants = ["shop", "lender", "insurer"];
    let decision_topics: Vec<String> = tenants
        .iter()
        .filter_map(|t| {
            topology
                .family_topic(&decision_family.name, t)
                .map(|s| s.name)
        })
        .collect();
    let topic_refs: Vec<&str> = decision_topics.iter().map(String::as_str).collect();
    let decisions_reader = TopicReader::new(&settings, &topic_refs)?;
    wait_ready(&metrics, args.timeout)?;

    step(&format!(
        "sending {} requests through the client library (+ a burst, duplicates, {} malformed)",
        args.requests, args.malformed
    ));
    let registry = Registry::builtin();
    let ingest = crate::topology_cmd::topic_for(&topology, VerificationRequest::FULL_NAME)?.name;
    let producer = PlainProducer::new(&settings)?;
    let providers = Registered::read(&run_cluster, &topology)?;
    let endpoint = |provider: &str| providers.endpoint(provider);
    let credentials = |tenant: &str| -> Result<TenantCredentials> {
        Ok(TenantCredentials::from_key_file(&std::fs::read_to_string(
            dir.join(format!("{tenant}-k1.json")),
        )?)?)
    };
    let clients: BTreeMap<&str, (TenantCredentials, OprfClient)> = tenants
        .iter()
        .map(|t| credentials(t).map(|c| (*t, (c.clone(), OprfClient::new(c)))))
        .collect::<Result<_>>()?;
    let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(1));
    let mut sent: BTreeMap<String, Sent> = BTreeMap::new();
    let mut last: Option<VerificationRequest> = None;
    let bar = ProgressBar::new(args.requests as u64);
    bar.set_style(
        ProgressStyle::with_template("  {bar:30} {pos}/{len} sent {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut decided: BTreeMap<String, (Decision, Instant)> = BTreeMap::new();
    let (mut duplicates, mut duplicates_sent) = (0, 0);
    // A reader of its own, so each decision is timed when it becomes visible, not when the
    // sender next looks.
    let (seen, arrivals) = std::sync::mpsc::channel::<(Vec<u8>, Instant)>();
    std::thread::spawn(move || {
        while let Ok(r) = decisions_reader.poll(Duration::from_millis(100)) {
            if let Some(v) = r.and_then(|r| r.value) {
                if seen.send((v, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    let drain = |decided: &mut BTreeMap<String, (Decision, Instant)>,
                 duplicates: &mut usize|
     -> Result<()> {
        while let Ok((v, at)) = arrivals.try_recv() {
            let d: Decision = registry.decode(&v)?;
            if decided.contains_key(&d.request_id) {
                *duplicates += 1; // a duplicate's rejection shares the request id
            } else {
                decided.insert(d.request_id.clone(), (d, at));
            }
        }
        Ok(())
    };
    for i in 0..args.requests {
        let roll: f64 = rng.random();
        let subject = email(args.seed, rng.random_range(0..args.subjects * 11 / 10)); // ~9% strangers
        let scenario = MIX
            .iter()
            .find(|m| roll < m.up_to)
            .expect("the mix covers [0, 1)");
        let tenant = scenario.tenant;
        let (creds, client) = &clients[tenant];
        let input = oprf_input(IdentifierKind::Email, &subject)?;
        let mut tokens = Vec::new();
        for p in scenario.providers {
            let out = client.tokens(&endpoint(p)?, std::slice::from_ref(&input))?;
            tokens.push(SubjectToken {
                provider_id: (*p).to_owned(),
                token: out[0].to_vec(),
            });
        }
        let request = sign_request(
            creds,
            RequestDraft {
                claims: scenario
                    .claims
                    .iter()
                    .map(|(n, params)| ClaimRequest {
                        name: (*n).to_owned(),
                        params: params
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                            .collect(),
                    })
                    .collect(),
                purpose: scenario.purpose.to_owned(),
                subject_jurisdiction: if tenant == "lender" {
                    "US".into()
                } else {
                    "DE".into()
                },
                consent_ref: None,
                response_format: None,
                request_id: Some(format!("{run}-{i:05}")),
            },
            tokens,
        );
        producer.send(
            &ingest,
            request.tenant_id.as_bytes(),
            &registry.encode(&request)?,
        )?;
        sent.insert(
            request.request_id.clone(),
            Sent {
                tenant,
                kind: scenario.kind,
                at: Instant::now(),
            },
        );
        // Now and then the same request again (a producer retrying): a duplicate.
        if i % 50 == 25 {
            if let Some(previous) = &last {
                producer.send(
                    &ingest,
                    previous.tenant_id.as_bytes(),
                    &registry.encode(previous)?,
                )?;
                duplicates_sent += 1;
            }
        }
        if i < args.malformed {
            producer.send(&ingest, b"shop", b"\x00not a request")?;
        }
        last = Some(request);
        // Flushed at once: latency counts from the moment the request is on its way.
        producer.flush()?;
        if i % 10 == 0 {
            drain(&mut decided, &mut duplicates)?;
            bar.set_message(format!("{} decided", decided.len()));
        }
        bar.inc(1);
        // A steady pace, except one burst at the shop (over its 20/s, burst 30).
        if i != args.requests / 2 {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    // The burst: 60 age checks at once from the shop.
    let (creds, client) = &clients["shop"];
    for b in 0..60 {
        let input = oprf_input(IdentifierKind::Email, &email(args.seed, b))?;
        let token = client.tokens(&endpoint("bank-eu")?, std::slice::from_ref(&input))?;
        let request = sign_request(
            creds,
            RequestDraft {
                claims: vec![ClaimRequest {
                    name: "age_over".into(),
                    params: [("threshold".to_owned(), "18".to_owned())].into(),
                }],
                purpose: "age_gate".into(),
                subject_jurisdiction: "DE".into(),
                consent_ref: None,
                response_format: None,
                request_id: Some(format!("{run}-burst-{b:02}")),
            },
            vec![SubjectToken {
                provider_id: "bank-eu".into(),
                token: token[0].to_vec(),
            }],
        );
        producer.send(
            &ingest,
            request.tenant_id.as_bytes(),
            &registry.encode(&request)?,
        )?;
        sent.insert(
            request.request_id.clone(),
            Sent {
                tenant: "shop",
                kind: "burst",
                at: Instant::now(),
            },
        );
    }
    producer.flush()?;
    bar.finish_and_clear();

    step("record linkage: the insurer's 1,000 customers against bank-eu (batch PSI)");
    let customers: Vec<String> = (0..1000)
        .map(|i| email(args.seed, i * 97 % (args.subjects * 11 / 10)))
        .collect();
    std::fs::write(dir.join("customers.txt"), customers.join("\n"))?;
    let linkage = cli.ok(&[
        "psi",
        "batch",
        "customers.txt",
        "--key",
        "insurer-k1.json",
        "--provider",
        "bank-eu",
        "--purpose",
        "claims_fraud",
        "--jurisdiction",
        "DE",
        "--reveal",
        "intersection",
        "--wait",
        "--out",
        "linked.txt",
    ])?;
    for line in linkage.lines().take(3) {
        println!("  {line}");
    }

    step("waiting for every decision");
    let deadline = Instant::now() + args.timeout;
    while decided.len() < sent.len() {
        drain(&mut decided, &mut duplicates)?;
        if Instant::now() > deadline {
            bail!(
                "{} of {} decisions after {:?}; see {}/pipeline.log",
                decided.len(),
                sent.len(),
                args.timeout,
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Outcomes by reason, latency from produce to the decision visible read_committed.
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies: Vec<f64> = Vec::new();
    for (id, (d, at)) in &decided {
        let Some(s) = sent.get(id) else { continue };
        latencies.push(at.duration_since(s.at).as_secs_f64() * 1000.0);
        let what = match &d.rejection {
            Some(r) => format!(
                "rejected: {}",
                serde_json::to_value(r.reason)?.as_str().unwrap_or("?")
            ),
            None => d
                .outcomes
                .iter()
                .map(|o| {
                    let verdict = serde_json::to_value(o.outcome)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    format!("{} {verdict}", o.claim_name)
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        *outcomes
            .entry(format!("{:<8} {:<19} {what}", s.tenant, s.kind))
            .or_insert(0) += 1;
    }
    latencies.sort_by(f64::total_cmp);
    let dlq =
        crate::topology_cmd::read_all::<pavilion_schemas::DeadLetter>(&run_cluster, &topology.dlq)?;

    step("waiting for the last checkpoint and its anchor");
    let sample = decided
        .iter()
        .find(|(_, (d, _))| {
            d.rejection.is_none()
                && d.outcomes.iter().any(|o| o.outcome == Verdict::Verified)
                && d.format == pavilion_schemas::ResponseFormat::Jwt
        })
        .map(|(id, (d, _))| (id.clone(), d.clone()))
        .context("no verified JWT decision to show")?;
    let (checkpoint, receipt) =
        anchored_checkpoint(&cli, &topology, &run_cluster, &sample.0, args.timeout)?;

    println!();
    println!(
        "  requests sent        {} ({} tenants; + {} duplicates, {} malformed)",
        sent.len(),
        tenants.len(),
        duplicates_sent,
        args.malformed
    );
    println!(
        "  decisions            {} (+ {duplicates} for duplicates)",
        decided.len()
    );
    println!("  outcomes");
    for (what, n) in &outcomes {
        println!("    {n:>5}  {what}");
    }
    println!("  latency, produce → decision visible (read_committed)");
    println!(
        "    p50 {:.0} ms   p95 {:.0} ms   p99 {:.0} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99)
    );
    let mut by_stage: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, d) in &dlq {
        *by_stage.entry(d.stage.as_str()).or_insert(0) += 1;
    }
    println!("  dead letters         {} {by_stage:?}", dlq.len());
    println!(
        "  latest checkpoint    {} size {} (root {})",
        checkpoint.origin,
        checkpoint.tree_size,
        B64.encode(&checkpoint.root_hash)
    );
    println!(
        "  anchored             tx 0x{} in block {} ({} gas)",
        hex::encode(&receipt.tx_hash),
        receipt.block_number,
        receipt.gas_used
    );

    step(&format!("one decision verified end to end: {}", sample.0));
    let log_topic =
        crate::topology_cmd::topic_for(&topology, pavilion_schemas::AuditEntry::FULL_NAME)?.name;
    verify_sample(
        &cli,
        &run_cluster,
        &log_topic,
        &sample.1,
        &checkpoint,
        &receipt,
        &args.rpc_url,
    )?;
    println!(
        "\nDone in {:.0?}. Everything is in {} (topology, keys, logs); the topics are `{run}.*`.",
        started.elapsed(),
        dir.display()
    );
    println!(
        "Its processes stop now. `{}/restart.sh [NAME...]` starts them again (or run these):\n{}",
        dir.display(),
        restart.trim_end()
    );
    drop(children);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The providers registered on a run's registry topic, to find their OPRF endpoints.
pub(crate) struct Registered(BTreeMap<String, Provider>);

impl Registered {
    pub(crate) fn read(
        cluster: &ClusterArgs,
        topology: &pavilion_runtime::topology::Topology,
    ) -> Result<Registered> {
        let topic = crate::topology_cmd::topic_for(topology, Provider::FULL_NAME)?;
        Ok(Registered(
            crate::topology_cmd::read_all::<Provider>(cluster, &topic.name)?
                .into_iter()
                .map(|(_, p)| (p.provider_id.clone(), p))
                .collect(),
        ))
    }

    pub(crate) fn endpoint(&self, provider: &str) -> Result<ProviderEndpoint> {
        self.0
            .get(provider)
            .and_then(ProviderEndpoint::of)
            .with_context(|| format!("provider {provider} is not registered"))
    }
}

/// Waits for the pipeline's /readyz.
pub(crate) fn wait_ready(addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = ureq::get(&format!("http://{addr}/readyz"))
            .timeout(Duration::from_secs(2))
            .call()
        {
            if r.status() == 200 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the pipeline did not become ready (see pipeline.log)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The checkpoint covering `request_id`'s entries, once it is anchored, and its receipt.
fn anchored_checkpoint(
    cli: &Cli,
    topology: &pavilion_runtime::topology::Topology,
    cluster: &ClusterArgs,
    request_id: &str,
    timeout: Duration,
) -> Result<(Checkpoint, AnchorReceipt)> {
    let anchors = crate::topology_cmd::topic_for(topology, AnchorReceipt::FULL_NAME)?.name;
    let checkpoints = crate::topology_cmd::topic_for(topology, Checkpoint::FULL_NAME)?.name;
    let log =
        crate::topology_cmd::topic_for(topology, pavilion_schemas::AuditEntry::FULL_NAME)?.name;
    let deadline = Instant::now() + timeout;
    loop {
        if Instant::now() > deadline {
            bail!("no anchored checkpoint covers {request_id} after {timeout:?} (see audit and anchor logs)");
        }
        // The proof names the checkpoint the request's entries are in.
        if let Ok(lines) = cli.ok(&[
            "audit",
            "prove",
            "--request-id",
            request_id,
            "--jwks",
            "jwks.json",
            "--json",
        ]) {
            let checkpoint_line = lines
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["kind"] == "checkpoint");
            if let Some(c) = checkpoint_line {
                let (origin, size) = (
                    c["origin"].as_str().unwrap_or_default().to_owned(),
                    c["tree_size"].as_i64().unwrap_or(-1),
                );
                // The shard's last checkpoint (covering all it has): it stays the latest, so
                // the proofs made next are against it.
                let entries =
                    crate::topology_cmd::read_all::<pavilion_schemas::AuditEntry>(cluster, &log)?
                        .into_iter()
                        .filter(|(_, e)| e.origin == origin)
                        .count() as i64;
                if entries > size {
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                let receipt = crate::topology_cmd::read_all::<AnchorReceipt>(cluster, &anchors)?
                    .into_iter()
                    .map(|(_, r)| r)
                    .find(|r| r.checkpoint.origin == origin && r.checkpoint.tree_size == size);
                if let Some(receipt) = receipt {
                    let checkpoint =
                        crate::topology_cmd::read_all::<Checkpoint>(cluster, &checkpoints)?
                            .into_iter()
                            .map(|(_, c)| c)
                            .find(|c| c.origin == origin && c.tree_size == size)
                            .context("the anchored checkpoint is gone")?;
                    return Ok((checkpoint, receipt));
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The sample decision: JWT signature against the JWKS alone, inclusion proof of its audit
/// entries against the signed checkpoint, the checkpoint's root in the contract's events.
fn verify_sample(
    cli: &Cli,
    cluster: &ClusterArgs,
    log_topic: &str,
    d: &Decision,
    checkpoint: &Checkpoint,
    receipt: &AnchorReceipt,
    rpc: &str,
) -> Result<()> {
    let dir = &cli.dir;
    let pavilion_schemas::Payload::Text(token) = &d.payload else {
        bail!("a binary payload");
    };
    let jws = pavilion_signing::jose::parse(token)?;
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("jwks.json"))?)?;
    let key = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == jws.kid.as_str())
        .and_then(|k| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(k["x"].as_str()?)
                .ok()
        })
        .and_then(|x| <[u8; 32]>::try_from(x).ok())
        .and_then(|x| VerifyingKey::from_bytes(&x).ok())
        .context("the decision's kid is not in the JWKS")?;
    key.verify(
        jws.signing_input.as_bytes(),
        &Signature::from_slice(&jws.signature)?,
    )
    .context("the signature does not verify")?;
    println!(
        "  ✓ signature: EdDSA by {} (from jwks.json alone); claims {}",
        jws.kid,
        String::from_utf8_lossy(&jws.payload)
            .chars()
            .take(120)
            .collect::<String>()
            + "…"
    );

    let lines = cli.ok(&[
        "audit",
        "prove",
        "--request-id",
        &d.request_id,
        "--jwks",
        "jwks.json",
        "--json",
    ])?;
    let mut proved = 0;
    let known: Vec<pavilion_audit::note::NoteKey> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "checkpoint")
        .flat_map(|v| v["vkeys"].as_array().cloned().unwrap_or_default())
        .filter_map(|k| pavilion_audit::note::NoteKey::from_vkey(k.as_str()?).ok())
        .collect();
    let body = pavilion_audit::note::open(&checkpoint.note, &known)
        .context("the checkpoint's signature")?;
    // Each proof checked (ct-merkle) from the entry itself as read from the log.
    let entries: Vec<pavilion_schemas::AuditEntry> =
        crate::topology_cmd::read_all(cluster, log_topic)?
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e: &pavilion_schemas::AuditEntry| {
                e.request_id.as_deref() == Some(d.request_id.as_str())
            })
            .collect();
    for v in lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "inclusion")
    {
        let proof: Vec<[u8; 32]> = v["proof"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| B64.decode(p.as_str()?).ok()?.try_into().ok())
            .collect();
        let (index, size) = (
            v["leaf_index"].as_u64().unwrap_or(0),
            v["tree_size"].as_u64().unwrap_or(0),
        );
        let entry = entries
            .iter()
            .find(|e| {
                e.origin == v["origin"].as_str().unwrap_or_default() && e.index as u64 == index
            })
            .context("a proof for an entry that is not in the log")?;
        if size != body.size
            || !pavilion_audit::log::verify_inclusion(
                &entry.leaf_input(),
                index,
                size,
                &body.root,
                &proof,
            )
        {
            bail!("an inclusion proof of {} does not verify", d.request_id);
        }
        proved += 1;
    }
    println!("  ✓ audit: {proved} entries of the request included in {} size {} (RFC 6962 proofs, checkpoint signature verified)", body.origin, body.size);

    let runtime = tokio::runtime::Runtime::new()?;
    let contract = pavilion_chain::Address::try_from(receipt.contract_address.as_slice())
        .map_err(|_| anyhow::anyhow!("contract address"))?;
    let on_chain = runtime.block_on(async {
        pavilion_chain::Anchorer::reader(rpc, contract)?
            .anchored(Some(&checkpoint.origin))
            .await
    })?;
    let found = on_chain
        .iter()
        .find(|a| a.tree_size == body.size && a.root == body.root)
        .context("the checkpoint's root is not on chain")?;
    println!(
        "  ✓ chain: root anchored by tx 0x{} in block {} of {rpc}",
        hex::encode(found.tx_hash),
        found.block_number
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: the demo left no way to start its processes again. `restart.sh` holds each
    /// one's exact command and the environment, secrets by reference only, and runs.
    #[test]
    fn restart_script_has_every_command_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let mut cli = Cli::for_run(
            dir.path(),
            &dir.path().join("topology.yaml"),
            "127.0.0.1:9092",
            "info",
        );
        cli.env
            .push(("PAVILION_CHAIN_KEY".into(), "0xsecret-chain-key".into()));
        cli.spawned.borrow_mut().extend([
            (
                "oprf-bank-eu".to_owned(),
                [
                    "provider",
                    "serve-oprf",
                    "bank-eu",
                    "--listen",
                    "127.0.0.1:8700",
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
            (
                "pipeline".to_owned(),
                ["run", "--instance", "demo", "--state-dir", "my state"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
        ]);
        let shown = cli.write_restart("demo1", &["PAVILION_CHAIN_KEY"]).unwrap();
        let script = std::fs::read_to_string(dir.path().join("restart.sh")).unwrap();
        for line in [
            "    oprf-bank-eu) start oprf-bank-eu \"$PAVILION\" provider serve-oprf bank-eu --listen 127.0.0.1:8700 ;;",
            "    pipeline) start pipeline \"$PAVILION\" run --instance demo --state-dir 'my state' ;;",
            "export PAVILION_BOOTSTRAP=127.0.0.1:9092",
            "export PAVILION_SIGNING_PASSPHRASE=\"$(cat secrets/PAVILION_SIGNING_PASSPHRASE)\"",
            ": \"${PAVILION_CHAIN_KEY:?set PAVILION_CHAIN_KEY as for the demo; it is never written down}\"",
        ] {
            assert!(script.contains(line), "no `{line}` in:\n{script}");
        }
        assert!(
            shown.contains(
                "  pavilion run --instance demo --state-dir 'my state' >>pipeline.log 2>&1 &"
            ),
            "{shown}"
        );
        let passphrase = &cli
            .env
            .iter()
            .find(|(k, _)| k == "PAVILION_SIGNING_PASSPHRASE")
            .unwrap()
            .1;
        for text in [&script, &shown] {
            assert!(!text.contains(passphrase.as_str()) && !text.contains("0xsecret"));
        }
        let secret = dir.path().join("secrets/PAVILION_SIGNING_PASSPHRASE");
        assert_eq!(&std::fs::read_to_string(&secret).unwrap(), passphrase);
        assert_eq!(
            std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.path().join("secrets/PAVILION_CHAIN_KEY").exists());
        // It runs: the environment resolves (secrets read, the inherited key present) and an
        // unknown name is refused before anything starts.
        let out = Command::new("sh")
            .arg(dir.path().join("restart.sh"))
            .arg("nothing")
            .env("PAVILION_CHAIN_KEY", "0xkey")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "no process nothing here (oprf-bank-eu pipeline)\n"
        );
        let out = Command::new("sh")
            .arg(dir.path().join("restart.sh"))
            .env_remove("PAVILION_CHAIN_KEY")
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("set PAVILION_CHAIN_KEY as for the demo"),
            "{out:?}"
        );
        assert!(!dir.path().join("pipeline.pid").exists(), "nothing started");
    }
}
