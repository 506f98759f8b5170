//! The data provider's side of private matching.
//!
//! - [`oprf`]: the provider's RFC 9497 VOPRF key (ristretto255-SHA512) and batch evaluation with
//!   one DLEQ proof per batch, plus the client steps (blind, verify and finalize) so both sides
//!   share one implementation of the suite.
//! - [`keystore`] and [`secrets`]: the OPRF key and the attestation key, sealed at rest under
//!   an operator passphrase.
//! - [`normalize`]: the rules that turn a subject identifier into OPRF input, identical for the
//!   provider loading its set and the relying party asking.
//! - [`source`] and [`set`]: records from CSV or PostgreSQL → `H(F_k(x))` → signed
//!   attestations, and what a reload changes.
//! - [`protocol`] and [`service`]: the authenticated, rate-limited HTTP evaluation service.
//! - [`attributes`]: numeric attributes (birth date, income), their commitments in the set
//!   entries, and their openings, sealed at rest; [`evidence`]: proving predicates over them
//!   for the broker.
#![deny(missing_docs)]

pub use pavilion_keys::keystore;
pub mod attributes;
pub mod evidence;
mod metrics;
pub mod normalize;
pub mod oprf;
pub mod protocol;
pub mod secrets;
pub mod service;
pub mod set;
pub mod source;
