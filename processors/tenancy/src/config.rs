use std::time::Duration;

use serde::Deserialize;

/// `config:` of a tenancy stage. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenancyConfig {
    /// Claim names a request may ask for at all (the policy decides per tenant); empty: any.
    pub allowed_claims: Vec<String>,
    /// Claims per request.
    pub max_claims: usize,
    /// Subject tokens per request.
    pub max_tokens: usize,
    /// Length of any string field, and of any claim parameter but a presentation.
    pub max_string_len: usize,
    /// Length of a claim's `presentation` parameter: a holder's credential presentation
    /// (an SD-JWT VC with its disclosures and key binding, or a VC-JWT in a VP), which
    /// `credential` evidence checks.
    pub max_presentation_len: usize,
    /// Length of one subject token (an OPRF output is 64 bytes).
    pub max_token_len: usize,
    /// Size of the request's canonical signing bytes (all fields but the signature).
    pub max_request_bytes: usize,
    /// How far `created_at` and `signed_at` may be from the stage's clock.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// How long a `request_id` is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Expired ids removed per partition per punctuation, so a punctuation stays short.
    pub expire_batch: usize,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        TenancyConfig {
            allowed_claims: Vec::new(),
            max_claims: 16,
            max_tokens: 16,
            max_string_len: 256,
            max_presentation_len: 4096,
            max_token_len: 64,
            max_request_bytes: 8 * 1024,
            clock_skew: Duration::from_secs(300),
            idempotency_window: Duration::from_secs(24 * 3600),
            expire_batch: 10_000,
        }
    }
}
