//! `regions:` and `replication:` in topology.yaml: the regions a deployment runs in (one Kafka
//! cluster each), the jurisdictions each serves, and what may cross between them. Read as the
//! residency policy: anything `replication` does not name stays in the region it was written
//! in.

use std::collections::{BTreeMap, BTreeSet};

use marked_yaml::types::MarkedMappingNode;
use serde::Deserialize;

use super::{entries, family_prefix, optional, valid_name, Errors, TopicSpec, Topology};

/// One region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSpec {
    /// Region name (lower-case letters, digits, `-`).
    pub name: String,
    /// Jurisdictions (ISO 3166 codes, or groups such as `EU`) whose subjects it serves.
    pub jurisdictions: Vec<String>,
}

/// The regions and what crosses between them; empty for a one-cluster deployment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Regions {
    /// Regions, by name.
    pub regions: BTreeMap<String, RegionSpec>,
    /// Topics every region's copy of which goes to every other region (control topics).
    pub topics: Vec<String>,
    /// Per topic family, per member: the regions besides its own that may hold a copy (a
    /// provider's set where its residency allows).
    pub members: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Regions {
    /// The region that serves `jurisdiction` (ISO 3166: a country, or a subdivision such as
    /// `US-CA`, served where its country is), if any.
    pub fn serving(&self, jurisdiction: &str) -> Option<&RegionSpec> {
        self.regions.values().find(|r| r.serves(jurisdiction))
    }

    /// The topics whose records may be copied into region `to`: the replicated topics, and
    /// the family members whose residency lists `to`.
    pub fn crossing(&self, to: &str) -> Vec<String> {
        let mut topics = self.topics.clone();
        for (pattern, members) in &self.members {
            let prefix = family_prefix(pattern).unwrap_or(pattern);
            for (member, regions) in members {
                if regions.iter().any(|r| r == to) {
                    topics.push(format!("{prefix}{member}"));
                }
            }
        }
        topics
    }
}

