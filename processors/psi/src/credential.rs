//! `credential` evidence: the claim is answered by the holder's presentation of a credential
//! one of the claim's planned providers issued (the request's claim parameter
//! [`PRESENTATION_PARAM`]), not by the provider's set. It counts only when all of these hold:
//!
//! - the issuer is `urn:pavilion:provider:<id>` for a provider of the plan, registered and
//!   active in `pavilion.providers`, and the signing key is one of its registered Ed25519
//!   keys — the registry, written only by the operator, is the trust anchor of the chain;
//! - the signature, the disclosures and the key binding verify, the binding over the request's
//!   nonce and this broker's audience;
//! - validFrom/validUntil hold within the clock skew, and the credential is no older than the
//!   policy's `max_credential_age`;
//! - it reveals no attribute the plan does not list under `disclose`;
//! - its bit in the issuer's newest status list (global store `status_lists`, verified with
//!   the same registry keys) is clear, and that list is younger than its TTL.
//!
//! A list missing or past its TTL makes the claim `unavailable` (nothing can be said yet);
//! every other failure `not_verified`, each with its reason code.

use std::collections::BTreeMap;

use pavilion_credentials::credential::{
    issuer_provider, verify_presentation, Expectations, Presented,
};
use pavilion_credentials::status_list::StatusList;
use pavilion_credentials::CredentialError;
use pavilion_runtime::GlobalStore;
use pavilion_schemas::{
    disclosed_attributes, ClaimMatch, ClaimPlan, CredentialEvidence, EvidenceKind, EvidenceRef,
    MatchStatus, Provider, ProviderState, StatusListPublished, PRESENTATION_PARAM,
};
use sha2::{Digest as _, Sha256};

use crate::PsiConfig;

/// What a credential check reads.
pub(crate) struct CredentialCheck<'a> {
    pub providers: &'a GlobalStore<'a>,
    pub status_lists: &'a GlobalStore<'a>,
    pub config: &'a PsiConfig,
    pub now_ms: i64,
}

impl CredentialCheck<'_> {
    /// The claim's `result` (so far `unavailable`, no reason) from the presentation in
    /// `params`.
    pub(crate) fn resolve(
        &self,
        plan: &ClaimPlan,
        mut result: ClaimMatch,
        params: Option<&BTreeMap<String, String>>,
        nonce: &str,
    ) -> ClaimMatch {
        let Some(presentation) = params.and_then(|p| p.get(PRESENTATION_PARAM)) else {
            result.reason = Some("no_presentation".into());
            return result;
        };
        match self.verify(plan, presentation, nonce) {
            Ok((provider_id, presented)) => {
                result.status = MatchStatus::Matched;
                result
                    .evidence
                    .push(evidence(provider_id, presented, presentation));
            }
            Err(e) => {
                if !e.unavailable() {
                    result.status = MatchStatus::NotMatched;
                }
                result.reason = Some(e.reason().to_owned());
            }
        }
        result
    }

    fn verify(
        &self,
        plan: &ClaimPlan,
        presentation: &str,
        nonce: &str,
    ) -> Result<(String, Presented), CredentialError> {
        let issuer_key = |issuer: &str, kid: &str| self.issuer_key(plan, issuer, kid);
        let presented = verify_presentation(
            presentation,
            &Expectations {
                nonce,
                audience: &self.config.credential_audience,
                now_ms: self.now_ms,
                skew_ms: self.config.credential_clock_skew.as_millis() as i64,
                max_age_ms: plan.max_credential_age_ms,
                binding_max_age_ms: self.config.presentation_max_age.as_millis() as i64,
                issuer_key: &issuer_key,
            },
        )?;
        let allowed: Vec<&String> =
            disclosed_attributes(&plan.claim_name, &plan.disclosable_attributes).collect();
        let extra: Vec<&str> = presented
            .attributes
            .keys()
            .filter(|name| !allowed.contains(name))
            .map(String::as_str)
            .collect();
        if !extra.is_empty() {
            return Err(CredentialError::NotAllowed(extra.join(", ")));
        }
        let provider_id = issuer_provider(&presented.issuer)
            .expect("its key was found by provider")
            .to_owned();
        let status = presented.status.as_ref().ok_or_else(|| {
            CredentialError::Malformed("no status list entry: it could never be revoked".into())
        })?;
        let published = self
            .status_lists
            .get::<StatusListPublished>(&provider_id, status.list.as_bytes())
            .map_err(|e| CredentialError::StatusUnavailable(e.to_string()))?
            .ok_or_else(|| {
                CredentialError::StatusUnavailable(format!("no status list {}", status.list))
            })?;
        let list = StatusList::verify(&published.credential, &issuer_key)
            .map_err(|e| CredentialError::StatusUnavailable(format!("the status list: {e}")))?;
        if list.issuer != presented.issuer || list.url != status.list {
            return Err(CredentialError::StatusUnavailable(
                "the status list published is another issuer's or another list".into(),
            ));
        }
        if list.fresh_until() < self.now_ms {
            return Err(CredentialError::StatusUnavailable(format!(
                "the newest status list is older than its TTL ({} ms)",
                list.ttl_ms
            )));
        }
        if list.bits.get(status.index) {
            return Err(CredentialError::Revoked);
        }
        Ok((provider_id, presented))
    }

    /// The Ed25519 key `kid` of the provider that issues as `issuer`, if the claim's plan
    /// trusts that provider and the registry has it active.
    fn issuer_key(
        &self,
        plan: &ClaimPlan,
        issuer: &str,
        kid: &str,
    ) -> Result<Vec<u8>, CredentialError> {
        let unknown = |why: &str| CredentialError::UnknownIssuer(format!("{issuer}: {why}"));
        let provider_id =
            issuer_provider(issuer).ok_or_else(|| unknown("not a provider's issuer id"))?;
        if !plan.providers.iter().any(|p| p == provider_id) {
            return Err(unknown("not a provider of this claim's plan"));
        }
        let provider = self
            .providers
            .get::<Provider>("", provider_id.as_bytes())
            .map_err(|_| unknown("its registry record is unreadable"))?
            .ok_or_else(|| unknown("not registered"))?;
        if provider.state != ProviderState::Active {
            return Err(CredentialError::IssuerInactive(provider_id.to_owned()));
        }
        provider
            .attestation_keys
            .into_iter()
            .find(|k| k.key_id == kid && k.algorithm == "Ed25519")
            .map(|k| k.public_key)
            .ok_or_else(|| unknown(&format!("no registered Ed25519 key `{kid}`")))
    }
}

fn evidence(provider_id: String, presented: Presented, presentation: &str) -> EvidenceRef {
    let status = presented.status.expect("checked");
    EvidenceRef {
        provider_id,
        kind: EvidenceKind::Credential,
        attestation_digest: None,
        proof_digest: Some(Sha256::digest(presentation.as_bytes()).to_vec()),
        zk: None,
        disclosure: None,
        credential: Some(CredentialEvidence {
            format: presented.format.name().to_owned(),
            issuer: presented.issuer,
            key_id: presented.key_id,
            attributes: presented.attributes,
            issued_at: presented.issued_at,
            status_list: status.list,
            status_index: status.index as i64,
            presentation: presentation.to_owned(),
        }),
    }
}
