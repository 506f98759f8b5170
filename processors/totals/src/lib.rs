//! `totals`: the second sample stage. Keeps the running sum of the counts it reads per key in
//! the `totals` store and emits it; a key seen *n* times ends at n(n+1)/2, so any lost or
//! duplicated record upstream shows in the sum.

mod config;
mod processor;

pub use config::TotalsConfig;
pub use processor::Totals;

use pavilion_runtime::{parse_config, StageKind};

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "totals",
    outputs: &["totals"],
    stores: &["totals"],
    globals: &[],
    check_config: |c| parse_config::<TotalsConfig>(c).map(drop),
    build: |c| {
        parse_config::<TotalsConfig>(c)?;
        Ok(Box::new(Totals))
    },
};

#[cfg(test)]
mod tests;
