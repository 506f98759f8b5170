//! The tenancy stage on the real broker, driven the way an operator and an RP would: tenants
//! managed with `pavilion tenant …`, signed requests produced by a plain producer, a tenant
//! suspended and a key rotated mid-stream, then a flood of hostile input. What fails
//! authentication is dead-lettered and counted, never answered.

mod util;

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::Signer;
use pavilion_kafka::PlainProducer;
use pavilion_schemas::{AcceptedRequest, Registry, RequestRejected};
use util::*;

#[test]
fn suspension_rotation_and_hostile_input_on_the_broker() {
    let _serial = serial();
    let t = TestTopology::with_yaml("tenancy", request_path_topology);
    let k1 = t.active_tenant("acme", "k1");

    let port = free_port();
    let mut pipeline = t.spawn("a", Some(port));
    let rp = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: t.topic("requests"),
    };
    let accepted = Tally::start(&t.topic("accepted"));
    let rejected = Tally::start(&t.topic("rejected"));
    await_stage_event(port, "tenant.updated", "acme", 2.0, &pipeline);

    for i in 0..30 {
        rp.send(&signed("acme", &format!("a{i}"), "k1", &k1));
    }
    rp.flush();
    accepted.wait_for(30, Duration::from_secs(60), &[&pipeline]);

    // Suspended mid-stream.
    t.cli_ok(&["tenant", "suspend", "acme"]);
    await_stage_event(port, "tenant.updated", "acme", 3.0, &pipeline);
    for i in 0..20 {
        rp.send(&signed("acme", &format!("s{i}"), "k1", &k1));
    }
    rp.flush();
    rejected.wait_for(20, Duration::from_secs(60), &[&pipeline]);

    // Reactivated with the key rotated: k2 added, k1 revoked.
    t.cli_ok(&["tenant", "activate", "acme"]);
    let k2 = t.add_key("acme", "k2");
    t.cli_ok(&["tenant", "revoke-key", "acme", "--key-id", "k1"]);
    await_stage_event(port, "tenant.updated", "acme", 6.0, &pipeline);
    for i in 0..10 {
        rp.send(&signed("acme", &format!("old{i}"), "k1", &k1));
        rp.send(&signed("acme", &format!("new{i}"), "k2", &k2));
    }
    rp.flush();
    accepted.wait_for(40, Duration::from_secs(60), &[&pipeline]);
    let dead = Tally::start(&t.topic("dlq"));
    dead.wait_for(10, Duration::from_secs(60), &[&pipeline]);

    // 1,000 hostile records: forged, unknown tenants, oversize, skewed, replayed, malformed.
    let registry = Registry::builtin();
    for i in 0..1_000 {
        match i % 6 {
            0 => rp.send(&signed("acme", &format!("forged{i}"), "k2", &k1)),
            1 => rp.send(&signed(&format!("ghost{i}"), &format!("g{i}"), "k2", &k2)),
            2 => {
                let mut r = signed("acme", &format!("big{i}"), "k2", &k2);
                r.purpose = "x".repeat(1_000);
                r.signature = k2.sign(&r.signing_bytes()).to_bytes().to_vec();
                rp.send(&r);
            }
            3 => {
                let mut r = signed("acme", &format!("skew{i}"), "k2", &k2);
                r.created_at -= 3_600_000;
                r.signature = k2.sign(&r.signing_bytes()).to_bytes().to_vec();
                rp.send(&r);
            }
            4 => rp.send(&signed("acme", "new0", "k2", &k2)),
            _ => {
                let mut bytes = registry
                    .encode(&signed("acme", &format!("cut{i}"), "k2", &k2))
                    .unwrap();
                bytes.truncate(bytes.len() - 1 - i % 40);
                rp.send_raw("acme", &bytes);
            }
        }
    }
    rp.flush();
    rejected.wait_for(20 + 500, Duration::from_secs(120), &[&pipeline]);
    dead.wait_for(10 + 500, Duration::from_secs(60), &[&pipeline]);
    let metrics = http_get(port, "/metrics").expect("metrics").1;
    for (event, label, n) in [
        ("dropped.revoked_key", "acme", 10.0),
        ("dropped.bad_signature", "acme", 167.0),
        ("dropped.unknown_tenant", "", 167.0),
    ] {
        let needle = format!("event=\"{event}\",label=\"{label}\"");
        let counted: f64 = metrics
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(counted, n, "{event} on /metrics");
    }
    pipeline.stop();

    let accepted: Vec<String> = read_all(&t.topic("accepted"))
        .into_iter()
        .map(|r| {
            registry
                .decode::<AcceptedRequest>(&r.value.unwrap())
                .unwrap()
                .request
                .request_id
        })
        .collect();
    let mut expected: Vec<String> = (0..30)
        .map(|i| format!("a{i}"))
        .chain((0..10).map(|i| format!("new{i}")))
        .collect();
    let mut got = accepted.clone();
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "exactly the legitimate requests are accepted, once"
    );

    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in read_all(&t.topic("rejected")) {
        let r: RequestRejected = registry.decode(&r.value.unwrap()).unwrap();
        let phase = r.request_id.trim_end_matches(|c: char| c.is_ascii_digit());
        *reasons
            .entry(format!("{phase}:{}", r.reason.as_str()))
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [
        ("s:tenant_suspended", 20),
        ("big:oversize", 167),
        ("skew:clock_skew", 167),
        ("new:duplicate", 166),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(reasons, expected);
    let mut dead: BTreeMap<String, usize> = BTreeMap::new();
    for d in dead_letters(&t) {
        *dead.entry(format!("{:?}", d.reason)).or_default() += 1;
    }
    assert_eq!(
        dead,
        BTreeMap::from([
            ("Unauthenticated".to_owned(), 10 + 167 + 167),
            ("Undecodable".to_owned(), 166)
        ]),
        "what fails authentication, and malformed records, are dead-lettered"
    );
}
