//! Writes the committed seed corpora, `fuzz/corpus/<target>/`: small, valid inputs of each
//! target, made with the project's own code, keys of `pavilion_fuzz` and fixtures (the
//! example policies, the signing tests' payloads). Run it again after a format changes:
//!
//! ```text
//! cargo run --release --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! (`--release`: it proves a Groth16 predicate for the evidence seed.)

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use apache_avro::schema::ResolvedSchema;
use apache_avro::types::Value;
use apache_avro::Schema;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use pavilion_audit::note::{signed_note, vkey, CheckpointBody};
use pavilion_fuzz::{signing_key, verifying_key, versions, FixedSigner, NOTE_NAME};
use pavilion_policy::document::SourceDocument;
use pavilion_provider::attributes::{AttributeBook, AttributeSpec};
use pavilion_provider::evidence::{EvidenceProver, Provers};
use pavilion_provider::oprf::{self, ProviderKey};
use pavilion_provider::protocol::{EvaluateRequest, EvaluateResponse};
use pavilion_schemas::{
    ClaimRequest, EvidenceRequest, Registry, ResponseFormat, SubjectToken, VerificationRequest,
    SCHEMA_FILES,
};
use pavilion_signing::jose;
use pavilion_zk::{field_to_bytes, nonce_from_request_id};
use sha2::{Digest as _, Sha256};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");
    avro_decode(&corpus.join("avro_decode"));
    signing_bytes(&corpus.join("signing_bytes"));
    policy_document(
        &root.join("../examples/policies"),
        &corpus.join("policy_document"),
    );
    oprf_body(&corpus.join("oprf_body"));
    evidence_request(&corpus.join("evidence_request"));
    decision_token(&corpus.join("decision_token"));
    checkpoint_note(&corpus.join("checkpoint_note"));
}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(dir).expect("corpus folder");
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, bytes).expect("seed written");
    println!("{}", path.display());
}

/// Body of a framed record (without `C3 01` and the fingerprint).
fn body(framed: &[u8]) -> &[u8] {
    &framed[10..]
}

/// One record of every current schema and of every released version that differs from it,
/// each with every optional field set, an element in every array and map: the selector byte
/// of its schema file, then its body.
fn avro_decode(dir: &Path) {
    let versions = versions();
    for (index, file) in SCHEMA_FILES.iter().enumerate() {
        let version = &versions[index];
        let current = versions
            .iter()
            .find(|v| !v.released && v.name == version.name)
            .expect("current schema");
        if version.released && version.fingerprint == current.fingerprint {
            continue;
        }
        let schema = Schema::parse_str(file.json).expect("schema");
        let names = ResolvedSchema::try_from(&schema).expect("resolves");
        let value = sample(&schema, names.get_names());
        let datum = apache_avro::to_avro_datum(&schema, value).expect("sample encodes");
        let stem = file.file.trim_end_matches(".avsc").replace('/', "-");
        write(dir, stem.as_str(), [&[index as u8][..], &datum].concat());
    }
}

fn sample(schema: &Schema, names: &HashMap<apache_avro::schema::Name, &Schema>) -> Value {
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(true),
        Schema::Int => Value::Int(3),
        Schema::Long => Value::Long(1_700_000_000_123),
        Schema::TimestampMillis => Value::TimestampMillis(1_700_000_000_123),
        Schema::Float => Value::Float(0.5),
        Schema::Double => Value::Double(0.25),
        Schema::Bytes => Value::Bytes(vec![0xAB; 32]),
        Schema::String => Value::String("acme".into()),
        Schema::Array(a) => Value::Array(vec![sample(&a.items, names)]),
        Schema::Map(m) => Value::Map(HashMap::from([(
            "threshold".into(),
            sample(&m.types, names),
        )])),
        Schema::Union(u) => {
            let last = u.variants().len() - 1;
            Value::Union(last as u32, Box::new(sample(&u.variants()[last], names)))
        }
        Schema::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), sample(&f.schema, names)))
                .collect(),
        ),
        // The last symbol: the first is the `unknown` evolution fallback.
        Schema::Enum(e) => {
            let last = e.symbols.len() - 1;
            Value::Enum(last as u32, e.symbols[last].clone())
        }
        Schema::Fixed(f) => Value::Fixed(f.size, vec![1; f.size]),
        Schema::Ref { name } => sample(names[name], names),
        other => panic!("no sample for {other:?}"),
    }
}

