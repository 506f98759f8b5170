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

pub mod batch;
mod processor;

pub use processor::{PsiInput, PsiStage};

use std::time::Duration;

use pavilion_runtime::{parse_config, GlobalKind, StageKind};
use serde::Deserialize;

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
}

impl Default for PsiConfig {
    fn default() -> Self {
        PsiConfig {
            max_set_age: Duration::from_secs(7 * 24 * 3600),
            max_attestation_age: Duration::from_secs(365 * 24 * 3600),
            job_timeout: Duration::from_secs(600),
        }
    }
}

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "psi",
    outputs: &["matches", "results"],
    stores: &["jobs"],
    globals: &[GlobalKind::table("providers"), GlobalKind::table("sets")],
    check_config: |c| parse_config::<PsiConfig>(c).map(drop),
    build: |c| Ok(Box::new(PsiStage::new(parse_config::<PsiConfig>(c)?))),
};

#[cfg(test)]
mod tests;
