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
        stderr.contains("no task `nope` (tasks: counter, tenancy, totals;"),
        "{stderr}"
    );
}
