//! `VerificationRequest::signing_bytes`, the canonical bytes a tenant's Ed25519 signature
//! covers (tenancy computes them for every request it reads).
//!
//! Input: the Avro body of a `VerificationRequest` (as a producer writes it, behind the
//! current schema's header, which the target adds); when it does not decode, the same bytes
//! build a request field by field (`arbitrary`), so every input reaches `signing_bytes`.
//!
//! Asserts: deterministic (a clone gives the same bytes); the signature is not covered;
//! unambiguous: the bytes read back, by the format's own rules, to exactly the request's
//! fields (two requests that differ anywhere but in the signature never share signing bytes);
//! and the request's Avro round trip keeps them.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use pavilion_fuzz::framed_current;
use pavilion_schemas::{
    ClaimRequest, Registry, ResponseFormat, SubjectToken, VerificationRequest, REQUEST_SIGNING_TAG,
};

fuzz_target!(|data: &[u8]| {
    let registry = Registry::builtin();
    let request = match registry.decode(&framed_current::<VerificationRequest>(data)) {
        Ok(request) => request,
        Err(_) => match request(&mut Unstructured::new(data)) {
            Ok(request) => request,
            Err(_) => return,
        },
    };
    let bytes = request.signing_bytes();
    assert_eq!(request.clone().signing_bytes(), bytes, "deterministic");
    let mut resigned = request.clone();
    resigned.signature = vec![0xA5; 64];
    assert_eq!(
        resigned.signing_bytes(),
        bytes,
        "the signature is not signed"
    );
    let mut unsigned = request.clone();
    unsigned.signature.clear();
    assert_eq!(read(&bytes).as_ref(), Some(&unsigned), "unambiguous");
    let encoded = registry.encode(&request).expect("a request encodes");
    let decoded: VerificationRequest = registry.decode(&encoded).expect("and decodes");
    assert_eq!(
        decoded.signing_bytes(),
        bytes,
        "survives the Avro round trip"
    );
});

/// A request from unstructured bytes.
fn request(u: &mut Unstructured) -> Result<VerificationRequest> {
    let claims = (0..u.int_in_range(0..=4)?)
        .map(|_| {
            Ok(ClaimRequest {
                name: u.arbitrary()?,
                params: u.arbitrary::<BTreeMap<String, String>>()?,
            })
        })
        .collect::<Result<_>>()?;
    let subject_tokens = (0..u.int_in_range(0..=3)?)
        .map(|_| {
            Ok(SubjectToken {
                provider_id: u.arbitrary()?,
                token: u.arbitrary()?,
            })
        })
        .collect::<Result<_>>()?;
    let formats = [
        ResponseFormat::Unknown,
        ResponseFormat::Json,
        ResponseFormat::Jws,
        ResponseFormat::Jwt,
        ResponseFormat::VcJose,
        ResponseFormat::SdJwt,
    ];
    Ok(VerificationRequest {
        request_id: u.arbitrary()?,
        tenant_id: u.arbitrary()?,
        key_id: u.arbitrary()?,
        signature: u.arbitrary()?,
        signed_at: u.arbitrary()?,
        nonce: u.arbitrary()?,
        created_at: u.arbitrary()?,
        claims,
        purpose: u.arbitrary()?,
        subject_jurisdiction: u.arbitrary()?,
        consent_ref: u.arbitrary()?,
        subject_tokens,
        response_format: if u.arbitrary()? {
            Some(*u.choose(&formats)?)
        } else {
            None
        },
    })
}

/// The signing bytes read back by the rules `signing_bytes` documents; `None` if they do not
/// follow them or leave bytes over.
fn read(bytes: &[u8]) -> Option<VerificationRequest> {
    let mut r = Reader(bytes);
    if r.bytes()? != REQUEST_SIGNING_TAG {
        return None;
    }
    let request_id = r.string()?;
    let tenant_id = r.string()?;
    let key_id = r.string()?;
    let signed_at = r.i64()?;
    let nonce = r.string()?;
    let created_at = r.i64()?;
    let claims = (0..r.u32()?)
        .map(|_| {
            let name = r.string()?;
            let mut params = BTreeMap::new();
            let mut last: Option<String> = None;
            for _ in 0..r.u32()? {
                let (k, v) = (r.string()?, r.string()?);
                // Sorted by name, each once: a map has one signing form.
                if last.as_ref().is_some_and(|l| *l >= k) {
                    return None;
                }
                last = Some(k.clone());
                params.insert(k, v);
            }
            Some(ClaimRequest { name, params })
        })
        .collect::<Option<_>>()?;
    let purpose = r.string()?;
    let subject_jurisdiction = r.string()?;
    let consent_ref = r.optional(|r| r.string())?;
    let subject_tokens = (0..r.u32()?)
        .map(|_| {
            Some(SubjectToken {
                provider_id: r.string()?,
                token: r.bytes()?.to_vec(),
            })
        })
        .collect::<Option<_>>()?;
    let response_format =
        r.optional(|r| serde_json::from_value(serde_json::Value::String(r.string()?)).ok())?;
    r.0.is_empty().then_some(VerificationRequest {
        request_id,
        tenant_id,
        key_id,
        signature: Vec::new(),
        signed_at,
        nonce,
        created_at,
        claims,
        purpose,
        subject_jurisdiction,
        consent_ref,
        subject_tokens,
        response_format,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(usize::try_from(n).ok()?)
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }

    fn optional<T>(&mut self, value: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.take(1)? {
            [0] => Some(None),
            [1] => value(self).map(Some),
            _ => None,
        }
    }
}
