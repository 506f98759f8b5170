//! Zero-knowledge predicates: the round trip to the provider for a claim whose plan asks for
//! `zk_predicate` evidence ("over 18?" answered by a Groth16 proof over the provider's
//! committed birth date).
//!
//! 1. Matching finds the member in the provider's signed set, with the provider's commitment
//!    to the attribute the claim's predicate is over. The stage asks the provider for a proof
//!    on `pavilion.evidence.requests.<provider>`: set key, circuit, bound and the request's
//!    nonce, nothing else. The request waits in the `pending` store.
//! 2. The provider answers on `pavilion.evidence.responses`, on the partition the request
//!    named, echoing the question; an answer is kept until the next punctuation.
//! 3. Each punctuation verifies every answer received since the last one in one batch (a
//!    random linear combination; a failing batch is bisected to its bad proofs), against
//!    public inputs the stage rebuilt itself: the commitment from the signed set entry, the
//!    bound from the claim and the time the request was evaluated, the nonce from the request
//!    id. Nothing the provider says is trusted without the proof; a proof made for another
//!    request, subject, bound or circuit fails.
//! 4. An ask not answered is sent again with exponential backoff until its deadline; then the
//!    provider has failed (`provider_timeout`), its breaker counts it, and the claim goes to
//!    the next provider in the plan. When none can answer, the claim is `unavailable` with
//!    every provider's reason.
//!
//! Answers are matched to asks by the question itself (provider, nonce, circuit, bound, set
//! key), never by proof bytes: Groth16 proofs can be re-randomized.
//!
//! Disclosures (`bbs_disclosure` evidence) take the same round trip: the "circuit" is
//! `bbs_disclosure`, the ask names the attributes to reveal, and the answer's BBS proof is
//! verified at the punctuation (one by one: BBS has no batch verification here) with the
//! provider's BBS key as the registry held it when the stage asked, the request's nonce as
//! presentation header, and the names asked for — a proof that reveals more or other
//! attributes, another issuer, or an expired signature is refused. One disclosure per
//! provider and request: two claims of one request asking one provider share the question.
//!
//! Store layout (`pending`): `req/<request key>` → [`Pending`]; `ask/<question>` → the
//! request keys waiting for it; `got/<question>` → the answer, until verified;
//! `due/<ms, 20 digits>\0<request key>` → when the request must be looked at again.

use std::collections::BTreeMap;

use pavilion_credentials::bbs::{self, DISCLOSURE_EVIDENCE};
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::{Context, ProcessError};
use pavilion_schemas::{
    BbsDisclosure, ClaimMatch, EvidenceKind, EvidenceRef, EvidenceRequest, EvidenceResponse,
    EvidenceStatus, MatchResult, MatchStatus, PolicyOutcome,
};
use pavilion_zk::{field_from_bytes, Circuit, Proof, PublicInputs};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::breaker::{Breakers, Transition};
use crate::processor::{count_claims, Lookup, Step};
use crate::PsiConfig;

pub(crate) const STORE: &str = "pending";

/// What the stage asks a provider to prove, with what it will check the proof against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Question {
    pub provider: String,
    pub set_key: Vec<u8>,
    pub circuit: String,
    pub attribute: String,
    pub bound: i64,
    pub nonce: Vec<u8>,
    /// From the provider's signed set entry; never from the answer.
    pub commitment: Vec<u8>,
    /// For a disclosure: the attributes to reveal, exactly.
    #[serde(default)]
    pub disclose: Vec<String>,
    /// For a disclosure: the provider's BBS key from its registry record; never from the
    /// answer.
    #[serde(default)]
    pub public_key: Vec<u8>,
}

impl Question {
    fn key(&self) -> String {
        question_key(
            &self.provider,
            &self.nonce,
            &self.circuit,
            self.bound,
            &self.set_key,
        )
    }
}

