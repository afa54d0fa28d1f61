#!/usr/bin/env python3
"""Writes the TestScript suites under conformance/ from the compact tables below.

Run from the repository root:  python3 scripts/gen-conformance.py
The generated scripts and fixtures are committed; edit the tables here, not the JSON.

Conventions of the generated scripts (see conformance/README.md):
- every resource a script creates carries meta.tag {RUN_TAG}|<script id> and, for patients, an
  identifier urn:huitong:conformance:mrn|<script id>, so searches and conditional operations of one
  script never see another's data, whatever ran before on the server;
- ids the server assigns are captured as variables (`<responseId>Id`, expression `id` on the
  create response) and substituted into later requests and fixture bodies (`${...}`);
- what a script creates it deletes in its teardown.
"""
import json
import os
import shutil
from urllib.parse import quote

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conformance")
OPS = "http://terminology.hl7.org/CodeSystem/testscript-operation-codes"
FAMILY = "http://huitong.dev/fhir/conformance/family"
RUN_TAG = "http://huitong.dev/fhir/conformance/run"
MRN = "urn:huitong:conformance:mrn"
CN = "http://huitong.dev/fhir/cn/StructureDefinition/"

TAG = {"tag": [{"system": RUN_TAG, "code": "${runTag}"}]}
TAGQ = "_tag=" + quote(RUN_TAG, safe="") + "%7C${runTag}"


def op(code, **kw):
    o = {"type": {"system": OPS, "code": code}}
    if "headers" in kw:
        kw["requestHeader"] = [{"field": k, "value": v} for k, v in kw.pop("headers").items()]
    o.update(kw)
    o.setdefault("encodeRequestUrl", True)
    return {"operation": o}


def a(description, **kw):
    d = {"description": description}
    d.update(kw)
    d.setdefault("warningOnly", False)
    return {"assert": d}


def ok(code=200):
    return a(f"HTTP {code}", responseCode=str(code))


def status_in(codes):
    return a(f"HTTP status in {codes}", responseCode=codes, operator="in")


def expr(e, description=None, **kw):
    return a(description or e, expression=e, **kw)


