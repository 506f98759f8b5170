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
use pavilion_schemas::{Tenant, TenantState};
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

    /// [`Region::command`] in `dir`, with the providers' and the signing keys' passphrases.
    fn in_dir(&self, dir: &std::path::Path, args: &[&str]) -> Command {
        let mut command = self.command(args);
        command
            .current_dir(dir)
            .env("PAVILION_PROVIDER_PASSPHRASE", PASSPHRASE)
            .env("PAVILION_SIGNING_PASSPHRASE", PASSPHRASE);
        command
    }

    fn ok_in(&self, dir: &std::path::Path, args: &[&str]) -> String {
        ok(self.in_dir(dir, args).output().unwrap())
    }

    /// Every record of every topic of this cluster, internal ones included, read
    /// uncommitted (aborted writes count), as (topic, key, value).
    fn every_record(&self) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        use rdkafka::{Message, Offset, TopicPartitionList};
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("group.id", format!("residency-scan-{}", now_ms()))
            .set("isolation.level", "read_uncommitted")
            .set("enable.auto.commit", "false");
        for (k, v) in &self.settings().overrides {
            c.set(k, v);
        }
        let consumer: BaseConsumer = c.create().unwrap();
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                assignment
                    .add_partition_offset(topic.name(), partition.id(), Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&assignment).unwrap();
        // Everything, until nothing more comes for a while (transaction markers take offsets
        // but are never delivered, so counting up to the high watermarks would wait forever).
        let mut out = Vec::new();
        let (started, mut last) = (Instant::now(), Instant::now());
        while last.elapsed() < Duration::from_secs(5) {
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "reading {} took too long",
                self.name
            );
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    last = Instant::now();
                    out.push((
                        m.topic().to_owned(),
                        m.key().unwrap_or_default().to_vec(),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                }
                Some(Err(e)) => panic!("reading {}: {e}", self.name),
                None => {}
            }
        }
        out
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

    /// Every region's client settings, for routing (`scripts/infra regions up` writes it).
    fn clusters_file() -> PathBuf {
        let env = infra(&["regions", "env", "eu"]);
        PathBuf::from(
            env.lines()
                .find_map(|l| l.strip_prefix("export PAVILION_CLUSTERS="))
                .expect("regions env names the clusters file"),
        )
    }

    /// A region's run directory: its broker's data and logs.
    fn data_dir(name: &str) -> PathBuf {
        Self::clusters_file().parent().unwrap().join(name)
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
const PASSPHRASE: &str = "regions test passphrase";

/// A `pavilion run` child, killed when dropped.
struct Running(std::process::Child, PathBuf);

impl Running {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.1).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "{}:\n{}",
            self.1.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
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
            assert!(
                region.latest(&heartbeats).is_empty(),
                "{heartbeats} holds records"
            );
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

/// Both regions write the same tenant while the link between them is cut (so that neither
/// sees the other's write first, which would refuse its own): its home (eu) suspends it,
/// us — away from home, as during an outage of eu — deletes it. Once replication runs
/// again, every region's tenancy stage ends with the same record, the one `VersionOrder`
/// names (the later hybrid logical clock; the home's on a tie), whatever order the local
/// record and the copy arrived in.
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
        stderr.contains(&format!(
            "tenant `{tenant}` has its home in region eu, and this is us"
        )),
        "{stderr}"
    );

    infra(&["regions", "stop", "--replication"]);
    eu.cli_ok(&["tenant", "suspend", &tenant]);
    us.cli_ok(&["tenant", "delete", &tenant, "--away-from-home"]);
    let written = |region: &Region| -> Tenant {
        let value = region.latest("pavilion.tenants")[tenant.as_bytes()].clone();
        pavilion_schemas::Registry::builtin()
            .decode(&value)
            .unwrap()
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

    infra(&["regions", "up", "eu,us"]);
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
            println!(
                "both regions' tenancy applied it {:?} after replication was started again",
                started.elapsed()
            );
            break;
        }
        // MirrorMaker 2 starts its connectors again first.
        assert!(
            started.elapsed() < 2 * bound,
            "the regions did not converge on {winner:?}: {applied:?}\n{}",
            tenancy
                .iter()
                .map(Running::log_tail)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every file under `dirs` but Kafka's offset and time indexes: preallocated sparse files
/// (10 MB each, of zeros past a few entries of offsets and positions) that hold no record.
fn scanned_files(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        files_under(dir, &mut files);
    }
    files.retain(|f| {
        !f.extension()
            .is_some_and(|e| e == "index" || e == "timeindex")
    });
    files
}

