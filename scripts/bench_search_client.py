#!/usr/bin/env python3
"""Runs a fixed mix of 30 named searches against a loaded Huitong server and prints, per search,
p50/p99 latency, requests/s, the Bundle's total and the entries on the page, next to the target of
issue 6 that applies to it.

Used by scripts/bench-search.sh; python3 standard library only. The values searched for (a
patient, its identifier, its most frequent Observation code, a condition code, an organization
name, ...) are looked up first, from one patient of the store, so the mix works on any size. Each
search then runs N times in turn on one keep-alive connection after one warm-up (sequential: the
figures are latency, not throughput under load), or for at most --seconds per search when it is
slow (the runs made are printed). Every answer must be a 200 searchset Bundle.
"""

import argparse
import collections
import http.client
import json
import re
import sys
import time
import urllib.parse

# The targets: p50 < 5 ms for token/date/reference searches returning <= 20 results,
# p99 < 50 ms for two-level chains and _revinclude.
P50_TARGET_KINDS = {"token", "date", "reference"}
P99_TARGET_KINDS = {"chain 2", "_revinclude"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("base", help="FHIR base URL, e.g. http://127.0.0.1:8080/fhir")
    p.add_argument("n", type=int, help="runs per search")
    p.add_argument("--seconds", type=float, default=20.0, help="time budget per search")
    return p.parse_args()


class Client:
    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        self.prefix = u.path

    def get(self, path):
        self.conn.request("GET", path, headers={"Accept": "application/fhir+json"})
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"bench-search: {path}: {r.status} {body[:400]!r}")
        b = json.loads(body)
        if b.get("type") != "searchset":
            sys.exit(f"bench-search: {path}: not a searchset Bundle")
        return b

    def search(self, query):
        return self.get(f"{self.prefix}/{query}")


def q(s):
    return urllib.parse.quote(s, safe="")


def resources(bundle, mode="match"):
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode", "match") == mode]


def next_link(bundle):
    for link in bundle.get("link", []):
        if link.get("relation") == "next":
            u = urllib.parse.urlparse(link["url"])
            return u.path + (f"?{u.query}" if u.query else "")
    return None


