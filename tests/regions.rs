//! Two regions on loopback (issue 19, its first part): `scripts/infra regions up eu,us` starts
//! one secured cluster per region, each with its own KRaft cluster id, and MirrorMaker 2 in
//! dedicated mode between them. The control topics cross, as `<source>.<topic>`; the request
//! path's topics do not.

mod util;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pavilion_kafka::{KafkaSettings, PlainProducer, TopicReader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use util::*;

fn infra(args: &[&str]) -> String {
    let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/infra"));
    ok(Command::new(script)
        .args(args)
        .env("PAVILION_BIN", BIN)
        .env_remove("PAVILION_TOPOLOGY")
        .output()
        .unwrap())
}

/// A region's admin: its bootstrap and client settings, from `scripts/infra regions env`.
struct Region {
    name: &'static str,
    bootstrap: String,
    config: String,
}

impl Region {
    fn of(name: &'static str) -> Region {
        let env = infra(&["regions", "env", name]);
        let var = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("export {key}=")))
                .unwrap_or_else(|| panic!("no {key} in {env}"))
                .to_owned()
        };
        Region {
            name,
            bootstrap: var("PAVILION_BOOTSTRAP"),
            config: var("PAVILION_KAFKA_CONFIG"),
        }
    }

    fn settings(&self) -> KafkaSettings {
        let mut s = KafkaSettings::new(&self.bootstrap, "test-regions", std::env::temp_dir());
        s.overrides = pavilion_kafka::read_client_properties(self.config.as_ref()).unwrap();
        s
    }

    fn consumer(&self) -> BaseConsumer {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.settings().overrides {
            c.set(k, v);
        }
        c.create().unwrap()
    }

    fn topics(&self) -> BTreeSet<String> {
        let metadata = self
            .consumer()
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .collect()
    }

    /// `pavilion topics create` on this region for a topology of `topics`.
    fn create(&self, dir: &std::path::Path, topics: &str) {
        let file = dir.join(format!("{}.yaml", self.name));
        std::fs::write(
            &file,
            format!("application: regions\ndlq: regions.dlq\ndefaults: {{ partitions: 3 }}\ntopics:\n  regions.dlq: {{}}\n{topics}stages: {{}}\n"),
        )
        .unwrap();
        ok(Command::new(BIN)
            .args(["topics", "create", "--topology"])
            .arg(&file)
            .env("PAVILION_BOOTSTRAP", &self.bootstrap)
            .env("PAVILION_KAFKA_CONFIG", &self.config)
            .output()
            .unwrap());
    }

    /// Waits until `topic` holds a record keyed `key`; how long that took.
    fn await_key(&self, topic: &str, key: &str, bound: Duration) -> Duration {
        let started = Instant::now();
        while started.elapsed() < bound {
            if self.topics().contains(topic) {
                let reader = TopicReader::new(&self.settings(), &[topic]).unwrap();
                let found = reader
                    .read_to_end(Duration::from_secs(10))
                    .unwrap()
                    .iter()
                    .any(|r| r.key == key.as_bytes());
                if found {
                    return started.elapsed();
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "{key} did not reach {topic} in {} within {bound:?}",
            self.name
        )
    }
}

/// Stops the regions when the test ends: the tests after it have the two cores to themselves.
struct RegionsUp;

impl Drop for RegionsUp {
    fn drop(&mut self) {
        infra(&["regions", "down"]);
    }
}

#[test]
fn control_topics_cross_regions_and_the_request_path_does_not() {
    let _serial = serial();
    infra(&["regions", "up", "eu,us"]);
    let _up = RegionsUp;
    let (eu, us) = (Region::of("eu"), Region::of("us"));
    let ids: BTreeSet<Option<String>> = [&eu, &us]
        .iter()
        .map(|r| {
            r.consumer()
                .client()
                .fetch_cluster_id(Duration::from_secs(10))
        })
        .collect();
    assert_eq!(ids.len(), 2, "each region has its own cluster id: {ids:?}");

    let dir = tempfile::tempdir().unwrap();
    let topics = "  pavilion.tenants: { cleanup: compact }\n  pavilion.requests: {}\n";
    eu.create(dir.path(), topics);
    us.create(dir.path(), topics);
    let run = format!("{}", now_ms());
    let send = |region: &Region, topic: &str, key: &str| {
        let producer = PlainProducer::new(&region.settings()).unwrap();
        producer.send(topic, key.as_bytes(), b"record").unwrap();
        producer.flush().unwrap();
    };
    send(&eu, "pavilion.tenants", &format!("eu-tenant-{run}"));
    send(&eu, "pavilion.requests", &format!("eu-request-{run}"));
    send(&us, "pavilion.tenants", &format!("us-tenant-{run}"));
    send(&us, "pavilion.requests", &format!("us-request-{run}"));

    let bound = Duration::from_secs(90);
    let to_us = us.await_key("eu.pavilion.tenants", &format!("eu-tenant-{run}"), bound);
    let to_eu = eu.await_key("us.pavilion.tenants", &format!("us-tenant-{run}"), bound);
    println!("control record replicated eu → us in {to_us:?}, us → eu in {to_eu:?}");
    for (region, other) in [(&eu, "us"), (&us, "eu")] {
        let mirrored: Vec<String> = region
            .topics()
            .into_iter()
            .filter(|t| t.starts_with(&format!("{other}.pavilion.")))
            .collect();
        assert_eq!(
            mirrored,
            [format!("{other}.pavilion.tenants")],
            "only the allow-listed control topics cross into {}",
            region.name
        );
    }
}