fn question_key(provider: &str, nonce: &[u8], circuit: &str, bound: i64, set_key: &[u8]) -> String {
    format!(
        "{provider}\0{}\0{circuit}\0{bound}\0{}",
        hex::encode(nonce),
        hex::encode(set_key)
    )
}

/// A claim waiting for a provider's proof: where it is in its plan and what the earlier
/// providers said.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Waiting {
    /// Position of the claim in the outcome's plan.
    pub claim: usize,
    /// Position of the provider asked in the claim's plan.
    pub provider_pos: usize,
    pub question: Question,
    /// Evidence already established (membership, attestation signature).
    pub evidence: Vec<EvidenceRef>,
    pub attempt: i32,
    pub retry_at: i64,
    pub deadline: i64,
    /// Reasons of earlier providers that could not answer.
    pub unavailable: Vec<String>,
    /// Whether an earlier provider answered (not matched).
    pub answered: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    outcome: PolicyOutcome,
    results: Vec<Option<ClaimMatch>>,
    waiting: Vec<Waiting>,
    wake_at: i64,
}

fn req_key(key: &[u8]) -> Vec<u8> {
    [b"req/".as_slice(), key].concat()
}

fn ask_key(question: &str) -> Vec<u8> {
    format!("ask/{question}").into_bytes()
}

fn got_key(question: &str) -> Vec<u8> {
    format!("got/{question}").into_bytes()
}

fn due_key(at: i64, key: &[u8]) -> Vec<u8> {
    [format!("due/{at:020}\0").as_bytes(), key].concat()
}

/// The public bound of a claim's predicate: for `date_le_cutoff`, the date `threshold` years
/// before the day the request was evaluated (UTC), as YYYYMMDD, so someone born on that day
/// is exactly old enough; for `int_ge_threshold`, the threshold itself.
pub(crate) fn bound(
    circuit: Circuit,
    threshold: Option<&String>,
    evaluated_at_ms: i64,
) -> Result<i64, &'static str> {
    let threshold: u32 = threshold
        .ok_or("missing_threshold")?
        .trim()
        .parse()
        .map_err(|_| "invalid_threshold")?;
    match circuit {
        Circuit::DateLeCutoff => {
            use chrono::{Datelike, Months};
            let day = chrono::DateTime::from_timestamp_millis(evaluated_at_ms)
                .ok_or("invalid_time")?
                .date_naive();
            // Feb 29 minus whole years is Feb 28 in a common year: chrono clamps to the
            // month's last day, which is the legal reading of "N years old".
            let cutoff = day
                .checked_sub_months(Months::new(
                    threshold.checked_mul(12).ok_or("invalid_threshold")?,
                ))
                .ok_or("invalid_threshold")?;
            Ok(i64::from(cutoff.year()) * 10_000
                + i64::from(cutoff.month()) * 100
                + i64::from(cutoff.day()))
        }
        Circuit::IntGeThreshold => Ok(i64::from(threshold)),
    }
}

/// Parks a request some of whose claims wait for proofs, and sends the asks.
pub(crate) fn start(
    ctx: &mut Context<'_>,
    key: &[u8],
    outcome: PolicyOutcome,
    results: Vec<Option<ClaimMatch>>,
    waiting: Vec<Waiting>,
) -> Result<(), ProcessError> {
    for w in &waiting {
        send(ctx, w)?;
        add_waiter(ctx, &w.question.key(), key)?;
    }
    let pending = Pending {
        outcome,
        results,
        waiting,
        wake_at: i64::MAX,
    };
    save(ctx, key, pending, None)
}

fn add_waiter(ctx: &mut Context<'_>, question: &str, key: &[u8]) -> Result<(), ProcessError> {
    let mut store = ctx.store(STORE)?;
    let waiter = hex::encode(key);
    let mut waiters = store
        .get::<Vec<String>>(&ask_key(question))?
        .unwrap_or_default();
    if !waiters.contains(&waiter) {
        waiters.push(waiter);
    }
    store.put(&ask_key(question), &waiters)
}

