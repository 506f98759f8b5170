//! `pavilion analytics query|budget|report`: the request path's aggregates, released with
//! differential privacy by the analytics stage under each tenant's budget (and the
//! operator's, across tenants). The raw counts never leave the stage; these commands see
//! only releases.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};
use chrono::{Days, NaiveDate, Utc};
use clap::{Args, Subcommand};
use pavilion_analytics::metric::{status_name, Metric};
use pavilion_analytics::{micro_text, AnalyticsConfig, CROSS_TENANT};
use pavilion_kafka::{PlainProducer, TopicReader};
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::topology::{StageSpec, Topology};
use pavilion_schemas::{
    AnalyticsQuery, AnalyticsRelease, Event, MatchStatus, Provider, Registry, ReleaseStatus,
    RequestRejected, Tenant,
};

use crate::cli::{self, ClusterArgs};

/// `pavilion analytics …`.
#[derive(Subcommand)]
pub enum AnalyticsCommand {
    /// Ask for a differentially private release and print it with its error bound. The
    /// release is debited from the tenant's budget (or the operator's, --cross-tenant) before
    /// any noise is drawn; asking again with the same --release-id returns the same answer
    /// at no cost. Refused (exit 1) when the budget left is too small, saying what is left.
    ///
    /// Metrics: requests; rejections (per reason); outcomes (per claim/status); matches (per
    /// provider); claims (each request's claims, clipped, summed); match_rate (matched over
    /// answered, per claim). The privacy unit is the request.
    ///
    /// Example: pavilion analytics query --tenant acme --metric outcomes --by-day
    /// --from 2026-12-01 --to 2026-12-07 --epsilon 0.5
    Query(QueryArgs),
    /// Each scope's budget in the current period: ε spent and left. Read from the releases
    /// topic, where every debit is a release written in the same transaction.
    Budget(BudgetArgs),
    /// Render every release as an HTML page: the released values over time, each with its
    /// error bar at its stated confidence.
    Report(ReportArgs),
}

#[derive(Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The tenant whose aggregates (and budget) to use.
    #[arg(
        long,
        required_unless_present = "cross_tenant",
        conflicts_with = "cross_tenant"
    )]
    pub tenant: Option<String>,
    /// Aggregates across every tenant, on the operator's budget.
    #[arg(long)]
    pub cross_tenant: bool,
    /// requests, rejections, outcomes, matches, claims or match_rate.
    #[arg(long, value_parser = parse_metric)]
    pub metric: Metric,
    /// One cell per UTC day of the range, rather than one for the whole range.
    #[arg(long)]
    pub by_day: bool,
    /// A value of the metric's dimension to release a cell for; repeatable. Default: every
    /// public value (each rejection reason; each claim of the tenancy stage's allowed_claims
    /// and each status; each registered provider).
    #[arg(long = "group", value_name = "VALUE")]
    pub groups: Vec<String>,
    /// First UTC day, YYYY-MM-DD (default: six days before --to).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last UTC day, inclusive (default: today).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Privacy loss to spend on this release (match_rate spends half on each side).
    #[arg(long)]
    pub epsilon: f64,
    /// Confidence of the stated error bound, per value.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    /// The release's id: give a previous one to get that release again, at no cost.
    #[arg(long)]
    pub release_id: Option<String>,
    /// How long to wait for the release.
    #[arg(long, default_value = "30s", value_parser = cli::parse_duration)]
    pub timeout: Duration,
    /// Print the release as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BudgetArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Only this tenant (or `*` for the operator's cross-tenant budget).
    #[arg(long)]
    pub scope: Option<String>,
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Where to write the page.
    #[arg(long, default_value = "analytics-report.html")]
    pub out: PathBuf,
}

fn parse_metric(name: &str) -> Result<Metric, String> {
    Metric::parse(name).ok_or_else(|| {
        let names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        format!("one of {}", names.join(", "))
    })
}

