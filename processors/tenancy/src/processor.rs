use ed25519_dalek::{Signature, VerifyingKey};
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::topology::RegionSpec;
use pavilion_runtime::{Context, Input, ProcessError, Processor, Record, REGION};
use pavilion_schemas::{
    AcceptedRequest, CodecError, DeadLetterReason, Event, PolicyDocument, PolicyRef, PolicyState,
    Registry, RejectionReason, RequestRejected, Tenant, TenantState, VerificationRequest,
    PRESENTATION_PARAM,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::{Gcra, Quota};
use crate::TenancyConfig;

/// What the stage reads: requests, tenant registry updates, policy lifecycle events.
#[derive(Debug, Clone, PartialEq)]
pub enum TenancyInput {
    /// From `pavilion.requests`, or routed to its tenant's partition.
    Request(VerificationRequest),
    /// From `pavilion.tenants`.
    Tenant(Tenant),
    /// From `pavilion.policies`.
    Policy(PolicyDocument),
}

impl Input for TenancyInput {
    fn decode(registry: &Registry, _topic: &str, bytes: &[u8]) -> Result<Self, CodecError> {
        match registry.name_of(bytes)? {
            VerificationRequest::FULL_NAME => registry.decode(bytes).map(TenancyInput::Request),
            Tenant::FULL_NAME => registry.decode(bytes).map(TenancyInput::Tenant),
            PolicyDocument::FULL_NAME => registry.decode(bytes).map(TenancyInput::Policy),
            other => Err(CodecError::SchemaMismatch {
                expected: format!(
                    "{}, {} or {}",
                    VerificationRequest::FULL_NAME,
                    Tenant::FULL_NAME,
                    PolicyDocument::FULL_NAME
                ),
                found: other.to_owned(),
            }),
        }
    }
}

/// A rejection: reason, detail, and when a retry can succeed.
struct Reject(RejectionReason, String, Option<i64>);

fn reject(reason: RejectionReason, detail: impl Into<String>) -> Reject {
    Reject(reason, detail.into(), None)
}

/// The tenancy processor.
pub struct Tenancy {
    config: TenancyConfig,
}

impl Tenancy {
    /// A processor with its config.
    pub fn new(config: TenancyConfig) -> Self {
        Tenancy { config }
    }
}

// Store keys. `\0` cannot occur in tenant or request ids that pass validation.
fn seen_key(tenant: &str, request_id: &str) -> Vec<u8> {
    format!("id\0{tenant}\0{request_id}").into_bytes()
}

/// What `seen` remembers of an answered request id.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Seen {
    /// Until when, and the hex SHA-256 of the question asked ([`question_digest`]).
    Answered { expires_at: i64, question: String },
    /// An entry written before questions were remembered: only until when.
    Legacy(i64),
}

impl Seen {
    fn expires_at(&self) -> i64 {
        match self {
            Seen::Answered { expires_at, .. } | Seen::Legacy(expires_at) => *expires_at,
        }
    }

    /// What a request with an answered id gets: a retry marker when it asks the question
    /// the id was answered for (or when that is not known), else a conflict.
    fn answer(&self, r: &VerificationRequest, question: &str) -> Reject {
        match self {
            Seen::Answered {
                expires_at,
                question: asked,
            } if asked != question => reject(
                RejectionReason::Conflict,
                format!(
                    "request_id `{}` was answered for a different request; remembered until {expires_at} ms",
                    r.request_id
                ),
            ),
            _ => reject(
                RejectionReason::Duplicate,
                format!(
                    "retry of request_id `{}`: its decision is delivered again",
                    r.request_id
                ),
            ),
        }
    }
}

