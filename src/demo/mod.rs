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
//!
//! `pavilion demo --regions eu,us` is another flow (`regions.rs`): the request path in
//! several regions, each its own cluster, with an endpoint of a provider killed on the way.

pub(crate) mod processes;
mod regions;
pub(crate) mod setup;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pavilion_client::{
    sign_request, FailoverConfig, OprfClient, RequestDraft, Residency, TenantCredentials,
};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_schemas::{
    ClaimRequest, Decision, Event, Registry, SubjectToken, Verdict, VerificationRequest,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use self::processes::{free_port, wait_ready, Children, Cli};
use self::setup::{
    add_tenant, demo_topology, email, populations, run_topology, start_providers, Registered,
    RunHttps, TenantSetup, BANK_POLICY, BAR_POLICY, LINKER_POLICY, SHOP_POLICY,
};
use self::verify::{
    anchored_checkpoint, proofs_summary, published_bbs_key, verify_disclosure, verify_proof,
    verify_sample,
};
use crate::cli::ClusterArgs;
use crate::commands::acls::Role;

/// Options of the demo; every one but --regions has an environment variable.
#[derive(Args)]
#[command(after_long_help = REGIONS_HELP)]
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
    /// Default: 600; 60 with --regions.
    #[arg(long, env = "PAVILION_DEMO_REQUESTS")]
    pub requests: Option<usize>,
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
    #[arg(long, env = "PAVILION_DEMO_TIMEOUT", default_value = "300s", value_parser = crate::cli::parse_duration)]
    pub timeout: Duration,
    /// Run across these regions of the topology instead of on one cluster (e.g. `--regions
    /// eu,us`): each region its own Kafka cluster, up already (`scripts/infra regions up
    /// eu,us`). See "Across regions" at the end of --help. Its files go to `<--dir>-regions`.
    #[arg(long, value_delimiter = ',', value_name = "REGION,REGION")]
    pub regions: Vec<String>,
    /// With --regions: each region's cluster, as `REGION.bootstrap=HOST:PORT` and
    /// `REGION.kafka_config=FILE` lines (`scripts/infra regions up` writes this file and
    /// `scripts/infra regions env R` exports its path). Default: where scripts/infra writes
    /// it, `$PAVILION_RUN_DIR/regions/clusters.properties` (run dir
    /// `~/.cache/pavilion/run` unless set).
    #[arg(long, env = "PAVILION_CLUSTERS", value_name = "FILE")]
    pub clusters: Option<PathBuf>,
}

/// `pavilion demo --help`'s story of `--regions`.
const REGIONS_HELP: &str = "\
Across regions (--regions eu,us):
  scripts/infra regions up eu,us     # a secured Kafka per region, MirrorMaker 2 between them
  pavilion demo --regions eu,us      # about a minute on two cores
  scripts/infra regions down

  Each region runs its own pipeline on its own cluster, with the repository topology's
  topic names: MirrorMaker 2 copies only what topology.yaml's `replication:` names (the
  tenant, policy and provider registries, as `<region>.<topic>`); requests, decisions and
  provider sets stay where they are. In each region the demo runs, as an operator would,
  `topics create`, `keys generate`, `provider onboard` and `provider load` of a bank whose
  few hundred synthetic members stay there, `provider serve-oprf`, and `run --task tenancy
  --task policy`, each with --in-region (via $PAVILION_REGION). One tenant is homed in each
  region and allowed all of them; its policy is pushed at home; it is served elsewhere once
  its records crossed (the summary says how long that took).
  Requests then go out paced, for subjects of either region's jurisdictions (DE, FR, US-CA,
  ...), each routed by the client library to the region serving its subject, with an OPRF
  token from endpoints in that region only. The first region's bank answers on two
  endpoints of one key; a third of the way in its primary is SIGKILLed, and the tenants'
  clients fail over to the other (probes and breakers tell them it is gone). The summary:
  decisions per region and their verdicts, latency, gaps between decisions around the kill,
  each client's fail-over counters, and a residency check: no request id of one region in
  any record of another region's cluster. Exit status 1 if a request failed or one leaked.

  A subject who is not a member of their region's bank comes back `unavailable`, not
  `not_verified`: the policy also names the other region's bank, which was never asked
  (residency keeps the identifier out of its region), so no answer is a safe no.

  With --regions, the options that apply are --dir, --seed, --requests, --timeout,
  --topology and --clusters; the others are the one-cluster demo's. To keep to regions of
  your own (another run dir and ports than the default ones), set the same
  PAVILION_RUN_DIR and PAVILION_REGION_BASE_PORT for scripts/infra and the demo.";

