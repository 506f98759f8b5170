"""Decode Pavilion records from ``schemas/`` alone.

Every record value on every Pavilion topic uses Avro *single-object encoding* (Avro spec,
"Single object encoding"):

    C3 01 | 8-byte CRC-64-AVRO (Rabin) fingerprint, little-endian | Avro binary datum

The fingerprint is taken over the writer schema's Parsing Canonical Form (PCF). Current schemas
are ``schemas/*.avsc``; older released versions are ``schemas/released/*.avsc`` and are used as
writer schemas only, always resolved against the current schema of the same full name.

    >>> reg = load_schemas("schemas")
    >>> name, record = reg.decode(message.value())

Only ``fastavro`` is needed.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Tuple, Union

import fastavro
from fastavro.schema import to_parsing_canonical_form

__all__ = ["MAGIC", "HEADER_LEN", "Registry", "SchemaEntry", "load_schemas", "rabin_fingerprint"]

#: The two marker bytes that start every single-object encoded datum.
MAGIC = b"\xc3\x01"
#: Marker plus the 8-byte fingerprint.
HEADER_LEN = len(MAGIC) + 8

_EMPTY64 = 0xC15D213AA4D7A795
_TABLE: List[int] = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY64 & -(_fp & 1))
    _TABLE.append(_fp)


def rabin_fingerprint(canonical_form: Union[str, bytes]) -> int:
    """CRC-64-AVRO of ``canonical_form`` as an unsigned integer.

    The Avro spec's value for ``"int"`` is 0x7275d51a3f395c8f (8247732601305521295, what Java's
    ``SchemaNormalization.parsingFingerprint64`` returns). On the wire the integer is written as
    8 *little-endian* bytes: ``8f 5c 39 3f 1a d5 75 72``.
    """
    data = canonical_form.encode("utf-8") if isinstance(canonical_form, str) else canonical_form
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


@dataclass(frozen=True)
class SchemaEntry:
    """One writer schema the registry can decode."""

    full_name: str
    fingerprint: bytes  # 8 bytes, little-endian, as on the wire
    writer: Any  # parsed fastavro schema
    reader: Any  # parsed current schema of the same full name
    path: Path
    released: bool


class Registry:
    """Writer schemas by fingerprint, current schemas by full name."""

    def __init__(self) -> None:
        self._by_fingerprint: Dict[bytes, SchemaEntry] = {}
        self._current: Dict[str, SchemaEntry] = {}

    # -- lookup ---------------------------------------------------------------------------------

    def names(self) -> List[str]:
        """Full names of the current schemas, sorted."""
        return sorted(self._current)

    def fingerprint(self, full_name: str) -> bytes:
        """The 8-byte little-endian fingerprint of the current schema named ``full_name``."""
        try:
            return self._current[full_name].fingerprint
        except KeyError:
            raise KeyError(f"no current schema named {full_name!r}") from None

    def schema(self, full_name: str) -> Any:
        """The parsed current schema named ``full_name``."""
        return self._current[full_name].reader

    def entries(self) -> Iterable[SchemaEntry]:
        """Every writer schema known, current and released."""
        return self._by_fingerprint.values()

    # -- codec ----------------------------------------------------------------------------------

    def encode(self, full_name: str, datum: Dict[str, Any]) -> bytes:
        """Single-object encode ``datum`` with the current schema named ``full_name``."""
        entry = self._current[full_name]
        out = io.BytesIO()
        out.write(MAGIC)
        out.write(entry.fingerprint)
        fastavro.schemaless_writer(out, entry.writer, datum)
        return out.getvalue()

    def decode(self, data: bytes) -> Tuple[str, Dict[str, Any]]:
        """Decode one single-object encoded datum into ``(full_name, record)``.

        Raises ``ValueError`` for a bad marker, an unknown fingerprint, truncated data or bytes
        left over after the datum.
        """
        if data is None:
            raise ValueError("no value (tombstone)")
        data = bytes(data)
        head = data[: len(MAGIC)]
        if head != MAGIC[: len(head)]:
            raise ValueError(
                f"bad magic: expected c301 (Avro single-object encoding), got {head.hex()}"
            )
        if len(data) < HEADER_LEN:
            raise ValueError(
                f"truncated header: {len(data)} bytes, need {HEADER_LEN} (marker + 8-byte fingerprint)"
            )
        fp = data[len(MAGIC) : HEADER_LEN]
        entry = self._by_fingerprint.get(fp)
        if entry is None:
            raise ValueError(
                f"unknown schema fingerprint {fp.hex()} (little-endian; "
                f"CRC-64-AVRO 0x{int.from_bytes(fp, 'little'):016x}): not among the "
                f"{len(self._by_fingerprint)} schemas loaded"
            )
        body = io.BytesIO(data[HEADER_LEN:])
        try:
            record = fastavro.schemaless_reader(body, entry.writer, entry.reader)
        except (EOFError, struct.error, IndexError) as e:
            raise ValueError(f"truncated or corrupt {entry.full_name} datum: {e!r}") from e
        except (UnicodeDecodeError, OverflowError) as e:
            raise ValueError(f"corrupt {entry.full_name} datum: {e}") from e
        except fastavro.read.SchemaResolutionError as e:
            raise ValueError(f"cannot resolve writer {entry.path.name} to current {entry.full_name}: {e}") from e
        left = len(data) - HEADER_LEN - body.tell()
        if left:
            raise ValueError(f"{left} trailing bytes after {entry.full_name} datum")
        return entry.full_name, record

    # -- loading --------------------------------------------------------------------------------

    def _add(self, entry: SchemaEntry) -> None:
        other = self._by_fingerprint.get(entry.fingerprint)
        if other is not None and other.full_name != entry.full_name:
            raise ValueError(
                f"fingerprint collision: {entry.path} and {other.path} both {entry.fingerprint.hex()}"
            )
        # A released copy identical to the current schema adds nothing; keep the current entry.
        if other is None or other.released:
            self._by_fingerprint[entry.fingerprint] = entry


def _parse(path: Path) -> Tuple[str, Any, bytes]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        # A fresh name table per file: every file is self-contained, and the same nested type
        # (e.g. pavilion.VerificationRequest inside AcceptedRequest) appears in several files.
        parsed = fastavro.parse_schema(raw, named_schemas={})
    except Exception as e:  # noqa: BLE001 - report which file is broken
        raise ValueError(f"{path}: not a valid Avro schema: {e}") from e
    if not isinstance(parsed, dict) or "name" not in parsed:
        raise ValueError(f"{path}: top level must be a named type (record, enum or fixed)")
    fp = rabin_fingerprint(to_parsing_canonical_form(parsed)).to_bytes(8, "little")
    return parsed["name"], parsed, fp


def load_schemas(directory: Union[str, Path]) -> Registry:
    """Load ``directory/*.avsc`` (current) and ``directory/released/*.avsc`` (older writers)."""
    directory = Path(directory)
    current = sorted(directory.glob("*.avsc"))
    if not current:
        raise ValueError(f"no *.avsc schemas in {directory}")
    reg = Registry()
    for path in current:
        name, parsed, fp = _parse(path)
        if name in reg._current:
            raise ValueError(f"{path}: {name} is already defined by {reg._current[name].path}")
        entry = SchemaEntry(name, fp, parsed, parsed, path, released=False)
        reg._current[name] = entry
        reg._add(entry)
    for path in sorted((directory / "released").glob("*.avsc")):
        name, parsed, fp = _parse(path)
        cur = reg._current.get(name)
        # A type with no current schema any more is still readable with its own schema.
        reader = cur.reader if cur is not None else parsed
        reg._add(SchemaEntry(name, fp, parsed, reader, path, released=True))
    return reg
