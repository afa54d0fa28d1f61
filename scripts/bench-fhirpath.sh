#!/usr/bin/env bash
# Benchmarks the FHIRPath engine against fhirpath.js (npm `fhirpath`, HL7's JavaScript engine) on
# the same workload: the 20 most common resource-level constraint expressions of the R4 core over
# the R4 examples package. Prints both figures and the ratio.
#
# Usage: scripts/bench-fhirpath.sh            (needs node + npm; installs fhirpath.js into a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
FHIRPATH_JS_VERSION="${FHIRPATH_JS_VERSION:-5.2.2}"
NODE_DIR="${HUITONG_BENCH_NODE_DIR:-${TMPDIR:-/tmp}/huitong-bench-node}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"

if [ ! -d "$NODE_DIR/node_modules/fhirpath" ]; then
  mkdir -p "$NODE_DIR"
  npm install --no-audit --no-fund --prefix "$NODE_DIR" "fhirpath@$FHIRPATH_JS_VERSION" >/dev/null
fi

cargo bench --bench fhirpath -- --noplot
node scripts/bench-fhirpath.js "$TARGET/fhirpath-bench-workload.json" "$NODE_DIR/node_modules" > "$TARGET/fhirpath-bench-js.json"

node -e '
const fs = require("fs");
const rs = JSON.parse(fs.readFileSync(process.argv[1]));
const js = JSON.parse(fs.readFileSync(process.argv[2]));
const f = (x) => x.toFixed(0).padStart(9);
console.log(`workload: ${rs.evaluations} evaluations (20 constraint expressions over the R4 examples)`);
console.log(`                      huitong   fhirpath.js   ratio`);
console.log(`cached AST       ${f(rs.cached_ns)} ns ${f(js.cached_ns)} ns   ${(js.cached_ns / rs.cached_ns).toFixed(1)}x`);
console.log(`parse+evaluate   ${f(rs.uncached_ns)} ns ${f(js.uncached_ns)} ns   ${(js.uncached_ns / rs.uncached_ns).toFixed(1)}x`);
' "$TARGET/fhirpath-bench-rust.json" "$TARGET/fhirpath-bench-js.json"
