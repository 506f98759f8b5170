use std::time::Duration;

use ed25519_dalek::{Signature, VerifyingKey};
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::{Context, GlobalStore, Input, ProcessError, Processor, Record};
use pavilion_schemas::{
    set_key, Attestation, ClaimMatch, ClaimPlan, CodecError, Event, EvidenceKind, EvidenceRef,
    MatchResult, MatchStatus, PolicyEffect, PolicyOutcome, Provider, ProviderSetEntry,
    ProviderState, PsiJobChunk, Registry,
};

use crate::{batch, PsiConfig};

/// The matching stage.
pub struct PsiStage {
    config: PsiConfig,
}

impl PsiStage {
    /// A stage with its config.
    pub fn new(config: PsiConfig) -> Self {
        PsiStage { config }
    }
}

/// What one provider said about one claim.
enum Answer {
    Matched(Vec<EvidenceRef>),
    NotMatched,
    Unavailable(&'static str),
}

struct Lookup<'a> {
    outcome: &'a PolicyOutcome,
    providers: GlobalStore<'a>,
    sets: GlobalStore<'a>,
    now_ms: i64,
    config: &'a PsiConfig,
}

fn age_exceeds(now_ms: i64, then_ms: i64, limit: Duration) -> bool {
    now_ms.saturating_sub(then_ms) > limit.as_millis() as i64
}

fn signature_valid(provider: &Provider, entry: &ProviderSetEntry) -> bool {
    let a = &entry.attestation;
    let Some(key) = provider
        .attestation_keys
        .iter()
        .find(|k| k.key_id == a.key_id && k.algorithm == "Ed25519")
    else {
        return false;
    };
    let (Ok(key), Ok(signature)) = (
        <[u8; 32]>::try_from(key.public_key.as_slice()),
        Signature::from_slice(&a.signature),
    ) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    let message = Attestation::signing_bytes(
        &entry.provider_id,
        &entry.token,
        &a.claims,
        a.attested_at,
        &a.key_id,
    );
    key.verify_strict(&message, &signature).is_ok()
}

/// The provider's record if it can answer now; otherwise why not (unknown, not active, no
/// set loaded, stale set).
pub(crate) fn available_provider(
    providers: &GlobalStore<'_>,
    provider_id: &str,
    now_ms: i64,
    config: &PsiConfig,
) -> Result<Provider, &'static str> {
    let provider = match providers.get::<Provider>("", provider_id.as_bytes()) {
        Ok(Some(p)) => p,
        Ok(None) => return Err("provider_unknown"),
        Err(_) => return Err("provider_record_unreadable"),
    };
    if provider.state != ProviderState::Active {
        return Err("provider_not_active");
    }
    match provider.set_loaded_at {
        None => Err("no_set_loaded"),
        Some(at) if age_exceeds(now_ms, at, config.max_set_age) => Err("set_stale"),
        Some(_) => Ok(provider),
    }
}

