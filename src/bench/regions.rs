//! `pavilion bench regions`: what running in two regions costs and how it fails, on one
//! machine (issue 19). The regions are `scripts/infra regions up eu,us` — one secured
//! single-node KRaft cluster each and MirrorMaker 2 (dedicated mode, exactly-once source)
//! copying the control topics each way as `<source>.<topic>` — in a run dir and on ports of
//! the benchmark's own, so the tests' and a developer's regions are never touched. Each run
//! measures, each against a baseline of the same run:
//!
//! 1. replication lag of control records (real `pavilion.Tenant` records on
//!    `pavilion.tenants`, paced, both directions at once): produce → visible read_committed
//!    in the other region's copy, against produce → visible on the cluster they were written
//!    to (the same records, read there);
//! 2. provider endpoint fail-over (`pavilion_client`) under paced token requests, with two
//!    evaluation services of one key as child processes (this binary started again with
//!    [`SERVE_ENV`]): one SIGKILLed then restarted, one SIGSTOPped then SIGCONTed, against
//!    the same load without a fault;
//! 3. MirrorMaker 2's RSS and CPU share, idle and while replicating (1), against one broker
//!    over the same intervals;
//! 4. the loss of region us: its broker SIGKILLed, a producer aimed at it with a short
//!    delivery deadline, `regions up eu,us` again; the time to the first error, until a record
//!    is accepted again and until it crossed to eu, and the eu producer's longest gap
//!    meanwhile against its gap before.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use ed25519_dalek::SigningKey;
use pavilion_client::{
    ClientError, Endpoint, FailoverConfig, OprfClient, PoolStats, ProviderEndpoint, Residency,
    TenantCredentials,
};
use pavilion_kafka::{KafkaSettings, PlainProducer, TopicReader};
use pavilion_provider::oprf::ProviderKey;
use pavilion_provider::protocol::KEY_PATH;
use pavilion_provider::service::{OprfService, ServiceLimits, TenantDirectory};
use pavilion_runtime::clock::epoch_millis;
use pavilion_schemas::{
    ControlVersion, Event, Registry, RequestSigningKey, Tenant, TenantConfig, TenantState,
};
use serde_json::json;

use super::runs::{loadavg, ms, Runs};
use super::write_result;
use crate::cli::parse_duration;
use crate::demo::percentile;

/// Options of the regions benchmark. The defaults take about four minutes on a 2-core
/// machine, starting the regions included.
#[derive(Args)]
pub struct RegionsBenchArgs {
    /// Runs of every measurement; each figure is reported as the median, min and max of them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// (1) Control records produced per direction and run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(10..))]
    pub records: u32,
    /// (1) Their pace: records a second in each direction.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// (2) Token requests a second in each fail-over case.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub failover_rate: u32,
    /// (2) Length of each fail-over case; the fault starts at a quarter of it and ends at
    /// three fifths.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub failover_for: Duration,
    /// (3) How long MirrorMaker 2 and the brokers are watched idle before (1).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub idle: Duration,
    /// (4) How long region us stays down before `regions up` starts it again.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub outage: Duration,
    /// (4) Delivery deadline of the producer aimed at us (librdkafka `message.timeout.ms`):
    /// how long a record may wait for a broker before the producer reports it failed.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub delivery_deadline: Duration,
    /// Leave the regions running at the end (by default the benchmark stops what it
    /// started; regions that were already running are left running either way).
    #[arg(long)]
    pub keep_running: bool,
    /// The regions' run dir (`scripts/infra`'s PAVILION_RUN_DIR; the regions live under
    /// its `regions/`). Default: `$PAVILION_CACHE/run-bench` (`~/.cache/pavilion/run-bench`), apart from
    /// the tests' regions.
    #[arg(long, env = "PAVILION_RUN_DIR", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Client port of region eu (us: +1000; controllers: +1), PAVILION_REGION_BASE_PORT of
    /// `scripts/infra` (whose own default, 29092, the tests use).
    #[arg(long, env = "PAVILION_REGION_BASE_PORT", default_value_t = 39092)]
    pub base_port: u16,
    /// The infrastructure script (run from the repository).
    #[arg(long, default_value = "scripts/infra")]
    pub infra: PathBuf,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/regions.json")]
    pub out: PathBuf,
}

/// Set in a child process to the address it serves the OPRF evaluation service on.
const SERVE_ENV: &str = "PAVILION_BENCH_OPRF_SERVE";
const TENANTS: &str = "pavilion.tenants";
/// Records a second of the eu producer during the loss of region us.
const LOSS_EU_RATE: u32 = 20;
/// The producer aimed at us tries a record this often (after the last one was answered).
const LOSS_US_EVERY: Duration = Duration::from_millis(100);
/// Before the kill, both producers run this long: the eu producer's baseline gap.
const LOSS_STEADY: Duration = Duration::from_secs(2);
/// Longest wait for a record to cross between regions (MirrorMaker 2 finds a new topic
/// within `refresh.topics.interval.seconds`, 5 s, then starts its tasks).
const CROSSING_BOUND: Duration = Duration::from_secs(120);

/// How often the fail-over client probes every endpoint.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// The fail-over client's settings: those of connectors/client/tests/failover.rs.
fn failover_config() -> FailoverConfig {
    FailoverConfig {
        attempt_timeout: Duration::from_millis(500),
        hedge_after: Some(Duration::from_millis(150)),
        breaker_threshold: 3,
        // Longer than a case: only a probe brings the faulted endpoint back.
        breaker_cooldown: Duration::from_secs(60),
        probe_timeout: Duration::from_millis(200),
        ..FailoverConfig::default()
    }
}

