//! `pavilion bench e2e`: the whole request path (tenancy, policy, psi, signing, the audit and
//! the analytics stages) on the broker, in one run: (a) a raw Kafka pass-through of records the size of a
//! request, (b) the pipeline split (one transaction per stage), (c) fused. For (b) and (c):
//! the most requests/s it sustains (after a warm-up, all sent at once, until every stage has
//! caught up: the last decision visible read_committed and the audit log written), the latency
//! from produce to visible at half that rate (p50/p99/p99.9, and the part of it before the
//! decision is written), the pipeline process's peak RSS, and the Kafka records it writes per
//! request, by topic. Of the max phase: the pipeline process's CPU per request (all its
//! threads, by thread), each stage's processing time per request, and both as a multiple of
//! the cryptographic floor measured in the same run over the same requests ([`floor`]).

mod floor;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use pavilion_client::{
    sign_request, OprfClient, ProviderEndpoint, RequestDraft, TenantCredentials,
};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_runtime::clock::epoch_millis;
use pavilion_schemas::{
    AcceptedRequest, AuditEntry, ClaimRequest, Decision, Event, Registry, SubjectToken,
    VerificationRequest,
};
use serde_json::json;

use super::passthrough::{raw_relay, PassthroughArgs};
use super::{sample, write_result, RunFolder};
use crate::cli::{ClusterArgs, TopologyFile};
use crate::demo::percentile;
use crate::demo::processes::{free_port, wait_ready, Children};
use crate::demo::setup::{
    add_tenant, email, populations, run_topology, start_providers, Registered, TenantSetup,
    BANK_POLICY,
};

/// Options of the end-to-end benchmark.
#[derive(Args)]
pub struct E2eBenchArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Requests sent at once to find the sustainable rate.
    #[arg(long, default_value_t = 4_000)]
    pub requests: usize,
    /// Requests decided before any measurement and not counted: they warm up the broker's
    /// JIT compiler, the pipeline's caches and the transaction coordinator's paths.
    #[arg(long, default_value_t = 2_000)]
    pub warmup: usize,
    /// Seconds of requests at half that rate, for the latencies.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Subjects in each provider's population.
    #[arg(long, default_value_t = 20_000)]
    pub subjects: usize,
    /// Which pipelines to measure (both by default; the raw pass-through always runs).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Layout::Split, Layout::Fused])]
    pub layouts: Vec<Layout>,
    /// Tenants the requests are spread over, in turn: each has its own key, policy and
    /// decision topic, and tenancy reads its requests from the partition its id hashes to.
    #[arg(long, default_value_t = 1)]
    pub tenants: usize,
    /// Stream threads of each pipeline process (`pavilion run --threads`; by default its
    /// cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Pipeline processes, sharing each task's partitions by consumer group.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Instead of split vs fused: the fused path in the shapes of the README's scale table
    /// (1 tenant vs 8, 1 stream thread vs 2, 1 process vs 2), each with the requests every
    /// partition and stream thread handled. Writes `e2e_scale.json` beside `--out`.
    #[arg(long)]
    pub scale: bool,
    /// A plaintext broker without authorization (`scripts/infra baseline up`, then
    /// `--baseline-bootstrap 127.0.0.1:19092`): the fused path is measured on it as well, in
    /// the same run, and the report gives what the secured broker costs.
    #[arg(long, value_name = "HOST:PORT")]
    pub baseline_bootstrap: Option<String>,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/e2e.json")]
    pub out: PathBuf,
}

/// How many tenants, stream threads and processes one measurement runs with.
#[derive(Clone, Copy)]
struct Shape {
    tenants: usize,
    threads: Option<usize>,
    processes: usize,
}

impl Shape {
    fn describe(self) -> String {
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let threads = match self.threads {
            Some(n) => count(n, "thread", "threads"),
            None => "default threads".to_owned(),
        };
        format!(
            "{}, {threads}, {}",
            count(self.tenants, "tenant", "tenants"),
            count(self.processes, "process", "processes")
        )
    }

    /// The tenants' ids: `lender`, then `lender2`, `lender3`, ….
    fn tenant_ids(self) -> Vec<String> {
        (1..=self.tenants)
            .map(|n| {
                if n == 1 {
                    "lender".to_owned()
                } else {
                    format!("lender{n}")
                }
            })
            .collect()
    }
}

/// How the request path's stages are grouped into tasks.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// One task, one transaction per stage.
    Split,
    /// The topology's fuse group: one task, one transaction for the whole path.
    Fused,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Split => "split",
            Layout::Fused => "fused",
        }
    }

    /// The letters for the measurements: (a) is the raw pass-through.
    fn letter(self) -> char {
        match self {
            Layout::Split => 'b',
            Layout::Fused => 'c',
        }
    }
}

/// Peak resident set of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Measured {
    max_per_s: f64,
    /// Requests/s until the last decision was visible (the audit stage still behind).
    decisions_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Produce → decision record written by the pipeline (its CreateTime), at half load.
    written_p50_ms: f64,
    written_p99_ms: f64,
    half_load_per_s: f64,
    peak_rss_mb: f64,
    records_per_request: f64,
    /// (topic without the run's prefix, records per request), every topic the run wrote.
    records_by_topic: Vec<(String, f64)>,
    time_spent: TimeSpent,
    /// The pipeline process's CPU in the max phase, µs per request, by thread name.
    cpu: Vec<(String, f64)>,
    floor: floor::Floor,
    spread: Spread,
}

