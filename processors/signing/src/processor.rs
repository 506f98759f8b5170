use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::{Context, Input, ProcessError, Processor, Record};
use pavilion_schemas::{
    BbsDisclosure, ClaimOutcome, CodecError, CredentialEvidence, Decision, DecisionIssued, Event,
    EvidenceKind, MatchResult, MatchStatus, Payload, PolicyEffect, PolicyRef, Registry,
    RejectionReason, RequestRejected, ResponseFormat, ResponseTemplate, Verdict, ZkEvidence,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{jose, SharedSigner, SigningConfig, RESPONSE_SCHEMA, SIGNER};

/// The signing stage.
pub struct SigningStage {
    config: SigningConfig,
}

impl SigningStage {
    /// A stage with its config.
    pub fn new(config: SigningConfig) -> Self {
        SigningStage { config }
    }
}

/// What the stage reads: match results and tenancy rejections, both keyed by tenant.
pub enum SigningInput {
    /// From `pavilion.matches`.
    Match(Box<MatchResult>),
    /// From `pavilion.requests.rejected`.
    Rejected(RequestRejected),
}

impl Input for SigningInput {
    fn decode(registry: &Registry, _topic: &str, bytes: &[u8]) -> Result<Self, CodecError> {
        match registry.name_of(bytes)? {
            MatchResult::FULL_NAME => registry
                .decode(bytes)
                .map(|m| SigningInput::Match(Box::new(m))),
            RequestRejected::FULL_NAME => registry.decode(bytes).map(SigningInput::Rejected),
            other => Err(CodecError::SchemaMismatch {
                expected: format!(
                    "{} or {}",
                    MatchResult::FULL_NAME,
                    RequestRejected::FULL_NAME
                ),
                found: other.to_owned(),
            }),
        }
    }
}

/// Per claim: the matching status, or the policy's denial, as the tenant sees it.
fn outcomes(m: &MatchResult) -> Vec<ClaimOutcome> {
    m.results
        .iter()
        .map(|r| {
            let plan = m
                .outcome
                .plan
                .iter()
                .find(|p| p.claim_index == r.claim_index);
            let denied = m.outcome.effect != PolicyEffect::Permit
                || plan.is_some_and(|p| p.effect != PolicyEffect::Permit);
            let (outcome, reason) = if denied {
                let rules = plan
                    .map(|p| p.denying_rules.clone())
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| m.outcome.denying_rules.clone());
                (
                    Verdict::Denied,
                    Some(format!("denied by policy: {}", rules.join(", "))),
                )
            } else {
                match r.status {
                    MatchStatus::Matched => (Verdict::Verified, None),
                    MatchStatus::NotMatched => (Verdict::NotVerified, r.reason.clone()),
                    _ => (Verdict::Unavailable, r.reason.clone()),
                }
            };
            ClaimOutcome {
                claim_index: r.claim_index,
                claim_name: r.claim_name.clone(),
                outcome,
                reason,
                evidence: r.evidence.clone(),
            }
        })
        .collect()
}

/// The subject's pseudonym for this tenant: HMAC under the deployment's secret of the tenant
/// id and the subject's OPRF token (the first by provider id, so the same subject asked the
/// same way gets the same pseudonym). The tenant id in the input makes pseudonyms of one
/// subject differ across tenants, and the token never leaves the broker. `None` when the
/// request carries no token.
fn pseudonym(
    ctx: &Context<'_>,
    request: &pavilion_schemas::VerificationRequest,
) -> Result<Option<Vec<u8>>, ProcessError> {
    let Some(token) = request
        .subject_tokens
        .iter()
        .min_by(|a, b| a.provider_id.cmp(&b.provider_id))
    else {
        return Ok(None);
    };
    let mut message = Vec::with_capacity(128);
    for part in [
        b"pavilion.subject-pseudonym.v1".as_slice(),
        request.tenant_id.as_bytes(),
        token.provider_id.as_bytes(),
        &token.token,
    ] {
        message.extend_from_slice(&(part.len() as u32).to_be_bytes());
        message.extend_from_slice(part);
    }
    let signer = ctx.resource::<SharedSigner>(SIGNER)?;
    signer
        .keyed_hash(&message)
        .map(Some)
        .map_err(|e| ProcessError::new(format!("pseudonym: {e}")))
}

