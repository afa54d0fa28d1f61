#!/usr/bin/env python3
"""Loads Synthea bundles into a running Huitong server and prints the ingest rate.

Used by scripts/bench-ingest.sh; python3 standard library only. Every body is read and its entries
counted before the clock starts, so the timed part is HTTP plus the check of each response (status
200, one response entry per request entry, every entry status 2xx). The loader's own CPU time is
printed next to the server's so a reader can see the loader is not the bottleneck.
"""

import argparse
import http.client
import json
import os
import queue
import sys
import threading
import time
import urllib.parse


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("base", help="FHIR base URL, e.g. http://127.0.0.1:8080/fhir")
    p.add_argument("bundles", help="directory of Synthea bundle files (*.json)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients for the patient bundles")
    p.add_argument("--server-pid", type=int, help="server process, to report its CPU time per phase")
    p.add_argument("--patient-id-file", help="write the id of one created Patient here")
    p.add_argument(
        "--prefer",
        default="return=minimal",
        help="Prefer header sent with every Bundle ('' for none: the server then echoes every resource)",
    )
    return p.parse_args()


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds (None without a pid)."""
    if not pid:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    t = os.times()
    return t.user + t.system


class Bundle:
    def __init__(self, path):
        self.name = os.path.basename(path)
        with open(path, "rb") as f:
            self.body = f.read()
        doc = json.loads(self.body)
        self.type = doc.get("type")
        self.entries = len(doc.get("entry", []))


class Failure(Exception):
    pass


def post(conn, path, bundle, prefer):
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if prefer:
        headers["Prefer"] = prefer
    conn.request("POST", path, body=bundle.body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise Failure(f"{bundle.name}: HTTP {resp.status}: {data[:600].decode('utf-8', 'replace')}")
    doc = json.loads(data)
    want = bundle.type + "-response"
    if doc.get("type") != want:
        raise Failure(f"{bundle.name}: response Bundle.type {doc.get('type')!r}, expected {want}")
    entries = doc.get("entry", [])
    if len(entries) != bundle.entries:
        raise Failure(f"{bundle.name}: {len(entries)} response entries for {bundle.entries} request entries")
    patient_id = None
    for i, e in enumerate(entries):
        status = e.get("response", {}).get("status", "")
        if not status.startswith("2"):
            raise Failure(f"{bundle.name}: entry {i} failed: {status} {json.dumps(e)[:600]}")
        loc = e.get("response", {}).get("location", "")
        if patient_id is None and "Patient/" in loc:
            patient_id = loc.split("Patient/", 1)[1].split("/", 1)[0]
    return patient_id


def run_phase(base, bundles, clients, prefer):
    """POSTs the bundles with `clients` keep-alive connections; returns (seconds, a Patient id)."""
    url = urllib.parse.urlsplit(base)
    work = queue.Queue()
    for b in bundles:
        work.put(b)
    errors, patient_ids = [], []

    def client():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        try:
            while not errors:
                try:
                    b = work.get_nowait()
                except queue.Empty:
                    return
                pid = post(conn, url.path, b, prefer)
                if pid:
                    patient_ids.append(pid)
        except Exception as e:  # reported below; the phase then fails
            errors.append(e)
        finally:
            conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(max(1, min(clients, len(bundles))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, (patient_ids[0] if patient_ids else None)


def main():
    args = parse_args()
    files = sorted(os.path.join(args.bundles, f) for f in os.listdir(args.bundles) if f.endswith(".json"))
    bundles = [Bundle(f) for f in files]
    first = [b for b in bundles if b.name.startswith(("hospitalInformation", "practitionerInformation"))]
    patients = [b for b in bundles if b not in first]
    # Largest first, so the last few clients do not finish long after the others.
    patients.sort(key=lambda b: len(b.body), reverse=True)
    if not first or not patients:
        sys.exit(f"expected hospital/practitioner batches and patient bundles in {args.bundles}")
    bad = [b.name for b in patients if b.type != "transaction"]
    if bad:
        sys.exit(f"not transaction bundles: {bad}")

    def phase(label, group, clients):
        cpu0, srv0 = own_cpu_seconds(), proc_cpu_seconds(args.server_pid)
        secs, pid = run_phase(args.base, group, clients, args.prefer)
        cpu, srv = own_cpu_seconds() - cpu0, proc_cpu_seconds(args.server_pid)
        n = sum(b.entries for b in group)
        mb = sum(len(b.body) for b in group) / 1e6
        srv_txt = f", server CPU {srv - srv0:.2f} s" if srv is not None else ""
        print(
            f"{label}: {len(group)} bundles, {n} resources, {mb:.1f} MB, {clients} client(s): "
            f"{secs:.2f} s, {n / secs:,.0f} resources/s (loader CPU {cpu:.2f} s{srv_txt})"
        )
        return n, secs, pid

    print(f"Prefer: {args.prefer or '(none)'}")
    try:
        n1, s1, _ = phase("batch (hospital + practitioner, conditional creates)", first, 1)
        n2, s2, patient_id = phase("transaction (patient bundles)", patients, args.clients)
    except Failure as e:
        sys.exit(f"FAILED: {e}")
    total = n1 + n2
    print(f"total: {total} resources in {s1 + s2:.2f} s: {total / (s1 + s2):,.0f} resources/s")
    print(f"TRANSACTION_RESOURCES_PER_SECOND={n2 / s2:.0f}")
    if args.patient_id_file and patient_id:
        with open(args.patient_id_file, "w") as f:
            f.write(patient_id)


if __name__ == "__main__":
    main()
