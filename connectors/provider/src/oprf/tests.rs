//! RFC 9497 Appendix A.1.2 (ristretto255-SHA512, VOPRF mode) test vectors, run through our
//! wrappers end to end, plus the failure cases a provider service must refuse. (The vectors
//! in the voprf repository's default branch are from an older draft; these are the RFC's.)

use super::*;

/// Feeds the proof's random scalar to `Scalar::random` (64 bytes, reduced mod l).
struct FixedScalar(Vec<u8>);

impl RngCore for FixedScalar {
    fn next_u32(&mut self) -> u32 {
        unimplemented!("only fill_bytes is used")
    }
    fn next_u64(&mut self) -> u64 {
        unimplemented!("only fill_bytes is used")
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let n = dest.len().min(self.0.len());
        dest[..n].copy_from_slice(&self.0[..n]);
        dest[n..].fill(0);
        self.0.drain(..n);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedScalar {}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const SEED: &str = "a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3a3";
const KEY_INFO: &str = "74657374206b6579";
const SK: &str = "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909";
const PK: &str = "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e";

struct Vector {
    inputs: &'static [&'static str],
    blinds: &'static [&'static str],
    blinded: &'static [&'static str],
    evaluated: &'static [&'static str],
    proof: &'static str,
    proof_scalar: &'static str,
    outputs: &'static [&'static str],
}

const BLIND_1: &str = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706";
const BLINDED_1: &str = "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945";
const EVALUATED_1: &str = "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267e";
const OUT_1: &str = "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7da4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c";
const OUT_2: &str = "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6";
const PROOF_SCALAR: &str = "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e";

/// RFC 9497 A.1.2.1 to A.1.2.3.
const VECTORS: &[Vector] = &[
    Vector {
        inputs: &["00"],
        blinds: &[BLIND_1],
        blinded: &[BLINDED_1],
        evaluated: &[EVALUATED_1],
        proof: "ddef93772692e535d1a53903db24367355cc2cc78de93b3be5a8ffcc6985dd066d4346421d17bf5117a2a1ff0fcb2a759f58a539dfbe857a40bce4cf49ec600d",
        proof_scalar: PROOF_SCALAR,
        outputs: &[OUT_1],
    },
    Vector {
        inputs: &["5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"],
        blinds: &[BLIND_1],
        blinded: &["cc0b2a350101881d8a4cba4c80241d74fb7dcbfde4a61fde2f91443c2bf9ef0c"],
        evaluated: &["60a59a57208d48aca71e9e850d22674b611f752bed48b36f7a91b372bd7ad468"],
        proof: "401a0da6264f8cf45bb2f5264bc31e109155600babb3cd4e5af7d181a2c9dc0a67154fabf031fd936051dec80b0b6ae29c9503493dde7393b722eafdf5a50b02",
        proof_scalar: PROOF_SCALAR,
        outputs: &[OUT_2],
    },
    Vector {
        inputs: &["00", "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"],
        blinds: &[BLIND_1, PROOF_SCALAR],
        blinded: &[BLINDED_1, "90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654"],
        evaluated: &[EVALUATED_1, "cc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a"],
        proof: "cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08",
        proof_scalar: "419c4f4f5052c53c45f3da494d2b67b220d02118e0857cdbcf037f9ea84bbe0c",
        outputs: &[OUT_1, OUT_2],
    },
];

#[test]
fn rfc9497_voprf_ristretto255_sha512_vectors() {
    let key = ProviderKey::derive(&h(SEED).try_into().unwrap(), &h(KEY_INFO)).unwrap();
    assert_eq!(hex::encode(&key.to_bytes()[..32]), SK, "DeriveKeyPair skSm");
    assert_eq!(hex::encode(key.public_key()), PK, "pkSm");
    for (n, v) in VECTORS.iter().enumerate() {
        let inputs: Vec<Vec<u8>> = v.inputs.iter().map(|i| h(i)).collect();
        let blinded: Vec<Blinded> = inputs
            .iter()
            .zip(v.blinds)
            .map(|(i, b)| blind_with(i, &h(b)).unwrap())
            .collect();
        let elements: Vec<Vec<u8>> = blinded.iter().map(|b| b.element.to_vec()).collect();
        assert_eq!(
            elements,
            v.blinded.iter().map(|e| h(e)).collect::<Vec<_>>(),
            "vector {}: BlindedElement",
            n + 1
        );

        let (evaluated, proof) = key
            .evaluate_batch_with(&mut FixedScalar(h(v.proof_scalar)), &elements)
            .unwrap();
        let hex_evaluated: Vec<String> = evaluated.iter().map(hex::encode).collect();
        assert_eq!(
            hex_evaluated,
            v.evaluated,
            "vector {}: EvaluationElement",
            n + 1
        );
        assert_eq!(hex::encode(proof), v.proof, "vector {}: Proof", n + 1);

        let input_refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let outputs =
            finalize_batch(&input_refs, &blinded, &evaluated, &proof, &key.public_key()).unwrap();
        let hex_outputs: Vec<String> = outputs.iter().map(hex::encode).collect();
        assert_eq!(hex_outputs, v.outputs, "vector {}: Output", n + 1);
        for (input, output) in inputs.iter().zip(&outputs) {
            assert_eq!(
                &key.evaluate(input).unwrap(),
                output,
                "vector {}: direct evaluation",
                n + 1
            );
        }
    }
}

#[test]
fn a_round_trip_with_random_blinds_and_the_failures_a_service_refuses() {
    let key = ProviderKey::generate();
    let inputs: Vec<&[u8]> = vec![b"email:alice@example.com", b"email:bob@example.com"];
    let blinded: Vec<Blinded> = inputs.iter().map(|i| blind(i).unwrap()).collect();
    let elements: Vec<Vec<u8>> = blinded.iter().map(|b| b.element.to_vec()).collect();
    let (evaluated, proof) = key.evaluate_batch(&elements).unwrap();
    let outputs = finalize_batch(&inputs, &blinded, &evaluated, &proof, &key.public_key()).unwrap();
    assert_eq!(
        outputs[0],
        key.evaluate(inputs[0]).unwrap(),
        "blinded and direct evaluation agree"
    );
    assert_ne!(outputs[0], outputs[1]);

    // Another key's proof does not verify: a client notices a provider switching keys.
    let other = ProviderKey::generate();
    let (evaluated_other, proof_other) = other.evaluate_batch(&elements).unwrap();
    assert_eq!(
        finalize_batch(
            &inputs,
            &blinded,
            &evaluated_other,
            &proof_other,
            &key.public_key()
        ),
        Err(OprfError::BadProof)
    );
    // Malformed points, empty and oversize batches, and keys survive a round trip.
    assert_eq!(
        key.evaluate_batch(&[vec![0xff; 32]]),
        Err(OprfError::BadElement { index: 0 })
    );
    assert_eq!(
        key.evaluate_batch(&[elements[0].clone(), vec![1; 31]]),
        Err(OprfError::BadElement { index: 1 })
    );
    assert_eq!(key.evaluate_batch(&[]), Err(OprfError::BatchSize(0)));
    assert_eq!(
        key.evaluate_batch(&vec![elements[0].clone(); MAX_BATCH + 1]),
        Err(OprfError::BatchSize(MAX_BATCH + 1))
    );
    let restored = ProviderKey::from_bytes(&key.to_bytes()).unwrap();
    assert_eq!(restored.evaluate(inputs[0]).unwrap(), outputs[0]);
    assert_eq!(
        key.evaluate(b"").err(),
        Some(OprfError::Input),
        "empty input"
    );
    assert!(matches!(blind(b""), Err(OprfError::Input)));
}
