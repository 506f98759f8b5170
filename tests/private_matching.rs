//! Private matching end to end on the real broker, driven only through the binary as its
//! users drive it: providers onboard and load their sets (CSV and PostgreSQL), serve OPRF
//! evaluations; a relying party sends `pavilion request --wait`; tenancy → policy → psi run
//! fused. Known members match, non-members do not, a tombstoned member stops matching, a
//! provider without a set is `unavailable`. Then the privacy scan: no topic, no RocksDB
//! file and no log holds a test identifier or a simple hash of one.

mod util;

use std::time::Duration;

use sha2::{Digest, Sha256};
use util::*;

const PASSPHRASE: &str = "correct horse battery staple";

const POLICY: &str = r#"policy: main
tenant: acme
rules: |
  @id("kyc-only")
  permit(principal, action == Action::"verify", resource) when { context.purpose == "kyc" };
plan:
  account_verified:
    providers: [{ id: bank, region: eu }]
    evidence: [oprf_match, provider_signature]
    disclose: []
  fraud_listed:
    providers: [{ id: telco, region: eu }]
    evidence: [oprf_match]
    disclose: []
  record_link:
    providers: [{ id: bank, region: eu }, { id: gov, region: eu }]
    evidence: [oprf_match]
    disclose: [intersection]
"#;

fn topology(prefix: &str) -> String {
    full_path_topology(
        prefix,
        &["account_verified", "fraud_listed", "record_link"],
        false,
    )
}

/// The CLI with this topology and the providers' passphrase, which must succeed.
fn cli_ok(t: &TestTopology, args: &[&str]) -> String {
    provider_cli_ok(t, PASSPHRASE, args)
}

/// The bank's members as `csv`, loaded with `provider load`; its report.
fn load_bank(t: &TestTopology, csv: &str) -> String {
    std::fs::write(t.dir.path().join("members.csv"), csv).unwrap();
    cli_ok(
        t,
        &[
            "provider",
            "load",
            "bank",
            "--from",
            "members.csv",
            "--claims-column",
            "claims",
        ],
    )
}

/// `provider onboard NAME` in region eu with its OPRF service on a free port; the port.
fn onboard(t: &TestTopology, name: &str, claims: &str) -> u16 {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    cli_ok(
        t,
        &[
            "provider",
            "onboard",
            name,
            "--region",
            "eu",
            "--claims",
            claims,
            "--oprf-url",
            &url,
        ],
    );
    port
}

fn serve_oprf(t: &TestTopology, provider: &str, port: u16) -> Service {
    let listen = format!("127.0.0.1:{port}");
    spawn_service(
        t,
        PASSPHRASE,
        &[
            "provider",
            "serve-oprf",
            provider,
            "--listen",
            &listen,
            "--rate",
            "1000",
        ],
        &format!("oprf-{provider}.log"),
        || http_get(port, "/v1/oprf/key").is_some(),
    )
}

/// `pavilion request --wait --json` for one subject and claim; the claim's status and reason.
fn ask(t: &TestTopology, subject: &str, claim: &str) -> (String, Option<String>) {
    ask_kind(t, subject, "email", claim)
}

fn ask_kind(t: &TestTopology, subject: &str, kind: &str, claim: &str) -> (String, Option<String>) {
    let key = t.dir.path().join("acme-k1.json");
    let out = cli_ok(
        t,
        &[
            "request",
            "--key",
            key.to_str().unwrap(),
            "--subject",
            subject,
            "--id-kind",
            kind,
            "--claims",
            claim,
            "--purpose",
            "kyc",
            "--jurisdiction",
            "DE",
            "--wait",
            "--json",
            "--timeout",
            "60s",
        ],
    );
    let results: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = &results[0];
    (
        r["status"].as_str().unwrap().to_owned(),
        r["reason"].as_str().map(str::to_owned),
    )
}

fn postgres_url() -> String {
    std::env::var("PAVILION_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://pavilion@127.0.0.1:55432/pavilion".into())
}

