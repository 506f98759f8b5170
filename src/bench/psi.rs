//! `pavilion bench psi`: private matching's figures, each against a baseline measured in the
//! same run.
//!
//! 1. OPRF service: blinded evaluations/s through the HTTP service (authentication, JSON,
//!    one proof per batch), one request in flight, vs the raw `voprf` batch evaluation on
//!    one core.
//! 2. Batch PSI: elements/s of the whole protocol on one thread (client blind, provider
//!    evaluation with proof, client verify and finalize, set-key lookups in RocksDB) vs
//!    OpenMined PSI (`bench/baselines/openmined_psi.py`) on the same set sizes; setup
//!    (encoding the provider's set) vs its setup.
//! 3. Provider set load: records/s of `pavilion provider load` (CSV → OPRF → signed
//!    attestations → Kafka) for a synthetic set, by default a million records.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Args;
use ed25519_dalek::{Signer, SigningKey};
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_provider::oprf::{blind, finalize_batch, ProviderKey, MAX_BATCH};
use pavilion_provider::protocol::{
    auth_message, EvaluateRequest, EVALUATE_PATH, KEY_ID_HEADER, SIGNATURE_HEADER, TENANT_HEADER,
    TIMESTAMP_HEADER,
};
use pavilion_provider::service::{OprfService, ServiceLimits, TenantDirectory};
use pavilion_runtime::global::{GlobalRecord, GlobalStores};
use pavilion_runtime::topology::GlobalSpec;
use pavilion_schemas::{set_key, RequestSigningKey, Tenant, TenantConfig, TenantState};
use serde_json::json;

use super::write_result;
use crate::cli::{self, ClusterArgs};
use crate::commands::control::provider;

/// Options of the private-matching benchmark.
#[derive(Args)]
pub struct PsiBenchArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Blinded elements evaluated in the OPRF service measurement.
    #[arg(long, default_value_t = 50_000)]
    pub evaluations: usize,
    /// Batch PSI sizes as CLIENT:SERVER, repeatable.
    #[arg(long = "sizes", default_values_t = ["1000:10000".to_owned(), "10000:100000".to_owned()])]
    pub sizes: Vec<String>,
    /// Fraction of the client set in the server set.
    #[arg(long, default_value_t = 0.5)]
    pub overlap: f64,
    /// Records in the provider set load measurement; 0 skips it (it needs the broker).
    #[arg(long, default_value_t = 1_000_000)]
    pub load_records: usize,
    /// Python with `openmined.psi` (bench/baselines/requirements.txt).
    #[arg(long, env = "PAVILION_PYTHON", default_value = "python3")]
    pub python: String,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/psi.json")]
    pub out: PathBuf,
}

fn email(i: usize) -> String {
    format!("user{i:09}@example.org")
}

/// Raw `voprf` batch evaluation (with its proof) on this thread, in batches of 1,000; the
/// better of two passes after a warm-up batch, so the baseline is not understated.
fn raw_voprf_rate(key: &ProviderKey, blinded: &[Vec<u8>]) -> Result<f64> {
    key.evaluate_batch(&blinded[..blinded.len().min(MAX_BATCH)])?;
    let mut best: f64 = 0.0;
    for _ in 0..2 {
        let started = Instant::now();
        for batch in blinded.chunks(MAX_BATCH) {
            key.evaluate_batch(batch)?;
        }
        best = best.max(blinded.len() as f64 / started.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// The HTTP service on loopback, one request in flight, bodies and signatures prepared
/// beforehand so the measurement holds the service's work.
fn service_rate(key: &ProviderKey, blinded: &[Vec<u8>]) -> Result<f64> {
    let tenant_key = SigningKey::from_bytes(&[9; 32]);
    let directory = Arc::new(TenantDirectory::default());
    directory.update(Tenant {
        stamp: None,
        tenant_id: "bench".into(),
        display_name: "bench".into(),
        state: TenantState::Active,
        signing_keys: vec![RequestSigningKey {
            key_id: "k1".into(),
            public_key: tenant_key.verifying_key().to_bytes().to_vec(),
            not_before: 0,
            not_after: None,
            revoked_at: None,
        }],
        config: TenantConfig {
            rate_limit_per_second: 1.0,
            burst: 1,
            daily_quota: None,
            allowed_regions: Vec::new(),
            response_topic: String::new(),
            privacy_budget_micro: None,
        },
        updated_at: 0,
        revision: 1,
    });
    let limits = ServiceLimits {
        rate_per_second: NonZeroU32::new(u32::MAX).expect("non-zero"),
        daily_quota: None,
        ..ServiceLimits::default()
    };
    let service = Arc::new(
        OprfService::new(
            "bench",
            ProviderKey::from_bytes(&key.to_bytes())?,
            directory,
            limits,
        )
        .map_err(anyhow::Error::msg)?,
    );
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).ok();
            axum::serve(listener, service.router()).await.ok();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10))?;
    let url = format!("http://{addr}{EVALUATE_PATH}");
    let now = pavilion_runtime::clock::epoch_millis(std::time::SystemTime::now());
    let requests: Vec<(Vec<u8>, String)> = blinded
        .chunks(MAX_BATCH)
        .map(|batch| {
            let body = serde_json::to_vec(&EvaluateRequest {
                blinded: batch.iter().map(|b| B64.encode(b)).collect(),
            })
            .expect("json");
            let message = auth_message("bench", "bench", "k1", now, &body);
            let signature = B64.encode(tenant_key.sign(&message).to_bytes());
            (body, signature)
        })
        .collect();
    let agent = ureq::AgentBuilder::new().build();
    let call = |(body, signature): &(Vec<u8>, String)| -> Result<()> {
        let response = agent
            .post(&url)
            .set("content-type", "application/json")
            .set(TENANT_HEADER, "bench")
            .set(KEY_ID_HEADER, "k1")
            .set(TIMESTAMP_HEADER, &now.to_string())
            .set(SIGNATURE_HEADER, signature)
            .send_bytes(body)
            .context("evaluation request")?;
        response.into_string()?;
        Ok(())
    };
    call(&requests[0])?; // connection and first-use costs out of the measurement
    let started = Instant::now();
    for request in &requests {
        call(request)?;
    }
    Ok(blinded.len() as f64 / started.elapsed().as_secs_f64())
}

