#!/usr/bin/env python3
"""A relying party's downstream consumer, as a user would write one: read a tenant's decision
topic read_committed from the start to its current end, decode each record with nothing but
schemas/ (single-object Avro, fastavro), and verify every decision with an independent JOSE
library (jwcrypto) and the broker's published JWKS — compact JWS/JWT, vc+jwt and SD-JWT
tokens, and the JSON envelope's detached Ed25519 signature. A zero-knowledge proof in a
token's evidence is checked too, with py_ecc and the circuits' published keys (verify_zk.py):
the relying party need not trust the broker for a predicate's answer.

Usage: decisions.py --topic pavilion.decisions.acme --jwks jwks.json [--bootstrap HOST:PORT] [--kafka-config FILE]
                    [--zk-artifacts zk/artifacts]
Prints one JSON line per decision (request id, format, outcomes, verified claims, proofs
verified) and a summary line; exits 1 if any decision or proof does not verify, 2 if nothing
could be read.
"""
import argparse
import json
import sys
import uuid
from pathlib import Path

from jwcrypto import jwk

import kafka_config
from pavilion_avro import load_schemas
from verify_decisions import Invalid, verify_token
import verify_zk

DEFAULT_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
DEFAULT_ARTIFACTS = Path(__file__).resolve().parents[2] / "zk" / "artifacts"


def verify_proofs(claims: dict, request_id: str, artifacts: Path) -> list:
    """Every zk_predicate evidence of the payload, verified; [(claim, circuit, bound)]."""
    proved = []
    for claim in claims.get("claims") or claims.get("credentialSubject", {}).get("claims") or []:
        for evidence in claim.get("evidence") or []:
            if evidence.get("kind") != "zk_predicate":
                continue
            try:
                checked = verify_zk.verify_zk_evidence(evidence, request_id, artifacts)
            except verify_zk.Invalid as e:
                raise Invalid(f"claim {claim.get('name')}: proof: {e}") from e
            proved.append((claim.get("name"), checked["circuit"], checked["bound"]))
    return proved


def verify_decision(keys: "jwk.JWKSet", decision: dict) -> dict:
    """What a verified decision says; raises Invalid otherwise."""
    payload = decision["payload"]
    if isinstance(payload, bytes):
        raise Invalid("binary payloads are not produced by this broker")
    if decision["format"] == "json":
        # Signed JSON envelope: the payload text, signed as it is (detached Ed25519).
        key = keys.get_key(decision["signing_key_id"])
        if key is None or decision.get("signature") is None:
            raise Invalid(f"no key {decision['signing_key_id']} in the JWKS, or no signature")
        try:
            key.get_op_key("verify").verify(decision["signature"], payload.encode())
        except Exception as e:
            raise Invalid(f"bad signature: {e}") from e
        return {"claims": json.loads(payload), "disclosed": {}}
    kid, claims, disclosed = verify_token(keys, payload)
    if kid != decision["signing_key_id"]:
        raise Invalid(f"token signed by {kid}, record says {decision['signing_key_id']}")
    return {"claims": claims, "disclosed": disclosed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kafka_config.add_arguments(p)
    p.add_argument("--topic", required=True, help="a tenant's decision topic")
    p.add_argument("--jwks", required=True, type=Path, help="the broker's JWKS (pavilion keys jwks)")
    p.add_argument("--schemas", type=Path, default=DEFAULT_SCHEMAS)
    p.add_argument("--zk-artifacts", type=Path, default=DEFAULT_ARTIFACTS,
                   help="the circuits' manifest and verifying keys (zk/artifacts)")
    args = p.parse_args(argv)
    registry = load_schemas(args.schemas)
    keys = jwk.JWKSet.from_json(args.jwks.read_text(encoding="utf-8"))

    from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING

    settings = kafka_config.client_settings(args)
    consumer = Consumer({
        **settings,
        "group.id": kafka_config.group_id(settings, f"decisions-{uuid.uuid4().hex[:12]}"),
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "log_level": 2,
    })
    metadata = consumer.list_topics(args.topic, timeout=30)
    topic = metadata.topics.get(args.topic)
    if topic is None or topic.error is not None or not topic.partitions:
        why = f": {topic.error.str()}" if topic is not None and topic.error is not None else ""
        print(f"decisions.py: cannot read {args.topic}{why}", file=sys.stderr)
        return 2
    # The end as of now, per partition: read up to it (committed records only).
    ends = {}
    for partition in topic.partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(args.topic, partition), timeout=30)
        ends[partition] = high
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in ends])
    done = {p for p, end in ends.items() if end == 0}
    verified = failed = proofs = 0
    while len(done) < len(ends):
        msg = consumer.poll(5.0)
        if msg is None:
            # Transaction markers occupy offsets: past the last record means at the end.
            for tp in consumer.position([TopicPartition(args.topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    done.add(tp.partition)
            continue
        if msg.error() is not None:
            continue
        if msg.offset() + 1 >= ends[msg.partition()]:
            done.add(msg.partition())
        name, decision = registry.decode(msg.value())
        if name != "pavilion.Decision":
            print(f"decisions.py: {name} in a decision topic", file=sys.stderr)
            failed += 1
            continue
        try:
            content = verify_decision(keys, decision)
            proved = verify_proofs(content["claims"], decision["request_id"], args.zk_artifacts)
            proofs += len(proved)
            verified += 1
            print(json.dumps({
                "request_id": decision["request_id"],
                "format": decision["format"],
                "outcomes": [(o["claim_name"], o["outcome"]) for o in decision["outcomes"]],
                "rejection": decision["rejection"]["reason"] if decision.get("rejection") else None,
                "aud": content["claims"].get("aud") or content["claims"].get("credentialSubject", {}).get("aud"),
                "disclosed": content["disclosed"],
                "proofs": proved,
            }))
        except Invalid as e:
            failed += 1
            print(f"decisions.py: {decision['request_id']}: {e}", file=sys.stderr)
    consumer.close()
    print(f"decisions: {verified} passed ({proofs} zero-knowledge proofs verified), {failed} failed",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