impl Lookup<'_> {
    fn ask(&self, plan: &ClaimPlan, provider_id: &str) -> Answer {
        let request = &self.outcome.request;
        let Some(token) = request
            .subject_tokens
            .iter()
            .find(|t| t.provider_id == provider_id)
        else {
            return Answer::Unavailable("no_token_for_provider");
        };
        let provider =
            match available_provider(&self.providers, provider_id, self.now_ms, self.config) {
                Ok(p) => p,
                Err(why) => return Answer::Unavailable(why),
            };
        let key = set_key(provider_id, &token.token);
        let entry = match self.sets.get::<ProviderSetEntry>(provider_id, &key) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Answer::NotMatched,
            Err(_) => return Answer::Unavailable("set_entry_unreadable"),
        };
        if entry.provider_id != provider_id || entry.token != key {
            return Answer::Unavailable("set_entry_inconsistent");
        }
        if !entry.attestation.claims.contains(&plan.claim_name) {
            return Answer::NotMatched;
        }
        if age_exceeds(
            self.now_ms,
            entry.attestation.attested_at,
            self.config.max_attestation_age,
        ) {
            return Answer::Unavailable("attestation_stale");
        }
        let digest = Some(entry.attestation.digest(provider_id, &key).to_vec());
        let mut evidence = Vec::new();
        for kind in required_evidence(plan) {
            match kind {
                EvidenceKind::OprfMatch => {}
                EvidenceKind::ProviderSignature if signature_valid(&provider, &entry) => {}
                EvidenceKind::ProviderSignature => {
                    return Answer::Unavailable("attestation_signature_invalid")
                }
                // Zero-knowledge predicates arrive with the Groth16 verifier; until then a
                // claim that needs one cannot be answered, and says so.
                EvidenceKind::ZkPredicate => {
                    return Answer::Unavailable("zk_predicate_unsupported")
                }
                EvidenceKind::Unknown => return Answer::Unavailable("unknown_evidence_kind"),
            }
            evidence.push(EvidenceRef {
                provider_id: provider_id.to_owned(),
                kind,
                attestation_digest: digest.clone(),
                proof_digest: None,
            });
        }
        Answer::Matched(evidence)
    }

    fn claim(&self, plan: &ClaimPlan) -> ClaimMatch {
        let mut result = ClaimMatch {
            claim_index: plan.claim_index,
            claim_name: plan.claim_name.clone(),
            status: MatchStatus::Unavailable,
            reason: None,
            evidence: Vec::new(),
        };
        if self.outcome.effect != PolicyEffect::Permit || plan.effect != PolicyEffect::Permit {
            result.reason = Some("denied_by_policy".into());
            return result;
        }
        if plan.providers.is_empty() {
            result.reason = Some("no_provider_planned".into());
            return result;
        }
        let mut unavailable = Vec::new();
        let mut answered = false;
        for provider in &plan.providers {
            match self.ask(plan, provider) {
                Answer::Matched(evidence) => {
                    result.status = MatchStatus::Matched;
                    result.evidence = evidence;
                    return result;
                }
                Answer::NotMatched => answered = true,
                Answer::Unavailable(why) => unavailable.push(format!("{provider}: {why}")),
            }
        }
        if unavailable.is_empty() && answered {
            result.status = MatchStatus::NotMatched;
        } else {
            result.reason = Some(unavailable.join("; "));
        }
        result
    }
}

/// Matching is always by OPRF membership; the plan may add more evidence.
fn required_evidence(plan: &ClaimPlan) -> Vec<EvidenceKind> {
    let mut kinds = vec![EvidenceKind::OprfMatch];
    for kind in &plan.evidence_required {
        if !kinds.contains(kind) {
            kinds.push(*kind);
        }
    }
    kinds
}

/// What the stage reads: policy outcomes, and the token chunks of batch jobs.
pub enum PsiInput {
    /// From `pavilion.policy.outcomes`.
    Outcome(Box<PolicyOutcome>),
    /// From `pavilion.psi.jobs`.
    Chunk(PsiJobChunk),
}

impl Input for PsiInput {
    fn decode(registry: &Registry, _topic: &str, bytes: &[u8]) -> Result<Self, CodecError> {
        match registry.name_of(bytes)? {
            PolicyOutcome::FULL_NAME => registry
                .decode(bytes)
                .map(|o| PsiInput::Outcome(Box::new(o))),
            PsiJobChunk::FULL_NAME => registry.decode(bytes).map(PsiInput::Chunk),
            other => Err(CodecError::SchemaMismatch {
                expected: format!("{} or {}", PolicyOutcome::FULL_NAME, PsiJobChunk::FULL_NAME),
                found: other.to_owned(),
            }),
        }
    }
}

impl Processor for PsiStage {
    type Input = PsiInput;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<PsiInput>,
    ) -> Result<(), ProcessError> {
        let outcome = match record.value {
            PsiInput::Chunk(chunk) => return batch::on_chunk(ctx, &self.config, chunk),
            PsiInput::Outcome(o) if batch::is_job(&o) => {
                return batch::on_outcome(ctx, &self.config, &o)
            }
            PsiInput::Outcome(o) => *o,
        };
        let now_ms = epoch_millis(ctx.now());
        let results: Vec<ClaimMatch> = {
            let lookup = Lookup {
                outcome: &outcome,
                providers: ctx.global("providers")?,
                sets: ctx.global("sets")?,
                now_ms,
                config: &self.config,
            };
            outcome.plan.iter().map(|plan| lookup.claim(plan)).collect()
        };
        for result in &results {
            let status = match result.status {
                MatchStatus::Matched => "matched",
                MatchStatus::NotMatched => "not_matched",
                _ => "unavailable",
            };
            ctx.count("claims", status);
        }
        let key = record.key;
        ctx.emit(
            "matches",
            key,
            &MatchResult {
                outcome,
                results,
                matched_at: now_ms,
            },
        )
    }

    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        batch::expire(ctx, &self.config)
    }
}
