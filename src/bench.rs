//! `pavilion bench passthrough`: what exactly-once costs, against the same broker in the same
//! run. Baseline: a plain relay (read `in`, produce to `out`, no transactions). Then the
//! two-stage counting topology, split (two transactional hops) and fused (one).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use pavilion_kafka::{ensure_topics, KafkaSettings, PlainProducer, TopicReader};
use pavilion_runtime::telemetry::Telemetry;
use pavilion_runtime::topology::Topology;
use pavilion_schemas::Registry;
use serde_json::json;

use crate::{kinds, run, sample, ClusterArgs};

/// Options of the pass-through benchmark.
#[derive(Args)]
pub struct PassthroughArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Records per measurement.
    #[arg(long, default_value_t = 50_000)]
    pub records: u64,
    /// Payload bytes per event.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Partitions of every benchmark topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Transaction commit interval of the pipeline.
    #[arg(long, default_value = "100ms", value_parser = crate::parse_duration)]
    pub commit_interval: Duration,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/passthrough.json")]
    pub out: std::path::PathBuf,
}

fn topology_text(run: &str, partitions: u32, fused: bool) -> String {
    let fuse = if fused {
        "fuse:\n  - [counter, totals]\n"
    } else {
        ""
    };
    format!(
        "application: {run}\ndlq: {run}.dlq\ndefaults: {{ partitions: {partitions} }}\ntopics:\n  {run}.dlq: {{}}\n  {run}.events: {{ schema: pavilion.DemoEvent }}\n  {run}.counts: {{ schema: pavilion.KeyCount }}\n  {run}.totals: {{ schema: pavilion.KeyTotal }}\n  {run}.raw-in: {{}}\n  {run}.raw-out: {{}}\nstages:\n  counter: {{ kind: counter, inputs: [{run}.events], outputs: {{ counts: {run}.counts }}, stores: [counts] }}\n  totals: {{ kind: totals, inputs: [{run}.counts], outputs: {{ totals: {run}.totals }}, stores: [totals] }}\n{fuse}"
    )
}

/// Waits until `count` records arrived on the reader's topics; returns when the last did.
fn await_records(reader: &TopicReader, count: u64, timeout: Duration) -> Result<Instant> {
    let started = Instant::now();
    let mut seen = 0;
    while seen < count {
        if reader.poll(Duration::from_millis(100))?.is_some() {
            seen += 1;
        } else if started.elapsed() > timeout {
            bail!("only {seen} of {count} records within {timeout:?}");
        }
    }
    Ok(Instant::now())
}

pub(crate) fn raw_relay(
    settings: &KafkaSettings,
    run: &str,
    args: &PassthroughArgs,
) -> Result<f64> {
    let (input, output) = (format!("{run}.raw-in"), format!("{run}.raw-out"));
    let stop = Arc::new(AtomicBool::new(false));
    let relay = {
        let (settings, input, output, stop) = (
            settings.clone(),
            input.clone(),
            output.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || -> Result<()> {
            let reader = TopicReader::new(&settings, &[&input])?;
            let producer = PlainProducer::new(&settings)?;
            while !stop.load(Ordering::SeqCst) {
                if let Some(r) = reader.poll(Duration::from_millis(50))? {
                    producer.send(&output, &r.key, r.value.as_deref().unwrap_or_default())?;
                }
            }
            producer.flush()
        })
    };
    let reader = TopicReader::new(settings, &[&output])?;
    let t0 = Instant::now();
    sample::produce_events(
        &PlainProducer::new(settings)?,
        &input,
        "raw",
        args.records,
        1000,
        0,
        args.payload,
    )?;
    let t1 = await_records(&reader, args.records, Duration::from_secs(300))?;
    stop.store(true, Ordering::SeqCst);
    relay.join().expect("relay thread")?;
    Ok(args.records as f64 / (t1 - t0).as_secs_f64())
}

fn eos_pipeline(
    settings: &KafkaSettings,
    topology: Topology,
    args: &PassthroughArgs,
) -> Result<(f64, u64)> {
    let topology = Arc::new(topology);
    let (input, output) = sample::sample_topics(&topology)?;
    let pipeline = run::InProcess::start(&topology, settings, |_| true, Duration::from_secs(60))?;
    let reader = TopicReader::new(settings, &[&output])?;
    let t0 = Instant::now();
    sample::produce_events(
        &PlainProducer::new(settings)?,
        &input,
        "eos",
        args.records,
        1000,
        0,
        args.payload,
    )?;
    let t1 = await_records(&reader, args.records, Duration::from_secs(300))?;
    let commits = sample::metric_sum(&pipeline.telemetry.render(), "pavilion_transactions_total{");
    pipeline.stop()?;
    Ok((
        args.records as f64 / (t1 - t0).as_secs_f64(),
        commits as u64,
    ))
}

