//! Decision tokens as `pavilion verify` reads them (`jose::parse`: compact JWS, JWT, `vc+jwt`;
//! `audit replay` parses an SD-JWT's issuer-signed part, before the first `~`, the same way),
//! then the signature check against a published key.
//!
//! Input: a token (UTF-8); the same bytes also build a token through the signing stage's
//! framing (`jose::compact_with`) for the round trip.
//!
//! Asserts: nothing panics; a token parsed has alg EdDSA and the header's kid, its signing
//! input is its first two parts, and its payload and signature are in their one base64url
//! form (a token cannot be re-encoded into another that verifies); a token framed by the
//! signing stage parses back to its header, payload and kid, and verifies.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pavilion_fuzz::{verifying_key, FixedSigner, KID};
use pavilion_signing::jose;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        verify(token);
        if let Some((issuer_signed, _)) = token.split_once('~') {
            verify(issuer_signed);
        }
    }
    let _ = round_trip(&mut Unstructured::new(data));
});

/// What `pavilion verify` does with a token and a JWKS holding [`KID`]; whether it verifies.
fn verify(token: &str) -> bool {
    let Ok(parsed) = jose::parse(token) else {
        return false;
    };
    assert_eq!(parsed.header["alg"], jose::ALGORITHM);
    assert_eq!(parsed.header["kid"], parsed.kid.as_str());
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parsed.signing_input, format!("{}.{}", parts[0], parts[1]));
    assert_eq!(B64URL.encode(&parsed.payload), parts[1]);
    assert_eq!(B64URL.encode(&parsed.signature), parts[2]);
    parsed.kid == KID
        && Signature::from_slice(&parsed.signature).is_ok_and(|s| {
            verifying_key()
                .verify(parsed.signing_input.as_bytes(), &s)
                .is_ok()
        })
}

fn round_trip(u: &mut Unstructured) -> Result<()> {
    let typ: String = u.arbitrary()?;
    let cty: Option<String> = u.arbitrary()?;
    let payload: Vec<u8> = u.arbitrary()?;
    let mut parameters = vec![("typ", typ.as_str())];
    parameters.extend(cty.as_deref().map(|c| ("cty", c)));
    let (token, kid) =
        jose::compact_with(&FixedSigner, &parameters, &payload).expect("the signer signs");
    assert_eq!(kid, KID);
    let parsed = jose::parse(&token).expect("a token we framed parses");
    assert_eq!(parsed.kid, KID);
    assert_eq!(parsed.payload, payload);
    assert_eq!(parsed.header["typ"], typ.as_str());
    if let Some(c) = &cty {
        assert_eq!(parsed.header["cty"], c.as_str());
    }
    assert!(verify(&token), "a token we signed verifies");
    Ok(())
}
