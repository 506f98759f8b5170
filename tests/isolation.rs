//! Isolation on the secured broker: each principal `pavilion acls apply` and `pavilion tenant
//! add` make may do what its role needs and nothing else, and a connection without valid
//! credentials gets nowhere. Every case is tried with a raw Kafka client, as an attacker
//! holding that principal's credentials would, against the real broker of `scripts/infra`.
//!
//! The table of cases is printed in the README ("Who may do what on Kafka"); this test fails
//! when the two differ, printing the table as it should read.

mod util;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use util::*;

const PASSPHRASE: &str = "isolation provider passphrase";
/// How long one case may take to show its outcome.
const PATIENCE: Duration = Duration::from_secs(15);

/// Every error librdkafka reports to the client, kept for the case's verdict, and its
/// warnings (a plaintext client talking to a TLS port gets no error: it is disconnected and
/// retries).
#[derive(Default)]
struct Errors(Mutex<Vec<String>>, Mutex<Vec<String>>);

impl Errors {
    fn first(&self) -> Option<String> {
        self.0.lock().unwrap().first().cloned()
    }

    fn first_warning(&self) -> Option<String> {
        self.1.lock().unwrap().first().cloned()
    }
}

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // A TLS port closes a plaintext connection at its first request; librdkafka says so
        // only at info level.
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32)
            || message.contains("in state APIVERSION_QUERY")
        {
            self.1
                .lock()
                .unwrap()
                .push(format!("{facility}: {message}"));
        }
    }
}

impl ConsumerContext for Errors {}

impl ProducerContext for Errors {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().unwrap().push(e.to_string());
        }
    }
}

/// What a case saw: allowed (with what it got), or refused (with the broker's reason).
#[derive(Debug)]
enum Outcome {
    Allowed(String),
    Refused(String),
}

/// A client configured from a credential file (or the admin's, changed by `edit`).
fn config(credential: &Path, edit: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap());
    for (k, v) in pavilion_kafka::read_client_properties(credential).unwrap() {
        c.set(k, v);
    }
    for (k, v) in edit {
        c.set(*k, *v);
    }
    c
}

fn user_of(credential: &Path) -> String {
    pavilion_kafka::read_client_properties(credential)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "sasl.username")
        .map_or_else(|| "ANONYMOUS".into(), |(_, v)| v)
}

/// Reads every partition of `topic` from the beginning until each is at its end. A refused
/// topic shows in its metadata (a consumer assigned its partitions just waits); the read is
/// tried anyway and must return nothing.
fn read(credential: &Path, topic: &str, partitions: i32) -> Outcome {
    let group = format!("{}.probe", user_of(credential));
    let consumer: BaseConsumer<Errors> = config(credential, &[])
        .set("group.id", &group)
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create_with_context(Errors::default())
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), PATIENCE).unwrap();
    let refused = metadata.topics()[0]
        .error()
        .map(|code| RDKafkaErrorCode::from(code).to_string());
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let (mut records, mut at_end) = (0, 0);
    let deadline = Instant::now()
        + if refused.is_some() {
            Duration::from_secs(3)
        } else {
            PATIENCE
        };
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => records += 1,
            Some(Err(KafkaError::PartitionEOF(_))) => {
                at_end += 1;
                if at_end == partitions && refused.is_none() {
                    return Outcome::Allowed(format!("{records} records"));
                }
            }
            Some(Err(e)) if refused.is_none() => {
                assert_eq!(records, 0, "records read before the refusal of {topic}");
                return Outcome::Refused(e.to_string());
            }
            _ => {}
        }
    }
    match refused {
        Some(reason) => {
            assert_eq!(records, 0, "{topic} refused, yet {records} records were read");
            Outcome::Refused(reason)
        }
        None => panic!(
            "reading {topic}: neither refused nor at its end within {PATIENCE:?} ({records} records)"
        ),
    }
}

/// Produces one record to `topic` and waits for its acknowledgement.
fn write(credential: &Path, topic: &str) -> Outcome {
    let producer: BaseProducer<Errors> = config(credential, &[])
        .set("message.timeout.ms", "10000")
        .create_with_context(Errors::default())
        .unwrap();
    producer
        .send(BaseRecord::to(topic).key("probe").payload("not allowed?"))
        .unwrap();
    // A refused record ends the flush as an acknowledged one does; its delivery report, in
    // the context, tells them apart.
    let flushed = producer.flush(PATIENCE);
    match (producer.context().first(), flushed) {
        (Some(e), _) => Outcome::Refused(e),
        (None, Ok(())) => Outcome::Allowed("acknowledged".into()),
        (None, Err(e)) => panic!("writing {topic}: neither refused nor acknowledged: {e}"),
    }
}