/// The question a request asks, as a hex SHA-256: its canonical signing bytes without what a
/// sender renews when it sends the same question again (key id, nonce, timestamps; the
/// signature is not in the signing bytes). A retry re-signed later asks the same question;
/// the same id with other claims, parameters, purpose, jurisdiction, consent, tokens or
/// format does not.
fn question_digest(r: &VerificationRequest) -> String {
    let question = VerificationRequest {
        key_id: String::new(),
        signature: Vec::new(),
        signed_at: 0,
        nonce: String::new(),
        created_at: 0,
        ..r.clone()
    };
    Sha256::digest(question.signing_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rate_key(tenant: &str) -> Vec<u8> {
    format!("rate\0{tenant}").into_bytes()
}

fn quota_key(tenant: &str) -> Vec<u8> {
    format!("quota\0{tenant}").into_bytes()
}

impl Processor for Tenancy {
    type Input = TenancyInput;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<TenancyInput>,
    ) -> Result<(), ProcessError> {
        match record.value {
            TenancyInput::Tenant(tenant) => {
                if record.key != tenant.tenant_id.as_bytes() {
                    return Err(ProcessError::new(format!(
                        "tenant record keyed `{}` must be keyed by its tenant id `{}`",
                        String::from_utf8_lossy(&record.key),
                        tenant.tenant_id
                    )));
                }
                // From this region's topic or another's copy of its own, in any order: the
                // greatest version applies (see `pavilion_schemas::VersionOrder`).
                let mut tenants = ctx.store("tenants")?;
                if let Some(known) = tenants.get::<Tenant>(tenant.tenant_id.as_bytes())? {
                    if known.order() >= tenant.order() {
                        ctx.count("tenant.stale_revision_ignored", &tenant.tenant_id);
                        return Ok(());
                    }
                }
                tenants.put(tenant.tenant_id.as_bytes(), &tenant)?;
                ctx.count("tenant.updated", &tenant.tenant_id);
                Ok(())
            }
            TenancyInput::Policy(document) => record_policy(ctx, document),
            TenancyInput::Request(request) => {
                // Residency, before anything copies the request (routing would): a region
                // refuses a subject of a jurisdiction it does not serve, and its dead letter
                // keeps neither key nor bytes.
                if let Ok(region) = ctx.resource::<RegionSpec>(REGION) {
                    if !region.serves(&request.subject_jurisdiction) {
                        ctx.count("refused.not_served", "");
                        return Err(ProcessError::refused(
                            DeadLetterReason::NotServed,
                            format!(
                                "region {} does not serve the subject's jurisdiction: send the request to the region that does",
                                region.name
                            ),
                        ));
                    }
                }
                let tenant_key = request.tenant_id.as_bytes();
                if record.key != tenant_key || !ctx.owns_key(tenant_key) {
                    // The producer's partitioner or key put it where this tenant's state is
                    // not: send it to where it is (read back from the routed topic).
                    ctx.count("routed", "");
                    return ctx.route("routed", request.tenant_id.clone(), &request);
                }
                let now = epoch_millis(ctx.now());
                match self.admit(ctx, &request, now)? {
                    // From here on a request is keyed by its id, so one tenant's requests
                    // spread over every partition of the rest of the path.
                    // Counted without the tenant: per-tenant volumes are released only by the
                    // analytics stage, with differential privacy.
                    Ok(accepted) => {
                        ctx.count("accepted", "");
                        ctx.emit("accepted", request.request_id.clone(), &accepted)
                    }
                    Err(Reject(reason, detail, retry_after_ms)) => {
                        ctx.count(&format!("rejected.{}", reason.as_str()), "");
                        let rejected = RequestRejected {
                            request_id: request.request_id.clone(),
                            tenant_id: Some(request.tenant_id.clone()),
                            reason,
                            detail,
                            retry_after_ms,
                            rejected_at: now,
                        };
                        ctx.emit("rejected", request.request_id.clone(), &rejected)
                    }
                }
            }
        }
    }

    /// Forgets request ids whose window has passed, oldest first, a bounded batch at a time.
    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        let now = epoch_millis(ctx.now());
        if ctx.store("seen")?.expire(now, self.config.expire_batch)? > 0 {
            ctx.count("idempotency.expired", "");
        }
        Ok(())
    }
}

