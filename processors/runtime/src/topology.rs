//! The pipeline as declared in `topology.yaml`: topics, stages, how stages are grouped into
//! tasks (split or fused), and the names derived from them (consumer groups, transactional
//! ids, changelog topics). Nothing about the topology is hard-coded anywhere else.
//!
//! [`Topology::parse`] reports **every** problem at once, each with its line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::{Node, Spanned};
use serde::Deserialize;

use crate::processor::StageKinds;

mod regions;
pub use regions::{RegionSpec, Regions};

/// One problem found in a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the entry.
    pub message: String,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Every problem of a topology file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct TopologyErrors(pub Vec<TopologyError>);

/// Kafka `cleanup.policy` of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    /// Segments expire by retention.
    Delete,
    /// Latest value per key is kept (control topics, changelogs).
    Compact,
}

impl Cleanup {
    /// The value of Kafka's `cleanup.policy`.
    pub fn as_kafka(self) -> &'static str {
        match self {
            Cleanup::Delete => "delete",
            Cleanup::Compact => "compact",
        }
    }
}

/// A topic as Kafka should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication: i32,
    /// Cleanup policy.
    pub cleanup: Cleanup,
    /// `retention.ms`; `None` keeps Kafka's default, `Some(-1)` keeps forever.
    pub retention_ms: Option<i64>,
    /// Full Avro name of the values, when the topic carries one record type.
    pub schema: Option<String>,
    /// Other topic configs, passed to Kafka as they are.
    pub config: BTreeMap<String, String>,
    /// Line of the declaration (0 for derived topics such as changelogs).
    pub line: usize,
}

impl TopicSpec {
    /// Topic configs as Kafka names them.
    pub fn kafka_configs(&self) -> BTreeMap<String, String> {
        let mut configs = self.config.clone();
        configs.insert("cleanup.policy".into(), self.cleanup.as_kafka().into());
        if let Some(ms) = self.retention_ms {
            configs.insert("retention.ms".into(), ms.to_string());
        }
        configs
    }
}

/// A state store of a stage, and the compacted changelog topic that is its truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// Store name, unique within the stage.
    pub name: String,
    /// `<application>.<stage>.<store>.changelog`.
    pub changelog: String,
}

/// A global store of a stage: a read-only table of every partition of a topic, or of every
/// topic of a family (see [`crate::global`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalSpec {
    /// Owning stage.
    pub stage: String,
    /// Store name, unique within the stage.
    pub name: String,
    /// Source: a topic, or a family pattern such as `pavilion.provider-sets.{provider}`.
    pub topic: String,
    /// How entries are keyed when not by record key (see [`crate::GlobalKind`]).
    pub keyed_by: Option<GlobalKey>,
    /// How entries are versioned, when the kind's records carry versions (see
    /// [`crate::GlobalKind::versioned`]).
    pub versioned_by: Option<GlobalKey>,
    /// Regions whose copies of the source (`<region>.<topic>`, by MirrorMaker 2) feed the
    /// store too: each copy of a plain topic into the same entries, each copy of a family's
    /// member as that member (see [`Topology::in_region`]).
    pub mirrors: Vec<String>,
}

/// A kind's [`crate::processor::GlobalKeyFn`], comparable so specs stay comparable.
#[derive(Clone, Copy)]
pub struct GlobalKey(pub crate::processor::GlobalKeyFn);

impl std::fmt::Debug for GlobalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GlobalKey(..)")
    }
}

impl PartialEq for GlobalKey {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for GlobalKey {}

impl GlobalSpec {
    pub(crate) fn column_family(&self) -> String {
        format!("{}.{}", self.stage, self.name)
    }

    /// Whether `topic` feeds this store, and as which family member (`""` for a plain topic),
    /// the copies of the store's source from the regions it mirrors included.
    pub fn member_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let topic = self
            .mirrors
            .iter()
            .find_map(|region| topic.strip_prefix(region.as_str())?.strip_prefix('.'))
            .unwrap_or(topic);
        match family_prefix(&self.topic) {
            None => (topic == self.topic).then_some(""),
            Some(prefix) => topic
                .strip_prefix(prefix)
                .filter(|member| !member.is_empty() && valid_name(member)),
        }
    }
}

