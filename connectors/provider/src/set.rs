//! Turning a provider's records into its published set, and a new load into changes against
//! what is already published.
//!
//! Each record becomes `set_key(provider, F_k(normalize(x)))` → attested claims and
//! commitments to its numeric attributes. Records that normalize to the same subject are
//! merged (their claims united; their attribute values must agree). A load publishes only
//! what changed: new members and members whose claims or commitments changed get a fresh
//! signed attestation; members no longer in the source get a tombstone; unchanged members are
//! left as they are (their attestation keeps its time).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ed25519_dalek::Signer;
use pavilion_schemas::{set_key, Attestation, AttributeCommitment, ProviderSetEntry};
use rayon::prelude::*;

use crate::attributes::{AttributeBook, AttributeError, AttributeSpec, AttributeValue, BookError};
use crate::normalize::{oprf_input, IdentifierKind, NormalizeError};
use crate::secrets::ProviderSecrets;

/// One record read from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Where it came from (CSV line, table row number), for error messages.
    pub line: u64,
    /// The identifier as stored.
    pub identifier: String,
    /// Claims that hold for it.
    pub claims: BTreeSet<String>,
    /// Cells of the attribute columns, by attribute name (absent or empty: no value).
    pub attributes: BTreeMap<String, String>,
}

/// A set key.
pub type SetKey = [u8; 32];

/// Why a record could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Its identifier is not valid.
    #[error(transparent)]
    Identifier(#[from] NormalizeError),
    /// An attribute cell is not a valid value.
    #[error(transparent)]
    Attribute(#[from] AttributeError),
    /// Another record of the same subject has another value for the attribute.
    #[error("attribute `{0}`: another record of the same subject has another value")]
    Conflict(String),
}

/// A record that could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its line.
    pub line: u64,
    /// Why.
    pub error: RecordError,
}

/// A member as published: attested claims and commitments to its attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    /// Claims that hold.
    pub claims: BTreeSet<String>,
    /// Attribute → commitment (32 bytes).
    pub commitments: BTreeMap<String, Vec<u8>>,
}

/// The set a load describes, or the one published: set key → member.
pub type EncodedSet = HashMap<SetKey, Member>;

/// Each member's attribute values, as a load read them.
pub type AttributeValues = HashMap<SetKey, BTreeMap<String, AttributeValue>>;

/// Encodes records in parallel; `progress` is called with the number done after each chunk.
/// Returns the set (claims only: commitments come from [`commit`]), the members' attribute
/// values, and the records refused.
pub fn encode(
    secrets: &ProviderSecrets,
    kind: IdentifierKind,
    attributes: &[AttributeSpec],
    records: &[SourceRecord],
    progress: &(dyn Fn(usize) + Sync),
) -> (EncodedSet, AttributeValues, Vec<Rejected>) {
    const CHUNK: usize = 2_048;
    type Encoded<'r> = Result<
        (
            u64,
            SetKey,
            &'r BTreeSet<String>,
            BTreeMap<String, AttributeValue>,
        ),
        Rejected,
    >;
    let encoded: Vec<Vec<Encoded<'_>>> = records
        .par_chunks(CHUNK)
        .map(|chunk| {
            let out = chunk
                .iter()
                .map(|r| {
                    let reject = |error: RecordError| Rejected {
                        line: r.line,
                        error,
                    };
                    let input = oprf_input(kind, &r.identifier).map_err(|e| reject(e.into()))?;
                    let mut values = BTreeMap::new();
                    for spec in attributes {
                        let cell = r.attributes.get(&spec.name).map_or("", String::as_str);
                        if !cell.trim().is_empty() {
                            let value = spec.value(cell).map_err(|e| reject(e.into()))?;
                            values.insert(spec.name.clone(), value);
                        }
                    }
                    let output = secrets
                        .oprf
                        .evaluate(&input)
                        .expect("normalized identifiers are valid OPRF inputs");
                    Ok((
                        r.line,
                        set_key(&secrets.provider_id, &output),
                        &r.claims,
                        values,
                    ))
                })
                .collect();
            progress(chunk.len());
            out
        })
        .collect();
    let mut set = EncodedSet::with_capacity(records.len());
    let mut values = AttributeValues::new();
    let mut rejected = Vec::new();
    for result in encoded.into_iter().flatten() {
        match result {
            Ok((line, key, claims, attributes)) => {
                let known = values.entry(key).or_default();
                if let Some((name, _)) = attributes
                    .iter()
                    .find(|(name, value)| known.get(*name).is_some_and(|v| v != *value))
                {
                    rejected.push(Rejected {
                        line,
                        error: RecordError::Conflict(name.clone()),
                    });
                    continue;
                }
                known.extend(attributes);
                set.entry(key)
                    .or_default()
                    .claims
                    .extend(claims.iter().cloned());
            }
            Err(r) => rejected.push(r),
        }
    }
    values.retain(|_, v| !v.is_empty());
    (set, values, rejected)
}