impl Tenancy {
    /// Decides one request. The outer `Result` is a stage failure (dead letter: a failed
    /// authentication among them); the inner one is the decision.
    ///
    /// A request id is answered once. Every decision, accepted or rejected (rate and quota
    /// included: final for the id), remembers the id with the digest of the question it
    /// asked, for the idempotency window. The id again, asking the same question, is a retry
    /// (`duplicate`: signing re-delivers the original decision); asking another, a
    /// `conflict` (never delivered: the id has its answer). Neither is remembered, and both
    /// are told apart before any check that could answer differently now (tenant state,
    /// clock skew, limits).
    fn admit(
        &self,
        ctx: &mut Context<'_>,
        r: &VerificationRequest,
        now: i64,
    ) -> Result<Result<AcceptedRequest, Reject>, ProcessError> {
        let tenant = self.authenticate(ctx, r, now)?;
        let question = question_digest(r);
        let id = seen_key(&r.tenant_id, &r.request_id);
        let seen = ctx.store("seen")?.get::<Seen>(&id)?;
        if let Some(seen) = seen.filter(|s| s.expires_at() > now) {
            return Ok(Err(seen.answer(r, &question)));
        }
        let decided = self.decide(ctx, &tenant, r, now)?;
        let expires = now + self.config.idempotency_window.as_millis() as i64;
        ctx.store("seen")?.put_until(
            &id,
            expires,
            &Seen::Answered {
                expires_at: expires,
                question,
            },
        )?;
        Ok(decided)
    }

    /// The decision on a request id not answered yet: tenant state, shape, content, limits.
    fn decide(
        &self,
        ctx: &mut Context<'_>,
        tenant: &Tenant,
        r: &VerificationRequest,
        now: i64,
    ) -> Result<Result<AcceptedRequest, Reject>, ProcessError> {
        if let Err(rejection) = admits(tenant)
            .and_then(|()| self.validate_shape(r))
            .and_then(|()| self.validate_content(r, now))
        {
            return Ok(Err(rejection));
        }

        // Rate and quota are checked together and charged only when both allow.
        let mut limits = ctx.store("limits")?;
        let gcra = limits
            .get::<Gcra>(&rate_key(&r.tenant_id))?
            .unwrap_or_default();
        let quota = limits
            .get::<Quota>(&quota_key(&r.tenant_id))?
            .unwrap_or_default();
        let config = &tenant.config;
        let gcra = match gcra.check(now, config.rate_limit_per_second, config.burst) {
            Ok(g) => g,
            Err(wait) => {
                return Ok(Err(Reject(
                    RejectionReason::RateLimited,
                    format!(
                        "over {} requests/s (burst {})",
                        config.rate_limit_per_second, config.burst
                    ),
                    Some(wait),
                )))
            }
        };
        let quota = match quota.check(now, config.daily_quota) {
            Ok(q) => q,
            Err(wait) => {
                return Ok(Err(Reject(
                    RejectionReason::QuotaExceeded,
                    format!(
                        "daily quota of {} used",
                        config.daily_quota.unwrap_or_default()
                    ),
                    Some(wait),
                )))
            }
        };
        limits.put(&rate_key(&r.tenant_id), &gcra)?;
        limits.put(&quota_key(&r.tenant_id), &quota)?;

        let policy = ctx
            .store("policies")?
            .get::<PolicyRef>(r.tenant_id.as_bytes())?;
        Ok(Ok(AcceptedRequest {
            request: r.clone(),
            tenant_revision: tenant.revision,
            tenant_allowed_regions: tenant.config.allowed_regions.clone(),
            accepted_at: now,
            policy,
        }))
    }

    /// Size and shape checks on the authenticated request.
    fn validate_shape(&self, r: &VerificationRequest) -> Result<(), Reject> {
        let c = &self.config;
        let mut strings = vec![
            ("request_id", r.request_id.as_str()),
            ("tenant_id", r.tenant_id.as_str()),
            ("key_id", r.key_id.as_str()),
            ("nonce", r.nonce.as_str()),
            ("purpose", r.purpose.as_str()),
            ("subject_jurisdiction", r.subject_jurisdiction.as_str()),
        ];
        if let Some(consent) = &r.consent_ref {
            strings.push(("consent_ref", consent));
        }
        for claim in &r.claims {
            strings.push(("claim name", &claim.name));
            for (k, v) in &claim.params {
                strings.push(("claim parameter", k));
                if k == PRESENTATION_PARAM {
                    if v.len() > c.max_presentation_len {
                        return Err(reject(
                            RejectionReason::Oversize,
                            format!(
                                "the presentation is {} bytes, over {}",
                                v.len(),
                                c.max_presentation_len
                            ),
                        ));
                    }
                } else {
                    strings.push(("claim parameter", v));
                }
            }
        }
        for token in &r.subject_tokens {
            strings.push(("provider_id", &token.provider_id));
        }
        for (field, value) in strings {
            if value.len() > c.max_string_len {
                return Err(reject(
                    RejectionReason::Oversize,
                    format!(
                        "{field} is {} bytes, over {}",
                        value.len(),
                        c.max_string_len
                    ),
                ));
            }
            if value.contains('\0') {
                return Err(reject(
                    RejectionReason::InvalidSchema,
                    format!("{field} contains a NUL character"),
                ));
            }
        }
        if r.request_id.is_empty() {
            return Err(reject(
                RejectionReason::InvalidSchema,
                "request_id is empty",
            ));
        }
        if r.claims.len() > c.max_claims || r.subject_tokens.len() > c.max_tokens {
            return Err(reject(
                RejectionReason::Oversize,
                format!(
                    "{} claims and {} tokens, over {} / {}",
                    r.claims.len(),
                    r.subject_tokens.len(),
                    c.max_claims,
                    c.max_tokens
                ),
            ));
        }
        if let Some(t) = r
            .subject_tokens
            .iter()
            .find(|t| t.token.len() > c.max_token_len)
        {
            return Err(reject(
                RejectionReason::Oversize,
                format!(
                    "a token for `{}` is {} bytes, over {}",
                    t.provider_id,
                    t.token.len(),
                    c.max_token_len
                ),
            ));
        }
        Ok(())
    }

