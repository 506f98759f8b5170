use pavilion_runtime::{Context, ProcessError, Processor, Record};
use pavilion_schemas::{DemoEvent, KeyCount};

use crate::CounterConfig;

/// Counts events per key.
pub struct Counter {
    config: CounterConfig,
}

impl Counter {
    /// A counter with its config.
    pub fn new(config: CounterConfig) -> Self {
        Counter { config }
    }
}

impl Processor for Counter {
    type Input = DemoEvent;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<DemoEvent>,
    ) -> Result<(), ProcessError> {
        let event = record.value;
        if let Some(prefix) = &self.config.refuse_payload_prefix {
            if event.payload.starts_with(prefix.as_str()) {
                return Err(ProcessError::new(format!(
                    "payload starts with refused prefix `{prefix}`"
                )));
            }
        }
        let mut counts = ctx.store("counts")?;
        let count = counts.get::<i64>(event.key.as_bytes())?.unwrap_or(0) + 1;
        counts.put(event.key.as_bytes(), &count)?;
        let out = KeyCount {
            key: event.key,
            seq: event.seq,
            count,
        };
        ctx.emit("counts", record.key, &out)
    }
}
