//! `pavilion bench audit`: the Merkle log's appends/s against the bare SHA-256 of the same
//! leaves, the audit stage's entries/s, proof generation and verification times, signed
//! checkpoints/s, and gas per anchor on a local anvil — in one run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use ed25519_dalek::{Signer as _, SigningKey};
use pavilion_audit::log::{verify_consistency, verify_inclusion, Frontier, LogView};
use pavilion_audit::note::{signed_note, CheckpointBody};
use pavilion_audit::{CheckpointSigner, SubjectKeys};
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::{Resources, StageKinds};
use pavilion_schemas::{DecisionIssued, ResponseFormat};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::write_result;

/// Options of the audit benchmark.
#[derive(Args)]
pub struct AuditBenchArgs {
    /// Leaves appended to the frontier (and hashed bare, the baseline).
    #[arg(long, default_value_t = 1_000_000)]
    pub leaves: usize,
    /// Events through the audit stage.
    #[arg(long, default_value_t = 20_000)]
    pub entries: usize,
    /// Size of the tree proofs are made in.
    #[arg(long, default_value_t = 100_000)]
    pub tree: usize,
    /// Checkpoints anchored on a local anvil (0: skip).
    #[arg(long, default_value_t = 20)]
    pub anchors: usize,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/audit.json")]
    pub out: PathBuf,
}

struct Key(SigningKey);

impl CheckpointSigner for Key {
    fn sign(&self, message: &[u8]) -> Result<([u8; 32], Vec<u8>), String> {
        Ok((
            self.0.verifying_key().to_bytes(),
            self.0.sign(message).to_bytes().to_vec(),
        ))
    }
}

#[derive(Default)]
struct MemoryKeys(Mutex<BTreeMap<String, [u8; 32]>>);

impl SubjectKeys for MemoryKeys {
    fn key(&self, key_id: &str) -> Result<Option<[u8; 32]>, String> {
        Ok(Some(
            *self
                .0
                .lock()
                .expect("lock")
                .entry(key_id.into())
                .or_insert([7; 32]),
        ))
    }
}

fn leaf_input(i: usize) -> Vec<u8> {
    // The size of a real leaf input (tag, origin, position, type, digest, request id).
    let mut v = format!("pavilion.audit.leaf.v1 pavilion/audit/0 pavilion.decisions.issued 0 {i} pavilion.DecisionIssued r{i:012}").into_bytes();
    v.extend_from_slice(&Sha256::digest(i.to_be_bytes()));
    v
}

fn per_s(n: usize, started: Instant) -> f64 {
    n as f64 / started.elapsed().as_secs_f64()
}