struct PsiRun {
    setup_s: f64,
    online_s: f64,
    /// Online time by step: blind, evaluate (with proof), verify + finalize, lookup.
    phases_s: [f64; 4],
    cardinality: usize,
}

/// Batch PSI on one thread: the provider encodes its set into the same RocksDB global store
/// the psi stage reads; the client's whole protocol and the lookups are the online phase.
fn our_psi(client: usize, server: usize, overlap: f64) -> Result<PsiRun> {
    let key = ProviderKey::generate();
    let dir = tempfile::tempdir()?;
    let spec = GlobalSpec {
        stage: "psi".into(),
        name: "sets".into(),
        topic: "sets.{provider}".into(),
        ..Default::default()
    };
    let stores = GlobalStores::open(dir.path(), vec![spec])?;
    let started = Instant::now();
    let mut offset = 0;
    for chunk in (0..server).collect::<Vec<_>>().chunks(5_000) {
        let keys: Vec<[u8; 32]> = chunk
            .iter()
            .map(|&i| {
                let input = oprf_input(IdentifierKind::Email, &email(i)).expect("valid");
                Ok(set_key("bench", &key.evaluate(&input)?))
            })
            .collect::<Result<_>>()?;
        let records: Vec<GlobalRecord<'_>> = keys
            .iter()
            .map(|k| {
                offset += 1;
                GlobalRecord {
                    topic: "sets.bench",
                    partition: 0,
                    offset,
                    key: k,
                    value: Some(b"member"),
                }
            })
            .collect();
        stores.apply(&records)?;
    }
    let setup_s = started.elapsed().as_secs_f64();

    // Half of the client's identifiers are in the server set, half are not.
    let inside = (client as f64 * overlap) as usize;
    let inputs: Vec<Vec<u8>> = (0..client)
        .map(|i| {
            let n = if i < inside { i } else { server + i };
            oprf_input(IdentifierKind::Email, &email(n)).expect("valid")
        })
        .collect();
    let public_key = key.public_key();
    let started = Instant::now();
    let mut cardinality = 0;
    let mut phases_s = [0.0; 4];
    let mut step = |phase: usize, since: &mut Instant| {
        phases_s[phase] += since.elapsed().as_secs_f64();
        *since = Instant::now();
    };
    for batch in inputs.chunks(MAX_BATCH) {
        let mut at = Instant::now();
        let blinded = batch
            .iter()
            .map(|i| blind(i))
            .collect::<Result<Vec<_>, _>>()?;
        let elements: Vec<Vec<u8>> = blinded.iter().map(|b| b.element.to_vec()).collect();
        step(0, &mut at);
        let (evaluated, proof) = key.evaluate_batch(&elements)?;
        step(1, &mut at);
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let outputs = finalize_batch(&refs, &blinded, &evaluated, &proof, &public_key)?;
        step(2, &mut at);
        for output in outputs {
            if stores
                .get(0, "bench", &set_key("bench", &output))?
                .is_some()
            {
                cardinality += 1;
            }
        }
        step(3, &mut at);
    }
    let online_s = started.elapsed().as_secs_f64();
    if cardinality != inside {
        bail!("batch PSI found {cardinality} matches, expected {inside}");
    }
    Ok(PsiRun {
        setup_s,
        online_s,
        phases_s,
        cardinality,
    })
}