pub fn regions(a: RegionsBenchArgs) -> Result<ExitCode> {
    if let Ok(listen) = std::env::var(SERVE_ENV) {
        return serve_oprf(&listen);
    }
    let began = Instant::now();
    let load_at_start = loadavg();
    let infra = Infra::new(&a)?;
    let topology_text = std::fs::read_to_string("topology.yaml")
        .map_err(|e| anyhow::anyhow!("topology.yaml (run from the repository): {e}"))?;
    let topology = crate::cli::parse(&topology_text, Path::new("topology.yaml"))?;
    let tenants = crate::cli::topic_for(&topology, Tenant::FULL_NAME)?;
    if tenants.name != TENANTS {
        bail!(
            "topology.yaml names the tenants topic {}, this benchmark knows {TENANTS}",
            tenants.name
        );
    }

    let already_up = infra.all_running();
    eprintln!(
        "regions eu,us in {} (ports {} and {}): {}",
        infra.regions_dir().display(),
        a.base_port,
        u32::from(a.base_port) + 1000,
        if already_up {
            "already running, used as they are"
        } else {
            "starting them (scripts/infra regions up eu,us)"
        }
    );
    let up_started = Instant::now();
    let _down = StopAtEnd {
        infra: &infra,
        stop: !already_up && !a.keep_running,
    };
    infra.run(&["regions", "up", "eu,us"])?;
    let up_took = up_started.elapsed();
    let (eu, us) = (infra.region("eu")?, infra.region("us")?);
    let runtime = tokio::runtime::Runtime::new()?;
    for region in [&eu, &us] {
        runtime
            .block_on(pavilion_kafka::ensure_topics(&region.settings, &[&tenants]))
            .with_context(|| format!("creating {TENANTS} in {}", region.name))?;
    }
    let tag = format!("bench-regions-{}", epoch_millis(SystemTime::now()));
    let mut f = Runs::default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let tick = clock_ticks_per_second();
    for run in 1..=a.runs {
        let run_tag = format!("{tag}-r{run}");
        eprintln!(
            "[{:>3.0} s] run {run}/{}: both directions cross",
            began.elapsed().as_secs_f64(),
            a.runs
        );
        // The first run finds the mirrored topics missing until MirrorMaker 2 sees ours; a
        // run after a region loss finds out whether replication came back.
        let warm = [(&eu, &us), (&us, &eu)]
            .map(|(from, to)| await_crossing(from, to, &run_tag, CROSSING_BOUND));
        for (name, w) in ["eu_us", "us_eu"].iter().zip(warm) {
            f.add(format!("warmup.{name}_ms"), ms(w?));
        }
        let watched = infra.watched()?;
        eprintln!(
            "[{:>3.0} s] run {run}/{}: (3) MirrorMaker 2 and the brokers idle for {:?}",
            began.elapsed().as_secs_f64(),
            a.runs,
            a.idle
        );
        let ((), idle) = watch(&watched, tick, cores, || {
            std::thread::sleep(a.idle);
            Ok(())
        })?;
        record_usage(&mut f, "idle", &idle);
        eprintln!(
            "[{:>3.0} s] run {run}/{}: (1) {} control records each way at {}/s",
            began.elapsed().as_secs_f64(),
            a.runs,
            a.records,
            a.rate
        );
        let (lag, busy) = watch(&watched, tick, cores, || {
            replication_lag(&eu, &us, &run_tag, &a)
        })?;
        record_usage(&mut f, "replicating", &busy);
        record_lag(&mut f, &lag, a.records);
        eprintln!(
            "[{:>3.0} s] run {run}/{}: (2) fail-over at {} token requests/s, {:?} a case",
            began.elapsed().as_secs_f64(),
            a.runs,
            a.failover_rate,
            a.failover_for
        );
        failover(&a, &mut f)?;
        eprintln!(
            "[{:>3.0} s] run {run}/{}: (4) region us lost for {:?}, then started again",
            began.elapsed().as_secs_f64(),
            a.runs,
            a.outage
        );
        region_loss(&infra, &eu, &us, &run_tag, &a, &mut f)?;
    }

    print_summary(&f, &a, cores);
    println!(
        "took {:.0} s (starting the regions {:.0} s)",
        began.elapsed().as_secs_f64(),
        up_took.as_secs_f64()
    );
    let c = failover_config();
    write_result(
        &a.out,
        &json!({
            "benchmark": "regions",
            "runs": a.runs,
            "machine": { "cores": cores, "loadavg_at_start": load_at_start, "loadavg_at_end": loadavg() },
            "settings": {
                "regions": ["eu", "us"],
                "ports": { "eu": a.base_port, "us": u32::from(a.base_port) + 1000 },
                "regions_already_running": already_up,
                "records_per_direction": a.records,
                "records_per_second": a.rate,
                "failover": {
                    "requests_per_second": a.failover_rate,
                    "case_ms": ms(a.failover_for),
                    "fault_at_ms": ms(fault_at(a.failover_for)),
                    "back_at_ms": ms(back_at(a.failover_for)),
                    "attempt_timeout_ms": ms(c.attempt_timeout),
                    "hedge_after_ms": c.hedge_after.map(ms),
                    "breaker_threshold": c.breaker_threshold,
                    "breaker_cooldown_ms": ms(c.breaker_cooldown),
                    "probe_every_ms": ms(PROBE_EVERY),
                    "probe_timeout_ms": ms(c.probe_timeout),
                },
                "idle_ms": ms(a.idle),
                "outage_ms": ms(a.outage),
                "delivery_deadline_ms": ms(a.delivery_deadline),
                "loss_eu_records_per_second": LOSS_EU_RATE,
                "loss_us_attempt_every_ms": ms(LOSS_US_EVERY),
                "loss_us_reconnect_backoff_max_ms": 1000,
            },
            "took_s": began.elapsed().as_secs_f64(),
            "regions_up_s": up_took.as_secs_f64(),
            "figures": f.json(),
            "note": NOTE,
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}

const NOTE: &str = "each figure: median, min and max over the runs, and every run's value. \
Regions: scripts/infra regions up eu,us, one secured (SASL_SSL, SCRAM) single-node KRaft Kafka 4.1.1 \
per region and MirrorMaker 2 in dedicated mode with exactly-once source support, copying \
pavilion.tenants, pavilion.policies and pavilion.providers each way as <source>.<topic>; all on \
one machine, over loopback. lag: real pavilion.Tenant records (stamped, Avro single-object \
encoding), one tenant id each, paced, both directions at once; produce (before the send) → the \
record polled read_committed; mirrored = <source>.pavilion.tenants in the other region, local = \
pavilion.tenants in the region written to (the baseline, same records); to_local = mirrored ÷ \
local at the same quantile. failover: pavilion_client with the settings shown, two evaluation \
services of one key (child processes), each request on its own thread at its scheduled time; \
endpoint 1 faulted from fault_at to back_at; longest_gap = longest time between two consecutive \
answers; failed = errors or wrong tokens; unanswered = failed because no endpoint answered \
(the other endpoint was up throughout); after_back = answers of endpoint 1 after it was back \
(the probes bring it back). usage: CPU = utime+stime from /proc/<pid>/stat over the interval ÷ \
wall time ÷ cores (share of the machine), RSS = the largest VmRSS sampled every 200 ms; idle = \
no client traffic; replicating = during lag. loss: the us broker SIGKILLed; first_error = kill → \
the first record the us producer reported failed (its delivery deadline shown); broker_start = \
`regions up` issued → the broker's new process; accepted = → the first record the us producer \
had acknowledged after that; crossed = accepted → that record visible in eu as \
us.pavilion.tenants; eu_gap = the eu producer's longest gap between acknowledgements from the \
kill to acceptance in us (eu_gap_down: kill → `regions up`; eu_gap_restarting: `regions up` → \
acceptance, while the us broker starts on the same cores), eu_gap_before = before the kill. \
The us producer: idempotent, message.timeout.ms = the delivery deadline, \
reconnect.backoff.max.ms 1000 (librdkafka's default, 10 s, would measure its back-off), one \
record at a time. scripts/infra holds a lock shared with every other scripts/infra call on the \
machine, so broker_start includes any wait for it.";

// ---- the regions -------------------------------------------------------------------------

/// `scripts/infra` with the benchmark's run dir and ports.
struct Infra {
    script: PathBuf,
    run_dir: PathBuf,
    base_port: u16,
    bin: PathBuf,
}

/// A region's admin client settings.
struct Region {
    name: &'static str,
    settings: KafkaSettings,
}

impl Infra {
    fn new(a: &RegionsBenchArgs) -> Result<Infra> {
        let run_dir = match &a.run_dir {
            Some(dir) => dir.clone(),
            None => {
                let cache = std::env::var_os("PAVILION_CACHE")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/pavilion"))
                    })
                    .context("neither PAVILION_CACHE nor HOME is set: give --run-dir")?;
                cache.join("run-bench")
            }
        };
        let run_dir = std::path::absolute(&run_dir)?;
        if !a.infra.is_file() {
            bail!(
                "{} not found: run from the repository, or give --infra",
                a.infra.display()
            );
        }
        Ok(Infra {
            script: a.infra.clone(),
            run_dir,
            base_port: a.base_port,
            bin: std::env::current_exe()?,
        })
    }

    fn regions_dir(&self) -> PathBuf {
        self.run_dir.join("regions")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.script);
        c.args(args)
            .env("PAVILION_RUN_DIR", &self.run_dir)
            .env("PAVILION_REGION_BASE_PORT", self.base_port.to_string())
            .env("PAVILION_BIN", &self.bin)
            .env_remove("PAVILION_TOPOLOGY")
            .stdin(Stdio::null());
        c
    }

    /// Runs the script; its output, or an error with its end.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            bail!(
                "{} {} failed ({}):\n{}{}",
                self.script.display(),
                args.join(" "),
                out.status,
                tail(&stdout, 20),
                tail(&stderr, 20)
            );
        }
        Ok(stdout)
    }

    fn region(&self, name: &'static str) -> Result<Region> {
        let env = self.run(&["regions", "env", name])?;
        let var = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {key}=")))
                .map(str::to_owned)
                .with_context(|| format!("no {key} in `regions env {name}`: {env}"))
        };
        let mut settings = KafkaSettings::new(
            var("PAVILION_BOOTSTRAP")?,
            "bench-regions",
            std::env::temp_dir(),
        );
        settings.overrides =
            pavilion_kafka::read_client_properties(var("PAVILION_KAFKA_CONFIG")?.as_ref())?;
        Ok(Region { name, settings })
    }

    /// A pid file's process, if it runs and its command line names `needle` (what the
    /// script checks too: a pid reused by another process is not ours).
    fn pid(&self, file: &Path, needle: &Path) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let needle = needle.to_string_lossy();
        String::from_utf8_lossy(&cmdline)
            .contains(needle.as_ref())
            .then_some(pid)
    }

    fn broker_pid(&self, region: &str) -> Option<u32> {
        let dir = self.regions_dir().join(region);
        self.pid(&dir.join("kafka.pid"), &dir.join("kafka-server.properties"))
    }

    fn mm2_pid(&self) -> Option<u32> {
        let dir = self.regions_dir();
        self.pid(&dir.join("mm2.pid"), &dir.join("mm2.properties"))
    }

    fn all_running(&self) -> bool {
        self.mm2_pid().is_some() && ["eu", "us"].iter().all(|r| self.broker_pid(r).is_some())
    }

    /// The processes whose cost (3) reports.
    fn watched(&self) -> Result<Vec<(&'static str, u32)>> {
        let mm2 = self
            .mm2_pid()
            .context("MirrorMaker 2 is not running (see its log in the regions dir)")?;
        let eu = self
            .broker_pid("eu")
            .context("the eu broker is not running")?;
        let us = self
            .broker_pid("us")
            .context("the us broker is not running")?;
        Ok(vec![("mm2", mm2), ("eu_broker", eu), ("us_broker", us)])
    }
}

