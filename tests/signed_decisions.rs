//! Signed decisions on the real broker: tenancy → policy → psi → signing fused, keys from a
//! key ring. Every request (and every rejection) becomes exactly one decision on the
//! tenant's own topic with exactly one audit event, also across SIGKILLs; the keys rotate
//! mid-stream; every token verifies with jwcrypto (Python) from the published JWKS alone;
//! `pavilion verify` refuses `none`, HS256, unknown kids and tampering.

mod util;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use pavilion_kafka::PlainProducer;
use pavilion_schemas::{Decision, DecisionIssued, Payload, Registry};
use util::*;

const PASSPHRASE: &str = "signing passphrase";

fn topology(prefix: &str) -> String {
    full_path_topology(prefix, &["age_over"], true)
}

/// Where the signing keys live: the environment `pavilion keys` and `pavilion run` get.
fn key_env(t: &TestTopology, hsm: bool) -> Vec<(String, String)> {
    let dir = t.dir.path();
    if !hsm {
        return vec![
            (
                "PAVILION_SIGNING_KEYS".into(),
                dir.join("keys").display().to_string(),
            ),
            ("PAVILION_SIGNING_PASSPHRASE".into(), PASSPHRASE.into()),
        ];
    }
    let mut env = softhsm_token(dir, "pavilion");
    env.push(("PAVILION_HSM_TOKEN".into(), "pavilion".into()));
    env
}