/// A fresh table `(phone, flags)` with `rows`; returns its name.
fn fraud_table(rows: &[(&str, &str)]) -> String {
    let name = format!("fraud_{}_{}", std::process::id(), now_ms());
    let mut client = postgres::Client::connect(&postgres_url(), postgres::NoTls)
        .expect("PostgreSQL from scripts/infra up (PAVILION_POSTGRES_URL)");
    client
        .batch_execute(&format!("CREATE TABLE {name} (phone text, flags text)"))
        .unwrap();
    for (phone, flags) in rows {
        client
            .execute(
                &format!("INSERT INTO {name} VALUES ($1, $2)"),
                &[phone, flags],
            )
            .unwrap();
    }
    name
}

#[test]
fn members_match_non_members_do_not_tombstones_stop_matching_and_nothing_leaks() {
    let _serial = serial();
    let t = TestTopology::with_yaml("psi", topology);
    let dir = t.dir.path().to_owned();
    t.active_tenant("acme", "k1");
    std::fs::write(dir.join("policy.yaml"), POLICY).unwrap();
    cli_ok(&t, &["policy", "push", "policy.yaml", "--activate"]);

    let bank_port = onboard(&t, "bank", "account_verified,record_link");
    let telco_port = onboard(&t, "telco", "fraud_listed");
    let gov_port = onboard(&t, "gov", "record_link");
    let sealed = std::fs::read(dir.join("bank.provider-key")).unwrap();
    assert!(
        sealed.starts_with(b"PVK1"),
        "the provider key is sealed at rest"
    );

    let loaded = load_bank(
        &t,
        "email,claims\nAlice@Example.com,account_verified\nbob@example.com,account_verified\ncarol@example.com,other_claim\n",
    );
    assert!(
        loaded.contains("3 records → 3 members: 3 new or changed, 0 removed"),
        "{loaded}"
    );

    // telco's fraud list lives in PostgreSQL, phone numbers as its staff typed them.
    let table = fraud_table(&[
        ("+49 30 1234567", "fraud_listed"),
        ("0044 20 7946 0000", "fraud_listed"),
    ]);
    let loaded = cli_ok(
        &t,
        &[
            "provider",
            "load",
            "telco",
            "--from",
            &postgres_url(),
            "--table",
            &table,
            "--id-kind",
            "phone",
            "--claims-column",
            "flags",
        ],
    );
    assert!(
        loaded.contains("2 records → 2 members: 2 new or changed"),
        "{loaded}"
    );

    let _bank = serve_oprf(&t, "bank", bank_port);
    let _telco = serve_oprf(&t, "telco", telco_port);
    let _gov = serve_oprf(&t, "gov", gov_port);
    let port = free_port();
    let mut pipeline = t.spawn("a", Some(port));
    // Control records and requests are different topics of one task, read in no fixed
    // order: wait until the tenant and its policy are in before asking.
    await_stage_event(port, "tenant.updated", "acme", 2.0, &pipeline);
    await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);

    // Case and spacing do not matter: normalization makes both sides agree.
    assert_eq!(
        ask(&t, " alice@EXAMPLE.com", "account_verified"),
        ("matched".into(), None)
    );
    assert_eq!(
        ask(&t, "mallory@example.com", "account_verified"),
        ("not_matched".into(), None)
    );
    // carol is a member, but the bank does not attest this claim for her.
    assert_eq!(
        ask(&t, "carol@example.com", "account_verified"),
        ("not_matched".into(), None)
    );
    // E.164 normalization: the relying party types the number another way.
    assert_eq!(
        ask_kind(&t, "0049 (30) 123-4567", "phone", "fraud_listed"),
        ("matched".into(), None)
    );
    assert_eq!(
        ask_kind(&t, "+49 30 7654321", "phone", "fraud_listed"),
        ("not_matched".into(), None)
    );
    // gov is registered but has loaded no set: never a silent false.
    assert_eq!(
        ask(&t, "alice@example.com", "record_link"),
        ("unavailable".into(), Some("gov: no_set_loaded".into()))
    );

    // Alice leaves the bank: the reload publishes one tombstone and nothing else.
    let reloaded = load_bank(
        &t,
        "email,claims\nbob@example.com,account_verified\ncarol@example.com,other_claim\n",
    );
    assert!(
        reloaded.contains("0 new or changed, 1 removed, 2 unchanged"),
        "{reloaded}"
    );
    // The psi stage follows the set topic between transactions; give it a moment.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ask(&t, "alice@example.com", "account_verified"),
        ("not_matched".into(), None)
    );
    assert_eq!(
        ask(&t, "bob@example.com", "account_verified"),
        ("matched".into(), None)
    );

    // Batch PSI against the bank's set: the intersection comes back as positions and is
    // mapped to the relying party's own identifiers locally.
    std::fs::write(
        dir.join("linkage.txt"),
        "mallory@example.com\nbob@example.com\n\ncarol@example.com\nALICE@example.com\n",
    )
    .unwrap();
    let key = dir.join("acme-k1.json");
    let batch = |reveal: &str| {
        cli_ok(
            &t,
            &[
                "psi",
                "batch",
                "linkage.txt",
                "--key",
                key.to_str().unwrap(),
                "--provider",
                "bank",
                "--reveal",
                reveal,
                "--purpose",
                "kyc",
                "--jurisdiction",
                "DE",
                "--wait",
                "--timeout",
                "60s",
                "--out",
                "matched.txt",
            ],
        )
    };
    let summary = batch("intersection");
    assert!(summary.contains(": 2 of 4 in bank's set"), "{summary}");
    assert_eq!(
        std::fs::read_to_string(dir.join("matched.txt")).unwrap(),
        "bob@example.com\ncarol@example.com\n"
    );
    std::fs::remove_file(dir.join("matched.txt")).unwrap();
    let summary = batch("cardinality");
    assert!(summary.contains(": 2 of 4 in bank's set"), "{summary}");
    assert!(
        !dir.join("matched.txt").exists(),
        "cardinality only: no identifiers back"
    );

    pipeline.stop();
    scan(
        &t,
        &[
            "alice@example.com",
            "bob@example.com",
            "mallory@example.com",
            "carol@example.com",
        ],
        &["+49301234567", "+442079460000", "+49307654321"],
    );
}