/// Joins `group`, subscribed to `topic`, until the group assigns it partitions.
fn join(credential: &Path, group: &str, topic: &str) -> Outcome {
    let consumer: BaseConsumer<Errors> = config(credential, &[])
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create_with_context(Errors::default())
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(200)) {
            return Outcome::Refused(e.to_string());
        }
        if let Some(e) = consumer.context().first() {
            return Outcome::Refused(e);
        }
        if consumer.assignment().is_ok_and(|a| a.count() > 0) {
            return Outcome::Allowed("assigned".into());
        }
    }
    panic!("joining {group}: neither refused nor assigned within {PATIENCE:?}");
}

/// Starts a transactional producer with `transactional_id`.
fn transact(credential: &Path, transactional_id: &str) -> Outcome {
    let producer: BaseProducer<Errors> = config(credential, &[])
        .set("transactional.id", transactional_id)
        .create_with_context(Errors::default())
        .unwrap();
    match producer.init_transactions(PATIENCE) {
        Ok(()) => Outcome::Allowed("initialized".into()),
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

/// Connects and asks for the cluster's metadata.
fn connect(mut config: ClientConfig) -> Outcome {
    // With a group, librdkafka forwards the client's errors to the queue `poll` serves.
    let consumer: BaseConsumer<Errors> = config
        .set("group.id", "isolation.probe")
        .set_log_level(RDKafkaLogLevel::Info)
        .create_with_context(Errors::default())
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let answer = consumer.fetch_metadata(None, Duration::from_secs(1));
        // Each poll serves one event at most: drain them.
        for _ in 0..100 {
            consumer.poll(Duration::ZERO);
        }
        if let Some(e) = consumer.context().first() {
            return Outcome::Refused(e);
        }
        if answer.is_ok() {
            return Outcome::Allowed("metadata".into());
        }
    }
    match consumer.context().first_warning() {
        Some(warning) => Outcome::Refused(warning),
        None => panic!("connecting: neither refused nor answered within {PATIENCE:?}"),
    }
}

/// One row of the table.
struct Case {
    principal: String,
    operation: &'static str,
    resource: String,
    allowed: bool,
    outcome: Outcome,
    /// Words the refusal must name (the kind of error), lower-case.
    because: &'static str,
}

/// A client certificate and key from a CA of its own (made with openssl in `dir`), and that
/// CA's certificate.
fn foreign_client_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = |name: &str| {
        run(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            name,
        ])
    };
    key("rogue-ca.key");
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "rogue-ca.key",
        "-subj",
        "/CN=rogue CA",
        "-days",
        "2",
        "-out",
        "rogue-ca.pem",
    ]);
    key("rogue.key");
    run(&[
        "req",
        "-new",
        "-key",
        "rogue.key",
        "-subj",
        "/CN=rogue",
        "-out",
        "rogue.csr",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "rogue.csr",
        "-CA",
        "rogue-ca.pem",
        "-CAkey",
        "rogue-ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "rogue.pem",
    ]);
    (
        dir.join("rogue.pem"),
        dir.join("rogue.key"),
        dir.join("rogue-ca.pem"),
    )
}

