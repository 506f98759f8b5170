//! A pass over a datum before apache-avro decodes it: every length and every item count the
//! bytes declare must fit in the bytes that follow.
//!
//! apache-avro reserves room for what a block count declares before reading a single item
//! (up to 512 Mi items, each a `Value` of tens of bytes), and zeroes a buffer of a declared
//! string length before reading it: a 20-byte record declaring a huge array asked for 29 GB
//! and aborted the process (found by `fuzz/fuzz_targets/avro_decode.rs`). One such record on a
//! topic would crash every consumer of it, again after each restart. Here a count is refused
//! when more items are declared than bytes remain (every item of every schema of the contract
//! takes at least one byte), so decoding allocates in proportion to the record.
//!
//! The pass follows the writer schema exactly as the decoder does, allocates nothing, and
//! leaves everything else (union and enum indexes, UTF-8, integer ranges) to the decoder.

use apache_avro::error::Details;
use apache_avro::Schema;

/// Checks `datum` (the Avro binary after the single-object header) against `schema` (with its
/// named types inlined).
pub(crate) fn check(schema: &Schema, datum: &[u8]) -> Result<(), apache_avro::Error> {
    skip(schema, &mut Cursor(datum))
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<(), apache_avro::Error> {
        let rest = self.0.get(n..).ok_or_else(eof)?;
        self.0 = rest;
        Ok(())
    }

    /// A zig-zag varint, as apache-avro reads it (at most 10 bytes).
    fn long(&mut self) -> Result<i64, apache_avro::Error> {
        let mut value = 0u64;
        for (i, &byte) in self.0.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(if self.0.len() >= 10 {
            Details::IntegerOverflow.into()
        } else {
            eof()
        })
    }

    /// A length or count that must not exceed the bytes left.
    fn fitting(&mut self, declared: u64) -> Result<usize, apache_avro::Error> {
        match usize::try_from(declared) {
            Ok(n) if n <= self.0.len() => Ok(n),
            _ => Err(Details::MemoryAllocation {
                desired: usize::try_from(declared).unwrap_or(usize::MAX),
                maximum: self.0.len(),
            }
            .into()),
        }
    }
}

fn eof() -> apache_avro::Error {
    Details::ReadVariableIntegerBytes(std::io::ErrorKind::UnexpectedEof.into()).into()
}

fn skip(schema: &Schema, c: &mut Cursor) -> Result<(), apache_avro::Error> {
    match schema {
        Schema::Null => Ok(()),
        Schema::Boolean => c.take(1),
        Schema::Int
        | Schema::Long
        | Schema::Enum(_)
        | Schema::Date
        | Schema::TimeMillis
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => c.long().map(drop),
        Schema::Float => c.take(4),
        Schema::Double => c.take(8),
        Schema::Duration => c.take(12),
        Schema::Bytes | Schema::String | Schema::BigDecimal | Schema::Uuid => {
            let declared = c.long()?;
            let n = c.fitting(u64::try_from(declared).map_err(|_| negative(declared))?)?;
            c.take(n)
        }
        Schema::Fixed(f) => c.take(f.size),
        Schema::Decimal(d) => skip(&d.inner, c),
        Schema::Array(a) => blocks(c, |c| skip(&a.items, c)),
        Schema::Map(m) => blocks(c, |c| {
            skip(&Schema::String, c)?;
            skip(&m.types, c)
        }),
        Schema::Union(u) => {
            let index = c.long()?;
            let branch = usize::try_from(index)
                .ok()
                .and_then(|i| u.variants().get(i))
                .ok_or_else(|| Details::GetUnionVariant {
                    index,
                    num_variants: u.variants().len(),
                })?;
            skip(branch, c)
        }
        Schema::Record(r) => r.fields.iter().try_for_each(|f| skip(&f.schema, c)),
        Schema::Ref { name } => Err(Details::SchemaResolutionError(name.clone()).into()),
    }
}

/// Array and map blocks: a count (negative: then its byte size) and that many items, until a
/// zero count.
fn blocks(
    c: &mut Cursor,
    mut item: impl FnMut(&mut Cursor) -> Result<(), apache_avro::Error>,
) -> Result<(), apache_avro::Error> {
    loop {
        let count = c.long()?;
        if count == 0 {
            return Ok(());
        }
        if count < 0 {
            c.long()?;
        }
        for _ in 0..c.fitting(count.unsigned_abs())? {
            item(c)?;
        }
    }
}

fn negative(length: i64) -> apache_avro::Error {
    Details::ConvertI64ToUsize(
        usize::try_from(length).expect_err("a negative length"),
        length,
    )
    .into()
}