/// A new ask for `question`, deadline `now + proof_deadline`.
pub(crate) fn waiting(
    config: &PsiConfig,
    now_ms: i64,
    claim: usize,
    provider_pos: usize,
    question: Question,
    evidence: Vec<EvidenceRef>,
) -> Waiting {
    Waiting {
        claim,
        provider_pos,
        question,
        evidence,
        attempt: 1,
        retry_at: now_ms + config.proof_retry_after.as_millis() as i64,
        deadline: now_ms + config.proof_deadline.as_millis() as i64,
        unavailable: Vec::new(),
        answered: false,
    }
}

/// The key of an ask's record: the nonce for the first, the nonce and the attempt for a retry.
/// The provider's evidence instances share its topic's partitions, so a key of its own sends a
/// retry, by Kafka's partitioner, most likely to another partition than the first ask's, and
/// so to another instance: an instance that died or hung holding the first partition costs the
/// retry interval, not the deadline. (Likely, not certain: a retry lands on the first
/// partition again one time in `partitions`.)
fn ask_record_key(w: &Waiting) -> String {
    match w.attempt {
        1 => hex::encode(&w.question.nonce),
        attempt => format!("{}.{attempt}", hex::encode(&w.question.nonce)),
    }
}

fn send(ctx: &mut Context<'_>, w: &Waiting) -> Result<(), ProcessError> {
    let q = &w.question;
    let request = EvidenceRequest {
        set_key: q.set_key.clone(),
        circuit: q.circuit.clone(),
        attribute: q.attribute.clone(),
        bound: q.bound,
        nonce: q.nonce.clone(),
        reply_partition: ctx.partition(),
        attempt: w.attempt,
        deadline: w.deadline,
        disclose: q.disclose.clone(),
    };
    ctx.count("evidence.asked", &q.provider);
    ctx.emit_to_member("proof_requests", &q.provider, ask_record_key(w), &request)?;
    Ok(())
}

/// Stores the request with its next wake-up, or — nothing left to wait for — emits its match
/// result and forgets it.
fn save(
    ctx: &mut Context<'_>,
    key: &[u8],
    mut pending: Pending,
    previous_wake: Option<i64>,
) -> Result<(), ProcessError> {
    let mut store = ctx.store(STORE)?;
    if let Some(at) = previous_wake {
        store.delete(&due_key(at, key));
    }
    if pending.waiting.is_empty() {
        store.delete(&req_key(key));
        let results: Vec<ClaimMatch> = pending.results.into_iter().flatten().collect();
        count_claims(ctx, &results);
        let now_ms = epoch_millis(ctx.now());
        return ctx.emit(
            "matches",
            key.to_vec(),
            &MatchResult {
                outcome: pending.outcome,
                results,
                matched_at: now_ms,
            },
        );
    }
    pending.wake_at = pending
        .waiting
        .iter()
        .map(|w| w.retry_at.min(w.deadline))
        .min()
        .unwrap_or(i64::MAX);
    store.put(&due_key(pending.wake_at, key), &())?;
    store.put(&req_key(key), &pending)
}

/// Largest proof field kept for verification; anything longer is a bad answer outright.
const MAX_PROOF_BYTES: usize = 1024;
/// A BBS proof hiding at most 64 messages.
const MAX_DISCLOSURE_PROOF_BYTES: usize = 272 + 32 * bbs::MAX_MESSAGES;
const MAX_DISCLOSURE_HEADER_BYTES: usize = 8 * 1024;