    /// Who sent the request: a registered, not deleted tenant, one of its keys valid now, and
    /// a signature by that key over the request. Whatever fails here is dropped, never
    /// answered: a signed rejection would bear a request id the sender has not proven it
    /// owns (anyone who can write to the ingest topic could pre-empt a tenant's answers), and
    /// a made-up tenant id would get a decision topic. A request too large to be worth
    /// verifying is dropped the same way, before any work.
    fn authenticate(
        &self,
        ctx: &mut Context<'_>,
        r: &VerificationRequest,
        now: i64,
    ) -> Result<Tenant, ProcessError> {
        let signing_bytes = r.signing_bytes();
        if signing_bytes.len() > self.config.max_request_bytes {
            return Err(dropped(
                ctx,
                RejectionReason::Oversize,
                "",
                format!(
                    "request is {} bytes, over {}",
                    signing_bytes.len(),
                    self.config.max_request_bytes
                ),
            ));
        }
        let tenant = ctx
            .store("tenants")?
            .get::<Tenant>(r.tenant_id.as_bytes())?
            .filter(|t| t.state != TenantState::Deleted);
        let Some(tenant) = tenant else {
            return Err(dropped(
                ctx,
                RejectionReason::UnknownTenant,
                "",
                format!("no tenant `{}`", r.tenant_id),
            ));
        };
        match verify(&tenant, r, &signing_bytes, now) {
            Ok(()) => Ok(tenant),
            Err(Reject(reason, detail, _)) => Err(dropped(ctx, reason, &r.tenant_id, detail)),
        }
    }

    /// Checks on the authenticated content.
    fn validate_content(&self, r: &VerificationRequest, now: i64) -> Result<(), Reject> {
        if r.nonce.is_empty() {
            return Err(reject(RejectionReason::MissingNonce, "nonce is empty"));
        }
        let skew = self.config.clock_skew.as_millis() as i64;
        for (field, at) in [("created_at", r.created_at), ("signed_at", r.signed_at)] {
            if (at - now).abs() > skew {
                return Err(reject(
                    RejectionReason::ClockSkew,
                    format!("{field} is {} ms from now, over {skew}", at - now),
                ));
            }
        }
        if r.claims.is_empty() {
            return Err(reject(RejectionReason::InvalidSchema, "no claims asked"));
        }
        let allowed = &self.config.allowed_claims;
        if let Some(claim) = r
            .claims
            .iter()
            .find(|c| !allowed.is_empty() && !allowed.contains(&c.name))
        {
            return Err(reject(
                RejectionReason::ClaimNotAllowed,
                format!("claim `{}` is not served", claim.name),
            ));
        }
        Ok(())
    }
}