pub fn audit(args: AuditBenchArgs) -> Result<ExitCode> {
    let inputs: Vec<Vec<u8>> = (0..args.leaves).map(leaf_input).collect();

    // Appends: RFC 6962 leaf hash + frontier merge, against the bare hash of each leaf.
    let started = Instant::now();
    for input in &inputs {
        std::hint::black_box(Sha256::digest(input));
    }
    let bare = per_s(inputs.len(), started);
    let started = Instant::now();
    let mut frontier = Frontier::default();
    for input in &inputs {
        let leaf: [u8; 32] = Sha256::new()
            .chain_update([0u8])
            .chain_update(input)
            .finalize()
            .into();
        frontier.append(leaf);
    }
    let root = frontier.root();
    let appends = per_s(inputs.len(), started);
    println!(
        "Merkle log appends ({} leaves of {} bytes, one thread)",
        inputs.len(),
        inputs[0].len()
    );
    println!("  bare SHA-256 of each leaf  {bare:>11.0} /s");
    println!(
        "  leaf hash + frontier       {appends:>11.0} /s  ({:.2}x the bare hash; root {}…)",
        appends / bare,
        hex::encode(&root[..4]),
    );

    // The stage: decode, digest, append, emit, state committed per record (test driver).
    let topology = pavilion_audit::STANDALONE_TOPOLOGY
        .replace("checkpoint_every: 4", "checkpoint_every: 1000");
    let mut driver = TestDriver::new(
        &topology,
        "audit",
        &StageKinds::new([&pavilion_audit::KIND]),
    );
    let mut resources = Resources::default();
    let signer: pavilion_audit::SharedCheckpointSigner =
        Arc::new(Key(SigningKey::from_bytes(&[5; 32])));
    resources.insert(pavilion_audit::CHECKPOINT_SIGNER, signer);
    let keys: pavilion_audit::SharedSubjectKeys = Arc::new(MemoryKeys::default());
    resources.insert(pavilion_audit::SUBJECT_KEYS, keys);
    driver.attach_resources(resources);
    let events: Vec<DecisionIssued> = (0..args.entries)
        .map(|i| DecisionIssued {
            request_id: format!("r{i}"),
            tenant_id: "t".into(),
            topic: "pavilion.decisions.t".into(),
            decision_digest: Sha256::digest(i.to_be_bytes()).to_vec(),
            payload_digest: vec![1; 32],
            format: ResponseFormat::Jwt,
            signing_key_id: "k".into(),
            policy: None,
            issued_at: i as i64,
        })
        .collect();
    let started = Instant::now();
    let mut checkpoints = 0;
    for e in &events {
        checkpoints += driver
            .send("issued", "t", e)
            .iter()
            .filter(|r| r.topic == "checkpoints")
            .count();
    }
    let stage = per_s(events.len(), started);
    println!("audit stage: {stage:.0} entries/s ({} events, {checkpoints} checkpoints; RocksDB commit per record)", events.len());

    // Proofs in a tree of `tree` leaves.
    let started = Instant::now();
    let mut view = LogView::default();
    for input in inputs.iter().cycle().take(args.tree) {
        view.push(input.clone());
    }
    let build_s = started.elapsed().as_secs_f64();
    let size = view.len();
    let root = view.root(size)?;
    let samples = 200;
    let indices: Vec<u64> = (0..samples).map(|i| (i as u64 * 7919) % size).collect();
    let started = Instant::now();
    let proofs: Vec<Vec<[u8; 32]>> = indices
        .iter()
        .map(|&i| view.inclusion(i, size))
        .collect::<Result<_, _>>()?;
    let prove_us = started.elapsed().as_secs_f64() * 1e6 / samples as f64;
    let started = Instant::now();
    for (&i, proof) in indices.iter().zip(&proofs) {
        let input = &inputs[(i as usize) % inputs.len()];
        assert!(
            verify_inclusion(input, i, size, &root, proof),
            "a proof does not verify"
        );
    }
    let verify_us = started.elapsed().as_secs_f64() * 1e6 / samples as f64;
    let from = size / 3;
    let started = Instant::now();
    let consistency = view.consistency(from, size)?;
    let consistency_us = started.elapsed().as_secs_f64() * 1e6;
    assert!(verify_consistency(
        from,
        &view.root(from)?,
        size,
        &root,
        &consistency
    ));
    println!("proofs in a tree of {size} leaves (ct-merkle, in memory; built in {build_s:.2} s)");
    println!(
        "  inclusion: {prove_us:.1} µs to make, {verify_us:.1} µs to verify ({} hashes)",
        proofs[0].len()
    );
    println!(
        "  consistency {from}→{size}: {consistency_us:.1} µs to make ({} hashes)",
        consistency.len()
    );

    // Signed checkpoints.
    let key = SigningKey::from_bytes(&[5; 32]);
    let public = key.verifying_key().to_bytes();
    let n = 20_000;
    let started = Instant::now();
    for i in 0..n {
        let body = CheckpointBody {
            origin: "bench/audit/0".into(),
            size: i,
            root,
        };
        let sig = key.sign(body.text().as_bytes()).to_bytes();
        std::hint::black_box(signed_note(&body, "bench/audit", &public, &sig));
    }
    let checkpoints_per_s = per_s(n as usize, started);
    println!("signed checkpoints (C2SP note, Ed25519 software key): {checkpoints_per_s:.0} /s");

    // Anchors on a local anvil.
    let mut anchor = json!(null);
    if args.anchors > 0 {
        let bin = pavilion_chain::dev::anvil_bin();
        if bin.is_file() {
            let dir = tempfile::tempdir()?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let anvil =
                pavilion_chain::dev::Anvil::start(port, None, &dir.path().join("anvil.log"));
            let runtime = tokio::runtime::Runtime::new()?;
            let mut config =
                pavilion_chain::ChainConfig::new(anvil.url(), pavilion_chain::dev::DEV_KEY);
            config.poll_interval = std::time::Duration::from_millis(20);
            let deployed = runtime.block_on(pavilion_chain::deploy(&config))?;
            config.contract = Some(deployed.address);
            let anchorer = pavilion_chain::Anchorer::connect(&config)?;
            let started = Instant::now();
            let mut gas = Vec::new();
            for i in 0..args.anchors {
                let root: [u8; 32] = Sha256::digest(i.to_be_bytes()).into();
                let r = runtime.block_on(anchorer.anchor(
                    "bench/audit/0",
                    (i as u64 + 1) * 1000,
                    root,
                ))?;
                gas.push(r.gas_used);
            }
            let anchors_per_s = per_s(args.anchors, started);
            gas.sort_unstable();
            println!("anchors on anvil (automine): {} gas each (median of {}), {anchors_per_s:.1} anchors/s including the duplicate look-up", gas[gas.len() / 2], gas.len());
            anchor = json!({ "gas_per_anchor_median": gas[gas.len() / 2], "gas_min": gas[0], "gas_max": gas[gas.len() - 1], "anchors_per_s": anchors_per_s });
        } else {
            println!(
                "anchors: skipped (no anvil at {}; run scripts/infra install)",
                bin.display()
            );
        }
    }

    write_result(
        &args.out,
        &json!({
            "benchmark": "audit",
            "appends": { "leaves": inputs.len(), "leaf_bytes": inputs[0].len(), "bare_sha256_per_s": bare, "frontier_appends_per_s": appends, "ratio_to_bare_hash": appends / bare },
            "stage_entries_per_s": stage,
            "proofs": { "tree_size": size, "build_s": build_s, "inclusion_make_us": prove_us, "inclusion_verify_us": verify_us, "consistency_make_us": consistency_us },
            "checkpoints_signed_per_s": checkpoints_per_s,
            "anchors": anchor,
            "note": "one thread; stage through the test driver (real stage, RocksDB state committed per record, no broker); anchors on a local anvil with automine",
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}
