use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `config:` of an analytics stage. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// A request's contribution to any claim metric is clipped to its first this-many claims:
    /// the L1 sensitivity of outcomes, matches, claims and each side of match_rate.
    #[serde(deserialize_with = "pavilion_runtime::yaml_scalar")]
    pub max_claims_per_request: u32,
    /// ε per budget period of a tenant whose record sets no `privacy_budget_micro`.
    #[serde(deserialize_with = "pavilion_runtime::yaml_scalar")]
    pub tenant_budget: f64,
    /// ε per budget period for cross-tenant releases (the operator's).
    #[serde(deserialize_with = "pavilion_runtime::yaml_scalar")]
    pub operator_budget: f64,
    /// Budget periods are consecutive windows of this length from the Unix epoch.
    #[serde(with = "humantime_serde")]
    pub budget_period: Duration,
    /// ε one release may spend at most.
    #[serde(deserialize_with = "pavilion_runtime::yaml_scalar")]
    pub max_release_epsilon: f64,
    /// Days one query may span.
    #[serde(deserialize_with = "pavilion_runtime::yaml_scalar")]
    pub max_days: u32,
    /// Cells one release may hold.
    #[serde(deserialize_with = "pavilion_runtime::yaml_scalar")]
    pub max_cells: u32,
    /// Fault injection for the crash test: when this file exists as a query has been
    /// debited, the stage removes it and SIGKILLs its own process before drawing noise.
    pub kill_after_debit_if: Option<PathBuf>,
}

impl AnalyticsConfig {
    /// First UTC day of the budget period `now_ms` falls in: periods are consecutive
    /// `budget_period` windows (a day at least) from the Unix epoch.
    pub fn period_start(&self, now_ms: i64) -> String {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let period_ms = (self.budget_period.as_millis() as i64).max(DAY_MS);
        utc_day(now_ms.div_euclid(period_ms) * period_ms)
    }

    /// The operator's budget per period for cross-tenant releases, millionths of ε.
    pub fn operator_budget_micro(&self) -> i64 {
        micro_floor(self.operator_budget)
    }

    /// A tenant's budget per period, millionths of ε: its record's, else `tenant_budget`.
    pub fn tenant_budget_micro(&self, record: Option<i64>) -> i64 {
        record.unwrap_or_else(|| micro_floor(self.tenant_budget))
    }
}

/// A budget in millionths of ε, rounded down (a budget is never more than asked; spends round
/// up).
pub fn micro_floor(epsilon: f64) -> i64 {
    (epsilon * 1e6).floor() as i64
}

/// `YYYY-MM-DD` of an instant, UTC.
pub fn utc_day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.date_naive().to_string())
        .unwrap_or_default()
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        AnalyticsConfig {
            max_claims_per_request: 8,
            tenant_budget: 1.0,
            operator_budget: 4.0,
            budget_period: Duration::from_secs(30 * 24 * 3600),
            max_release_epsilon: 2.0,
            max_days: 366,
            max_cells: 2000,
            kill_after_debit_if: None,
        }
    }
}
