//! BBS signatures over a member's attribute set, and proofs that disclose some of them
//! (draft-irtf-cfrg-bbs-signatures, ciphersuite BLS12-381-SHA-256, through `zkryptium`).
//!
//! Two layers. The octet layer ([`sign`], [`derive_proof`], [`verify_proof`]) is the draft's
//! interface over raw headers and messages, which is what its published vectors exercise
//! (`tests/bbs_vectors.rs`). The attribute layer ([`AttributeHeader`], [`SignedAttributes`],
//! [`Disclosure`]) fixes how Pavilion maps a member's attributes onto it:
//!
//! - **messages**: message *i* is the UTF-8 value of the header's *i*-th attribute name, in the
//!   order the header lists them (the provider's schema order), in its canonical text form
//!   (dates `YYYY-MM-DD`, integers in decimal, text NFC as loaded);
//! - **header**: [`AttributeHeader::to_bytes`], which binds the issuer (the provider id), the
//!   schema, the attribute names in order and the expiry, so a signature means nothing for
//!   another provider, schema or time;
//! - **presentation header**: the request's 32-byte nonce, so a proof answers one request and
//!   cannot be replayed for another.
//!
//! A relying party checks a [`Disclosure`] with the provider's public key alone.

use zkryptium::bbsplus::keys::{BBSplusPublicKey, BBSplusSecretKey};
use zkryptium::keys::pair::KeyPair;
use zkryptium::schemes::algorithms::BbsBls12381Sha256;
use zkryptium::schemes::generics::{PoKSignature, Signature};

/// The ciphersuite's name as the draft and other implementations spell it.
pub const CIPHERSUITE: &str = "BLS12-381-SHA-256";
/// A public key: a compressed G2 point.
pub const PUBLIC_KEY_BYTES: usize = 96;
/// A secret key: a scalar, big-endian.
pub const SECRET_KEY_BYTES: usize = 32;
/// A signature: a compressed G1 point and a scalar.
pub const SIGNATURE_BYTES: usize = 80;
/// A presentation header: the request's nonce.
pub const NONCE_BYTES: usize = 32;
/// The most messages a signature may cover: a bound on the work a proof from outside can ask
/// of a verifier (the generators it needs grow with the messages it claims).
pub const MAX_MESSAGES: usize = 64;
/// A proof's fixed part (three G1 points, three scalars) and the challenge; each undisclosed
/// message adds a scalar.
const PROOF_MIN_BYTES: usize = 3 * 48 + 4 * 32;
/// How a provider's registry record names a BBS key of this ciphersuite.
pub const KEY_ALGORITHM: &str = "BBS-BLS12-381-SHA-256";
/// The "circuit" an evidence request names to ask for a disclosure rather than a predicate.
pub const DISCLOSURE_EVIDENCE: &str = "bbs_disclosure";
/// The first line of every attribute header: the version of this mapping.
pub const HEADER_TAG: &str = "pavilion.attributes.v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BbsError {
    #[error("not a BBS {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("BBS signature does not verify")]
    BadSignature,
    #[error("BBS proof does not verify")]
    BadProof,
    #[error("could not {what}: {detail}")]
    Failed { what: &'static str, detail: String },
    #[error("attribute header: {0}")]
    Header(String),
    #[error("no attribute `{0}` in the signed set")]
    UnknownAttribute(String),
    #[error("{given} attribute values for {expected} names")]
    ValueCount { given: usize, expected: usize },
}

fn malformed(what: &'static str) -> impl FnOnce(zkryptium::errors::Error) -> BbsError {
    move |e| BbsError::Malformed {
        what,
        detail: e.to_string(),
    }
}

/// A signer's public key (96 bytes, a point checked to be on the curve and in the subgroup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(BBSplusPublicKey);

impl PublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BbsError> {
        if bytes.len() != PUBLIC_KEY_BYTES {
            return Err(BbsError::Malformed {
                what: "public key",
                detail: format!("{} bytes, not {PUBLIC_KEY_BYTES}", bytes.len()),
            });
        }
        BBSplusPublicKey::from_bytes(bytes)
            .map(Self)
            .map_err(malformed("public key"))
    }

    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_BYTES] {
        self.0.to_bytes()
    }
}

