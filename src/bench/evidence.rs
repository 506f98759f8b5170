//! The end-to-end harness of the benchmarks whose claims take a round trip to a provider's
//! evidence service (`bench zk`: a predicate by proof; `bench disclosure`: an attribute
//! disclosed by a BBS proof), against a membership-only claim of the same tenant and subjects.
//!
//! The pipeline (tenancy, then policy + psi + signing fused), both providers' OPRF services and
//! bank-eu's evidence service run as child processes set up as the demo sets them up; one tenant
//! of [`RoundTrip`] sends signed requests, paced or all at once, and each is timed from produce
//! to its decision visible read_committed. Where an evidence claim's time goes comes from the
//! records' own timestamps: produce → evidence request written by psi → answer written by the
//! provider → decision written → visible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use pavilion_client::{sign_request, OprfClient, RequestDraft, TenantCredentials};
use pavilion_kafka::{KafkaSettings, PlainProducer, TopicReader};
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_runtime::clock::epoch_millis;
use pavilion_schemas::{
    ClaimRequest, Decision, Event, EvidenceRequest, EvidenceResponse, Registry, SubjectToken,
    VerificationRequest,
};
use pavilion_zk::{field_to_bytes, nonce_from_request_id};
use serde_json::{json, Value};

use super::e2e::stat_cpu;
use super::runs::{ms, Runs};
use super::RunFolder;
use crate::cli::ClusterArgs;
use crate::commands::acls::Role;
use crate::demo::percentile;
use crate::demo::processes::{free_port, wait_ready, Children, Cli};
use crate::demo::setup::{
    add_tenant, populations, run_topology, start_providers, Registered, TenantSetup,
};

/// What a benchmark asks through the harness: one tenant of bank-eu's (with its policy), the
/// claim that takes the round trip to bank-eu's evidence service, and the requests' context.
/// The baseline is the same tenant asking `account_verified` (membership only) about the same
/// subjects, so its policy must permit that claim for the same purpose.
pub(crate) struct RoundTrip {
    /// The start of the run's name (its topics and folder).
    pub(crate) run: &'static str,
    pub(crate) tenant: TenantSetup<'static>,
    /// The claim measured, with its parameters.
    pub(crate) claim: &'static str,
    pub(crate) params: &'static [(&'static str, &'static str)],
    /// The requests' purpose and subject jurisdiction.
    pub(crate) purpose: &'static str,
    pub(crate) jurisdiction: &'static str,
    /// Only bank-eu's adult members as subjects (for whom `age_over` 18 holds), or every
    /// member.
    pub(crate) adults_only: bool,
}

/// The options of the end-to-end part, as `bench zk` and `bench disclosure` take them.
#[derive(Args)]
#[command(next_help_heading = "End to end (Kafka, the pipeline, the providers)")]
pub struct EndToEndArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Only what this process measures by itself: no Kafka, no pipeline, no providers.
    #[arg(long)]
    pub skip_e2e: bool,
    /// Subjects in the providers' synthetic populations (about 70 % are bank-eu's members);
    /// the requests ask about bank-eu's members among them (`bench zk`: its adult members).
    #[arg(long, default_value_t = 2_000)]
    pub subjects: usize,
    /// Requests of each kind per run for the latencies: the benchmark's claim (`bench zk`:
    /// `age_over` by proof; `bench disclosure`: `residence` by BBS disclosure), and
    /// `account_verified` by membership only (the baseline), paced at --rate.
    #[arg(long, default_value_t = 150)]
    pub latency_requests: usize,
    /// Pace of the latency requests, per second: well below what the provider's one evidence
    /// worker sustains (a proof takes ~20 ms, a disclosure a few), so the latency is not time
    /// spent queueing.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Requests of each kind decided before anything is measured, not counted (after the
    /// first claim of the benchmark's kind is verified end to end).
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
}

impl EndToEndArgs {
    /// Before anything is measured, so that a missing broker fails now, not minutes later:
    /// `None` with `--skip-e2e`, else the topology (`--topology`) that the run renames for
    /// itself; fails at once, with what to do, when no bootstrap server takes a connection.
    /// `without` says what `--skip-e2e` still measures.
    pub(crate) fn topology(&self, without: &str) -> Result<Option<String>> {
        use std::net::ToSocketAddrs as _;
        if self.skip_e2e {
            return Ok(None);
        }
        anyhow::ensure!(
            self.rate > 0.0 && self.latency_requests > 0,
            "--rate and --latency-requests must be above 0"
        );
        let bootstrap = &self.cluster.bootstrap;
        let reachable = bootstrap.split(',').any(|server| {
            server.trim().to_socket_addrs().is_ok_and(|mut addresses| {
                addresses.any(|address| {
                    std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
                })
            })
        });
        if !reachable {
            bail!(
                "Kafka is not reachable at {bootstrap}: start it with `scripts/infra up` and \
                 `eval \"$(scripts/infra env)\"` (or give --bootstrap); `--skip-e2e` measures \
                 {without} without it"
            );
        }
        let file = &self.cluster.file.topology;
        std::fs::read_to_string(file)
            .map(Some)
            .with_context(|| format!("reading {}", file.display()))
    }

