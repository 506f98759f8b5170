//! What a demo run is made of: its topology (the repository's, renamed for the run), the two
//! providers with their synthetic populations, OPRF services and (bank-eu) the evidence
//! service that proves predicates over its members' birth dates, the tenants' policies, and
//! where the registered providers answer. `bench e2e` and `bench zk` set up the same way.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use pavilion_client::{ClientTls, ProviderEndpoint};
use pavilion_http::local_ca::LocalCa;
use pavilion_schemas::{Event, Provider};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::processes::{free_port, Children, Cli};
use crate::cli::ClusterArgs;
use crate::commands::acls::Role;

/// A tenant as the demo and `bench e2e` onboard it.
pub(crate) struct TenantSetup<'a> {
    /// Its id, which its policy names under `tenant:`.
    pub(crate) id: &'a str,
    /// Its display name.
    pub(crate) name: &'a str,
    /// The regions whose providers may answer its requests.
    pub(crate) regions: &'a [&'a str],
    /// Its rate limit (requests/s) and burst, as `tenant add` takes them.
    pub(crate) rate: &'a str,
    pub(crate) burst: &'a str,
    /// The policy YAML pushed and activated for it.
    pub(crate) policy: &'a str,
}

/// Adds `tenant` (active), generates its client key `k1`, and pushes and activates its
/// policy (written to `<dir>/<id>.policy.yaml`); the key file's path, `<dir>/<id>-k1.json`,
/// from which its client reads its credentials.
pub(crate) fn add_tenant(cli: &Cli, tenant: &TenantSetup) -> Result<PathBuf> {
    let mut add = vec![
        "tenant",
        "add",
        tenant.id,
        "--name",
        tenant.name,
        "--rate",
        tenant.rate,
        "--burst",
        tenant.burst,
        "--activate",
    ];
    for region in tenant.regions {
        add.extend(["--region", region]);
    }
    // Its Kafka credential (ACLs: write requests, read its decisions), when it has its own.
    let credential = cli
        .credential(&Role::Tenant(tenant.id.to_owned()))
        .map(|f| f.display().to_string());
    if let Some(file) = &credential {
        add.extend(["--kafka-credentials", file]);
    }
    cli.ok(&add)?;
    let key_file = format!("{}-k1.json", tenant.id);
    cli.ok(&[
        "tenant",
        "add-key",
        tenant.id,
        "--key-id",
        "k1",
        "--generate",
        &key_file,
    ])?;
    let policy_file = format!("{}.policy.yaml", tenant.id);
    std::fs::write(cli.dir.join(&policy_file), tenant.policy)?;
    cli.ok(&["policy", "push", &policy_file, "--activate"])?;
    Ok(cli.dir.join(key_file))
}

/// What `start_providers` started: each load's time, where bank-eu's evidence service
/// serves its health and metrics, and the run's HTTPS.
pub(crate) struct Providers {
    pub(crate) loads: Vec<(&'static str, Duration)>,
    pub(crate) evidence_metrics: String,
    pub(crate) https: RunHttps,
}

/// A run's HTTPS, under `tls/` of its folder: a CA of its own (its key stays in this
/// process), the certificate of the providers' OPRF services, and the client certificates
/// those services require of tenants besides their request signatures.
pub(crate) struct RunHttps {
    ca: LocalCa,
    dir: PathBuf,
}

/// What the OPRF services are started with (relative to the run's folder).
const OPRF_TLS: [&str; 6] = [
    "--tls-cert",
    "tls/oprf.pem",
    "--tls-key",
    "tls/oprf.key",
    "--tls-client-ca",
    "tls/ca.pem",
];

impl RunHttps {
    fn create(run_dir: &Path) -> Result<Self> {
        let https = RunHttps {
            ca: LocalCa::new("pavilion demo CA")?,
            dir: run_dir.join("tls"),
        };
        std::fs::create_dir_all(&https.dir)?;
        std::fs::write(https.dir.join("ca.pem"), https.ca.cert_pem())?;
        https.write("oprf", &https.ca.server(&["127.0.0.1", "localhost"])?)?;
        Ok(https)
    }

    fn write(&self, name: &str, issued: &pavilion_http::local_ca::Issued) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::write(self.dir.join(format!("{name}.pem")), &issued.cert_pem)?;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(self.dir.join(format!("{name}.key")))
            .and_then(|mut f| f.write_all(issued.key_pem.as_bytes()))
            .with_context(|| format!("writing tls/{name}.key"))
    }

