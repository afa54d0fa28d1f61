#!/usr/bin/env python3
"""MLLP load client for scripts/bench-hl7v2.sh: sends N messages over C connections, each
connection waiting for the ACK of one message before sending the next (as HIS interface engines
do), and prints messages/s and ACK latency percentiles.

    bench_mllp_client.py HOST PORT DIR N CONNECTIONS

Every message gets a fresh MSH-10 (control id), so none is taken for a re-send of another, and
empty MSH-15/16 (original acknowledgement mode: one ACK per message, sent after the commit); some
samples say NE (never acknowledge), which would leave a waiting sender hanging.
Prints one line: MLLP-BENCH messages=.. secs=.. msgs_per_s=.. p50_ms=.. p99_ms=.. max_ms=.. and
the ACK codes seen; exits 1 if any ACK is not AA.

The corpus is repeated, so by default most messages re-send content the store already holds
(which the gateway stores as no new version). MLLP_DISTINCT=1 makes every message name its own
patient and visit (PID-3 and PV1-19 get a per-message suffix), so that every message writes.
"""
import asyncio
import os
import sys
import time

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"


def split_messages(raw: bytes):
    text = raw.decode("utf-8-sig", "replace").replace("\r\n", "\r").replace("\n", "\r")
    out, cur = [], []
    for seg in text.split("\r"):
        if seg.startswith("MSH") and cur:
            out.append(cur)
            cur = []
        if seg.strip():
            cur.append(seg)
    if cur:
        out.append(cur)
    return out


def with_control_id(segments, control_id):
    msh = segments[0]
    sep = msh[3]
    fields = msh.split(sep)
    while len(fields) < 16:
        fields.append("")
    fields[9] = control_id
    fields[14] = fields[15] = ""
    return "\r".join([sep.join(fields)] + segments[1:]).encode("utf-8") + CR


def distinct(segments, i):
    """Every patient identifier (PID-2, -3, -4, -19, -20; MRG-1), the account number (PID-18) and the visit number (PV1-19),
    first component of each repetition, made unique to message i: a patient that kept any one
    identifier of the corpus would be the same person as every other copy (records resolve by
    any of their identifiers), and would gather all their identifiers."""
    sep = segments[0][3]
    comp = segments[0][4] if len(segments[0]) > 4 else "^"
    rep = segments[0][5] if len(segments[0]) > 5 else "~"
    out = []
    for seg in segments:
        for name, n in (("PID", 2), ("PID", 3), ("PID", 4), ("PID", 18), ("PID", 19), ("PID", 20), ("MRG", 1), ("PV1", 19)):
            if seg.startswith(name + sep):
                f = seg.split(sep)
                if len(f) > n and f[n]:
                    f[n] = rep.join(
                        comp.join([c[0] + f"-{i}"] + c[1:]) if c[0] else r
                        for r in f[n].split(rep)
                        for c in [r.split(comp)]
                    )
                seg = sep.join(f)
        out.append(seg)
    return out


async def sender(host, port, work, latencies, codes):
    reader, writer = await asyncio.open_connection(host, port)
    buf = b""
    for payload in work:
        t = time.perf_counter()
        writer.write(SB + payload + EB + CR)
        await writer.drain()
        while EB not in buf:
            # No ACK within 30 s is a failure of the run, not a wait without end.
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            if not chunk:
                raise RuntimeError("connection closed before the ACK")
            buf += chunk
        frame, buf = buf.split(EB, 1)
        buf = buf[1:] if buf.startswith(CR) else buf
        latencies.append(time.perf_counter() - t)
        ack = frame.lstrip(SB).decode("utf-8", "replace")
        code = "?"
        for seg in ack.split("\r"):
            if seg.startswith("MSA"):
                code = seg.split(seg[3])[1] if len(seg) > 4 else "?"
        codes[code] = codes.get(code, 0) + 1
    writer.close()
    await writer.wait_closed()


async def main():
    host, port, d, n, c = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    corpus = []
    for f in sorted(os.listdir(d)):
        with open(os.path.join(d, f), "rb") as fh:
            corpus.extend(split_messages(fh.read()))
    run = f"{os.getpid()}-{int(time.time())}"
    unique = os.environ.get("MLLP_DISTINCT") == "1"
    payloads = [
        with_control_id(distinct(corpus[i % len(corpus)], i) if unique else corpus[i % len(corpus)], f"B{run}-{i}")
        for i in range(n)
    ]
    shares = [payloads[k::c] for k in range(c)]
    latencies, codes = [], {}
    t = time.perf_counter()
    await asyncio.gather(*(sender(host, port, s, latencies, codes) for s in shares))
    secs = time.perf_counter() - t
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    print(
        f"MLLP-BENCH messages={n} connections={c} secs={secs:.3f} msgs_per_s={n / secs:.0f} "
        f"p50_ms={pct(0.50):.2f} p99_ms={pct(0.99):.2f} max_ms={latencies[-1] * 1000:.2f} "
        f"acks={','.join(f'{k}:{v}' for k, v in sorted(codes.items()))}"
    )
    sys.exit(0 if set(codes) == {"AA"} else 1)


asyncio.run(main())