    /// The JSON result's `settings`: `more` (an object) with these options.
    pub(crate) fn settings(&self, mut more: Value) -> Value {
        if let Some(map) = more.as_object_mut() {
            map.extend([
                ("end_to_end".to_owned(), json!(!self.skip_e2e)),
                ("subjects".to_owned(), json!(self.subjects)),
                (
                    "latency_requests_per_kind".to_owned(),
                    json!(self.latency_requests),
                ),
                ("rate_per_s".to_owned(), json!(self.rate)),
                ("warmup".to_owned(), json!(self.warmup)),
                ("evidence_workers".to_owned(), json!(1)),
            ]);
        }
        more
    }
}

/// What a request asks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The [`RoundTrip`]'s claim, answered by the evidence service.
    Evidence,
    /// `account_verified`, by membership only: the baseline.
    Membership,
}

/// A decision seen: when it became visible, its record's CreateTime, and its outcome.
struct Seen {
    at: Instant,
    written_ms: i64,
    outcome: String,
}

/// A process's CPU seconds so far (every thread's, those ended too).
fn process_cpu(pid: u32) -> f64 {
    stat_cpu(Path::new(&format!("/proc/{pid}/stat"))).map_or(f64::NAN, |(_, s)| s)
}

fn scrape(addr: &str) -> Result<String> {
    Ok(ureq::get(&format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(5))
        .call()
        .with_context(|| format!("reading http://{addr}/metrics"))?
        .into_string()?)
}

/// The sum of the samples of a metric `family` (`name{labels} value`, or `name value`) in
/// Prometheus text whose labels include each of `with`, summed by the value of `by` (one
/// entry, `""`, without).
fn metric_by(text: &str, family: &str, with: &[(&str, &str)], by: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some(split) => split,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let labels: BTreeMap<&str, &str> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if !with.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let key = labels.get(by).copied().unwrap_or_default().to_owned();
        *out.entry(key).or_insert(0.0) += value;
    }
    out
}

fn metric(text: &str, family: &str, with: &[(&str, &str)]) -> f64 {
    metric_by(text, family, with, "").values().sum()
}

/// The psi stage's event counter.
fn psi_event(text: &str, event: &str) -> f64 {
    metric(
        text,
        "pavilion_stage_events_total",
        &[("stage", "psi"), ("event", event)],
    )
}

/// The labels psi counts verification batches by, smallest first.
pub(crate) const BATCH_LABELS: [&str; 5] = ["1", "2-15", "16-63", "64-255", "256+"];

/// What the pipeline's and the evidence service's metrics moved by during a phase.
pub(crate) struct Moved {
    pub(crate) asked: f64,
    pub(crate) verified: f64,
    pub(crate) rejected: f64,
    /// BBS disclosures psi verified, and refused (any reason).
    pub(crate) disclosures_verified: f64,
    pub(crate) disclosures_rejected: f64,
    pub(crate) timeouts: f64,
    /// Proof verification batches by size label ([`BATCH_LABELS`]).
    pub(crate) batches: Vec<f64>,
    /// Answers the evidence service proved (a proof or a disclosure) and the time it took.
    pub(crate) proved: f64,
    pub(crate) proving_seconds: f64,
    /// (bucket bound in seconds, proofs at most that long), cumulative.
    proving_buckets: Vec<(f64, f64)>,
    pub(crate) repeated: f64,
    pub(crate) expired: f64,
}

impl Moved {
    fn between(pipeline: [&str; 2], evidence: [&str; 2]) -> Moved {
        let event = |e: &str| psi_event(pipeline[1], e) - psi_event(pipeline[0], e);
        let batches_of = |t: &str| {
            metric_by(
                t,
                "pavilion_stage_events_total",
                &[("stage", "psi"), ("event", "proofs.batch")],
                "label",
            )
        };
        let (b0, b1) = (batches_of(pipeline[0]), batches_of(pipeline[1]));
        let batches = BATCH_LABELS
            .iter()
            .map(|l| b1.get(*l).copied().unwrap_or(0.0) - b0.get(*l).copied().unwrap_or(0.0))
            .collect();
        let provider =
            |family: &str| metric(evidence[1], family, &[]) - metric(evidence[0], family, &[]);
        let buckets_of =
            |t: &str| metric_by(t, "pavilion_evidence_proving_seconds_bucket", &[], "le");
        let (h0, h1) = (buckets_of(evidence[0]), buckets_of(evidence[1]));
        let mut proving_buckets: Vec<(f64, f64)> = h1
            .iter()
            .filter_map(|(le, n)| {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, n - h0.get(le).copied().unwrap_or(0.0)))
            })
            .collect();
        proving_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Moved {
            asked: event("evidence.asked"),
            verified: event("proofs.verified"),
            rejected: event("proofs.rejected"),
            disclosures_verified: event("disclosures.verified"),
            disclosures_rejected: event("disclosures.rejected"),
            timeouts: event("evidence.timeout"),
            batches,
            proved: provider("pavilion_evidence_proving_seconds_count"),
            proving_seconds: provider("pavilion_evidence_proving_seconds_sum"),
            proving_buckets,
            repeated: provider("pavilion_evidence_repeated_total"),
            expired: provider("pavilion_evidence_expired_total"),
        }
    }

    pub(crate) fn proving_mean_ms(&self) -> f64 {
        if self.proved > 0.0 {
            self.proving_seconds * 1e3 / self.proved
        } else {
            f64::NAN
        }
    }

    /// The histogram bucket (upper bound, ms) the `p` quantile of the proving times is in.
    pub(crate) fn proving_bucket_ms(&self, p: f64) -> f64 {
        let total = self.proving_buckets.last().map_or(0.0, |(_, n)| *n);
        self.proving_buckets
            .iter()
            .find(|(_, n)| total > 0.0 && *n >= p * total)
            .map_or(f64::NAN, |(le, _)| le * 1e3)
    }

    pub(crate) fn batch_count(&self) -> f64 {
        self.batches.iter().sum()
    }
}

