//! `analytics`: aggregates of the request path — requests, outcomes per claim, matches per
//! provider, rejections by reason, claims asked — per tenant, across tenants, per UTC day,
//! released only with differential privacy under a budget that is persisted and never
//! exceeded.
//!
//! **Aggregation.** The stage reads the path's answers (match results — every accepted request
//! gets one — and tenancy's rejections), which arrive keyed by request id on every partition. Each instance adds what a
//! request contributes to its scopes (its tenant and [`CROSS_TENANT`]) in the `partials` store,
//! each request's contribution clipped to `max_claims_per_request` claims ([`metric`]). Every
//! punctuation flushes the partials to `pavilion.analytics.counts` keyed by scope — Kafka
//! Streams' repartition — so that every increment of a scope meets in the `totals` store of
//! the one instance that also reads the scope's queries and its tenant record.
//!
//! **Release.** A query ([`AnalyticsQuery`], keyed by scope) names a metric, its cells (days
//! and public dimension values) and ε. The stage debits the scope's ledger (`ledger` store:
//! millionths of ε per budget period, the mechanism's loss rounded up, never refunded) and only
//! then draws OpenDP's discrete Laplace noise ([`noise`]); debit, noisy answer and the release
//! event are one transaction. A refused query (over budget, or invalid) is a release with
//! status `refused`, the budget left, and no noise drawn. The release is kept by id (`released`
//! store): asked again, the same answer is returned at no cost. A tenant's releases reach its
//! own topic only from the committed releases topic, read back as an input: a noisy answer
//! whose transaction aborted (a crash between debit and commit) is seen by no tenant, so its
//! redraw is not a second spend.
//!
//! **Privacy unit: the request.** The broker never learns who a subject is (it sees OPRF
//! tokens of each provider and holder-bound presentations), so it cannot bound a subject's
//! contribution; each request's is bounded instead, and each metric's sensitivity follows
//! ([`metric::Metric::sensitivity`]).

pub mod metric;
pub mod noise;

mod config;
mod processor;

pub use config::{micro_floor, utc_day, AnalyticsConfig};
pub use processor::{micro_text, Analytics, AnalyticsInput};

use pavilion_runtime::{parse_config, StageKind};
pub use pavilion_schemas::CROSS_TENANT;

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "analytics",
    outputs: &["counts", "releases", "tenant_releases"],
    stores: &["partials", "totals", "budgets", "ledger", "released"],
    globals: &[],
    check_config: |c| parse_config::<AnalyticsConfig>(c).map(drop),
    build: |c| Ok(Box::new(Analytics::new(parse_config(c)?))),
};

#[cfg(test)]
mod accuracy_tests;
#[cfg(test)]
mod tests;