pub fn run(command: AnalyticsCommand) -> Result<ExitCode> {
    match command {
        AnalyticsCommand::Query(a) => query(a),
        AnalyticsCommand::Budget(a) => budget(a),
        AnalyticsCommand::Report(a) => report(a),
    }
}

/// The topology's analytics stage.
pub(crate) fn stage(topology: &Topology) -> Result<&StageSpec> {
    topology
        .stages
        .values()
        .find(|s| s.kind == pavilion_analytics::KIND.name)
        .context("topology.yaml has no analytics stage")
}

pub(crate) fn releases_topic(topology: &Topology) -> Result<String> {
    stage(topology)?
        .outputs
        .get("releases")
        .cloned()
        .context("the analytics stage has no `releases` output")
}

fn query(a: QueryArgs) -> Result<ExitCode> {
    let topology = cli::load(&a.cluster.file)?;
    let scope = a.tenant.clone().unwrap_or_else(|| CROSS_TENANT.to_owned());
    if !(a.confidence > 0.0 && a.confidence < 1.0) {
        bail!("--confidence must be in (0, 1), e.g. 0.95");
    }
    let to = a.to.unwrap_or_else(|| Utc::now().date_naive());
    let from = match a.from {
        Some(from) => from,
        None => to
            .checked_sub_days(Days::new(6))
            .context("--to is too early")?,
    };
    let groups = if a.groups.is_empty() {
        public_groups(&a.cluster, &topology, a.metric)?
    } else {
        a.groups.clone()
    };
    let release_id = a.release_id.clone().unwrap_or_else(|| {
        let bytes: [u8; 12] = rand::random();
        format!("rel-{}", hex::encode(bytes))
    });
    let q = AnalyticsQuery {
        release_id: release_id.clone(),
        scope: scope.clone(),
        metric: a.metric.name().to_owned(),
        by_day: a.by_day,
        groups,
        from_day: from.to_string(),
        to_day: to.to_string(),
        epsilon: a.epsilon,
        alpha: 1.0 - a.confidence,
        asked_at: epoch_millis(SystemTime::now()),
    };
    let settings = cli::settings(&a.cluster, "cli")?;
    let releases = releases_topic(&topology)?;
    let queries = cli::topic_for(&topology, AnalyticsQuery::FULL_NAME)?.name;
    let reader = TopicReader::at_end(&settings, &[&releases])?;
    let producer = PlainProducer::new(&settings)?;
    producer.send(&queries, scope.as_bytes(), &Registry::builtin().encode(&q)?)?;
    producer.flush()?;
    eprintln!(
        "asked release {release_id} of {} ({}) on {queries}; waiting on {releases}",
        q.metric,
        scope_name(&scope)
    );
    let deadline = Instant::now() + a.timeout;
    while Instant::now() < deadline {
        let Some(record) = reader.poll(Duration::from_millis(200))? else {
            continue;
        };
        let Some(value) = record.value else { continue };
        let Ok(r) = Registry::builtin().decode::<AnalyticsRelease>(&value) else {
            continue;
        };
        if r.release_id != release_id || r.scope != scope {
            continue;
        }
        if r.status != ReleaseStatus::Released {
            eprintln!(
                "release {release_id} of {} ({}) refused: {}",
                r.metric,
                scope_name(&r.scope),
                r.refusal.as_deref().unwrap_or("no reason given")
            );
        }
        if a.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else if r.status == ReleaseStatus::Released {
            print_release(&r);
        }
        return Ok(if r.status == ReleaseStatus::Released {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    bail!(
        "no release {release_id} within {:?}: is `pavilion run` running the analytics stage?",
        a.timeout
    )
}

fn scope_name(scope: &str) -> String {
    if scope == CROSS_TENANT {
        "cross-tenant".into()
    } else {
        format!("tenant {scope}")
    }
}

/// Every public value of a metric's dimension: what a release covers when none are named.
fn public_groups(
    cluster: &ClusterArgs,
    topology: &Topology,
    metric: Metric,
) -> Result<Vec<String>> {
    let claims = || -> Result<Vec<String>> {
        let claims: Vec<String> = topology
            .stages
            .values()
            .find(|s| s.kind == "tenancy")
            .and_then(|s| s.config.get("allowed_claims"))
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default();
        if claims.is_empty() {
            bail!("the tenancy stage names no allowed_claims: name the claims with --group");
        }
        Ok(claims)
    };
    Ok(match metric {
        Metric::Requests | Metric::Claims => Vec::new(),
        Metric::Rejections => enum_symbols(RequestRejected::FULL_NAME, "reason")?,
        Metric::Outcomes => {
            let statuses = [
                MatchStatus::Matched,
                MatchStatus::NotMatched,
                MatchStatus::Unavailable,
            ];
            claims()?
                .iter()
                .flat_map(|c| {
                    statuses
                        .iter()
                        .map(move |s| format!("{c}/{}", status_name(*s)))
                })
                .collect()
        }
        Metric::Matches => {
            let topic = cli::topic_for(topology, Provider::FULL_NAME)?.name;
            let providers: BTreeMap<String, Provider> = cli::read_all::<Provider>(cluster, &topic)?
                .into_iter()
                .map(|(_, p)| (p.provider_id.clone(), p))
                .collect();
            if providers.is_empty() {
                bail!("no provider is registered on {topic}: name them with --group");
            }
            providers.into_keys().collect()
        }
        Metric::MatchRate => claims()?,
    })
}

/// The symbols of enum field `field` of record `record` in the contract, but `unknown`.
fn enum_symbols(record: &str, field: &str) -> Result<Vec<String>> {
    use apache_avro::Schema;
    let Some(Schema::Record(r)) = Registry::builtin().schema(record) else {
        bail!("{record} is not a record of the contract");
    };
    match r.fields.iter().find(|f| f.name == field).map(|f| &f.schema) {
        Some(Schema::Enum(e)) => Ok(e
            .symbols
            .iter()
            .filter(|s| *s != "unknown")
            .cloned()
            .collect()),
        _ => bail!("{record}.{field} is not an enum"),
    }
}

fn print_release(r: &AnalyticsRelease) {
    let scope = scope_name(&r.scope);
    println!(
        "release {} of {} ({scope}), {} to {}: spent ε {}, ε {} left of {} for the period from {}",
        r.release_id,
        r.metric,
        r.from_day,
        r.to_day,
        micro_text(r.epsilon_micro),
        micro_text(r.budget_left_micro),
        micro_text(r.budget_micro),
        r.period_start
    );
    let bound = r.cells.first().map_or(0, |c| c.bound);
    println!(
        "discrete Laplace noise of scale {:.3} (L1 sensitivity {}): each value is within ±{bound} of the truth with {}% confidence",
        r.scale,
        r.sensitivity,
        (1.0 - r.alpha) * 100.0
    );
    let ratio = r.cells.iter().any(|c| c.denominator.is_some());
    println!(
        "{:<10}  {:<28}  {:>10}  {:>8}{}",
        "day",
        "group",
        "value",
        "± bound",
        if ratio {
            "  denominator        rate"
        } else {
            ""
        }
    );
    for c in &r.cells {
        let day = c.day.as_deref().unwrap_or("(range)");
        let group = if c.group.is_empty() { "-" } else { &c.group };
        let rate = c.denominator.map_or(String::new(), |d| {
            let rate = if d > 0 {
                (c.value.max(0) as f64 / d as f64).min(1.0)
            } else {
                f64::NAN
            };
            format!("  {d:>11}  {rate:>10.3}")
        });
        println!(
            "{day:<10}  {group:<28}  {:>10}  {:>8}{rate}",
            c.value, c.bound
        );
    }
}

/// The latest release of each scope in its current period, and each tenant's budget.
fn budget(a: BudgetArgs) -> Result<ExitCode> {
    let topology = cli::load(&a.cluster.file)?;
    let config: AnalyticsConfig = pavilion_runtime::parse_config(&stage(&topology)?.config)
        .map_err(anyhow::Error::msg)
        .context("the analytics stage's config")?;
    let period_start = config.period_start(epoch_millis(SystemTime::now()));
    let mut budgets: BTreeMap<String, i64> = BTreeMap::new();
    budgets.insert(CROSS_TENANT.into(), config.operator_budget_micro());
    let tenants = cli::topic_for(&topology, Tenant::FULL_NAME)?.name;
    for (_, t) in cli::read_all::<Tenant>(&a.cluster, &tenants)? {
        let micro = config.tenant_budget_micro(t.config.privacy_budget_micro);
        budgets.insert(t.tenant_id, micro);
    }
    // Per scope: the most spent any release saw (the ledger after it), and the release ids.
    let mut spent: BTreeMap<String, (i64, BTreeSet<String>)> = BTreeMap::new();
    for (_, r) in cli::read_all::<AnalyticsRelease>(&a.cluster, &releases_topic(&topology)?)? {
        if r.status == ReleaseStatus::Released && r.period_start == period_start {
            let entry = spent.entry(r.scope.clone()).or_default();
            entry.0 = entry.0.max(r.budget_micro - r.budget_left_micro);
            entry.1.insert(r.release_id);
            budgets.insert(r.scope, r.budget_micro);
        }
    }
    println!(
        "budget period from {period_start} ({} long)",
        humantime::format_duration(config.budget_period)
    );
    println!(
        "{:<24}  {:>12}  {:>12}  {:>12}  {:>8}",
        "scope", "budget ε", "spent ε", "left ε", "releases"
    );
    for (scope, budget) in budgets {
        if a.scope.as_ref().is_some_and(|s| *s != scope) {
            continue;
        }
        let (used, count) = spent
            .get(&scope)
            .map_or((0, 0), |(used, ids)| (*used, ids.len()));
        let name = if scope == CROSS_TENANT {
            "* (cross-tenant)".to_owned()
        } else {
            scope
        };
        println!(
            "{name:<24}  {:>12}  {:>12}  {:>12}  {count:>8}",
            micro_text(budget),
            micro_text(used),
            micro_text((budget - used).max(0))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An HTML page: for each scope and metric, every released value over time with its error
/// bar, one colour per group.
fn report(a: ReportArgs) -> Result<ExitCode> {
    let topology = cli::load(&a.cluster.file)?;
    let releases = cli::read_all::<AnalyticsRelease>(&a.cluster, &releases_topic(&topology)?)?;
    let mut charts: BTreeMap<(String, String), Vec<AnalyticsRelease>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for (_, r) in releases {
        if r.status == ReleaseStatus::Released
            && seen.insert((r.scope.clone(), r.release_id.clone()))
        {
            charts
                .entry((r.scope.clone(), r.metric.clone()))
                .or_default()
                .push(r);
        }
    }
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>Pavilion analytics releases</title>\
         <style>body{font:14px sans-serif;margin:2em}svg{background:#fafafa;border:1px solid #ddd}\
         td,th{padding:2px 8px;text-align:right}</style>\
         <h1>Differentially private releases</h1>\
         <p>Every value below was released by the analytics stage with discrete Laplace noise; \
         bars show each value's error bound at the confidence stated with it. Raw counts are \
         never released.</p>",
    );
    for ((scope, metric), list) in &charts {
        html += &format!(
            "<h2>{} — {}</h2>",
            escape(&scope_name(scope)),
            escape(metric)
        );
        html += &chart(list);
        html += "<table><tr><th>release</th><th>day</th><th>group</th><th>value</th><th>± bound</th><th>confidence</th><th>ε</th></tr>";
        for r in list {
            for c in &r.cells {
                html += &format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td><td>{}</td></tr>",
                    escape(&r.release_id),
                    escape(c.day.as_deref().unwrap_or(&r.to_day)),
                    escape(&c.group),
                    c.denominator.map_or(c.value.to_string(), |d| format!("{} / {d}", c.value)),
                    c.bound,
                    (1.0 - r.alpha) * 100.0,
                    micro_text(r.epsilon_micro)
                );
            }
        }
        html += "</table>";
    }
    if charts.is_empty() {
        html += "<p>No releases yet: ask for one with <code>pavilion analytics query</code>.</p>";
    }
    std::fs::write(&a.out, html).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{} releases of {} scope/metric pairs written to {}",
        charts.values().map(Vec::len).sum::<usize>(),
        charts.len(),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// One SVG: x = day, y = value, a vertical bar of ±bound at each point, one colour per group.
fn chart(releases: &[AnalyticsRelease]) -> String {
    const COLOURS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let (w, h, pad) = (720.0, 240.0, 40.0);
    let points: Vec<(NaiveDate, &str, f64, f64)> = releases
        .iter()
        .flat_map(|r| {
            r.cells.iter().filter_map(move |c| {
                let day =
                    NaiveDate::parse_from_str(c.day.as_deref().unwrap_or(&r.to_day), "%Y-%m-%d")
                        .ok()?;
                Some((day, c.group.as_str(), c.value as f64, c.bound as f64))
            })
        })
        .collect();
    let (Some(first), Some(last)) = (
        points.iter().map(|p| p.0).min(),
        points.iter().map(|p| p.0).max(),
    ) else {
        return String::new();
    };
    let days = ((last - first).num_days().max(1)) as f64;
    let top = points.iter().map(|p| p.2 + p.3).fold(1.0, f64::max);
    let bottom = points.iter().map(|p| p.2 - p.3).fold(0.0, f64::min);
    let x = |d: NaiveDate| pad + (d - first).num_days() as f64 / days * (w - 2.0 * pad);
    let y = |v: f64| h - pad - (v - bottom) / (top - bottom) * (h - 2.0 * pad);
    let groups: Vec<&str> = {
        let mut g: Vec<&str> = points.iter().map(|p| p.1).collect();
        g.sort();
        g.dedup();
        g
    };
    let mut svg = format!("<svg width={w} height={h} viewBox='0 0 {w} {h}'>");
    svg += &format!(
        "<line x1={pad} y1={0} x2={1} y2={0} stroke=#999 /><text x=4 y={2:.0} font-size=11>{bottom:.0}</text><text x=4 y={3:.0} font-size=11>{top:.0}</text><text x={pad} y={4} font-size=11>{first}</text><text x={5} y={4} font-size=11 text-anchor=end>{last}</text>",
        y(bottom.max(0.0)),
        w - pad,
        y(bottom),
        y(top) + 10.0,
        h - 8.0,
        w - pad
    );
    for (day, group, value, bound) in &points {
        let i = groups.iter().position(|g| g == group).unwrap_or(0);
        let colour = COLOURS[i % COLOURS.len()];
        let (px, py) = (x(*day), y(*value));
        svg += &format!(
            "<line x1={px:.1} y1={:.1} x2={px:.1} y2={:.1} stroke={colour} /><circle cx={px:.1} cy={py:.1} r=3 fill={colour}><title>{} {day}: {value} ± {bound}</title></circle>",
            y(value - bound),
            y(value + bound),
            escape(group)
        );
    }
    for (i, group) in groups.iter().enumerate() {
        svg += &format!(
            "<text x={:.0} y=14 font-size=11 fill={}>{}</text>",
            pad + i as f64 * 120.0,
            COLOURS[i % COLOURS.len()],
            escape(if group.is_empty() { "all" } else { group })
        );
    }
    svg + "</svg>"
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&#39;")
}
