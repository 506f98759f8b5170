#!/usr/bin/env python3
"""Verify Pavilion decision tokens (compact JWS/JWT, EdDSA) with an independent JOSE library
(jwcrypto) and nothing but the broker's published JWKS.

Usage: verify_decisions.py JWKS_FILE < tokens (one per line)
Prints one JSON object per token: {"kid", "claims"}; exits 1 at the first token that does not
verify (wrong key, tampered, or an algorithm other than EdDSA).
"""
import json
import sys

from jwcrypto import jwk, jws


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        keys = jwk.JWKSet.from_json(f.read())
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        signed = jws.JWS()
        signed.deserialize(token)
        kid = signed.jose_header.get("kid")
        key = keys.get_key(kid)
        if key is None:
            print(f"no key {kid} in the JWKS", file=sys.stderr)
            return 1
        try:
            # Only EdDSA is accepted, whatever the header says.
            signed.allowed_algs = ["EdDSA"]
            signed.verify(key)
        except Exception as e:  # jwcrypto raises several types
            print(f"invalid token ({kid}): {e}", file=sys.stderr)
            return 1
        print(json.dumps({"kid": kid, "claims": json.loads(signed.payload)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
