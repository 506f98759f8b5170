//! A provider's numeric attributes (a birth date, an income): parsed from its records,
//! committed to in its signed set entries, and kept — values and salts — only on its side,
//! sealed at rest like its keys ([`AttributeBook`]).
//!
//! A commitment is `Poseidon(value, type, subject binding, salt)` (`pavilion-zk`): the type is
//! derived from the attribute's name, the subject binding is the member's set key, the salt
//! has 248 random bits. A reload keeps a member's salt while its value is unchanged, so its
//! commitment — and its published entry — stay as they are.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

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
    /// `NAME:date` or `NAME:int` (as `--attribute` takes it).
    pub fn parse(text: &str) -> Result<AttributeSpec, String> {
        let (name, kind) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}`: expected NAME:date or NAME:int"))?;
        let kind = match kind {
            "date" => AttributeKind::Date,
            "int" => AttributeKind::Int,
            other => return Err(format!("`{text}`: unknown kind `{other}` (date or int)")),
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

    /// The cell's value as the circuits take it. The error never repeats the cell: it may be
    /// someone's birth date.
    pub fn value(&self, cell: &str) -> Result<u64, AttributeError> {
        let cell = cell.trim();
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

/// Every member's openings: set key → attribute → opening. Sealed at rest under the
/// provider's passphrase; only the provider's load and its evidence service open it.
#[derive(Default, Serialize, Deserialize)]
pub struct AttributeBook {
    provider_id: String,
    members: HashMap<String, BTreeMap<String, Opening>>,
}

impl AttributeBook {
    /// An empty book for a provider.
    pub fn new(provider_id: &str) -> Self {
        AttributeBook {
            provider_id: provider_id.to_owned(),
            members: HashMap::new(),
        }
    }

    /// Whose.
    pub fn provider_id(&self) -> &str {
        &self.provider_id
    }

    /// Members with at least one attribute.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no member has an attribute.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
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
        self.members.contains_key(&hex::encode(set_key))
    }

    /// The book for a new load: each member's values, keeping the salt of a value that did
    /// not change since `previous` (so its commitment does not either).
    pub fn reloaded(
        provider_id: &str,
        values: &HashMap<SetKey, BTreeMap<String, u64>>,
        previous: Option<&AttributeBook>,
    ) -> AttributeBook {
        let mut book = AttributeBook::new(provider_id);
        for (key, attributes) in values {
            let openings = attributes
                .iter()
                .map(|(name, value)| {
                    let kept = previous
                        .and_then(|p| p.opening(key, name))
                        .filter(|o| o.value == *value)
                        .cloned();
                    (name.clone(), kept.unwrap_or_else(|| Opening::fresh(*value)))
                })
                .collect();
            book.members.insert(hex::encode(key), openings);
        }
        book
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
        assert_eq!(date.value("2008-02-29").unwrap(), 20080229);
        assert_eq!(date.value("20080229").unwrap(), 20080229);
        for bad in ["2007-02-29", "2008-13-01", "08-01-01", "yesterday", ""] {
            let e = date.value(bad).unwrap_err().to_string();
            assert!(bad.is_empty() || !e.contains(bad), "{e}");
        }
        let income = AttributeSpec::parse("income:int").unwrap();
        assert_eq!(income.value(" 52000 ").unwrap(), 52000);
        assert!(income.value("-1").is_err());
        assert!(income.value("9223372036854775808").is_err());
        assert!(AttributeSpec::parse("income").is_err());
        assert!(AttributeSpec::parse("income:float").is_err());
        assert!(AttributeSpec::parse("in come:int").is_err());
    }

    #[test]
    fn a_reload_keeps_the_salt_of_an_unchanged_value_and_the_book_is_sealed() {
        let key = [7u8; 32];
        let values = HashMap::from([(key, BTreeMap::from([("income".to_owned(), 100)]))]);
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
        let changed = HashMap::from([(key, BTreeMap::from([("income".to_owned(), 101)]))]);
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
}
