#!/usr/bin/env bash
# Search benchmark (issue 6).
#
# Builds the release binary, starts `huitong serve` over a fresh temporary data directory, loads
# the Synthea bundles of $HUITONG_CORPORA/synthea/synthea-r4-bundles.tgz (read in place) with the
# ingest loader: the hospital and practitioner batches once, then the patient bundles repeated with
# fresh ids (scripts/synthea_repeat.py) until $TOTAL resources are in the store, printing the ingest
# rate with search indexing. Then it runs a fixed mix of 30 named searches (token, string, date
# range, reference, quantity, one- and two-level chains, _include, _revinclude, _has, sort + paging)
# $N times each and prints p50/p99 latency, requests/s and result counts per search, with the
# issue's targets. No peer is run.
# Environment: HUITONG_CORPORA, TOTAL (1000000 resources), MAX_LOAD_SECONDS (1500: no patient bundle
# is started after that; the size reached is printed and searched), CLIENTS (4), N (200),
# SEARCH_SECONDS (20: a slower search stops after that many seconds of runs),
# KEEP_DATA (set: the data directory is kept and its path printed), DATA (a data directory kept
# by an earlier run: served as it is, the ingest is skipped), CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
corpora="${HUITONG_CORPORA:-$root/../shared/corpora}"
tgz="$corpora/synthea/synthea-r4-bundles.tgz"
clients="${CLIENTS:-4}"
n="${N:-200}"
search_seconds="${SEARCH_SECONDS:-20}"
total="${TOTAL:-1000000}"
max_load_seconds="${MAX_LOAD_SECONDS:-1500}"
prefer="return=minimal"
[ -f "$tgz" ] || { echo "bench-search: $tgz not found (set HUITONG_CORPORA)" >&2; exit 1; }

echo "== building the release binary"
(cd "$root" && cargo build --release --locked --bin huitong)
bin="${CARGO_TARGET_DIR:-$root/target}/release/huitong"

work="$(mktemp -d "${TMPDIR:-/tmp}/huitong-bench.XXXXXX")"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -n "${KEEP_DATA:-}" ]; then echo "== data kept in $work/data"; else rm -rf "$work"; fi
}
trap cleanup EXIT

mkdir -p "$work/data"
data="${DATA:-$work/data}"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port/fhir"
"$bin" serve --addr "127.0.0.1:$port" --data "$data" --log-level warn >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { echo "bench-search: server exited:" >&2; cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "bench-search: server not ready" >&2; cat "$work/server.log" >&2; exit 1; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -h | awk '/^Mem:/ {print $2}') RAM; $(date -u +%Y-%m-%dT%H:%MZ); $("$bin" version)"
echo "== load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on the machine distort the figures)"
if [ -n "${DATA:-}" ]; then
    echo "== serving the existing store $data ($(du -sh "$data" | cut -f1)); no ingest"
else
    echo "== ingest: the bundles of $tgz (read in place), repeated with fresh ids up to $total resources (at most ${max_load_seconds} s), into $base"
    python3 "$here/bench_ingest_loader.py" "$base" "$tgz" --clients "$clients" --prefer "$prefer" \
            --total "$total" --max-seconds "$max_load_seconds" --server-pid "$server_pid" | tee "$work/ingest.txt"
    echo "== store after ingest: $(du -sh "$work/data" | cut -f1) on disk; load average $(cut -d' ' -f1-3 /proc/loadavg)"
fi

# Index build on its own: `$reindex` re-extracts every live resource's index rows (the ingest
# rate above also parses, validates and stores).
echo "== index build: POST $base/\$reindex over the whole store"
t0=$(date +%s.%N)
reindexed=$(curl -fsS -X POST -H "Content-Type: application/fhir+json" -d '{"resourceType": "Parameters"}' "$base/\$reindex" | python3 -c 'import json, sys; print(next(p["valueInteger"] for p in json.load(sys.stdin)["parameter"] if p["name"] == "reindexed"))')
t1=$(date +%s.%N)
python3 -c "import sys; n, s = int(sys.argv[1]), float(sys.argv[3]) - float(sys.argv[2]); print(f'index build: {n} resources in {s:.1f} s = {n / s:,.0f} resources/s (target >= 5,000)')" "$reindexed" "$t0" "$t1"

echo "== searches ($n each after one warm-up, sequential, one keep-alive connection)"
python3 "$here/bench_search_client.py" "$base" "$n" --seconds "$search_seconds" | tee "$work/search.txt"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
