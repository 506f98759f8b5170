//! An independent implementation checks our proofs: snarkjs (npm, pinned in zk/package.json)
//! runs `groth16 verify` on the JSON this crate exports. It must be installed (`npm ci --prefix
//! zk`, as scripts/test does): without it the test fails rather than pass unchecked.

use std::path::{Path, PathBuf};
use std::process::Command;

use pavilion_zk::rand::OsRng;
use pavilion_zk::{
    nonce_from_request_id, prove, snarkjs, subject_binding, AttributeType, Circuit, Fr, Salt,
    WitnessInputs,
};

fn snarkjs_verify(
    dir: &Path,
    vk: &serde_json::Value,
    public: &serde_json::Value,
    proof: &serde_json::Value,
) -> (bool, String) {
    for (name, value) in [
        ("vk.json", vk),
        ("public.json", public),
        ("proof.json", proof),
    ] {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(value).unwrap()).unwrap();
    }
    let zk = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(zk.join("node_modules/.bin/snarkjs"))
        .args(["groth16", "verify", "vk.json", "public.json", "proof.json"])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success() && text.contains("OK"), text)
}

#[test]
fn snarkjs_verifies_our_proofs_and_rejects_a_wrong_nonce() {
    let zk = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        zk.join("node_modules/.bin/snarkjs").exists(),
        "snarkjs is not installed in zk/node_modules: run npm ci --prefix zk"
    );
    let dir = tempfile::tempdir().unwrap();
    for circuit in Circuit::ALL {
        let (attribute, bound) = match circuit {
            Circuit::DateLeCutoff => (20_050_301, 20_080_514),
            Circuit::IntGeThreshold => (1 << 40, 1 << 39),
        };
        let inputs = WitnessInputs {
            attribute,
            attribute_type: AttributeType(circuit as u64 + 1),
            subject_binding: subject_binding(&[0xab; 32]),
            salt: Salt::random(&mut OsRng),
            bound,
            nonce: nonce_from_request_id(b"snarkjs"),
        };
        let proof = prove(circuit, &inputs, &mut OsRng).unwrap();
        let vk = snarkjs::verifying_key_json(circuit.verifying_key().unwrap());
        // The committed verification_key.json is the same export.
        let committed: serde_json::Value = serde_json::from_slice(
            &std::fs::read(zk.join(format!("artifacts/{}/verification_key.json", circuit.id())))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(vk, committed, "{circuit}");

        let public = inputs.public_inputs();
        let (ok, out) = snarkjs_verify(
            dir.path(),
            &vk,
            &snarkjs::public_json(&public),
            &snarkjs::proof_json(&proof),
        );
        assert!(ok, "{circuit}: snarkjs rejected our proof:\n{out}");

        let mut replayed = public;
        replayed.nonce = Fr::from(1u64);
        let (ok, out) = snarkjs_verify(
            dir.path(),
            &vk,
            &snarkjs::public_json(&replayed),
            &snarkjs::proof_json(&proof),
        );
        assert!(
            !ok,
            "{circuit}: snarkjs accepted a proof for another nonce:\n{out}"
        );
    }
}
