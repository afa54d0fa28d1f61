#!/usr/bin/env bash
# Cost of the security stack (issue 11): reads, searches and MLLP ingest with authentication +
# authorisation + audit on versus off, on the same binary and machine, printed as a ratio.
#
# "off" is the gateway without [auth]/[audit]; "on" verifies an ES256 bearer token (key made by the
# openssl CLI, token by `huitong token`) on every request, runs the scope/filter layer for a
# user/*.cruds principal with a domain (so responses are judged), and writes one hash-chained
# AuditEvent per interaction; MLLP senders are identified by source address.
# Environment: N (2000 reads and searches each), CLIENTS (4), PROFILE (release; `debug` reuses the
# test build), HUITONG_BIN (a built binary: no build), CARGO_TARGET_DIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
n="${N:-2000}"
clients="${CLIENTS:-4}"
profile="${PROFILE:-release}"
bin="${HUITONG_BIN:-}"   # an already built binary, to skip the build
if [ -z "$bin" ]; then
    if [ "$profile" = release ]; then
        (cd "$root" && cargo build --release --bin huitong)
    else
        (cd "$root" && cargo build --bin huitong)
    fi
    bin="${CARGO_TARGET_DIR:-$root/target}/$profile/huitong"
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/huitong-bench-sec.XXXXXX")"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.pem" 2>/dev/null
"$bin" token --key "$work/key.pem" --kid bench --jwks > "$work/jwks.json"
token="$("$bin" token --key "$work/key.pem" --kid bench --aud bench --scope 'user/*.cruds' --domain hosp-a --role treating-clinician --lifetime 86400)"
cat > "$work/on.toml" <<TOML
[auth]
jwks-file = "$work/jwks.json"
audience = "bench"
[[auth.senders]]
id = "bench-his"
mllp-ips = ["127.0.0.1"]
[audit]
retention-days = 180
TOML
: > "$work/off.toml"

run() { # name config token
    local name="$1" config="$2" tok="$3" port mport
    port="$(free_port)"; mport="$(free_port)"
    rm -rf "$work/data-$name"
    "$bin" serve --config "$config" --addr "127.0.0.1:$port" --mllp-addr "127.0.0.1:$mport" \
        --data "$work/data-$name" --log-level warn >"$work/$name.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    python3 "$here/bench_security_client.py" "http://127.0.0.1:$port/fhir" "$tok" "127.0.0.1:$mport" "$n" "$clients" > "$work/$name.json"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

echo "== machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); $("$bin" version); profile $profile; N=$n CLIENTS=$clients"
run off "$work/off.toml" -
run on "$work/on.toml" "$token"
if [ "$("$bin" audit verify --data "$work/data-on" | grep -c intact)" != 1 ]; then
    echo "bench-security: the audit trail of the run does not verify" >&2; exit 1
fi
echo "== audit trail of the 'on' run: $("$bin" audit verify --data "$work/data-on")"
python3 - "$work/off.json" "$work/on.json" <<'PY'
import json, sys
off, on = (json.load(open(p)) for p in sys.argv[1:3])
print(f"{'workload':<10} {'off req/s':>10} {'on req/s':>10} {'on/off':>7} {'cost':>6}")
for k in ("read", "search", "mllp"):
    r = on[k] / off[k]
    print(f"{k:<10} {off[k]:>10.0f} {on[k]:>10.0f} {r:>7.2f} {100 * (1 - r):>5.0f}%")
PY
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
