//! Tenancy and policy together on the real broker, on one and two stream threads: a policy
//! activated and then rolled back mid-stream, a tenant suspended — every outcome carries the
//! policy revision tenancy stamped on its accepted request (the one active when tenancy read
//! it), and every rejection its reason. Tenancy is keyed by tenant; from the accepted topic
//! on, one tenant's requests spread over every partition.

mod util;

use std::collections::BTreeMap;
use std::time::Duration;

use pavilion_kafka::PlainProducer;
use pavilion_schemas::{AcceptedRequest, PolicyEffect, PolicyOutcome, Registry, RequestRejected};
use util::*;

const V1: &str = r#"policy: main
tenant: acme
rules: |
  @id("adults")
  permit(principal, action == Action::"verify", resource == Claim::"age_over") when { context.threshold >= 18 };
plan:
  age_over:
    providers: [{ id: registry-eu, region: eu }]
    evidence: [zk_predicate]
    disclose: [age_over]
"#;

fn policy_changes_and_suspension(threads: usize) {
    let _serial = serial();
    let t =
        TestTopology::with_yaml(&format!("path-{threads}"), request_path_topology).threads(threads);
    let dir = t.dir.path();
    let key = t.active_tenant("acme", "k1");
    std::fs::write(dir.join("v1.yaml"), V1).unwrap();
    let v2 = V1.replace(
        "plan:",
        "  @id(\"no-marketing\")\n  forbid(principal, action, resource) when { context.purpose == \"marketing\" };\nplan:",
    );
    std::fs::write(dir.join("v2.yaml"), v2).unwrap();
    let check = std::process::Command::new(BIN)
        .args(["policy", "check"])
        .arg(dir.join("v2.yaml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    t.cli_ok(&[
        "policy",
        "push",
        dir.join("v1.yaml").to_str().unwrap(),
        "--activate",
    ]);
    t.cli_ok(&["policy", "push", dir.join("v2.yaml").to_str().unwrap()]);

    let port = free_port();
    let mut pipeline = t.spawn("a", Some(port));
    await_stage_event(port, "tenant.updated", "acme", 2.0, &pipeline);
    await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);
    let rp = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: t.topic("requests"),
    };
    let outcomes = Tally::start(&t.topic("outcomes"));
    let send = |phase: &str, n: usize| {
        for i in 0..n {
            let mut r = signed("acme", &format!("{phase}{i}"), "k1", &key);
            r.purpose = "marketing".into();
            r.signature = ed25519_dalek::Signer::sign(&key, &r.signing_bytes())
                .to_bytes()
                .to_vec();
            rp.send(&r);
        }
        rp.flush();
    };

    send("one", 20);
    outcomes.wait_for(20, Duration::from_secs(60), &[&pipeline]);
    t.cli_ok(&[
        "policy",
        "activate",
        "--tenant",
        "acme",
        "--policy",
        "main",
        "--version",
        "2",
    ]);
    await_stage_event(port, "policy.activated", "acme", 2.0, &pipeline);
    send("two", 20);
    outcomes.wait_for(40, Duration::from_secs(60), &[&pipeline]);
    t.cli_ok(&[
        "policy", "rollback", "--tenant", "acme", "--policy", "main", "--to", "1",
    ]);
    await_stage_event(port, "policy.activated", "acme", 3.0, &pipeline);
    send("back", 20);
    outcomes.wait_for(60, Duration::from_secs(60), &[&pipeline]);
    t.cli_ok(&["tenant", "suspend", "acme"]);
    await_stage_event(port, "tenant.updated", "acme", 3.0, &pipeline);
    send("suspended", 10);
    let rejected = Tally::start(&t.topic("rejected"));
    rejected.wait_for(10, Duration::from_secs(60), &[&pipeline]);
    pipeline.stop();

    let registry = Registry::builtin();
    // The rule that makes outcomes a function of the log: each is evaluated under the
    // revision its accepted record names, whenever policy reads it.
    let mut stamps = BTreeMap::new();
    let mut partitions = std::collections::BTreeSet::new();
    for r in read_all(&t.topic("accepted")) {
        let a: AcceptedRequest = registry.decode(&r.value.unwrap()).unwrap();
        assert_eq!(r.key, a.request.request_id.as_bytes());
        partitions.insert(r.partition);
        stamps.insert(a.request.request_id, a.policy);
    }
    assert_eq!(
        partitions.len(),
        3,
        "one tenant's 60 accepted requests spread over every partition"
    );
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in read_all(&t.topic("outcomes")) {
        let o: PolicyOutcome = registry.decode(&r.value.unwrap()).unwrap();
        assert_eq!(
            Some(&o.policy),
            stamps.get(&o.request.request_id),
            "{}: evaluated under the revision it was accepted under",
            o.request.request_id
        );
        let phase = o
            .request
            .request_id
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_owned();
        let policy = o.policy.expect("a policy was active");
        let effect = if o.effect == PolicyEffect::Permit {
            "permit".to_owned()
        } else {
            format!("deny by {}", o.denying_rules.join(","))
        };
        *seen
            .entry(format!("{phase}: v{} {effect}", policy.version))
            .or_default() += 1;
    }
    for r in read_all(&t.topic("rejected")) {
        let r: RequestRejected = registry.decode(&r.value.unwrap()).unwrap();
        *seen
            .entry(format!("rejected: {}", r.reason.as_str()))
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [
        ("one: v1 permit", 20),
        ("two: v2 deny by no-marketing", 20),
        ("back: v1 permit", 20),
        ("rejected: tenant_suspended", 10),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(seen, expected);

    let history = t.cli_ok(&["policy", "history", "--tenant", "acme"]);
    assert_eq!(
        history.lines().count(),
        4,
        "push v1 (active), push v2, activate v2, rollback to v1:\n{history}"
    );
}

#[test]
fn tenancy_and_policy_follow_policy_changes_mid_stream() {
    policy_changes_and_suspension(1);
}

#[test]
fn tenancy_and_policy_on_two_stream_threads_follow_policy_changes_mid_stream() {
    policy_changes_and_suspension(2);
}
