#!/usr/bin/env bash
# Rebuilds zk/artifacts/ from zk/circuits/: installs the pinned circom2 and circomlib (npm ci),
# compiles both circuits, runs the seeded development setup and rewrites artifacts/manifest.json.
# The result is deterministic: running it on unchanged sources reproduces the committed files.
# Usage: zk/scripts/build-artifacts.sh   (from anywhere; needs node/npm and cargo)
set -euo pipefail
zk="$(cd "$(dirname "$0")/.." && pwd)"
cd "$zk"
npm ci --no-audit --no-fund
# The crate embeds the artifacts; on a first build there are none yet, so give the example
# empty files to compile against (loading them fails cleanly until the ceremony replaces them).
for id in date_le_cutoff int_ge_threshold; do
  mkdir -p "artifacts/$id"
  for f in circuit.r1cs witness.wasm proving_key.bin verifying_key.bin; do
    [ -e "artifacts/$id/$f" ] || : > "artifacts/$id/$f"
  done
done
cargo run --release -p pavilion-zk --example ceremony