/// Requests as the client library builds them: claims with parameters, tokens, consent.
fn requests() -> Vec<VerificationRequest> {
    let mut age = VerificationRequest {
        request_id: "r1".into(),
        tenant_id: "acme".into(),
        key_id: "k1".into(),
        signature: Vec::new(),
        signed_at: 1_767_268_800_000,
        nonce: "9f2c41d07be3a8a5".into(),
        created_at: 1_767_268_799_000,
        claims: vec![ClaimRequest {
            name: "age_over".into(),
            params: BTreeMap::from([("threshold".into(), "18".into())]),
        }],
        purpose: "onboarding".into(),
        subject_jurisdiction: "eu".into(),
        consent_ref: None,
        subject_tokens: vec![SubjectToken {
            provider_id: "registry-eu".into(),
            token: vec![0x5A; 64],
        }],
        response_format: Some(ResponseFormat::Jwt),
    };
    let mut accounts = age.clone();
    accounts.request_id = "r2".into();
    accounts.claims.push(ClaimRequest {
        name: "account_verified".into(),
        params: BTreeMap::new(),
    });
    accounts.consent_ref = Some("consent-2026-01".into());
    accounts.subject_tokens.push(SubjectToken {
        provider_id: "bank-eu".into(),
        token: vec![0xC3; 64],
    });
    accounts.response_format = Some(ResponseFormat::SdJwt);
    let mut empty = age.clone();
    empty.request_id = "r3".into();
    empty.claims.clear();
    empty.subject_tokens.clear();
    empty.response_format = None;
    for r in [&mut age, &mut accounts, &mut empty] {
        r.signature = signing_key().sign(&r.signing_bytes()).to_bytes().to_vec();
    }
    vec![age, accounts, empty]
}

fn signing_bytes(dir: &Path) {
    let registry = Registry::builtin();
    for r in requests() {
        let encoded = registry.encode(&r).expect("encodes");
        write(dir, &r.request_id, body(&encoded));
    }
}

/// The example policies as they are, and one's canonical body (what the stage reads).
fn policy_document(examples: &Path, dir: &Path) {
    for name in [
        "acme.yaml",
        "age-verification.yaml",
        "fraud-check.yaml",
        "kyc-lite.yaml",
    ] {
        let text = std::fs::read_to_string(examples.join(name)).expect("example policy");
        if name == "acme.yaml" {
            let spec = SourceDocument::parse(&text).expect("parses").spec;
            write(dir, "acme.json", spec.canonical());
        }
        write(dir, name, text);
    }
}

/// A request of two blinded elements and the service's answer to it.
fn oprf_body(dir: &Path) {
    let key = ProviderKey::derive(&[3; 32], b"pavilion-fuzz").expect("a key");
    let blinded: Vec<Vec<u8>> = ["alice@example.com", "+447700900123"]
        .iter()
        .map(|i| oprf::blind(i.as_bytes()).expect("blinds").element.to_vec())
        .collect();
    let request = EvaluateRequest {
        blinded: blinded.iter().map(|b| B64.encode(b)).collect(),
    };
    write(
        dir,
        "request.json",
        serde_json::to_vec(&request).expect("json"),
    );
    let (evaluated, proof) = key.evaluate_batch(&blinded).expect("evaluates");
    let answer = EvaluateResponse {
        evaluated: evaluated.iter().map(|e| B64.encode(e)).collect(),
        proof: B64.encode(proof),
    };
    write(
        dir,
        "answer.json",
        serde_json::to_vec(&answer).expect("json"),
    );
}