/// An answer from a provider: kept for the next punctuation if someone waits for it.
pub(crate) fn on_response(
    ctx: &mut Context<'_>,
    mut response: EvidenceResponse,
) -> Result<(), ProcessError> {
    let question = question_key(
        &response.provider_id,
        &response.nonce,
        &response.circuit,
        response.bound,
        &response.set_key,
    );
    let mut store = ctx.store(STORE)?;
    if store.get::<Vec<String>>(&ask_key(&question))?.is_none() {
        // Late (already decided or timed out), duplicated, or for a question never asked.
        ctx.count("evidence.unmatched", &response.provider_id);
        return Ok(());
    }
    if store
        .get::<EvidenceResponse>(&got_key(&question))?
        .is_some()
    {
        ctx.count("evidence.duplicate", &response.provider_id);
        return Ok(());
    }
    let oversized_disclosure = response.disclosure.as_ref().is_some_and(|d| {
        d.proof.len() > MAX_DISCLOSURE_PROOF_BYTES
            || d.header.len() > MAX_DISCLOSURE_HEADER_BYTES
            || d.disclosed.len() > bbs::MAX_MESSAGES
            || d.disclosed
                .iter()
                .any(|a| a.name.len() + a.value.len() > 512)
    });
    if oversized_disclosure
        || response
            .proof
            .as_ref()
            .is_some_and(|p| p.len() > MAX_PROOF_BYTES)
    {
        response.proof = None;
        response.disclosure = None;
        response.status = EvidenceStatus::Unknown;
        response.detail = Some("oversized proof".into());
    }
    response.detail = response.detail.map(|d| d.chars().take(200).collect());
    store.put(&got_key(&question), &response)
}

