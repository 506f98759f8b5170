//! An independent Groth16 verifier checks our proofs as a relying party receives them:
//! `examples/python/verify_zk.py` (py_ecc) on the `zk_predicate` evidence JSON of a decision,
//! with only `zk/artifacts/`. The interpreter is `PAVILION_PYTHON` (scripts/test sets it to its
//! venv, which has examples/python/requirements.txt), else `python3`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use pavilion_zk::rand::OsRng;
use pavilion_zk::{
    nonce_from_request_id, prove, subject_binding, AttributeType, Circuit, Proof, PublicInputs,
    Salt, WitnessInputs,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const INSTALL: &str = "set PAVILION_PYTHON to a Python with examples/python/requirements.txt \
    installed, e.g. `python3 -m venv ~/.cache/pavilion/venv && ~/.cache/pavilion/venv/bin/pip \
    install -r examples/python/requirements.txt` then \
    `PAVILION_PYTHON=~/.cache/pavilion/venv/bin/python` (scripts/test does this)";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The interpreter, checked to have py_ecc: a missing one fails the test rather than skipping
/// the independent check.
fn python() -> String {
    let python = std::env::var("PAVILION_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .args(["-c", "import py_ecc"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the Python interpreter `{python}` ({e}); {INSTALL}")
        });
    assert!(
        output.status.success(),
        "`{python}` has no py_ecc ({}); {INSTALL}",
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or("no message")
    );
    python
}

/// Runs verify_zk.py: its result JSON, or its reason for refusing.
fn verify_zk(python: &str, evidence: &Value, request_id: &str) -> Result<Value, String> {
    let mut child = Command::new(python)
        .arg(repo().join("examples/python/verify_zk.py"))
        .arg(repo().join("zk/artifacts"))
        .arg(request_id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{python}` ({e}); {INSTALL}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(evidence).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    match output.status.code() {
        Some(0) => Ok(serde_json::from_slice(&output.stdout).unwrap()),
        // 1 is a refusal; anything else (a traceback exits 1 too, so look at the text) is a bug.
        Some(1) if stderr.starts_with("invalid: ") => Err(stderr),
        _ => panic!(
            "verify_zk.py failed unexpectedly ({}):\n{stderr}",
            output.status
        ),
    }
}

/// The evidence object a decision carries for one proof.
fn evidence(circuit: Circuit, public: &PublicInputs, proof: &[u8]) -> Value {
    json!({
        "provider": "bank",
        "kind": "zk_predicate",
        "attestation_digest": B64URL.encode([7u8; 32]),
        "proof_digest": B64URL.encode(Sha256::digest(proof)),
        "zk": {
            "circuit": circuit.id(),
            "verifying_key_sha256": hex::encode(circuit.verifying_key_hash()),
            "public_inputs": public.to_decimal_strings(),
            "proof": B64URL.encode(proof),
        },
    })
}

fn proved(circuit: Circuit, request_id: &str) -> (PublicInputs, Proof) {
    let (attribute, attribute_type, bound) = match circuit {
        Circuit::DateLeCutoff => (19_991_231, AttributeType::BIRTH_DATE, 20_080_514),
        Circuit::IntGeThreshold => (85_000, AttributeType(2), 60_000),
    };
    let inputs = WitnessInputs {
        attribute,
        attribute_type,
        subject_binding: subject_binding(&[0x5c; 32]),
        salt: Salt::random(&mut OsRng),
        bound,
        nonce: nonce_from_request_id(request_id.as_bytes()),
    };
    let proof = prove(circuit, &inputs, &mut OsRng).unwrap();
    (inputs.public_inputs(), proof)
}

#[test]
fn py_ecc_verifies_our_evidence_for_both_circuits() {
    let python = python();
    for circuit in Circuit::ALL {
        let request_id = format!("req-python-{}", circuit.id());
        let (public, proof) = proved(circuit, &request_id);
        let result = verify_zk(
            &python,
            &evidence(circuit, &public, &proof.to_eip197()),
            &request_id,
        )
        .unwrap_or_else(|reason| panic!("{circuit}: py_ecc refused our proof: {reason}"));
        assert_eq!(
            result,
            json!({"circuit": circuit.id(), "bound": public.bound, "verified": true}),
            "{circuit}"
        );
    }
}

#[test]
fn py_ecc_refuses_tampered_evidence_with_the_reason() {
    let python = python();
    let circuit = Circuit::DateLeCutoff;
    let request_id = "req-python-tampered";
    let (public, proof) = proved(circuit, request_id);
    let bytes = proof.to_eip197();
    let honest = evidence(circuit, &public, &bytes);

    let flipped = |position: usize| {
        let mut garbled = bytes;
        garbled[position] ^= 0x01;
        garbled
    };
    let mut stale_digest = honest.clone();
    stale_digest["zk"]["proof"] = json!(B64URL.encode(flipped(31)));
    let mut other_key = honest.clone();
    other_key["zk"]["verifying_key_sha256"] =
        json!(hex::encode(Circuit::IntGeThreshold.verifying_key_hash()));

    let cases = [
        // The digest is what the signed payload pins: a changed byte shows there first.
        (
            "a flipped proof byte",
            stale_digest,
            request_id,
            "proof_digest",
        ),
        // The same byte with a digest to match (as if the signer had been given it): A's x
        // changed, so A is no longer a curve point.
        (
            "a flipped byte of A, digest recomputed",
            evidence(circuit, &public, &flipped(31)),
            request_id,
            "point A is not on the curve",
        ),
        (
            "a flipped byte of B, digest recomputed",
            evidence(circuit, &public, &flipped(64 + 31)),
            request_id,
            "point B is not on the twisted curve",
        ),
        (
            "another request's id",
            honest.clone(),
            "req-python-other",
            "nonce",
        ),
        (
            "a wrong bound",
            evidence(
                circuit,
                &PublicInputs {
                    bound: public.bound + 1,
                    ..public
                },
                &bytes,
            ),
            request_id,
            "groth16: the proof does not verify",
        ),
        (
            "another circuit's verifying key hash",
            other_key,
            request_id,
            "verifying_key_sha256",
        ),
    ];
    for (case, evidence, request_id, reason) in cases {
        match verify_zk(&python, &evidence, request_id) {
            Ok(result) => panic!("{case}: accepted: {result}"),
            Err(refusal) => assert!(
                refusal.contains(reason),
                "{case}: expected a refusal naming `{reason}`, got: {refusal}"
            ),
        }
    }
}
