#!/usr/bin/env python3
"""Verify Pavilion decision tokens (compact JWS/JWT, vc+jwt, SD-JWT; EdDSA) with an
independent JOSE library (jwcrypto) and nothing but the broker's published JWKS.

Usage: verify_decisions.py JWKS_FILE < tokens (one per line)
Prints one JSON object per token: {"kid", "claims", "disclosed"}; exits 1 at the first token
that does not verify (wrong key, tampered, an algorithm other than EdDSA, or an SD-JWT
disclosure whose digest the issuer did not sign).
"""
import base64
import hashlib
import json
import sys

from jwcrypto import jwk, jws


class Invalid(Exception):
    """A token that does not verify, and why."""


def verify_token(keys: "jwk.JWKSet", token: str):
    """(kid, claims, disclosed) of a verified token; raises Invalid otherwise."""
    # SD-JWT (RFC 9901): issuer JWT ~ disclosure ~ ... ~
    compact, *disclosures = token.split("~")
    signed = jws.JWS()
    try:
        signed.deserialize(compact)
    except Exception as e:
        raise Invalid(f"not a compact JWS: {e}") from e
    kid = signed.jose_header.get("kid")
    key = keys.get_key(kid)
    if key is None:
        raise Invalid(f"no key {kid} in the JWKS")
    try:
        # Only EdDSA is accepted, whatever the header says.
        signed.allowed_algs = ["EdDSA"]
        signed.verify(key)
    except Exception as e:  # jwcrypto raises several types
        raise Invalid(f"invalid token ({kid}): {e}") from e
    claims = json.loads(signed.payload)
    disclosed = {}
    for d in filter(None, disclosures):
        digest = base64.urlsafe_b64encode(hashlib.sha256(d.encode()).digest()).rstrip(b"=").decode()
        if digest not in claims.get("_sd", []):
            raise Invalid(f"disclosure not signed by the issuer: {d}")
        salt, name, value = json.loads(base64.urlsafe_b64decode(d + "=" * (-len(d) % 4)))
        disclosed[name] = value
    return kid, claims, disclosed


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        keys = jwk.JWKSet.from_json(f.read())
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        try:
            kid, claims, disclosed = verify_token(keys, token)
        except Invalid as e:
            print(e, file=sys.stderr)
            return 1
        print(json.dumps({"kid": kid, "claims": claims, "disclosed": disclosed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
