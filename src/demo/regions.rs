//! `pavilion demo --regions eu,us`: the request path in several regions at once, each its own
//! Kafka cluster (`scripts/infra regions up eu,us`: MirrorMaker 2 between them copies only
//! what topology.yaml's `replication:` names), driven as its users would.
//!
//! Every setup step is the `pavilion` command a person would run in that region
//! (`--in-region` through `$PAVILION_REGION`, the region's cluster from the clusters file),
//! as child processes: topics, keys and one pipeline per region; per region a bank whose
//! members stay there (the first region's with two OPRF endpoints of one key) and a tenant
//! homed there, allowed every region, with its policy pushed at home — served in the other
//! regions once its records crossed. Then paced requests, each routed by its subject's
//! jurisdiction through the client library (`RegionRoutes`; tokens only from endpoints in
//! that region; an `OprfClient` per tenant with fail-over and probes), and a third of the way
//! in the first bank's primary endpoint is SIGKILLed. The summary: decisions and latency
//! per region, gaps between decisions around the kill, the clients' fail-over counters, how
//! long the tenant records took to cross, and a residency check (no request id of one region
//! anywhere in another region's cluster).
//!
//! The topic names are the repository topology's own, not a run's copy as the one-cluster
//! demo makes: MirrorMaker 2's allow-list is derived from topology.yaml, so renamed control
//! topics would not cross. Runs are kept apart by their ids instead (tenants and banks carry
//! the run's tag), and each run deletes the previous run's per-tenant and per-provider topics.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write as _;
use std::net::{TcpStream, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pavilion_client::{
    sign_request, BreakerState, FailoverConfig, OprfClient, PoolStats, ProviderEndpoint,
    RegionRoutes, RequestDraft, Residency, TenantCredentials,
};
use pavilion_kafka::{KafkaSettings, PlainProducer, TopicReader};
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_runtime::topology::Topology;
use pavilion_schemas::{
    jurisdiction_served, ClaimRequest, Decision, Event, Registry, SubjectToken, Tenant,
    TenantState, VerificationRequest,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::processes::{free_port, wait_ready, Children, Cli};
use super::setup::{add_tenant, demo_topology, email, Registered, TenantSetup};
use super::{percentile, step, DemoArgs};
use crate::cli::{ClusterArgs, TopologyFile};

/// Members of each region's bank; subjects are drawn from 10 % more, so some are strangers.
const MEMBERS: usize = 300;
/// Requests a second.
const PACE: f64 = 10.0;
/// Subjects' jurisdictions, where a region serves them (else the region's first ones).
const JURISDICTIONS: [&str; 8] = ["DE", "FR", "NL", "DE-BY", "US", "US-CA", "US-NY", "GB"];
/// How long tenant records may take to cross before the demo gives up (MirrorMaker 2
/// looks for new topics every 5 s).
const CROSSING: Duration = Duration::from_secs(90);
/// The one claim every request asks.
const CLAIM: &str = "account_verified";

/// One region of the run: its cluster, its commands, its bank and its tenant.
struct Region {
    name: String,
    cluster: ClusterArgs,
    settings: KafkaSettings,
    cli: Cli,
    /// The bank whose members live here, and the tenant homed here (`<kind>-<region>-<run>`).
    bank: String,
    tenant: String,
    /// Jurisdictions of the subjects this region serves, as the requests give them.
    jurisdictions: Vec<String>,
    /// Where its broker keeps its data, when on this machine (scripts/infra regions).
    data_dir: Option<PathBuf>,
}

impl Region {
    /// Subject `i` of this region (a member of its bank when `i < MEMBERS`).
    fn subject(&self, seed: u64, i: usize) -> String {
        format!("{}-{}", self.name, email(seed, i))
    }
}

/// A request on its way, and what became of it.
struct Sent {
    region: usize,
    tenant: usize,
    at: Instant,
    /// How long its OPRF token took (fail-overs included).
    token: Duration,
    member: bool,
}

pub(super) fn demo(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let run = run_tag();
    // Everything that can be refused is, before anything is written.
    let (topology_text, topology_source) = demo_topology(&args.cluster.file.topology)?;
    let topology = crate::cli::parse(&topology_text, Path::new(&topology_source))?;
    let names = check_regions(&args.regions, &topology)?;
    let up = format!(
        "start them with `scripts/infra regions up {}`",
        names.join(",")
    );
    let clusters_file = args.clusters.clone().unwrap_or_else(default_clusters_file);
    if !clusters_file.exists() {
        bail!(
            "no clusters file at {} (--clusters, $PAVILION_CLUSTERS): are the regions up? {up}",
            clusters_file.display()
        );
    }
    let clusters = crate::cli::read_clusters(&clusters_file)?;
    for name in &names {
        let Some((bootstrap, _)) = clusters.get(name) else {
            bail!(
                "{} has no cluster for region {name}: {up}",
                clusters_file.display()
            );
        };
        reachable(bootstrap).map_err(|e| {
            anyhow::anyhow!("region {name}'s cluster at {bootstrap} is not reachable ({e}): {up}")
        })?;
    }

    let dir = fresh_dir(&args.dir, &run, &names, &topology, &clusters)?;
    let topology_path = dir.join("topology.yaml");
    std::fs::write(&topology_path, &topology_text)?;
    let mut regions = Vec::new();
    for name in &names {
        let (bootstrap, kafka_config) = clusters[name].clone();
        let cluster = region_cluster(&topology_path, name, &bootstrap, kafka_config);
        let region_dir = dir.join(name);
        std::fs::create_dir_all(&region_dir)?;
        let mut cli = Cli::for_run(
            &region_dir,
            &topology_path,
            &bootstrap,
            cluster.kafka_config.as_deref(),
            "info",
        );
        cli.env.push(("PAVILION_REGION".into(), name.clone()));
        let served = &topology.regions.regions[name].jurisdictions;
        let mut jurisdictions: Vec<String> = JURISDICTIONS
            .iter()
            .filter(|j| jurisdiction_served(served, j))
            .map(|j| (*j).to_owned())
            .collect();
        if jurisdictions.is_empty() {
            jurisdictions = served.iter().take(3).cloned().collect();
        }
        regions.push(Region {
            settings: crate::cli::settings(&cluster, "demo")?,
            cluster,
            cli,
            bank: format!("bank-{name}-{run}"),
            tenant: format!("rp-{name}-{run}"),
            jurisdictions,
            data_dir: clusters_file
                .parent()
                .map(|p| p.join(name).join("kafka-data"))
                .filter(|p| p.is_dir()),
            name: name.clone(),
        });
    }
    println!(
        "Pavilion demo across regions {}: run `{run}` of {topology_source}, files in {}",
        names.join(", "),
        dir.display()
    );
    for r in &regions {
        println!(
            "  {}: {} (from {})",
            r.name,
            r.cluster.bootstrap,
            clusters_file.display()
        );
    }
    let mut children = Children(Vec::new());

    step("topics of topology.yaml in each region, the other regions' copies included (`topics create`)");
    for r in &regions {
        r.cli
            .ok(&["topics", "create"])
            .with_context(|| format!("creating the topics in region {}", r.name))?;
    }
    // From now on: when each tenant record shows up in each region's copies.
    let crossings = watch_tenant_copies(&regions, &topology)?;
    step("decision-signing keys in each region (`keys generate --signing-keys keys`)");
    for r in &regions {
        r.cli.ok(&["keys", "generate", "--signing-keys", "keys"])?;
    }

    let first = &regions[0];
    step(&format!(
        "a bank per region, its {MEMBERS} synthetic members (seed {}) kept there; {} answers on two endpoints of one key (zones {} and {}-b)",
        args.seed, first.bank, first.name, first.name
    ));
    let mut endpoints: Vec<Vec<(String, u16)>> = Vec::new();
    for (k, r) in regions.iter().enumerate() {
        let mut ports = vec![(format!("oprf-{}-a", r.bank), free_port()?)];
        if k == 0 {
            ports.push((format!("oprf-{}-b", r.bank), free_port()?));
        }
        let mut onboard = vec![
            "provider".to_owned(),
            "onboard".into(),
            r.bank.clone(),
            "--region".into(),
            r.name.clone(),
            "--claims".into(),
            CLAIM.into(),
            "--oprf-url".into(),
            format!("http://127.0.0.1:{}", ports[0].1),
        ];
        if let Some((_, port)) = ports.get(1) {
            onboard.extend([
                "--oprf-url".into(),
                format!("{}-b=http://127.0.0.1:{port}", r.name),
            ]);
        }
        r.cli
            .ok(&onboard.iter().map(String::as_str).collect::<Vec<_>>())?;
        let mut csv =
            std::io::BufWriter::new(std::fs::File::create(r.cli.dir.join("members.csv"))?);
        writeln!(csv, "email,claims")?;
        for i in 0..MEMBERS {
            writeln!(csv, "{},{CLAIM}", r.subject(args.seed, i))?;
        }
        csv.flush()?;
        let t = Instant::now();
        r.cli.ok(&[
            "provider",
            "load",
            &r.bank,
            "--from",
            "members.csv",
            "--claims-column",
            "claims",
        ])?;
        println!(
            "  {} in {}: {MEMBERS} members loaded in {:.1?}",
            r.bank,
            r.name,
            t.elapsed()
        );
        for (name, port) in &ports {
            r.cli.spawn(
                &mut children,
                name,
                &[
                    "provider",
                    "serve-oprf",
                    &r.bank,
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--rate",
                    "1000",
                    "--burst",
                    "1000",
                    "--daily-quota",
                    "0",
                ],
            )?;
        }
        endpoints.push(ports);
    }

    step("the pipeline in each region (`run --task tenancy --task policy`: tenancy, then policy → psi → signing fused)");
    let mut metrics = Vec::new();
    for r in &regions {
        let addr = format!("127.0.0.1:{}", free_port()?);
        r.cli.spawn(
            &mut children,
            "pipeline",
            &[
                "run",
                "--task",
                "tenancy",
                "--task",
                "policy",
                "--instance",
                &r.name,
                "--signing-keys",
                "keys",
                "--state-dir",
                "state",
                "--threads",
                "1",
                "--metrics-addr",
                &addr,
            ],
        )?;
        metrics.push(addr);
    }

    let region_names: Vec<&str> = names.iter().map(String::as_str).collect();
    step(&format!(
        "a tenant homed in each region, allowed {}, its policy pushed at home (`tenant add`, `tenant add-key`, `policy push`)",
        region_names.join(" and ")
    ));
    let mut credentials = Vec::new();
    for r in &regions {
        let policy = policy(&r.tenant, &regions);
        let key_file = add_tenant(
            &r.cli,
            &TenantSetup {
                id: &r.tenant,
                name: &format!("Relying party homed in {}", r.name),
                regions: &region_names,
                rate: "100",
                burst: "200",
                policy: &policy,
            },
        )?;
        credentials.push(TenantCredentials::from_key_file(&std::fs::read_to_string(
            &key_file,
        )?)?);
        println!("  {} added in {}", r.tenant, r.name);
    }
    // Activation made each tenant's decision topic at home; elsewhere the pipeline would at
    // the first decision, which the readers below must not miss: the operator makes it.
    let decisions_family = crate::cli::topic_for(&topology, Decision::FULL_NAME)?;
    let decision_topics: Vec<String> = regions
        .iter()
        .filter_map(|t| topology.family_topic(&decisions_family.name, &t.tenant))
        .map(|t| t.name)
        .collect();
    let runtime = tokio::runtime::Runtime::new()?;
    for r in &regions {
        for t in &regions {
            let spec = topology
                .family_topic(&decisions_family.name, &t.tenant)
                .context("decision topic")?;
            runtime
                .block_on(pavilion_kafka::ensure_topics(&r.settings, &[&spec]))
                .with_context(|| format!("creating {} in {}", spec.name, r.name))?;
        }
    }
    let (decided_tx, arrivals) = mpsc::channel();
    for (k, r) in regions.iter().enumerate() {
        let topics: Vec<&str> = decision_topics.iter().map(String::as_str).collect();
        let reader = TopicReader::new(&r.settings, &topics)?;
        let tx = decided_tx.clone();
        std::thread::spawn(move || {
            while let Ok(record) = reader.poll(Duration::from_millis(100)) {
                if let Some(v) = record.and_then(|r| r.value) {
                    if tx.send((k, v, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(decided_tx);

    step("each tenant's records crossing to the other regions (MirrorMaker 2, as `<home>.pavilion.tenants`)");
    let lags = await_crossings(&regions, &crossings, args.timeout.min(CROSSING))?;
    for (tenant, from, to, lag) in &lags {
        println!("  {tenant}: {from} → {to} in {lag:.1?} (written at home → visible in the copy)");
    }
    for (r, addr) in regions.iter().zip(&metrics) {
        wait_ready(addr, args.timeout)
            .with_context(|| format!("see {}", r.cli.dir.join("pipeline.log").display()))?;
    }
    for r in &regions {
        r.cli.write_restart(&run, &[])?;
    }

    let registry = Registry::builtin();
    let mut routes = RegionRoutes::default();
    let mut producers = Vec::new();
    let mut banks = Vec::new();
    for (k, r) in regions.iter().enumerate() {
        routes.add(
            &r.name,
            topology.regions.regions[&r.name].jurisdictions.clone(),
            k,
        );
        producers.push(PlainProducer::new(&r.settings)?);
        let in_region = crate::cli::load(&r.cluster.file)?;
        banks.push(Registered::read(&r.cluster, &in_region)?.endpoint(&r.bank)?);
    }
    let ingest = crate::cli::topic_for(&topology, VerificationRequest::FULL_NAME)?.name;
    let link = Link {
        routes: &routes,
        regions: &regions,
        producers: &producers,
        banks: &banks,
        credentials: &credentials,
        ingest: &ingest,
        registry,
    };
    let mut decided: BTreeMap<String, (usize, Decision, Instant)> = BTreeMap::new();
    let drain = |decided: &mut BTreeMap<String, (usize, Decision, Instant)>| -> Result<()> {
        while let Ok((k, v, at)) = arrivals.try_recv() {
            let d: Decision = registry.decode(&v)?;
            decided.entry(d.request_id.clone()).or_insert((k, d, at));
        }
        Ok(())
    };

    step("waiting until every region serves every tenant (one request each, until verified)");
    // Request ids that went to each region: none may turn up in another.
    let mut routed: Vec<Vec<String>> = vec![Vec::new(); regions.len()];
    for (t, tenant) in regions.iter().enumerate() {
        let client = OprfClient::new(credentials[t].clone()).with_failover(FailoverConfig {
            attempt_timeout: Duration::from_secs(3),
            ..FailoverConfig::default()
        });
        let mut line = Vec::new();
        for r in &regions {
            let since = Instant::now();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let id = format!("{run}-{}-ready-{t}-{attempt}", r.name);
                let sent = link.send(
                    &client,
                    t,
                    &r.subject(args.seed, 0),
                    &r.jurisdictions[0],
                    &id,
                );
                if let Ok(region) = sent {
                    routed[region].push(id.clone());
                    let wait = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < wait && !decided.contains_key(&id) {
                        std::thread::sleep(Duration::from_millis(50));
                        drain(&mut decided)?;
                    }
                }
                let verified = decided
                    .get(&id)
                    .is_some_and(|(_, d, _)| verdicts(d) == "verified");
                if verified {
                    break;
                }
                if since.elapsed() > args.timeout {
                    bail!(
                        "{} is not served in {} after {:?} ({}); see {}",
                        tenant.tenant,
                        r.name,
                        args.timeout,
                        match (&sent, decided.get(&id)) {
                            (Err(e), _) => format!("last attempt: {e:#}"),
                            (_, Some((_, d, _))) => format!("last decision: {}", verdicts(d)),
                            _ => "no decision".into(),
                        },
                        r.cli.dir.join("pipeline.log").display()
                    );
                }
                if sent.is_err() {
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            line.push(format!("in {} after {:.1?}", r.name, since.elapsed()));
        }
        println!("  {}: {}", tenant.tenant, line.join(", "));
    }

    let requests = args.requests.unwrap_or(60);
    let kill_at = requests / 3;
    let victim = endpoints[0][0].clone();
    step(&format!(
        "{requests} requests at {PACE}/s, each to the region of its subject's jurisdiction; {}'s primary endpoint (:{}) SIGKILLed before request {kill_at}",
        first.bank, victim.1
    ));
    // One client per tenant for the whole run: it keeps each endpoint's health, probed every
    // second. Every process of the run shares two cores: a longer deadline than the
    // library's 500 ms, and a hedge when an answer is slow.
    let clients: Vec<OprfClient> = credentials
        .iter()
        .map(|c| {
            let client = OprfClient::new(c.clone()).with_failover(FailoverConfig {
                attempt_timeout: Duration::from_secs(2),
                hedge_after: Some(Duration::from_millis(500)),
                ..FailoverConfig::default()
            });
            for (k, bank) in banks.iter().enumerate() {
                client.track(bank, &Residency::regions([regions[k].name.as_str()]));
            }
            client.start_probes(Duration::from_secs(1))?;
            Ok(client)
        })
        .collect::<Result<_>>()?;
    let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(1));
    let mut sent: BTreeMap<String, Sent> = BTreeMap::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut killed: Option<Instant> = None;
    let bar = ProgressBar::new(requests as u64);
    bar.set_style(
        ProgressStyle::with_template("  {bar:30} {pos}/{len} sent {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let traffic = Instant::now();
    for i in 0..requests {
        let due = traffic + Duration::from_secs_f64(i as f64 / PACE);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if i == kill_at {
            kill(&mut children, &victim.0)?;
            killed = Some(Instant::now());
            // Shown whether or not the bar is (it is hidden when stderr is not a terminal).
            bar.suspend(|| {
                println!(
                    "  ✗ SIGKILLed {} ({}'s endpoint in zone {}, :{}) after {i} requests",
                    victim.0, first.bank, first.name, victim.1
                )
            });
        }
        // Two subjects in three from the first region (the one losing an endpoint).
        let home = if rng.random_range(0..3) < 2 || regions.len() == 1 {
            0
        } else {
            rng.random_range(1..regions.len())
        };
        let r = &regions[home];
        let jurisdiction = &r.jurisdictions[rng.random_range(0..r.jurisdictions.len())];
        let index = rng.random_range(0..MEMBERS * 11 / 10);
        let tenant = i % regions.len();
        let id = format!("{run}-{}-{i:05}", r.name);
        let t = Instant::now();
        match link.send(
            &clients[tenant],
            tenant,
            &r.subject(args.seed, index),
            jurisdiction,
            &id,
        ) {
            Ok(region) => {
                routed[region].push(id.clone());
                sent.insert(
                    id,
                    Sent {
                        region,
                        tenant,
                        at: Instant::now(),
                        token: t.elapsed(),
                        member: index < MEMBERS,
                    },
                );
            }
            Err(e) => failed.push((id, format!("{e:#}"))),
        }
        drain(&mut decided)?;
        let answered = sent.keys().filter(|id| decided.contains_key(*id)).count();
        bar.set_message(format!("{answered} decided"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    step("waiting for every decision");
    let deadline = Instant::now() + args.timeout;
    while sent.keys().any(|id| !decided.contains_key(id)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        drain(&mut decided)?;
    }
    for id in sent.keys().filter(|id| !decided.contains_key(*id)) {
        failed.push((id.clone(), format!("no decision within {:?}", args.timeout)));
    }
    for (id, (_, d, _)) in &decided {
        if let (true, Some(r)) = (sent.contains_key(id), &d.rejection) {
            failed.push((
                id.clone(),
                format!("rejected: {:?}: {}", r.reason, r.detail),
            ));
        }
    }

    step("residency: every request id of the run, looked for in every region's cluster");
    let every_id: HashSet<&str> = routed.iter().flatten().map(String::as_str).collect();
    let mut residency = Vec::new();
    for r in &regions {
        residency.push(scan(r, &format!("{run}-"), &every_id)?);
    }

    // The summary.
    println!();
    for (k, r) in regions.iter().enumerate() {
        let mine: Vec<(&String, &Sent)> = sent.iter().filter(|(_, s)| s.region == k).collect();
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut latencies = Vec::new();
        for (id, s) in &mine {
            if let Some((_, d, at)) = decided.get(*id) {
                latencies.push(at.duration_since(s.at).as_secs_f64() * 1000.0);
                let who = if s.member { "member" } else { "stranger" };
                *outcomes
                    .entry(format!(
                        "{:<18} {who:<8}  {}",
                        regions[s.tenant].tenant,
                        verdicts(d)
                    ))
                    .or_default() += 1;
            }
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "  region {}: {} requests, {} decisions; produce → decision visible: p50 {:.0} ms, p99 {:.0} ms",
            r.name,
            mine.len(),
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
        for (what, n) in &outcomes {
            println!("    {n:>4}  {what}");
        }
    }
    if sent.values().any(|s| !s.member) {
        println!(
            "    (strangers to their region's bank are `unavailable`, never `not_verified`: the plan's other bank was not asked, residency keeps the subject out of its region)"
        );
    }
    let mut times: Vec<Instant> = sent
        .keys()
        .filter_map(|id| decided.get(id).map(|(_, _, at)| *at))
        .collect();
    times.sort();
    let gaps: Vec<(Instant, Duration)> = times.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
    let mut sorted: Vec<f64> = gaps.iter().map(|(_, g)| g.as_secs_f64() * 1000.0).collect();
    sorted.sort_by(f64::total_cmp);
    let longest = |from: Instant, to: Instant| {
        gaps.iter()
            .filter(|(at, gap)| *at + *gap >= from && *at <= to)
            .map(|(_, gap)| *gap)
            .max()
            .unwrap_or_default()
    };
    println!(
        "  gaps between consecutive decisions: median {:.0} ms, longest {:.0?} overall",
        percentile(&sorted, 0.5),
        longest(traffic, Instant::now())
    );
    if let Some(k) = killed {
        println!(
            "    around the kill (from it to 5 s after): longest {:.0?}",
            longest(k, k + Duration::from_secs(5))
        );
        let after: Vec<&Sent> = {
            let mut v: Vec<&Sent> = sent
                .values()
                .filter(|s| s.region == 0 && s.at > k)
                .collect();
            v.sort_by_key(|s| s.at);
            v
        };
        let before: Vec<f64> = {
            let mut v: Vec<f64> = sent
                .values()
                .filter(|s| s.region == 0 && s.at < k)
                .map(|s| s.token.as_secs_f64() * 1000.0)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        if let Some(s) = after.first() {
            println!(
                "    {}'s tokens: median {:.0} ms before the kill; the first after it {:.0?}, the slowest after it {:.0?}",
                first.bank,
                percentile(&before, 0.5),
                s.token,
                after.iter().map(|s| s.token).max().unwrap_or_default()
            );
        }
    }
    println!("  OPRF clients (one per tenant: fail-over, probes every second, breakers)");
    for (t, client) in clients.iter().enumerate() {
        print_stats(&regions[t].tenant, &client.stats());
    }
    println!("  tenant records, written at home → visible in the other region's copy");
    for (tenant, from, to, lag) in &lags {
        println!("    {tenant:<18} {from} → {to}  {lag:.1?}");
    }
    // Each region's cluster holds its own requests (the scan sees them) and none of another's.
    let mut leaks = 0;
    let mut blind = false;
    let scanned = |s: &Scan| {
        format!(
            "{} records of {} topics, read_committed{}",
            s.records,
            s.topics,
            match s.files {
                Some((files, bytes)) => format!(
                    "; {files} log segments on disk, {:.1} MB, aborted writes included",
                    bytes as f64 / 1e6
                ),
                None => String::new(),
            }
        )
    };
    println!("  residency: request ids found in each region's cluster");
    for (k, (r, s)) in regions.iter().zip(&residency).enumerate() {
        let own: HashSet<&str> = routed[k].iter().map(String::as_str).collect();
        let found_own = own.iter().filter(|id| s.found.contains_key(**id)).count();
        let elsewhere: Vec<(&String, &BTreeSet<String>)> = s
            .found
            .iter()
            .filter(|(id, _)| !own.contains(id.as_str()))
            .collect();
        let others: usize = routed
            .iter()
            .enumerate()
            .filter(|(o, _)| *o != k)
            .map(|(_, ids)| ids.len())
            .sum();
        leaks += elsewhere.len();
        blind |= found_own < own.len();
        println!(
            "    {}: {} of the {others} request ids sent to other regions (and {found_own} of its own {}: the scan sees)",
            r.name,
            elsewhere.len(),
            own.len(),
        );
        println!("      read {}", scanned(s));
        for (id, places) in elsewhere.iter().take(5) {
            let places: Vec<&str> = places.iter().map(String::as_str).collect();
            println!("      {id} in {}", places.join(", "));
        }
    }
    if blind {
        println!("    the scan missed requests where they must be: it proves nothing");
    }
    println!("  requests failed: {}", failed.len());
    for (id, why) in failed.iter().take(10) {
        println!("    {id}: {why}");
    }
    println!(
        "\nDone in {:.0?}. Everything is in {} (a folder per region: keys, members, logs, restart.sh).",
        started.elapsed(),
        dir.display()
    );
    drop(children);
    Ok(if failed.is_empty() && leaks == 0 && !blind {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What sending a request needs: routes to the regions and, per region, its producer and
/// bank; per tenant, its credentials.
struct Link<'a> {
    routes: &'a RegionRoutes<usize>,
    regions: &'a [Region],
    producers: &'a [PlainProducer],
    banks: &'a [ProviderEndpoint],
    credentials: &'a [TenantCredentials],
    ingest: &'a str,
    registry: &'a Registry,
}

impl Link<'_> {
    /// Sends tenant `tenant`'s request about `subject` of `jurisdiction` as a relying party's
    /// back end would: to the region serving the jurisdiction, with a token from that
    /// region's bank, from endpoints in that region only. The region it went to.
    fn send(
        &self,
        client: &OprfClient,
        tenant: usize,
        subject: &str,
        jurisdiction: &str,
        request_id: &str,
    ) -> Result<usize> {
        let (region, &k) = self.routes.route(jurisdiction)?;
        let input = oprf_input(IdentifierKind::Email, subject)?;
        let token = client.tokens_in(
            &self.banks[k],
            &Residency::regions([region]),
            std::slice::from_ref(&input),
        )?;
        let request = sign_request(
            &self.credentials[tenant],
            RequestDraft {
                claims: vec![ClaimRequest {
                    name: CLAIM.into(),
                    params: BTreeMap::new(),
                }],
                purpose: "kyc".into(),
                subject_jurisdiction: jurisdiction.to_owned(),
                consent_ref: None,
                response_format: None,
                request_id: Some(request_id.to_owned()),
                nonce: None,
            },
            vec![SubjectToken {
                provider_id: self.regions[k].bank.clone(),
                token: token[0].to_vec(),
            }],
        );
        let producer = &self.producers[k];
        producer.send(
            self.ingest,
            request.tenant_id.as_bytes(),
            &self.registry.encode(&request)?,
        )?;
        // Flushed at once: latency counts from the moment the request is on its way.
        producer.flush()?;
        Ok(k)
    }
}

/// A tenant's policy: accounts verified for KYC, by the bank of every region in plan order
/// (each request carries a token for its own region's bank only).
fn policy(tenant: &str, regions: &[Region]) -> String {
    let providers: Vec<String> = regions
        .iter()
        .map(|r| format!("{{ id: {}, region: {} }}", r.bank, r.name))
        .collect();
    format!(
        r#"policy: kyc
tenant: {tenant}
description: Accounts verified for KYC by the bank of the subject's region.
rules: |
  @id("kyc-accounts")
  permit(principal, action == Action::"verify", resource == Claim::"{CLAIM}")
  when {{ context.purpose == "kyc" }};
plan:
  {CLAIM}:
    providers: [{}]
    evidence: [oprf_match]
response_format: jwt
"#,
        providers.join(", ")
    )
}

/// `eu,us` as given: at least two distinct regions of the topology.
fn check_regions(given: &[String], topology: &Topology) -> Result<Vec<String>> {
    let known: Vec<&String> = topology.regions.regions.keys().collect();
    let mut names: Vec<String> = Vec::new();
    for name in given.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !topology.regions.regions.contains_key(name) {
            bail!(
                "--regions {}: the topology has no region `{name}` (its regions: {known:?})",
                given.join(",")
            );
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    if names.len() < 2 {
        bail!("--regions takes two regions or more of the topology, e.g. --regions eu,us (its regions: {known:?})");
    }
    Ok(names)
}

/// Where `scripts/infra regions up` writes its clusters file: `$PAVILION_RUN_DIR/regions/`,
/// the run dir being `$PAVILION_CACHE/run` (`~/.cache/pavilion/run`) unless set.
fn default_clusters_file() -> PathBuf {
    let run_dir = std::env::var_os("PAVILION_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("PAVILION_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/pavilion")
                })
                .join("run")
        });
    run_dir.join("regions/clusters.properties")
}

/// Whether something listens at one of the bootstrap servers: a region that is down fails
/// here at once, not after a client's timeout.
fn reachable(bootstrap: &str) -> Result<()> {
    let mut last = None;
    for server in bootstrap.split(',') {
        for addr in server.trim().to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no address"), Into::into))
}

/// A short tag of its own for this run, from the clock (base 36 seconds).
fn run_tag() -> String {
    let mut n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut tag = Vec::new();
    while n > 0 {
        tag.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    tag.reverse();
    String::from_utf8(tag).expect("ascii")
}

/// How `pavilion` reaches region `name`, with the repository's topology run in it.
fn region_cluster(
    topology: &Path,
    name: &str,
    bootstrap: &str,
    kafka_config: Option<PathBuf>,
) -> ClusterArgs {
    ClusterArgs {
        file: TopologyFile {
            topology: topology.to_owned(),
            region: Some(name.to_owned()),
            away_from_home: false,
        },
        bootstrap: bootstrap.to_owned(),
        kafka_config,
        client_config: Vec::new(),
    }
}

const MARKER: &str = ".pavilion-demo";

/// The run's folder, `<dir>-regions` (the one-cluster demo's `<dir>` stays its own),
/// emptied; the previous run's topics of its own (its tenants' decisions, its banks' sets)
/// are deleted from every region that is up.
fn fresh_dir(
    base: &Path,
    run: &str,
    names: &[String],
    topology: &Topology,
    clusters: &BTreeMap<String, (String, Option<PathBuf>)>,
) -> Result<PathBuf> {
    let mut name = base.file_name().unwrap_or_default().to_owned();
    name.push("-regions");
    let dir = base.with_file_name(name);
    let marker = dir.join(MARKER);
    if dir.exists() {
        let Ok(previous) = std::fs::read_to_string(&marker) else {
            bail!(
                "{} exists and is not a demo directory; choose another --dir",
                dir.display()
            );
        };
        let mut words = previous.lines().next().unwrap_or_default().split(' ');
        if let (Some("regions"), Some(tag), Some(those)) =
            (words.next(), words.next(), words.next())
        {
            let runtime = tokio::runtime::Runtime::new()?;
            let ids: Vec<String> = those
                .split(',')
                .flat_map(|r| [format!("rp-{r}-{tag}"), format!("bank-{r}-{tag}")])
                .collect();
            for (region, (bootstrap, config)) in clusters {
                if reachable(bootstrap).is_err() {
                    continue;
                }
                let cluster = region_cluster(Path::new(""), region, bootstrap, config.clone());
                let settings = crate::cli::settings(&cluster, "demo")?;
                let theirs: HashSet<String> = topology
                    .families
                    .keys()
                    .flat_map(|pattern| {
                        ids.iter()
                            .filter_map(|id| topology.family_topic(pattern, id))
                    })
                    .map(|t| t.name)
                    .collect();
                let mut deleted = 0;
                for topic in pavilion_kafka::topics_with_prefix(&settings, "")? {
                    if theirs.contains(&topic) {
                        deleted += runtime
                            .block_on(pavilion_kafka::delete_topics_with_prefix(&settings, &topic))
                            .unwrap_or(0);
                    }
                }
                if deleted > 0 {
                    println!(
                        "(deleted the {deleted} topics of the previous run, {tag}, in {region})"
                    );
                }
            }
        }
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        &marker,
        format!(
            "regions {run} {}\nmade by `pavilion demo --regions`; replaced, with its tenants' and banks' topics, by the next run\n",
            names.join(",")
        ),
    )?;
    Ok(std::fs::canonicalize(&dir)?)
}

/// A tenant record seen in a region's copy of another region's registry: the region it was
/// seen in, the record, and when.
type Crossing = (usize, pavilion_kafka::ReadRecord, SystemTime);

/// Reads every region's copies of the other regions' tenant registries, from now on, on a
/// thread each.
fn watch_tenant_copies(regions: &[Region], topology: &Topology) -> Result<Receiver<Crossing>> {
    let tenants = crate::cli::topic_for(topology, Tenant::FULL_NAME)?.name;
    let (tx, rx) = mpsc::channel();
    for (k, r) in regions.iter().enumerate() {
        let copies: Vec<String> = regions
            .iter()
            .filter(|o| o.name != r.name)
            .map(|o| format!("{}.{tenants}", o.name))
            .collect();
        let copies: Vec<&str> = copies.iter().map(String::as_str).collect();
        let reader = TopicReader::at_end(&r.settings, &copies)?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Ok(record) = reader.poll(Duration::from_millis(100)) {
                if let Some(record) = record {
                    if tx.send((k, record, SystemTime::now())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    Ok(rx)
}

/// Waits until each tenant's record, as it stands after its key was added, is in every
/// other region's copy; how long each took from its write at home (the record's timestamp,
/// which MirrorMaker 2 keeps) to being visible there.
fn await_crossings(
    regions: &[Region],
    crossings: &Receiver<Crossing>,
    timeout: Duration,
) -> Result<Vec<(String, String, String, Duration)>> {
    let mut lags: BTreeMap<(usize, usize), Duration> = BTreeMap::new();
    let wanted = regions.len() * (regions.len() - 1);
    let deadline = Instant::now() + timeout;
    while lags.len() < wanted {
        let Ok((k, record, seen)) = crossings.recv_timeout(Duration::from_millis(200)) else {
            if Instant::now() > deadline {
                bail!(
                    "tenant records did not cross between the regions within {timeout:?}: is MirrorMaker 2 running? (`scripts/infra regions status`; its log is regions/mm2.log in the run dir)"
                );
            }
            continue;
        };
        let Some(t) = regions
            .iter()
            .position(|r| r.tenant.as_bytes() == record.key.as_slice())
        else {
            continue;
        };
        let ready = record
            .value
            .as_deref()
            .and_then(|v| Registry::builtin().decode::<Tenant>(v).ok())
            .is_some_and(|t| t.state == TenantState::Active && !t.signing_keys.is_empty());
        if ready {
            let written = UNIX_EPOCH + Duration::from_millis(record.timestamp_ms.max(0) as u64);
            lags.entry((t, k))
                .or_insert(seen.duration_since(written).unwrap_or_default());
        }
    }
    Ok(lags
        .into_iter()
        .map(|((t, k), lag)| {
            (
                regions[t].tenant.clone(),
                regions[t].name.clone(),
                regions[k].name.clone(),
                lag,
            )
        })
        .collect())
}

/// SIGKILLs the child process `name` (and reaps it).
fn kill(children: &mut Children, name: &str) -> Result<()> {
    let at = children
        .0
        .iter()
        .position(|(n, _)| n == name)
        .with_context(|| format!("no process {name}"))?;
    let (_, mut child) = children.0.remove(at);
    child.kill()?;
    child.wait()?;
    Ok(())
}

/// A decision's outcomes in a few words: `verified`, or each claim's verdict and reason.
fn verdicts(d: &Decision) -> String {
    if let Some(r) = &d.rejection {
        return format!("rejected ({:?})", r.reason);
    }
    d.outcomes
        .iter()
        .map(|o| {
            let verdict = serde_json::to_value(o.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            match &o.reason {
                Some(why) => format!("{verdict} ({why})"),
                None => verdict,
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_stats(tenant: &str, s: &PoolStats) {
    println!(
        "    {tenant}: attempts {}, fail-overs {}, hedges {}, breaker opens {}; probes {} ({} failed)",
        s.attempts, s.failovers, s.hedges, s.breaker_opens, s.probes, s.probe_failures
    );
    for e in &s.endpoints {
        let breaker = match e.breaker {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        };
        println!(
            "      {:<16} {:<5} {:<23} breaker {breaker:<9} {:>3} ok {:>3} failed{}",
            e.provider_id,
            e.zone,
            e.url,
            e.successes,
            e.failures,
            e.last_error
                .as_deref()
                .map(|w| format!("  (last: {})", w.chars().take(60).collect::<String>()))
                .unwrap_or_default()
        );
    }
}

/// What the residency scan of one region read and found.
struct Scan {
    topics: usize,
    records: usize,
    /// Log segments read on disk and their bytes, when the data directory is here.
    files: Option<(usize, u64)>,
    /// Each id found, and where (topics, log segment files).
    found: BTreeMap<String, BTreeSet<String>>,
}

/// Looks for `ids` (which all start with `prefix`) in every record of every topic of the
/// region's cluster, internal ones included, and in every log segment of its broker when its
/// data directory is on this machine: the records as stored, aborted transactions included,
/// which a read_committed reader skips.
fn scan(region: &Region, prefix: &str, ids: &HashSet<&str>) -> Result<Scan> {
    let topics = pavilion_kafka::topics_with_prefix(&region.settings, "")?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let records = TopicReader::new(&region.settings, &names)?
        .read_to_end(Duration::from_secs(60))
        .with_context(|| format!("reading every topic of {}", region.name))?;
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &records {
        for bytes in [Some(&r.key[..]), r.value.as_deref()].into_iter().flatten() {
            for id in find_ids(bytes, prefix, ids) {
                found.entry(id).or_default().insert(r.topic.clone());
            }
        }
    }
    let files = match &region.data_dir {
        None => None,
        Some(dir) => {
            let mut segments = Vec::new();
            files_under(dir, &mut segments);
            let mut bytes = 0;
            let logs: Vec<&PathBuf> = segments
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "log"))
                .collect();
            for file in &logs {
                let data = std::fs::read(file).unwrap_or_default();
                bytes += data.len() as u64;
                for id in find_ids(&data, prefix, ids) {
                    found
                        .entry(id)
                        .or_default()
                        .insert(file.display().to_string());
                }
            }
            Some((logs.len(), bytes))
        }
    };
    Ok(Scan {
        topics: topics.len(),
        records: records.len(),
        files,
        found,
    })
}

/// The ids of `ids` in `bytes`: each place `prefix` starts, checked against them.
fn find_ids(bytes: &[u8], prefix: &str, ids: &HashSet<&str>) -> Vec<String> {
    let prefix = prefix.as_bytes();
    let mut out = Vec::new();
    if bytes.len() < prefix.len() {
        return out;
    }
    for at in 0..=bytes.len() - prefix.len() {
        if bytes[at] != prefix[0] || !bytes[at..].starts_with(prefix) {
            continue;
        }
        let end = bytes[at..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'-'))
            .map_or(bytes.len(), |n| at + n);
        // The longest id that starts here (an id may be followed by id-like bytes).
        let text = String::from_utf8_lossy(&bytes[at..end]);
        if let Some(id) = (prefix.len()..=text.len())
            .rev()
            .map(|n| &text[..n])
            .find(|candidate| ids.contains(candidate))
        {
            out.push(id.to_owned());
        }
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_found_where_they_start_whatever_follows() {
        let ids: HashSet<&str> = ["r1-eu-00001", "r1-eu-00012"].into_iter().collect();
        let bytes = b"\x18r1-eu-00001\x02xxr1-us-00001r1-eu-00012abc r1-eu-0001";
        assert_eq!(find_ids(bytes, "r1-", &ids), ["r1-eu-00001", "r1-eu-00012"]);
        assert!(find_ids(b"r1", "r1-", &ids).is_empty());
    }
}
