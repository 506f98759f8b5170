//! What the provider's services share about metrics: each keeps its own registry (its
//! `/metrics` shows only its own), registered once and rendered as Prometheus text.

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

/// Registers collectors made for `registry`; names are constants, so a clash is a bug.
pub(crate) fn register<const N: usize>(registry: &Registry, collectors: [Box<dyn Collector>; N]) {
    for c in collectors {
        registry.register(c).expect("each metric registered once");
    }
}

/// The Prometheus text exposition of `registry`.
pub(crate) fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("text encoding");
    String::from_utf8(out).expect("utf-8")
}
