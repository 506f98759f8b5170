//! Credentials issued, presented and verified through the public API, in both formats: every
//! refusal with its own reason, and revocation by a status list.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use pavilion_credentials::credential::{
    issue, present, verify_presentation, Expectations, Format, Issuance, Presented,
};
use pavilion_credentials::jose::KeySigner;
use pavilion_credentials::status_list::{Bitstring, StatusEntry, StatusList, LIST_BITS};
use pavilion_credentials::CredentialError;

const ISSUER: &str = "urn:pavilion:provider:bank-eu";
const NOW: i64 = 1_780_000_000_000;
const DAY: i64 = 86_400_000;

struct World {
    issuer_key: SigningKey,
    holder: SigningKey,
    attributes: BTreeMap<String, String>,
}

impl World {
    fn new() -> World {
        World {
            issuer_key: SigningKey::from_bytes(&[7; 32]),
            holder: SigningKey::from_bytes(&[8; 32]),
            attributes: [
                ("country", "DE"),
                ("birthdate", "1990-04-01"),
                ("note", "vip"),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
        }
    }

    fn issue_at(
        &self,
        format: Format,
        issued_at: i64,
        valid_from: i64,
        valid_until: i64,
    ) -> String {
        issue(
            format,
            &Issuance {
                issuer: ISSUER,
                attributes: &self.attributes,
                holder: &self.holder.verifying_key(),
                issued_at,
                valid_from,
                valid_until,
                status: Some(StatusEntry {
                    list: "https://bank-eu.example/v1/status-lists/1".into(),
                    index: 42,
                }),
            },
            &KeySigner {
                kid: "a1",
                key: &self.issuer_key,
            },
        )
        .unwrap()
    }

    fn issue(&self, format: Format) -> String {
        self.issue_at(format, NOW - DAY, NOW - DAY, NOW + 30 * DAY)
    }

    fn present(&self, credential: &str, disclose: &[&str], nonce: &str) -> String {
        let disclose: Vec<String> = disclose.iter().map(|s| s.to_string()).collect();
        present(credential, &disclose, &self.holder, "pavilion", nonce, NOW).unwrap()
    }

    fn verify(&self, presentation: &str) -> Result<Presented, CredentialError> {
        let public = self.issuer_key.verifying_key().to_bytes().to_vec();
        let issuer_key = move |issuer: &str, kid: &str| match (issuer, kid) {
            (ISSUER, "a1") => Ok(public.clone()),
            _ => Err(CredentialError::UnknownIssuer(format!("{issuer} {kid}"))),
        };
        verify_presentation(
            presentation,
            &Expectations {
                nonce: "n-1",
                audience: "pavilion",
                now_ms: NOW,
                skew_ms: 60_000,
                max_age_ms: Some(90 * DAY),
                binding_max_age_ms: 300_000,
                issuer_key: &issuer_key,
            },
        )
    }
}

#[test]
fn an_sd_jwt_vc_reveals_exactly_what_the_holder_discloses() {
    let w = World::new();
    let credential = w.issue(Format::SdJwtVc);
    // The signed part names no attribute, neither its name nor its value: only salted digests.
    // (Compared as whole JSON strings: a substring test fails whenever a random digest happens
    // to contain "DE".)
    let signed = credential.split('~').next().unwrap();
    let payload = pavilion_credentials::jose::parse(signed).unwrap().payload;
    let payload: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let mut strings = Vec::new();
    json_strings(&payload, &mut strings);
    for (name, value) in &w.attributes {
        assert!(!strings.contains(name), "{name} is named in {payload}");
        assert!(!strings.contains(value), "{value} is in {payload}");
    }

    let presented = w
        .verify(&w.present(&credential, &["country"], "n-1"))
        .unwrap();
    assert_eq!(presented.format, Format::SdJwtVc);
    assert_eq!(presented.issuer, ISSUER);
    assert_eq!(presented.key_id, "a1");
    assert_eq!(
        presented.attributes,
        BTreeMap::from([("country".to_owned(), "DE".to_owned())])
    );
    assert_eq!(presented.status.unwrap().index, 42);
    let none = w.verify(&w.present(&credential, &[], "n-1")).unwrap();
    assert!(none.attributes.is_empty());
}

/// Every object key and string value in `value`.
fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                out.push(key.clone());
                json_strings(v, out);
            }
        }
        _ => {}
    }
}

#[test]
fn a_vc_jwt_is_presented_in_a_holder_signed_vp_and_reveals_everything() {
    let w = World::new();
    let credential = w.issue(Format::VcJwt);
    let presented = w.verify(&w.present(&credential, &[], "n-1")).unwrap();
    assert_eq!(presented.format, Format::VcJwt);
    assert_eq!(presented.attributes, w.attributes);
    // The bare credential is not bound to the request.
    assert_eq!(w.verify(&credential), Err(CredentialError::NoKeyBinding));
}

#[test]
fn replays_missing_bindings_and_other_holders_are_refused() {
    let w = World::new();
    for format in [Format::SdJwtVc, Format::VcJwt] {
        let credential = w.issue(format);
        let replayed = w.present(&credential, &["country"], "n-0");
        let reason = w.verify(&replayed).unwrap_err();
        assert_eq!(
            reason.reason(),
            "credential_key_binding",
            "{format:?}: {reason}"
        );
        assert!(reason.to_string().contains("another nonce"), "{reason}");

        let thief = World {
            holder: SigningKey::from_bytes(&[9; 32]),
            ..World::new()
        };
        let stolen = thief.present(&credential, &["country"], "n-1");
        assert_eq!(
            w.verify(&stolen).unwrap_err().reason(),
            "credential_key_binding"
        );
    }
    // An SD-JWT without its key binding JWT.
    let credential = w.issue(Format::SdJwtVc);
    let presentation = w.present(&credential, &["country"], "n-1");
    let unbound = &presentation[..presentation.rfind('~').unwrap() + 1];
    assert_eq!(w.verify(unbound), Err(CredentialError::NoKeyBinding));
}