/// `pavilion.provider-sets.` for the family `pavilion.provider-sets.{provider}`; `None` for a
/// plain topic name.
pub fn family_prefix(pattern: &str) -> Option<&str> {
    let open = pattern.find('{')?;
    (pattern.ends_with('}') && open > 0).then(|| &pattern[..open])
}

/// A stage: one processor kind with its inputs, named outputs and stores.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    /// Stage name.
    pub name: String,
    /// Processor kind (a folder under `processors/`).
    pub kind: String,
    /// Input topics.
    pub inputs: Vec<String>,
    /// Output name (as the processor emits it) → topic.
    pub outputs: BTreeMap<String, String>,
    /// State stores.
    pub stores: Vec<StoreSpec>,
    /// Global (read-only, all-partition) stores.
    pub globals: Vec<GlobalSpec>,
    /// How often the runtime calls `punctuate`, if at all.
    pub punctuate_every: Option<Duration>,
    /// The kind-specific configuration, checked by the kind.
    pub config: serde_json::Value,
    /// Line of the declaration.
    pub line: usize,
}

/// A unit of execution: one consumer group, one transactional producer, one transaction per
/// commit interval. A split stage is a task of one; a fused chain is a task of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// Task name: its first stage's name.
    pub name: String,
    /// Stage names in chain order; stage *i+1* reads an output topic of stage *i*.
    pub stages: Vec<String>,
    /// The topics the task's consumer reads: the first stage's inputs, and any later stage's
    /// inputs that the chain does not itself write (side inputs such as control topics).
    pub inputs: Vec<String>,
}

/// A checked topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Prefix of consumer groups, transactional ids and changelog topics.
    pub application: String,
    /// Dead-letter topic.
    pub dlq: String,
    /// Declared topics and derived changelogs, by name.
    pub topics: BTreeMap<String, TopicSpec>,
    /// Topic families (`prefix.{member}`), by pattern: topics made at run time, one per
    /// member (e.g. per provider), all with the family's settings.
    pub families: BTreeMap<String, TopicSpec>,
    /// Stages, by name.
    pub stages: BTreeMap<String, StageSpec>,
    /// Tasks, by name.
    pub tasks: BTreeMap<String, TaskSpec>,
    /// Regions and what crosses between them; empty for one cluster.
    pub regions: Regions,
    /// The region this topology runs in ([`Topology::in_region`]); `None`: one cluster, or
    /// a region-unaware tool.
    pub region: Option<String>,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "application",
    "dlq",
    "defaults",
    "topics",
    "regions",
    "replication",
    "stages",
    "fuse",
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    partitions: Option<i32>,
    replication: Option<i32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTopic {
    partitions: Option<i32>,
    replication: Option<i32>,
    cleanup: Option<Cleanup>,
    retention: Option<String>,
    schema: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    kind: Spanned<String>,
    inputs: Vec<Spanned<String>>,
    #[serde(default)]
    outputs: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    stores: Vec<Spanned<String>>,
    #[serde(default)]
    globals: BTreeMap<String, Spanned<String>>,
    punctuate_every: Option<Spanned<String>>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

struct Errors(Vec<TopologyError>);

impl Errors {
    fn at(&mut self, line: usize, message: impl Into<String>) {
        self.0.push(TopologyError {
            line: (line > 0).then_some(line),
            message: message.into(),
        });
    }
}

fn required<T: serde::de::DeserializeOwned>(
    top: &MarkedMappingNode,
    key: &str,
    errors: &mut Errors,
) -> Option<T> {
    let value = optional(top, key, errors);
    if value.is_none() && top.get_node(key).is_none() {
        errors.at(
            top.span().start().map_or(0, |m| m.line()),
            format!("missing required key `{key}`"),
        );
    }
    value
}

fn optional<T: serde::de::DeserializeOwned>(
    top: &MarkedMappingNode,
    key: &str,
    errors: &mut Errors,
) -> Option<T> {
    let node = top.get_node(key)?;
    marked_yaml::from_node(node)
        .map_err(|e| {
            errors.at(
                e.start_mark().map_or(node_line(node), |m| m.line()),
                format!("`{key}`: {e}"),
            )
        })
        .ok()
}

fn line_of<T>(s: &Spanned<T>) -> usize {
    s.span().start().map_or(0, |m| m.line())
}

fn node_line(n: &Node) -> usize {
    n.span().start().map_or(0, |m| m.line())
}

fn entries<'a>(node: &'a Node, what: &str, errors: &mut Errors) -> Vec<(String, usize, &'a Node)> {
    let Some(map) = node.as_mapping() else {
        errors.at(
            node_line(node),
            format!("`{what}` must be a mapping of name → settings"),
        );
        return Vec::new();
    };
    mapping_entries(map)
}