/// A signer's key pair. The secret never leaves this type except through
/// [`SigningKey::secret_bytes`], for sealing at rest.
pub struct SigningKey {
    secret: BBSplusSecretKey,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &hex_of(&self.public.to_bytes()))
            .finish_non_exhaustive()
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SigningKey {
    /// A fresh key from the operating system's randomness (the draft's KeyGen over 64 random
    /// bytes of key material).
    pub fn generate() -> Result<Self, BbsError> {
        let pair = KeyPair::<BbsBls12381Sha256>::random().map_err(|e| BbsError::Failed {
            what: "generate a key",
            detail: e.to_string(),
        })?;
        Ok(Self::from_pair(pair))
    }

    /// The draft's KeyGen: a key derived from secret key material (≥ 32 bytes) and optional
    /// key info.
    pub fn derive(key_material: &[u8], key_info: &[u8]) -> Result<Self, BbsError> {
        let pair = KeyPair::<BbsBls12381Sha256>::generate(key_material, Some(key_info), None)
            .map_err(|e| BbsError::Failed {
                what: "derive a key",
                detail: e.to_string(),
            })?;
        Ok(Self::from_pair(pair))
    }

    fn from_pair(pair: KeyPair<BbsBls12381Sha256>) -> Self {
        let (secret, public) = pair.into_parts();
        Self {
            secret,
            public: PublicKey(public),
        }
    }

    /// A key sealed earlier as [`SigningKey::secret_bytes`].
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, BbsError> {
        if bytes.len() != SECRET_KEY_BYTES {
            return Err(BbsError::Malformed {
                what: "secret key",
                detail: format!("{} bytes, not {SECRET_KEY_BYTES}", bytes.len()),
            });
        }
        let secret = BBSplusSecretKey::from_bytes(bytes).map_err(malformed("secret key"))?;
        let public = PublicKey(secret.public_key());
        Ok(Self { secret, public })
    }

    pub fn secret_bytes(&self) -> [u8; SECRET_KEY_BYTES] {
        self.secret.to_bytes()
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

/// The draft's Sign: deterministic, so a signature depends on the key, header and messages
/// alone.
pub fn sign(
    key: &SigningKey,
    header: &[u8],
    messages: &[Vec<u8>],
) -> Result<[u8; SIGNATURE_BYTES], BbsError> {
    if messages.len() > MAX_MESSAGES {
        return Err(BbsError::Failed {
            what: "sign",
            detail: format!("{} messages, at most {MAX_MESSAGES}", messages.len()),
        });
    }
    Signature::<BbsBls12381Sha256>::sign(Some(messages), &key.secret, &key.public.0, Some(header))
        .map(|s| s.to_bytes())
        .map_err(|e| BbsError::Failed {
            what: "sign",
            detail: e.to_string(),
        })
}

/// The draft's Verify.
pub fn verify_signature(
    public: &PublicKey,
    signature: &[u8],
    header: &[u8],
    messages: &[Vec<u8>],
) -> Result<(), BbsError> {
    let bytes: &[u8; SIGNATURE_BYTES] = signature.try_into().map_err(|_| BbsError::Malformed {
        what: "signature",
        detail: format!("{} bytes, not {SIGNATURE_BYTES}", signature.len()),
    })?;
    let signature =
        Signature::<BbsBls12381Sha256>::from_bytes(bytes).map_err(malformed("signature"))?;
    signature
        .verify(&public.0, Some(messages), Some(header))
        .map_err(|_| BbsError::BadSignature)
}

/// The draft's ProofGen: a proof of the signature that reveals `messages[i]` for each `i` in
/// `disclosed` (ascending) and nothing of the others. Randomized: two proofs of one signature
/// cannot be linked.
pub fn derive_proof(
    public: &PublicKey,
    signature: &[u8],
    header: &[u8],
    presentation_header: &[u8],
    messages: &[Vec<u8>],
    disclosed: &[usize],
) -> Result<Vec<u8>, BbsError> {
    if messages.len() > MAX_MESSAGES {
        return Err(BbsError::Failed {
            what: "derive a proof",
            detail: format!("{} messages, at most {MAX_MESSAGES}", messages.len()),
        });
    }
    if let Some(&i) = disclosed.iter().find(|&&i| i >= messages.len()) {
        return Err(BbsError::Failed {
            what: "derive a proof",
            detail: format!("index {i} of {} messages", messages.len()),
        });
    }
    if disclosed.windows(2).any(|w| w[0] >= w[1]) {
        return Err(BbsError::Failed {
            what: "derive a proof",
            detail: "disclosed indexes must ascend without repeats".into(),
        });
    }
    PoKSignature::<BbsBls12381Sha256>::proof_gen(
        &public.0,
        signature,
        Some(header),
        Some(presentation_header),
        Some(messages),
        Some(disclosed),
    )
    .map(|p| p.to_bytes())
    .map_err(|e| BbsError::Failed {
        what: "derive a proof",
        detail: e.to_string(),
    })
}

/// The draft's ProofVerify, given the disclosed messages with their indexes (ascending).
pub fn verify_proof(
    public: &PublicKey,
    proof: &[u8],
    header: &[u8],
    presentation_header: &[u8],
    disclosed: &[(usize, Vec<u8>)],
) -> Result<(), BbsError> {
    if disclosed.windows(2).any(|w| w[0].0 >= w[1].0) {
        // zkryptium sorts and dedups the indexes but not the messages: refuse rather than
        // pair them differently from what the caller meant.
        return Err(BbsError::BadProof);
    }
    // zkryptium slices a proof before checking its length (a short one panics) and ignores a
    // trailing partial scalar (two byte strings, one proof): check the shape here.
    let undisclosed = proof
        .len()
        .checked_sub(PROOF_MIN_BYTES)
        .filter(|extra| extra % 32 == 0)
        .map(|extra| extra / 32)
        .ok_or_else(|| BbsError::Malformed {
            what: "proof",
            detail: format!(
                "{} bytes, not {PROOF_MIN_BYTES} plus 32 per undisclosed message",
                proof.len()
            ),
        })?;
    let total = undisclosed + disclosed.len();
    if total > MAX_MESSAGES || disclosed.iter().any(|(i, _)| *i >= total) {
        return Err(BbsError::BadProof);
    }
    let proof = PoKSignature::<BbsBls12381Sha256>::from_bytes(proof).map_err(malformed("proof"))?;
    let (indexes, messages): (Vec<usize>, Vec<Vec<u8>>) = disclosed.iter().cloned().unzip();
    proof
        .proof_verify(
            &public.0,
            Some(&messages),
            Some(&indexes),
            Some(header),
            Some(presentation_header),
        )
        .map_err(|_| BbsError::BadProof)
}

/// What a provider's signature over a member's attributes is about: the BBS header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeHeader {
    /// The provider id.
    pub issuer: String,
    /// The provider's name for this attribute set's schema (e.g. `pavilion.member.v1`).
    pub schema: String,
    /// The attribute names, in message order.
    pub attributes: Vec<String>,
    /// Milliseconds since the epoch after which the signature no longer vouches for anything.
    pub expires_at_ms: i64,
}

impl AttributeHeader {
    /// The header's bytes: UTF-8 lines, `\n`-separated, no trailing newline —
    ///
    /// ```text
    /// pavilion.attributes.v1
    /// issuer=<provider id>
    /// schema=<schema>
    /// attributes=<name>,<name>,…
    /// expires=<milliseconds since the epoch>
    /// ```
    ///
    /// Text so that a relying party can read what the signature binds; names may not hold
    /// `,`, `=`, or line breaks, and the values may not hold line breaks.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BbsError> {
        self.check()?;
        Ok(format!(
            "{HEADER_TAG}\nissuer={}\nschema={}\nattributes={}\nexpires={}",
            self.issuer,
            self.schema,
            self.attributes.join(","),
            self.expires_at_ms
        )
        .into_bytes())
    }

    /// Reads a header written by [`AttributeHeader::to_bytes`], refusing anything else.
    pub fn parse(bytes: &[u8]) -> Result<Self, BbsError> {
        let bad = |why: &str| BbsError::Header(why.to_owned());
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.split('\n');
        if lines.next() != Some(HEADER_TAG) {
            return Err(bad(&format!("does not start with {HEADER_TAG}")));
        }
        let mut field = |name: &str| -> Result<&str, BbsError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name)?.strip_prefix('='))
                .ok_or_else(|| bad(&format!("expected `{name}=` next")))
        };
        let issuer = field("issuer")?.to_owned();
        let schema = field("schema")?.to_owned();
        let attributes = field("attributes")?.split(',').map(str::to_owned).collect();
        let expires_at_ms = field("expires")?
            .parse()
            .map_err(|_| bad("expires is not an integer"))?;
        if lines.next().is_some() {
            return Err(bad("lines after expires"));
        }
        let header = Self {
            issuer,
            schema,
            attributes,
            expires_at_ms,
        };
        header.check()?;
        // Canonical: one header, one byte string.
        if header.to_bytes()? != bytes {
            return Err(bad("not in canonical form"));
        }
        Ok(header)
    }

    fn check(&self) -> Result<(), BbsError> {
        let bad = |why: String| Err(BbsError::Header(why));
        for (what, v) in [("issuer", &self.issuer), ("schema", &self.schema)] {
            if v.is_empty() || v.contains(['\n', '\r']) {
                return bad(format!("{what} must be one non-empty line"));
            }
        }
        if self.attributes.is_empty() {
            return bad("no attributes".into());
        }
        for (i, name) in self.attributes.iter().enumerate() {
            if name.is_empty() || name.contains([',', '=', '\n', '\r']) {
                return bad(format!("attribute name {name:?}"));
            }
            if self.attributes[..i].contains(name) {
                return bad(format!("attribute {name} listed twice"));
            }
        }
        Ok(())
    }

    pub fn index_of(&self, name: &str) -> Result<usize, BbsError> {
        self.attributes
            .iter()
            .position(|a| a == name)
            .ok_or_else(|| BbsError::UnknownAttribute(name.to_owned()))
    }
}

