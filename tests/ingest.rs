//! The ingest topic as outsiders reach it (issue 14 §2–4): records naming any tenant, any
//! request id, any signature, produced by other client libraries with their default
//! partitioners. Nothing that fails authentication is signed or uses up a request id, no
//! outsider's record creates a topic, no request is lost to a partitioner, and every drop is
//! counted on /metrics with its reason.

mod util;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer as _, SigningKey};
use pavilion_kafka::PlainProducer;
use pavilion_runtime::partitioner::partition_for;
use pavilion_schemas::{Decision, Registry, VerificationRequest};
use util::*;

/// `full_path_topology`'s partition count: where "acme" belongs is `partition_for(acme, 3)`.
const PARTITIONS: i32 = 3;

/// The fused request path with signing on topics of its own, tenant `acme` and its policy.
struct Ingest {
    t: TestTopology,
    key: SigningKey,
    port: u16,
    pipeline: Pipeline,
}

impl Ingest {
    fn start(name: &str) -> Self {
        let t = TestTopology::with_yaml(name, |p| full_path_topology(p, &["age_over"], true));
        let env = audit_env(&t);
        let key = acme_with_age_policy(&t, &env);
        let port = free_port();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let pipeline = t.spawn_with("a", Some(port), &env);
        await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);
        Ingest {
            t,
            key,
            port,
            pipeline,
        }
    }

    /// acme's decisions by request id.
    fn decisions(&self) -> BTreeMap<String, Vec<Decision>> {
        let topic = self.t.topic("decisions.acme");
        let mut by_id: BTreeMap<String, Vec<Decision>> = BTreeMap::new();
        if !pavilion_kafka::topics_with_prefix(&settings(), &topic)
            .unwrap()
            .contains(&topic)
        {
            return by_id;
        }
        for r in read_all(&topic) {
            let d: Decision = Registry::builtin().decode(&r.value.unwrap()).unwrap();
            by_id.entry(d.request_id.clone()).or_default().push(d);
        }
        by_id
    }

    /// Waits until `n` request ids have a decision.
    fn await_decisions(&self, n: usize) -> BTreeMap<String, Vec<Decision>> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let decisions = self.decisions();
            if decisions.len() >= n {
                return decisions;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} decisions; log:\n{}",
                decisions.len(),
                self.pipeline.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The sum of tenancy's counter `event` over its labels, from /metrics.
    fn counted(&self, event: &str) -> f64 {
        let needle = format!("event=\"{event}\"");
        http_get(self.port, "/metrics")
            .expect("metrics")
            .1
            .lines()
            .filter(|l| l.contains("pavilion_stage_events_total") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

fn resign(mut r: VerificationRequest, key: &SigningKey) -> VerificationRequest {
    r.signature = key.sign(&r.signing_bytes()).to_bytes().to_vec();
    r
}

/// One way to spoil a request.
type Change = fn(&mut VerificationRequest);

/// Requests under made-up tenant ids, one for each way a request can be refused, each signed
/// by a key the attacker holds: (key, request). All must be dropped unauthenticated.
fn made_up(attacker: &SigningKey) -> Vec<(String, VerificationRequest)> {
    let mut out = Vec::new();
    for n in 0..3 {
        let tenant = |what: &str| format!("ghost-{what}-{n}");
        let base = |what: &str| signed(&tenant(what), &format!("x-{what}-{n}"), "k1", attacker);
        let variants: [(&str, Change); 12] = [
            ("valid", |_| {}),
            ("zero-signature", |r| r.signature = vec![0; 64]),
            ("unknown-key", |r| r.key_id = "k9".into()),
            ("nul", |r| r.purpose = "a\0b".into()),
            ("long-field", |r| r.purpose = "x".repeat(300)),
            ("too-large", |r| r.purpose = "x".repeat(9_000)),
            ("many-claims", |r| r.claims = vec![r.claims[0].clone(); 17]),
            ("no-claims", |r| r.claims.clear()),
            ("not-served", |r| r.claims[0].name = "credit_score".into()),
            ("skewed", |r| r.created_at -= 3_600_000),
            ("no-nonce", |r| r.nonce.clear()),
            ("no-id", |r| r.request_id.clear()),
        ];
        for (what, change) in variants {
            let mut r = base(what);
            change(&mut r);
            let r = if what == "zero-signature" {
                r
            } else {
                resign(r, attacker)
            };
            out.push((r.tenant_id.clone(), r));
        }
        // Keyed by something else than its tenant, and a replay: the same verdict.
        let r = base("rekeyed");
        out.push(("not-a-tenant".into(), r));
        let r = base("replayed");
        out.push((r.tenant_id.clone(), r.clone()));
        out.push((r.tenant_id.clone(), r));
    }
    out
}

#[test]
fn forged_records_get_no_decision_use_up_no_id_and_create_no_topic() {
    let _serial = serial();
    let path = Ingest::start("ingest-forged");
    let rp = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: path.t.topic("requests"),
    };
    let mallory = SigningKey::from_bytes(&[9; 32]);
    // Forgeries first, each naming a victim's request id, so each would be decided first.
    let victims = 48;
    for i in 0..victims {
        rp.send(&signed("acme", &format!("v{i:02}"), "k1", &mallory));
    }
    let hostile = made_up(&mallory);
    for (key, r) in &hostile {
        rp.send_raw(key, &Registry::builtin().encode(r).unwrap());
    }
    rp.flush();
    for i in 0..victims {
        rp.send(&signed("acme", &format!("v{i:02}"), "k1", &path.key));
    }
    rp.flush();

    let decisions = path.await_decisions(victims);
    let dropped = victims + hostile.len();
    let dead = Tally::start(&path.t.topic("dlq"));
    dead.wait_for(dropped as u64, Duration::from_secs(60), &[&path.pipeline]);
    let decisions_topics =
        pavilion_kafka::topics_with_prefix(&settings(), &path.t.topic("decisions.")).unwrap();
    let counted: BTreeMap<&str, f64> = [
        "dropped.bad_signature",
        "dropped.unknown_tenant",
        "dropped.oversize",
        "routed",
    ]
    .into_iter()
    .map(|event| (event, path.counted(event)))
    .collect();
    let mut pipeline = path.pipeline;
    pipeline.stop();

    assert_eq!(decisions.len(), victims, "{:?}", decisions.keys());
    for (id, ds) in &decisions {
        assert_eq!(ds.len(), 1, "{id}: {} decisions", ds.len());
        assert!(
            ds[0].rejection.is_none(),
            "{id} was decided as {:?}",
            ds[0].rejection
        );
    }
    assert_eq!(
        decisions_topics,
        vec![path.t.topic("decisions.acme")],
        "only the real tenant has a decision topic"
    );
    let dead = dead_letters(&path.t);
    assert_eq!(dead.len(), dropped);
    assert!(dead
        .iter()
        .all(|d| format!("{:?}", d.reason) == "Unauthenticated"));
    // Every made-up tenant is unknown, except that a request too large to verify is dropped
    // before anyone looks; the key mismatches were routed first.
    assert_eq!(
        counted,
        BTreeMap::from([
            ("dropped.bad_signature", victims as f64),
            ("dropped.unknown_tenant", (hostile.len() - 3) as f64),
            ("dropped.oversize", 3.0),
            ("routed", 3.0),
        ])
    );
    println!(
        "forged: {victims} victims decided once each, {} made-up records dropped, no new topic",
        hostile.len()
    );
}

/// One client library's producer with its defaults: `keyed` by tenant id or without a key.
fn produce_with(
    library: &str,
    keyed: bool,
    topic: &str,
    requests: &[VerificationRequest],
) -> BTreeMap<i32, usize> {
    let python = std::env::var("PAVILION_PYTHON").expect(
        "PAVILION_PYTHON must name a Python with confluent-kafka and kafka-python (scripts/test sets it up)",
    );
    let mut child = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/producers/produce.py"
        ))
        .args([
            "--library",
            library,
            "--bootstrap",
            &bootstrap(),
            "--topic",
            topic,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for r in requests {
        let key = if keyed { r.tenant_id.as_str() } else { "-" };
        let value = hex::encode(Registry::builtin().encode(r).unwrap());
        writeln!(stdin, "{key}\t{value}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{library}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let placed: BTreeMap<String, usize> = serde_json::from_slice(&out.stdout).unwrap();
    placed
        .into_iter()
        .map(|(p, n)| (p.parse().unwrap(), n))
        .collect()
}

#[test]
fn producers_of_other_client_libraries_with_their_defaults_lose_nothing() {
    let _serial = serial();
    let path = Ingest::start("ingest-clients");
    let home = partition_for(b"acme", PARTITIONS);
    let topic = path.t.topic("requests");
    let mut sent = 0;
    let mut routed = 0;
    for (library, keyed) in [
        ("confluent-kafka", true),
        ("confluent-kafka", false),
        ("kafka-python", true),
        ("kafka-python", false),
    ] {
        let requests: Vec<VerificationRequest> = (0..30)
            .map(|i| {
                signed(
                    "acme",
                    &format!("{library}-{keyed}-{i:02}"),
                    "k1",
                    &path.key,
                )
            })
            .collect();
        let placed = produce_with(library, keyed, &topic, &requests);
        // A request is processed where it lands only when keyed by its tenant and on the
        // tenant's partition; any other is routed there first.
        let away: usize = placed
            .iter()
            .filter(|(p, _)| !keyed || **p != home)
            .map(|(_, n)| n)
            .sum();
        println!(
            "{library} (keyed: {keyed}): partitions {placed:?}, {away} away from acme's ({home})"
        );
        sent += requests.len();
        routed += away;
    }
    let decisions = path.await_decisions(sent);
    let counted_routed = path.counted("routed");
    let mut pipeline = path.pipeline;
    pipeline.stop();

    assert_eq!(decisions.len(), sent);
    assert!(decisions
        .values()
        .all(|ds| ds.len() == 1 && ds[0].rejection.is_none()));
    assert!(routed > 0, "no producer put a request away from its tenant");
    assert_eq!(counted_routed, routed as f64);
    assert!(dead_letters(&path.t).is_empty());
}