fn step(text: &str) {
    println!("▸ {text}");
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

const MIX: [Scenario; 5] = [
    Scenario {
        up_to: 0.35,
        tenant: "shop",
        kind: "over 18 (proof)",
        claims: &[("age_over", &[("threshold", "18")])],
        purpose: "age_gate",
        providers: &["bank-eu"],
    },
    Scenario {
        up_to: 0.45,
        tenant: "bar",
        kind: "over 21 (proof)",
        claims: &[("age_over", &[("threshold", "21")])],
        purpose: "age_gate",
        providers: &["bank-eu"],
    },
    Scenario {
        up_to: 0.85,
        tenant: "lender",
        kind: "kyc",
        claims: &[
            ("account_verified", &[]),
            ("residence", &[]),
            ("fraud_listed", &[]),
        ],
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

pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    if !args.regions.is_empty() {
        return regions::demo(args);
    }
    let requests = args.requests.unwrap_or(600);
    let started = Instant::now();
    let run = format!("demo{}", std::process::id());
    // The topology first: nothing is written or deleted for a run that cannot start.
    let (repo_topology, topology_source) = demo_topology(&args.cluster.file.topology)?;
    let run_text = run_topology(&repo_topology, &run);
    let topology = crate::cli::parse(&run_text, Path::new(&topology_source))?;
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
                    &crate::cli::settings(&args.cluster, "demo")?,
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
        file: crate::cli::TopologyFile {
            topology: topology_path.clone(),
            region: args.cluster.file.region.clone(),
            away_from_home: args.cluster.file.away_from_home,
        },
        ..args.cluster.clone()
    };
    let mut cli = Cli::for_run(
        &dir,
        &topology_path,
        &args.cluster.bootstrap,
        args.cluster.kafka_config.as_deref(),
        "info",
    );
    cli.env.extend([
        ("PAVILION_CHAIN_RPC".into(), args.rpc_url.clone()),
        (
            "PAVILION_CHAIN_KEY".into(),
            std::env::var("PAVILION_CHAIN_KEY")
                .unwrap_or_else(|_| pavilion_chain::dev::DEV_KEY.to_owned()),
        ),
    ]);
    // On a secured broker each component connects as its own principal.
    let operator = crate::cli::settings(&args.cluster, "demo")?;
    cli.own_principals(&args.cluster, &run)?;
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
    let started_providers = start_providers(&cli, &mut children, "5000")?;
    // The providers' public keys, published beside the broker's JWKS: what a relying party
    // checks their disclosures and credentials with.
    std::fs::write(
        dir.join("provider-keys.json"),
        cli.ok(&["provider", "keys"])?,
    )?;
    for ((name, took), n) in started_providers.loads.iter().zip([members, listed]) {
        println!("  {name}: loaded in {took:.1?} ({n} members)");
    }
    println!("  bank-eu's birth dates are commitments in its set; its evidence service proves age predicates over them");
    println!("  their OPRF services speak HTTPS with a CA of the run's own (tls/), and require each tenant's client certificate besides its request signature");

    step("four tenants: shop (over 18 by proof, SD-JWT), bar (over 21 by proof, JWT with the proof), lender (KYC + fraud, JWT), insurer (record linkage, JWS)");
    let mut key_files = BTreeMap::new();
    // A tenant's clients send blinded identifiers only to provider endpoints in its regions.
    let mut tenant_regions = BTreeMap::new();
    for tenant in [
        TenantSetup {
            id: "shop",
            name: "Example Shop",
            regions: &["eu"],
            rate: "20",
            burst: "30",
            policy: SHOP_POLICY,
        },
        TenantSetup {
            id: "bar",
            name: "Example Bar",
            regions: &["eu"],
            rate: "1000",
            burst: "2000",
            policy: BAR_POLICY,
        },
        TenantSetup {
            id: "lender",
            name: "Example Lender",
            regions: &["eu", "us"],
            rate: "1000",
            burst: "2000",
            policy: BANK_POLICY,
        },
        TenantSetup {
            id: "insurer",
            name: "Example Insurer",
            regions: &["eu"],
            rate: "1000",
            burst: "2000",
            policy: LINKER_POLICY,
        },
    ] {
        key_files.insert(tenant.id, add_tenant(&cli, &tenant)?);
        tenant_regions.insert(
            tenant.id,
            Residency::regions(tenant.regions.iter().copied()),
        );
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
            // The request path, the audit log and the analytics.
            "--task",
            "tenancy",
            "--task",
            "policy",
            "--task",
            "audit",
            "--task",
            "analytics",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(cli.task_credentials())
        .collect::<Vec<_>>(),
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
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(cli.as_principal(&Role::Anchor))
        .collect::<Vec<_>>(),
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
    // The demo watches every tenant's decisions as the auditor, and sends each tenant's
    // requests as that tenant.
    let as_role = |role: Role| match cli.credential(&role) {
        Some(file) => crate::cli::as_principal(&operator, &file),
        None => Ok(operator.clone()),
    };
    let settings = as_role(Role::Auditor)?;
    let decision_family = crate::cli::topic_for(&topology, Decision::FULL_NAME)?;
    let tenants = ["shop", "bar", "lender", "insurer"];
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
        requests, args.malformed
    ));
    let registry = Registry::builtin();
    let ingest = crate::cli::topic_for(&topology, VerificationRequest::FULL_NAME)?.name;
    let producers: BTreeMap<&str, PlainProducer> = tenants
        .iter()
        .map(|t| {
            Ok((
                *t,
                PlainProducer::new(&as_role(Role::Tenant((*t).into()))?)?,
            ))
        })
        .collect::<Result<_>>()?;
    let flush = || -> Result<()> {
        for producer in producers.values() {
            producer.flush()?;
        }
        Ok(())
    };
    let providers = Registered::read(&run_cluster, &topology)?;
    let endpoint = |provider: &str| providers.endpoint(provider);
    let credentials = |tenant: &str| -> Result<TenantCredentials> {
        Ok(TenantCredentials::from_key_file(&std::fs::read_to_string(
            &key_files[tenant],
        )?)?)
    };
    // One client per tenant for the whole run, so each keeps its endpoints' health, probed
    // every second. Each provider has one endpoint here and every process of the run shares
    // the machine: a longer deadline than the library's 500 ms.
    let clients: BTreeMap<&str, (TenantCredentials, OprfClient)> = tenants
        .iter()
        .map(|t| {
            let credentials = credentials(t)?;
            let client =
                OprfClient::with_tls(credentials.clone(), &started_providers.https.client(t)?)?
                    .with_failover(FailoverConfig {
                        attempt_timeout: Duration::from_secs(5),
                        ..FailoverConfig::default()
                    });
            client.start_probes(Duration::from_secs(1))?;
            Ok((*t, (credentials, client)))
        })
        .collect::<Result<_>>()?;
    let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(1));
    let mut sent: BTreeMap<String, Sent> = BTreeMap::new();
    let mut last: Option<VerificationRequest> = None;
    let bar = ProgressBar::new(requests as u64);
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
                *duplicates += 1; // a retry's re-delivery of its decision
            } else {
                decided.insert(d.request_id.clone(), (d, at));
            }
        }
        Ok(())
    };
    for i in 0..requests {
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
            let out = client.tokens_in(
                &endpoint(p)?,
                &tenant_regions[tenant],
                std::slice::from_ref(&input),
            )?;
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
                nonce: None,
            },
            tokens,
        );
        producers[tenant].send(
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
                producers[previous.tenant_id.as_str()].send(
                    &ingest,
                    previous.tenant_id.as_bytes(),
                    &registry.encode(previous)?,
                )?;
                duplicates_sent += 1;
            }
        }
        if i < args.malformed {
            producers["shop"].send(&ingest, b"shop", b"\x00not a request")?;
        }
        last = Some(request);
        // Flushed at once: latency counts from the moment the request is on its way.
        flush()?;
        if i % 10 == 0 {
            drain(&mut decided, &mut duplicates)?;
            bar.set_message(format!("{} decided", decided.len()));
        }
        bar.inc(1);
        // A steady pace, except one burst at the shop (over its 20/s, burst 30).
        if i != requests / 2 {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    // The burst: 60 age checks at once from the shop.
    let (creds, client) = &clients["shop"];
    for b in 0..60 {
        let input = oprf_input(IdentifierKind::Email, &email(args.seed, b))?;
        let token = client.tokens_in(
            &endpoint("bank-eu")?,
            &tenant_regions["shop"],
            std::slice::from_ref(&input),
        )?;
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
                nonce: None,
            },
            vec![SubjectToken {
                provider_id: "bank-eu".into(),
                token: token[0].to_vec(),
            }],
        );
        producers["shop"].send(
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
    flush()?;
    bar.finish_and_clear();

    step("record linkage: the insurer's 1,000 customers against bank-eu (batch PSI)");
    let customers: Vec<String> = (0..1000)
        .map(|i| email(args.seed, i * 97 % (args.subjects * 11 / 10)))
        .collect();
    std::fs::write(dir.join("customers.txt"), customers.join("\n"))?;
    let tls = RunHttps::client_args("insurer");
    let mut linkage_args = vec![
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
    ];
    linkage_args.extend(tls.iter().map(String::as_str));
    let linkage = cli.ok(&linkage_args)?;
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
    let dlq = crate::cli::read_all::<pavilion_schemas::DeadLetter>(&run_cluster, &topology.dlq)?;

    step("waiting for the last checkpoint and its anchor");
    // The bar's verified decisions carry their proof: the sample shows it checked too.
    let sample = decided
        .iter()
        .filter(|(_, (d, _))| {
            d.rejection.is_none()
                && d.outcomes.iter().any(|o| o.outcome == Verdict::Verified)
                && d.format == pavilion_schemas::ResponseFormat::Jwt
        })
        .min_by_key(|(_, (d, _))| d.tenant_id != "bar")
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
        "  proofs               {}",
        proofs_summary(&metrics, &started_providers.evidence_metrics)
    );
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

    step("differentially private analytics: released with noise, debited from each budget");
    // Increments reach the per-scope totals at the stage's next punctuation (1 s).
    std::thread::sleep(Duration::from_secs(2));
    for query in [
        &["--tenant", "shop", "--metric", "requests"][..],
        &[
            "--cross-tenant",
            "--metric",
            "rejections",
            "--group",
            "rate_limited",
            "--group",
            "quota_exceeded",
        ][..],
    ] {
        let mut args = vec!["analytics", "query", "--epsilon", "0.5"];
        args.extend_from_slice(query);
        for line in cli.ok(&args)?.lines() {
            println!("  {line}");
        }
    }

    step(&format!("one decision verified end to end: {}", sample.0));
    let log_topic = crate::cli::topic_for(&topology, pavilion_schemas::AuditEntry::FULL_NAME)?.name;
    verify_sample(
        &cli,
        &run_cluster,
        &log_topic,
        &sample.1,
        &checkpoint,
        &receipt,
        &args.rpc_url,
    )?;
    verify_proof(&sample.1)?;
    // A lender's decision discloses the country of residence: checked as its relying party
    // would, and written out for the JavaScript BBS implementation (scripts/test runs it).
    let disclosed = decided
        .iter()
        .filter(|(_, (d, _))| {
            d.outcomes.iter().any(|o| {
                o.outcome == Verdict::Verified && o.evidence.iter().any(|e| e.disclosure.is_some())
            })
        })
        .map(|(id, (d, _))| (id, d))
        .next();
    match disclosed {
        Some((id, d)) => {
            step(&format!(
                "one disclosure verified as its relying party would: {id}"
            ));
            verify_disclosure(
                d,
                &published_bbs_key(&dir.join("provider-keys.json"), "bank-eu")?,
                &dir.join("disclosure.json"),
            )?;
        }
        None => bail!("no decision disclosed an attribute"),
    }
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
