//! Rust mirrors of the private-matching records: the provider registry, the OPRF-encoded
//! provider sets, and match results; plus the two derivations both sides of a match must
//! agree on byte for byte (the set key and the attestation's signing input).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Event, EvidenceKind, PolicyOutcome};

/// Lifecycle of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ProviderState {
    Unknown,
    Onboarding,
    Active,
    Suspended,
    Retired,
}

/// A key the provider signs attestations with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderKey {
    /// Unique within the provider.
    pub key_id: String,
    /// E.g. `Ed25519`.
    pub algorithm: String,
    /// Serialized public key.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub public_key: Vec<u8>,
}

/// `provider.avsc`: a data provider (compacted `pavilion.providers`, keyed by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    /// Provider id.
    pub provider_id: String,
    /// Region its data resides in.
    pub region: String,
    /// Claims it can answer.
    pub claims: Vec<String>,
    /// OPRF suite, `ristretto255-SHA512`.
    pub oprf_suite: String,
    /// Its OPRF public key (RFC 9497 `pkS`), for clients to verify proofs.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub oprf_public_key: Vec<u8>,
    /// Keys that verify its attestations.
    pub attestation_keys: Vec<ProviderKey>,
    /// Role (`oprf`) → URL.
    pub endpoints: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: ProviderState,
    /// When written, ms.
    pub updated_at: i64,
    /// When the last set load completed, ms; `None` before the first.
    pub set_loaded_at: Option<i64>,
    /// Members after that load.
    pub set_size: Option<i64>,
    /// Version stamp (several regions); `None` when written without one.
    #[serde(default)]
    pub stamp: Option<crate::ControlVersion>,
}

impl Provider {
    /// Where this record stands among the versions of its key (see [`crate::VersionOrder`]).
    pub fn order(&self) -> crate::VersionOrder {
        crate::VersionOrder::of(self.stamp.as_ref(), self.updated_at)
    }
}

impl Event for Provider {
    const FULL_NAME: &'static str = "pavilion.Provider";
}

/// What a provider attests about one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// Claims that hold for the subject.
    pub claims: Vec<String>,
    /// When attested, ms.
    pub attested_at: i64,
    /// Ed25519 signature over [`Attestation::signing_bytes`].
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub signature: Vec<u8>,
    /// Attestation key used.
    pub key_id: String,
    /// Commitments to the member's numeric attributes (signed with the claims).
    #[serde(default)]
    pub commitments: Vec<AttributeCommitment>,
}

/// A provider's commitment to one numeric attribute of a member: Poseidon over the value, the
/// attribute's type, a subject binding and a salt (`pavilion-zk`). The value and the salt stay
/// with the provider; zero-knowledge predicates prove over the commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeCommitment {
    /// Attribute name, e.g. `birthdate`.
    pub attribute: String,
    /// 32 bytes, big-endian.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub commitment: Vec<u8>,
}

/// `provider_set_entry.avsc`: one member of a provider's set, keyed by its set key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSetEntry {
    /// Publishing provider.
    pub provider_id: String,
    /// The set key, [`set_key`] of the subject's OPRF output.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub token: Vec<u8>,
    /// The attestation.
    pub attestation: Attestation,
}

impl Event for ProviderSetEntry {
    const FULL_NAME: &'static str = "pavilion.ProviderSetEntry";
}

/// Domain tag of [`set_key`].
pub const SET_KEY_TAG: &[u8] = b"pavilion.set-key.v1";
/// Domain tag of [`Attestation::signing_bytes`].
pub const ATTESTATION_SIGNING_TAG: &[u8] = b"pavilion.Attestation.v1";

