//! The IETF reference SD-JWT implementation (PyPI `sd-jwt` 0.10.4, with jwcrypto) verifies the
//! SD-JWT VCs we issue and the presentations a holder makes of them: issuer signature,
//! disclosures, key binding — and refuses a tampered disclosure and a replayed nonce.
//! `scripts/test` installs it into the venv it names in `PAVILION_PYTHON`.

use std::collections::BTreeMap;
mod interop;

use std::process::Command;

use ed25519_dalek::SigningKey;
use pavilion_credentials::credential::{issue, jwk, present, Format, Issuance};
use pavilion_credentials::jose::KeySigner;
use serde_json::{json, Value};

const ISSUER: &str = "urn:pavilion:provider:bank-eu";

fn python_verifies(presentation: &str, issuer: &SigningKey, nonce: &str) -> Value {
    let python = std::env::var("PAVILION_PYTHON").expect(
        "PAVILION_PYTHON must name a Python with examples/python/requirements.txt installed (scripts/test sets it up)",
    );
    // Read at run time: a test binary reused from another checkout's build must test this one.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let script = std::path::Path::new(&manifest_dir).join("../tests/interop/sd-jwt/verify.py");
    let input = json!({
        "presentation": presentation,
        "issuer": ISSUER,
        "issuer_jwk": jwk(&issuer.verifying_key()),
        "aud": "pavilion",
        "nonce": nonce,
    });
    interop::ask_json(Command::new(python).arg(script), &input)
}

#[test]
fn the_reference_implementation_verifies_our_sd_jwt_vcs() {
    let issuer = SigningKey::from_bytes(&[7; 32]);
    let holder = SigningKey::from_bytes(&[8; 32]);
    let attributes: BTreeMap<String, String> = [("country", "DE"), ("birthdate", "1990-04-01")]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let now = 1_780_000_000_000;
    let credential = issue(
        Format::SdJwtVc,
        &Issuance {
            issuer: ISSUER,
            attributes: &attributes,
            holder: &holder.verifying_key(),
            issued_at: now,
            valid_from: now,
            valid_until: now + 86_400_000,
            status: None,
        },
        &KeySigner {
            kid: "a1",
            key: &issuer,
        },
    )
    .unwrap();
    let presentation = present(
        &credential,
        &["country".to_owned()],
        &holder,
        "pavilion",
        "n-1",
        now,
    )
    .unwrap();

    let answer = python_verifies(&presentation, &issuer, "n-1");
    assert_eq!(answer["verified"], true, "{answer}");
    assert_eq!(answer["payload"]["country"], "DE");
    assert_eq!(answer["payload"]["iss"], ISSUER);
    assert!(answer["payload"].get("birthdate").is_none(), "{answer}");

    let replayed = python_verifies(&presentation, &issuer, "n-2");
    assert_eq!(replayed["verified"], false, "{replayed}");

    // A disclosure of another value under the same name: not among the signed digests.
    let forged = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"["c2FsdA","country","FR"]"#)
    };
    let parts: Vec<&str> = presentation.split('~').collect();
    let tampered = format!("{}~{forged}~{}", parts[0], parts[2]);
    let answer = python_verifies(&tampered, &issuer, "n-1");
    assert!(
        answer["verified"] == false || answer["payload"].get("country").is_none(),
        "the reference implementation took a forged disclosure: {answer}"
    );
}