/// A member's attribute values with the provider's signature over them: what the provider
/// keeps (sealed), never what it sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedAttributes {
    pub header: AttributeHeader,
    /// In the header's order.
    pub values: Vec<String>,
    pub signature: [u8; SIGNATURE_BYTES],
}

/// A proof that the provider signed these attribute values, revealing only them, for one
/// nonce: what travels to the broker and on to the relying party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disclosure {
    /// [`AttributeHeader::to_bytes`] of the signed set.
    pub header: Vec<u8>,
    /// (index in the header, name, value), ascending by index.
    pub disclosed: Vec<(usize, String, String)>,
    pub proof: Vec<u8>,
}

impl SignedAttributes {
    pub fn sign(
        key: &SigningKey,
        header: AttributeHeader,
        values: Vec<String>,
    ) -> Result<Self, BbsError> {
        if values.len() != header.attributes.len() {
            return Err(BbsError::ValueCount {
                given: values.len(),
                expected: header.attributes.len(),
            });
        }
        let signature = sign(key, &header.to_bytes()?, &messages(&values))?;
        Ok(Self {
            header,
            values,
            signature,
        })
    }

    /// A proof revealing exactly the attributes `names` (in any order), bound to `nonce`.
    pub fn disclose(
        &self,
        public: &PublicKey,
        names: &[&str],
        nonce: &[u8; NONCE_BYTES],
    ) -> Result<Disclosure, BbsError> {
        let mut indexes = names
            .iter()
            .map(|n| self.header.index_of(n))
            .collect::<Result<Vec<_>, _>>()?;
        indexes.sort_unstable();
        indexes.dedup();
        let header = self.header.to_bytes()?;
        let proof = derive_proof(
            public,
            &self.signature,
            &header,
            nonce,
            &messages(&self.values),
            &indexes,
        )?;
        Ok(Disclosure {
            header,
            disclosed: indexes
                .into_iter()
                .map(|i| (i, self.header.attributes[i].clone(), self.values[i].clone()))
                .collect(),
            proof,
        })
    }
}

