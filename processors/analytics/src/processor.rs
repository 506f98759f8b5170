use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::{Context, Input, ProcessError, Processor, Record};
use pavilion_schemas::{
    AnalyticsCell, AnalyticsCounts, AnalyticsQuery, AnalyticsRelease, CodecError, Event,
    MatchResult, Registry, ReleaseStatus, ReleasedCell, RequestRejected, Tenant, CROSS_TENANT,
};
use serde::{Deserialize, Serialize};

use crate::config::utc_day;
use crate::metric::{match_contributions, Metric};
use crate::noise::Mechanism;
use crate::AnalyticsConfig;

/// What the stage reads: the path's answers (match results, rejections), its own increments,
/// queries, and its own committed releases.
#[derive(Debug, Clone, PartialEq)]
pub enum AnalyticsInput {
    /// From `pavilion.requests.rejected`.
    Rejected(RequestRejected),
    /// From `pavilion.matches`.
    Matched(Box<MatchResult>),
    /// From `pavilion.tenants`: each tenant's budget.
    Tenant(Tenant),
    /// From `pavilion.analytics.counts`.
    Counts(AnalyticsCounts),
    /// From `pavilion.analytics.queries`.
    Query(AnalyticsQuery),
    /// From `pavilion.analytics.releases`, once committed.
    Released(AnalyticsRelease),
}

impl Input for AnalyticsInput {
    fn decode(registry: &Registry, _topic: &str, bytes: &[u8]) -> Result<Self, CodecError> {
        use AnalyticsInput as I;
        match registry.name_of(bytes)? {
            RequestRejected::FULL_NAME => registry.decode(bytes).map(I::Rejected),
            MatchResult::FULL_NAME => registry.decode(bytes).map(|m| I::Matched(Box::new(m))),
            Tenant::FULL_NAME => registry.decode(bytes).map(I::Tenant),
            AnalyticsCounts::FULL_NAME => registry.decode(bytes).map(I::Counts),
            AnalyticsQuery::FULL_NAME => registry.decode(bytes).map(I::Query),
            AnalyticsRelease::FULL_NAME => registry.decode(bytes).map(I::Released),
            other => Err(CodecError::SchemaMismatch {
                expected: "a match result, rejection, tenant, analytics counts, query or release"
                    .into(),
                found: other.to_owned(),
            }),
        }
    }
}

/// The analytics processor.
pub struct Analytics {
    config: AnalyticsConfig,
}

impl Analytics {
    /// A processor with its config.
    pub fn new(config: AnalyticsConfig) -> Self {
        Analytics { config }
    }
}

// Store keys: `\0` cannot occur in tenant ids, metric names or days.
fn cell_key(scope: &str, metric: &str, day: &str, group: &str) -> Vec<u8> {
    format!("{scope}\0{metric}\0{day}\0{group}").into_bytes()
}

/// What the `budgets` store keeps of a tenant record.
#[derive(Serialize, Deserialize)]
struct TenantBudget {
    revision: i64,
    micro: Option<i64>,
}

