"""Unit tests for pavilion_avro (no broker needed).

Run: python -m pytest examples/python
"""

import io
import json
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.utils import generate_many

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pavilion_avro  # noqa: E402
from pavilion_avro import MAGIC, load_schemas, rabin_fingerprint  # noqa: E402

SCHEMAS = Path(__file__).resolve().parent.parent.parent / "schemas"
T0 = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def registry():
    return load_schemas(SCHEMAS)


def frame(schema, datum):
    """Single-object encode independently of the module under test."""
    parsed = fastavro.parse_schema(schema, named_schemas={})
    # fastavro's hex string already spells the little-endian byte sequence used on the wire.
    header = MAGIC + bytes.fromhex(fastavro_fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, datum)
    return header + body.getvalue()


def sample_request():
    return {
        "request_id": "7d5c2a0e-1b8f-4c1e-9a57-3f0a8e6b2c11",
        "tenant_id": "acme-bank",
        "key_id": "k1",
        "signature": bytes(range(64)),
        "signed_at": T0,
        "nonce": "n-0123456789abcdef",
        "created_at": T0,
        "claims": [{"name": "age_over", "params": {"threshold": "18"}},
                   {"name": "account_holder", "params": {}}],
        "purpose": "age_gate",
        "subject_jurisdiction": "DE",
        "consent_ref": None,
        "subject_tokens": [{"provider_id": "registry-de", "token": b"\x01" * 64}],
        "response_format": "jwt",
    }


# -- fingerprint ------------------------------------------------------------------------------


def test_fingerprint_known_answer_int():
    # Avro spec test data (share/test/data/schema-tests.txt): "int" -> 8247732601305521295,
    # i.e. 0x7275d51a3f395c8f as Java's SchemaNormalization prints the 64-bit value.
    assert rabin_fingerprint('"int"') == 0x7275D51A3F395C8F == 8247732601305521295
    # fastavro returns the hex of the *little-endian* bytes, which is also the wire order.
    assert fastavro_fingerprint('"int"', "CRC-64-AVRO") == "8f5c393f1ad57572"
    wire = rabin_fingerprint('"int"').to_bytes(8, "little")
    assert wire == bytes.fromhex("8f5c393f1ad57572")


def test_registry_fingerprint_matches_fastavro_and_the_frame(registry):
    for name in registry.names():
        pcf = to_parsing_canonical_form(registry.schema(name))
        fp = registry.fingerprint(name)
        assert len(fp) == 8
        assert fp.hex() == fastavro_fingerprint(pcf, "CRC-64-AVRO")
        assert registry.encode(name, next(iter(generate_many(registry.schema(name), 1))))[2:10] == fp


