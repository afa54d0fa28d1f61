#!/usr/bin/env bash
# Record feeds: records/s per feed from an N-record file (default 100,000) into the embedded store
# (`huitong ingest feed`, one transaction per record), and rest-hook notification latency p50/p99
# under a steady load of RATE records/s (default 1,000) of 甲类 disease reports, measured by a
# local receiver from each notification's commit time (`x-huitong-committed-ms`).
#
#   scripts/bench-feeds.sh                      # N=100000, RATE=1000, SECONDS_LOAD=20, release build
#   N=2000 SECONDS_LOAD=5 PROFILE=dev scripts/bench-feeds.sh   # a small run
#   FEEDS="nhsa-1101 immunization" scripts/bench-feeds.sh
#
# Prints one line per feed and one latency line. No peer: the NHSA/CDC platforms are not public.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
RATE="${RATE:-1000}"
SECONDS_LOAD="${SECONDS_LOAD:-20}"
PROFILE="${PROFILE:-release}"
FEEDS="${FEEDS:-nhsa-1101 nhsa-2207 nhsa-2208 idr-report immunization}"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
WORK="$(mktemp -d)"
trap 'kill ${SERVER_PID:-} ${RECV_PID:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT

if [ "$PROFILE" = release ]; then cargo build --release --bin huitong; BIN="$TARGET/release/huitong";
else cargo build --bin huitong; BIN="$TARGET/debug/huitong"; fi

# N records per feed, each a variation of the feed's first valid example (distinct business keys).
python3 - "$WORK" "$N" $FEEDS <<'PY'
import json, sys, os, glob, copy
work, n, feeds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def first(feed):
    f = sorted(p for p in glob.glob(f"mappings/feeds/{feed}/examples/*.json") if "invalid" not in p and not p.endswith("expected.json"))[0]
    return json.load(open(f))
def vary(feed, r, i):
    r = copy.deepcopy(r)
    if feed == "nhsa-1101":
        r["baseinfo"]["psn_no"] = f"B{i:019d}"
    elif feed == "nhsa-2207":
        r["setlinfo"]["setl_id"] = f"SB{i:018d}"; r["setlinfo"]["mdtrt_id"] = f"MB{i:018d}"
    elif feed == "nhsa-2208":
        r["data"]["setl_id"] = f"SB{i:018d}"; r["data"]["mdtrt_id"] = f"MB{i:018d}"
    elif feed == "idr-report":
        r["card_id"] = f"BENCH-{i:08d}"; r.pop("id_no", None)
    elif feed == "immunization":
        r["record_id"] = f"JZ-BENCH-{i:08d}"; r["trace_code"] = f"9{i:019d}"; r.pop("id_no", None)
    return r
for feed in feeds:
    base = first(feed)
    with open(os.path.join(work, f"{feed}.ndjson"), "w") as out:
        for i in range(n):
            out.write(json.dumps(vary(feed, base, i), ensure_ascii=False) + "\n")
PY

echo "feed throughput: $N records per feed, $PROFILE build, data in $WORK/data"
for feed in $FEEDS; do
  start=$(date +%s.%N)
  "$BIN" ingest feed --data "$WORK/data" "$feed" "$WORK/$feed.ndjson" > "$WORK/$feed.out" || true
  end=$(date +%s.%N)
  summary=$(tail -1 "$WORK/$feed.out")
  python3 -c "import sys; n=$N; t=$end-$start; print(f'  {sys.argv[1]:<14} {n/t:9.0f} records/s  ({t:.1f} s; {sys.argv[2]})')" "$feed" "$summary"
done

# Notification latency under load.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOOK=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$HOOK" "$WORK/latencies.txt" <<'PY' &
import http.server, sys, time
out = open(sys.argv[2], "w", buffering=1)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        now = time.time() * 1000
        self.rfile.read(int(self.headers.get("content-length", 0)))
        out.write(f"{now - int(self.headers['x-huitong-committed-ms']):.1f}\n")
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
RECV_PID=$!
"$BIN" serve --addr "127.0.0.1:$PORT" --data "$WORK/serve" --mllp-addr off > "$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
curl -sf -X POST "http://127.0.0.1:$PORT/fhir/Subscription" -H 'content-type: application/fhir+json' -d "{\"resourceType\":\"Subscription\",\"status\":\"requested\",\"reason\":\"bench\",\"criteria\":\"Condition?category=http://huitong.dev/fhir/cn/CodeSystem/infectious-disease|甲类\",\"channel\":{\"type\":\"rest-hook\",\"endpoint\":\"http://127.0.0.1:$HOOK/hook\",\"payload\":\"application/fhir+json\"}}" >/dev/null
sleep 1
python3 - "$PORT" "$RATE" "$SECONDS_LOAD" <<'PY'
import http.client, json, sys, time, glob
port, rate, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
base = json.load(open(sorted(glob.glob("mappings/feeds/idr-report/examples/01-*.json"))[0]))
base.pop("id_no", None)
conn = http.client.HTTPConnection("127.0.0.1", port)
batch = max(1, rate // 100)          # every 10 ms, rate/100 records in one array
i, start = 0, time.time()
while time.time() - start < secs:
    recs = []
    for _ in range(batch):
        r = dict(base); r["card_id"] = f"LOAD-{i:08d}"; i += 1; recs.append(r)
    conn.request("POST", "/feeds/idr-report", json.dumps(recs, ensure_ascii=False).encode(), {"content-type": "application/json"})
    conn.getresponse().read()
    lag = start + i / rate - time.time()
    if lag > 0: time.sleep(lag)
print(f"  load: {i} 甲类 reports in {time.time() - start:.1f} s ({i / (time.time() - start):.0f} records/s offered)")
PY
sleep 3
python3 - "$WORK/latencies.txt" <<'PY'
import sys
v = sorted(float(x) for x in open(sys.argv[1]) if x.strip())
if not v: print("  no notifications received"); sys.exit(1)
q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
print(f"  notification latency over {len(v)} deliveries: p50 {q(0.50):.0f} ms, p99 {q(0.99):.0f} ms, max {v[-1]:.0f} ms")
PY
