//! The TestScript runner against a small real HTTP server with canned behaviour (axum on an
//! ephemeral port): every operation it sends and every assert kind, including asserts that must
//! fail and be reported as failures (a runner that always passes is worthless).

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use huitong::conformance::run::{Target, local_validator};
use huitong::conformance::{LoadedScript, run_script};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// What the canned server saw: (method, path and query, content type, body).
type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

fn patient(version: u32, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": version.to_string(), "lastUpdated": "2026-01-01T00:00:00Z"},
           "name": [{"family": family, "given": ["Peter"]}], "gender": "male", "birthDate": "1974-12-25"})
}

fn fhir(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/fhir+json; charset=utf-8")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn canned(seen: Seen, base: String, req: Request<Body>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    seen.lock()
        .unwrap()
        .push((method.clone(), path.clone(), ct.clone(), text.clone()));
    let outcome = |code: &str| json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code}]});
    match (method.as_str(), path.as_str()) {
        ("GET", "/fhir/metadata") => fhir(
            200,
            json!({"resourceType": "CapabilityStatement", "status": "active", "date": "2026-01-01", "kind": "instance",
                   "fhirVersion": "4.0.1", "format": ["json"], "rest": [{"mode": "server"}]}),
        ),
        ("POST", "/fhir/Patient") => {
            let mut r = fhir(201, patient(1, "Chalmers"));
            let h = r.headers_mut();
            h.insert(
                "location",
                format!("{base}/Patient/p1/_history/1").parse().unwrap(),
            );
            h.insert("etag", "W/\"1\"".parse().unwrap());
            r
        }
        ("GET", "/fhir/Patient/p1") => {
            let mut r = fhir(200, patient(2, "Chalmers"));
            r.headers_mut().insert(
                "last-modified",
                "Thu, 01 Jan 2026 00:00:00 GMT".parse().unwrap(),
            );
            r.headers_mut().insert("etag", "W/\"2\"".parse().unwrap());
            r
        }
        ("GET", "/fhir/Patient/p1/_history/1") => fhir(200, patient(1, "Chalmers")),
        ("GET", "/fhir/Patient/p1/_history") => fhir(
            200,
            json!({"resourceType": "Bundle", "type": "history", "total": 2,
                   "entry": [{"resource": patient(2, "Chalmers")}, {"resource": patient(1, "Chalmers")}]}),
        ),
        ("PUT", "/fhir/Patient/p1") => fhir(200, patient(2, "Chalmers")),
        ("PATCH", "/fhir/Patient/p1") if ct == "application/json-patch+json" => {
            fhir(200, patient(3, "Chalmers"))
        }
        ("PATCH", _) => fhir(415, outcome("not-supported")),
        ("DELETE", "/fhir/Patient/p1") => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Body::empty())
            .unwrap(),
        ("GET", p) if p.starts_with("/fhir/Patient?") => fhir(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "total": 2,
                   "link": [{"relation": "self", "url": format!("{base}{}", &p[5..])}, {"relation": "next", "url": format!("{base}/Patient?_page=2")}],
                   "entry": [{"fullUrl": format!("{base}/Patient/p1"), "resource": patient(2, "Chalmers"), "search": {"mode": "match"}}]}),
        ),
        ("GET", "/fhir/Patient/missing") => fhir(404, outcome("not-found")),
        ("POST", "/fhir") => {
            let bundle: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let kind = format!("{}-response", bundle["type"].as_str().unwrap_or("x"));
            let n = bundle["entry"].as_array().map(|e| e.len()).unwrap_or(0);
            let entries: Vec<Value> = (0..n)
                .map(|_| json!({"response": {"status": "201 Created"}}))
                .collect();
            fhir(
                200,
                json!({"resourceType": "Bundle", "type": kind, "entry": entries}),
            )
        }
        ("POST", "/fhir/Patient/$validate") => fhir(
            200,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational", "diagnostics": "ok"}]}),
        ),
        ("GET", "/fhir/Patient/p1/$everything") => fhir(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "total": 1, "link": [{"relation": "self", "url": "x"}],
                   "entry": [{"resource": patient(2, "Chalmers")}]}),
        ),
        ("POST", "/hl7v2") => {
            let control = text
                .lines()
                .next()
                .and_then(|l| l.split('|').nth(9))
                .unwrap_or("")
                .to_string();
            Response::builder()
                .status(200)
                .header("content-type", "x-application/hl7-v2+er7")
                .body(Body::from(format!(
                    "MSH|^~\\&|HUITONG|HT|HIS|H1|20260101000000||ACK^A01^ACK|ACK-{control}|P|2.5.1\rMSA|AA|{control}\r"
                )))
                .unwrap()
        }
        ("POST", "/hl7v3") => {
            // The message id (the first id/@extension) answered in an acknowledgement, in the
            // request's SOAP 1.2 envelope when it came in one.
            let id = text
                .split("extension=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string();
            let ack = format!(
                r#"<MCCI_IN000002UV01 xmlns="urn:hl7-org:v3"><id extension="ACK-{id}"/><acknowledgement typeCode="AA"><targetMessage><id extension="{id}"/></targetMessage><acknowledgementDetail typeCode="I"><text value="2 resources written"/></acknowledgementDetail><acknowledgementDetail typeCode="W"><text value="a note"/></acknowledgementDetail></acknowledgement></MCCI_IN000002UV01>"#
            );
            let (ct, body) = if text.contains("soap-envelope") {
                (
                    "application/soap+xml",
                    format!(
                        r#"<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>{ack}</s:Body></s:Envelope>"#
                    ),
                )
            } else {
                ("application/xml", ack)
            };
            Response::builder()
                .status(200)
                .header("content-type", ct)
                .body(Body::from(body))
                .unwrap()
        }
        _ => fhir(404, outcome("not-found")),
    }
}