def test_logical_types_are_not_part_of_the_fingerprint():
    # Parsing Canonical Form strips logicalType: a timestamp-millis field fingerprints as "long".
    plain = {"type": "record", "name": "pavilion.T", "fields": [{"name": "t", "type": "long"}]}
    ts = {"type": "record", "name": "pavilion.T",
          "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    canon = [to_parsing_canonical_form(fastavro.parse_schema(s, named_schemas={})) for s in (plain, ts)]
    assert canon[0] == canon[1] == '{"name":"pavilion.T","type":"record","fields":[{"name":"t","type":"long"}]}'


# -- decoding ---------------------------------------------------------------------------------


def test_decode_round_trip(registry):
    schema = json.loads((SCHEMAS / "verification_request.avsc").read_text())
    datum = sample_request()
    name, record = registry.decode(frame(schema, datum))
    assert name == "pavilion.VerificationRequest"
    assert record == datum


def test_every_schema_round_trips(registry):
    for name in registry.names():
        for datum in generate_many(registry.schema(name), 3):
            got_name, record = registry.decode(registry.encode(name, datum))
            assert got_name == name
            assert registry.encode(name, record) == registry.encode(name, datum)


def test_bad_magic(registry):
    good = registry.encode("pavilion.VerificationRequest", sample_request())
    with pytest.raises(ValueError, match="bad magic"):
        registry.decode(b"\x00" + good[1:])
    with pytest.raises(ValueError, match="bad magic"):
        registry.decode(b'{"json": true}')
    with pytest.raises(ValueError, match="bad magic"):
        registry.decode(b"\x00\x00\x00\x00\x01" + good[10:])  # Confluent wire format


def test_unknown_fingerprint(registry):
    good = registry.encode("pavilion.VerificationRequest", sample_request())
    with pytest.raises(ValueError, match="unknown schema fingerprint 0102030405060708"):
        registry.decode(MAGIC + bytes([1, 2, 3, 4, 5, 6, 7, 8]) + good[10:])
    # The same fingerprint in the wrong byte order is unknown too.
    swapped = MAGIC + good[2:10][::-1] + good[10:]
    with pytest.raises(ValueError, match="unknown schema fingerprint"):
        registry.decode(swapped)


def test_truncated(registry):
    good = registry.encode("pavilion.VerificationRequest", sample_request())
    for cut in (0, 1, 2, 5, 9):
        with pytest.raises(ValueError, match="truncated"):
            registry.decode(good[:cut])
    for cut in range(10, len(good)):
        with pytest.raises(ValueError):
            registry.decode(good[:cut])


def test_trailing_bytes(registry):
    good = registry.encode("pavilion.VerificationRequest", sample_request())
    with pytest.raises(ValueError, match="trailing"):
        registry.decode(good + b"\x00")


def test_older_released_schema_decodes_with_current(tmp_path):
    for path in SCHEMAS.glob("*.avsc"):
        shutil.copy(path, tmp_path)
    current = json.loads((tmp_path / "dead_letter.avsc").read_text())
    # v0: no record_timestamp field, and an enum symbol that the current schema dropped.
    old = json.loads(json.dumps(current))
    old["fields"] = [f for f in old["fields"] if f["name"] != "record_timestamp"]
    reason = next(f for f in old["fields"] if f["name"] == "reason")["type"]
    reason["symbols"].append("legacy_timeout")
    (tmp_path / "released").mkdir()
    (tmp_path / "released" / "dead_letter.v0.avsc").write_text(json.dumps(old))

    reg = load_schemas(tmp_path)
    datum = {"stage": "tenancy", "reason": "legacy_timeout", "detail": "timed out",
             "source_topic": "pavilion.requests", "source_partition": 3, "source_offset": 42,
             "original_key": b"k", "original_value": None, "dead_lettered_at": T0}
    data = frame(old, datum)
    assert data[2:10] != reg.fingerprint("pavilion.DeadLetter")
    name, record = reg.decode(data)
    assert name == "pavilion.DeadLetter"
    assert record["record_timestamp"] is None  # field added later, filled from its default
    assert record["reason"] == "unknown"  # symbol unknown to the reader maps to the enum default
    assert record["source_offset"] == 42 and record["original_key"] == b"k"
    # Records written with the current schema still decode.
    assert reg.decode(reg.encode(name, dict(datum, reason="undecodable", record_timestamp=T0)))[1][
        "record_timestamp"] == T0


def test_missing_released_dir_is_fine(tmp_path):
    shutil.copy(SCHEMAS / "tenant.avsc", tmp_path)
    assert load_schemas(tmp_path).names() == ["pavilion.Tenant"]


def test_empty_or_broken_schema_dir(tmp_path):
    with pytest.raises(ValueError, match="no"):
        load_schemas(tmp_path)
    broken = tmp_path / "broken.avsc"
    for text in ('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nosuch"}]}',
                 '{"type": "record", "name": "X", "fields": [', '"string"'):
        broken.write_text(text)
        with pytest.raises(ValueError, match="broken.avsc"):
            load_schemas(tmp_path)


# -- the contract in schemas/ -------------------------------------------------------------------

PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _expand(t, ns, defs):
    """Type with references inlined and names made full, so definitions can be compared."""
    if isinstance(t, str):
        if t in PRIMITIVES:
            return t
        full = t if "." in t else f"{ns}.{t}"
        return defs[full]
    if isinstance(t, list):
        return [_expand(x, ns, defs) for x in t]
    t = dict(t)
    if t["type"] in ("record", "enum", "fixed"):
        ns = t.pop("namespace", ns)
        t["name"] = t["name"] if "." in t["name"] else f"{ns}.{t['name']}"
        ns = t["name"].rpartition(".")[0]
        defs[t["name"]] = t
    if t["type"] == "record":
        t["fields"] = [dict(f, type=_expand(f["type"], ns, defs)) for f in t["fields"]]
    elif t["type"] == "array":
        t["items"] = _expand(t["items"], ns, defs)
    elif t["type"] == "map":
        t["values"] = _expand(t["values"], ns, defs)
    return t


def _named(t, out):
    if isinstance(t, list):
        for x in t:
            _named(x, out)
    elif isinstance(t, dict):
        if t["type"] in ("record", "enum", "fixed"):
            out.append(t)
        for f in t.get("fields", []):
            _named(f["type"], out)
        _named(t.get("items"), out)
        _named(t.get("values"), out)


def test_schema_conventions():
    problems = []
    seen = {}
    for path in sorted(SCHEMAS.glob("*.avsc")):
        raw = json.loads(path.read_text())
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", raw["name"]).lower() + ".avsc"
        if path.name != snake:
            problems.append(f"{path.name}: file should be named {snake}")
        named = []
        _named(_expand(raw, "", {}), named)
        for t in named:
            where = f"{path.name}: {t['name']}"
            if not t["name"].startswith("pavilion."):
                problems.append(f"{where}: not in namespace pavilion")
            if not t.get("doc"):
                problems.append(f"{where}: no doc")
            if t["type"] == "enum" and t.get("default") not in t["symbols"]:
                problems.append(f"{where}: enum without a default symbol")
            for f in t.get("fields", []):
                if not re.fullmatch(r"[a-z][a-z0-9_]*", f["name"]):
                    problems.append(f"{where}.{f['name']}: not snake_case")
                if not f.get("doc"):
                    problems.append(f"{where}.{f['name']}: no doc")
                if isinstance(f["type"], list) and "null" in f["type"]:
                    if f["type"][0] != "null" or "default" not in f or f["default"] is not None:
                        problems.append(f"{where}.{f['name']}: optional must be [\"null\", T] "
                                        "with default null")
            # A nested type shared by several files must be defined identically everywhere.
            key = json.dumps(t, sort_keys=True)
            if seen.setdefault(t["name"], (path.name, key))[1] != key:
                problems.append(f"{where}: differs from its definition in {seen[t['name']][0]}")
    assert not problems, "\n".join(problems)


# -- consume.py helpers ---------------------------------------------------------------------------


def test_consume_render(registry):
    consume = pytest.importorskip("consume")
    value = registry.encode("pavilion.VerificationRequest", sample_request())
    line = consume.render(registry, "pavilion.requests", 0, 7, b"acme-bank", value)
    text = json.dumps(line)
    assert json.loads(text)["value"]["signature"] == bytes(range(64)).hex()
    assert line["schema"] == "pavilion.VerificationRequest"
    assert line["key"] == "acme-bank"
    assert line["value"]["signed_at"] == "2025-01-02T03:04:05.678Z"
    bad = consume.render(registry, "t", 1, 2, b"\xff\xfe", b"garbage")
    assert bad["key"] == "fffe" and "bad magic" in bad["error"]
    tomb = consume.render(registry, "t", 1, 3, b"k", None)
    assert tomb["value"] is None and tomb["schema"] is None
    assert pavilion_avro.HEADER_LEN == 10
