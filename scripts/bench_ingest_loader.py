#!/usr/bin/env python3
"""Loads Synthea bundles into a running Huitong server and prints the ingest rate.

Used by scripts/bench-ingest.sh and scripts/bench-search.sh; python3 standard library only. The
bundles come from a directory or straight from the corpus .tgz. With --total the patient bundles
are sent again as repetitions with fresh ids (see synthea_repeat.py) until that many resources
have been sent. Every body is read and its entries counted before the clock starts, so the timed
part is HTTP plus the check of each response (status 200, one response entry per request entry,
every entry status 2xx). The loader's own CPU time is printed next to the server's so a reader can
see the loader is not the bottleneck.
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

import synthea_repeat


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("base", help="FHIR base URL, e.g. http://127.0.0.1:8080/fhir")
    p.add_argument("bundles", help="directory of Synthea bundle files (*.json) or the corpus .tgz")
    p.add_argument(
        "--total",
        type=int,
        help="send repetitions of the patient bundles with fresh ids until this many resources are sent",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        help="stop starting new patient bundles after this long (the size reached is printed)",
    )
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


class Failure(Exception):
    pass


def post(conn, path, bundle, body, prefer):
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if prefer:
        headers["Prefer"] = prefer
    conn.request("POST", path, body=body, headers=headers)
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


def run_phase(base, work, clients, prefer, deadline=None):
    """POSTs the (bundle, repetition) pairs of `work` with `clients` keep-alive connections.

    Returns (seconds, resources sent, bundles sent, a Patient id). With a `deadline`
    (time.perf_counter() value) no bundle is started after it; those started are finished.
    """
    url = urllib.parse.urlsplit(base)
    todo = queue.Queue()
    for w in work:
        todo.put(w)
    errors, patient_ids, sent = [], [], []
    progress = Progress(sum(b.entries for b, _ in work))

    def client():
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
        try:
            while not errors:
                if deadline is not None and time.perf_counter() > deadline:
                    return
                try:
                    b, k = todo.get_nowait()
                except queue.Empty:
                    return
                pid = post(conn, url.path, b, b.repetition(k), prefer)
                sent.append(b.entries)
                progress.add(b.entries)
                if pid:
                    patient_ids.append(pid)
        except Exception as e:  # reported below; the phase then fails
            errors.append(e)
        finally:
            conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(max(1, min(clients, len(work))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, sum(sent), len(sent), (patient_ids[0] if patient_ids else None)


class Progress:
    """A line on stderr every ~50,000 resources, so a long load can be watched."""

    def __init__(self, planned):
        self.planned, self.done, self.next = planned, 0, 50_000
        self.start = time.perf_counter()
        self.lock = threading.Lock()

    def add(self, n):
        with self.lock:
            self.done += n
            if self.done >= self.next and self.planned > 100_000:
                self.next += 50_000
                secs = time.perf_counter() - self.start
                print(
                    f"  ... {self.done:,} of {self.planned:,} resources, {secs:.0f} s, "
                    f"{self.done / secs:,.0f} resources/s",
                    file=sys.stderr,
                    flush=True,
                )


def patient_work(patients, total, already):
    """(bundle, repetition) pairs: one copy of the patient bundles, or repetitions until `total`
    resources (counting the `already` sent) are reached."""
    if total is None:
        return [(b, 0) for b in patients]
    work, n, k = [], already, 0
    while n < total:
        for b in patients:
            if n >= total:
                break
            work.append((b, k))
            n += b.entries
        k += 1
    return work


def main():
    args = parse_args()
    bundles = synthea_repeat.read(args.bundles)
    first = [b for b in bundles if b.name.startswith(("hospitalInformation", "practitionerInformation"))]
    patients = [b for b in bundles if b not in first]
    # Largest first, so the last few clients do not finish long after the others.
    patients.sort(key=lambda b: len(b.body), reverse=True)
    if not first or not patients:
        sys.exit(f"expected hospital/practitioner batches and patient bundles in {args.bundles}")
    bad = [b.name for b in patients if b.type != "transaction"]
    if bad:
        sys.exit(f"not transaction bundles: {bad}")

    def phase(label, work, clients, deadline=None):
        cpu0, srv0 = own_cpu_seconds(), proc_cpu_seconds(args.server_pid)
        secs, n, count, pid = run_phase(args.base, work, clients, args.prefer, deadline)
        cpu, srv = own_cpu_seconds() - cpu0, proc_cpu_seconds(args.server_pid)
        mb = sum(len(b.body) for b, _ in work[:count]) / 1e6
        reps = len({k for _, k in work[:count]})
        srv_txt = f", server CPU {srv - srv0:.2f} s" if srv is not None else ""
        rep_txt = f" ({reps} repetition(s) with fresh ids)" if reps > 1 else ""
        print(
            f"{label}: {count} bundles{rep_txt}, {n} resources, {mb:.1f} MB, {clients} client(s): "
            f"{secs:.2f} s, {n / secs:,.0f} resources/s (loader CPU {cpu:.2f} s{srv_txt})"
        )
        if count < len(work):
            print(f"stopped at --max-seconds {args.max_seconds:g}: {len(work) - count} planned bundles not sent")
        return n, secs, pid

    print(f"Prefer: {args.prefer or '(none)'}")
    try:
        n1, s1, _ = phase("batch (hospital + practitioner, conditional creates)", [(b, 0) for b in first], 1)
        work = patient_work(patients, args.total, n1)
        deadline = time.perf_counter() + args.max_seconds if args.max_seconds else None
        n2, s2, patient_id = phase("transaction (patient bundles)", work, args.clients, deadline)
    except Failure as e:
        sys.exit(f"FAILED: {e}")
    total = n1 + n2
    print(f"total: {total} resources in {s1 + s2:.2f} s: {total / (s1 + s2):,.0f} resources/s")
    print(f"TRANSACTION_RESOURCES_PER_SECOND={n2 / s2:.0f}")
    print(f"RESOURCES_LOADED={total}")
    if args.patient_id_file and patient_id:
        with open(args.patient_id_file, "w") as f:
            f.write(patient_id)


if __name__ == "__main__":
    main()
