//! The analytics stage as data: the path's events in → increments → totals; queries in →
//! releases or refusals, the ledger, the tenant's forwarded copy.

use std::collections::BTreeMap;
use std::time::Duration;

use expect_test::expect;
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::{OutRecord, StageKinds};
use pavilion_schemas::{
    AnalyticsQuery, AnalyticsRelease, ClaimMatch, ClaimRequest, EvidenceKind, EvidenceRef,
    MatchResult, MatchStatus, PolicyEffect, PolicyOutcome, Registry, RejectionReason,
    ReleaseStatus, RequestRejected, ResponseFormat, Tenant, TenantConfig, TenantState,
    VerificationRequest, CROSS_TENANT,
};

/// 2023-11-14T22:13:20Z, the test driver's clock.
const T0: i64 = 1_700_000_000_000;
const DAY: &str = "2023-11-14";

fn topology(config: &str) -> String {
    format!(
        r#"
application: test
dlq: dlq
topics:
  dlq: {{ schema: pavilion.DeadLetter }}
  rejected: {{ schema: pavilion.RequestRejected }}
  matches: {{ schema: pavilion.MatchResult }}
  tenants: {{ schema: pavilion.Tenant }}
  counts: {{ schema: pavilion.AnalyticsCounts }}
  queries: {{ schema: pavilion.AnalyticsQuery }}
  releases: {{ schema: pavilion.AnalyticsRelease }}
  releases.{{tenant}}: {{ schema: pavilion.AnalyticsRelease }}
stages:
  analytics:
    kind: analytics
    inputs: [rejected, matches, tenants, counts, queries, releases]
    outputs: {{ counts: counts, releases: releases, tenant_releases: "releases.{{tenant}}" }}
    stores: [partials, totals, budgets, ledger, released]
    punctuate_every: 1s
    config:
{config}
"#
    )
}

/// Noise of scale 1e-5: zero but with probability ~e^-100000, so values are exact.
const EXACT: &str = "      max_release_epsilon: 1000000\n      operator_budget: 1000000\n      max_claims_per_request: 2";

pub(crate) fn driver(config: &str) -> TestDriver {
    TestDriver::new(
        &topology(config),
        "analytics",
        &StageKinds::new([&crate::KIND]),
    )
}

pub(crate) fn tenant(id: &str, budget_micro: Option<i64>) -> Tenant {
    Tenant {
        stamp: None,
        tenant_id: id.into(),
        display_name: id.into(),
        state: TenantState::Active,
        signing_keys: Vec::new(),
        config: TenantConfig {
            rate_limit_per_second: 1.0,
            burst: 1,
            daily_quota: None,
            allowed_regions: Vec::new(),
            response_topic: String::new(),
            privacy_budget_micro: budget_micro,
        },
        updated_at: T0,
        revision: 1,
    }
}

fn request(tenant: &str, id: &str, claims: &[&str]) -> VerificationRequest {
    VerificationRequest {
        request_id: id.into(),
        tenant_id: tenant.into(),
        key_id: "k1".into(),
        signature: Vec::new(),
        signed_at: T0,
        nonce: "n".into(),
        created_at: T0,
        claims: claims
            .iter()
            .map(|c| ClaimRequest {
                name: (*c).into(),
                params: BTreeMap::new(),
            })
            .collect(),
        purpose: "kyc".into(),
        subject_jurisdiction: "DE".into(),
        consent_ref: None,
        subject_tokens: Vec::new(),
        response_format: None,
    }
}

pub(crate) fn rejected(tenant: &str, id: &str, reason: RejectionReason) -> RequestRejected {
    RequestRejected {
        request_id: id.into(),
        tenant_id: Some(tenant.into()),
        reason,
        detail: String::new(),
        retry_after_ms: None,
        rejected_at: T0,
    }
}

/// A match result with one claim per (name, status), matched ones at `bank`.
fn matched(tenant: &str, id: &str, claims: &[(&str, MatchStatus)]) -> MatchResult {
    let names: Vec<&str> = claims.iter().map(|c| c.0).collect();
    MatchResult {
        outcome: PolicyOutcome {
            request: request(tenant, id, &names),
            policy: None,
            effect: PolicyEffect::Permit,
            denying_rules: Vec::new(),
            plan: Vec::new(),
            response_format: ResponseFormat::Json,
            response_template: None,
            evaluated_at: T0,
        },
        results: claims
            .iter()
            .enumerate()
            .map(|(i, (name, status))| ClaimMatch {
                claim_index: i as i32,
                claim_name: (*name).into(),
                status: *status,
                reason: None,
                evidence: (*status == MatchStatus::Matched)
                    .then(|| EvidenceRef {
                        provider_id: "bank".into(),
                        kind: EvidenceKind::OprfMatch,
                        attestation_digest: None,
                        proof_digest: None,
                        zk: None,
                        disclosure: None,
                        credential: None,
                    })
                    .into_iter()
                    .collect(),
            })
            .collect(),
        matched_at: T0,
    }
}

