//! `tenancy`: the first stage of the request path. For every `VerificationRequest` it
//! authenticates the tenant's Ed25519 signature, validates sizes, claims, nonce and clock skew,
//! and enforces the tenant's rate limit (GCRA with burst) and daily quota — then accepts it
//! onto `pavilion.requests.accepted` or rejects it with a reason code. A `request_id` is
//! answered once within the idempotency window: the same id asking the same question again
//! is passed on as a retry (`duplicate`, whose original decision signing re-delivers), asking
//! another as a `conflict`. A request that fails
//! authentication is neither: it is dead-lettered as `unauthenticated`, so no decision ever
//! carries a request id its sender has not proven it owns.
//!
//! Tenants come from the compacted `pavilion.tenants` topic, read as a second input; policy
//! lifecycle events from `pavilion.policies`, a third, so each accepted request names the
//! policy revision active when it was accepted. Accepted requests and rejections leave keyed
//! by request id: the rest of the path spreads one tenant's requests over every partition.
//! Everything about a tenant — its registry entry, rate-limit state, idempotency window —
//! lives on the partition its id hashes to (Kafka's default partitioner) and survives
//! restarts and rebalances through the runtime's changelogs. Producers may partition requests
//! as they like: a request read elsewhere, or keyed otherwise, is first routed to its tenant's
//! partition through `pavilion.requests.routed` (Kafka Streams' repartition topic).

mod config;
mod limits;
mod processor;

pub use config::TenancyConfig;
pub use processor::{Tenancy, TenancyInput};

use pavilion_runtime::{parse_config, StageKind};

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "tenancy",
    outputs: &["accepted", "rejected", "routed"],
    stores: &["tenants", "seen", "limits", "policies"],
    globals: &[],
    check_config: |c| parse_config::<TenancyConfig>(c).map(drop),
    build: |c| Ok(Box::new(Tenancy::new(parse_config(c)?))),
};

#[cfg(test)]
mod tests;
