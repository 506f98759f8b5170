//! The client library against the real evaluation service on loopback: tokens equal the
//! provider's own evaluation, and every refusal is a clear 4xx with its code.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use pavilion_client::{ClientError, ClientTls, OprfClient, ProviderEndpoint, TenantCredentials};
use pavilion_http::local_ca::LocalCa;
use pavilion_http::ServerTls;
use pavilion_provider::normalize::{oprf_input, IdentifierKind};
use pavilion_provider::oprf::ProviderKey;
use pavilion_provider::service::{OprfService, ServiceLimits, TenantDirectory};
use pavilion_schemas::{RequestSigningKey, Tenant, TenantConfig, TenantState};

fn tenant(id: &str, state: TenantState, key: &SigningKey) -> Tenant {
    Tenant {
        stamp: None,
        tenant_id: id.into(),
        display_name: id.into(),
        state,
        signing_keys: vec![RequestSigningKey {
            key_id: "k1".into(),
            public_key: key.verifying_key().to_bytes().to_vec(),
            not_before: 0,
            not_after: None,
            revoked_at: None,
        }],
        config: TenantConfig {
            rate_limit_per_second: 10.0,
            burst: 10,
            daily_quota: None,
            allowed_regions: vec!["eu".into()],
            response_topic: format!("pavilion.decisions.{id}"),
            privacy_budget_micro: None,
        },
        updated_at: 0,
        revision: 1,
    }
}

struct Fixture {
    endpoint: ProviderEndpoint,
    key: ProviderKey,
    url: String,
}

/// Serves a provider with the given limits on a loopback port, in the background.
fn serve(limits: ServiceLimits, tenants: Vec<Tenant>) -> Fixture {
    serve_tls(limits, tenants, None)
}