pub(crate) fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Verified => "verified",
        Verdict::NotVerified => "not_verified",
        Verdict::Unavailable => "unavailable",
        Verdict::Denied => "denied",
        Verdict::Unknown => "unknown",
    }
}

/// The payload every format signs: a JWT claims set (RFC 7519 names where they exist). Structs,
/// not `json!` maps, so the field order is fixed whatever serde_json features the build has.
#[derive(Serialize)]
struct ClaimsSet<'a> {
    iss: &'a str,
    aud: &'a str,
    jti: &'a str,
    iat: i64,
    exp: i64,
    nonce: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    response_schema: &'static str,
    policy: Option<PolicyClaim<'a>>,
    claims: Vec<ClaimEntry<'a>>,
    rejection: Option<RejectionClaim<'a>>,
}

#[derive(Serialize)]
struct PolicyClaim<'a> {
    id: &'a str,
    version: i64,
    hash: String,
}

#[derive(Serialize)]
struct ClaimEntry<'a> {
    index: i32,
    name: &'a str,
    outcome: &'static str,
    reason: Option<&'a str>,
    /// Attribute values a BBS proof of the provider or a holder's credential disclosed, by
    /// name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidence: Option<Vec<EvidenceClaim<'a>>>,
}

#[derive(Serialize)]
struct EvidenceClaim<'a> {
    provider: &'a str,
    kind: EvidenceKind,
    attestation_digest: Option<String>,
    proof_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zk: Option<ZkClaim<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bbs: Option<BbsClaim<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<CredentialClaim<'a>>,
}

/// A holder's credential presentation as a relying party re-checks it with the issuer's key
/// alone (the provider's registered key `kid`): the presentation as received, and what the
/// broker found in it.
#[derive(Serialize)]
struct CredentialClaim<'a> {
    format: &'a str,
    issuer: &'a str,
    kid: &'a str,
    issued_at: i64,
    status_list: &'a str,
    status_index: i64,
    presentation: &'a str,
}

impl<'a> CredentialClaim<'a> {
    fn of(c: &'a CredentialEvidence) -> Self {
        CredentialClaim {
            format: &c.format,
            issuer: &c.issuer,
            kid: &c.key_id,
            issued_at: c.issued_at / 1000,
            status_list: &c.status_list,
            status_index: c.status_index,
            presentation: &c.presentation,
        }
    }
}

/// A BBS disclosure as a relying party checks it with the provider's key alone
/// (draft-irtf-cfrg-bbs-signatures, BLS12-381-SHA-256): `verifyProof` with this public key,
/// header, presentation header, proof, and the disclosed values (UTF-8) at their indexes.
/// Byte strings in base64url.
#[derive(Serialize)]
struct BbsClaim<'a> {
    ciphersuite: &'static str,
    public_key: String,
    header: String,
    presentation_header: String,
    disclosed: Vec<DisclosedClaim<'a>>,
    proof: String,
}

#[derive(Serialize)]
struct DisclosedClaim<'a> {
    index: i32,
    name: &'a str,
    value: &'a str,
}

impl<'a> BbsClaim<'a> {
    fn of(d: &'a BbsDisclosure) -> Self {
        BbsClaim {
            ciphersuite: "BLS12-381-SHA-256",
            public_key: B64URL.encode(&d.public_key),
            header: B64URL.encode(&d.header),
            presentation_header: B64URL.encode(&d.presentation_header),
            disclosed: d
                .disclosed
                .iter()
                .map(|a| DisclosedClaim {
                    index: a.index,
                    name: &a.name,
                    value: &a.value,
                })
                .collect(),
            proof: B64URL.encode(&d.proof),
        }
    }
}

/// A zero-knowledge proof as a relying party checks it without the broker: the circuit, the
/// hash of its verifying key (pinned in `zk/artifacts/manifest.json`), the public inputs as
/// decimal field elements in the circuit's order (commitment, bound, nonce), as snarkjs
/// writes them, and the proof in Ethereum's EIP-197 layout.
#[derive(Serialize)]
struct ZkClaim<'a> {
    circuit: &'a str,
    verifying_key_sha256: String,
    public_inputs: [String; 3],
    proof: String,
}

impl<'a> ZkClaim<'a> {
    fn of(zk: &'a ZkEvidence) -> Self {
        let decimal = |bytes: &[u8]| num_bigint::BigUint::from_bytes_be(bytes).to_string();
        ZkClaim {
            circuit: &zk.circuit,
            verifying_key_sha256: hex::encode(&zk.verifying_key_sha256),
            public_inputs: [
                decimal(&zk.commitment),
                zk.bound.to_string(),
                decimal(&zk.nonce),
            ],
            proof: B64URL.encode(&zk.proof),
        }
    }
}