fn mapping_entries(map: &MarkedMappingNode) -> Vec<(String, usize, &Node)> {
    map.iter()
        .map(|(k, v)| {
            let line = k.span().start().map_or(0, |m| m.line());
            (k.as_str().to_owned(), line, v)
        })
        .collect()
}

/// Parses `retention: 7d | 12h | forever`.
fn parse_retention(text: &str) -> Result<i64, String> {
    if text == "forever" {
        return Ok(-1);
    }
    humantime::parse_duration(text)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| format!("retention `{text}`: {e} (use e.g. 7d, 12h or forever)"))
}

/// Whether `member` can complete a family's topic name.
pub fn valid_member(member: &str) -> bool {
    !member.is_empty() && member.len() <= 100 && valid_name(member)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Topology {
    /// Parses and checks a topology; `kinds` validates each stage's kind and config, and
    /// `schema_exists` each topic's schema name.
    pub fn parse(
        yaml: &str,
        kinds: &StageKinds,
        schema_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Topology, TopologyErrors> {
        let mut errors = Errors(Vec::new());
        let options = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        let node = marked_yaml::parse_yaml_with_options(0, yaml, options).map_err(|e| {
            TopologyErrors(vec![TopologyError {
                line: None,
                message: e.to_string(),
            }])
        })?;
        let Some(top) = node.as_mapping() else {
            return Err(TopologyErrors(vec![TopologyError {
                line: Some(node_line(&node)),
                message: format!(
                    "a topology is a mapping with keys {}",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            }]));
        };
        for (key, _) in top.iter() {
            if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
                errors.at(
                    key.span().start().map_or(0, |m| m.line()),
                    format!(
                        "unknown key `{}` (expected one of: {})",
                        key.as_str(),
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                );
            }
        }
        let application: Spanned<String> = required(top, "application", &mut errors)
            .unwrap_or_else(|| Spanned::new(marked_yaml::Span::new_blank(), String::new()));
        let dlq_name: Spanned<String> = required(top, "dlq", &mut errors)
            .unwrap_or_else(|| Spanned::new(marked_yaml::Span::new_blank(), String::new()));
        let defaults: RawDefaults = optional(top, "defaults", &mut errors).unwrap_or_default();
        let fuse: Vec<Vec<Spanned<String>>> =
            optional(top, "fuse", &mut errors).unwrap_or_default();
        let empty = Node::from(MarkedMappingNode::new_empty(marked_yaml::Span::new_blank()));
        let topics_node = top.get_node("topics").unwrap_or(&empty);
        let stages_node = top.get_node("stages").unwrap_or(&empty);
        let application_line = line_of(&application);
        let application = application.as_str().to_owned();
        if !valid_name(&application) {
            errors.at(
                application_line,
                format!("application `{application}` must be letters, digits, `.`, `_` or `-`"),
            );
        }
        let mut topics = BTreeMap::new();
        let mut families = BTreeMap::new();
        let mut declared_topics = BTreeSet::new();
        for (name, line, value) in entries(topics_node, "topics", &mut errors) {
            declared_topics.insert(name.clone());
            let topic: RawTopic = if value.as_scalar().is_some_and(|s| s.as_str().is_empty()) {
                RawTopic::default()
            } else {
                match marked_yaml::from_node(value) {
                    Ok(t) => t,
                    Err(e) => {
                        errors.at(
                            e.start_mark().map_or(line, |m| m.line()),
                            format!("topic `{name}`: {e}"),
                        );
                        continue;
                    }
                }
            };
            let family = name.contains('{');
            let plain = family_prefix(&name).unwrap_or(&name);
            let member_ok = !family
                || family_prefix(&name).is_some_and(|p| {
                    let placeholder = &name[p.len() + 1..name.len() - 1];
                    p.ends_with('.') && valid_name(placeholder) && !placeholder.contains('.')
                });
            if !valid_name(plain) || !member_ok {
                errors.at(
                    line,
                    format!("topic name `{name}` must be letters, digits, `.`, `_` or `-`, or a family `prefix.{{member}}`"),
                );
            }
            let partitions = topic.partitions.or(defaults.partitions).unwrap_or(1);
            let replication = topic.replication.or(defaults.replication).unwrap_or(1);
            if partitions < 1 || replication < 1 {
                errors.at(
                    line,
                    format!("topic `{name}`: partitions and replication must be at least 1"),
                );
            }
            let retention_ms = match topic.retention.as_deref().map(parse_retention) {
                Some(Err(e)) => {
                    errors.at(line, format!("topic `{name}`: {e}"));
                    None
                }
                other => other.map(Result::unwrap),
            };
            if let Some(schema) = &topic.schema {
                if !schema_exists(schema) {
                    errors.at(
                        line,
                        format!("topic `{name}`: no schema named `{schema}` in schemas/"),
                    );
                }
            }
            (if family { &mut families } else { &mut topics }).insert(
                name.clone(),
                TopicSpec {
                    name,
                    partitions,
                    replication,
                    cleanup: topic.cleanup.unwrap_or(Cleanup::Delete),
                    retention_ms,
                    schema: topic.schema,
                    config: topic.config,
                    line,
                },
            );
        }
        let dlq = dlq_name.as_str().to_owned();
        if !declared_topics.contains(&dlq) {
            errors.at(
                line_of(&dlq_name),
                format!("dlq topic `{dlq}` is not declared under `topics`"),
            );
        }

        let mut stages = BTreeMap::new();
        let scope = StageScope {
            application: &application,
            topics: &topics,
            families: &families,
            declared_topics: &declared_topics,
            kinds,
        };
        let mut declared_stages = BTreeSet::new();
        for (name, line, value) in entries(stages_node, "stages", &mut errors) {
            declared_stages.insert(name.clone());
            let stage: RawStage = match marked_yaml::from_node(value) {
                Ok(s) => s,
                Err(e) => {
                    errors.at(
                        e.start_mark().map_or(line, |m| m.line()),
                        format!("stage `{name}`: {e}"),
                    );
                    continue;
                }
            };
            if let Some(spec) = check_stage(&scope, &name, line, stage, &mut errors) {
                stages.insert(name, spec);
            }
        }
        let mut changelogs = Vec::new();
        for stage in stages.values() {
            let partitions = stage
                .inputs
                .first()
                .and_then(|t| topics.get(t))
                .map_or(1, |t| t.partitions);
            for store in &stage.stores {
                changelogs.push(TopicSpec {
                    name: store.changelog.clone(),
                    partitions,
                    replication: defaults.replication.unwrap_or(1),
                    cleanup: Cleanup::Compact,
                    retention_ms: None,
                    schema: None,
                    config: BTreeMap::new(),
                    line: 0,
                });
            }
        }
        for changelog in changelogs {
            if let Some(existing) = topics.get(&changelog.name) {
                errors.at(
                    existing.line,
                    format!(
                        "topic `{}` collides with a derived changelog topic",
                        changelog.name
                    ),
                );
            }
            topics.insert(changelog.name.clone(), changelog);
        }

        let tasks = build_tasks(&fuse, &stages, &declared_stages, &topics, &mut errors);
        let regions = regions::parse(top, &topics, &families, &mut errors);
        if errors.0.is_empty() {
            Ok(Topology {
                application,
                dlq,
                topics,
                families,
                stages,
                tasks,
                regions,
                region: None,
            })
        } else {
            errors.0.sort_by_key(|e| e.line.unwrap_or(0));
            Err(TopologyErrors(errors.0))
        }
    }

    /// The family a concrete topic belongs to, and its spec for that member.
    pub fn family_of(&self, topic: &str) -> Option<TopicSpec> {
        self.families.keys().find_map(|pattern| {
            let member = topic.strip_prefix(family_prefix(pattern)?)?;
            self.family_topic(pattern, member)
        })
    }

    /// The concrete topic of a family member, with the family's settings.
    pub fn family_topic(&self, pattern: &str, member: &str) -> Option<TopicSpec> {
        let spec = self.families.get(pattern)?;
        let prefix = family_prefix(pattern)?;
        (valid_name(member) && !member.is_empty()).then(|| TopicSpec {
            name: format!("{prefix}{member}"),
            ..spec.clone()
        })
    }

    /// Every global store of a task's stages.
    pub fn task_globals(&self, task: &str) -> Vec<GlobalSpec> {
        self.tasks[task]
            .stages
            .iter()
            .flat_map(|s| self.stages[s].globals.clone())
            .collect()
    }

    /// Consumer group of a task.
    pub fn group_id(&self, task: &str) -> String {
        format!("{}.{task}", self.application)
    }

    /// Transactional id of a task in one process instance: stable across restarts of that
    /// instance, so a restarted process fences its zombie predecessor.
    pub fn transactional_id(&self, task: &str, instance: &str) -> String {
        format!("{}.{task}.{instance}", self.application)
    }

    /// Partition count of the topics a task consumes (all equal, checked at parse time).
    pub fn task_partitions(&self, task: &TaskSpec) -> i32 {
        self.topics[&task.inputs[0]].partitions
    }
}

/// What a stage is checked against.
struct StageScope<'a> {
    application: &'a str,
    topics: &'a BTreeMap<String, TopicSpec>,
    families: &'a BTreeMap<String, TopicSpec>,
    /// Every topic name in the file, valid or not, so a broken topic is not also "undeclared".
    declared_topics: &'a BTreeSet<String>,
    kinds: &'a StageKinds,
}

fn check_stage(
    scope: &StageScope<'_>,
    name: &str,
    line: usize,
    raw: RawStage,
    errors: &mut Errors,
) -> Option<StageSpec> {
    let StageScope {
        application,
        topics,
        families,
        declared_topics,
        kinds,
    } = *scope;
    let before = errors.0.len();
    if !valid_name(name) {
        errors.at(
            line,
            format!("stage name `{name}` must be letters, digits, `.`, `_` or `-`"),
        );
    }
    if raw.inputs.is_empty() {
        errors.at(
            line,
            format!("stage `{name}`: needs at least one input topic"),
        );
    }
    for topic in raw.inputs.iter().chain(raw.outputs.values()) {
        let is_input = raw.inputs.contains(topic);
        if is_input && families.contains_key(topic.as_str()) {
            errors.at(
                line_of(topic),
                format!(
                    "stage `{name}`: topic family `{}` can only be read through `globals`",
                    topic.as_str()
                ),
            );
        } else if !declared_topics.contains(topic.as_str()) {
            errors.at(
                line_of(topic),
                format!(
                    "stage `{name}`: topic `{}` is not declared under `topics`",
                    topic.as_str()
                ),
            );
        }
    }
    let input_partitions: BTreeSet<i32> = raw
        .inputs
        .iter()
        .filter_map(|t| topics.get(t.as_str()).map(|t| t.partitions))
        .collect();
    if input_partitions.len() > 1 {
        errors.at(line, format!("stage `{name}`: input topics must be co-partitioned (same partition count), found {input_partitions:?}"));
    }
    let mut seen = BTreeSet::new();
    let mut stores = Vec::new();
    for store in &raw.stores {
        if !valid_name(store.as_str()) || !seen.insert(store.as_str()) {
            errors.at(
                line_of(store),
                format!(
                    "stage `{name}`: store `{}` is repeated or not a valid name",
                    store.as_str()
                ),
            );
        }
        stores.push(StoreSpec {
            name: store.as_str().to_owned(),
            changelog: format!("{application}.{name}.{}.changelog", store.as_str()),
        });
    }
    let mut globals = Vec::new();
    for (store, topic) in &raw.globals {
        if !valid_name(store) || !seen.insert(store.as_str()) {
            errors.at(
                line_of(topic),
                format!("stage `{name}`: global store `{store}` is repeated or not a valid name"),
            );
        }
        let source = topics
            .get(topic.as_str())
            .or_else(|| families.get(topic.as_str()));
        if !declared_topics.contains(topic.as_str())
            || source.is_some_and(|t| t.cleanup != Cleanup::Compact && t.retention_ms != Some(-1))
        {
            // Every process rebuilds a global store from its source's start: the source must
            // keep the latest record of every key, or every record.
            errors.at(
                line_of(topic),
                format!(
                    "stage `{name}`: global store `{store}` reads `{}`, which must be a compacted or kept-forever topic or topic family declared under `topics`",
                    topic.as_str()
                ),
            );
        }
        let kind = kinds
            .get(raw.kind.as_str())
            .and_then(|k| k.globals.iter().find(|g| g.name == store.as_str()));
        globals.push(GlobalSpec {
            stage: name.to_owned(),
            name: store.clone(),
            topic: topic.as_str().to_owned(),
            keyed_by: kind.and_then(|g| g.key).map(GlobalKey),
            versioned_by: kind.and_then(|g| g.version).map(GlobalKey),
            mirrors: Vec::new(),
        });
    }
    let punctuate_every = match &raw.punctuate_every {
        None => None,
        Some(text) => match humantime::parse_duration(text.as_str()) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                errors.at(line_of(text), format!("stage `{name}`: punctuate_every `{}` is not a duration such as 500ms or 10s", text.as_str()));
                None
            }
        },
    };
    // Keys in order, so the first config error a stage reports does not depend on whether
    // serde_json preserves insertion order in this build.
    let config = sorted_json(
        raw.config
            .clone()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
    );
    let outputs: BTreeMap<String, String> = raw
        .outputs
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
        .collect();
    match kinds.get(raw.kind.as_str()) {
        None => errors.at(
            line_of(&raw.kind),
            format!(
                "stage `{name}`: unknown kind `{}` (known: {})",
                raw.kind.as_str(),
                kinds.names().join(", ")
            ),
        ),
        Some(kind) => {
            for output in kind.outputs {
                if !outputs.contains_key(*output) {
                    errors.at(line, format!("stage `{name}`: kind `{}` emits to output `{output}`, which `outputs` does not map to a topic", kind.name));
                }
            }
            for output in outputs.keys() {
                if !kind.outputs.contains(&output.as_str()) {
                    errors.at(
                        line,
                        format!(
                            "stage `{name}`: kind `{}` has no output `{output}` (it has: {})",
                            kind.name,
                            kind.outputs.join(", ")
                        ),
                    );
                }
            }
            for store in kind
                .stores
                .iter()
                .chain(kind.globals.iter().map(|g| &g.name))
            {
                if !seen.contains(store) {
                    errors.at(
                        line,
                        format!("stage `{name}`: kind `{}` needs store `{store}`", kind.name),
                    );
                }
            }
            if let Err(e) = (kind.check_config)(&config) {
                errors.at(line, format!("stage `{name}`: config: {e}"));
            }
        }
    }
    (errors.0.len() == before).then(|| StageSpec {
        name: name.to_owned(),
        kind: raw.kind.as_str().to_owned(),
        inputs: raw.inputs.iter().map(|t| t.as_str().to_owned()).collect(),
        outputs,
        stores,
        globals,
        punctuate_every,
        config,
        line,
    })
}

