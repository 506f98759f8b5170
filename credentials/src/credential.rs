//! Credentials a provider issues about one of its members to the member's wallet (the
//! holder), and the presentations the holder makes of them:
//!
//! - **SD-JWT VC** (`dc+sd-jwt`, RFC 9901 + draft-ietf-oauth-sd-jwt-vc): every attribute is a
//!   selectively disclosable claim (`[salt, name, value]`, its SHA-256 in `_sd`); the holder's
//!   key is in `cnf.jwk`, and a presentation ends in a key binding JWT (`kb+jwt`) over the
//!   verifier's nonce and audience and the SHA-256 of what it presents (`sd_hash`).
//! - **VC-JWT** (W3C VC 2.0 secured with JOSE, `vc+jwt`): the credential is the JWS payload,
//!   every attribute in clear in `credentialSubject`, whose `id` is the holder's key as a
//!   `did:jwk`; a presentation is a `vp+jwt` the holder signs over the nonce and audience,
//!   enveloping the credential (`EnvelopedVerifiableCredential`).
//!
//! Both carry `validFrom`/`validUntil` (`nbf`/`exp` in the SD-JWT) and a Bitstring Status List
//! entry. Issuer and holder keys are Ed25519 (EdDSA). Verification here is the format's:
//! signatures, disclosures, key binding, validity times; whose key an issuer's is, whether the
//! provider is active and whether the credential is revoked are the caller's (the broker's
//! provider registry and status lists), through [`Expectations::issuer_key`] and
//! [`Presented::status`].

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore as _};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::jose::{self, JwsSigner, KeySigner};
use crate::status_list::StatusEntry;
use crate::{rfc3339, seconds_from_rfc3339, CredentialError, IssuerKeys, VC_CONTEXT};

/// `typ` of an issued SD-JWT VC.
pub const SD_JWT_VC_TYP: &str = "dc+sd-jwt";
/// `typ` of a key binding JWT.
pub const KB_JWT_TYP: &str = "kb+jwt";
/// `typ` of a VC-JWT.
pub const VC_JWT_TYP: &str = "vc+jwt";
/// `typ` of a VC-JWT presentation.
pub const VP_JWT_TYP: &str = "vp+jwt";
/// The credential type (`vct` of the SD-JWT VC, second `type` of the VC): a provider's
/// statement of a member's attributes.
pub const CREDENTIAL_TYPE: &str = "urn:pavilion:credential:member-attributes:v1";
/// How a provider's credentials name their issuer: `urn:pavilion:provider:<id>`.
const ISSUER_PREFIX: &str = "urn:pavilion:provider:";

/// The issuer id of provider `provider`'s credentials.
pub fn provider_issuer(provider: &str) -> String {
    format!("{ISSUER_PREFIX}{provider}")
}

/// The provider an issuer id names, if it is a provider's.
pub fn issuer_provider(issuer: &str) -> Option<&str> {
    issuer.strip_prefix(ISSUER_PREFIX).filter(|p| !p.is_empty())
}

/// Names an attribute may not take: the claims the formats themselves use.
const RESERVED: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "iat",
    "nbf",
    "exp",
    "jti",
    "cnf",
    "vct",
    "status",
    "_sd",
    "_sd_alg",
    "...",
    "id",
    "credentialStatus",
];

/// The two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// SD-JWT VC: attributes selectively disclosable, key binding to the holder.
    SdJwtVc,
    /// W3C VC 2.0 as `vc+jwt`: every attribute in clear; presented in a holder-signed VP.
    VcJwt,
}

impl Format {
    /// The name used in files and decisions.
    pub fn name(self) -> &'static str {
        match self {
            Format::SdJwtVc => "sd-jwt-vc",
            Format::VcJwt => "vc-jwt",
        }
    }
}

/// What a credential says.
#[derive(Debug, Clone)]
pub struct Issuance<'a> {
    /// The issuer (`urn:pavilion:provider:<id>`).
    pub issuer: &'a str,
    /// The member's attributes.
    pub attributes: &'a BTreeMap<String, String>,
    /// The holder's key: only its holder can present the credential.
    pub holder: &'a VerifyingKey,
    /// When issued, ms.
    pub issued_at: i64,
    /// Valid from, ms.
    pub valid_from: i64,
    /// Valid until, ms.
    pub valid_until: i64,
    /// Its bit in the issuer's status list.
    pub status: Option<StatusEntry>,
}

