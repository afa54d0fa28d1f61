#!/usr/bin/env bash
# Parse + structural check: Huitong's own walk vs the official R4 JSON Schema (jsonschema crate).
# Runs `cargo bench --bench parse` (release profile) and prints the figures side by side.
#
#   scripts/bench-parse.sh                 # default: 10 samples, 3 s of measurement per function
#   MEASURE_SECS=10 scripts/bench-parse.sh # longer runs
#
# Needs ../shared/corpora (or $HUITONG_CORPORA) with the R4 examples package and fhir.schema.json.
set -euo pipefail
cd "$(dirname "$0")/.."

MEASURE_SECS="${MEASURE_SECS:-3}"
WARMUP_SECS="${WARMUP_SECS:-1}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
LOG="$TARGET_DIR/bench-parse.log"
mkdir -p "$TARGET_DIR"

cargo bench --bench parse -- \
    --warm-up-time "$WARMUP_SECS" --measurement-time "$MEASURE_SECS" --noplot | tee "$LOG"

if grep -q '^skipped:' "$LOG"; then
    exit 0
fi

python3 - "$LOG" "$TARGET_DIR/criterion" <<'EOF'
import json, os, re, sys
log, crit = sys.argv[1], sys.argv[2]
meta = {}
for line in open(log):
    m = re.match(r"PARSE-META group=(\S+) resources=(\d+) bytes=(\d+)", line)
    if m:
        meta[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    elif line.startswith("PARSE-META"):
        print(line.rstrip())
names = [
    ("a_huitong", "(a) huitong parse_resource"),
    ("b_schema_is_valid", "(b) serde_json + schema is_valid"),
    ("b_schema_validate", "(b') serde_json + schema validate"),
    ("c_json_only", "(c) serde_json::from_slice only"),
]
for group, (count, size) in meta.items():
    print(f"\n{group}: {count} resources, {size / 1e6:.2f} MB")
    print(f"  {'':36} {'ms/pass':>10} {'resources/s':>12} {'MB/s':>8}")
    means = {}
    for key, label in names:
        path = os.path.join(crit, f"parse_{group}", key, "new", "estimates.json")
        if not os.path.exists(path):
            continue
        est = json.load(open(path))
        ns = est["mean"]["point_estimate"]
        lo, hi = est["mean"]["confidence_interval"]["lower_bound"], est["mean"]["confidence_interval"]["upper_bound"]
        means[key] = ns
        print(f"  {label:36} {ns / 1e6:10.2f} {count / (ns / 1e9):12.0f} {size / 1e6 / (ns / 1e9):8.1f}"
              f"   (95% CI {lo / 1e6:.2f}..{hi / 1e6:.2f} ms)")
    if "a_huitong" in means and "b_schema_is_valid" in means:
        a, b = means["a_huitong"], means["b_schema_is_valid"]
        print(f"  time ratio (a)/(b) = {a / b:.3f}  (< 1: our walk is faster; (b)/(a) = {b / a:.2f}x)")
    if "c_json_only" in means:
        c = means["c_json_only"]
        for key, label in names[:3]:
            if key in means:
                print(f"  {label}: check cost above the JSON floor = {(means[key] - c) / 1e6:.2f} ms")
EOF
