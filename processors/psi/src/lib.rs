//! `psi`: private matching. For each policy outcome, looks the request's OPRF tokens up in
//! the sets the planned providers published, and says per claim `matched`, `not_matched` or
//! `unavailable` (with the reason), with references to the evidence used.
//!
//! The provider registry (`pavilion.providers`) and every provider's set
//! (`pavilion.provider-sets.<provider>`, keyed by `H(F_k(x))`) are global stores: each
//! instance holds all of them, because a request (partitioned by tenant) may ask any provider
//! about any subject. The stage sees OPRF outputs only; a lookup reveals membership and
//! nothing else.
//!
//! **Never a silent false:** `not_matched` means a provider that was able to answer did not
//! have the subject (or did not attest the claim). A provider with no set loaded, a stale
//! set, an unverifiable attestation or a missing token cannot answer; when no provider
//! matched and any of them could not answer, the claim is `unavailable`.
//!
//! [`batch`] answers batch PSI jobs (a tenant's whole list against one provider's set).
//! `predicate` answers claims whose plan asks for `zk_predicate` evidence: a proof from the
//! provider over the attribute it committed to, verified here (see its module docs).
//! `credential` answers claims whose plan asks for `credential` evidence from the holder's
//! presentation (claim parameter `presentation`) of a credential a planned provider
//! issued, checked against the registry and the providers' status lists (global store
//! `status_lists`, `pavilion.status-lists.<provider>`).

pub mod batch;
mod breaker;
mod credential;
mod predicate;
mod processor;

pub use processor::{PsiInput, PsiStage};

use std::collections::BTreeMap;
use std::time::Duration;

use pavilion_runtime::{parse_config, GlobalKind, StageKind};
use serde::Deserialize;

/// How a claim is answered by a zero-knowledge predicate (`config.predicates.<claim>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredicateConfig {
    /// Circuit id: `date_le_cutoff` (the attribute is a date, YYYYMMDD, on or before a
    /// cutoff `threshold` years before the request) or `int_ge_threshold` (at least
    /// `threshold`).
    pub circuit: String,
    /// The attribute the provider committed to (`--attribute` of `pavilion provider load`).
    pub attribute: String,
}

/// `config:` of a psi stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PsiConfig {
    /// A provider set whose last completed load is older than this is stale: unavailable.
    #[serde(with = "humantime_serde")]
    pub max_set_age: Duration,
    /// An attestation older than this does not count: unavailable.
    #[serde(with = "humantime_serde")]
    pub max_attestation_age: Duration,
    /// A batch job whose chunks or request have not all arrived after this is failed.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
    /// Claims answered by a zero-knowledge predicate, by claim name.
    pub predicates: BTreeMap<String, PredicateConfig>,
    /// How long a provider has to answer a proof request, retries included; then the next
    /// provider in the plan is asked, or the claim is `unavailable: provider_timeout`.
    #[serde(with = "humantime_serde")]
    pub proof_deadline: Duration,
    /// An unanswered proof request is sent again after this, then after twice as long, …
    #[serde(with = "humantime_serde")]
    pub proof_retry_after: Duration,
    /// Failures in a row (timeouts, bad proofs) that open a provider's circuit breaker.
    #[serde(deserialize_with = "pavilion_runtime::yaml_count")]
    pub breaker_failures: u64,
    /// How long an open breaker refuses before it lets one probe through.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Answers verified together in one punctuation, at most.
    #[serde(deserialize_with = "pavilion_runtime::yaml_count")]
    pub max_verify_batch: u64,
    /// The audience a holder binds a credential presentation to (`aud` of its key binding).
    pub credential_audience: String,
    /// Clock difference tolerated between issuers, holders and this stage when checking a
    /// credential's validity times and a presentation's age.
    #[serde(with = "humantime_serde")]
    pub credential_clock_skew: Duration,
    /// How long after the holder made it a presentation is still taken.
    #[serde(with = "humantime_serde")]
    pub presentation_max_age: Duration,
}

impl Default for PsiConfig {
    fn default() -> Self {
        PsiConfig {
            max_set_age: Duration::from_secs(7 * 24 * 3600),
            max_attestation_age: Duration::from_secs(365 * 24 * 3600),
            job_timeout: Duration::from_secs(600),
            predicates: BTreeMap::new(),
            proof_deadline: Duration::from_secs(5),
            proof_retry_after: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(10),
            max_verify_batch: 256,
            credential_audience: "pavilion".into(),
            credential_clock_skew: Duration::from_secs(60),
            presentation_max_age: Duration::from_secs(300),
        }
    }
}

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "psi",
    outputs: &["matches", "results", "proof_requests"],
    stores: &["jobs", "pending"],
    globals: &[
        // Written in each provider's home region and copied to the others: the greatest
        // version of a provider's record is its record everywhere.
        GlobalKind::table("providers").versioned(provider_version),
        GlobalKind::table("sets"),
        GlobalKind::table("status_lists"),
    ],
    check_config: |c| parse_config::<PsiConfig>(c).and_then(check),
    build: |c| Ok(Box::new(PsiStage::new(parse_config::<PsiConfig>(c)?))),
};

/// A registry record's version, as bytes that sort like versions.
fn provider_version(value: &[u8]) -> Result<Vec<u8>, String> {
    pavilion_schemas::Registry::builtin()
        .decode::<pavilion_schemas::Provider>(value)
        .map(|p| p.order().to_bytes())
        .map_err(|e| e.to_string())
}

fn check(config: PsiConfig) -> Result<(), String> {
    for (claim, p) in &config.predicates {
        if pavilion_zk::Circuit::from_id(&p.circuit).is_none() {
            return Err(format!(
                "predicates.{claim}: unknown circuit `{}` (date_le_cutoff, int_ge_threshold)",
                p.circuit
            ));
        }
    }
    if config.max_verify_batch == 0 {
        return Err("max_verify_batch must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod credential_tests;
#[cfg(test)]
mod disclosure_tests;
#[cfg(test)]
mod predicate_tests;
#[cfg(test)]
mod tests;
