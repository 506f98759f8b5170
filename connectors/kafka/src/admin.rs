//! Provisioning Kafka from the topology: create what is missing, report what differs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use pavilion_runtime::topology::TopicSpec;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;

use crate::client::cluster_metadata;
use crate::settings::KafkaSettings;

const TIMEOUT: Duration = Duration::from_secs(30);

/// What `ensure_topics` found or did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicStatus {
    /// Created now.
    Created,
    /// Already there, as declared.
    Exists,
    /// Already there but not as declared; each string names one difference. Nothing is
    /// changed: partitions cannot shrink and config changes are an operator's call.
    Differs(Vec<String>),
}

fn admin_and_metadata(
    settings: &KafkaSettings,
) -> Result<(AdminClient<DefaultClientContext>, Metadata)> {
    let metadata = cluster_metadata(settings).context("reading cluster metadata")?;
    let admin: AdminClient<DefaultClientContext> = settings
        .client()
        .create()
        .context("creating the admin client")?;
    Ok((admin, metadata))
}

/// Creates every missing topic and compares existing ones with their declaration.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&TopicSpec],
) -> Result<Vec<(String, TopicStatus)>> {
    let (admin, metadata) = admin_and_metadata(settings)?;
    let existing: BTreeMap<&str, i32> = metadata
        .topics()
        .iter()
        .map(|t| (t.name(), t.partitions().len() as i32))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));

    let configs: Vec<BTreeMap<String, String>> = topics.iter().map(|t| t.kafka_configs()).collect();
    let missing: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&configs)
        .filter(|(t, _)| !existing.contains_key(t.name.as_str()))
        .map(|(t, c)| {
            let mut new = NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(t.replication),
            );
            for (k, v) in c {
                new = new.set(k, v);
            }
            new
        })
        .collect();
    let mut report = BTreeMap::new();
    if !missing.is_empty() {
        for result in admin
            .create_topics(&missing, &options)
            .await
            .context("creating topics")?
        {
            match result {
                Ok(name) => {
                    report.insert(name, TopicStatus::Created);
                }
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    report.insert(name, TopicStatus::Exists);
                }
                Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
            }
        }
    }

    let created: Vec<&str> = report
        .iter()
        .filter(|(_, s)| **s == TopicStatus::Created)
        .map(|(n, _)| n.as_str())
        .collect();
    await_leaders(&admin, &created)?;

    let present: Vec<(&TopicSpec, &BTreeMap<String, String>)> = topics
        .iter()
        .zip(&configs)
        .filter(|(t, _)| existing.contains_key(t.name.as_str()))
        .map(|(t, c)| (*t, c))
        .collect();
    if !present.is_empty() {
        let specifiers: Vec<ResourceSpecifier<'_>> = present
            .iter()
            .map(|(t, _)| ResourceSpecifier::Topic(&t.name))
            .collect();
        let described = admin
            .describe_configs(&specifiers, &options)
            .await
            .context("describing topic configs")?;
        for ((topic, wanted), result) in present.iter().zip(described) {
            let mut differences = Vec::new();
            let partitions = existing[topic.name.as_str()];
            if partitions != topic.partitions {
                differences.push(format!(
                    "partitions: {partitions}, declared {}",
                    topic.partitions
                ));
            }
            let resource = result.with_context(|| format!("describing {}", topic.name))?;
            let actual = resource.entry_map();
            for (key, value) in *wanted {
                let have = actual.get(key.as_str()).and_then(|e| e.value.as_deref());
                if have != Some(value.as_str()) {
                    differences.push(format!(
                        "{key}: {}, declared {value}",
                        have.unwrap_or("unset")
                    ));
                }
            }
            let status = if differences.is_empty() {
                TopicStatus::Exists
            } else {
                TopicStatus::Differs(differences)
            };
            report.insert(topic.name.clone(), status);
        }
    }
    Ok(topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                report.remove(&t.name).unwrap_or(TopicStatus::Exists),
            )
        })
        .collect())
}

/// Waits until every partition of `topics` has a leader: CreateTopics returns when the
/// controller has the topic, before the broker serves it, and a client that reads it at once
/// gets NotLeaderForPartition.
fn await_leaders(admin: &AdminClient<DefaultClientContext>, topics: &[&str]) -> Result<()> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    for topic in topics {
        loop {
            let ready = admin
                .inner()
                .fetch_metadata(Some(topic), TIMEOUT)
                .ok()
                .is_some_and(|m| {
                    m.topics().iter().all(|t| {
                        t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions()
                                .iter()
                                .all(|p| p.error().is_none() && p.leader() >= 0)
                    })
                });
            if ready {
                break;
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("topic {topic} was created but has no leader after {TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The names of the topics that exist and start with `prefix`, sorted.
pub fn topics_with_prefix(settings: &KafkaSettings, prefix: &str) -> Result<Vec<String>> {
    let (_, metadata) = admin_and_metadata(settings)?;
    let mut names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    Ok(names)
}

/// Deletes every topic whose name starts with `prefix` (test clean-up, and a throwaway
/// application's teardown); returns how many were deleted.
pub async fn delete_topics_with_prefix(settings: &KafkaSettings, prefix: &str) -> Result<usize> {
    let (admin, metadata) = admin_and_metadata(settings)?;
    let names: Vec<&str> = metadata
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|n| n.starts_with(prefix))
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    admin
        .delete_topics(&names, &options)
        .await
        .context("deleting topics")?;
    Ok(names.len())
}