fn length_prefixed(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

/// `H(F_k(x))`: the key a subject's entry has in a provider's set. SHA-256 over the tag, the
/// provider id and the finalized OPRF output, each length-prefixed. Publishing the hash
/// rather than `F_k(x)` itself means a reader of the set topic cannot turn an entry into a
/// request token; binding the provider id keeps one provider's entries from answering for
/// another's.
pub fn set_key(provider_id: &str, oprf_output: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(96);
    length_prefixed(&mut input, SET_KEY_TAG);
    length_prefixed(&mut input, provider_id.as_bytes());
    length_prefixed(&mut input, oprf_output);
    Sha256::digest(&input).into()
}

impl Attestation {
    /// The bytes the provider signs: tag, provider id, set key, claims (count, then each),
    /// attestation time (i64 big-endian) and key id, then — only when there are any, so that
    /// entries without them keep their signatures — the commitments (count, then each
    /// attribute and commitment); strings and bytes length-prefixed (u32 big-endian).
    pub fn signing_bytes(
        provider_id: &str,
        set_key: &[u8],
        claims: &[String],
        attested_at: i64,
        key_id: &str,
        commitments: &[AttributeCommitment],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        length_prefixed(&mut out, ATTESTATION_SIGNING_TAG);
        length_prefixed(&mut out, provider_id.as_bytes());
        length_prefixed(&mut out, set_key);
        out.extend_from_slice(&(claims.len() as u32).to_be_bytes());
        for claim in claims {
            length_prefixed(&mut out, claim.as_bytes());
        }
        out.extend_from_slice(&attested_at.to_be_bytes());
        length_prefixed(&mut out, key_id.as_bytes());
        if !commitments.is_empty() {
            out.extend_from_slice(&(commitments.len() as u32).to_be_bytes());
            for c in commitments {
                length_prefixed(&mut out, c.attribute.as_bytes());
                length_prefixed(&mut out, &c.commitment);
            }
        }
        out
    }

    /// The commitment to `attribute`, if the provider made one.
    pub fn commitment(&self, attribute: &str) -> Option<&[u8]> {
        self.commitments
            .iter()
            .find(|c| c.attribute == attribute)
            .map(|c| c.commitment.as_slice())
    }

    /// SHA-256 of the attestation's signing input and signature: the evidence reference a
    /// match carries.
    pub fn digest(&self, provider_id: &str, set_key: &[u8]) -> [u8; 32] {
        let mut input = Self::signing_bytes(
            provider_id,
            set_key,
            &self.claims,
            self.attested_at,
            &self.key_id,
            &self.commitments,
        );
        length_prefixed(&mut input, &self.signature);
        Sha256::digest(&input).into()
    }
}

/// Result of matching one claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum MatchStatus {
    Unknown,
    Matched,
    NotMatched,
    Unavailable,
}

/// Evidence a result rests on, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRef {
    /// Provider that supplied it.
    pub provider_id: String,
    /// Kind.
    pub kind: EvidenceKind,
    /// SHA-256 of the attestation used.
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub attestation_digest: Option<Vec<u8>>,
    /// SHA-256 of a verified proof.
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub proof_digest: Option<Vec<u8>>,
    /// The proof itself with its public inputs, for `zk_predicate`.
    #[serde(default)]
    pub zk: Option<ZkEvidence>,
    /// The proof with the revealed attributes, for `bbs_disclosure`.
    #[serde(default)]
    pub disclosure: Option<BbsDisclosure>,
    /// The verified presentation, for `credential`.
    #[serde(default)]
    pub credential: Option<CredentialEvidence>,
}

/// A holder's presentation of a credential a provider issued, as the broker verified it
/// (`pavilion_credentials::credential`): a relying party re-checks it with the issuer's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialEvidence {
    /// `sd-jwt-vc` or `vc-jwt`.
    pub format: String,
    /// `urn:pavilion:provider:<id>`.
    pub issuer: String,
    /// The issuer key that signed it.
    pub key_id: String,
    /// The attributes it reveals.
    pub attributes: BTreeMap<String, String>,
    /// When the credential was issued, ms.
    pub issued_at: i64,
    /// Its status list's id.
    pub status_list: String,
    /// Its bit in that list.
    pub status_index: i64,
    /// The presentation as received.
    pub presentation: String,
}

