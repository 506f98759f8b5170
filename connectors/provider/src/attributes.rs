//! A provider's attributes (a birth date, an income, a country): parsed from its records and
//! kept only on its side, sealed at rest like its keys ([`AttributeBook`]). Numeric ones are
//! committed to in its signed set entries (for zero-knowledge predicates); all of them are
//! signed with the provider's BBS key, one signature per member over every attribute (for
//! selective disclosure, [`AttributeBook::disclose`]).
//!
//! A commitment is `Poseidon(value, type, subject binding, salt)` (`pavilion-zk`): the type is
//! derived from the attribute's name, the subject binding is the member's set key, the salt
//! has 248 random bits. A reload keeps a member's salt while its value is unchanged, so its
//! commitment — and its published entry — stay as they are.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use pavilion_credentials::bbs::{self, AttributeHeader, BbsError, Disclosure, SignedAttributes};
use pavilion_zk::{commitment, field_to_bytes, subject_binding, AttributeType, Salt};
use serde::{Deserialize, Serialize};

use crate::keystore::{self, KeystoreError};
use crate::set::SetKey;

/// How an attribute's cells are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeKind {
    /// A calendar date, `YYYY-MM-DD` (or `YYYYMMDD`), kept as the number YYYYMMDD: what the
    /// `date_le_cutoff` circuit compares.
    Date,
    /// A non-negative integer below 2^63 (the `int_ge_threshold` circuit's range is 64 bits).
    Int,
    /// Text (NFC, trimmed, at most 256 bytes, no control characters), e.g. a country code:
    /// signed for disclosure, never committed to (no predicate compares text).
    Text,
}

/// One cell's value: its canonical text (what a BBS signature covers and a disclosure
/// reveals: dates `YYYY-MM-DD`, integers in decimal, text as normalized) and, for dates and
/// integers, the number the circuits take (YYYYMMDD for a date).
#[derive(Clone, PartialEq, Eq)]
pub struct AttributeValue {
    /// The canonical text: what is signed and disclosed.
    pub text: String,
    /// The number the circuits take, for a date or an integer.
    pub number: Option<u64>,
}

impl fmt::Debug for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttributeValue(<redacted>)")
    }
}

/// An attribute the provider commits to: its name, which is also the source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeSpec {
    /// Name and column, e.g. `birthdate`.
    pub name: String,
    /// How its cells are read.
    pub kind: AttributeKind,
}

impl AttributeSpec {
    /// `NAME:date`, `NAME:int` or `NAME:text` (as `--attribute` takes it).
    pub fn parse(text: &str) -> Result<AttributeSpec, String> {
        let (name, kind) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: expected NAME:date, NAME:int or NAME:text"))?;
        let kind = match kind {
            "date" => AttributeKind::Date,
            "int" => AttributeKind::Int,
            "text" => AttributeKind::Text,
            other => {
                return Err(format!(
                    "`{text}`: unknown kind `{other}` (date, int or text)"
                ))
            }
        };
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(format!(
                "`{text}`: the name must be 1-64 letters, digits, `_` or `-`"
            ));
        }
        Ok(AttributeSpec {
            name: name.to_owned(),
            kind,
        })
    }

    /// The cell's value. The error never repeats the cell: it may be someone's birth date.
    pub fn value(&self, cell: &str) -> Result<AttributeValue, AttributeError> {
        let bad = |why: &'static str| AttributeError {
            attribute: self.name.clone(),
            why,
        };
        if self.kind == AttributeKind::Text {
            use unicode_normalization::UnicodeNormalization;
            let text: String = cell.nfc().collect::<String>().trim().to_owned();
            if text.len() > 256 {
                return Err(bad("longer than 256 bytes"));
            }
            if text.chars().any(char::is_control) {
                return Err(bad("holds a control character"));
            }
            return Ok(AttributeValue { text, number: None });
        }
        let number = self.number(cell.trim())?;
        let text = match self.kind {
            AttributeKind::Date => format!(
                "{:04}-{:02}-{:02}",
                number / 10_000,
                number / 100 % 100,
                number % 100
            ),
            _ => number.to_string(),
        };
        Ok(AttributeValue {
            text,
            number: Some(number),
        })
    }

    fn number(&self, cell: &str) -> Result<u64, AttributeError> {
        let bad = |why: &'static str| AttributeError {
            attribute: self.name.clone(),
            why,
        };
        match self.kind {
            AttributeKind::Date => {
                let digits: String = cell.chars().filter(|c| *c != '-').collect();
                let date = chrono::NaiveDate::parse_from_str(&digits, "%Y%m%d")
                    .map_err(|_| bad("not a date (YYYY-MM-DD)"))?;
                if digits.len() != 8 {
                    return Err(bad("not a date (YYYY-MM-DD)"));
                }
                use chrono::Datelike;
                Ok(date.year() as u64 * 10_000
                    + u64::from(date.month()) * 100
                    + u64::from(date.day()))
            }
            AttributeKind::Int => {
                let value: u64 = cell
                    .parse()
                    .map_err(|_| bad("not a non-negative integer"))?;
                if value >= 1 << 63 {
                    return Err(bad("not below 2^63"));
                }
                Ok(value)
            }
            AttributeKind::Text => unreachable!("text is not a number"),
        }
    }
}