    /// A client certificate for `tenant` (written as `tls/<tenant>.pem` and `.key`, for
    /// `pavilion request --client-cert`), and the CA its client trusts.
    pub(crate) fn client(&self, tenant: &str) -> Result<ClientTls> {
        let issued = self.ca.client(tenant)?;
        self.write(tenant, &issued)?;
        Ok(ClientTls {
            trusted_pem: Some(self.ca.cert_pem().as_bytes().to_vec()),
            identity_pem: Some((issued.cert_pem.into_bytes(), issued.key_pem.into_bytes())),
        })
    }

    /// The arguments of a `pavilion` command run as `tenant`, whose certificate
    /// [`RunHttps::client`] wrote.
    pub(crate) fn client_args(tenant: &str) -> [String; 6] {
        [
            "--http-ca".into(),
            "tls/ca.pem".into(),
            "--client-cert".into(),
            format!("tls/{tenant}.pem"),
            "--client-key".into(),
            format!("tls/{tenant}.key"),
        ]
    }
}

/// Onboards both providers, loads the populations `populations` wrote (bank-eu's birth dates
/// committed, for age predicates, and its birth dates and countries signed with BBS, for
/// disclosure) and starts their OPRF services (`rate` evaluations/s per
/// tenant, no daily quota) in HTTPS with client certificates, and bank-eu's evidence
/// service.
pub(crate) fn start_providers(cli: &Cli, children: &mut Children, rate: &str) -> Result<Providers> {
    let https = RunHttps::create(&cli.dir)?;
    let mut loads = Vec::new();
    let mut ports = Vec::new();
    for (name, region, claims, load) in [
        (
            "bank-eu",
            "eu",
            "account_verified,age_over,residence",
            &[
                "--claims-column",
                "claims",
                "--attribute",
                "birthdate:date",
                "--attribute",
                "country:text",
            ][..],
        ),
        (
            "fraud-us",
            "us",
            "fraud_listed",
            &["--claim", "fraud_listed"][..],
        ),
    ] {
        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
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
        // Loading records the set's load time in the providers' registry, which only the
        // operator writes: it runs as the operator, the services below as the provider.
        let csv = format!("{name}.csv");
        let t = Instant::now();
        let mut args = vec!["provider", "load", name, "--from", &csv];
        args.extend_from_slice(load);
        cli.ok(&args)?;
        loads.push((name, t.elapsed()));
        ports.push((name, port));
    }
    // The providers are registered: every principal but the tenants gets its credential.
    cli.apply_acls()?;
    let as_provider = |name: &str| cli.as_principal(&Role::Provider(name.to_owned()));
    for (name, port) in ports {
        let listen = format!("127.0.0.1:{port}");
        let args = vec![
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
        ];
        let args = args.into_iter().chain(OPRF_TLS);
        let args: Vec<String> = args
            .into_iter()
            .map(str::to_owned)
            .chain(as_provider(name))
            .collect();
        cli.spawn(children, &format!("oprf-{name}"), &args)?;
    }
    let evidence_metrics = format!("127.0.0.1:{}", free_port()?);
    let args: Vec<String> = ["provider", "serve-evidence", "bank-eu", "--listen"]
        .into_iter()
        .map(str::to_owned)
        .chain([evidence_metrics.clone()])
        .chain(as_provider("bank-eu"))
        .collect();
    cli.spawn(children, "evidence-bank-eu", &args)?;
    Ok(Providers {
        loads,
        evidence_metrics,
        https,
    })
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

/// Writes both providers' populations: bank-eu (EU accounts: most verified, each with a birth
/// date: 85 % adults, some of them under 21, the rest 13 to 17 years old), fraud-us (a US
/// fraud list). Subject `i` is a member of each with a fixed probability.
pub(crate) fn populations(dir: &Path, seed: u64, subjects: usize) -> Result<(usize, usize)> {
    use chrono::{Datelike as _, Days, Months};
    let mut rng = StdRng::seed_from_u64(seed);
    let mut bank = std::io::BufWriter::new(std::fs::File::create(dir.join("bank-eu.csv"))?);
    let mut fraud = std::io::BufWriter::new(std::fs::File::create(dir.join("fraud-us.csv"))?);
    writeln!(bank, "email,claims,birthdate,country")?;
    const COUNTRIES: [&str; 6] = ["DE", "FR", "NL", "IT", "ES", "AT"];
    writeln!(fraud, "email")?;
    let today = chrono::Utc::now().date_naive();
    let (mut members, mut listed) = (0, 0);
    for i in 0..subjects {
        let roll: f64 = rng.random();
        if roll < 0.7 {
            let years = if rng.random::<f64>() < 0.85 {
                rng.random_range(18..80)
            } else {
                rng.random_range(13..18)
            };
            let born = today - Months::new(years * 12) - Days::new(rng.random_range(0..365));
            // Whether age_over holds is the predicate's answer, proved over the birth date;
            // the claim says only that the bank can be asked.
            // The country of residence is disclosed by a BBS proof (the lender asks for it);
            // the birth date, signed in the same set, stays hidden.
            writeln!(
                bank,
                "{},account_verified;age_over;residence,{:04}-{:02}-{:02},{}",
                email(seed, i),
                born.year(),
                born.month(),
                born.day(),
                COUNTRIES[rng.random_range(0..COUNTRIES.len())]
            )?;
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

pub(super) const SHOP_POLICY: &str = r#"policy: age-gate
tenant: shop
description: An online shop checks that buyers of age-restricted goods are adults, by a proof over the bank's committed birth date.
rules: |
  @id("adults-at-checkout")
  permit(principal, action == Action::"verify", resource == Claim::"age_over")
  when { context.purpose == "age_gate" && context.threshold >= 18 };
plan:
  age_over:
    providers: [{ id: bank-eu, region: eu }]
    evidence: [oprf_match, zk_predicate]
    disclose: [age_over]
response_format: sd_jwt
response:
  audience: https://shop.example/checkout
  lifetime: 5m
  claim_names: { age_over: age_over_18 }
"#;

/// A bar serves drinks from 21: the same proof with another bound, and the proof in the
/// signed token for the bar to check without trusting the broker.
pub(super) const BAR_POLICY: &str = r#"policy: over-21
tenant: bar
description: A bar checks that guests are 21 or older; the decision carries the proof.
rules: |
  @id("guests-over-21")
  permit(principal, action == Action::"verify", resource == Claim::"age_over")
  when { context.purpose == "age_gate" && context.threshold >= 21 };
plan:
  age_over:
    providers: [{ id: bank-eu, region: eu }]
    evidence: [oprf_match, zk_predicate]
response_format: jwt
response:
  evidence: true
"#;

pub(crate) const BANK_POLICY: &str = r#"policy: kyc
tenant: lender
description: A lender verifies accounts, learns the country of residence (a BBS proof of the bank's signature discloses it, and nothing else) and screens for fraud when onboarding, never for marketing.
rules: |
  @id("kyc-accounts")
  permit(principal, action == Action::"verify", resource == Claim::"account_verified")
  when { context.purpose == "kyc" };
  @id("kyc-residence")
  permit(principal, action == Action::"verify", resource == Claim::"residence")
  when { context.purpose == "kyc" };
  @id("kyc-fraud-screening")
  permit(principal, action == Action::"verify", resource == Claim::"fraud_listed")
  when { context.purpose == "kyc" };
plan:
  account_verified:
    providers: [{ id: bank-eu, region: eu }]
    evidence: [oprf_match]
  residence:
    providers: [{ id: bank-eu, region: eu }]
    evidence: [oprf_match, bbs_disclosure]
    disclose: [country]
  fraud_listed:
    providers: [{ id: fraud-us, region: us }]
    evidence: [oprf_match]
response_format: jwt
"#;

pub(super) const LINKER_POLICY: &str = r#"policy: linkage
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

/// The repository's topology.yaml, built in: what the demo runs when there is no
/// topology.yaml where it is started, so that it runs from any directory.
const REPO_TOPOLOGY: &str = include_str!("../../topology.yaml");

/// The topology the demo renames for its run, and where it comes from: `--topology` or
/// $PAVILION_TOPOLOGY, else `./topology.yaml`, else the built-in copy of the repository's.
pub(super) fn demo_topology(file: &Path) -> Result<(String, String)> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok((text, file.display().to_string())),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && file == Path::new(crate::cli::DEFAULT_TOPOLOGY) =>
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

/// The providers registered on a run's registry topic, to find their OPRF endpoints.
pub(crate) struct Registered(BTreeMap<String, Provider>);

impl Registered {
    pub(crate) fn read(
        cluster: &ClusterArgs,
        topology: &pavilion_runtime::topology::Topology,
    ) -> Result<Registered> {
        let topic = crate::cli::topic_for(topology, Provider::FULL_NAME)?;
        Ok(Registered(
            crate::cli::read_all::<Provider>(cluster, &topic.name)?
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
