//! Zero-knowledge predicates end to end on the real broker, with real processes: a provider
//! loads birth dates and incomes as commitments (`provider load --attribute`), serves OPRF
//! evaluations and proofs (`provider serve-evidence`); tenancy → policy → psi → signing run
//! fused; a relying party's requests carry only OPRF tokens.
//!
//! - Mixed traffic (adults, minors, a subject born exactly on the cutoff day, an income above
//!   and below the threshold, a non-member) while the evidence service is SIGKILLed and
//!   restarted twice: every request gets exactly one decision, and every answer is the one
//!   the subject's real attribute gives. A decision's proof verifies in Python (py_ecc) from
//!   the signed token alone.
//! - A provider that never answers: `unavailable: <provider>: provider_timeout` within the
//!   deadline, and its breaker opens (on /metrics).
//! - Disclosures in the same traffic: a `residence` claim reveals the member's country by a
//!   BBS proof of the provider's signature over all its attributes; the proof in the signed
//!   token verifies with `@digitalbazaar/bbs-signatures`.
//! - The privacy scan: no birth date, income or undisclosed signed attribute (a note planted
//!   for it) in any topic, state store or log of the broker's side.

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use chrono::{Datelike, Months, Utc};
use pavilion_client::{
    sign_request, OprfClient, ProviderEndpoint, RequestDraft, TenantCredentials,
};
use pavilion_kafka::{GroupReader, PlainProducer};
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_schemas::{
    ClaimRequest, Decision, Payload, Provider, Registry, SubjectToken, Verdict,
};
use util::*;

const PASSPHRASE: &str = "provider passphrase";

const POLICY: &str = r#"policy: main
tenant: acme
rules: |
  @id("adults-and-earners")
  permit(principal, action == Action::"verify", resource) when { context.threshold >= 18 };
plan:
  age_over:
    providers: [{ id: registry, region: eu }]
    evidence: [oprf_match, zk_predicate]
    disclose: []
  income_over:
    providers: [{ id: registry, region: eu }]
    evidence: [oprf_match, zk_predicate]
    disclose: []
  residence:
    providers: [{ id: registry, region: eu }]
    evidence: [oprf_match, bbs_disclosure]
    disclose: [country]
response_format: jwt
response:
  evidence: true
"#;

/// Tenant beta asks a provider whose evidence service never runs.
const SILENT_POLICY: &str = r#"policy: main
tenant: beta
rules: |
  @id("all")
  permit(principal, action == Action::"verify", resource);
plan:
  income_over:
    providers: [{ id: silent, region: eu }]
    evidence: [zk_predicate]
    disclose: []
response_format: jwt
"#;

/// `years` years before today (UTC), as YYYY-MM-DD and as the number YYYYMMDD.
fn years_ago(years: u32, days_later: u64) -> (String, u64) {
    let day = Utc::now().date_naive() - Months::new(years * 12) + chrono::Days::new(days_later);
    let number = day.year() as u64 * 10_000 + u64::from(day.month()) * 100 + u64::from(day.day());
    (day.format("%Y-%m-%d").to_string(), number)
}

struct Member {
    email: &'static str,
    birthdate: (String, u64),
    income: u64,
    /// Disclosed by a BBS proof for `residence`.
    country: &'static str,
    /// Signed with the rest, never asked for: planted for the privacy scan.
    note: &'static str,
}

fn members() -> Vec<Member> {
    vec![
        Member {
            email: "adult@example.com",
            birthdate: ("1987-03-09".into(), 19870309),
            income: 73_415_297,
            country: "DE",
            note: "planted-note-adult-9f3k",
        },
        Member {
            email: "teen@example.com",
            birthdate: years_ago(17, 0),
            income: 1_250_311,
            country: "FR",
            note: "planted-note-teen-q8w2",
        },
        // Born exactly 18 years ago today: old enough for 18, not for 21.
        Member {
            email: "exact18@example.com",
            birthdate: years_ago(18, 0),
            income: 50_000_000,
            country: "NL",
            note: "planted-note-exact18-z7m1",
        },
        // Turns 21 tomorrow.
        Member {
            email: "almost21@example.com",
            birthdate: years_ago(21, 1),
            income: 30_587_131,
            country: "AT",
            note: "planted-note-almost21-c4v6",
        },
    ]
}