pub(crate) fn query(
    scope: &str,
    id: &str,
    metric: &str,
    groups: &[&str],
    epsilon: f64,
) -> AnalyticsQuery {
    AnalyticsQuery {
        release_id: id.into(),
        scope: scope.into(),
        metric: metric.into(),
        by_day: false,
        groups: groups.iter().map(|g| (*g).into()).collect(),
        from_day: DAY.into(),
        to_day: DAY.into(),
        epsilon,
        alpha: 0.05,
        asked_at: T0,
    }
}

fn releases(out: &[OutRecord]) -> Vec<(String, AnalyticsRelease)> {
    out.iter()
        .filter_map(|r| {
            Registry::builtin()
                .decode::<AnalyticsRelease>(&r.value)
                .ok()
                .map(|v| (r.topic.clone(), v))
        })
        .collect()
}

pub(crate) fn release(d: &mut TestDriver, q: &AnalyticsQuery) -> AnalyticsRelease {
    let out = d.send("queries", &q.scope, q);
    let mut found = releases(&out);
    assert_eq!(found.len(), 1, "{}", d.render(&out));
    let (topic, r) = found.remove(0);
    assert_eq!(topic, "releases");
    r
}

/// The driver's increments, flushed by a punctuation and fed back as the counts topic
/// would deliver them.
pub(crate) fn flush(d: &mut TestDriver) -> String {
    d.clock().advance(Duration::from_secs(1));
    let out = d.punctuate();
    let shown = d.render(&out);
    for r in out.iter().filter(|r| r.topic == "counts") {
        d.send_raw("counts", &r.key, &r.value);
    }
    shown
}

fn cells(r: &AnalyticsRelease) -> Vec<(String, i64, Option<i64>)> {
    r.cells
        .iter()
        .map(|c| (c.group.clone(), c.value, c.denominator))
        .collect()
}