def fp_str(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Script:
    def __init__(self, suite, sid, title, description, family=None):
        self.suite, self.id, self.title, self.description = suite, sid, title, description
        self.family = family or suite
        self.fixtures, self.variables, self.setup, self.tests, self.teardown = [], [], [], [], []
        self.profiles = []
        self.var("runTag", defaultValue=sid)

    def fixture(self, fid, ref):
        if not any(f["id"] == fid for f in self.fixtures):
            self.fixtures.append({"id": fid, "autocreate": False, "autodelete": False, "resource": {"reference": ref}})
        return fid

    def var(self, name, **kw):
        if not any(v["name"] == name for v in self.variables):
            v = {"name": name}
            v.update(kw)
            self.variables.append(v)

    def profile(self, pid, url):
        if not any(p["id"] == pid for p in self.profiles):
            self.profiles.append({"id": pid, "reference": url})
        return pid

    def create(self, fixture_file, rid, rtype, into=None, delete=True):
        """Creates a fixture (file under fixtures/), captures ${rid}Id; deleted in teardown."""
        fid = self.fixture("f-" + rid, "fixtures/" + fixture_file)
        self.var(rid + "Id", expression="id", sourceId=rid)
        actions = [
            op("create", resource=rtype, sourceId=fid, responseId=rid, accept="json", contentType="json",
               headers={"Prefer": "return=representation"}, label="create-" + rid),
            a(f"{rtype} {rid} created", response="created"),
        ]
        (self.setup if into is None else into).extend(actions)
        if delete:
            self.teardown.append(op("delete", resource=rtype, targetId=rid, label="delete-" + rid))
        return actions

    def test(self, name, description, actions):
        self.tests.append({"id": f"{len(self.tests) + 1:02d}-{name}", "name": name, "description": description,
                           "action": actions})

    def to_json(self):
        d = {
            "resourceType": "TestScript",
            "id": self.id,
            "meta": {"tag": [{"system": FAMILY, "code": self.family}]},
            "url": f"http://huitong.dev/fhir/conformance/{self.suite}/TestScript/{self.id}",
            "name": self.id.replace("-", "_"),
            "title": self.title,
            "status": "active",
            "publisher": "Huitong",
            "description": self.description,
        }
        if self.fixtures:
            d["fixture"] = self.fixtures
        if self.profiles:
            d["profile"] = self.profiles
        d["variable"] = self.variables
        if self.setup:
            d["setup"] = {"action": self.setup}
        d["test"] = self.tests
        if self.teardown:
            d["teardown"] = {"action": self.teardown}
        return d


SCRIPTS = []
FIXTURES = {}  # (suite, file) -> JSON or text


def new(suite, sid, title, description, family=None):
    s = Script(suite, sid, title, description, family)
    SCRIPTS.append(s)
    return s


def fixture_file(suite, name, body):
    # One file, one content: scripts sharing a fixture file must mean the same body.
    assert FIXTURES.get((suite, name), body) == body, f"{suite}/fixtures/{name} written twice with different bodies"
    FIXTURES[(suite, name)] = body
    return name


# ----------------------------------------------------------------------------------------------
# fhir-core
# ----------------------------------------------------------------------------------------------
CORE = "fhir-core"

PATIENT = {"resourceType": "Patient", "meta": TAG,
           "identifier": [{"system": MRN, "value": "${runTag}"}],
           "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
           "gender": "male", "birthDate": "1974-12-25"}
fixture_file(CORE, "patient.json", PATIENT)
fixture_file(CORE, "patient-update.json", dict(PATIENT, id="${patId}", birthDate="1974-12-26", active=True))
fixture_file(CORE, "patient-second.json", dict(PATIENT, name=[{"family": "Windsor", "given": ["Jim"]}]))
fixture_file(CORE, "patient-client-id.json", dict(PATIENT, id="cf-${runTag}"))
fixture_file(CORE, "patient-id-mismatch.json", dict(PATIENT, id="not-the-url-id"))
fixture_file(CORE, "patient-no-id.json", PATIENT)

# Resource types for create/read/delete, with a body valid against the R4 core.
SUBJ = {"reference": "Patient/${patId}"}
CRUD = [
    ("Patient", {"name": [{"family": "Chalmers"}], "gender": "male"}, "Patient.gender = 'male'"),
    ("Observation", {"status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
                     "subject": SUBJ, "effectiveDateTime": "2024-01-01T08:00:00+08:00",
                     "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}},
     "(Observation.value as Quantity).value = 72"),
    ("Encounter", {"status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}, "subject": SUBJ},
     "Encounter.class.code = 'AMB'"),
    ("Organization", {"name": "汇通示例医院", "active": True}, "Organization.name = '汇通示例医院'"),
    ("Practitioner", {"name": [{"family": "王", "given": ["医生"]}]}, "Practitioner.name.family = '王'"),
    ("PractitionerRole", {"active": True, "code": [{"text": "心内科医师"}]}, "PractitionerRole.active"),
    ("Condition", {"subject": SUBJ, "code": {"text": "高血压"},
                   "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}},
     "Condition.code.text = '高血压'"),
    ("AllergyIntolerance", {"patient": SUBJ, "code": {"text": "青霉素"}, "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]}}, "AllergyIntolerance.code.text = '青霉素'"),
    ("MedicationRequest", {"status": "active", "intent": "order", "subject": SUBJ, "medicationCodeableConcept": {"text": "阿司匹林"}},
     "MedicationRequest.intent = 'order'"),
    ("Immunization", {"status": "completed", "vaccineCode": {"text": "乙肝疫苗"}, "patient": SUBJ, "occurrenceDateTime": "2024-01-01"},
     "Immunization.status = 'completed'"),
    ("DiagnosticReport", {"status": "final", "code": {"text": "血常规"}, "subject": SUBJ}, "DiagnosticReport.code.text = '血常规'"),
    ("Procedure", {"status": "completed", "subject": SUBJ, "code": {"text": "阑尾切除术"}}, "Procedure.status = 'completed'"),
    ("Location", {"name": "门诊楼 3 层", "status": "active"}, "Location.name.exists()"),
    ("ServiceRequest", {"status": "active", "intent": "order", "subject": SUBJ, "code": {"text": "胸部 X 线"}},
     "ServiceRequest.code.text = '胸部 X 线'"),
    ("DocumentReference", {"status": "current", "content": [{"attachment": {"contentType": "text/plain", "data": "5rGH6YCa"}}]},
     "DocumentReference.content.attachment.contentType = 'text/plain'"),
    ("Appointment", {"status": "proposed", "participant": [{"actor": SUBJ, "status": "needs-action"}]}, "Appointment.participant.count() = 1"),
    ("Coverage", {"status": "active", "beneficiary": SUBJ, "payor": [{"display": "城镇职工基本医疗保险"}]}, "Coverage.status = 'active'"),
    ("CarePlan", {"status": "active", "intent": "plan", "subject": SUBJ}, "CarePlan.intent = 'plan'"),
    ("Specimen", {"type": {"text": "静脉血"}}, "Specimen.type.text = '静脉血'"),
    ("RelatedPerson", {"patient": SUBJ, "name": [{"family": "李"}]}, "RelatedPerson.name.family = '李'"),
    ("Medication", {"code": {"text": "阿莫西林胶囊"}}, "Medication.code.text.exists()"),
    ("Device", {"deviceName": [{"name": "监护仪", "type": "user-friendly-name"}]}, "Device.deviceName.name = '监护仪'"),
    ("Group", {"type": "person", "actual": True, "name": "糖尿病随访组"}, "Group.actual"),
    ("Questionnaire", {"status": "active", "item": [{"linkId": "1", "text": "吸烟吗?", "type": "boolean"}]}, "Questionnaire.item.linkId = '1'"),
    ("Basic", {"code": {"text": "自定义记录"}}, "Basic.code.text.exists()"),
]


def needs_patient(body):
    return "${patId}" in json.dumps(body)


for rtype, body, check in CRUD:
    sid = "crud-" + rtype.lower()
    s = new(CORE, sid, f"{rtype}: create, read, delete, read after delete",
            f"Creates a {rtype}, reads it back (status, media type, id, version, ETag, Last-Modified, content), "
            f"deletes it and checks that a read then answers 410 Gone.")
    full = dict({"resourceType": rtype, "meta": TAG}, **body)
    fixture_file(CORE, f"crud-{rtype.lower()}.json", full)
    if needs_patient(body):
        s.create("patient.json", "pat", "Patient")
    s.fixture("f-thing", f"fixtures/crud-{rtype.lower()}.json")
    s.var("thingId", expression="id", sourceId="thing")
    s.test("create", f"POST {rtype}", [
        op("create", resource=rtype, sourceId="f-thing", responseId="thing", accept="json", contentType="json"),
        a("201 Created", response="created"),
        a("Location names the new version", headerField="Location", operator="contains", value=f"/{rtype}/"),
        a("ETag of version 1", headerField="ETag", value='W/"1"'),
        a("the body is the resource", resource=rtype),
        expr("meta.versionId = '1'"),
        expr("meta.lastUpdated.exists()"),
        a("the stored resource holds every element sent", minimumId="f-thing"),
    ])
    s.test("read", f"GET {rtype}/[id]", [
        op("read", resource=rtype, targetId="thing", accept="json"),
        a("200", response="okay"),
        a("FHIR JSON", contentType="json"),
        a("resource type", resource=rtype),
        expr("id = '${thingId}'"),
        expr(check),
        a("ETag present", headerField="ETag", operator="notEmpty"),
        a("Last-Modified present", headerField="Last-Modified", operator="notEmpty"),
    ])
    s.test("delete", f"DELETE {rtype}/[id], then read", [
        op("delete", resource=rtype, targetId="thing"),
        status_in("200,204"),
        op("read", resource=rtype, targetId="thing"),
        a("410 Gone after delete", response="gone"),
    ])
    if needs_patient(body):
        pass  # the patient is deleted by the teardown

# Capabilities
caps = [
    ("capabilities-basic", "CapabilityStatement over JSON", [
        a("200", response="okay"), a("FHIR JSON", contentType="json"), a("resource type", resource="CapabilityStatement"),
        expr("fhirVersion = '4.0.1'"), expr("kind = 'instance'"), expr("status.exists() and date.exists()"),
    ], {}),
    ("capabilities-rest-server", "rest.mode is server and lists Patient", [
        expr("rest.where(mode = 'server').exists()"),
        expr("rest.resource.where(type = 'Patient').exists()"),
    ], {}),
    ("capabilities-patient-interactions", "Patient lists read, vread, update, patch, delete, history, create and search", [
        expr("rest.resource.where(type = 'Patient').interaction.code.distinct().count() >= 8",
             "Patient has at least 8 interactions"),
        expr("rest.resource.where(type = 'Patient').interaction.where(code = 'vread').exists()"),
        expr("rest.resource.where(type = 'Patient').interaction.where(code = 'patch').exists()"),
        expr("rest.resource.where(type = 'Patient').interaction.where(code = 'search-type').exists()"),
    ], {}),
    ("capabilities-system-interactions", "transaction, batch and history-system at system level", [
        expr("rest.interaction.where(code = 'transaction').exists()"),
        expr("rest.interaction.where(code = 'batch').exists()"),
        expr("rest.interaction.where(code = 'history-system').exists()"),
    ], {}),
    ("capabilities-search-params", "Patient search parameters are declared with their types", [
        expr("rest.resource.where(type = 'Patient').searchParam.where(name = 'family' and type = 'string').exists()"),
        expr("rest.resource.where(type = 'Patient').searchParam.where(name = 'birthdate' and type = 'date').exists()"),
        expr("rest.resource.where(type = 'Patient').searchParam.where(name = 'identifier' and type = 'token').exists()"),
    ], {}),
    ("capabilities-format-json", "format lists JSON; _format=json is honoured", [
        expr("format.where($this = 'json' or $this = 'application/fhir+json').exists()"),
        a("FHIR JSON", contentType="json"),
    ], {"params": "?_format=json"}),
    ("capabilities-versioning", "Patient declares versioning and conditional support", [
        expr("rest.resource.where(type = 'Patient').versioning.exists()"),
        expr("rest.resource.where(type = 'Patient').conditionalCreate = true"),
        expr("rest.resource.where(type = 'Patient').conditionalUpdate = true"),
    ], {}),
]
for sid, title, asserts, extra in caps:
    s = new(CORE, sid, "capabilities: " + title, "GET [base]/metadata and checks: " + title)
    s.test("metadata", title, [op("capabilities", accept="json", **extra)] + asserts)

# Versioning and ETags
s = new(CORE, "version-update", "update makes version 2 with a new ETag",
        "Creates a Patient, updates it, checks status 200, ETag W/\"2\", meta.versionId 2 and the new content.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-upd", "fixtures/patient-update.json")
s.test("update", "PUT Patient/[id]", [
    op("update", resource="Patient", params="/${patId}", sourceId="f-upd", contentType="json", accept="json"),
    a("200", response="okay"), a("ETag of version 2", headerField="ETag", value='W/"2"'),
    expr("meta.versionId = '2'"), expr("birthDate = @1974-12-26"), expr("active = true"),
])

s = new(CORE, "version-vread", "vread of both versions", "Creates and updates a Patient; vread of version 1 has the old content, of version 2 the new.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-upd", "fixtures/patient-update.json")
s.test("vread", "GET Patient/[id]/_history/1 and /2", [
    op("update", resource="Patient", params="/${patId}", sourceId="f-upd", contentType="json"),
    ok(),
    op("vread", resource="Patient", params="/${patId}/_history/1", accept="json"),
    a("200", response="okay"), expr("meta.versionId = '1'"), expr("birthDate = @1974-12-25"),
    op("vread", resource="Patient", params="/${patId}/_history/2", accept="json"),
    a("200", response="okay"), expr("meta.versionId = '2'"), expr("birthDate = @1974-12-26"),
    a("ETag of the version read", headerField="ETag", value='W/"2"'),
])

s = new(CORE, "version-vread-unknown", "vread of a version that does not exist", "vread of version 9 of a one-version Patient answers 404.")
s.create("patient.json", "pat", "Patient")
s.test("vread", "GET Patient/[id]/_history/9", [
    op("vread", resource="Patient", params="/${patId}/_history/9"), a("404", response="notFound"),
    a("an OperationOutcome", resource="OperationOutcome"),
])

s = new(CORE, "version-if-match", "If-Match with the current version updates", "PUT with If-Match: W/\"1\" on version 1 answers 200.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-upd", "fixtures/patient-update.json")
s.test("if-match", "PUT with the current ETag", [
    op("update", resource="Patient", params="/${patId}", sourceId="f-upd", contentType="json", headers={"If-Match": 'W/"1"'}),
    a("200", response="okay"), a("version 2", headerField="ETag", value='W/"2"'),
])

s = new(CORE, "version-if-match-stale", "If-Match with a stale version is refused", "PUT with If-Match: W/\"7\" on version 1 answers 412 and changes nothing.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-upd", "fixtures/patient-update.json")
s.test("if-match-stale", "PUT with a stale ETag", [
    op("update", resource="Patient", params="/${patId}", sourceId="f-upd", contentType="json", headers={"If-Match": 'W/"7"'}),
    a("412 Precondition Failed", response="preconditionFailed"),
    op("read", resource="Patient", params="/${patId}"), expr("meta.versionId = '1'"),
])

s = new(CORE, "version-if-none-match", "If-None-Match on a read answers 304", "GET with If-None-Match: W/\"1\" on version 1 answers 304 Not Modified.")
s.create("patient.json", "pat", "Patient")
s.test("if-none-match", "GET with the current ETag", [
    op("read", resource="Patient", params="/${patId}", headers={"If-None-Match": 'W/"1"'}),
    a("304", response="notModified"),
])

s = new(CORE, "version-update-create", "update with a client id creates", "PUT Patient/cf-<script> on an unknown id creates it (201), version 1.")
s.fixture("f-cid", "fixtures/patient-client-id.json")
s.test("update-create", "PUT to a new id", [
    op("update", resource="Patient", params="/cf-${runTag}", sourceId="f-cid", contentType="json", accept="json",
       headers={"Prefer": "return=representation"}),
    a("201", response="created"), expr("id = 'cf-' + %runTag"), expr("meta.versionId = '1'"),
])
s.teardown.append(op("delete", resource="Patient", params="/cf-${runTag}"))

s = new(CORE, "version-update-id-mismatch", "update whose body id differs from the URL is refused", "PUT Patient/[id] with another id in the body answers 400.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-bad", "fixtures/patient-id-mismatch.json")
s.test("mismatch", "PUT with a different body id", [
    op("update", resource="Patient", params="/${patId}", sourceId="f-bad", contentType="json"),
    a("400", response="bad"), a("an OperationOutcome", resource="OperationOutcome"),
])

s = new(CORE, "version-update-no-id", "update without an id in the body is refused", "PUT Patient/[id] with no id in the body answers 400.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-noid", "fixtures/patient-no-id.json")
s.test("no-id", "PUT without a body id", [
    op("update", resource="Patient", params="/${patId}", sourceId="f-noid", contentType="json"),
    a("400", response="bad"),
])

s = new(CORE, "version-prefer-minimal", "Prefer: return=minimal answers without a body", "POST with Prefer: return=minimal answers 201 with Location and no resource.")
s.fixture("f-pat", "fixtures/patient.json")
s.test("minimal", "create with return=minimal", [
    op("create", resource="Patient", sourceId="f-pat", contentType="json", headers={"Prefer": "return=minimal"}, responseId="made"),
    a("201", response="created"), a("Location", headerField="Location", operator="notEmpty"),
    a("no resource in the body", resource="Patient", operator="notEquals"),
])
s.teardown.append(op("delete", resource="Patient", targetId="made"))

s = new(CORE, "version-prefer-outcome", "Prefer: return=OperationOutcome", "POST with Prefer: return=OperationOutcome answers 201 with an OperationOutcome.")
s.fixture("f-pat", "fixtures/patient.json")
s.test("outcome", "create with return=OperationOutcome", [
    op("create", resource="Patient", sourceId="f-pat", contentType="json", headers={"Prefer": "return=OperationOutcome"}, responseId="made"),
    a("201", response="created"), a("an OperationOutcome", resource="OperationOutcome"),
])
s.teardown.append(op("delete", resource="Patient", targetId="made"))

s = new(CORE, "version-delete-versioned", "a delete is a new version", "After update and delete, vread of version 2 still answers, and history has 3 entries.")
s.create("patient.json", "pat", "Patient", delete=False)
s.fixture("f-upd", "fixtures/patient-update.json")
s.test("deleted-history", "update, delete, vread, history", [
    op("update", resource="Patient", params="/${patId}", sourceId="f-upd", contentType="json"), ok(),
    op("delete", resource="Patient", params="/${patId}"), status_in("200,204"),
    op("vread", resource="Patient", params="/${patId}/_history/2"), a("200", response="okay"), expr("meta.versionId = '2'"),
    op("history", resource="Patient", params="/${patId}/_history"), a("200", response="okay"),
    expr("Bundle.type = 'history'"), expr("Bundle.entry.count() = 3"),
    expr("Bundle.entry.first().request.method = 'DELETE'", "the newest entry is the delete"),
])

# Conditional operations
s = new(CORE, "cond-create-new", "conditional create with no match creates", "POST with If-None-Exist naming an identifier nobody has answers 201.")
s.fixture("f-pat", "fixtures/patient.json")
s.test("create", "If-None-Exist, no match", [
    op("create", resource="Patient", sourceId="f-pat", contentType="json", responseId="made",
       headers={"If-None-Exist": f"identifier={MRN}|${{runTag}}"}),
    a("201", response="created"),
])
s.teardown.append(op("delete", resource="Patient", targetId="made"))

s = new(CORE, "cond-create-existing", "conditional create with one match creates nothing", "A second POST with the same If-None-Exist answers 200 and names the existing Patient.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-pat2", "fixtures/patient.json")
s.test("create-again", "If-None-Exist, one match", [
    op("create", resource="Patient", sourceId="f-pat2", contentType="json", headers={"If-None-Exist": f"identifier={MRN}|${{runTag}}"}),
    a("200, not 201", response="okay"),
    op("search", resource="Patient", params=f"?identifier={MRN}|${{runTag}}"), expr("Bundle.entry.count() = 1", "still one Patient"),
])

s = new(CORE, "cond-create-multiple", "conditional create with two matches is refused", "With two Patients matching If-None-Exist, POST answers 412.")
s.create("patient.json", "pat", "Patient")
s.create("patient-second.json", "pat2", "Patient")
s.fixture("f-pat3", "fixtures/patient.json")
s.test("create-ambiguous", "If-None-Exist, two matches", [
    op("create", resource="Patient", sourceId="f-pat3", contentType="json", headers={"If-None-Exist": f"identifier={MRN}|${{runTag}}"}),
    a("412", response="preconditionFailed"),
])

s = new(CORE, "cond-update-create", "conditional update with no match creates", "PUT Patient?identifier=... with no match answers 201.")
s.fixture("f-pat", "fixtures/patient.json")
s.var("madeId", expression="id", sourceId="made")
s.test("update", "PUT by criteria, no match", [
    op("update", resource="Patient", params=f"?identifier={MRN}|${{runTag}}", sourceId="f-pat", contentType="json", responseId="made",
       headers={"Prefer": "return=representation"}),
    a("201", response="created"),
])
s.teardown.append(op("delete", resource="Patient", targetId="made"))

s = new(CORE, "cond-update-existing", "conditional update with one match updates it", "PUT Patient?identifier=... with one match answers 200 and version 2 of that Patient.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-pat2", "fixtures/patient-second.json")
s.test("update", "PUT by criteria, one match", [
    op("update", resource="Patient", params=f"?identifier={MRN}|${{runTag}}", sourceId="f-pat2", contentType="json", accept="json",
       headers={"Prefer": "return=representation"}),
    a("200", response="okay"), expr("id = %patId", "the same Patient"), expr("meta.versionId = '2'"),
    expr("name.family = 'Windsor'"),
])

s = new(CORE, "cond-update-multiple", "conditional update with two matches is refused", "PUT Patient?identifier=... with two matches answers 412.")
s.create("patient.json", "pat", "Patient")
s.create("patient-second.json", "pat2", "Patient")
s.fixture("f-pat3", "fixtures/patient.json")
s.test("update", "PUT by criteria, two matches", [
    op("update", resource="Patient", params=f"?identifier={MRN}|${{runTag}}", sourceId="f-pat3", contentType="json"),
    a("412", response="preconditionFailed"),
])

s = new(CORE, "cond-delete", "conditional delete", "DELETE Patient?identifier=... removes the match; a search then finds none.")
s.create("patient.json", "pat", "Patient", delete=False)
s.test("delete", "DELETE by criteria", [
    op("delete", resource="Patient", params=f"?identifier={MRN}|${{runTag}}"), status_in("200,204"),
    op("search", resource="Patient", params=f"?identifier={MRN}|${{runTag}}"), ok(), expr("Bundle.entry.count() = 0"),
])

s = new(CORE, "cond-create-bad-criteria", "conditional create with an unknown parameter is refused", "If-None-Exist naming an unknown search parameter answers 400 (criteria are never ignored).")
s.fixture("f-pat", "fixtures/patient.json")
s.test("create", "If-None-Exist, bad criteria", [
    op("create", resource="Patient", sourceId="f-pat", contentType="json", headers={"If-None-Exist": "no-such-param=1"}),
    a("400", response="bad"),
])

# History
s = new(CORE, "history-instance", "instance history", "Three versions of one Patient: history has 3 entries, newest first, each with its version.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-upd", "fixtures/patient-update.json")
s.test("history", "GET Patient/[id]/_history", [
    op("update", resource="Patient", params="/${patId}", sourceId="f-upd", contentType="json"), ok(),
    op("update", resource="Patient", params="/${patId}", sourceId="f-upd", contentType="json"), ok(),
    op("history", resource="Patient", targetId="pat", accept="json"),
    a("200", response="okay"), a("a Bundle", resource="Bundle"), expr("Bundle.type = 'history'"),
    expr("Bundle.entry.count() = 3"), expr("Bundle.entry.first().resource.meta.versionId = '3'"),
    expr("Bundle.entry.last().request.method = 'POST'", "the first version was a create"),
    expr("Bundle.entry.all(response.status.exists())", "every entry has a response status"),
])

s = new(CORE, "history-type", "type history", "GET Patient/_history includes a Patient just created.")
s.create("patient.json", "pat", "Patient")
s.test("history", "GET Patient/_history", [
    op("history", resource="Patient", params="/_history?_count=1000"), a("200", response="okay"), expr("Bundle.type = 'history'"),
    expr("Bundle.entry.resource.where(id = %patId).exists()"),
])

s = new(CORE, "history-system", "system history", "GET [base]/_history includes a Patient just created.")
s.create("patient.json", "pat", "Patient")
s.test("history", "GET /_history", [
    op("historySystem", params="?_count=1000"), a("200", response="okay"), expr("Bundle.type = 'history'"),
    expr("Bundle.entry.resource.where(id = %patId).exists()"),
])

s = new(CORE, "history-count", "history paging", "_count=1 on a two-version history gives one entry and a next link.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-upd", "fixtures/patient-update.json")
s.var("nextPage", expression="Bundle.link.where(relation = 'next').url", sourceId="page1")
s.test("paging", "GET Patient/[id]/_history?_count=1, then next", [
    op("update", resource="Patient", params="/${patId}", sourceId="f-upd", contentType="json"), ok(),
    op("history", resource="Patient", params="/${patId}/_history?_count=1", responseId="page1"),
    a("200", response="okay"), expr("Bundle.entry.count() = 1"), expr("Bundle.link.where(relation = 'next').exists()"),
    op("history", url="${nextPage}"), a("200", response="okay"), expr("Bundle.entry.count() = 1"),
    expr("Bundle.entry.resource.meta.versionId = '1'", "the second page holds version 1"),
])

s = new(CORE, "history-since", "history _since", "_since in the future gives an empty history.")
s.create("patient.json", "pat", "Patient")
s.test("since", "GET Patient/[id]/_history?_since=2999-01-01", [
    op("history", resource="Patient", params="/${patId}/_history?_since=2999-01-01T00:00:00Z"), a("200", response="okay"),
    expr("Bundle.entry.count() = 0"),
])

s = new(CORE, "history-unknown", "history of an unknown resource", "GET Patient/unknown/_history answers 404.")
s.test("unknown", "GET Patient/does-not-exist-${runTag}/_history", [
    op("history", resource="Patient", params="/does-not-exist-${runTag}/_history"), a("404", response="notFound"),
])

# Batch and transaction
def bundle(kind, entries):
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post_entry(res, full=None, **req):
    e = {"resource": res, "request": dict({"method": "POST", "url": res["resourceType"]}, **req)}
    if full:
        e["fullUrl"] = full
    return e


P = dict(PATIENT)
U1 = "urn:uuid:0c2b6f34-5c4e-4d1e-8a7e-000000000001"
OBS = {"resourceType": "Observation", "meta": TAG, "status": "final", "code": {"text": "体温"},
       "valueQuantity": {"value": 36.8, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"}}
fixture_file(CORE, "tx-two-creates.json", bundle("transaction", [post_entry(P), post_entry(dict(P, name=[{"family": "Second"}]))]))
fixture_file(CORE, "tx-urn-uuid.json", bundle("transaction", [post_entry(P, U1), post_entry(dict(OBS, subject={"reference": U1}))]))
fixture_file(CORE, "tx-rollback.json", bundle("transaction", [post_entry(P), post_entry({"resourceType": "Observation", "meta": TAG, "code": {"text": "no status"}})]))
fixture_file(CORE, "tx-conditional-ref.json", bundle("transaction", [post_entry(dict(OBS, subject={"reference": f"Patient?identifier={MRN}|${{runTag}}"}))]))
fixture_file(CORE, "tx-if-none-exist.json", bundle("transaction", [post_entry(P, ifNoneExist=f"identifier={MRN}|${{runTag}}")]))
fixture_file(CORE, "tx-same-resource-twice.json", bundle("transaction", [
    {"resource": dict(P, id="${patId}"), "request": {"method": "PUT", "url": "Patient/${patId}"}},
    {"request": {"method": "DELETE", "url": "Patient/${patId}"}}]))
fixture_file(CORE, "tx-put-delete.json", bundle("transaction", [
    {"resource": dict(P, id="${patId}", active=True), "request": {"method": "PUT", "url": "Patient/${patId}"}},
    {"request": {"method": "DELETE", "url": "Patient/${pat2Id}"}}]))
fixture_file(CORE, "batch-mixed.json", bundle("batch", [post_entry(P), post_entry({"resourceType": "Observation", "meta": TAG, "code": {"text": "no status"}})]))
fixture_file(CORE, "batch-reads.json", bundle("batch", [
    {"request": {"method": "GET", "url": "Patient/${patId}"}},
    {"request": {"method": "GET", "url": "Patient/does-not-exist-${runTag}"}},
    {"request": {"method": "GET", "url": f"Patient?identifier={MRN}|${{runTag}}"}}]))
fixture_file(CORE, "bundle-collection.json", {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:0c2b6f34-5c4e-4d1e-8a7e-000000000002", "resource": P}]})
fixture_file(CORE, "tx-patch.json", bundle("transaction", [
    {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                  "data": "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9nZW5kZXIiLCJ2YWx1ZSI6ImZlbWFsZSJ9XQ=="},
     "request": {"method": "PATCH", "url": "Patient/${patId}"}}]))

s = new(CORE, "tx-two-creates", "transaction with two creates", "A transaction of two POSTs answers transaction-response with two 201 entries and Locations.")
s.fixture("f-tx", "fixtures/tx-two-creates.json")
s.test("transaction", "POST [base] transaction", [
    op("transaction", sourceId="f-tx", contentType="json", accept="json"), a("200", response="okay"),
    expr("Bundle.type = 'transaction-response'"), expr("Bundle.entry.count() = 2"),
    expr("Bundle.entry.all(response.status.startsWith('201'))"), expr("Bundle.entry.all(response.location.exists())"),
    op("search", resource="Patient", params=f"?identifier={MRN}|${{runTag}}"), expr("Bundle.entry.count() = 2"),
])
s.teardown.append(op("deleteCondMultiple", resource="Patient", params=f"?identifier={MRN}|${{runTag}}&_count=100",
                     headers={"Prefer": "handling=lenient"}))

s = new(CORE, "tx-urn-uuid", "transaction rewrites urn:uuid references", "An Observation referencing a Patient by urn:uuid in the same transaction ends up referencing Patient/[its id].")
s.fixture("f-tx", "fixtures/tx-urn-uuid.json")
s.var("obsUrl", expression="Bundle.entry[1].response.location", sourceId="txr")
s.var("patLoc", expression="Bundle.entry[0].response.location", sourceId="txr")
s.test("transaction", "POST a transaction with urn:uuid", [
    op("transaction", sourceId="f-tx", contentType="json", responseId="txr"), a("200", response="okay"),
    expr("Bundle.entry.count() = 2"),
    op("read", url="${obsUrl}"), a("200", response="okay"),
    expr("subject.reference.startsWith('Patient/')"), expr("subject.reference.startsWith('urn:uuid') = false", "no urn:uuid left"),
    expr("%patLoc.contains(subject.reference)", "points at the Patient the transaction created"),
])

s = new(CORE, "tx-rollback", "a failing transaction writes nothing", "A transaction whose second entry is invalid fails as a whole; the Patient of the first entry does not exist.")
s.fixture("f-tx", "fixtures/tx-rollback.json")
s.test("rollback", "POST an invalid transaction", [
    op("transaction", sourceId="f-tx", contentType="json"), status_in("400,422"), a("an OperationOutcome", resource="OperationOutcome"),
    op("search", resource="Patient", params=f"?identifier={MRN}|${{runTag}}"), expr("Bundle.entry.count() = 0", "nothing was written"),
])

s = new(CORE, "tx-conditional-reference", "transaction resolves a conditional reference", "Observation.subject = Patient?identifier=... becomes Patient/[id] of the one match.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-tx", "fixtures/tx-conditional-ref.json")
s.var("obsUrl", expression="Bundle.entry[0].response.location", sourceId="txr")
s.test("transaction", "POST with a conditional reference", [
    op("transaction", sourceId="f-tx", contentType="json", responseId="txr"), a("200", response="okay"),
    op("read", url="${obsUrl}"), expr("subject.reference = 'Patient/' + %patId"),
])

s = new(CORE, "tx-if-none-exist", "transaction entry with ifNoneExist", "An entry with ifNoneExist matching an existing Patient answers 200 and creates nothing.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-tx", "fixtures/tx-if-none-exist.json")
s.test("transaction", "POST with ifNoneExist", [
    op("transaction", sourceId="f-tx", contentType="json"), a("200", response="okay"),
    expr("Bundle.entry[0].response.status.startsWith('200')"),
    op("search", resource="Patient", params=f"?identifier={MRN}|${{runTag}}"), expr("Bundle.entry.count() = 1"),
])

s = new(CORE, "tx-same-resource-twice", "transaction touching one resource twice is refused", "PUT and DELETE of the same Patient in one transaction answers 4xx and changes nothing.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-tx", "fixtures/tx-same-resource-twice.json")
s.test("transaction", "POST with two writes to one resource", [
    op("transaction", sourceId="f-tx", contentType="json"), status_in("400,409"),
    op("read", resource="Patient", params="/${patId}"), a("200", response="okay"), expr("meta.versionId = '1'"),
])

s = new(CORE, "tx-put-delete", "transaction with PUT and DELETE", "A transaction updating one Patient and deleting another applies both.")
s.create("patient.json", "pat", "Patient")
s.create("patient-second.json", "pat2", "Patient", delete=False)
s.fixture("f-tx", "fixtures/tx-put-delete.json")
s.test("transaction", "POST PUT + DELETE", [
    op("transaction", sourceId="f-tx", contentType="json"), a("200", response="okay"),
    op("read", resource="Patient", params="/${patId}"), expr("meta.versionId = '2' and active = true"),
    op("read", resource="Patient", params="/${pat2Id}"), a("410", response="gone"),
])

s = new(CORE, "tx-patch-entry", "transaction with a JSON Patch entry", "A PATCH entry (Binary with application/json-patch+json) changes the Patient.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-tx", "fixtures/tx-patch.json")
s.test("transaction", "POST a PATCH entry", [
    op("transaction", sourceId="f-tx", contentType="json"), a("200", response="okay"),
    op("read", resource="Patient", params="/${patId}"), expr("gender = 'female'"), expr("meta.versionId = '2'"),
])

s = new(CORE, "batch-independent", "batch entries succeed or fail independently", "A batch with a valid and an invalid entry answers 200: entry 1 is 201, entry 2 a 4xx with an outcome.")
s.fixture("f-b", "fixtures/batch-mixed.json")
s.test("batch", "POST a batch", [
    op("batch", sourceId="f-b", contentType="json"), a("200", response="okay"), expr("Bundle.type = 'batch-response'"),
    expr("Bundle.entry[0].response.status.startsWith('201')"), expr("Bundle.entry[1].response.status.startsWith('4')"),
    expr("Bundle.entry[1].response.outcome.exists()"),
    op("search", resource="Patient", params=f"?identifier={MRN}|${{runTag}}"), expr("Bundle.entry.count() = 1"),
])
s.teardown.append(op("deleteCondSingle", resource="Patient", params=f"?identifier={MRN}|${{runTag}}"))

s = new(CORE, "batch-reads", "batch of reads and a search", "A batch of GETs answers each: 200 read, 404 unknown, 200 searchset.")
s.create("patient.json", "pat", "Patient")
s.fixture("f-b", "fixtures/batch-reads.json")
s.test("batch", "POST a batch of GETs", [
    op("batch", sourceId="f-b", contentType="json"), a("200", response="okay"),
    expr("Bundle.entry[0].response.status.startsWith('200')"), expr("Bundle.entry[0].resource.id = %patId"),
    expr("Bundle.entry[1].response.status.startsWith('404')"),
    expr("Bundle.entry[2].resource.type = 'searchset'"), expr("Bundle.entry[2].resource.entry.count() = 1"),
])

s = new(CORE, "bundle-not-batch", "a collection Bundle posted to the base is refused", "POST [base] with a Bundle of type collection answers 400.")
s.fixture("f-b", "fixtures/bundle-collection.json")
s.test("collection", "POST a collection", [op("transaction", sourceId="f-b", contentType="json"), a("400", response="bad")])

# Error statuses
fixture_file(CORE, "error-not-json.txt", "this is not JSON")
fixture_file(CORE, "error-observation.json", OBS)
fixture_file(CORE, "error-unknown-element.json", dict(PATIENT, favouriteColour="blue"))
fixture_file(CORE, "error-bad-date.json", dict(PATIENT, birthDate="1990-13-01"))
fixture_file(CORE, "error-bad-code.json", dict(PATIENT, gender="boy"))
fixture_file(CORE, "error-missing-required.json", {"resourceType": "Observation", "meta": TAG, "code": {"text": "no status"}})
fixture_file(CORE, "error-invariant.json", dict(PATIENT, contact=[{"gender": "female"}]))
fixture_file(CORE, "error-unknown-type.json", {"resourceType": "NotAResource", "id": "x"})
errs = [
    ("error-read-unknown-id", "read of an unknown id", [op("read", resource="Patient", params="/does-not-exist-${runTag}"), a("404", response="notFound"), a("outcome", resource="OperationOutcome")]),
    ("error-read-unknown-type", "read of an unknown resource type", [op("read", url="NotAResource/1"), status_in("400,404"), a("outcome", resource="OperationOutcome")]),
    ("error-read-bad-id", "read with an id longer than 64 characters", [op("read", resource="Patient", params="/" + "a" * 65), status_in("400,404")]),
    ("error-create-not-json", "create with a body that is not JSON", [op("create", resource="Patient", sourceId="f-x", contentType="json"), a("400", response="bad"), a("outcome", resource="OperationOutcome")]),
    ("error-create-wrong-type", "create of an Observation at Patient", [op("create", resource="Patient", sourceId="f-x", contentType="json"), a("400", response="bad")]),
    ("error-create-unknown-element", "create with an element R4 does not define", [op("create", resource="Patient", sourceId="f-x", contentType="json"), a("400", response="bad"),
        expr("issue.where(severity = 'error').exists()")]),
    ("error-create-bad-date", "create with a month 13", [op("create", resource="Patient", sourceId="f-x", contentType="json"), status_in("400,422"),
        expr("issue.expression.where($this.startsWith('Patient.birthDate')).exists()", "the outcome names Patient.birthDate")]),
    ("error-create-bad-code", "create with a code outside a required binding", [op("create", resource="Patient", sourceId="f-x", contentType="json"), status_in("400,422"),
        expr("issue.expression.where($this.startsWith('Patient.gender')).exists()", "the outcome names Patient.gender")]),
    ("error-create-missing-required", "create without a required element", [op("create", resource="Observation", sourceId="f-x", contentType="json"), status_in("400,422"),
        expr("issue.where(severity = 'error').diagnostics.join(' ').contains('status') or issue.expression.join(' ').contains('status')", "the outcome names status")]),
    ("error-create-invariant", "create breaking an invariant (pat-1: contact needs details)", [op("create", resource="Patient", sourceId="f-x", contentType="json"), status_in("400,422"),
        expr("issue.where(severity = 'error').exists()")]),
    ("error-create-unknown-type", "create of an unknown resource type", [op("create", url="NotAResource", sourceId="f-x", contentType="json"), status_in("400,404")]),
    ("error-unsupported-media-type", "create with Content-Type text/plain", [op("create", resource="Patient", sourceId="f-x", contentType="text/plain"), a("415", responseCode="415")]),
    ("error-not-acceptable", "read asking for a format the server does not offer", [op("capabilities", headers={"Accept": "application/x-unknown"}), a("406", responseCode="406")]),
    ("error-format-xml", "_format=xml on a JSON-only server answers 406, or XML", [op("capabilities", params="?_format=xml"), status_in("200,406")]),
]
fixture_for = {"error-create-not-json": "error-not-json.txt", "error-create-wrong-type": "error-observation.json",
               "error-create-unknown-element": "error-unknown-element.json", "error-create-bad-date": "error-bad-date.json",
               "error-create-bad-code": "error-bad-code.json", "error-create-missing-required": "error-missing-required.json",
               "error-create-invariant": "error-invariant.json", "error-create-unknown-type": "error-unknown-type.json",
               "error-unsupported-media-type": "patient.json"}
for sid, title, actions in errs:
    s = new(CORE, sid, "errors: " + title, f"{title}: the server answers with the right status and an OperationOutcome.")
    if sid in fixture_for:
        s.fixture("f-x", "fixtures/" + fixture_for[sid])
    s.test("error", title, actions)
    if sid.startswith("error-create"):
        # In case a server accepts what it should refuse, do not leave it behind.
        pass

# JSON Patch
def patch_file(name, ops):
    return fixture_file(CORE, name, ops)


patch_file("patch-replace.json", [{"op": "replace", "path": "/gender", "value": "female"}])
patch_file("patch-add.json", [{"op": "add", "path": "/telecom", "value": [{"system": "phone", "value": "010-12345678"}]}])
patch_file("patch-remove.json", [{"op": "remove", "path": "/birthDate"}])
patch_file("patch-test-fails.json", [{"op": "test", "path": "/gender", "value": "female"}, {"op": "replace", "path": "/gender", "value": "other"}])
patch_file("patch-invalid-result.json", [{"op": "replace", "path": "/birthDate", "value": "not-a-date"}])
patch_file("patch-sequence.json", [{"op": "test", "path": "/gender", "value": "male"}, {"op": "add", "path": "/name/0/given/-", "value": "Jr"},
                                   {"op": "copy", "from": "/name/0/family", "path": "/name/0/text"}])
patch_file("patch-not-a-patch.json", {"op": "replace"})
patches = [
    ("patch-replace", "replace gender", "patch-replace.json", None, [a("200", response="okay"), expr("gender = 'female'"), expr("meta.versionId = '2'")]),
    ("patch-add", "add telecom", "patch-add.json", None, [a("200", response="okay"), expr("telecom.value = '010-12345678'")]),
    ("patch-remove", "remove birthDate", "patch-remove.json", None, [a("200", response="okay"), expr("birthDate.empty()")]),
    ("patch-sequence", "test, add to an array, copy", "patch-sequence.json", None, [a("200", response="okay"), expr("name.given.last() = 'Jr'"), expr("name.text = 'Chalmers'")]),
    ("patch-test-fails", "a failing test op changes nothing", "patch-test-fails.json", None, [status_in("400,409,412,422")]),
    ("patch-invalid-result", "a patch whose result is invalid is refused", "patch-invalid-result.json", None, [status_in("400,422")]),
    ("patch-if-match-stale", "patch with a stale If-Match", "patch-replace.json", {"If-Match": 'W/"5"'}, [a("412", response="preconditionFailed")]),
    ("patch-not-an-array", "a patch document that is not an array", "patch-not-a-patch.json", None, [status_in("400,422")]),
]
for sid, title, file, headers, asserts in patches:
    s = new(CORE, sid, "JSON Patch: " + title, f"PATCH Patient/[id] ({title}).")
    s.create("patient.json", "pat", "Patient")
    s.fixture("f-patch", "fixtures/" + file)
    kw = {"headers": dict(headers, Prefer="return=representation") if headers else {"Prefer": "return=representation"}}
    s.test("patch", title, [op("patch", resource="Patient", params="/${patId}", sourceId="f-patch",
                                contentType="application/json-patch+json", accept="json", **kw)] + asserts
           + ([op("read", resource="Patient", params="/${patId}"), expr("meta.versionId = '1'", "unchanged")]
              if sid in ("patch-test-fails", "patch-invalid-result", "patch-if-match-stale") else []))

# Formats and element selection
s = new(CORE, "read-summary", "_summary=true", "A read with _summary=true leaves out non-summary elements and marks the result SUBSETTED.")
s.create("patient.json", "pat", "Patient")
s.test("summary", "GET Patient/[id]?_summary=true", [
    op("read", resource="Patient", params="/${patId}?_summary=true"), a("200", response="okay"),
    expr("name.exists()", "name is in the summary"),
    expr("meta.tag.where(code = 'SUBSETTED').exists()"),
])
s = new(CORE, "read-elements", "_elements", "_elements=gender keeps gender and drops name.")
s.create("patient.json", "pat", "Patient")
s.test("elements", "GET Patient/[id]?_elements=gender", [
    op("read", resource="Patient", params="/${patId}?_elements=gender"), a("200", response="okay"),
    expr("gender = 'male'"), expr("name.empty()"), expr("id = %patId"),
])
s = new(CORE, "read-pretty", "_pretty=true", "A read with _pretty=true still answers the resource in FHIR JSON.")
s.create("patient.json", "pat", "Patient")
s.test("pretty", "GET Patient/[id]?_pretty=true", [
    op("read", resource="Patient", params="/${patId}?_pretty=true"), a("200", response="okay"), a("json", contentType="json"), a("Patient", resource="Patient"),
])
s = new(CORE, "read-format-param", "_format=application/fhir+json", "_format with a full media type is honoured.")
s.create("patient.json", "pat", "Patient")
s.test("format", "GET Patient/[id]?_format=application/fhir%2Bjson", [
    op("read", resource="Patient", params="/${patId}?_format=application/fhir%2Bjson"), a("200", response="okay"), a("json", contentType="json"),
])

# ----------------------------------------------------------------------------------------------
# fhir-search
# ----------------------------------------------------------------------------------------------
SEARCH = "fhir-search"
SP = [  # patients p0..p2
    {"resourceType": "Patient", "meta": TAG, "active": True,
     "identifier": [{"system": MRN, "value": "${runTag}-0",
                     "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}},
                    {"system": "urn:oid:2.16.156.10011.1.3", "value": "110101198005017777"}],
     "name": [{"family": "Zhang", "given": ["San"]}], "gender": "male", "birthDate": "1980-05-01",
     "telecom": [{"system": "phone", "value": "13800000000"}, {"system": "email", "value": "zhang@example.org"}],
     "address": [{"city": "Beijing", "postalCode": "100000"}]},
    {"resourceType": "Patient", "meta": TAG, "active": False,
     "identifier": [{"system": MRN, "value": "${runTag}-1"}],
     "name": [{"family": "Zhangsun", "given": ["Wuji"]}], "gender": "female", "birthDate": "1990-07-15",
     "address": [{"city": "Shanghai"}]},
    {"resourceType": "Patient", "meta": TAG,
     "identifier": [{"system": "urn:huitong:conformance:other", "value": "${runTag}-2"}],
     "name": [{"family": "Müller", "given": ["Li"]}], "gender": "male", "birthDate": "2000-01-01",
     "address": [{"city": "Beijing"}], "generalPractitioner": [{"reference": "Practitioner/${dr0Id}"}]},
]
SO = [  # observations o0..o2
    {"resourceType": "Observation", "meta": TAG, "status": "final",
     "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
     "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "心率"},
     "subject": {"reference": "Patient/${p0Id}"}, "effectiveDateTime": "2024-01-01T08:00:00+08:00",
     "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}},
    {"resourceType": "Observation", "meta": TAG, "status": "preliminary",
     "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
     "subject": {"reference": "Patient/${p1Id}"}, "effectiveDateTime": "2024-06-01T08:00:00+08:00",
     "valueQuantity": {"value": 90, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}},
    {"resourceType": "Observation", "meta": TAG, "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5", "display": "Body temperature"}]},
     "subject": {"reference": "Patient/${p0Id}"}, "effectiveDateTime": "2024-03-01T08:00:00+08:00",
     "valueQuantity": {"value": 37.5, "unit": "Cel", "system": "http://unitsofmeasure.org", "code": "Cel"}},
]
SR = [  # risk assessments (number)
    {"resourceType": "RiskAssessment", "meta": TAG, "status": "final", "subject": {"reference": "Patient/${p0Id}"},
     "prediction": [{"probabilityDecimal": 0.3}]},
    {"resourceType": "RiskAssessment", "meta": TAG, "status": "final", "subject": {"reference": "Patient/${p1Id}"},
     "prediction": [{"probabilityDecimal": 0.8}]},
]
SQ = [  # questionnaires (uri)
    {"resourceType": "Questionnaire", "meta": TAG, "status": "active", "url": "http://example.org/${runTag}/q/alpha"},
    {"resourceType": "Questionnaire", "meta": TAG, "status": "draft", "url": "http://example.org/${runTag}/q/alpha/sub"},
]
SE = [  # encounters
    {"resourceType": "Encounter", "meta": TAG, "status": "finished",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
     "subject": {"reference": "Patient/${p0Id}"}, "period": {"start": "2024-01-01T08:00:00+08:00", "end": "2024-01-01T09:00:00+08:00"}},
    {"resourceType": "Encounter", "meta": TAG, "status": "in-progress",
     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
     "subject": {"reference": "Patient/${p1Id}"}, "period": {"start": "2024-02-01T08:00:00+08:00"}},
]
DR = {"resourceType": "Practitioner", "meta": TAG, "name": [{"family": "Wang", "given": ["Yi"]}]}
for i, r in enumerate(SP):
    fixture_file(SEARCH, f"p{i}.json", r)
for i, r in enumerate(SO):
    fixture_file(SEARCH, f"o{i}.json", r)
for i, r in enumerate(SR):
    fixture_file(SEARCH, f"r{i}.json", r)
for i, r in enumerate(SQ):
    fixture_file(SEARCH, f"q{i}.json", r)
for i, r in enumerate(SE):
    fixture_file(SEARCH, f"e{i}.json", r)
fixture_file(SEARCH, "dr0.json", DR)

KIND = {"p": "Patient", "o": "Observation", "r": "RiskAssessment", "q": "Questionnaire", "e": "Encounter", "dr": "Practitioner"}


def kind_of(rid):
    return KIND[rid.rstrip("0123456789")]


def setup_for(s, rids):
    """Creates what the matches need, dependencies first."""
    need = set(rids)
    if any(r[0] in "ore" and r != "dr0" for r in need):
        need |= {"p0", "p1"}
    if "p2" in need:
        need.add("dr0")
    order = ["dr0", "p0", "p1", "p2", "o0", "o1", "o2", "r0", "r1", "q0", "q1", "e0", "e1"]
    for rid in order:
        if rid in need:
            s.create(f"{rid}.json", rid, kind_of(rid))
    # Teardown deletes in reverse order of creation (references first).
    s.teardown.reverse()


def match_asserts(rtype, universe, matches, ordered=False):
    out = [a("200", response="okay"), a("a searchset Bundle", resource="Bundle"), expr("Bundle.type = 'searchset'")]
    for rid in universe:
        if kind_of(rid) != rtype:
            continue
        if rid in matches:
            out.append(expr(f"Bundle.entry.resource.where(id = %{rid}Id).exists()", f"{rid} matches"))
        else:
            out.append(expr(f"Bundle.entry.resource.where(id = %{rid}Id).empty()", f"{rid} does not match"))
    n = len([m for m in matches if kind_of(m) == rtype])
    out.append(expr(f"Bundle.entry.resource.ofType({rtype}).count() = {n}", f"{n} {rtype} entries"))
    if ordered:
        for i, rid in enumerate(matches):
            out.append(expr(f"Bundle.entry[{i}].resource.id = %{rid}Id", f"entry {i} is {rid}"))
    return out


P3 = ["p0", "p1", "p2"]
O3 = ["o0", "o1", "o2"]
# (id, title, resource type, query (without the run tag), created, matches[, ordered])
CASES = [
    # string
    ("string-prefix", "string: prefix match", "Patient", "family=Zhang", P3, ["p0", "p1"]),
    ("string-case-insensitive", "string: case-insensitive", "Patient", "family=zHANG", P3, ["p0", "p1"]),
    ("string-accent-insensitive", "string: accent-insensitive (Müller = muller)", "Patient", "family=muller", P3, ["p2"]),
    ("string-exact", "string: :exact", "Patient", "family:exact=Zhang", P3, ["p0"]),
    ("string-exact-case", "string: :exact is case-sensitive", "Patient", "family:exact=zhang", P3, []),
    ("string-contains", "string: :contains", "Patient", "family:contains=hangs", P3, ["p1"]),
    ("string-name", "string: name covers given", "Patient", "name=wuji", P3, ["p1"]),
    ("string-given", "string: given", "Patient", "given=San", P3, ["p0"]),
    ("string-address-city", "string: address-city", "Patient", "address-city=beijing", P3, ["p0", "p2"]),
    ("string-address", "string: address (any part)", "Patient", "address=Shanghai", P3, ["p1"]),
    ("string-or", "string: comma is OR", "Patient", "family=Zhangsun,Muller", P3, ["p1", "p2"]),
    ("string-missing", "string: :missing=true", "Patient", "address-postalcode:missing=true", P3, ["p1", "p2"]),
    # token
    ("token-code", "token: code", "Patient", "gender=male", P3, ["p0", "p2"]),
    ("token-not", "token: :not", "Patient", "gender:not=male", P3, ["p1"]),
    ("token-system-code", "token: system|code on Identifier", "Patient", f"identifier={MRN}|${{runTag}}-1", P3, ["p1"]),
    ("token-value-only", "token: value without system", "Patient", "identifier=${runTag}-2", P3, ["p2"]),
    ("token-system-only", "token: system|", "Patient", f"identifier={MRN}|", P3, ["p0", "p1"]),
    ("token-boolean", "token: boolean", "Patient", "active=true", P3, ["p0"]),
    ("token-boolean-missing", "token: :missing on a boolean", "Patient", "active:missing=true", P3, ["p2"]),
    ("token-of-type", "token: identifier:of-type", "Patient", "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|${runTag}-0", P3, ["p0"]),
    ("token-contactpoint", "token: ContactPoint (phone)", "Patient", "phone=13800000000", P3, ["p0"]),
    ("token-email", "token: email", "Patient", "email=zhang@example.org", P3, ["p0"]),
    ("token-codeableconcept", "token: CodeableConcept system|code", "Observation", "code=http://loinc.org|8867-4", O3, ["o0", "o1"]),
    ("token-code-only", "token: code without system", "Observation", "code=8310-5", O3, ["o2"]),
    ("token-text", "token: :text on display/text", "Observation", "code:text=heart", O3, ["o0", "o1"]),
    ("token-category", "token: category", "Observation", "category=vital-signs", O3, ["o0"]),
    ("token-status-or", "token: OR of codes", "Observation", "status=final,preliminary", O3, ["o0", "o1", "o2"]),
    ("token-cn-id-alias", "token: 身份证 under the HL7 China OID finds the national OID", "Patient",
     "identifier=urn:oid:2.16.840.1.113883.2.23.1.19.1|110101198005017777", P3, ["p0"]),
    # date
    ("date-year", "date: a year", "Patient", "birthdate=1980", P3, ["p0"]),
    ("date-month", "date: a month", "Patient", "birthdate=1990-07", P3, ["p1"]),
    ("date-eq-day", "date: a day", "Patient", "birthdate=eq2000-01-01", P3, ["p2"]),
    ("date-ge", "date: ge", "Patient", "birthdate=ge1990-07-15", P3, ["p1", "p2"]),
    ("date-gt", "date: gt", "Patient", "birthdate=gt1990-07-15", P3, ["p2"]),
    ("date-le", "date: le", "Patient", "birthdate=le1990-07-15", P3, ["p0", "p1"]),
    ("date-lt", "date: lt", "Patient", "birthdate=lt1990-07-15", P3, ["p0"]),
    ("date-ne", "date: ne", "Patient", "birthdate=ne1980-05-01", P3, ["p0", "p1", "p2"][1:]),
    ("date-sa", "date: sa (starts after)", "Patient", "birthdate=sa1985", P3, ["p1", "p2"]),
    ("date-eb", "date: eb (ends before)", "Patient", "birthdate=eb1985", P3, ["p0"]),
    ("date-range-and", "date: AND of ge and lt", "Patient", "birthdate=ge1985&birthdate=lt1995", P3, ["p1"]),
    ("date-datetime", "date: dateTime with a time zone", "Observation", "date=ge2024-02-01T00:00:00%2B08:00", O3, ["o1", "o2"]),
    ("date-period", "date: Period overlaps a day", "Encounter", "date=2024-01-01", ["e0", "e1"], ["e0"]),
    ("date-period-open", "date: open-ended Period", "Encounter", "date=ge2024-03-01", ["e0", "e1"], ["e1"]),
    # number
    ("number-eq", "number: 0.3", "RiskAssessment", "probability=0.3", ["r0", "r1"], ["r0"]),
    ("number-gt", "number: gt", "RiskAssessment", "probability=gt0.5", ["r0", "r1"], ["r1"]),
    ("number-le", "number: le", "RiskAssessment", "probability=le0.8", ["r0", "r1"], ["r0", "r1"]),
    # quantity
    ("quantity-value", "quantity: value", "Observation", "value-quantity=72", O3, ["o0"]),
    ("quantity-gt", "quantity: gt", "Observation", "value-quantity=gt80", O3, ["o1"]),
    ("quantity-system-code", "quantity: value|system|code", "Observation", "value-quantity=37.5|http://unitsofmeasure.org|Cel", O3, ["o2"]),
    ("quantity-code-only", "quantity: value||code", "Observation", "value-quantity=lt100||/min", O3, ["o0", "o1"]),
    # reference
    ("reference-type-id", "reference: Type/id", "Observation", "subject=Patient/${p0Id}", O3, ["o0", "o2"]),
    ("reference-id", "reference: id with a type modifier", "Observation", "subject:Patient=${p1Id}", O3, ["o1"]),
    ("reference-patient", "reference: patient", "Observation", "patient=${p0Id}", O3, ["o0", "o2"]),
    ("reference-missing", "reference: :missing=false", "Patient", "general-practitioner:missing=false", P3, ["p2"]),
    ("chain-one", "chain: subject:Patient.family", "Observation", "subject:Patient.family=Zhangsun", O3, ["o1"]),
    ("chain-token", "chain: patient.gender", "Observation", "patient.gender=male", O3, ["o0", "o2"]),
    ("chain-two", "chain of two: subject:Patient.general-practitioner.family", "Observation",
     "subject:Patient.general-practitioner.family=Wang", O3 + ["p2"], []),
    ("has", "_has: Patients with a body temperature", "Patient", "_has:Observation:subject:code=8310-5", P3 + ["o2"], ["p0"]),
    ("has-status", "_has: Patients with a preliminary Observation", "Patient", "_has:Observation:patient:status=preliminary", P3 + O3, ["p1"]),
    # uri
    ("uri-exact", "uri: exact", "Questionnaire", "url=http://example.org/${runTag}/q/alpha", ["q0", "q1"], ["q0"]),
    ("uri-below", "uri: :below", "Questionnaire", "url:below=http://example.org/${runTag}/q/alpha", ["q0", "q1"], ["q0", "q1"]),
    ("uri-above", "uri: :above", "Questionnaire", "url:above=http://example.org/${runTag}/q/alpha/sub", ["q0", "q1"], ["q0", "q1"]),
    # common parameters
    ("common-id", "_id", "Patient", "_id=${p1Id}", P3, ["p1"]),
    ("common-id-or", "_id with two ids", "Patient", "_id=${p0Id},${p2Id}", P3, ["p0", "p2"]),
    ("common-lastupdated", "_lastUpdated=gt2000", "Patient", "_lastUpdated=gt2000-01-01", P3, P3),
    ("common-and", "AND across parameters", "Patient", "family=Zhang&gender=female", P3, ["p1"]),
    # sort
    ("sort-date", "_sort=birthdate", "Patient", "_sort=birthdate", P3, ["p0", "p1", "p2"], True),
    ("sort-date-desc", "_sort=-birthdate", "Patient", "_sort=-birthdate", P3, ["p2", "p1", "p0"], True),
    ("sort-string", "_sort=family", "Patient", "_sort=family", P3, ["p2", "p0", "p1"], True),
    ("sort-two-keys", "_sort=gender,-birthdate", "Patient", "_sort=gender,-birthdate", P3, ["p1", "p2", "p0"], True),
]
for case in CASES:
    sid, title, rtype, q, created, matches = case[:6]
    ordered = len(case) > 6 and case[6]
    s = new(SEARCH, "search-" + sid, "search " + title, f"GET {rtype}?{q}: checks which of the script's own resources match.")
    setup_for(s, created + matches)
    universe = [r for r in ["dr0", "p0", "p1", "p2", "o0", "o1", "o2", "r0", "r1", "q0", "q1", "e0", "e1"]
                if r in set(created + matches) or (r in ("p0", "p1") and any(x[0] in "ore" for x in created))]
    s.test("search", title, [op("search", resource=rtype, params=f"?{q}&{TAGQ}", accept="json")]
           + match_asserts(rtype, universe, matches, ordered))

# Result shaping, paging, includes, strictness
def special(sid, title, description, created, actions):
    s = new(SEARCH, "search-" + sid, "search " + title, description)
    setup_for(s, created)
    s.test("search", title, actions(s))
    return s


special("include", "_include", "Observation?code=8867-4&_include=Observation:subject adds the two Patients as includes.", O3,
        lambda s: [op("search", resource="Observation", params=f"?code=8867-4&_include=Observation:subject&{TAGQ}"), ok(),
                   expr("Bundle.entry.where(search.mode = 'match').count() = 2"),
                   expr("Bundle.entry.where(search.mode = 'include').resource.ofType(Patient).count() = 2"),
                   expr("Bundle.entry.where(search.mode = 'include').resource.where(id = %p0Id).exists()")])
special("revinclude", "_revinclude", "Patient?_id=p0&_revinclude=Observation:subject adds p0's two Observations.", O3,
        lambda s: [op("search", resource="Patient", params=f"?_id=${{p0Id}}&_revinclude=Observation:subject&{TAGQ}"), ok(),
                   expr("Bundle.entry.where(search.mode = 'match').count() = 1"),
                   expr("Bundle.entry.where(search.mode = 'include').resource.ofType(Observation).count() = 2")])
special("include-iterate", "_include:iterate", "Observation -> Patient -> Practitioner through _include:iterate.", ["o0", "p2"],
        lambda s: [op("search", resource="Observation", params=f"?code=8867-4&_include=Observation:subject&_include:iterate=Patient:general-practitioner&{TAGQ}"), ok(),
                   expr("Bundle.entry.resource.ofType(Patient).count() >= 1")])
special("summary-count", "_summary=count", "_summary=count answers the total and no entries.", P3,
        lambda s: [op("search", resource="Patient", params=f"?_summary=count&{TAGQ}"), ok(), expr("Bundle.total = 3"), expr("Bundle.entry.empty()")])
special("total-accurate", "_total=accurate", "_total=accurate gives Bundle.total.", P3,
        lambda s: [op("search", resource="Patient", params=f"?_total=accurate&{TAGQ}"), ok(), expr("Bundle.total = 3")])
special("elements", "_elements", "_elements=gender keeps gender, drops name, marks SUBSETTED.", P3,
        lambda s: [op("search", resource="Patient", params=f"?_elements=gender&{TAGQ}"), ok(),
                   expr("Bundle.entry.resource.all(gender.exists() and name.empty())"),
                   expr("Bundle.entry.resource.meta.tag.where(code = 'SUBSETTED').exists()")])
special("summary-true", "_summary=true", "_summary=true keeps summary elements.", P3,
        lambda s: [op("search", resource="Patient", params=f"?_summary=true&{TAGQ}"), ok(),
                   expr("Bundle.entry.resource.all(name.exists())")])
s = special("paging", "paging with _count and next", "_count=2 over three Patients: page 1 has 2 and a next link; page 2 has 1 and none of page 1.", P3,
            lambda s: [op("search", resource="Patient", params=f"?_count=2&{TAGQ}", responseId="page1"), ok(),
                       expr("Bundle.entry.count() = 2"), a("navigation links", navigationLinks=True),
                       expr("Bundle.link.where(relation = 'next').exists()"),
                       op("search", url="${next}"), ok(), expr("Bundle.entry.count() = 1"),
                       expr("(Bundle.entry.resource.id | %first | %second).count() = 3", "no Patient on both pages")])
s.var("next", expression="Bundle.link.where(relation = 'next').url", sourceId="page1")
s.var("first", expression="Bundle.entry[0].resource.id", sourceId="page1")
s.var("second", expression="Bundle.entry[1].resource.id", sourceId="page1")
special("self-link", "Bundle.link self", "The searchset has a self link naming the parameters applied.", P3,
        lambda s: [op("search", resource="Patient", params=f"?gender=male&{TAGQ}"), ok(), a("navigation links", navigationLinks=True),
                   expr("Bundle.link.where(relation = 'self').url.contains('gender=male')")])
special("strict-unknown", "strict: unknown parameter", "An unknown parameter answers 400 naming it.", [],
        lambda s: [op("search", resource="Patient", params="?no-such-param=1"), a("400", response="bad"),
                   a("outcome", resource="OperationOutcome"), expr("issue.diagnostics.join(' ').contains('no-such-param')")])
special("lenient-unknown", "lenient: unknown parameter ignored", "With Prefer: handling=lenient an unknown parameter is ignored.", P3,
        lambda s: [op("search", resource="Patient", params=f"?no-such-param=1&{TAGQ}", headers={"Prefer": "handling=lenient"}), ok(),
                   expr("Bundle.entry.where(resource is Patient).count() = 3")])
special("strict-bad-date", "strict: a bad date value", "birthdate=not-a-date answers 400.", [],
        lambda s: [op("search", resource="Patient", params="?birthdate=not-a-date"), a("400", response="bad")])
special("strict-bad-modifier", "strict: a bad modifier", "family:below=x answers 400.", [],
        lambda s: [op("search", resource="Patient", params="?family:nonsense=x"), a("400", response="bad")])
special("post-search", "POST _search", "POST Patient/_search with a form body finds the same as GET.", P3,
        lambda s: [op("search", url="Patient/_search", method="post", sourceId="f-form", contentType="application/x-www-form-urlencoded"), ok(),
                   expr("Bundle.entry.resource.where(id = %p1Id).exists()"), expr("Bundle.entry.count() = 1")])
SCRIPTS[-1].fixture("f-form", "fixtures/form-female.txt")
fixture_file(SEARCH, "form-female.txt", "gender=female&" + TAGQ)
special("system-type", "system search with _type", "GET [base]?_type=Patient,Observation&_tag=... finds both types.", O3,
        lambda s: [op("searchSystem", params=f"?_type=Patient,Observation&{TAGQ}"), ok(),
                   expr("Bundle.entry.resource.ofType(Patient).count() = 2"),
                   expr("Bundle.entry.resource.ofType(Observation).count() = 3")])
special("compartment", "Patient compartment", "GET Patient/p0/Observation finds p0's two Observations.", O3,
        lambda s: [op("search", url="Patient/${p0Id}/Observation?" + TAGQ), ok(), expr("Bundle.entry.count() = 2")])
special("empty-result", "no match", "A search matching nothing is a 200 with an empty searchset.", [],
        lambda s: [op("search", resource="Patient", params=f"?family=nobody-{chr(36)}{{runTag}}"), ok(),
                   expr("Bundle.entry.empty()"), expr("Bundle.total = 0")])

# ----------------------------------------------------------------------------------------------
# validation ($validate, core and profiles/cn)
# ----------------------------------------------------------------------------------------------
VAL = "validation"
VF = {
    "core-valid-patient.json": PATIENT,
    "core-valid-observation.json": dict(OBS),
    "core-bad-cardinality.json": {"resourceType": "Observation", "code": {"text": "x"}},
    "core-bad-code.json": dict(PATIENT, gender="boy"),
    "core-bad-invariant.json": dict(PATIENT, contact=[{"gender": "female"}]),
    "core-bad-reference-type.json": dict(OBS, subject={"reference": "Medication/m1"}),
    "core-bad-quantity-invariant.json": dict(OBS, valueQuantity={"value": 1, "code": "mg"}),
    "core-bad-bundle-fullurl.json": {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "Patient/relative", "resource": PATIENT}]},
    "core-valid-bundle.json": {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "urn:uuid:0c2b6f34-5c4e-4d1e-8a7e-000000000003", "resource": PATIENT}]},
    "core-bad-modifier-extension.json": dict(PATIENT, modifierExtension=[{"url": "http://example.org/unknown-modifier", "valueBoolean": True}]),
    "core-unknown-extension.json": dict(PATIENT, extension=[{"url": "http://example.org/local-note", "valueString": "note"}]),
}
for k, v in VF.items():
    fixture_file(VAL, k, v)
CORE_VAL = [
    ("core-valid-patient", "Patient", "core-valid-patient.json", True, None, "a valid Patient"),
    ("core-valid-observation", "Observation", "core-valid-observation.json", True, None, "a valid Observation"),
    ("core-valid-bundle", "Bundle", "core-valid-bundle.json", True, None, "a valid collection Bundle"),
    ("core-bad-cardinality", "Observation", "core-bad-cardinality.json", False, "Observation", "Observation.status missing (min 1)"),
    ("core-bad-code", "Patient", "core-bad-code.json", False, "Patient.gender", "gender outside the required binding"),
    ("core-bad-invariant", "Patient", "core-bad-invariant.json", False, "Patient.contact", "pat-1: a contact needs details or an organization"),
    ("core-bad-reference-type", "Observation", "core-bad-reference-type.json", False, "Observation.subject", "subject may not reference a Medication"),
    ("core-bad-quantity", "Observation", "core-bad-quantity-invariant.json", False, "Observation.value", "qty-3: a code needs a system"),
    ("core-bad-bundle-fullurl", "Bundle", "core-bad-bundle-fullurl.json", False, "Bundle.entry", "a Bundle fullUrl must be absolute"),
    ("core-bad-modifier-extension", "Patient", "core-bad-modifier-extension.json", False, "Patient.modifierExtension", "an unknown modifier extension is an error"),
    ("core-unknown-extension-warning", "Patient", "core-unknown-extension.json", True, None, "an unknown extension is only a warning"),
]
for sid, rtype, file, valid, where, title in CORE_VAL:
    s = new(VAL, "validate-" + sid, "$validate (core): " + title, f"POST {rtype}/$validate with {title}: the outcome has "
            + ("no error" if valid else f"an error located at {where}") + ".")
    s.fixture("f-x", "fixtures/" + file)
    asserts = [a("200", response="okay"), a("an OperationOutcome", resource="OperationOutcome")]
    if valid:
        asserts.append(expr("issue.where(severity = 'error' or severity = 'fatal').empty()", "no errors"))
    else:
        asserts.append(expr("issue.where(severity = 'error' or severity = 'fatal').exists()", "an error"))
        asserts.append(expr(f"issue.where(severity = 'error').expression.where($this.startsWith({fp_str(where)})).exists()", f"located at {where}"))
    if sid == "core-unknown-extension-warning":
        asserts.append(expr("issue.where(severity = 'warning').exists()", "a warning about the extension"))
    s.test("validate", title, [op("validate", resource=rtype, sourceId="f-x", contentType="json", accept="json")] + asserts)

s = new(VAL, "validate-instance", "$validate on a stored instance", "GET Patient/[id]/$validate judges the stored Patient.")
s.fixture("f-pat", "fixtures/core-valid-patient.json")
s.var("patId", expression="id", sourceId="pat")
s.setup += [op("create", resource="Patient", sourceId="f-pat", responseId="pat", contentType="json", headers={"Prefer": "return=representation"}),
            a("created", response="created")]
s.test("validate", "instance $validate", [op("validate", resource="Patient", targetId="pat", method="get"), a("200", response="okay"),
                                          expr("issue.where(severity = 'error').empty()")])
s.teardown.append(op("delete", resource="Patient", targetId="pat"))

s = new(VAL, "validate-parameters-body", "$validate with a Parameters body", "A Parameters with resource and mode=create is accepted.")
fixture_file(VAL, "parameters-create.json", {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": PATIENT}, {"name": "mode", "valueCode": "create"}]})
s.fixture("f-p", "fixtures/parameters-create.json")
s.test("validate", "Parameters body", [op("validate", resource="Patient", sourceId="f-p", contentType="json"), a("200", response="okay"),
                                       expr("issue.where(severity = 'error').empty()")])

s = new(VAL, "validate-unknown-profile", "$validate against an unknown profile", "profile=<unknown URL> is reported, never silently ignored.")
s.fixture("f-x", "fixtures/core-valid-patient.json")
s.test("validate", "unknown profile", [op("validate", resource="Patient", params="?profile=http://example.org/no-such-profile", sourceId="f-x", contentType="json"),
                                       expr("issue.where(severity = 'error' or severity = 'fatal').exists()", "an error about the profile")])

# profiles/cn: the examples of the guide, read in place from profiles/cn/examples (project files).
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "profiles", "cn", "examples")
expected = json.load(open(os.path.join(EXAMPLES, "expected.json"), encoding="utf-8"))
for prof in sorted(os.listdir(EXAMPLES)):
    d = os.path.join(EXAMPLES, prof)
    if not os.path.isdir(d):
        continue
    url = CN + prof
    s = new(VAL, "validate-cn-" + prof.lower(), f"$validate against {prof} (profiles/cn)",
            f"Every example of {prof} in profiles/cn/examples: valid ones give no error against {url}, invalid ones the "
            f"error expected.json names, at its element.")
    for f in sorted(os.listdir(d)):
        if not f.endswith(".json"):
            continue
        body = json.load(open(os.path.join(d, f), encoding="utf-8"))
        rtype = body["resourceType"]
        fid = s.fixture("f-" + f[:-5], f"../../profiles/cn/examples/{prof}/{f}")
        call = op("validate", resource=rtype, params="?profile=" + url, sourceId=fid, contentType="json", accept="json")
        key = f"{prof}/{f}"
        if key in expected:
            want = expected[key]
            s.test(f[:-5], f"{f}: {want['rule']}", [
                call, a("200", response="okay"),
                expr("issue.where(severity = 'error' or severity = 'fatal').exists()", "an error"),
                expr(f"issue.where(severity = 'error' and expression.where($this = {fp_str(want['expression'])}).exists() "
                     f"and diagnostics.contains({fp_str(want['rule'])})).exists()",
                     f"{want['expression']}: {want['rule']}"),
            ])
        else:
            s.test(f[:-5], f"{f} is valid", [call, a("200", response="okay"),
                                                  expr("issue.where(severity = 'error' or severity = 'fatal').empty()", "no errors")])

# ----------------------------------------------------------------------------------------------
# hl7v2 (POST /hl7v2 with ACK checks, then the FHIR resources produced)
# ----------------------------------------------------------------------------------------------
V2 = "hl7v2"
V2MSG = {
    "adt-a01.hl7": "MSH|^~\\&|HIS|CONF${runTag}|HUITONG|HT|20240101083000||ADT^A01^ADT_A01|A01-${runTag}|P|2.5.1||||||UNICODE UTF-8\r"
                   "EVN|A01|20240101083000\r"
                   "PID|1||MRN-${runTag}^^^CONF${runTag}^MR||张^三||19800501|M|||北京市东城区^^北京^^100000||13800000000\r"
                   "PV1|1|I|W01^101^1^CONF${runTag}||||D001^王^医生|||MED||||||||V-${runTag}^^^CONF${runTag}^VN|||||||||||||||||||||||||20240101083000\r",
    "adt-a08.hl7": "MSH|^~\\&|HIS|CONF${runTag}|HUITONG|HT|20240101093000||ADT^A08^ADT_A01|A08-${runTag}|P|2.5.1||||||UNICODE UTF-8\r"
                   "EVN|A08|20240101093000\r"
                   "PID|1||MRN-${runTag}^^^CONF${runTag}^MR||张^三丰||19800501|M\r"
                   "PV1|1|I|W01^102^1^CONF${runTag}|||||||MED||||||||V-${runTag}^^^CONF${runTag}^VN\r",
    "oru-r01.hl7": "MSH|^~\\&|LIS|CONF${runTag}|HUITONG|HT|20240101100000||ORU^R01^ORU_R01|R01-${runTag}|P|2.5.1||||||UNICODE UTF-8\r"
                   "PID|1||MRN-${runTag}^^^CONF${runTag}^MR||张^三||19800501|M\r"
                   "OBR|1|ORD-${runTag}|FIL-${runTag}|58410-2^CBC^LN|||20240101090000|||||||||||||||20240101100000|||F\r"
                   "OBX|1|NM|718-7^Hemoglobin^LN||135|g/L^g/L^UCUM|130-175|N|||F|||20240101090000\r"
                   "OBX|2|NM|6690-2^WBC^LN||6.2|10*9/L^10*9/L^UCUM|3.5-9.5|N|||F|||20240101090000\r",
    "vxu-v04.hl7": "MSH|^~\\&|EPI|CONF${runTag}|HUITONG|HT|20240101110000||VXU^V04^VXU_V04|V04-${runTag}|P|2.5.1||||||UNICODE UTF-8\r"
                   "PID|1||MRN-${runTag}^^^CONF${runTag}^MR||张^三||19800501|M\r"
                   "ORC|RE||IMM-${runTag}\r"
                   "RXA|0|1|20240101103000|20240101103000|08^HepB^CVX|0.5|mL^mL^UCUM||00^New immunization record^NIP001||||||LOT-${runTag}||MSD^Merck^MVX|||CP|A\r"
                   "RXR|IM^Intramuscular^HL70162|LA^Left arm^HL70163\r",
    "orm-o01.hl7": "MSH|^~\\&|HIS|CONF${runTag}|HUITONG|HT|20240101120000||ORM^O01^ORM_O01|O01-${runTag}|P|2.5.1||||||UNICODE UTF-8\r"
                   "PID|1||MRN-${runTag}^^^CONF${runTag}^MR||张^三||19800501|M\r"
                   "ORC|NW|PLC-${runTag}|||||||20240101120000\r"
                   "OBR|1|PLC-${runTag}||24627-2^Chest CT^LN|||20240101120000\r",
    "oml-o21.hl7": "MSH|^~\\&|HIS|CONF${runTag}|HUITONG|HT|20240101130000||OML^O21^OML_O21|O21-${runTag}|P|2.5.1||||||UNICODE UTF-8\r"
                   "PID|1||MRN-${runTag}^^^CONF${runTag}^MR||张^三||19800501|M\r"
                   "ORC|NW|LAB-${runTag}|||||||20240101130000\r"
                   "OBR|1|LAB-${runTag}||58410-2^CBC^LN|||20240101130000\r",
    "bad-no-msh.hl7": "PID|1||MRN-${runTag}^^^CONF${runTag}^MR||张^三\r",
    "bad-unknown-version.hl7": "MSH|^~\\&|HIS|CONF${runTag}|HUITONG|HT|20240101140000||ADT^A01^ADT_A01|BAD-${runTag}|P|9.9||||||UNICODE UTF-8\r"
                               "PID|1||MRN-${runTag}^^^CONF${runTag}^MR||张^三\r",
}
for k, v in V2MSG.items():
    fixture_file(V2, k, v)


def v2_post(fid, rid, accept=None):
    kw = {"headers": {"Accept": accept}} if accept else {}
    return op("hl7v2", url="${serverRoot}/hl7v2", method="post", sourceId=fid, contentType="x-application/hl7-v2+er7",
              responseId=rid, **kw)


def ack(control, code="AA"):
    return [a("200", response="okay"), a(f"MSA-1 is {code}", path="MSA-1", value=code),
            a("MSA-2 echoes MSH-10", path="MSA-2", value=control), a("an ACK", path="MSH-9.1", value="ACK")]


V2CASES = [
    ("adt-a01", "ADT^A01 admit: AA, then the Patient and Encounter exist", ["adt-a01.hl7"], "A01-${runTag}", [
        op("search", resource="Patient", params="?identifier=MRN-${runTag}"), ok(), expr("Bundle.entry.count() = 1"),
        expr("Bundle.entry.resource.name.family = '张'"), expr("Bundle.entry.resource.birthDate = @1980-05-01"),
        expr("Bundle.entry.resource.gender = 'male'"),
        op("search", resource="Encounter", params="?subject.identifier=MRN-${runTag}"), ok(), expr("Bundle.entry.count() = 1"),
        expr("Bundle.entry.resource.class.code = 'IMP'"),
    ]),
    ("adt-a08", "ADT^A08 update: the same Patient gets the new name", ["adt-a01.hl7", "adt-a08.hl7"], "A08-${runTag}", [
        op("search", resource="Patient", params="?identifier=MRN-${runTag}"), ok(), expr("Bundle.entry.count() = 1", "one Patient, updated"),
        expr("Bundle.entry.resource.name.given = '三丰'"),
    ]),
    ("oru-r01", "ORU^R01 result: DiagnosticReport with two Observations", ["oru-r01.hl7"], "R01-${runTag}", [
        op("search", resource="Observation", params="?code=http://loinc.org|718-7&patient.identifier=MRN-${runTag}"), ok(),
        expr("Bundle.entry.count() = 1"), expr("(Bundle.entry.resource.value as Quantity).value = 135"),
        op("search", resource="DiagnosticReport", params="?patient.identifier=MRN-${runTag}"), ok(), expr("Bundle.entry.count() = 1"),
        expr("Bundle.entry.resource.result.count() = 2"),
    ]),
    ("vxu-v04", "VXU^V04 immunisation: Immunization with lot number and route", ["vxu-v04.hl7"], "V04-${runTag}", [
        op("search", resource="Immunization", params="?patient.identifier=MRN-${runTag}"), ok(), expr("Bundle.entry.count() = 1"),
        expr("Bundle.entry.resource.lotNumber = 'LOT-' + %runTag"), expr("Bundle.entry.resource.vaccineCode.coding.code = '08'"),
    ]),
    ("orm-o01", "ORM^O01 order: a ServiceRequest", ["orm-o01.hl7"], "O01-${runTag}", [
        op("search", resource="ServiceRequest", params="?patient.identifier=MRN-${runTag}"), ok(), expr("Bundle.entry.count() = 1"),
        expr("Bundle.entry.resource.code.coding.code = '24627-2'"),
    ]),
    ("oml-o21", "OML^O21 lab order: a ServiceRequest", ["oml-o21.hl7"], "O21-${runTag}", [
        op("search", resource="ServiceRequest", params="?patient.identifier=MRN-${runTag}"), ok(), expr("Bundle.entry.count() = 1"),
        expr("Bundle.entry.resource.code.coding.code = '58410-2'"),
    ]),
]
for sid, title, files, control, checks in V2CASES:
    s = new(V2, "hl7v2-" + sid, "HL7 v2 " + title, f"POST /hl7v2 ({', '.join(files)}); the ACK is AA for the message and the FHIR resources it produced are searchable.")
    actions = []
    for i, f in enumerate(files):
        fid = s.fixture("f-" + f[:-4], "fixtures/" + f)
        actions.append(v2_post(fid, f"ack{i}"))
        if i < len(files) - 1:
            actions.append(a("AA", path="MSA-1", value="AA"))
    s.test("ingest", title, actions + ack(control) + checks)

s = new(V2, "hl7v2-duplicate", "HL7 v2 duplicate message: the original ACK, nothing written twice",
        "The same ADT^A01 twice: both AA with the same MSA-2; one Patient.")
s.fixture("f-a01", "fixtures/adt-a01.hl7")
s.test("duplicate", "send twice", [v2_post("f-a01", "first")] + ack("A01-${runTag}") + [v2_post("f-a01", "second")] + ack("A01-${runTag}") + [
    op("search", resource="Patient", params="?identifier=MRN-${runTag}"), expr("Bundle.entry.count() = 1")])
s = new(V2, "hl7v2-bundle-accept", "HL7 v2 with Accept: application/fhir+json answers the committed Bundle",
        "POST /hl7v2 asking for FHIR JSON answers the transaction-response Bundle.")
s.fixture("f-a01", "fixtures/adt-a01.hl7")
s.test("bundle", "Accept FHIR", [v2_post("f-a01", "b", accept="application/fhir+json"), ok(), a("json", contentType="json"),
                                 a("a Bundle", resource="Bundle"), expr("Bundle.entry.resource.ofType(Patient).exists() or Bundle.entry.response.exists()")])
s = new(V2, "hl7v2-reject-no-msh", "HL7 v2 without MSH is refused", "A body that does not start with MSH answers an error, not AA.")
s.fixture("f-bad", "fixtures/bad-no-msh.hl7")
s.test("reject", "no MSH", [v2_post("f-bad", "r"), a("not AA", path="MSA-1", operator="notEquals", value="AA")])
s = new(V2, "hl7v2-unsupported-media-type", "HL7 v2 with a JSON content type is refused", "POST /hl7v2 with Content-Type application/json answers 415.")
s.fixture("f-a01", "fixtures/adt-a01.hl7")
s.test("415", "wrong content type", [op("hl7v2", url="${serverRoot}/hl7v2", method="post", sourceId="f-a01", contentType="application/json"),
                                     a("415", responseCode="415")])


# ----------------------------------------------------------------------------------------------
# cn-hospital-platform (WS/T 846 interactions through POST /hl7v3, bare and in SOAP envelopes:
# the acknowledgement or query response is judged with XML paths, then what was written is
# searched in FHIR). Messages are written here (fixtures/*.xml, ids made unique by ${runTag});
# the sample-* scripts send the cn-hie samples read in place from $HUITONG_CORPORA.
# ----------------------------------------------------------------------------------------------
V3S = "cn-hospital-platform"
P_LOCAL = "2.16.156.10011.2.5.1.4"   # patient id in the hospital (患者ID)
DEPT = "2.16.156.10011.1.26"         # 科室
ORG = "2.16.156.10011.1.5"           # 医疗机构
STAFF = "2.16.156.10011.1.4"         # 医务人员
VISIT = "2.16.156.10011.1.11"        # 门(急)诊号
ORDER = "2.16.156.10011.1.28"        # 医嘱号
VS = "2.16.156.10011.2.3.9"          # the value-set ids of these scripts
SEX = "2.16.156.10011.2.3.3.4"


def v3_message(interaction, msg_id, body):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<{interaction} xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ITSVersion="XML_1.0">\n'
            f'<id root="2.16.156.10011.2.5.1.1" extension="{msg_id}"/><creationTime value="20240301101500"/>\n'
            f'<interactionId root="2.16.156.10011.2.5.1.2" extension="{interaction}"/>\n'
            f'<processingCode code="P"/><processingModeCode/><acceptAckCode code="AL"/>\n'
            f'<receiver typeCode="RCV"><device classCode="DEV" determinerCode="INSTANCE"><id><item root="2.16.156.10011.2.5.1.3" extension="HIP"/></id></device></receiver>\n'
            f'<sender typeCode="SND"><device classCode="DEV" determinerCode="INSTANCE"><id><item root="2.16.156.10011.2.5.1.3" extension="HIS-${{runTag}}"/></id></device></sender>\n'
            f'<controlActProcess classCode="CACT" moodCode="EVN">\n{body}\n</controlActProcess>\n</{interaction}>\n')


def soap(version, message):
    ns = {"1.1": "http://schemas.xmlsoap.org/soap/envelope/", "1.2": "http://www.w3.org/2003/05/soap-envelope"}[version]
    inner = message.split("?>", 1)[1].strip()
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<s:Envelope xmlns:s="{ns}"><s:Header/><s:Body>\n{inner}\n</s:Body></s:Envelope>\n'


def en(text):
    return f'<name xsi:type="DSET_EN"><item><part value="{text}"/></item></name>'


def person_body(local, name="钱测试", sex="1", birth="19800102", event="registrationRequest", mood="RQO"):
    return (f'<subject typeCode="SUBJ"><{event} classCode="REG" moodCode="{mood}"><statusCode code="active"/>\n'
            f'<subject1 typeCode="SBJ"><patient classCode="PAT">\n'
            f'<id><item root="{P_LOCAL}" extension="{local}"/></id><statusCode code="active"/>\n'
            f'<patientPerson classCode="PSN" determinerCode="INSTANCE">{en(name)}\n'
            f'<administrativeGenderCode code="{sex}" codeSystem="{SEX}"/><birthTime value="{birth}"/></patientPerson>\n'
            f'<providerOrganization classCode="ORG" determinerCode="INSTANCE"><id><item root="{ORG}" extension="H-${{runTag}}"/></id>{en("测试医院")}</providerOrganization>\n'
            f'</patient></subject1>\n'
            f'<author typeCode="AUT"><assignedEntity classCode="ASSIGNED"><id><item root="{STAFF}" extension="A-${{runTag}}"/></id>'
            f'<assignedPerson classCode="PSN" determinerCode="INSTANCE">{en("赵登记")}</assignedPerson></assignedEntity></author>\n'
            f'</{event}></subject>')


def org_body(name="心内科", principal="测试医院心内科"):
    return (f'<subject typeCode="SUBJ"><registrationRequest classCode="REG" moodCode="RQO"><statusCode code="active"/>\n'
            f'<subject1 typeCode="SUBJ"><assignedEntity classCode="ASSIGNED">\n'
            f'<id><item root="{DEPT}" extension="K-${{runTag}}"/></id>\n'
            f'<code code="A03" codeSystem="2.16.156.10011.2.3.3.2"><displayName value="内科"/></code>{en(name)}\n'
            f'<assignedPrincipalOrganization classCode="ORG" determinerCode="INSTANCE">{en(principal)}\n'
            f'<asAffiliate classCode="AFFL"><scoper2 classCode="ORG" determinerCode="INSTANCE"><id><item root="{ORG}" extension="H-${{runTag}}"/></id>{en("测试医院")}</scoper2></asAffiliate>\n'
            f'</assignedPrincipalOrganization></assignedEntity></subject1></registrationRequest></subject>')


def staff_body(name="孙医生", birth="19750305"):
    return (f'<subject typeCode="SUBJ"><registrationRequest classCode="REG" moodCode="RQO"><statusCode code="active"/>\n'
            f'<subject1 typeCode="SUBJ"><healthCareProvider classCode="PROV">\n'
            f'<id><item root="{STAFF}" extension="D-${{runTag}}"/></id>\n'
            f'<code code="231" codeSystem="2.16.156.10011.2.3.3.6"><displayName value="主治医师"/></code>\n'
            f'<healthCarePrincipalPerson classCode="PSN" determinerCode="INSTANCE">{en(name)}\n'
            f'<administrativeGenderCode code="2" codeSystem="{SEX}"/><birthTime value="{birth}"/>\n'
            f'<asAffiliate classCode="AFFL"><affiliatedPrincipalOrganization classCode="ORG" determinerCode="INSTANCE"><id><item root="{DEPT}" extension="K-${{runTag}}"/></id>{en("心内科")}</affiliatedPrincipalOrganization></asAffiliate>\n'
            f'</healthCarePrincipalPerson></healthCareProvider></subject1></registrationRequest></subject>')


def valueset_body(codes):
    items = "".join(f'<valueSetItems><code code="{c}"><displayName value="{d}"/></code><statusCode code="1"/></valueSetItems>' for c, d in codes)
    return (f'<subject typeCode="SUBJ"><registrationRequest classCode="REG" moodCode="RQO"><subject1 typeCode="SUBJ">\n'
            f'<valueSet><id root="{VS}" extension="VS-${{runTag}}"/><desc value="测试血型代码表"/><statusCode code="1"/><version code="1.0"/>\n'
            f'{items}</valueSet></subject1></registrationRequest></subject>')


def encounter_body(code="1", high=None):
    end = f'<high value="{high}"/>' if high else ""
    return (f'<subject typeCode="SUBJ"><encounterEvent classCode="ENC" moodCode="EVN">\n'
            f'<id><item root="{VISIT}" extension="V-${{runTag}}"/></id>\n'
            f'<code code="{code}" codeSystem="2.16.156.10011.2.3.1.271"><displayName value="门诊"/></code><statusCode/>\n'
            f'<effectiveTime><low value="20240301080000"/>{end}</effectiveTime>\n'
            f'<subject typeCode="SBJ"><patient classCode="PAT"><id><item root="{P_LOCAL}" extension="P-${{runTag}}"/></id>\n'
            f'<patientPerson>{en("周就诊")}<administrativeGenderCode code="1" codeSystem="{SEX}"/></patientPerson></patient></subject>\n'
            f'<admitter typeCode="ADM"><time/><assignedPerson classCode="ASSIGNED"><id><item root="{STAFF}" extension="D-${{runTag}}"/></id>'
            f'<assignedPerson classCode="PSN" determinerCode="INSTANCE">{en("吴医生")}</assignedPerson></assignedPerson></admitter>\n'
            f'<location typeCode="LOC"><time/><statusCode code="active"/><serviceDeliveryLocation classCode="SDLOC">\n'
            f'<location classCode="PLC" determinerCode="INSTANCE"><id><item root="{DEPT}" extension="L-${{runTag}}"/></id>{en("外科")}</location>\n'
            f'<serviceProviderOrganization classCode="ORG" determinerCode="INSTANCE"><id><item root="{ORG}" extension="H-${{runTag}}"/></id></serviceProviderOrganization>\n'
            f'</serviceDeliveryLocation></location></encounterEvent></subject>')


def order_body(status="active", dose="20"):
    return (f'<subject typeCode="SUBJ"><placerGroup classCode="GROUPER" moodCode="RQO">\n'
            f'<author typeCode="AUT" contextControlCode="OP"><time value="20240301090000"/><assignedEntity classCode="ASSIGNED">'
            f'<id><item root="{STAFF}" extension="D-${{runTag}}"/></id><assignedPerson classCode="PSN" determinerCode="INSTANCE">{en("李医生")}</assignedPerson></assignedEntity></author>\n'
            f'<component2><sequenceNumber value="1"/><substanceAdministrationRequest classCode="SBADM" moodCode="RQO">\n'
            f'<id root="{ORDER}" extension="O-${{runTag}}"/>\n'
            f'<code code="1" codeSystem="2.16.156.10011.2.3.1.268"><displayName value="药品类医嘱"/></code>\n'
            f'<text value="葡萄糖酸钙片 口服"/><statusCode code="{status}"/>\n'
            f'<routeCode code="1" codeSystem="2.16.156.10011.2.3.1.158"><displayName value="口服"/></routeCode>\n'
            f'<doseQuantity value="{dose}" unit="mg"/>\n'
            f'<consumable2 typeCode="CSM"><manufacturedProduct1 classCode="MANU"><manufacturedProduct classCode="MMAT" determinerCode="KIND">'
            f'<code code="201056" codeSystem="2.16.156.10011.2.5.1.14"/></manufacturedProduct></manufacturedProduct1></consumable2>\n'
            f'</substanceAdministrationRequest></component2>\n'
            f'<componentOf1><encounter classCode="ENC" moodCode="EVN"><id><item root="{VISIT}" extension="V-${{runTag}}"/></id>\n'
            f'<subject typeCode="SBJ"><patient classCode="PAT"><id><item root="{P_LOCAL}" extension="P-${{runTag}}"/></id>'
            f'<patientPerson>{en("郑医嘱")}</patientPerson></patient></subject></encounter></componentOf1>\n'
            f'</placerGroup></subject>')


def query_body(payload, query_id="Q-${runTag}", wrapper="queryByParameter"):
    return (f'<{wrapper}><queryId root="2.16.156.10011.2.5.1.15" extension="{query_id}"/><statusCode code="new"/>'
            f'<initialQuantity value="10"/>\n{payload}\n</{wrapper}>')


def ident(oid, value):
    # `${name}` stays as written: the runner substitutes it before sending.
    return quote(f"urn:oid:{oid}|{value}", safe=":${}")


def v3_post(fid, rid, content_type="application/xml"):
    return op("hl7v3", url="${serverRoot}/hl7v3", method="post", sourceId=fid, contentType=content_type, responseId=rid)


def v3_answer(msg_id, answer="MCCI_IN000002UV01", code="AA", soap_version=None):
    base = "/soap:Envelope/soap:Body/" if soap_version else "/"
    out = [a("200 (the acknowledgement carries the outcome)", response="okay"),
           a(f"the answer is {answer}", path=f"count({base}{answer})", value="1"),
           a(f"acknowledgement typeCode {code}", path=f"{base}{answer}/acknowledgement/@typeCode", value=code),
           a("the answer names the message it answers", path=f"{base}{answer}/acknowledgement/targetMessage/id/@extension", value=msg_id)]
    if answer == "MCCI_IN000002UV01":
        out.append(a("interactionId of the acknowledgement", path=f"{base}{answer}/interactionId/@extension", value=answer))
    return out


def query_ok(count, code="OK", qid="Q-${runTag}"):
    return [a(f"queryResponseCode {code}", path="//controlActProcess/queryAck/queryResponseCode/@code", value=code),
            a("the queryId is echoed", path="//controlActProcess/queryAck/queryId/@extension", value=qid),
            a(f"{count} subjects", path="count(//controlActProcess/subject)", value=str(count)),
            a(f"resultTotalQuantity {count}", path="//queryAck/resultTotalQuantity/@value", value=str(count))]


def fhir_search(rtype, params, checks, count=1):
    return [op("search", resource=rtype, params="?" + params, accept="json"), ok(),
            expr(f"Bundle.entry.count() = {count}", f"{count} {rtype} found by {params.split('=')[0]}")] + [expr(c) for c in checks]


def v3_script(sid, title, description, family, messages, checks):
    """messages: [(fixture file, interaction, body)]; each but the last must be AA."""
    s = new(V3S, sid, title, description, family)
    actions = []
    for i, (f, interaction, body) in enumerate(messages):
        # The message id comes from the file, so one fixture file is one message in every script.
        msg_id = f"{f[:-4]}-${{runTag}}"
        fixture_file(V3S, f, v3_message(interaction, msg_id, body))
        fid = s.fixture("f-" + f[:-4], "fixtures/" + f)
        actions.append(v3_post(fid, f"answer{i + 1}"))
        if i < len(messages) - 1:
            actions.append(a(f"{interaction} AA", path="//acknowledgement/@typeCode", value="AA"))
    s.test("interaction", title, actions + checks(f"{messages[-1][0][:-4]}-${{runTag}}"))
    return s


PAT_Q = "identifier=" + ident(P_LOCAL, "P-${runTag}")
PERSON_FHIR = ["Bundle.entry.resource.name.text = '钱测试'", "Bundle.entry.resource.gender = 'male'",
               "Bundle.entry.resource.birthDate = @1980-01-02", "Bundle.entry.resource.managingOrganization.exists()"]

v3_script("v3-person-register", "个人信息注册 PRPA_IN201311UV02: AA, then the Patient, its organisation and the registering person",
          "WS/T 846.2 person register: the acknowledgement is AA for the message id; the Patient is found by its hospital patient id with name, sex and birth date; the provider organisation and the author are stored.",
          "person-registry", [("person-register.xml", "PRPA_IN201311UV02", person_body("P-${runTag}"))],
          lambda m: v3_answer(m) + fhir_search("Patient", PAT_Q, PERSON_FHIR)
          + fhir_search("Organization", "identifier=" + ident(ORG, "H-${runTag}"), ["Bundle.entry.resource.name = '测试医院'"])
          + fhir_search("Practitioner", "identifier=" + ident(STAFF, "A-${runTag}"), ["Bundle.entry.resource.name.text = '赵登记'"]))
v3_script("v3-person-update", "个人信息更新 PRPA_IN201314UV02: the one Patient gets the new name and sex",
          "WS/T 846.2 person update after a register: AA, and one Patient with the updated name, sex and birth date.",
          "person-registry", [("person-register.xml", "PRPA_IN201311UV02", person_body("P-${runTag}")),
                              ("person-update.xml", "PRPA_IN201314UV02", person_body("P-${runTag}", "钱更新", "2", "19800103"))],
          lambda m: v3_answer(m) + fhir_search("Patient", PAT_Q, ["Bundle.entry.resource.name.text = '钱更新'", "Bundle.entry.resource.gender = 'female'",
                                                                  "Bundle.entry.resource.birthDate = @1980-01-03"]))
MERGE = (f'<subject typeCode="SUBJ"><registrationEvent classCode="REG" moodCode="EVN"><statusCode code="active"/>\n'
         f'<subject1 typeCode="SBJ"><patient classCode="PAT"><id><item root="{P_LOCAL}" extension="P-${{runTag}}"/></id><statusCode code="active"/></patient></subject1>\n'
         f'<replacementOf typeCode="RPLC"><priorRegistration classCode="REG" moodCode="EVN"><statusCode code="obsolete"/>'
         f'<subject1 typeCode="SBJ"><priorRegisteredRole classCode="PAT"><id><item root="{P_LOCAL}" extension="Q-${{runTag}}"/></id></priorRegisteredRole></subject1>'
         f'</priorRegistration></replacementOf></registrationEvent></subject>')
v3_script("v3-person-merge", "个人信息合并 PRPA_IN201304UV02: the merged Patient is inactive and replaced by the survivor",
          "WS/T 846.2 merge of two registered persons: AA; the survivor keeps its name and links (replaces) the merged one, which is inactive and links (replaced-by) the survivor.",
          "person-registry", [("person-register.xml", "PRPA_IN201311UV02", person_body("P-${runTag}")),
                              ("person-register-2.xml", "PRPA_IN201311UV02", person_body("Q-${runTag}", "钱重复")),
                              ("person-merge.xml", "PRPA_IN201304UV02", MERGE)],
          lambda m: v3_answer(m)
          + fhir_search("Patient", PAT_Q, ["Bundle.entry.resource.name.text = '钱测试'", "Bundle.entry.resource.link.type = 'replaces'",
                                           "Bundle.entry.resource.link.other.reference.exists()"])
          + fhir_search("Patient", "identifier=" + ident(P_LOCAL, "Q-${runTag}"), ["Bundle.entry.resource.active = false",
                                                                                   "Bundle.entry.resource.link.type = 'replaced-by'"]))
PERSON_QUERY = query_body(f'<parameterList><livingSubjectId><value><item root="{P_LOCAL}" extension="P-${{runTag}}"/></value><semanticsText value="LivingSubject.id"/></livingSubjectId></parameterList>')
v3_script("v3-person-query", "个人信息查询 PRPA_IN201305UV02: the PRPA_IN201306UV02 response carries the registered person",
          "WS/T 846.2 query by patient id after a register: the answer is PRPA_IN201306UV02, AA, OK with one subject whose name, sex and birth time are the registered ones.",
          "person-registry", [("person-register.xml", "PRPA_IN201311UV02", person_body("P-${runTag}")),
                              ("person-query.xml", "PRPA_IN201305UV02", PERSON_QUERY)],
          lambda m: v3_answer(m, "PRPA_IN201306UV02") + query_ok(1) + [
              a("name", path="//subject/registrationEvent/subject1/patient/patientPerson/name/item/part/@value", value="钱测试"),
              a("sex 1 (GB/T 2261.1)", path="//patientPerson/administrativeGenderCode[@codeSystem='2.16.156.10011.2.3.3.4']/@code", value="1"),
              a("birth time", path="//patientPerson/birthTime/@value", value="19800102"),
              a("the hospital patient id", path=f"//patient/id/item[@root='{P_LOCAL}']/@extension", value="P-${runTag}")])
v3_script("v3-person-query-not-found", "个人信息查询 of an unknown person: NF and no subject",
          "WS/T 846.2 query for a patient id nobody registered: AA with queryResponseCode NF and no subject.",
          "person-registry", [("person-query.xml", "PRPA_IN201305UV02", PERSON_QUERY)],
          lambda m: v3_answer(m, "PRPA_IN201306UV02") + query_ok(0, "NF"))

# SOAP envelopes: the same interactions, the answer in the request's envelope and media type.
for version, ct, answer_ct in [("1.1", "text/xml", "text/xml"), ("1.2", "application/soap+xml", "application/soap+xml")]:
    tag = version.replace(".", "")
    s = new(V3S, f"v3-soap{tag}-register-query", f"SOAP {version}: 个人信息注册 and 查询 in envelopes, answered in the same envelope",
            f"PRPA_IN201311UV02 then PRPA_IN201305UV02, each in a SOAP {version} envelope ({ct}): the answers come in a SOAP {version} envelope with media type {answer_ct}.",
            "person-registry")
    fixture_file(V3S, f"soap{tag}-register.xml", soap(version, v3_message("PRPA_IN201311UV02", "M1-${runTag}", person_body("P-${runTag}"))))
    fixture_file(V3S, f"soap{tag}-query.xml", soap(version, v3_message("PRPA_IN201305UV02", "M2-${runTag}", PERSON_QUERY)))
    s.fixture("f-register", f"fixtures/soap{tag}-register.xml")
    s.fixture("f-query", f"fixtures/soap{tag}-query.xml")
    env = "soap:Envelope/soap:Body"
    s.test("register", "register in an envelope", [v3_post("f-register", "ack", ct), a(f"media type {answer_ct}", contentType=answer_ct)]
           + v3_answer("M1-${runTag}", soap_version=version)
           + [a(f"SOAP {version} envelope", path="count(/soap:Envelope/soap:Body)", value="1")])
    s.test("query", "query in an envelope", [v3_post("f-query", "qr", ct), a(f"media type {answer_ct}", contentType=answer_ct)]
           + v3_answer("M2-${runTag}", "PRPA_IN201306UV02", soap_version=version) + query_ok(1)
           + [a("name", path=f"/{env}/PRPA_IN201306UV02//patientPerson/name/item/part/@value", value="钱测试")])

# Refusals: AE naming the reason, nothing written.
REFUSALS = [
    ("v3-reject-unknown-interaction", "an unknown interaction", "PRPA_IN999999UV99", person_body("P-${runTag}"), "unknown interaction 'PRPA_IN999999UV99'"),
    ("v3-reject-no-patient-id", "a person without any id", "PRPA_IN201311UV02",
     person_body("P-${runTag}").replace(f'<id><item root="{P_LOCAL}" extension="P-${{runTag}}"/></id>', ""), "has no identifier"),
    ("v3-reject-bad-oid", "an identifier root that is not an OID", "PRPA_IN201311UV02",
     person_body("P-${runTag}").replace(f'root="{P_LOCAL}"', 'root="患者ID"'), "'患者ID' is not an OID"),
    ("v3-reject-wrong-sex-system", "a sex code from the wrong code system", "PRPA_IN201311UV02",
     person_body("P-${runTag}").replace(f'codeSystem="{SEX}"', 'codeSystem="2.16.840.1.113883.5.1"'),
     f"system '2.16.840.1.113883.5.1' is not the expected {SEX}"),
]
for sid, what, interaction, body, reason in REFUSALS:
    v3_script(sid, f"AE for {what}", f"{what}: the acknowledgement is AE, names the message and says why ('{reason}'); no Patient is written.",
              "person-registry", [(sid[10:] + ".xml", interaction, body)],
              lambda m, reason=reason: v3_answer(m, code="AE")
              + [a("the reason", path="//acknowledgement/acknowledgementDetail/text/@value", operator="contains", value=reason),
                 op("search", resource="Patient", params="?" + PAT_Q, accept="json"), expr("Bundle.entry.count() = 0", "nothing written")])
s = new(V3S, "v3-reject-dtd", "AE for a message declaring a DTD (XXE)", "A message with a DOCTYPE declaring an external entity is refused AE ('DTD refused at line 2'); nothing is read from the file it names.", "person-registry")
fixture_file(V3S, "dtd.xml", '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n'
             + v3_message("PRPA_IN201311UV02", "M1-${runTag}", person_body("P-${runTag}", "&e;")).split("?>", 1)[1].lstrip())
s.fixture("f-dtd", "fixtures/dtd.xml")
s.test("dtd", "DOCTYPE refused", [v3_post("f-dtd", "r"), ok(), a("AE", path="//acknowledgement/@typeCode", value="AE"),
                                 a("the reason", path="//acknowledgementDetail/text/@value", operator="contains", value="DTD refused at line 2"),
                                 a("nothing of /etc/passwd", path="//acknowledgementDetail/text/@value", operator="notContains", value="root:")])

# Organisations (WS/T 846.3).
ORG_Q = "identifier=" + ident(DEPT, "K-${runTag}")
v3_script("v3-organisation-register", "医疗卫生机构(科室)注册 PRPM_IN401030UV01: AA, then the department and its parent",
          "WS/T 846.3 department register: AA; the Organization (name, alias, type, active) is part of the parent organisation, which is stored too.",
          "organisation-registry", [("org-register.xml", "PRPM_IN401030UV01", org_body())],
          lambda m: v3_answer(m) + fhir_search("Organization", ORG_Q, [
              "Bundle.entry.resource.name = '测试医院心内科'", "Bundle.entry.resource.alias = '心内科'", "Bundle.entry.resource.active = true",
              "Bundle.entry.resource.type.coding.code = 'A03'", "Bundle.entry.resource.partOf.reference.exists()"])
          + fhir_search("Organization", "identifier=" + ident(ORG, "H-${runTag}"), ["Bundle.entry.resource.name = '测试医院'"]))
v3_script("v3-organisation-update", "医疗卫生机构(科室)更新 PRPM_IN403010UV01: the one Organization gets the new name",
          "WS/T 846.3 update after a register: AA; one Organization with the new name and alias.",
          "organisation-registry", [("org-register.xml", "PRPM_IN401030UV01", org_body()),
                                    ("org-update.xml", "PRPM_IN403010UV01", org_body("心血管内科", "测试医院心血管内科"))],
          lambda m: v3_answer(m) + fhir_search("Organization", ORG_Q, ["Bundle.entry.resource.name = '测试医院心血管内科'", "Bundle.entry.resource.alias = '心血管内科'"]))
v3_script("v3-organisation-query", "医疗卫生机构(科室)查询 PRPM_IN406010UV01: PRPM_IN406110UV01 with the department",
          "WS/T 846.3 query by organisation id after a register: PRPM_IN406110UV01, AA, OK, one subject naming the Organization.",
          "organisation-registry", [("org-register.xml", "PRPM_IN401030UV01", org_body()),
                                    ("org-query.xml", "PRPM_IN406010UV01", query_body(f'<organizationID><value root="{DEPT}" extension="K-${{runTag}}"/></organizationID>', wrapper="queryByParameterPayload"))],
          lambda m: v3_answer(m, "PRPM_IN406110UV01") + query_ok(1) + [
              a("the department's id", path=f"//registeredEntity/id/item[@root='{DEPT}']/@extension", value="K-${runTag}"),
              a("its FHIR id", path="//registeredEntity/id/item[@root='2.16.156.10011.0.2.2']/@extension", operator="contains", value="Organization/"),
              a("its name", path="//registeredEntity/name/@value", value="测试医院心内科")])

# Practitioners (WS/T 846.4).
STAFF_Q = "identifier=" + ident(STAFF, "D-${runTag}")
v3_script("v3-practitioner-register", "医疗卫生人员注册 PRPM_IN301010UV01: AA, then the Practitioner, its role and department",
          "WS/T 846.4 register: AA; the Practitioner (name, sex, birth date, active), a PractitionerRole with the title code linking the Practitioner and the department Organization.",
          "practitioner-registry", [("staff-register.xml", "PRPM_IN301010UV01", staff_body())],
          lambda m: v3_answer(m) + fhir_search("Practitioner", STAFF_Q, [
              "Bundle.entry.resource.name.text = '孙医生'", "Bundle.entry.resource.gender = 'female'", "Bundle.entry.resource.birthDate = @1975-03-05",
              "Bundle.entry.resource.active = true"])
          + fhir_search("PractitionerRole", "practitioner.identifier=" + ident(STAFF, "D-${runTag}"), [
              "Bundle.entry.resource.code.coding.code = '231'", "Bundle.entry.resource.organization.reference.exists()"])
          + fhir_search("Organization", ORG_Q, ["Bundle.entry.resource.name = '心内科'"]))
v3_script("v3-practitioner-update", "医疗卫生人员更新 PRPM_IN303010UV01: the one Practitioner gets the new name",
          "WS/T 846.4 update after a register: AA; one Practitioner with the new name and birth date.",
          "practitioner-registry", [("staff-register.xml", "PRPM_IN301010UV01", staff_body()),
                                    ("staff-update.xml", "PRPM_IN303010UV01", staff_body("孙主任", "19750306"))],
          lambda m: v3_answer(m) + fhir_search("Practitioner", STAFF_Q, ["Bundle.entry.resource.name.text = '孙主任'", "Bundle.entry.resource.birthDate = @1975-03-06"]))
v3_script("v3-practitioner-query", "医疗卫生人员查询 PRPM_IN306010UV01: PRPM_IN306011UV01 with the practitioner",
          "WS/T 846.4 query by provider id after a register: PRPM_IN306011UV01, AA, OK, one subject naming the Practitioner.",
          "practitioner-registry", [("staff-register.xml", "PRPM_IN301010UV01", staff_body()),
                                    ("staff-query.xml", "PRPM_IN306010UV01", query_body(f'<providerID><value root="{STAFF}" extension="D-${{runTag}}"/></providerID>', wrapper="queryByParameterPayload"))],
          lambda m: v3_answer(m, "PRPM_IN306011UV01") + query_ok(1) + [
              a("the practitioner's id", path=f"//registeredEntity/id/item[@root='{STAFF}']/@extension", value="D-${runTag}"),
              a("its FHIR id", path="//registeredEntity/id/item[@root='2.16.156.10011.0.2.2']/@extension", operator="contains", value="Practitioner/"),
              a("its name", path="//registeredEntity/name/@value", value="孙医生")])

# Terminology (WS/T 846.5).
VS_Q = "identifier=" + ident(VS, "VS-${runTag}")
BLOOD = [("1", "A型"), ("2", "B型"), ("3", "O型")]
v3_script("v3-terminology-register", "术语注册 PRVS_IN000001UV01: AA, then a CodeSystem with every item",
          "WS/T 846.5 value set register: AA; a CodeSystem (title, version, status active, content complete) with one concept per valueSetItems.",
          "terminology-registry", [("vs-register.xml", "PRVS_IN000001UV01", valueset_body(BLOOD))],
          lambda m: v3_answer(m) + fhir_search("CodeSystem", VS_Q, [
              "Bundle.entry.resource.title = '测试血型代码表'", "Bundle.entry.resource.version = '1.0'", "Bundle.entry.resource.status = 'active'",
              "Bundle.entry.resource.content = 'complete'", "Bundle.entry.resource.concept.count() = 3",
              "Bundle.entry.resource.concept.where(code = '3').display = 'O型'"]))
v3_script("v3-terminology-update", "术语更新 PRVS_IN000002UV01: the one CodeSystem gets the added item",
          "WS/T 846.5 update after a register adding an item: AA; one CodeSystem with four concepts.",
          "terminology-registry", [("vs-register.xml", "PRVS_IN000001UV01", valueset_body(BLOOD)),
                                   ("vs-update.xml", "PRVS_IN000002UV01", valueset_body(BLOOD + [("4", "AB型")]))],
          lambda m: v3_answer(m) + fhir_search("CodeSystem", VS_Q, ["Bundle.entry.resource.concept.count() = 4",
                                                                    "Bundle.entry.resource.concept.where(code = '4').display = 'AB型'"]))
v3_script("v3-terminology-query", "术语查询 PRVS_IN000003UV01: PRVS_IN000004UV01 with the value set",
          "WS/T 846.5 query by value-set id after a register: PRVS_IN000004UV01, AA, OK, one subject naming the CodeSystem.",
          "terminology-registry", [("vs-register.xml", "PRVS_IN000001UV01", valueset_body(BLOOD)),
                                   ("vs-query.xml", "PRVS_IN000003UV01", query_body(f'<valueSet><id root="{VS}" extension="VS-${{runTag}}"/></valueSet>'))],
          lambda m: v3_answer(m, "PRVS_IN000004UV01") + query_ok(1) + [
              a("its FHIR id", path="//registeredEntity/id/item[@root='2.16.156.10011.0.2.2']/@extension", operator="contains", value="CodeSystem/")])

# Encounters (WS/T 846.7).
VISIT_Q = "identifier=" + ident(VISIT, "V-${runTag}")
ENC_BASE = ["Bundle.entry.resource.subject.reference.exists()", "Bundle.entry.resource.period.start.toString().startsWith('2024-03-01')",
            "Bundle.entry.resource.location.location.reference.exists()", "Bundle.entry.resource.serviceProvider.reference.exists()",
            "Bundle.entry.resource.participant.individual.reference.exists()"]
v3_script("v3-encounter-register", "门(急)诊挂号 PRPA_IN400001UV: AA, then the Encounter with its patient, location and practitioner",
          "WS/T 846.7 outpatient registration: AA; an Encounter (status planned, type, start) referring to the Patient, the Location, the Practitioner and the Organization, each stored.",
          "encounter", [("enc-register.xml", "PRPA_IN400001UV", encounter_body())],
          lambda m: v3_answer(m) + fhir_search("Encounter", VISIT_Q, ENC_BASE + ["Bundle.entry.resource.status = 'planned'",
                                                                                 "Bundle.entry.resource.type.coding.code = '1'"])
          + fhir_search("Patient", PAT_Q, ["Bundle.entry.resource.name.text = '周就诊'"])
          + fhir_search("Location", "identifier=" + ident(DEPT, "L-${runTag}"), ["Bundle.entry.resource.name = '外科'"])
          + fhir_search("Encounter", "patient.identifier=" + ident(P_LOCAL, "P-${runTag}"), []))
v3_script("v3-encounter-update", "门(急)诊挂号更新 PRPA_IN400002UV: the one Encounter is updated",
          "WS/T 846.7 registration update after a registration: AA; one Encounter with the new type code.",
          "encounter", [("enc-register.xml", "PRPA_IN400001UV", encounter_body()), ("enc-update.xml", "PRPA_IN400002UV", encounter_body("2"))],
          lambda m: v3_answer(m) + fhir_search("Encounter", VISIT_Q, ["Bundle.entry.resource.type.coding.code = '2'"]))
v3_script("v3-encounter-transfer", "转科 PRPA_IN302011UV: the Encounter is in progress",
          "WS/T 846.7 transfer after a registration: AA; one Encounter, status in-progress.",
          "encounter", [("enc-register.xml", "PRPA_IN400001UV", encounter_body()), ("enc-transfer.xml", "PRPA_IN302011UV", encounter_body())],
          lambda m: v3_answer(m) + fhir_search("Encounter", VISIT_Q, ["Bundle.entry.resource.status = 'in-progress'"]))
v3_script("v3-encounter-transfer-update", "转科更新 PRPA_IN302012UV: the Encounter stays in progress",
          "WS/T 846.7 transfer update after a transfer: AA; one Encounter, status in-progress.",
          "encounter", [("enc-register.xml", "PRPA_IN400001UV", encounter_body()), ("enc-transfer.xml", "PRPA_IN302011UV", encounter_body()),
                        ("enc-transfer-update.xml", "PRPA_IN302012UV", encounter_body())],
          lambda m: v3_answer(m) + fhir_search("Encounter", VISIT_Q, ["Bundle.entry.resource.status = 'in-progress'"]))
v3_script("v3-encounter-discharge", "出院登记 PRPA_IN400003UV: the Encounter is finished with its end",
          "WS/T 846.7 discharge after a registration: AA; one Encounter, status finished, with the period end.",
          "encounter", [("enc-register.xml", "PRPA_IN400001UV", encounter_body()),
                        ("enc-discharge.xml", "PRPA_IN400003UV", encounter_body(high="20240305100000"))],
          lambda m: v3_answer(m) + fhir_search("Encounter", VISIT_Q, ["Bundle.entry.resource.status = 'finished'",
                                                                      "Bundle.entry.resource.period.end.toString().startsWith('2024-03-05')"]))
v3_script("v3-encounter-query", "就诊信息查询 PRPA_IN900300UV: PRPA_IN900350UV with the encounter",
          "WS/T 846.7 query by visit id after a registration: PRPA_IN900350UV, AA, OK, one subject naming the Encounter.",
          "encounter", [("enc-register.xml", "PRPA_IN400001UV", encounter_body()),
                        ("enc-query.xml", "PRPA_IN900300UV", query_body(f'<careEventID><value><item root="{VISIT}" extension="V-${{runTag}}"/></value></careEventID>'))],
          lambda m: v3_answer(m, "PRPA_IN900350UV") + query_ok(1) + [
              a("its FHIR id", path="//registeredEntity/id/item[@root='2.16.156.10011.0.2.2']/@extension", operator="contains", value="Encounter/")])

# Orders (WS/T 846.8).
ORDER_Q = "identifier=" + ident(ORDER, "O-${runTag}")
v3_script("v3-order-new", "医嘱新增 POOR_IN200901UV: AA, then the MedicationRequest with its patient, encounter and requester",
          "WS/T 846.8 new medication order: AA; a MedicationRequest (status active, intent order, medication code, route, dose) referring to the Patient, the Encounter and the Practitioner.",
          "orders", [("order-new.xml", "POOR_IN200901UV", order_body())],
          lambda m: v3_answer(m) + fhir_search("MedicationRequest", ORDER_Q, [
              "Bundle.entry.resource.status = 'active'", "Bundle.entry.resource.intent = 'order'",
              "Bundle.entry.resource.medication.coding.code = '201056'",
              "Bundle.entry.resource.dosageInstruction.doseAndRate.dose.value = 20",
              "Bundle.entry.resource.dosageInstruction.route.coding.code = '1'",
              "Bundle.entry.resource.subject.reference.exists() and Bundle.entry.resource.encounter.reference.exists() and Bundle.entry.resource.requester.reference.exists()"])
          + fhir_search("MedicationRequest", "patient.identifier=" + ident(P_LOCAL, "P-${runTag}"), []))
v3_script("v3-order-update", "医嘱更新 POOR_IN200902UV: the one MedicationRequest is stopped",
          "WS/T 846.8 order update (statusCode aborted) after a new order: AA; one MedicationRequest, status stopped, new dose.",
          "orders", [("order-new.xml", "POOR_IN200901UV", order_body()), ("order-update.xml", "POOR_IN200902UV", order_body("aborted", "10"))],
          lambda m: v3_answer(m) + fhir_search("MedicationRequest", ORDER_Q, ["Bundle.entry.resource.status = 'stopped'",
                                                                              "Bundle.entry.resource.dosageInstruction.doseAndRate.dose.value = 10"]))
v3_script("v3-order-query", "医嘱查询 QUMT_IN020030UV01: QUMT_IN020040UV01 with the order",
          "WS/T 846.8 query by order id after a new order: QUMT_IN020040UV01, AA, OK, one subject naming the MedicationRequest.",
          "orders", [("order-new.xml", "POOR_IN200901UV", order_body()),
                     ("order-query.xml", "QUMT_IN020030UV01", query_body(f'<queryByParameterPayload><actId><value><item root="{ORDER}" extension="O-${{runTag}}"/></value></actId></queryByParameterPayload>'))],
          lambda m: v3_answer(m, "QUMT_IN020040UV01") + query_ok(1) + [
              a("its FHIR id", path="//registeredEntity/id/item[@root='2.16.156.10011.0.2.2']/@extension", operator="contains", value="MedicationRequest/")])

# Documents (WS/T 846.6): a WS/T 500 document of this file, base64 in the register message.
ID_CARD = "2.16.156.10011.1.3"
HEALTH_RECORD = "2.16.156.10011.1.2"   # 健康档案号: a person-level id of the Patient
DOC_ROOT = "2.16.156.10011.1.1"


def cda_document(doc_id, person, title="门急诊病历", doc_code="C0002", template="2.16.156.10011.2.1.1.22", entries=None, visit=None):
    """A small WS/T 500 document: header, one section with coded entries."""
    entries = entries if entries is not None else [
        ("DE05.01.024.00", '<value xsi:type="CD" code="J06.9" codeSystem="2.16.156.10011.2.3.3.11" displayName="急性上呼吸道感染"/>'),
        ("DE04.10.188.00", '<value xsi:type="PQ" value="61.5" unit="kg"/>'),
    ]
    body = "".join(f'<entry><observation classCode="OBS" moodCode="EVN"><code code="{c}" codeSystem="2.16.156.10011.2.2.1"/>{v}</observation></entry>\n'
                   for c, v in entries)
    visit_id = f'<id root="{VISIT}" extension="{visit}"/>' if visit else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
            f'<realmCode code="CN"/><typeId root="2.16.840.1.113883.1.3" extension="POCD_MT000040"/>\n'
            f'<templateId root="{template}"/><id root="{DOC_ROOT}" extension="{doc_id}"/>\n'
            f'<code code="{doc_code}" codeSystem="2.16.156.10011.2.4"/><title>{title}</title><effectiveTime value="20240301101500"/>\n'
            f'<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>\n'
            f'<recordTarget><patientRole>{visit_id}<id root="{HEALTH_RECORD}" extension="{person}"/>\n'
            f'<patient><name>王测试</name><administrativeGenderCode code="2" codeSystem="{SEX}"/><birthTime value="19491231"/></patient>\n'
            f'</patientRole></recordTarget>\n'
            f'<author><time value="20240301"/><assignedAuthor><id root="{STAFF}" extension="AU-{person}"/><assignedPerson><name>赵医生</name></assignedPerson></assignedAuthor></author>\n'
            f'<custodian><assignedCustodian><representedCustodianOrganization><id root="{ORG}" extension="CU-{person}"/><name>测试医院</name></representedCustodianOrganization></assignedCustodian></custodian>\n'
            f'<component><structuredBody><component><section><code code="29548-5" codeSystem="2.16.840.1.113883.6.1"/><text>诊断</text>\n'
            f'{body}</section></component></structuredBody></component>\n</ClinicalDocument>\n')


def b64(text):
    import base64
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def doc_register(sid, with_cda=True):
    doc, person = f"DOC-{sid}", f"HR-{sid}"
    storage = f'<storageCode><originalText value="{b64(cda_document(doc, person))}"/></storageCode>' if with_cda else ""
    return (f'<subject typeCode="SUBJ"><clinicalDocument classCode="DOCCLIN" moodCode="EVN">\n'
            f'<id><item root="{DOC_ROOT}" extension="{doc}"/></id><code code="C0002" codeSystem="2.16.156.10011.2.4"/>'
            f'<effectiveTime value="20240301101500"/>{storage}\n'
            f'<recordTarget><patient><id><item root="{P_LOCAL}" extension="P-{sid}"/></id><patientPerson>{en("王测试")}</patientPerson></patient></recordTarget>\n'
            f'</clinicalDocument></subject>')


sid = "v3-document-register"
v3_script(sid, "电子病历文档注册 RCMR_IN000002UV02: AA, then the document's Composition, DocumentReference and entries",
          "WS/T 846.6 register with a base64 WS/T 500 document: AA naming the DocumentReference; the document's diagnosis is a Condition, its weight an Observation, the DocumentReference is found by the document id.",
          "document-registry", [(f"{sid[3:]}-register.xml", "RCMR_IN000002UV02", doc_register(sid))],
          lambda m, sid=sid: v3_answer(m) + [
              a("the DocumentReference is named", path="//acknowledgementDetail/text/@value", operator="contains", value="DocumentReference/")]
          + fhir_search("DocumentReference", "identifier=" + ident(DOC_ROOT, f"DOC-{sid}"), [
              "Bundle.entry.resource.type.coding.code = 'C0002'", "Bundle.entry.resource.content.attachment.contentType contains 'application/hl7-cda+xml'"])
          + fhir_search("Condition", "code=J06.9&subject.identifier=" + ident(HEALTH_RECORD, f"HR-{sid}"), [
              "Bundle.entry.resource.code.coding.display = '急性上呼吸道感染'"])
          + fhir_search("Observation", "code=DE04.10.188.00&subject.identifier=" + ident(HEALTH_RECORD, f"HR-{sid}"), [
              "Bundle.entry.resource.value.value = 61.5", "Bundle.entry.resource.value.unit = 'kg'"])
          + fhir_search("Composition", "subject.identifier=" + ident(HEALTH_RECORD, f"HR-{sid}"), ["Bundle.entry.resource.title = '门急诊病历'"]))
sid = "v3-document-register-metadata"
v3_script(sid, "电子病历文档注册 without the document: AA, the metadata registered",
          "WS/T 846.6 register whose message carries no base64 CDA: AA saying only the metadata was registered; the DocumentReference is found by the document id, current, of type C0002.",
          "document-registry", [("doc-register-metadata.xml", "RCMR_IN000002UV02", doc_register(sid, with_cda=False))],
          lambda m, sid=sid: v3_answer(m) + [
              a("says what was registered", path="//acknowledgementDetail/text/@value", operator="contains", value="its metadata was registered")]
          + fhir_search("DocumentReference", "identifier=" + ident(DOC_ROOT, f"DOC-{sid}"), [
              "Bundle.entry.resource.status = 'current'", "Bundle.entry.resource.type.coding.code = 'C0002'"]))
sid = "v3-document-search"
v3_script(sid, "电子病历文档检索 RCMR_IN000029UV01: RCMR_IN000030UV01 lists the patient's document",
          "WS/T 846.6 search by the patient's id after a register: RCMR_IN000030UV01, AA, OK, one document with its id and type.",
          "document-registry", [(f"{sid[3:]}-register.xml", "RCMR_IN000002UV02", doc_register(sid)),
                                ("doc-search.xml", "RCMR_IN000029UV01", query_body(f'<patient.id><value><item root="{HEALTH_RECORD}" extension="HR-{sid}"/></value></patient.id>'))],
          lambda m, sid=sid: v3_answer(m, "RCMR_IN000030UV01") + query_ok(1) + [
              a("the document id", path=f"//subject/clinicalDocument/id/item[@root='{DOC_ROOT}']/@extension", value=f"DOC-{sid}"),
              a("the document type", path="//subject/clinicalDocument/code/@code", value="C0002")])
sid = "v3-document-retrieve"
s = v3_script(sid, "电子病历文档调阅 RCMR_IN000031UV01: RCMR_IN000032UV01 returns the registered document unchanged",
              "WS/T 846.6 retrieve by document id after a register: RCMR_IN000032UV01, AA, OK, and the base64 document is the one registered, byte for byte.",
              "document-registry", [(f"{sid[3:]}-register.xml", "RCMR_IN000002UV02", doc_register(sid)),
                                    ("doc-retrieve.xml", "RCMR_IN000031UV01", query_body(f'<clinicalDocument.id><value root="{DOC_ROOT}" extension="DOC-{sid}"/></clinicalDocument.id>'))],
              lambda m, sid=sid: v3_answer(m, "RCMR_IN000032UV01") + query_ok(1) + [
                  a("the document as registered", path="//subject/clinicalDocument/storageCode/originalText/@value",
                    compareToSourceId="f-document-retrieve-register", compareToSourcePath="//clinicalDocument/storageCode/originalText/@value")])

# The cn-hie samples (read in place): each is answered AA, or its query response, naming it.
CORPUS_V3 = [("H02", ["H0201", "H0202", "H0203", "H0204"]), ("H03", ["H0301", "H0302", "H0303"]),
             ("H04", ["H0401", "H0402", "H0403"]), ("H05", ["H0501", "H0502", "H0503"]),
             ("H06", ["H0601", "H0602", "H0603"]),
             ("H07", [f"H07{n:02d}" for n in range(1, 16)]), ("H08", ["H0801", "H0802", "H0803"])]
V3_QUERIES = {"H0204", "H0303", "H0403", "H0503", "H0602", "H0603", "H0703", "H0706", "H0709", "H0712", "H0715", "H0803"}
V3_FAMILY = {"H02": "person-registry", "H03": "organisation-registry", "H04": "practitioner-registry",
             "H05": "terminology-registry", "H06": "document-registry", "H07": "encounter", "H08": "orders"}
for group, names in CORPUS_V3:
    for n in names:
        s = new(V3S, "sample-" + n.lower(), f"cn-hie sample {n}Rt.xml through /hl7v3",
                f"The cn-hie sample v3/{group}/{n}Rt.xml, read in place from $HUITONG_CORPORA: HTTP 200, AA, and the answer names the sample's message id (a query gets its query response, OK or NF).",
                V3_FAMILY[group])
        s.fixture("f-sample", f"corpora:cn-hie/v3/{group}/{n}Rt.xml")
        s.test("sample", "the sample is accepted", [
            v3_post("f-sample", "answer"), a("200", response="okay"),
            a("AA", path="/*/acknowledgement/@typeCode", value="AA"),
            a("the answer names the sample's message id", path="/*/acknowledgement/targetMessage/id/@extension",
              compareToSourceId="f-sample", compareToSourcePath="/*/id/@extension"),
        ] + ([a("the query is answered OK or NF", path="/*/controlActProcess/queryAck/queryResponseCode/@code", operator="in", value="OK,NF")]
             if n in V3_QUERIES else
             [a("an acknowledgement", path="count(/MCCI_IN000002UV01)", value="1")]))


# ----------------------------------------------------------------------------------------------
# cn-documents (WS/T 500 CDA documents through POST /cda: the document Bundle answered, the
# resources stored, and the original returned by DocumentReference/{id}/$cda). Documents of this
# file (fixtures/*.xml) and the cn-hie samples C001-C040 read in place from $HUITONG_CORPORA.
# ----------------------------------------------------------------------------------------------
DOCS = "cn-documents"


def cda_post(fid, rid):
    return op("cda", url="${serverRoot}/cda", method="post", sourceId=fid, contentType="application/xml", responseId=rid, accept="json")


def cda_retrieve(s, rid):
    """GET the stored original back through the DocumentReference the answer's Location names."""
    s.var(rid + "Location", headerField="Location", sourceId=rid)
    return op("cda-read", url="${serverRoot}${" + rid + "Location}/$cda", method="get", responseId=rid + "Original")


def in_bundle(rtype, where="true"):
    return f"Bundle.entry.resource.ofType({rtype}).where({where})"


PRESCRIPTION = ('<entry><substanceAdministration classCode="SBADM" moodCode="EVN">'
                '<routeCode code="1" codeSystem="2.16.156.10011.2.3.1.158" displayName="口服"/><doseQuantity value="0.5" unit="g"/>'
                '<consumable><manufacturedProduct><manufacturedLabeledDrug><name>阿莫西林胶囊</name></manufacturedLabeledDrug></manufacturedProduct></consumable>'
                '</substanceAdministration></entry>\n')
OWN_DOCS = [
    ("doc-outpatient-record", "门急诊病历 C0002", "C0002", "门急诊病历", "2.16.156.10011.2.1.1.22", None, [
        expr(in_bundle("Condition", "code.coding.code = 'J06.9'") + ".count() = 1", "the diagnosis is a Condition"),
        expr(in_bundle("Condition") + ".subject.reference.exists()", "about the patient"),
        expr(in_bundle("Observation", "code.coding.code = 'DE04.10.188.00'") + ".value.value = 61.5", "the weight is an Observation"),
    ], [("Condition", "code=J06.9&subject.identifier=" + ident(HEALTH_RECORD, "HR-doc-outpatient-record"), ["Bundle.entry.resource.code.coding.display = '急性上呼吸道感染'"])]),
    ("doc-prescription", "西药处方 C0004", "C0004", "西药处方", "2.16.156.10011.2.1.1.24", PRESCRIPTION, [
        expr(in_bundle("MedicationRequest") + ".count() = 1", "the prescription item is a MedicationRequest"),
        expr(in_bundle("MedicationRequest") + ".intent = 'order'"),
        expr(in_bundle("MedicationRequest") + ".dosageInstruction.doseAndRate.dose.value = 0.5"),
        expr(in_bundle("MedicationRequest") + ".medication.text = '阿莫西林胶囊'"),
    ], [("MedicationRequest", "subject.identifier=" + ident(HEALTH_RECORD, "HR-doc-prescription"), ["Bundle.entry.resource.dosageInstruction.route.coding.code = '1'"])]),
]
for sid, what, code, title, template, body, bundle_checks, searches in OWN_DOCS:
    s = new(DOCS, sid, f"WS/T 500 {what}: document Bundle, stored resources, original returned",
            f"POST /cda with a {what} document written for this suite: 201 with the document Bundle (Composition first, of type {code}, about the Patient), "
            "the entries as resources, found by search afterwards, and DocumentReference/{id}/$cda returns the document as posted.", "document-registry")
    person = "HR-" + sid
    doc = cda_document("DOC-" + sid, person, title, code, template, visit="V-" + sid)
    if body is not None:
        doc = doc.replace(doc[doc.index("<entry>"):doc.index("</section>")], body)
    fixture_file(DOCS, sid + ".xml", doc)
    s.fixture("f-doc", f"fixtures/{sid}.xml")
    s.test("register", "POST /cda", [
        cda_post("f-doc", "stored"), a("201", response="created"), a("JSON", contentType="json"), a("a Bundle", resource="Bundle"),
        expr("Bundle.type = 'document'"), expr("Bundle.entry.first().resource is Composition", "the Composition comes first"),
        expr(in_bundle("Composition") + f".type.coding.code = '{code}'", f"of type {code}"),
        expr(in_bundle("Composition") + f".title = '{title}'"),
        a("the Composition is the document's", expression=in_bundle("Composition") + ".identifier.value",
          compareToSourceId="f-doc", compareToSourcePath="/ClinicalDocument/id/@extension"),
        expr(in_bundle("Patient") + ".name.text = '王测试'"), expr(in_bundle("Patient") + ".gender = 'female'"),
        expr(in_bundle("Patient") + ".birthDate = @1949-12-31"),
        expr(in_bundle("Encounter") + ".identifier.value = 'V-" + sid + "'", "the visit number is the Encounter's"),
        a("Location names the DocumentReference", headerField="Location", operator="contains", value="/DocumentReference/"),
    ] + bundle_checks)
    actions = []
    for rtype, params, checks in searches + [("DocumentReference", "identifier=" + ident(DOC_ROOT, "DOC-" + sid), ["Bundle.entry.resource.status = 'current'"]),
                                             ("Composition", "subject.identifier=" + ident(HEALTH_RECORD, person), [f"Bundle.entry.resource.type.coding.code = '{code}'"])]:
        actions += fhir_search(rtype, params, checks)
    s.test("stored", "the resources are searchable", actions)
    s.test("retrieve", "DocumentReference/{id}/$cda", [
        cda_retrieve(s, "stored"), ok(), a("CDA media type", contentType="application/hl7-cda+xml"),
        a("the same document id", path="/ClinicalDocument/id/@extension", compareToSourceId="f-doc", compareToSourcePath="/ClinicalDocument/id/@extension"),
        a("as many entries", path="count(//entry)", compareToSourceId="f-doc", compareToSourcePath="count(//entry)"),
        a("the same patient", path=f"/ClinicalDocument/recordTarget/patientRole/id[@root='{HEALTH_RECORD}']/@extension", value=person)])

# Refusals: an OperationOutcome with the status, the issue code and the reason (with its line).
GOOD = cda_document("DOC-${runTag}", "HR-${runTag}")
CDA_BAD = [
    ("doc-reject-dtd", "a DOCTYPE (XXE)", '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n' + GOOD.split("?>", 1)[1].lstrip(), 400, "security", "DTD refused at line 1"),
    ("doc-reject-truncated", "a truncated document", GOOD[:700], 400, "structure", "not well-formed XML at line"),
    ("doc-reject-no-patient-id", "a document whose patient has no id", GOOD.replace('<id root="2.16.156.10011.1.2" extension="HR-${runTag}"/>', ""), 422, "required", "has no identifier"),
    ("doc-reject-bad-oid", "an identifier root that is not an OID", GOOD.replace('root="2.16.156.10011.1.2"', 'root="健康档案"'), 422, "required", "'健康档案' is not an OID"),
    ("doc-reject-wrong-code-system", "a document type from the wrong code system", GOOD.replace('codeSystem="2.16.156.10011.2.4"', 'codeSystem="2.16.156.10011.2.5.1.23"'), 422, "required", "is not the expected 2.16.156.10011.2.4"),
    ("doc-reject-not-cda", "an XML document that is not CDA", '<?xml version="1.0"?>\n<Patient xmlns="http://hl7.org/fhir"><id value="x"/></Patient>\n', 422, "not-supported", "the root element is 'Patient', not ClinicalDocument"),
    ("doc-reject-no-table", "a CDA document no mapping table takes", GOOD.replace('<templateId root="2.16.156.10011.2.1.1.22"/>', '<templateId root="1.2.3.4.5"/>'), 422, "not-supported", "no mapping table in mappings/cda/ takes this document (templateId roots: 1.2.3.4.5)"),
]
for sid, what, body, status, code, reason in CDA_BAD:
    s = new(DOCS, sid, f"POST /cda refuses {what}", f"{what}: {status} with an OperationOutcome (issue code {code}) saying '{reason}'; nothing is stored.", "document-registry")
    fixture_file(DOCS, sid + ".xml", body)
    s.fixture("f-doc", f"fixtures/{sid}.xml")
    s.test("refused", what, [cda_post("f-doc", "r"), a(str(status), responseCode=str(status)), a("an OperationOutcome", resource="OperationOutcome"),
                             expr(f"issue.where(severity = 'error' or severity = 'fatal').code = '{code}'", f"issue code {code}"),
                             a("the reason", expression="issue.diagnostics", operator="contains", value=reason),
                             op("search", resource="DocumentReference", params="?identifier=" + ident(DOC_ROOT, "DOC-${runTag}"), accept="json"),
                             expr("Bundle.entry.count() = 0", "nothing stored")])

# The cn-hie samples: each is stored as a document Bundle whose Composition is the sample's, and
# its original comes back from $cda.
CORPUS_CDA = ["C001病历概要", "C002门急诊病历", "C003急诊留观病历", "C004西药处方", "C005中药处方", "C006检查报告", "C007检验报告",
              "C008治疗记录", "C009一般手术记录", "C010麻醉术前访视记录", "C011麻醉记录", "C012麻醉术后访视记录", "C013输血记录", "C014待产记录",
              "C015阴道分娩记录", "C016宫剖产记录", "C017一般护理记录", "C018病重病危护理记录", "C019手术护理记录", "C020生命体征测量记录",
              "C021出入量记录", "C022高值耗材使用记录", "C023入院评估", "C024护理计划", "C025出院评估与指导", "C026手术知情同意书",
              "C027麻醉知情同意书", "C028输血治疗同意书", "C029特殊检查及特殊治疗同意书", "C030病危重通知书", "C031其他知情同意书",
              "C032住院病案首页", "C033中医住院病案首页", "C034入院记录", "C035 24h内入出院记录", "C036 24h内入院死亡记录", "C037首次病程记录",
              "C038日常病程记录", "C039上级医师查房记录", "C040疑难病例讨论记录"]
for name in CORPUS_CDA:
    code = name[:4]
    s = new(DOCS, "sample-" + code.lower(), f"cn-hie sample {name}.xml through /cda and back",
            f"The cn-hie sample cda/{name}.xml, read in place from $HUITONG_CORPORA: 201 with a document Bundle whose Composition has the sample's id, "
            "type and patient; DocumentReference/{id}/$cda returns the sample.", "document-registry")
    s.fixture("f-doc", f"corpora:cn-hie/cda/{name}.xml")
    s.test("register", "POST /cda", [
        cda_post("f-doc", "stored"), a("201", response="created"), expr("Bundle.type = 'document'"),
        expr("Bundle.entry.first().resource is Composition", "the Composition comes first"),
        a("the Composition has the document's id", expression=in_bundle("Composition") + ".identifier.value",
          compareToSourceId="f-doc", compareToSourcePath="/ClinicalDocument/id/@extension"),
        a("the Composition has the document's type", expression=in_bundle("Composition") + ".type.coding.code",
          compareToSourceId="f-doc", compareToSourcePath="/ClinicalDocument/code/@code"),
        expr(in_bundle("Composition") + ".subject.reference.exists()", "about a patient"),
        expr(in_bundle("Patient") + ".count() = 1", "one Patient")])
    s.test("retrieve", "DocumentReference/{id}/$cda", [
        cda_retrieve(s, "stored"), ok(),
        a("the same document id", path="/ClinicalDocument/id/@extension", compareToSourceId="f-doc", compareToSourcePath="/ClinicalDocument/id/@extension"),
        a("as many sections", path="count(//section)", compareToSourceId="f-doc", compareToSourcePath="count(//section)")])


# ----------------------------------------------------------------------------------------------
# feeds (POST /feeds/{name} for every feed shipped under mappings/feeds/: its example records,
# read in place; valid ones accepted and what they wrote readable, invalid ones refused 422 with
# exactly the issues examples/expected.json lists, location and diagnostics)
# ----------------------------------------------------------------------------------------------
FEEDS = "feeds"
FEED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mappings", "feeds")


def feed_post(name, fid, rid, content_type="application/json", params=""):
    return op("feed", url="${serverRoot}/feeds/" + name + params, method="post", sourceId=fid, contentType=content_type,
              responseId=rid, accept="json")


def feed_examples(name):
    d = os.path.join(FEED_DIR, name, "examples")
    with open(os.path.join(d, "expected.json"), encoding="utf-8") as f:
        expected = json.load(f)
    files = sorted(x for x in os.listdir(d) if x.endswith(".json") and x != "expected.json")
    return files, expected


def feed_record_tests(s, name, files, expected, prefix=""):
    for n, f in enumerate(files):
        fid = s.fixture(f"f-{prefix}{f[:-5]}", f"../../mappings/feeds/{name}/examples/{f}")
        rid = f"r{prefix.replace('-', '')}{n + 1}"
        if f in expected:
            issues = expected[f]
            checks = [a("422", responseCode="422"), a("an OperationOutcome", resource="OperationOutcome"),
                      expr(f"issue.count() = {len(issues)}", f"{len(issues)} issues")]
            for i, issue in enumerate(issues):
                checks += [a(f"issue {i + 1} is an error", expression=f"issue[{i}].severity", value="error"),
                           a(f"issue {i + 1} location", expression=f"issue[{i}].location.first()", value=issue["location"]),
                           a(f"issue {i + 1} diagnostics", expression=f"issue[{i}].diagnostics", value=issue["diagnostics"])]
            s.test(f"{prefix}{f[:-5]}", f"{name}/{f} is refused with the issues of expected.json", [feed_post(name, fid, rid)] + checks)
        else:
            s.var(rid + "Written", expression="(created | updated).first()", sourceId=rid)
            s.test(f"{prefix}{f[:-5]}", f"{name}/{f} is accepted and what it wrote is readable", [
                feed_post(name, fid, rid), a("200", responseCode="200"), expr("status = 'accepted'"), expr("row = 1"),
                expr("(created | updated).count() > 0", "resources written"),
                expr("(created | updated).all($this.matches('^[A-Za-z]+/[A-Za-z0-9.-]+/_history/[0-9]+$'))", "written as Type/id/_history/n"),
                op("vread", url="${baseUrl}/${" + rid + "Written}", method="get", accept="json"), ok(),
                expr("'${" + rid + "Written}'.endsWith('/' + id + '/_history/' + meta.versionId)", "the version the feed wrote")])


FEED_DEPENDS = {"nhsa-2208": "nhsa-2207"}  # a cancellation names a settlement of this feed
for name in sorted(os.listdir(FEED_DIR)):
    if not os.path.isdir(os.path.join(FEED_DIR, name)):
        continue
    files, expected = feed_examples(name)
    s = new(FEEDS, "feed-" + name, f"Feed {name}: every example record accepted or refused as expected.json says",
            f"POST /feeds/{name} with each record of mappings/feeds/{name}/examples (read in place), in file order: "
            f"{len(files) - len(expected)} valid records are accepted and the first resource each wrote is read back; "
            f"{len(expected)} invalid ones are refused 422 with exactly the issues (JSON Pointer location, diagnostics) of expected.json.")
    if name in FEED_DEPENDS:
        dep = FEED_DEPENDS[name]
        dfiles, dexpected = feed_examples(dep)
        acts = []
        for n, f in enumerate(x for x in dfiles if x not in dexpected):
            fid = s.fixture(f"f-{dep}-{f[:-5]}", f"../../mappings/feeds/{dep}/examples/{f}")
            acts += [feed_post(dep, fid, f"dep{n + 1}"), a(f"{dep}/{f} accepted", responseCode="200")]
        s.setup.extend(acts)
    feed_record_tests(s, name, files, expected)

# Requests the feed endpoint refuses whole, and a JSON array committed record by record.
name = "nhsa-1101"
files, expected = feed_examples(name)
good = next(f for f in files if f not in expected)
bad = next(f for f in files if f in expected)
s = new(FEEDS, "feed-refusals", "Feeds: unknown feed 404, wrong media type 415, not JSON 400",
        "POST /feeds/{name} refusals before any record is read, each an OperationOutcome saying why.")
s.fixture("f-good", f"../../mappings/feeds/{name}/examples/{good}")
fixture_file(FEEDS, "not-json.txt", "certno=110101198001020011\n")
s.fixture("f-not-json", "fixtures/not-json.txt")
s.test("unknown-feed", "an unknown feed", [feed_post("no-such-feed", "f-good", "r1"), a("404", responseCode="404"), a("OperationOutcome", resource="OperationOutcome"),
                                           a("names the feeds loaded", expression="issue.diagnostics", operator="contains", value="no feed 'no-such-feed' (loaded: ")])
s.test("media-type", "a media type that is neither JSON nor CSV", [feed_post(name, "f-good", "r2", "application/xml"), a("415", responseCode="415"),
                                                                    a("says why", expression="issue.diagnostics", value="content type 'application/xml' is not application/json or text/csv")])
s.test("charset", "a CSV charset that is neither UTF-8 nor GB18030", [feed_post(name, "f-good", "r3", "text/csv; charset=latin1"), a("415", responseCode="415"),
                                                                      a("says why", expression="issue.diagnostics", value="charset 'latin1' is not UTF-8 or GB18030")])
s.test("not-json", "a body that is not JSON", [feed_post(name, "f-not-json", "r4"), a("400", responseCode="400"),
                                               a("says why", expression="issue.diagnostics", operator="contains", value="not JSON")])

with open(os.path.join(FEED_DIR, name, "examples", good), encoding="utf-8") as f:
    good_record = json.load(f)
with open(os.path.join(FEED_DIR, name, "examples", bad), encoding="utf-8") as f:
    bad_record = json.load(f)
fixture_file(FEEDS, "nhsa-1101-good-then-bad.json", [good_record, bad_record])
s = new(FEEDS, "feed-array-partial", "Feeds: a JSON array commits record by record; the bad one is located by row",
        f"POST /feeds/{name} with [{good}, {bad}]: 200 with a summary (accepted 1, rejected 1); record 2's OperationOutcome names row 2 and the JSON Pointer; "
        "with ?atomic=true the same array writes nothing and says so.")
s.fixture("f-array", "fixtures/nhsa-1101-good-then-bad.json")
issue = expected[bad][0]
s.test("partial", "partial commit", [feed_post(name, "f-array", "p"), a("200", responseCode="200"), expr(f"feed = '{name}'"), expr("mode = 'partial'"),
                                     expr("accepted = 1"), expr("rejected = 1"), expr("records[0].status = 'accepted'"), expr("records[1].status = 'rejected'"),
                                     a("row 2 located", expression="records[1].outcome.issue[0].location.first()", value=issue["location"]),
                                     a("row 2 named", expression="records[1].outcome.issue[0].diagnostics", value=issue["diagnostics"].replace("row 1:", "row 2:", 1))])
s.test("atomic", "all or nothing", [feed_post(name, "f-array", "t", params="?atomic=true"), a("200", responseCode="200"), expr("mode = 'all-or-nothing'"),
                                    expr("accepted = 0", "nothing accepted"), expr("records[1].status = 'rejected'")])


# ----------------------------------------------------------------------------------------------
# security (the security layer on an embedded server of its own, configured by
# conformance/security/server.toml: API-key senders with SMART scopes and owner domains; no
# credentials, unknown or malformed credentials, scopes, domains, ingest endpoints)
# ----------------------------------------------------------------------------------------------
SEC = "security"
# Each sender's API key as the scripts send it; the configuration holds only its SM3 digest.
SENDERS = [
    ("his-a", "conformance-key-his-a", "system/Patient.cruds system/Observation.cruds", "hosp-a"),
    ("his-b", "conformance-key-his-b", "system/*.cruds", "hosp-b"),
    ("reader", "conformance-key-reader", "system/Patient.rs", None),
    ("operator", "conformance-key-operator", "system/*.cruds", None),
]


def sm3_hex(text):
    import subprocess
    out = subprocess.run(["openssl", "dgst", "-sm3"], input=text.encode(), capture_output=True, check=True).stdout.decode()
    return out.strip().rsplit(" ", 1)[-1]


SEC_CONFIG = ["# The embedded server the security suite runs on (suite.toml: server-config). Generated by",
              "# scripts/gen-conformance.py: the API keys are in the scripts, only their SM3 digests here.", ""]
for sender_id, key, scopes, domain in SENDERS:
    SEC_CONFIG += ["[[auth.senders]]", f'id = "{sender_id}"', f'api-key-sm3 = "{sm3_hex(key)}"', f'scopes = "{scopes}"']
    if domain:
        SEC_CONFIG.append(f'domain = "{domain}"')
    SEC_CONFIG.append("")
SEC_FILES = {"server.toml": "\n".join(SEC_CONFIG),
             "suite.toml": 'description = "The security layer: authentication, SMART scopes, owner domains, ingest endpoints"\nserver-config = "server.toml"\n'}
KEY = {sid: key for sid, key, _, _ in SENDERS}


def as_sender(sender, **kw):
    h = kw.pop("headers", {})
    if sender:
        h["X-API-Key"] = KEY[sender]
    return dict(kw, headers=h)


def sec_op(code, sender, **kw):
    return op(code, **as_sender(sender, **kw))


SEC_PATIENT = {"resourceType": "Patient", "meta": TAG, "identifier": [{"system": MRN, "value": "${runTag}"}],
               "name": [{"family": "安全", "given": ["测试"]}], "gender": "female", "birthDate": "1990-01-01"}
fixture_file(SEC, "patient.json", SEC_PATIENT)
fixture_file(SEC, "condition.json", {"resourceType": "Condition", "meta": TAG, "code": {"text": "测试"},
                                      "subject": {"reference": "Patient/${patId}"}})


def sec_login_refused(description, reason):
    return [a("401", responseCode="401"), a("an OperationOutcome", resource="OperationOutcome"),
            expr("issue.code = 'login'", "issue code login"),
            a("says why", expression="issue.diagnostics", operator="contains", value=reason),
            a("WWW-Authenticate names Bearer", headerField="WWW-Authenticate", operator="contains", value="Bearer")]


def sec_create(s, sender="his-a"):
    s.fixture("f-pat", "fixtures/patient.json")
    s.var("patId", expression="id", sourceId="pat")
    s.setup.extend([sec_op("create", sender, resource="Patient", sourceId="f-pat", responseId="pat", accept="json", contentType="json",
                           headers={"Prefer": "return=representation"}), a("Patient created", response="created")])
    s.teardown.append(sec_op("delete", sender, resource="Patient", targetId="pat"))


s = new(SEC, "sec-metadata-public", "The CapabilityStatement needs no credentials", "GET metadata without credentials answers 200 with the CapabilityStatement (clients discover the security before they authenticate).")
s.test("metadata", "no credentials", [op("capabilities", accept="json"), ok(), a("a CapabilityStatement", resource="CapabilityStatement")])

LOGIN = [
    ("sec-no-credentials", "no credentials at all", {}, "authentication required"),
    ("sec-unknown-api-key", "an API key no sender has", {"X-API-Key": "not-a-configured-key"}, "unknown API key"),
    ("sec-not-bearer", "an Authorization header that is not Bearer", {"Authorization": "Basic aGlzOnNlY3JldA=="}, "Authorization must be 'Bearer <token>'"),
    ("sec-bad-token", "a bearer token that is not a JWT", {"Authorization": "Bearer not-a-token"}, "the token is not a compact JWS"),
]
for sid, what, headers, reason in LOGIN:
    s = new(SEC, sid, f"401 for {what}", f"GET Patient with {what}: 401, an OperationOutcome with issue code login saying why, and a WWW-Authenticate challenge.")
    s.test("refused", what, [op("search", resource="Patient", accept="json", headers=headers)] + sec_login_refused(what, reason))
for sid, path, fixture in [("sec-hl7v3-needs-identity", "hl7v3", None), ("sec-cda-needs-identity", "cda", None), ("sec-feed-needs-identity", "feeds/nhsa-1101", None)]:
    s = new(SEC, sid, f"POST /{path} without credentials is refused 401", f"The ingest endpoint /{path} is behind the same authentication as the FHIR API: without credentials 401, nothing read.")
    fixture_file(SEC, "empty.json", {})
    s.fixture("f-empty", "fixtures/empty.json")
    s.test("refused", "no credentials", [op("ingest", url="${serverRoot}/" + path, method="post", sourceId="f-empty", contentType="application/xml"),
                                         a("401", responseCode="401")])

s = new(SEC, "sec-sender-writes-own-domain", "An API-key sender writes within its scopes; what it writes carries its domain",
        "his-a (system/Patient.cruds, domain hosp-a) creates a Patient: 201, meta.tag names hosp-a; it reads it back.")
sec_create(s)
s.test("own", "create and read", [a("tagged with the sender's domain", sourceId="pat", expression="meta.tag.where(code = 'hosp-a').exists()"),
                                  sec_op("read", "his-a", resource="Patient", targetId="pat", accept="json"), ok(), expr("name.family = '安全'")])
s = new(SEC, "sec-scope-refuses-type", "A sender's scopes refuse a resource type they do not name",
        "his-a has Patient and Observation scopes only: creating a Condition is refused 403 (forbidden), nothing written.")
sec_create(s)
s.fixture("f-cond", "fixtures/condition.json")
s.test("condition", "Condition outside the scopes", [sec_op("create", "his-a", resource="Condition", sourceId="f-cond", accept="json", contentType="json"),
                                                     a("403", responseCode="403"), a("an OperationOutcome", resource="OperationOutcome"), expr("issue.code = 'forbidden'"),
                                                     sec_op("search", "operator", resource="Condition", params="?subject=Patient/${patId}", accept="json"), ok(),
                                                     expr("Bundle.entry.count() = 0", "nothing written")])
s = new(SEC, "sec-read-scope-refuses-write", "A read-only sender may search but not write",
        "reader (system/Patient.rs) searches Patient (200) but its create is refused 403 (forbidden).")
s.fixture("f-pat", "fixtures/patient.json")
s.test("read", "search allowed", [sec_op("search", "reader", resource="Patient", params="?identifier=" + quote(MRN, safe=":") + "|${runTag}", accept="json"), ok(),
                                  a("a searchset", expression="Bundle.type", value="searchset")])
s.test("write", "create refused", [sec_op("create", "reader", resource="Patient", sourceId="f-pat", accept="json", contentType="json"),
                                   a("403", responseCode="403"), expr("issue.code = 'forbidden'")])
s = new(SEC, "sec-domain-isolation", "A sender of another domain does not see what one domain wrote",
        "his-a (hosp-a) creates a Patient; his-b (hosp-b, system/*.cruds) reading it gets 404 (the default hidden status: the resource's existence is not disclosed), and its search does not find it.")
sec_create(s)
s.test("other", "another domain", [sec_op("read", "his-b", resource="Patient", targetId="pat", accept="json"), a("404", responseCode="404"),
                                   a("an OperationOutcome", resource="OperationOutcome"), expr("issue.code = 'not-found'"),
                                   a("the same answer as an unknown id", expression="issue.diagnostics", value="resource not found"),
                                   sec_op("search", "his-b", resource="Patient", params="?_id=${patId}", accept="json"), ok(),
                                   expr("Bundle.entry.count() = 0", "not found by search")])


# ----------------------------------------------------------------------------------------------
def write():
    suites = {s.suite for s in SCRIPTS} | {k[0] for k in FIXTURES}
    for suite in suites:
        d = os.path.join(ROOT, suite)
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(os.path.join(d, "fixtures"))
    seen = set()
    for s in SCRIPTS:
        assert s.id not in seen, s.id
        seen.add(s.id)
        with open(os.path.join(ROOT, s.suite, s.id + ".json"), "w", encoding="utf-8") as f:
            json.dump(s.to_json(), f, ensure_ascii=False, indent=1)
            f.write("\n")
    for name, body in SEC_FILES.items():
        with open(os.path.join(ROOT, SEC, name), "w", encoding="utf-8") as f:
            f.write(body)
    for (suite, name), body in FIXTURES.items():
        with open(os.path.join(ROOT, suite, "fixtures", name), "w", encoding="utf-8") as f:
            if isinstance(body, str):
                f.write(body)
            else:
                json.dump(body, f, ensure_ascii=False, indent=1)
                f.write("\n")
    counts = {}
    for s in SCRIPTS:
        counts[s.suite] = counts.get(s.suite, 0) + 1
    for k in sorted(counts):
        print(f"{k}: {counts[k]} scripts")


write()