#[derive(Serialize)]
struct RejectionClaim<'a> {
    reason: RejectionReason,
    detail: &'a str,
    retry_after_ms: Option<i64>,
}

/// The name a claim takes in the payload: the template's, else the requested one.
pub(crate) fn payload_name<'a>(template: &'a ResponseTemplate, claim: &'a str) -> &'a str {
    template
        .claim_names
        .get(claim)
        .map_or(claim, String::as_str)
}

/// `aud`: the template's audience, else the tenant.
pub(crate) fn audience<'a>(template: &'a ResponseTemplate, d: &'a Decision) -> &'a str {
    template.audience.as_deref().unwrap_or(&d.tenant_id)
}

pub(crate) fn claims_set(
    config: &SigningConfig,
    template: &ResponseTemplate,
    d: &Decision,
) -> String {
    let set = ClaimsSet {
        iss: &config.issuer,
        aud: audience(template, d),
        jti: &d.request_id,
        iat: d.issued_at / 1000,
        exp: d.expires_at / 1000,
        nonce: &d.nonce,
        sub: d.subject_pseudonym.as_ref().map(|p| B64URL.encode(p)),
        response_schema: RESPONSE_SCHEMA,
        policy: d.policy.as_ref().map(|p: &PolicyRef| PolicyClaim {
            id: &p.policy_id,
            version: p.version,
            hash: B64URL.encode(&p.content_hash),
        }),
        claims: d
            .outcomes
            .iter()
            .map(|o| ClaimEntry {
                index: o.claim_index,
                name: payload_name(template, &o.claim_name),
                outcome: verdict_name(o.outcome),
                reason: o.reason.as_deref(),
                attributes: o
                    .evidence
                    .iter()
                    .filter_map(|e| e.disclosure.as_ref())
                    .flat_map(|d| &d.disclosed)
                    .map(|a| (a.name.as_str(), a.value.as_str()))
                    .chain(
                        o.evidence
                            .iter()
                            .filter_map(|e| e.credential.as_ref())
                            .flat_map(|c| &c.attributes)
                            .map(|(n, v)| (n.as_str(), v.as_str())),
                    )
                    .collect(),
                evidence: template.evidence.then(|| {
                    o.evidence
                        .iter()
                        .map(|e| EvidenceClaim {
                            provider: &e.provider_id,
                            kind: e.kind,
                            attestation_digest: e
                                .attestation_digest
                                .as_ref()
                                .map(|b| B64URL.encode(b)),
                            proof_digest: e.proof_digest.as_ref().map(|b| B64URL.encode(b)),
                            zk: e.zk.as_ref().map(ZkClaim::of),
                            bbs: e.disclosure.as_ref().map(BbsClaim::of),
                            credential: e.credential.as_ref().map(CredentialClaim::of),
                        })
                        .collect()
                }),
            })
            .collect(),
        rejection: d.rejection.as_ref().map(|r| RejectionClaim {
            reason: r.reason,
            detail: &r.detail,
            retry_after_ms: r.retry_after_ms,
        }),
    };
    serde_json::to_string(&set).expect("serializable")
}

