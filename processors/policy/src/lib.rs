//! `policy`: decides, per tenant and per claim, whether a request may be answered and how.
//!
//! A tenant's policy is a versioned, content-addressed document on `pavilion.policies`:
//! Cedar permit/forbid rules (forbid overrides permit; nothing permitted is denied) plus a
//! verification plan per claim (providers in order, filtered by the tenant's allowed regions;
//! evidence required; what may be disclosed; the response format). Industry templates are
//! documents without a tenant that tenant policies instantiate and override. Activation and
//! rollback are events. Tenancy, which reads the topic on the tenant's partition, stamps each
//! accepted request with the revision active when it accepted it; this stage, keyed by
//! request id so one tenant's requests spread over every partition, finds that revision in
//! a global store of every document and records policy id, version and content hash in the
//! outcome, so a replay decides the same.
//!
//! The engine (`document`, `engine`, `check`) is also what `pavilion policy check | test`
//! run, so the CLI and the stage cannot disagree.

pub mod check;
pub mod document;
pub mod engine;
mod processor;

pub use processor::{document_store_key, PolicyStage};

use pavilion_runtime::{parse_config, GlobalKind, StageKind};

/// `config:` of a policy stage: it has no settings.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {}

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "policy",
    outputs: &["outcomes"],
    stores: &[],
    globals: &[GlobalKind::keyed("documents", document_store_key)],
    check_config: |c| parse_config::<PolicyConfig>(c).map(drop),
    build: |c| {
        parse_config::<PolicyConfig>(c)?;
        Ok(Box::new(PolicyStage::default()))
    },
};

#[cfg(test)]
mod tests;
