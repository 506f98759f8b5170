//! The evidence service's input, a broker's proof request (`parse_request`, after Avro
//! decoding: the service reads them off `pavilion.evidence.requests.<provider>`), and the
//! broker's reading of the answer's proof (`Proof::from_bytes`, in psi).
//!
//! Input: one selector byte (even: a request, odd: an answer), then the Avro body of an
//! `EvidenceRequest` or `EvidenceResponse` (the target adds the current schema's header).
//!
//! Asserts: nothing panics; a request read names a known circuit, a 32-byte set key, a
//! non-negative bound and a canonical nonce, each what the record said; a proof read is in
//! its one canonical encoding (its bytes are the input's).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pavilion_fuzz::framed_current;
use pavilion_provider::evidence::parse_request;
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
    }
});
