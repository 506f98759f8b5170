"""Produces records to a topic the way a relying party's own stack would: a mainstream Kafka
client library with its default settings (its default partitioner included). The records are
given ready-made, one per line on stdin: `<key or ->\t<value hex>` (`-`: no key).

    produce.py --library confluent-kafka|kafka-python --bootstrap HOST:PORT --topic TOPIC
               [--kafka-config FILE]

The settings file (librdkafka's `key=value` lines, as `pavilion --kafka-config` reads; default
$PAVILION_KAFKA_CONFIG) gives TLS and SCRAM credentials; kafka-python gets the same settings
under its own names.

Prints how many records went to each partition, as JSON, once every one is acknowledged.
"""

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples" / "python"))
from kafka_config import read_properties  # noqa: E402


def produce_confluent(bootstrap, security, topic, records):
    from confluent_kafka import Producer

    placed = Counter()
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            placed[msg.partition()] += 1

    producer = Producer({"bootstrap.servers": bootstrap, **security})
    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.poll(0)
    if producer.flush(30) != 0 or errors:
        sys.exit(f"confluent-kafka: not delivered: {errors[:3]}")
    return placed


# librdkafka's security settings under kafka-python's names.
KAFKA_PYTHON_NAMES = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
}


def produce_kafka_python(bootstrap, security, topic, records):
    from kafka import KafkaProducer

    unknown = sorted(set(security) - set(KAFKA_PYTHON_NAMES))
    if unknown:
        sys.exit(f"kafka-python: no equivalent for settings {unknown}")
    options = {KAFKA_PYTHON_NAMES[k]: v for k, v in security.items()}
    producer = KafkaProducer(bootstrap_servers=bootstrap, **options)
    futures = [producer.send(topic, key=key, value=value) for key, value in records]
    producer.flush(30)
    placed = Counter(f.get(timeout=30).partition for f in futures)
    producer.close()
    return placed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", choices=["confluent-kafka", "kafka-python"], required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--kafka-config", type=Path, default=os.environ.get("PAVILION_KAFKA_CONFIG"))
    args = parser.parse_args()
    security = read_properties(args.kafka_config) if args.kafka_config else {}
    records = []
    for line in sys.stdin:
        key, value = line.rstrip("\n").split("\t")
        records.append((None if key == "-" else key.encode(), bytes.fromhex(value)))
    produce = produce_confluent if args.library == "confluent-kafka" else produce_kafka_python
    placed = produce(args.bootstrap, security, args.topic, records)
    print(json.dumps({str(p): n for p, n in sorted(placed.items())}))


if __name__ == "__main__":
    main()