struct Canned {
    base: String,
    seen: Seen,
}

async fn start() -> Canned {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}/fhir");
    let seen: Seen = Arc::default();
    let (s, b) = (seen.clone(), base.clone());
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let (s, b) = (s.clone(), b.clone());
        async move { canned(s, b, req).await }
    });
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Canned { base, seen }
}

fn op(code: &str, extra: Value) -> Value {
    let mut o = json!({"operation": {"type": {"system": "http://terminology.hl7.org/CodeSystem/testscript-operation-codes", "code": code}}});
    for (k, v) in extra.as_object().unwrap() {
        o["operation"][k] = v.clone();
    }
    o
}

fn assert_(fields: Value) -> Value {
    json!({ "assert": fields })
}

fn script(id: &str, tests: Vec<(&str, Vec<Value>)>, extra: Value) -> Value {
    let mut s = json!({
        "resourceType": "TestScript", "id": id, "url": format!("http://example.org/{id}"), "name": id, "status": "active",
        "contained": [
            {"resourceType": "Patient", "id": "pat", "name": [{"family": "Chalmers", "given": ["Peter"]}], "gender": "male"},
            {"resourceType": "Patient", "id": "pat-min", "name": [{"family": "Chalmers"}]},
            {"resourceType": "Bundle", "id": "tx", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]},
            {"resourceType": "Bundle", "id": "batch", "type": "batch", "entry": [{"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
                                                                        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}]},
            {"resourceType": "Binary", "id": "patch", "contentType": "application/json-patch+json"}
        ],
        "fixture": [
            {"id": "f-pat", "autocreate": false, "autodelete": false, "resource": {"reference": "#pat"}},
            {"id": "f-min", "autocreate": false, "autodelete": false, "resource": {"reference": "#pat-min"}},
            {"id": "f-tx", "autocreate": false, "autodelete": false, "resource": {"reference": "#tx"}},
            {"id": "f-batch", "autocreate": false, "autodelete": false, "resource": {"reference": "#batch"}},
            {"id": "f-patch", "autocreate": false, "autodelete": false, "resource": {"reference": "fixtures/patch.json"}},
            {"id": "f-adt", "autocreate": false, "autodelete": false, "resource": {"reference": "fixtures/adt.hl7"}}
        ],
        "profile": [{"id": "patient-core", "reference": "http://hl7.org/fhir/StructureDefinition/Patient"},
                    {"id": "cn-patient", "reference": "http://huitong.dev/fhir/cn/StructureDefinition/CNPatient"}],
        "variable": [
            {"name": "createdId", "expression": "Patient.id", "sourceId": "created"},
            {"name": "createdLocation", "headerField": "Location", "sourceId": "created"},
            {"name": "family", "path": "fhir:Patient/fhir:name/fhir:family/@value", "sourceId": "f-pat"},
            {"name": "fallback", "defaultValue": "Chalmers"}
        ],
        "test": tests.into_iter().map(|(name, actions)| json!({"name": name, "action": actions})).collect::<Vec<_>>()
    });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    s
}

fn fixtures_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("fixtures")).unwrap();
    std::fs::write(
        d.path().join("fixtures/patch.json"),
        r#"[{"op": "replace", "path": "/gender", "value": "female"}]"#,
    )
    .unwrap();
    std::fs::write(
        d.path().join("fixtures/adt.hl7"),
        "MSH|^~\\&|HIS|H1|HUITONG|HT|20260101000000||ADT^A01^ADT_A01|MSG-${fallback}|P|2.5.1\rPID|1||MRN1^^^H1^MR||Chalmers^Peter\r",
    )
    .unwrap();
    d
}

