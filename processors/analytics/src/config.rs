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
