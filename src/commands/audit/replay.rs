//! `pavilion audit replay --decisions`: the auditor re-derives what the pipeline decided
//! from what the log says it was given, running the very stage code offline (the runtime's
//! `TestDriver`, its clock set to each event's original time):
//!
//! - every policy outcome, from the logged accepted request and the logged policy documents,
//!   compared byte for byte with the logged outcome;
//! - every decision, from the logged match result (or rejection), compared byte for byte
//!   with the decision on the tenant's topic — whose digest the log holds — with the
//!   signature itself taken from the logged decision (the auditor has no signing key) and
//!   verified against the JWKS instead. An SD-JWT's disclosures carry random salts, so for
//!   those the signed claims other than `_sd`, and the disclosed values, are compared.
//!
//! A request id has one decision: a retry's re-delivery (the same record again, with the same
//! `DecisionIssued`) is counted, not re-derived, and is accepted only byte-identical; two
//! different decisions for one request id on a tenant's topic are a divergence.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use clap::Args;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use pavilion_kafka::TopicReader;
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::Resources;
use pavilion_schemas::{
    AuditEntry, Decision, DecisionIssued, Event, MatchResult, Payload, PolicyDocument,
    PolicyOutcome, Registry, RejectionReason, RequestRejected, ResponseFormat,
};
use pavilion_signing::{jose, DecisionSigner, JwsSigner, SharedSigner, SIGNER};
use sha2::{Digest, Sha256};

use super::LogArgs;
use crate::{cli, kinds};

#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Re-derive policy outcomes and decisions (the one replay there is so far).
    #[arg(long, required = true)]
    pub decisions: bool,
}

/// What the replayed signing stage signs with: the logged decision's key id and subject
/// pseudonym (made with secrets the auditor does not hold), and a placeholder signature
/// that is replaced by the logged one before comparing.
#[derive(Default)]
struct ReplaySigner(Mutex<(String, Option<Vec<u8>>)>);

impl JwsSigner for ReplaySigner {
    fn current_key_id(&self) -> Result<String, String> {
        Ok(self.0.lock().expect("lock").0.clone())
    }
    fn sign(&self, _kid: &str, _message: &[u8]) -> Result<Vec<u8>, String> {
        Ok(vec![0; 64])
    }
}

impl DecisionSigner for ReplaySigner {
    fn keyed_hash(&self, _message: &[u8]) -> Result<Vec<u8>, String> {
        self.0
            .lock()
            .expect("lock")
            .1
            .clone()
            .ok_or_else(|| "the logged decision has no subject pseudonym".into())
    }
}

fn replay_topology(signing_config: &serde_json::Value) -> String {
    format!(
        "application: replay
dlq: dlq
topics:
  dlq: {{ schema: pavilion.DeadLetter }}
  accepted: {{ schema: pavilion.AcceptedRequest }}
  policies: {{ schema: pavilion.PolicyDocument, retention: forever }}
  outcomes: {{ schema: pavilion.PolicyOutcome }}
  matches: {{ schema: pavilion.MatchResult }}
  rejected: {{ schema: pavilion.RequestRejected }}
  issued: {{ schema: pavilion.DecisionIssued }}
  decisions.{{tenant}}: {{ schema: pavilion.Decision }}
stages:
  policy:
    kind: policy
    inputs: [accepted]
    outputs: {{ outcomes: outcomes }}
    globals: {{ documents: policies }}
  signing:
    kind: signing
    inputs: [matches, rejected]
    outputs: {{ decisions: 'decisions.{{tenant}}', issued: issued }}
    stores: [decisions]
    config: {signing_config}
"
    )
}

/// Per shard: the two stages, replayed in the shard's log order.
struct Shard {
    policy: TestDriver,
    signing: TestDriver,
}

fn at(driver: &TestDriver, ms: i64) {
    driver
        .clock()
        .set(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
}

/// The JWKS's Ed25519 keys by kid.
fn jwks_keys(path: &std::path::Path) -> Result<BTreeMap<String, VerifyingKey>> {
    let jwks: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)
        .with_context(|| format!("{} is not a JWKS", path.display()))?;
    let mut keys = BTreeMap::new();
    for k in jwks["keys"].as_array().into_iter().flatten() {
        let x = k["x"].as_str().and_then(|x| B64URL.decode(x).ok());
        if let (Some(kid), Some(Ok(x))) = (
            k["kid"].as_str(),
            x.map(|x| <[u8; 32]>::try_from(x).map(|b| VerifyingKey::from_bytes(&b))),
        ) {
            keys.insert(
                kid.to_owned(),
                x.context("a JWKS key is not an Ed25519 point")?,
            );
        }
    }
    Ok(keys)
}

