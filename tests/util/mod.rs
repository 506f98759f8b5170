//! Shared helpers of the black-box tests: a throwaway topology on the real broker, the real
//! `pavilion` binary as child processes, and readers that check outputs exactly.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::{Signer, SigningKey};
use pavilion_kafka::{KafkaSettings, PlainProducer, ReadRecord, TopicReader};
use pavilion_schemas::{
    ClaimRequest, DeadLetter, Decision, DemoEvent, KeyCount, KeyTotal, Registry, SubjectToken,
    VerificationRequest,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_pavilion");

/// Broker tests share one broker and two cores: run them one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn bootstrap() -> String {
    std::env::var("PAVILION_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The test's client settings: the broker of `scripts/infra env`, as its admin
/// (`$PAVILION_KAFKA_CONFIG`), like the commands the tests run.
pub fn settings() -> KafkaSettings {
    let mut s = KafkaSettings::new(bootstrap(), "test-client", std::env::temp_dir());
    if let Ok(file) = std::env::var("PAVILION_KAFKA_CONFIG") {
        s.overrides = pavilion_kafka::read_client_properties(file.as_ref())
            .expect("$PAVILION_KAFKA_CONFIG is readable");
    }
    s
}

/// A two-stage counting topology with topics unique to one test run.
pub struct TestTopology {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub prefix: String,
    /// `pavilion run --threads` (`PAVILION_THREADS`) of the pipelines it spawns: 1 unless
    /// `threads` says otherwise, so a test does not depend on the machine's cores.
    pub threads: usize,
}

impl TestTopology {
    pub fn new(name: &str, partitions: u32, fused: bool) -> Self {
        let fuse = if fused {
            "fuse:\n  - [counter, totals]\n"
        } else {
            ""
        };
        Self::with_yaml(name, |prefix| {
            format!(
                "application: {prefix}
dlq: {prefix}.dlq
defaults: {{ partitions: {partitions} }}
topics:
  {prefix}.dlq: {{ schema: pavilion.DeadLetter }}
  {prefix}.events: {{ schema: pavilion.DemoEvent }}
  {prefix}.counts: {{ schema: pavilion.KeyCount }}
  {prefix}.totals: {{ schema: pavilion.KeyTotal }}
stages:
  counter:
    kind: counter
    inputs: [{prefix}.events]
    outputs: {{ counts: {prefix}.counts }}
    stores: [counts]
    config: {{ refuse_payload_prefix: poison }}
  totals:
    kind: totals
    inputs: [{prefix}.counts]
    outputs: {{ totals: {prefix}.totals }}
    stores: [totals]
{fuse}"
            )
        })
    }

    /// A topology whose text `yaml` makes from a prefix unique to this run; its topics are
    /// created with `pavilion topics create`.
    pub fn with_yaml(name: &str, yaml: impl FnOnce(&str) -> String) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("t-{name}-{}-{}", std::process::id(), nanos % 1_000_000_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.yaml");
        std::fs::write(&path, yaml(&prefix)).unwrap();
        let t = TestTopology {
            dir,
            path,
            prefix,
            threads: 1,
        };
        let out = t.cli(&["topics", "create"]);
        assert!(
            out.status.success(),
            "topics create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    /// Pipelines spawned from here run each task on `threads` stream threads.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    pub fn changelog(&self, stage: &str, store: &str) -> String {
        format!("{}.{stage}.{store}.changelog", self.prefix)
    }

    pub fn state_dir(&self, instance: &str) -> PathBuf {
        self.dir.path().join(format!("state-{instance}"))
    }

    /// Registers `tenant` active with generous limits and a generated key `key_id` (through the
    /// CLI, as an operator would); returns the signing key.
    pub fn active_tenant(&self, tenant: &str, key_id: &str) -> SigningKey {
        self.cli_ok(&[
            "tenant",
            "add",
            tenant,
            "--name",
            tenant,
            "--activate",
            "--rate",
            "10000",
            "--burst",
            "10000",
        ]);
        self.add_key(tenant, key_id)
    }

    /// Generates and registers another signing key for `tenant`.
    pub fn add_key(&self, tenant: &str, key_id: &str) -> SigningKey {
        let file = self.dir.path().join(format!("{tenant}-{key_id}.json"));
        self.cli_ok(&[
            "tenant",
            "add-key",
            tenant,
            "--key-id",
            key_id,
            "--generate",
            file.to_str().unwrap(),
        ]);
        load_key(&file)
    }

    /// Runs the binary to completion with this topology; panics with its stderr on failure.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "pavilion {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the binary to completion with this topology.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .arg("--topology")
            .arg(&self.path)
            .env("PAVILION_BOOTSTRAP", bootstrap())
            .output()
            .unwrap()
    }

    /// Starts `pavilion run` as a child process.
    pub fn spawn(&self, instance: &str, metrics_port: Option<u16>) -> Pipeline {
        self.spawn_with(instance, metrics_port, &[])
    }

    /// Starts `pavilion run` with extra environment (e.g. the signing key ring).
    pub fn spawn_with(
        &self,
        instance: &str,
        metrics_port: Option<u16>,
        env: &[(&str, &str)],
    ) -> Pipeline {
        let log = self.dir.path().join(format!("{instance}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let metrics = metrics_port.map_or("off".to_owned(), |p| format!("127.0.0.1:{p}"));
        let child = Command::new(BIN)
            .args(["run", "--instance", instance, "--commit-interval", "100ms"])
            .args(["--session-timeout", "3s", "--transaction-timeout", "5s"])
            .arg("--topology")
            .arg(&self.path)
            .arg("--state-dir")
            .arg(self.state_dir(instance))
            .args(["--metrics-addr", &metrics])
            .env("PAVILION_BOOTSTRAP", bootstrap())
            // `--threads`, through its variable (a test's own `env` may override it).
            .env("PAVILION_THREADS", self.threads.to_string())
            .env("PAVILION_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        Pipeline {
            child: Some(child),
            log,
        }
    }
}

impl Drop for TestTopology {
    /// Deletes the run's topics (kept when the test failed, for inspection): a broker with
    /// thousands of leftover partitions takes minutes to start.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Runtime::new() {
            let _ = rt.block_on(pavilion_kafka::delete_topics_with_prefix(
                &settings(),
                &self.prefix,
            ));
        }
    }
}

/// A `pavilion run` child; killed if the test ends early.
pub struct Pipeline {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Pipeline {
    pub fn sigkill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) {
        self.stop_within(Duration::from_secs(60));
    }

    /// SIGTERM, then wait up to `bound` for a clean exit; how long it took. A process that
    /// outlives the bound is killed before the test fails, so it cannot run on into the next
    /// test.
    pub fn stop_within(&mut self, bound: Duration) -> Duration {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "pipeline exited with {status}; log:\n{}",
                    self.log_tail()
                );
                return started.elapsed();
            }
            if started.elapsed() > bound {
                child.kill().ok();
                child.wait().ok();
                panic!(
                    "pipeline ignored SIGTERM for {bound:?} (killed); log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `bound` until `/readyz` on `port` answers 200 (every task running); how
    /// long it took. Fails at once if the process exits.
    pub fn wait_ready(&mut self, port: u16, bound: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let answer = http_get(port, "/readyz");
            if answer.as_ref().is_some_and(|(status, _)| *status == 200) {
                return started.elapsed();
            }
            if let Some(status) = self.child.as_mut().expect("running").try_wait().unwrap() {
                panic!(
                    "pipeline exited with {status} before it was ready; log:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < bound,
                "not ready within {bound:?}; /readyz: {answer:?}; log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
        if std::thread::panicking() {
            // The temp dir goes with the test; keep the whole log for the post-mortem.
            let kept = std::env::temp_dir().join(format!(
                "pavilion-failed-{}-{}",
                std::process::id(),
                self.log.file_name().unwrap().to_string_lossy()
            ));
            if std::fs::copy(&self.log, &kept).is_ok() {
                eprintln!("pipeline log kept at {}", kept.display());
            }
        }
    }
}

/// Sends `count` events starting at `first_seq` over `keys` keys, `per_second` at most.
pub fn produce_events(topic: &str, first_seq: u64, count: u64, keys: u64, per_second: u64) {
    let producer = PlainProducer::new(&settings()).unwrap();
    let registry = Registry::builtin();
    let started = Instant::now();
    for i in 0..count {
        let seq = first_seq + i;
        let key = format!("k{}", seq % keys);
        let event = DemoEvent {
            key: key.clone(),
            seq: seq as i64,
            payload: "p".repeat(32),
        };
        producer
            .send(topic, key.as_bytes(), &registry.encode(&event).unwrap())
            .unwrap();
        let due = Duration::from_secs_f64(i as f64 / per_second as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    producer.flush().unwrap();
}

/// Counts records arriving on a topic in the background.
pub struct Tally {
    pub seen: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Tally {
    pub fn start(topic: &str) -> Self {
        let seen = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = TopicReader::new(&settings(), &[topic]).unwrap();
        let (s, st) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                if reader.poll(Duration::from_millis(100)).unwrap().is_some() {
                    s.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Tally { seen, stop }
    }

    pub fn get(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    pub fn wait_for(&self, count: u64, timeout: Duration, pipelines: &[&Pipeline]) {
        let deadline = Instant::now() + timeout;
        while self.get() < count {
            if Instant::now() > deadline {
                let logs: Vec<String> = pipelines.iter().map(|p| p.log_tail()).collect();
                panic!(
                    "only {} of {count} records within {timeout:?}; logs:\n{}",
                    self.get(),
                    logs.join("\n----\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A fresh SoftHSM2 token `label` of the run's own under `dir`: the environment that reaches
/// it (`SOFTHSM2_CONF`, and the user PIN as `PAVILION_HSM_PIN`).
pub fn softhsm_token(dir: &std::path::Path, label: &str) -> Vec<(String, String)> {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\n", tokens.display()),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "1234",
        ])
        .args(["--pin", "5678"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util (scripts/infra installs softhsm2)");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    vec![
        ("SOFTHSM2_CONF".into(), conf.display().to_string()),
        ("PAVILION_HSM_PIN".into(), "5678".into()),
    ]
}

/// Runs `command` with `input` on its stdin; its output (stdout and stderr captured).
pub fn with_stdin(command: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Every committed record of a topic.
pub fn read_all(topic: &str) -> Vec<ReadRecord> {
    TopicReader::new(&settings(), &[topic])
        .unwrap()
        .read_to_end(Duration::from_secs(60))
        .unwrap()
}

/// Latest value per key of a compacted topic.
pub fn latest(topic: &str) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for r in read_all(topic) {
        let key = String::from_utf8(r.key).unwrap();
        match r.value {
            Some(v) => state.insert(key, String::from_utf8(v).unwrap()),
            None => state.remove(&key),
        };
    }
    state
}

/// How many events each key got when `total` events went round-robin over `keys` keys.
pub fn expected_per_key(total: u64, keys: u64) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for seq in 0..total {
        *m.entry(format!("k{}", seq % keys)).or_insert(0) += 1;
    }
    m
}

/// Asserts that both output topics and both stores hold exactly the fault-free result.
pub fn assert_exactly_once(t: &TestTopology, expected: &BTreeMap<String, i64>) {
    let registry = Registry::builtin();
    let total: i64 = expected.values().sum();

    let counts: Vec<KeyCount> = read_all(&t.topic("counts"))
        .into_iter()
        .map(|r| registry.decode(&r.value.unwrap()).unwrap())
        .collect();
    assert_eq!(
        counts.len() as i64,
        total,
        "counts topic must hold every event exactly once"
    );
    let unique: BTreeSet<(String, i64)> = counts.iter().map(|c| (c.key.clone(), c.seq)).collect();
    assert_eq!(unique.len() as i64, total, "duplicate (key, seq) in counts");
    let mut per_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in &counts {
        per_key.entry(c.key.clone()).or_default().push(c.count);
    }
    for (key, n) in expected {
        let mut got = per_key.remove(key).unwrap_or_default();
        got.sort_unstable();
        assert_eq!(got, (1..=*n).collect::<Vec<_>>(), "running counts of {key}");
    }

    let totals: Vec<KeyTotal> = read_all(&t.topic("totals"))
        .into_iter()
        .map(|r| registry.decode(&r.value.unwrap()).unwrap())
        .collect();
    assert_eq!(
        totals.len() as i64,
        total,
        "totals topic must hold every event exactly once"
    );
    let mut final_sum: BTreeMap<String, i64> = BTreeMap::new();
    for t in &totals {
        assert_eq!(
            t.sum,
            t.count * (t.count + 1) / 2,
            "sum after count {} of {}",
            t.count,
            t.key
        );
        let e = final_sum.entry(t.key.clone()).or_insert(0);
        *e = (*e).max(t.sum);
    }

    let want_counts: BTreeMap<String, String> = expected
        .iter()
        .map(|(k, n)| (k.clone(), n.to_string()))
        .collect();
    let want_sums: BTreeMap<String, String> = expected
        .iter()
        .map(|(k, n)| (k.clone(), (n * (n + 1) / 2).to_string()))
        .collect();
    assert_eq!(
        latest(&t.changelog("counter", "counts")),
        want_counts,
        "counter store"
    );
    assert_eq!(
        latest(&t.changelog("totals", "totals")),
        want_sums,
        "totals store"
    );
    let sums: BTreeMap<String, String> = final_sum
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    assert_eq!(sums, want_sums, "final sums on the totals topic");
}

pub fn dead_letters(t: &TestTopology) -> Vec<DeadLetter> {
    read_all(&t.topic("dlq"))
        .into_iter()
        .map(|r| Registry::builtin().decode(&r.value.unwrap()).unwrap())
        .collect()
}

/// GET over plain HTTP/1.0 from loopback; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A free loopback port.
/// The privacy scan of a run's broker side: none of `needles` (a name and bytes, compared
/// ASCII-case-insensitively) in any record of any topic with the run's prefix, any file of
/// instance `a`'s state stores, or the run's `logs` (files in its directory). First it shows it
/// can see: it must find a needle in `planted` (the provider's own source file).
pub fn privacy_scan(
    t: &TestTopology,
    needles: &[(String, Vec<u8>)],
    planted: &str,
    logs: &[&str],
    min_topics: usize,
) {
    let check = |what: &str, bytes: &[u8]| {
        for (name, needle) in needles {
            assert!(
                !bytes
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle)),
                "{name} found in {what}"
            );
        }
    };
    let source = std::fs::read(t.dir.path().join(planted)).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(planted, &source)));
    assert!(caught.is_err(), "the scan must detect what {planted} holds");
    // Every topic with the run's prefix: declared, derived changelogs and family members.
    let topics = pavilion_kafka::topics_with_prefix(&settings(), &t.prefix).unwrap();
    assert!(topics.len() >= min_topics, "scanned topics: {topics:?}");
    let mut records = 0;
    for topic in &topics {
        for r in read_all(topic) {
            records += 1;
            check(&format!("topic {topic} key"), &r.key);
            if let Some(v) = &r.value {
                check(&format!("topic {topic} value"), v);
            }
        }
    }
    assert!(records > 20, "the scan read the run's records ({records})");
    let mut files = Vec::new();
    files_under(&t.state_dir("a"), &mut files);
    assert!(files
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "sst" || e == "log")));
    for f in &files {
        check(
            &format!("state file {}", f.display()),
            &std::fs::read(f).unwrap(),
        );
    }
    for log in logs {
        let text = std::fs::read(t.dir.path().join(log)).unwrap();
        assert!(!text.is_empty(), "{log} is empty");
        check(&format!("log {log}"), &text);
    }
}

/// The binary on the run's topology, in its folder, with a provider's passphrase.
pub fn provider_command(t: &TestTopology, passphrase: &str, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .arg("--topology")
        .arg(&t.path)
        .current_dir(t.dir.path())
        .env("PAVILION_BOOTSTRAP", bootstrap())
        .env("PAVILION_PROVIDER_PASSPHRASE", passphrase);
    command
}

/// [`provider_command`], which must succeed; its stdout. Every output is appended to the
/// run's `cli.log`, which the privacy scan reads.
pub fn provider_cli_ok(t: &TestTopology, passphrase: &str, args: &[&str]) -> String {
    logged_ok(t, provider_command(t, passphrase, args), args)
}

/// Runs `command` (the binary with `args`), which must succeed; its stdout. Its output is
/// appended to the run's `cli.log`, which the privacy scans read.
pub fn logged_ok(t: &TestTopology, mut command: Command, args: &[&str]) -> String {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let transcript = t.dir.path().join("cli.log");
    let mut text = std::fs::read_to_string(&transcript).unwrap_or_default();
    text += &format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    std::fs::write(&transcript, text).unwrap();
    assert!(out.status.success(), "pavilion {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A provider's service started by [`spawn_service`]; killed when dropped.
pub struct Service {
    child: Child,
}

impl Service {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts [`provider_command`] `args` with its output appended to `log` in the run's folder,
/// and waits up to 60 s until `ready`.
pub fn spawn_service(
    t: &TestTopology,
    passphrase: &str,
    args: &[&str],
    log: &str,
    ready: impl Fn() -> bool,
) -> Service {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(t.dir.path().join(log))
        .unwrap();
    let child = provider_command(t, passphrase, args)
        .env("PAVILION_LOG", "info")
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{args:?} did not start: {}",
            std::fs::read_to_string(t.dir.path().join(log)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Service { child }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sum of a metric family's samples in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// --- The request path: signed requests as an RP sends them. ---

#[derive(serde::Deserialize)]
pub struct KeyFile {
    secret_key: String,
}

pub fn load_key(path: &std::path::Path) -> SigningKey {
    let file: KeyFile = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    SigningKey::from_bytes(&hex::decode(file.secret_key).unwrap().try_into().unwrap())
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn signed(tenant: &str, id: &str, key_id: &str, key: &SigningKey) -> VerificationRequest {
    let mut r = VerificationRequest {
        request_id: id.into(),
        tenant_id: tenant.into(),
        key_id: key_id.into(),
        signature: Vec::new(),
        signed_at: now_ms(),
        nonce: format!("n-{id}"),
        created_at: now_ms(),
        claims: vec![ClaimRequest {
            name: "age_over".into(),
            params: BTreeMap::from([("threshold".into(), "18".into())]),
        }],
        purpose: "onboarding".into(),
        subject_jurisdiction: "eu".into(),
        consent_ref: None,
        subject_tokens: vec![SubjectToken {
            provider_id: "registry".into(),
            token: vec![3; 64],
        }],
        response_format: None,
    };
    r.signature = key.sign(&r.signing_bytes()).to_bytes().to_vec();
    r
}

pub struct Rp {
    pub producer: PlainProducer,
    pub topic: String,
}

impl Rp {
    pub fn send(&self, r: &VerificationRequest) {
        let bytes = Registry::builtin().encode(r).unwrap();
        self.producer
            .send(&self.topic, r.tenant_id.as_bytes(), &bytes)
            .unwrap();
    }

    pub fn send_raw(&self, key: &str, bytes: &[u8]) {
        self.producer
            .send(&self.topic, key.as_bytes(), bytes)
            .unwrap();
    }

    pub fn flush(&self) {
        self.producer.flush().unwrap();
    }
}

/// Waits until a stage has counted `event` for `label` `n` times (its own counter on /metrics).
pub fn await_stage_event(port: u16, event: &str, label: &str, n: f64, pipeline: &Pipeline) {
    let needle = format!("event=\"{event}\",label=\"{label}\"");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = http_get(port, "/metrics")
            .map(|(_, body)| {
                body.lines()
                    .filter(|l| l.contains(&needle))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(0.0);
        if seen >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{event} for {label}: {seen} of {n}\n{}",
            pipeline.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Tenancy and policy on topics unique to `prefix`: two tasks, since tenancy re-keys (tenant
/// id → request id) and cannot be fused with what follows it.
pub fn request_path_topology(prefix: &str) -> String {
    path_topology(prefix, &["age_over"], "", "", "")
}

/// The whole request path on topics unique to `prefix`, as in topology.yaml: tenancy
/// (allowing `claims`), then policy, psi and, with `signing`, the signing stage and its
/// per-tenant decision topics fused, keyed by request id.
pub fn full_path_topology(prefix: &str, claims: &[&str], signing: bool) -> String {
    let mut topics = format!(
        "  {prefix}.matches: {{ schema: pavilion.MatchResult }}
  {prefix}.jobs: {{ schema: pavilion.PsiJobChunk }}
  {prefix}.results: {{ schema: pavilion.PsiJobResult }}
  {prefix}.providers: {{ schema: pavilion.Provider, cleanup: compact }}
  {prefix}.sets.{{provider}}: {{ schema: pavilion.ProviderSetEntry, cleanup: compact, partitions: 2 }}
  {prefix}.evidence.requests.{{provider}}: {{ schema: pavilion.EvidenceRequest, partitions: 2 }}
  {prefix}.evidence.responses: {{ schema: pavilion.EvidenceResponse }}
  {prefix}.status-lists.{{provider}}: {{ schema: pavilion.StatusListPublished, cleanup: compact, partitions: 1 }}
"
    );
    let mut stages = format!(
        "  psi:
    kind: psi
    inputs: [{prefix}.outcomes, {prefix}.jobs, {prefix}.evidence.responses]
    outputs:
      matches: {prefix}.matches
      results: {prefix}.results
      proof_requests: '{prefix}.evidence.requests.{{provider}}'
    stores: [jobs, pending]
    globals:
      providers: {prefix}.providers
      sets: '{prefix}.sets.{{provider}}'
      status_lists: '{prefix}.status-lists.{{provider}}'
    punctuate_every: 50ms
    config:
      predicates:
        age_over: {{ circuit: date_le_cutoff, attribute: birthdate }}
        income_over: {{ circuit: int_ge_threshold, attribute: income }}
      proof_deadline: 15s
      proof_retry_after: 1s
      breaker_failures: 3
      breaker_cooldown: 10s
"
    );
    let mut chain = "policy, psi".to_owned();
    if signing {
        topics += &format!(
            "  {prefix}.decisions.{{tenant}}: {{ schema: pavilion.Decision }}
  {prefix}.issued: {{ schema: pavilion.DecisionIssued }}
"
        );
        stages += &format!(
            "  signing:
    kind: signing
    inputs: [{prefix}.matches, {prefix}.rejected]
    outputs: {{ decisions: '{prefix}.decisions.{{tenant}}', issued: {prefix}.issued }}
    stores: [decisions]
"
        );
        chain += ", signing";
    }
    let fuse = format!("fuse:\n  - [{chain}]\n");
    path_topology(prefix, claims, &topics, &stages, &fuse)
}

/// Tenancy (allowing `claims`) and policy on topics unique to `prefix`, then `topics`,
/// `stages` and `fuse` as given.
fn path_topology(prefix: &str, claims: &[&str], topics: &str, stages: &str, fuse: &str) -> String {
    let claims = claims.join(", ");
    format!(
        "application: {prefix}
dlq: {prefix}.dlq
defaults: {{ partitions: 3 }}
topics:
  {prefix}.dlq: {{ schema: pavilion.DeadLetter }}
  {prefix}.requests: {{ schema: pavilion.VerificationRequest }}
  {prefix}.routed: {{ schema: pavilion.VerificationRequest }}
  {prefix}.tenants: {{ schema: pavilion.Tenant, cleanup: compact }}
  {prefix}.accepted: {{ schema: pavilion.AcceptedRequest }}
  {prefix}.rejected: {{ schema: pavilion.RequestRejected }}
  {prefix}.policies: {{ schema: pavilion.PolicyDocument, retention: forever }}
  {prefix}.outcomes: {{ schema: pavilion.PolicyOutcome }}
{topics}stages:
  tenancy:
    kind: tenancy
    inputs: [{prefix}.requests, {prefix}.routed, {prefix}.tenants, {prefix}.policies]
    outputs: {{ accepted: {prefix}.accepted, rejected: {prefix}.rejected, routed: {prefix}.routed }}
    stores: [tenants, seen, limits, policies]
    punctuate_every: 5s
    config: {{ allowed_claims: [{claims}] }}
  policy:
    kind: policy
    inputs: [{prefix}.accepted]
    outputs: {{ outcomes: {prefix}.outcomes }}
    globals: {{ documents: {prefix}.policies }}
{stages}{fuse}"
    )
}

/// `yaml` with an audit stage (its own task) reading `inputs` (names under `prefix`), and the
/// log, checkpoint and erasure topics, plus `extra_topics` (e.g. tampered copies of the log).
pub fn with_audit(prefix: &str, yaml: String, inputs: &[&str], extra_topics: &[&str]) -> String {
    let mut topics = format!(
        "  {prefix}.log: {{ schema: pavilion.AuditEntry }}
  {prefix}.checkpoints: {{ schema: pavilion.Checkpoint }}
  {prefix}.erasures: {{ schema: pavilion.SubjectErasure }}
  {prefix}.anchors: {{ schema: pavilion.AnchorReceipt }}
"
    );
    for t in extra_topics {
        // No schema: the CLI finds the real log by its schema.
        topics += &format!("  {prefix}.{t}: {{}}\n");
    }
    let inputs: Vec<String> = inputs.iter().map(|i| format!("{prefix}.{i}")).collect();
    let stage = format!(
        "  audit:
    kind: audit
    inputs: [{}]
    outputs: {{ log: {prefix}.log, checkpoints: {prefix}.checkpoints }}
    stores: [log]
    punctuate_every: 2s
    config: {{ origin: test/audit, checkpoint_every: 25 }}
",
        inputs.join(", ")
    );
    let yaml = yaml.replacen("\nstages:\n", &format!("\n{topics}stages:\n"), 1);
    match yaml.find("\nfuse:") {
        Some(at) => format!("{}\n{stage}{}", &yaml[..at], &yaml[at..]),
        None => format!("{yaml}{stage}"),
    }
}

/// `yaml` (a full path under `prefix`) with an analytics stage, its own task, and its topics
/// (`counts`, `queries`, `releases`, `releases.{tenant}`); `config` lines go under its
/// `config:`, indented by six spaces.
pub fn with_analytics(prefix: &str, yaml: String, config: &str) -> String {
    let topics = format!(
        "  {prefix}.counts: {{ schema: pavilion.AnalyticsCounts }}
  {prefix}.queries: {{ schema: pavilion.AnalyticsQuery }}
  {prefix}.releases: {{ schema: pavilion.AnalyticsRelease }}
  {prefix}.releases.{{tenant}}: {{ schema: pavilion.AnalyticsRelease }}
"
    );
    let stage = format!(
        "  analytics:
    kind: analytics
    inputs: [{prefix}.rejected, {prefix}.matches, {prefix}.tenants, {prefix}.counts, {prefix}.queries, {prefix}.releases]
    outputs: {{ counts: {prefix}.counts, releases: {prefix}.releases, tenant_releases: '{prefix}.releases.{{tenant}}' }}
    stores: [partials, totals, budgets, ledger, released]
    punctuate_every: 500ms
    config:
      budget_period: 30d
{config}"
    );
    let yaml = yaml.replacen("\nstages:\n", &format!("\n{topics}stages:\n"), 1);
    match yaml.find("\nfuse:") {
        Some(at) => format!("{}\n{stage}{}", &yaml[..at], &yaml[at..]),
        None => format!("{yaml}{stage}"),
    }
}

/// The Go verifier of `tests/interop/tlog-go` (transparency-dev/merkle, x/mod/sumdb/note),
/// built into `dir`.
pub fn tlog_verifier(dir: &std::path::Path) -> PathBuf {
    let out = dir.join("tlogverify");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/tlog-go"
        ))
        .env("GOFLAGS", "-mod=readonly")
        .status()
        .expect("go (the Go toolchain) builds the independent RFC 6962 verifier");
    assert!(status.success(), "go build of tests/interop/tlog-go failed");
    out
}

/// The stdout of a command that must have succeeded (else its output is the failure).
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// --- The request path with its audit task, its keys and a provider, and steady traffic. ---

/// Every event topic of the request path the audit stage logs (names under the prefix).
pub const AUDIT_INPUTS: &[&str] = &[
    "requests", "accepted", "rejected", "outcomes", "matches", "issued", "tenants", "policies",
    "erasures",
];

/// What a signing stage and an audit stage need: the decision-signing key ring (made by
/// `pavilion keys generate`) and the per-subject audit keys, both in the run's directory.
pub fn audit_env(t: &TestTopology) -> Vec<(String, String)> {
    let dir = t.dir.path();
    vec![
        (
            "PAVILION_SIGNING_KEYS".into(),
            dir.join("keys").display().to_string(),
        ),
        ("PAVILION_SIGNING_PASSPHRASE".into(), "signing".into()),
        (
            "PAVILION_SUBJECT_KEYS".into(),
            dir.join("subjects").display().to_string(),
        ),
        ("PAVILION_SUBJECT_KEYS_PASSPHRASE".into(), "subjects".into()),
    ]
}

/// Runs the binary to completion with this topology (as $PAVILION_TOPOLOGY, which every
/// subcommand reads, `keys` included) and `env`.
pub fn cli_env(t: &TestTopology, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("PAVILION_TOPOLOGY", &t.path)
        .env("PAVILION_BOOTSTRAP", bootstrap())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

impl TestTopology {
    /// Onboards provider `name` (region eu, answering `claims`, comma-separated) and loads
    /// `members_csv` (an `email` and a `claims` column) as its set, as its operator would:
    /// the registry and the set topic then hold records that psi's global stores restore.
    /// Its sealed key file stays in the run's directory. Returns the load's report.
    pub fn provider_with_set(&self, name: &str, claims: &str, members_csv: &str) -> String {
        let dir = self.dir.path();
        let key_file = dir.join(format!("{name}.provider-key"));
        let csv = dir.join(format!("{name}-members.csv"));
        std::fs::write(&csv, members_csv).unwrap();
        let env = [(
            "PAVILION_PROVIDER_PASSPHRASE".to_owned(),
            "provider passphrase".to_owned(),
        )];
        let key_file = key_file.to_str().unwrap();
        ok(cli_env(
            self,
            &env,
            &[
                "provider",
                "onboard",
                name,
                "--region",
                "eu",
                "--claims",
                claims,
                "--key-file",
                key_file,
            ],
        ));
        ok(cli_env(
            self,
            &env,
            &[
                "provider",
                "load",
                name,
                "--from",
                csv.to_str().unwrap(),
                "--claims-column",
                "claims",
                "--key-file",
                key_file,
            ],
        ))
    }
}

/// Signed requests of one tenant, sent from a thread of their own at a steady rate (ids
/// `<prefix>0000`, `<prefix>0001`, …) until stopped or `limit` are sent: a relying party's
/// traffic, which keeps coming while the pipeline or the broker restarts.
pub struct Traffic {
    sent: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Traffic {
    pub fn start(
        rp: Rp,
        tenant: &str,
        key_id: &str,
        key: &SigningKey,
        prefix: &str,
        per_second: u64,
        limit: u64,
    ) -> Self {
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tenant, key_id, key, prefix) = (
            tenant.to_owned(),
            key_id.to_owned(),
            key.clone(),
            prefix.to_owned(),
        );
        let (counter, stopped) = (sent.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut ids = Vec::new();
            for i in 0..limit {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("{prefix}{i:04}");
                rp.send(&signed(&tenant, &id, &key_id, &key));
                ids.push(id);
                counter.fetch_add(1, Ordering::SeqCst);
                let due = Duration::from_secs_f64((i + 1) as f64 / per_second as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            // The producer keeps unacknowledged records queued while the broker is away; a
            // flush gives up after 30 s, which a broker restart can outlast.
            let mut attempts = 0;
            while let Err(e) = rp.producer.flush() {
                attempts += 1;
                assert!(
                    attempts < 4,
                    "the relying party's producer (the test's client, not the pipeline) could \
                     not deliver its requests: {e:#}"
                );
            }
            ids
        });
        Traffic {
            sent,
            stop,
            handle: Some(handle),
        }
    }

    /// Requests queued so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests are queued (or all of them are).
    pub fn wait_sent(&self, n: u64) {
        while self.sent() < n && !self.handle.as_ref().unwrap().is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops sending; the ids of every request sent, once the broker acknowledged them all.
    pub fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Sends up to the limit; the ids, as [`Traffic::finish`].
    pub fn join(mut self) -> Vec<String> {
        self.handle
            .take()
            .unwrap()
            .join()
            .expect("the traffic thread failed")
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What became of a set of requests on their tenant's decision topic, read_committed.
#[derive(Debug, PartialEq, Eq)]
pub struct DecisionCount {
    pub requests: usize,
    pub decisions: usize,
    /// Requests without a decision.
    pub lost: usize,
    /// Requests with more than one.
    pub duplicated: usize,
}

impl std::fmt::Display for DecisionCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests, {} decisions, {} lost, {} duplicated",
            self.requests, self.decisions, self.lost, self.duplicated
        )
    }
}

/// How many decisions each request id has on a decision topic.
pub fn decisions_by_request(topic: &str) -> BTreeMap<String, usize> {
    let registry = Registry::builtin();
    let mut by_id = BTreeMap::new();
    for r in read_all(topic) {
        let d: Decision = registry.decode(&r.value.unwrap()).unwrap();
        *by_id.entry(d.request_id).or_insert(0) += 1;
    }
    by_id
}

/// Waits up to `bound` until each of `ids` has a decision on `topic`, then counts them.
pub fn await_decisions(topic: &str, ids: &[String], bound: Duration) -> DecisionCount {
    let deadline = Instant::now() + bound;
    let count = |by_id: &BTreeMap<String, usize>| DecisionCount {
        requests: ids.len(),
        decisions: ids.iter().filter_map(|id| by_id.get(id)).sum(),
        lost: ids.iter().filter(|id| !by_id.contains_key(*id)).count(),
        duplicated: ids
            .iter()
            .filter(|id| by_id.get(*id).is_some_and(|n| *n > 1))
            .count(),
    };
    loop {
        let seen = count(&decisions_by_request(topic));
        if seen.lost == 0 || Instant::now() > deadline {
            // A duplicate is the same request processed twice, which happens before or
            // beside the first decision: a last look a little later catches it too.
            std::thread::sleep(Duration::from_secs(2));
            return count(&decisions_by_request(topic));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The `scripts/infra` that started the broker the tests talk to.
pub struct Infra {
    script: PathBuf,
}

impl Infra {
    /// The script, if it manages the broker of `PAVILION_BOOTSTRAP`; otherwise why not: a
    /// broker it did not start (Docker, a shared cluster) is never restarted by a test.
    pub fn managing_the_broker() -> Result<Infra, String> {
        let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/infra"));
        let run = |arg: &str| {
            Command::new(&script)
                .arg(arg)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .map_err(|e| format!("running scripts/infra {arg}: {e}"))
        };
        let env = run("env")?;
        let theirs = env
            .lines()
            .find_map(|l| l.strip_prefix("export PAVILION_BOOTSTRAP="))
            .unwrap_or_default();
        if theirs != bootstrap() {
            return Err(format!(
                "PAVILION_BOOTSTRAP={} is not scripts/infra's broker ({theirs})",
                bootstrap()
            ));
        }
        if !run("status")?
            .lines()
            .any(|l| l.starts_with("[infra] kafka: running"))
        {
            return Err(format!(
                "scripts/infra's broker is not running; the one at {} is someone else's",
                bootstrap()
            ));
        }
        Ok(Infra { script })
    }

    /// `scripts/infra restart kafka`: stops the broker and waits until it serves topics
    /// again; how long that took.
    pub fn restart_kafka(&self) -> Duration {
        let started = Instant::now();
        let out = Command::new(&self.script)
            .args(["restart", "kafka"])
            .output()
            .unwrap();
        ok(out);
        started.elapsed()
    }
}

/// The signing path's setup: decision-signing keys in `env`'s ring, tenant `acme` active
/// with key `k1`, and [`AGE_OVER_POLICY`] pushed and activated. Returns acme's key.
pub fn acme_with_age_policy(t: &TestTopology, env: &[(String, String)]) -> SigningKey {
    ok(cli_env(t, env, &["keys", "generate"]));
    let key = t.active_tenant("acme", "k1");
    let policy = t.dir.path().join("acme.yaml");
    std::fs::write(&policy, AGE_OVER_POLICY).unwrap();
    t.cli_ok(&["policy", "push", policy.to_str().unwrap(), "--activate"]);
    key
}

/// Tenant `acme`'s policy: adults may be verified, by provider `registry` (region eu), whose
/// answers come as JWTs.
pub const AGE_OVER_POLICY: &str = r#"policy: main
tenant: acme
rules: |
  @id("adults")
  permit(principal, action == Action::"verify", resource == Claim::"age_over") when { context.threshold >= 18 };
plan:
  age_over:
    providers: [{ id: registry, region: eu }]
    evidence: [oprf_match]
    disclose: []
response_format: jwt
"#;
