#!/usr/bin/env python3
"""Verify the zero-knowledge evidence of a Pavilion decision with an independent Groth16
verifier (py_ecc on BN254) and nothing but the published circuit artifacts (zk/artifacts/).

A claim's "evidence" list in a decision's signed payload may hold objects of this shape:

    {"provider": "...", "kind": "zk_predicate",
     "attestation_digest": "<b64url>",
     "proof_digest": "<b64url of SHA-256 of the 256 proof bytes>",
     "zk": {"circuit": "date_le_cutoff" | "int_ge_threshold",
            "verifying_key_sha256": "<lowercase hex of SHA-256(verifying_key.bin)>",
            "public_inputs": ["<commitment>", "<bound>", "<nonce>"],   # decimal strings
            "proof": "<b64url, no padding, of the 256-byte EIP-197 proof>"}}

Usage: verify_zk.py ARTIFACTS_DIR REQUEST_ID < evidence.json
Prints {"circuit", "bound", "verified": true}; exits 1 with the reason on stderr when the
evidence does not verify.

What this checks is the proof against its public inputs. The commitment among them is the
provider's, bound to the subject by the provider's signed attestation (attestation_digest),
which this script does not check; the caller compares the returned bound with the claim's.
"""
import base64
import hashlib
import json
import re
import sys
from pathlib import Path

from py_ecc import optimized_bn128 as bn128
from py_ecc.fields import optimized_bn128_FQ as FQ
from py_ecc.fields import optimized_bn128_FQ2 as FQ2
from py_ecc.fields import optimized_bn128_FQ12 as FQ12

# BN254's base field modulus (coordinates) and scalar field order (public inputs).
P = bn128.field_modulus
R = bn128.curve_order

NONCE_DOMAIN = b"pavilion-zk/nonce/v1\0"
PROOF_BYTES = 256
PUBLIC_INPUT_NAMES = ("commitment", "bound", "nonce")


class Invalid(Exception):
    """Evidence that does not verify, and why."""


def nonce_from_request_id(request_id: str) -> int:
    """The nonce a proof for this request must carry (as pavilion_zk::nonce_from_request_id)."""
    digest = hashlib.sha256(NONCE_DOMAIN + request_id.encode()).digest()
    return int.from_bytes(digest, "big") % R


def b64url_decode(text: str, what: str) -> bytes:
    """Base64url without padding, refused unless canonical (one value, one encoding)."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise Invalid(f"{what}: not base64url without padding")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as e:
        raise Invalid(f"{what}: not base64url: {e}") from e
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise Invalid(f"{what}: not canonical base64url")
    return raw


def canonical_decimal(text, what: str) -> int:
    """A public input: digits only, no sign or leading zero, below the scalar field order."""
    if not isinstance(text, str) or not re.fullmatch(r"0|[1-9][0-9]*", text):
        raise Invalid(f"public input {what}: not a canonical decimal string")
    value = int(text)
    if value >= R:
        raise Invalid(f"public input {what}: not below the BN254 scalar field order")
    return value


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_verification_key(artifacts_dir: Path, circuit: str, verifying_key_sha256: str) -> dict:
    """The circuit's snarkjs verification key, after checking the evidence's key hash and the
    JSON file against the manifest's pins."""
    manifest = json.loads((artifacts_dir / "manifest.json").read_text())
    circuits = manifest.get("circuits", {})
    # Only names the manifest lists: the name becomes a path below artifacts_dir.
    if not isinstance(circuit, str) or circuit not in circuits:
        raise Invalid(f"circuit: {circuit!r} is not in the manifest")
    pinned = circuits[circuit]["artifacts"]
    if verifying_key_sha256 != pinned["verifying_key.bin"]:
        raise Invalid(
            f"verifying_key_sha256: {verifying_key_sha256!r} is not the manifest's "
            f"verifying key for {circuit} ({pinned['verifying_key.bin']})"
        )
    vk_path = artifacts_dir / circuit / "verification_key.json"
    if sha256_file(vk_path) != pinned["verification_key.json"]:
        raise Invalid(f"verification_key.json of {circuit} does not match the manifest's hash")
    vk = json.loads(vk_path.read_text())
    if vk.get("protocol") != "groth16" or vk.get("curve") != "bn128":
        raise Invalid(f"verification_key.json of {circuit}: not a Groth16 key on bn128")
    if vk.get("nPublic") != len(PUBLIC_INPUT_NAMES) or len(vk["IC"]) != len(PUBLIC_INPUT_NAMES) + 1:
        raise Invalid(f"verification_key.json of {circuit}: not {len(PUBLIC_INPUT_NAMES)} public inputs")
    return vk


# snarkjs writes points projectively with z = 1, or z = 0 for the point at infinity; G2
# coordinates as [c0, c1] (real part first).
def snarkjs_g1(point):
    x, y, z = (int(c) for c in point)
    return bn128.Z1 if z == 0 else (FQ(x), FQ(y), FQ.one())