/// What was signed in a logged decision, and its signature.
fn signed_part(d: &Decision) -> Option<(Vec<u8>, Vec<u8>)> {
    let Payload::Text(text) = &d.payload else {
        return None;
    };
    if d.format == ResponseFormat::Json {
        return Some((text.as_bytes().to_vec(), d.signature.clone()?));
    }
    let jwt = text.split('~').next()?;
    let parsed = jose::parse(jwt).ok()?;
    Some((parsed.signing_input.into_bytes(), parsed.signature))
}

/// The derived decision with the logged signature in place of the placeholder.
fn with_logged_signature(mut derived: Decision, logged: &Decision) -> Decision {
    derived.signature = logged.signature.clone();
    if let (Payload::Text(d), Payload::Text(l)) = (&mut derived.payload, &logged.payload) {
        if derived.format != ResponseFormat::Json {
            let sig = |t: &str| {
                t.split('~')
                    .next()
                    .unwrap_or("")
                    .rsplit('.')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            };
            let (placeholder, real) = (sig(d), sig(l));
            *d = d.replacen(&placeholder, &real, 1);
        }
    }
    derived
}

/// An SD-JWT's signed claims without `_sd`, and its disclosures' names and values.
fn sd_jwt_content(d: &Decision) -> Option<(serde_json::Value, Vec<serde_json::Value>)> {
    let Payload::Text(text) = &d.payload else {
        return None;
    };
    let mut parts = text.split('~');
    let mut claims: serde_json::Value =
        serde_json::from_slice(&jose::parse(parts.next()?).ok()?.payload).ok()?;
    claims.as_object_mut()?.remove("_sd");
    let mut disclosed: Vec<serde_json::Value> = parts
        .filter(|p| !p.is_empty())
        .filter_map(|p| serde_json::from_slice::<serde_json::Value>(&B64URL.decode(p).ok()?).ok())
        .map(|mut d| {
            d.as_array_mut().map(|a| a.remove(0)); // the salt
            d
        })
        .collect();
    disclosed.sort_by_key(|d| d.to_string());
    Some((claims, disclosed))
}

