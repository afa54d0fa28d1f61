#!/usr/bin/env bash
# HL7 v2 parse throughput: Huitong vs the Python `hl7` and `hl7apy` packages, on the sample corpus
# repeated to N messages (default 100,000), in one run; plus Huitong's parse+map+validate.
#
#   scripts/bench-hl7v2.sh            # N=100000, release build
#   N=200000 scripts/bench-hl7v2.sh
#   PROFILE=dev scripts/bench-hl7v2.sh   # the dev profile (opt-level 1), when a release build is too costly
#
# Needs ../shared/corpora/hl7v2-samples (or $HUITONG_CORPORA). The Python peers are installed with
# pip into a venv under target/ (created on first run).
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

PROFILE="${PROFILE:-release}"
if [ "$PROFILE" = release ]; then
  cargo build --release --example hl7v2_bench
  BIN="$TARGET_DIR/release/examples/hl7v2_bench"
else
  cargo build --example hl7v2_bench
  BIN="$TARGET_DIR/debug/examples/hl7v2_bench"
fi
echo "profile: $PROFILE; load: $(cut -d' ' -f1-3 /proc/loadavg)"
OURS=$("$BIN" "$DIR" "$N")
echo "$OURS"

PEERS=$("$VENV/bin/python" - "$DIR" "$N" <<'PY'
import os, sys, time, warnings
warnings.filterwarnings("ignore")
import hl7
from hl7apy.parser import parse_message
from hl7apy.core import Message
d, n = sys.argv[1], int(sys.argv[2])
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
run("python_hl7", hl7.parse, n)
# hl7apy is ~100x slower: measure it on a tenth of the messages (the rate is per message).
run("python_hl7apy", lambda m: parse_message(m, find_groups=False, validation_level=2), max(1000, n // 10))
PY
)
echo "$PEERS"
python3 - "$OURS" "$PEERS" <<'PY'
import re, sys
rates = dict(re.findall(r"HL7V2-BENCH (\S+) msgs_per_s=(\d+)", sys.argv[1] + "\n" + sys.argv[2]))
ours = float(rates["huitong_parse"])
for peer in ("python_hl7", "python_hl7apy"):
    if peer in rates:
        print(f"huitong parse / {peer}: {ours / float(rates[peer]):.1f}x")
PY
