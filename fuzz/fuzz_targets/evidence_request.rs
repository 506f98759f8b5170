//! The evidence service's input, a broker's proof or disclosure request (`parse_request`,
//! `parse_disclosure_request`, after Avro decoding: the service reads them off
//! `pavilion.evidence.requests.<provider>`), and the broker's reading of the answer's proof
//! (`Proof::from_bytes`) or BBS disclosure (`bbs::Disclosure::verify`, in psi).
//!
//! Input: one selector byte (even: a request, odd: an answer), then the Avro body of an
//! `EvidenceRequest` or `EvidenceResponse` (the target adds the current schema's header).
//!
//! Asserts: nothing panics; a request read names a known circuit, a 32-byte set key, a
//! non-negative bound and a canonical nonce, each what the record said; a disclosure request
//! read names 1 to 64 distinct attributes and a 32-byte nonce; a proof read is in its one
//! canonical encoding (its bytes are the input's); no disclosure made up of fuzzed bytes
//! verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pavilion_credentials::bbs;
use pavilion_fuzz::framed_current;
use pavilion_provider::evidence::{parse_disclosure_request, parse_request};
use pavilion_schemas::{EvidenceRequest, EvidenceResponse, Registry};
use pavilion_zk::{field_to_bytes, Proof};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let registry = Registry::builtin();
    if selector % 2 == 0 {
        let Ok(request) =
            registry.decode::<EvidenceRequest>(&framed_current::<EvidenceRequest>(body))
        else {
            return;
        };
        if let Ok(question) = parse_request(&request) {
            assert_eq!(question.circuit.id(), request.circuit);
            assert_eq!(question.set_key[..], request.set_key[..]);
            assert_eq!(i64::try_from(question.bound).ok(), Some(request.bound));
            assert_eq!(field_to_bytes(question.nonce)[..], request.nonce[..]);
        }
        if let Ok(question) = parse_disclosure_request(&request) {
            assert!((1..=64).contains(&question.names.len()));
            assert_eq!(question.nonce[..], request.nonce[..]);
            assert_eq!(question.names, request.disclose);
        }
    } else {
        let Ok(response) =
            registry.decode::<EvidenceResponse>(&framed_current::<EvidenceResponse>(body))
        else {
            return;
        };
        if let Some(bytes) = &response.proof {
            if let Ok(proof) = Proof::from_bytes(bytes) {
                assert_eq!(&proof.to_bytes(), bytes, "one encoding per proof");
            }
        }
        if let Some(d) = &response.disclosure {
            // As psi checks one: with a key of its own (the registered one), never the
            // answer's. Made-up bytes never verify under a key nobody fuzzes.
            let disclosure = bbs::Disclosure {
                header: d.header.clone(),
                disclosed: d
                    .disclosed
                    .iter()
                    .map(|a| (a.index.max(0) as usize, a.name.clone(), a.value.clone()))
                    .collect(),
                proof: d.proof.clone(),
            };
            static KEY: std::sync::OnceLock<bbs::SigningKey> = std::sync::OnceLock::new();
            let key =
                KEY.get_or_init(|| bbs::SigningKey::derive(&[7; 32], b"fuzz").expect("a key"));
            assert!(disclosure.verify(key.public_key(), &[0; 32]).is_err());
            let _ = bbs::AttributeHeader::parse(&d.header);
        }
    }
});