/// Fills in each member's commitments from the attribute book made for this load.
pub fn commit(set: &mut EncodedSet, book: &AttributeBook) -> Result<(), BookError> {
    for (key, member) in set.iter_mut() {
        member.commitments.clear();
        for name in book.attributes_of(key) {
            let opening = book.opening(key, name).expect("listed by the book");
            member
                .commitments
                .insert(name.to_owned(), opening.commitment(name, key)?.to_vec());
        }
    }
    Ok(())
}

/// What a load changes.
#[derive(Debug, Default)]
pub struct Changes {
    /// Members to (re)publish with a fresh attestation.
    pub upserts: Vec<(SetKey, Member)>,
    /// Members to remove.
    pub removals: Vec<SetKey>,
    /// Members left as published.
    pub unchanged: usize,
}

/// Compares the new set with the published one (set key → attested claims).
pub fn changes(new: &EncodedSet, published: &EncodedSet) -> Changes {
    let mut changes = Changes::default();
    for (key, member) in new {
        if published.get(key) == Some(member) {
            changes.unchanged += 1;
        } else {
            changes.upserts.push((*key, member.clone()));
        }
    }
    changes.removals = published
        .keys()
        .filter(|k| !new.contains_key(*k))
        .copied()
        .collect();
    // Deterministic publication order, whatever the hash map's.
    changes.upserts.sort_by_key(|(key, _)| *key);
    changes.removals.sort();
    changes
}

/// A signed entry for one member.
pub fn attest(
    secrets: &ProviderSecrets,
    key: &SetKey,
    member: &Member,
    attested_at: i64,
) -> ProviderSetEntry {
    let claims: Vec<String> = member.claims.iter().cloned().collect();
    let commitments: Vec<AttributeCommitment> = member
        .commitments
        .iter()
        .map(|(attribute, commitment)| AttributeCommitment {
            attribute: attribute.clone(),
            commitment: commitment.clone(),
        })
        .collect();
    let message = Attestation::signing_bytes(
        &secrets.provider_id,
        key,
        &claims,
        attested_at,
        &secrets.attestation_key_id,
        &commitments,
    );
    ProviderSetEntry {
        provider_id: secrets.provider_id.clone(),
        token: key.to_vec(),
        attestation: Attestation {
            claims,
            attested_at,
            signature: secrets.attestation.sign(&message).to_bytes().to_vec(),
            key_id: secrets.attestation_key_id.clone(),
            commitments,
        },
    }
}

impl Member {
    /// The member an entry publishes.
    pub fn of(entry: ProviderSetEntry) -> Member {
        Member {
            claims: entry.attestation.claims.into_iter().collect(),
            commitments: entry
                .attestation
                .commitments
                .into_iter()
                .map(|c| (c.attribute, c.commitment))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oprf::{blind, finalize_batch};

    fn record(line: u64, id: &str, claims: &[&str]) -> SourceRecord {
        SourceRecord {
            line,
            identifier: id.into(),
            claims: claims.iter().map(|c| c.to_string()).collect(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn a_set_key_is_what_a_client_derives_through_the_oblivious_protocol() {
        let secrets = ProviderSecrets::generate("bank").unwrap();
        let (set, _, rejected) = encode(
            &secrets,
            IdentifierKind::Email,
            &[],
            &[
                record(2, "Alice@Example.com", &["account_verified"]),
                record(3, " alice@example.com ", &["fraud_listed"]),
                record(4, "not an email", &["account_verified"]),
            ],
            &|_| {},
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].line, 4);
        assert_eq!(set.len(), 1, "both spellings of alice are one member");
        // The relying party's side: blind, provider evaluates, verify and finalize.
        let input = oprf_input(IdentifierKind::Email, "ALICE@example.COM").unwrap();
        let blinded = blind(&input).unwrap();
        let (evaluated, proof) = secrets
            .oprf
            .evaluate_batch(&[blinded.element.to_vec()])
            .unwrap();
        let output = finalize_batch(
            &[&input],
            &[blinded],
            &evaluated,
            &proof,
            &secrets.oprf.public_key(),
        )
        .unwrap()[0];
        let claims = &set[&set_key("bank", &output)].claims;
        assert_eq!(
            claims.iter().collect::<Vec<_>>(),
            ["account_verified", "fraud_listed"]
        );
    }

    #[test]
    fn a_reload_publishes_only_what_changed() {
        let member = |c: &[&str]| Member {
            claims: c.iter().map(|s| s.to_string()).collect(),
            commitments: BTreeMap::new(),
        };
        let published: EncodedSet = [([1; 32], member(&["a"])), ([2; 32], member(&["a"]))].into();
        let mut new: EncodedSet = [([1; 32], member(&["a"])), ([3; 32], member(&["b"]))].into();
        let c = changes(&new, &published);
        assert_eq!(c.unchanged, 1);
        assert_eq!(c.upserts, vec![([3; 32], member(&["b"]))]);
        assert_eq!(c.removals, vec![[2; 32]]);
        // A new commitment is a change too.
        new.get_mut(&[1; 32])
            .unwrap()
            .commitments
            .insert("income".into(), vec![1; 32]);
        assert_eq!(changes(&new, &published).upserts.len(), 2);
    }
}