pub fn passthrough(args: PassthroughArgs) -> Result<ExitCode> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let state = tempfile_dir()?;
    let mut settings = crate::topology_cmd::settings(&args.cluster, "bench");
    settings.state_dir = state.clone();
    settings.commit_interval = args.commit_interval;
    let registry = Registry::builtin();
    let parse = |text: &str| {
        Topology::parse(text, &kinds::all(), &|s| registry.schema(s).is_some())
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut results = Vec::new();
    for (mode, fused) in [("raw", false), ("split", false), ("fused", true)] {
        let run = format!("bench-{stamp}-{mode}");
        let topology = parse(&topology_text(&run, args.partitions, fused))?;
        runtime.block_on(ensure_topics(
            &settings,
            &topology.topics.values().collect::<Vec<_>>(),
        ))?;
        let (rate, commits) = if mode == "raw" {
            (raw_relay(&settings, &run, &args)?, 0)
        } else {
            eos_pipeline(&settings, topology, &args)?
        };
        println!(
            "{mode:>6}: {rate:>10.0} records/s  ({} records, {} B payload{})",
            args.records,
            args.payload,
            if commits > 0 {
                format!(", {commits} transactions")
            } else {
                String::new()
            }
        );
        results.push((mode, rate, commits));
    }
    let raw = results[0].1;
    for (mode, rate, _) in &results[1..] {
        println!("{mode:>6}/raw: {:.2}", rate / raw);
    }
    let json = json!({
        "benchmark": "passthrough",
        "records": args.records,
        "payload_bytes": args.payload,
        "partitions": args.partitions,
        "commit_interval_ms": args.commit_interval.as_millis() as u64,
        "baseline": "plain relay: read_committed reader -> idempotent producer, no transactions, one hop",
        "results": results.iter().map(|(mode, rate, commits)| json!({
            "mode": mode, "records_per_s": rate.round(), "ratio_to_raw": (rate / raw * 1000.0).round() / 1000.0,
            "transactions": commits,
        })).collect::<Vec<_>>(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "unix_time": stamp,
    });
    write_result(&args.out, &json)?;
    std::fs::remove_dir_all(state).ok();
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("pavilion-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Options of the policy benchmark.
#[derive(Args)]
pub struct PolicyArgs {
    /// Rules in the tenant's policy.
    #[arg(long, default_value_t = 50)]
    pub rules: usize,
    /// Tenants in the unindexed comparison (one policy set holding every tenant's rules).
    #[arg(long, default_value_t = 14)]
    pub tenants: usize,
    /// Evaluations per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub evaluations: usize,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/policy.json")]
    pub out: std::path::PathBuf,
}

/// A policy of `rules` rules for `tenant`: permits for claims with conditions, and forbids on
/// purposes, so evaluation has real work on both sides.
fn policy_rules(tenant: &str, rules: usize, scoped: bool) -> String {
    let principal = if scoped {
        format!("principal == Tenant::\"{tenant}\"")
    } else {
        "principal".to_owned()
    };
    (0..rules)
        .map(|i| {
            if i % 2 == 0 {
                format!(
                    "@id(\"{tenant}-permit-{i}\")\npermit({principal}, action == Action::\"verify\", resource == Claim::\"claim_{}\") when {{ context.threshold >= {} && context.subject_region == \"eu\" }};\n",
                    i / 2,
                    i % 21
                )
            } else {
                format!(
                    "@id(\"{tenant}-forbid-{i}\")\nforbid({principal}, action, resource) when {{ context.purpose == \"purpose_{i}\" && !context.consent }};\n"
                )
            }
        })
        .collect()
}

pub fn policy(args: PolicyArgs) -> Result<ExitCode> {
    use pavilion_policy::document::{ClaimPlanSpec, PolicySpec, ProviderSpec};
    use pavilion_policy::engine::CompiledPolicy;
    use pavilion_schemas::{ClaimRequest, PolicyRef, VerificationRequest};
    use std::str::FromStr;

    let claims = args.rules.div_ceil(2);
    let plan = (0..claims)
        .map(|i| {
            let providers = vec![ProviderSpec {
                id: format!("p{i}"),
                region: "eu".into(),
            }];
            (
                format!("claim_{i}"),
                ClaimPlanSpec {
                    providers,
                    evidence: Vec::new(),
                    disclose: Vec::new(),
                },
            )
        })
        .collect();
    let spec = PolicySpec {
        policy: "bench".into(),
        tenant: Some("t0".into()),
        template: None,
        description: None,
        rules: policy_rules("t0", args.rules, false),
        plan,
        response_format: None,
        response: None,
    };
    let reference = PolicyRef {
        policy_id: "bench".into(),
        version: 1,
        content_hash: spec.content_hash(),
    };
    let compiled =
        CompiledPolicy::compile(spec.clone(), reference).map_err(|f| anyhow::anyhow!("{f:?}"))?;
    let request = |i: usize| VerificationRequest {
        request_id: format!("r{i}"),
        tenant_id: "t0".into(),
        key_id: String::new(),
        signature: Vec::new(),
        signed_at: 0,
        nonce: String::new(),
        created_at: 0,
        claims: vec![ClaimRequest {
            name: format!("claim_{}", i % claims),
            params: [("threshold".to_owned(), (i % 30).to_string())].into(),
        }],
        purpose: format!("purpose_{}", i % 60),
        subject_jurisdiction: "eu".into(),
        consent_ref: None,
        subject_tokens: Vec::new(),
        response_format: None,
    };
    let requests: Vec<VerificationRequest> = (0..1000).map(request).collect();
    let regions = vec!["eu".to_owned()];
    let time = |f: &mut dyn FnMut(usize)| {
        let start = Instant::now();
        for i in 0..args.evaluations {
            f(i);
        }
        args.evaluations as f64 / start.elapsed().as_secs_f64()
    };
    let mut permits = 0usize;
    let engine_rate = time(&mut |i| {
        let e = compiled.evaluate(&requests[i % requests.len()], &regions, 1_700_000_000_000);
        permits += usize::from(e.effect == pavilion_schemas::PolicyEffect::Permit);
    });

    // Baselines: the bare Cedar authorizer on the same rules, and on one set holding every
    // tenant's rules (what evaluating without a per-tenant index costs).
    let raw = |set: &cedar_policy::PolicySet, tenant: &str| -> Result<f64> {
        let authorizer = cedar_policy::Authorizer::new();
        let entities = cedar_policy::Entities::empty();
        let principal = cedar_policy::EntityUid::from_str(&format!("Tenant::\"{tenant}\""))?;
        let action = cedar_policy::EntityUid::from_str("Action::\"verify\"")?;
        let prepared: Vec<cedar_policy::Request> = (0..1000)
            .map(|i| {
                let context = cedar_policy::Context::from_pairs([
                    (
                        "purpose".to_owned(),
                        cedar_policy::RestrictedExpression::new_string(format!(
                            "purpose_{}",
                            i % 60
                        )),
                    ),
                    (
                        "subject_region".to_owned(),
                        cedar_policy::RestrictedExpression::new_string("eu".into()),
                    ),
                    (
                        "consent".to_owned(),
                        cedar_policy::RestrictedExpression::new_bool(false),
                    ),
                    (
                        "threshold".to_owned(),
                        cedar_policy::RestrictedExpression::new_long((i % 30) as i64),
                    ),
                ])
                .expect("distinct keys");
                let resource =
                    cedar_policy::EntityUid::from_str(&format!("Claim::\"claim_{}\"", i % claims))
                        .expect("uid");
                cedar_policy::Request::new(
                    principal.clone(),
                    action.clone(),
                    resource,
                    context,
                    None,
                )
                .expect("request")
            })
            .collect();
        let start = Instant::now();
        for i in 0..args.evaluations {
            std::hint::black_box(authorizer.is_authorized(
                &prepared[i % prepared.len()],
                set,
                &entities,
            ));
        }
        Ok(args.evaluations as f64 / start.elapsed().as_secs_f64())
    };
    let own: cedar_policy::PolicySet = policy_rules("t0", args.rules, false)
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let raw_rate = raw(&own, "t0")?;
    let all_text: String = (0..args.tenants)
        .map(|t| policy_rules(&format!("t{t}"), args.rules, true))
        .collect();
    let all: cedar_policy::PolicySet = all_text.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let unindexed_rate = raw(&all, "t0")?;

    println!(
        "policy of {} rules, {} evaluations each, one thread:",
        args.rules, args.evaluations
    );
    println!("  pavilion engine (Cedar + plan)      {engine_rate:>10.0} evaluations/s  {:>7.1} µs  ({permits} permits)", 1e6 / engine_rate);
    println!("  bare Cedar, tenant's own set        {raw_rate:>10.0} evaluations/s  {:>7.1} µs  engine/bare {:.2}", 1e6 / raw_rate, engine_rate / raw_rate);
    println!(
        "  bare Cedar, one set of {} rules     {unindexed_rate:>10.0} evaluations/s  {:>7.1} µs  indexed/unindexed {:.1}×",
        args.rules * args.tenants,
        1e6 / unindexed_rate,
        raw_rate / unindexed_rate
    );
    let json = json!({
        "benchmark": "policy",
        "rules": args.rules,
        "evaluations": args.evaluations,
        "engine_per_s": engine_rate.round(),
        "bare_cedar_per_s": raw_rate.round(),
        "engine_over_bare": (engine_rate / raw_rate * 1000.0).round() / 1000.0,
        "unindexed_rules": args.rules * args.tenants,
        "unindexed_per_s": unindexed_rate.round(),
        "indexed_over_unindexed": (raw_rate / unindexed_rate * 10.0).round() / 10.0,
    });
    write_result(&args.out, &json)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn write_result(path: &std::path::Path, json: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(json)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Options of the request-path benchmark.
#[derive(Args)]
pub struct RequestPathArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Signed requests per measurement.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// Partitions of every benchmark topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Tenants the requests are spread over.
    #[arg(long, default_value_t = 8)]
    pub tenants: u64,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/request_path.json")]
    pub out: std::path::PathBuf,
}

fn request_path_topology(run: &str, partitions: u32, fused: bool) -> String {
    let fuse = if fused {
        "fuse:\n  - [tenancy, policy]\n"
    } else {
        ""
    };
    format!(
        "application: {run}\ndlq: {run}.dlq\ndefaults: {{ partitions: {partitions} }}\ntopics:\n  {run}.dlq: {{}}\n  {run}.requests: {{}}\n  {run}.routed: {{}}\n  {run}.tenants: {{ cleanup: compact }}\n  {run}.accepted: {{}}\n  {run}.rejected: {{}}\n  {run}.policies: {{}}\n  {run}.outcomes: {{}}\nstages:\n  tenancy: {{ kind: tenancy, inputs: [{run}.requests, {run}.routed, {run}.tenants], outputs: {{ accepted: {run}.accepted, rejected: {run}.rejected, routed: {run}.routed }}, stores: [tenants, seen, limits] }}\n  policy: {{ kind: policy, inputs: [{run}.accepted, {run}.policies], outputs: {{ outcomes: {run}.outcomes }}, stores: [documents, active] }}\n{fuse}"
    )
}

/// Tenancy + policy on the broker, split (two transactional hops) and fused (one), with
/// the same signed requests.
pub fn request_path(args: RequestPathArgs) -> Result<ExitCode> {
    use ed25519_dalek::{Signer, SigningKey};
    use pavilion_policy::document::{document_event, SourceDocument};
    use pavilion_schemas::*;

    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let state = tempfile_dir()?;
    let mut settings = crate::topology_cmd::settings(&args.cluster, "bench");
    settings.state_dir = state.clone();
    let registry = Registry::builtin();
    let key = SigningKey::from_bytes(&[7; 32]);
    let now = pavilion_runtime::clock::epoch_millis(std::time::SystemTime::now());
    let tenants: Vec<String> = (0..args.tenants).map(|t| format!("tenant{t}")).collect();
    println!("signing {} requests…", args.requests);
    let requests: Vec<(String, Vec<u8>)> = (0..args.requests)
        .map(|i| {
            let tenant = &tenants[(i % args.tenants) as usize];
            let mut r = VerificationRequest {
                request_id: format!("r{i}"),
                tenant_id: tenant.clone(),
                key_id: "k1".into(),
                signature: Vec::new(),
                signed_at: now,
                nonce: format!("n{i}"),
                created_at: now,
                claims: vec![ClaimRequest {
                    name: "age_over".into(),
                    params: [("threshold".to_owned(), "18".to_owned())].into(),
                }],
                purpose: "onboarding".into(),
                subject_jurisdiction: "eu".into(),
                consent_ref: None,
                subject_tokens: vec![SubjectToken {
                    provider_id: "registry".into(),
                    token: vec![1; 64],
                }],
                response_format: None,
            };
            r.signature = key.sign(&r.signing_bytes()).to_bytes().to_vec();
            (tenant.clone(), registry.encode(&r).expect("encodes"))
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new()?;
    let mut results = Vec::new();
    for (mode, fused) in [("split", false), ("fused", true)] {
        let run = format!("bench-{stamp}-path-{mode}");
        let registry_check = |s: &str| registry.schema(s).is_some();
        let topology = Topology::parse(
            &request_path_topology(&run, args.partitions, fused),
            &kinds::all(),
            &registry_check,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        runtime.block_on(ensure_topics(
            &settings,
            &topology.topics.values().collect::<Vec<_>>(),
        ))?;
        let producer = PlainProducer::new(&settings)?;
        for tenant in &tenants {
            let record = Tenant {
                tenant_id: tenant.clone(),
                display_name: tenant.clone(),
                state: TenantState::Active,
                signing_keys: vec![RequestSigningKey {
                    key_id: "k1".into(),
                    public_key: key.verifying_key().to_bytes().to_vec(),
                    not_before: 0,
                    not_after: None,
                    revoked_at: None,
                }],
                config: TenantConfig {
                    rate_limit_per_second: 1e9,
                    burst: 1_000_000_000,
                    daily_quota: None,
                    allowed_regions: vec!["eu".into()],
                    response_topic: "unused".into(),
                },
                updated_at: now,
                revision: 1,
            };
            producer.send(
                &format!("{run}.tenants"),
                tenant.as_bytes(),
                &registry.encode(&record)?,
            )?;
            let yaml = format!(
                "policy: main\ntenant: {tenant}\nrules: |\n{}plan:\n  age_over:\n    providers: [{{ id: registry-eu, region: eu }}]\n    evidence: [zk_predicate]\n",
                policy_rules(tenant, 50, false).lines().map(|l| format!("  {l}\n")).collect::<String>().replace("claim_0", "age_over")
            );
            let spec = SourceDocument::parse(&yaml)
                .map_err(|f| anyhow::anyhow!("{f}"))?
                .spec;
            let document = document_event(&spec, 1, PolicyState::Active, "bench", 0, None);
            producer.send(
                &format!("{run}.policies"),
                tenant.as_bytes(),
                &registry.encode(&document)?,
            )?;
        }
        producer.flush()?;

        let topology = Arc::new(topology);
        let loaded = |t: &Telemetry| {
            let text = t.render();
            sample::metric_sum(
                &text,
                "pavilion_stage_events_total{event=\"tenant.updated\"",
            ) >= args.tenants as f64
                && sample::metric_sum(
                    &text,
                    "pavilion_stage_events_total{event=\"policy.activated\"",
                ) >= args.tenants as f64
        };
        let pipeline =
            run::InProcess::start(&topology, &settings, loaded, Duration::from_secs(60))?;
        let reader = TopicReader::new(&settings, &[&format!("{run}.outcomes")])?;
        let t0 = Instant::now();
        for (tenant, bytes) in &requests {
            producer.send(&format!("{run}.requests"), tenant.as_bytes(), bytes)?;
        }
        producer.flush()?;
        let t1 = await_records(&reader, args.requests, Duration::from_secs(600))?;
        let rate = args.requests as f64 / (t1 - t0).as_secs_f64();
        let commits =
            sample::metric_sum(&pipeline.telemetry.render(), "pavilion_transactions_total{");
        pipeline.stop()?;
        println!("{mode:>6}: {rate:>8.0} requests/s through tenancy + policy ({} requests, {} tenants, {commits} transactions)", args.requests, args.tenants);
        results.push((mode, rate));
    }
    println!(" fused/split: {:.2}", results[1].1 / results[0].1);
    write_result(
        &args.out,
        &json!({
            "benchmark": "request_path",
            "stages": ["tenancy", "policy"],
            "requests": args.requests,
            "tenants": args.tenants,
            "partitions": args.partitions,
            "policy_rules": 50,
            "results": results.iter().map(|(m, r)| json!({"mode": m, "requests_per_s": r.round()})).collect::<Vec<_>>(),
            "fused_over_split": (results[1].1 / results[0].1 * 100.0).round() / 100.0,
        }),
    )?;
    std::fs::remove_dir_all(state).ok();
    Ok(ExitCode::SUCCESS)
}