/// What the claim must come out as, from the member's real attribute.
fn expected(member: Option<&Member>, claim: &str, threshold: u64) -> Verdict {
    let Some(m) = member else {
        return Verdict::NotVerified;
    };
    let holds = match claim {
        "age_over" => m.birthdate.1 <= years_ago(threshold as u32, 0).1,
        "residence" => true,
        _ => m.income >= threshold,
    };
    if holds {
        Verdict::Verified
    } else {
        Verdict::NotVerified
    }
}

fn cli(t: &TestTopology, args: &[&str]) -> String {
    provider_cli_ok(t, PASSPHRASE, args)
}

/// The members as the provider's CSV: claims, birth date, income, country and note columns.
fn members_csv(members: &[Member]) -> String {
    let mut csv = "email,claims,birthdate,income,country,note\n".to_owned();
    for m in members {
        csv += &format!(
            "{},age_over;income_over;residence,{},{},{},{}\n",
            m.email, m.birthdate.0, m.income, m.country, m.note
        );
    }
    csv
}

fn serve_evidence(t: &TestTopology, provider: &str, port: u16) -> Service {
    let listen = format!("127.0.0.1:{port}");
    spawn_service(
        t,
        PASSPHRASE,
        &[
            "provider",
            "serve-evidence",
            provider,
            "--listen",
            &listen,
            "--workers",
            "2",
        ],
        &format!("evidence-{provider}.log"),
        || http_get(port, "/healthz").is_some_and(|(s, _)| s == 200),
    )
}

