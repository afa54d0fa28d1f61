"""The Synthea bundles, read in place from the corpus archive, and repetitions of the patient
bundles with fresh ids (used by bench_ingest_loader.py to reach a resource count such as 1M).

A repetition must be a different population to the server, not a re-send of the same one: every
uuid a patient bundle defines (its entries' `urn:uuid:` fullUrls, which are also the resources'
ids, the `urn:uuid:` references between them and the Synthea and medical-record identifiers) gets a
new value, the same new value everywhere in the bundle, so references stay consistent and
identifier searches stay as selective as in one copy. The uuids a patient bundle only refers to
(the conditional references `Organization?identifier=...|uuid` to the hospital batch, loaded once)
are left alone. Only the first 8 hex digits of a uuid change (to the repetition number), so a
bundle is cut once into the pieces between those 8-digit runs and every repetition is one
`bytes.join`: no JSON is parsed or written again while the clock runs.
"""

import json
import os
import re
import tarfile

UUID = re.compile(rb"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Bundle:
    def __init__(self, name, body):
        self.name = name
        self.body = body
        doc = json.loads(body)
        self.type = doc.get("type")
        self.entries = len(doc.get("entry", []))
        self._defined = {
            e["fullUrl"][len("urn:uuid:") :].encode()
            for e in doc.get("entry", [])
            if str(e.get("fullUrl", "")).startswith("urn:uuid:")
        }
        self._pieces = None

    def repetition(self, k):
        """The body of repetition `k` (0 is the bundle as shipped)."""
        if k == 0:
            return self.body
        if self._pieces is None:
            pieces, at = [], 0
            for m in UUID.finditer(self.body):
                if m.group(0) in self._defined:
                    pieces.append(self.body[at : m.start()])
                    at = m.start() + 8
            pieces.append(self.body[at:])
            self._pieces = pieces
        return f"{k:08x}".encode().join(self._pieces)


def read(source):
    """The bundles of `source`: a directory of *.json files or the corpus .tgz (read in place)."""
    if os.path.isdir(source):
        names = sorted(f for f in os.listdir(source) if f.endswith(".json"))
        out = []
        for f in names:
            with open(os.path.join(source, f), "rb") as fh:
                out.append(Bundle(f, fh.read()))
        return out
    out = []
    with tarfile.open(source, "r:gz") as tar:
        for m in tar:
            if m.isfile() and m.name.endswith(".json"):
                out.append(Bundle(os.path.basename(m.name), tar.extractfile(m).read()))
    out.sort(key=lambda b: b.name)
    return out