impl SigningStage {
    /// Signs `decision` in its format and delivers it with its audit event.
    fn issue(
        &self,
        ctx: &mut Context<'_>,
        mut decision: Decision,
        template: &ResponseTemplate,
        disclosable: &[String],
    ) -> Result<(), ProcessError> {
        let signer = ctx.resource::<SharedSigner>(SIGNER)?.clone();
        let payload = claims_set(&self.config, template, &decision);
        let failed = |e: String| ProcessError::new(format!("signing: {e}"));
        match decision.format {
            ResponseFormat::Json => {
                let kid = signer.current_key_id().map_err(failed)?;
                decision.signature = Some(signer.sign(&kid, payload.as_bytes()).map_err(failed)?);
                decision.signing_key_id = kid;
                decision.payload = Payload::Text(payload);
            }
            ResponseFormat::Jws | ResponseFormat::Jwt => {
                let typ = if decision.format == ResponseFormat::Jwt {
                    "JWT"
                } else {
                    "pavilion-decision+jws"
                };
                let (token, kid) =
                    jose::compact(signer.as_ref(), typ, payload.as_bytes()).map_err(failed)?;
                decision.signing_key_id = kid;
                decision.payload = Payload::Text(token);
            }
            ResponseFormat::VcJose => {
                let credential = crate::formats::credential(&self.config, template, &decision);
                let (token, kid) = jose::compact_with(
                    signer.as_ref(),
                    &[("typ", "vc+jwt"), ("cty", "vc")],
                    credential.as_bytes(),
                )
                .map_err(failed)?;
                decision.signing_key_id = kid;
                decision.payload = Payload::Text(token);
            }
            ResponseFormat::SdJwt => {
                let (token, kid) = crate::formats::sd_jwt(
                    &self.config,
                    template,
                    &decision,
                    disclosable,
                    signer.as_ref(),
                )
                .map_err(failed)?;
                decision.signing_key_id = kid;
                decision.payload = Payload::Text(token);
            }
            ResponseFormat::Unknown => {
                return Err(ProcessError::new(
                    "the policy asks for a response format this build does not know",
                ))
            }
        }
        let delivered = deliver(ctx, &decision)?;
        ctx.count(
            "decisions",
            &format!("{:?}", decision.format).to_lowercase(),
        );
        // Kept for the retries of this request id, in the tenant's and the id's name.
        let expires = epoch_millis(ctx.now()) + self.config.idempotency_window.as_millis() as i64;
        ctx.store("decisions")?.put_until(
            &decision_key(&decision.tenant_id, &decision.request_id),
            expires,
            &Kept {
                expires_at: expires,
                decision: B64URL.encode(&delivered),
            },
        )
    }

    /// Delivers again the decision kept for a request id, the very record (and its audit
    /// event, the very `DecisionIssued`: the log shows one decision delivered twice). `false`
    /// when none is kept: not decided yet (its decision is still on its way and answers the
    /// retry too), not deliverable, or forgotten.
    fn redeliver(
        &self,
        ctx: &mut Context<'_>,
        tenant: &str,
        request_id: &str,
    ) -> Result<bool, ProcessError> {
        let Some(kept) = ctx
            .store("decisions")?
            .get::<Kept>(&decision_key(tenant, request_id))?
        else {
            return Ok(false);
        };
        let bytes = B64URL
            .decode(&kept.decision)
            .map_err(|e| ProcessError::new(format!("kept decision of `{request_id}`: {e}")))?;
        let decision: Decision = ctx
            .registry()
            .decode(&bytes)
            .map_err(|e| ProcessError::new(format!("kept decision of `{request_id}`: {e}")))?;
        if deliver(ctx, &decision)? != bytes {
            // Never a second, different decision for one request id.
            return Err(ProcessError::new(format!(
                "the kept decision of `{request_id}` does not encode to the bytes delivered"
            )));
        }
        ctx.count("redelivered", "");
        Ok(true)
    }
}

/// Emits a signed decision to its tenant's topic, keyed by request id, with its audit event;
/// returns the record's bytes as delivered.
fn deliver(ctx: &mut Context<'_>, decision: &Decision) -> Result<Vec<u8>, ProcessError> {
    let payload_bytes = match &decision.payload {
        Payload::Text(t) => t.as_bytes(),
        Payload::Binary(b) => b.as_slice(),
    };
    let tenant = decision.tenant_id.clone();
    let topic = ctx.member_topic("decisions", &tenant)?;
    let delivered = ctx
        .emit_to_member("decisions", &tenant, decision.request_id.clone(), decision)?
        .to_vec();
    let issued = DecisionIssued {
        request_id: decision.request_id.clone(),
        tenant_id: decision.tenant_id.clone(),
        topic,
        decision_digest: Sha256::digest(&delivered).to_vec(),
        payload_digest: Sha256::digest(payload_bytes).to_vec(),
        format: decision.format,
        signing_key_id: decision.signing_key_id.clone(),
        policy: decision.policy.clone(),
        issued_at: decision.issued_at,
    };
    ctx.emit("issued", issued.request_id.clone(), &issued)?;
    Ok(delivered)
}

/// A decision kept for retries: until when, and its record's bytes (base64url).
#[derive(Serialize, Deserialize)]
struct Kept {
    expires_at: i64,
    decision: String,
}