fn target(base: &str) -> Target {
    Target::new(
        base,
        local_validator(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")),
    )
}

/// (result, message) of every action of a report section, flattened.
fn results(section: &Value) -> Vec<(String, String, String)> {
    section["action"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let (kind, v) = if a.get("operation").is_some() {
                ("operation", &a["operation"])
            } else {
                ("assert", &a["assert"])
            };
            (
                kind.to_string(),
                v["result"].as_str().unwrap().to_string(),
                v["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_operation_and_assert_kind_passes_against_canned_server() {
    let canned = start().await;
    let dir = fixtures_dir();
    let ok = |fields: Value| assert_(fields);
    let s = script(
        "all-kinds",
        vec![
            (
                "capabilities",
                vec![
                    op("capabilities", json!({"accept": "json"})),
                    ok(json!({"response": "okay"})),
                    ok(json!({"contentType": "json"})),
                    ok(json!({"resource": "CapabilityStatement"})),
                    ok(json!({"expression": "CapabilityStatement.fhirVersion = '4.0.1'"})),
                    ok(json!({"requestMethod": "get"})),
                    ok(json!({"requestURL": "/metadata", "operator": "contains"})),
                ],
            ),
            (
                "create-read-vread",
                vec![
                    op(
                        "create",
                        json!({"resource": "Patient", "sourceId": "f-pat", "contentType": "json", "accept": "json", "responseId": "created"}),
                    ),
                    ok(json!({"response": "created"})),
                    ok(json!({"responseCode": "201"})),
                    ok(json!({"responseCode": "200,201", "operator": "in"})),
                    ok(json!({"responseCode": "400", "operator": "lessThan"})),
                    ok(json!({"responseCode": "200", "operator": "greaterThan"})),
                    ok(json!({"responseCode": "404,410", "operator": "notIn"})),
                    ok(json!({"headerField": "Location", "operator": "notEmpty"})),
                    ok(
                        json!({"headerField": "Location", "operator": "contains", "value": "/Patient/p1/_history/1"}),
                    ),
                    ok(json!({"headerField": "X-Not-There", "operator": "empty"})),
                    ok(json!({"headerField": "ETag", "value": "W/\"1\""})),
                    ok(json!({"headerField": "ETag", "operator": "notEquals", "value": "W/\"9\""})),
                    ok(
                        json!({"headerField": "Content-Type", "direction": "request", "operator": "contains", "value": "fhir+json"}),
                    ),
                    ok(json!({"minimumId": "f-min"})),
                    ok(json!({"validateProfileId": "patient-core"})),
                    ok(json!({"expression": "Patient.name.family", "value": "${family}"})),
                    ok(
                        json!({"expression": "Patient.name.given", "operator": "contains", "value": "Pet"}),
                    ),
                    ok(
                        json!({"expression": "Patient.name.given", "operator": "notContains", "value": "Paul"}),
                    ),
                    ok(json!({"expression": "Patient.telecom", "operator": "empty"})),
                    ok(json!({"expression": "Patient.name", "operator": "notEmpty"})),
                    ok(json!({"expression": "Patient.gender = 'male'", "operator": "eval"})),
                    ok(json!({"expression": "Patient.id = %createdId"})),
                    ok(
                        json!({"expression": "Patient.name.family", "compareToSourceId": "f-pat", "compareToSourceExpression": "Patient.name.family"}),
                    ),
                    ok(
                        json!({"path": "fhir:Patient/fhir:gender/@value", "compareToSourceId": "f-pat", "compareToSourcePath": "fhir:Patient/fhir:gender/@value"}),
                    ),
                    ok(
                        json!({"path": "fhir:Patient/fhir:birthDate/@value", "operator": "greaterThan", "value": "1970-01-01"}),
                    ),
                    ok(json!({"sourceId": "f-pat", "resource": "Patient"})),
                    op(
                        "read",
                        json!({"resource": "Patient", "params": "/${createdId}", "accept": "json"}),
                    ),
                    ok(json!({"response": "okay"})),
                    ok(json!({"headerField": "Last-Modified", "operator": "notEmpty"})),
                    op("read", json!({"url": "${createdLocation}"})),
                    ok(json!({"response": "okay"})),
                    ok(json!({"expression": "Patient.meta.versionId", "value": "1"})),
                    op("vread", json!({"targetId": "created"})),
                    ok(json!({"response": "okay"})),
                    ok(json!({"requestURL": "/Patient/p1/_history/1", "operator": "contains"})),
                    op("read", json!({"resource": "Patient", "params": "/missing"})),
                    ok(json!({"response": "notFound"})),
                    ok(json!({"response": "okay", "operator": "notEquals"})),
                    ok(json!({"resource": "OperationOutcome"})),
                ],
            ),
            (
                "update-patch-delete",
                vec![
                    op(
                        "update",
                        json!({"resource": "Patient", "params": "/p1", "sourceId": "f-pat", "contentType": "json"}),
                    ),
                    ok(json!({"response": "okay"})),
                    ok(json!({"requestMethod": "put"})),
                    op(
                        "patch",
                        json!({"resource": "Patient", "params": "/p1", "sourceId": "f-patch"}),
                    ),
                    ok(json!({"response": "okay"})),
                    ok(
                        json!({"headerField": "Content-Type", "direction": "request", "value": "application/json-patch+json"}),
                    ),
                    op("delete", json!({"targetId": "created"})),
                    ok(json!({"response": "noContent"})),
                    ok(json!({"requestMethod": "delete"})),
                ],
            ),
            (
                "search-history",
                vec![
                    op(
                        "search",
                        json!({"resource": "Patient", "params": "?family=${fallback}&_count=1"}),
                    ),
                    ok(json!({"response": "okay"})),
                    ok(json!({"navigationLinks": true})),
                    ok(json!({"expression": "Bundle.total", "value": "2"})),
                    ok(
                        json!({"expression": "Bundle.entry.count()", "operator": "lessThan", "value": "2"}),
                    ),
                    ok(json!({"requestURL": "family=Chalmers", "operator": "contains"})),
                    op(
                        "history",
                        json!({"resource": "Patient", "targetId": "created"}),
                    ),
                    ok(json!({"expression": "Bundle.type", "value": "history"})),
                    ok(json!({"path": "fhir:Bundle/fhir:type/@value", "value": "history"})),
                ],
            ),
            (
                "bundles-operations",
                vec![
                    op("transaction", json!({"sourceId": "f-tx"})),
                    ok(json!({"expression": "Bundle.type", "value": "transaction-response"})),
                    op("batch", json!({"sourceId": "f-batch"})),
                    ok(json!({"expression": "Bundle.type", "value": "batch-response"})),
                    ok(json!({"expression": "Bundle.entry.count()", "value": "2"})),
                    op(
                        "validate",
                        json!({"resource": "Patient", "sourceId": "f-pat"}),
                    ),
                    ok(json!({"response": "okay"})),
                    ok(
                        json!({"expression": "OperationOutcome.issue.where(severity = 'error').empty()"}),
                    ),
                    op(
                        "everything",
                        json!({"targetId": "f-created-alias", "resource": "Patient"}),
                    ),
                ],
            ),
            (
                "hl7v2-raw-post",
                vec![
                    op(
                        "hl7v2",
                        json!({"url": "${serverRoot}/hl7v2", "method": "post", "sourceId": "f-adt", "responseId": "ack"}),
                    ),
                    ok(json!({"response": "okay"})),
                    ok(json!({"contentType": "x-application/hl7-v2+er7"})),
                    ok(json!({"path": "MSA-1", "value": "AA"})),
                    ok(json!({"path": "MSA-2", "value": "MSG-Chalmers"})),
                    ok(json!({"path": "MSH-9.1", "value": "ACK"})),
                    ok(
                        json!({"headerField": "Content-Type", "direction": "request", "value": "x-application/hl7-v2+er7"}),
                    ),
                ],
            ),
        ],
        json!({}),
    );
    // The `everything` step names a fixture that does not exist: the last test must end in an
    // operation error, which proves an unresolvable target is not silently sent.
    let loaded = LoadedScript::from_json("runner", dir.path(), s);
    let run = run_script(&target(&canned.base), &loaded).await;
    let report = &run.report;
    let tests = report["test"].as_array().unwrap();
    for t in &tests[..4] {
        for (kind, result, msg) in results(t) {
            assert_eq!(result, "pass", "{} {kind}: {msg}\n{report:#}", t["name"]);
        }
    }
    let bundles = results(&tests[4]);
    assert!(
        bundles[..bundles.len() - 1]
            .iter()
            .all(|(_, r, _)| r == "pass"),
        "{bundles:?}"
    );
    let last = bundles.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.1.as_str()),
        ("operation", "error"),
        "{last:?}"
    );
    assert!(last.2.contains("f-created-alias"), "{last:?}");
    for (kind, result, msg) in results(&tests[5]) {
        assert_eq!(result, "pass", "hl7v2 {kind}: {msg}");
    }
    assert_eq!(
        report["result"], "fail",
        "the operation error fails the script"
    );
    assert_eq!(run.failures.len(), 1, "{:?}", run.failures);

    // What the server received: each interaction with the method, URL and media type it needs.
    let seen = canned.seen.lock().unwrap().clone();
    let has = |m: &str, p: &str, ct: &str| {
        seen.iter()
            .any(|(sm, sp, sct, _)| sm == m && sp == p && sct.starts_with(ct))
    };
    assert!(has("GET", "/fhir/metadata", ""), "{seen:?}");
    assert!(
        has("POST", "/fhir/Patient", "application/fhir+json"),
        "{seen:?}"
    );
    assert!(has("GET", "/fhir/Patient/p1/_history/1", ""), "{seen:?}");
    assert!(
        has("PUT", "/fhir/Patient/p1", "application/fhir+json"),
        "{seen:?}"
    );
    assert!(
        has("PATCH", "/fhir/Patient/p1", "application/json-patch+json"),
        "{seen:?}"
    );
    assert!(has("DELETE", "/fhir/Patient/p1", ""), "{seen:?}");
    assert!(
        has("GET", "/fhir/Patient?family=Chalmers&_count=1", ""),
        "{seen:?}"
    );
    assert!(has("GET", "/fhir/Patient/p1/_history", ""), "{seen:?}");
    assert!(
        has("POST", "/fhir/Patient/$validate", "application/fhir+json"),
        "{seen:?}"
    );
    assert!(
        has("POST", "/hl7v2", "x-application/hl7-v2+er7"),
        "{seen:?}"
    );
    let adt = seen.iter().find(|(_, p, _, _)| p == "/hl7v2").unwrap();
    assert!(
        adt.3.contains("|MSG-Chalmers|"),
        "variables are substituted in text bodies: {}",
        adt.3
    );
    let bundles_sent: Vec<&String> = seen
        .iter()
        .filter(|(m, p, _, _)| m == "POST" && p == "/fhir")
        .map(|s| &s.3)
        .collect();
    assert_eq!(bundles_sent.len(), 2);
    assert!(bundles_sent[0].contains("\"transaction\"") && bundles_sent[1].contains("\"batch\""));

    // The TestReport itself conforms to the core TestReport definition.
    let v = local_validator(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles"));
    let r = v.validate(report, &[], false);
    assert!(!r.has_errors(), "{:#}", r.outcome());
}

#[tokio::test]
async fn asserts_that_must_fail_are_reported_as_failures() {
    let canned = start().await;
    let dir = fixtures_dir();
    let read = || {
        op(
            "read",
            json!({"resource": "Patient", "params": "/p1", "responseId": "r"}),
        )
    };
    // Each test: one read, then one assert that is false against the canned answer.
    let wrong: Vec<(&str, Value)> = vec![
        ("response", json!({"response": "created"})),
        ("responseCode", json!({"responseCode": "404"})),
        (
            "responseCode-in",
            json!({"responseCode": "201,204", "operator": "in"}),
        ),
        (
            "responseCode-greaterThan",
            json!({"responseCode": "200", "operator": "greaterThan"}),
        ),
        ("contentType", json!({"contentType": "xml"})),
        (
            "headerField",
            json!({"headerField": "ETag", "value": "W/\"7\""}),
        ),
        (
            "headerField-notEmpty",
            json!({"headerField": "X-Absent", "operator": "notEmpty"}),
        ),
        (
            "headerField-empty",
            json!({"headerField": "ETag", "operator": "empty"}),
        ),
        (
            "expression-eval",
            json!({"expression": "Patient.gender = 'female'"}),
        ),
        (
            "expression-equals",
            json!({"expression": "Patient.name.family", "value": "Duck"}),
        ),
        (
            "expression-notEquals",
            json!({"expression": "Patient.name.family", "operator": "notEquals", "value": "Chalmers"}),
        ),
        (
            "expression-contains",
            json!({"expression": "Patient.name.given", "operator": "contains", "value": "Donald"}),
        ),
        (
            "expression-notContains",
            json!({"expression": "Patient.name.given", "operator": "notContains", "value": "Pet"}),
        ),
        (
            "expression-in",
            json!({"expression": "Patient.gender", "operator": "in", "value": "female,other"}),
        ),
        (
            "expression-notIn",
            json!({"expression": "Patient.gender", "operator": "notIn", "value": "male,other"}),
        ),
        (
            "expression-lessThan",
            json!({"expression": "Patient.meta.versionId", "operator": "lessThan", "value": "1"}),
        ),
        (
            "expression-empty",
            json!({"expression": "Patient.name", "operator": "empty"}),
        ),
        (
            "expression-notEmpty",
            json!({"expression": "Patient.telecom", "operator": "notEmpty"}),
        ),
        (
            "compareToSource",
            json!({"expression": "Patient.gender", "compareToSourceId": "f-other", "compareToSourceExpression": "Patient.gender"}),
        ),
        ("minimumId", json!({"minimumId": "f-other"})),
        ("resource", json!({"resource": "Observation"})),
        ("requestMethod", json!({"requestMethod": "post"})),
        (
            "requestURL",
            json!({"requestURL": "_history", "operator": "contains"}),
        ),
        (
            "path",
            json!({"path": "fhir:Patient/fhir:gender/@value", "value": "female"}),
        ),
        (
            "validateProfileId",
            json!({"validateProfileId": "cn-patient"}),
        ),
        ("navigationLinks", json!({"navigationLinks": true})),
    ];
    let n = wrong.len();
    let tests: Vec<(&str, Vec<Value>)> = wrong
        .into_iter()
        .map(|(name, a)| {
            (
                name,
                vec![read(), assert_(a), assert_(json!({"response": "okay"}))],
            )
        })
        .collect();
    let mut tests = tests;
    // warningOnly: a false assert is a warning and does not fail anything.
    tests.push((
        "warning-only",
        vec![
            read(),
            assert_(json!({"response": "created", "warningOnly": true})),
            assert_(json!({"response": "okay"})),
        ],
    ));
    // An assert naming no check is an error, never a pass.
    tests.push((
        "no-check",
        vec![read(), assert_(json!({"description": "nothing to check"}))],
    ));
    let s = script(
        "must-fail",
        tests,
        json!({"contained": [
            {"resourceType": "Patient", "id": "other", "name": [{"family": "Duck"}], "gender": "female"},
            {"resourceType": "Patient", "id": "pat", "name": [{"family": "Chalmers"}]}
        ], "fixture": [
            {"id": "f-other", "autocreate": false, "autodelete": false, "resource": {"reference": "#other"}},
            {"id": "f-pat", "autocreate": false, "autodelete": false, "resource": {"reference": "#pat"}}
        ], "variable": []}),
    );
    let run = run_script(
        &target(&canned.base),
        &LoadedScript::from_json("runner", dir.path(), s),
    )
    .await;
    let tests = run.report["test"].as_array().unwrap();
    assert_eq!(tests.len(), n + 2);
    for t in &tests[..n] {
        let r = results(t);
        assert_eq!(r[0].1, "pass", "{}: the read itself works", t["name"]);
        assert_eq!(r[1].1, "fail", "{}: {:?}", t["name"], r[1]);
        assert_eq!(
            r[2].1, "skip",
            "{}: a failed assert stops the test",
            t["name"]
        );
    }
    let w = results(&tests[n]);
    assert_eq!(w[1].1, "warning", "{w:?}");
    assert_eq!(w[2].1, "pass", "{w:?}");
    let e = results(&tests[n + 1]);
    assert_eq!(e[1].1, "error", "{e:?}");
    assert_eq!(run.report["result"], "fail");
    assert_eq!(run.failures.len(), n + 1, "each failure carries evidence");
    assert!(
        run.failures
            .iter()
            .all(|f| f.exchange.as_ref().is_some_and(|x| x.status == 200))
    );
    let cn = run
        .failures
        .iter()
        .find(|f| f.message.contains("CNPatient"))
        .expect("profile failure named");
    assert!(cn.message.contains("errors against"), "{}", cn.message);
}

#[tokio::test]
async fn failed_setup_skips_tests_and_teardown_still_runs() {
    let canned = start().await;
    let dir = fixtures_dir();
    let s = script(
        "setup-fails",
        vec![(
            "never",
            vec![
                op("read", json!({"resource": "Patient", "params": "/p1"})),
                assert_(json!({"response": "okay"})),
            ],
        )],
        json!({
            "setup": {"action": [op("read", json!({"resource": "Patient", "params": "/missing"})), assert_(json!({"response": "okay"}))]},
            "teardown": {"action": [op("delete", json!({"resource": "Patient", "params": "/p1"}))]}
        }),
    );
    let run = run_script(
        &target(&canned.base),
        &LoadedScript::from_json("runner", dir.path(), s),
    )
    .await;
    assert_eq!(run.report["result"], "fail");
    let setup = results(&run.report["setup"]);
    assert_eq!(setup[1].1, "fail");
    let t = results(&run.report["test"][0]);
    assert!(t.iter().all(|(_, r, _)| r == "skip"), "{t:?}");
    let td = results(&run.report["teardown"]);
    assert_eq!(td[0].1, "pass");
    let seen = canned.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(m, p, _, _)| m == "DELETE" && p == "/fhir/Patient/p1")
    );
    assert!(
        !seen
            .iter()
            .any(|(m, p, _, _)| m == "GET" && p == "/fhir/Patient/p1"),
        "tests skipped: {seen:?}"
    );
}

#[tokio::test]
async fn autocreate_and_autodelete_use_the_server_id() {
    let canned = start().await;
    let dir = fixtures_dir();
    let s = script(
        "auto",
        vec![(
            "read-created",
            vec![
                op("read", json!({"targetId": "f-pat"})),
                assert_(json!({"response": "okay"})),
                assert_(json!({"expression": "Patient.id", "value": "p1"})),
            ],
        )],
        json!({"fixture": [{"id": "f-pat", "autocreate": true, "autodelete": true, "resource": {"reference": "#pat"}}], "variable": []}),
    );
    let run = run_script(
        &target(&canned.base),
        &LoadedScript::from_json("runner", dir.path(), s),
    )
    .await;
    assert_eq!(run.report["result"], "pass", "{:#}", run.report);
    let seen = canned.seen.lock().unwrap().clone();
    let methods: Vec<String> = seen.iter().map(|(m, p, _, _)| format!("{m} {p}")).collect();
    assert_eq!(
        methods,
        vec![
            "POST /fhir/Patient",
            "GET /fhir/Patient/p1",
            "DELETE /fhir/Patient/p1"
        ]
    );
}

#[tokio::test]
async fn reports_render_failures_with_evidence() {
    use huitong::conformance::suite::{Expected, SuitesRun};
    let canned = start().await;
    let dir = fixtures_dir();
    let ok = script(
        "passes",
        vec![(
            "r",
            vec![
                op("read", json!({"resource": "Patient", "params": "/p1"})),
                assert_(json!({"response": "okay"})),
            ],
        )],
        json!({}),
    );
    let bad = script(
        "fails",
        vec![(
            "r",
            vec![
                op("read", json!({"resource": "Patient", "params": "/p1"})),
                assert_(json!({"response": "gone"})),
            ],
        )],
        json!({}),
    );
    let known = script(
        "known",
        vec![(
            "r",
            vec![
                op("read", json!({"resource": "Patient", "params": "/p1"})),
                assert_(json!({"response": "bad"})),
            ],
        )],
        json!({}),
    );
    let t = target(&canned.base);
    let mut runs = Vec::new();
    for s in [ok, bad, known] {
        runs.push(run_script(&t, &LoadedScript::from_json("demo", dir.path(), s)).await);
    }
    let all = SuitesRun {
        target: canned.base.clone(),
        runs,
        skipped: vec![],
        broken: vec![],
    };
    let expected: Expected = toml::from_str(
        "[[failure]]\nsuite = \"demo\"\nscript = \"known\"\nreason = \"documented\"\n",
    )
    .unwrap();
    assert_eq!(all.regressions(&expected), vec!["demo/fails".to_string()]);
    let b = huitong::conformance::report::bundle(&all);
    assert_eq!(b["total"], 3);
    assert_eq!(b["entry"][1]["resource"]["result"], "fail");
    let x = huitong::conformance::report::junit(&all, &expected);
    let doc = roxmltree::Document::parse(&x).expect("well-formed JUnit XML");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 3);
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("failure"))
            .count(),
        1
    );
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("skipped"))
            .count(),
        1
    );
    let failure = doc
        .descendants()
        .find(|n| n.has_tag_name("failure"))
        .unwrap();
    assert!(
        failure.text().unwrap_or("").contains("/fhir/Patient/p1"),
        "evidence names the request"
    );
    let maturity = huitong::conformance::maturity::Maturity::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/maturity.toml"),
    )
    .expect("maturity.toml");
    let h = huitong::conformance::report::html(&all, &expected, Some(&maturity));
    assert!(h.contains("expected failure: documented"));
    assert!(
        h.contains("&quot;status&quot;: 200"),
        "the response evidence is on the page"
    );
    assert!(
        h.contains("threshold is not known"),
        "the estimate says what it does not know"
    );
    assert!(
        h.contains("not tested"),
        "WS/T 846 families without a suite are shown as not tested"
    );
}

