//! Batch PSI: a tenant's whole token list against one provider's set; the result is the
//! intersection (positions in the tenant's list) or only its size, as the tenant's policy
//! allows.
//!
//! A job is a signed `VerificationRequest` asking the claim `record_link` with parameters
//! `job`, `provider`, `count`, `tokens_sha256` and `reveal` (`intersection` or
//! `cardinality`), which goes through tenancy (authentication, limits) and policy like any
//! request; its tokens travel separately as `PsiJobChunk`s on the same partition. Chunks
//! and the outcome may arrive in any order: each is kept in the `jobs` store until the job
//! is complete, then checked against the signed digest and answered once. Jobs still
//! incomplete after `job_timeout` are failed (when their request is known) and forgotten.

use std::collections::BTreeMap;

use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::{Context, GlobalStore, ProcessError};
use pavilion_schemas::{
    job_tokens_digest, set_key, PolicyEffect, PolicyOutcome, ProviderSetEntry, PsiDisclosure,
    PsiJobChunk, PsiJobResult, PsiJobStatus,
};
use serde::{Deserialize, Serialize};

use crate::processor::available_provider;
use crate::PsiConfig;

/// The claim a job asks.
pub const JOB_CLAIM: &str = "record_link";
/// What a policy lists under `disclose` to allow the intersection itself.
pub const DISCLOSE_INTERSECTION: &str = "intersection";
const STORE: &str = "jobs";

/// What the job's request says, once policy has seen it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRequest {
    request_id: String,
    provider: String,
    count: usize,
    tokens_sha256: String,
    reveal_intersection: bool,
    permitted: bool,
    provider_planned: bool,
    intersection_allowed: bool,
    policy: Option<pavilion_schemas::PolicyRef>,
}

/// A job's bookkeeping: when first seen, its request once known, its chunks so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobState {
    first_seen_ms: i64,
    request: Option<JobRequest>,
    chunks: Option<i32>,
    received: Vec<i32>,
}

impl JobState {
    /// The job's state, or a fresh one first seen now.
    fn load(ctx: &mut Context<'_>, key: &[u8], now_ms: i64) -> Result<Self, ProcessError> {
        Ok(ctx.store(STORE)?.get(key)?.unwrap_or(JobState {
            first_seen_ms: now_ms,
            request: None,
            chunks: None,
            received: Vec::new(),
        }))
    }
}

fn meta_key(tenant: &str, job: &str) -> Vec<u8> {
    format!("meta/{tenant}\0{job}").into_bytes()
}

fn chunk_key(tenant: &str, job: &str, chunk: i32) -> Vec<u8> {
    format!("chunk/{tenant}\0{job}\0{chunk:010}").into_bytes()
}

/// Whether an outcome is a batch job's: its one claim carries a `job` parameter.
pub fn is_job(outcome: &PolicyOutcome) -> bool {
    outcome
        .request
        .claims
        .iter()
        .any(|c| c.params.contains_key("job"))
}

fn failed(tenant: &str, job: &str, request_id: &str, why: String, now_ms: i64) -> PsiJobResult {
    PsiJobResult {
        job_id: job.to_owned(),
        request_id: request_id.to_owned(),
        tenant_id: tenant.to_owned(),
        provider_id: String::new(),
        status: PsiJobStatus::Failed,
        reason: Some(why),
        disclosure: PsiDisclosure::None,
        submitted: 0,
        cardinality: None,
        matched: Vec::new(),
        policy: None,
        completed_at: now_ms,
    }
}