pub fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let topology = cli::load(&args.log.cluster.file)?;
    let signing = topology
        .stages
        .values()
        .find(|s| s.kind == pavilion_signing::KIND.name)
        .context("the topology has no signing stage to replay")?;
    let yaml = replay_topology(&signing.config);
    let Some(jwks) = &args.log.keys.jwks else {
        bail!("replay verifies each decision's signature: give --jwks FILE");
    };
    let jwks = jwks_keys(jwks)?;
    let entries: Vec<AuditEntry> = super::read::<AuditEntry>(
        &args.log,
        &match &args.log.log_topic {
            Some(t) => t.clone(),
            None => cli::topic_for(&topology, AuditEntry::FULL_NAME)?.name,
        },
    )?
    .into_iter()
    .map(|(_, e)| e)
    .collect();

    // The logged events, by position, from every topic the log points into.
    let settings = cli::settings(&args.log.cluster, "replay")?;
    let mut events: BTreeMap<(String, i32, i64), Vec<u8>> = BTreeMap::new();
    let topics: std::collections::BTreeSet<&str> =
        entries.iter().map(|e| e.event.topic.as_str()).collect();
    for topic in topics {
        for r in TopicReader::new(&settings, &[topic])?.read_to_end(Duration::from_secs(120))? {
            if let Some(v) = r.value {
                events.insert((r.topic, r.partition, r.offset), v);
            }
        }
    }
    let registry = Registry::builtin();
    let event = |e: &AuditEntry| -> Result<Vec<u8>> {
        let bytes = events
            .get(&(e.event.topic.clone(), e.event.partition, e.event.offset))
            .with_context(|| {
                format!(
                    "{} entry {}: the event at {}/{}@{} is gone (past retention?)",
                    e.origin, e.index, e.event.topic, e.event.partition, e.event.offset
                )
            })?;
        if Sha256::digest(bytes).as_slice() != e.event_digest {
            bail!("{} entry {}: the event differs from its logged digest (run `pavilion audit verify`)", e.origin, e.index);
        }
        Ok(bytes.clone())
    };
    // Logged outcomes by request id (the time they were evaluated at, and their bytes).
    let mut outcomes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for e in entries
        .iter()
        .filter(|e| e.event.event_type == PolicyOutcome::FULL_NAME)
    {
        outcomes.insert(e.request_id.clone().unwrap_or_default(), event(e)?);
    }
    // Decisions as delivered, from the tenants' topics the issued events name: every delivery
    // of each request id, in order (a retry's re-delivery is the same record again).
    let mut delivered: BTreeMap<(String, String), Vec<Vec<u8>>> = BTreeMap::new();
    let mut read_topics = std::collections::BTreeSet::new();

    // The log orders events of different topics as the audit stage happened to read them,
    // not as the pipeline produced them (a decision may be logged before its match result):
    // gather by kind first, then replay each shard's documents before its requests.
    let mut documents: BTreeMap<&str, Vec<&AuditEntry>> = BTreeMap::new();
    let mut accepted: Vec<&AuditEntry> = Vec::new();
    let mut issued: Vec<&AuditEntry> = Vec::new();
    let mut inputs: BTreeMap<String, (&str, Vec<u8>)> = BTreeMap::new();
    for e in &entries {
        let request_id = e.request_id.clone().unwrap_or_default();
        match e.event.event_type.as_str() {
            PolicyDocument::FULL_NAME => documents.entry(&e.origin).or_default().push(e),
            pavilion_schemas::AcceptedRequest::FULL_NAME => accepted.push(e),
            DecisionIssued::FULL_NAME => issued.push(e),
            MatchResult::FULL_NAME => {
                inputs.insert(request_id, ("matches", event(e)?));
            }
            RequestRejected::FULL_NAME => {
                // A retry's marker and a conflict decide nothing: the input of a request's
                // decision is its original's match result or rejection.
                let bytes = event(e)?;
                let reason = registry.decode::<RequestRejected>(&bytes)?.reason;
                if !matches!(
                    reason,
                    RejectionReason::Duplicate | RejectionReason::Conflict
                ) {
                    inputs.insert(request_id, ("rejected", bytes));
                }
            }
            _ => {}
        }
    }
    let kinds = kinds::all();
    let signer = Arc::new(ReplaySigner::default());
    let mut shards: BTreeMap<String, Shard> = BTreeMap::new();
    for e in &entries {
        if shards.contains_key(&e.origin) {
            continue;
        }
        let mut signing = TestDriver::new(&yaml, "signing", &kinds);
        let mut resources = Resources::default();
        let shared: SharedSigner = signer.clone();
        resources.insert(SIGNER, shared);
        signing.attach_resources(resources);
        let mut policy = TestDriver::new(&yaml, "policy", &kinds);
        // Every policy document, from whichever shard logged it: the stage holds them all
        // in a global store and finds the revision each accepted request names.
        for d in documents.values().flatten() {
            policy.send_global_raw("policies", b"", Some(&event(d)?));
        }
        shards.insert(e.origin.clone(), Shard { policy, signing });
    }
    let (mut outcomes_same, mut decisions_same, mut sd_jwts) = (0u64, 0u64, 0u64);
    let mut redeliveries = 0u64;
    let mut decided = std::collections::BTreeSet::new();
    let bar = cli::bar((accepted.len() + issued.len()) as u64, "replaying");
    let mut mismatch = None;
    for e in accepted {
        bar.inc(1);
        let shard = shards
            .get_mut(&e.origin)
            .expect("every origin has its drivers");
        let request_id = e.request_id.clone().unwrap_or_default();
        let Some(logged) = outcomes.get(&request_id) else {
            continue; // not evaluated yet when the log was read
        };
        let evaluated_at = registry.decode::<PolicyOutcome>(logged)?.evaluated_at;
        at(&shard.policy, evaluated_at);
        let out = shard.policy.send_raw("accepted", b"", &event(e)?);
        match out.iter().find(|r| r.topic == "outcomes") {
            Some(r) if &r.value == logged => outcomes_same += 1,
            other => {
                mismatch = Some(format!(
                    "request {request_id}: the policy outcome re-derived from the logged request and policy is not the logged one:\n  logged:  {:?}\n  derived: {:?}",
                    registry.decode::<PolicyOutcome>(logged).ok(),
                    other.map(|r| shard.policy.render(std::slice::from_ref(r)))
                ));
                break;
            }
        }
    }
    for e in issued {
        if mismatch.is_some() {
            break;
        }
        bar.inc(1);
        let shard = shards
            .get_mut(&e.origin)
            .expect("every origin has its drivers");
        let request_id = e.request_id.clone().unwrap_or_default();
        let issued: DecisionIssued = registry.decode(&event(e)?)?;
        if read_topics.insert(issued.topic.clone()) {
            for r in TopicReader::new(&settings, &[&issued.topic])?
                .read_to_end(Duration::from_secs(120))?
            {
                if let Some(v) = r.value {
                    let d: Decision = registry.decode(&v)?;
                    delivered
                        .entry((issued.topic.clone(), d.request_id))
                        .or_default()
                        .push(v);
                }
            }
        }
        let Some((logged_bytes, others)) = delivered
            .get(&(issued.topic.clone(), request_id.clone()))
            .and_then(|d| d.split_first())
        else {
            bail!(
                "request {request_id}: no decision on {} (past retention?)",
                issued.topic
            );
        };
        if others.iter().any(|d| d != logged_bytes) {
            mismatch = Some(format!(
                "request {request_id}: two different decisions on {} (a request id has one; a retry gets the same record again)",
                issued.topic
            ));
            break;
        }
        if Sha256::digest(logged_bytes).as_slice() != issued.decision_digest {
            mismatch = Some(format!(
                "request {request_id}: the decision on {} is not the one the log's digest names",
                issued.topic
            ));
            break;
        }
        if !decided.insert((issued.topic.clone(), request_id.clone())) {
            // A re-delivery to a retry: the very record (checked above), not derived again.
            redeliveries += 1;
            continue;
        }
        let logged: Decision = registry.decode(logged_bytes)?;
        let (topic, input) = inputs.get(&request_id).with_context(|| {
            format!("request {request_id}: its decision is logged, its input is not")
        })?;
        *signer.0.lock().expect("lock") = (
            logged.signing_key_id.clone(),
            logged.subject_pseudonym.clone(),
        );
        at(&shard.signing, logged.issued_at);
        let out = shard.signing.send_raw(topic, b"", input);
        let Some(derived) = out
            .iter()
            .find_map(|r| registry.decode::<Decision>(&r.value).ok())
        else {
            mismatch = Some(format!(
                "request {request_id}: the replayed signing stage issued no decision: {}",
                shard.signing.render(&out)
            ));
            break;
        };
        // The signature: the logged one, verified against the JWKS.
        let verified = signed_part(&logged)
            .zip(jwks.get(&logged.signing_key_id))
            .is_some_and(|((message, sig), key)| {
                Signature::from_slice(&sig).is_ok_and(|s| key.verify(&message, &s).is_ok())
            });
        if !verified {
            mismatch = Some(format!("request {request_id}: the decision's signature does not verify under {} of the JWKS", logged.signing_key_id));
            break;
        }
        let same = if logged.format == ResponseFormat::SdJwt {
            sd_jwts += 1;
            sd_jwt_content(&derived) == sd_jwt_content(&logged)
        } else {
            registry.encode(&with_logged_signature(derived.clone(), &logged))? == *logged_bytes
        };
        if !same {
            mismatch = Some(format!(
                "request {request_id}: the decision re-derived from the logged input is not the delivered one:\n  delivered: {:?}\n  derived:   {:?}",
                logged.payload, derived.payload
            ));
            break;
        }
        decisions_same += 1;
    }
    bar.finish_and_clear();
    if let Some(m) = mismatch {
        println!("DIVERGENCE: {m}");
        return Ok(ExitCode::from(1));
    }
    println!(
        "ok: {outcomes_same} policy outcomes and {decisions_same} decisions re-derived identical ({redeliveries} re-deliveries to retries, byte-identical; {sd_jwts} SD-JWTs compared without their random disclosure salts); every decision's signature verifies"
    );
    Ok(ExitCode::SUCCESS)
}
