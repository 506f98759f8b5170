//! Differentially private analytics on the real broker (issue 20): releases through the CLI,
//! the budget never exceeded by two processes querying at once nor by the stage SIGKILLed
//! between its debit and its release, a retried release free and identical, tenants given
//! their releases on their own topic, the audit log recording every release, and no
//! per-tenant request volume on `/metrics`.

mod util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pavilion_kafka::PlainProducer;
use pavilion_schemas::{AnalyticsRelease, AuditEntry, Registry, ReleaseStatus};
use util::*;

fn release(out: std::process::Output) -> (AnalyticsRelease, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let r: AnalyticsRelease = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not a release ({e}):\n{stdout}\n{stderr}"));
    let released = r.status == ReleaseStatus::Released;
    assert_eq!(
        out.status.success(),
        released,
        "exit status follows the status:\n{stderr}"
    );
    (r, stderr)
}

fn releases_on(topic: &str) -> Vec<AnalyticsRelease> {
    read_all(topic)
        .into_iter()
        .map(|r| Registry::builtin().decode(&r.value.unwrap()).unwrap())
        .collect()
}

#[test]
fn the_budget_holds_under_concurrent_queries_and_a_crash_between_debit_and_release() {
    let _serial = serial();
    let faults = tempfile::tempdir().unwrap();
    let kill_file = faults.path().join("kill-after-debit");
    let config = format!(
        "      tenant_budget: 2\n      operator_budget: 1\n      kill_after_debit_if: {}\n",
        kill_file.display()
    );
    let t = TestTopology::with_yaml("analytics", |p| {
        let mut inputs = AUDIT_INPUTS.to_vec();
        inputs.push("releases");
        with_analytics(
            p,
            with_audit(p, full_path_topology(p, &["age_over"], true), &inputs, &[]),
            &config,
        )
    });
    let env = audit_env(&t);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let key = acme_with_age_policy(&t, &env);
    let port = free_port();
    let mut pipeline = t.spawn_with("a", Some(port), &env_refs);
    await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);

    // 40 requests, decided, and their increments flushed to the scope's totals.
    let rp = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: t.topic("requests"),
    };
    let ids: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    for id in &ids {
        rp.send(&signed("acme", id, "k1", &key));
    }
    rp.flush();
    let decided = await_decisions(&t.topic("decisions.acme"), &ids, Duration::from_secs(90));
    assert_eq!(decided.lost, 0, "{}", pipeline.log_tail());
    std::thread::sleep(Duration::from_secs(3));

    let ask = |args: &[&str]| {
        let mut all = vec!["analytics", "query", "--metric", "requests", "--json"];
        all.extend_from_slice(args);
        t.cli(&all)
    };
    // The count, at a confidence whose bound fails once in a million; asked again below.
    let ask_first = || {
        release(ask(&[
            "--tenant",
            "acme",
            "--epsilon",
            "0.2",
            "--confidence",
            "0.999999",
            "--release-id",
            "first",
        ]))
    };
    let (first, _) = ask_first();
    let cell = &first.cells[0];
    assert!(
        (cell.value - 40).abs() <= cell.bound,
        "40 requests released as {} ± {}",
        cell.value,
        cell.bound
    );

    // Two processes, four queries each of ε 0.3, against the 1.8 left: six fit, two are
    // refused with what is left, and nothing is spent beyond the budget.
    let outcomes: Vec<(AnalyticsRelease, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    (0..4)
                        .map(|_| release(ask(&["--tenant", "acme", "--epsilon", "0.3"])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let released: Vec<_> = outcomes
        .iter()
        .filter(|(r, _)| r.status == ReleaseStatus::Released)
        .collect();
    let refused: Vec<_> = outcomes
        .iter()
        .filter(|(r, _)| r.status == ReleaseStatus::Refused)
        .collect();
    assert_eq!((released.len(), refused.len()), (6, 2), "{outcomes:?}");
    let spent: i64 =
        first.epsilon_micro + released.iter().map(|(r, _)| r.epsilon_micro).sum::<i64>();
    assert_eq!(spent, 2_000_000);
    let mut left: Vec<i64> = released.iter().map(|(r, _)| r.budget_left_micro).collect();
    left.sort();
    assert_eq!(
        left,
        [0, 300_000, 600_000, 900_000, 1_200_000, 1_500_000],
        "each debit on the one before"
    );
    for (r, stderr) in refused {
        assert_eq!(r.budget_left_micro, 0);
        assert!(
            stderr.contains("over budget") && stderr.contains("ε 0.000000 left of 2.000000"),
            "{stderr}"
        );
    }

    // A retry of a released id: the same answer, nothing spent.
    let (again, _) = ask_first();
    assert_eq!(again, first);

    // SIGKILL between the debit and the release (the stage kills its own process once the
    // debit is written and before noise is drawn): restarted, it answers once, debited once.
    std::fs::write(&kill_file, b"").unwrap();
    std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            release(ask(&[
                "--cross-tenant",
                "--epsilon",
                "0.4",
                "--release-id",
                "crash",
                "--timeout",
                "120s",
            ]))
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while pipeline.running() {
            assert!(
                Instant::now() < deadline,
                "the stage did not kill itself: {}",
                pipeline.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!kill_file.exists());
        pipeline = t.spawn_with("a", Some(port), &env_refs);
        let (crashed, _) = waiting.join().unwrap();
        assert_eq!(
            (
                crashed.status,
                crashed.epsilon_micro,
                crashed.budget_left_micro
            ),
            (ReleaseStatus::Released, 400_000, 600_000)
        );
    });
    let (next, _) = release(ask(&["--cross-tenant", "--epsilon", "0.4"]));
    assert_eq!(
        next.budget_left_micro, 200_000,
        "the crashed release was debited once"
    );
    let (over, stderr) = release(ask(&["--cross-tenant", "--epsilon", "0.4"]));
    assert_eq!(over.status, ReleaseStatus::Refused, "{stderr}");

    // The releases topic (read_committed) has the crashed release once.
    let all = releases_on(&t.topic("releases"));
    assert_eq!(all.iter().filter(|r| r.release_id == "crash").count(), 1);
    // The tenant's topic has its releases (each retry re-delivered), none of another scope.
    let mine = releases_on(&t.topic("releases.acme"));
    assert!(mine.iter().all(|r| r.scope == "acme"));
    let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
    for r in mine.iter().filter(|r| r.status == ReleaseStatus::Released) {
        *by_id.entry(&r.release_id).or_default() += 1;
    }
    assert_eq!(by_id.len(), 7, "first and six more: {by_id:?}");
    assert_eq!(by_id["first"], 2, "the retry was delivered again");

    // The audit log records every release event.
    let logged = read_all(&t.topic("log"))
        .into_iter()
        .map(|r| {
            Registry::builtin()
                .decode::<AuditEntry>(&r.value.unwrap())
                .unwrap()
        })
        .filter(|e| e.event.event_type == "pavilion.AnalyticsRelease")
        .count();
    assert!(
        logged >= all.len(),
        "{logged} audit entries for {} releases",
        all.len()
    );

    // The operator's view of the budget, and the report.
    let budget = t.cli_ok(&["analytics", "budget"]);
    let acme = budget
        .lines()
        .find(|l| l.starts_with("acme"))
        .unwrap_or_else(|| panic!("{budget}"));
    assert_eq!(
        acme.split_whitespace().collect::<Vec<_>>(),
        ["acme", "2.000000", "2.000000", "0.000000", "7"],
        "{budget}"
    );
    let report = t.dir.path().join("report.html");
    t.cli_ok(&["analytics", "report", "--out", report.to_str().unwrap()]);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("<svg") && html.contains("tenant acme — requests"),
        "{html}"
    );

    // No per-tenant request volume on /metrics: a tenant appears only on control events.
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    for line in metrics.lines().filter(|l| l.contains("\"acme\"")) {
        assert!(
            [
                "tenant.updated",
                "tenant.stale_revision_ignored",
                "policy.activated"
            ]
            .iter()
            .any(|e| line.contains(&format!("event=\"{e}\""))),
            "a per-tenant figure on /metrics: {line}"
        );
    }
    pipeline.stop();
}