/// What became of one wait.
enum Settled {
    Proved(Box<EvidenceRef>),
    DoesNotHold,
    /// The provider failed (counts against its breaker).
    Failed(&'static str),
    /// The provider answered but cannot prove (no member, no attribute).
    Unavailable(&'static str),
}

/// The punctuation: verifies the answers received, then sends retries and gives up on asks
/// past their deadline.
pub(crate) fn punctuate(
    ctx: &mut Context<'_>,
    config: &PsiConfig,
    breakers: &mut Breakers,
) -> Result<(), ProcessError> {
    let now_ms = epoch_millis(ctx.now());
    let mut requests: BTreeMap<Vec<u8>, Pending> = BTreeMap::new();
    let mut wakes: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    let mut settled: Vec<(Vec<u8>, String, Settled)> = Vec::new();

    // 1. Answers received, verified in one batch.
    let answers = ctx.store(STORE)?.scan::<EvidenceResponse>(
        b"got/",
        b"got0",
        config.max_verify_batch as usize,
    )?;
    let mut batch: Vec<(Circuit, PublicInputs, Proof)> = Vec::new();
    let mut batch_of: Vec<(Vec<u8>, String, Waiting)> = Vec::new();
    for (got, response) in answers {
        let question = String::from_utf8_lossy(&got[4..]).into_owned();
        let mut store = ctx.store(STORE)?;
        store.delete(&got);
        let waiters = store
            .get::<Vec<String>>(&ask_key(&question))?
            .unwrap_or_default();
        store.delete(&ask_key(&question));
        for waiter in waiters {
            let Ok(key) = hex::decode(&waiter) else {
                continue;
            };
            let Some(pending) = load(ctx, &mut requests, &mut wakes, &key)? else {
                continue;
            };
            let Some(w) = pending
                .waiting
                .iter()
                .find(|w| w.question.key() == question)
            else {
                continue;
            };
            let outcome = match response.status {
                EvidenceStatus::Proved if w.question.circuit == DISCLOSURE_EVIDENCE => {
                    match verify_disclosure(&w.question, &response, now_ms) {
                        Ok(evidence) => {
                            ctx.count("disclosures.verified", &w.question.provider);
                            Settled::Proved(Box::new(disclosure_evidence(w, evidence)))
                        }
                        Err(why) => {
                            ctx.count("disclosures.rejected", why);
                            Settled::Failed(why)
                        }
                    }
                }
                EvidenceStatus::Proved => match rebuild(&w.question, &response) {
                    Ok(item) => {
                        batch.push(item);
                        batch_of.push((key, question.clone(), w.clone()));
                        continue;
                    }
                    Err(why) => Settled::Failed(why),
                },
                EvidenceStatus::DoesNotHold => Settled::DoesNotHold,
                EvidenceStatus::UnknownSubject => Settled::Unavailable("evidence_unknown_subject"),
                EvidenceStatus::NoAttribute => Settled::Unavailable("evidence_no_attribute"),
                EvidenceStatus::Failed => Settled::Failed("provider_failed"),
                EvidenceStatus::Unknown => Settled::Failed("bad_response"),
            };
            settled.push((key, question.clone(), outcome));
        }
    }
    if !batch.is_empty() {
        ctx.count("proofs.batch", batch_size_label(batch.len()));
        let results = pavilion_zk::verify_batch(&batch, &mut pavilion_zk::rand::OsRng);
        for (((key, question, w), (circuit, inputs, proof)), result) in
            batch_of.into_iter().zip(batch).zip(results)
        {
            let outcome = match result {
                Ok(()) => {
                    ctx.count("proofs.verified", circuit.id());
                    Settled::Proved(Box::new(evidence(&w, circuit, &inputs, &proof)))
                }
                Err(_) => {
                    ctx.count("proofs.rejected", circuit.id());
                    Settled::Failed("bad_proof")
                }
            };
            settled.push((key, question, outcome));
        }
    }
    for (key, question, outcome) in settled {
        let pending = requests.get_mut(&key).expect("loaded above");
        let Some(at) = pending
            .waiting
            .iter()
            .position(|w| w.question.key() == question)
        else {
            continue;
        };
        let w = pending.waiting.remove(at);
        let provider = w.question.provider.clone();
        let transition = match &outcome {
            Settled::Failed(_) => breakers.failure(&provider, now_ms),
            _ => breakers.success(&provider),
        };
        count_transition(ctx, &provider, transition);
        advance(ctx, config, breakers, now_ms, &key, pending, w, outcome)?;
    }

    // 2. Retries and deadlines.
    let upto = format!("due/{now_ms:020}\u{1}").into_bytes();
    let due = ctx
        .store(STORE)?
        .scan::<()>(b"due/", &upto, config.max_verify_batch as usize)?;
    for (index, ()) in due {
        let key = index[4 + 21..].to_vec();
        let Some(pending) = load(ctx, &mut requests, &mut wakes, &key)? else {
            ctx.store(STORE)?.delete(&index);
            continue;
        };
        let mut still = Vec::new();
        for mut w in std::mem::take(&mut pending.waiting) {
            if now_ms >= w.deadline {
                let provider = w.question.provider.clone();
                ctx.count("evidence.timeout", &provider);
                let transition = breakers.failure(&provider, now_ms);
                count_transition(ctx, &provider, transition);
                let question = w.question.key();
                forget_waiter(ctx, &question, &key)?;
                let timeout = Settled::Failed("provider_timeout");
                advance(ctx, config, breakers, now_ms, &key, pending, w, timeout)?;
            } else if now_ms >= w.retry_at {
                w.attempt += 1;
                let backoff =
                    config.proof_retry_after.as_millis() as i64 * (1 << (w.attempt - 1).min(10));
                w.retry_at = now_ms + backoff;
                send(ctx, &w)?;
                still.push(w);
            } else {
                still.push(w);
            }
        }
        pending.waiting.extend(still);
    }

    for (key, pending) in requests {
        let wake = wakes.get(&key).copied();
        save(ctx, &key, pending, wake)?;
    }
    Ok(())
}

fn count_transition(ctx: &Context<'_>, provider: &str, transition: Option<Transition>) {
    match transition {
        Some(Transition::Opened) => ctx.count("breaker.opened", provider),
        Some(Transition::Closed) => ctx.count("breaker.closed", provider),
        None => {}
    }
}

fn batch_size_label(n: usize) -> &'static str {
    match n {
        1 => "1",
        2..=15 => "2-15",
        16..=63 => "16-63",
        64..=255 => "64-255",
        _ => "256+",
    }
}

fn load<'r>(
    ctx: &mut Context<'_>,
    requests: &'r mut BTreeMap<Vec<u8>, Pending>,
    wakes: &mut BTreeMap<Vec<u8>, i64>,
    key: &[u8],
) -> Result<Option<&'r mut Pending>, ProcessError> {
    if !requests.contains_key(key) {
        let Some(pending) = ctx.store(STORE)?.get::<Pending>(&req_key(key))? else {
            return Ok(None);
        };
        wakes.insert(key.to_vec(), pending.wake_at);
        requests.insert(key.to_vec(), pending);
    }
    Ok(requests.get_mut(key))
}

