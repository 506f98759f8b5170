//! `pavilion bench request-path`: requests/s through tenancy + policy on the broker, split (two
//! transactional hops) and fused (one), with the same signed requests.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use pavilion_kafka::{ensure_topics, PlainProducer, TopicReader};
use pavilion_runtime::telemetry::Telemetry;
use pavilion_runtime::topology::Topology;
use serde_json::json;

use super::policy::policy_rules;
use super::{await_records, sample, tempfile_dir, write_result};
use crate::cli::{self, ClusterArgs};
use crate::commands::run;
use crate::kinds;

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
    let mut settings = cli::settings(&args.cluster, "bench");
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
        // One stream thread per task, as the published figures were measured.
        let pipeline =
            run::InProcess::start(&topology, &settings, 1, loaded, Duration::from_secs(60))?;
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
