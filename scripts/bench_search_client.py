#!/usr/bin/env python3
"""Runs a fixed mix of searches against a loaded Huitong server and prints p50/p99 per query type.

Used by scripts/bench-search.sh; python3 standard library only. Each query runs N times in turn on
one keep-alive connection (sequential: latency, not throughput under load); every answer must be a
200 searchset Bundle.
"""

import http.client
import json
import sys
import time
import urllib.parse


def get(conn, path):
    conn.request("GET", path, headers={"Accept": "application/fhir+json"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        sys.exit(f"bench-search: {path}: {r.status} {body[:300]!r}")
    return json.loads(body)


def main():
    base, n = sys.argv[1], int(sys.argv[2])
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    p = u.path
    one = get(conn, f"{p}/Patient?_count=1")
    pid = one["entry"][0]["resource"]["id"]
    obs = get(conn, f"{p}/Observation?subject=Patient/{pid}&_count=1")
    coding = obs["entry"][0]["resource"]["code"]["coding"][0]
    code = urllib.parse.quote(f"{coding['system']}|{coding['code']}")
    family = one["entry"][0]["resource"]["name"][0]["family"][:3]
    mix = [
        ("token", f"{p}/Observation?code={code}&_count=20"),
        ("token+total=none", f"{p}/Observation?code={code}&_count=20&_total=none"),
        ("string", f"{p}/Patient?family={urllib.parse.quote(family)}"),
        ("date range", f"{p}/Observation?date=ge2015-01-01&date=lt2015-02-01&_count=20"),
        ("reference", f"{p}/Observation?subject=Patient/{pid}&_count=20"),
        ("chain 1", f"{p}/Observation?subject:Patient.family={urllib.parse.quote(family)}&_count=20"),
        ("chain 2", f"{p}/Observation?encounter.service-provider.name=a&_count=20"),
        ("_include", f"{p}/Observation?subject=Patient/{pid}&_include=Observation:subject&_count=20"),
        ("_revinclude", f"{p}/Patient?_id={pid}&_revinclude=Encounter:subject"),
        ("_has", f"{p}/Patient?_has:Observation:subject:code={code}&_count=20"),
        ("sort+page", f"{p}/Observation?_sort=-date&_count=20&_offset=100"),
        ("keyset page", f"{p}/Observation?status=final&_count=20&_total=none"),
    ]
    print(f"{'query':<20} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}  matches")
    for name, path in mix:
        get(conn, path)  # warm
        times = []
        t0 = time.perf_counter()
        for _ in range(n):
            s = time.perf_counter()
            b = get(conn, path)
            times.append((time.perf_counter() - s) * 1000)
        elapsed = time.perf_counter() - t0
        times.sort()
        p50 = times[len(times) // 2]
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"{name:<20} {p50:8.2f} {p99:8.2f} {n / elapsed:8.0f}  {b.get('total', '-')}")


if __name__ == "__main__":
    main()
