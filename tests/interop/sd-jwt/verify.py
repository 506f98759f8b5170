"""Verifies an SD-JWT VC presentation with the IETF reference implementation (PyPI `sd-jwt`,
0.10.4), as a relying party that holds only the issuer's public key.

stdin: {"presentation": "...", "issuer": "...", "issuer_jwk": {...}, "aud": "...", "nonce": "..."}
stdout: {"verified": true, "payload": {...}} or {"verified": false, "error": "..."}
"""

import json
import sys

from jwcrypto.jwk import JWK
from sd_jwt.verifier import SDJWTVerifier


def main():
    request = json.load(sys.stdin)

    def issuer_key(issuer, header):
        if issuer != request["issuer"]:
            raise ValueError(f"unknown issuer {issuer}")
        return JWK.from_json(json.dumps(request["issuer_jwk"]))

    try:
        # Issuer signature and disclosures first (no aud/nonce: see below).
        verifier = SDJWTVerifier(request["presentation"], issuer_key)
        # 0.10.4 checks the key binding JWT only with its default algorithm (ES256) when it
        # is given aud and nonce in the constructor; its own check, asked for EdDSA.
        verifier._verify_key_binding_jwt(request["aud"], request["nonce"], sign_alg="EdDSA")
        payload = verifier.get_verified_payload()
    except Exception as error:  # any refusal is a verdict, not a crash
        print(json.dumps({"verified": False, "error": f"{type(error).__name__}: {error}"}))
        return
    print(json.dumps({"verified": True, "payload": payload}))


if __name__ == "__main__":
    main()
