//! What is counted, what a request contributes, and the sensitivity that follows.
//!
//! The privacy unit is the request. What one request adds, by stored aggregate:
//!
//! | aggregate    | cell group       | one request adds                 | L1 sensitivity |
//! |--------------|------------------|----------------------------------|----------------|
//! | `requests`   | —                | 1 (answered, or rejected)        | 1              |
//! | `rejections` | reason           | 1 if rejected                    | 1              |
//! | `outcomes`   | `claim/status`   | 1 per claim, first K claims      | K              |
//! | `matches`    | provider         | 1 per matched claim, first K     | K              |
//! | `claims`     | —                | min(claims, K): a clipped sum    | K              |
//! | `matched`    | claim            | 1 per matched claim, first K     | K              |
//! | `answered`   | claim            | 1 per matched or not-matched     | K              |
//!
//! K is `max_claims_per_request`. A request falls on one day, so a release per day has the
//! sensitivity of one over the range. `match_rate` releases `matched` over `answered` per
//! claim, each side with half the ε.

use pavilion_schemas::{MatchResult, MatchStatus};

/// A metric a query may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Requests answered: matched (every accepted request is) or rejected by tenancy.
    Requests,
    /// Rejections, by reason.
    Rejections,
    /// Claim outcomes, by `claim/status`.
    Outcomes,
    /// Matched claims, by the provider whose evidence matched.
    Matches,
    /// Claims asked: a sum with each request's contribution clipped to K.
    Claims,
    /// Matched over answered claims, by claim.
    MatchRate,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 6] = [
        Metric::Requests,
        Metric::Rejections,
        Metric::Outcomes,
        Metric::Matches,
        Metric::Claims,
        Metric::MatchRate,
    ];

    /// The name queries use.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Rejections => "rejections",
            Metric::Outcomes => "outcomes",
            Metric::Matches => "matches",
            Metric::Claims => "claims",
            Metric::MatchRate => "match_rate",
        }
    }

    /// The metric named `name`.
    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// What a cell's group is, for metrics with a dimension.
    pub fn dimension(self) -> Option<&'static str> {
        match self {
            Metric::Requests | Metric::Claims => None,
            Metric::Rejections => Some("reason"),
            Metric::Outcomes => Some("claim/status"),
            Metric::Matches => Some("provider"),
            Metric::MatchRate => Some("claim"),
        }
    }

    /// The stored aggregate released, and for a ratio its denominator's.
    pub fn aggregates(self) -> (&'static str, Option<&'static str>) {
        match self {
            Metric::MatchRate => ("matched", Some("answered")),
            m => (m.name(), None),
        }
    }

    /// L1 sensitivity of a released vector (of each side of a ratio) with the request as
    /// the privacy unit, `k` being `max_claims_per_request`.
    pub fn sensitivity(self, k: u32) -> i64 {
        match self {
            Metric::Requests | Metric::Rejections => 1,
            _ => i64::from(k),
        }
    }
}

/// The schema's name of a match status.
pub fn status_name(status: MatchStatus) -> &'static str {
    match status {
        MatchStatus::Matched => "matched",
        MatchStatus::NotMatched => "not_matched",
        MatchStatus::Unavailable => "unavailable",
        MatchStatus::Unknown => "unknown",
    }
}

/// What a match result adds, as (aggregate, group, increment), its claims clipped to `k`: it
/// is the request's one answer, so it also counts the request.
pub fn match_contributions(m: &MatchResult, k: u32) -> Vec<(&'static str, String, i64)> {
    let counted = &m.results[..m.results.len().min(k as usize)];
    let mut out = vec![
        ("requests", String::new(), 1),
        ("claims", String::new(), counted.len() as i64),
    ];
    for r in counted {
        let claim = &r.claim_name;
        out.push(("outcomes", format!("{claim}/{}", status_name(r.status)), 1));
        match r.status {
            MatchStatus::Matched => {
                let provider = r.evidence.first().map(|e| e.provider_id.clone());
                out.push(("matches", provider.unwrap_or_default(), 1));
                out.push(("matched", claim.clone(), 1));
                out.push(("answered", claim.clone(), 1));
            }
            MatchStatus::NotMatched => out.push(("answered", claim.clone(), 1)),
            _ => {}
        }
    }
    out
}