/// `status_list_published.avsc`: a provider's signed Bitstring Status List, on its member of
/// `pavilion.status-lists.{provider}` keyed by the list's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListPublished {
    /// The issuing provider.
    pub provider_id: String,
    /// The list's id.
    pub list_id: String,
    /// The status list credential (`vc+jwt`).
    pub credential: String,
    /// When published, ms.
    pub published_at: i64,
}

impl Event for StatusListPublished {
    const FULL_NAME: &'static str = "pavilion.StatusListPublished";
}

/// A BBS proof that the provider signed these attribute values of the member, revealing none
/// of the others (`pavilion_credentials::bbs`): checkable with the provider's key alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BbsDisclosure {
    /// The signed header (`pavilion_credentials::bbs::AttributeHeader::to_bytes`).
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub header: Vec<u8>,
    /// The request's nonce, 32 bytes.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub presentation_header: Vec<u8>,
    /// The revealed attributes, ascending by index.
    pub disclosed: Vec<DisclosedAttribute>,
    /// The proof.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub proof: Vec<u8>,
    /// The provider's BBS public key, 96 bytes.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub public_key: Vec<u8>,
}

/// One revealed attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisclosedAttribute {
    /// Message index.
    pub index: i32,
    /// Name.
    pub name: String,
    /// Canonical text.
    pub value: String,
}

/// A verified Groth16 proof with every public input: what a relying party needs to check a
/// predicate without trusting the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZkEvidence {
    /// Circuit id.
    pub circuit: String,
    /// SHA-256 of the circuit's verifying key.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub verifying_key_sha256: Vec<u8>,
    /// Public input: the provider's commitment, 32 bytes big-endian.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub commitment: Vec<u8>,
    /// Public input: the cutoff (YYYYMMDD) or threshold.
    pub bound: i64,
    /// Public input: the request's nonce, 32 bytes big-endian.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub nonce: Vec<u8>,
    /// The proof, 256 bytes, EIP-197 layout.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub proof: Vec<u8>,
}

/// `evidence_request.avsc`: the broker asks a provider for a proof
/// (`pavilion.evidence.requests.<provider>`). No tenant, no request id, no claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRequest {
    /// The member's set key.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub set_key: Vec<u8>,
    /// Circuit id.
    pub circuit: String,
    /// Committed attribute to prove over.
    pub attribute: String,
    /// Cutoff (YYYYMMDD) or threshold.
    pub bound: i64,
    /// The request's nonce, 32 bytes big-endian.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub nonce: Vec<u8>,
    /// Partition of the responses topic to answer on.
    pub reply_partition: i32,
    /// 1, then retries.
    pub attempt: i32,
    /// When the broker stops waiting, ms.
    pub deadline: i64,
    /// For `bbs_disclosure`: the attributes to reveal.
    #[serde(default)]
    pub disclose: Vec<String>,
}

impl Event for EvidenceRequest {
    const FULL_NAME: &'static str = "pavilion.EvidenceRequest";
}

/// A provider's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum EvidenceStatus {
    Unknown,
    Proved,
    DoesNotHold,
    UnknownSubject,
    NoAttribute,
    Failed,
}

/// `evidence_response.avsc`: a provider's answer, echoing the question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceResponse {
    /// Answering provider.
    pub provider_id: String,
    /// Set key asked about.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub set_key: Vec<u8>,
    /// Circuit asked for.
    pub circuit: String,
    /// Bound asked for.
    pub bound: i64,
    /// Nonce asked for.
    #[serde(with = "apache_avro::serde_avro_bytes")]
    pub nonce: Vec<u8>,
    /// The answer.
    pub status: EvidenceStatus,
    /// Compressed Groth16 proof when proved.
    #[serde(with = "apache_avro::serde_avro_bytes_opt")]
    pub proof: Option<Vec<u8>>,
    /// Why not proved.
    pub detail: Option<String>,
    /// When answered, ms.
    pub proved_at: i64,
    /// Proving time, ms.
    pub proving_ms: i64,
    /// For `bbs_disclosure` when proved.
    #[serde(default)]
    pub disclosure: Option<BbsDisclosure>,
}

