//! The Avro wire contract of every Pavilion topic.
//!
//! Framing is Avro **single-object encoding**: `C3 01`, the 8-byte little-endian CRC-64-AVRO
//! (Rabin) fingerprint of the writer schema's Parsing Canonical Form, then the Avro binary
//! datum. It needs no schema registry: a consumer that has the `.avsc` files of this folder
//! (current and `released/`) can map every fingerprint to its writer schema and resolve it to
//! the current reader schema. `examples/python/pavilion_avro.py` does exactly that.
//!
//! The schemas are embedded at build time (`build.rs`), so the binary carries the contract.
#![deny(missing_docs)]

mod analytics;
mod audit;
mod bounds;
mod decision;
mod events;
mod policy;
mod provider;
mod request;
mod version;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use apache_avro::headers::HeaderBuilder;
use apache_avro::rabin::Rabin;
use apache_avro::schema::{ArraySchema, MapSchema, Name, ResolvedSchema, UnionSchema};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use apache_avro::{GenericSingleObjectReader, GenericSingleObjectWriter, Schema};
use serde::{de::DeserializeOwned, Serialize};

pub use analytics::*;
pub use audit::*;
pub use decision::*;
pub use events::*;
pub use policy::*;
pub use provider::*;
pub use request::*;
pub use version::*;

/// Marker bytes that open every single-object-encoded record.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// A typed event with a schema in this folder.
pub trait Event: Serialize + DeserializeOwned {
    /// Full Avro name (`namespace.Name`) of the record schema this type mirrors.
    const FULL_NAME: &'static str;
}

/// One `.avsc` file embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct SchemaFile {
    /// Path relative to `schemas/`.
    pub file: &'static str,
    /// Whether it is a frozen, published version under `released/`.
    pub released: bool,
    /// The schema text.
    pub json: &'static str,
}

/// Every schema file of the contract, current ones first.
pub const SCHEMA_FILES: &[SchemaFile] = include!(concat!(env!("OUT_DIR"), "/schema_files.rs"));

/// Errors from encoding or decoding a framed record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes do not start with the single-object marker, or are shorter than its header.
    #[error("not a single-object-encoded Avro record (expected C3 01 + 8-byte fingerprint, got {got} bytes starting {prefix})")]
    BadFraming {
        /// Length of the input.
        got: usize,
        /// Hex of the first bytes.
        prefix: String,
    },
    /// The fingerprint names no schema of the contract.
    #[error("unknown schema fingerprint {0}")]
    UnknownFingerprint(String),
    /// The record was written with another record type than the one expected.
    #[error("schema mismatch: expected {expected}, record is {found}")]
    SchemaMismatch {
        /// The full name the reader expected.
        expected: String,
        /// The full name of the writer schema.
        found: String,
    },
    /// The datum ended before the record's bytes did.
    #[error("{count} bytes after the end of the {schema} datum")]
    TrailingBytes {
        /// Full schema name.
        schema: String,
        /// How many bytes were left.
        count: usize,
    },
    /// No current schema exists with this name.
    #[error("no schema named {0} in schemas/")]
    UnknownSchema(String),
    /// The Avro library rejected the datum.
    #[error("avro {op} of {schema}: {source}")]
    Avro {
        /// "encode" or "decode".
        op: &'static str,
        /// Full schema name.
        schema: String,
        /// The library error.
        #[source]
        source: Box<apache_avro::Error>,
    },
}

/// A schema file that could not be loaded, or a released version the current one cannot read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// The file does not parse as an Avro schema.
    #[error("{file}: {source}")]
    Parse {
        /// File name.
        file: String,
        /// The library error.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// The top-level schema is not a named record.
    #[error("{file}: top-level schema must be a named record")]
    NotARecord {
        /// File name.
        file: String,
    },
    /// Two current files define the same record.
    #[error("{file}: {name} is already defined by {other}")]
    Duplicate {
        /// File name.
        file: String,
        /// Full record name.
        name: String,
        /// The earlier file.
        other: String,
    },
    /// A released version has no current schema any more.
    #[error("{file}: released schema {name} has no current schema (records of it would become unreadable)")]
    Removed {
        /// File name.
        file: String,
        /// Full record name.
        name: String,
    },
    /// The current schema cannot read data written with a released version.
    #[error(
        "{file}: current {name} cannot read data written with this released version: {reason}"
    )]
    Incompatible {
        /// File name of the released version.
        file: String,
        /// Full record name.
        name: String,
        /// Why, from the compatibility checker.
        reason: String,
    },
}