/// Where the work went: the partitions that carried it and the stream threads that did it.
struct Spread {
    /// (topic without the run's prefix, partition, records) over the whole run, for the
    /// requests (tenancy's input, keyed by tenant) and the accepted requests (the fused
    /// path's input, keyed by request id).
    by_partition: Vec<(String, i32, usize)>,
    /// (`p<process>/<task>#<thread>`, input records it committed in the max phase).
    by_thread: Vec<(String, f64)>,
}

impl Spread {
    fn json(&self) -> serde_json::Value {
        json!({
            "records_by_partition": self.by_partition.iter().map(|(t, p, n)| json!({"topic": t, "partition": p, "records": n})).collect::<Vec<_>>(),
            "committed_records_by_stream_thread_max_phase": self.by_thread.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// `topic: p0 n, p1 n, …` for each topic.
    fn partitions_line(&self) -> String {
        let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (topic, partition, n) in &self.by_partition {
            by_topic
                .entry(topic)
                .or_default()
                .push(format!("p{partition} {n}"));
        }
        let topics: Vec<String> = by_topic
            .into_iter()
            .map(|(t, parts)| format!("{t}: {}", parts.join(", ")))
            .collect();
        topics.join("; ")
    }
}

/// Input records each stream thread committed, from `/metrics` text, as
/// `(task#thread, records)`.
fn committed_by_thread(metrics: &str) -> BTreeMap<String, f64> {
    let family = "pavilion_committed_records_total{";
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?;
            let label = |name: &str| -> Option<&str> {
                let tag = format!("{name}=\"");
                let at = rest.find(&tag)? + tag.len();
                Some(&rest[at..at + rest[at..].find('"')?])
            };
            let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            Some((format!("{}#{}", label("task")?, label("thread")?), value))
        })
        .collect()
}

impl Measured {
    fn cpu_us(&self) -> f64 {
        self.cpu.iter().map(|(_, us)| us).sum()
    }

    fn processing_us(&self) -> f64 {
        self.time_spent.stages.iter().map(|(_, us)| us).sum()
    }

    /// The analytics stage's cost, µs per request: its task's thread CPU, and its time in
    /// its process calls (the goal: at most 5 % of the path's CPU).
    fn analytics_us(&self) -> (f64, f64) {
        let thread = self
            .cpu
            .iter()
            .filter(|(name, _)| name.starts_with("analytics"))
            .map(|(_, us)| us)
            .sum();
        let stage = self
            .time_spent
            .stages
            .iter()
            .filter(|(name, _)| name.starts_with("analytics"))
            .map(|(_, us)| us)
            .sum();
        (thread, stage)
    }

    fn changelog_records_per_request(&self) -> f64 {
        self.records_by_topic
            .iter()
            .filter(|(t, _)| t.ends_with(".changelog"))
            .map(|(_, n)| n)
            .sum()
    }
}

/// `name value, name value, …` with `decimals` decimals.
fn listed(pairs: &[(String, f64)], decimals: usize) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name} {value:.decimals$}"))
        .collect();
    items.join(", ")
}

/// The name and CPU seconds (user + system) so far in a `/proc/…/stat` file: a process's
/// (every thread's, those ended too) or one thread's.
pub(super) fn stat_cpu(path: &std::path::Path) -> Option<(String, f64)> {
    // utime and stime in /proc are in USER_HZ ticks, 100 a second on Linux.
    const TICKS_PER_S: f64 = 100.0;
    let stat = std::fs::read_to_string(path).ok()?;
    // `tid (name) state …`: the name may hold spaces, so fields count from its `)`.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let (user, system) = (ticks(11)?, ticks(12)?);
    Some((
        stat[open + 1..close].to_owned(),
        (user + system) / TICKS_PER_S,
    ))
}

/// CPU seconds of each thread of a process so far, summed by thread name (the executor names
/// a task's thread after the task; librdkafka names its own `rdk:…`).
fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut by_name = BTreeMap::new();
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for thread in threads.flatten() {
        let Some((name, seconds)) = stat_cpu(&thread.path().join("stat")) else {
            continue;
        };
        let name = if name.starts_with("rdk:") {
            "rdk (librdkafka)".to_owned()
        } else {
            name
        };
        *by_name.entry(name).or_insert(0.0) += seconds;
    }
    by_name
}

/// Where a pipeline's tasks spent the max phase, from its own metrics: per task, the share
/// of the phase spent committing; per stage, the time per request.
struct TimeSpent {
    /// (task, transactions, share of the phase's wall time spent in commits)
    commits: Vec<(String, f64, f64)>,
    /// (stage, microseconds of processing per request)
    stages: Vec<(String, f64)>,
}

