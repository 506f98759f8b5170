//! Revocation by a W3C Bitstring Status List (v1.0): a provider keeps one bit per credential it
//! issued, publishes the list as a credential of its own (`vc+jwt`, signed like the
//! credentials), and a verifier looks a credential's bit up in a copy no older than the list's
//! `ttl`.
//!
//! The bitstring is at least 131,072 bits (the recommendation's floor, so one list does not
//! tell how many credentials a provider issued), index 0 the most significant bit of the first
//! byte, GZIP-compressed and multibase-encoded as base64url without padding (prefix `u`).

use std::io::{Read as _, Write as _};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::credential::VC_JWT_TYP;
use crate::jose::{self, JwsSigner};
use crate::{rfc3339, seconds_from_rfc3339, CredentialError, IssuerKeys, VC_CONTEXT};

/// Bits in a list: the recommendation's minimum.
pub const LIST_BITS: usize = 131_072;
/// The only purpose kept: a set bit means revoked, for good.
pub const PURPOSE: &str = "revocation";
/// Largest encoded list read: far above any list of [`LIST_BITS`] (16 KiB before compression),
/// so a hostile "list" cannot make a verifier inflate gigabytes.
const MAX_LIST_BYTES: usize = 1 << 20;

/// A credential's place in a list: what its `credentialStatus` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// The list credential's URL (its id; the key of its record on the status topic).
    pub list: String,
    /// The credential's bit.
    pub index: usize,
}

impl StatusEntry {
    /// The `credentialStatus` object (a `BitstringStatusListEntry`).
    pub fn to_json(&self) -> Value {
        json!({
            "id": format!("{}#{}", self.list, self.index),
            "type": "BitstringStatusListEntry",
            "statusPurpose": PURPOSE,
            "statusListIndex": self.index.to_string(),
            "statusListCredential": self.list,
        })
    }

    /// Reads a `credentialStatus` object; `None` when there is none.
    pub fn from_json(value: &Value) -> Result<Option<StatusEntry>, CredentialError> {
        if value.is_null() {
            return Ok(None);
        }
        let malformed =
            |what: &str| CredentialError::Malformed(format!("credentialStatus: {what}"));
        if value["type"] != "BitstringStatusListEntry" || value["statusPurpose"] != PURPOSE {
            return Err(malformed("not a revocation BitstringStatusListEntry"));
        }
        let index = value["statusListIndex"]
            .as_str()
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < LIST_BITS)
            .ok_or_else(|| malformed("statusListIndex is not an index of a list"))?;
        let list = value["statusListCredential"]
            .as_str()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| malformed("no statusListCredential"))?;
        Ok(Some(StatusEntry {
            list: list.to_owned(),
            index,
        }))
    }
}

/// The bits of one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitstring(Vec<u8>);

impl Default for Bitstring {
    fn default() -> Self {
        Bitstring(vec![0; LIST_BITS / 8])
    }
}

impl Bitstring {
    /// Whether `index` is set (revoked). Out of range reads as set: a verifier must not
    /// take an index the list cannot hold for "not revoked".
    pub fn get(&self, index: usize) -> bool {
        self.0
            .get(index / 8)
            .is_none_or(|byte| byte & (0x80 >> (index % 8)) != 0)
    }

    /// Sets `index`; `false` when it already was.
    pub fn set(&mut self, index: usize) -> Result<bool, CredentialError> {
        let byte = self.0.get_mut(index / 8).ok_or_else(|| {
            CredentialError::Malformed(format!("index {index} is past the list's {LIST_BITS} bits"))
        })?;
        let bit = 0x80 >> (index % 8);
        let was = *byte & bit != 0;
        *byte |= bit;
        Ok(!was)
    }