/// The framing header of one schema version (what apache-avro calls a single-object header;
/// given explicitly because the crate's own fingerprint differs for logical types, see
/// [`fingerprint_json`]).
struct Header([u8; 8]);

impl HeaderBuilder for Header {
    fn build_header(&self) -> Vec<u8> {
        [&MAGIC[..], &self.0].concat()
    }
}

/// One version of a record schema, as written.
struct Writer {
    name: String,
    /// Decodes records of this version; its named types are resolved once, here, rather than
    /// for every record.
    reader: GenericSingleObjectReader,
    /// The schema with its named types inlined, for [`bounds::check`].
    inlined: Schema,
    /// Whether this is the current version (its records need no schema resolution).
    current: bool,
}

/// The current version of a record schema.
struct Current {
    schema: Schema,
    fingerprint: [u8; 8],
    /// `schema` with its named-type references replaced by their definitions: what
    /// apache-avro's schema-aware serializer can write with, as it is given no names. `None`
    /// for a schema with a union of several non-null types: that serializer takes the first
    /// branch of a compatible kind (a `bytes` value goes to the `string` of
    /// `["string", "bytes"]`), not the branch of the value's type.
    inlined: Option<Schema>,
    /// `schema` with maps as arrays of entries ([`maps_as_entries`]): what `encoder` writes
    /// with, so that a map is written in key order.
    entries: Schema,
    /// Validates and encodes a generic value with the named types resolved once (the path
    /// for what the direct serializer refuses, with the better error); it writes through a
    /// buffer of its own, hence the lock.
    encoder: Mutex<GenericSingleObjectWriter>,
}

impl Current {
    fn new(schema: Schema, fingerprint: [u8; 8]) -> Result<Current, apache_avro::Error> {
        let entries = maps_as_entries(&schema)?;
        let encoder = Mutex::new(Current::encoder(&entries, fingerprint)?);
        let names = ResolvedSchema::try_from(&schema)?;
        let inlined = inline_refs(&schema, names.get_names())?;
        let inlined = (!has_choice_union(&inlined)).then_some(inlined);
        Ok(Current {
            inlined,
            schema,
            fingerprint,
            entries,
            encoder,
        })
    }

    fn encoder(
        schema: &Schema,
        fingerprint: [u8; 8],
    ) -> Result<GenericSingleObjectWriter, apache_avro::Error> {
        GenericSingleObjectWriter::new_with_capacity_and_header_builder(
            schema,
            256,
            Header(fingerprint),
        )
    }
}

/// All schemas of the contract, indexed by full name (current) and fingerprint (every version).
pub struct Registry {
    current: HashMap<String, Current>,
    writers: HashMap<[u8; 8], Writer>,
}