impl TimeSpent {
    fn between(before: &str, after: &str, seconds: f64, requests: usize) -> TimeSpent {
        let delta = |family: &str, label: &str| -> BTreeMap<String, f64> {
            let (a, b) = (
                by_label(after, family, label),
                by_label(before, family, label),
            );
            a.into_iter()
                .map(|(k, v)| {
                    let d = v - b.get(&k).copied().unwrap_or(0.0);
                    (k, d)
                })
                .collect()
        };
        let count = delta("pavilion_transaction_commit_seconds_count", "task");
        let commits = delta("pavilion_transaction_commit_seconds_sum", "task")
            .into_iter()
            .map(|(task, sum)| {
                let n = count.get(&task).copied().unwrap_or(0.0);
                (task, n, sum / seconds)
            })
            .collect();
        let stages = delta("pavilion_processing_seconds_sum", "stage")
            .into_iter()
            .map(|(stage, sum)| (stage, sum * 1e6 / requests as f64))
            .collect();
        TimeSpent { commits, stages }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "commits": self.commits.iter().map(|(t, n, share)| json!({"task": t, "transactions": n, "share_of_wall_time": share})).collect::<Vec<_>>(),
            "processing_us_per_request": self.stages.iter().map(|(s, us)| (s.clone(), json!(us))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The values of one metric family's samples in Prometheus text, by one label's value.
fn by_label(text: &str, family: &str, label: &str) -> BTreeMap<String, f64> {
    let tag = format!("{label}=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(family)?.strip_prefix('{')?;
            let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            let at = rest.find(&tag)? + tag.len();
            let name = &rest[at..at + rest[at..].find('"')?];
            Some((name.to_owned(), value))
        })
        // Several processes' expositions, one after another: their samples add up.
        .fold(BTreeMap::new(), |mut sums, (name, value)| {
            *sums.entry(name).or_insert(0.0) += value;
            sums
        })
}

/// Sets up one run (keys, providers, the lender tenant and its policy, the pipeline) and
/// measures it.
fn measure(
    args: &E2eBenchArgs,
    cluster: &ClusterArgs,
    repo: &str,
    layout: Layout,
    shape: Shape,
    raw_bytes: &mut usize,
) -> Result<Measured> {
    let run = format!(
        "e2e{}{}-{}",
        layout.letter(),
        std::process::id(),
        epoch_millis(SystemTime::now()) % 1_000_000
    );
    let mut text = run_topology(repo, &run);
    if layout == Layout::Split {
        let at = text
            .find("\nfuse:")
            .context("topology.yaml has no fuse section")?;
        text.truncate(at + 1);
    }
    let RunFolder {
        dir,
        topology,
        cluster,
        mut cli,
    } = RunFolder::create(&run, &text, cluster)?;
    // As deployed: the tasks, providers and tenants as their own principals (the harness,
    // which produces the requests and reads everything back, as the caller).
    cli.own_principals(&cluster, &topology.application)?;
    let mut children = Children(Vec::new());
    let tenants = shape.tenant_ids();
    eprintln!(
        "  setting up: topics, keys, 2 providers × {} subjects, a policy for each tenant; {}",
        args.subjects,
        shape.describe()
    );
    cli.ok(&["topics", "create"])?;
    cli.ok(&["keys", "generate"])?;
    populations(&dir, 7, args.subjects)?;
    let https = start_providers(&cli, &mut children, "100000")?.https;
    let mut credentials = Vec::new();
    for tenant in &tenants {
        // Limits far above what the run sends: the measurement is of the pipeline.
        let key_file = add_tenant(
            &cli,
            &TenantSetup {
                id: tenant,
                name: tenant,
                regions: &["eu", "us"],
                rate: "1000000",
                burst: "1000000",
                policy: &BANK_POLICY.replace("tenant: lender", &format!("tenant: {tenant}")),
            },
        )?;
        credentials.push(TenantCredentials::from_key_file(&std::fs::read_to_string(
            key_file,
        )?)?);
    }

    // Every request signed in advance, its tokens fetched in batches: the measurement sees
    // the pipeline, not the client. (Tokens are the provider's function of the subject
    // alone, so one tenant's client fetches them for all.)
    let client = OprfClient::with_tls(
        credentials[0].clone(),
        &https.client(&credentials[0].tenant_id)?,
    )?;
    let providers = Registered::read(&cluster, &topology)?;
    let endpoints: Vec<(&str, ProviderEndpoint)> = ["bank-eu", "fraud-us"]
        .into_iter()
        .map(|p| providers.endpoint(p).map(|e| (p, e)))
        .collect::<Result<_>>()?;
    let registry = Registry::builtin();
    // Requests `range` of this run, signed, with their tokens fetched in batches of 1000.
    let make = |range: std::ops::Range<usize>| -> Result<Vec<(String, String, Vec<u8>)>> {
        let inputs: Vec<Vec<u8>> = range
            .clone()
            .map(|i| {
                oprf_input(IdentifierKind::Email, &email(7, i % args.subjects)).map(|v| v.to_vec())
            })
            .collect::<Result<_, _>>()?;
        let mut tokens: Vec<Vec<Vec<u8>>> = Vec::new();
        for (_, endpoint) in &endpoints {
            let mut out = Vec::with_capacity(inputs.len());
            for chunk in inputs.chunks(1000) {
                out.extend(
                    client
                        .tokens(endpoint, chunk)?
                        .into_iter()
                        .map(|t| t.to_vec()),
                );
            }
            tokens.push(out);
        }
        range
            .enumerate()
            .map(|(n, i)| {
                let r = sign_request(
                    &credentials[i % credentials.len()],
                    RequestDraft {
                        claims: vec![
                            ClaimRequest {
                                name: "account_verified".into(),
                                params: Default::default(),
                            },
                            ClaimRequest {
                                name: "fraud_listed".into(),
                                params: Default::default(),
                            },
                        ],
                        purpose: "kyc".into(),
                        subject_jurisdiction: "DE".into(),
                        consent_ref: None,
                        response_format: None,
                        request_id: Some(format!("{run}-{i:07}")),
                        nonce: None,
                    },
                    endpoints
                        .iter()
                        .zip(&tokens)
                        .map(|((p, _), t)| SubjectToken {
                            provider_id: (*p).into(),
                            token: t[n].clone(),
                        })
                        .collect(),
                );
                Ok((
                    r.tenant_id.clone(),
                    r.request_id.clone(),
                    registry.encode(&r)?,
                ))
            })
            .collect()
    };
    let mut requests = make(0..args.warmup + args.requests)?;
    *raw_bytes = requests[0].2.len();
    let warmup: Vec<_> = requests.drain(..args.warmup).collect();

    // Each process: (metrics address, pid).
    let mut pipelines: Vec<(String, u32)> = Vec::new();
    let threads = shape.threads.map(|n| n.to_string());
    for p in 1..=shape.processes {
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let (instance, state) = (format!("bench{p}"), format!("state{p}"));
        let mut run_args = vec![
            "run",
            "--instance",
            &instance,
            "--state-dir",
            &state,
            "--metrics-addr",
            &metrics,
        ];
        if let Some(threads) = &threads {
            run_args.extend(["--threads", threads]);
        }
        // Every task of the layout's topology: split, a task per stage; fused, as
        // topology.yaml groups them.
        for t in topology.tasks.keys() {
            run_args.extend(["--task", t]);
        }
        let credentials = cli.task_credentials();
        run_args.extend(credentials.iter().map(String::as_str));
        cli.spawn(&mut children, &format!("pipeline{p}"), &run_args)?;
        pipelines.push((metrics, children.0.last().expect("spawned").1.id()));
    }
    for (metrics, _) in &pipelines {
        wait_ready(metrics, Duration::from_secs(120))?;
    }
    let settings = crate::cli::settings(&cluster, "bench")?;
    let decision_family = crate::cli::topic_for(&topology, Decision::FULL_NAME)?.name;
    let decisions: Vec<String> = tenants
        .iter()
        .map(|tenant| {
            topology
                .family_topic(&decision_family, tenant)
                .map(|t| t.name)
                .context("decision topic")
        })
        .collect::<Result<_>>()?;
    let ingest = crate::cli::topic_for(&topology, VerificationRequest::FULL_NAME)?.name;
    let accepted = crate::cli::topic_for(&topology, AcceptedRequest::FULL_NAME)?.name;
    let producer = PlainProducer::new(&settings)?;
    // A reader of its own: each decision is timed when it becomes visible, whatever the
    // sender is doing.
    let decision_topics: Vec<&str> = decisions.iter().map(String::as_str).collect();
    let reader = TopicReader::new(&settings, &decision_topics)?;
    let (visible, arrivals) = std::sync::mpsc::channel::<(Vec<u8>, Instant, i64)>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match reader.poll(Duration::from_millis(50)) {
                    Ok(Some(r)) => {
                        if visible
                            .send((r.value.unwrap_or_default(), Instant::now(), r.timestamp_ms))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
        })
    };
    // When each request was sent, and the wall-clock time to compare with the decision
    // record's CreateTime (stamped by the pipeline on this same host).
    let send = |(tenant, _, bytes): &(String, String, Vec<u8>)| -> Result<(Instant, i64)> {
        producer.send(&ingest, tenant.as_bytes(), bytes)?;
        Ok((Instant::now(), epoch_millis(SystemTime::now())))
    };
    // Per request: when its decision became visible, and the decision record's CreateTime.
    let await_n = |n: usize, seen: &mut BTreeMap<String, (Instant, i64)>| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        while seen.len() < n {
            if let Ok((value, at, written)) = arrivals.recv_timeout(Duration::from_millis(50)) {
                let d: Decision = registry.decode(&value)?;
                seen.entry(d.request_id).or_insert((at, written));
            } else if Instant::now() > deadline {
                bail!(
                    "{} of {n} decisions (see {}/pipeline.log)",
                    seen.len(),
                    dir.display()
                );
            }
        }
        Ok(())
    };

