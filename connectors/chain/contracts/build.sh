#!/usr/bin/env bash
# Compiles AuditAnchor.sol into AuditAnchor.json (ABI + creation bytecode) with a pinned
# solc-js and fixed settings, so anyone gets the same bytes as the checked-in artifact.
#
#   build.sh           recompile and rewrite AuditAnchor.json
#   build.sh --check   recompile into a temp file and fail if it differs from AuditAnchor.json
#
# solc-js (the npm package `solc`, solc compiled to WebAssembly) is installed on first use
# under $PAVILION_CACHE/solc-<version> (default $HOME/.cache/pavilion); it needs node and npm.
set -euo pipefail

SOLC_VERSION="0.8.37"
# paris = no PUSH0 (shanghai): the bytecode then runs on every EVM chain, including those that
# lag behind mainnet's forks; the cost is a few gas per call.
EVM_VERSION="paris"
OPTIMIZER_RUNS=200

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${PAVILION_CACHE:-$HOME/.cache/pavilion}"
SOLC_HOME="$CACHE/solc-$SOLC_VERSION"
SOURCE="$HERE/AuditAnchor.sol"
ARTIFACT="$HERE/AuditAnchor.json"

die() { echo "build.sh: $*" >&2; exit 1; }

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument: $1 (expected --check)" ;;
esac

command -v node >/dev/null || die "node not found (apt-get install nodejs npm)"

installed_version() {
  node -e 'console.log(require(process.argv[1]).version)' "$SOLC_HOME/node_modules/solc/package.json" 2>/dev/null || true
}
if [ "$(installed_version)" != "$SOLC_VERSION" ]; then
  command -v npm >/dev/null || die "npm not found (apt-get install npm)"
  echo "build.sh: installing solc@$SOLC_VERSION into $SOLC_HOME" >&2
  mkdir -p "$SOLC_HOME"
  npm install --prefix "$SOLC_HOME" --no-audit --no-fund --no-save --loglevel=error "solc@$SOLC_VERSION" >&2
  [ "$(installed_version)" = "$SOLC_VERSION" ] || die "solc@$SOLC_VERSION did not install under $SOLC_HOME"
fi

out="$(mktemp)"
trap 'rm -f "$out"' EXIT

# Standard JSON input: the source unit name and every setting are fixed here, since both feed
# the metadata hash that solc appends to the bytecode.
SOLC_HOME="$SOLC_HOME" EVM_VERSION="$EVM_VERSION" OPTIMIZER_RUNS="$OPTIMIZER_RUNS" \
node - "$SOURCE" >"$out" <<'JS'
const fs = require("fs");
const solc = require(process.env.SOLC_HOME + "/node_modules/solc");
const settings = {
  optimizer: { enabled: true, runs: Number(process.env.OPTIMIZER_RUNS) },
  evmVersion: process.env.EVM_VERSION,
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
};
const input = {
  language: "Solidity",
  sources: { "AuditAnchor.sol": { content: fs.readFileSync(process.argv[2], "utf8") } },
  settings,
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const problems = (output.errors || []).filter((e) => e.severity !== "info");
for (const e of problems) process.stderr.write(e.formattedMessage + "\n");
if (problems.length > 0) process.exit(1);
const contract = output.contracts["AuditAnchor.sol"].AuditAnchor;
const artifact = {
  contractName: "AuditAnchor",
  compiler: "solc-js " + solc.version(),
  settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion },
  abi: contract.abi,
  bytecode: "0x" + contract.evm.bytecode.object,
};
process.stdout.write(JSON.stringify(artifact, null, 2) + "\n");
JS

if $check; then
  if ! cmp -s "$out" "$ARTIFACT"; then
    diff -u "$ARTIFACT" "$out" >&2 || true
    die "AuditAnchor.json is stale or not reproducible; run connectors/chain/contracts/build.sh"
  fi
  echo "build.sh: AuditAnchor.json matches a fresh compile (solc $SOLC_VERSION)" >&2
else
  cp "$out" "$ARTIFACT"
  echo "build.sh: wrote $ARTIFACT" >&2
fi