impl Processor for Analytics {
    type Input = AnalyticsInput;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<AnalyticsInput>,
    ) -> Result<(), ProcessError> {
        match record.value {
            AnalyticsInput::Rejected(r) => observe(
                ctx,
                r.tenant_id.as_deref(),
                r.rejected_at,
                vec![
                    ("requests", String::new(), 1),
                    ("rejections", r.reason.as_str(), 1),
                ],
            ),
            AnalyticsInput::Matched(m) => {
                let k = self.config.max_claims_per_request;
                let tenant = m.outcome.request.tenant_id.clone();
                observe(ctx, Some(&tenant), m.matched_at, match_contributions(&m, k))
            }
            AnalyticsInput::Tenant(t) => {
                let mut budgets = ctx.store("budgets")?;
                let known = budgets.get::<TenantBudget>(t.tenant_id.as_bytes())?;
                if known.is_some_and(|k| k.revision > t.revision) {
                    return Ok(());
                }
                let budget = TenantBudget {
                    revision: t.revision,
                    micro: t.config.privacy_budget_micro,
                };
                budgets.put(t.tenant_id.as_bytes(), &budget)
            }
            AnalyticsInput::Counts(c) => {
                let mut totals = ctx.store("totals")?;
                for cell in c.cells {
                    let key = cell_key(&c.scope, &cell.metric, &cell.day, &cell.group);
                    let total = totals.get::<i64>(&key)?.unwrap_or(0) + cell.count;
                    totals.put(&key, &total)?;
                }
                Ok(())
            }
            AnalyticsInput::Query(q) => self.release(ctx, q),
            AnalyticsInput::Released(r) => {
                // A tenant's own, to its own topic; not the operator's, and not a refusal
                // for a scope that is no tenant (which would create a topic for a typo).
                let tenant = ctx
                    .store("budgets")?
                    .get::<TenantBudget>(r.scope.as_bytes())?;
                if r.scope == CROSS_TENANT || tenant.is_none() {
                    return Ok(());
                }
                let key = r.scope.clone().into_bytes();
                ctx.emit_to_member("tenant_releases", &r.scope, key, &r)
                    .map(drop)
            }
        }
    }

    /// Flushes the partials: every increment since the last punctuation, one record per scope.
    fn punctuate(&mut self, ctx: &mut Context<'_>) -> Result<(), ProcessError> {
        const BATCH: usize = 50_000;
        let mut partials = ctx.store("partials")?;
        let entries = partials.scan::<i64>(b"", &[0xff], BATCH)?;
        let mut by_scope: BTreeMap<String, Vec<AnalyticsCell>> = BTreeMap::new();
        for (key, count) in &entries {
            let text = String::from_utf8_lossy(key);
            let mut parts = text.splitn(4, '\0');
            let (Some(scope), Some(metric), Some(day), Some(group)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            by_scope
                .entry(scope.to_owned())
                .or_default()
                .push(AnalyticsCell {
                    metric: metric.to_owned(),
                    day: day.to_owned(),
                    group: group.to_owned(),
                    count: *count,
                });
        }
        for (key, _) in &entries {
            partials.delete(key);
        }
        let flushed_at = epoch_millis(ctx.now());
        for (scope, cells) in by_scope {
            let counts = AnalyticsCounts {
                scope: scope.clone(),
                cells,
                flushed_at,
            };
            ctx.emit("counts", scope.into_bytes(), &counts)?;
        }
        Ok(())
    }
}

