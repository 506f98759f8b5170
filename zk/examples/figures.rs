//! Rough figures: load and proving time per circuit, verification one by one against batched,
//! sizes. Prints one JSON object. Run in release:
//! `cargo run --release -p pavilion-zk --example figures [proofs-per-circuit]`.
//! (`pavilion bench zk` is the place for the real benchmark; this is its function surface.)

use std::time::{Duration, Instant};

use pavilion_zk::rand::OsRng;
use pavilion_zk::{
    nonce_from_request_id, subject_binding, verify, verify_batch, AttributeType, Circuit, Proof,
    Prover, PublicInputs, Salt, WitnessInputs, PROOF_BYTES,
};
use serde_json::json;

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    millis(sorted[index])
}

fn main() {
    let proofs_per_circuit: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let mut circuits = serde_json::Map::new();
    let mut pool: Vec<(Circuit, PublicInputs, Proof)> = Vec::new();

    for circuit in Circuit::ALL {
        let started = Instant::now();
        let mut prover = Prover::new(circuit).expect("artifacts load");
        let load = started.elapsed();
        let mut times = Vec::with_capacity(proofs_per_circuit);
        for i in 0..proofs_per_circuit {
            let inputs = WitnessInputs {
                attribute: match circuit {
                    Circuit::DateLeCutoff => 19_900_101 + i as u64,
                    Circuit::IntGeThreshold => 100_000 + i as u64,
                },
                attribute_type: AttributeType(circuit as u64 + 1),
                subject_binding: subject_binding(&[i as u8; 32]),
                salt: Salt::random(&mut OsRng),
                bound: match circuit {
                    Circuit::DateLeCutoff => 20_080_514,
                    Circuit::IntGeThreshold => 100_000,
                },
                nonce: nonce_from_request_id(format!("figures-{i}").as_bytes()),
            };
            let started = Instant::now();
            let proof = prover.prove(&inputs, &mut OsRng).expect("proves");
            times.push(started.elapsed());
            pool.push((circuit, inputs.public_inputs(), proof));
        }
        times.sort();
        circuits.insert(
            circuit.id().to_owned(),
            json!({
                "load_ms": millis(load),
                "prove_ms_p50": percentile(&times, 0.5),
                "prove_ms_p99": percentile(&times, 0.99),
                "proving_key_bytes": std::fs::metadata(format!(
                    "{}/artifacts/{}/proving_key.bin",
                    env!("CARGO_MANIFEST_DIR"),
                    circuit.id()
                ))
                .map(|m| m.len())
                .unwrap_or(0),
                "verifying_key_bytes": circuit.verifying_key_bytes().len(),
            }),
        );
    }

    // Verification over a mix of both circuits, enough distinct proofs by re-randomizing.
    let mut items = Vec::with_capacity(256);
    for i in 0..256 {
        let (circuit, public, proof) = &pool[i % pool.len()];
        let vk = circuit.verifying_key().expect("key");
        items.push((*circuit, *public, proof.rerandomize(vk, &mut OsRng)));
    }
    let started = Instant::now();
    for (circuit, public, proof) in &items[..64] {
        verify(*circuit, public, proof).expect("valid");
    }
    let single_us = started.elapsed().as_secs_f64() * 1e6 / 64.0;

    let mut batched = serde_json::Map::new();
    for size in [16, 64, 256] {
        let rounds = 256 / size;
        let started = Instant::now();
        for chunk in items.chunks(size).take(rounds) {
            let results = verify_batch(chunk, &mut OsRng);
            assert!(results.iter().all(Result::is_ok));
        }
        let per_proof_us = started.elapsed().as_secs_f64() * 1e6 / (rounds * size) as f64;
        batched.insert(
            size.to_string(),
            json!({ "per_proof_us": per_proof_us, "speedup": single_us / per_proof_us }),
        );
    }
    // One forged proof in 64: the batch fails and bisection finds it.
    let mut forged = items[..64].to_vec();
    forged[40].1.nonce += pavilion_zk::Fr::from(1u64);
    let started = Instant::now();
    let results = verify_batch(&forged, &mut OsRng);
    let with_one_bad = started.elapsed();
    assert!(results[40].is_err() && results.iter().filter(|r| r.is_err()).count() == 1);

    let figures = json!({
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "circuits": circuits,
        "proof_bytes": PROOF_BYTES,
        "verify_single_us": single_us,
        "verify_batched": batched,
        "batch_64_with_one_bad_ms": millis(with_one_bad),
    });
    println!("{}", serde_json::to_string_pretty(&figures).expect("json"));
}
