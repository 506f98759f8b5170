//! The data provider's side of private matching.
//!
//! - [`oprf`]: the provider's RFC 9497 VOPRF key (ristretto255-SHA512) and batch evaluation with
//!   one DLEQ proof per batch, plus the client steps (blind, verify and finalize) so both sides
//!   share one implementation of the suite.
//! - [`keystore`]: the OPRF secret sealed at rest under an operator passphrase.
//! - [`normalize`]: the rules that turn a subject identifier into OPRF input, identical for the
//!   provider loading its set and the relying party asking.
//!
//! Loading sets from CSV/PostgreSQL, the HTTP evaluation service and the set publisher build on
//! these (issue 4).
#![deny(missing_docs)]

pub mod keystore;
pub mod normalize;
pub mod oprf;