/// Moves a tenant's active policy revision: an activation (or rollback) makes its revision
/// active, retiring the active revision leaves none; drafts and templates change nothing
/// here. Requests accepted after this record, in the order this partition is read, are
/// stamped with the result: that order, recorded in the log, is what "a request accepted
/// after an activation" means.
fn record_policy(ctx: &mut Context<'_>, document: PolicyDocument) -> Result<(), ProcessError> {
    let Some(tenant) = document.tenant_id.clone() else {
        return Ok(());
    };
    let order = document.order().to_bytes();
    let revision = PolicyRef {
        policy_id: document.policy_id,
        version: document.version,
        content_hash: document.content_hash,
    };
    let mut policies = ctx.store("policies")?;
    // Lifecycle events of one tenant's policies are written in its home region, so they
    // arrive in order from one topic or its copy; the version guards against a copy of an
    // older event applied after a newer one all the same.
    let version_key = format!("v/{tenant}");
    if policies
        .get::<Vec<u8>>(version_key.as_bytes())?
        .is_some_and(|applied| applied > order)
    {
        ctx.count("policy.stale_event_ignored", &tenant);
        return Ok(());
    }
    policies.put(version_key.as_bytes(), &order)?;
    match document.state {
        PolicyState::Active => policies.put(tenant.as_bytes(), &revision)?,
        PolicyState::Retired => {
            let active = policies.get::<PolicyRef>(tenant.as_bytes())?;
            if active
                .is_some_and(|a| a.policy_id == revision.policy_id && a.version == revision.version)
            {
                policies.delete(tenant.as_bytes());
            } else {
                return Ok(());
            }
        }
        PolicyState::Draft | PolicyState::Unknown => return Ok(()),
    }
    ctx.count("policy.activated", &tenant);
    Ok(())
}

/// Counts a request dropped unauthenticated (`dropped.<reason>`, labelled with the tenant
/// only when it is registered) and makes its dead letter.
fn dropped(
    ctx: &Context<'_>,
    reason: RejectionReason,
    tenant: &str,
    detail: String,
) -> ProcessError {
    ctx.count(&format!("dropped.{}", reason.as_str()), tenant);
    ProcessError::refused(
        DeadLetterReason::Unauthenticated,
        format!("{}: {detail}", reason.as_str()),
    )
}

/// Whether an authenticated tenant may be served now.
fn admits(tenant: &Tenant) -> Result<(), Reject> {
    match tenant.state {
        TenantState::Active => Ok(()),
        TenantState::Suspended => Err(reject(
            RejectionReason::TenantSuspended,
            "tenant is suspended",
        )),
        TenantState::Deleted => Err(reject(RejectionReason::UnknownTenant, "tenant was deleted")),
        TenantState::Provisioned | TenantState::Unknown => Err(reject(
            RejectionReason::TenantInactive,
            "tenant is not active yet",
        )),
    }
}

/// Key validity and the Ed25519 signature.
fn verify(
    tenant: &Tenant,
    r: &VerificationRequest,
    signing_bytes: &[u8],
    now: i64,
) -> Result<(), Reject> {
    let Some(key) = tenant.signing_keys.iter().find(|k| k.key_id == r.key_id) else {
        return Err(reject(
            RejectionReason::UnknownKey,
            format!("no key `{}` for this tenant", r.key_id),
        ));
    };
    if key.revoked_at.is_some_and(|at| at <= now) {
        return Err(reject(
            RejectionReason::RevokedKey,
            format!("key `{}` is revoked", r.key_id),
        ));
    }
    if key.not_before > now {
        return Err(reject(
            RejectionReason::KeyNotYetValid,
            format!("key `{}` is valid from {} ms", r.key_id, key.not_before),
        ));
    }
    if key.not_after.is_some_and(|at| at <= now) {
        return Err(reject(
            RejectionReason::ExpiredKey,
            format!("key `{}` expired", r.key_id),
        ));
    }
    let public: [u8; 32] = key.public_key.as_slice().try_into().map_err(|_| {
        reject(
            RejectionReason::BadSignature,
            format!("key `{}` is not a 32-byte Ed25519 key", r.key_id),
        )
    })?;
    let verifying = VerifyingKey::from_bytes(&public).map_err(|_| {
        reject(
            RejectionReason::BadSignature,
            "registered key is not a valid point",
        )
    })?;
    let signature = Signature::from_slice(&r.signature).map_err(|_| {
        reject(
            RejectionReason::BadSignature,
            format!("signature is {} bytes, not 64", r.signature.len()),
        )
    })?;
    verifying
        .verify_strict(signing_bytes, &signature)
        .map_err(|_| reject(RejectionReason::BadSignature, "signature does not verify"))
}
