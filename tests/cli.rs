//! The binary as a user meets it: checks that point at lines, idempotent provisioning.

mod util;

use std::process::Command;

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
        stderr.contains("no task `nope` (tasks: audit, counter, tenancy, totals;"),
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
