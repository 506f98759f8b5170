//! `Topology::parse` as data: a YAML file in, either a summary of the checked topology or
//! every error with its line out.

use expect_test::{expect, Expect};
use serde::Deserialize;

use super::*;
use crate::processor::{parse_config, DynProcessor, StageKind};

/// Config of the test kinds: strict, like every real stage config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictConfig {
    #[serde(default)]
    #[allow(dead_code)]
    limit: Option<u32>,
}

fn check_strict(config: &serde_json::Value) -> Result<(), String> {
    parse_config::<StrictConfig>(config).map(drop)
}

fn never_built(_: &serde_json::Value) -> Result<Box<dyn DynProcessor>, String> {
    Err("parsing a topology never builds a processor".into())
}

// Shaped like the real `counter` and `totals` kinds, which this crate cannot depend on.
static COUNTER: StageKind = StageKind {
    name: "counter",
    outputs: &["counts"],
    stores: &["counts"],
    globals: &[],
    check_config: check_strict,
    build: never_built,
};

static TOTALS: StageKind = StageKind {
    name: "totals",
    outputs: &["totals"],
    stores: &["totals"],
    globals: &[],
    check_config: check_strict,
    build: never_built,
};

// Shaped like `tenancy`, `policy`, `psi` and `signing`; their configs are checked by their own crates.
static TENANCY: StageKind = StageKind {
    name: "tenancy",
    outputs: &["accepted", "rejected", "routed"],
    stores: &["tenants", "seen", "limits", "policies"],
    globals: &[],
    check_config: |_| Ok(()),
    build: never_built,
};

static POLICY: StageKind = StageKind {
    name: "policy",
    outputs: &["outcomes"],
    stores: &[],
    globals: &[crate::GlobalKind::keyed("documents", |v| Ok(v.to_vec()))],
    check_config: |_| Ok(()),
    build: never_built,
};

static PSI: StageKind = StageKind {
    name: "psi",
    outputs: &["matches", "results", "proof_requests"],
    stores: &["jobs", "pending"],
    globals: &[
        crate::GlobalKind::table("providers"),
        crate::GlobalKind::table("sets"),
    ],
    check_config: |_| Ok(()),
    build: never_built,
};

static SIGNING: StageKind = StageKind {
    name: "signing",
    outputs: &["decisions", "issued"],
    stores: &[],
    globals: &[],
    check_config: |_| Ok(()),
    build: never_built,
};

static AUDIT: StageKind = StageKind {
    name: "audit",
    outputs: &["log", "checkpoints"],
    stores: &["log"],
    globals: &[],
    check_config: |_| Ok(()),
    build: never_built,
};

static ANALYTICS: StageKind = StageKind {
    name: "analytics",
    outputs: &["counts", "releases", "tenant_releases"],
    stores: &["partials", "totals", "budgets", "ledger", "released"],
    globals: &[],
    check_config: |_| Ok(()),
    build: never_built,
};

/// Parses `yaml` (a leading newline is dropped, so line 1 is the line after `r#"`) and
/// renders the topology or every error.
fn check(yaml: &str, expect: Expect) {
    let yaml = yaml.strip_prefix('\n').unwrap_or(yaml);
    let kinds = StageKinds::new([
        &COUNTER, &TOTALS, &TENANCY, &POLICY, &PSI, &SIGNING, &AUDIT, &ANALYTICS,
    ]);
    let actual = match Topology::parse(yaml, &kinds, &|s| s.starts_with("pavilion.")) {
        Ok(topology) => render(&topology),
        Err(errors) => errors.0.iter().map(|e| format!("{e}\n")).collect(),
    };
    expect.assert_eq(&actual);
}

