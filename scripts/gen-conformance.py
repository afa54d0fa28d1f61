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