def discover(c):
    """The values the mix searches for, from one patient with observations and conditions."""
    patients = resources(c.search("Patient?_count=50&_total=none"))
    for patient in patients:
        pid = patient["id"]
        obs = resources(c.search(f"Observation?subject=Patient/{pid}&_count=200&_total=none"))
        conds = resources(c.search(f"Condition?subject=Patient/{pid}&_count=50&_total=none"))
        found = c.search(f"Encounter?subject=Patient/{pid}&_count=50&_total=none&_include=Encounter:service-provider")
        orgs, encs = resources(found, "include"), resources(found)
        measured = [o for o in obs if "valueQuantity" in o and "system" in o["code"]["coding"][0]]
        if len({o["code"]["coding"][0]["code"] for o in measured}) > 1 and conds and encs and orgs:
            break
    else:
        sys.exit("bench-search: no patient with observations, conditions and encounters")
    # The patient's most frequent measured code (one with a valueQuantity) and the next one; the
    # patient is one that has two.
    loinc = collections.Counter((o["code"]["coding"][0]["system"], o["code"]["coding"][0]["code"]) for o in measured)
    (common, _), (other, _) = loinc.most_common(2)
    values = sorted(
        o["valueQuantity"]["value"]
        for o in measured
        if (o["code"]["coding"][0]["system"], o["code"]["coding"][0]["code"]) == common
    )
    quantity = values[len(values) // 2]
    synthea = next(i["value"] for i in patient["identifier"] if i.get("system") == "https://github.com/synthetichealth/synthea")
    cond = conds[0]["code"]["coding"][0]
    name = patient["name"][0]
    # The encounter with the most observations, and the year of the patient's median observation.
    by_encounter = collections.Counter(o["encounter"]["reference"] for o in obs if "encounter" in o)
    encounter = by_encounter.most_common(1)[0][0].rsplit("/", 1)[1]
    years = sorted(o["effectiveDateTime"][:4] for o in obs if "effectiveDateTime" in o)
    word = re.split(r"\W+", cond.get("display", "x"))[0].lower()
    return {
        "pid": pid,
        "ident": q(f"https://github.com/synthetichealth/synthea|{synthea}"),
        "code": q(f"{common[0]}|{common[1]}"),
        "code2": q(f"{common[0]}|{common[1]}") + "," + q(f"{other[0]}|{other[1]}"),
        "quantity": quantity,
        "cond": q(f"{cond['system']}|{cond['code']}"),
        "family": q(name["family"]),
        "family3": q(name["family"][:3]),
        "given": q(name["given"][0]),
        "eid": encounter,
        "year": years[len(years) // 2],
        "word": q(word),
        "org": q(orgs[0]["name"]),
    }


def mix(v):
    """The 30 searches: (name, kind, query). `kind` decides which target applies."""
    pid = v["pid"]
    return [
        ("identifier", "token", f"Patient?identifier={v['ident']}"),
        ("code + subject", "token", f"Observation?subject=Patient/{pid}&code={v['code']}&_count=20"),
        ("code", "token", f"Observation?code={v['code']}&_count=20"),
        ("code, _total=none", "token", f"Observation?code={v['code']}&_count=20&_total=none"),
        ("code OR code", "token", f"Observation?code={v['code2']}&_count=20&_total=none"),
        ("gender", "token", "Patient?gender=female&_count=20"),
        ("code:text", "token", f"Condition?code:text={v['word']}&_count=20"),
        ("family prefix", "string", f"Patient?family={v['family3']}&_count=20"),
        ("given:exact", "string", f"Patient?given:exact={v['given']}&_count=20"),
        ("date month", "date", "Observation?date=ge2015-01-01&date=lt2015-02-01&_count=20"),
        ("date + subject", "date", f"Observation?subject=Patient/{pid}&date=ge{v['year']}-01-01&date=lt{int(v['year']) + 1}-01-01&_count=20"),
        ("birthdate lt", "date", "Patient?birthdate=lt1940-01-01&_count=20"),
        ("subject", "reference", f"Observation?subject=Patient/{pid}&_count=20"),
        ("patient (id only)", "reference", f"Encounter?patient={pid}&_count=20"),
        ("encounter", "reference", f"Observation?encounter=Encounter/{v['eid']}&_count=20"),
        ("code + value ge", "quantity", f"Observation?code={v['code']}&value-quantity=ge{v['quantity']}&_count=20"),
        ("subject:Patient.family", "chain 1", f"Observation?subject:Patient.family={v['family']}&_count=20"),
        ("subject.identifier", "chain 1", f"Observation?subject.identifier={v['ident']}&_count=20"),
        ("encounter.subject.identifier", "chain 2", f"Observation?encounter.subject.identifier={v['ident']}&_count=20"),
        ("encounter.service-provider.name", "chain 2", f"Observation?encounter.service-provider.name={v['org']}&_count=20"),
        ("_include subject", "_include", f"Observation?subject=Patient/{pid}&_include=Observation:subject&_count=20"),
        (
            "_include org + practitioner",
            "_include",
            f"Encounter?subject=Patient/{pid}&_include=Encounter:service-provider&_include=Encounter:participant&_count=20",
        ),
        ("_revinclude Encounter", "_revinclude", f"Patient?_id={pid}&_revinclude=Encounter:subject"),
        ("_revinclude Observation", "_revinclude", f"Encounter?subject=Patient/{pid}&_count=10&_revinclude=Observation:encounter"),
        ("_has Observation code", "_has", f"Patient?_has:Observation:subject:code={v['code']}&_count=20"),
        ("_has Condition code", "_has", f"Patient?_has:Condition:subject:code={v['cond']}&_count=20"),
        ("code _sort=-date", "sort + paging", f"Observation?code={v['code']}&_sort=-date&_count=20"),
        ("code _sort=-date next page", "sort + paging", None),
        ("_sort=family,given", "sort + paging", "Patient?_sort=family,given&_count=20"),
        ("status keyset page", "sort + paging", "Observation?status=final&_count=20&_total=none"),
    ]


def main():
    args = parse_args()
    c = Client(args.base)
    v = discover(c)
    searches = mix(v)
    assert len(searches) == 30
    print(
        f"values: patient {v['pid']}, code {urllib.parse.unquote(v['code'])} (value {v['quantity']}), "
        f"condition {urllib.parse.unquote(v['cond'])} ({v['word']}), year {v['year']}, org {urllib.parse.unquote(v['org'])}"
    )
    print(
        f"{'search':<32} {'kind':<13} {'runs':>5} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} "
        f"{'total':>8} {'entries':>7}  target"
    )
    met, missed = 0, 0
    previous = None
    for name, kind, query in searches:
        path = f"{c.prefix}/{query}" if query else next_link(previous)
        if path is None:
            print(f"{name:<32} {kind:<13} no next link")
            continue
        b = c.get(path)  # warm
        previous = b
        times = []
        t0 = time.perf_counter()
        while len(times) < args.n and time.perf_counter() - t0 < args.seconds:
            s = time.perf_counter()
            b = c.get(path)
            times.append((time.perf_counter() - s) * 1000)
        elapsed = time.perf_counter() - t0
        times.sort()
        p50 = times[len(times) // 2]
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        entries = len(b.get("entry", []))
        target = ""
        if kind in P50_TARGET_KINDS and entries <= 20:
            ok = p50 < 5
            target = f"p50 < 5 ms: {'met' if ok else 'MISSED'}"
        elif kind in P99_TARGET_KINDS:
            ok = p99 < 50
            target = f"p99 < 50 ms: {'met' if ok else 'MISSED'}"
        if target:
            met, missed = (met + 1, missed) if ok else (met, missed + 1)
        print(
            f"{name:<32} {kind:<13} {len(times):>5} {p50:8.2f} {p99:8.2f} {len(times) / elapsed:7.0f} "
            f"{b.get('total', '-'):>8} {entries:>7}  {target}",
            flush=True,
        )
    print(f"targets: {met} met, {missed} missed")


if __name__ == "__main__":
    main()