/// Reads the job parameters of a job request, or says what is wrong with them.
fn job_request(outcome: &PolicyOutcome) -> Result<(String, JobRequest), String> {
    let request = &outcome.request;
    let [claim] = &request.claims[..] else {
        return Err("a batch job asks exactly one claim".into());
    };
    if claim.name != JOB_CLAIM {
        return Err(format!(
            "a batch job asks `{JOB_CLAIM}`, not `{}`",
            claim.name
        ));
    }
    let param = |name: &str| {
        claim
            .params
            .get(name)
            .cloned()
            .ok_or_else(|| format!("parameter `{name}` is missing"))
    };
    let job = param("job")?;
    if job != request.request_id {
        // The job's chunks are keyed by its id and its request by the request id: they meet
        // on one partition only when the two are the same.
        return Err(format!(
            "job `{job}` must be sent as request `{job}`, not `{}`",
            request.request_id
        ));
    }
    let count = param("count")?
        .parse::<usize>()
        .map_err(|_| "parameter `count` is not a number".to_owned())?;
    let reveal = param("reveal")?;
    let reveal_intersection = match reveal.as_str() {
        "intersection" => true,
        "cardinality" => false,
        other => return Err(format!("reveal `{other}`: intersection or cardinality")),
    };
    let provider = param("provider")?;
    let plan = outcome.plan.first();
    Ok((
        job,
        JobRequest {
            request_id: request.request_id.clone(),
            count,
            tokens_sha256: param("tokens_sha256")?,
            reveal_intersection,
            permitted: outcome.effect == PolicyEffect::Permit
                && plan.is_some_and(|p| p.effect == PolicyEffect::Permit),
            provider_planned: plan.is_some_and(|p| p.providers.contains(&provider)),
            intersection_allowed: plan.is_some_and(|p| {
                p.disclosable_attributes
                    .iter()
                    .any(|a| a == DISCLOSE_INTERSECTION)
            }),
            provider,
            policy: outcome.policy.clone(),
        },
    ))
}

/// Handles a job's policy outcome.
pub fn on_outcome(
    ctx: &mut Context<'_>,
    config: &PsiConfig,
    outcome: &PolicyOutcome,
) -> Result<(), ProcessError> {
    let tenant = outcome.request.tenant_id.clone();
    let now_ms = epoch_millis(ctx.now());
    let (job, request) = match job_request(outcome) {
        Ok(j) => j,
        Err(why) => {
            let job = outcome.request.claims[0]
                .params
                .get("job")
                .cloned()
                .unwrap_or_default();
            ctx.count("jobs", "failed");
            let result = failed(&tenant, &job, &outcome.request.request_id, why, now_ms);
            return ctx.emit("results", outcome.request.request_id.clone(), &result);
        }
    };
    let key = meta_key(&tenant, &job);
    let mut state = JobState::load(ctx, &key, now_ms)?;
    if state.request.is_some() {
        // A second request for the same job id: the first one owns it.
        ctx.count("jobs", "duplicate_request");
        let why = format!("job `{job}` was already submitted");
        let result = failed(&tenant, &job, &request.request_id, why, now_ms);
        return ctx.emit("results", request.request_id.clone(), &result);
    }
    state.request = Some(request);
    ctx.store(STORE)?.put(&key, &state)?;
    try_complete(ctx, config, &tenant, &job)
}

/// Handles one chunk of a job's tokens.
pub fn on_chunk(
    ctx: &mut Context<'_>,
    config: &PsiConfig,
    chunk: PsiJobChunk,
) -> Result<(), ProcessError> {
    let now_ms = epoch_millis(ctx.now());
    let (tenant, job) = (chunk.tenant_id.clone(), chunk.job_id.clone());
    if chunk.chunks < 1 || chunk.chunk < 0 || chunk.chunk >= chunk.chunks {
        return Err(ProcessError::new(format!(
            "chunk {} of {} is out of range",
            chunk.chunk, chunk.chunks
        )));
    }
    let key = meta_key(&tenant, &job);
    let mut state = JobState::load(ctx, &key, now_ms)?;
    if state.chunks.is_some_and(|n| n != chunk.chunks) {
        return Err(ProcessError::new(format!(
            "chunk says the job has {} chunks, an earlier one said {:?}",
            chunk.chunks, state.chunks
        )));
    }
    state.chunks = Some(chunk.chunks);
    if !state.received.contains(&chunk.chunk) {
        state.received.push(chunk.chunk);
    }
    let tokens: Vec<String> = chunk.tokens.iter().map(|t| hex::encode(&t.0)).collect();
    let mut store = ctx.store(STORE)?;
    store.put(&chunk_key(&tenant, &job, chunk.chunk), &tokens)?;
    store.put(&key, &state)?;
    try_complete(ctx, config, &tenant, &job)
}

fn try_complete(
    ctx: &mut Context<'_>,
    config: &PsiConfig,
    tenant: &str,
    job: &str,
) -> Result<(), ProcessError> {
    let key = meta_key(tenant, job);
    let Some(state) = ctx.store(STORE)?.get::<JobState>(&key)? else {
        return Ok(());
    };
    let (Some(request), Some(chunks)) = (&state.request, state.chunks) else {
        return Ok(());
    };
    if state.received.len() < chunks as usize {
        return Ok(());
    }
    let mut tokens = Vec::with_capacity(request.count);
    {
        let mut store = ctx.store(STORE)?;
        for i in 0..chunks {
            let k = chunk_key(tenant, job, i);
            let part: Vec<String> = store.get(&k)?.unwrap_or_default();
            for t in part {
                tokens.push(hex::decode(t).map_err(|e| ProcessError::new(e.to_string()))?);
            }
            store.delete(&k);
        }
        store.delete(&key);
    }
    let result = answer(ctx, config, tenant, job, request, &tokens)?;
    let label = match result.status {
        PsiJobStatus::Completed => "completed",
        PsiJobStatus::Denied => "denied",
        PsiJobStatus::Unavailable => "unavailable",
        _ => "failed",
    };
    ctx.count("jobs", label);
    ctx.emit("results", job.to_owned(), &result)
}

