//! `tenancy`: the first stage of the request path. For every `VerificationRequest` it
//! authenticates the tenant's Ed25519 signature, validates sizes, claims, nonce and clock skew,
//! drops duplicates of a `request_id` seen within the idempotency window, and enforces the
//! tenant's rate limit (GCRA with burst) and daily quota — then accepts it onto
//! `pavilion.requests.accepted` or rejects it with a reason code.
//!
//! Tenants come from the compacted `pavilion.tenants` topic, read as a second input.
//! Requests and tenants are both keyed by tenant id and co-partitioned, so everything about a
//! tenant — its registry entry, rate-limit state, idempotency window — lives on one partition
//! and survives restarts and rebalances through the runtime's changelogs.

mod config;
mod limits;
mod processor;

pub use config::TenancyConfig;
pub use processor::{Tenancy, TenancyInput};

use pavilion_runtime::{parse_config, StageKind};

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "tenancy",
    outputs: &["accepted", "rejected"],
    stores: &["tenants", "seen", "limits"],
    globals: &[],
    check_config: |c| parse_config::<TenancyConfig>(c).map(drop),
    build: |c| Ok(Box::new(Tenancy::new(parse_config(c)?))),
};

#[cfg(test)]
mod tests;
