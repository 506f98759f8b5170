use std::time::{Duration, SystemTime};

use ed25519_dalek::{Signature, VerifyingKey};
use pavilion_credentials::bbs::{DISCLOSURE_EVIDENCE, KEY_ALGORITHM};
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::{Context, GlobalStore, Input, ProcessError, Processor, Record};
use pavilion_schemas::{
    disclosed_attributes, set_key, Attestation, ClaimMatch, ClaimPlan, CodecError, Event,
    EvidenceKind, EvidenceRef, EvidenceResponse, MatchResult, MatchStatus, PolicyEffect,
    PolicyOutcome, Provider, ProviderSetEntry, ProviderState, PsiJobChunk, Registry,
};
use pavilion_zk::{field_to_bytes, nonce_from_request_id, Circuit};

use crate::breaker::Breakers;
use crate::credential::CredentialCheck;
use crate::predicate::{self, Question, Waiting};
use crate::{batch, PsiConfig};

/// The matching stage.
pub struct PsiStage {
    config: PsiConfig,
    breakers: Breakers,
    /// When batch jobs were last checked for their timeout (the punctuation runs often, for
    /// proofs; jobs need it once a minute).
    jobs_checked_at: Option<SystemTime>,
}

impl PsiStage {
    /// A stage with its config.
    pub fn new(config: PsiConfig) -> Self {
        PsiStage {
            breakers: Breakers::new(
                config.breaker_failures,
                config.breaker_cooldown.as_millis() as i64,
            ),
            config,
            jobs_checked_at: None,
        }
    }
}

/// What one provider said about one claim.
enum Answer {
    Matched(Vec<EvidenceRef>),
    NotMatched,
    Unavailable(&'static str),
    /// The member is there; the provider must prove the predicate.
    Prove(Question, Vec<EvidenceRef>),
}

/// Where a claim stands after asking the providers of its plan in order.
pub(crate) enum Step {
    Done(ClaimMatch),
    Wait(Box<Waiting>),
}

pub(crate) struct Lookup<'a> {
    pub outcome: &'a PolicyOutcome,
    pub providers: GlobalStore<'a>,
    pub sets: GlobalStore<'a>,
    pub status_lists: GlobalStore<'a>,
    pub now_ms: i64,
    pub config: &'a PsiConfig,
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
        &a.commitments,
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
    fn ask(&self, breakers: &mut Breakers, plan: &ClaimPlan, provider_id: &str) -> Answer {
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
        let mut needs_proof = false;
        let mut needs_disclosure = false;
        for kind in required_evidence(plan) {
            match kind {
                EvidenceKind::OprfMatch => {}
                EvidenceKind::ProviderSignature if signature_valid(&provider, &entry) => {}
                EvidenceKind::ProviderSignature => {
                    return Answer::Unavailable("attestation_signature_invalid")
                }
                EvidenceKind::ZkPredicate => {
                    needs_proof = true;
                    continue;
                }
                EvidenceKind::BbsDisclosure => {
                    needs_disclosure = true;
                    continue;
                }
                // Answered from the holder's presentation before any provider is asked.
                EvidenceKind::Credential => continue,
                EvidenceKind::Unknown => return Answer::Unavailable("unknown_evidence_kind"),
            }
            evidence.push(EvidenceRef {
                provider_id: provider_id.to_owned(),
                kind,
                attestation_digest: digest.clone(),
                proof_digest: None,
                zk: None,
                disclosure: None,
                credential: None,
            });
        }
        if needs_proof && needs_disclosure {
            // One wait per claim: the policy check refuses such a plan.
            return Answer::Unavailable("proof_and_disclosure_in_one_claim");
        }
        if needs_disclosure {
            return match self.disclosure_question(plan, &provider, &key) {
                Ok(_) if !breakers.allow(provider_id, self.now_ms) => {
                    Answer::Unavailable("circuit_open")
                }
                Ok(question) => Answer::Prove(question, evidence),
                Err(why) => Answer::Unavailable(why),
            };
        }
        if !needs_proof {
            return Answer::Matched(evidence);
        }
        // The commitment is trusted only as the provider signed it.
        if !signature_valid(&provider, &entry) {
            return Answer::Unavailable("attestation_signature_invalid");
        }
        match self.question(plan, provider_id, &key, &entry) {
            Ok(_) if !breakers.allow(provider_id, self.now_ms) => {
                Answer::Unavailable("circuit_open")
            }
            Ok(question) => Answer::Prove(question, evidence),
            Err(why) => Answer::Unavailable(why),
        }
    }