    // Max: everything at once.
    let scrape_each = || -> Result<Vec<String>> {
        pipelines
            .iter()
            .map(|(metrics, _)| {
                Ok(ureq::get(&format!("http://{metrics}/metrics"))
                    .timeout(Duration::from_secs(5))
                    .call()?
                    .into_string()?)
            })
            .collect()
    };
    // Every process's exposition, one after the other (samples of one name add up).
    let scrape = || -> Result<String> { Ok(scrape_each()?.concat()) };
    // Each process's threads' CPU seconds, `p<process>/<thread>` when there are several.
    let cpu_now = || -> BTreeMap<String, f64> {
        let mut all = BTreeMap::new();
        for (p, (_, pid)) in pipelines.iter().enumerate() {
            for (name, seconds) in thread_cpu(*pid) {
                let name = if pipelines.len() > 1 {
                    format!("p{}/{name}", p + 1)
                } else {
                    name
                };
                *all.entry(name).or_insert(0.0) += seconds;
            }
        }
        all
    };
    let committed_now = || -> Result<BTreeMap<String, f64>> {
        let mut all = BTreeMap::new();
        for (p, text) in scrape_each()?.iter().enumerate() {
            for (thread, n) in committed_by_thread(text) {
                all.insert(format!("p{}/{thread}", p + 1), n);
            }
        }
        Ok(all)
    };
    // The audit stage is still working off a burst when the last decision is visible. Waits
    // until no task has consumed anything for a second; returns when the last record was.
    let settle = || -> Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut last, mut changed) = (-1.0, Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let consumed = sample::metric_sum(&scrape()?, "pavilion_records_in_total{");
            if consumed != last {
                (last, changed) = (consumed, Instant::now());
            } else if changed.elapsed() >= Duration::from_secs(1) || Instant::now() > deadline {
                return Ok(changed);
            }
        }
    };
    let mut seen = BTreeMap::new();
    eprintln!("  warm-up: {} requests", args.warmup);
    for r in &warmup {
        send(r)?;
    }
    producer.flush()?;
    await_n(args.warmup, &mut seen)?;
    settle()?;

    eprintln!("  max: {} requests at once", args.requests);
    let before = scrape()?;
    let cpu_before = cpu_now();
    let committed_before = committed_now()?;
    let t0 = Instant::now();
    for r in &requests {
        send(r)?;
    }
    producer.flush()?;
    await_n(args.warmup + args.requests, &mut seen)?;
    let decided = t0.elapsed().as_secs_f64();
    eprintln!("  max: last decision visible after {decided:.1} s; waiting for every stage (the audit log too) to catch up");
    // Sustainable means every stage keeps up: the phase lasts until the audit stage has
    // logged the burst too, not only until the last decision (which defers the audit's work
    // and overstates a rate half of which the half-load phase would then not sustain).
    let max_seconds = settle()?.duration_since(t0).as_secs_f64().max(decided);
    let max_per_s = args.requests as f64 / max_seconds;
    let time_spent = TimeSpent::between(&before, &scrape()?, max_seconds, args.requests);
    let by_thread: Vec<(String, f64)> = committed_now()?
        .into_iter()
        .map(|(thread, n)| {
            let d = n - committed_before.get(&thread).copied().unwrap_or(0.0);
            (thread, d)
        })
        .collect();
    let cpu: Vec<(String, f64)> = cpu_now()
        .into_iter()
        .map(|(name, s)| {
            let d = s - cpu_before.get(&name).copied().unwrap_or(0.0);
            (name, d * 1e6 / args.requests as f64)
        })
        .filter(|(_, us)| *us > 0.0)
        .collect();

    // Half load, paced; latency from each produce to its decision visible.
    let rate = max_per_s / 2.0;
    let count = ((rate * args.seconds as f64) as usize).max(1);
    let sent = args.warmup + args.requests;
    let batch = make(sent..sent + count)?;
    eprintln!("  half load: {rate:.0} requests/s for {} s", args.seconds);
    let mut sent_at = BTreeMap::new();
    let t1 = Instant::now();
    for (i, r) in batch.iter().enumerate() {
        let due = t1 + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // No flush per request: a client's producer batches (linger), and the latency counts it.
        sent_at.insert(r.1.clone(), send(r)?);
    }
    producer.flush()?;
    await_n(sent + count, &mut seen)?;
    // Produce → visible, and the part of it until the pipeline wrote the decision (the rest
    // is its transaction's wait for the commit, the commit, and the reader's fetch).
    let (mut latencies, mut to_written): (Vec<f64>, Vec<f64>) = sent_at
        .iter()
        .filter_map(|(id, (at, at_ms))| {
            seen.get(id).map(|(visible, written)| {
                (
                    visible.duration_since(*at).as_secs_f64() * 1000.0,
                    (written - at_ms) as f64,
                )
            })
        })
        .unzip();
    latencies.sort_by(f64::total_cmp);
    to_written.sort_by(f64::total_cmp);
    let peak_rss_mb = pipelines
        .iter()
        .map(|(_, pid)| peak_rss_kb(*pid).unwrap_or(0))
        .sum::<u64>() as f64
        / 1024.0;
    drop(children);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();

    // Everything the run wrote, every topic of it (changelogs included), per request, read
    // back read_committed (records of committed transactions, no markers); and what the floor
    // is measured over.
    eprintln!("  counting the records written; measuring the floor");
    let requests_total = (sent + count) as f64;
    let audited: std::collections::BTreeSet<&str> = topology
        .stages
        .values()
        .filter(|s| s.kind == "audit")
        .flat_map(|s| s.inputs.iter().map(String::as_str))
        .collect();
    let log = crate::cli::topic_for(&topology, AuditEntry::FULL_NAME)?.name;
    let mut written = 0usize;
    let mut records_by_topic = Vec::new();
    let mut run_records = floor::RunRecords {
        requests: Vec::new(),
        audited: Vec::new(),
        entries: Vec::new(),
        decisions: Vec::new(),
    };
    let names: Vec<String> = topology
        .topics
        .keys()
        .cloned()
        .chain(decisions.iter().cloned())
        .collect();
    let mut by_partition: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for name in &names {
        let Ok(records) = TopicReader::new(&settings, &[name])
            .and_then(|r| r.read_to_end(Duration::from_secs(120)))
        else {
            continue;
        };
        written += records.len();
        let short = name.strip_prefix(&format!("{run}.")).unwrap_or(name);
        if !records.is_empty() {
            records_by_topic.push((short.to_owned(), records.len() as f64 / requests_total));
        }
        if *name == ingest || *name == accepted {
            for r in &records {
                *by_partition
                    .entry((short.to_owned(), r.partition))
                    .or_insert(0) += 1;
            }
        }
        for value in records.into_iter().filter_map(|r| r.value) {
            if *name == ingest {
                run_records.requests.push(registry.decode(&value)?);
            }
            if *name == log {
                run_records.entries.push(registry.decode(&value)?);
            }
            if decisions.contains(name) {
                let decision = registry.decode(&value)?;
                run_records.decisions.push((value.clone(), decision));
            }
            if audited.contains(name.as_str()) {
                run_records.audited.push(value);
            }
        }
    }
    let tenant_keys: BTreeMap<String, ed25519_dalek::VerifyingKey> = credentials
        .iter()
        .map(|c| (c.tenant_id.clone(), c.signing_key.verifying_key()))
        .collect();
    let floor = floor::measure(&run_records, &tenant_keys, BANK_POLICY)?;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = tokio::runtime::Runtime::new()?.block_on(pavilion_kafka::delete_topics_with_prefix(
        &settings,
        &format!("{run}."),
    ));
    Ok(Measured {
        max_per_s,
        decisions_per_s: args.requests as f64 / decided,
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        p999_ms: percentile(&latencies, 0.999),
        written_p50_ms: percentile(&to_written, 0.5),
        written_p99_ms: percentile(&to_written, 0.99),
        half_load_per_s: rate,
        peak_rss_mb,
        records_per_request: written as f64 / requests_total,
        records_by_topic,
        time_spent,
        cpu,
        floor,
        spread: Spread {
            by_partition: by_partition
                .into_iter()
                .map(|((topic, partition), n)| (topic, partition, n))
                .collect(),
            by_thread,
        },
    })
}