/// A v3 message of the test (written here), with its message id.
fn v3_message(id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<PRPA_IN201311UV02 xmlns="urn:hl7-org:v3"><id root="2.16.156.10011.2.5.1.1" extension="{id}"/>
<controlActProcess><subject><patient><id><item root="2.16.156.10011.2.5.1.4" extension="P-1"/><item root="2.16.156.10011.1.3" extension="X-1"/></id></patient></subject></controlActProcess></PRPA_IN201311UV02>"#
    )
}

#[tokio::test]
async fn xml_path_asserts_judge_xml_answers_and_fixtures() {
    let canned = start().await;
    let dir = fixtures_dir();
    std::fs::write(
        dir.path().join("fixtures/v3.xml"),
        v3_message("M-${fallback}"),
    )
    .unwrap();
    let soap = format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>{}</s:Body></s:Envelope>"#,
        v3_message("S-1").split("?>").nth(1).unwrap()
    );
    std::fs::write(dir.path().join("fixtures/soap.xml"), soap).unwrap();
    let corpora = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(corpora.path().join("cn")).unwrap();
    std::fs::write(corpora.path().join("cn/sample.xml"), v3_message("C-7")).unwrap();
    let post = |fid: &str, rid: &str| {
        op(
            "hl7v3",
            json!({"url": "${serverRoot}/hl7v3", "method": "post", "sourceId": fid, "contentType": "application/xml", "responseId": rid}),
        )
    };
    let pass = vec![
        post("f-v3", "bare"),
        assert_(json!({"contentType": "xml"})),
        assert_(json!({"path": "/MCCI_IN000002UV01/acknowledgement/@typeCode", "value": "AA"})),
        assert_(
            json!({"path": "//acknowledgement/targetMessage/id/@extension", "value": "M-Chalmers"}),
        ),
        assert_(
            json!({"path": "//acknowledgementDetail[@typeCode='W']/text/@value", "value": "a note"}),
        ),
        assert_(json!({"path": "//acknowledgementDetail[2]/@typeCode", "value": "W"})),
        assert_(json!({"path": "count(//acknowledgementDetail)", "value": "2"})),
        assert_(
            json!({"path": "count(//acknowledgementDetail)", "operator": "greaterThan", "value": "1"}),
        ),
        assert_(
            json!({"path": "//acknowledgementDetail/text/@value", "operator": "contains", "value": "resources written"}),
        ),
        assert_(json!({"path": "//queryAck/queryResponseCode/@code", "operator": "empty"})),
        // The fixture as XML too: its id against the answer's target, and a path with a predicate.
        assert_(
            json!({"path": "//targetMessage/id/@extension", "compareToSourceId": "f-corpus",
                       "compareToSourcePath": "/*/id/@extension", "operator": "notEquals"}),
        ),
        assert_(
            json!({"sourceId": "f-v3", "path": "//patient/id/item[@root='2.16.156.10011.1.3']/@extension", "value": "X-1"}),
        ),
        // A variable read from the XML answer, sent in the next request.
        op(
            "read",
            json!({"resource": "Patient", "params": "/${ackId}"}),
        ),
        assert_(json!({"response": "notFound"})),
        post("f-soap", "soap"),
        assert_(json!({"contentType": "application/soap+xml"})),
        assert_(
            json!({"path": "/soap:Envelope/soap:Body/MCCI_IN000002UV01/acknowledgement/@typeCode", "value": "AA"}),
        ),
        assert_(json!({"path": "count(/soap:Envelope/soap:Body)", "value": "1"})),
        // A corpus file, read in place from the corpora folder.
        post("f-corpus", "corpus"),
        assert_(json!({"path": "//targetMessage/id/@extension", "value": "C-7"})),
        assert_(
            json!({"path": "//targetMessage/id/@extension", "compareToSourceId": "f-corpus",
                       "compareToSourcePath": "/PRPA_IN201311UV02/id/@extension"}),
        ),
    ];
    let fixtures = json!([
        {"id": "f-v3", "resource": {"reference": "fixtures/v3.xml"}},
        {"id": "f-soap", "resource": {"reference": "fixtures/soap.xml"}},
        {"id": "f-corpus", "resource": {"reference": "corpora:cn/sample.xml"}}
    ]);
    let variables = json!([
        {"name": "fallback", "defaultValue": "Chalmers"},
        {"name": "ackId", "path": "/MCCI_IN000002UV01/id/@extension", "sourceId": "bare"}
    ]);
    let s = script(
        "xml-pass",
        vec![("xml", pass)],
        json!({"fixture": fixtures.clone(), "variable": variables.clone()}),
    );
    let mut loaded = LoadedScript::from_json("runner", dir.path(), s);
    loaded.corpora = corpora.path().to_path_buf();
    assert!(loaded.missing_corpus_files().is_empty());
    let run = run_script(&target(&canned.base), &loaded).await;
    assert_eq!(run.report["result"], "pass", "{:#}", run.report);
    assert_eq!((run.asserts_passed, run.asserts_total), (17, 17));
    let seen = canned.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|(m, p, _, _)| m == "GET" && p == "/fhir/Patient/ACK-M-Chalmers"),
        "the variable from the XML answer was sent: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(_, p, _, b)| p == "/hl7v3" && b.contains("C-7"))
    );

    // Asserts that must fail or error, one per test.
    let wrong: Vec<(&str, Value, &str)> = vec![
        (
            "value",
            json!({"path": "//acknowledgement/@typeCode", "value": "AE"}),
            "fail",
        ),
        (
            "count",
            json!({"path": "count(//acknowledgementDetail)", "value": "3"}),
            "fail",
        ),
        (
            "nothing-selected",
            json!({"path": "//acknowledgement/@missing", "value": "AA"}),
            "fail",
        ),
        (
            "predicate",
            json!({"path": "//acknowledgementDetail[@typeCode='E']/text/@value", "operator": "notEmpty"}),
            "fail",
        ),
        (
            "position",
            json!({"path": "//acknowledgementDetail[3]/@typeCode", "operator": "notEmpty"}),
            "fail",
        ),
        (
            "not-soap",
            json!({"path": "count(/soap:Envelope)", "value": "1"}),
            "fail",
        ),
        (
            "compare",
            json!({"path": "//targetMessage/id/@extension", "compareToSourceId": "f-corpus", "compareToSourcePath": "/*/id/@extension"}),
            "fail",
        ),
        (
            "bad-path",
            json!({"path": "//acknowledgement[@typeCode='AA'", "value": "AA"}),
            "error",
        ),
        (
            "bad-function",
            json!({"path": "string(//acknowledgement)", "value": "AA"}),
            "error",
        ),
        (
            "bad-prefix",
            json!({"path": "//x:acknowledgement", "value": "AA"}),
            "error",
        ),
    ];
    for (name, a, want) in wrong {
        let s = script(
            name,
            vec![(name, vec![post("f-v3", "bare"), assert_(a.clone())])],
            json!({"fixture": fixtures.clone(), "variable": variables.clone()}),
        );
        let mut loaded = LoadedScript::from_json("runner", dir.path(), s);
        loaded.corpora = corpora.path().to_path_buf();
        let run = run_script(&target(&canned.base), &loaded).await;
        assert_eq!(
            run.report["result"], "fail",
            "{name} must fail: {:#}",
            run.report
        );
        let t = results(&run.report["test"][0]);
        assert_eq!(t[1].1, want, "{name}: {t:?}");
        assert_eq!(run.failures.len(), 1, "{name}");
        assert!(
            run.failures[0]
                .exchange
                .as_ref()
                .is_some_and(|e| e.url.ends_with("/hl7v3")),
            "{name}: the evidence is the v3 exchange"
        );
    }

    // Without the corpus file: the script says which file and where it looked.
    let s = script(
        "no-corpus",
        vec![(
            "x",
            vec![post("f-corpus", "c"), assert_(json!({"response": "okay"}))],
        )],
        json!({"fixture": [{"id": "f-corpus", "resource": {"reference": "corpora:cn/absent.xml"}}], "variable": []}),
    );
    let mut loaded = LoadedScript::from_json("runner", dir.path(), s);
    loaded.corpora = corpora.path().to_path_buf();
    let missing = loaded.missing_corpus_files();
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].starts_with("corpus file cn/absent.xml not found in ")
            && missing[0].contains("set HUITONG_CORPORA"),
        "{missing:?}"
    );
    let run = run_script(&target(&canned.base), &loaded).await;
    assert_eq!(run.report["result"], "fail");
    assert_eq!(run.failures[0].message, missing[0]);
    // A corpus path may not climb out of the corpora.
    let s = script(
        "climb",
        vec![],
        json!({"fixture": [{"id": "f", "resource": {"reference": "corpora:../etc/passwd"}}], "variable": []}),
    );
    let loaded = LoadedScript::from_json("runner", dir.path(), s);
    assert!(loaded.missing_corpus_files()[0].contains("has no '..'"));
}