impl Event for EvidenceResponse {
    const FULL_NAME: &'static str = "pavilion.EvidenceResponse";
}

/// One claim's matching result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimMatch {
    /// Position in the request.
    pub claim_index: i32,
    /// Claim name.
    pub claim_name: String,
    /// Result.
    pub status: MatchStatus,
    /// Why unavailable.
    pub reason: Option<String>,
    /// Evidence.
    pub evidence: Vec<EvidenceRef>,
}

/// `match_result.avsc`: the psi stage's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchResult {
    /// The policy outcome (with the request) matched.
    pub outcome: PolicyOutcome,
    /// Per claim, in request order.
    pub results: Vec<ClaimMatch>,
    /// When, ms.
    pub matched_at: i64,
}

impl Event for MatchResult {
    const FULL_NAME: &'static str = "pavilion.MatchResult";
}

/// `psi_job_chunk.avsc`: part of a batch PSI job's tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsiJobChunk {
    /// Job id.
    pub job_id: String,
    /// Tenant; the record key.
    pub tenant_id: String,
    /// Position, from 0.
    pub chunk: i32,
    /// Chunks in the job.
    pub chunks: i32,
    /// `F_k(x)` per element, in the tenant's order.
    pub tokens: Vec<AvroBytes>,
    /// When produced, ms.
    pub submitted_at: i64,
}

impl Event for PsiJobChunk {
    const FULL_NAME: &'static str = "pavilion.PsiJobChunk";
}

/// An Avro `bytes` value inside an array (serde needs the wrapper to write bytes, not an
/// array of ints).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AvroBytes(#[serde(with = "apache_avro::serde_avro_bytes")] pub Vec<u8>);

/// How a batch PSI job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum PsiJobStatus {
    Unknown,
    Completed,
    Denied,
    Unavailable,
    Failed,
}

/// What a batch PSI result reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum PsiDisclosure {
    Unknown,
    None,
    Cardinality,
    Intersection,
}

/// `psi_job_result.avsc`: a batch PSI job's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsiJobResult {
    /// Job id.
    pub job_id: String,
    /// The submitting request.
    pub request_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Provider intersected with.
    pub provider_id: String,
    /// Outcome.
    pub status: PsiJobStatus,
    /// Why not completed, or why the intersection was withheld.
    pub reason: Option<String>,
    /// What is revealed.
    pub disclosure: PsiDisclosure,
    /// Tokens in the job.
    pub submitted: i64,
    /// Intersection size, when completed.
    pub cardinality: Option<i64>,
    /// Positions of matched tokens, when the intersection is disclosed.
    pub matched: Vec<i64>,
    /// Policy revision that decided.
    pub policy: Option<crate::PolicyRef>,
    /// When, ms.
    pub completed_at: i64,
}

impl Event for PsiJobResult {
    const FULL_NAME: &'static str = "pavilion.PsiJobResult";
}

/// Domain tag of [`job_tokens_digest`].
pub const JOB_TOKENS_TAG: &[u8] = b"pavilion.psi-job-tokens.v1";

/// SHA-256 over the tag and every token of a job, each length-prefixed, in order: what the
/// job's signed request commits to (its `tokens_sha256` parameter, lowercase hex).
pub fn job_tokens_digest<'a>(tokens: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((JOB_TOKENS_TAG.len() as u32).to_be_bytes());
    hasher.update(JOB_TOKENS_TAG);
    for token in tokens {
        hasher.update((token.len() as u32).to_be_bytes());
        hasher.update(token);
    }
    hasher.finalize().into()
}