/// The needles of the residency scan that `haystack` holds.
fn found_in<'n>(haystack: &[u8], needles: &'n [(String, Vec<u8>)]) -> Vec<&'n str> {
    needles
        .iter()
        .filter(|(_, n)| haystack.windows(n.len()).any(|w| w == n.as_slice()))
        .map(|(name, _)| name.as_str())
        .collect()
}

/// EU traffic through the EU region while one of the EU provider's two OPRF endpoints is
/// killed, then the proof of residency: every topic of the US cluster read from the start
/// (internal ones too, read_uncommitted), its data directory, the US pipeline's state stores
/// and log hold no EU subject identifier, OPRF token, set key, request id or decision. A
/// request routed to a region that does not serve its subject is refused before it is sent.
/// Then the US region is lost: US traffic fails fast and clearly, EU traffic goes on, and US
/// traffic is answered again once its cluster is back.
#[test]
fn eu_traffic_leaves_nothing_in_the_us_region_and_losing_the_us_region_spares_the_eu() {
    let _serial = serial();
    infra(&["regions", "up", "eu,us"]);
    let _up = RegionsUp;
    let (eu, us) = (Region::of("eu"), Region::of("us"));
    let clusters = Region::clusters_file();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = now_ms();
    let (tenant, bank, us_bank) = (
        format!("rp-{run}"),
        format!("bank-eu-{run}"),
        format!("bank-us-{run}"),
    );
    for region in [&eu, &us] {
        region.cli_ok(&["topics", "create"]);
        std::fs::create_dir_all(d.join(region.name)).unwrap();
        region.ok_in(
            &d.join(region.name),
            &["keys", "generate", "--signing-keys", "keys"],
        );
    }
    // The tenant lives in eu and is served in both regions (its record crosses).
    eu.ok_in(
        d,
        &[
            "tenant",
            "add",
            &tenant,
            "--name",
            "RP",
            "--region",
            "eu",
            "--region",
            "us",
            "--rate",
            "100",
            "--burst",
            "100",
            "--activate",
        ],
    );
    let key = d.join("rp.json");
    eu.ok_in(
        d,
        &[
            "tenant",
            "add-key",
            &tenant,
            "--key-id",
            "k1",
            "--generate",
            key.to_str().unwrap(),
        ],
    );
    std::fs::write(
        d.join("policy.yaml"),
        format!(
            "policy: main\ntenant: {tenant}\nrules: |\n  permit(principal, action == Action::\"verify\", resource) when {{ context.purpose == \"kyc\" }};\nplan:\n  account_verified:\n    providers: [{{ id: {bank}, region: eu }}, {{ id: {us_bank}, region: us }}]\n    evidence: [oprf_match]\n    disclose: []\n"
        ),
    )
    .unwrap();
    eu.ok_in(d, &["policy", "push", "policy.yaml", "--activate"]);

    // The EU bank: two OPRF endpoints (zones eu-a and eu-b) of one key; its set stays in eu.
    let (a_port, b_port, us_port) = (free_port(), free_port(), free_port());
    let eu_dir = d.join("eu");
    eu.ok_in(
        &eu_dir,
        &[
            "provider",
            "onboard",
            &bank,
            "--region",
            "eu",
            "--claims",
            "account_verified",
            "--oprf-url",
            &format!("http://127.0.0.1:{a_port}"),
            "--oprf-url",
            &format!("eu-b=http://127.0.0.1:{b_port}"),
        ],
    );
    let subjects: Vec<String> = (0..6)
        .map(|i| format!("eu-subject-{i}-{run}@example.eu"))
        .collect();
    let csv: String = std::iter::once("email,claims".to_owned())
        .chain(subjects.iter().map(|s| format!("{s},account_verified")))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(eu_dir.join("members.csv"), csv).unwrap();
    eu.ok_in(
        &eu_dir,
        &[
            "provider",
            "load",
            &bank,
            "--from",
            "members.csv",
            "--claims-column",
            "claims",
        ],
    );
    // A US bank for US subjects.
    let us_dir = d.join("us");
    us.ok_in(
        &us_dir,
        &[
            "provider",
            "onboard",
            &us_bank,
            "--region",
            "us",
            "--claims",
            "account_verified",
            "--oprf-url",
            &format!("http://127.0.0.1:{us_port}"),
        ],
    );
    let us_subject = format!("us-subject-{run}@example.com");
    std::fs::write(
        us_dir.join("members.csv"),
        format!("email,claims\n{us_subject},account_verified\n"),
    )
    .unwrap();
    us.ok_in(
        &us_dir,
        &[
            "provider",
            "load",
            &us_bank,
            "--from",
            "members.csv",
            "--claims-column",
            "claims",
        ],
    );

    let serve = |region: &Region, dir: &std::path::Path, provider: &str, port: u16| {
        let log = std::fs::File::create(dir.join(format!("oprf-{port}.log"))).unwrap();
        let child = region
            .in_dir(
                dir,
                &[
                    "provider",
                    "serve-oprf",
                    provider,
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--rate",
                    "1000",
                ],
            )
            .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .unwrap();
        let started = Instant::now();
        while http_get(port, "/v1/oprf/key").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "serve-oprf on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Running(child, dir.join(format!("oprf-{port}.log")))
    };
    let mut eu_a = Some(serve(&eu, &eu_dir, &bank, a_port));
    let _eu_b = serve(&eu, &eu_dir, &bank, b_port);
    let us_oprf = serve(&us, &us_dir, &us_bank, us_port);
    let pipeline = |region: &Region, dir: &std::path::Path| {
        let log = std::fs::File::create(dir.join("pipeline.log")).unwrap();
        let child = region
            .in_dir(
                dir,
                &[
                    "run",
                    "--task",
                    "tenancy",
                    "--task",
                    "policy",
                    "--instance",
                    region.name,
                    "--state-dir",
                    "state",
                    "--signing-keys",
                    "keys",
                    "--commit-interval",
                    "100ms",
                    "--metrics-addr",
                    "off",
                ],
            )
            .env("PAVILION_THREADS", "1")
            .env("PAVILION_LOG", "info")
            .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .unwrap();
        Running(child, dir.join("pipeline.log"))
    };
    let eu_pipeline = pipeline(&eu, &eu_dir);
    let us_pipeline = pipeline(&us, &us_dir);

    // A relying party's requests, routed by the subject's jurisdiction.
    let request = |subject: &str, jurisdiction: &str, timeout: &str| {
        Command::new(BIN)
            .args([
                "request",
                "--provider",
                &bank,
                "--provider",
                &us_bank,
                "--key",
                key.to_str().unwrap(),
                "--subject",
                subject,
                "--claims",
                "account_verified",
                "--purpose",
                "kyc",
                "--jurisdiction",
                jurisdiction,
                "--wait",
                "--json",
                "--timeout",
                timeout,
            ])
            .env("PAVILION_CLUSTERS", &clusters)
            .env("PAVILION_TOPOLOGY", TOPOLOGY)
            .env_remove("PAVILION_BOOTSTRAP")
            .env_remove("PAVILION_KAFKA_CONFIG")
            .env_remove("PAVILION_REGION")
            .output()
            .unwrap()
    };
    let verified = |out: &std::process::Output| -> bool {
        out.status.success()
            && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|v| v["outcomes"][0]["outcome"] == "verified")
    };
    // The first requests also wait for the pipelines to have the tenant and the policy.
    let started = Instant::now();
    loop {
        let out = request(&subjects[0], "DE", "10s");
        if verified(&out) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no EU decision: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            eu_pipeline.log_tail()
        );
    }
    let mut answered = vec![Instant::now()];
    for (i, subject) in subjects.iter().enumerate().skip(1) {
        if i == 3 {
            // One EU endpoint dies: the client fails over to the other zone.
            drop(eu_a.take());
        }
        let out = request(subject, if i % 2 == 0 { "FR" } else { "DE-BY" }, "30s");
        assert!(
            verified(&out),
            "{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            eu_pipeline.log_tail()
        );
        answered.push(Instant::now());
    }
    let started = Instant::now();
    loop {
        let out = request(&us_subject, "US-CA", "10s");
        if verified(&out) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no US decision: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            us_pipeline.log_tail()
        );
    }
    // Routed to a region that does not serve the subject: refused here, nothing sent.
    let refused = us
        .in_dir(
            d,
            &[
                "request",
                "--key",
                key.to_str().unwrap(),
                "--subject",
                &subjects[0],
                "--claims",
                "account_verified",
                "--purpose",
                "kyc",
                "--jurisdiction",
                "DE",
            ],
        )
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(
            "--in-region us, but subjects of DE are served by region eu: the request is not sent"
        ),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // What EU traffic left in the EU region: what must not be found in the US region.
    let registry = pavilion_schemas::Registry::builtin();
    let mut needles: Vec<(String, Vec<u8>)> = subjects
        .iter()
        .map(|s| (format!("subject {s}"), s.as_bytes().to_vec()))
        .collect();
    for (topic, key, value) in eu.every_record() {
        if topic == "pavilion.requests" {
            let Ok(r) = registry.decode::<pavilion_schemas::VerificationRequest>(&value) else {
                continue;
            };
            if r.tenant_id != tenant || r.subject_jurisdiction.starts_with("US") {
                continue;
            }
            needles.push((
                format!("request id {}", r.request_id),
                r.request_id.into_bytes(),
            ));
            for t in r.subject_tokens {
                needles.push((format!("OPRF token for {}", t.provider_id), t.token));
            }
        } else if topic == format!("pavilion.provider-sets.{bank}") {
            needles.push((format!("set key of {bank}"), key));
        } else if topic == format!("pavilion.decisions.{tenant}") {
            let d: pavilion_schemas::Decision = registry.decode(&value).unwrap();
            if let pavilion_schemas::Payload::Text(token) = d.payload {
                // The signature, the part no other decision shares.
                let signature = token.rsplit('.').next().unwrap().to_owned();
                needles.push(("decision".into(), signature.into_bytes()));
            }
        }
    }
    let count = |prefix: &str| {
        needles
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .count()
    };
    assert!(
        count("request id") >= subjects.len()
            && count("OPRF token") >= subjects.len()
            && count("set key") == subjects.len()
            && count("decision") >= subjects.len(),
        "the scan looks for what EU traffic wrote: {:?}",
        needles.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    // The scan sees: the EU cluster's own data holds what it looks for.
    let eu_files = scanned_files(&[Region::data_dir("eu")]);
    assert!(
        eu_files
            .iter()
            .any(|f| !found_in(&std::fs::read(f).unwrap_or_default(), &needles).is_empty()),
        "the scan finds EU data in the EU cluster's files"
    );

    let mut scanned = 0;
    for (topic, key, value) in us.every_record() {
        scanned += 1;
        assert_eq!(
            found_in(&key, &needles),
            Vec::<&str>::new(),
            "in the US cluster's {topic} (key)"
        );
        assert_eq!(
            found_in(&value, &needles),
            Vec::<&str>::new(),
            "in the US cluster's {topic}"
        );
    }
    let us_files = scanned_files(&[Region::data_dir("us"), us_dir.clone()]);
    assert!(us_files
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "sst" || e == "log")));
    for file in &us_files {
        let bytes = std::fs::read(file).unwrap_or_default();
        assert_eq!(
            found_in(&bytes, &needles),
            Vec::<&str>::new(),
            "in {}",
            file.display()
        );
    }
    println!(
        "residency: {} needles, 0 found in {scanned} US records and {} US files; the longest gap between EU decisions across the endpoint's death: {:?}",
        needles.len(),
        us_files.len(),
        answered.windows(2).map(|w| w[1] - w[0]).max().unwrap()
    );

    // The US region is lost.
    infra(&["regions", "stop", "us"]);
    let lost = Instant::now();
    let out = request(&us_subject, "US", "10s");
    let first_error = lost.elapsed();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("region us (127.0.0.1:30092), the only one serving US, is unreachable: the request is not sent"),
        "the error names the unreachable region: {stderr}"
    );
    assert!(
        first_error < Duration::from_secs(10),
        "it fails fast: {first_error:?}"
    );
    assert!(
        verified(&request(&subjects[1], "DE", "30s")),
        "the EU region is unaffected"
    );
    infra(&["regions", "up", "eu,us"]);
    let back = Instant::now();
    // What each attempt got, for the message when the region does not come back.
    let mut attempts = Vec::new();
    loop {
        let out = request(&us_subject, "US", "10s");
        if verified(&out) {
            break;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        attempts.push(format!(
            "after {:?}: {} {}",
            back.elapsed(),
            String::from_utf8_lossy(&out.stdout).trim(),
            stderr.lines().last().unwrap_or_default()
        ));
        assert!(
            back.elapsed() < Duration::from_secs(120),
            "the US region did not come back:\n{}\n{stderr}\n{}\n{}",
            attempts.join("\n"),
            us_pipeline.log_tail(),
            us_oprf.log_tail()
        );
    }
    let us_log = std::fs::read_to_string(&us_pipeline.1).unwrap_or_default();
    println!(
        "region loss: first error after {first_error:?}; US answered again {:?} after its cluster was started, after {} unanswered attempt(s); US tasks started again on lost partitions: {}",
        back.elapsed(),
        attempts.len(),
        us_log.matches("partitions lost: the group session timed out").count()
    );
}
