//! The published test vectors of draft-irtf-cfrg-bbs-signatures (BLS12-381-SHA-256: key
//! generation, every signature and proof fixture, valid and invalid), run through our octet
//! layer rather than zkryptium directly, so a change in how we call it fails here. The fixtures
//! are the draft's, as zkryptium 0.8.0 ships them (tests/vectors/bbs-bls12-381-sha-256/).

use std::path::PathBuf;

use pavilion_credentials::bbs::{self, PublicKey, SigningKey};
use serde_json::Value;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/bbs-bls12-381-sha-256")
}

fn load(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(vectors().join(name)).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).unwrap()
}

fn messages(v: &Value) -> Vec<Vec<u8>> {
    v.as_array().unwrap().iter().map(bytes).collect()
}

fn fixtures(prefix: &str) -> Vec<(String, Value)> {
    let mut names: Vec<String> = std::fs::read_dir(vectors())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), load(&n))).collect()
}

#[test]
fn key_generation_matches_the_draft() {
    let v = load("keypair.json");
    // The draft's fixture uses its default key DST, which is ours too.
    let key = SigningKey::derive(&bytes(&v["keyMaterial"]), &bytes(&v["keyInfo"])).unwrap();
    assert_eq!(
        key.secret_bytes().to_vec(),
        bytes(&v["keyPair"]["secretKey"])
    );
    assert_eq!(
        key.public_key().to_bytes().to_vec(),
        bytes(&v["keyPair"]["publicKey"])
    );
}

#[test]
fn signature_vectors() {
    let all = fixtures("signature");
    assert_eq!(all.len(), 10);
    for (name, v) in all {
        let valid = v["result"]["valid"].as_bool().unwrap();
        let public = PublicKey::from_bytes(&bytes(&v["signerKeyPair"]["publicKey"])).unwrap();
        let header = v.get("header").map(bytes).unwrap_or_default();
        let msgs = messages(&v["messages"]);
        let signature = bytes(&v["signature"]);
        let verified = bbs::verify_signature(&public, &signature, &header, &msgs);
        assert_eq!(verified.is_ok(), valid, "{name}: {}", v["caseName"]);
        if valid {
            // Sign is deterministic: our signing gives the fixture's bytes.
            let key =
                SigningKey::from_secret_bytes(&bytes(&v["signerKeyPair"]["secretKey"])).unwrap();
            assert_eq!(
                bbs::sign(&key, &header, &msgs).unwrap().to_vec(),
                signature,
                "{name}"
            );
        }
    }
}

#[test]
fn proof_vectors() {
    let all = fixtures("proof");
    assert_eq!(all.len(), 15);
    for (name, v) in all {
        let valid = v["result"]["valid"].as_bool().unwrap();
        let public = PublicKey::from_bytes(&bytes(&v["signerPublicKey"])).unwrap();
        let header = v.get("header").map(bytes).unwrap_or_default();
        let ph = v.get("presentationHeader").map(bytes).unwrap_or_default();
        let msgs = messages(&v["messages"]);
        let disclosed: Vec<(usize, Vec<u8>)> = v["disclosedIndexes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as usize)
            // Invalid fixtures may list fewer or more messages than were signed; pair what is there.
            .filter_map(|i| msgs.get(i).map(|m| (i, m.clone())))
            .collect();
        let verified = bbs::verify_proof(&public, &bytes(&v["proof"]), &header, &ph, &disclosed);
        assert_eq!(verified.is_ok(), valid, "{name}: {}", v["caseName"]);
        if valid {
            // Proofs are randomized: ours for the same inputs differ from the fixture's and verify.
            let ours = bbs::derive_proof(
                &public,
                &bytes(&v["signature"]),
                &header,
                &ph,
                &msgs,
                &disclosed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            )
            .unwrap();
            assert_ne!(ours, bytes(&v["proof"]), "{name}");
            bbs::verify_proof(&public, &ours, &header, &ph, &disclosed).unwrap();
        }
    }
}
