//! The control topics' tools: tenants, policies and data providers. Every change is an
//! event on its topic; current state is read back from the topic.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{bail, Result};
use pavilion_runtime::clock::epoch_millis;
use pavilion_runtime::topology::Topology;
use pavilion_schemas::{ControlVersion, Event, VersionOrder};

use crate::cli::{self, ClusterArgs};

pub mod credentials;
pub mod evidence;
pub mod policy;
pub mod provider;
pub mod tenant;

/// Every record of control topic `topic` and of the other regions' copies of it, the
/// greatest version of each key winning: the state the stages of this region apply.
pub(crate) fn read_latest<E: Event>(
    cluster: &ClusterArgs,
    topology: &Topology,
    topic: &str,
    key: impl Fn(&E) -> String,
    order: impl Fn(&E) -> VersionOrder,
) -> Result<BTreeMap<String, E>> {
    let mut latest: BTreeMap<String, E> = BTreeMap::new();
    for source in existing(cluster, topology, topic)? {
        for (_, record) in cli::read_all::<E>(cluster, &source)? {
            let k = key(&record);
            if latest
                .get(&k)
                .is_none_or(|known| order(known) <= order(&record))
            {
                latest.insert(k, record);
            }
        }
    }
    Ok(latest)
}

/// `topic` and those of the other regions' copies of it that exist: a copy MirrorMaker 2 has
/// not made yet holds nothing yet.
pub(crate) fn existing(
    cluster: &ClusterArgs,
    topology: &Topology,
    topic: &str,
) -> Result<Vec<String>> {
    let copies = topology.copies_of(topic);
    let mut sources = vec![topic.to_owned()];
    if !copies.is_empty() {
        let settings = cli::settings(cluster, "cli")?;
        for copy in copies {
            if pavilion_kafka::topics_with_prefix(&settings, &copy)?.contains(&copy) {
                sources.push(copy);
            }
        }
    }
    Ok(sources)
}

/// Where a control write is made: the region this tool runs in (`--in-region`), and whether it
/// may write a key whose home is elsewhere.
pub(crate) struct Writer<'a> {
    /// `--in-region`, if the topology has regions.
    pub region: Option<&'a str>,
    /// `--away-from-home`.
    pub away_from_home: bool,
}

impl<'a> Writer<'a> {
    /// The writer a command's `--in-region` and `--away-from-home` make.
    pub fn of(file: &'a cli::TopologyFile) -> Self {
        Writer {
            region: file.region.as_deref(),
            away_from_home: file.away_from_home,
        }
    }

    /// The version stamp of a new record of a key `what`, after `previous` (the greatest
    /// version read of it), homed at `home` when the key is new.
    ///
    /// The rule: a key is written in its home region. While that region is down, a write
    /// elsewhere needs `--away-from-home`; it is ordered with the home's writes by hybrid
    /// logical clock (the later one wins, the home's on a tie), so when the home comes back
    /// both regions converge on whichever was written last.
    pub fn stamp(
        &self,
        what: &str,
        previous: Option<&ControlVersion>,
        home: Option<&str>,
    ) -> Result<Option<ControlVersion>> {
        let Some(region) = self.region else {
            if previous.is_some() {
                bail!("{what} was written with region version stamps; say where this runs with --in-region (an unstamped record would be older than every stamped one and never apply)");
            }
            return Ok(None);
        };
        let home = previous.map(|p| p.home.as_str()).or(home).unwrap_or(region);
        if home != region && !self.away_from_home {
            bail!("{what} has its home in region {home}, and this is {region}: write it there, or, while {home} is down, pass --away-from-home (the later write wins when {home} is back)");
        }
        Ok(Some(ControlVersion::next(
            region,
            home,
            previous.map_or(0, |p| p.epoch),
            epoch_millis(SystemTime::now()),
            previous,
        )))
    }
}
