//! Turning a provider's records into its published set, and a new load into changes against
//! what is already published.
//!
//! Each record becomes `set_key(provider, F_k(normalize(x)))` → attested claims. Records that
//! normalize to the same subject are merged (their claims united). A load publishes only
//! what changed: new members and members whose claims changed get a fresh signed
//! attestation; members no longer in the source get a tombstone; unchanged members are left
//! as they are (their attestation keeps its time).

use std::collections::{BTreeSet, HashMap};

use ed25519_dalek::Signer;
use pavilion_schemas::{set_key, Attestation, ProviderSetEntry};
use rayon::prelude::*;

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
}

/// A set key.
pub type SetKey = [u8; 32];

/// A record that could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its line.
    pub line: u64,
    /// Why.
    pub error: NormalizeError,
}

/// The set a load describes: set key → claims.
pub type EncodedSet = HashMap<SetKey, BTreeSet<String>>;

/// Encodes records in parallel; `progress` is called with the number done after each chunk.
pub fn encode(
    secrets: &ProviderSecrets,
    kind: IdentifierKind,
    records: &[SourceRecord],
    progress: &(dyn Fn(usize) + Sync),
) -> (EncodedSet, Vec<Rejected>) {
    const CHUNK: usize = 2_048;
    type Encoded<'r> = Result<(SetKey, &'r BTreeSet<String>), Rejected>;
    let encoded: Vec<Vec<Encoded<'_>>> = records
        .par_chunks(CHUNK)
        .map(|chunk| {
            let out = chunk
                .iter()
                .map(|r| {
                    let input = oprf_input(kind, &r.identifier).map_err(|error| Rejected {
                        line: r.line,
                        error,
                    })?;
                    let output = secrets
                        .oprf
                        .evaluate(&input)
                        .expect("normalized identifiers are valid OPRF inputs");
                    Ok((set_key(&secrets.provider_id, &output), &r.claims))
                })
                .collect();
            progress(chunk.len());
            out
        })
        .collect();
    let mut set = EncodedSet::with_capacity(records.len());
    let mut rejected = Vec::new();
    for result in encoded.into_iter().flatten() {
        match result {
            Ok((key, claims)) => set.entry(key).or_default().extend(claims.iter().cloned()),
            Err(r) => rejected.push(r),
        }
    }
    (set, rejected)
}

/// What a load changes.
#[derive(Debug, Default)]
pub struct Changes {
    /// Members to (re)publish with a fresh attestation.
    pub upserts: Vec<(SetKey, Vec<String>)>,
    /// Members to remove.
    pub removals: Vec<SetKey>,
    /// Members left as published.
    pub unchanged: usize,
}

/// Compares the new set with the published one (set key → attested claims).
pub fn changes(new: &EncodedSet, published: &EncodedSet) -> Changes {
    let mut changes = Changes::default();
    for (key, claims) in new {
        if published.get(key) == Some(claims) {
            changes.unchanged += 1;
        } else {
            changes
                .upserts
                .push((*key, claims.iter().cloned().collect()));
        }
    }
    changes.removals = published
        .keys()
        .filter(|k| !new.contains_key(*k))
        .copied()
        .collect();
    // Deterministic publication order, whatever the hash map's.
    changes.upserts.sort();
    changes.removals.sort();
    changes
}

/// A signed entry for one member.
pub fn attest(
    secrets: &ProviderSecrets,
    key: &SetKey,
    claims: Vec<String>,
    attested_at: i64,
) -> ProviderSetEntry {
    let message = Attestation::signing_bytes(
        &secrets.provider_id,
        key,
        &claims,
        attested_at,
        &secrets.attestation_key_id,
    );
    ProviderSetEntry {
        provider_id: secrets.provider_id.clone(),
        token: key.to_vec(),
        attestation: Attestation {
            claims,
            attested_at,
            signature: secrets.attestation.sign(&message).to_bytes().to_vec(),
            key_id: secrets.attestation_key_id.clone(),
        },
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
        }
    }

    #[test]
    fn a_set_key_is_what_a_client_derives_through_the_oblivious_protocol() {
        let secrets = ProviderSecrets::generate("bank");
        let (set, rejected) = encode(
            &secrets,
            IdentifierKind::Email,
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
        let claims = &set[&set_key("bank", &output)];
        assert_eq!(
            claims.iter().collect::<Vec<_>>(),
            ["account_verified", "fraud_listed"]
        );
    }

    #[test]
    fn a_reload_publishes_only_what_changed() {
        let claims = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let published: EncodedSet = [([1; 32], claims(&["a"])), ([2; 32], claims(&["a"]))].into();
        let new: EncodedSet = [([1; 32], claims(&["a"])), ([3; 32], claims(&["b"]))].into();
        let c = changes(&new, &published);
        assert_eq!(c.unchanged, 1);
        assert_eq!(c.upserts, vec![([3; 32], vec!["b".to_owned()])]);
        assert_eq!(c.removals, vec![[2; 32]]);
    }
}