/// A cell that is not a valid value of its attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute `{attribute}`: {why}")]
pub struct AttributeError {
    /// Which attribute.
    pub attribute: String,
    /// Why (never the value).
    pub why: &'static str,
}

/// What opens one commitment: the value and its salt. `Debug` redacts both.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    /// The value (YYYYMMDD for a date).
    pub value: u64,
    /// 32 bytes, hex.
    salt: String,
}

impl fmt::Debug for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Opening(<redacted>)")
    }
}

impl Opening {
    /// A value with a fresh salt.
    pub fn fresh(value: u64) -> Opening {
        let salt = Salt::random(&mut pavilion_zk::rand::OsRng);
        Opening {
            value,
            salt: hex::encode(salt.to_bytes()),
        }
    }

    /// The salt.
    pub fn salt(&self) -> Result<Salt, BookError> {
        let bytes = hex::decode(&self.salt).map_err(|_| BookError::Payload("salt".into()))?;
        Salt::from_bytes(&bytes).map_err(|e| BookError::Payload(e.to_string()))
    }

    /// `Poseidon(value, type of `attribute`, set key, salt)`, 32 bytes big-endian.
    pub fn commitment(&self, attribute: &str, set_key: &SetKey) -> Result<[u8; 32], BookError> {
        Ok(field_to_bytes(commitment(
            self.value,
            AttributeType::named(attribute),
            subject_binding(set_key),
            &self.salt()?,
        )))
    }
}

/// Why an attribute book cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BookError {
    /// Sealing or opening failed.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// The opened payload is not an attribute book.
    #[error("the attribute file opened but is not well-formed: {0}")]
    Payload(String),
}

/// Every member's openings (set key → attribute → opening) and BBS-signed attribute set.
/// Sealed at rest under the provider's passphrase; only the provider's load and its evidence
/// service open it.
#[derive(Default, Serialize, Deserialize)]
pub struct AttributeBook {
    provider_id: String,
    members: HashMap<String, BTreeMap<String, Opening>>,
    /// Absent in books sealed before attributes were signed.
    #[serde(default)]
    signed: Option<SignedBook>,
}

/// The BBS-signed attribute sets of one load: one header for all, a signature per member.
#[derive(Serialize, Deserialize)]
struct SignedBook {
    schema: String,
    attributes: Vec<String>,
    expires_at_ms: i64,
    /// Set key (hex) → values in `attributes` order (empty where the member has none) and
    /// the signature (hex).
    members: HashMap<String, (Vec<String>, String)>,
}

/// The schema named in the headers of the attribute sets a load signs.
pub const MEMBER_SCHEMA: &str = "pavilion.member.v1";

