//! `counter`: the sample stateful stage. Counts events per key in the `counts` store and
//! emits each event's running count to `counts`. With `totals` it forms the two-stage
//! topology the runtime's exactly-once tests and the demo run.

mod config;
mod processor;

pub use config::CounterConfig;
pub use processor::Counter;

use pavilion_runtime::{parse_config, StageKind};

/// The kind as topology.yaml names it.
pub static KIND: StageKind = StageKind {
    name: "counter",
    outputs: &["counts"],
    stores: &["counts"],
    globals: &[],
    check_config: |c| parse_config::<CounterConfig>(c).map(drop),
    build: |c| Ok(Box::new(Counter::new(parse_config(c)?))),
};

#[cfg(test)]
mod tests;