pub fn e2e(args: E2eBenchArgs) -> Result<ExitCode> {
    let repo = std::fs::read_to_string(&args.cluster.file.topology)
        .with_context(|| format!("reading {}", args.cluster.file.topology.display()))?;
    if args.scale {
        return scale(&args, &repo);
    }
    let shape = Shape {
        tenants: args.tenants,
        threads: args.threads,
        processes: args.processes,
    };
    anyhow::ensure!(
        shape.tenants >= 1 && shape.processes >= 1,
        "--tenants and --processes are at least 1"
    );
    let mut request_bytes = 0;
    let mut measured = Vec::new();
    for layout in [Layout::Split, Layout::Fused] {
        if args.layouts.contains(&layout) {
            println!(
                "({}) the pipeline {}, {}",
                layout.letter(),
                layout.name(),
                shape.describe()
            );
            measured.push((
                layout,
                measure(
                    &args,
                    &args.cluster,
                    &repo,
                    layout,
                    shape,
                    &mut request_bytes,
                )?,
            ));
        }
    }
    let plaintext = match &args.baseline_bootstrap {
        None => None,
        Some(bootstrap) => {
            println!(
                "(p) the pipeline fused on the plaintext broker at {bootstrap}, {}",
                shape.describe()
            );
            let cluster = ClusterArgs {
                bootstrap: bootstrap.clone(),
                kafka_config: None,
                ..args.cluster.clone()
            };
            Some(
                measure(&args, &cluster, &repo, Layout::Fused, shape, &mut request_bytes)
                    .with_context(|| format!("measuring on the plaintext broker at {bootstrap} (is it up? scripts/infra baseline up)"))?,
            )
        }
    };
    println!("(a) raw Kafka pass-through of {request_bytes}-byte records");
    let run = format!("e2er{}", std::process::id());
    let raw_topology = format!("application: {run}\ndlq: {run}.dlq\ntopics:\n  {run}.dlq: {{}}\n  {run}.raw-in: {{}}\n  {run}.raw-out: {{}}\nstages: {{}}\n");
    let path = std::env::temp_dir().join(format!("{run}.yaml"));
    std::fs::write(&path, raw_topology)?;
    let cluster = ClusterArgs {
        file: TopologyFile {
            topology: path,
            region: None,
            away_from_home: false,
        },
        ..args.cluster.clone()
    };
    crate::commands::topology::create_topics(&cluster)?;
    let settings = crate::cli::settings(&cluster, "bench")?;
    let raw = raw_relay(
        &settings,
        &run,
        &PassthroughArgs {
            cluster: cluster.clone(),
            records: 50_000,
            payload: request_bytes,
            partitions: 6,
            commit_interval: Duration::from_millis(100),
            out: PathBuf::new(),
        },
    )?;
    let _ = tokio::runtime::Runtime::new()?.block_on(pavilion_kafka::delete_topics_with_prefix(
        &settings,
        &format!("{run}."),
    ));
    let _ = std::fs::remove_file(&cluster.file.topology);

    println!(
        "\n  {:<8} {:>12} {:>10} {:>10} {:>10} {:>10} {:>12} {:>10}",
        "", "requests/s", "p50 ms", "p99 ms", "p99.9 ms", "RSS MB", "records/req", "broker"
    );
    for (layout, m) in &measured {
        println!(
            "  {:<8} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>10.0} {:>12.1} {:>9.0}%",
            layout.name(),
            m.max_per_s,
            m.p50_ms,
            m.p99_ms,
            m.p999_ms,
            m.peak_rss_mb,
            m.records_per_request,
            100.0 * m.max_per_s * m.records_per_request / raw
        );
    }
    println!("  raw pass-through: {raw:.0} records/s; latencies at half the max rate; broker = requests/s × records/request ÷ raw");
    for (layout, m) in &measured {
        let commits: Vec<String> = m
            .time_spent
            .commits
            .iter()
            .map(|(task, n, share)| {
                format!("{task} {n:.0} commits, {:.0} % of the time", share * 100.0)
            })
            .collect();
        let stages: Vec<String> = m
            .time_spent
            .stages
            .iter()
            .map(|(stage, us)| format!("{stage} {us:.0}"))
            .collect();
        println!(
            "  {} during the max phase: last decision visible at {:.0} requests/s, every stage caught up at {:.0}; {}; processing µs/request: {}",
            layout.name(),
            m.decisions_per_s,
            m.max_per_s,
            commits.join(", "),
            stages.join(", ")
        );
        println!(
            "  {} at half load: decision written {:.0} ms (p50) / {:.0} ms (p99) after produce, the rest of the latency waits for its commit",
            layout.name(),
            m.written_p50_ms,
            m.written_p99_ms
        );
        let f = &m.floor;
        println!(
            "  {} floor (same run, same requests): {:.0} µs/request = Ed25519 verify {:.0} + sign {:.0} + Cedar {:.0} + {:.1} SHA-256 {:.0}",
            layout.name(),
            f.total_us(),
            f.verify_us,
            f.sign_us,
            f.cedar_us,
            f.sha256_count,
            f.sha256_us
        );
        println!(
            "  {} CPU per request (max phase): whole process {:.0} µs = {:.1}× the floor ({}); inside the stages {:.0} µs = {:.1}× the floor (wall time in their process calls: on a busy 2-core machine it counts time preempted)",
            layout.name(),
            m.cpu_us(),
            m.cpu_us() / f.total_us(),
            listed(&m.cpu, 0),
            m.processing_us(),
            m.processing_us() / f.total_us()
        );
        let (thread, stage) = m.analytics_us();
        println!(
            "  {} analytics stage: its task's thread {thread:.0} µs per request = {:.1} % of the process's CPU; in its process calls {stage:.0} µs = {:.1} % of all stages' (goal ≤ 5 %)",
            layout.name(),
            100.0 * thread / m.cpu_us(),
            100.0 * stage / m.processing_us()
        );
        println!(
            "  {} Kafka records written per request: {:.2}, of which changelogs {:.2} ({})",
            layout.name(),
            m.records_per_request,
            m.changelog_records_per_request(),
            listed(&m.records_by_topic, 2)
        );
        println!(
            "  {} spread: records by partition ({}); input records committed by stream thread in the max phase ({})",
            layout.name(),
            m.spread.partitions_line(),
            listed(&m.spread.by_thread, 0)
        );
    }
    let secured_cost = match (
        &plaintext,
        measured.iter().find(|(l, _)| *l == Layout::Fused),
    ) {
        (Some(plain), Some((_, secured))) => {
            let ratio = secured.max_per_s / plain.max_per_s;
            println!(
                "  secured vs plaintext (fused): {:.0} vs {:.0} requests/s = {:.2}× ({:+.0} %); p99 at half load {:.1} vs {:.1} ms ({:+.1} ms); p50 {:.1} vs {:.1} ms; CPU {:.0} vs {:.0} µs/request; goal (secured costs ≤ 15 % of throughput): {}",
                secured.max_per_s,
                plain.max_per_s,
                ratio,
                (ratio - 1.0) * 100.0,
                secured.p99_ms,
                plain.p99_ms,
                secured.p99_ms - plain.p99_ms,
                secured.p50_ms,
                plain.p50_ms,
                secured.cpu_us(),
                plain.cpu_us(),
                if ratio >= 0.85 { "met" } else { "NOT met" }
            );
            Some(
                json!({ "throughput_ratio": ratio, "throughput_cost": 1.0 - ratio, "p99_difference_ms": secured.p99_ms - plain.p99_ms, "p50_difference_ms": secured.p50_ms - plain.p50_ms, "cpu_us_difference": secured.cpu_us() - plain.cpu_us() }),
            )
        }
        _ => None,
    };
    if let Some((_, fused)) = measured.iter().find(|(l, _)| *l == Layout::Fused) {
        let busy = fused.max_per_s * fused.records_per_request / raw;
        println!(
            "  goals (fused): broker ≥ 50 % of raw: {} ({:.0} %); p99 ≤ 100 ms at half load: {} ({:.1} ms)",
            if busy >= 0.5 { "met" } else { "NOT met" },
            busy * 100.0,
            if fused.p99_ms <= 100.0 { "met" } else { "NOT met" },
            fused.p99_ms
        );
    }
    let as_json = |m: &Measured| json!({ "max_requests_per_s": m.max_per_s, "burst_decisions_per_s": m.decisions_per_s, "half_load_requests_per_s": m.half_load_per_s, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms, "p999_ms": m.p999_ms, "written_p50_ms": m.written_p50_ms, "written_p99_ms": m.written_p99_ms, "peak_rss_mb": m.peak_rss_mb, "records_written_per_request": m.records_per_request, "changelog_records_per_request": m.changelog_records_per_request(), "records_per_request_by_topic": m.records_by_topic.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<serde_json::Map<_, _>>(), "floor": m.floor.json(), "cpu_us_per_request": m.cpu_us(), "cpu_us_per_request_by_thread": m.cpu.iter().map(|(t, us)| (t.clone(), json!(us))).collect::<serde_json::Map<_, _>>(), "cpu_to_floor": m.cpu_us() / m.floor.total_us(), "processing_us_per_request": m.processing_us(), "processing_to_floor": m.processing_us() / m.floor.total_us(), "analytics_cpu_share": m.analytics_us().0 / m.cpu_us(), "analytics_processing_share": m.analytics_us().1 / m.processing_us(), "broker_share_of_raw": m.max_per_s * m.records_per_request / raw, "max_phase": m.time_spent.json(), "spread": m.spread.json() });
    let mut result = json!({
        "benchmark": "e2e",
        "raw_passthrough_records_per_s": raw,
        "request_bytes": request_bytes,
        "warmup_requests": args.warmup,
        "shape": shape.describe(),
    });
    for (layout, m) in &measured {
        result[layout.name()] = as_json(m);
    }
    if let (Some(plain), Some(cost)) = (&plaintext, secured_cost) {
        result["fused_plaintext"] = as_json(plain);
        result["secured_cost"] = cost;
    }
    result["note"] = json!( "tenancy, policy, psi, signing and audit on the local broker; one pipeline process; requests pre-signed with their OPRF tokens; max = after the warm-up requests are decided, all sent at once until every stage has caught up (last decision visible read_committed, audit log written); latencies at half that rate; records counted over every topic of the run, changelogs included, read back read_committed; CPU = the pipeline process's user+system time in the max phase (every thread) per request; processing = wall time inside the stages' process calls (preemption included); floor = bare primitives over the run's own requests (Ed25519 verify of each, an Ed25519 signature of each decision payload, the policy engine's evaluation of each, and the SHA-256s the path computes), median of 3 passes");
    write_result(&args.out, &result)?;
    Ok(ExitCode::SUCCESS)
}