/// One phase: requests of one kind, paced or all at once, until every one is decided.
pub(crate) struct Phase {
    /// Produce → decision visible, ms, sorted.
    pub(crate) latencies: Vec<f64>,
    /// Produce → decision record written (its CreateTime), ms, sorted.
    pub(crate) written: Vec<f64>,
    /// First produce → last decision visible.
    pub(crate) seconds: f64,
    pub(crate) outcomes: BTreeMap<String, usize>,
    pub(crate) moved: Moved,
    pub(crate) queue_max: i64,
    pub(crate) cpu_pipeline_s: f64,
    pub(crate) cpu_evidence_s: f64,
    /// Evidence claims: produce → ask written, → answer written, → decision written, →
    /// visible (ms, each sorted), over the requests all four were found for.
    legs: Option<[Vec<f64>; 4]>,
}

impl Phase {
    pub(crate) fn per_s(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    pub(crate) fn verified(&self) -> usize {
        self.outcomes.get("verified").copied().unwrap_or(0)
    }

    /// `verified 100` or `verified 98, unavailable: provider_timeout 2`.
    pub(crate) fn outcomes_line(&self) -> String {
        let items: Vec<String> = self
            .outcomes
            .iter()
            .map(|(o, n)| format!("{o} {n}"))
            .collect();
        items.join(", ")
    }

    /// Requests sent beyond one per claim: psi's retries.
    pub(crate) fn retries(&self) -> f64 {
        self.moved.asked - self.latencies.len() as f64
    }
}

/// When each request of a phase was sent, by id: the instant, and the wall clock (ms).
type SentAt = BTreeMap<String, (Instant, i64)>;

/// What a fail-over phase does to bank-eu's second evidence instance.
#[derive(Clone, Copy)]
pub(crate) enum Fault {
    /// SIGKILL, then the instance started again under its name (a static member of the
    /// group: it takes its partitions back at once, without a rebalance).
    Kill,
    /// SIGSTOP (hung: its partitions stay its own, nothing is answered), then SIGCONT.
    Stop,
}

impl Fault {
    pub(crate) const ALL: [(Fault, &'static str); 2] =
        [(Fault::Kill, "kill"), (Fault::Stop, "stop")];

    pub(crate) fn what(self) -> &'static str {
        match self {
            Fault::Kill => "one SIGKILLed, then started again",
            Fault::Stop => "one SIGSTOPped, then SIGCONTed",
        }
    }
}

/// A fail-over phase's figures ([`Pipeline::failover`]).
pub(crate) struct Failover {
    pub(crate) longest_gap_ms: f64,
    pub(crate) baseline_gap_ms: f64,
    pub(crate) slowest_ms: f64,
    pub(crate) baseline_p50_ms: f64,
    /// Claims decided otherwise than `verified`: every one asked holds, and the first
    /// instance was up throughout, so each is one another instance could have answered.
    pub(crate) not_verified: usize,
    pub(crate) retries: f64,
    pub(crate) timeouts: f64,
    pub(crate) outcomes: String,
}

/// bank-eu's second evidence instance: its command (to start it again after a SIGKILL), its
/// metrics address, and its process once started.
struct SecondInstance {
    cli: Cli,
    args: Vec<String>,
    metrics: String,
    process: Children,
}

impl SecondInstance {
    const LOG: &'static str = "evidence-bank-eu-b";

    fn new(cli: Cli) -> Result<SecondInstance> {
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let args = ["provider", "serve-evidence", "bank-eu", "--instance", "b"]
            .into_iter()
            .map(str::to_owned)
            .chain(["--listen".to_owned(), metrics.clone()])
            .chain(cli.as_principal(&Role::Provider("bank-eu".into())))
            .collect();
        Ok(SecondInstance {
            cli,
            args,
            metrics,
            process: Children(Vec::new()),
        })
    }

    /// Starts the instance unless it runs.
    fn start(&mut self) -> Result<()> {
        if self.process.0.is_empty() {
            self.cli.spawn(&mut self.process, Self::LOG, &self.args)?;
        }
        Ok(())
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let (_, child) = self.process.0.first().context("not running")?;
        let pid = child.id().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} {pid}: {status}");
        Ok(())
    }

    fn strike(&mut self, fault: Fault) -> Result<()> {
        match fault {
            Fault::Kill => {
                for (_, mut child) in self.process.0.drain(..) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Ok(())
            }
            Fault::Stop => self.signal("-STOP"),
        }
    }

