//! What a provider signs about its members for others to check without trusting the broker:
//! BBS signatures over attribute sets and the selective-disclosure proofs derived from them
//! ([`bbs`]); credentials issued to a member's wallet, SD-JWT VC and VC-JWT, and the
//! presentations made of them ([`credential`]); their revocation by a Bitstring Status List
//! ([`status_list`]); and the compact JWS framing all of them and the broker's decisions share
//! ([`jose`]).

pub mod bbs;
pub mod credential;
pub mod jose;
pub mod status_list;

use std::time::{Duration, UNIX_EPOCH};

/// The Ed25519 public key of an issuer's key `(issuer, kid)`, or why it has none: how a
/// verifier says whom it trusts (the broker: its provider registry).
pub type IssuerKeys<'a> = dyn Fn(&str, &str) -> Result<Vec<u8>, CredentialError> + 'a;

/// The VC 2.0 base context.
pub const VC_CONTEXT: &str = "https://www.w3.org/ns/credentials/v2";

/// Why a credential, a presentation or a status list is refused; [`CredentialError::reason`]
/// is the reason code a decision's claim carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not the shape the format says.
    #[error("malformed credential: {0}")]
    Malformed(String),
    /// The issuer's or holder's JWS is refused.
    #[error(transparent)]
    Jws(#[from] jose::JwsError),
    /// No registered provider issues as this issuer with this key.
    #[error("unknown issuer or key: {0}")]
    UnknownIssuer(String),
    /// The issuer's provider is registered but not active.
    #[error("the issuer's provider is not active: {0}")]
    IssuerInactive(String),
    /// A disclosure the issuer did not sign, or one that is not a disclosure.
    #[error("bad disclosure: {0}")]
    BadDisclosure(String),
    /// Reveals attributes the verifier's policy does not allow.
    #[error("reveals attributes the policy does not allow: {0}")]
    NotAllowed(String),
    /// The presentation is not bound to its holder's key (a bare credential).
    #[error("the presentation has no key binding")]
    NoKeyBinding,
    /// The key binding is not by the holder's key, or not for this nonce, audience or time.
    #[error("key binding: {0}")]
    KeyBinding(String),
    /// validFrom is ahead, beyond the skew.
    #[error("not valid before {0}")]
    NotYetValid(String),
    /// validUntil has passed, beyond the skew.
    #[error("expired at {0}")]
    Expired(String),
    /// Issued longer ago than the policy's maximum age.
    #[error("issued at {0}, longer ago than the policy's maximum age")]
    TooOld(String),
    /// Its bit in the status list is set.
    #[error("revoked")]
    Revoked,
    /// No copy of its status list younger than the list's TTL.
    #[error("status unknown: {0}")]
    StatusUnavailable(String),
    /// The signer failed (HSM, key file).
    #[error("signer: {0}")]
    Signer(String),
}

impl CredentialError {
    /// The reason code on a decision's claim.
    pub fn reason(&self) -> &'static str {
        use jose::JwsError;
        match self {
            CredentialError::Malformed(_)
            | CredentialError::Jws(JwsError::Malformed(_) | JwsError::Algorithm(_)) => {
                "credential_malformed"
            }
            CredentialError::Jws(JwsError::UnknownKey(_) | JwsError::BadSignature(_)) => {
                "credential_bad_signature"
            }
            CredentialError::UnknownIssuer(_) => "credential_unknown_issuer",
            CredentialError::IssuerInactive(_) => "credential_issuer_inactive",
            CredentialError::BadDisclosure(_) => "credential_bad_disclosure",
            CredentialError::NotAllowed(_) => "credential_discloses_too_much",
            CredentialError::NoKeyBinding => "credential_no_key_binding",
            CredentialError::KeyBinding(_) => "credential_key_binding",
            CredentialError::NotYetValid(_) => "credential_not_yet_valid",
            CredentialError::Expired(_) => "credential_expired",
            CredentialError::TooOld(_) => "credential_too_old",
            CredentialError::Revoked => "credential_revoked",
            CredentialError::StatusUnavailable(_) => "credential_status_unavailable",
            CredentialError::Signer(_) => "credential_signer",
        }
    }

    /// Whether the claim is `unavailable` (nothing can be said yet: the status is not known)
    /// rather than `not_verified` (the presentation is refused).
    pub fn unavailable(&self) -> bool {
        matches!(self, CredentialError::StatusUnavailable(_))
    }
}

/// RFC 3339 (UTC, seconds) of a time in ms.
pub(crate) fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

/// Seconds since the epoch of an RFC 3339 time.
pub(crate) fn seconds_from_rfc3339(text: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(text).ok()?;
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
}
