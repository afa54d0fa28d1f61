#!/usr/bin/env bash
# Ingest and cached-read benchmark (issue 2).
#
# Builds the release binary, starts `huitong serve` on a free port over a fresh temporary data
# directory, loads every Synthea bundle of $HUITONG_CORPORA/synthea/synthea-r4-bundles.tgz (the
# hospital and practitioner batches first, then the patient transactions with $CLIENTS concurrent
# clients), prints resources/second, then runs wrk on GET /fhir/Patient/{id} and prints
# requests/second and latency percentiles (p99 included).
#
# Environment: HUITONG_CORPORA (default ../shared/corpora), CLIENTS (4), WRK_THREADS (2),
# WRK_CONNECTIONS (32), WRK_DURATION (20s), PREFER (return=minimal, the Prefer header of the
# loader: a bulk loader does not need every resource echoed back; PREFER= sends none, and the server
# then answers with return=representation), CARGO_TARGET_DIR (default target/).
# Targets on the 2-core reference machine: >= 5,000 resources/s for transaction ingest;
# >= 30,000 cached reads/s with p99 < 5 ms.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
corpora="${HUITONG_CORPORA:-$root/../shared/corpora}"
tgz="$corpora/synthea/synthea-r4-bundles.tgz"
clients="${CLIENTS:-4}"
wrk_threads="${WRK_THREADS:-2}"
wrk_connections="${WRK_CONNECTIONS:-32}"
wrk_duration="${WRK_DURATION:-20s}"
prefer="${PREFER-return=minimal}"

[ -f "$tgz" ] || { echo "bench-ingest: $tgz not found (set HUITONG_CORPORA)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-ingest: python3 is required" >&2; exit 1; }
if ! command -v wrk >/dev/null; then
    echo "== installing wrk (Debian package)"
    if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    else sudo apt-get install -y wrk >/dev/null; fi
fi

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
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/data"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port/fhir"
"$bin" serve --addr "127.0.0.1:$port" --data "$work/data" --log-level warn >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { echo "bench-ingest: server exited:" >&2; cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "bench-ingest: server not ready" >&2; cat "$work/server.log" >&2; exit 1; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -h | awk '/^Mem:/ {print $2}') RAM; $(date -u +%Y-%m-%dT%H:%MZ); $("$bin" version)"
echo "== load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other processes on the machine distort the figures)"
echo "== ingest: the bundles of $tgz (read in place) into $base"
python3 "$here/bench_ingest_loader.py" "$base" "$tgz" --clients "$clients" --prefer "$prefer" \
    --server-pid "$server_pid" --patient-id-file "$work/patient-id" | tee "$work/ingest.txt"
patient_id="$(cat "$work/patient-id")"
echo "== store after ingest: $(du -sh "$work/data" | cut -f1) on disk"

url="$base/Patient/$patient_id"
curl -fsS -o /dev/null "$url" # warm the cache: wrk measures cached reads
cache_before="$(curl -fsS "http://127.0.0.1:$port/metrics" | grep -E '^huitong_cache_(hits|misses)' || true)"
echo "== cached reads: wrk -t$wrk_threads -c$wrk_connections -d$wrk_duration --latency $url"
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$server_pid/stat"; }
cpu0="$(server_cpu)"
wrk -t"$wrk_threads" -c"$wrk_connections" -d"$wrk_duration" --latency "$url" | tee "$work/wrk.txt"
cpu1="$(server_cpu)"
cache_after="$(curl -fsS "http://127.0.0.1:$port/metrics" | grep -E '^huitong_cache_(hits|misses)' || true)"
if grep -q 'Non-2xx' "$work/wrk.txt"; then
    echo "bench-ingest: wrk saw non-2xx responses" >&2
    exit 1
fi
[ -n "$cache_after" ] && printf 'cache counters before wrk:\n%s\nafter wrk:\n%s\n' "$cache_before" "$cache_after"

tx_rate="$(sed -n 's/^TRANSACTION_RESOURCES_PER_SECOND=//p' "$work/ingest.txt")"
rps="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$work/wrk.txt")"
requests="$(awk '/requests in/ {print $1}' "$work/wrk.txt")"
echo "server CPU during wrk: $(python3 -c "print(f'{$cpu1 - $cpu0:.2f} s, {($cpu1 - $cpu0) / $requests * 1e6:.1f} us per request')")"
p99="$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")"
p99_ms="$(python3 -c 'import sys; v = sys.argv[1]; u = v.lstrip("0123456789."); n = float(v[: len(v) - len(u)]); print(round(n * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u], 3))' "$p99")"
verdict() { if [ "$1" = 1 ]; then echo "met"; else echo "NOT met"; fi; }
echo
echo "== summary (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "transaction ingest: $tx_rate resources/s (target >= 5000: $(verdict "$(python3 -c "print(int($tx_rate >= 5000))")"))"
echo "cached reads: $rps requests/s, p99 $p99_ms ms (target >= 30000/s and p99 < 5 ms: $(verdict "$(python3 -c "print(int($rps >= 30000 and $p99_ms < 5))")"))"