    fn undo(&mut self, fault: Fault) -> Result<()> {
        match fault {
            Fault::Kill => self.start(),
            Fault::Stop => self.signal("-CONT"),
        }
    }
}

/// The pipeline and providers of the end-to-end measurements, and what sends to and reads
/// from them.
pub(crate) struct Pipeline {
    trip: &'static RoundTrip,
    /// Requests of each kind for the warm-up and for each run's latency, and their pace.
    warmup: usize,
    latency_requests: usize,
    rate: f64,
    run: String,
    dir: PathBuf,
    settings: KafkaSettings,
    registry: &'static Registry,
    producer: PlainProducer,
    ingest: String,
    asks_topic: String,
    answers_topic: String,
    credentials: TenantCredentials,
    /// bank-eu's OPRF tokens of the requests' subjects.
    tokens: Vec<Vec<u8>>,
    next_subject: usize,
    pipeline_metrics: String,
    evidence_metrics: String,
    pipeline_pid: u32,
    evidence_pid: u32,
    arrivals: mpsc::Receiver<(Vec<u8>, Instant, i64)>,
    decided: BTreeMap<String, Seen>,
    /// bank-eu's second evidence instance, started by the first fail-over phase.
    second: Option<SecondInstance>,
    stop_reader: std::sync::Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    children: Children,
}

/// bank-eu's members in the population file `populations` wrote (`email,claims,birthdate,…`):
/// with `adults_only`, those over 18 today (a day's margin).
fn members(csv: &Path, adults_only: bool) -> Result<Vec<String>> {
    use chrono::{Datelike as _, Days, Months};
    let cutoff = chrono::Utc::now().date_naive() - Months::new(18 * 12) - Days::new(1);
    let cutoff = i64::from(cutoff.year()) * 10_000
        + i64::from(cutoff.month()) * 100
        + i64::from(cutoff.day());
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split(',');
            let (email, claims, born) = (fields.next()?, fields.next()?, fields.next()?);
            let born: i64 = born.replace('-', "").parse().ok()?;
            let adult = claims.contains("age_over") && born <= cutoff;
            (adult || !adults_only).then(|| email.to_owned())
        })
        .collect())
}

