#!/usr/bin/env bash
# CDA throughput: the WS/T 500 samples of cn-hie/cda repeated to N documents (default 50,000):
# (1) converted and validated in process, no storage (examples/cda_bench.rs);
# (2) end to end: POST /cda over HTTP into the embedded store, C concurrent clients (default 4),
#     on a fresh data directory. Every document of (2) is stored (the same 40 documents again are
#     new versions of the same resources).
#
#   scripts/bench-cda.sh                 # N=50000, release build
#   N=2000 PROFILE=dev scripts/bench-cda.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-50000}"
C="${C:-4}"
CORPORA="${HUITONG_CORPORA:-../shared/corpora}"
DIR="$CORPORA/cn-hie/cda"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ ! -d "$DIR" ]; then echo "skipped: $DIR not found"; exit 0; fi
PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --example cda_bench --bin huitong
  BIN="$TARGET_DIR/release"
else
  cargo build --example cda_bench --bin huitong
  BIN="$TARGET_DIR/debug"
fi
echo "profile: $PROFILE; load: $(cut -d' ' -f1-3 /proc/loadavg); cores: $(nproc)"
"$BIN/examples/cda_bench" "$DIR" "$N"

DATA=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
"$BIN/huitong" serve --addr "127.0.0.1:$PORT" --data "$DATA" --mllp-addr off --log-level warn &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$DATA"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
python3 - "$DIR" "$N" "$C" "$PORT" <<'PY'
import os, sys, time, threading, http.client
d, n, c, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
docs = [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))]
lock = threading.Lock()
next_i = [0]; ok = [0]; bad = [0]
def worker():
    conn = http.client.HTTPConnection("127.0.0.1", port)
    while True:
        with lock:
            i = next_i[0]; next_i[0] += 1
        if i >= n: break
        conn.request("POST", "/cda", body=docs[i % len(docs)], headers={"content-type": "application/hl7-cda+xml"})
        r = conn.getresponse(); r.read()
        with lock:
            if r.status == 201: ok[0] += 1
            else: bad[0] += 1
t = time.perf_counter()
ts = [threading.Thread(target=worker) for _ in range(c)]
[x.start() for x in ts]; [x.join() for x in ts]
s = time.perf_counter() - t
print(f"CDA-BENCH http_end_to_end docs_per_s={n/s:.0f} secs={s:.3f} stored={ok[0]} refused={bad[0]} clients={c}")
PY
