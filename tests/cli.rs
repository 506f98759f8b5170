//! The binary as a user meets it: checks that point at lines, idempotent provisioning.

mod util;

use std::process::Command;
use std::time::Duration;

use util::*;

fn pavilion(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("PAVILION_BOOTSTRAP", bootstrap())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_repository_topology_and_schemas_check_clean() {
    let (code, stdout, stderr) = pavilion(&["topology", "check"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("topology.yaml: ok"), "{stdout}");
    let (code, stdout, stderr) = pavilion(&["schemas", "check"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("schemas: ok"), "{stdout}");
}

#[test]
fn topology_check_lists_every_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "application: app
dlq: missing.dlq
topics:
  a: { partitions: 2 }
  b: { retention: soon }
stages:
  s:
    kind: counter
    inputs: [a, nowhere]
    outputs: { counts: a }
    stores: [counts]
",
    )
    .unwrap();
    let (code, _, stderr) = pavilion(&["topology", "check", "--topology", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let p = path.display();
    for expected in [
        format!("{p}:2: dlq topic `missing.dlq` is not declared"),
        format!("{p}:5: topic `b`: retention `soon`"),
        format!("{p}:9: stage `s`: topic `nowhere` is not declared"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    assert!(stderr.contains("has 3 error(s)"), "{stderr}");
}

#[test]
fn topics_create_is_idempotent_and_reports_differences() {
    let _serial = serial();
    let t = TestTopology::new("topics", 2, false);
    let out = t.cli(&["topics", "create"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !stdout.contains("created"),
        "second run creates nothing:\n{stdout}"
    );
    assert_eq!(stdout.matches("exists").count(), 6, "{stdout}");

    let yaml = std::fs::read_to_string(&t.path)
        .unwrap()
        .replace("partitions: 2", "partitions: 3");
    std::fs::write(&t.path, yaml).unwrap();
    let out = t.cli(&["topics", "create"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains(&format!(
            "DIFFERS  {}: partitions: 2, declared 3",
            t.topic("events")
        )),
        "{stdout}"
    );
}

#[test]
fn run_explains_an_unknown_task() {
    let (code, _, stderr) = pavilion(&["run", "--task", "nope", "--metrics-addr", "off"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no task `nope` (tasks: analytics, audit, policy, tenancy;"),
        "{stderr}"
    );
}

fn example(name: &str) -> String {
    format!("{}/examples/policies/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn policy_test_runs_cases_and_shows_what_differs() {
    let (code, stdout, stderr) = pavilion(&[
        "policy",
        "test",
        &example("acme.yaml"),
        &example("acme-cases.yaml"),
        "--template",
        &example("age-verification.yaml"),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("5 passed, 0 failed"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        "- name: marketing is fine\n  request: { claims: [age_over], threshold: \"18\", purpose: marketing }\n  expect: { age_over: permit }\n",
    )
    .unwrap();
    let (code, stdout, _) = pavilion(&[
        "policy",
        "test",
        &example("acme.yaml"),
        wrong.to_str().unwrap(),
        "--template",
        &example("age-verification.yaml"),
    ]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains(
            "FAIL  marketing is fine\n    age_over: expected permit, got deny (no-marketing)"
        ),
        "{stdout}"
    );
}

#[test]
fn policy_check_points_at_lines() {
    for template in [
        "age-verification.yaml",
        "kyc-lite.yaml",
        "fraud-check.yaml",
        "acme.yaml",
    ] {
        let (code, stdout, stderr) = pavilion(&["policy", "check", &example(template)]);
        assert_eq!(code, 0, "{template}: {stdout}{stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "policy: p\ntenant: t\nrules: |\n  @id(\"all\")\n  forbid(principal, action, resource);\n  @id(\"adults\")\n  permit(principal, action, resource == Claim::\"age_over\");\nplan:\n  age_over:\n    providers: []\n",
    )
    .unwrap();
    let (code, _, stderr) = pavilion(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    let p = bad.display();
    assert!(
        stderr.contains(&format!(
            "{p}:6: error: rule `adults` is shadowed by forbid `all` (line 4)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{p}:9: error: plan for `age_over` names no provider"
        )),
        "{stderr}"
    );
}

/// Issue 14: each `pavilion request` took about 3 s. Its readers sent their end-offset queries
/// on the connection where their fetch was parked at the end of a topic, and a broker answers
/// one connection's requests in order: every query waited out `fetch.wait.max.ms` (500 ms by
/// default). With the park stretched to 20 s, a reader that still queued behind it would
/// take 20 s a query; one that never does reads the registry and sends the request at once.
/// (Not longer: the broker re-authenticates each connection every 30 s, and a fetch parked
/// across that moment loses its connection.)
#[test]
fn request_never_queues_behind_a_parked_fetch() {
    let _serial = serial();
    let t = TestTopology::with_yaml("parked", |p| {
        format!(
            "application: {p}
dlq: {p}.dlq
defaults: {{ partitions: 6 }}
topics:
  {p}.dlq: {{ schema: pavilion.DeadLetter }}
  {p}.providers: {{ schema: pavilion.Provider, cleanup: compact }}
  {p}.sets.{{provider}}: {{ schema: pavilion.ProviderSetEntry, cleanup: compact }}
  {p}.requests: {{ schema: pavilion.VerificationRequest }}
"
        )
    });
    let dir = t.dir.path();
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--topology")
            .arg(&t.path)
            .args(["-X", "fetch.wait.max.ms=20000"])
            .current_dir(dir)
            .env("PAVILION_BOOTSTRAP", bootstrap())
            .env("PAVILION_PROVIDER_PASSPHRASE", "not a secret")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "pavilion {args:?} failed: {stderr}");
        stderr
    };
    // A registered provider whose service is down: the request goes without its token.
    cli(&[
        "provider",
        "onboard",
        "bank",
        "--region",
        "eu",
        "--claims",
        "account_verified",
        "--oprf-url",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let key_file = serde_json::json!({
        "tenant_id": "acme",
        "key_id": "k1",
        "secret_key": hex::encode(key.to_bytes()),
        "public_key": hex::encode(key.verifying_key().to_bytes()),
    });
    std::fs::write(dir.join("acme-k1.json"), key_file.to_string()).unwrap();
    let started = std::time::Instant::now();
    let stderr = cli(&[
        "request",
        "--key",
        "acme-k1.json",
        "--subject",
        "alice@example.com",
        "--claims",
        "account_verified",
        "--purpose",
        "kyc",
        "--jurisdiction",
        "DE",
    ]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "request took {took:?}: queued behind a parked fetch"
    );
    assert!(stderr.contains("warning: no token from bank"), "{stderr}");
    assert!(stderr.contains("sent request"), "{stderr}");
    assert_eq!(read_all(&t.topic("requests")).len(), 1);
}

/// Issue 14: `pavilion demo` outside the repository root failed with "reading topology.yaml"
/// after it had made its folder. It now settles its topology first (without a flag, the
/// built-in copy of the repository's), and a topology it cannot read leaves nothing behind
/// and says how to give one.
#[test]
fn demo_without_its_topology_says_how_to_give_one_and_writes_nothing() {
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--topology", "missing.yaml", "--dir", "demo"])
        .env("PAVILION_BOOTSTRAP", bootstrap())
        .env_remove("PAVILION_DEMO_DIR")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("reading the demo's topology missing.yaml")
            && stderr.contains("--topology FILE or PAVILION_TOPOLOGY=FILE"),
        "{stderr}"
    );
    assert!(
        !cwd.path().join("demo").exists(),
        "nothing is written before the topology is known"
    );
}

/// A server without a certificate refuses a non-loopback address unless told `--insecure`,
/// before it opens anything; with `--insecure` it serves plain HTTP (and warns).
#[test]
fn plain_http_beyond_loopback_needs_insecure() {
    let _serial = serial();
    let t = TestTopology::new("insecure", 1, true);
    let open = format!("0.0.0.0:{}", free_port());
    for args in [
        &["run", "--metrics-addr", &open][..],
        &["audit", "serve", "--addr", &open],
        &["provider", "serve-oprf", "bank", "--listen", &open],
        &["provider", "serve-evidence", "bank", "--listen", &open],
        &[
            "anchor",
            "run",
            "--contract",
            "0x0000000000000000000000000000000000000000",
            "--metrics-addr",
            &open,
        ],
    ] {
        let out = t.cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{open} is reachable beyond this machine"))
                && stderr.contains("--tls-cert")
                && stderr.contains("--insecure"),
            "{args:?}: {stderr}"
        );
    }
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--insecure",
            "--metrics-addr",
            &format!("0.0.0.0:{port}"),
        ])
        .arg("--topology")
        .arg(&t.path)
        .arg("--state-dir")
        .arg(t.state_dir("insecure"))
        .env("PAVILION_BOOTSTRAP", bootstrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while http_get(port, "/healthz").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no /healthz with --insecure"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: serving plain HTTP"), "{stderr}");
}

/// Given a certificate, a server listens beyond loopback in TLS; with --tls-client-ca it
/// admits only clients holding a certificate of that CA. curl (OpenSSL) is the client.
#[test]
fn https_beyond_loopback_with_client_certificates() {
    use pavilion_http::local_ca::LocalCa;
    let _serial = serial();
    let t = TestTopology::new("https", 1, true);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let ca = LocalCa::new("pavilion test CA").unwrap();
    let server = ca.server(&["127.0.0.1", "localhost"]).unwrap();
    let operators = LocalCa::new("operators CA").unwrap();
    let prometheus = operators.client("prometheus").unwrap();
    let ca_pem = write("ca.pem", ca.cert_pem());
    let (cert, key) = (
        write("server.pem", &server.cert_pem),
        write("server.key", &server.key_pem),
    );
    let client_ca = write("operators.pem", operators.cert_pem());
    let (client_cert, client_key) = (
        write("prometheus.pem", &prometheus.cert_pem),
        write("prometheus.key", &prometheus.key_pem),
    );

    // A certificate that cannot be read stops the server before it opens anything.
    let out = t.cli(&[
        "run",
        "--metrics-addr",
        &format!("0.0.0.0:{}", free_port()),
        "--tls-cert",
        &key,
        "--tls-key",
        &key,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("server.key holds no PEM certificate"),
        "{stderr}"
    );

    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["run", "--metrics-addr", &format!("0.0.0.0:{port}")])
        .args([
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &client_ca,
        ])
        .arg("--topology")
        .arg(&t.path)
        .arg("--state-dir")
        .arg(t.state_dir("https"))
        .env("PAVILION_BOOTSTRAP", bootstrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let curl = |extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-m", "5", "--cacert", &ca_pem])
            .args(extra)
            .arg(format!("https://127.0.0.1:{port}/healthz"))
            .output()
            .expect("curl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let admitted = loop {
        let (ok, text) = curl(&["--cert", &client_cert, "--key", &client_key]);
        if ok || std::time::Instant::now() > deadline {
            break (ok, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let without_certificate = curl(&[]);
    let stranger = ca.client("prometheus").unwrap();
    let foreign = curl(&[
        "--cert",
        &write("stranger.pem", &stranger.cert_pem),
        "--key",
        &write("stranger.key", &stranger.key_pem),
    ]);
    let plain = http_get(port, "/healthz");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(admitted.0 && admitted.1.contains("ok"), "{admitted:?}");
    assert!(
        !without_certificate.0 && without_certificate.1.contains("certificate required"),
        "{without_certificate:?}"
    );
    assert!(
        !foreign.0 && foreign.1.contains("unknown ca"),
        "{foreign:?}"
    );
    assert!(
        plain.is_none(),
        "plain HTTP answered on the TLS port: {plain:?}"
    );
}