#[test]
fn each_principal_may_do_what_its_role_needs_and_nothing_else() {
    let _serial = serial();
    assert!(
        std::env::var_os("PAVILION_KAFKA_CONFIG").is_some(),
        "the secured broker of `scripts/infra env` (its PAVILION_KAFKA_CONFIG) is needed"
    );
    let t = TestTopology::with_yaml("isolation", |prefix| {
        with_analytics(
            prefix,
            with_audit(
                prefix,
                full_path_topology(prefix, &["age_over"], true),
                AUDIT_INPUTS,
                &[],
            ),
            "",
        )
    });
    let env = audit_env(&t);
    ok(cli_env(&t, &env, &["keys", "generate"]));
    let creds = t.dir.path().join("credentials");
    let credential = |user: &str| creds.join(format!("{}.{user}.properties", t.prefix));

    // Two tenants, each with its credential from `tenant add`; two providers, one with a set.
    for tenant in ["a", "b"] {
        let file = credential(&format!("tenant.{tenant}"));
        t.cli_ok(&[
            "tenant",
            "add",
            tenant,
            "--name",
            tenant,
            "--activate",
            "--rate",
            "1000",
            "--burst",
            "1000",
            "--kafka-credentials",
            file.to_str().unwrap(),
        ]);
    }
    let keys = [t.add_key("a", "k1"), t.add_key("b", "k1")];
    for (provider, claims) in [("bank", "account_verified"), ("fraud", "fraud_listed")] {
        let url = format!("http://127.0.0.1:{}", free_port());
        provider_cli_ok(
            &t,
            PASSPHRASE,
            &[
                "provider",
                "onboard",
                provider,
                "--region",
                "eu",
                "--claims",
                claims,
                "--oprf-url",
                &url,
            ],
        );
    }
    std::fs::write(
        t.dir.path().join("bank.csv"),
        "email,claims\nx@example.com,account_verified\n",
    )
    .unwrap();
    provider_cli_ok(
        &t,
        PASSPHRASE,
        &[
            "provider",
            "load",
            "bank",
            "--from",
            "bank.csv",
            "--claims-column",
            "claims",
        ],
    );
    let applied = t.cli_ok(&[
        "acls",
        "apply",
        "--credentials-dir",
        creds.to_str().unwrap(),
    ]);
    assert!(applied.contains("credentials issued"), "{applied}");
    let plan = t.cli(&["acls", "plan", "--check"]);
    assert!(
        plan.status.success(),
        "acls plan --check after apply: {}",
        ok(plan)
    );

    // The pipeline, each task as its own principal, and tenant a's request through it.
    let mut run_env: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let creds_dir = creds.display().to_string();
    run_env.push(("PAVILION_KAFKA_CREDENTIALS", &creds_dir));
    let metrics = free_port();
    let mut pipeline = t.spawn_with("iso", Some(metrics), &run_env);
    pipeline.wait_ready(metrics, Duration::from_secs(120));
    // Each tenant sends a request with its own credential; each gets its decision.
    for (tenant, key) in ["a", "b"].into_iter().zip(&keys) {
        let rp = Rp {
            producer: pavilion_kafka::PlainProducer::new(&settings_from(&credential(&format!(
                "tenant.{tenant}"
            ))))
            .unwrap(),
            topic: t.topic("requests"),
        };
        rp.send(&signed(tenant, &format!("iso-{tenant}"), "k1", key));
        rp.flush();
    }
    for tenant in ["a", "b"] {
        let decisions = t.topic(&format!("decisions.{tenant}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while pavilion_kafka::topics_with_prefix(&settings(), &decisions)
            .is_ok_and(|t| t.is_empty())
            || read_all(&decisions).is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "no decision for {tenant}: {}",
                pipeline.log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (tenant_a, decisions_a) = (credential("tenant.a"), t.topic("decisions.a"));

    let (tenant_b, auditor, tenancy, bank, fraud) = (
        credential("tenant.b"),
        credential("auditor"),
        credential("task.tenancy"),
        credential("provider.bank"),
        credential("provider.fraud"),
    );
    let mut cases = Vec::new();
    let mut case = |who: &str, operation, resource: &str, allowed, because, outcome| {
        cases.push(Case {
            principal: who.to_owned(),
            operation,
            resource: resource.to_owned(),
            allowed,
            outcome,
            because,
        })
    };
    let topic = |name: &str| t.topic(name);
    let denied_topic = "topic authorization failed";

    // Tenant a: its ingest and its own decisions, nothing else.
    case(
        &user_of(&tenant_a),
        "write",
        &topic("requests"),
        true,
        "",
        write(&tenant_a, &topic("requests")),
    );
    case(
        &user_of(&tenant_a),
        "read",
        &decisions_a,
        true,
        "",
        read(&tenant_a, &decisions_a, 3),
    );
    for name in [
        "decisions.b",
        "log",
        "tenants",
        "policies",
        "sets.bank",
        "requests",
    ] {
        let partitions = if name == "sets.bank" { 2 } else { 3 };
        case(
            &user_of(&tenant_a),
            "read",
            &topic(name),
            false,
            denied_topic,
            read(&tenant_a, &topic(name), partitions),
        );
    }
    // Its own analytics releases, never another's, the raw increments or the queries.
    let releases_a = topic("releases.a");
    case(
        &user_of(&tenant_a),
        "read",
        &releases_a,
        true,
        "",
        read(&tenant_a, &releases_a, 3),
    );
    for name in ["releases.b", "releases", "counts", "queries"] {
        case(
            &user_of(&tenant_a),
            "read",
            &topic(name),
            false,
            denied_topic,
            read(&tenant_a, &topic(name), 3),
        );
    }
    for name in ["tenants", "policies", "providers", "decisions.b", "queries"] {
        case(
            &user_of(&tenant_a),
            "write",
            &topic(name),
            false,
            denied_topic,
            write(&tenant_a, &topic(name)),
        );
    }
    let tenancy_group = t.prefix.clone() + ".tenancy";
    case(
        &user_of(&tenant_a),
        "join group",
        &tenancy_group,
        false,
        "group authorization failed",
        join(&tenant_a, &tenancy_group, &topic("requests")),
    );
    let tenancy_txn = format!("{}.tenancy.iso", t.prefix);
    case(
        &user_of(&tenant_a),
        "transactional id",
        &tenancy_txn,
        false,
        "transactional id authorization failed",
        transact(&tenant_a, &tenancy_txn),
    );
    case(
        &user_of(&tenant_b),
        "read",
        &decisions_a,
        false,
        denied_topic,
        read(&tenant_b, &decisions_a, 3),
    );

    // A task: its inputs and its own transactional ids, not another task's or a tenant's topic.
    case(
        &user_of(&tenancy),
        "read",
        &topic("tenants"),
        true,
        "",
        read(&tenancy, &topic("tenants"), 3),
    );
    case(
        &user_of(&tenancy),
        "read",
        &decisions_a,
        false,
        denied_topic,
        read(&tenancy, &decisions_a, 3),
    );
    let policy_txn = format!("{}.policy.iso", t.prefix);
    case(
        &user_of(&tenancy),
        "transactional id",
        &policy_txn,
        false,
        "transactional id authorization failed",
        transact(&tenancy, &policy_txn),
    );
    let policy_group = t.prefix.clone() + ".policy";
    case(
        &user_of(&tenancy),
        "join group",
        &policy_group,
        false,
        "group authorization failed",
        join(&tenancy, &policy_group, &topic("accepted")),
    );

    // The auditor reads the log; it writes nothing.
    case(
        &user_of(&auditor),
        "read",
        &topic("log"),
        true,
        "",
        read(&auditor, &topic("log"), 3),
    );
    case(
        &user_of(&auditor),
        "write",
        &topic("log"),
        false,
        denied_topic,
        write(&auditor, &topic("log")),
    );
    case(
        &user_of(&auditor),
        "write",
        &topic("requests"),
        false,
        denied_topic,
        write(&auditor, &topic("requests")),
    );

    // A provider reads its own set, not another's.
    case(
        &user_of(&bank),
        "read",
        &topic("sets.bank"),
        true,
        "",
        read(&bank, &topic("sets.bank"), 2),
    );
    case(
        &user_of(&fraud),
        "read",
        &topic("sets.bank"),
        false,
        denied_topic,
        read(&fraud, &topic("sets.bank"), 2),
    );
    case(
        &user_of(&fraud),
        "write",
        &topic("sets.bank"),
        false,
        denied_topic,
        write(&fraud, &topic("sets.bank")),
    );

    // Connections without valid credentials.
    let auth = "authentication";
    let wrong = t.dir.path().join("wrong.properties");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&tenant_a)
            .unwrap()
            .replace("sasl.password=", "sasl.password=x"),
    )
    .unwrap();
    case(
        &user_of(&wrong),
        "connect (wrong password)",
        &bootstrap(),
        false,
        auth,
        connect(config(&wrong, &[])),
    );
    let nobody = t.dir.path().join("nobody.properties");
    std::fs::write(
        &nobody,
        std::fs::read_to_string(&tenant_a)
            .unwrap()
            .replace("tenant.a", "tenant.nobody"),
    )
    .unwrap();
    case(
        &user_of(&nobody),
        "connect (no such user)",
        &bootstrap(),
        false,
        auth,
        connect(config(&nobody, &[])),
    );
    // Clients authenticate with SCRAM; the listener that takes certificates is the
    // controller's (mTLS), which must refuse one from another CA.
    let rogue = foreign_client_certificate(t.dir.path());
    let controller = format!(
        "127.0.0.1:{}",
        std::env::var("PAVILION_CONTROLLER_PORT").unwrap_or_else(|_| "9093".into())
    );
    let mut rogue_client = ClientConfig::new();
    rogue_client
        .set("bootstrap.servers", &controller)
        .set("security.protocol", "SSL")
        .set(
            "ssl.ca.location",
            std::env::var("PAVILION_KAFKA_CA").unwrap(),
        )
        .set("ssl.certificate.location", rogue.0.to_str().unwrap())
        .set("ssl.key.location", rogue.1.to_str().unwrap());
    case(
        "CN=rogue (certificate)",
        "connect (client certificate of another CA)",
        "the controller listener (mTLS)",
        false,
        "ssl",
        connect(rogue_client),
    );
    let other_ca = rogue.2.clone();
    case(
        &user_of(&tenant_a),
        "connect (broker checked against another CA)",
        &bootstrap(),
        false,
        "ssl",
        connect(config(
            &tenant_a,
            &[("ssl.ca.location", other_ca.to_str().unwrap())],
        )),
    );
    case(
        &user_of(&tenant_a),
        "connect (plaintext to the TLS port)",
        &bootstrap(),
        false,
        "disconnected",
        connect(
            ClientConfig::new()
                .set("bootstrap.servers", bootstrap())
                .set("security.protocol", "PLAINTEXT")
                .clone(),
        ),
    );

    // Suspending b revokes its credential and ACLs: an open consumer of b's is cut off.
    let reader: BaseConsumer<Errors> = config(&tenant_b, &[])
        .set("group.id", format!("{}.tenant.b.live", t.prefix))
        .set("enable.auto.commit", "false")
        .create_with_context(Errors::default())
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..3 {
        list.add_partition_offset(&t.topic("decisions.b"), p, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&list).unwrap();
    let warm = Instant::now() + PATIENCE;
    while !matches!(reader.poll(Duration::from_millis(200)), Some(Ok(_))) {
        assert!(
            Instant::now() < warm,
            "b's reader read nothing before the suspension"
        );
    }
    let suspending = Instant::now();
    t.cli_ok(&["tenant", "suspend", "b"]);
    let returned = suspending.elapsed();
    let cut_off = loop {
        match reader.poll(Duration::from_millis(100)) {
            Some(Err(e)) if !matches!(e, KafkaError::PartitionEOF(_)) => break e.to_string(),
            _ => {}
        }
        if let Some(e) = reader.context().first() {
            break e;
        }
        // The bound: ACLs apply to the next request, a deleted credential at the next
        // re-authentication (connections.max.reauth.ms, 30 s in scripts/infra).
        assert!(
            suspending.elapsed() < Duration::from_secs(35),
            "b's open reader still allowed 35 s after the suspension"
        );
    };
    println!(
        "suspended tenant b's open reader cut off {:.1?} after `tenant suspend` started (the command took {returned:.1?}): {cut_off}",
        suspending.elapsed()
    );
    case(
        &user_of(&tenant_b),
        "connect (after suspension)",
        &bootstrap(),
        false,
        auth,
        connect(config(&tenant_b, &[])),
    );

    pipeline.stop();
    assert!(
        !std::fs::read_to_string(&pipeline.log)
            .unwrap()
            .contains("authorization failed"),
        "a task was refused something its role needs: {}",
        pipeline.log_tail()
    );

    // Verdicts, then the table as the README prints it.
    let mut wrong_verdicts = Vec::new();
    for c in &cases {
        let (fine, seen) = match &c.outcome {
            Outcome::Allowed(what) => (c.allowed, format!("allowed: {what}")),
            Outcome::Refused(why) => (
                !c.allowed && why.to_lowercase().contains(c.because),
                format!("refused: {why}"),
            ),
        };
        println!("{} {} {}: {seen}", c.principal, c.operation, c.resource);
        if !fine {
            wrong_verdicts.push(format!(
                "{} {} {}: {:?}",
                c.principal, c.operation, c.resource, c.outcome
            ));
        }
    }
    // Names under the run's prefix as `<app>.…`, in code (markdown would read `<app>` as a tag).
    let anonymize = |s: &str| match s.replace(&bootstrap(), "the broker") {
        named if named.contains(&t.prefix) => format!("`{}`", named.replace(&t.prefix, "<app>")),
        other => other,
    };
    let mut table =
        String::from("| principal | operation | resource | expected |\n|---|---|---|---|\n");
    for c in &cases {
        table += &format!(
            "| {} | {} | {} | {} |\n",
            anonymize(&c.principal),
            c.operation,
            anonymize(&c.resource),
            if c.allowed { "allowed" } else { "refused" }
        );
    }
    println!("{table}");
    assert!(
        wrong_verdicts.is_empty(),
        "cases with the wrong outcome:\n{}",
        wrong_verdicts.join("\n")
    );
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "README.md's table of isolation cases differs; it should read:\n{table}"
    );
}

fn settings_from(credential: &Path) -> pavilion_kafka::KafkaSettings {
    let mut s = pavilion_kafka::KafkaSettings::new(bootstrap(), "isolation", std::env::temp_dir());
    s.overrides = pavilion_kafka::read_client_properties(credential).unwrap();
    s
}