// Store key of a kept decision; its expiry index is the runtime's (`Store::put_until`).
fn decision_key(tenant: &str, request_id: &str) -> Vec<u8> {
    format!("id\0{tenant}\0{request_id}").into_bytes()
}

impl Processor for SigningStage {
    type Input = SigningInput;

    /// Forgets kept decisions whose window has passed, oldest first, a bounded batch at a time.
    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let now = epoch_millis(ctx.now());
        if ctx
            .store("decisions")?
            .expire(now, self.config.expire_batch)?
            > 0
        {
            ctx.count("decisions.expired", "");
        }
        Ok(())
    }

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<SigningInput>,
    ) -> Result<(), ProcessError> {
        let now = epoch_millis(ctx.now());
        let default_ttl = self.config.decision_ttl.as_millis() as i64;
        // One decision per request id: a retry (tenancy's `duplicate`) gets the kept one
        // again, a conflict nothing, and an input for an id already decided (tenancy forgot
        // the id before this stage did) the kept one rather than a second.
        let (tenant, request_id) = match &record.value {
            SigningInput::Match(m) => (
                m.outcome.request.tenant_id.as_str(),
                m.outcome.request.request_id.as_str(),
            ),
            SigningInput::Rejected(r) => (
                r.tenant_id.as_deref().unwrap_or_default(),
                r.request_id.as_str(),
            ),
        };
        if let SigningInput::Rejected(r) = &record.value {
            match r.reason {
                RejectionReason::Duplicate => {
                    if !self.redeliver(ctx, tenant, request_id)? {
                        ctx.count("retries_undecided", "");
                    }
                    return Ok(());
                }
                RejectionReason::Conflict => {
                    ctx.count("conflicts_undelivered", "");
                    return Ok(());
                }
                _ => {}
            }
        }
        if self.redeliver(ctx, tenant, request_id)? {
            ctx.count("decided_inputs_redelivered", "");
            return Ok(());
        }
        let (decision, template, disclosable) = match record.value {
            SigningInput::Match(m) => {
                let request = &m.outcome.request;
                // What the policy lets this tenant see selectively (SD-JWT): the claims whose
                // plan lists them as disclosable.
                let disclosable: Vec<String> = m
                    .outcome
                    .plan
                    .iter()
                    .filter(|p| p.disclosable_attributes.contains(&p.claim_name))
                    .map(|p| p.claim_name.clone())
                    .collect();
                let wants_subject = m.outcome.plan.iter().any(|p| {
                    p.disclosable_attributes
                        .iter()
                        .any(|a| a == crate::SUBJECT_REFERENCE)
                });
                let subject_pseudonym = if wants_subject {
                    pseudonym(ctx, request)?
                } else {
                    None
                };
                let template = m.outcome.response_template.clone().unwrap_or_default();
                let decision = Decision {
                    request_id: request.request_id.clone(),
                    tenant_id: request.tenant_id.clone(),
                    outcomes: outcomes(&m),
                    policy: m.outcome.policy.clone(),
                    issued_at: now,
                    expires_at: now + template.lifetime_ms.unwrap_or(default_ttl),
                    nonce: request.nonce.clone(),
                    subject_pseudonym,
                    format: m.outcome.response_format,
                    payload: Payload::Text(String::new()),
                    signature: None,
                    signing_key_id: String::new(),
                    audit_log_index: None,
                    rejection: None,
                };
                (decision, template, disclosable)
            }
            SigningInput::Rejected(r) => {
                // Nobody to deliver to: an unknown tenant has no decision topic, and creating
                // one per made-up tenant id would let anyone create topics.
                let Some(tenant) = r
                    .tenant_id
                    .clone()
                    .filter(|_| r.reason != RejectionReason::UnknownTenant)
                else {
                    ctx.count("rejections_undeliverable", "");
                    return Ok(());
                };
                let decision = Decision {
                    request_id: r.request_id.clone(),
                    tenant_id: tenant,
                    outcomes: Vec::new(),
                    policy: None,
                    issued_at: now,
                    expires_at: now + default_ttl,
                    nonce: String::new(),
                    subject_pseudonym: None,
                    format: ResponseFormat::Json,
                    payload: Payload::Text(String::new()),
                    signature: None,
                    signing_key_id: String::new(),
                    audit_log_index: None,
                    rejection: Some(r),
                };
                (decision, ResponseTemplate::default(), Vec::new())
            }
        };
        self.issue(ctx, decision, &template, &disclosable)
    }
}