/// Why a member's attributes cannot be disclosed.
#[derive(Debug, thiserror::Error)]
pub enum DiscloseError {
    /// The book holds no signed attributes (loaded before they were, or without a BBS key).
    #[error("the provider's attributes are not signed")]
    NotSigned,
    /// Not a member.
    #[error("no such member")]
    UnknownSubject,
    /// The member has no value for an attribute asked for, or the set has no such attribute.
    #[error("the member has no attribute `{0}`")]
    NoAttribute(String),
    /// The signed sets have expired: the provider must load again.
    #[error("the signed attributes expired at {0} ms")]
    Expired(i64),
    /// Deriving the proof failed.
    #[error(transparent)]
    Bbs(#[from] BbsError),
}

impl AttributeBook {
    /// An empty book for a provider.
    pub fn new(provider_id: &str) -> Self {
        AttributeBook {
            provider_id: provider_id.to_owned(),
            members: HashMap::new(),
            signed: None,
        }
    }

    /// Whose.
    pub fn provider_id(&self) -> &str {
        &self.provider_id
    }

    /// Members with at least one attribute.
    pub fn len(&self) -> usize {
        self.members
            .len()
            .max(self.signed.as_ref().map_or(0, |s| s.members.len()))
    }

    /// Whether no member has an attribute.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A member's opening of `attribute`.
    pub fn opening(&self, set_key: &[u8], attribute: &str) -> Option<&Opening> {
        self.members.get(&hex::encode(set_key))?.get(attribute)
    }

    /// The attributes a member has openings for.
    pub fn attributes_of(&self, set_key: &[u8]) -> impl Iterator<Item = &str> {
        self.members
            .get(&hex::encode(set_key))
            .into_iter()
            .flat_map(|m| m.keys().map(String::as_str))
    }

    /// Whether the member is in the book at all.
    pub fn has_member(&self, set_key: &[u8]) -> bool {
        let key = hex::encode(set_key);
        self.members.contains_key(&key)
            || self
                .signed
                .as_ref()
                .is_some_and(|s| s.members.contains_key(&key))
    }

    /// The book for a new load: each member's numeric values with an opening, keeping the
    /// salt of a value that did not change since `previous` (so its commitment does not
    /// either). Text values have no opening: nothing commits to them.
    pub fn reloaded(
        provider_id: &str,
        values: &HashMap<SetKey, BTreeMap<String, AttributeValue>>,
        previous: Option<&AttributeBook>,
    ) -> AttributeBook {
        let mut book = AttributeBook::new(provider_id);
        for (key, attributes) in values {
            let openings: BTreeMap<String, Opening> = attributes
                .iter()
                .filter_map(|(name, value)| {
                    let value = value.number?;
                    let kept = previous
                        .and_then(|p| p.opening(key, name))
                        .filter(|o| o.value == value)
                        .cloned();
                    Some((name.clone(), kept.unwrap_or_else(|| Opening::fresh(value))))
                })
                .collect();
            if !openings.is_empty() {
                book.members.insert(hex::encode(key), openings);
            }
        }
        book
    }