impl Registry {
    /// The registry of the embedded contract. Panics only if the embedded files are broken,
    /// which `contract_is_valid` in this crate's tests rules out.
    pub fn builtin() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            Registry::load(SCHEMA_FILES)
                .unwrap_or_else(|errors| panic!("embedded schemas are invalid: {errors:?}"))
        })
    }

    /// Loads and checks a set of schema files; reports every problem, not just the first.
    pub fn load(files: &[SchemaFile]) -> Result<Registry, Vec<ContractError>> {
        let mut errors = Vec::new();
        let mut current: HashMap<String, Current> = HashMap::new();
        let mut current_file: HashMap<String, &str> = HashMap::new();
        let mut writers = HashMap::new();
        let mut released = Vec::new();
        for f in files {
            let schema = match Schema::parse_str(f.json) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(ContractError::Parse {
                        file: f.file.into(),
                        source: Box::new(e),
                    });
                    continue;
                }
            };
            let Schema::Record(record) = &schema else {
                errors.push(ContractError::NotARecord {
                    file: f.file.into(),
                });
                continue;
            };
            let name = record.name.fullname(None);
            let fp = match fingerprint_json(f.json) {
                Ok(fp) => fp,
                Err(e) => {
                    errors.push(ContractError::Parse {
                        file: f.file.into(),
                        source: Box::new(e),
                    });
                    continue;
                }
            };
            let parse_error = |e| ContractError::Parse {
                file: f.file.into(),
                source: Box::new(e),
            };
            if f.released {
                released.push((f.file, name.clone(), schema.clone()));
            } else if let Some(other) = current_file.insert(name.clone(), f.file) {
                errors.push(ContractError::Duplicate {
                    file: f.file.into(),
                    name: name.clone(),
                    other: other.into(),
                });
            } else {
                match Current::new(schema.clone(), fp) {
                    Ok(c) => {
                        current.insert(name.clone(), c);
                    }
                    Err(e) => errors.push(parse_error(e)),
                }
            }
            let reader = ResolvedSchema::try_from(&schema)
                .and_then(|names| inline_refs(&schema, names.get_names()))
                .and_then(|inlined| {
                    GenericSingleObjectReader::new_with_header_builder(schema, Header(fp))
                        .map(|reader| (reader, inlined))
                });
            match reader {
                Ok((reader, inlined)) => {
                    writers.insert(
                        fp,
                        Writer {
                            name,
                            reader,
                            inlined,
                            current: false,
                        },
                    );
                }
                Err(e) => errors.push(parse_error(e)),
            }
        }
        for (file, name, old) in released {
            match current.get(&name) {
                None => errors.push(ContractError::Removed {
                    file: file.into(),
                    name,
                }),
                Some(new) => {
                    if let Err(e) = SchemaCompatibility::can_read(&old, &new.schema) {
                        errors.push(ContractError::Incompatible {
                            file: file.into(),
                            name,
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        for (fp, writer) in &mut writers {
            writer.current = current
                .get(&writer.name)
                .is_some_and(|c| c.fingerprint == *fp);
        }
        if errors.is_empty() {
            Ok(Registry { current, writers })
        } else {
            Err(errors)
        }
    }

    /// The current schema of a record type.
    pub fn schema(&self, full_name: &str) -> Option<&Schema> {
        self.current.get(full_name).map(|c| &c.schema)
    }

    /// Encodes a typed event with its current schema, framed.
    pub fn encode<E: Event>(&self, event: &E) -> Result<Vec<u8>, CodecError> {
        let current = self
            .current
            .get(E::FULL_NAME)
            .ok_or_else(|| CodecError::UnknownSchema(E::FULL_NAME.into()))?;
        // Straight from the event to bytes, without a generic value (building and resolving
        // one was most of what encoding cost). Debug builds, so every test of every stage,
        // check that it writes what the generic path writes.
        let Some(inlined) = &current.inlined else {
            return self.encode_generic(current, event);
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&current.fingerprint);
        let direct = apache_avro::write_avro_datum_ref(inlined, event, &mut out);
        if cfg!(debug_assertions) {
            if let Ok(generic) = self.encode_generic(current, event) {
                let value = |bytes: &[u8]| self.decode_value(bytes).ok().map(|(_, v)| v);
                assert!(
                    direct.is_ok()
                        && (out == generic
                            || value(&out).is_some_and(|v| Some(v) == value(&generic))),
                    "{}: the direct encoding ({direct:?}) differs from the generic one\n direct: {}\ngeneric: {}",
                    E::FULL_NAME,
                    hex(&out),
                    hex(&generic)
                );
            }
        }
        match direct {
            Ok(_) => Ok(out),
            Err(_) => self.encode_generic(current, event),
        }
    }

    /// Encodes through a generic value resolved to the schema (slower; the reference).
    fn encode_generic<E: Event>(
        &self,
        current: &Current,
        event: &E,
    ) -> Result<Vec<u8>, CodecError> {
        let avro = |source| CodecError::Avro {
            op: "encode",
            schema: E::FULL_NAME.into(),
            source: Box::new(source),
        };
        let value = apache_avro::to_value(event)
            .and_then(|v| v.resolve(&current.schema))
            .map(map_entries_in_key_order)
            .map_err(avro)?;
        let mut out = Vec::with_capacity(256);
        let mut encoder = current
            .encoder
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = encoder.write_value_ref(&value, &mut out) {
            // A failed write leaves the encoder's buffer mid-record: start from a fresh one.
            *encoder = Current::encoder(&current.entries, current.fingerprint).map_err(avro)?;
            return Err(avro(e));
        }
        Ok(out)
    }

    /// Decodes a framed record into the expected event type, resolving an older writer
    /// schema to the current one.
    pub fn decode<E: Event>(&self, bytes: &[u8]) -> Result<E, CodecError> {
        let (name, value) = self.decode_value(bytes)?;
        if name != E::FULL_NAME {
            return Err(CodecError::SchemaMismatch {
                expected: E::FULL_NAME.into(),
                found: name.into(),
            });
        }
        apache_avro::from_value(&value).map_err(|e| CodecError::Avro {
            op: "decode",
            schema: name.into(),
            source: Box::new(e),
        })
    }

    /// Decodes any framed record of the contract into its full name and a generic value.
    pub fn decode_value<'a>(&'a self, bytes: &[u8]) -> Result<(&'a str, Value), CodecError> {
        let writer = self.writer(bytes)?;
        let avro = |source| CodecError::Avro {
            op: "decode",
            schema: writer.name.clone(),
            source: Box::new(source),
        };
        // Before apache-avro allocates what the bytes declare: see `bounds`.
        bounds::check(&writer.inlined, &bytes[HEADER_LEN..]).map_err(avro)?;
        // apache-avro 0.21 reads a union at end of input as null, so a record cut before its
        // last optional field would decode. A sentinel byte after the body makes that cut
        // visible: a complete datum leaves the sentinel unread.
        let mut input = std::io::Read::chain(bytes, &[0u8][..]);
        let mut value = writer.reader.read_value(&mut input).map_err(avro)?;
        if !writer.current {
            value = value
                .resolve(&self.current[&writer.name].schema)
                .map_err(avro)?;
        }
        let (body, sentinel) = input.into_inner();
        if !body.is_empty() {
            return Err(CodecError::TrailingBytes {
                schema: writer.name.clone(),
                count: body.len(),
            });
        }
        if sentinel.is_empty() {
            return Err(avro(apache_avro::Error::from(
                apache_avro::error::Details::ReadVariableIntegerBytes(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ),
            )));
        }
        Ok((&writer.name, value))
    }

    fn writer(&self, bytes: &[u8]) -> Result<&Writer, CodecError> {
        if bytes.len() < HEADER_LEN || bytes[..2] != MAGIC {
            return Err(CodecError::BadFraming {
                got: bytes.len(),
                prefix: hex(&bytes[..bytes.len().min(HEADER_LEN)]),
            });
        }
        let fp: [u8; 8] = bytes[2..HEADER_LEN].try_into().expect("8 bytes");
        self.writers
            .get(&fp)
            .ok_or_else(|| CodecError::UnknownFingerprint(hex(&fp)))
    }

    /// Full name of the writer schema of a framed record, without decoding it.
    pub fn name_of(&self, bytes: &[u8]) -> Result<&str, CodecError> {
        self.writer(bytes).map(|w| w.name.as_str())
    }

    /// Names of every current record schema, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<_> = self.current.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, in wire (little-endian)
/// order, as Java's `SchemaNormalization` and Python's fastavro compute it.
///
/// apache-avro 0.21 keeps `{"type":"long"}` for a `timestamp-millis` long where the spec's
/// canonical form is `"long"` (logical types are stripped), so the annotations are removed
/// before the crate computes the form; `fingerprints_match_the_spec` pins this.
pub fn fingerprint_json(json: &str) -> Result<[u8; 8], apache_avro::Error> {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("logicalType");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| apache_avro::Error::from(apache_avro::error::Details::ParseSchemaJson(e)))?;
    strip(&mut value);
    let schema = Schema::parse(&value)?;
    Ok(schema
        .fingerprint::<Rabin>()
        .bytes
        .try_into()
        .expect("Rabin fingerprints are 8 bytes"))
}

/// `schema` with every reference to a named type replaced by the type's definition.
fn inline_refs(
    schema: &Schema,
    names: &HashMap<Name, &Schema>,
) -> Result<Schema, apache_avro::Error> {
    Ok(match schema {
        Schema::Ref { name } => match names.get(name) {
            Some(definition) => inline_refs(definition, names)?,
            None => schema.clone(),
        },
        Schema::Array(a) => Schema::Array(ArraySchema {
            items: Box::new(inline_refs(&a.items, names)?),
            attributes: a.attributes.clone(),
        }),
        Schema::Map(m) => Schema::Map(MapSchema {
            types: Box::new(inline_refs(&m.types, names)?),
            attributes: m.attributes.clone(),
        }),
        Schema::Union(u) => Schema::Union(UnionSchema::new(
            u.variants()
                .iter()
                .map(|v| inline_refs(v, names))
                .collect::<Result<_, _>>()?,
        )?),
        Schema::Record(r) => {
            let mut r = r.clone();
            for field in &mut r.fields {
                field.schema = inline_refs(&field.schema, names)?;
            }
            Schema::Record(r)
        }
        other => other.clone(),
    })
}

/// `schema` with every map replaced by an array of `{key, value}` records, which Avro writes
/// byte for byte as it writes the map: blocks of a count and that many key/value pairs. A
/// generic value holds a map as a hash map, and apache-avro writes it in that map's random
/// order, so the same event would encode to different bytes (an event's maps are sorted, and
/// the direct path writes them in order); written as entries, a map keeps the order of
/// [`map_entries_in_key_order`].
fn maps_as_entries(schema: &Schema) -> Result<Schema, apache_avro::Error> {
    fn replace(json: &mut serde_json::Value, entries: &mut usize) {
        let map_values = match json {
            serde_json::Value::Object(object) => {
                // Defaults are for readers, and a map's `{}` is no array's.
                object.remove("default");
                object.values_mut().for_each(|v| replace(v, entries));
                (object.get("type").and_then(|t| t.as_str()) == Some("map"))
                    .then(|| object.remove("values").unwrap_or_default())
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|v| replace(v, entries));
                None
            }
            _ => None,
        };
        if let Some(values) = map_values {
            *entries += 1;
            *json = serde_json::json!({
                "type": "array",
                "items": {
                    "type": "record",
                    // In the enclosing namespace, as the map's own named types are.
                    "name": format!("MapEntry_{entries}"),
                    "fields": [
                        {"name": "key", "type": "string"},
                        {"name": "value", "type": values},
                    ],
                },
            });
        }
    }
    let mut json = serde_json::to_value(schema)
        .map_err(|e| apache_avro::Error::new(apache_avro::error::Details::ParseSchemaJson(e)))?;
    replace(&mut json, &mut 0);
    Schema::parse(&json)
}

/// `value` with every map as its entries in key order, for [`maps_as_entries`]' schema.
fn map_entries_in_key_order(value: Value) -> Value {
    match value {
        Value::Map(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            Value::Array(
                entries
                    .into_iter()
                    .map(|(key, value)| {
                        Value::Record(vec![
                            ("key".into(), Value::String(key)),
                            ("value".into(), map_entries_in_key_order(value)),
                        ])
                    })
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(map_entries_in_key_order).collect())
        }
        Value::Record(fields) => Value::Record(
            fields
                .into_iter()
                .map(|(name, value)| (name, map_entries_in_key_order(value)))
                .collect(),
        ),
        Value::Union(branch, value) => {
            Value::Union(branch, Box::new(map_entries_in_key_order(*value)))
        }
        other => other,
    }
}

/// Whether a union anywhere in `schema` offers more than one non-null type.
fn has_choice_union(schema: &Schema) -> bool {
    match schema {
        Schema::Union(u) => {
            u.variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .count()
                > 1
                || u.variants().iter().any(has_choice_union)
        }
        Schema::Array(a) => has_choice_union(&a.items),
        Schema::Map(m) => has_choice_union(&m.types),
        Schema::Record(r) => r.fields.iter().any(|f| has_choice_union(&f.schema)),
        _ => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
