//! Avro single-object decoding of every schema of the contract, current and released.
//!
//! Input: one selector byte, then an Avro body. The body is decoded twice: as it is (framing
//! and fingerprint checks: a consumer's first step on any record) and behind the header of
//! the schema file the selector picks (`SCHEMA_FILES[selector % len]`, a current or released version), so most inputs reach
//! a schema's decoder, and a released one's resolution to the current schema.
//!
//! Asserts: decoding never panics; a record decoded generically decodes as its Rust event,
//! which encodes (in a debug-assertions build that also checks the direct encoding against
//! the generic one), reads back to itself, and encodes to the same bytes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pavilion_fuzz::{framed, versions, EVENTS};
use pavilion_schemas::Registry;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let registry = Registry::builtin();
    check(registry, body);
    let version = usize::from(selector) % versions().len();
    check(registry, &framed(version, body));
});

fn check(registry: &Registry, bytes: &[u8]) {
    let Ok((name, _)) = registry.decode_value(bytes) else {
        return;
    };
    assert_eq!(registry.name_of(bytes).ok(), Some(name));
    let (_, round_trip) = EVENTS
        .iter()
        .find(|(event, _)| *event == name)
        .unwrap_or_else(|| panic!("{name} has no event type"));
    round_trip(registry, bytes);
}
