//! Two regions on loopback: `scripts/infra regions up eu,us` starts one secured cluster per
//! region, each with its own KRaft cluster id, and MirrorMaker 2 in dedicated mode between
//! them, copying what topology.yaml's `replication:` names. The control topics cross, as
//! `<source>.<topic>`; the request path's topics do not. Control records written in both
//! regions at once converge on the version the rule names, in the stages of both.

mod util;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pavilion_kafka::{KafkaSettings, PlainProducer, TopicReader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use pavilion_schemas::{Tenant, TenantState};
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

    /// The binary against this region, with the repository's topology run `--in-region`.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("PAVILION_BOOTSTRAP", &self.bootstrap)
            .env("PAVILION_KAFKA_CONFIG", &self.config)
            .env("PAVILION_REGION", self.name)
            .env("PAVILION_TOPOLOGY", TOPOLOGY);
        command
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        ok(self.command(args).output().unwrap())
    }

    /// `pavilion run --task TASK` in this region, until dropped.
    fn run(&self, task: &str, dir: &std::path::Path) -> Running {
        let log = dir.join(format!("{}-{task}.log", self.name));
        let file = std::fs::File::create(&log).unwrap();
        let child = self
            .command(&["run", "--task", task, "--instance", self.name])
            .args(["--commit-interval", "100ms", "--metrics-addr", "off"])
            .arg("--state-dir")
            .arg(dir.join(format!("state-{}", self.name)))
            .env("PAVILION_THREADS", "1")
            .stdout(std::process::Stdio::from(file.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(file))
            .spawn()
            .unwrap();
        Running(child, log)
    }

    /// The latest value of every key of `topic`.
    fn latest(&self, topic: &str) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        TopicReader::new(&self.settings(), &[topic])
            .unwrap()
            .read_to_end(Duration::from_secs(10))
            .unwrap()
            .into_iter()
            .filter_map(|r| Some((r.key, r.value?)))
            .collect()
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

const TOPOLOGY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/topology.yaml");

/// A `pavilion run` child, killed when dropped.
struct Running(std::process::Child, PathBuf);

impl Running {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.1).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!("{}:\n{}", self.1.display(), lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the regions when the test ends: the tests after it have the two cores to themselves.
struct RegionsUp;

impl Drop for RegionsUp {
    fn drop(&mut self) {
        // PAVILION_KEEP_REGIONS=1 keeps them for the next run while developing.
        if std::env::var_os("PAVILION_KEEP_REGIONS").is_none() {
            infra(&["regions", "down"]);
        }
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

    for region in [&eu, &us] {
        region.cli_ok(&["topics", "create"]);
    }
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
        // MirrorMaker makes its heartbeats topic whatever it is told; it emits none.
        let heartbeats = format!("{other}.heartbeats");
        let copies: Vec<String> = region
            .topics()
            .into_iter()
            .filter(|t| t.starts_with(&format!("{other}.")) && *t != heartbeats)
            .collect();
        if region.topics().contains(&heartbeats) {
            assert!(region.latest(&heartbeats).is_empty(), "{heartbeats} holds records");
        }
        assert_eq!(
            copies,
            ["policies", "providers", "tenants"].map(|t| format!("{other}.pavilion.{t}")),
            "only the control topics are copied into {}",
            region.name
        );
        let request = format!("{other}-request-{run}");
        for copy in &copies {
            assert!(
                !region.latest(copy).contains_key(request.as_bytes()),
                "{request} crossed into {copy}"
            );
        }
    }
}

/// Both regions write the same tenant at the same moment: its home (eu) suspends it, us —
/// away from home, as during an outage of eu — deletes it. Every region's tenancy stage
/// ends with the same record, the one `VersionOrder` names (the later hybrid logical clock;
/// the home's on a tie), whatever order the local record and the copy arrived in.
#[test]
fn conflicting_writes_in_both_regions_converge_on_the_version_the_rule_names() {
    let _serial = serial();
    infra(&["regions", "up", "eu,us"]);
    let _up = RegionsUp;
    let (eu, us) = (Region::of("eu"), Region::of("us"));
    let dir = tempfile::tempdir().unwrap();
    for region in [&eu, &us] {
        region.cli_ok(&["topics", "create"]);
    }
    let tenancy = [eu.run("tenancy", dir.path()), us.run("tenancy", dir.path())];
    let tenant = format!("acme-{}", now_ms());
    eu.cli_ok(&["tenant", "add", &tenant, "--name", "Acme", "--activate"]);
    let bound = Duration::from_secs(90);
    us.await_key("eu.pavilion.tenants", &tenant, bound);

    // Away from home needs saying so.
    let refused = us.command(&["tenant", "delete", &tenant]).output().unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("tenant `{tenant}` has its home in region eu, and this is us")),
        "{stderr}"
    );

    let at_home = eu.command(&["tenant", "suspend", &tenant]).spawn().unwrap();
    let away = us
        .command(&["tenant", "delete", &tenant, "--away-from-home"])
        .spawn()
        .unwrap();
    for mut child in [at_home, away] {
        assert!(child.wait().unwrap().success());
    }
    let written = |region: &Region| -> Tenant {
        let value = region.latest("pavilion.tenants")[tenant.as_bytes()].clone();
        pavilion_schemas::Registry::builtin().decode(&value).unwrap()
    };
    let (eu_write, us_write) = (written(&eu), written(&us));
    assert_eq!(eu_write.state, TenantState::Suspended);
    assert_eq!(us_write.state, TenantState::Deleted);
    let winner = if eu_write.order() > us_write.order() {
        eu_write
    } else {
        us_write
    };
    println!(
        "eu wrote at hlc {:?}, us at {:?}: {:?} wins",
        written(&eu).stamp.map(|s| s.hlc),
        written(&us).stamp.map(|s| s.hlc),
        winner.state
    );

    let changelog = "pavilion.tenancy.tenants.changelog";
    let started = Instant::now();
    loop {
        let applied: Vec<Option<Tenant>> = [&eu, &us]
            .iter()
            .map(|r| {
                r.latest(changelog)
                    .get(tenant.as_bytes())
                    .map(|v| serde_json::from_slice(v).unwrap())
            })
            .collect();
        if applied.iter().all(|t| t.as_ref() == Some(&winner)) {
            println!("both regions' tenancy applied it after {:?}", started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < bound,
            "the regions did not converge on {winner:?}: {applied:?}\n{}",
            tenancy.iter().map(Running::log_tail).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
