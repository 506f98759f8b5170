//! What a provider signs about its members for others to check without trusting the broker:
//! BBS signatures over attribute sets and the selective-disclosure proofs derived from them
//! ([`bbs`]).

pub mod bbs;