/// Stops the regions when the benchmark ends, if it started them.
struct StopAtEnd<'a> {
    infra: &'a Infra,
    stop: bool,
}

impl Drop for StopAtEnd<'_> {
    fn drop(&mut self) {
        if self.stop {
            eprintln!("stopping the regions (scripts/infra regions down)");
            if let Err(e) = self.infra.run(&["regions", "down"]) {
                eprintln!("{e:#}");
            }
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n") + "\n"
}

/// A control record of the run: a tenant of its own, stamped as written in `region`.
fn tenant_record(id: &str, region: &str) -> Result<Vec<u8>> {
    let now = epoch_millis(SystemTime::now());
    let tenant = Tenant {
        tenant_id: id.into(),
        display_name: id.into(),
        state: TenantState::Active,
        signing_keys: Vec::new(),
        config: TenantConfig {
            rate_limit_per_second: 10.0,
            burst: 10,
            daily_quota: None,
            allowed_regions: vec![region.into()],
            response_topic: String::new(),
            privacy_budget_micro: None,
        },
        updated_at: now,
        revision: 1,
        stamp: Some(ControlVersion::next(region, region, 1, now, None)),
    };
    Ok(Registry::builtin().encode(&tenant)?)
}

/// Writes a record in `from` and waits until it is visible in `to`'s copy.
fn await_crossing(from: &Region, to: &Region, tag: &str, bound: Duration) -> Result<Duration> {
    let started = Instant::now();
    let key = format!("{tag}-warmup-{}", from.name);
    let producer = PlainProducer::new(&from.settings)?;
    producer.send(TENANTS, key.as_bytes(), &tenant_record(&key, from.name)?)?;
    producer.flush()?;
    let mirror = format!("{}.{TENANTS}", from.name);
    let reader = loop {
        match TopicReader::new(&to.settings, &[&mirror]) {
            Ok(reader) => break reader,
            Err(e) if started.elapsed() > bound => {
                return Err(e).context(format!(
                    "{mirror} never appeared in {} (is MirrorMaker 2 running?)",
                    to.name
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    while started.elapsed() < bound {
        if let Some(r) = reader.poll(Duration::from_millis(100))? {
            if r.key == key.as_bytes() {
                return Ok(started.elapsed());
            }
        }
    }
    bail!(
        "a record written in {} did not reach {mirror} in {} within {bound:?}: see MirrorMaker 2's log",
        from.name,
        to.name
    )
}

// ---- (1) replication lag -----------------------------------------------------------------

/// Lags of one run, ms, sorted, by figure (`eu_us.mirrored`, `eu_us.local`, …): a record
/// that never arrived has none.
struct Lags {
    by: BTreeMap<String, Vec<f64>>,
}

/// What one reader saw: its figure, and each key of the run with when it arrived.
type Arrivals = (&'static str, Vec<(String, Instant)>);

/// Both directions at once: each region's producer writes `records` tenants, paced; four
/// readers (each region's own topic and its copy of the other's) time every arrival.
fn replication_lag(eu: &Region, us: &Region, tag: &str, a: &RegionsBenchArgs) -> Result<Lags> {
    let sent: Mutex<HashMap<String, Instant>> = Mutex::new(HashMap::new());
    let mirrored = |r: &Region| format!("{}.{TENANTS}", r.name);
    // (figure, reader, key prefix)
    let readers = [
        (
            "eu_us.mirrored",
            TopicReader::at_end(&us.settings, &[&mirrored(eu)])?,
            format!("{tag}-eu-"),
        ),
        (
            "eu_us.local",
            TopicReader::at_end(&eu.settings, &[TENANTS])?,
            format!("{tag}-eu-"),
        ),
        (
            "us_eu.mirrored",
            TopicReader::at_end(&eu.settings, &[&mirrored(us)])?,
            format!("{tag}-us-"),
        ),
        (
            "us_eu.local",
            TopicReader::at_end(&us.settings, &[TENANTS])?,
            format!("{tag}-us-"),
        ),
    ];
    let start = Instant::now() + Duration::from_millis(100);
    let deadline = start
        + Duration::from_secs_f64(f64::from(a.records) / f64::from(a.rate))
        + Duration::from_secs(60);
    let arrivals = std::thread::scope(|s| -> Result<Vec<Arrivals>> {
        let sent = &sent;
        let producers: Vec<_> = [eu, us]
            .into_iter()
            .map(|region| {
                s.spawn(move || -> Result<()> {
                    let producer = PlainProducer::new(&region.settings)?;
                    for i in 0..a.records {
                        let at = start + Duration::from_secs_f64(f64::from(i) / f64::from(a.rate));
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        let key = format!("{tag}-{}-{i}", region.name);
                        let value = tenant_record(&key, region.name)?;
                        sent.lock()
                            .expect("not poisoned")
                            .insert(key.clone(), Instant::now());
                        producer.send(TENANTS, key.as_bytes(), &value)?;
                        producer.flush()?;
                    }
                    Ok(())
                })
            })
            .collect();
        let readers: Vec<_> = readers
            .into_iter()
            .map(|(figure, reader, prefix)| {
                s.spawn(move || -> Result<Arrivals> {
                    let mut seen = Vec::new();
                    while seen.len() < a.records as usize && Instant::now() < deadline {
                        if let Some(r) = reader.poll(Duration::from_millis(20))? {
                            let at = Instant::now();
                            let key = String::from_utf8_lossy(&r.key).into_owned();
                            if key.starts_with(&prefix) {
                                seen.push((key, at));
                            }
                        }
                    }
                    Ok((figure, seen))
                })
            })
            .collect();
        for p in producers {
            p.join().expect("the producer panicked")?;
        }
        readers
            .into_iter()
            .map(|r| r.join().expect("the reader panicked"))
            .collect()
    })?;
    let sent = sent.into_inner().expect("not poisoned");
    let mut by = BTreeMap::new();
    for (figure, seen) in arrivals {
        let mut lags: Vec<f64> = seen
            .iter()
            .filter_map(|(key, at)| sent.get(key).map(|s| ms(at.saturating_duration_since(*s))))
            .collect();
        lags.sort_by(f64::total_cmp);
        by.insert(figure.to_owned(), lags);
    }
    Ok(Lags { by })
}

fn record_lag(f: &mut Runs, lag: &Lags, records: u32) {
    for (figure, lags) in &lag.by {
        f.add(format!("lag.{figure}.p50_ms"), percentile(lags, 0.5));
        f.add(format!("lag.{figure}.p99_ms"), percentile(lags, 0.99));
        f.add(
            format!("lag.{figure}.max_ms"),
            lags.last().copied().unwrap_or(f64::NAN),
        );
        f.add(
            format!("lag.{figure}.missing"),
            f64::from(records) - lags.len() as f64,
        );
    }
    for direction in ["eu_us", "us_eu"] {
        let (Some(mirrored), Some(local)) = (
            lag.by.get(&format!("{direction}.mirrored")),
            lag.by.get(&format!("{direction}.local")),
        ) else {
            continue;
        };
        for q in [0.5, 0.99] {
            f.add(
                format!("lag.{direction}.to_local.p{}", (q * 100.0) as u32),
                percentile(mirrored, q) / percentile(local, q),
            );
        }
    }
}

// ---- (3) what the processes cost ---------------------------------------------------------

/// A process's cost over an interval.
struct Usage {
    /// Share of the machine (all cores), 0–1.
    cpu: f64,
    /// The largest resident set sampled, MB.
    rss_mb: f64,
}

/// `utime + stime` of a process (every thread), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // The command name may hold spaces; the fields after it are space-separated.
    let after = &stat[stat.rfind(')').context("no ) in /proc/PID/stat")? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3).
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs `during` while watching `pids`: each one's CPU share and largest RSS meanwhile.
fn watch<R>(
    pids: &[(&'static str, u32)],
    tick: f64,
    cores: usize,
    during: impl FnOnce() -> Result<R>,
) -> Result<(R, BTreeMap<&'static str, Usage>)> {
    let before: Vec<u64> = pids
        .iter()
        .map(|(_, pid)| cpu_ticks(*pid))
        .collect::<Result<_>>()?;
    let peaks = Mutex::new(vec![0u64; pids.len()]);
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let mut peaks = peaks.lock().expect("not poisoned");
                for (peak, (_, pid)) in peaks.iter_mut().zip(pids) {
                    *peak = (*peak).max(rss_kb(*pid).unwrap_or(0));
                }
                drop(peaks);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let result = during();
        done.store(true, Ordering::Relaxed);
        result
    })?;
    let wall = started.elapsed().as_secs_f64();
    let peaks = peaks.into_inner().expect("not poisoned");
    let mut usage = BTreeMap::new();
    for (((name, pid), before), peak) in pids.iter().zip(before).zip(peaks) {
        let ticks = cpu_ticks(*pid)? - before;
        usage.insert(
            *name,
            Usage {
                cpu: ticks as f64 / tick / wall / cores as f64,
                rss_mb: peak as f64 / 1024.0,
            },
        );
    }
    Ok((result, usage))
}

fn record_usage(f: &mut Runs, phase: &str, usage: &BTreeMap<&'static str, Usage>) {
    for (name, u) in usage {
        f.add(format!("usage.{phase}.{name}.cpu_pct"), u.cpu * 100.0);
        f.add(format!("usage.{phase}.{name}.rss_mb"), u.rss_mb);
    }
    if let (Some(mm2), Some(broker)) = (usage.get("mm2"), usage.get("eu_broker")) {
        f.add(
            format!("usage.{phase}.mm2_to_broker.cpu"),
            mm2.cpu / broker.cpu,
        );
        f.add(
            format!("usage.{phase}.mm2_to_broker.rss"),
            mm2.rss_mb / broker.rss_mb,
        );
    }
}

// ---- (2) fail-over between evaluation endpoints ------------------------------------------

fn provider_key() -> Result<ProviderKey> {
    Ok(ProviderKey::derive(&[7; 32], b"bench-regions")?)
}

fn tenant_key() -> SigningKey {
    SigningKey::from_bytes(&[1; 32])
}

/// The body of an evaluation service process (this binary started again with
/// [`SERVE_ENV`]): serves until its stdin, a pipe from the benchmark, closes.
fn serve_oprf(listen: &str) -> Result<ExitCode> {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let directory = Arc::new(TenantDirectory::default());
    directory.update(Tenant {
        stamp: None,
        tenant_id: "acme".into(),
        display_name: "acme".into(),
        state: TenantState::Active,
        signing_keys: vec![RequestSigningKey {
            key_id: "k1".into(),
            public_key: tenant_key().verifying_key().to_bytes().to_vec(),
            not_before: 0,
            not_after: None,
            revoked_at: None,
        }],
        config: TenantConfig {
            rate_limit_per_second: 1_000.0,
            burst: 1_000,
            daily_quota: None,
            allowed_regions: vec!["eu".into()],
            response_topic: "pavilion.decisions.acme".into(),
            privacy_budget_micro: None,
        },
        updated_at: 0,
        revision: 1,
    });
    let limits = ServiceLimits {
        rate_per_second: NonZeroU32::new(1_000_000).expect("non-zero"),
        daily_quota: None,
        ..ServiceLimits::default()
    };
    let service = Arc::new(
        OprfService::new("bank", provider_key()?, directory, limits).map_err(anyhow::Error::msg)?,
    );
    let addr: SocketAddr = listen.parse()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            pavilion_http::serve(listener, None, service.router(), std::future::pending()).await
        })?;
    Ok(ExitCode::SUCCESS)
}

/// This very binary, to start again: `/proc/self/exe` runs it even when a build replaced the
/// file meanwhile (its path then names the new one, or nothing).
fn this_binary() -> Result<PathBuf> {
    let proc = PathBuf::from("/proc/self/exe");
    if proc.exists() {
        return Ok(proc);
    }
    Ok(std::env::current_exe()?)
}

/// An evaluation service process on a fixed loopback port, killed when dropped.
struct Service {
    addr: SocketAddr,
    child: Option<Child>,
}

impl Service {
    fn start() -> Result<Self> {
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut service = Service { addr, child: None };
        service.restart()?;
        Ok(service)
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the process (again, on the same port) and waits until it answers.
    fn restart(&mut self) -> Result<()> {
        let child = Command::new(this_binary()?)
            .args(["bench", "regions"])
            .env(SERVE_ENV, self.addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("starting an evaluation service")?;
        self.child = Some(child);
        let started = Instant::now();
        let key = format!("{}{KEY_PATH}", self.url());
        while ureq::get(&key)
            .timeout(Duration::from_millis(200))
            .call()
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(20) {
                bail!("the evaluation service on {} did not come up", self.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let pid = self.child.as_ref().context("not running")?.id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status()?;
        if !status.success() {
            bail!("kill {signal} {pid}: {status}");
        }
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL, also when stopped
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Clone, Copy)]
enum Fault {
    /// The baseline: the same load, nothing happens.
    None,
    /// SIGKILL, then a new process on the same port.
    Kill,
    /// SIGSTOP (hung: the kernel accepts connections, nobody answers), then SIGCONT.
    Stop,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Kill => "kill",
            Fault::Stop => "stop",
        }
    }
}

fn fault_at(case: Duration) -> Duration {
    case / 4
}

fn back_at(case: Duration) -> Duration {
    case * 3 / 5
}

struct CaseFigures {
    requests: usize,
    failed: usize,
    unanswered: usize,
    longest_gap: Duration,
    slowest: Duration,
    stats: PoolStats,
    after_back: u64,
}

fn successes(stats: &PoolStats, url: &str) -> u64 {
    stats
        .endpoints
        .iter()
        .find(|e| e.url == url)
        .map_or(0, |e| e.successes)
}

fn failover(a: &RegionsBenchArgs, f: &mut Runs) -> Result<()> {
    let mut baseline_gap = f64::NAN;
    for fault in [Fault::None, Fault::Kill, Fault::Stop] {
        let c = failover_case(fault, a)?;
        let name = |what: &str| format!("failover.{}.{what}", fault.name());
        let gap = ms(c.longest_gap);
        if matches!(fault, Fault::None) {
            baseline_gap = gap;
        } else {
            f.add(name("gap_to_baseline"), gap / baseline_gap);
        }
        f.add(name("longest_gap_ms"), gap);
        f.add(name("requests"), c.requests as f64);
        f.add(name("failed"), c.failed as f64);
        f.add(name("unanswered"), c.unanswered as f64);
        f.add(name("slowest_ms"), ms(c.slowest));
        f.add(name("failovers"), c.stats.failovers as f64);
        f.add(name("hedges"), c.stats.hedges as f64);
        f.add(name("breaker_opens"), c.stats.breaker_opens as f64);
        f.add(name("after_back"), c.after_back as f64);
    }
    Ok(())
}

/// Two services of one key; `failover_rate` token requests a second, each on a thread of its
/// own at its scheduled time (a hung request does not hold up the next); endpoint 1 faulted
/// from a quarter to three fifths of the case.
fn failover_case(fault: Fault, a: &RegionsBenchArgs) -> Result<CaseFigures> {
    let mut primary = Service::start()?;
    let secondary = Service::start()?;
    let key = provider_key()?;
    let provider = ProviderEndpoint {
        provider_id: "bank".into(),
        endpoints: vec![
            Endpoint::in_zone("eu-a", &primary.url()),
            Endpoint::in_zone("eu-b", &secondary.url()),
        ],
        public_key: key.public_key(),
    };
    let primary_url = provider.endpoints[0].url.clone();
    let residency = Residency::regions(["eu"]);
    let client = OprfClient::new(TenantCredentials {
        tenant_id: "acme".into(),
        key_id: "k1".into(),
        signing_key: tenant_key(),
    })
    .with_failover(failover_config());
    client.track(&provider, &residency);
    client.start_probes(PROBE_EVERY)?;
    let answers: Mutex<Vec<(Instant, Duration)>> = Mutex::new(Vec::new());
    let (failed, unanswered) = (Mutex::new(0usize), Mutex::new(0usize));
    let requests = (f64::from(a.failover_rate) * a.failover_for.as_secs_f64()) as usize;
    let (fault_at, back_at) = (fault_at(a.failover_for), back_at(a.failover_for));
    let start = Instant::now();
    let at_back = std::thread::scope(|s| -> Result<u64> {
        let (primary, client, primary_url) = (&mut primary, &client, &primary_url);
        let faults = s.spawn(move || -> Result<u64> {
            if matches!(fault, Fault::None) {
                return Ok(0);
            }
            std::thread::sleep(fault_at.saturating_sub(start.elapsed()));
            match fault {
                Fault::Kill => primary.kill(),
                Fault::Stop => primary.signal("-STOP")?,
                Fault::None => {}
            }
            std::thread::sleep(back_at.saturating_sub(start.elapsed()));
            match fault {
                Fault::Kill => primary.restart()?,
                Fault::Stop => primary.signal("-CONT")?,
                Fault::None => {}
            }
            Ok(successes(&client.stats(), primary_url))
        });
        for i in 0..requests {
            let at = start + Duration::from_secs_f64(i as f64 / f64::from(a.failover_rate));
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let (provider, residency, key, answers, failed, unanswered) =
                (&provider, &residency, &key, &answers, &failed, &unanswered);
            s.spawn(move || {
                let input = format!("user{i}@example.com").into_bytes();
                let sent = Instant::now();
                let result = client.tokens_in(provider, residency, std::slice::from_ref(&input));
                match result {
                    Ok(tokens) if key.evaluate(&input).is_ok_and(|t| tokens == [t]) => {
                        let now = Instant::now();
                        answers
                            .lock()
                            .expect("not poisoned")
                            .push((now, now - sent));
                    }
                    Err(ClientError::Unavailable { .. }) => {
                        *failed.lock().expect("not poisoned") += 1;
                        *unanswered.lock().expect("not poisoned") += 1;
                    }
                    _ => *failed.lock().expect("not poisoned") += 1,
                }
            });
        }
        faults.join().expect("the fault thread panicked")
    })?;
    let mut answers = answers.into_inner().expect("not poisoned");
    answers.sort();
    let longest_gap = answers
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    let slowest = answers.iter().map(|a| a.1).max().unwrap_or_default();
    let stats = client.stats();
    let after_back = match fault {
        Fault::None => 0,
        _ => successes(&stats, &primary_url) - at_back,
    };
    Ok(CaseFigures {
        requests,
        failed: failed.into_inner().expect("not poisoned"),
        unanswered: unanswered.into_inner().expect("not poisoned"),
        longest_gap,
        slowest,
        stats,
        after_back,
    })
}

// ---- (4) the loss of a region ------------------------------------------------------------

/// One record the producer aimed at us tried: when, and how it ended.
struct Attempt {
    key: String,
    done: Instant,
    ok: bool,
}

fn region_loss(
    infra: &Infra,
    eu: &Region,
    us: &Region,
    tag: &str,
    a: &RegionsBenchArgs,
    f: &mut Runs,
) -> Result<()> {
    let old_pid = infra
        .broker_pid("us")
        .context("the us broker is not running")?;
    let crossed_reader = TopicReader::at_end(&eu.settings, &[&format!("us.{TENANTS}")])?;
    let mut us_settings = us.settings.clone();
    us_settings.overrides.extend([
        (
            "message.timeout.ms".to_owned(),
            a.delivery_deadline.as_millis().to_string(),
        ),
        // A client that means to notice a broker's return within a second (librdkafka
        // backs off reconnecting up to 10 s by default).
        ("reconnect.backoff.max.ms".to_owned(), "1000".to_owned()),
    ]);
    let us_producer = PlainProducer::new(&us_settings)?;
    let eu_producer = PlainProducer::new(&eu.settings)?;
    let stop = AtomicBool::new(false);
    let attempts: Mutex<Vec<Attempt>> = Mutex::new(Vec::new());
    let first_error: Mutex<Option<String>> = Mutex::new(None);

    let outcome = std::thread::scope(|s| -> Result<LossTimes> {
        let (stop, attempts, first_error) = (&stop, &attempts, &first_error);
        let eu_acks = s.spawn(move || -> Result<(Vec<Instant>, usize)> {
            let (mut acks, mut failed) = (Vec::new(), 0);
            let start = Instant::now();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let at = start + Duration::from_secs_f64(f64::from(i) / f64::from(LOSS_EU_RATE));
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let key = format!("{tag}-loss-eu-{i}");
                match producer_send(&eu_producer, &key, "eu") {
                    Ok(()) => acks.push(Instant::now()),
                    Err(_) => failed += 1,
                }
            }
            Ok((acks, failed))
        });
        let us_settings = &us_settings;
        s.spawn(move || {
            let mut producer = us_producer;
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("{tag}-loss-us-{i}");
                let result = producer_send(&producer, &key, "us");
                if let Err(e) = &result {
                    let e = format!("{e:#}");
                    // An idempotent producer recovers from timed-out records by itself
                    // (epoch bump); one that cannot is fatal and is made anew, as a client
                    // would.
                    if e.to_lowercase().contains("fatal") {
                        eprintln!("  the us producer failed for good ({e}): a new one");
                        if let Ok(p) = PlainProducer::new(us_settings) {
                            producer = p;
                        }
                    }
                    first_error.lock().expect("not poisoned").get_or_insert(e);
                }
                attempts.lock().expect("not poisoned").push(Attempt {
                    key,
                    done: Instant::now(),
                    ok: result.is_ok(),
                });
                std::thread::sleep(LOSS_US_EVERY);
            }
        });
        let times = lose_us(infra, old_pid, attempts, &crossed_reader, a);
        stop.store(true, Ordering::Relaxed);
        let (acks, eu_failed) = eu_acks.join().expect("the eu producer panicked")?;
        let times = times?;
        Ok(LossTimes {
            eu_gap: longest_gap_within(&acks, times.killed, times.accepted),
            eu_gap_down: longest_gap_within(&acks, times.killed, times.restart),
            eu_gap_restarting: longest_gap_within(&acks, times.restart, times.accepted),
            eu_gap_before: longest_gap_within(
                &acks,
                acks.first().copied().unwrap_or(times.killed),
                times.killed,
            ),
            eu_failed,
            ..times
        })
    })?;
    if let Some(e) = first_error.into_inner().expect("not poisoned") {
        eprintln!("  the us producer's first error: {e}");
    }
    let us_failed = attempts
        .into_inner()
        .expect("not poisoned")
        .iter()
        .filter(|a| !a.ok)
        .count();
    let t = outcome;
    f.add("loss.first_error_ms", ms(t.first_error - t.killed));
    f.add("loss.broker_start_ms", ms(t.broker_started - t.restart));
    f.add("loss.restart_command_ms", ms(t.restart_done - t.restart));
    f.add("loss.accepted_ms", ms(t.accepted - t.restart));
    f.add(
        "loss.accepted_after_broker_start_ms",
        ms(t.accepted.saturating_duration_since(t.broker_started)),
    );
    f.add("loss.crossed_ms", ms(t.crossed - t.accepted));
    f.add("loss.down_ms", ms(t.accepted - t.killed));
    f.add("loss.us_failed_records", us_failed as f64);
    f.add("loss.eu_gap_ms", ms(t.eu_gap));
    f.add("loss.eu_gap_down_ms", ms(t.eu_gap_down));
    f.add("loss.eu_gap_restarting_ms", ms(t.eu_gap_restarting));
    f.add("loss.eu_gap_before_ms", ms(t.eu_gap_before));
    f.add(
        "loss.eu_gap_to_before",
        t.eu_gap.as_secs_f64() / t.eu_gap_before.as_secs_f64(),
    );
    f.add("loss.eu_failed_records", t.eu_failed as f64);
    Ok(())
}

/// The instants of a region loss.
struct LossTimes {
    killed: Instant,
    first_error: Instant,
    restart: Instant,
    broker_started: Instant,
    restart_done: Instant,
    accepted: Instant,
    crossed: Instant,
    eu_gap: Duration,
    /// … while us was down, before `regions up`.
    eu_gap_down: Duration,
    /// … while us was starting again, on the same cores.
    eu_gap_restarting: Duration,
    eu_gap_before: Duration,
    eu_failed: usize,
}

fn producer_send(producer: &PlainProducer, key: &str, region: &str) -> Result<()> {
    producer.send(TENANTS, key.as_bytes(), &tenant_record(key, region)?)?;
    producer.flush()
}

/// The longest time between two consecutive acknowledgements that overlaps `from..to`.
fn longest_gap_within(acks: &[Instant], from: Instant, to: Instant) -> Duration {
    acks.windows(2)
        .filter(|w| w[1] > from && w[0] < to)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Kills the us broker after the steady part, starts it again after the outage, and waits
/// for the us producer's first record accepted and for that record in eu.
fn lose_us(
    infra: &Infra,
    old_pid: u32,
    attempts: &Mutex<Vec<Attempt>>,
    crossed_reader: &TopicReader,
    a: &RegionsBenchArgs,
) -> Result<LossTimes> {
    std::thread::sleep(LOSS_STEADY);
    let status = Command::new("kill")
        .args(["-KILL", &old_pid.to_string()])
        .status()?;
    let killed = Instant::now();
    if !status.success() {
        bail!("kill -KILL {old_pid} (the us broker): {status}");
    }
    let attempts_after = |since: Instant, ok: bool| {
        attempts
            .lock()
            .expect("not poisoned")
            .iter()
            .find(|t| t.done > since && t.ok == ok)
            .map(|t| (t.done, t.key.clone()))
    };
    let bound = a.outage + a.delivery_deadline * 3 + Duration::from_secs(30);
    let first_error = loop {
        if let Some((at, _)) = attempts_after(killed, false) {
            break at;
        }
        if killed.elapsed() > bound {
            bail!("the us producer reported no error within {bound:?} of the us broker's loss");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::thread::sleep(a.outage.saturating_sub(killed.elapsed()));
    let restart = Instant::now();
    std::thread::scope(|s| -> Result<LossTimes> {
        let up = s.spawn(|| -> Result<Instant> {
            infra.run(&["regions", "up", "eu,us"])?;
            Ok(Instant::now())
        });
        let (mut up, mut restart_done) = (Some(up), None);
        let mut broker_started = None;
        let accepted = loop {
            if broker_started.is_none() && infra.broker_pid("us").is_some_and(|p| p != old_pid) {
                broker_started = Some(Instant::now());
            }
            if let Some(accepted) = attempts_after(restart, true) {
                break accepted;
            }
            if up.as_ref().is_some_and(|u| u.is_finished()) {
                let u = up.take().expect("checked");
                restart_done = Some(u.join().expect("regions up panicked")?);
            }
            if restart.elapsed() > Duration::from_secs(300) {
                bail!("no record accepted by us within 300 s of `regions up`");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let restart_done = match (up, restart_done) {
            (Some(u), _) => u.join().expect("regions up panicked")?,
            (None, done) => done.expect("joined"),
        };
        let crossed = await_key(crossed_reader, &accepted.1, accepted.0)?;
        Ok(LossTimes {
            killed,
            first_error,
            restart,
            // The pid file is written as the process starts; missed only if the broker
            // came up between two looks at it and the record was accepted at once.
            broker_started: broker_started.unwrap_or(accepted.0),
            restart_done,
            accepted: accepted.0,
            crossed,
            eu_gap: Duration::ZERO,
            eu_gap_down: Duration::ZERO,
            eu_gap_restarting: Duration::ZERO,
            eu_gap_before: Duration::ZERO,
            eu_failed: 0,
        })
    })
}

/// When `key`, accepted by us at `accepted`, is visible in eu.
fn await_key(reader: &TopicReader, key: &str, accepted: Instant) -> Result<Instant> {
    loop {
        if let Some(r) = reader.poll(Duration::from_millis(20))? {
            if r.key == key.as_bytes() {
                return Ok(Instant::now());
            }
        }
        if accepted.elapsed() > CROSSING_BOUND {
            bail!(
                "{key}, accepted by us after its restart, did not reach eu within {CROSSING_BOUND:?}: see MirrorMaker 2's log"
            );
        }
    }
}

// ---- the table ---------------------------------------------------------------------------

fn print_summary(f: &Runs, a: &RegionsBenchArgs, cores: usize) {
    println!(
        "\nregions eu and us on loopback (one secured KRaft broker each, MirrorMaker 2 dedicated, exactly-once source); median (min–max) of {} runs",
        a.runs
    );
    let mut rows: Vec<(String, String, usize)> = vec![(
        format!(
            "(1) a control record (pavilion.Tenant) produced → visible read_committed; {} a direction at {}/s, both at once",
            a.records, a.rate
        ),
        String::new(),
        0,
    )];
    for (direction, from, to) in [("eu_us", "eu", "us"), ("us_eu", "us", "eu")] {
        let fig = |what: &str| format!("lag.{direction}.{what}");
        rows.extend([
            (
                format!("{from} → {to} ({from}.pavilion.tenants in {to}), ms"),
                fig("mirrored.{q}_ms"),
                1,
            ),
            (format!("{from} → {to}, max ms"), fig("mirrored.max_ms"), 1),
            (
                format!("baseline {from} → {from} (pavilion.tenants in {from}), ms"),
                fig("local.{q}_ms"),
                1,
            ),
            (
                format!("baseline {from} → {from}, max ms"),
                fig("local.max_ms"),
                1,
            ),
            (
                format!("  ratio {from} → {to} to {from} → {from}, p50"),
                fig("to_local.p50"),
                1,
            ),
            (
                format!("  ratio {from} → {to} to {from} → {from}, p99"),
                fig("to_local.p99"),
                1,
            ),
            (
                format!("  records that never reached {to}"),
                fig("mirrored.missing"),
                0,
            ),
        ]);
    }
    rows.push((
        format!(
            "(2) OPRF fail-over between two evaluation services, {} token requests/s for {:?}; endpoint 1 faulted {:?}–{:?}",
            a.failover_rate,
            a.failover_for,
            fault_at(a.failover_for),
            back_at(a.failover_for)
        ),
        String::new(),
        0,
    ));
    rows.push((
        "baseline, no fault: longest gap between answers, ms".into(),
        "failover.none.longest_gap_ms".into(),
        0,
    ));
    rows.push((
        "baseline: slowest answer, ms".into(),
        "failover.none.slowest_ms".into(),
        0,
    ));
    for (fault, label) in [("kill", "SIGKILL, restart"), ("stop", "SIGSTOP, SIGCONT")] {
        let fig = |what: &str| format!("failover.{fault}.{what}");
        rows.extend([
            (
                format!("{label}: longest gap between answers, ms"),
                fig("longest_gap_ms"),
                0,
            ),
            ("  ratio to the baseline".into(), fig("gap_to_baseline"), 1),
            ("  requests failed".into(), fig("failed"), 0),
            (
                "  requests no endpoint answered, the other one up".into(),
                fig("unanswered"),
                0,
            ),
            ("  slowest answer, ms".into(), fig("slowest_ms"), 0),
            ("  fail-overs".into(), fig("failovers"), 0),
            ("  hedges".into(), fig("hedges"), 0),
            (
                "  answers of endpoint 1 once it was back".into(),
                fig("after_back"),
                0,
            ),
        ]);
    }
    rows.push((
        format!(
            "(3) MirrorMaker 2's cost (CPU: share of the machine's {cores} cores; RSS: peak sampled)"
        ),
        String::new(),
        0,
    ));
    for (phase, label) in [("idle", "idle"), ("replicating", "while replicating (1)")] {
        let fig = |what: &str| format!("usage.{phase}.{what}");
        rows.extend([
            (
                format!("MirrorMaker 2 {label}: CPU %"),
                fig("mm2.cpu_pct"),
                1,
            ),
            (
                format!("MirrorMaker 2 {label}: RSS MB"),
                fig("mm2.rss_mb"),
                0,
            ),
            (
                format!("eu broker {label}: CPU %"),
                fig("eu_broker.cpu_pct"),
                1,
            ),
            (
                format!("eu broker {label}: RSS MB"),
                fig("eu_broker.rss_mb"),
                0,
            ),
            (
                format!("us broker {label}: CPU %"),
                fig("us_broker.cpu_pct"),
                1,
            ),
            (
                "  ratio MirrorMaker 2 to the eu broker, CPU".into(),
                fig("mm2_to_broker.cpu"),
                2,
            ),
            (
                "  ratio MirrorMaker 2 to the eu broker, RSS".into(),
                fig("mm2_to_broker.rss"),
                2,
            ),
        ]);
    }
    rows.extend([
        (
            format!(
                "(4) region us lost: its broker SIGKILLed, `regions up eu,us` {:?} later",
                a.outage
            ),
            String::new(),
            0,
        ),
        (
            format!(
                "us producer (delivery deadline {:?}): first error after the kill, ms",
                a.delivery_deadline
            ),
            "loss.first_error_ms".into(),
            0,
        ),
        (
            "`regions up` → the us broker's process started, ms".into(),
            "loss.broker_start_ms".into(),
            0,
        ),
        (
            "`regions up` → a record accepted by us again, ms".into(),
            "loss.accepted_ms".into(),
            0,
        ),
        (
            "  of which after the broker's process started, ms".into(),
            "loss.accepted_after_broker_start_ms".into(),
            0,
        ),
        (
            "`regions up` returned after, ms".into(),
            "loss.restart_command_ms".into(),
            0,
        ),
        (
            "that record accepted → visible in eu (us.pavilion.tenants), ms".into(),
            "loss.crossed_ms".into(),
            0,
        ),
        (
            "us took no record for, ms (kill → accepted)".into(),
            "loss.down_ms".into(),
            0,
        ),
        (
            "us producer's failed records".into(),
            "loss.us_failed_records".into(),
            0,
        ),
        (
            format!(
                "eu producer ({LOSS_EU_RATE}/s): longest gap, kill → us taking records again, ms"
            ),
            "loss.eu_gap_ms".into(),
            0,
        ),
        (
            "  while us was down (kill → `regions up`), ms".into(),
            "loss.eu_gap_down_ms".into(),
            0,
        ),
        (
            "  while us was starting again, on the same cores, ms".into(),
            "loss.eu_gap_restarting_ms".into(),
            0,
        ),
        (
            "  baseline: longest gap before the kill, ms".into(),
            "loss.eu_gap_before_ms".into(),
            0,
        ),
        ("  ratio".into(), "loss.eu_gap_to_before".into(), 1),
        (
            "  eu producer's failed records".into(),
            "loss.eu_failed_records".into(),
            0,
        ),
        (
            "(before each run) a record crossing eu → us (run 1: MM2 finds the topic), ms".into(),
            "warmup.eu_us_ms".into(),
            0,
        ),
        (
            "(before each run) a record crossing us → eu, ms".into(),
            "warmup.us_eu_ms".into(),
            0,
        ),
    ]);
    f.summary(&rows, str::to_owned);
}
