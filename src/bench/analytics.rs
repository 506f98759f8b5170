//! `pavilion bench analytics`: the analytics stage as topology.yaml configures it. In process
//! with its RocksDB stores (no Kafka): the latency of a release against the bare primitive it
//! rests on (OpenDP's discrete Laplace sample, the same run), a release of many cells, and the
//! empirical error of released counts against the bound each states, at each ε tried. Over
//! the broker: a query's round trip to its release (visible read_committed) with the analytics
//! task running, against a raw produce → visible round trip on the same broker. Its cost on
//! the request path is in `bench e2e` (the analytics task's share).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use pavilion_analytics::noise::Mechanism;
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::testing::TestDriver;
use pavilion_schemas::{
    AnalyticsQuery, AnalyticsRelease, Event, Registry, RejectionReason, ReleaseStatus,
    RequestRejected, Tenant, TenantConfig, TenantState,
};
use serde_json::json;

use super::runs::{loadavg, Runs};
use super::{write_result, RunFolder};
use crate::cli::ClusterArgs;
use crate::demo::percentile;
use crate::demo::processes::{free_port, wait_ready, Children};
use crate::demo::setup::run_topology;

/// Options of the analytics benchmark.
#[derive(Args)]
pub struct AnalyticsBenchArgs {
    /// Runs of every measurement; each figure is reported as the median, min and max of them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Releases timed per run (and per ε for the error figures).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(10..))]
    pub releases: u32,
    /// Requests in the tenant's aggregates.
    #[arg(long, default_value_t = 10_000)]
    pub requests: u32,
    /// Queries sent one at a time over the broker per run (and raw round trips beside them).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..))]
    pub broker_queries: u32,
    /// Measure in process only (no Kafka).
    #[arg(long)]
    pub skip_broker: bool,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/analytics.json")]
    pub out: PathBuf,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

const EPSILONS: [f64; 4] = [0.1, 0.5, 1.0, 2.0];
const ALPHA: f64 = 0.05;
const TENANT: &str = "acme";
/// When the aggregated requests were answered (the test driver's clock starts here).
const AT_MS: i64 = 1_700_000_000_000;

pub fn analytics(a: AnalyticsBenchArgs) -> Result<ExitCode> {
    let topology = std::fs::read_to_string("topology.yaml")
        .map_err(|e| anyhow::anyhow!("topology.yaml (run from the repository): {e}"))?;
    let mut runs = Runs::default();
    for run in 1..=a.runs {
        eprintln!("run {run} of {}", a.runs);
        one_run(&topology, &a, &mut runs)?;
        if !a.skip_broker {
            over_broker(&topology, &a, &mut runs)?;
        }
    }
    println!(
        "analytics stage in process (RocksDB stores, no Kafka), {} requests aggregated, median (min–max) of {} runs:",
        a.requests, a.runs
    );
    runs.rows(&[
        (
            "bare discrete Laplace sample (OpenDP), µs p50".into(),
            "bare_p50_us".into(),
            1,
        ),
        (
            "release of one cell (requests), µs p50".into(),
            "release_p50_us".into(),
            1,
        ),
        (
            "release of one cell (requests), µs p99".into(),
            "release_p99_us".into(),
            1,
        ),
        (
            "  ratio to the bare sample (p50)".into(),
            "release_to_bare".into(),
            0,
        ),
        (
            "release of 7 days × 3 groups (outcomes), µs p50".into(),
            "wide_p50_us".into(),
            1,
        ),
    ]);
    if !a.skip_broker {
        println!(
            "over the broker, one query at a time (produce → release visible read_committed):"
        );
        runs.rows(&[
            (
                "raw Kafka produce → visible, ms p50".into(),
                "raw_p50_ms".into(),
                1,
            ),
            (
                "analytics query → release, ms p50".into(),
                "broker_p50_ms".into(),
                1,
            ),
            (
                "analytics query → release, ms p99".into(),
                "broker_p99_ms".into(),
                1,
            ),
            ("  ratio to raw (p50)".into(), "broker_to_raw".into(), 1),
        ]);
    }
    println!(
        "error of released counts against the bound each states at {}% confidence:",
        (1.0 - ALPHA) * 100.0
    );
    for epsilon in EPSILONS {
        let name = |what: &str| format!("eps{epsilon}_{what}");
        runs.rows(&[
            (format!("ε {epsilon}: stated bound"), name("bound"), 0),
            (
                format!("ε {epsilon}: mean |error|"),
                name("mean_abs_error"),
                2,
            ),
            (
                format!("ε {epsilon}: p95 |error|"),
                name("p95_abs_error"),
                0,
            ),
            (
                format!("ε {epsilon}: share beyond the bound (alpha {ALPHA})"),
                name("beyond_share"),
                4,
            ),
            (
                format!("ε {epsilon}:   exactly as likely as"),
                name("exact_beyond"),
                4,
            ),
        ]);
    }
    write_result(
        &a.out,
        &json!({
            "benchmark": "analytics",
            "runs": a.runs,
            "releases_per_run": a.releases,
            "requests_aggregated": a.requests,
            "alpha": ALPHA,
            "loadavg": loadavg(),
            "figures": runs.json(),
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn one_run(topology: &str, a: &AnalyticsBenchArgs, runs: &mut Runs) -> Result<()> {
    let mut d = TestDriver::new(topology, "analytics", &crate::kinds::all());
    d.send("pavilion.tenants", TENANT, &tenant());
    for i in 0..a.requests {
        let id = format!("r{i}");
        d.send("pavilion.requests.rejected", &id, &rejected(&id));
    }
    d.clock().advance(Duration::from_secs(60));
    for r in d
        .punctuate()
        .into_iter()
        .filter(|r| r.topic == "pavilion.analytics.counts")
    {
        d.send_raw("pavilion.analytics.counts", &r.key, &r.value);
    }
    let today = chrono::DateTime::from_timestamp_millis(AT_MS)
        .expect("a day")
        .date_naive();

    // The bare primitive, then the stage's release of one cell.
    let mechanism = Mechanism::new(1, 1.0)?;
    let mut bare: Vec<f64> = (0..a.releases)
        .map(|_| {
            let started = Instant::now();
            let _ = mechanism.noisy(&[i64::from(a.requests)]);
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let timed = |d: &mut TestDriver, q: AnalyticsQuery| -> Result<(f64, AnalyticsRelease)> {
        let started = Instant::now();
        let r = release(d, &q)?;
        Ok((started.elapsed().as_secs_f64() * 1e6, r))
    };
    let mut one = Vec::new();
    for i in 0..a.releases {
        one.push(
            timed(
                &mut d,
                query(&format!("one-{i}"), "requests", false, &[], today, 0, 1.0),
            )?
            .0,
        );
    }
    let groups = [
        "age_over/matched",
        "age_over/not_matched",
        "age_over/unavailable",
    ];
    let mut wide = Vec::new();
    for i in 0..(a.releases / 10).max(10) {
        wide.push(
            timed(
                &mut d,
                query(
                    &format!("wide-{i}"),
                    "outcomes",
                    true,
                    &groups,
                    today,
                    6,
                    1.0,
                ),
            )?
            .0,
        );
    }
    for v in [&mut bare, &mut one, &mut wide] {
        v.sort_by(f64::total_cmp);
    }
    let (bare_p50, one_p50) = (percentile(&bare, 0.5), percentile(&one, 0.5));
    runs.add("bare_p50_us", bare_p50);
    runs.add("release_p50_us", one_p50);
    runs.add("release_p99_us", percentile(&one, 0.99));
    runs.add("release_to_bare", one_p50 / bare_p50);
    runs.add("wide_p50_us", percentile(&wide, 0.5));

    for epsilon in EPSILONS {
        let mut errors = Vec::new();
        let mut beyond = 0;
        let mut bound = 0;
        for i in 0..a.releases {
            let (_, r) = timed(
                &mut d,
                query(
                    &format!("e{epsilon}-{i}"),
                    "requests",
                    false,
                    &[],
                    today,
                    0,
                    epsilon,
                ),
            )?;
            let cell = &r.cells[0];
            let error = (cell.value - i64::from(a.requests)).abs();
            bound = cell.bound;
            beyond += usize::from(error > cell.bound);
            errors.push(error as f64);
        }
        let name = |what: &str| format!("eps{epsilon}_{what}");
        runs.add(name("bound"), bound as f64);
        runs.add(
            name("mean_abs_error"),
            errors.iter().sum::<f64>() / errors.len() as f64,
        );
        errors.sort_by(f64::total_cmp);
        runs.add(name("p95_abs_error"), percentile(&errors, 0.95));
        runs.add(name("beyond_share"), beyond as f64 / f64::from(a.releases));
        // What it should be: P(|X| > b) = 2 q^(b+1) / (1 + q) for noise of scale 1/ε, q = e^-ε.
        let q = (-epsilon).exp();
        runs.add(
            name("exact_beyond"),
            2.0 * q.powf(bound as f64 + 1.0) / (1.0 + q),
        );
    }
    Ok(())
}

/// The analytics task over the broker: a query's round trip to its release, one at a time,
/// against a raw produce → visible round trip on a scratch topic of the same run.
fn over_broker(repo: &str, a: &AnalyticsBenchArgs, runs: &mut Runs) -> Result<()> {
    let run = format!("bench-analytics-{}", std::process::id());
    let text = run_topology(repo, &run).replacen(
        "\ntopics:\n",
        &format!("\ntopics:\n  {run}.raw: {{}}\n"),
        1,
    );
    let RunFolder {
        topology,
        cluster,
        cli,
        ..
    } = RunFolder::create(&run, &text, &a.cluster)?;
    cli.ok(&["topics", "create"])
        .context("is Kafka running? start it with `scripts/infra up`")?;
    // `run` opens the key ring whatever tasks it runs.
    cli.ok(&["keys", "generate"])?;
    cli.ok(&[
        "tenant",
        "add",
        TENANT,
        "--name",
        "Acme",
        "--privacy-budget",
        "1000000",
        "--activate",
    ])?;
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let mut children = Children(Vec::new());
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
            &metrics,
            "--task",
            "analytics",
        ],
    )?;
    wait_ready(&metrics, Duration::from_secs(120))?;
    let settings = crate::cli::settings(&cluster, "bench")?;
    let releases = crate::commands::analytics::releases_topic(&topology)?;
    let queries = crate::cli::topic_for(&topology, AnalyticsQuery::FULL_NAME)?.name;
    let producer = PlainProducer::new(&settings)?;
    let (reader, raw_reader) = (
        TopicReader::at_end(&settings, &[&releases])?,
        TopicReader::at_end(&settings, &[&format!("{run}.raw")])?,
    );
    let today = chrono::Utc::now().date_naive();
    let round_trip = |send: &dyn Fn() -> Result<()>,
                      reader: &TopicReader,
                      seen: &dyn Fn(&[u8]) -> bool|
     -> Result<f64> {
        let started = Instant::now();
        send()?;
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(r) = reader.poll(Duration::from_millis(20))? {
                if r.value.as_deref().is_some_and(seen) {
                    return Ok(started.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        bail!(
            "nothing within 30 s: is the analytics task running? see its log in {}",
            cli_dir(&run)
        )
    };
    let (mut raw, mut broker) = (Vec::new(), Vec::new());
    for i in 0..a.broker_queries {
        let marker = format!("raw-{i}");
        raw.push(round_trip(
            &|| {
                producer.send(&format!("{run}.raw"), b"k", marker.as_bytes())?;
                producer.flush()
            },
            &raw_reader,
            &|v| v == marker.as_bytes(),
        )?);
        let q = AnalyticsQuery {
            asked_at: epoch_millis(SystemTime::now()),
            ..query(
                &format!("broker-{i}"),
                "requests",
                false,
                &[],
                today,
                0,
                0.001,
            )
        };
        let bytes = Registry::builtin().encode(&q)?;
        broker.push(round_trip(
            &|| {
                producer.send(&queries, TENANT.as_bytes(), &bytes)?;
                producer.flush()
            },
            &reader,
            &|v| {
                Registry::builtin()
                    .decode::<AnalyticsRelease>(v)
                    .is_ok_and(|r| r.release_id == q.release_id)
            },
        )?);
    }
    drop((reader, raw_reader, producer, children));
    let _ = tokio::runtime::Runtime::new()?
        .block_on(pavilion_kafka::delete_topics_with_prefix(&settings, &run));
    raw.sort_by(f64::total_cmp);
    broker.sort_by(f64::total_cmp);
    runs.add("raw_p50_ms", percentile(&raw, 0.5));
    runs.add("broker_p50_ms", percentile(&broker, 0.5));
    runs.add("broker_p99_ms", percentile(&broker, 0.99));
    runs.add(
        "broker_to_raw",
        percentile(&broker, 0.5) / percentile(&raw, 0.5),
    );
    Ok(())
}

fn cli_dir(run: &str) -> String {
    std::env::temp_dir().join(run).display().to_string()
}

fn release(d: &mut TestDriver, q: &AnalyticsQuery) -> Result<AnalyticsRelease> {
    let out = d.send("pavilion.analytics.queries", &q.scope, q);
    let Some(r) = out.iter().find_map(|r| {
        Registry::builtin()
            .decode::<AnalyticsRelease>(&r.value)
            .ok()
    }) else {
        bail!("no release for {}: {}", q.release_id, d.render(&out));
    };
    if r.status != ReleaseStatus::Released {
        bail!("release {} refused: {:?}", q.release_id, r.refusal);
    }
    Ok(r)
}

fn query(
    id: &str,
    metric: &str,
    by_day: bool,
    groups: &[&str],
    to: chrono::NaiveDate,
    days_before: u64,
    epsilon: f64,
) -> AnalyticsQuery {
    let from = to - chrono::Days::new(days_before);
    AnalyticsQuery {
        release_id: id.into(),
        scope: TENANT.into(),
        metric: metric.into(),
        by_day,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        from_day: from.to_string(),
        to_day: to.to_string(),
        epsilon,
        alpha: ALPHA,
        asked_at: 0,
    }
}

fn tenant() -> Tenant {
    Tenant {
        stamp: None,
        tenant_id: TENANT.into(),
        display_name: TENANT.into(),
        state: TenantState::Active,
        signing_keys: Vec::new(),
        config: TenantConfig {
            rate_limit_per_second: 1.0,
            burst: 1,
            daily_quota: None,
            allowed_regions: Vec::new(),
            response_topic: String::new(),
            // Enough for every release of the run: the budget is not what is measured.
            privacy_budget_micro: Some(1 << 60),
        },
        updated_at: 0,
        revision: 1,
    }
}

fn rejected(id: &str) -> RequestRejected {
    RequestRejected {
        request_id: id.into(),
        tenant_id: Some(TENANT.into()),
        reason: RejectionReason::RateLimited,
        detail: String::new(),
        retry_after_ms: None,
        rejected_at: AT_MS,
    }
}