fn forget_waiter(ctx: &mut Context<'_>, question: &str, key: &[u8]) -> Result<(), ProcessError> {
    let mut store = ctx.store(STORE)?;
    let waiter = hex::encode(key);
    let mut waiters = store
        .get::<Vec<String>>(&ask_key(question))?
        .unwrap_or_default();
    waiters.retain(|w| *w != waiter);
    if waiters.is_empty() {
        store.delete(&ask_key(question));
        store.delete(&got_key(question));
        Ok(())
    } else {
        store.put(&ask_key(question), &waiters)
    }
}

/// The public inputs the proof must verify against, rebuilt from the question (what the stage
/// trusts), never from the answer; and the proof decoded.
fn rebuild(
    q: &Question,
    response: &EvidenceResponse,
) -> Result<(Circuit, PublicInputs, Proof), &'static str> {
    let circuit = Circuit::from_id(&q.circuit).ok_or("bad_proof")?;
    let commitment = field_from_bytes(&q.commitment).map_err(|_| "bad_commitment")?;
    let nonce = field_from_bytes(&q.nonce).map_err(|_| "bad_proof")?;
    let bound = u64::try_from(q.bound).map_err(|_| "bad_proof")?;
    let proof = response
        .proof
        .as_deref()
        .ok_or("bad_proof")
        .and_then(|p| Proof::from_bytes(p).map_err(|_| "bad_proof"))?;
    Ok((
        circuit,
        PublicInputs {
            commitment,
            bound,
            nonce,
        },
        proof,
    ))
}

/// The evidence a verified proof gives: the proof with its public inputs, and the digest of the
/// attestation that signed the commitment.
fn evidence(w: &Waiting, circuit: Circuit, inputs: &PublicInputs, proof: &Proof) -> EvidenceRef {
    let q = &w.question;
    let eip197 = proof.to_eip197();
    EvidenceRef {
        provider_id: q.provider.clone(),
        kind: EvidenceKind::ZkPredicate,
        attestation_digest: w
            .evidence
            .first()
            .and_then(|e| e.attestation_digest.clone()),
        proof_digest: Some(Sha256::digest(eip197).to_vec()),
        zk: Some(pavilion_schemas::ZkEvidence {
            circuit: circuit.id().to_owned(),
            verifying_key_sha256: circuit.verifying_key_hash().to_vec(),
            commitment: q.commitment.clone(),
            bound: inputs.bound as i64,
            nonce: q.nonce.clone(),
            proof: eip197.to_vec(),
        }),
        disclosure: None,
        credential: None,
    }
}

