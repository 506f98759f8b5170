//! What the interoperability tests share: an independent implementation run as a child
//! process that reads one JSON question on stdin and writes one JSON answer on stdout.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Runs `command` with `question` on its stdin; its JSON answer. Panics with its stderr when
/// it fails: a crash is not a verdict.
pub fn ask_json(command: &mut Command, question: &serde_json::Value) -> serde_json::Value {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(question.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
