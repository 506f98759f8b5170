"""How the examples reach Kafka: the bootstrap servers and a file of librdkafka client settings.

The settings file (``key=value`` lines, ``#`` comments) is the one ``pavilion`` reads with
``--kafka-config``: security protocol, CA and the reader's credentials. ``scripts/infra env``
points $PAVILION_KAFKA_CONFIG at the local broker's admin; a tenant uses the file
``pavilion tenant add --kafka-credentials FILE`` wrote. Credentials never go on a command line.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Dict


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap", default=os.environ.get("PAVILION_BOOTSTRAP", "127.0.0.1:9092"),
                   help="Kafka bootstrap servers (default: $PAVILION_BOOTSTRAP or "
                        "127.0.0.1:9092; now %(default)s)")
    p.add_argument("--kafka-config", type=Path, metavar="FILE",
                   default=os.environ.get("PAVILION_KAFKA_CONFIG"),
                   help="librdkafka client settings file: TLS CA and credentials "
                        "(default: $PAVILION_KAFKA_CONFIG; now %(default)s)")


def read_properties(path: Path) -> Dict[str, str]:
    """The file's settings; an error names the line, never its text (it may hold a password)."""
    settings = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{number}: not a key=value line")
        settings[key.strip()] = value.strip()
    return settings


def client_settings(args: argparse.Namespace) -> Dict[str, str]:
    """bootstrap.servers plus the settings file, for confluent_kafka's Consumer."""
    settings = {"bootstrap.servers": args.bootstrap}
    if args.kafka_config:
        settings.update(read_properties(args.kafka_config))
    return settings


def group_id(settings: Dict[str, str], purpose: str) -> str:
    """A consumer group of the reader's own: on a secured broker a principal may use only the
    groups named under it (``<sasl.username>.*``), as pavilion names its readers' groups."""
    user = settings.get("sasl.username")
    return f"{user}.{purpose}" if user else f"pavilion-{purpose}"
