#!/usr/bin/env python3
"""Throughput of reads, searches and MLLP ingest against one running Huitong, for
scripts/bench-security.sh (run once with the security stack off, once on). Standard library only.

Usage: bench_security_client.py BASE TOKEN MLLP_HOST:PORT N CLIENTS
TOKEN may be '-' (no Authorization header). Prints one JSON object with requests per second.
"""

import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse


def conn_for(base):
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60), u.path


def request(conn, method, path, headers, body=None):
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"bench-security: {method} {path}: {r.status} {data[:300]!r}")
    return data


def run_parallel(base, headers, paths, clients):
    """Each client walks its share of paths on its own keep-alive connection."""
    def work(share):
        conn, _ = conn_for(base)
        for p in share:
            request(conn, "GET", p, headers)
    shares = [paths[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=work, args=(s,)) for s in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(paths) / (time.perf_counter() - t0)


def mllp(hostport, n, tag):
    host, port = hostport.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    t0 = time.perf_counter()
    for i in range(n):
        msg = (f"MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A01^ADT_A01|{tag}{i}|P|2.5\r"
               f"EVN|A01|20240102030405\rPID|1||M{tag}{i}^^^H1^MR||Wang^Li||19800102|F\r"
               f"PV1|1|I|W1^R1^B1\r")
        s.sendall(b"\x0b" + msg.encode() + b"\x1c\r")
        buf = b""
        while not buf.endswith(b"\x1c\r"):
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("bench-security: MLLP connection closed")
            buf += chunk
        if b"MSA|AA" not in buf:
            sys.exit(f"bench-security: MLLP not accepted: {buf[:300]!r}")
    return n / (time.perf_counter() - t0)


def main():
    base, token, hostport, n, clients = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    if token != "-":
        headers["Authorization"] = f"Bearer {token}"
    conn, p = conn_for(base)
    patients = 50
    for i in range(patients):
        request(conn, "PUT", f"{p}/Patient/p{i}", headers,
                json.dumps({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": f"F{i}"}]}))
        request(conn, "PUT", f"{p}/Observation/o{i}", headers,
                json.dumps({"resourceType": "Observation", "id": f"o{i}", "status": "final",
                            "code": {"text": "x"}, "subject": {"reference": f"Patient/p{i}"}}))
    reads = [f"{p}/Patient/p{i % patients}" for i in range(n)]
    searches = [f"{p}/Observation?subject=Patient/p{i % patients}" for i in range(n)]
    out = {
        "read": run_parallel(base, headers, reads, clients),
        "search": run_parallel(base, headers, searches, clients),
        "mllp": mllp(hostport, max(n // 10, 10), f"B{int(time.time())}-"),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
