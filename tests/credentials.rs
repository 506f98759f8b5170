//! Credentials end to end on the real broker, with the commands users run: a provider issues
//! credentials to holders' wallets (`provider issue`, SD-JWT VC and VC-JWT), publishes its
//! status list (`provider status-list --publish`); holders present them bound to the
//! request's nonce (`holder present`); a relying party sends them (`request --presentation
//! --nonce`); tenancy → policy → psi → signing decide under a policy whose `residence` claim
//! takes `credential` evidence.
//!
//! - Issue, present, verify: the decision reveals the disclosed country and carries the
//!   presentation, which the IETF reference SD-JWT implementation (Python `sd-jwt`) verifies
//!   with the provider's registered key alone.
//! - Refused, each with its reason: more attributes than the policy allows, a replayed
//!   presentation (another request's nonce), one without key binding, expired and not yet
//!   valid credentials, an issuer the plan does not trust, an issuer whose provider is
//!   suspended.
//! - Revocation: after `provider revoke` and the next published list, the next request is
//!   refused; a list past its TTL makes the claim `unavailable` until a fresh one arrives.
//! - The privacy scan: an attribute the holder never disclosed appears in no topic, state
//!   store or log of the broker's side.

mod util;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use pavilion_schemas::{Decision, Provider, Registry, Verdict};
use util::*;

const PASSPHRASE: &str = "provider passphrase";

const POLICY: &str = r#"policy: main
tenant: acme
rules: |
  @id("residence")
  permit(principal, action == Action::"verify", resource);
plan:
  residence:
    providers: [{ id: bank, region: eu }]
    evidence: [credential]
    disclose: [country]
    max_credential_age: 30d
response_format: jwt
response:
  evidence: true
"#;

/// The binary in the run's folder with the provider's passphrase: for commands that take no
/// topology (`provider issue | revoke`, `holder …`).
fn local(t: &TestTopology, args: &[&str]) -> String {
    local_env(t, &[], args)
}

/// [`local`] with more environment (an HSM's).
fn local_env(t: &TestTopology, env: &[(String, String)], args: &[&str]) -> String {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(t.dir.path())
        .env("PAVILION_PROVIDER_PASSPHRASE", PASSPHRASE)
        .envs(env.iter().map(|(k, v)| (k, v)));
    logged_ok(t, command, args)
}