    /// `u` + base64url(GZIP(bits)).
    pub fn encode(&self) -> String {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&self.0).expect("writing to memory");
        format!(
            "u{}",
            B64URL.encode(gz.finish().expect("writing to memory"))
        )
    }

    /// Reads an `encodedList`.
    pub fn decode(encoded: &str) -> Result<Bitstring, CredentialError> {
        let malformed = |what: String| CredentialError::Malformed(format!("encodedList: {what}"));
        let b64 = encoded
            .strip_prefix('u')
            .ok_or_else(|| malformed("not multibase base64url (prefix u)".into()))?;
        let gz = B64URL.decode(b64).map_err(|e| malformed(e.to_string()))?;
        let mut bits = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .take(MAX_LIST_BYTES as u64 + 1)
            .read_to_end(&mut bits)
            .map_err(|e| malformed(e.to_string()))?;
        if bits.len() < LIST_BITS / 8 || bits.len() > MAX_LIST_BYTES {
            return Err(malformed(format!("{} bytes of bits", bits.len())));
        }
        Ok(Bitstring(bits))
    }
}

/// A status list credential, as issued or as verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList {
    /// Its URL.
    pub url: String,
    /// Who issued it (the credentials' issuer).
    pub issuer: String,
    /// When it was made, ms.
    pub valid_from: i64,
    /// How long a verifier may rely on a copy, ms (the recommendation's `ttl`).
    pub ttl_ms: i64,
    /// The bits.
    pub bits: Bitstring,
}

impl StatusList {
    /// Until when a copy may be relied on, ms.
    pub fn fresh_until(&self) -> i64 {
        self.valid_from.saturating_add(self.ttl_ms)
    }

    /// The list as a `vc+jwt` signed by `signer`'s current key.
    pub fn issue(&self, signer: &dyn JwsSigner) -> Result<String, String> {
        let credential = json!({
            "@context": [VC_CONTEXT],
            "id": self.url,
            "type": ["VerifiableCredential", "BitstringStatusListCredential"],
            "issuer": self.issuer,
            "validFrom": rfc3339(self.valid_from),
            "validUntil": rfc3339(self.fresh_until()),
            "credentialSubject": {
                "id": format!("{}#list", self.url),
                "type": "BitstringStatusList",
                "statusPurpose": PURPOSE,
                "encodedList": self.bits.encode(),
                "ttl": self.ttl_ms,
            },
        });
        let payload = serde_json::to_vec(&credential).expect("JSON");
        Ok(jose::compact(signer, VC_JWT_TYP, &payload)?.0)
    }

    /// Reads a status list credential, checking its signature with `issuer_key(issuer, kid)`.
    /// Whether it is still fresh is the caller's: see [`StatusList::fresh_until`].
    pub fn verify(token: &str, issuer_key: &IssuerKeys<'_>) -> Result<StatusList, CredentialError> {
        let jws = jose::parse(token)?;
        if jws.header["typ"] != VC_JWT_TYP {
            return Err(CredentialError::Malformed("not a vc+jwt".into()));
        }
        let vc = jws.json()?;
        let issuer = vc["issuer"].as_str().unwrap_or_default();
        jws.verify(&issuer_key(issuer, &jws.kid)?)?;
        let subject = &vc["credentialSubject"];
        let malformed = |what: &str| CredentialError::Malformed(format!("status list: {what}"));
        if subject["type"] != "BitstringStatusList" || subject["statusPurpose"] != PURPOSE {
            return Err(malformed("not a revocation BitstringStatusList"));
        }
        Ok(StatusList {
            url: vc["id"]
                .as_str()
                .ok_or_else(|| malformed("no id"))?
                .to_owned(),
            issuer: issuer.to_owned(),
            valid_from: vc["validFrom"]
                .as_str()
                .and_then(seconds_from_rfc3339)
                .ok_or_else(|| malformed("no validFrom"))?
                * 1000,
            ttl_ms: subject["ttl"]
                .as_i64()
                .filter(|t| *t > 0)
                .ok_or_else(|| malformed("no positive ttl"))?,
            bits: Bitstring::decode(subject["encodedList"].as_str().unwrap_or_default())?,
        })
    }
}