fn openmined(
    python: &str,
    client: usize,
    server: usize,
    overlap: f64,
) -> Result<serde_json::Value> {
    let out = std::process::Command::new(python)
        .args([
            "bench/baselines/openmined_psi.py",
            "--reveal-intersection",
            "--repeat",
            "1",
        ])
        .args(["--client-size", &client.to_string()])
        .args(["--server-size", &server.to_string()])
        .args(["--overlap", &overlap.to_string()])
        .output()
        .with_context(|| format!("running {python} bench/baselines/openmined_psi.py"))?;
    if !out.status.success() {
        bail!(
            "the OpenMined baseline failed (install it: {python} -m pip install -r bench/baselines/requirements.txt): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(report["results"][0].clone())
}

/// `provider onboard` + `provider load` of `records` synthetic members on a throwaway
/// topology; records/s of the load.
fn load_rate(cluster: &ClusterArgs, records: usize) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let run = format!("bench-load-{}", std::process::id());
    let topology = dir.path().join("topology.yaml");
    std::fs::write(
        &topology,
        format!(
            "application: {run}\ndlq: {run}.dlq\ntopics:\n  {run}.dlq: {{ schema: pavilion.DeadLetter }}\n  {run}.tenants: {{ schema: pavilion.Tenant, cleanup: compact }}\n  {run}.providers: {{ schema: pavilion.Provider, cleanup: compact }}\n  {run}.sets.{{provider}}: {{ schema: pavilion.ProviderSetEntry, cleanup: compact, partitions: 6 }}\nstages: {{}}\n"
        ),
    )?;
    let mut cluster = cluster.clone();
    cluster.file.topology = topology;
    crate::commands::topology::create_topics(&cluster)?;
    let csv = dir.path().join("members.csv");
    let mut text = String::with_capacity(records * 48);
    text.push_str("email,claims\n");
    for i in 0..records {
        text.push_str(&email(i));
        text.push_str(",account_verified\n");
    }
    std::fs::write(&csv, text)?;
    let passphrase = dir.path().join("passphrase");
    std::fs::write(&passphrase, "bench")?;
    let keys = provider::KeyFileArgs {
        key_file: Some(dir.path().join("bench.provider-key")),
        passphrase_file: Some(passphrase),
    };
    provider::run(provider::ProviderCommand::Onboard(provider::OnboardArgs {
        name: "bench".into(),
        region: "eu".into(),
        claims: vec!["account_verified".into()],
        oprf_urls: vec!["http://127.0.0.1:9".parse().map_err(anyhow::Error::msg)?],
        keys: keys.clone(),
        cluster: cluster.clone(),
    }))?;
    let started = Instant::now();
    provider::run(provider::ProviderCommand::Load(provider::LoadArgs {
        name: "bench".into(),
        from: csv.display().to_string(),
        table: None,
        id_kind: "email".into(),
        id_column: None,
        claims_column: Some("claims".into()),
        claims: Vec::new(),
        attributes: Vec::new(),
        attributes_valid_for: Duration::from_secs(30 * 86_400),
        book: provider::AttributesFileArg {
            attributes_file: None,
        },
        max_invalid: 0,
        dry_run: false,
        keys,
        cluster: cluster.clone(),
    }))?;
    let took = started.elapsed().as_secs_f64();
    tokio::runtime::Runtime::new()?.block_on(pavilion_kafka::delete_topics_with_prefix(
        &cli::settings(&cluster, "bench")?,
        &run,
    ))?;
    Ok(json!({
        "records": records,
        "seconds": took,
        "records_per_s": records as f64 / took,
        "threads": rayon::current_num_threads(),
    }))
}

pub fn psi(args: PsiBenchArgs) -> Result<ExitCode> {
    println!(
        "OPRF service vs raw voprf ({} evaluations, batches of {MAX_BATCH})",
        args.evaluations
    );
    let key = ProviderKey::generate();
    let blinded: Vec<Vec<u8>> = (0..args.evaluations)
        .map(|i| {
            let input = oprf_input(IdentifierKind::Email, &email(i)).expect("valid");
            Ok(blind(&input)?.element.to_vec())
        })
        .collect::<Result<_>>()?;
    let raw = raw_voprf_rate(&key, &blinded)?;
    let served = service_rate(&key, &blinded)?;
    println!("  raw voprf batch evaluation: {raw:>9.0} evaluations/s (one core)");
    println!(
        "  HTTP service:               {served:>9.0} evaluations/s ({:.0} % of raw)",
        100.0 * served / raw
    );

    let mut psi_results = Vec::new();
    for size in &args.sizes {
        let (client, server) = size
            .split_once(':')
            .and_then(|(c, s)| Some((c.parse::<usize>().ok()?, s.parse::<usize>().ok()?)))
            .with_context(|| format!("--sizes `{size}` is not CLIENT:SERVER"))?;
        println!(
            "batch PSI, client {client} vs server {server}, overlap {}",
            args.overlap
        );
        let ours = our_psi(client, server, args.overlap)?;
        let theirs = openmined(&args.python, client, server, args.overlap)?;
        let our_online = client as f64 / ours.online_s;
        let our_setup = server as f64 / ours.setup_s;
        let their_online = theirs["online_elements_per_s"].as_f64().unwrap_or(f64::NAN);
        let their_setup = theirs["setup_elements_per_s"].as_f64().unwrap_or(f64::NAN);
        // Per job: OpenMined's server builds a setup message over its whole set for each
        // query (fresh key, false-positive rate sized to the client set); a Pavilion
        // provider encodes its set once per load and every job reuses it.
        let their_job_s = theirs["total_s"].as_f64().unwrap_or(f64::NAN);
        let per_job_ratio = their_job_s / ours.online_s;
        println!(
            "  online  pavilion {our_online:>8.0}/s  openmined {their_online:>8.0}/s  ({:.2}×)",
            our_online / their_online
        );
        println!(
            "  setup   pavilion {our_setup:>8.0}/s  openmined {their_setup:>8.0}/s  ({:.2}×)",
            our_setup / their_setup
        );
        println!(
            "  per job pavilion {:>7.2} s   openmined {their_job_s:>7.2} s  ({per_job_ratio:.2}×; its per-query setup included)",
            ours.online_s
        );
        let [b, e, f, l] = ours.phases_s;
        println!("  pavilion online steps: blind {b:.2} s, evaluate+prove {e:.2} s, verify+finalize {f:.2} s, lookup {l:.2} s");
        psi_results.push(json!({
            "client_size": client,
            "server_size": server,
            "overlap": args.overlap,
            "cardinality": ours.cardinality,
            "pavilion": {
                "online_elements_per_s": our_online,
                "setup_elements_per_s": our_setup,
                "online_s": ours.online_s,
                "setup_s": ours.setup_s,
                "online_steps_s": {
                    "blind": ours.phases_s[0],
                    "evaluate_and_prove": ours.phases_s[1],
                    "verify_and_finalize": ours.phases_s[2],
                    "set_key_and_lookup": ours.phases_s[3],
                },
            },
            "openmined": theirs,
            "online_ratio": our_online / their_online,
            "setup_ratio": our_setup / their_setup,
            "per_job_ratio": per_job_ratio,
        }));
    }

    let load = if args.load_records > 0 {
        println!("provider set load of {} records", args.load_records);
        let load = load_rate(&args.cluster, args.load_records)?;
        println!(
            "  {:.0} records/s",
            load["records_per_s"].as_f64().unwrap_or(0.0)
        );
        load
    } else {
        serde_json::Value::Null
    };
    let json = json!({
        "benchmark": "psi",
        "machine_cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "oprf_service": {
            "evaluations": args.evaluations,
            "batch": MAX_BATCH,
            "raw_voprf_evaluations_per_s": raw,
            "service_evaluations_per_s": served,
            "service_vs_raw": served / raw,
            "note": "raw: voprf 0.5 batch_blind_evaluate with its DLEQ proof, one thread; service: HTTP on loopback, one request in flight, current-thread runtime plus one blocking thread (one core's work at a time)",
        },
        "batch_psi": psi_results,
        "batch_psi_note": "pavilion: one thread, whole protocol in-process (blind, evaluate with batch proof, verify + finalize, SHA-256 set key, RocksDB lookup); openmined: bench/baselines/openmined_psi.py, ECDH-PSI over P-256 with GCS, reveal-intersection, one thread",
        "set_load": load,
    });
    write_result(&args.out, &json)?;
    Ok(ExitCode::SUCCESS)
}
