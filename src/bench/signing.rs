//! `pavilion bench signing`: Ed25519 signatures/s with software keys vs in an HSM (SoftHSM2
//! over PKCS#11), and the signing stage's decisions/s per response format, in one run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use pavilion_keys::hsm::{HsmConfig, HsmKeyRing};
use pavilion_keys::KeyRing;
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::{Resources, StageKinds};
use pavilion_schemas::{
    ClaimMatch, ClaimPlan, ClaimRequest, MatchResult, MatchStatus, PolicyEffect, PolicyOutcome,
    ResponseFormat, VerificationRequest,
};
use pavilion_signing::{SharedSigner, SIGNER};
use serde_json::json;

use super::write_result;
use crate::commands::keys::{SharedKeys, SigningKeys};

/// Options of the signing benchmark.
#[derive(Args)]
pub struct SigningBenchArgs {
    /// Signatures per signer measurement.
    #[arg(long, default_value_t = 5_000)]
    pub signatures: usize,
    /// Decisions per format through the signing stage.
    #[arg(long, default_value_t = 5_000)]
    pub decisions: usize,
    /// The PKCS#11 module (a SoftHSM2 token is made for the run).
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pub hsm_module: PathBuf,
    /// Where to write the JSON result.
    #[arg(long, default_value = "bench/results/signing.json")]
    pub out: PathBuf,
}

fn rate(n: usize, f: &mut dyn FnMut(usize) -> Result<()>) -> Result<f64> {
    let started = Instant::now();
    for i in 0..n {
        f(i)?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// A SoftHSM2 token of the run's own, with one key.
fn hsm(dir: &std::path::Path, module: &std::path::Path) -> Result<HsmKeyRing> {
    let conf = dir.join("softhsm2.conf");
    std::fs::create_dir_all(dir.join("tokens"))?;
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\n", dir.join("tokens").display()),
    )?;
    // The module reads it at initialization, in this process.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--so-pin",
            "1234",
        ])
        .args(["--pin", "5678"])
        .output()
        .context("softhsm2-util (Debian package softhsm2)")?;
    if !init.status.success() {
        bail!("softhsm2-util: {}", String::from_utf8_lossy(&init.stderr));
    }
    let ring = HsmKeyRing::open(&HsmConfig {
        module: module.to_owned(),
        token: "bench".into(),
        pin: "5678".into(),
    })?;
    ring.generate()?;
    Ok(ring)
}

fn match_result(i: usize, format: ResponseFormat) -> MatchResult {
    let claim = "account_verified".to_owned();
    MatchResult {
        outcome: PolicyOutcome {
            request: VerificationRequest {
                request_id: format!("r{i}"),
                tenant_id: "bench".into(),
                key_id: "k1".into(),
                signature: vec![0; 64],
                signed_at: 0,
                nonce: format!("n{i}"),
                created_at: 0,
                claims: vec![ClaimRequest {
                    name: claim.clone(),
                    params: BTreeMap::new(),
                }],
                purpose: "kyc".into(),
                subject_jurisdiction: "DE".into(),
                consent_ref: None,
                subject_tokens: Vec::new(),
                response_format: None,
            },
            policy: None,
            effect: PolicyEffect::Permit,
            denying_rules: Vec::new(),
            plan: vec![ClaimPlan {
                claim_index: 0,
                claim_name: claim.clone(),
                effect: PolicyEffect::Permit,
                denying_rules: Vec::new(),
                providers: vec!["bank".into()],
                evidence_required: Vec::new(),
                disclosable_attributes: vec![claim.clone()],
                max_credential_age_ms: None,
            }],
            response_format: format,
            response_template: None,
            evaluated_at: 0,
        },
        results: vec![ClaimMatch {
            claim_index: 0,
            claim_name: claim,
            status: MatchStatus::Matched,
            reason: None,
            evidence: Vec::new(),
        }],
        matched_at: 0,
    }
}

pub fn signing(args: SigningBenchArgs) -> Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let software = KeyRing::new(&dir.path().join("ring"), b"bench");
    software.generate()?;
    let software = Arc::new(SigningKeys::Software(software));
    let hsm = Arc::new(SigningKeys::Hsm(hsm(
        &dir.path().join("hsm"),
        &args.hsm_module,
    )?));
    let message = [7u8; 300];
    let mut signer_rates = serde_json::Map::new();
    println!("Ed25519 signatures of 300 bytes, one thread");
    for (name, keys) in [("software", &software), ("hsm", &hsm)] {
        let kid = pavilion_signing::JwsSigner::current_key_id(keys.as_ref())
            .map_err(anyhow::Error::msg)?;
        let per_s = rate(args.signatures, &mut |_| {
            pavilion_signing::JwsSigner::sign(keys.as_ref(), &kid, &message)
                .map(drop)
                .map_err(anyhow::Error::msg)
        })?;
        println!("  {name:<9} {per_s:>9.0} signatures/s");
        signer_rates.insert(name.into(), json!(per_s));
    }

    println!("signing stage, decisions/s per format (software keys, one thread, no broker)");
    let mut stage_rates = serde_json::Map::new();
    for format in [
        ResponseFormat::Json,
        ResponseFormat::Jws,
        ResponseFormat::Jwt,
        ResponseFormat::VcJose,
        ResponseFormat::SdJwt,
    ] {
        let mut driver = TestDriver::new(
            pavilion_signing::STANDALONE_TOPOLOGY,
            "signing",
            &StageKinds::new([&pavilion_signing::KIND]),
        );
        let mut resources = Resources::default();
        resources.insert::<SharedSigner>(SIGNER, Arc::new(SharedKeys(software.clone())));
        driver.attach_resources(resources);
        let inputs: Vec<MatchResult> = (0..args.decisions)
            .map(|i| match_result(i, format))
            .collect();
        let per_s = rate(args.decisions, &mut |i| {
            let out = driver.send("matches", "bench", &inputs[i]);
            if out.len() != 2 {
                bail!("{format:?}: expected a decision and its audit event, got {out:?}");
            }
            Ok(())
        })?;
        let name = serde_json::to_value(format)?
            .as_str()
            .unwrap_or("?")
            .to_owned();
        println!("  {name:<8} {per_s:>9.0} decisions/s");
        stage_rates.insert(name, json!(per_s));
    }
    write_result(
        &args.out,
        &json!({
            "benchmark": "signing",
            "signatures_per_s": signer_rates,
            "stage_decisions_per_s": stage_rates,
            "note": "stage: TaskRunner with real RocksDB and the real stage, one record per committed step (the test driver), software keys; hsm: SoftHSM2 2.6 via PKCS#11, CKM_EDDSA",
        }),
    )?;
    Ok(ExitCode::SUCCESS)
}
