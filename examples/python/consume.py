#!/usr/bin/env python3
"""Read Pavilion topics and print every record as one JSON line, using only ``schemas/``.

Record values are Avro single-object encoded (C3 01, 8-byte little-endian CRC-64-AVRO fingerprint
of the writer schema, Avro binary); see pavilion_avro.py. Only committed records are read
(isolation.level=read_committed). The consumer never commits offsets, so it can be run again
with the same --group and read the same records.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

import kafka_config
from pavilion_avro import Registry, load_schemas

DEFAULT_SCHEMAS = Path(__file__).resolve().parent.parent.parent / "schemas"


def to_jsonable(value: Any) -> Any:
    """Make a decoded Avro value JSON-serialisable: bytes as hex, timestamps as ISO 8601 UTC."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)  # NaN and infinities are not valid JSON
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # Decimal, UUID and anything else exotic


def key_text(key: Optional[bytes]) -> Optional[str]:
    """A record key as UTF-8 text when it is valid UTF-8, else as hex."""
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return key.hex()


def render(registry: Registry, topic: str, partition: int, offset: int,
           key: Optional[bytes], value: Optional[bytes]) -> Dict[str, Any]:
    """The JSON object printed for one record."""
    out: Dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset,
                           "key": key_text(key)}
    if value is None:  # tombstone on a compacted topic
        out.update(schema=None, value=None)
        return out
    try:
        name, record = registry.decode(value)
    except ValueError as e:
        out["error"] = str(e)
        return out
    out.update(schema=name, value=to_jsonable(record))
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Consume Pavilion topics and print each record as a JSON line: "
                    '{"topic","partition","offset","key","schema","value"}. Bytes are hex, '
                    "timestamps ISO 8601 UTC. Undecodable records print an \"error\" field "
                    "instead of schema/value, and consumption continues. Reads committed "
                    "records only and never commits offsets.",
        epilog="example: %(prog)s --topic pavilion.requests --topic pavilion.dlq --max 10",
    )
    kafka_config.add_arguments(p)
    p.add_argument("--topic", action="append", required=True, metavar="TOPIC",
                   help="topic to read; repeat for several")
    p.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS,
                   help="directory with *.avsc (and released/*.avsc) (default: %(default)s)")
    p.add_argument("--max", type=int, default=None, metavar="N",
                   help="stop after N records (default: no limit)")
    p.add_argument("--idle-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="stop when no record arrived for this long (default: %(default)s)")
    p.add_argument("--group", default=None,
                   help="consumer group id (default: a random consume-* group, named under the "
                        "reader's user on a secured broker, so every run reads from the earliest "
                        "offset)")
    args = p.parse_args(argv)
    if args.max is not None and args.max < 0:
        p.error("--max must be >= 0")
    if args.idle_timeout <= 0:
        p.error("--idle-timeout must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        registry = load_schemas(args.schemas)
    except (OSError, ValueError) as e:
        print(f"consume.py: cannot load schemas: {e}", file=sys.stderr)
        return 2

    from confluent_kafka import Consumer, KafkaError, KafkaException

    reported = set()

    def on_error(err) -> None:  # broker-level errors: report each kind once
        if err.code() not in reported:
            reported.add(err.code())
            print(f"consume.py: kafka: {err}", file=sys.stderr, flush=True)

    settings = kafka_config.client_settings(args)
    consumer = Consumer({
        **settings,
        "group.id": args.group or kafka_config.group_id(settings, f"consume-{uuid.uuid4().hex[:12]}"),
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "error_cb": on_error,
        "log_level": 2,  # librdkafka's per-attempt connection logs would flood stderr; see on_error
    })
    consumer.subscribe(args.topic)
    seen = 0
    last = time.monotonic()
    try:
        while args.max is None or seen < args.max:
            remaining = args.idle_timeout - (time.monotonic() - last)
            if remaining <= 0:
                break
            msg = consumer.poll(min(remaining, 1.0))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                print(f"consume.py: kafka: {err}", file=sys.stderr)
                if err.fatal():
                    break
                continue
            last = time.monotonic()
            seen += 1
            line = render(registry, msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
            print(json.dumps(line, ensure_ascii=False), flush=True)
    except KafkaException as e:
        print(f"consume.py: kafka: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
