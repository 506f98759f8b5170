//! The OPRF evaluation service's bodies: a request as the service reads it
//! (`parse_evaluate_request`, then evaluation of what it returns), and an answer as the
//! relying party's client reads it (`parse_evaluate_response`, then proof verification).
//!
//! Input: one body (JSON); both readers get it.
//!
//! Asserts: nothing panics; a request read has 1 to `MAX_BATCH` elements of 32 bytes, and the
//! body the client would send for those elements reads back to them; evaluating them gives
//! one element each or names a bad element inside the batch; an answer read has 32-byte
//! elements and a 64-byte proof, its canonical body reads back to it, and it never passes
//! verification for inputs blinded afresh (no answer made without the key does).
#![no_main]

use std::sync::LazyLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use pavilion_provider::oprf::{self, OprfError, ProviderKey, ELEMENT_LEN, MAX_BATCH};
use pavilion_provider::protocol::{
    parse_evaluate_request, parse_evaluate_response, EvaluateRequest, EvaluateResponse,
};

/// Evaluation and verification cost a scalar multiplication or two per element; larger
/// batches only slow the fuzzer down.
const EVALUATED_AT_MOST: usize = 4;

static KEY: LazyLock<ProviderKey> =
    LazyLock::new(|| ProviderKey::derive(&[3; 32], b"pavilion-fuzz").expect("a key"));

fuzz_target!(|data: &[u8]| {
    if let Ok(blinded) = parse_evaluate_request(data, MAX_BATCH) {
        assert!((1..=MAX_BATCH).contains(&blinded.len()));
        assert!(blinded.iter().all(|b| b.len() == ELEMENT_LEN));
        let body = serde_json::to_vec(&EvaluateRequest {
            blinded: blinded.iter().map(|b| B64.encode(b)).collect(),
        })
        .expect("serializable");
        assert_eq!(
            parse_evaluate_request(&body, MAX_BATCH).as_ref(),
            Ok(&blinded)
        );
        if blinded.len() <= EVALUATED_AT_MOST {
            match KEY.evaluate_batch(&blinded) {
                Ok((evaluated, _)) => assert_eq!(evaluated.len(), blinded.len()),
                Err(OprfError::BadElement { index }) => assert!(index < blinded.len()),
                Err(e) => panic!("a read batch fails evaluation with {e}"),
            }
        }
    }
    if let Ok((evaluated, proof)) = parse_evaluate_response(data) {
        let body = serde_json::to_vec(&EvaluateResponse {
            evaluated: evaluated.iter().map(|e| B64.encode(e)).collect(),
            proof: B64.encode(proof),
        })
        .expect("serializable");
        assert_eq!(
            parse_evaluate_response(&body).as_ref(),
            Ok(&(evaluated.clone(), proof))
        );
        if (1..=EVALUATED_AT_MOST).contains(&evaluated.len()) {
            let inputs: Vec<Vec<u8>> = (1..=evaluated.len() as u8).map(|i| vec![i]).collect();
            let blinded = inputs
                .iter()
                .map(|i| oprf::blind(i))
                .collect::<Result<Vec<_>, _>>()
                .expect("blinds");
            let inputs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
            let result =
                oprf::finalize_batch(&inputs, &blinded, &evaluated, &proof, &KEY.public_key());
            assert!(result.is_err(), "an answer made without the key verified");
        }
    }
});