def snarkjs_g2(point):
    (x0, x1), (y0, y1), (z0, z1) = ((int(a), int(b)) for a, b in point)
    if (z0, z1) == (0, 0):
        return bn128.Z2
    return (FQ2([x0, x1]), FQ2([y0, y1]), FQ2.one())


# EIP-197 writes 32-byte big-endian coordinates; G1 as x, y; G2 as x.c1, x.c0, y.c1, y.c0
# (imaginary part first); the point at infinity as all zeros.
def eip197_coordinates(raw: bytes, name: str) -> list:
    values = [int.from_bytes(raw[i : i + 32], "big") for i in range(0, len(raw), 32)]
    if any(v >= P for v in values):
        raise Invalid(f"proof: a coordinate of point {name} is not below the base field modulus")
    return values


def eip197_g1(raw: bytes, name: str):
    x, y = eip197_coordinates(raw, name)
    if x == y == 0:
        return bn128.Z1
    point = (FQ(x), FQ(y), FQ.one())
    if not bn128.is_on_curve(point, bn128.b):
        raise Invalid(f"proof: point {name} is not on the curve")
    return point  # G1 of BN254 has cofactor 1: on the curve is in the group.


def eip197_g2(raw: bytes, name: str):
    x1, x0, y1, y0 = eip197_coordinates(raw, name)
    if x0 == x1 == y0 == y1 == 0:
        return bn128.Z2
    point = (FQ2([x0, x1]), FQ2([y0, y1]), FQ2.one())
    if not bn128.is_on_curve(point, bn128.b2):
        raise Invalid(f"proof: point {name} is not on the twisted curve")
    # The twist has a large cofactor; a point outside the prime-order subgroup would make
    # the pairing meaningless.
    if not bn128.is_inf(bn128.multiply(point, R)):
        raise Invalid(f"proof: point {name} is not in the prime-order subgroup")
    return point


def groth16_holds(vk: dict, inputs: list, a, b, c) -> bool:
    """e(A, B) = e(alpha, beta) · e(L, gamma) · e(C, delta), L = IC0 + Σ x_i · IC_i, checked as
    one product of Miller loops with e(-A, B) and a single final exponentiation."""
    ic = [snarkjs_g1(p) for p in vk["IC"]]
    lin = ic[0]
    for x, point in zip(inputs, ic[1:]):
        lin = bn128.add(lin, bn128.multiply(point, x))
    pairs = [
        (b, bn128.neg(a)),
        (snarkjs_g2(vk["vk_beta_2"]), snarkjs_g1(vk["vk_alpha_1"])),
        (snarkjs_g2(vk["vk_gamma_2"]), lin),
        (snarkjs_g2(vk["vk_delta_2"]), c),
    ]
    product = FQ12.one()
    for q, p in pairs:
        product = product * bn128.pairing(q, p, final_exponentiate=False)
    return bn128.final_exponentiate(product) == FQ12.one()


def verify_zk_evidence(evidence: dict, request_id: str, artifacts_dir) -> dict:
    """{"circuit", "bound", "verified": True} for evidence whose proof verifies for this request;
    raises Invalid naming the first check that failed."""
    if not isinstance(evidence, dict) or evidence.get("kind") != "zk_predicate":
        raise Invalid("kind: not zk_predicate evidence")
    zk = evidence.get("zk")
    if not isinstance(zk, dict):
        raise Invalid("zk: missing")
    circuit = zk.get("circuit")
    vk = load_verification_key(Path(artifacts_dir), circuit, zk.get("verifying_key_sha256"))

    public = zk.get("public_inputs")
    if not isinstance(public, list) or len(public) != len(PUBLIC_INPUT_NAMES):
        raise Invalid("public_inputs: expected [commitment, bound, nonce]")
    inputs = [canonical_decimal(v, name) for v, name in zip(public, PUBLIC_INPUT_NAMES)]
    if inputs[2] != nonce_from_request_id(request_id):
        raise Invalid("nonce: the proof was not made for this request id")

    proof = b64url_decode(zk.get("proof"), "proof")
    if len(proof) != PROOF_BYTES:
        raise Invalid(f"proof: expected {PROOF_BYTES} bytes, got {len(proof)}")
    digest = base64.urlsafe_b64encode(hashlib.sha256(proof).digest()).rstrip(b"=").decode()
    if evidence.get("proof_digest") != digest:
        raise Invalid("proof_digest: not the SHA-256 of the proof bytes")

    a = eip197_g1(proof[0:64], "A")
    b = eip197_g2(proof[64:192], "B")
    c = eip197_g1(proof[192:256], "C")
    if not groth16_holds(vk, inputs, a, b, c):
        raise Invalid(f"groth16: the proof does not verify for these public inputs under the {circuit} key")
    return {"circuit": circuit, "bound": inputs[1], "verified": True}


def main(argv) -> int:
    if len(argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    artifacts_dir, request_id = argv[1], argv[2]
    try:
        evidence = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        print(f"invalid: evidence is not JSON: {e}", file=sys.stderr)
        return 1
    try:
        result = verify_zk_evidence(evidence, request_id, artifacts_dir)
    except Invalid as e:
        print(f"invalid: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