/// [`serve`], in TLS when given.
fn serve_tls(limits: ServiceLimits, tenants: Vec<Tenant>, tls: Option<ServerTls>) -> Fixture {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let key = ProviderKey::derive(&[7; 32], b"test").unwrap();
    let public_key = key.public_key();
    let directory = Arc::new(TenantDirectory::default());
    for t in tenants {
        directory.update(t);
    }
    let service = Arc::new(
        OprfService::new(
            "bank",
            ProviderKey::from_bytes(&key.to_bytes()).unwrap(),
            directory,
            limits,
        )
        .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            pavilion_http::serve(listener, tls, service.router(), std::future::pending())
                .await
                .unwrap();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let url = format!("{scheme}://{addr}");
    Fixture {
        endpoint: ProviderEndpoint::single("bank", &url, public_key),
        key,
        url,
    }
}

fn credentials(tenant: &str, key: &SigningKey) -> TenantCredentials {
    TenantCredentials {
        tenant_id: tenant.into(),
        key_id: "k1".into(),
        signing_key: key.clone(),
    }
}

fn refused(result: Result<Vec<[u8; 64]>, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Refused { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn tokens_through_the_service_equal_the_providers_own_evaluation() {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let f = serve(
        ServiceLimits {
            rate_per_second: NonZeroU32::new(1_000_000).unwrap(),
            daily_quota: None,
            ..ServiceLimits::default()
        },
        vec![tenant("acme", TenantState::Active, &alice)],
    );
    let client = OprfClient::new(credentials("acme", &alice));
    let inputs: Vec<Vec<u8>> = (0..2_100)
        .map(|i| oprf_input(IdentifierKind::Email, &format!("user{i}@example.com")).unwrap())
        .collect();
    let tokens = client.tokens(&f.endpoint, &inputs).unwrap();
    assert_eq!(tokens.len(), 2_100, "three batches of at most 1,000");
    for (input, token) in inputs.iter().zip(&tokens) {
        assert_eq!(&f.key.evaluate(input).unwrap(), token);
    }
    // A provider that evaluates under another key than it registered is caught by the proof.
    let mut lying = f.endpoint.clone();
    lying.public_key = ProviderKey::derive(&[8; 32], b"test").unwrap().public_key();
    assert!(matches!(
        client.tokens(&lying, &inputs[..3]),
        Err(ClientError::Oprf { .. })
    ));
    let metrics = ureq::get(&format!("{}/metrics", f.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("pavilion_oprf_evaluations_total{tenant=\"acme\"} 2103"),
        "{metrics}"
    );
}

#[test]
fn unknown_tenants_bad_signatures_and_inactive_tenants_are_refused() {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let mallory = SigningKey::from_bytes(&[2; 32]);
    let f = serve(
        ServiceLimits::default(),
        vec![
            tenant("acme", TenantState::Active, &alice),
            tenant("paused", TenantState::Suspended, &alice),
        ],
    );
    let input = vec![oprf_input(IdentifierKind::Email, "a@example.com").unwrap()];
    let ask = |tenant: &str, key: &SigningKey| {
        refused(OprfClient::new(credentials(tenant, key)).tokens(&f.endpoint, &input))
    };
    assert_eq!(ask("nobody", &alice), (401, "unknown_tenant".into()));
    assert_eq!(ask("acme", &mallory), (401, "bad_signature".into()));
    assert_eq!(ask("paused", &alice), (403, "tenant_not_active".into()));
}

#[test]
fn malformed_points_oversize_batches_and_unsigned_calls_get_clear_errors() {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let f = serve(
        ServiceLimits {
            max_batch: 10,
            burst: NonZeroU32::new(10).unwrap(),
            ..ServiceLimits::default()
        },
        vec![tenant("acme", TenantState::Active, &alice)],
    );
    let client = OprfClient::new(credentials("acme", &alice));
    // The client library batches by 1,000, so 11 inputs exceed this service's limit of 10.
    let inputs: Vec<Vec<u8>> = (0..11).map(|i| format!("id:{i}").into_bytes()).collect();
    assert_eq!(
        refused(client.tokens(&f.endpoint, &inputs)),
        (413, "batch_too_large".into())
    );
    let raw = |body: &str| match ureq::post(&format!("{}/v1/oprf/evaluate", f.url))
        .set("content-type", "application/json")
        .send_string(body)
    {
        Err(ureq::Error::Status(status, r)) => (status, r.into_string().unwrap()),
        other => panic!("expected an error status, got {other:?}"),
    };
    let (status, body) = raw(r#"{"blinded": ["AAAA"]}"#);
    assert_eq!(status, 401);
    assert!(body.contains("missing_authentication"), "{body}");
    // A well-signed request whose element is not a point: sign it the way the client does.
    let body = br#"{"blinded":["AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="]}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let message = pavilion_provider::protocol::auth_message("bank", "acme", "k1", now, body);
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    let signature =
        base64::engine::general_purpose::STANDARD.encode(alice.sign(&message).to_bytes());
    let answer = ureq::post(&format!("{}/v1/oprf/evaluate", f.url))
        .set("x-pavilion-tenant", "acme")
        .set("x-pavilion-key-id", "k1")
        .set("x-pavilion-timestamp", &now.to_string())
        .set("x-pavilion-signature", &signature)
        .send_bytes(body);
    match answer {
        Err(ureq::Error::Status(400, r)) => {
            let text = r.into_string().unwrap();
            assert!(
                text.contains("malformed_element") && text.contains("element 0"),
                "{text}"
            );
        }
        other => panic!("expected 400, got {other:?}"),
    }
}

#[test]
fn the_rate_limit_and_the_daily_quota_stop_enumeration() {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let f = serve(
        ServiceLimits {
            max_batch: 5,
            rate_per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(5).unwrap(),
            daily_quota: Some(1_000),
            clock_skew: Duration::from_secs(60),
        },
        vec![tenant("acme", TenantState::Active, &alice)],
    );
    let client = OprfClient::new(credentials("acme", &alice));
    let five: Vec<Vec<u8>> = (0..5).map(|i| format!("id:{i}").into_bytes()).collect();
    client.tokens(&f.endpoint, &five).unwrap();
    assert_eq!(
        refused(client.tokens(&f.endpoint, &five[..1])),
        (429, "rate_limited".into())
    );
    let g = serve(
        ServiceLimits {
            max_batch: 5,
            rate_per_second: NonZeroU32::new(1_000).unwrap(),
            burst: NonZeroU32::new(5).unwrap(),
            daily_quota: Some(7),
            clock_skew: Duration::from_secs(60),
        },
        vec![tenant("acme", TenantState::Active, &alice)],
    );
    client.tokens(&g.endpoint, &five).unwrap();
    // Past the burst's refill (1,000/s), so only the quota can refuse.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        refused(client.tokens(&g.endpoint, &five[..3])),
        (429, "quota_exceeded".into())
    );
    // The refused batch was not charged: 2 more still fit in the quota of 7.
    client.tokens(&g.endpoint, &five[..2]).unwrap();
}

/// `/metrics` has a sample of every family (evaluations by tenant, refusals by reason, batch
/// time) and passes `promtool check metrics`; the alerts in ops/prometheus/alerts.yml read
/// the refusal reasons by these exact names.
#[test]
fn the_metrics_count_evaluations_and_refusals_by_reason_and_pass_promtool() {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let f = serve(
        ServiceLimits {
            max_batch: 5,
            rate_per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(5).unwrap(),
            daily_quota: None,
            clock_skew: Duration::from_secs(60),
        },
        vec![tenant("acme", TenantState::Active, &alice)],
    );
    let client = OprfClient::new(credentials("acme", &alice));
    let five: Vec<Vec<u8>> = (0..5).map(|i| format!("id:{i}").into_bytes()).collect();
    client.tokens(&f.endpoint, &five).unwrap();
    refused(client.tokens(&f.endpoint, &five[..1]));
    refused(OprfClient::new(credentials("nobody", &alice)).tokens(&f.endpoint, &five[..1]));
    let metrics = ureq::get(&format!("{}/metrics", f.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for line in [
        "pavilion_oprf_evaluations_total{tenant=\"acme\"} 5",
        "pavilion_oprf_refusals_total{reason=\"rate_limited\"} 1",
        "pavilion_oprf_refusals_total{reason=\"unknown_tenant\"} 1",
        "pavilion_oprf_batch_seconds_count 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    promtool_check_metrics(&metrics);
}

/// `promtool check metrics` (format and naming lint) on an exposition; `$PROMTOOL` names the
/// binary. Without promtool: a failure when `$CI` is set, a notice otherwise. (The same check
/// as `pavilion_runtime::telemetry::assert_promtool_accepts`, which this crate does not
/// depend on.)
fn promtool_check_metrics(exposition: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let mut child = match Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "`{promtool}` not found, and CI is set: install Debian's `prometheus` package \
                 (scripts/test does) or point $PROMTOOL at promtool"
            );
            eprintln!("SKIPPED promtool check of the OPRF metrics: `{promtool}` not found");
            return;
        }
        Err(e) => panic!("running `{promtool} check metrics`: {e}"),
    };
    // Small enough for the pipe: promtool reads it all before answering.
    let written = child.stdin.take().unwrap().write_all(exposition.as_bytes());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "`{promtool} check metrics` failed ({}):\n{}{}\n--- exposition ---\n{exposition}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    written.unwrap();
}

/// An independent RFC 9497 implementation, `@cloudflare/voprf-ts` (Node), as the client of
/// our service gets the same outputs as our client library and as the provider's own
/// evaluation. `scripts/test` installs it (`npm ci` in tests/interop/voprf-ts).
#[test]
fn voprf_ts_as_the_client_gets_the_same_outputs_as_ours() {
    // Read at run time: a test binary reused from another checkout's build must test this one.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let root = std::path::Path::new(&manifest_dir).join("../../tests/interop/voprf-ts");
    assert!(
        root.join("node_modules/@cloudflare/voprf-ts").exists(),
        "run `npm ci` in {} first (scripts/test does)",
        root.display()
    );
    let seed = [3u8; 32];
    let tenant_key = SigningKey::from_bytes(&seed);
    let f = serve(
        ServiceLimits::default(),
        vec![tenant("acme", TenantState::Active, &tenant_key)],
    );
    let inputs: Vec<Vec<u8>> = ["Alice@Example.com", "bob@example.com", "+49 30 1234567"]
        .iter()
        .zip([
            IdentifierKind::Email,
            IdentifierKind::Email,
            IdentifierKind::Phone,
        ])
        .map(|(raw, kind)| oprf_input(kind, raw).unwrap())
        .collect();
    let ours = OprfClient::new(credentials("acme", &tenant_key))
        .tokens(&f.endpoint, &inputs)
        .unwrap();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let out = std::process::Command::new("node")
        .current_dir(&root)
        .arg("client.mjs")
        .args([
            "--url",
            &f.url,
            "--provider",
            "bank",
            "--tenant",
            "acme",
            "--key-id",
            "k1",
        ])
        .args([
            "--seed",
            &hex(&seed),
            "--public-key",
            &hex(&f.endpoint.public_key),
        ])
        .args(inputs.iter().map(|i| String::from_utf8(i.clone()).unwrap()))
        .output()
        .expect("node is installed");
    assert!(
        out.status.success(),
        "voprf-ts client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let theirs: Vec<String> = theirs["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let ours: Vec<String> = ours.iter().map(|o| hex(o)).collect();
    assert_eq!(theirs, ours);
    for (input, output) in inputs.iter().zip(&ours) {
        assert_eq!(&hex(&f.key.evaluate(input).unwrap()), output);
    }
}

/// A service that requires client certificates admits a tenant only with a certificate of
/// its CA *and* a valid request signature; the client says which was missing.
#[test]
fn client_certificates_are_required_besides_the_tenant_signature() {
    let alice = SigningKey::from_bytes(&[1; 32]);
    let mallory = SigningKey::from_bytes(&[9; 32]);
    let server_ca = LocalCa::new("provider CA").unwrap();
    let tenants_ca = LocalCa::new("tenants CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let server = server_ca.server(&["127.0.0.1"]).unwrap();
    let tls = ServerTls::from_pem_files(
        &write("server.pem", &server.cert_pem),
        &write("server.key", &server.key_pem),
        Some(&write("tenants.pem", tenants_ca.cert_pem())),
    )
    .unwrap();
    let f = serve_tls(
        ServiceLimits::default(),
        vec![tenant("acme", TenantState::Active, &alice)],
        Some(tls),
    );
    assert!(f.url.starts_with("https://"));
    let acme = tenants_ca.client("acme").unwrap();
    let client_tls = |identity: bool| ClientTls {
        trusted_pem: Some(server_ca.cert_pem().as_bytes().to_vec()),
        identity_pem: identity.then(|| {
            (
                acme.cert_pem.as_bytes().to_vec(),
                acme.key_pem.as_bytes().to_vec(),
            )
        }),
    };
    let input = vec![oprf_input(IdentifierKind::Email, "alice@example.com").unwrap()];

    let tokens = OprfClient::with_tls(credentials("acme", &alice), &client_tls(true))
        .unwrap()
        .tokens(&f.endpoint, &input)
        .unwrap();
    assert_eq!(tokens, vec![f.key.evaluate(&input[0]).unwrap()]);

    // Without a certificate: a small request mostly meets the server's `certificate required`
    // alert, a large one a reset while it is being written (the client's hint then says why).
    let many: Vec<Vec<u8>> = (0..1000)
        .map(|i| oprf_input(IdentifierKind::Email, &format!("u{i}@example.com")).unwrap())
        .collect();
    for inputs in [&input, &many] {
        match OprfClient::with_tls(credentials("acme", &alice), &client_tls(false))
            .unwrap()
            .tokens(&f.endpoint, inputs)
        {
            Err(ClientError::Transport { message, .. }) => assert!(
                message.contains("certificate required") || message.contains("give --client-cert"),
                "{message}"
            ),
            other => panic!("expected a TLS refusal, got {other:?}"),
        }
    }
    // The certificate does not stand in for the signature.
    assert_eq!(
        refused(
            OprfClient::with_tls(credentials("acme", &mallory), &client_tls(true))
                .unwrap()
                .tokens(&f.endpoint, &input)
        ),
        (401, "bad_signature".into())
    );
    let garbage = ClientTls {
        trusted_pem: Some(b"not a certificate".to_vec()),
        identity_pem: None,
    };
    assert!(matches!(
        OprfClient::with_tls(credentials("acme", &alice), &garbage),
        Err(ClientError::Tls(_))
    ));
}