fn render(t: &Topology) -> String {
    let mut out = format!("application {}, dlq {}\n", t.application, t.dlq);
    for task in t.tasks.values() {
        out += &format!(
            "task {} (group {}, {} partitions): stages {:?}, inputs {:?}\n",
            task.name,
            t.group_id(&task.name),
            t.task_partitions(task),
            task.stages,
            task.inputs,
        );
        for global in t.task_globals(&task.name) {
            out += &format!(
                "  global {}.{} <- {}\n",
                global.stage, global.name, global.topic
            );
        }
    }
    for topic in t.topics.values().chain(t.families.values()) {
        let retention = topic
            .retention_ms
            .map_or(String::new(), |ms| format!(" retention_ms={ms}"));
        let schema = topic
            .schema
            .as_ref()
            .map_or(String::new(), |s| format!(" schema={s}"));
        let derived = if topic.line == 0 { " (derived)" } else { "" };
        out += &format!(
            "topic {}: partitions={} replication={} cleanup={}{retention}{schema}{derived}\n",
            topic.name,
            topic.partitions,
            topic.replication,
            topic.cleanup.as_kafka(),
        );
    }
    out
}

#[test]
fn the_repository_topology_parses() {
    check(
        include_str!("../../../../topology.yaml"),
        expect![[r#"
            application pavilion, dlq pavilion.dlq
            task analytics (group pavilion.analytics, 6 partitions): stages ["analytics"], inputs ["pavilion.requests.rejected", "pavilion.matches", "pavilion.tenants", "pavilion.analytics.counts", "pavilion.analytics.queries", "pavilion.analytics.releases"]
            task audit (group pavilion.audit, 6 partitions): stages ["audit"], inputs ["pavilion.requests", "pavilion.requests.accepted", "pavilion.requests.rejected", "pavilion.policy.outcomes", "pavilion.matches", "pavilion.decisions.issued", "pavilion.psi.results", "pavilion.tenants", "pavilion.policies", "pavilion.providers", "pavilion.audit.erasures", "pavilion.analytics.releases"]
            task policy (group pavilion.policy, 6 partitions): stages ["policy", "psi", "signing"], inputs ["pavilion.requests.accepted", "pavilion.psi.jobs", "pavilion.evidence.responses", "pavilion.requests.rejected"]
              global policy.documents <- pavilion.policies
              global psi.providers <- pavilion.providers
              global psi.sets <- pavilion.provider-sets.{provider}
              global psi.status_lists <- pavilion.status-lists.{provider}
            task tenancy (group pavilion.tenancy, 6 partitions): stages ["tenancy"], inputs ["pavilion.requests", "pavilion.requests.routed", "pavilion.tenants", "pavilion.policies"]
            topic pavilion.analytics.budgets.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.analytics.counts: partitions=6 replication=1 cleanup=delete retention_ms=86400000 schema=pavilion.AnalyticsCounts
            topic pavilion.analytics.ledger.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.analytics.partials.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.analytics.queries: partitions=6 replication=1 cleanup=delete retention_ms=604800000 schema=pavilion.AnalyticsQuery
            topic pavilion.analytics.released.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.analytics.releases: partitions=6 replication=1 cleanup=delete retention_ms=-1 schema=pavilion.AnalyticsRelease
            topic pavilion.analytics.totals.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.audit.anchors: partitions=6 replication=1 cleanup=delete retention_ms=-1 schema=pavilion.AnchorReceipt
            topic pavilion.audit.checkpoints: partitions=6 replication=1 cleanup=delete retention_ms=-1 schema=pavilion.Checkpoint
            topic pavilion.audit.erasures: partitions=6 replication=1 cleanup=delete retention_ms=-1 schema=pavilion.SubjectErasure
            topic pavilion.audit.log: partitions=6 replication=1 cleanup=delete retention_ms=-1 schema=pavilion.AuditEntry
            topic pavilion.audit.log.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.decisions.issued: partitions=6 replication=1 cleanup=delete retention_ms=604800000 schema=pavilion.DecisionIssued
            topic pavilion.dlq: partitions=6 replication=1 cleanup=delete retention_ms=1209600000 schema=pavilion.DeadLetter
            topic pavilion.evidence.responses: partitions=6 replication=1 cleanup=delete retention_ms=86400000 schema=pavilion.EvidenceResponse
            topic pavilion.matches: partitions=6 replication=1 cleanup=delete retention_ms=604800000 schema=pavilion.MatchResult
            topic pavilion.policies: partitions=6 replication=1 cleanup=delete retention_ms=-1 schema=pavilion.PolicyDocument
            topic pavilion.policy.outcomes: partitions=6 replication=1 cleanup=delete retention_ms=604800000 schema=pavilion.PolicyOutcome
            topic pavilion.providers: partitions=6 replication=1 cleanup=compact schema=pavilion.Provider
            topic pavilion.psi.jobs: partitions=6 replication=1 cleanup=delete retention_ms=86400000 schema=pavilion.PsiJobChunk
            topic pavilion.psi.jobs.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.psi.pending.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.psi.results: partitions=6 replication=1 cleanup=delete retention_ms=604800000 schema=pavilion.PsiJobResult
            topic pavilion.requests: partitions=6 replication=1 cleanup=delete retention_ms=604800000 schema=pavilion.VerificationRequest
            topic pavilion.requests.accepted: partitions=6 replication=1 cleanup=delete retention_ms=604800000 schema=pavilion.AcceptedRequest
            topic pavilion.requests.rejected: partitions=6 replication=1 cleanup=delete retention_ms=604800000 schema=pavilion.RequestRejected
            topic pavilion.requests.routed: partitions=6 replication=1 cleanup=delete retention_ms=86400000 schema=pavilion.VerificationRequest
            topic pavilion.signing.decisions.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.tenancy.limits.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.tenancy.policies.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.tenancy.seen.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.tenancy.tenants.changelog: partitions=6 replication=1 cleanup=compact (derived)
            topic pavilion.tenants: partitions=6 replication=1 cleanup=compact schema=pavilion.Tenant
            topic pavilion.analytics.releases.{tenant}: partitions=6 replication=1 cleanup=delete retention_ms=-1 schema=pavilion.AnalyticsRelease
            topic pavilion.decisions.{tenant}: partitions=6 replication=1 cleanup=delete retention_ms=604800000 schema=pavilion.Decision
            topic pavilion.evidence.requests.{provider}: partitions=3 replication=1 cleanup=delete retention_ms=86400000 schema=pavilion.EvidenceRequest
            topic pavilion.provider-sets.{provider}: partitions=3 replication=1 cleanup=compact schema=pavilion.ProviderSetEntry
            topic pavilion.status-lists.{provider}: partitions=1 replication=1 cleanup=compact schema=pavilion.StatusListPublished
        "#]],
    );
}

#[test]
fn a_fuse_group_is_one_task_of_two_stages() {
    check(
        r#"
application: app
dlq: dlq
topics:
  dlq: {}
  events: { partitions: 3 }
  counts: { partitions: 3 }
  totals: {}
stages:
  count:
    kind: counter
    inputs: [events]
    outputs: { counts: counts }
    stores: [counts]
  sum:
    kind: totals
    inputs: [counts]
    outputs: { totals: totals }
    stores: [totals]
fuse:
  - [count, sum]
"#,
        expect![[r#"
            application app, dlq dlq
            task count (group app.count, 3 partitions): stages ["count", "sum"], inputs ["events"]
            topic app.count.counts.changelog: partitions=3 replication=1 cleanup=compact (derived)
            topic app.sum.totals.changelog: partitions=3 replication=1 cleanup=compact (derived)
            topic counts: partitions=3 replication=1 cleanup=delete
            topic dlq: partitions=1 replication=1 cleanup=delete
            topic events: partitions=3 replication=1 cleanup=delete
            topic totals: partitions=1 replication=1 cleanup=delete
        "#]],
    );
}

#[test]
fn changelogs_are_derived_per_store_and_partitioned_like_the_inputs() {
    check(
        r#"
application: shop
dlq: dlq
defaults: { partitions: 2, replication: 3 }
topics:
  dlq:
  orders: { partitions: 12 }
  counts: { cleanup: compact }
  totals:
stages:
  orders-counter:
    kind: counter
    inputs: [orders]
    outputs: { counts: counts }
    stores: [counts]
  sum:
    kind: totals
    inputs: [counts]
    outputs: { totals: totals }
    stores: [totals]
"#,
        expect![[r#"
            application shop, dlq dlq
            task orders-counter (group shop.orders-counter, 12 partitions): stages ["orders-counter"], inputs ["orders"]
            task sum (group shop.sum, 2 partitions): stages ["sum"], inputs ["counts"]
            topic counts: partitions=2 replication=3 cleanup=compact
            topic dlq: partitions=2 replication=3 cleanup=delete
            topic orders: partitions=12 replication=3 cleanup=delete
            topic shop.orders-counter.counts.changelog: partitions=12 replication=3 cleanup=compact (derived)
            topic shop.sum.totals.changelog: partitions=2 replication=3 cleanup=compact (derived)
            topic totals: partitions=2 replication=3 cleanup=delete
        "#]],
    );
}

#[test]
fn a_declared_topic_may_not_take_a_changelog_name() {
    check(
        r#"
application: app
dlq: dlq
topics:
  dlq:
  events:
  counts:
  app.count.counts.changelog:
stages:
  count:
    kind: counter
    inputs: [events]
    outputs: { counts: counts }
    stores: [counts]
"#,
        expect![[r#"
            line 7: topic `app.count.counts.changelog` collides with a derived changelog topic
        "#]],
    );
}

#[test]
fn retention_forever_is_minus_one() {
    check(
        r#"
application: app
dlq: dlq
topics:
  dlq: { retention: forever }
  week: { retention: 7d }
  half-day: { retention: 12h }
  default:
"#,
        expect![[r#"
            application app, dlq dlq
            topic default: partitions=1 replication=1 cleanup=delete
            topic dlq: partitions=1 replication=1 cleanup=delete retention_ms=-1
            topic half-day: partitions=1 replication=1 cleanup=delete retention_ms=43200000
            topic week: partitions=1 replication=1 cleanup=delete retention_ms=604800000
        "#]],
    );
}

#[test]
fn every_error_is_reported_at_once_with_its_line() {
    check(
        r#"
application: app
dlq: app.dlq
colour: blue
defaults:
  partitions: 2
topics:
  events: { schema: pavilion.DemoEvent }
  counts: { schema: pavilion.KeyCount }
  totals: { schema: pavilion.KeyTotal }
  wide: { partitions: 4, schema: pavilion.DemoEvent }
  junk: { partitions: 2, colour: red }
  old: { retention: 3 fortnights }
  strange: { schema: acme.Strange }
stages:
  ghost:
    kind: counter
    inputs: [nowhere]
    outputs: { counts: counts }
    stores: [counts]
  mystery:
    kind: teleport
    inputs: [events]
  forgetful:
    kind: counter
    inputs: [events]
    outputs: { counts: counts }
  chatty:
    kind: counter
    inputs: [events]
    outputs: { counts: counts, extra: totals }
    stores: [counts]
  fussy:
    kind: counter
    inputs: [events]
    outputs: { counts: counts }
    stores: [counts]
    config: { limit: 3, colour: green }
  count:
    kind: counter
    inputs: [events]
    outputs: { counts: counts }
    stores: [counts]
  wide-count:
    kind: counter
    inputs: [wide]
    outputs: { counts: counts }
    stores: [counts]
  sum:
    kind: totals
    inputs: [counts]
    outputs: { totals: totals }
    stores: [totals]
  resum:
    kind: totals
    inputs: [totals]
    outputs: { totals: totals }
    stores: [totals]
fuse:
  - [count, resum]
  - [wide-count, sum]
"#,
        expect![[r#"
            line 2: dlq topic `app.dlq` is not declared under `topics`
            line 3: unknown key `colour` (expected one of: application, dlq, defaults, topics, regions, replication, stages, fuse)
            line 11: topic `junk`: Unknown field `colour`, expected one of `partitions`, `replication`, `cleanup`, `retention`, `schema`, or `config`
            line 12: topic `old`: retention `3 fortnights`: unknown time unit "fortnights", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (use e.g. 7d, 12h or forever)
            line 13: topic `strange`: no schema named `acme.Strange` in schemas/
            line 17: stage `ghost`: topic `nowhere` is not declared under `topics`
            line 21: stage `mystery`: unknown kind `teleport` (known: counter, totals, tenancy, policy, psi, signing, audit, analytics)
            line 23: stage `forgetful`: kind `counter` needs store `counts`
            line 27: stage `chatty`: kind `counter` has no output `extra` (it has: counts)
            line 32: stage `fussy`: config: unknown field `colour`, expected `limit`
            line 59: fuse: stage `resum` must read a topic written by `count`
            line 60: fuse: `wide-count` and `sum` must be co-partitioned (same partition count)
        "#]],
    );
}

#[test]
fn regression_a_duplicated_topic_used_to_silently_replace_the_first() {
    check(
        r#"
application: app
dlq: dlq
topics:
  dlq:
  counts: { partitions: 12 }
  counts: { partitions: 3 }
"#,
        expect![[r#"
            Duplicate key "counts" in mapping at 5:3 and 6:3
        "#]],
    );
}

#[test]
fn a_global_store_reads_a_compacted_topic_or_a_topic_family() {
    check(
        r#"
application: app
dlq: dlq
topics:
  dlq: {}
  events: { partitions: 3 }
  counts: { partitions: 3 }
  registry: { cleanup: compact }
  sets.{member}: { cleanup: compact, partitions: 2 }
stages:
  count:
    kind: counter
    inputs: [events]
    outputs: { counts: counts }
    stores: [counts]
    globals: { registry: registry, sets: "sets.{member}" }
"#,
        expect![[r#"
            application app, dlq dlq
            task count (group app.count, 3 partitions): stages ["count"], inputs ["events"]
              global count.registry <- registry
              global count.sets <- sets.{member}
            topic app.count.counts.changelog: partitions=3 replication=1 cleanup=compact (derived)
            topic counts: partitions=3 replication=1 cleanup=delete
            topic dlq: partitions=1 replication=1 cleanup=delete
            topic events: partitions=3 replication=1 cleanup=delete
            topic registry: partitions=1 replication=1 cleanup=compact
            topic sets.{member}: partitions=2 replication=1 cleanup=compact
        "#]],
    );
    let yaml =
        "application: app\ndlq: dlq\ntopics:\n  dlq: {}\n  sets.{member}: { cleanup: compact }\n";
    let kinds = StageKinds::new([&COUNTER]);
    let t = Topology::parse(yaml, &kinds, &|_| true).unwrap();
    assert_eq!(
        t.family_topic("sets.{member}", "bank-a").map(|t| t.name),
        Some("sets.bank-a".to_owned())
    );
    assert_eq!(t.family_topic("sets.{member}", "a/b"), None);
    let global = GlobalSpec {
        stage: "s".into(),
        name: "sets".into(),
        topic: "sets.{member}".into(),
        mirrors: vec!["us".into()],
        ..Default::default()
    };
    assert_eq!(global.member_of("sets.bank-a"), Some("bank-a"));
    assert_eq!(global.member_of("sets."), None);
    assert_eq!(global.member_of("other.bank-a"), None);
    // A member's copy from a mirrored region is that member; other regions' are not read.
    assert_eq!(global.member_of("us.sets.bank-u"), Some("bank-u"));
    assert_eq!(global.member_of("ap.sets.bank-u"), None);
}

#[test]
fn a_topic_family_is_only_read_through_globals_and_globals_need_compaction() {
    check(
        r#"
application: app
dlq: dlq
topics:
  dlq: {}
  events: {}
  counts: {}
  log: {}
  sets.{member}: { cleanup: compact }
  bad{x: {}
stages:
  count:
    kind: counter
    inputs: [events, "sets.{member}"]
    outputs: { counts: counts }
    stores: [counts]
    globals: { log: log, counts: "sets.{member}" }
"#,
        expect![[r#"
            line 9: topic name `bad{x` must be letters, digits, `.`, `_` or `-`, or a family `prefix.{member}`
            line 13: stage `count`: topic family `sets.{member}` can only be read through `globals`
            line 16: stage `count`: global store `counts` is repeated or not a valid name
            line 16: stage `count`: global store `log` reads `log`, which must be a compacted or kept-forever topic or topic family declared under `topics`
        "#]],
    );
}

/// The repository's topology as run in region `eu`: what each task reads, and what crosses.
#[test]
fn in_a_region_stages_read_the_other_regions_copies_of_what_crosses() {
    let kinds = StageKinds::new([
        &COUNTER, &TOTALS, &TENANCY, &POLICY, &PSI, &SIGNING, &AUDIT, &ANALYTICS,
    ]);
    let t = Topology::parse(include_str!("../../../../topology.yaml"), &kinds, &|_| true).unwrap();
    assert_eq!(
        t.regions.serving("US-CA").map(|r| r.name.as_str()),
        Some("us")
    );
    assert_eq!(t.regions.serving("DE").map(|r| r.name.as_str()), Some("eu"));
    assert_eq!(t.regions.serving("GB"), None);
    assert_eq!(
        t.regions.crossing("us"),
        [
            "pavilion.tenants",
            "pavilion.policies",
            "pavilion.providers"
        ]
    );
    assert!(
        t.copies_of("pavilion.tenants").is_empty(),
        "not in a region"
    );

    let eu = t.in_region("eu").unwrap();
    assert_eq!(eu.copies_of("pavilion.tenants"), ["us.pavilion.tenants"]);
    assert!(eu.is_copy("us.pavilion.providers") && !eu.is_copy("pavilion.providers"));
    assert_eq!(
        eu.tasks["tenancy"].inputs,
        [
            "pavilion.requests",
            "pavilion.requests.routed",
            "pavilion.tenants",
            "pavilion.policies",
            "us.pavilion.tenants",
            "us.pavilion.policies"
        ]
    );
    // Copies are topics like the originals, so `topics create` makes them and ACLs grant them.
    assert_eq!(eu.topics["us.pavilion.tenants"].partitions, 6);
    let providers = &eu.stages["psi"].globals[0];
    assert_eq!(providers.member_of("us.pavilion.providers"), Some(""));
    assert_eq!(providers.member_of("eu.pavilion.providers"), None);
    // The request path never reads a copy.
    for stage in ["policy", "psi", "signing"] {
        assert!(
            eu.stages[stage].inputs.iter().all(|i| !eu.is_copy(i)),
            "{stage}"
        );
    }
    assert_eq!(
        t.in_region("ap").unwrap_err(),
        "ap: not one of this topology's regions (eu, us)"
    );
}

#[test]
fn regions_and_replication_are_checked() {
    check(
        r#"
application: app
dlq: app.dlq
topics:
  app.dlq: {}
  pavilion.requests: {}
  pavilion.tenants: { cleanup: compact }
  pavilion.sets.{member}: { cleanup: compact }
regions:
  eu: { jurisdictions: [DE, FR] }
  US: { jurisdictions: [US, FR] }
  pavilion: { jurisdictions: [CH] }
  ap: { jurisdictions: [] }
replication:
  topics: [pavilion.requests, pavilion.nothing]
  members:
    "pavilion.sets.{member}": { bank: [eu, mars] }
    "pavilion.other.{member}": {}
stages: {}
"#,
        expect![[r#"
            line 10: region name `US` must be lower-case letters, digits or `-`, starting with a letter
            line 10: region `US`: jurisdiction `FR` is already served by region `eu`; a subject's data lives in one region
            line 11: region `pavilion` would make the topics named `pavilion.…` look like copies from it; rename the region
            line 12: region `ap`: serves no jurisdiction
            line 14: replication: topic `pavilion.requests` must be compacted or kept forever: only control topics cross regions
            line 14: replication: topic `pavilion.nothing` is not declared under `topics` (families go under `members`)
            line 14: replication: `pavilion.other.{member}` is not a topic family declared under `topics`
            line 14: replication: member `bank` of `pavilion.sets.{member}` names region `mars`, which `regions` does not declare
        "#]],
    );
}

#[test]
fn a_providers_set_crosses_only_to_the_regions_its_residency_names() {
    let kinds = StageKinds::new([&PSI]);
    let t = Topology::parse(
        r#"
application: app
dlq: app.dlq
topics:
  app.dlq: {}
  app.tenants: { cleanup: compact }
  app.sets.{member}: { cleanup: compact }
regions:
  eu: { jurisdictions: [DE] }
  us: { jurisdictions: [US] }
  uk: { jurisdictions: [GB] }
replication:
  topics: [app.tenants]
  members:
    "app.sets.{member}": { bank-eu: [uk] }
stages: {}
"#,
        &kinds,
        &|_| true,
    )
    .unwrap();
    assert_eq!(
        t.regions.crossing("uk"),
        ["app.tenants", "app.sets.bank-eu"]
    );
    assert_eq!(t.regions.crossing("us"), ["app.tenants"]);
}
