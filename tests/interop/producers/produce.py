"""Produces records to a topic the way a relying party's own stack would: a mainstream Kafka
client library with its default settings (its default partitioner included). The records are
given ready-made, one per line on stdin: `<key or ->\t<value hex>` (`-`: no key).

    produce.py --library confluent-kafka|kafka-python --bootstrap HOST:PORT --topic TOPIC

Prints how many records went to each partition, as JSON, once every one is acknowledged.
"""

import argparse
import json
import sys
from collections import Counter


def produce_confluent(bootstrap, topic, records):
    from confluent_kafka import Producer

    placed = Counter()
    errors = []

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            placed[msg.partition()] += 1

    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.poll(0)
    if producer.flush(30) != 0 or errors:
        sys.exit(f"confluent-kafka: not delivered: {errors[:3]}")
    return placed


def produce_kafka_python(bootstrap, topic, records):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
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
    args = parser.parse_args()
    records = []
    for line in sys.stdin:
        key, value = line.rstrip("\n").split("\t")
        records.append((None if key == "-" else key.encode(), bytes.fromhex(value)))
    produce = produce_confluent if args.library == "confluent-kafka" else produce_kafka_python
    placed = produce(args.bootstrap, args.topic, records)
    print(json.dumps({str(p): n for p, n in sorted(placed.items())}))


if __name__ == "__main__":
    main()