impl RegionSpec {
    /// Whether this region serves subjects of `jurisdiction`.
    pub fn serves(&self, jurisdiction: &str) -> bool {
        pavilion_schemas::jurisdiction_served(&self.jurisdictions, jurisdiction)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    jurisdictions: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    members: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// Reads `regions:` and `replication:`.
pub(super) fn parse(
    top: &MarkedMappingNode,
    topics: &BTreeMap<String, TopicSpec>,
    families: &BTreeMap<String, TopicSpec>,
    errors: &mut Errors,
) -> Regions {
    let mut parsed = Regions::default();
    let mut served: BTreeMap<String, String> = BTreeMap::new();
    if let Some(node) = top.get_node("regions") {
        for (name, line, value) in entries(node, "regions", errors) {
            let raw: RawRegion = match marked_yaml::from_node(value) {
                Ok(r) => r,
                Err(e) => {
                    errors.at(line, format!("region `{name}`: {e}"));
                    continue;
                }
            };
            let first_segments: BTreeSet<&str> = topics
                .keys()
                .chain(families.keys())
                .filter_map(|t| t.split('.').next())
                .collect();
            if !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                || !name.starts_with(|c: char| c.is_ascii_lowercase())
            {
                errors.at(line, format!("region name `{name}` must be lower-case letters, digits or `-`, starting with a letter"));
            } else if first_segments.contains(name.as_str()) {
                // A region's copies are named `<region>.<topic>`.
                errors.at(line, format!("region `{name}` would make the topics named `{name}.…` look like copies from it; rename the region"));
            }
            if raw.jurisdictions.is_empty() {
                errors.at(line, format!("region `{name}`: serves no jurisdiction"));
            }
            for j in &raw.jurisdictions {
                if let Some(other) = served.insert(j.clone(), name.clone()) {
                    errors.at(line, format!("region `{name}`: jurisdiction `{j}` is already served by region `{other}`; a subject's data lives in one region"));
                }
            }
            parsed.regions.insert(
                name.clone(),
                RegionSpec {
                    name,
                    jurisdictions: raw.jurisdictions,
                },
            );
        }
    }
    let line = top
        .get_node("replication")
        .map_or(0, |n| n.span().start().map_or(0, |m| m.line()));
    let replication: RawReplication = optional(top, "replication", errors).unwrap_or_default();
    if line > 0 && parsed.regions.len() < 2 {
        errors.at(line, "`replication` needs at least two `regions`");
    }
    for topic in &replication.topics {
        match topics.get(topic) {
            None => errors.at(line, format!("replication: topic `{topic}` is not declared under `topics` (families go under `members`)")),
            // A copy is rebuilt by every reader from the start: like a global store's source.
            Some(t) if t.cleanup != super::Cleanup::Compact && t.retention_ms != Some(-1) => {
                errors.at(line, format!("replication: topic `{topic}` must be compacted or kept forever: only control topics cross regions"))
            }
            Some(_) => {}
        }
    }
    for (pattern, members) in &replication.members {
        if !families.contains_key(pattern) {
            errors.at(
                line,
                format!("replication: `{pattern}` is not a topic family declared under `topics`"),
            );
        }
        for (member, regions) in members {
            if !valid_name(member) {
                errors.at(
                    line,
                    format!("replication: `{member}` is not a member name"),
                );
            }
            for r in regions {
                if !parsed.regions.contains_key(r) {
                    errors.at(line, format!("replication: member `{member}` of `{pattern}` names region `{r}`, which `regions` does not declare"));
                }
            }
        }
    }
    parsed.topics = replication.topics;
    parsed.members = replication.members;
    parsed
}

impl Topology {
    /// The other regions' copies of `topic` that this region reads; empty outside a region
    /// ([`Topology::in_region`]) or for a topic that does not cross.
    pub fn copies_of(&self, topic: &str) -> Vec<String> {
        match &self.region {
            Some(here) if self.regions.topics.iter().any(|t| t == topic) => self
                .regions
                .regions
                .keys()
                .filter(|r| *r != here)
                .map(|r| format!("{r}.{topic}"))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether `topic` is another region's copy of a replicated topic.
    pub fn is_copy(&self, topic: &str) -> bool {
        self.regions
            .topics
            .iter()
            .any(|t| self.copies_of(t).iter().any(|c| c == topic))
    }

    /// This topology as run in `region`: every stage that reads a replicated topic (as input
    /// or global store) reads the other regions' copies of it too (`<region>.<topic>`, which
    /// MirrorMaker 2 writes), and a global store of a topic family reads the members copied
    /// here. The copies are declared topics like any other, so `topics create` makes them
    /// and `acls` grants them.
    pub fn in_region(&self, region: &str) -> Result<Topology, String> {
        if !self.regions.regions.contains_key(region) {
            return Err(if self.regions.regions.is_empty() {
                format!("{region}: this topology declares no `regions`")
            } else {
                format!(
                    "{region}: not one of this topology's regions ({})",
                    self.regions
                        .regions
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
        }
        let mut t = self.clone();
        t.region = Some(region.to_owned());
        let others: Vec<String> = self
            .regions
            .regions
            .keys()
            .filter(|r| *r != region)
            .cloned()
            .collect();
        let copies = |topic: &String| {
            others
                .iter()
                .map(move |r| format!("{r}.{topic}"))
                .collect::<Vec<_>>()
        };
        for topic in &self.regions.topics {
            for copy in copies(topic) {
                let mut spec = self.topics[topic].clone();
                spec.name = copy.clone();
                t.topics.insert(copy, spec);
            }
        }
        let replicated = |topic: &String| self.regions.topics.contains(topic);
        for stage in t.stages.values_mut() {
            let extra: Vec<String> = stage
                .inputs
                .iter()
                .filter(|i| replicated(i))
                .flat_map(copies)
                .collect();
            stage.inputs.extend(extra);
            for global in &mut stage.globals {
                if replicated(&global.topic) || self.regions.members.contains_key(&global.topic) {
                    global.mirrors = others.clone();
                }
            }
        }
        for task in t.tasks.values_mut() {
            let extra: Vec<String> = task
                .inputs
                .iter()
                .filter(|i| replicated(i))
                .flat_map(copies)
                .collect();
            task.inputs.extend(extra);
        }
        Ok(t)
    }
}