    /// Signs every member's attributes with the provider's BBS key: one attribute set per
    /// member over all of `attributes` in that order (a value the member lacks is signed as
    /// the empty string and never disclosed), under a header naming this provider,
    /// [`MEMBER_SCHEMA`] and `expires_at_ms`. In parallel; `progress` gets the count done.
    pub fn sign(
        &mut self,
        key: &bbs::SigningKey,
        attributes: &[String],
        values: &HashMap<SetKey, BTreeMap<String, AttributeValue>>,
        expires_at_ms: i64,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<(), BbsError> {
        use rayon::prelude::*;
        let header = AttributeHeader {
            issuer: self.provider_id.clone(),
            schema: MEMBER_SCHEMA.to_owned(),
            attributes: attributes.to_vec(),
            expires_at_ms,
        };
        header.to_bytes()?;
        let members: Vec<(&SetKey, &BTreeMap<String, AttributeValue>)> = values.iter().collect();
        let signed = members
            .par_chunks(256)
            .map(|chunk| {
                let out = chunk
                    .iter()
                    .map(|(set_key, member)| {
                        let row: Vec<String> = attributes
                            .iter()
                            .map(|a| member.get(a).map(|v| v.text.clone()).unwrap_or_default())
                            .collect();
                        let signed = SignedAttributes::sign(key, header.clone(), row)?;
                        Ok((
                            hex::encode(set_key),
                            (signed.values, hex::encode(signed.signature)),
                        ))
                    })
                    .collect::<Result<Vec<_>, BbsError>>();
                progress(chunk.len());
                out
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.signed = Some(SignedBook {
            schema: header.schema,
            attributes: header.attributes,
            expires_at_ms,
            members: signed.into_iter().flatten().collect(),
        });
        Ok(())
    }

    /// A BBS proof that this provider signed the member's values of `names`, revealing those
    /// and nothing else, bound to `nonce` (the request's). Refused past the signatures'
    /// expiry (`now_ms`), and for a value the member does not have.
    pub fn disclose(
        &self,
        key: &bbs::SigningKey,
        set_key: &[u8],
        names: &[&str],
        nonce: &[u8; bbs::NONCE_BYTES],
        now_ms: i64,
    ) -> Result<Disclosure, DiscloseError> {
        let book = self.signed.as_ref().ok_or(DiscloseError::NotSigned)?;
        if now_ms >= book.expires_at_ms {
            return Err(DiscloseError::Expired(book.expires_at_ms));
        }
        let (values, signature) = book
            .members
            .get(&hex::encode(set_key))
            .ok_or(DiscloseError::UnknownSubject)?;
        for name in names {
            let i = book.attributes.iter().position(|a| a == name);
            if i.is_none_or(|i| values[i].is_empty()) {
                return Err(DiscloseError::NoAttribute((*name).to_owned()));
            }
        }
        let signature: [u8; bbs::SIGNATURE_BYTES] = hex::decode(signature)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| BbsError::Malformed {
                what: "signature",
                detail: "in the attribute book".into(),
            })?;
        let signed = SignedAttributes {
            header: AttributeHeader {
                issuer: self.provider_id.clone(),
                schema: book.schema.clone(),
                attributes: book.attributes.clone(),
                expires_at_ms: book.expires_at_ms,
            },
            values: values.clone(),
            signature,
        };
        Ok(signed.disclose(key.public_key(), names, nonce)?)
    }

    /// The sealed file's bytes.
    pub fn seal(&self, passphrase: &[u8]) -> Result<Vec<u8>, BookError> {
        let json = serde_json::to_vec(self).expect("serializable");
        Ok(keystore::seal(&json, passphrase)?)
    }

    /// Opens a sealed file.
    pub fn open(sealed: &[u8], passphrase: &[u8]) -> Result<Self, BookError> {
        let json = keystore::open(sealed, passphrase)?;
        serde_json::from_slice(&json).map_err(|e| BookError::Payload(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_strictly_and_errors_never_repeat_the_cell() {
        let date = AttributeSpec::parse("birthdate:date").unwrap();
        assert_eq!(date.value("2008-02-29").unwrap().number, Some(20080229));
        assert_eq!(date.value("20080229").unwrap().text, "2008-02-29");
        for bad in ["2007-02-29", "2008-13-01", "08-01-01", "yesterday", ""] {
            let e = date.value(bad).unwrap_err().to_string();
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
        let income = AttributeSpec::parse("income:int").unwrap();
        assert_eq!(income.value(" 52000 ").unwrap().number, Some(52000));
        assert_eq!(income.value("052000").unwrap().text, "52000");
        let country = AttributeSpec::parse("country:text").unwrap();
        let de = country.value(" DE ").unwrap();
        assert_eq!((de.text.as_str(), de.number), ("DE", None));
        assert!(country.value("D\u{7}E").is_err());
        assert!(country.value(&"x".repeat(257)).is_err());
        assert!(income.value("-1").is_err());
        assert!(income.value("9223372036854775808").is_err());
        assert!(AttributeSpec::parse("income").is_err());
        assert!(AttributeSpec::parse("income:float").is_err());
        assert!(AttributeSpec::parse("in come:int").is_err());
    }

    #[test]
    fn a_reload_keeps_the_salt_of_an_unchanged_value_and_the_book_is_sealed() {
        let key = [7u8; 32];
        let income = AttributeSpec::parse("income:int").unwrap();
        let values = HashMap::from([(
            key,
            BTreeMap::from([("income".to_owned(), income.value("100").unwrap())]),
        )]);
        let first = AttributeBook::reloaded("bank", &values, None);
        let again = AttributeBook::reloaded("bank", &values, Some(&first));
        let c1 = first
            .opening(&key, "income")
            .unwrap()
            .commitment("income", &key)
            .unwrap();
        let c2 = again
            .opening(&key, "income")
            .unwrap()
            .commitment("income", &key)
            .unwrap();
        assert_eq!(c1, c2, "unchanged value, same commitment");
        let changed = HashMap::from([(
            key,
            BTreeMap::from([("income".to_owned(), income.value("101").unwrap())]),
        )]);
        let third = AttributeBook::reloaded("bank", &changed, Some(&again));
        let c3 = third
            .opening(&key, "income")
            .unwrap()
            .commitment("income", &key)
            .unwrap();
        assert_ne!(c1, c3);
        let fresh = AttributeBook::reloaded("bank", &values, None);
        let c4 = fresh
            .opening(&key, "income")
            .unwrap()
            .commitment("income", &key)
            .unwrap();
        assert_ne!(c1, c4, "a fresh salt hides an equal value");

        let sealed = first.seal(b"pass").unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("income"));
        let opened = AttributeBook::open(&sealed, b"pass").unwrap();
        assert_eq!(
            opened.opening(&key, "income"),
            first.opening(&key, "income")
        );
        assert!(AttributeBook::open(&sealed, b"wrong").is_err());
        assert_eq!(
            format!("{:?}", first.opening(&key, "income").unwrap()),
            "Opening(<redacted>)"
        );
    }

    #[test]
    fn signed_attributes_disclose_only_what_is_asked_for_one_nonce() {
        let specs = ["birthdate:date", "country:text", "income:int"]
            .map(|s| AttributeSpec::parse(s).unwrap());
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let (ada, bob) = ([1u8; 32], [2u8; 32]);
        let row = |cells: [&str; 3]| -> BTreeMap<String, AttributeValue> {
            specs
                .iter()
                .zip(cells)
                .filter(|(_, c)| !c.is_empty())
                .map(|(s, c)| (s.name.clone(), s.value(c).unwrap()))
                .collect()
        };
        let values = HashMap::from([
            (ada, row(["1990-04-01", "DE", "52000"])),
            (bob, row(["1985-12-24", "", "41000"])),
        ]);
        let key = bbs::SigningKey::generate().unwrap();
        let mut book = AttributeBook::reloaded("bank", &values, None);
        assert!(matches!(
            book.disclose(&key, &ada, &["country"], &[0; 32], 0),
            Err(DiscloseError::NotSigned)
        ));
        book.sign(&key, &names, &values, 2_000, &|_| {}).unwrap();
        let book = AttributeBook::open(&book.seal(b"pass").unwrap(), b"pass").unwrap();

        let nonce = [9u8; 32];
        let d = book
            .disclose(&key, &ada, &["country"], &nonce, 1_000)
            .unwrap();
        assert_eq!(d.disclosed, vec![(1, "country".into(), "DE".into())]);
        let header = d.verify(key.public_key(), &nonce).unwrap();
        assert_eq!(
            (header.issuer.as_str(), header.expires_at_ms),
            ("bank", 2_000)
        );
        let text = format!("{d:?}");
        assert!(!text.contains("1990") && !text.contains("52000"));

        assert!(matches!(
            book.disclose(&key, &bob, &["country"], &nonce, 1_000),
            Err(DiscloseError::NoAttribute(_))
        ));
        assert!(matches!(
            book.disclose(&key, &ada, &["shoe_size"], &nonce, 1_000),
            Err(DiscloseError::NoAttribute(_))
        ));
        assert!(matches!(
            book.disclose(&key, &[3; 32], &["country"], &nonce, 1_000),
            Err(DiscloseError::UnknownSubject)
        ));
        assert!(matches!(
            book.disclose(&key, &ada, &["country"], &nonce, 2_000),
            Err(DiscloseError::Expired(2_000))
        ));
        // Bob's income and birth date, none of the rest.
        let d = book
            .disclose(&key, &bob, &["income", "birthdate"], &nonce, 1_000)
            .unwrap();
        assert_eq!(
            d.disclosed,
            vec![
                (0, "birthdate".into(), "1985-12-24".into()),
                (2, "income".into(), "41000".into())
            ]
        );
        d.verify(key.public_key(), &nonce).unwrap();
    }
}