fn keys_cli(t: &TestTopology, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(t.dir.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// Decisions by request id and the audit events' request ids, each with its count.
fn delivered(
    t: &TestTopology,
    tenant: &str,
) -> (BTreeMap<String, (usize, Decision)>, BTreeMap<String, usize>) {
    let registry = Registry::builtin();
    let mut decisions: BTreeMap<String, (usize, Decision)> = BTreeMap::new();
    for r in read_all(&t.topic(&format!("decisions.{tenant}"))) {
        let d: Decision = registry.decode(&r.value.unwrap()).unwrap();
        assert_eq!(
            d.tenant_id, tenant,
            "another tenant's decision in {tenant}'s topic"
        );
        decisions.entry(d.request_id.clone()).or_insert((0, d)).0 += 1;
    }
    let mut issued = BTreeMap::new();
    for r in read_all(&t.topic("issued")) {
        let i: DecisionIssued = registry.decode(&r.value.unwrap()).unwrap();
        if i.tenant_id == tenant {
            assert_eq!(i.topic, t.topic(&format!("decisions.{tenant}")));
            *issued.entry(i.request_id).or_insert(0) += 1;
        }
    }
    (decisions, issued)
}

#[test]
fn every_request_gets_one_signed_decision_with_its_audit_event_through_kills_and_rotation() {
    decisions_through_kills_and_rotation(false, 1);
}

/// The same with each task on two stream threads, so that one tenant's requests are decided
/// on both (keyed by request id after tenancy).
#[test]
fn the_same_on_two_stream_threads() {
    decisions_through_kills_and_rotation(false, 2);
}

/// The same with the keys in an HSM (SoftHSM2 over PKCS#11).
#[test]
fn the_same_with_keys_in_an_hsm() {
    decisions_through_kills_and_rotation(true, 1);
}

fn decisions_through_kills_and_rotation(hsm: bool, threads: usize) {
    let _serial = serial();
    let name = match (hsm, threads) {
        (true, _) => "sign-hsm".to_owned(),
        (false, n) => format!("sign-{n}"),
    };
    let t = TestTopology::with_yaml(&name, topology).threads(threads);
    let key = t.active_tenant("acme", "k1");
    // A second tenant whose policy asks for SD-JWTs disclosing age_over, shaped by its
    // response template (audience, the claim's payload name).
    let beta_key = t.active_tenant("beta", "k1");
    let beta_policy = AGE_OVER_POLICY
        .replace("tenant: acme", "tenant: beta")
        .replace("disclose: []", "disclose: [age_over, subject_ref]")
        .replace(
            "response_format: jwt",
            "response_format: sd_jwt\nresponse:\n  audience: https://beta.example\n  claim_names: { age_over: age_over_18 }",
        );
    for (name, text) in [
        ("acme.yaml", AGE_OVER_POLICY.to_owned()),
        ("beta.yaml", beta_policy),
    ] {
        std::fs::write(t.dir.path().join(name), text).unwrap();
        t.cli_ok(&[
            "policy",
            "push",
            t.dir.path().join(name).to_str().unwrap(),
            "--activate",
        ]);
    }
    let key_env = key_env(&t, hsm);
    let first_kid = ok(keys_cli(&t, &key_env, &["keys", "generate"]));
    let env: Vec<(&str, &str)> = key_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let port = free_port();
    let mut pipeline = t.spawn_with("a", Some(port), &env);
    await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);
    await_stage_event(port, "policy.activated", "beta", 1.0, &pipeline);

    // A relying party's view: `pavilion request --wait` prints the signed decision from its
    // own topic (no provider is registered here, so the claim is unavailable).
    let key_file = t.dir.path().join("acme-k1.json");
    let answer = t.cli_ok(&[
        "request",
        "--key",
        key_file.to_str().unwrap(),
        "--subject",
        "someone@example.com",
        "--claims",
        "age_over:threshold=21",
        "--purpose",
        "onboarding",
        "--jurisdiction",
        "eu",
        "--request-id",
        "r-cli",
        "--wait",
        "--json",
    ]);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["format"], "jwt");
    assert_eq!(answer["outcomes"][0]["outcome"], "unavailable", "{answer}");
    assert_eq!(answer["token"].as_str().unwrap().split('.').count(), 3);

    // 300 requests (every 50th too old: a rejection, a decision too; beside each of those one
    // signed with the wrong key, which gets no decision at all), streamed while the pipeline
    // is SIGKILLed twice and the keys rotate once.
    let rp = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: t.topic("requests"),
    };
    let mallory = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let total = 300;
    let expected = total + 1; // and the CLI's request
    for i in 0..total {
        let mut request = signed("acme", &format!("r{i:04}"), "k1", &key);
        if i % 50 == 49 {
            request.created_at -= 3_600_000;
            request.signature = key.sign(&request.signing_bytes()).to_bytes().to_vec();
            rp.send(&signed("acme", &format!("m{i:04}"), "k1", &mallory));
        }
        rp.send(&request);
        if i % 10 == 0 {
            rp.send(&signed("beta", &format!("b{i:04}"), "k1", &beta_key));
        }
        if i % 20 == 19 {
            rp.flush();
            std::thread::sleep(Duration::from_millis(100));
        }
        if i == 100 || i == 200 {
            pipeline.sigkill();
            pipeline = t.spawn_with("a", Some(port), &env);
        }
        if i == 150 {
            ok(keys_cli(&t, &key_env, &["keys", "rotate"]));
        }
    }
    rp.flush();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (decisions, _) = delivered(&t, "acme");
        let (beta, _) = delivered(&t, "beta");
        if decisions.len() == expected && beta.len() == total / 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected} decisions; log:\n{}",
            decisions.len(),
            pipeline.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The running broker publishes its JWKS beside /metrics: both keys, the retired-by-
    // rotation one included.
    let (status, served) = http_get(port, "/.well-known/jwks.json").expect("jwks endpoint");
    assert_eq!(status, 200, "{served}");
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(served["keys"].as_array().unwrap().len(), 2, "{served}");
    // Keyed by request id after tenancy, the last process's share of one tenant's requests
    // was decided on every stream thread of the fused task.
    let (_, metrics) = http_get(port, "/metrics").expect("metrics");
    for thread in 0..threads {
        let committed = metric(
            &metrics,
            &format!("pavilion_committed_records_total{{task=\"policy\",thread=\"{thread}\"}}"),
        );
        assert!(
            committed > 0.0,
            "thread {thread} of policy+psi+signing committed nothing:\n{metrics}"
        );
    }
    pipeline.stop();

    let (decisions, issued) = delivered(&t, "acme");
    let (beta, beta_issued) = delivered(&t, "beta");
    assert_eq!(decisions.len(), expected);
    assert_eq!(beta.len(), total / 10);
    assert!(beta
        .values()
        .all(|(n, d)| *n == 1 && d.request_id.starts_with('b')));
    assert!(decisions.keys().all(|id| id.starts_with('r')));
    // beta's policy discloses a subject reference: one pseudonym for its one subject; acme's
    // does not, so its decisions carry none.
    let pseudonyms: std::collections::BTreeSet<_> = beta
        .values()
        .map(|(_, d)| d.subject_pseudonym.clone())
        .collect();
    assert_eq!(pseudonyms.len(), 1);
    assert!(pseudonyms.iter().all(Option::is_some));
    assert!(decisions
        .values()
        .all(|(_, d)| d.subject_pseudonym.is_none()));
    assert_eq!(
        beta_issued.keys().collect::<Vec<_>>(),
        beta.keys().collect::<Vec<_>>()
    );
    assert!(
        decisions.values().all(|(n, _)| *n == 1),
        "a decision was delivered twice"
    );
    assert_eq!(
        issued.keys().collect::<Vec<_>>(),
        decisions.keys().collect::<Vec<_>>(),
        "every decision has its audit event and no audit event lacks its decision"
    );
    assert!(issued.values().all(|n| *n == 1));
    let rejections = decisions
        .values()
        .filter(|(_, d)| d.rejection.is_some())
        .count();
    assert_eq!(rejections, total / 50);
    let kids: std::collections::BTreeSet<&str> = decisions
        .values()
        .map(|(_, d)| d.signing_key_id.as_str())
        .collect();
    assert_eq!(
        kids.len(),
        2,
        "decisions before and after the rotation: {kids:?}"
    );
    assert!(first_kid.contains(kids.iter().next().unwrap()));

    // Independent verification: jwcrypto with only the published JWKS.
    let jwks = t.dir.path().join("jwks.json");
    std::fs::write(&jwks, ok(keys_cli(&t, &key_env, &["keys", "jwks"]))).unwrap();
    let tokens: Vec<String> = decisions
        .values()
        .chain(beta.values())
        .filter_map(|(_, d)| match &d.payload {
            Payload::Text(p) if d.rejection.is_none() => Some(p.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(tokens.len(), expected - rejections + total / 10);
    let python = std::env::var("PAVILION_PYTHON").unwrap_or_else(|_| "python3".into());
    let token_file = t.dir.path().join("tokens.txt");
    std::fs::write(&token_file, tokens.join("\n")).unwrap();
    let child = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/python/verify_decisions.py"
        ))
        .arg(&jwks)
        .stdin(std::fs::File::open(&token_file).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python with jwcrypto (examples/python/requirements.txt)");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jwcrypto: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verified: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(verified.len(), tokens.len());
    // beta's SD-JWTs: age_over disclosed (under the template's name) and verified against the
    // signed digests; the claims list itself is not in the token.
    let sd: Vec<&serde_json::Value> = verified
        .iter()
        .filter(|v| v["claims"]["aud"] == "https://beta.example")
        .collect();
    assert_eq!(sd.len(), total / 10);
    for v in sd {
        assert!(v["disclosed"]["age_over_18"]["outcome"].is_string(), "{v}");
        assert!(v["claims"].get("claims").is_none(), "{v}");
    }

    // Our own verifier: the allow-list.
    let token = &tokens[0];
    let verify = |token: &str| {
        keys_cli(
            &t,
            &[],
            &["verify", token, "--jwks", jwks.to_str().unwrap()],
        )
    };
    assert!(verify(token).status.success());
    let parts: Vec<&str> = token.split('.').collect();
    let header = |h: &str| B64URL.encode(h);
    let forged = [
        format!("{}.{}.", header(r#"{"alg":"none"}"#), parts[1]),
        format!(
            "{}.{}.{}",
            header(r#"{"alg":"HS256","kid":"x"}"#),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            header(r#"{"alg":"EdDSA","kid":"not-published"}"#),
            parts[1],
            parts[2]
        ),
        format!(
            "{}.{}.{}",
            parts[0],
            B64URL.encode(b"{\"aud\":\"evil\"}"),
            parts[2]
        ),
    ];
    for (bad, why) in forged
        .iter()
        .zip(["`none`", "`HS256`", "unknown kid", "bad signature"])
    {
        let out = verify(bad);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = match why {
            "unknown kid" => "no published key",
            "bad signature" => "does not verify",
            alg => alg,
        };
        assert!(stderr.contains(expected), "{why}: {stderr}");
    }
}