/// Issues a credential in `format`, signed by `signer`'s current key.
pub fn issue(
    format: Format,
    issuance: &Issuance,
    signer: &dyn JwsSigner,
) -> Result<String, CredentialError> {
    if let Some(name) = issuance
        .attributes
        .keys()
        .find(|n| n.is_empty() || RESERVED.contains(&n.as_str()))
    {
        return Err(CredentialError::Malformed(format!(
            "`{name}` cannot be an attribute's name"
        )));
    }
    let signed = |typ: &str, payload: &Value| {
        jose::compact(signer, typ, &serde_json::to_vec(payload).expect("JSON"))
            .map(|(token, _)| token)
            .map_err(CredentialError::Signer)
    };
    let status = issuance.status.as_ref().map(StatusEntry::to_json);
    match format {
        Format::SdJwtVc => {
            let disclosures: Vec<String> = issuance
                .attributes
                .iter()
                .map(|(name, value)| {
                    let mut salt = [0u8; 16];
                    OsRng.fill_bytes(&mut salt);
                    B64URL.encode(json!([B64URL.encode(salt), name, value]).to_string())
                })
                .collect();
            let mut digests: Vec<String> = disclosures.iter().map(|d| digest(d)).collect();
            // Sorted: the order of the digests must not tell which attribute is which.
            digests.sort();
            let mut payload = json!({
                "iss": issuance.issuer,
                "vct": CREDENTIAL_TYPE,
                "iat": issuance.issued_at / 1000,
                "nbf": issuance.valid_from / 1000,
                "exp": issuance.valid_until / 1000,
                "cnf": {"jwk": jwk(issuance.holder)},
                "_sd_alg": "sha-256",
                "_sd": digests,
            });
            if let Some(status) = status {
                payload["credentialStatus"] = status;
            }
            let mut token = signed(SD_JWT_VC_TYP, &payload)?;
            for d in &disclosures {
                token.push('~');
                token.push_str(d);
            }
            token.push('~');
            Ok(token)
        }
        Format::VcJwt => {
            let mut subject = json!({"id": did_jwk(issuance.holder)});
            for (name, value) in issuance.attributes {
                subject[name] = json!(value);
            }
            let mut vc = json!({
                "@context": [VC_CONTEXT],
                "type": ["VerifiableCredential", CREDENTIAL_TYPE],
                "issuer": issuance.issuer,
                "validFrom": rfc3339(issuance.valid_from),
                "validUntil": rfc3339(issuance.valid_until),
                "credentialSubject": subject,
                // VC-JOSE-COSE leaves JWT claims optional; iat says when it was issued,
                // which a verifier's maximum age is about.
                "iat": issuance.issued_at / 1000,
            });
            if let Some(status) = status {
                vc["credentialStatus"] = status;
            }
            signed(VC_JWT_TYP, &vc)
        }
    }
}

/// What a verifier asks of a presentation.
pub struct Expectations<'a> {
    /// The nonce the key binding must carry (the broker's request nonce).
    pub nonce: &'a str,
    /// The audience it must name.
    pub audience: &'a str,
    /// Now, ms.
    pub now_ms: i64,
    /// Clock difference tolerated between issuer, holder and verifier, ms.
    pub skew_ms: i64,
    /// How old a credential may be (since issued), ms; `None`: any age while valid.
    pub max_age_ms: Option<i64>,
    /// How old a key binding may be, ms.
    pub binding_max_age_ms: i64,
    /// The Ed25519 public key of `(issuer, kid)`, or why there is none.
    pub issuer_key: &'a IssuerKeys<'a>,
}

/// A verified presentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// Its format.
    pub format: Format,
    /// Its issuer.
    pub issuer: String,
    /// The issuer's key that signed it.
    pub key_id: String,
    /// The attributes it reveals (all of a VC-JWT's; those disclosed of an SD-JWT VC).
    pub attributes: BTreeMap<String, String>,
    /// When issued, ms.
    pub issued_at: i64,
    /// Its status list entry: the caller looks it up.
    pub status: Option<StatusEntry>,
}

