use pavilion_runtime::{Context, ProcessError, Processor, Record};
use pavilion_schemas::{KeyCount, KeyTotal};

/// Sums counts per key.
pub struct Totals;

impl Processor for Totals {
    type Input = KeyCount;

    fn process(
        &mut self,
        ctx: &mut Context<'_>,
        record: Record<KeyCount>,
    ) -> Result<(), ProcessError> {
        let count = record.value;
        let mut totals = ctx.store("totals")?;
        let sum = totals
            .get::<i64>(count.key.as_bytes())?
            .unwrap_or(0)
            .checked_add(count.count)
            .ok_or_else(|| ProcessError::new(format!("sum of `{}` overflows", count.key)))?;
        totals.put(count.key.as_bytes(), &sum)?;
        let out = KeyTotal {
            key: count.key,
            seq: count.seq,
            count: count.count,
            sum,
        };
        ctx.emit("totals", record.key, &out)
    }
}