#[test]
fn tampered_and_foreign_disclosures_are_refused() {
    let w = World::new();
    let credential = w.issue(Format::SdJwtVc);
    let presentation = w.present(&credential, &["country"], "n-1");
    let parts: Vec<&str> = presentation.split('~').collect();
    // A disclosure of the same name with another value, not signed by the issuer.
    let forged = base64_url(r#"["c2FsdA","country","FR"]"#);
    let tampered = format!("{}~{forged}~{}", parts[0], parts[2]);
    assert_eq!(
        w.verify(&tampered).unwrap_err().reason(),
        "credential_bad_disclosure"
    );
    // An issuer-signed disclosure added after the holder bound the presentation.
    let all = w.issue(Format::SdJwtVc);
    let extra = all.split('~').nth(1).unwrap();
    let widened = format!("{}~{}~{extra}~{}", parts[0], parts[1], parts[2]);
    let reason = w.verify(&widened).unwrap_err();
    assert!(
        ["credential_bad_disclosure", "credential_key_binding"].contains(&reason.reason()),
        "{reason}"
    );
    // A flipped byte in the issuer's signature.
    let mut bytes = presentation.clone().into_bytes();
    let at = parts[0].len() - 3;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(bytes).unwrap();
    assert_eq!(
        w.verify(&flipped).unwrap_err().reason(),
        "credential_bad_signature"
    );
}

#[test]
fn validity_times_and_the_maximum_age_are_checked_with_the_skew() {
    let w = World::new();
    for format in [Format::SdJwtVc, Format::VcJwt] {
        let at = |issued, from, until| {
            let c = w.issue_at(format, issued, from, until);
            w.verify(&w.present(&c, &[], "n-1"))
                .map(|_| ())
                .map_err(|e| e.reason())
        };
        assert_eq!(
            at(NOW - 2 * DAY, NOW - 2 * DAY, NOW - DAY),
            Err("credential_expired")
        );
        assert_eq!(
            at(NOW, NOW + DAY, NOW + 2 * DAY),
            Err("credential_not_yet_valid")
        );
        // Within the minute of skew either way.
        assert_eq!(at(NOW, NOW + 30_000, NOW + DAY), Ok(()));
        assert_eq!(at(NOW - DAY, NOW - DAY, NOW - 30_000), Ok(()));
        assert_eq!(
            at(NOW - 100 * DAY, NOW - DAY, NOW + DAY),
            Err("credential_too_old")
        );
    }
}

#[test]
fn unknown_issuers_and_keys_are_refused() {
    let w = World::new();
    let other = World {
        issuer_key: SigningKey::from_bytes(&[1; 32]),
        ..World::new()
    };
    let credential = other.issue(Format::SdJwtVc);
    // Same issuer name and kid, another key: the signature does not verify.
    let reason = w.verify(&w.present(&credential, &[], "n-1")).unwrap_err();
    assert_eq!(reason.reason(), "credential_bad_signature");
    let signer = KeySigner {
        kid: "a9",
        key: &w.issuer_key,
    };
    let c = issue(
        Format::VcJwt,
        &Issuance {
            issuer: ISSUER,
            attributes: &w.attributes,
            holder: &w.holder.verifying_key(),
            issued_at: NOW,
            valid_from: NOW,
            valid_until: NOW + DAY,
            status: None,
        },
        &signer,
    )
    .unwrap();
    let reason = w.verify(&w.present(&c, &[], "n-1")).unwrap_err();
    assert_eq!(reason.reason(), "credential_unknown_issuer");
}

#[test]
fn a_status_list_round_trips_signed_and_says_which_bits_are_set() {
    let w = World::new();
    let mut bits = Bitstring::default();
    assert!(bits.set(42).unwrap());
    assert!(!bits.set(42).unwrap());
    bits.set(LIST_BITS - 1).unwrap();
    assert!(bits.set(LIST_BITS).is_err());
    let list = StatusList {
        url: "https://bank-eu.example/v1/status-lists/1".into(),
        issuer: ISSUER.into(),
        valid_from: NOW,
        ttl_ms: 300_000,
        bits,
    };
    let token = list
        .issue(&KeySigner {
            kid: "a1",
            key: &w.issuer_key,
        })
        .unwrap();
    let public = w.issuer_key.verifying_key().to_bytes().to_vec();
    let read = StatusList::verify(&token, &|_, _| Ok(public.clone())).unwrap();
    assert_eq!(read, list);
    assert!(read.bits.get(42) && read.bits.get(LIST_BITS - 1));
    assert!(!read.bits.get(41) && !read.bits.get(43));
    assert!(
        read.bits.get(LIST_BITS),
        "an index past the list reads as revoked"
    );
    assert_eq!(read.fresh_until(), NOW + 300_000);
    // 16 KiB of mostly zero bits compress to well under a kilobyte.
    assert!(token.len() < 1_500, "{}", token.len());

    let other = SigningKey::from_bytes(&[1; 32])
        .verifying_key()
        .to_bytes()
        .to_vec();
    assert!(matches!(
        StatusList::verify(&token, &|_, _| Ok(other.clone())),
        Err(CredentialError::Jws(_))
    ));
    assert!(Bitstring::decode("uAAAA").is_err());
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}
