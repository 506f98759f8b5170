//! The two richer formats: a W3C VC 2.0 credential secured with VC-JOSE-COSE
//! (`application/vc+jwt`: the credential is the JWS payload), and an SD-JWT (RFC 9901) where
//! only the claims the policy allows are selectively disclosable and every other claim is
//! absent.

use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use pavilion_schemas::{Decision, ResponseTemplate};
use rand::Rng as _;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::processor::{audience, claims_set, payload_name, verdict_name};
use crate::{jose, DecisionSigner, SigningConfig, RESPONSE_SCHEMA};

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

/// The decision as a VC 2.0 credential: the claims set becomes the credential subject.
/// Assembled as text so the field order is fixed whatever serde_json features the build has.
pub fn credential(config: &SigningConfig, template: &ResponseTemplate, d: &Decision) -> String {
    format!(
        "{{\"@context\":[\"https://www.w3.org/ns/credentials/v2\"],\"type\":[\"VerifiableCredential\",\"PavilionDecision\"],\"id\":{},\"issuer\":{},\"validFrom\":{},\"validUntil\":{},\"credentialSubject\":{}}}",
        json!(format!("urn:pavilion:decision:{}", d.request_id)),
        json!(config.issuer),
        json!(rfc3339(d.issued_at)),
        json!(rfc3339(d.expires_at)),
        claims_set(config, template, d),
    )
}

/// An SD-JWT: the issuer-signed JWT carries the decision's frame (issuer, audience, times,
/// nonce, policy) and `_sd` digests; each disclosable claim is a disclosure
/// `[salt, name, outcome]` appended after `~`. Claims the policy does not list as
/// disclosable are not in the token at all.
pub fn sd_jwt(
    config: &SigningConfig,
    template: &ResponseTemplate,
    d: &Decision,
    disclosable: &[String],
    signer: &dyn DecisionSigner,
) -> Result<(String, String), String> {
    let mut disclosures = Vec::new();
    for o in d
        .outcomes
        .iter()
        .filter(|o| disclosable.contains(&o.claim_name))
    {
        let mut salt = [0u8; 16];
        rand::rng().fill(&mut salt);
        let disclosure = format!(
            "[{},{},{{\"outcome\":{},\"reason\":{}}}]",
            json!(B64URL.encode(salt)),
            json!(payload_name(template, &o.claim_name)),
            json!(verdict_name(o.outcome)),
            json!(o.reason),
        );
        disclosures.push(B64URL.encode(disclosure));
    }
    let mut digests: Vec<String> = disclosures
        .iter()
        .map(|d| B64URL.encode(Sha256::digest(d.as_bytes())))
        .collect();
    // Sorted, so the order of the digests says nothing about the claims' order.
    digests.sort();
    let policy = d.policy.as_ref().map(|p| {
        format!(
            "{{\"id\":{},\"version\":{},\"hash\":{}}}",
            json!(p.policy_id),
            p.version,
            json!(B64URL.encode(&p.content_hash))
        )
    });
    // Fixed order; `json!` maps would follow the build's serde_json features.
    let payload = format!(
        "{{\"iss\":{},\"aud\":{},\"jti\":{},\"iat\":{},\"exp\":{},\"nonce\":{},{}\"response_schema\":{},\"policy\":{},\"_sd_alg\":\"sha-256\",\"_sd\":{}}}",
        json!(config.issuer),
        json!(audience(template, d)),
        json!(d.request_id),
        d.issued_at / 1000,
        d.expires_at / 1000,
        json!(d.nonce),
        d.subject_pseudonym
            .as_ref()
            .map_or(String::new(), |p| format!("\"sub\":{},", json!(B64URL.encode(p)))),
        json!(RESPONSE_SCHEMA),
        policy.unwrap_or_else(|| "null".into()),
        json!(digests),
    );
    let (jwt, kid) = jose::compact_with(
        signer,
        &[("typ", "pavilion-decision+sd-jwt")],
        payload.as_bytes(),
    )?;
    let mut token = jwt;
    for d in &disclosures {
        token.push('~');
        token.push_str(d);
    }
    token.push('~');
    Ok((token, kid))
}