/// Issues `provider`'s credential to `holder` (whose key `holder keygen` made) into `out`.
fn issue(t: &TestTopology, provider: &str, holder: &str, out: &str, extra: &[&str]) -> String {
    let key = format!("{holder}.jwk.pub");
    let mut args = vec![
        "provider",
        "issue",
        provider,
        "--holder-key",
        &key,
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    local(t, &args);
    out.to_owned()
}

/// The holder's presentation of `credential` for `nonce`, written to a file of its own.
fn present(
    t: &TestTopology,
    holder: &str,
    credential: &str,
    disclose: &str,
    nonce: &str,
) -> String {
    let out = format!("{holder}.{nonce}.presentation");
    let key = format!("{holder}.jwk");
    let mut args = vec![
        "holder",
        "present",
        "--credential",
        credential,
        "--key",
        &key,
        "--nonce",
        nonce,
        "--out",
        &out,
    ];
    if !disclose.is_empty() {
        args.extend(["--disclose", disclose]);
    }
    local(t, &args);
    out
}

/// Sends `residence` with `presentation` under request id `id` and nonce `nonce`, and waits
/// for the decision.
fn ask(t: &TestTopology, id: &str, nonce: &str, presentation: &str) -> Decision {
    let claim = format!("residence={}", t.dir.path().join(presentation).display());
    t.cli_ok(&[
        "request",
        "--key",
        t.dir.path().join("acme-k1.json").to_str().unwrap(),
        "--claims",
        "residence",
        "--presentation",
        &claim,
        "--nonce",
        nonce,
        "--request-id",
        id,
        "--purpose",
        "onboarding",
        "--jurisdiction",
        "DE",
    ]);
    let topic = t.topic("decisions.acme");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let found = read_all(&topic)
            .into_iter()
            .filter_map(|r| Registry::builtin().decode::<Decision>(&r.value?).ok())
            .find(|d| d.request_id == id);
        if let Some(d) = found {
            return d;
        }
        assert!(std::time::Instant::now() < deadline, "no decision for {id}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// bank's status list, signed and published, trusted for `ttl`.
fn publish_status_list(t: &TestTopology, ttl: &str) {
    provider_cli_ok(
        t,
        PASSPHRASE,
        &["provider", "status-list", "bank", "--publish", "--ttl", ttl],
    );
}

fn verdict(d: &Decision) -> (Verdict, String) {
    let o = &d.outcomes[0];
    (o.outcome, o.reason.clone().unwrap_or_default())
}

fn rewrite(dir: &Path, file: &str, f: impl FnOnce(&str) -> String) -> String {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let out = format!("{file}.changed");
    std::fs::write(dir.join(&out), f(&text)).unwrap();
    out
}

#[test]
fn credentials_are_issued_presented_verified_revoked_and_refused_each_with_its_reason() {
    let _serial = serial();
    let t = TestTopology::with_yaml("cred", |prefix| {
        full_path_topology(prefix, &["residence"], true)
    });
    let dir = t.dir.path().to_owned();
    let env = audit_env(&t);
    ok(cli_env(&t, &env, &["keys", "generate"]));
    t.active_tenant("acme", "k1");
    std::fs::write(dir.join("acme.yaml"), POLICY).unwrap();
    t.cli_ok(&[
        "policy",
        "push",
        dir.join("acme.yaml").to_str().unwrap(),
        "--activate",
    ]);
    for provider in ["bank", "shop"] {
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
                "residence",
                "--oprf-url",
                &url,
            ],
        );
    }
    for holder in ["alice", "bob", "carol"] {
        local(&t, &["holder", "keygen", "--out", &format!("{holder}.jwk")]);
    }
    // Alice's credential holds a birth date she never discloses: the privacy scan's needle.
    let alice = issue(
        &t,
        "bank",
        "alice",
        "alice.credential",
        &[
            "--attribute",
            "country=DE",
            "--attribute",
            "birthdate=1987-06-05",
        ],
    );
    let bob = issue(
        &t,
        "bank",
        "bob",
        "bob.credential",
        &["--attribute", "country=FR"],
    );
    let carol = issue(
        &t,
        "bank",
        "carol",
        "carol.credential",
        &["--format", "vc-jwt", "--attribute", "country=IT"],
    );
    let expired = issue(
        &t,
        "bank",
        "alice",
        "alice.expired.credential",
        &[
            "--attribute",
            "country=DE",
            "--valid-from",
            "2020-01-01T00:00:00Z",
            "--valid-for",
            "1d",
        ],
    );
    let early = issue(
        &t,
        "bank",
        "bob",
        "bob.early.credential",
        &[
            "--attribute",
            "country=FR",
            "--valid-from",
            "2099-01-01T00:00:00Z",
        ],
    );
    let foreign = issue(
        &t,
        "shop",
        "carol",
        "carol.shop.credential",
        &["--attribute", "country=IT"],
    );
    publish_status_list(&t, "10m");

    let port = free_port();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let pipeline = t.spawn_with("a", Some(port), &env_refs);
    await_stage_event(port, "policy.activated", "acme", 1.0, &pipeline);

    // Issue, present, verify.
    let d = ask(
        &t,
        "c1",
        "n1",
        &present(&t, "alice", &alice, "country", "n1"),
    );
    assert_eq!(
        verdict(&d),
        (Verdict::Verified, String::new()),
        "{}",
        pipeline.log_tail()
    );
    let c = d.outcomes[0].evidence[0]
        .credential
        .as_ref()
        .expect("the presentation is evidence");
    assert_eq!(
        c.attributes,
        BTreeMap::from([("country".into(), "DE".into())])
    );
    assert_eq!(c.format, "sd-jwt-vc");
    python_verifies(&t, &c.presentation, "n1");
    let d = ask(&t, "c2", "n2", &present(&t, "carol", &carol, "", "n2"));
    assert_eq!(verdict(&d).0, Verdict::Verified);
    assert_eq!(
        d.outcomes[0].evidence[0]
            .credential
            .as_ref()
            .unwrap()
            .format,
        "vc-jwt"
    );

    // Signed in an HSM: the provider registers the token's key as an issuer key first.
    let hsm = softhsm_token(&dir, "issuer");
    ok(cli_env(
        &t,
        &hsm,
        &["keys", "generate", "--hsm-token", "issuer"],
    ));
    ok(cli_env(
        &t,
        &hsm,
        &["provider", "register-key", "bank", "--hsm-token", "issuer"],
    ));
    local(&t, &["holder", "keygen", "--out", "dave.jwk"]);
    local_env(
        &t,
        &hsm,
        &[
            "provider",
            "issue",
            "bank",
            "--hsm-token",
            "issuer",
            "--holder-key",
            "dave.jwk.pub",
            "--attribute",
            "country=NL",
            "--out",
            "dave.credential",
        ],
    );
    let d = ask(
        &t,
        "c14",
        "n14",
        &present(&t, "dave", "dave.credential", "country", "n14"),
    );
    assert_eq!(verdict(&d), (Verdict::Verified, String::new()));
    let kid = &d.outcomes[0].evidence[0]
        .credential
        .as_ref()
        .unwrap()
        .key_id;
    assert_ne!(kid, "a1", "signed by the HSM's key, not the key file's");

    // Refusals, each with its reason.
    let not_verified = |reason: &str| (Verdict::NotVerified, reason.to_owned());
    let replayed = present(&t, "alice", &alice, "country", "n1");
    assert_eq!(
        verdict(&ask(&t, "c4", "n4", &replayed)),
        not_verified("credential_key_binding")
    );
    let unbound = rewrite(&dir, &present(&t, "bob", &bob, "country", "n5"), |p| {
        p[..p.rfind('~').unwrap() + 1].to_owned()
    });
    assert_eq!(
        verdict(&ask(&t, "c5", "n5", &unbound)),
        not_verified("credential_no_key_binding")
    );
    assert_eq!(
        verdict(&ask(
            &t,
            "c6",
            "n6",
            &present(&t, "alice", &expired, "country", "n6")
        )),
        not_verified("credential_expired")
    );
    assert_eq!(
        verdict(&ask(
            &t,
            "c7",
            "n7",
            &present(&t, "bob", &early, "country", "n7")
        )),
        not_verified("credential_not_yet_valid")
    );
    assert_eq!(
        verdict(&ask(
            &t,
            "c8",
            "n8",
            &present(&t, "carol", &foreign, "country", "n8")
        )),
        not_verified("credential_unknown_issuer")
    );

    // Revocation: the next request after the next published list is refused.
    assert_eq!(
        verdict(&ask(
            &t,
            "c9",
            "n9",
            &present(&t, "bob", &bob, "country", "n9")
        ))
        .0,
        Verdict::Verified
    );
    local(&t, &["provider", "revoke", "bank", "--credential", &bob]);
    // Long enough for the next request to be answered under a loaded CI machine (a 3 s TTL
    // once ran out before the decision), short enough to wait out below.
    let ttl = std::time::Duration::from_secs(15);
    publish_status_list(&t, "15s");
    let published = std::time::Instant::now(); // the list was signed before this

    assert_eq!(
        verdict(&ask(
            &t,
            "c10",
            "n10",
            &present(&t, "bob", &bob, "country", "n10")
        )),
        not_verified("credential_revoked")
    );
    // The list's TTL passes: nothing can be said until the provider publishes again.
    std::thread::sleep(
        (ttl + std::time::Duration::from_secs(1)).saturating_sub(published.elapsed()),
    );
    assert_eq!(
        verdict(&ask(
            &t,
            "c11",
            "n11",
            &present(&t, "alice", &alice, "country", "n11")
        )),
        (
            Verdict::Unavailable,
            "credential_status_unavailable".to_owned()
        )
    );
    publish_status_list(&t, "10m");
    assert_eq!(
        verdict(&ask(
            &t,
            "c12",
            "n12",
            &present(&t, "alice", &alice, "country", "n12")
        ))
        .0,
        Verdict::Verified
    );

    // A suspended provider's credentials are not trusted.
    t.cli_ok(&["provider", "suspend", "bank"]);
    assert_eq!(
        verdict(&ask(
            &t,
            "c13",
            "n13",
            &present(&t, "alice", &alice, "country", "n13")
        )),
        not_verified("credential_issuer_inactive")
    );
    t.cli_ok(&["provider", "activate", "bank"]);

    // Too many attributes last: that request is the only one carrying the birth date, so
    // the scan below runs before it.
    // The needles: the birth date, and the disclosure that would carry it (salted, so only
    // alice's credential has it).
    let credential = std::fs::read_to_string(dir.join(&alice)).unwrap();
    let hidden = credential
        .split('~')
        .skip(1)
        .find(|d| {
            let json = pavilion_credentials::jose::base64url_decode(d).unwrap_or_default();
            String::from_utf8_lossy(&json).contains("birthdate")
        })
        .expect("alice's credential discloses her birth date on request")
        .to_owned();
    std::fs::write(
        dir.join("alice.attributes"),
        format!("birthdate=1987-06-05\n{hidden}\n"),
    )
    .unwrap();
    privacy_scan(
        &t,
        &[
            ("undisclosed birth date".into(), b"1987-06-05".to_vec()),
            (
                "undisclosed birth date's disclosure".into(),
                hidden.into_bytes(),
            ),
        ],
        "alice.attributes",
        &["a.log", "cli.log"],
        10,
    );
    let too_much = present(&t, "alice", &alice, "country,birthdate", "n3");
    assert_eq!(
        verdict(&ask(&t, "c3", "n3", &too_much)),
        not_verified("credential_discloses_too_much")
    );
}

/// The IETF reference SD-JWT implementation verifies the presentation in a decision with
/// the provider's key from the registry alone.
fn python_verifies(t: &TestTopology, presentation: &str, nonce: &str) {
    let registry = Registry::builtin();
    let bank: Provider = read_all(&t.topic("providers"))
        .into_iter()
        .filter_map(|r| registry.decode::<Provider>(&r.value?).ok())
        .rfind(|p| p.provider_id == "bank")
        .unwrap();
    let key = &bank.attestation_keys[0].public_key;
    let python =
        std::env::var("PAVILION_PYTHON").expect("PAVILION_PYTHON (scripts/test sets it up)");
    let input = serde_json::json!({
        "presentation": presentation,
        "issuer": "urn:pavilion:provider:bank",
        "issuer_jwk": {"kty": "OKP", "crv": "Ed25519", "x": pavilion_credentials::jose::base64url(key)},
        "aud": "pavilion",
        "nonce": nonce,
    });
    let out = with_stdin(
        Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/sd-jwt/verify.py")),
        input.to_string().as_bytes(),
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["verified"], true, "{answer}");
    assert_eq!(answer["payload"]["country"], "DE");
}
