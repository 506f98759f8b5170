//! `policy`: decides, per tenant and per claim, whether a request may be answered and how.
//!
//! A tenant's policy is a versioned, content-addressed document on `pavilion.policies`:
//! Cedar permit/forbid rules (forbid overrides permit; nothing permitted is denied) plus a
//! verification plan per claim (providers in order, filtered by the tenant's allowed regions;
//! evidence required; what may be disclosed; the response format). Industry templates are
//! documents without a tenant that tenant policies instantiate and override. Activation and
//! rollback are events; the stage keeps each tenant's activation history and evaluates every
//! request under the version active when it was accepted, recording policy id, version and
//! content hash in the outcome, so a replay decides the same.
//!
//! The engine (`document`, `engine`, `check`) is also what `pavilion policy check | test`
//! run, so the CLI and the stage cannot disagree.

pub mod check;
pub mod document;
pub mod engine;
mod processor;

pub use processor::{Activation, PolicyInput, PolicyStage};

use pavilion_runtime::{parse_config, StageKind};

/// `config:` of a policy stage: it has no settings.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {}

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "policy",
    outputs: &["outcomes"],
    stores: &["documents", "active"],
    globals: &[],
    check_config: |c| parse_config::<PolicyConfig>(c).map(drop),
    build: |c| {
        parse_config::<PolicyConfig>(c)?;
        Ok(Box::new(PolicyStage::default()))
    },
};

#[cfg(test)]
mod tests;
