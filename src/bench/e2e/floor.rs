//! The cryptographic floor of a request, measured over the run's own records: what the path
//! could not do without, by bare primitives — one Ed25519 verification of the request, one
//! Ed25519 signature over its decision's payload, one Cedar evaluation of the request under
//! the bench's policy (the policy crate's engine), and the SHA-256s the path computes (the
//! audit's digest of every event it logs, each entry's leaf hash and one Merkle node per
//! append, the decision's and its payload's digests, one set key per subject token).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{anyhow, Context as _, Result};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use pavilion_policy::document::SourceDocument;
use pavilion_policy::engine::CompiledPolicy;
use pavilion_schemas::{set_key, AuditEntry, Decision, Payload, PolicyRef, VerificationRequest};
use serde_json::json;
use sha2::{Digest, Sha256};

/// What the run wrote that the floor is measured over.
pub(super) struct RunRecords {
    /// Every request of the run, as sent.
    pub requests: Vec<VerificationRequest>,
    /// The bytes of every event the audit stage logs (its inputs' records).
    pub audited: Vec<Vec<u8>>,
    /// Every audit log entry.
    pub entries: Vec<AuditEntry>,
    /// Every decision record: its bytes and its decoded form.
    pub decisions: Vec<(Vec<u8>, Decision)>,
}

/// Microseconds per request of each primitive.
pub(super) struct Floor {
    pub verify_us: f64,
    pub sign_us: f64,
    pub cedar_us: f64,
    pub sha256_us: f64,
    /// SHA-256s per request.
    pub sha256_count: f64,
}

impl Floor {
    pub fn total_us(&self) -> f64 {
        self.verify_us + self.sign_us + self.cedar_us + self.sha256_us
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "us_per_request": self.total_us(),
            "ed25519_verify_us": self.verify_us,
            "ed25519_sign_us": self.sign_us,
            "cedar_evaluation_us": self.cedar_us,
            "sha256_us": self.sha256_us,
            "sha256_per_request": self.sha256_count,
        })
    }
}

/// The median of three passes of `f` over everything, in µs per request.
fn per_request(requests: usize, mut f: impl FnMut()) -> f64 {
    let mut passes: Vec<f64> = (0..3)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e6 / requests as f64
        })
        .collect();
    passes.sort_by(f64::total_cmp);
    passes[1]
}

/// Measures the floor over the run's records. `tenant_keys` verify the requests, by tenant;
/// `policy` is the policy document (YAML) the bench pushed.
pub(super) fn measure(
    run: &RunRecords,
    tenant_keys: &BTreeMap<String, VerifyingKey>,
    policy: &str,
) -> Result<Floor> {
    let n = run.requests.len();
    anyhow::ensure!(n > 0, "no requests to measure the floor over");
    let signed: Vec<(&VerifyingKey, Vec<u8>, ed25519_dalek::Signature)> = run
        .requests
        .iter()
        .map(|r| {
            let signature = ed25519_dalek::Signature::from_slice(&r.signature)
                .map_err(|e| anyhow!("request {}: {e}", r.request_id))?;
            let key = tenant_keys
                .get(&r.tenant_id)
                .with_context(|| format!("request {}: no key of {}", r.request_id, r.tenant_id))?;
            Ok((key, r.signing_bytes(), signature))
        })
        .collect::<Result<_>>()?;
    let verify_us = per_request(n, || {
        for (key, bytes, signature) in &signed {
            assert!(key.verify_strict(bytes, signature).is_ok());
        }
    });

    let payloads: Vec<&[u8]> = run
        .decisions
        .iter()
        .map(|(_, d)| match &d.payload {
            Payload::Text(t) => t.as_bytes(),
            Payload::Binary(b) => b.as_slice(),
        })
        .collect();
    let key = SigningKey::from_bytes(&[7; 32]);
    let sign_us = per_request(payloads.len().max(1), || {
        for p in &payloads {
            std::hint::black_box(key.sign(p));
        }
    });

    let spec = SourceDocument::parse(policy)
        .map_err(|f| anyhow!("the bench's policy: {f:?}"))?
        .spec;
    let reference = PolicyRef {
        policy_id: spec.policy.clone(),
        version: 1,
        content_hash: spec.content_hash(),
    };
    let compiled = CompiledPolicy::compile(spec, reference)
        .map_err(|f| anyhow!("the bench's policy: {f:?}"))
        .context("compiling")?;
    let regions = ["eu".to_owned(), "us".to_owned()];
    let cedar_us = per_request(n, || {
        for r in &run.requests {
            std::hint::black_box(compiled.evaluate(r, &regions, r.created_at));
        }
    });

    // Every input the path hashes with SHA-256, and the set keys (a SHA-256 each).
    let mut inputs: Vec<Vec<u8>> = run.audited.clone();
    for entry in &run.entries {
        inputs.push(entry.leaf_input());
        inputs.push([[1u8].as_slice(), &[0; 32], &[0; 32]].concat());
    }
    for (bytes, _) in &run.decisions {
        inputs.push(bytes.clone());
    }
    inputs.extend(payloads.iter().map(|p| p.to_vec()));
    let tokens: Vec<(&str, &[u8])> = run
        .requests
        .iter()
        .flat_map(|r| {
            r.subject_tokens
                .iter()
                .map(|t| (t.provider_id.as_str(), t.token.as_slice()))
        })
        .collect();
    let sha256_us = per_request(n, || {
        for input in &inputs {
            std::hint::black_box(Sha256::digest(input));
        }
        for (provider, token) in &tokens {
            std::hint::black_box(set_key(provider, token));
        }
    });
    Ok(Floor {
        verify_us,
        sign_us,
        cedar_us,
        sha256_us,
        sha256_count: (inputs.len() + tokens.len()) as f64 / n as f64,
    })
}