/// Checks a provider's disclosure against what the stage asked and trusts: the provider's
/// registered BBS key, the request's nonce, exactly the attributes asked for, this provider
/// as issuer, an unexpired signature. Returns the disclosure as the decision carries it.
fn verify_disclosure(
    q: &Question,
    response: &EvidenceResponse,
    now_ms: i64,
) -> Result<BbsDisclosure, &'static str> {
    let d = response.disclosure.as_ref().ok_or("bad_disclosure")?;
    let public = bbs::PublicKey::from_bytes(&q.public_key).map_err(|_| "bad_bbs_key")?;
    let nonce: [u8; bbs::NONCE_BYTES] = q.nonce.as_slice().try_into().map_err(|_| "bad_nonce")?;
    let mut revealed: Vec<&str> = d.disclosed.iter().map(|a| a.name.as_str()).collect();
    let mut asked: Vec<&str> = q.disclose.iter().map(String::as_str).collect();
    revealed.sort_unstable();
    asked.sort_unstable();
    if revealed != asked {
        // More, fewer or other attributes than the plan allows.
        return Err("disclosure_not_as_asked");
    }
    let disclosure = bbs::Disclosure {
        header: d.header.clone(),
        disclosed: d
            .disclosed
            .iter()
            .map(|a| {
                usize::try_from(a.index)
                    .map(|i| (i, a.name.clone(), a.value.clone()))
                    .map_err(|_| "bad_disclosure")
            })
            .collect::<Result<_, _>>()?,
        proof: d.proof.clone(),
    };
    let header = disclosure
        .verify(&public, &nonce)
        .map_err(|_| "bad_disclosure")?;
    if header.issuer != q.provider {
        return Err("disclosure_other_issuer");
    }
    if header.expires_at_ms <= now_ms {
        return Err("disclosure_expired");
    }
    Ok(BbsDisclosure {
        header: d.header.clone(),
        presentation_header: q.nonce.clone(),
        disclosed: d.disclosed.clone(),
        proof: d.proof.clone(),
        public_key: q.public_key.clone(),
    })
}

/// The evidence a verified disclosure gives.
fn disclosure_evidence(w: &Waiting, disclosure: BbsDisclosure) -> EvidenceRef {
    EvidenceRef {
        provider_id: w.question.provider.clone(),
        kind: EvidenceKind::BbsDisclosure,
        attestation_digest: w
            .evidence
            .first()
            .and_then(|e| e.attestation_digest.clone()),
        proof_digest: Some(Sha256::digest(&disclosure.proof).to_vec()),
        zk: None,
        disclosure: Some(disclosure),
        credential: None,
    }
}

/// A wait is over: the claim is decided, or goes on to the next provider of its plan.
#[allow(clippy::too_many_arguments)]
fn advance(
    ctx: &mut Context<'_>,
    config: &PsiConfig,
    breakers: &mut Breakers,
    now_ms: i64,
    key: &[u8],
    pending: &mut Pending,
    w: Waiting,
    outcome: Settled,
) -> Result<(), ProcessError> {
    let plan = &pending.outcome.plan[w.claim];
    let mut unavailable = w.unavailable;
    let mut answered = w.answered;
    match outcome {
        Settled::Proved(proved) => {
            let mut evidence = w.evidence;
            evidence.push(*proved);
            pending.results[w.claim] = Some(ClaimMatch {
                claim_index: plan.claim_index,
                claim_name: plan.claim_name.clone(),
                status: MatchStatus::Matched,
                reason: None,
                evidence,
            });
            return Ok(());
        }
        Settled::DoesNotHold => answered = true,
        Settled::Failed(why) | Settled::Unavailable(why) => {
            unavailable.push(format!("{}: {why}", w.question.provider));
        }
    }
    let step = {
        let lookup = Lookup {
            outcome: &pending.outcome,
            providers: ctx.global("providers")?,
            sets: ctx.global("sets")?,
            status_lists: ctx.global("status_lists")?,
            now_ms,
            config,
        };
        lookup.resolve(breakers, w.claim, w.provider_pos + 1, unavailable, answered)
    };
    match step {
        Step::Done(result) => pending.results[w.claim] = Some(result),
        Step::Wait(next) => {
            send(ctx, &next)?;
            add_waiter(ctx, &next.question.key(), key)?;
            pending.waiting.push(*next);
        }
    }
    Ok(())
}
