//! The audit stage as data, and the Merkle log against RFC 6962's published vectors and
//! against ct-merkle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ed25519_dalek::{Signer, SigningKey};
use expect_test::expect;
use pavilion_runtime::testing::TestDriver;
use pavilion_runtime::{Resources, StageKinds};
use pavilion_schemas::{
    AuditEntry, Checkpoint, ClaimRequest, DecisionIssued, Registry, ResponseFormat, SubjectErasure,
    SubjectToken, VerificationRequest,
};

use crate::log::{verify_consistency, verify_inclusion, Frontier, LogView};
use crate::note::{open, vkey, NoteError, NoteKey};
use crate::{CheckpointSigner, SharedCheckpointSigner, SharedSubjectKeys, SubjectKeys};

/// RFC 6962's reference leaves and the roots of their prefixes (the vectors of the original
/// Certificate Transparency implementation, reused by transparency-dev/merkle).
const LEAVES: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn leaf_hash(input: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::new()
        .chain_update([0u8])
        .chain_update(input)
        .finalize()
        .into()
}

#[test]
fn frontier_and_ct_merkle_reproduce_the_rfc6962_vectors() {
    let mut frontier = Frontier::default();
    let mut view = LogView::default();
    assert_eq!(
        hex::encode(frontier.root()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    for (leaf, root) in LEAVES.iter().zip(ROOTS) {
        frontier.append(leaf_hash(leaf));
        view.push(leaf.to_vec());
        assert_eq!(
            hex::encode(frontier.root()),
            root,
            "frontier at {}",
            frontier.size
        );
        assert_eq!(
            hex::encode(view.root(view.len()).unwrap()),
            root,
            "ct-merkle"
        );
    }
}

#[test]
fn frontier_roots_and_proofs_agree_with_ct_merkle_at_every_size() {
    let mut frontier = Frontier::default();
    let mut view = LogView::default();
    let mut roots = vec![frontier.root()];
    for i in 0..70u32 {
        let input = i.to_be_bytes().to_vec();
        frontier.append(leaf_hash(&input));
        view.push(input);
        roots.push(frontier.root());
        assert_eq!(view.root(frontier.size).unwrap(), frontier.root());
        // The frontier survives the store's JSON.
        let copy: Frontier =
            serde_json::from_str(&serde_json::to_string(&frontier).unwrap()).unwrap();
        assert_eq!(copy, frontier);
    }
    for size in [1u64, 2, 5, 8, 13, 64, 70] {
        let root = roots[size as usize];
        for index in [0, size / 2, size - 1] {
            let proof = view.inclusion(index, size).unwrap();
            let input = (index as u32).to_be_bytes();
            assert!(verify_inclusion(&input, index, size, &root, &proof));
            assert!(!verify_inclusion(b"other", index, size, &root, &proof));
        }
        for from in [1u64, size / 2 + 1, size] {
            let proof = view.consistency(from, size).unwrap();
            assert!(verify_consistency(
                from,
                &roots[from as usize],
                size,
                &root,
                &proof
            ));
            let mut forged = roots[from as usize];
            forged[0] ^= 1;
            assert!(!verify_consistency(from, &forged, size, &root, &proof));
        }
    }
    assert!(view.inclusion(70, 70).is_err());
    assert!(view.consistency(3, 71).is_err());
}

struct TestSigner(SigningKey);

impl CheckpointSigner for TestSigner {
    fn sign(&self, message: &[u8]) -> Result<([u8; 32], Vec<u8>), String> {
        Ok((
            self.0.verifying_key().to_bytes(),
            self.0.sign(message).to_bytes().to_vec(),
        ))
    }
}

/// Keys by id; `None` once erased.
#[derive(Default)]
struct TestKeys(Mutex<BTreeMap<String, Option<[u8; 32]>>>);

impl SubjectKeys for TestKeys {
    fn key(&self, key_id: &str) -> Result<Option<[u8; 32]>, String> {
        let mut keys = self.0.lock().unwrap();
        let n = keys.len() as u8;
        Ok(*keys.entry(key_id.to_owned()).or_insert(Some([n + 1; 32])))
    }
}

fn driver(keys: &Arc<TestKeys>) -> TestDriver {
    let mut d = TestDriver::new(
        crate::STANDALONE_TOPOLOGY,
        "audit",
        &StageKinds::new([&crate::KIND]),
    );
    let mut resources = Resources::default();
    let signer: SharedCheckpointSigner = Arc::new(TestSigner(SigningKey::from_bytes(&[9; 32])));
    resources.insert(crate::CHECKPOINT_SIGNER, signer);
    let subject_keys: SharedSubjectKeys = keys.clone();
    resources.insert(crate::SUBJECT_KEYS, subject_keys);
    d.attach_resources(resources);
    d
}

const TOKEN: [u8; 64] = [0xAB; 64];

fn request(id: &str) -> VerificationRequest {
    VerificationRequest {
        request_id: id.into(),
        tenant_id: "acme".into(),
        key_id: "k1".into(),
        signature: vec![0; 64],
        signed_at: 0,
        nonce: "n".into(),
        created_at: 0,
        claims: vec![ClaimRequest {
            name: "age_over".into(),
            params: BTreeMap::new(),
        }],
        purpose: "kyc".into(),
        subject_jurisdiction: "DE".into(),
        consent_ref: None,
        subject_tokens: vec![SubjectToken {
            provider_id: "bank".into(),
            token: TOKEN.to_vec(),
        }],
        response_format: None,
    }
}

fn issued(id: &str) -> DecisionIssued {
    DecisionIssued {
        request_id: id.into(),
        tenant_id: "acme".into(),
        topic: "decisions.acme".into(),
        decision_digest: vec![1; 32],
        payload_digest: vec![2; 32],
        format: ResponseFormat::Jwt,
        signing_key_id: "k".into(),
        policy: None,
        issued_at: 0,
    }
}

#[test]
fn every_event_is_a_leaf_and_every_shard_is_checkpointed_and_signed() {
    let keys = Arc::new(TestKeys::default());
    let mut d = driver(&keys);
    let registry = Registry::builtin();
    let mut out = Vec::new();
    for i in 0..3 {
        out.extend(d.send("requests", "acme", &request(&format!("r{i}"))));
        out.extend(d.send("issued", "acme", &issued(&format!("r{i}"))));
    }
    let quiet = d.punctuate();
    assert!(quiet.iter().all(|r| r.topic == "checkpoints"));
    out.extend(quiet);
    assert!(d.punctuate().is_empty(), "nothing new, no checkpoint");

    let mut rendered = String::new();
    let mut view = LogView::default();
    let vkey = vkey(
        "test/audit",
        &SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes(),
    );
    let known = [NoteKey::from_vkey(&vkey).unwrap()];
    for r in &out {
        if let Ok(e) = registry.decode::<AuditEntry>(&r.value) {
            assert_eq!(e.leaf_hash, e.computed_leaf_hash());
            assert_eq!(e.index as u64, view.len());
            view.push(e.leaf_input());
            let subject = e.encrypted_fields.as_ref().map(|f| {
                let key = keys.key(&f.key_id).unwrap().unwrap();
                let fields = crate::subject::open(&key, &e.event, f).expect("opens");
                assert!(crate::subject::open(&[0; 32], &e.event, f).is_none());
                format!(
                    " subject: tenant={} tokens={}",
                    fields.tenant_id,
                    fields.subject_tokens.len()
                )
            });
            rendered += &format!(
                "{} #{} {}@{} {} request={:?}{}\n",
                e.origin,
                e.index,
                e.event.topic,
                e.event.offset,
                e.event.event_type,
                e.request_id,
                subject.unwrap_or_default()
            );
        } else {
            let c: Checkpoint = registry.decode(&r.value).unwrap();
            let body = open(&c.note, &known).expect("the note verifies");
            assert_eq!(body.root.to_vec(), c.root_hash);
            assert_eq!(view.root(c.tree_size as u64).unwrap().to_vec(), c.root_hash);
            rendered += &format!("checkpoint {} size {}\n", c.origin, c.tree_size);
        }
        assert!(
            !r.value.windows(8).any(|w| w == [0xAB; 8]),
            "no plaintext token in {}",
            r.topic
        );
    }
    expect![[r#"
        test/audit/0 #0 requests@0 pavilion.VerificationRequest request=Some("r0") subject: tenant=acme tokens=1
        test/audit/0 #1 issued@1 pavilion.DecisionIssued request=Some("r0")
        test/audit/0 #2 requests@2 pavilion.VerificationRequest request=Some("r1") subject: tenant=acme tokens=1
        test/audit/0 #3 issued@3 pavilion.DecisionIssued request=Some("r1")
        checkpoint test/audit/0 size 4
        test/audit/0 #4 requests@4 pavilion.VerificationRequest request=Some("r2") subject: tenant=acme tokens=1
        test/audit/0 #5 issued@5 pavilion.DecisionIssued request=Some("r2")
        checkpoint test/audit/0 size 6
    "#]]
    .assert_eq(&rendered);
}

#[test]
fn after_erasure_the_subjects_events_are_logged_without_subject_fields() {
    let keys = Arc::new(TestKeys::default());
    let mut d = driver(&keys);
    let registry = Registry::builtin();
    let key_id = crate::subject::key_id("bank", &TOKEN);
    keys.0.lock().unwrap().insert(key_id.clone(), None);
    let erasure = SubjectErasure {
        key_id,
        requested_by: "dpo".into(),
        erased_at: 0,
    };
    let logged: Vec<AuditEntry> = d
        .send("erasures", "acme", &erasure)
        .into_iter()
        .chain(d.send("requests", "acme", &request("r9")))
        .map(|r| registry.decode(&r.value).unwrap())
        .collect();
    assert_eq!(logged[0].event.event_type, "pavilion.SubjectErasure");
    assert_eq!(logged[1].request_id.as_deref(), Some("r9"));
    assert_eq!(logged[1].encrypted_fields, None);
}

/// In a region that does not serve the subject's jurisdiction, a (misrouted) request is
/// logged without its subject's fields, and no subject key is made for it there.
#[test]
fn a_request_of_a_jurisdiction_the_region_does_not_serve_keeps_no_subject_fields() {
    let keys = Arc::new(TestKeys::default());
    let mut d = driver(&keys);
    let mut resources = Resources::default();
    let signer: SharedCheckpointSigner = Arc::new(TestSigner(SigningKey::from_bytes(&[9; 32])));
    resources.insert(crate::CHECKPOINT_SIGNER, signer);
    let subject_keys: SharedSubjectKeys = keys.clone();
    resources.insert(crate::SUBJECT_KEYS, subject_keys);
    resources.insert(
        pavilion_runtime::REGION,
        pavilion_runtime::topology::RegionSpec {
            name: "us".into(),
            jurisdictions: vec!["US".into()],
        },
    );
    d.attach_resources(resources);
    let registry = Registry::builtin();
    let mut us_subject = request("r-us");
    us_subject.subject_jurisdiction = "US-CA".into();
    us_subject.subject_tokens[0].token = vec![0xCD; 64];
    let logged: Vec<AuditEntry> = d
        .send("requests", "acme", &request("r-de"))
        .into_iter()
        .chain(d.send("requests", "acme", &us_subject))
        .map(|r| registry.decode(&r.value).unwrap())
        .collect();
    assert_eq!(logged[0].request_id.as_deref(), Some("r-de"));
    assert_eq!(logged[0].encrypted_fields, None);
    assert!(
        logged[1].encrypted_fields.is_some(),
        "a served subject's are kept"
    );
    assert_eq!(
        keys.0.lock().unwrap().len(),
        1,
        "a key only for the served subject"
    );
}

/// Tenancy dead-letters an undecodable request; audit reads the same record and must not
/// dead-letter it a second time, yet the log keeps its place: an entry of the reserved type
/// that commits to the raw bytes' digest and position, and to nothing about a subject.
#[test]
fn undecodable_records_are_logged_by_digest_and_never_dead_lettered() {
    use sha2::Digest;
    let keys = Arc::new(TestKeys::default());
    let mut d = driver(&keys);
    let registry = Registry::builtin();
    let framed = registry.encode(&request("r1")).unwrap();
    // A known fingerprint in front of a body that ends too early.
    let truncated = framed[..framed.len() / 2].to_vec();
    let inputs: [(&str, Vec<u8>); 5] = [
        ("good", registry.encode(&request("r0")).unwrap()),
        ("garbage", b"garbage 1".to_vec()),
        ("truncated", truncated),
        ("empty", Vec::new()),
        ("good", framed),
    ];
    let mut rendered = String::new();
    for (name, bytes) in &inputs {
        for r in d.send_raw("requests", b"acme", bytes) {
            let Ok(e) = registry.decode::<AuditEntry>(&r.value) else {
                rendered += &format!("{name}: {} record\n", r.topic);
                continue;
            };
            assert_eq!(e.leaf_hash, e.computed_leaf_hash());
            let digest_ok = e.event_digest == sha2::Sha256::digest(bytes).to_vec();
            rendered += &format!(
                "{name}: #{} {}@{} {} request={:?} subject={} digest of the raw bytes: {digest_ok}\n",
                e.index,
                e.event.topic,
                e.event.offset,
                e.event.event_type,
                e.request_id,
                e.encrypted_fields.is_some(),
            );
        }
    }
    expect![[r#"
        good: #0 requests@0 pavilion.VerificationRequest request=Some("r0") subject=true digest of the raw bytes: true
        garbage: #1 requests@1 undecodable request=None subject=false digest of the raw bytes: true
        truncated: #2 requests@2 undecodable request=None subject=false digest of the raw bytes: true
        empty: #3 requests@3 undecodable request=None subject=false digest of the raw bytes: true
        empty: checkpoints record
        good: #4 requests@4 pavilion.VerificationRequest request=Some("r1") subject=true digest of the raw bytes: true
    "#]]
    .assert_eq(&rendered);
}

#[test]
fn a_note_verifies_only_under_its_key_and_unaltered() {
    let key = SigningKey::from_bytes(&[9; 32]);
    let public = key.verifying_key().to_bytes();
    let body = crate::note::CheckpointBody {
        origin: "o/0".into(),
        size: 3,
        root: [7; 32],
    };
    let note = crate::note::signed_note(
        &body,
        "o",
        &public,
        &key.sign(body.text().as_bytes()).to_bytes(),
    );
    let known = [NoteKey::from_vkey(&vkey("o", &public)).unwrap()];
    assert_eq!(open(&note, &known), Ok(body));
    let altered = note.replacen("\n3\n", "\n4\n", 1);
    assert!(matches!(
        open(&altered, &known),
        Err(NoteError::Unverified(_))
    ));
    let other = [NoteKey::from_vkey(&vkey(
        "o",
        &SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes(),
    ))
    .unwrap()];
    assert!(matches!(open(&note, &other), Err(NoteError::Unverified(_))));
    assert!(NoteKey::from_vkey("o+00000000+AQ==").is_err());
}

#[test]
fn a_vkey_with_an_empty_key_is_refused_not_a_panic() {
    // Found by fuzz/fuzz_targets/checkpoint_note.rs: a vkey ending in `+` has an empty key,
    // and taking its algorithm byte panicked (`split_at(1)` of nothing).
    let found = include_str!("../tests/regressions/vkey_with_an_empty_key.txt");
    for vkey in [found, "o+00000000+"] {
        assert_eq!(
            NoteKey::from_vkey(vkey),
            Err(NoteError::BadVkey(vkey.to_owned()))
        );
    }
}

/// Ten requests' worth of entries (checkpoints at 4, 8 and 10), decoded.
fn logged() -> (Vec<AuditEntry>, Vec<Checkpoint>) {
    let keys = Arc::new(TestKeys::default());
    let mut d = driver(&keys);
    let registry = Registry::builtin();
    let mut out = Vec::new();
    for i in 0..10 {
        out.extend(d.send("issued", "acme", &issued(&format!("r{i}"))));
    }
    out.extend(d.punctuate());
    let entries = out
        .iter()
        .filter_map(|r| registry.decode::<AuditEntry>(&r.value).ok())
        .collect();
    let checkpoints = out
        .iter()
        .filter_map(|r| registry.decode::<Checkpoint>(&r.value).ok())
        .collect();
    (entries, checkpoints)
}

fn audit(entries: Vec<AuditEntry>, checkpoints: &[Checkpoint]) -> String {
    let known = [NoteKey::from_vkey(&vkey(
        "test/audit",
        &SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes(),
    ))
    .unwrap()];
    let digest = |e: &pavilion_schemas::EventRef| {
        // The source events as the auditor would re-read them: issued r{offset}.
        let bytes = Registry::builtin()
            .encode(&issued(&format!("r{}", e.offset)))
            .unwrap();
        use sha2::Digest;
        Some(sha2::Sha256::digest(bytes).into())
    };
    match crate::verify::verify(entries, checkpoints, &known, &mut { digest }, &mut || {}) {
        Ok(report) => report
            .iter()
            .map(|(o, r)| {
                format!(
                    "{o} ok: {} entries, {} checkpoints, latest at {:?}",
                    r.entries,
                    r.checkpoints,
                    r.latest.map(|(s, _)| s)
                )
            })
            .collect(),
        Err(d) => d.to_string(),
    }
}

#[test]
fn the_auditor_points_at_the_first_tampered_entry() {
    let (entries, checkpoints) = logged();
    let mut cases = String::new();
    let mut case = |name: &str, entries: Vec<AuditEntry>, checkpoints: &[Checkpoint]| {
        cases += &format!("{name}: {}\n", audit(entries, checkpoints));
    };
    case("intact", entries.clone(), &checkpoints);

    let mut flipped = entries.clone();
    flipped[5].event_digest[0] ^= 1;
    case("flipped byte", flipped.clone(), &checkpoints);
    // The tamperer also recomputes the leaf hash: the source event still gives it away.
    flipped[5].leaf_hash = flipped[5].computed_leaf_hash().to_vec();
    case("flipped byte, leaf rehashed", flipped, &checkpoints);

    let mut removed = entries.clone();
    removed.remove(2);
    case("removed", removed, &checkpoints);

    let mut reordered = entries.clone();
    reordered.swap(3, 4);
    case("reordered pair", reordered, &checkpoints);

    case("tail cut", entries[..9].to_vec(), &checkpoints);

    let mut forged = checkpoints.clone();
    forged[1].root_hash[0] ^= 1;
    forged[1].note = forged[1].note.replacen(
        &base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            &checkpoints[1].root_hash,
        ),
        &base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            &forged[1].root_hash,
        ),
        1,
    );
    case("forged checkpoint", entries.clone(), &forged);

    expect![[r#"
        intact: test/audit/0 ok: 10 entries, 3 checkpoints, latest at Some(10)
        flipped byte: test/audit/0: entry 5: altered: the leaf hash does not match the entry's fields
        flipped byte, leaf rehashed: test/audit/0: entry 5: the logged digest is not the digest of the event at issued/0@5
        removed: test/audit/0: entry 2: missing, or out of order: the next entry in the log is 3
        reordered pair: test/audit/0: entry 3: missing, or out of order: the next entry in the log is 4
        tail cut: test/audit/0: entry 9: missing: a signed checkpoint covers 10 entries, the log has 9
        forged checkpoint: test/audit/0: entry 8: checkpoint at size 8: no signature on the note verifies under a known key (test/audit+8a2a1e39: bad signature)
    "#]].assert_eq(&cases);
}