/// Onboards `provider` with its OPRF service on a free port and loads `csv` with its
/// attributes committed.
fn provider_with_attributes(t: &TestTopology, provider: &str, csv: &str) -> Service {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    cli(
        t,
        &[
            "provider",
            "onboard",
            provider,
            "--region",
            "eu",
            "--claims",
            "age_over,income_over,residence",
            "--oprf-url",
            &url,
        ],
    );
    let file = format!("{provider}.csv");
    std::fs::write(t.dir.path().join(&file), csv).unwrap();
    let report = cli(
        t,
        &[
            "provider",
            "load",
            provider,
            "--from",
            &file,
            "--claims-column",
            "claims",
            "--attribute",
            "birthdate:date",
            "--attribute",
            "income:int",
            "--attribute",
            "country:text",
            "--attribute",
            "note:text",
        ],
    );
    assert!(report.contains("sealed in"), "{report}");
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

/// Each subject's token at `provider`, through its OPRF service, as the client library gets it.
fn tokens(t: &TestTopology, tenant: &str, provider: &str, emails: &[&str]) -> Vec<Vec<u8>> {
    let registry = Registry::builtin();
    let record: Provider = read_all(&t.topic("providers"))
        .into_iter()
        .filter_map(|r| registry.decode::<Provider>(&r.value?).ok())
        .rfind(|p| p.provider_id == provider)
        .expect("the provider is registered");
    let endpoint = ProviderEndpoint::of(&record).unwrap();
    let key_file = std::fs::read_to_string(t.dir.path().join(format!("{tenant}-k1.json"))).unwrap();
    let client = OprfClient::new(TenantCredentials::from_key_file(&key_file).unwrap());
    let inputs: Vec<Vec<u8>> = emails
        .iter()
        .map(|e| oprf_input(IdentifierKind::Email, e).unwrap())
        .collect();
    client
        .tokens(&endpoint, &inputs)
        .unwrap()
        .into_iter()
        .map(|o| o.to_vec())
        .collect()
}

fn request(
    t: &TestTopology,
    tenant: &str,
    id: &str,
    claim: &str,
    threshold: u64,
    provider: &str,
    token: &[u8],
) -> pavilion_schemas::VerificationRequest {
    let key_file = std::fs::read_to_string(t.dir.path().join(format!("{tenant}-k1.json"))).unwrap();
    sign_request(
        &TenantCredentials::from_key_file(&key_file).unwrap(),
        RequestDraft {
            claims: vec![ClaimRequest {
                name: claim.into(),
                params: BTreeMap::from([("threshold".into(), threshold.to_string())]),
            }],
            purpose: "onboarding".into(),
            subject_jurisdiction: "DE".into(),
            consent_ref: None,
            response_format: None,
            request_id: Some(id.into()),
            nonce: None,
        },
        vec![SubjectToken {
            provider_id: provider.into(),
            token: token.to_vec(),
        }],
    )
}

fn decisions(t: &TestTopology, tenant: &str) -> BTreeMap<String, Vec<Decision>> {
    let registry = Registry::builtin();
    let mut by_id: BTreeMap<String, Vec<Decision>> = BTreeMap::new();
    for r in read_all(&t.topic(&format!("decisions.{tenant}"))) {
        let d: Decision = registry.decode(&r.value.unwrap()).unwrap();
        by_id.entry(d.request_id.clone()).or_default().push(d);
    }
    by_id
}

fn wait_for(
    t: &TestTopology,
    tenant: &str,
    n: usize,
    pipeline: &Pipeline,
) -> BTreeMap<String, Vec<Decision>> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let seen = decisions(t, tenant);
        if seen.len() >= n {
            // A duplicate would come beside the first decision: a last look catches it.
            std::thread::sleep(Duration::from_secs(2));
            return decisions(t, tenant);
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} decisions for {tenant}; log:\n{}",
            seen.len(),
            pipeline.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn predicates_are_proved_through_kills_a_silent_provider_times_out_and_nothing_leaks() {
    let _serial = serial();
    let t = TestTopology::with_yaml("zk", |prefix| {
        full_path_topology(prefix, &["age_over", "income_over", "residence"], true)
    });
    let dir = t.dir.path().to_owned();
    let env = audit_env(&t);
    ok(cli_env(&t, &env, &["keys", "generate"]));
    t.active_tenant("acme", "k1");
    t.active_tenant("beta", "k1");
    for (file, text) in [("acme.yaml", POLICY), ("beta.yaml", SILENT_POLICY)] {
        std::fs::write(dir.join(file), text).unwrap();
        t.cli_ok(&[
            "policy",
            "push",
            dir.join(file).to_str().unwrap(),
            "--activate",
        ]);
    }
    let members = members();
    let csv = members_csv(&members);
    let _oprf = provider_with_attributes(&t, "registry", &csv);
    let _silent_oprf = provider_with_attributes(&t, "silent", &csv);

    let port = free_port();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let pipeline = t.spawn_with("a", Some(port), &env_refs);
    await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);
    await_stage_event(port, "policy.activated", "beta", 1.0, &pipeline);
    let evidence_port = free_port();
    let mut evidence = serve_evidence(&t, "registry", evidence_port);

    let mut emails: Vec<&str> = members.iter().map(|m| m.email).collect();
    emails.push("stranger@example.com");
    let tokens = tokens(&t, "acme", "registry", &emails);

    // Mixed traffic at a steady rate, the evidence service SIGKILLed and restarted twice.
    let rp = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: t.topic("requests"),
    };
    let questions = [
        ("age_over", 18),
        ("age_over", 21),
        ("income_over", 50_000_000),
        ("residence", 18),
    ];
    let mut asked: BTreeMap<String, Verdict> = BTreeMap::new();
    let total = 100;
    for i in 0..total {
        let subject = i % emails.len();
        let (claim, threshold) = questions[(i / emails.len()) % questions.len()];
        let id = format!("z{i:03}");
        rp.send(&request(
            &t,
            "acme",
            &id,
            claim,
            threshold,
            "registry",
            &tokens[subject],
        ));
        asked.insert(id, expected(members.get(subject), claim, threshold));
        rp.flush();
        std::thread::sleep(Duration::from_millis(150));
        if i == 30 || i == 60 {
            evidence.kill();
            std::thread::sleep(Duration::from_millis(700));
            evidence = serve_evidence(&t, "registry", evidence_port);
        }
    }
    let seen = wait_for(&t, "acme", total, &pipeline);
    let mut wrong = Vec::new();
    for (id, want) in &asked {
        let got = &seen[id];
        assert_eq!(got.len(), 1, "{id}: {} decisions", got.len());
        let Some(outcome) = got[0].outcomes.first() else {
            wrong.push(format!("{id}: rejected {:?}", got[0].rejection));
            continue;
        };
        if outcome.outcome != *want {
            wrong.push(format!(
                "{id}: {:?} ({:?}), expected {want:?}",
                outcome.outcome, outcome.reason
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{}", pipeline.log_tail());
    // Each verified residence reveals the member's own country, and nothing else.
    let mut disclosures = 0;
    for (id, got) in &seen {
        let o = &got[0].outcomes[0];
        if o.claim_name != "residence" || o.outcome != Verdict::Verified {
            continue;
        }
        let subject = id[1..].parse::<usize>().unwrap() % emails.len();
        let d = o
            .evidence
            .iter()
            .find_map(|e| e.disclosure.as_ref())
            .expect("a verified residence carries its disclosure");
        let revealed: Vec<(&str, &str)> = d
            .disclosed
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(revealed, [("country", members[subject].country)], "{id}");
        disclosures += 1;
    }
    assert!(disclosures >= 15, "{disclosures} disclosures");
    let (_, metrics) = http_get(evidence_port, "/metrics").unwrap();
    pavilion_runtime::telemetry::assert_promtool_accepts("evidence service metrics", &metrics);
    assert!(
        metrics.contains(
            "pavilion_evidence_answers_total{circuit=\"date_le_cutoff\",status=\"proved\"}"
        ),
        "{metrics}"
    );

    // The relying party checks a proof, and a disclosure, from the signed token alone, each
    // with another library.
    let (zk, request_id) = signed_evidence(&seen, "age_over", "zk_predicate");
    python_verifies(&zk, &request_id);
    let (disclosure, request_id) = signed_evidence(&seen, "residence", "bbs_disclosure");
    javascript_verifies(&disclosure["bbs"], &request_id);

    // A provider that never answers: unavailable with the reason within the deadline (15 s in
    // this topology), and after three timeouts in a row its breaker opens.
    let silent_tokens = self::tokens(&t, "beta", "silent", &["adult@example.com"]);
    let rp_beta = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: t.topic("requests"),
    };
    let started = Instant::now();
    for i in 0..4 {
        rp_beta.send(&request(
            &t,
            "beta",
            &format!("s{i}"),
            "income_over",
            1000,
            "silent",
            &silent_tokens[0],
        ));
        rp_beta.flush();
        if i == 2 {
            // The first three time out; the fourth finds the breaker open.
            wait_for(&t, "beta", 3, &pipeline);
        }
    }
    let beta = wait_for(&t, "beta", 4, &pipeline);
    let reasons: Vec<String> = beta
        .values()
        .map(|d| d[0].outcomes[0].reason.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        reasons,
        [
            "silent: provider_timeout",
            "silent: provider_timeout",
            "silent: provider_timeout",
            "silent: circuit_open"
        ],
        "in request order"
    );
    assert!(beta
        .values()
        .all(|d| d[0].outcomes[0].outcome == Verdict::Unavailable));
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(
        metric(
            &metrics,
            "pavilion_stage_events_total{event=\"breaker.opened\",label=\"silent\",stage=\"psi\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(metric(&metrics, "pavilion_stage_events_total{event=\"proofs.verified\",label=\"date_le_cutoff\",stage=\"psi\"}") >= 1.0);

    // Idle, the fused task punctuates every 50 ms (psi's interval) and commits nothing.
    let committed = |metrics: &str| {
        metric(
            metrics,
            "pavilion_transactions_total{outcome=\"committed\",task=\"policy\"",
        )
    };
    std::thread::sleep(Duration::from_secs(2));
    let before = committed(&http_get(port, "/metrics").unwrap().1);
    std::thread::sleep(Duration::from_secs(3));
    let after = committed(&http_get(port, "/metrics").unwrap().1);
    assert!(
        after - before <= 1.0,
        "{} transactions committed while idle",
        after - before
    );

    drop(evidence);
    scan(&t, &members, &pipeline);
}

/// The evidence of `kind` in the signed payload of a decision that verified `claim`, and the
/// decision's request id.
fn signed_evidence(
    seen: &BTreeMap<String, Vec<Decision>>,
    claim: &str,
    kind: &str,
) -> (serde_json::Value, String) {
    let verified = seen
        .values()
        .map(|d| &d[0])
        .find(|d| d.outcomes[0].outcome == Verdict::Verified && d.outcomes[0].claim_name == claim)
        .unwrap_or_else(|| panic!("no verified {claim}"));
    let Payload::Text(token) = &verified.payload else {
        panic!("a JWT is text")
    };
    let payload: serde_json::Value =
        serde_json::from_slice(&B64URL.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let evidence = payload["claims"][0]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in the signed payload"))
        .clone();
    (evidence, verified.request_id.clone())
}

/// `@digitalbazaar/bbs-signatures` checks a disclosure from the payload's `bbs` object, with
/// the nonce the relying party derives from its own request id.
fn javascript_verifies(bbs: &serde_json::Value, request_id: &str) {
    let hex_of = |field: &str| hex::encode(B64URL.decode(bbs[field].as_str().unwrap()).unwrap());
    let nonce =
        pavilion_zk::field_to_bytes(pavilion_zk::nonce_from_request_id(request_id.as_bytes()));
    assert_eq!(hex_of("presentation_header"), hex::encode(nonce));
    let input = serde_json::json!({
        "publicKey": hex_of("public_key"),
        "proof": hex_of("proof"),
        "header": hex_of("header"),
        "presentationHeader": hex::encode(nonce),
        "disclosed": bbs["disclosed"].as_array().unwrap().iter()
            .map(|a| serde_json::json!([a["index"], hex::encode(a["value"].as_str().unwrap())]))
            .collect::<Vec<_>>(),
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/bbs-js");
    let out = with_stdin(
        Command::new("node").arg(root.join("verify.mjs")),
        input.to_string().as_bytes(),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"verified":true}"#,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `examples/python/verify_zk.py` (py_ecc) checks the evidence against the pinned keys.
fn python_verifies(evidence: &serde_json::Value, request_id: &str) {
    let python = std::env::var("PAVILION_PYTHON").expect(
        "PAVILION_PYTHON must name a Python with examples/python/requirements.txt installed (scripts/test sets it up)",
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = with_stdin(
        Command::new(python)
            .arg(root.join("examples/python/verify_zk.py"))
            .arg(root.join("zk/artifacts"))
            .arg(request_id),
        evidence.to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "py_ecc did not verify {evidence}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scan(t: &TestTopology, members: &[Member], pipeline: &Pipeline) {
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for m in members {
        // exact18 sits exactly on both bounds: its birth date is the day 18 years ago and its
        // income the threshold asked, public parameters of the questions that travel by
        // design. Everyone else's values are private.
        if m.email == "exact18@example.com" {
            continue;
        }
        {
            let (text, number) = &m.birthdate;
            needles.push((format!("birth date {text}"), text.clone().into_bytes()));
            needles.push((
                format!("birth date {number}"),
                number.to_string().into_bytes(),
            ));
            needles.push((
                format!("birth date {number} (u64 BE)"),
                number.to_be_bytes().to_vec(),
            ));
            needles.push((
                format!("birth date {number} (u64 LE)"),
                number.to_le_bytes().to_vec(),
            ));
        }
        needles.push((
            format!("income {}", m.income),
            m.income.to_string().into_bytes(),
        ));
        needles.push((
            format!("income {} (u64 BE)", m.income),
            m.income.to_be_bytes().to_vec(),
        ));
        needles.push((
            format!("income {} (u64 LE)", m.income),
            m.income.to_le_bytes().to_vec(),
        ));
        // Signed in the same BBS set as the disclosed country, never disclosed.
        needles.push((format!("note {}", m.note), m.note.as_bytes().to_vec()));
    }
    privacy_scan(t, &needles, "registry.csv", &["a.log", "cli.log"], 20);
    let tail = pipeline.log_tail();
    for (name, needle) in &needles {
        assert!(
            !tail
                .as_bytes()
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "{name} in the log tail"
        );
    }
}

/// The test plays a hostile provider, `mallory`: it reads the broker's proof requests from
/// mallory's topic and answers each with something that must not pass — the broker refuses
/// every one with its reason, its breaker opens, and bytes that are no answer are a dead
/// letter.
#[test]
fn hostile_answers_on_the_real_broker_are_refused_each_with_its_reason() {
    use pavilion_provider::attributes::AttributeBook;
    use pavilion_schemas::{EvidenceRequest, EvidenceResponse, EvidenceStatus};
    use pavilion_zk::{
        nonce_from_request_id, subject_binding, AttributeType, Circuit, Prover, WitnessInputs,
    };

    let _serial = serial();
    let t = TestTopology::with_yaml("zk-hostile", |prefix| {
        full_path_topology(prefix, &["age_over"], true)
    });
    let dir = t.dir.path().to_owned();
    let env = audit_env(&t);
    ok(cli_env(&t, &env, &["keys", "generate"]));
    t.active_tenant("acme", "k1");
    let policy = POLICY.replace("id: registry", "id: mallory");
    std::fs::write(dir.join("acme.yaml"), policy).unwrap();
    t.cli_ok(&[
        "policy",
        "push",
        dir.join("acme.yaml").to_str().unwrap(),
        "--activate",
    ]);
    let members = members();
    let csv = members_csv(&members);
    let _oprf = provider_with_attributes(&t, "mallory", &csv);
    // Mallory holds its own openings, so it can make valid proofs — for other questions.
    let book = AttributeBook::open(
        &std::fs::read(dir.join("mallory.provider-attributes")).unwrap(),
        PASSPHRASE.as_bytes(),
    )
    .unwrap();
    let emails = ["adult@example.com", "teen@example.com"];
    let tokens = tokens(&t, "acme", "mallory", &emails);
    let keys: Vec<[u8; 32]> = tokens
        .iter()
        .map(|tk| pavilion_schemas::set_key("mallory", tk))
        .collect();
    let mut date_prover = Prover::new(Circuit::DateLeCutoff).unwrap();
    let mut int_prover = Prover::new(Circuit::IntGeThreshold).unwrap();
    let mut prove = |circuit: Circuit, subject: usize, bound: i64, request_id: &str| {
        let opening = book.opening(&keys[subject], "birthdate").unwrap();
        let inputs = WitnessInputs {
            attribute: opening.value,
            attribute_type: AttributeType::named("birthdate"),
            subject_binding: subject_binding(&keys[subject]),
            salt: opening.salt().unwrap(),
            bound: bound as u64,
            nonce: nonce_from_request_id(request_id.as_bytes()),
        };
        let prover = match circuit {
            Circuit::DateLeCutoff => &mut date_prover,
            Circuit::IntGeThreshold => &mut int_prover,
        };
        prover
            .prove(&inputs, &mut pavilion_zk::rand::OsRng)
            .unwrap()
            .to_bytes()
    };

    let port = free_port();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let pipeline = t.spawn_with("a", Some(port), &env_refs);
    await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);
    let asks =
        pavilion_kafka::TopicReader::new(&settings(), &[&t.topic("evidence.requests.mallory")])
            .unwrap();
    let rp = Rp {
        producer: PlainProducer::new(&settings()).unwrap(),
        topic: t.topic("requests"),
    };
    let answers = PlainProducer::new(&settings()).unwrap();
    let registry = Registry::builtin();
    // Sends request `id` about member `subject`, reads the broker's question, answers it with
    // `proof` (given the question), and returns the claim's reason once decided.
    let case = |id: &str, subject: usize, proof: &mut dyn FnMut(&EvidenceRequest) -> Vec<u8>| {
        let before = decisions(&t, "acme").len();
        rp.send(&request(
            &t,
            "acme",
            id,
            "age_over",
            18,
            "mallory",
            &tokens[subject],
        ));
        rp.flush();
        let question: EvidenceRequest = loop {
            let Some(r) = asks.poll(Duration::from_secs(30)).unwrap() else {
                let (_, metrics) = http_get(port, "/metrics").unwrap();
                let decided = decisions(&t, "acme");
                panic!(
                    "{id}: no proof request in 30 s; decided: {:?}; psi: {}",
                    decided
                        .get(id)
                        .map(|d| (d[0].outcomes[0].outcome, d[0].outcomes[0].reason.clone())),
                    metrics
                        .lines()
                        .filter(|l| l.contains("stage=\"psi\""))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            };
            let q: EvidenceRequest = registry.decode(&r.value.unwrap()).unwrap();
            if q.attempt == 1
                && q.nonce == pavilion_zk::field_to_bytes(nonce_from_request_id(id.as_bytes()))
            {
                break q;
            }
        };
        let response = EvidenceResponse {
            provider_id: "mallory".into(),
            set_key: question.set_key.clone(),
            circuit: question.circuit.clone(),
            bound: question.bound,
            nonce: question.nonce.clone(),
            status: EvidenceStatus::Proved,
            proof: Some(proof(&question)),
            detail: None,
            proved_at: now_ms(),
            proving_ms: 20,
            disclosure: None,
        };
        answers
            .send_to(
                &t.topic("evidence.responses"),
                question.reply_partition,
                b"m",
                &registry.encode(&response).unwrap(),
            )
            .unwrap();
        answers.flush().unwrap();
        let decided = wait_for(&t, "acme", before + 1, &pipeline);
        if !decided.contains_key(id) {
            let (_, metrics) = http_get(port, "/metrics").unwrap();
            panic!(
                "{id} undecided: {}",
                metrics
                    .lines()
                    .filter(|l| l.contains("stage_events"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        decided[id][0].outcomes[0]
            .reason
            .clone()
            .unwrap_or_default()
    };

    let honest = prove(
        Circuit::DateLeCutoff,
        0,
        years_ago(18, 0).1 as i64,
        "earlier",
    );
    let forged = {
        let mut f = honest.clone();
        f[..32].copy_from_slice(&honest[96..]);
        f[96..].copy_from_slice(&honest[..32]);
        f
    };
    assert_eq!(
        case("h-replayed", 0, &mut |_| honest.clone()),
        "mallory: bad_proof"
    );
    assert_eq!(
        case("h-forged", 0, &mut |_| forged.clone()),
        "mallory: bad_proof"
    );
    assert_eq!(
        case("h-garbled", 0, &mut |_| vec![0x5a; 128]),
        "mallory: bad_proof"
    );
    // Three failures in a row: the breaker is open, mallory is not even asked.
    rp.send(&request(
        &t, "acme", "h-open", "age_over", 18, "mallory", &tokens[0],
    ));
    rp.flush();
    let decided = wait_for(&t, "acme", 4, &pipeline);
    assert_eq!(
        decided["h-open"][0].outcomes[0].reason.as_deref(),
        Some("mallory: circuit_open")
    );

    // After each cooldown (10 s here) one probe goes through, and fails again.
    let probe = |id: &str,
                 subject: usize,
                 proof: &mut dyn FnMut(&EvidenceRequest) -> Vec<u8>,
                 want: &str| {
        std::thread::sleep(Duration::from_secs(11));
        assert_eq!(case(id, subject, proof), want, "{id}");
    };
    probe(
        "h-wrong-bound",
        0,
        &mut |q: &EvidenceRequest| prove(Circuit::DateLeCutoff, 0, q.bound - 1, "h-wrong-bound"),
        "mallory: bad_proof",
    );
    probe(
        "h-other-circuit",
        1, // the teen: "born on or after the cutoff" holds and proves under the other circuit
        &mut |q: &EvidenceRequest| prove(Circuit::IntGeThreshold, 1, q.bound, "h-other-circuit"),
        "mallory: bad_proof",
    );
    probe(
        "h-oversized",
        0,
        &mut |_: &EvidenceRequest| vec![0; 4096],
        "mallory: bad_response",
    );
    // Bytes that are no answer at all: a dead letter naming why.
    answers
        .send_to(&t.topic("evidence.responses"), 0, b"m", b"\xc3\x01garbage")
        .unwrap();
    answers.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dead_letters(&t)
        .iter()
        .any(|d| d.source_topic == t.topic("evidence.responses"))
    {
        assert!(Instant::now() < deadline, "no dead letter for the garbage");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(metric(&metrics, "pavilion_stage_events_total{event=\"proofs.rejected\",label=\"date_le_cutoff\",stage=\"psi\"}") >= 4.0, "{metrics}");
}

/// The evidence service's group member goes on when a rebalance takes a partition whose
/// record it is answering: librdkafka refuses to store that record's offset (`_STATE`), which
/// used to end the service (a second instance joining, or one coming back, did it); the
/// partition's new owner reads the record again.
#[test]
fn a_rebalance_under_a_record_in_hand_leaves_the_group_reader_running() {
    let _serial = serial();
    let t = TestTopology::new("group-reader", 2, false);
    let topic = t.topic("events");
    let producer = PlainProducer::new(&settings()).unwrap();
    for partition in 0..2 {
        producer.send_to(&topic, partition, b"k", b"v").unwrap();
    }
    producer.flush().unwrap();
    let group = format!("{}.answerers", t.prefix);
    let deadline = Instant::now() + Duration::from_secs(60);
    let a = GroupReader::subscribe(&settings(), &group, "a", &[&topic]).unwrap();
    let mut in_hand = Vec::new();
    while in_hand.len() < 2 {
        assert!(Instant::now() < deadline, "a read only {in_hand:?}");
        in_hand.extend(a.poll(Duration::from_millis(100)).unwrap());
    }
    // b joins: the group rebalances, and one of a's two partitions becomes b's, which reads
    // its record again (nothing was committed).
    let b = GroupReader::subscribe(&settings(), &group, "b", &[&topic]).unwrap();
    let moved = loop {
        assert!(Instant::now() < deadline, "b was given no partition");
        a.poll(Duration::from_millis(100)).unwrap();
        if let Some(r) = b.poll(Duration::from_millis(100)).unwrap() {
            break r.partition;
        }
    };
    for r in &in_hand {
        a.done(&r.topic, r.partition, r.offset).unwrap_or_else(|e| {
            panic!(
                "a, marking its record of partition {} (b's now: {moved}): {e:#}",
                r.partition
            )
        });
    }
}
