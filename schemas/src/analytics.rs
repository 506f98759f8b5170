//! The analytics stage's events: raw increments between its instances, queries, releases.

use serde::{Deserialize, Serialize};

use crate::Event;

/// The scope of cross-tenant aggregates (no tenant id can be `*`).
pub const CROSS_TENANT: &str = "*";

/// `analytics_counts.avsc`: raw increments of one scope, internal to the analytics stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsCounts {
    /// Tenant id, or [`CROSS_TENANT`]; the record key.
    pub scope: String,
    /// Increments since the last flush.
    pub cells: Vec<AnalyticsCell>,
    /// When flushed, ms.
    pub flushed_at: i64,
}

impl Event for AnalyticsCounts {
    const FULL_NAME: &'static str = "pavilion.AnalyticsCounts";
}

/// An increment of one aggregate cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsCell {
    /// Metric.
    pub metric: String,
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Dimension value; empty for none.
    pub group: String,
    /// Increment.
    pub count: i64,
}

/// `analytics_query.avsc`: a request for a differentially private release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsQuery {
    /// Release id (idempotency key).
    pub release_id: String,
    /// Tenant id, or [`CROSS_TENANT`]; the record key.
    pub scope: String,
    /// Metric.
    pub metric: String,
    /// A cell per day rather than one for the range.
    pub by_day: bool,
    /// The dimension's values to release cells for.
    pub groups: Vec<String>,
    /// First UTC day.
    pub from_day: String,
    /// Last UTC day, inclusive.
    pub to_day: String,
    /// Privacy loss to spend.
    pub epsilon: f64,
    /// Bounds hold with probability ≥ 1 − alpha.
    pub alpha: f64,
    /// When asked, ms.
    pub asked_at: i64,
}

impl Event for AnalyticsQuery {
    const FULL_NAME: &'static str = "pavilion.AnalyticsQuery";
}

/// Released or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ReleaseStatus {
    Unknown,
    Released,
    Refused,
}

/// `analytics_release.avsc`: a differentially private release, or its refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsRelease {
    /// The query's release id.
    pub release_id: String,
    /// Tenant id, or [`CROSS_TENANT`]; the record key.
    pub scope: String,
    /// Metric.
    pub metric: String,
    /// Cells per day.
    pub by_day: bool,
    /// First UTC day.
    pub from_day: String,
    /// Last UTC day, inclusive.
    pub to_day: String,
    /// Outcome.
    pub status: ReleaseStatus,
    /// Why refused.
    pub refusal: Option<String>,
    /// ε debited, millionths (0 when refused).
    pub epsilon_micro: i64,
    /// The period's budget, millionths.
    pub budget_micro: i64,
    /// Left after this release, millionths.
    pub budget_left_micro: i64,
    /// First UTC day of the budget period.
    pub period_start: String,
    /// L1 sensitivity of the released vector.
    pub sensitivity: i64,
    /// Scale of the discrete Laplace noise.
    pub scale: f64,
    /// Bounds hold with probability ≥ 1 − alpha.
    pub alpha: f64,
    /// Released cells.
    pub cells: Vec<ReleasedCell>,
    /// When, ms.
    pub released_at: i64,
}

impl Event for AnalyticsRelease {
    const FULL_NAME: &'static str = "pavilion.AnalyticsRelease";
}

/// One released value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedCell {
    /// The day, when per day.
    pub day: Option<String>,
    /// Dimension value; empty for none.
    pub group: String,
    /// Noisy value (match_rate: numerator).
    pub value: i64,
    /// Error bound at 1 − alpha.
    pub bound: i64,
    /// match_rate: the noisy denominator.
    pub denominator: Option<i64>,
}