    /// What to ask the provider to prove for this claim, from the stage's predicate config,
    /// the claim's threshold, the time the request was evaluated and its id.
    fn question(
        &self,
        plan: &ClaimPlan,
        provider_id: &str,
        set_key: &[u8],
        entry: &ProviderSetEntry,
    ) -> Result<Question, &'static str> {
        let predicate = self
            .config
            .predicates
            .get(&plan.claim_name)
            .ok_or("no_predicate_for_claim")?;
        let circuit = Circuit::from_id(&predicate.circuit).ok_or("unknown_circuit")?;
        let commitment = entry
            .attestation
            .commitment(&predicate.attribute)
            .ok_or("no_commitment")?;
        let request = &self.outcome.request;
        let params = request
            .claims
            .get(plan.claim_index as usize)
            .map(|c| &c.params);
        let bound = predicate::bound(
            circuit,
            params.and_then(|p| p.get("threshold")),
            self.outcome.evaluated_at,
        )?;
        Ok(Question {
            provider: provider_id.to_owned(),
            set_key: set_key.to_vec(),
            circuit: circuit.id().to_owned(),
            attribute: predicate.attribute.clone(),
            bound,
            nonce: field_to_bytes(nonce_from_request_id(request.request_id.as_bytes())).to_vec(),
            commitment: commitment.to_vec(),
            disclose: Vec::new(),
            public_key: Vec::new(),
        })
    }

    /// What to ask the provider to disclose for this claim: the attributes its plan lists
    /// under `disclose` (other than the claim itself and `subject_ref`), to be checked
    /// against the provider's registered BBS key.
    fn disclosure_question(
        &self,
        plan: &ClaimPlan,
        provider: &Provider,
        set_key: &[u8],
    ) -> Result<Question, &'static str> {
        let names: Vec<String> =
            disclosed_attributes(&plan.claim_name, &plan.disclosable_attributes)
                .cloned()
                .collect();
        if names.is_empty() {
            return Err("no_attribute_to_disclose");
        }
        let public_key = provider
            .attestation_keys
            .iter()
            .find(|k| k.algorithm == KEY_ALGORITHM)
            .ok_or("no_bbs_key")?
            .public_key
            .clone();
        let request = &self.outcome.request;
        Ok(Question {
            provider: provider.provider_id.clone(),
            set_key: set_key.to_vec(),
            circuit: DISCLOSURE_EVIDENCE.to_owned(),
            attribute: String::new(),
            bound: 0,
            nonce: field_to_bytes(nonce_from_request_id(request.request_id.as_bytes())).to_vec(),
            commitment: Vec::new(),
            disclose: names,
            public_key,
        })
    }

    /// Asks the providers of claim `claim`'s plan from position `from` on, given what the
    /// earlier ones said.
    pub(crate) fn resolve(
        &self,
        breakers: &mut Breakers,
        claim: usize,
        from: usize,
        mut unavailable: Vec<String>,
        mut answered: bool,
    ) -> Step {
        let plan = &self.outcome.plan[claim];
        let mut result = ClaimMatch {
            claim_index: plan.claim_index,
            claim_name: plan.claim_name.clone(),
            status: MatchStatus::Unavailable,
            reason: None,
            evidence: Vec::new(),
        };
        if self.outcome.effect != PolicyEffect::Permit || plan.effect != PolicyEffect::Permit {
            result.reason = Some("denied_by_policy".into());
            return Step::Done(result);
        }
        if plan.providers.is_empty() {
            result.reason = Some("no_provider_planned".into());
            return Step::Done(result);
        }
        if plan.evidence_required.contains(&EvidenceKind::Credential) {
            let request = &self.outcome.request;
            let check = CredentialCheck {
                providers: &self.providers,
                status_lists: &self.status_lists,
                config: self.config,
                now_ms: self.now_ms,
            };
            let params = request
                .claims
                .get(plan.claim_index as usize)
                .map(|c| &c.params);
            return Step::Done(check.resolve(plan, result, params, &request.nonce));
        }
        for (pos, provider) in plan.providers.iter().enumerate().skip(from) {
            match self.ask(breakers, plan, provider) {
                Answer::Matched(evidence) => {
                    result.status = MatchStatus::Matched;
                    result.evidence = evidence;
                    return Step::Done(result);
                }
                Answer::NotMatched => answered = true,
                Answer::Unavailable(why) => unavailable.push(format!("{provider}: {why}")),
                Answer::Prove(question, evidence) => {
                    let mut w = predicate::waiting(
                        self.config,
                        self.now_ms,
                        claim,
                        pos,
                        question,
                        evidence,
                    );
                    w.unavailable = unavailable;
                    w.answered = answered;
                    return Step::Wait(Box::new(w));
                }
            }
        }
        if unavailable.is_empty() && answered {
            result.status = MatchStatus::NotMatched;
        } else {
            result.reason = Some(unavailable.join("; "));
        }
        Step::Done(result)
    }
}