/// A proof request as psi sends it, and the provider's answer with a real proof.
fn evidence_request(dir: &Path) {
    let registry = Registry::builtin();
    let set_key = [9u8; 32];
    let values = HashMap::from([(
        set_key,
        BTreeMap::from([(
            "birthdate".to_owned(),
            AttributeSpec::parse("birthdate:date")
                .expect("spec")
                .value("2000-01-01")
                .expect("a date"),
        )]),
    )]);
    let mut book = AttributeBook::reloaded("registry-eu", &values, None);
    let bbs_key =
        pavilion_credentials::bbs::SigningKey::derive(&[7; 32], b"registry-eu").expect("a BBS key");
    book.sign(
        &bbs_key,
        &["birthdate".to_owned()],
        &values,
        i64::MAX,
        &|_| {},
    )
    .expect("signs");
    let prover = EvidenceProver::new(book, Some(bbs_key));
    let request = EvidenceRequest {
        set_key: set_key.to_vec(),
        circuit: "date_le_cutoff".into(),
        attribute: "birthdate".into(),
        bound: 20080101,
        nonce: field_to_bytes(nonce_from_request_id(b"r1")).to_vec(),
        reply_partition: 3,
        attempt: 1,
        deadline: 1_767_268_805_000,
        disclose: Vec::new(),
    };
    write(
        dir,
        "request",
        [&[0][..], body(&registry.encode(&request).expect("encodes"))].concat(),
    );
    let mut provers = Provers::load().expect("circuits load");
    let answer = prover.answer(&mut provers, &request, 1_767_268_801_000);
    assert!(answer.proof.is_some(), "{:?}", answer.detail);
    write(
        dir,
        "answer",
        [&[1][..], body(&registry.encode(&answer).expect("encodes"))].concat(),
    );
    let disclose = EvidenceRequest {
        circuit: pavilion_credentials::bbs::DISCLOSURE_EVIDENCE.into(),
        attribute: String::new(),
        bound: 0,
        disclose: vec!["birthdate".into()],
        ..request
    };
    write(
        dir,
        "disclosure-request",
        [
            &[0][..],
            body(&registry.encode(&disclose).expect("encodes")),
        ]
        .concat(),
    );
    let answer = prover.answer(&mut provers, &disclose, 1_767_268_801_000);
    assert!(answer.disclosure.is_some(), "{:?}", answer.detail);
    write(
        dir,
        "disclosure-answer",
        [&[1][..], body(&registry.encode(&answer).expect("encodes"))].concat(),
    );
}

/// Tokens in every compact format the signing stage issues, with its tests' payloads.
fn decision_token(dir: &Path) {
    let claims = r#"{"iss":"test-broker","aud":"acme","jti":"r1","iat":1700000000,"exp":1700000300,"nonce":"nonce-r1","response_schema":"pavilion.decision/1","policy":null,"claims":[{"index":0,"name":"account_verified","outcome":"verified","reason":null,"evidence":[]},{"index":1,"name":"age_over","outcome":"unavailable","reason":"bank: set_stale","evidence":[]}],"rejection":null}"#;
    let sign = |parameters: &[(&str, &str)], payload: &str| {
        jose::compact_with(&FixedSigner, parameters, payload.as_bytes())
            .expect("signs")
            .0
    };
    write(dir, "jwt", sign(&[("typ", "JWT")], claims));
    write(
        dir,
        "jws",
        sign(&[("typ", "pavilion-decision+jws")], claims),
    );
    let credential = format!(
        r#"{{"@context":["https://www.w3.org/ns/credentials/v2"],"type":["VerifiableCredential","PavilionDecision"],"id":"urn:pavilion:decision:r1","issuer":"test-broker","validFrom":"2023-11-14T22:13:20Z","validUntil":"2023-11-14T22:18:20Z","credentialSubject":{claims}}}"#
    );
    write(
        dir,
        "vc-jwt",
        sign(&[("typ", "vc+jwt"), ("cty", "vc")], &credential),
    );
    let disclosure =
        B64URL.encode(r#"["c2FsdHNhbHRzYWx0","age_over",{"outcome":"verified","reason":null}]"#);
    let digest = B64URL.encode(Sha256::digest(disclosure.as_bytes()));
    let frame = format!(
        r#"{{"iss":"test-broker","aud":"acme","jti":"r1","iat":1700000000,"exp":1700000300,"nonce":"nonce-r1","response_schema":"pavilion.decision/1","policy":null,"_sd_alg":"sha-256","_sd":["{digest}"]}}"#
    );
    let jwt = sign(&[("typ", "pavilion-decision+sd-jwt")], &frame);
    write(dir, "sd-jwt", format!("{jwt}~{disclosure}~"));
}

/// A checkpoint as the audit stage signs it, one with a witness's cosignature, and a vkey.
fn checkpoint_note(dir: &Path) {
    let public_key = verifying_key().to_bytes();
    let body = CheckpointBody {
        origin: NOTE_NAME.into(),
        size: 1234,
        root: [0x42; 32],
    };
    let signature = signing_key().sign(body.text().as_bytes()).to_bytes();
    let note = signed_note(&body, NOTE_NAME, &public_key, &signature);
    write(dir, "checkpoint", &note);
    let witness = format!("— witness.example {}\n", B64.encode([0x11; 68]));
    write(dir, "cosigned", format!("{note}{witness}"));
    write(dir, "vkey", vkey(NOTE_NAME, &public_key));
}