/// The path's events with exact noise: every metric is what the events say, clipped.
#[test]
fn aggregates_are_released_per_tenant_and_across_tenants() {
    use MatchStatus::*;
    let mut d = driver(EXACT);
    d.send("tenants", "acme", &tenant("acme", Some(1 << 50)));
    d.send("tenants", "beta", &tenant("beta", Some(1 << 50)));
    d.send(
        "rejected",
        "r4",
        &rejected("acme", "r4", RejectionReason::RateLimited),
    );
    d.send(
        "matches",
        "r1",
        &matched(
            "acme",
            "r1",
            &[("age_over", Matched), ("fraud", NotMatched), ("x", Matched)],
        ),
    );
    d.send(
        "matches",
        "r2",
        &matched("acme", "r2", &[("age_over", Unavailable)]),
    );
    d.send(
        "matches",
        "r3",
        &matched("beta", "r3", &[("age_over", Matched)]),
    );
    expect![[r#"
        counts[0] * pavilion.AnalyticsCounts {"cells":[{"count":2,"day":"2023-11-14","group":"age_over","metric":"answered"},{"count":1,"day":"2023-11-14","group":"fraud","metric":"answered"},{"count":4,"day":"2023-11-14","group":"","metric":"claims"},{"count":2,"day":"2023-11-14","group":"age_over","metric":"matched"},{"count":2,"day":"2023-11-14","group":"bank","metric":"matches"},{"count":2,"day":"2023-11-14","group":"age_over/matched","metric":"outcomes"},{"count":1,"day":"2023-11-14","group":"age_over/unavailable","metric":"outcomes"},{"count":1,"day":"2023-11-14","group":"fraud/not_matched","metric":"outcomes"},{"count":1,"day":"2023-11-14","group":"rate_limited","metric":"rejections"},{"count":4,"day":"2023-11-14","group":"","metric":"requests"}],"flushed_at":1700000001000,"scope":"*"}
        counts[0] acme pavilion.AnalyticsCounts {"cells":[{"count":1,"day":"2023-11-14","group":"age_over","metric":"answered"},{"count":1,"day":"2023-11-14","group":"fraud","metric":"answered"},{"count":3,"day":"2023-11-14","group":"","metric":"claims"},{"count":1,"day":"2023-11-14","group":"age_over","metric":"matched"},{"count":1,"day":"2023-11-14","group":"bank","metric":"matches"},{"count":1,"day":"2023-11-14","group":"age_over/matched","metric":"outcomes"},{"count":1,"day":"2023-11-14","group":"age_over/unavailable","metric":"outcomes"},{"count":1,"day":"2023-11-14","group":"fraud/not_matched","metric":"outcomes"},{"count":1,"day":"2023-11-14","group":"rate_limited","metric":"rejections"},{"count":3,"day":"2023-11-14","group":"","metric":"requests"}],"flushed_at":1700000001000,"scope":"acme"}
        counts[0] beta pavilion.AnalyticsCounts {"cells":[{"count":1,"day":"2023-11-14","group":"age_over","metric":"answered"},{"count":1,"day":"2023-11-14","group":"","metric":"claims"},{"count":1,"day":"2023-11-14","group":"age_over","metric":"matched"},{"count":1,"day":"2023-11-14","group":"bank","metric":"matches"},{"count":1,"day":"2023-11-14","group":"age_over/matched","metric":"outcomes"},{"count":1,"day":"2023-11-14","group":"","metric":"requests"}],"flushed_at":1700000001000,"scope":"beta"}
    "#]]
    .assert_eq(&flush(&mut d));
    // Flushed increments are gone; a second flush sends nothing.
    assert_eq!(flush(&mut d), "");

    let r = release(&mut d, &query("acme", "q1", "requests", &[], 100_000.0));
    assert_eq!(r.status, ReleaseStatus::Released, "{:?}", r.refusal);
    assert_eq!(cells(&r), [(String::new(), 3, None)]);
    assert_eq!(r.sensitivity, 1);
    let r = release(
        &mut d,
        &query(
            "acme",
            "q2",
            "outcomes",
            &["age_over/matched", "age_over/unavailable", "none/matched"],
            100_000.0,
        ),
    );
    assert_eq!(
        cells(&r),
        [
            ("age_over/matched".into(), 1, None),
            ("age_over/unavailable".into(), 1, None),
            ("none/matched".into(), 0, None),
        ]
    );
    assert_eq!(r.sensitivity, 2, "K claims per request");
    let r = release(
        &mut d,
        &query(CROSS_TENANT, "q3", "match_rate", &["age_over"], 100_000.0),
    );
    assert_eq!(cells(&r), [("age_over".into(), 2, Some(2))]);
    let r = release(&mut d, &query(CROSS_TENANT, "q4", "claims", &[], 100_000.0));
    assert_eq!(
        cells(&r),
        [(String::new(), 4, None)],
        "r1's 3 claims clipped to 2"
    );
    let r = release(
        &mut d,
        &query("beta", "q5", "rejections", &["rate_limited"], 100_000.0),
    );
    assert_eq!(
        cells(&r),
        [("rate_limited".into(), 0, None)],
        "acme's rejection is not beta's"
    );
}

#[test]
fn the_budget_is_debited_rounded_up_and_never_exceeded() {
    let mut d = driver("      max_release_epsilon: 2");
    d.send("tenants", "acme", &tenant("acme", Some(1_000_000)));
    let r = release(&mut d, &query("acme", "q1", "requests", &[], 0.3));
    assert_eq!(
        (r.status, r.epsilon_micro, r.budget_left_micro),
        (ReleaseStatus::Released, 300_000, 700_000)
    );
    let r = release(&mut d, &query("acme", "q2", "requests", &[], 0.3));
    assert_eq!(r.budget_left_micro, 400_000);
    // match_rate: two mechanisms of ε/2, each rounded up on its own.
    let r = release(
        &mut d,
        &query("acme", "q3", "match_rate", &["age_over"], 0.3),
    );
    assert_eq!((r.epsilon_micro, r.budget_left_micro), (300_000, 100_000));
    let r = release(&mut d, &query("acme", "q4", "requests", &[], 0.3));
    assert_eq!(r.status, ReleaseStatus::Refused);
    assert_eq!(
        r.refusal.as_deref(),
        Some("over budget: the release would spend ε 0.300000 and tenant acme has ε 0.100000 left of 1.000000 for the period from 2023-10-20")
    );
    assert_eq!(
        (r.epsilon_micro, r.budget_left_micro, r.cells.len()),
        (0, 100_000, 0)
    );
    let r = release(&mut d, &query("acme", "q5", "requests", &[], 0.1));
    assert_eq!(
        (r.status, r.budget_left_micro),
        (ReleaseStatus::Released, 0)
    );
    expect![[r#"
        acme 2023-10-20 = 1000000
    "#]]
    .assert_eq(&d.store("analytics", "ledger").replace('\0', " "));
    // The next period starts afresh.
    d.clock().advance(Duration::from_secs(30 * 24 * 3600));
    let r = release(&mut d, &query("acme", "q6", "requests", &[], 0.5));
    assert_eq!(
        (r.status, r.budget_left_micro, r.period_start.as_str()),
        (ReleaseStatus::Released, 500_000, "2023-11-19")
    );
    // The operator's budget is the config's (4 by default).
    let r = release(&mut d, &query(CROSS_TENANT, "q7", "requests", &[], 2.0));
    assert_eq!(
        (r.budget_micro, r.budget_left_micro),
        (4_000_000, 2_000_000)
    );
}

#[test]
fn a_retried_release_is_the_same_answer_at_no_cost() {
    let mut d = driver("      max_release_epsilon: 2");
    d.send("tenants", "acme", &tenant("acme", Some(1_000_000)));
    for i in 0..50 {
        d.send(
            "rejected",
            &format!("r{i}"),
            &rejected("acme", &format!("r{i}"), RejectionReason::RateLimited),
        );
    }
    flush(&mut d);
    let q = query("acme", "q1", "requests", &[], 0.01);
    let first = release(&mut d, &q);
    let again = release(&mut d, &q);
    assert_eq!(first, again);
    assert_eq!(again.budget_left_micro, 990_000);
    let other = release(&mut d, &query("acme", "q2", "requests", &[], 0.01));
    assert_eq!(
        other.budget_left_micro, 980_000,
        "only the new id was debited"
    );
    // A refusal is not kept: asked again once affordable, it is answered.
    let big = query("acme", "q3", "requests", &[], 1.0);
    assert_eq!(release(&mut d, &big).status, ReleaseStatus::Refused);
    d.clock().advance(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(release(&mut d, &big).status, ReleaseStatus::Released);
}

#[test]
fn a_tenant_gets_its_committed_releases_on_its_own_topic() {
    let mut d = driver("      max_release_epsilon: 2");
    d.send("tenants", "acme", &tenant("acme", None));
    let r = release(&mut d, &query("acme", "q1", "requests", &[], 0.5));
    assert_eq!(r.budget_micro, 1_000_000, "the config's tenant_budget");
    let out = d.send("releases", "acme", &r);
    assert_eq!(releases(&out), [("releases.acme".to_owned(), r)]);
    let cross = release(&mut d, &query(CROSS_TENANT, "q2", "requests", &[], 0.5));
    assert!(
        d.send("releases", CROSS_TENANT, &cross).is_empty(),
        "cross-tenant stays the operator's"
    );
    let nobody = release(&mut d, &query("nobody", "q3", "requests", &[], 0.5));
    assert_eq!(nobody.status, ReleaseStatus::Refused);
    assert!(
        d.send("releases", "nobody", &nobody).is_empty(),
        "no topic for a scope that is no tenant"
    );
}

#[test]
fn bad_queries_are_refused_with_their_reason_and_cost_nothing() {
    let mut d = driver("      max_release_epsilon: 2\n      max_cells: 10");
    d.send("tenants", "acme", &tenant("acme", None));
    let refusal = |d: &mut TestDriver, q: AnalyticsQuery| {
        let r = release(d, &q);
        assert_eq!((r.status, r.epsilon_micro), (ReleaseStatus::Refused, 0));
        r.refusal.unwrap()
    };
    let base = query("acme", "q", "requests", &[], 0.5);
    let mut reasons = vec![
        refusal(
            &mut d,
            AnalyticsQuery {
                scope: "nobody".into(),
                ..base.clone()
            },
        ),
        refusal(
            &mut d,
            AnalyticsQuery {
                metric: "salaries".into(),
                ..base.clone()
            },
        ),
        refusal(
            &mut d,
            AnalyticsQuery {
                epsilon: 3.0,
                ..base.clone()
            },
        ),
        refusal(
            &mut d,
            AnalyticsQuery {
                epsilon: f64::NAN,
                ..base.clone()
            },
        ),
        refusal(
            &mut d,
            AnalyticsQuery {
                alpha: 1.0,
                ..base.clone()
            },
        ),
        refusal(
            &mut d,
            AnalyticsQuery {
                from_day: "yesterday".into(),
                ..base.clone()
            },
        ),
        refusal(
            &mut d,
            AnalyticsQuery {
                from_day: "2023-11-15".into(),
                ..base.clone()
            },
        ),
        refusal(
            &mut d,
            AnalyticsQuery {
                from_day: "2023-11-01".into(),
                by_day: true,
                ..base.clone()
            },
        ),
        refusal(&mut d, query("acme", "q", "rejections", &[], 0.5)),
        refusal(&mut d, query("acme", "q", "requests", &["x"], 0.5)),
    ];
    reasons.dedup();
    expect![[r#"
        no tenant `nobody`
        unknown metric `salaries` (one of requests, rejections, outcomes, matches, claims, match_rate)
        ε must be in (0, 2] (got 3)
        ε must be in (0, 2] (got NaN)
        alpha must be in (0, 1) (got 1)
        `yesterday` is not a day (YYYY-MM-DD)
        the range must hold 1 to 366 days (got 2023-11-15 to 2023-11-14)
        14 cells asked; a release holds at most 10
        rejections releases one cell per reason: name them (public values; a cell is released for each, even empty)
        requests has no dimension to group by
    "#]]
    .assert_eq(&(reasons.join("\n") + "\n"));
    assert_eq!(d.store("analytics", "ledger"), "");
}