/// The holder's presentation of `credential` (either format) to `audience` with `nonce`,
/// revealing the attributes named in `disclose` (an SD-JWT VC; a VC-JWT reveals all of them).
pub fn present(
    credential: &str,
    disclose: &[String],
    holder: &SigningKey,
    audience: &str,
    nonce: &str,
    now_ms: i64,
) -> Result<String, CredentialError> {
    let holder_signer = KeySigner {
        kid: "",
        key: holder,
    };
    let credential = credential.trim();
    if !credential.contains('~') {
        let vp = json!({
            "@context": [VC_CONTEXT],
            "type": ["VerifiablePresentation"],
            "holder": did_jwk(&holder.verifying_key()),
            "verifiableCredential": [{
                "@context": [VC_CONTEXT],
                "id": format!("data:application/vc+jwt,{credential}"),
                "type": "EnvelopedVerifiableCredential",
            }],
            "aud": audience,
            "nonce": nonce,
            "iat": now_ms / 1000,
        });
        return unkeyed(&holder_signer, VP_JWT_TYP, &vp);
    }
    let mut parts = credential.split('~');
    let jwt = parts.next().unwrap_or_default();
    let mut presented = format!("{jwt}~");
    let mut found = Vec::new();
    for d in parts.filter(|d| !d.is_empty()) {
        let (name, _) = open_disclosure(d)?;
        if disclose.contains(&name) {
            presented.push_str(d);
            presented.push('~');
            found.push(name);
        }
    }
    if let Some(missing) = disclose.iter().find(|n| !found.contains(n)) {
        return Err(CredentialError::Malformed(format!(
            "the credential has no attribute `{missing}`"
        )));
    }
    let kb = json!({
        "iat": now_ms / 1000,
        "aud": audience,
        "nonce": nonce,
        "sd_hash": digest(&presented),
    });
    Ok(presented + &unkeyed(&holder_signer, KB_JWT_TYP, &kb)?)
}

/// Verifies a presentation (either format) against `expect`.
pub fn verify_presentation(
    presentation: &str,
    expect: &Expectations,
) -> Result<Presented, CredentialError> {
    let presentation = presentation.trim();
    if presentation.contains('~') {
        verify_sd_jwt(presentation, expect)
    } else {
        verify_vp(presentation, expect)
    }
}

