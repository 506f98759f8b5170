"""decisions.py's verification, with keys and tokens made by jwcrypto itself."""
import json

import pytest
from jwcrypto import jwk, jws

from decisions import verify_decision
from verify_decisions import Invalid


@pytest.fixture
def key():
    return jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="k1")


def keyset(*keys):
    s = jwk.JWKSet()
    for k in keys:
        s.add(jwk.JWK.from_json(k.export_public()))
    return s


def jwt(key, claims, kid="k1", alg="EdDSA"):
    token = jws.JWS(json.dumps(claims))
    token.add_signature(key, alg=alg, protected=json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}))
    return token.serialize(compact=True)


def decision(fmt, payload, signature=None, kid="k1"):
    return {"format": fmt, "payload": payload, "signature": signature, "signing_key_id": kid}


def test_a_jwt_decision_verifies_and_a_tampered_one_does_not(key):
    token = jwt(key, {"aud": "acme", "jti": "r1"})
    assert verify_decision(keyset(key), decision("jwt", token))["claims"]["aud"] == "acme"
    head, body, sig = token.split(".")
    with pytest.raises(Invalid):
        verify_decision(keyset(key), decision("jwt", f"{head}.{body[:-2]}AA.{sig}"))


def test_a_token_by_another_key_or_kid_is_refused(key):
    other = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="k1")
    with pytest.raises(Invalid):
        verify_decision(keyset(key), decision("jwt", jwt(other, {"aud": "acme"})))
    with pytest.raises(Invalid):
        verify_decision(keyset(key), decision("jwt", jwt(key, {"aud": "acme"}), kid="k2"))


def test_the_json_envelope_verifies_its_detached_signature(key):
    payload = json.dumps({"aud": "acme", "claims": []})
    signature = key.get_op_key("sign").sign(payload.encode())
    assert verify_decision(keyset(key), decision("json", payload, signature))["claims"]["aud"] == "acme"
    with pytest.raises(Invalid):
        verify_decision(keyset(key), decision("json", payload.replace("acme", "evil"), signature))
