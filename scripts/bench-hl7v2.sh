#!/usr/bin/env bash
# HL7 v2 benchmark (issue 7), in one run on the sample corpus repeated to N messages (default
# 100,000):
#   1. parse throughput: Huitong vs the Python `hl7` and `hl7apy` packages and node `simple-hl7`;
#   2. Huitong's parse+map+validate (no storage), one core;
#   3. MLLP end to end: `huitong serve` on a fresh embedded store, MLLP_N messages (default 20,000)
#      on MLLP_CONNECTIONS connections (default 8), each waiting for its ACK (AA only after commit):
#      messages/s and ACK latency percentiles.
#
#   scripts/bench-hl7v2.sh            # release build
#   N=200000 MLLP_N=50000 scripts/bench-hl7v2.sh
#   PY_N=20000 APY_N=1000 (defaults): how many of the N messages the Python `hl7` and `hl7apy` parse
#   (their rates are per message; hl7apy takes about 0.1 s per large message)
#   PROFILE=dev scripts/bench-hl7v2.sh   # the dev profile (opt-level 1), when a release build is too costly
#
# Needs ../shared/corpora/hl7v2-samples (or $HUITONG_CORPORA). The Python peers are installed with
# pip into a venv under target/, simple-hl7 with npm into a directory under target/ (first run).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-100000}"
CORPORA="${HUITONG_CORPORA:-../shared/corpora}"
DIR="$CORPORA/hl7v2-samples/messages"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ ! -d "$DIR" ]; then echo "skipped: $DIR not found"; exit 0; fi

VENV="$TARGET_DIR/bench-hl7v2-venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet hl7 hl7apy
fi

NODE_DIR="$TARGET_DIR/bench-hl7v2-node"
if [ ! -d "$NODE_DIR/node_modules/simple-hl7" ]; then
  mkdir -p "$NODE_DIR"
  npm install --no-audit --no-fund --prefix "$NODE_DIR" simple-hl7@3.3.0 >/dev/null
fi

PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --example hl7v2_bench --bin huitong
  BIN="$TARGET_DIR/release/examples/hl7v2_bench"
  SERVER="$TARGET_DIR/release/huitong"
else
  cargo build --example hl7v2_bench --bin huitong
  BIN="$TARGET_DIR/debug/examples/hl7v2_bench"
  SERVER="$TARGET_DIR/debug/huitong"
fi
echo "profile: $PROFILE; load: $(cut -d' ' -f1-3 /proc/loadavg)"
OURS=$("$BIN" "$DIR" "$N")
echo "$OURS"

PEERS=$("$VENV/bin/python" - "$DIR" "$N" "${PY_N:-20000}" "${APY_N:-1000}" <<'PY'
import os, sys, time, warnings
warnings.filterwarnings("ignore")
import hl7
from hl7apy.parser import parse_message
from hl7apy.core import Message
d, n = sys.argv[1], int(sys.argv[2])
hl7_n, hl7apy_n = int(sys.argv[3]), int(sys.argv[4])
msgs = []
for f in sorted(os.listdir(d)):
    raw = open(os.path.join(d, f), "rb").read().decode("utf-8-sig", "replace")
    text = raw.replace("\r\n", "\r").replace("\n", "\r")
    starts = [i for i in range(len(text)) if text.startswith("MSH", i) and (i == 0 or text[i-1] == "\r")]
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else len(text)
        msgs.append(text[s:e].strip("\r"))
work = [msgs[i % len(msgs)] for i in range(n)]
def run(name, fn, limit):
    sample = work[:limit]
    ok = 0
    t = time.perf_counter()
    for m in sample:
        try:
            fn(m); ok += 1
        except Exception:
            pass
    dt = time.perf_counter() - t
    print(f"HL7V2-BENCH {name} msgs_per_s={len(sample)/dt:.0f} secs={dt:.3f} measured={len(sample)} ok={ok}")
# The rates are per message, so the slow peers are measured on a prefix of the same work: every
# distinct message at least ten times (hl7apy takes about 0.1 s per large message).
run("python_hl7", hl7.parse, min(n, hl7_n))
run("python_hl7apy", lambda m: parse_message(m, find_groups=False, validation_level=2), min(n, hl7apy_n))
PY
)
echo "$PEERS"

# simple-hl7 splits every segment, field, repetition and component as it parses.
NODE_PEER=$(NODE_PATH="$NODE_DIR/node_modules" node - "$DIR" "$N" <<'JS'
const fs = require("fs"), path = require("path");
const hl7 = require("simple-hl7");
const [dir, n] = [process.argv[2], Number(process.argv[3])];
const msgs = [];
for (const f of fs.readdirSync(dir).sort()) {
  const text = fs.readFileSync(path.join(dir, f), "utf8").replace(/^\uFEFF/, "").replace(/\r\n|\n/g, "\r");
  let cur = [];
  for (const seg of text.split("\r")) {
    if (seg.startsWith("MSH") && cur.length) { msgs.push(cur.join("\r")); cur = []; }
    if (seg.trim()) cur.push(seg);
  }
  if (cur.length) msgs.push(cur.join("\r"));
}
const parser = new hl7.Parser();
let ok = 0;
const t = process.hrtime.bigint();
for (let i = 0; i < n; i++) {
  try { parser.parse(msgs[i % msgs.length]); ok++; } catch (e) {}
}
const secs = Number(process.hrtime.bigint() - t) / 1e9;
console.log(`HL7V2-BENCH node_simple_hl7 msgs_per_s=${(n / secs).toFixed(0)} secs=${secs.toFixed(3)} measured=${n} ok=${ok}`);
JS
)
echo "$NODE_PEER"

# MLLP end to end into a fresh embedded store.
MLLP_N="${MLLP_N:-20000}"
MLLP_CONNECTIONS="${MLLP_CONNECTIONS:-8}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/huitong-bench-hl7v2.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HTTP_PORT="$(free_port)"; MLLP_PORT="$(free_port)"
"$SERVER" serve --addr "127.0.0.1:$HTTP_PORT" --mllp-addr "127.0.0.1:$MLLP_PORT" --data "$WORK/data" \
  --log-level warn >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited:"; cat "$WORK/server.log"; exit 1; }
  sleep 0.1
done
echo "MLLP: $MLLP_N messages on $MLLP_CONNECTIONS connections; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
MLLP=$(python3 scripts/bench_mllp_client.py 127.0.0.1 "$MLLP_PORT" "$DIR" "$MLLP_N" "$MLLP_CONNECTIONS")
echo "$MLLP"
echo "stored: $(curl -fsS "http://127.0.0.1:$HTTP_PORT/fhir/Provenance?_summary=count" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("total"), "Provenance (one per message)")')"

python3 - "$OURS" "$PEERS" "$NODE_PEER" <<'PY'
import re, sys
rates = dict(re.findall(r"HL7V2-BENCH (\S+) msgs_per_s=(\d+)", "\n".join(sys.argv[1:])))
ours = float(rates["huitong_parse"])
for peer in ("python_hl7", "python_hl7apy", "node_simple_hl7"):
    if peer in rates:
        print(f"huitong parse / {peer}: {ours / float(rates[peer]):.1f}x")
PY