/// Adds a request's contributions to the partials of its tenant and of the cross-tenant scope.
fn observe(
    ctx: &mut Context<'_>,
    tenant: Option<&str>,
    at_ms: i64,
    contributions: Vec<(&'static str, String, i64)>,
) -> Result<(), ProcessError> {
    let day = utc_day(at_ms);
    let mut partials = ctx.store("partials")?;
    for scope in tenant.into_iter().chain([CROSS_TENANT]) {
        for (metric, group, n) in &contributions {
            let key = cell_key(scope, metric, &day, group);
            // Cached: a cell every request adds to is encoded once per transaction.
            let sum = partials.get_cached::<i64>(&key)?.unwrap_or(0) + n;
            partials.put_cached(&key, sum)?;
        }
    }
    Ok(())
}

/// A query made concrete: its cells and its mechanisms.
struct Plan {
    metric: Metric,
    /// The days of each cell (one entry per day when per day, else the whole range).
    spans: Vec<(Option<String>, Vec<String>)>,
    groups: Vec<String>,
    sensitivity: i64,
    mechanism: Mechanism,
    /// The numerator's and the denominator's, for a ratio; the same scale.
    denominator: Option<Mechanism>,
}

impl Plan {
    fn new(config: &AnalyticsConfig, q: &AnalyticsQuery) -> Result<Plan, String> {
        let metric = Metric::parse(&q.metric).ok_or_else(|| {
            let names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
            format!(
                "unknown metric `{}` (one of {})",
                q.metric,
                names.join(", ")
            )
        })?;
        if !(q.epsilon.is_finite() && q.epsilon > 0.0 && q.epsilon <= config.max_release_epsilon) {
            return Err(format!(
                "ε must be in (0, {}] (got {})",
                config.max_release_epsilon, q.epsilon
            ));
        }
        if !(q.alpha > 0.0 && q.alpha < 1.0) {
            return Err(format!("alpha must be in (0, 1) (got {})", q.alpha));
        }
        let date = |d: &str| {
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| format!("`{d}` is not a day (YYYY-MM-DD)"))
        };
        let (from, to) = (date(&q.from_day)?, date(&q.to_day)?);
        let span = (to - from).num_days() + 1;
        if span < 1 || span > i64::from(config.max_days) {
            return Err(format!(
                "the range must hold 1 to {} days (got {} to {})",
                config.max_days, q.from_day, q.to_day
            ));
        }
        let days: Vec<String> = (0..span as u64)
            .filter_map(|i| from.checked_add_days(Days::new(i)))
            .map(|d| d.to_string())
            .collect();
        let mut groups = q.groups.clone();
        groups.sort();
        groups.dedup();
        match (metric.dimension(), groups.is_empty()) {
            (Some(dimension), true) => {
                return Err(format!(
                    "{} releases one cell per {dimension}: name them (public values; a cell is released for each, even empty)",
                    metric.name()
                ))
            }
            (None, false) => {
                return Err(format!("{} has no dimension to group by", metric.name()))
            }
            (None, true) => groups.push(String::new()),
            _ => {}
        }
        let spans: Vec<(Option<String>, Vec<String>)> = if q.by_day {
            days.iter()
                .map(|d| (Some(d.clone()), vec![d.clone()]))
                .collect()
        } else {
            vec![(None, days.clone())]
        };
        let cells = spans.len() * groups.len();
        if cells > config.max_cells as usize {
            return Err(format!(
                "{cells} cells asked; a release holds at most {}",
                config.max_cells
            ));
        }
        let sensitivity = metric.sensitivity(config.max_claims_per_request);
        let ratio = metric.aggregates().1.is_some();
        let each = if ratio { q.epsilon / 2.0 } else { q.epsilon };
        let mechanism = Mechanism::new(sensitivity, each).map_err(|e| e.to_string())?;
        let denominator = ratio
            .then(|| Mechanism::new(sensitivity, each))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Plan {
            metric,
            spans,
            groups,
            sensitivity,
            mechanism,
            denominator,
        })
    }

    /// What the release costs, in millionths of ε: each mechanism's loss, rounded up.
    fn debit(&self) -> i64 {
        self.mechanism.epsilon_micro + self.denominator.as_ref().map_or(0, |m| m.epsilon_micro)
    }

    /// The true values of `aggregate` in every cell, in cell order.
    fn values(
        &self,
        ctx: &mut Context<'_>,
        scope: &str,
        aggregate: &str,
    ) -> Result<Vec<i64>, ProcessError> {
        let totals = ctx.store("totals")?;
        let mut out = Vec::with_capacity(self.spans.len() * self.groups.len());
        for (_, days) in &self.spans {
            for group in &self.groups {
                let mut sum = 0;
                for day in days {
                    sum += totals
                        .get::<i64>(&cell_key(scope, aggregate, day, group))?
                        .unwrap_or(0);
                }
                out.push(sum);
            }
        }
        Ok(out)
    }
}