/// No topic of the run, no file of the pipeline's RocksDB state and no log holds any of
/// `subjects`, in any spelling used above or as its SHA-256 (hex or raw) — of the address
/// alone or of the OPRF input (`email:<address>`).
fn scan(t: &TestTopology, emails: &[&str], phones: &[&str]) {
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for p in phones {
        let digits = p.trim_start_matches('+');
        for form in [p.to_string(), digits.to_owned(), format!("phone:{p}")] {
            let digest = Sha256::digest(form.as_bytes());
            needles.push((format!("`{form}`"), form.clone().into_bytes()));
            needles.push((
                format!("sha256(`{form}`) hex"),
                hex::encode(digest).into_bytes(),
            ));
            needles.push((format!("sha256(`{form}`)"), digest.to_vec()));
        }
    }
    for s in emails {
        for form in [s.to_string(), s.to_uppercase(), format!("email:{s}")] {
            let digest = Sha256::digest(form.as_bytes());
            needles.push((format!("`{form}`"), form.clone().into_bytes()));
            needles.push((
                format!("sha256(`{form}`) hex"),
                hex::encode(digest).into_bytes(),
            ));
            needles.push((format!("sha256(`{form}`)"), digest.to_vec()));
        }
        let local = s.split('@').next().unwrap();
        needles.push((
            format!("local part `{local}@`"),
            format!("{local}@").into_bytes(),
        ));
    }
    privacy_scan(
        t,
        &needles,
        "members.csv",
        &[
            "a.log",
            "oprf-bank.log",
            "oprf-telco.log",
            "oprf-gov.log",
            "cli.log",
        ],
        17,
    );
}