fn answer(
    ctx: &Context<'_>,
    config: &PsiConfig,
    tenant: &str,
    job: &str,
    request: &JobRequest,
    tokens: &[Vec<u8>],
) -> Result<PsiJobResult, ProcessError> {
    let now_ms = epoch_millis(ctx.now());
    let mut result = failed(tenant, job, &request.request_id, String::new(), now_ms);
    result.provider_id = request.provider.clone();
    result.submitted = tokens.len() as i64;
    result.policy = request.policy.clone();
    let digest = hex::encode(job_tokens_digest(tokens.iter().map(Vec::as_slice)));
    if tokens.len() != request.count || digest != request.tokens_sha256 {
        result.reason = Some(format!(
            "the chunks hold {} tokens with digest {digest}; the signed request says {} with {}",
            tokens.len(),
            request.count,
            request.tokens_sha256
        ));
        return Ok(result);
    }
    if !request.permitted || !request.provider_planned {
        result.status = PsiJobStatus::Denied;
        result.reason = Some(if request.permitted {
            format!(
                "policy does not plan provider `{}` for {JOB_CLAIM}",
                request.provider
            )
        } else {
            "denied_by_policy".into()
        });
        return Ok(result);
    }
    let providers: GlobalStore<'_> = ctx.global("providers")?;
    if let Err(why) = available_provider(&providers, &request.provider, now_ms, config) {
        result.status = PsiJobStatus::Unavailable;
        result.reason = Some(why.to_owned());
        return Ok(result);
    }
    let sets = ctx.global("sets")?;
    let mut matched = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let key = set_key(&request.provider, token);
        if sets
            .get::<ProviderSetEntry>(&request.provider, &key)?
            .is_some()
        {
            matched.push(i as i64);
        }
    }
    result.status = PsiJobStatus::Completed;
    result.cardinality = Some(matched.len() as i64);
    if request.reveal_intersection && request.intersection_allowed {
        result.disclosure = PsiDisclosure::Intersection;
        result.matched = matched;
        result.reason = None;
    } else {
        result.disclosure = PsiDisclosure::Cardinality;
        result.reason = (request.reveal_intersection)
            .then(|| "the policy allows only the cardinality".to_owned());
    }
    Ok(result)
}

/// Fails and forgets jobs older than the timeout (in bounded batches).
pub fn expire(ctx: &mut Context<'_>, config: &PsiConfig) -> Result<(), ProcessError> {
    let now_ms = epoch_millis(ctx.now());
    let limit = config.job_timeout.as_millis() as i64;
    let stale: Vec<(Vec<u8>, JobState)> = ctx
        .store(STORE)?
        .scan::<JobState>(b"meta/", b"meta0", 1_000)?
        .into_iter()
        .filter(|(_, s)| now_ms - s.first_seen_ms > limit)
        .collect();
    let mut results = BTreeMap::new();
    for (key, state) in stale {
        let text = String::from_utf8_lossy(&key["meta/".len()..]).into_owned();
        let Some((tenant, job)) = text.split_once('\0') else {
            continue;
        };
        let mut store = ctx.store(STORE)?;
        for i in 0..state.chunks.unwrap_or(0) {
            store.delete(&chunk_key(tenant, job, i));
        }
        store.delete(&key);
        ctx.count("jobs", "expired");
        if let Some(request) = &state.request {
            let why = format!(
                "incomplete after {:?}: {} of {} chunks arrived",
                config.job_timeout,
                state.received.len(),
                state
                    .chunks
                    .map_or_else(|| "?".to_owned(), |n| n.to_string())
            );
            results.insert(
                (tenant.to_owned(), job.to_owned()),
                failed(tenant, job, &request.request_id, why, now_ms),
            );
        }
    }
    for ((_, job), result) in results {
        ctx.emit("results", job, &result)?;
    }
    Ok(())
}
