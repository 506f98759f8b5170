//! An independent BBS implementation, `@digitalbazaar/bbs-signatures` (Node), verifies the
//! disclosures our provider side derives — and refuses them when a value, the nonce or the key
//! is not the one proven. `scripts/test` installs it (`npm ci` in tests/interop/bbs-js).

mod interop;

use std::process::Command;

use pavilion_credentials::bbs::{
    AttributeHeader, Disclosure, PublicKey, SignedAttributes, SigningKey,
};

/// `verifyProof` of the JavaScript library on `d`, as a relying party holding only `public`.
fn javascript_verifies(public: &PublicKey, d: &Disclosure, nonce: &[u8; 32]) -> bool {
    // Read at run time: a test binary reused from another checkout's build must test this one.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let root = std::path::Path::new(&manifest_dir).join("../tests/interop/bbs-js");
    assert!(
        root.join("node_modules/@digitalbazaar/bbs-signatures")
            .exists(),
        "run `npm ci` in {} first (scripts/test does)",
        root.display()
    );
    let input = serde_json::json!({
        "publicKey": hex::encode(public.to_bytes()),
        "proof": hex::encode(&d.proof),
        "header": hex::encode(&d.header),
        "presentationHeader": hex::encode(nonce),
        "disclosed": d.disclosed.iter().map(|(i, _, v)| serde_json::json!([i, hex::encode(v)])).collect::<Vec<_>>(),
    });
    let answer = interop::ask_json(
        Command::new("node").current_dir(&root).arg("verify.mjs"),
        &input,
    );
    answer["verified"].as_bool().expect("a verdict")
}

#[test]
fn the_javascript_implementation_verifies_our_disclosures() {
    let key = SigningKey::generate().unwrap();
    let names = [
        "given_name",
        "family_name",
        "birthdate",
        "country",
        "city",
        "postcode",
        "income",
        "account_opened",
        "customer_since",
        "risk_band",
    ];
    let values = [
        "Ada",
        "Lovelace",
        "1990-04-01",
        "DE",
        "Berlin",
        "10115",
        "52000",
        "2015-06-30",
        "2009-01-01",
        "low",
    ];
    let signed = SignedAttributes::sign(
        &key,
        AttributeHeader {
            issuer: "bank-eu".into(),
            schema: "pavilion.member.v1".into(),
            attributes: names.iter().map(|n| n.to_string()).collect(),
            expires_at_ms: 1_900_000_000_000,
        },
        values.iter().map(|v| v.to_string()).collect(),
    )
    .unwrap();
    let nonce = [0x5a; 32];
    for disclose in [&["country"][..], &["birthdate", "risk_band"], &[]] {
        let d = signed.disclose(key.public_key(), disclose, &nonce).unwrap();
        d.verify(key.public_key(), &nonce).unwrap();
        assert!(
            javascript_verifies(key.public_key(), &d, &nonce),
            "{disclose:?}"
        );
    }

    let d = signed
        .disclose(key.public_key(), &["country"], &nonce)
        .unwrap();
    let mut lied = d.clone();
    lied.disclosed[0].2 = "FR".into();
    assert!(!javascript_verifies(key.public_key(), &lied, &nonce));
    assert!(!javascript_verifies(key.public_key(), &d, &[0x5b; 32]));
    let other = SigningKey::generate().unwrap();
    assert!(!javascript_verifies(other.public_key(), &d, &nonce));
}