/// `bench e2e --scale`: the fused path in each shape of the README's scale table, one after
/// the other in one run, with where the work went.
fn scale(args: &E2eBenchArgs, repo: &str) -> Result<ExitCode> {
    let shapes = [
        Shape {
            tenants: 1,
            threads: Some(1),
            processes: 1,
        },
        Shape {
            tenants: 8,
            threads: Some(1),
            processes: 1,
        },
        Shape {
            tenants: 1,
            threads: Some(2),
            processes: 1,
        },
        Shape {
            tenants: 1,
            threads: Some(1),
            processes: 2,
        },
    ];
    let mut request_bytes = 0;
    let mut rows = Vec::new();
    for (n, shape) in shapes.into_iter().enumerate() {
        println!(
            "({}/{}) the fused path, {}",
            n + 1,
            shapes.len(),
            shape.describe()
        );
        let m = measure(
            args,
            &args.cluster,
            repo,
            Layout::Fused,
            shape,
            &mut request_bytes,
        )?;
        println!(
            "  {:.0} requests/s, p99 {:.0} ms at half load, {:.0} µs CPU/request; by partition: {}; committed by stream thread (max phase): {}",
            m.max_per_s,
            m.p99_ms,
            m.cpu_us(),
            m.spread.partitions_line(),
            listed(&m.spread.by_thread, 0)
        );
        rows.push((shape, m));
    }
    println!(
        "\n  {:<36} {:>11} {:>8} {:>12}  stream threads that did work (records committed, max phase)",
        "shape", "requests/s", "p99 ms", "CPU µs/req"
    );
    for (shape, m) in &rows {
        let busy: Vec<(String, f64)> = m
            .spread
            .by_thread
            .iter()
            .filter(|(_, n)| *n > 0.0)
            .cloned()
            .collect();
        println!(
            "  {:<36} {:>11.0} {:>8.0} {:>12.0}  {}",
            shape.describe(),
            m.max_per_s,
            m.p99_ms,
            m.cpu_us(),
            listed(&busy, 0)
        );
    }
    println!("  on 2 cores with the broker beside the pipeline, these show that the work spreads, not that it speeds up");
    let result = json!({
        "benchmark": "e2e_scale",
        "request_bytes": request_bytes,
        "warmup_requests": args.warmup,
        "requests": args.requests,
        "shapes": rows.iter().map(|(shape, m)| json!({
            "shape": shape.describe(),
            "tenants": shape.tenants,
            "threads": shape.threads,
            "processes": shape.processes,
            "max_requests_per_s": m.max_per_s,
            "p99_ms": m.p99_ms,
            "cpu_us_per_request": m.cpu_us(),
            "cpu_to_floor": m.cpu_us() / m.floor.total_us(),
            "records_written_per_request": m.records_per_request,
            "spread": m.spread.json(),
        })).collect::<Vec<_>>(),
        "note": "the fused path (tenancy its own task; policy+psi+signing fused; audit) in each shape, one after the other in one run on the local broker; spread = records on each partition of the requests topic (keyed by tenant) and the accepted topic (keyed by request id) over the whole run, and input records each stream thread committed in the max phase",
    });
    write_result(&args.out.with_file_name("e2e_scale.json"), &result)?;
    Ok(ExitCode::SUCCESS)
}
