#!/usr/bin/env bash
# Search benchmark (issue 6).
#
# Builds the release binary, starts `huitong serve` over a fresh temporary data directory, loads
# the Synthea bundles of $HUITONG_CORPORA/synthea/synthea-r4-bundles.tgz with the ingest loader
# (so the ingest rate with search indexing is printed too), then runs a fixed mix of searches
# (token, string, date range, reference, one- and two-level chains, _include, _revinclude, _has,
# sort + offset page, keyset page) $N times each and prints p50/p99 latency and requests/s per type.
# No peer is run. Environment: HUITONG_CORPORA, CLIENTS (4), N (200), CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
corpora="${HUITONG_CORPORA:-$root/../shared/corpora}"
tgz="$corpora/synthea/synthea-r4-bundles.tgz"
clients="${CLIENTS:-4}"
n="${N:-200}"
prefer="return=minimal"
[ -f "$tgz" ] || { echo "bench-search: $tgz not found (set HUITONG_CORPORA)" >&2; exit 1; }

echo "== building the release binary"
(cd "$root" && cargo build --release --bin huitong)
bin="${CARGO_TARGET_DIR:-$root/target}/release/huitong"

work="$(mktemp -d "${TMPDIR:-/tmp}/huitong-bench.XXXXXX")"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/bundles" "$work/data"
tar xzf "$tgz" -C "$work/bundles" --strip-components=1

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port/fhir"
"$bin" serve --addr "127.0.0.1:$port" --data "$work/data" --log-level warn >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { echo "bench-search: server exited:" >&2; cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "bench-search: server not ready" >&2; cat "$work/server.log" >&2; exit 1; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -h | awk '/^Mem:/ {print $2}') RAM; $(date -u +%Y-%m-%dT%H:%MZ); $("$bin" version)"
echo "== load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on the machine distort the figures)"
echo "== ingest: $(ls "$work/bundles" | wc -l) bundle files into $base"
python3 "$here/bench_ingest_loader.py" "$base" "$work/bundles" --clients "$clients" --prefer "$prefer" \
    --server-pid "$server_pid" --patient-id-file "$work/patient-id" | tee "$work/ingest.txt"
patient_id="$(cat "$work/patient-id")"
echo "== store after ingest: $(du -sh "$work/data" | cut -f1) on disk"

echo "== searches ($n each, sequential, one keep-alive connection)"
python3 "$here/bench_search_client.py" "$base" "$n"
echo "== load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