/// Counts each claim's result in `pavilion_stage_events_total{event="claims"}`.
pub(crate) fn count_claims(ctx: &Context<'_>, results: &[ClaimMatch]) {
    for result in results {
        let status = match result.status {
            MatchStatus::Matched => "matched",
            MatchStatus::NotMatched => "not_matched",
            _ => "unavailable",
        };
        ctx.count("claims", status);
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

/// What the stage reads: policy outcomes, the token chunks of batch jobs, and providers'
/// answers to proof requests.
pub enum PsiInput {
    /// From `pavilion.policy.outcomes`.
    Outcome(Box<PolicyOutcome>),
    /// From `pavilion.psi.jobs`.
    Chunk(PsiJobChunk),
    /// From `pavilion.evidence.responses`.
    Response(Box<EvidenceResponse>),
}

impl Input for PsiInput {
    fn decode(registry: &Registry, _topic: &str, bytes: &[u8]) -> Result<Self, CodecError> {
        match registry.name_of(bytes)? {
            PolicyOutcome::FULL_NAME => registry
                .decode(bytes)
                .map(|o| PsiInput::Outcome(Box::new(o))),
            PsiJobChunk::FULL_NAME => registry.decode(bytes).map(PsiInput::Chunk),
            EvidenceResponse::FULL_NAME => registry
                .decode(bytes)
                .map(|r| PsiInput::Response(Box::new(r))),
            other => Err(CodecError::SchemaMismatch {
                expected: format!(
                    "{}, {} or {}",
                    PolicyOutcome::FULL_NAME,
                    PsiJobChunk::FULL_NAME,
                    EvidenceResponse::FULL_NAME
                ),
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
            PsiInput::Response(response) => return predicate::on_response(ctx, *response),
            PsiInput::Outcome(o) if batch::is_job(&o) => {
                return batch::on_outcome(ctx, &self.config, &o)
            }
            PsiInput::Outcome(o) => *o,
        };
        let now_ms = epoch_millis(ctx.now());
        let mut results = Vec::with_capacity(outcome.plan.len());
        let mut waiting = Vec::new();
        {
            let lookup = Lookup {
                outcome: &outcome,
                providers: ctx.global("providers")?,
                sets: ctx.global("sets")?,
                status_lists: ctx.global("status_lists")?,
                now_ms,
                config: &self.config,
            };
            for claim in 0..outcome.plan.len() {
                match lookup.resolve(&mut self.breakers, claim, 0, Vec::new(), false) {
                    Step::Done(result) => results.push(Some(result)),
                    Step::Wait(w) => {
                        results.push(None);
                        waiting.push(*w);
                    }
                }
            }
        }
        let key = record.key;
        if !waiting.is_empty() {
            return predicate::start(ctx, &key, outcome, results, waiting);
        }
        let results: Vec<ClaimMatch> = results.into_iter().flatten().collect();
        count_claims(ctx, &results);
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
        predicate::punctuate(ctx, &self.config, &mut self.breakers)?;
        let now = ctx.now();
        let jobs_due = self
            .jobs_checked_at
            .is_none_or(|at| now.duration_since(at).unwrap_or_default() >= Duration::from_secs(60));
        if jobs_due {
            self.jobs_checked_at = Some(now);
            batch::expire(ctx, &self.config)?;
        }
        Ok(())
    }
}