/// What a fused chain consumes: every stage's inputs except the topics the chain itself writes
/// (those records are handed over in-process).
fn fused_inputs<'a>(chain: impl Iterator<Item = &'a StageSpec>) -> Vec<String> {
    let mut written = BTreeSet::new();
    let mut inputs = Vec::new();
    for stage in chain {
        for topic in &stage.inputs {
            if !written.contains(topic) && !inputs.contains(topic) {
                inputs.push(topic.clone());
            }
        }
        written.extend(stage.outputs.values().cloned());
    }
    inputs
}

fn build_tasks(
    fuse: &[Vec<Spanned<String>>],
    stages: &BTreeMap<String, StageSpec>,
    declared_stages: &BTreeSet<String>,
    topics: &BTreeMap<String, TopicSpec>,
    errors: &mut Errors,
) -> BTreeMap<String, TaskSpec> {
    let mut fused = BTreeSet::new();
    let mut tasks = BTreeMap::new();
    for chain in fuse {
        let line = chain.first().map_or(0, line_of);
        if chain.len() < 2 {
            errors.at(line, "a fuse group needs at least two stages");
            continue;
        }
        let mut ok = true;
        for name in chain {
            if declared_stages.contains(name.as_str()) && !stages.contains_key(name.as_str()) {
                ok = false; // the stage's own errors are reported already
            } else if !stages.contains_key(name.as_str()) {
                errors.at(
                    line_of(name),
                    format!("fuse: no stage named `{}`", name.as_str()),
                );
                ok = false;
            } else if !fused.insert(name.as_str().to_owned()) {
                errors.at(
                    line_of(name),
                    format!(
                        "fuse: stage `{}` is in more than one fuse group",
                        name.as_str()
                    ),
                );
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        for pair in chain.windows(2) {
            let (up, down) = (&stages[pair[0].as_str()], &stages[pair[1].as_str()]);
            if !down
                .inputs
                .iter()
                .any(|t| up.outputs.values().any(|o| o == t))
            {
                errors.at(
                    line_of(&pair[1]),
                    format!(
                        "fuse: stage `{}` must read a topic written by `{}`",
                        down.name, up.name
                    ),
                );
            } else if topics[&down.inputs[0]].partitions != topics[&up.inputs[0]].partitions {
                errors.at(
                    line_of(&pair[1]),
                    format!(
                        "fuse: `{}` and `{}` must be co-partitioned (same partition count)",
                        up.name, down.name
                    ),
                );
            }
        }
        let first = &stages[chain[0].as_str()];
        let inputs = fused_inputs(chain.iter().map(|s| &stages[s.as_str()]));
        let counts: BTreeSet<i32> = inputs
            .iter()
            .filter_map(|t| topics.get(t))
            .map(|t| t.partitions)
            .collect();
        if counts.len() > 1 {
            errors.at(line, format!("fuse: the group's input topics must be co-partitioned, found partition counts {counts:?}"));
        }
        tasks.insert(
            first.name.clone(),
            TaskSpec {
                name: first.name.clone(),
                stages: chain.iter().map(|s| s.as_str().to_owned()).collect(),
                inputs,
            },
        );
    }
    for stage in stages.values().filter(|s| !fused.contains(&s.name)) {
        tasks.insert(
            stage.name.clone(),
            TaskSpec {
                name: stage.name.clone(),
                stages: vec![stage.name.clone()],
                inputs: stage.inputs.clone(),
            },
        );
    }
    tasks
}

#[cfg(test)]
mod tests;

/// The same JSON with object keys in order, whether or not serde_json preserves insertion
/// order (a feature any crate in the build can switch on).
pub(crate) fn sorted_json(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let ordered: std::collections::BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sorted_json(v))).collect();
            serde_json::Value::Object(ordered.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted_json).collect())
        }
        other => other,
    }
}