fn verify_sd_jwt(presentation: &str, expect: &Expectations) -> Result<Presented, CredentialError> {
    let (presented, binding) = presentation.rsplit_once('~').expect("has a ~");
    let mut parts = presented.split('~');
    let issuer_jwt = jose::parse(parts.next().unwrap_or_default())?;
    if issuer_jwt.header["typ"] != SD_JWT_VC_TYP {
        return Err(CredentialError::Malformed(format!(
            "typ is {}, not {SD_JWT_VC_TYP}",
            issuer_jwt.header["typ"]
        )));
    }
    let claims = issuer_jwt.json()?;
    let issuer = claims["iss"].as_str().unwrap_or_default().to_owned();
    issuer_jwt.verify(&(expect.issuer_key)(&issuer, &issuer_jwt.kid)?)?;
    if claims["vct"] != CREDENTIAL_TYPE || claims["_sd_alg"] != "sha-256" {
        return Err(CredentialError::Malformed(
            "not a member-attributes SD-JWT VC with sha-256 digests".into(),
        ));
    }
    let digests: Vec<&str> = claims["_sd"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut attributes = BTreeMap::new();
    for d in parts.filter(|d| !d.is_empty()) {
        if !digests.contains(&digest(d).as_str()) {
            return Err(CredentialError::BadDisclosure(
                "a disclosure the issuer did not sign".into(),
            ));
        }
        let (name, value) = open_disclosure(d)?;
        if attributes.insert(name.clone(), value).is_some() {
            return Err(CredentialError::BadDisclosure(format!(
                "`{name}` disclosed twice"
            )));
        }
    }
    // Key binding: signed by the key the issuer bound the credential to, over this nonce and
    // audience and exactly what is presented.
    if binding.is_empty() {
        return Err(CredentialError::NoKeyBinding);
    }
    let holder = key_from_jwk(&claims["cnf"]["jwk"])?;
    let kb = jose::parse_unkeyed(binding)?;
    if kb.header["typ"] != KB_JWT_TYP {
        return Err(CredentialError::KeyBinding("not a kb+jwt".into()));
    }
    kb.verify(holder.as_bytes())
        .map_err(|_| CredentialError::KeyBinding("not signed by the holder's key".into()))?;
    let kb_claims = kb.json()?;
    if kb_claims["sd_hash"].as_str() != Some(&digest(&format!("{presented}~"))) {
        return Err(CredentialError::KeyBinding(
            "sd_hash is not of what is presented".into(),
        ));
    }
    check_binding(&kb_claims, expect)?;
    check_validity(
        claims["nbf"].as_i64(),
        claims["exp"].as_i64(),
        claims["iat"].as_i64(),
        expect,
    )?;
    Ok(Presented {
        format: Format::SdJwtVc,
        issuer,
        key_id: issuer_jwt.kid,
        attributes,
        issued_at: claims["iat"].as_i64().unwrap_or_default() * 1000,
        status: StatusEntry::from_json(&claims["credentialStatus"])?,
    })
}

fn verify_vp(presentation: &str, expect: &Expectations) -> Result<Presented, CredentialError> {
    let outer = jose::parse_unkeyed(presentation)?;
    match outer.header["typ"].as_str() {
        Some(VP_JWT_TYP) => {}
        Some(VC_JWT_TYP) => return Err(CredentialError::NoKeyBinding),
        other => {
            return Err(CredentialError::Malformed(format!(
                "typ {other:?}: neither a VP (vp+jwt) nor an SD-JWT VC"
            )))
        }
    }
    let vp = outer.json()?;
    let vc_jwt = vp["verifiableCredential"][0]["id"]
        .as_str()
        .and_then(|id| id.strip_prefix("data:application/vc+jwt,"))
        .ok_or_else(|| CredentialError::Malformed("the VP envelops no vc+jwt".into()))?;
    let issuer_jwt = jose::parse(vc_jwt)?;
    if issuer_jwt.header["typ"] != VC_JWT_TYP {
        return Err(CredentialError::Malformed(
            "the enveloped credential is not a vc+jwt".into(),
        ));
    }
    let vc = issuer_jwt.json()?;
    let issuer = vc["issuer"].as_str().unwrap_or_default().to_owned();
    issuer_jwt.verify(&(expect.issuer_key)(&issuer, &issuer_jwt.kid)?)?;
    if !vc["type"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == CREDENTIAL_TYPE))
    {
        return Err(CredentialError::Malformed(
            "not a member-attributes credential".into(),
        ));
    }
    let subject = vc["credentialSubject"]
        .as_object()
        .ok_or_else(|| CredentialError::Malformed("no credentialSubject".into()))?;
    let holder_did = subject
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let holder = key_from_did_jwk(holder_did)?;
    outer.verify(holder.as_bytes()).map_err(|_| {
        CredentialError::KeyBinding("the VP is not signed by the holder's key".into())
    })?;
    if vp["holder"] != holder_did {
        return Err(CredentialError::KeyBinding(
            "the VP's holder is not the subject".into(),
        ));
    }
    check_binding(&vp, expect)?;
    let at = |name: &str| vc[name].as_str().and_then(seconds_from_rfc3339);
    check_validity(
        at("validFrom"),
        at("validUntil"),
        vc["iat"].as_i64(),
        expect,
    )?;
    let attributes = subject
        .iter()
        .filter(|(name, _)| *name != "id")
        .map(|(name, value)| match value.as_str() {
            Some(v) => Ok((name.clone(), v.to_owned())),
            None => Err(CredentialError::Malformed(format!(
                "attribute `{name}` is not text"
            ))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Presented {
        format: Format::VcJwt,
        issuer,
        key_id: issuer_jwt.kid,
        attributes,
        issued_at: vc["iat"].as_i64().unwrap_or_default() * 1000,
        status: StatusEntry::from_json(&vc["credentialStatus"])?,
    })
}

/// Nonce, audience and age of a key binding (KB-JWT claims or the VP).
fn check_binding(claims: &Value, expect: &Expectations) -> Result<(), CredentialError> {
    if claims["nonce"] != expect.nonce {
        return Err(CredentialError::KeyBinding(
            "bound to another nonce (a replayed presentation)".into(),
        ));
    }
    if claims["aud"] != expect.audience {
        return Err(CredentialError::KeyBinding(format!(
            "bound to audience {}, not {}",
            claims["aud"], expect.audience
        )));
    }
    let iat = claims["iat"]
        .as_i64()
        .ok_or_else(|| CredentialError::KeyBinding("no iat".into()))?
        * 1000;
    if iat > expect.now_ms + expect.skew_ms
        || iat < expect.now_ms - expect.binding_max_age_ms - expect.skew_ms
    {
        return Err(CredentialError::KeyBinding(format!(
            "made at {}, outside the {} ms it may be relied on",
            rfc3339(iat),
            expect.binding_max_age_ms
        )));
    }
    Ok(())
}

/// validFrom/validUntil (seconds) with the skew, and the maximum age since issued.
fn check_validity(
    from: Option<i64>,
    until: Option<i64>,
    issued: Option<i64>,
    expect: &Expectations,
) -> Result<(), CredentialError> {
    let (Some(from), Some(until), Some(issued)) = (from, until, issued) else {
        return Err(CredentialError::Malformed(
            "validity times or issuance time missing".into(),
        ));
    };
    if from * 1000 > expect.now_ms + expect.skew_ms {
        return Err(CredentialError::NotYetValid(rfc3339(from * 1000)));
    }
    if until * 1000 <= expect.now_ms - expect.skew_ms {
        return Err(CredentialError::Expired(rfc3339(until * 1000)));
    }
    if let Some(max_age) = expect.max_age_ms {
        if issued * 1000 < expect.now_ms - max_age - expect.skew_ms {
            return Err(CredentialError::TooOld(rfc3339(issued * 1000)));
        }
    }
    Ok(())
}

fn digest(text: &str) -> String {
    B64URL.encode(Sha256::digest(text.as_bytes()))
}

/// A holder's JWS: no kid, its key is the one the credential binds.
fn unkeyed(signer: &KeySigner, typ: &str, payload: &Value) -> Result<String, CredentialError> {
    jose::compact(signer, typ, payload.to_string().as_bytes())
        .map(|(token, _)| token)
        .map_err(CredentialError::Signer)
}

/// `[salt, name, value]` with text values.
fn open_disclosure(encoded: &str) -> Result<(String, String), CredentialError> {
    let bad = |what: &str| CredentialError::BadDisclosure(what.to_owned());
    let json = B64URL.decode(encoded).map_err(|_| bad("not base64url"))?;
    let value: Value = serde_json::from_slice(&json).map_err(|_| bad("not JSON"))?;
    match value.as_array().map(Vec::as_slice) {
        Some([Value::String(_), Value::String(name), Value::String(value)])
            if !RESERVED.contains(&name.as_str()) =>
        {
            Ok((name.clone(), value.clone()))
        }
        _ => Err(bad("not [salt, name, text value]")),
    }
}

/// An Ed25519 public key as a JWK (RFC 8037).
pub fn jwk(key: &VerifyingKey) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": B64URL.encode(key.as_bytes())})
}

fn did_jwk(key: &VerifyingKey) -> String {
    format!("did:jwk:{}", B64URL.encode(jwk(key).to_string()))
}

/// The Ed25519 key of a JWK.
pub fn key_from_jwk(jwk: &Value) -> Result<VerifyingKey, CredentialError> {
    let bad = || CredentialError::Malformed("the holder's key is not an Ed25519 JWK".into());
    if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
        return Err(bad());
    }
    let x = jwk["x"]
        .as_str()
        .and_then(|x| B64URL.decode(x).ok())
        .and_then(|x| <[u8; 32]>::try_from(x).ok())
        .ok_or_else(bad)?;
    VerifyingKey::from_bytes(&x).map_err(|_| bad())
}

fn key_from_did_jwk(did: &str) -> Result<VerifyingKey, CredentialError> {
    let jwk = did
        .strip_prefix("did:jwk:")
        .and_then(|j| B64URL.decode(j).ok())
        .and_then(|j| serde_json::from_slice::<Value>(&j).ok())
        .ok_or_else(|| CredentialError::Malformed("the subject's id is not a did:jwk".into()))?;
    key_from_jwk(&jwk)
}