impl Analytics {
    fn release(&mut self, ctx: &mut Context<'_>, q: AnalyticsQuery) -> Result<(), ProcessError> {
        let scope = q.scope.clone();
        let id_key = format!("{scope}\0{}", q.release_id).into_bytes();
        if let Some(kept) = ctx.store("released")?.get::<AnalyticsRelease>(&id_key)? {
            ctx.count("release.repeated", "");
            return ctx.emit("releases", scope.into_bytes(), &kept);
        }
        let now = epoch_millis(ctx.now());
        let period_start = self.config.period_start(now);
        let budget = if scope == CROSS_TENANT {
            Some(self.config.operator_budget_micro())
        } else {
            ctx.store("budgets")?
                .get::<TenantBudget>(scope.as_bytes())?
                .map(|b| self.config.tenant_budget_micro(b.micro))
        };
        let ledger_key = format!("{scope}\0{period_start}").into_bytes();
        let spent = ctx.store("ledger")?.get::<i64>(&ledger_key)?.unwrap_or(0);
        let mut release = AnalyticsRelease {
            release_id: q.release_id.clone(),
            scope: scope.clone(),
            metric: q.metric.clone(),
            by_day: q.by_day,
            from_day: q.from_day.clone(),
            to_day: q.to_day.clone(),
            status: ReleaseStatus::Refused,
            refusal: None,
            epsilon_micro: 0,
            budget_micro: budget.unwrap_or(0),
            budget_left_micro: budget.map_or(0, |b| (b - spent).max(0)),
            period_start,
            sensitivity: 0,
            scale: 0.0,
            alpha: q.alpha,
            cells: Vec::new(),
            released_at: now,
        };
        let refuse = |ctx: &mut Context<'_>, mut release: AnalyticsRelease, why: String| {
            ctx.count("release.refused", "");
            release.refusal = Some(why);
            ctx.emit("releases", release.scope.clone().into_bytes(), &release)
        };
        let Some(budget) = budget else {
            return refuse(ctx, release, format!("no tenant `{scope}`"));
        };
        let plan = match Plan::new(&self.config, &q) {
            Ok(plan) => plan,
            Err(why) => return refuse(ctx, release, why),
        };
        release.sensitivity = plan.sensitivity;
        release.scale = plan.mechanism.scale;
        let debit = plan.debit();
        if spent + debit > budget {
            let why = format!(
                "over budget: the release would spend ε {} and {} has ε {} left of {} for the period from {}",
                micro_text(debit),
                if scope == CROSS_TENANT { "the operator".to_owned() } else { format!("tenant {scope}") },
                micro_text(budget - spent),
                micro_text(budget),
                release.period_start
            );
            return refuse(ctx, release, why);
        }
        // Debit first: noise is drawn only against a debit in the same transaction.
        ctx.store("ledger")?.put(&ledger_key, &(spent + debit))?;
        if let Some(file) = &self.config.kill_after_debit_if {
            if std::fs::remove_file(file).is_ok() {
                // SAFETY: kill(2) on our own pid, no memory involved.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
        }
        let (numerator, denominator) = plan.metric.aggregates();
        let noisy = plan
            .mechanism
            .noisy(&plan.values(ctx, &scope, numerator)?)
            .map_err(|e| ProcessError::new(e.to_string()))?;
        let noisy_denominator = match (denominator, &plan.denominator) {
            (Some(aggregate), Some(m)) => Some(
                m.noisy(&plan.values(ctx, &scope, aggregate)?)
                    .map_err(|e| ProcessError::new(e.to_string()))?,
            ),
            _ => None,
        };
        let bound = plan
            .mechanism
            .bound(q.alpha)
            .map_err(|e| ProcessError::new(e.to_string()))?;
        let mut values = noisy.into_iter();
        let mut denominators = noisy_denominator.map(Vec::into_iter);
        for (day, _) in &plan.spans {
            for group in &plan.groups {
                release.cells.push(ReleasedCell {
                    day: day.clone(),
                    group: group.clone(),
                    value: values.next().unwrap_or_default(),
                    bound,
                    denominator: denominators.as_mut().and_then(Iterator::next),
                });
            }
        }
        release.status = ReleaseStatus::Released;
        release.epsilon_micro = debit;
        release.budget_left_micro = budget - spent - debit;
        ctx.store("released")?.put(&id_key, &release)?;
        ctx.count("release.released", "");
        ctx.emit("releases", scope.into_bytes(), &release)
    }
}

/// Millionths of ε as a decimal.
pub fn micro_text(micro: i64) -> String {
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}
