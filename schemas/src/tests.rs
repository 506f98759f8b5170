use super::*;

fn file(name: &'static str, released: bool, json: &'static str) -> SchemaFile {
    SchemaFile {
        file: name,
        released,
        json,
    }
}

#[test]
fn contract_is_valid() {
    let registry = Registry::load(SCHEMA_FILES).unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(registry.names().contains(&"pavilion.DeadLetter"));
    assert!(registry.names().contains(&"pavilion.VerificationRequest"));
}

#[test]
fn fingerprints_match_the_spec() {
    // Avro spec / Java SchemaNormalization: CRC-64-AVRO("int") = 0x7275d51a3f395c8f.
    assert_eq!(
        fingerprint_json(r#""int""#).unwrap(),
        0x7275d51a3f395c8f_u64.to_le_bytes()
    );
    // A logical type does not change the canonical form (fastavro and Java agree).
    let plain = r#"{"type":"record","name":"T","fields":[{"name":"t","type":"long"}]}"#;
    let logical = r#"{"type":"record","name":"T","fields":[{"name":"t","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
    assert_eq!(
        fingerprint_json(plain).unwrap(),
        fingerprint_json(logical).unwrap()
    );
}

#[test]
fn every_event_round_trips() {
    let r = Registry::builtin();
    let event = DemoEvent {
        key: "k".into(),
        seq: 7,
        payload: "p".into(),
    };
    assert_eq!(
        r.decode::<DemoEvent>(&r.encode(&event).unwrap()).unwrap(),
        event
    );
    let count = KeyCount {
        key: "k".into(),
        seq: 7,
        count: 3,
    };
    assert_eq!(
        r.decode::<KeyCount>(&r.encode(&count).unwrap()).unwrap(),
        count
    );
    let total = KeyTotal {
        key: "k".into(),
        seq: 7,
        count: 3,
        sum: 6,
    };
    assert_eq!(
        r.decode::<KeyTotal>(&r.encode(&total).unwrap()).unwrap(),
        total
    );
    let dead = DeadLetter {
        stage: "s".into(),
        reason: DeadLetterReason::Undecodable,
        detail: "d".into(),
        source_topic: "t".into(),
        source_partition: 2,
        source_offset: 9,
        original_key: Some(b"k".to_vec()),
        original_value: None,
        record_timestamp: Some(1),
        dead_lettered_at: 2,
    };
    assert_eq!(
        r.decode::<DeadLetter>(&r.encode(&dead).unwrap()).unwrap(),
        dead
    );
}

#[test]
fn decoding_rejects_what_is_not_ours() {
    let r = Registry::builtin();
    assert!(matches!(
        r.decode::<DemoEvent>(b"garbage"),
        Err(CodecError::BadFraming { .. })
    ));
    assert!(matches!(
        r.decode::<DemoEvent>(&[0xC3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0]),
        Err(CodecError::UnknownFingerprint(_))
    ));
    let count = r
        .encode(&KeyCount {
            key: "k".into(),
            seq: 1,
            count: 1,
        })
        .unwrap();
    assert!(matches!(
        r.decode::<DemoEvent>(&count),
        Err(CodecError::SchemaMismatch { .. })
    ));
    let mut truncated = r
        .encode(&DemoEvent {
            key: "key".into(),
            seq: 1,
            payload: "x".repeat(40),
        })
        .unwrap();
    truncated.truncate(20);
    assert!(matches!(
        r.decode::<DemoEvent>(&truncated),
        Err(CodecError::Avro { .. })
    ));
}

const V1: &str =
    r#"{"type":"record","name":"E","namespace":"t","fields":[{"name":"a","type":"long"}]}"#;

#[test]
fn a_compatible_change_reads_old_records() {
    let v2 = r#"{"type":"record","name":"E","namespace":"t","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":"none"}]}"#;
    let registry = Registry::load(&[
        file("e.avsc", false, v2),
        file("released/e.v1.avsc", true, V1),
    ])
    .unwrap();
    let old = apache_avro::to_avro_datum(
        &Schema::parse_str(V1).unwrap(),
        Value::Record(vec![("a".into(), Value::Long(5))]),
    )
    .unwrap();
    let mut framed = MAGIC.to_vec();
    framed.extend(fingerprint_json(V1).unwrap());
    framed.extend(old);
    let (name, value) = registry.decode_value(&framed).unwrap();
    assert_eq!(name, "t.E");
    assert_eq!(
        value,
        Value::Record(vec![
            ("a".into(), Value::Long(5)),
            ("b".into(), Value::String("none".into()))
        ])
    );
}

#[test]
fn an_incompatible_change_is_refused() {
    let no_default = r#"{"type":"record","name":"E","namespace":"t","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;
    let errors = Registry::load(&[
        file("e.avsc", false, no_default),
        file("released/e.v1.avsc", true, V1),
    ])
    .err()
    .expect("adding a field without default must be refused");
    assert!(
        matches!(&errors[..], [ContractError::Incompatible { name, .. }] if name == "t.E"),
        "{errors:?}"
    );

    let removed = Registry::load(&[file("released/e.v1.avsc", true, V1)])
        .err()
        .unwrap();
    assert!(
        matches!(&removed[..], [ContractError::Removed { .. }]),
        "{removed:?}"
    );
}

/// Every current schema has a frozen copy in `released/`, so a later change that breaks
/// backward compatibility fails `contract_is_valid` instead of slipping through.
#[test]
fn every_current_schema_is_released() {
    let registry = Registry::builtin();
    for name in registry.names() {
        let fp = &registry.current[name].fingerprint;
        let released = SCHEMA_FILES
            .iter()
            .filter(|f| f.released)
            .any(|f| fingerprint_json(f.json).ok().as_ref() == Some(fp));
        assert!(released, "{name} changed since its last release: run `pavilion schemas release` after checking compatibility");
    }
}

#[test]
fn truncated_and_padded_records_are_refused() {
    let r = Registry::builtin();
    let request = VerificationRequest {
        request_id: "r".into(),
        tenant_id: "t".into(),
        key_id: "k".into(),
        signature: vec![1; 64],
        signed_at: 5,
        nonce: "n".into(),
        created_at: 5,
        claims: vec![ClaimRequest {
            name: "age_over".into(),
            params: [("threshold".to_string(), "18".to_string())].into(),
        }],
        purpose: "p".into(),
        subject_jurisdiction: "eu".into(),
        consent_ref: None,
        subject_tokens: vec![SubjectToken {
            provider_id: "registry".into(),
            token: vec![7; 64],
        }],
        response_format: None,
    };
    let bytes = r.encode(&request).unwrap();
    assert_eq!(r.decode::<VerificationRequest>(&bytes).unwrap(), request);
    for cut in 0..bytes.len() {
        assert!(
            r.decode::<VerificationRequest>(&bytes[..cut]).is_err(),
            "decoded {cut} of {} bytes",
            bytes.len()
        );
    }
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(matches!(
        r.decode::<VerificationRequest>(&padded),
        Err(CodecError::TrailingBytes { count: 1, .. })
    ));
}

#[test]
fn provider_records_round_trip_and_the_set_key_is_pinned() {
    let r = Registry::builtin();
    let provider = Provider {
        stamp: None,
        provider_id: "bank-a".into(),
        region: "eu".into(),
        claims: vec!["account_verified".into()],
        oprf_suite: "ristretto255-SHA512".into(),
        oprf_public_key: vec![7; 32],
        attestation_keys: vec![ProviderKey {
            key_id: "a1".into(),
            algorithm: "Ed25519".into(),
            public_key: vec![9; 32],
        }],
        endpoints: [("oprf".to_owned(), "http://127.0.0.1:1".to_owned())].into(),
        state: ProviderState::Active,
        updated_at: 5,
        set_loaded_at: Some(6),
        set_size: Some(2),
    };
    assert_eq!(
        r.decode::<Provider>(&r.encode(&provider).unwrap()).unwrap(),
        provider
    );
    let entry = ProviderSetEntry {
        provider_id: "bank-a".into(),
        token: set_key("bank-a", b"output").to_vec(),
        attestation: Attestation {
            claims: vec!["account_verified".into()],
            attested_at: 5,
            signature: vec![1; 64],
            key_id: "a1".into(),
            commitments: vec![AttributeCommitment {
                attribute: "birthdate".into(),
                commitment: vec![2; 32],
            }],
        },
    };
    assert_eq!(
        r.decode::<ProviderSetEntry>(&r.encode(&entry).unwrap())
            .unwrap(),
        entry
    );
    // The set key is a contract between the provider connector and the psi stage (and any
    // other implementation of either): pin it (value recomputed independently with Python
    // hashlib from the rule in `set_key`).
    assert_eq!(
        hex_string(&set_key("bank-a", b"output")),
        "e624cb78681d325d4980758ab9cfc761cef602980e5b382a81112d8532a9cd5a"
    );
    assert_ne!(set_key("bank-a", b"output"), set_key("bank-b", b"output"));
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn batch_psi_records_round_trip() {
    let r = Registry::builtin();
    let chunk = PsiJobChunk {
        job_id: "j".into(),
        tenant_id: "acme".into(),
        chunk: 0,
        chunks: 2,
        tokens: vec![AvroBytes(vec![1; 64]), AvroBytes(vec![2; 64])],
        submitted_at: 5,
    };
    assert_eq!(
        r.decode::<PsiJobChunk>(&r.encode(&chunk).unwrap()).unwrap(),
        chunk
    );
    let result = PsiJobResult {
        job_id: "j".into(),
        request_id: "r".into(),
        tenant_id: "acme".into(),
        provider_id: "bank".into(),
        status: PsiJobStatus::Completed,
        reason: None,
        disclosure: PsiDisclosure::Intersection,
        submitted: 2,
        cardinality: Some(1),
        matched: vec![1],
        policy: None,
        completed_at: 6,
    };
    assert_eq!(
        r.decode::<PsiJobResult>(&r.encode(&result).unwrap())
            .unwrap(),
        result
    );
    assert_ne!(
        job_tokens_digest([[1u8; 2].as_slice(), &[3]]),
        job_tokens_digest([[1u8].as_slice(), &[2, 3]]),
        "token boundaries are part of the digest"
    );
}

#[test]
fn decisions_round_trip_with_text_and_binary_payloads() {
    let r = Registry::builtin();
    for payload in [
        Payload::Text("eyJ.x.y".into()),
        Payload::Binary(vec![0xd2, 0x84]),
    ] {
        let decision = Decision {
            request_id: "r".into(),
            tenant_id: "acme".into(),
            outcomes: vec![ClaimOutcome {
                claim_index: 0,
                claim_name: "account_verified".into(),
                outcome: Verdict::Verified,
                reason: None,
                evidence: Vec::new(),
            }],
            policy: None,
            issued_at: 1,
            expires_at: 2,
            nonce: "n".into(),
            subject_pseudonym: None,
            format: ResponseFormat::Jwt,
            payload,
            signature: None,
            signing_key_id: "k".into(),
            audit_log_index: None,
            rejection: None,
        };
        assert_eq!(
            r.decode::<Decision>(&r.encode(&decision).unwrap()).unwrap(),
            decision
        );
    }
}

#[test]
fn a_record_declaring_more_items_than_it_has_bytes_is_refused_before_allocating() {
    // Found by fuzz/fuzz_targets/avro_decode.rs: a 237-byte PsiJobChunk (a released version)
    // whose tokens array declares 531,578,493 items. apache-avro reserved room for them before
    // reading one (29 GB) and the process aborted; every consumer of the topic would have.
    let record = include_bytes!("../tests/regressions/psi_job_chunk_declaring_531m_tokens.avro");
    let error = Registry::builtin().decode_value(record).unwrap_err();
    assert!(
        matches!(&error, CodecError::Avro { schema, .. } if schema == "pavilion.PsiJobChunk"),
        "{error}"
    );
    assert!(error.to_string().contains("531578493"), "{error}");
    // A string declaring 400 MB (under apache-avro's own 512 MiB limit, which it would have
    // allocated and zeroed before finding the bytes missing).
    let mut demo = Registry::builtin()
        .encode(&DemoEvent {
            key: "k".into(),
            seq: 1,
            payload: "p".into(),
        })
        .unwrap();
    let length = zigzag_varint(400_000_000);
    demo.splice(HEADER_LEN..HEADER_LEN + 1, length);
    let error = Registry::builtin().decode_value(&demo).unwrap_err();
    assert!(error.to_string().contains("400000000"), "{error}");
}

fn zigzag_varint(n: i64) -> Vec<u8> {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// A decision (a schema with a union of string and bytes, so encoded through a generic
/// value) whose credential has two attributes encodes to the same bytes every time: the
/// fuzzer found the map written in a hash map's random order, one time in two.
#[test]
fn a_map_encodes_in_key_order_every_time() {
    let r = Registry::builtin();
    let record = include_bytes!("../tests/regressions/decision_with_a_two_entry_map.avro");
    let decision: Decision = r.decode(record).unwrap();
    let attributes = &decision.outcomes[0].evidence[1]
        .credential
        .as_ref()
        .unwrap()
        .attributes;
    assert_eq!(attributes.len(), 2);
    for _ in 0..64 {
        assert_eq!(r.encode(&decision).unwrap(), record);
    }
}