impl Pipeline {
    /// Topics, keys, both providers (bank-eu's birth dates committed, its birth dates and
    /// countries signed with BBS, its evidence service with one worker), the tenant and its
    /// policy, the pipeline; each subject's token.
    fn start(trip: &'static RoundTrip, args: &EndToEndArgs, repo: &str) -> Result<Pipeline> {
        let subjects = args.subjects;
        let run = format!(
            "{}{}-{}",
            trip.run,
            std::process::id(),
            epoch_millis(SystemTime::now()) % 1_000_000
        );
        let RunFolder {
            dir,
            topology,
            cluster,
            cli,
        } = RunFolder::create(&run, &run_topology(repo, &run), &args.cluster)?;
        let tenant = trip.tenant.id;
        let mut children = Children(Vec::new());
        eprintln!(
            "  setting up in {}: topics, keys, 2 providers × {subjects} subjects (bank-eu's birth dates committed, its birth dates and countries signed with BBS), bank-eu's OPRF and evidence services, the tenant {tenant}, the pipeline",
            dir.display(),
        );
        cli.ok(&["topics", "create"])
            .context("is Kafka running? start it with `scripts/infra up`")?;
        cli.ok(&["keys", "generate"])?;
        populations(&dir, 7, subjects)?;
        let providers = start_providers(&cli, &mut children, "100000")?;
        let key_file = add_tenant(&cli, &trip.tenant)?;
        let credentials = TenantCredentials::from_key_file(&std::fs::read_to_string(key_file)?)?;
        let pipeline_metrics = format!("127.0.0.1:{}", free_port()?);
        // The request path: tenancy, and policy + psi + signing fused (as topology.yaml
        // groups them). No audit: it is off the path to the decision.
        cli.spawn(
            &mut children,
            "pipeline",
            &[
                "run",
                "--instance",
                "bench",
                "--state-dir",
                "state",
                "--metrics-addr",
                &pipeline_metrics,
                "--task",
                "tenancy",
                "--task",
                "policy",
            ],
        )?;
        let pid = |name: &str| {
            children
                .0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, c)| c.id())
                .with_context(|| format!("no process {name}"))
        };
        let (pipeline_pid, evidence_pid) = (pid("pipeline")?, pid("evidence-bank-eu")?);

        let settings = crate::cli::settings(&cluster, "bench")?;
        let decision_family = crate::cli::topic_for(&topology, Decision::FULL_NAME)?.name;
        let decisions = topology
            .family_topic(&decision_family, tenant)
            .context("decision topic")?
            .name;
        let asks_family = crate::cli::topic_for(&topology, EvidenceRequest::FULL_NAME)?.name;
        let asks_topic = topology
            .family_topic(&asks_family, "bank-eu")
            .context("bank-eu's evidence request topic")?
            .name;
        let answers_topic = crate::cli::topic_for(&topology, EvidenceResponse::FULL_NAME)?.name;
        let ingest = crate::cli::topic_for(&topology, VerificationRequest::FULL_NAME)?.name;
        // Each decision is timed when it becomes visible, whatever the sender is doing.
        let reader = TopicReader::new(&settings, &[&decisions])?;
        let (visible, arrivals) = mpsc::channel();
        let stop_reader = std::sync::Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = stop_reader.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match reader.poll(Duration::from_millis(50)) {
                        Ok(Some(r)) => {
                            let seen =
                                (r.value.unwrap_or_default(), Instant::now(), r.timestamp_ms);
                            if visible.send(seen).is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(_) => return,
                    }
                }
            })
        };

        let subjects_asked = members(&dir.join("bank-eu.csv"), trip.adults_only)?;
        anyhow::ensure!(
            !subjects_asked.is_empty(),
            "no member of bank-eu to ask about among {subjects} subjects; give more --subjects"
        );
        let inputs: Vec<Vec<u8>> = subjects_asked
            .iter()
            .map(|s| oprf_input(IdentifierKind::Email, s).map(|v| v.to_vec()))
            .collect::<Result<_, _>>()?;
        let endpoint = Registered::read(&cluster, &topology)?.endpoint("bank-eu")?;
        let client = OprfClient::with_tls(credentials.clone(), &providers.https.client(tenant)?)?;
        // The OPRF service learns of the tenant from its topic, and may not listen yet.
        let deadline = Instant::now() + Duration::from_secs(60);
        let tokens = loop {
            match client.tokens(&endpoint, &inputs) {
                Ok(tokens) => break tokens.into_iter().map(|t| t.to_vec()).collect(),
                Err(e) if Instant::now() > deadline => {
                    return Err(e).context("bank-eu's OPRF service (see oprf-bank-eu.log)")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        wait_ready(&pipeline_metrics, Duration::from_secs(120))?;
        let health = format!("http://{}/healthz", providers.evidence_metrics);
        while !ureq::get(&health)
            .timeout(Duration::from_secs(2))
            .call()
            .is_ok_and(|r| r.status() == 200)
        {
            if Instant::now() > deadline + Duration::from_secs(60) {
                bail!(
                    "bank-eu's evidence service did not become healthy (see evidence-bank-eu.log)"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Pipeline {
            trip,
            warmup: args.warmup,
            latency_requests: args.latency_requests,
            rate: args.rate,
            run,
            dir,
            producer: PlainProducer::new(&settings)?,
            settings,
            registry: Registry::builtin(),
            ingest,
            asks_topic,
            answers_topic,
            credentials,
            tokens,
            next_subject: 0,
            pipeline_metrics,
            evidence_metrics: providers.evidence_metrics,
            pipeline_pid,
            evidence_pid,
            arrivals,
            decided: BTreeMap::new(),
            second: Some(SecondInstance::new(cli)?),
            stop_reader,
            reader: Some(reader),
            children,
        })
    }

    fn claim(&self, kind: Kind) -> ClaimRequest {
        let (name, params) = match kind {
            Kind::Evidence => (self.trip.claim, self.trip.params),
            Kind::Membership => ("account_verified", &[][..]),
        };
        ClaimRequest {
            name: name.to_owned(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// `count` signed requests of `kind`, ids `<run>-<tag>-<n>`, on the next subjects in turn.
    fn make(&mut self, kind: Kind, tag: &str, count: usize) -> Result<Vec<(String, Vec<u8>)>> {
        (0..count)
            .map(|i| {
                let token = self.tokens[self.next_subject % self.tokens.len()].clone();
                self.next_subject += 1;
                let request = sign_request(
                    &self.credentials,
                    RequestDraft {
                        claims: vec![self.claim(kind)],
                        purpose: self.trip.purpose.into(),
                        subject_jurisdiction: self.trip.jurisdiction.into(),
                        consent_ref: None,
                        response_format: None,
                        request_id: Some(format!("{}-{tag}-{i:05}", self.run)),
                        nonce: None,
                    },
                    vec![SubjectToken {
                        provider_id: "bank-eu".into(),
                        token,
                    }],
                );
                Ok((request.request_id.clone(), self.registry.encode(&request)?))
            })
            .collect()
    }

    /// Waits until every one of `ids` is decided.
    fn await_decided<'i>(
        &mut self,
        ids: impl IntoIterator<Item = &'i String>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for id in ids {
            while !self.decided.contains_key(id) {
                match self.arrivals.recv_timeout(Duration::from_millis(50)) {
                    Ok((value, at, written_ms)) => {
                        let d: Decision = self.registry.decode(&value)?;
                        let outcome = match (&d.rejection, d.outcomes.first()) {
                            (Some(r), _) => format!("rejected: {:?}", r.reason),
                            (None, Some(o)) => {
                                let verdict = serde_json::to_value(o.outcome)?;
                                let verdict = verdict.as_str().unwrap_or("?").to_owned();
                                match &o.reason {
                                    Some(reason) => format!("{verdict}: {reason}"),
                                    None => verdict,
                                }
                            }
                            (None, None) => "no outcome".to_owned(),
                        };
                        self.decided.entry(d.request_id).or_insert(Seen {
                            at,
                            written_ms,
                            outcome,
                        });
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => bail!(
                        "{id} not decided within {timeout:?} (see {}/pipeline.log and evidence-bank-eu.log)",
                        self.dir.display()
                    ),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        bail!("the decision reader stopped")
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends `count` requests of `kind` (paced at `rate`, or all at once) and waits for their
    /// decisions; what they took, and what the metrics moved by meanwhile.
    pub(crate) fn phase(
        &mut self,
        kind: Kind,
        tag: &str,
        count: usize,
        rate: Option<f64>,
    ) -> Result<Phase> {
        Ok(self.phase_with(kind, tag, count, rate, |_| Ok(()))?.0)
    }

    /// [`Pipeline::phase`], calling `before_send(i)` before the `i`th request is sent; also
    /// when each request was sent.
    fn phase_with(
        &mut self,
        kind: Kind,
        tag: &str,
        count: usize,
        rate: Option<f64>,
        mut before_send: impl FnMut(usize) -> Result<()>,
    ) -> Result<(Phase, SentAt)> {
        let requests = self.make(kind, tag, count)?;
        let pipeline_before = scrape(&self.pipeline_metrics)?;
        let evidence_before = scrape(&self.evidence_metrics)?;
        let cpu_before = (
            process_cpu(self.pipeline_pid),
            process_cpu(self.evidence_pid),
        );
        let stop = AtomicBool::new(false);
        let queue_max = AtomicI64::new(0);
        let evidence = self.evidence_metrics.clone();
        let tenant = self.trip.tenant.id.as_bytes();
        let mut sent = SentAt::new();
        let t0 = Instant::now();
        std::thread::scope(|scope| -> Result<()> {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(text) = scrape(&evidence) {
                        let depth = metric(&text, "pavilion_evidence_queue_depth", &[]);
                        queue_max.fetch_max(depth as i64, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let result = (|| -> Result<()> {
                for (i, (id, bytes)) in requests.iter().enumerate() {
                    if let Some(rate) = rate {
                        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    before_send(i)?;
                    // No flush per request: a client's producer batches (linger), and the
                    // latency counts it.
                    self.producer.send(&self.ingest, tenant, bytes)?;
                    sent.insert(
                        id.clone(),
                        (Instant::now(), epoch_millis(SystemTime::now())),
                    );
                }
                self.producer.flush()?;
                let timeout = Duration::from_secs(120) + Duration::from_millis(20 * count as u64);
                self.await_decided(sent.keys(), timeout)
            })();
            stop.store(true, Ordering::Relaxed);
            result
        })?;
        let (pipeline_after, evidence_after) = (
            scrape(&self.pipeline_metrics)?,
            scrape(&self.evidence_metrics)?,
        );
        let moved = Moved::between(
            [&pipeline_before, &pipeline_after],
            [&evidence_before, &evidence_after],
        );
        let mut outcomes = BTreeMap::new();
        let (mut latencies, mut written) = (Vec::new(), Vec::new());
        let mut last = t0;
        for (id, (at, at_ms)) in &sent {
            let seen = &self.decided[id];
            last = last.max(seen.at);
            latencies.push(ms(seen.at.duration_since(*at)));
            written.push((seen.written_ms - at_ms) as f64);
            *outcomes.entry(seen.outcome.clone()).or_insert(0) += 1;
        }
        latencies.sort_by(f64::total_cmp);
        written.sort_by(f64::total_cmp);
        let legs = match kind {
            Kind::Evidence => Some(self.legs(&sent)?),
            Kind::Membership => None,
        };
        let phase = Phase {
            latencies,
            written,
            seconds: last.duration_since(t0).as_secs_f64(),
            outcomes,
            moved,
            queue_max: queue_max.load(Ordering::Relaxed),
            cpu_pipeline_s: process_cpu(self.pipeline_pid) - cpu_before.0,
            cpu_evidence_s: process_cpu(self.evidence_pid) - cpu_before.1,
            legs,
        };
        Ok((phase, sent))
    }

    /// Paced evidence claims until bank-eu's second evidence instance (`--instance b`, in
    /// the same consumer group, so the request topic's partitions are shared between the two)
    /// has answered claims of its own: it has joined the group.
    fn await_answering(&mut self, second: &SecondInstance) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut attempt = 0;
        loop {
            self.phase(
                Kind::Evidence,
                &format!("second{attempt}"),
                10,
                Some(self.rate),
            )?;
            let proved = scrape(&second.metrics)
                .map(|t| metric(&t, "pavilion_evidence_proving_seconds_count", &[]))
                .unwrap_or(0.0);
            if proved > 0.0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "bank-eu's second evidence instance answered nothing within 90 s (see {}/{}.log)",
                    self.dir.display(),
                    SecondInstance::LOG
                );
            }
            attempt += 1;
        }
    }

    /// A fail-over phase: `count` evidence claims paced at `--rate` while bank-eu runs two
    /// evidence instances; `fault` strikes the second a quarter of the way through and is
    /// undone three fifths of the way. The figures: the longest gap between consecutive
    /// decisions (over the phase, and before the fault as the baseline), the slowest claim
    /// sent while the fault lasted against the p50 of those before, and the outcomes.
    pub(crate) fn failover(&mut self, fault: Fault, tag: &str, count: usize) -> Result<Failover> {
        let mut second = self
            .second
            .take()
            .context("the second instance is in use")?;
        let ready = second.start().and_then(|()| self.await_answering(&second));
        if let Err(e) = ready {
            self.second = Some(second);
            return Err(e);
        }
        let (strike, undo) = (count / 4, count * 3 / 5);
        let mut fault_window = (Instant::now(), Instant::now());
        let phase = self.phase_with(Kind::Evidence, tag, count, Some(self.rate), |i| {
            if i == strike {
                fault_window.0 = Instant::now();
                second.strike(fault)?;
            } else if i == undo {
                fault_window.1 = Instant::now();
                second.undo(fault)?;
            }
            Ok(())
        });
        if phase.is_err() {
            // A stopped instance must not stay stopped; a killed one is started again.
            let _ = second.undo(fault);
        }
        self.second = Some(second);
        let (phase, sent) = phase?;
        let (strike_at, undo_at) = fault_window;
        let mut visible: Vec<Instant> = sent.keys().map(|id| self.decided[id].at).collect();
        visible.sort();
        // The longest gap between decisions visible by `upto` (all of them with `None`).
        let gaps = |upto: Option<Instant>| {
            visible
                .windows(2)
                .filter(|w| upto.is_none_or(|upto| w[1] <= upto))
                .map(|w| ms(w[1].duration_since(w[0])))
                .fold(0.0, f64::max)
        };
        let latency = |id: &String, at: &Instant| ms(self.decided[id].at.duration_since(*at));
        let mut before: Vec<f64> = sent
            .iter()
            .filter(|(_, (at, _))| *at < strike_at)
            .map(|(id, (at, _))| latency(id, at))
            .collect();
        before.sort_by(f64::total_cmp);
        let slowest = sent
            .iter()
            .filter(|(_, (at, _))| *at >= strike_at && *at < undo_at)
            .map(|(id, (at, _))| latency(id, at))
            .fold(0.0, f64::max);
        Ok(Failover {
            longest_gap_ms: gaps(None),
            baseline_gap_ms: gaps(Some(strike_at)),
            slowest_ms: slowest,
            baseline_p50_ms: percentile(&before, 0.5),
            not_verified: phase.latencies.len() - phase.verified(),
            retries: phase.retries(),
            timeouts: phase.moved.timeouts,
            outcomes: phase.outcomes_line(),
        })
    }

    /// Where each evidence claim's time went, from the records' timestamps (same host):
    /// produce → psi wrote the evidence request → the provider wrote its answer → the
    /// decision was written → it was visible; each leg's times (ms), sorted.
    fn legs(&self, sent: &SentAt) -> Result<[Vec<f64>; 4]> {
        let first_written = |topic: &str| -> Result<BTreeMap<Vec<u8>, i64>> {
            let mut first: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
            for r in
                TopicReader::new(&self.settings, &[topic])?.read_to_end(Duration::from_secs(60))?
            {
                let at = first.entry(r.key).or_insert(r.timestamp_ms);
                *at = (*at).min(r.timestamp_ms);
            }
            Ok(first)
        };
        let (asks, answers) = (
            first_written(&self.asks_topic)?,
            first_written(&self.answers_topic)?,
        );
        let mut legs: [Vec<f64>; 4] = Default::default();
        for (id, (at, at_ms)) in sent {
            let seen = &self.decided[id];
            let key =
                hex::encode(field_to_bytes(nonce_from_request_id(id.as_bytes()))).into_bytes();
            let (Some(ask), Some(answer)) = (asks.get(&key), answers.get(&key)) else {
                continue;
            };
            let visible_ms = *at_ms as f64 + ms(seen.at.duration_since(*at));
            let times = [
                *at_ms as f64,
                *ask as f64,
                *answer as f64,
                seen.written_ms as f64,
                visible_ms,
            ];
            for (leg, pair) in legs.iter_mut().zip(times.windows(2)) {
                leg.push(pair[1] - pair[0]);
            }
        }
        Ok(legs.map(|mut leg| {
            leg.sort_by(f64::total_cmp);
            leg
        }))
    }

    /// The cores the pipeline and the evidence service use with nothing to do, over
    /// `seconds` (what a burst's CPU per claim is counted above).
    pub(crate) fn idle_cores(&self, seconds: f64) -> (f64, f64) {
        let before = (
            process_cpu(self.pipeline_pid),
            process_cpu(self.evidence_pid),
        );
        std::thread::sleep(Duration::from_secs_f64(seconds));
        (
            (process_cpu(self.pipeline_pid) - before.0) / seconds,
            (process_cpu(self.evidence_pid) - before.1) / seconds,
        )
    }

    /// Evidence claims one at a time until one is verified (the evidence service has joined
    /// its group and the path works), then `--warmup` requests of each kind at `--rate`, not
    /// counted.
    fn warm_up(&mut self) -> Result<()> {
        let (count, rate) = (self.warmup, self.rate);
        eprintln!(
            "  warm-up: a {} claim verified end to end, then {count} requests of each kind at {rate}/s",
            self.trip.claim
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        for attempt in 0.. {
            let p = self.phase(Kind::Evidence, &format!("first{attempt}"), 1, None)?;
            if p.verified() == 1 {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "no {} claim verified within 2 minutes (last: {}); see {}/evidence-bank-eu.log and pipeline.log",
                    self.trip.claim,
                    p.outcomes_line(),
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        self.phase(Kind::Membership, "warm-m", count, Some(rate))?;
        self.phase(Kind::Evidence, "warm-e", count, Some(rate))?;
        Ok(())
    }

    /// Run `run`'s (of `runs`) latency phases: `--latency-requests` membership claims, then
    /// as many evidence claims, each paced at `--rate`; (membership, evidence).
    fn latency(&mut self, run: u32, runs: u32) -> Result<[Phase; 2]> {
        let (count, rate) = (self.latency_requests, self.rate);
        eprintln!(
            "  [run {run}/{runs}] latency: {count} account_verified (membership) claims, then {count} {} claims, at {rate}/s",
            self.trip.claim
        );
        let m = self.phase(Kind::Membership, &format!("r{run}-m"), count, Some(rate))?;
        let e = self.phase(Kind::Evidence, &format!("r{run}-e"), count, Some(rate))?;
        Ok([m, e])
    }

    /// Stops the processes and deletes the run's topics, and its folder unless `failed`:
    /// then the folder stays for its logs.
    fn stop(mut self, failed: bool) {
        self.stop_reader.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.second = None;
        drop(std::mem::replace(&mut self.children, Children(Vec::new())));
        if let Ok(runtime) = tokio::runtime::Runtime::new() {
            let _ = runtime.block_on(pavilion_kafka::delete_topics_with_prefix(
                &self.settings,
                &format!("{}.", self.run),
            ));
        }
        if failed {
            eprintln!("  the run's logs are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The end-to-end measurements of a benchmark: starts the pipeline for `trip`, warms it up,
/// and in each of `runs` runs measures the latency phases ([`Pipeline::latency`]) and hands
/// them to `each` with the pipeline (for phases of its own); stops the pipeline, and returns
/// what `each` returned (the runs' outcomes).
pub(crate) fn each_run(
    trip: &'static RoundTrip,
    args: &EndToEndArgs,
    repo: &str,
    runs: u32,
    mut each: impl FnMut(&mut Pipeline, u32, [Phase; 2]) -> Result<Value>,
) -> Result<Vec<Value>> {
    let mut p = Pipeline::start(trip, args, repo)?;
    let outcomes = p.warm_up().and_then(|()| {
        (1..=runs)
            .map(|run| {
                let phases = p.latency(run, runs)?;
                each(&mut p, run, phases)
            })
            .collect()
    });
    p.stop(outcomes.is_err());
    outcomes
}

/// One run's latency figures, under `latency.<label>.` for the evidence claim and
/// `latency.membership.` for the baseline: p50/p99 produce → visible and p50 produce →
/// written of both, the ratios, the evidence claim's legs (p50/p99), the provider's answering
/// time (its histogram's mean) and busy share, the deepest evidence queue, psi's retries and
/// timeouts.
pub(crate) fn record_latency(figures: &mut Runs, label: &str, e: &Phase, m: &Phase) {
    let p = percentile;
    for (kind, phase) in [(label, e), ("membership", m)] {
        figures.add(format!("latency.{kind}.p50_ms"), p(&phase.latencies, 0.5));
        figures.add(format!("latency.{kind}.p99_ms"), p(&phase.latencies, 0.99));
        figures.add(
            format!("latency.{kind}.written_p50_ms"),
            p(&phase.written, 0.5),
        );
    }
    let legs = [
        "produce_to_ask_written",
        "ask_to_answer_written",
        "answer_to_decision_written",
        "decision_written_to_visible",
    ];
    if let Some(times) = &e.legs {
        for (leg, times) in legs.into_iter().zip(times) {
            for (q, at) in [("p50", 0.5), ("p99", 0.99)] {
                figures.add(format!("latency.{label}.legs_{q}_ms.{leg}"), p(times, at));
            }
        }
    }
    for (q, at) in [("p50", 0.5), ("p99", 0.99)] {
        figures.add(
            format!("latency.ratio_{label}_to_membership.{q}"),
            p(&e.latencies, at) / p(&m.latencies, at),
        );
    }
    let named = [
        ("proving_mean_ms", e.moved.proving_mean_ms()),
        ("provider_busy_share", e.moved.proving_seconds / e.seconds),
        ("queue_max", e.queue_max as f64),
        ("retries", e.retries()),
        ("timeouts", e.moved.timeouts),
    ];
    for (name, value) in named {
        figures.add(format!("latency.{label}.{name}"), value);
    }
}

/// The latency part of a summary ([`Runs::summary`]), for the figures [`record_latency`]
/// adds: `{k}` is the label, `{claim}` what the evidence claim is, `{rate}` the pace.
#[rustfmt::skip]
pub(crate) const LATENCY_SUMMARY: &[(&str, &str, usize)] = &[
    ("latency, produce → decision visible read_committed, at {rate}/s (ms):", "", 0),
    ("{claim}, p50", "latency.{k}.p50_ms", 1),
    ("{claim}, p99", "latency.{k}.p99_ms", 1),
    ("account_verified by membership (baseline), p50", "latency.membership.p50_ms", 1),
    ("account_verified by membership (baseline), p99", "latency.membership.p99_ms", 1),
    ("{k} ÷ membership, p50", "latency.ratio_{k}_to_membership.p50", 2),
    ("{k} ÷ membership, p99", "latency.ratio_{k}_to_membership.p99", 2),
    ("where a {k} claim's time goes (ms, from the records' timestamps):", "", 0),
    ("produce → psi wrote the evidence request", "latency.{k}.legs_{q}_ms.produce_to_ask_written", 1),
    ("→ the provider wrote its answer", "latency.{k}.legs_{q}_ms.ask_to_answer_written", 1),
    ("→ the decision was written", "latency.{k}.legs_{q}_ms.answer_to_decision_written", 1),
    ("→ visible (commit, fetch)", "latency.{k}.legs_{q}_ms.decision_written_to_visible", 1),
    ("answering at the provider (its proving histogram, mean)", "latency.{k}.proving_mean_ms", 1),
    ("membership: produce → decision written, p50", "latency.membership.written_p50_ms", 1),
    ("{k}: retries sent by psi", "latency.{k}.retries", 0),
    ("{k}: provider busy answering, share of the phase", "latency.{k}.provider_busy_share", 2),
];