impl Disclosure {
    /// Checks the proof against `public` and `nonce`, and that every disclosed name is the
    /// header's name at its index. Returns the header, for the caller to check the issuer,
    /// schema and expiry against what it expects.
    pub fn verify(
        &self,
        public: &PublicKey,
        nonce: &[u8; NONCE_BYTES],
    ) -> Result<AttributeHeader, BbsError> {
        let header = AttributeHeader::parse(&self.header)?;
        let mut messages = Vec::with_capacity(self.disclosed.len());
        for (i, name, value) in &self.disclosed {
            if header.attributes.get(*i) != Some(name) {
                return Err(BbsError::Header(format!(
                    "disclosed {name} at index {i}, where the header names {:?}",
                    header.attributes.get(*i)
                )));
            }
            messages.push((*i, value.as_bytes().to_vec()));
        }
        verify_proof(public, &self.proof, &self.header, nonce, &messages)?;
        Ok(header)
    }
}

fn messages(values: &[String]) -> Vec<Vec<u8>> {
    values.iter().map(|v| v.as_bytes().to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> (SigningKey, SignedAttributes) {
        let key = SigningKey::generate().unwrap();
        let header = AttributeHeader {
            issuer: "bank-eu".into(),
            schema: "pavilion.member.v1".into(),
            attributes: vec!["birthdate".into(), "country".into(), "income".into()],
            expires_at_ms: 1_900_000_000_000,
        };
        let signed = SignedAttributes::sign(
            &key,
            header,
            vec!["1990-04-01".into(), "DE".into(), "52000".into()],
        )
        .unwrap();
        (key, signed)
    }

    #[test]
    fn a_disclosure_reveals_only_what_was_asked_and_verifies_for_its_nonce_alone() {
        let (key, signed) = member();
        let nonce = [7u8; 32];
        let d = signed
            .disclose(key.public_key(), &["country"], &nonce)
            .unwrap();
        assert_eq!(d.disclosed, vec![(1, "country".into(), "DE".into())]);
        let header = d.verify(key.public_key(), &nonce).unwrap();
        assert_eq!(header, signed.header);
        // Another request's nonce, another value, another index, another key: refused.
        assert_eq!(
            d.verify(key.public_key(), &[8u8; 32]),
            Err(BbsError::BadProof)
        );
        let mut lied = d.clone();
        lied.disclosed[0].2 = "FR".into();
        assert_eq!(
            lied.verify(key.public_key(), &nonce),
            Err(BbsError::BadProof)
        );
        let mut renamed = d.clone();
        renamed.disclosed[0].1 = "income".into();
        assert!(matches!(
            renamed.verify(key.public_key(), &nonce),
            Err(BbsError::Header(_))
        ));
        let other = SigningKey::generate().unwrap();
        assert_eq!(
            d.verify(other.public_key(), &nonce),
            Err(BbsError::BadProof)
        );
        // Nothing of the undisclosed values is in the proof's bytes or the disclosure.
        let text = format!("{d:?}");
        assert!(!text.contains("1990-04-01") && !text.contains("52000"));
    }

    #[test]
    fn two_proofs_of_one_signature_differ() {
        let (key, signed) = member();
        let a = signed
            .disclose(key.public_key(), &["country"], &[1; 32])
            .unwrap();
        let b = signed
            .disclose(key.public_key(), &["country"], &[1; 32])
            .unwrap();
        assert_ne!(a.proof, b.proof);
    }

    #[test]
    fn the_header_binds_issuer_and_expiry() {
        let (key, signed) = member();
        let nonce = [3u8; 32];
        let mut d = signed
            .disclose(key.public_key(), &["country"], &nonce)
            .unwrap();
        let mut later = signed.header.clone();
        later.expires_at_ms += 1;
        d.header = later.to_bytes().unwrap();
        assert_eq!(d.verify(key.public_key(), &nonce), Err(BbsError::BadProof));
    }

    #[test]
    fn headers_are_canonical_and_checked() {
        let (_, signed) = member();
        let bytes = signed.header.to_bytes().unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "pavilion.attributes.v1\nissuer=bank-eu\nschema=pavilion.member.v1\nattributes=birthdate,country,income\nexpires=1900000000000"
        );
        assert_eq!(AttributeHeader::parse(&bytes).unwrap(), signed.header);
        let mut trailing = bytes.clone();
        trailing.push(b'\n');
        assert!(AttributeHeader::parse(&trailing).is_err());
        let padded = String::from_utf8(bytes)
            .unwrap()
            .replace("expires=", "expires=0");
        assert!(AttributeHeader::parse(padded.as_bytes()).is_err());
        let mut twice = signed.header.clone();
        twice.attributes.push("country".into());
        assert!(twice.to_bytes().is_err());
    }

    #[test]
    fn keys_round_trip_and_bad_bytes_are_refused_not_panics() {
        let (key, _) = member();
        let again = SigningKey::from_secret_bytes(&key.secret_bytes()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        assert_eq!(
            PublicKey::from_bytes(&key.public_key().to_bytes()).unwrap(),
            *key.public_key()
        );
        assert!(PublicKey::from_bytes(&[0u8; 96]).is_err());
        assert!(PublicKey::from_bytes(&[1u8; 95]).is_err());
        assert!(verify_proof(key.public_key(), &[0u8; 10], b"h", b"p", &[]).is_err());
        let (key, signed) = member();
        let d = signed
            .disclose(key.public_key(), &["country"], &[1; 32])
            .unwrap();
        let check = |proof: &[u8], disclosed: &[(usize, Vec<u8>)]| {
            verify_proof(key.public_key(), proof, &d.header, &[1; 32], disclosed)
        };
        let country = [(1, b"DE".to_vec())];
        check(&d.proof, &country).unwrap();
        let mut trailing = d.proof.clone();
        trailing.push(0);
        assert!(matches!(
            check(&trailing, &country),
            Err(BbsError::Malformed { .. })
        ));
        assert!(check(&d.proof[..d.proof.len() - 1], &country).is_err());
        // An index beyond the messages the proof covers.
        assert_eq!(
            check(&d.proof, &[(9, b"DE".to_vec())]),
            Err(BbsError::BadProof)
        );
        let huge = vec![0u8; PROOF_MIN_BYTES + 32 * 1000];
        assert_eq!(check(&huge, &country), Err(BbsError::BadProof));
        assert!(verify_signature(key.public_key(), &[0u8; 3], b"h", &[]).is_err());
    }
}
