//! The REST API over real sockets against a real SQLite file: every interaction and every error status.
mod common;

use common::{TestServer, expect_outcome, json_of};
use reqwest::Method;
use serde_json::{Value, json};

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": ["小明"]}], "gender": "male", "birthDate": "1990-01-01"})
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn crud_lifecycle_with_versions_and_headers() {
    let s = TestServer::start().await;
    let created = s.send(Method::POST, "Patient", &patient("李")).await;
    assert_eq!(created.status(), 201);
    assert_eq!(header(&created, "etag"), "W/\"1\"");
    assert!(!header(&created, "last-modified").is_empty());
    let location = header(&created, "location");
    let (_, body) = json_of(created).await;
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(location, s.url(&format!("Patient/{id}/_history/1")));
    assert_eq!(body["meta"]["versionId"], "1");
    assert_eq!(body["name"][0]["given"][0], "小明");

    let read = s.get(&format!("Patient/{id}")).await;
    assert_eq!(read.status(), 200);
    assert_eq!(
        header(&read, "content-type"),
        "application/fhir+json; charset=utf-8"
    );
    let (_, read_body) = json_of(read).await;
    assert_eq!(read_body, body);

    let mut changed = body.clone();
    changed["gender"] = json!("female");
    let updated = s
        .send(Method::PUT, &format!("Patient/{id}"), &changed)
        .await;
    assert_eq!(updated.status(), 200);
    assert_eq!(header(&updated, "etag"), "W/\"2\"");
    let (_, v2) = json_of(updated).await;
    assert_eq!(v2["gender"], "female");
    assert_eq!(v2["meta"]["versionId"], "2");

    let (status, v1) = json_of(s.get(&format!("Patient/{id}/_history/1")).await).await;
    assert_eq!((status, v1["gender"].clone()), (200, json!("male")));
    expect_outcome(s.get(&format!("Patient/{id}/_history/9")).await, 404).await;
    expect_outcome(s.get(&format!("Patient/{id}/_history/x")).await, 400).await;

    let deleted = s
        .http
        .delete(s.url(&format!("Patient/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(header(&deleted, "etag"), "W/\"3\"");
    let (code, _, _) = expect_outcome(s.get(&format!("Patient/{id}")).await, 410).await;
    assert_eq!(code, "deleted");
    // Deleting again changes nothing.
    assert_eq!(
        s.http
            .delete(s.url(&format!("Patient/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    let (status, hist) = json_of(s.get(&format!("Patient/{id}/_history")).await).await;
    assert_eq!(status, 200);
    assert_eq!(hist["type"], "history");
    assert_eq!(hist["total"], 3);
    let methods: Vec<&str> = hist["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["DELETE", "PUT", "POST"]);
    assert!(hist["entry"][0].get("resource").is_none());

    // Update on a deleted resource brings it back as version 4.
    let back = s
        .send(Method::PUT, &format!("Patient/{id}"), &changed)
        .await;
    assert_eq!(back.status(), 201);
    assert_eq!(header(&back, "etag"), "W/\"4\"");
}

#[tokio::test]
async fn update_creates_with_client_id_and_checks_ids() {
    let s = TestServer::start().await;
    let mut p = patient("王");
    p["id"] = json!("hn-001");
    assert_eq!(
        s.send(Method::PUT, "Patient/hn-001", &p).await.status(),
        201
    );
    assert_eq!(
        s.send(Method::PUT, "Patient/hn-001", &p).await.status(),
        200
    );

    let (_, at, _) = expect_outcome(s.send(Method::PUT, "Patient/other", &p).await, 400).await;
    assert_eq!(at.as_deref(), Some("id"));
    let (_, at, _) = expect_outcome(
        s.send(Method::PUT, "Patient/hn-001", &patient("x")).await,
        400,
    )
    .await;
    assert_eq!(at.as_deref(), Some("id"));
    let long = "a".repeat(65);
    let mut q = patient("x");
    q["id"] = json!(long);
    expect_outcome(
        s.send(Method::PUT, &format!("Patient/{long}"), &q).await,
        400,
    )
    .await;
    let (_, at, _) = expect_outcome(s.send(Method::PUT, "Observation/hn-001", &p).await, 400).await;
    assert_eq!(at.as_deref(), Some("resourceType"));
    let (_, at, _) = expect_outcome(
        s.send(Method::POST, "Observation", &patient("x")).await,
        400,
    )
    .await;
    assert_eq!(at.as_deref(), Some("resourceType"));
}

#[tokio::test]
async fn error_statuses_are_operation_outcomes() {
    let s = TestServer::start().await;
    expect_outcome(s.get("Patient/nope").await, 404).await;
    expect_outcome(s.get("Patent/1").await, 404).await;
    expect_outcome(s.get("Patient/a_b").await, 400).await;
    // A path that is not valid percent-encoded UTF-8 is rejected below the handlers, still as an OperationOutcome.
    expect_outcome(s.get("Patient/%FF%FE").await, 400).await;
    expect_outcome(
        s.http
            .get(format!("{}/nowhere", s.root))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    // 405: a method the route does not offer.
    expect_outcome(s.send(Method::POST, "Patient/1", &patient("x")).await, 405).await;
    // 406: formats we do not serve.
    expect_outcome(
        s.http
            .get(s.url("metadata"))
            .header("accept", "application/fhir+xml")
            .send()
            .await
            .unwrap(),
        406,
    )
    .await;
    expect_outcome(s.get("metadata?_format=xml").await, 406).await;
    // 415: a body that is not FHIR JSON.
    let r = s
        .http
        .post(s.url("Patient"))
        .header("content-type", "application/xml")
        .body("<Patient/>")
        .send()
        .await
        .unwrap();
    expect_outcome(r, 415).await;
    let r = s
        .http
        .post(s.url("Patient"))
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_outcome(r, 415).await;
    // 400: malformed JSON, invalid UTF-8, unknown element, deep nesting.
    let post = |body: Vec<u8>| {
        s.http
            .post(s.url("Patient"))
            .header("content-type", "application/fhir+json")
            .body(body)
            .send()
    };
    let (code, _, diag) =
        expect_outcome(post(b"{\"resourceType\":".to_vec()).await.unwrap(), 400).await;
    assert_eq!(code, "structure");
    assert!(diag.starts_with("invalid JSON"), "{diag}");
    let (_, _, diag) = expect_outcome(
        post(b"{\"resourceType\":\"Patient\",\"id\":\"\xc3\x28\"}".to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(diag.contains("UTF-8"), "{diag}");
    let (_, at, _) = expect_outcome(
        post(br#"{"resourceType":"Patient","nickname":"x"}"#.to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(at.as_deref(), Some("Patient.nickname"));
    let deep = format!(
        "{{\"resourceType\":\"Patient\",\"extension\":{}{}}}",
        "[{\"extension\":".repeat(100),
        "[]}]".repeat(100)
    );
    expect_outcome(post(deep.into_bytes()).await.unwrap(), 400).await;
    // 412/400 on If-Match.
    let (_, created) = json_of(s.send(Method::POST, "Patient", &patient("x")).await).await;
    let id = created["id"].as_str().unwrap();
    let put = |etag: &'static str| {
        s.http
            .put(s.url(&format!("Patient/{id}")))
            .header("content-type", "application/fhir+json")
            .header("if-match", etag)
            .body(serde_json::to_vec(&created).unwrap())
            .send()
    };
    expect_outcome(put("garbage").await.unwrap(), 400).await;
    expect_outcome(put("W/\"7\"").await.unwrap(), 412).await;
    assert_eq!(put("W/\"1\"").await.unwrap().status(), 200);
    // Nothing was written by any of the failures above.
    let (_, hist) = json_of(s.get("_history").await).await;
    assert_eq!(hist["total"], 2);
}

#[tokio::test]
async fn oversized_bodies_get_413_before_being_read() {
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), |c| c.max_body_bytes = 1000).await;
    let big = json!({"resourceType": "Patient", "name": [{"text": "x".repeat(2000)}]});
    let (code, _, _) = expect_outcome(s.send(Method::POST, "Patient", &big).await, 413).await;
    assert_eq!(code, "too-costly");
    // Without Content-Length (chunked), the limit applies while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 100])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = s
        .http
        .post(s.url("Patient"))
        .header("content-type", "application/fhir+json")
        .body(body)
        .send()
        .await
        .unwrap();
    expect_outcome(r, 413).await;
}

#[tokio::test]
async fn conditional_create_update_delete() {
    let s = TestServer::start().await;
    let mut p = patient("张");
    p["identifier"] =
        json!([{"system": "urn:oid:2.16.156.10011.1.3", "value": "110101199003077777"}]);
    let create = || {
        s.http
            .post(s.url("Patient"))
            .header("content-type", "application/fhir+json")
            .header(
                "if-none-exist",
                "identifier=urn:oid:2.16.156.10011.1.3|110101199003077777",
            )
            .body(serde_json::to_vec(&p).unwrap())
            .send()
    };
    let first = create().await.unwrap();
    assert_eq!(first.status(), 201);
    let (_, a) = json_of(first).await;
    let second = create().await.unwrap();
    assert_eq!(second.status(), 200);
    let (_, b) = json_of(second).await;
    assert_eq!(a["id"], b["id"]);

    let cond = "Patient?identifier=urn%3Aoid%3A2.16.156.10011.1.3%7C110101199003077777";
    let mut changed = p.clone();
    changed["gender"] = json!("female");
    let (status, c) = json_of(s.send(Method::PUT, cond, &changed).await).await;
    assert_eq!(
        (status, c["id"].clone(), c["meta"]["versionId"].clone()),
        (200, a["id"].clone(), json!("2"))
    );
    // No match: a conditional update creates.
    let mut other = patient("赵");
    other["identifier"] = json!([{"system": "urn:oid:2.16.156.10011.1.3", "value": "X2"}]);
    assert_eq!(
        s.send(Method::PUT, "Patient?identifier=X2", &other)
            .await
            .status(),
        201
    );
    // Two matches: 412.
    assert_eq!(s.send(Method::POST, "Patient", &other).await.status(), 201);
    expect_outcome(
        s.send(Method::PUT, "Patient?identifier=X2", &other).await,
        412,
    )
    .await;
    expect_outcome(
        s.http
            .delete(s.url("Patient?identifier=X2"))
            .send()
            .await
            .unwrap(),
        412,
    )
    .await;
    // Unknown criteria are refused, not ignored.
    let (code, _, _) = expect_outcome(
        s.http
            .delete(s.url("Patient?nonsense=x"))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(code, "invalid");
    // Conditional delete of one match.
    assert_eq!(
        s.http.delete(s.url(cond)).send().await.unwrap().status(),
        204
    );
    expect_outcome(
        s.get(&format!("Patient/{}", a["id"].as_str().unwrap()))
            .await,
        410,
    )
    .await;
    assert_eq!(
        s.http.delete(s.url(cond)).send().await.unwrap().status(),
        204
    );
}

#[tokio::test]
async fn json_patch_and_prefer() {
    let s = TestServer::start().await;
    let minimal = s
        .http
        .post(s.url("Patient"))
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=minimal")
        .body(serde_json::to_vec(&patient("孙")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(minimal.status(), 201);
    let location = header(&minimal, "location");
    assert!(minimal.bytes().await.unwrap().is_empty());
    let id = location.split('/').rev().nth(2).unwrap().to_string();

    let patch = |body: &str, ct: &str| {
        s.http
            .patch(s.url(&format!("Patient/{id}")))
            .header("content-type", ct.to_string())
            .body(body.to_string())
            .send()
    };
    let ok = patch(
        r#"[{"op":"replace","path":"/birthDate","value":"1991-02-03"}]"#,
        "application/json-patch+json",
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let (_, v) = json_of(ok).await;
    assert_eq!(
        (v["birthDate"].clone(), v["meta"]["versionId"].clone()),
        (json!("1991-02-03"), json!("2"))
    );
    let (code, _, _) = expect_outcome(
        patch(
            r#"[{"op":"test","path":"/gender","value":"female"}]"#,
            "application/json-patch+json",
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    assert_eq!(code, "processing");
    // A patch that produces an invalid resource is refused with the location.
    let (_, at, _) = expect_outcome(
        patch(
            r#"[{"op":"add","path":"/birthDate","value":"soon"}]"#,
            "application/json-patch+json",
        )
        .await
        .unwrap(),
        422,
    )
    .await;
    assert_eq!(at.as_deref(), Some("Patient.birthDate"));
    expect_outcome(
        patch(r#"{"op":"nope"}"#, "application/json-patch+json")
            .await
            .unwrap(),
        400,
    )
    .await;
    expect_outcome(patch("[]", "application/json").await.unwrap(), 415).await;
    let missing = s
        .http
        .patch(s.url("Patient/none"))
        .header("content-type", "application/json-patch+json")
        .body("[]")
        .send()
        .await
        .unwrap();
    expect_outcome(missing, 404).await;

    let oo = s
        .http
        .put(s.url(&format!("Patient/{id}")))
        .header("content-type", "application/fhir+json")
        .header("prefer", "return=OperationOutcome")
        .body(serde_json::to_vec(&v).unwrap())
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(oo).await;
    assert_eq!(
        (status, body["resourceType"].clone()),
        (200, json!("OperationOutcome"))
    );
    assert_eq!(body["issue"][0]["severity"], "information");
}

#[tokio::test]
async fn summary_elements_and_pretty() {
    let s = TestServer::start().await;
    let mut p = patient("周");
    p["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">周</div>"});
    p["contact"] = json!([{"name": {"text": "母亲"}}]);
    let (_, c) = json_of(s.send(Method::POST, "Patient", &p).await).await;
    let id = c["id"].as_str().unwrap();
    let (_, summary) = json_of(s.get(&format!("Patient/{id}?_summary=true")).await).await;
    assert!(
        summary.get("contact").is_none() && summary.get("text").is_none(),
        "{summary}"
    );
    assert_eq!(summary["name"], c["name"]);
    assert_eq!(summary["meta"]["tag"][0]["code"], "SUBSETTED");
    let (_, data) = json_of(s.get(&format!("Patient/{id}?_summary=data")).await).await;
    assert!(data.get("text").is_none() && data.get("contact").is_some());
    let (_, elements) = json_of(s.get(&format!("Patient/{id}?_elements=gender")).await).await;
    let keys: Vec<&String> = elements.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["resourceType", "id", "meta", "gender"]);
    expect_outcome(s.get(&format!("Patient/{id}?_summary=count")).await, 400).await;
    expect_outcome(s.get(&format!("Patient/{id}?_summary=bogus")).await, 400).await;
    expect_outcome(s.get(&format!("Patient/{id}?_foo=1")).await, 400).await;
    let pretty = s
        .get(&format!("Patient/{id}?_pretty=true"))
        .await
        .text()
        .await
        .unwrap();
    assert!(pretty.contains("\n  \"resourceType\""), "{pretty}");
    let not_modified = s
        .http
        .get(s.url(&format!("Patient/{id}")))
        .header("if-none-match", "W/\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
}

#[tokio::test]
async fn history_paging_and_since() {
    let s = TestServer::start().await;
    for i in 0..7 {
        s.send(Method::POST, "Patient", &patient(&format!("P{i}")))
            .await;
    }
    s.send(
        Method::POST,
        "Observation",
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "hr"}}),
    )
    .await;
    let (_, page1) = json_of(s.get("Patient/_history?_count=3").await).await;
    assert_eq!(page1["total"], 7);
    assert_eq!(page1["entry"].as_array().unwrap().len(), 3);
    let next = page1["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    // A write after the first page does not shift later pages.
    s.send(Method::POST, "Patient", &patient("late")).await;
    let (_, page2) = json_of(s.http.get(&next).send().await.unwrap()).await;
    assert_eq!(page2["total"], 7);
    let ids = |p: &Value| {
        p["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].clone())
            .collect::<Vec<_>>()
    };
    assert!(ids(&page1).iter().all(|i| !ids(&page2).contains(i)));
    let (_, system) = json_of(s.get("_history?_summary=count").await).await;
    assert_eq!(
        (system["total"].clone(), system.get("entry").is_none()),
        (json!(9), true)
    );
    let (_, future) = json_of(s.get("_history?_since=2999-01-01T00:00:00Z").await).await;
    assert_eq!(future["total"], 0);
    let (_, past) = json_of(s.get("_history?_since=2000-01-01").await).await;
    assert_eq!(past["total"], 9);
    expect_outcome(s.get("_history?_since=yesterday").await, 400).await;
    expect_outcome(s.get("_history?_count=-1").await, 400).await;
}

#[tokio::test]
async fn transaction_rewrites_references_and_resolves_conditions() {
    let s = TestServer::start().await;
    let mut org = json!({"resourceType": "Organization", "name": "协和医院", "identifier": [{"system": "urn:oid:2.16.156.10011.1.5", "value": "H001"}]});
    s.send(Method::POST, "Organization", &org).await;
    org["name"] = json!("ignored");
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": {"resourceType": "Patient", "name": [{"family": "钱"}], "managingOrganization": {"reference": "Organization?identifier=urn:oid:2.16.156.10011.1.5|H001"}},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:88f151c0-a954-468a-88bd-5ae15c08e059",
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "体温"}, "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}},
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": org, "request": {"method": "POST", "url": "Organization", "ifNoneExist": "identifier=urn:oid:2.16.156.10011.1.5|H001"}}
        ]
    });
    let (status, resp) = json_of(s.send(Method::POST, "", &bundle).await).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["type"], "transaction-response");
    let statuses: Vec<&str> = resp["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created", "201 Created", "200 OK"]);
    let patient_id = resp["entry"][0]["resource"]["id"].as_str().unwrap();
    assert_eq!(
        resp["entry"][1]["resource"]["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    let org_id = resp["entry"][2]["resource"]["id"].as_str().unwrap();
    assert_eq!(
        resp["entry"][0]["resource"]["managingOrganization"]["reference"],
        format!("Organization/{org_id}")
    );
    assert_eq!(resp["entry"][2]["resource"]["name"], "协和医院");

    // Outside a Bundle, references are stored exactly as sent.
    let single = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"}});
    let (status, stored) = json_of(s.send(Method::POST, "Observation", &single).await).await;
    assert_eq!((status, &stored["subject"]), (201, &single["subject"]));
}

#[tokio::test]
async fn failed_transaction_leaves_nothing_behind() {
    let s = TestServer::start().await;
    let mut entries: Vec<Value> = (0..99)
        .map(|i| json!({"fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"), "resource": patient(&format!("T{i}")), "request": {"method": "POST", "url": "Patient"}}))
        .collect();
    // The 100th entry updates with a stale version: the whole transaction must fail.
    let mut p = patient("last");
    p["id"] = json!("last");
    entries.push(json!({"resource": p, "request": {"method": "PUT", "url": "Patient/last", "ifMatch": "W/\"3\""}}));
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let (code, at, _) = expect_outcome(s.send(Method::POST, "", &bundle).await, 412).await;
    assert_eq!(code, "conflict");
    assert_eq!(at.as_deref(), Some("Bundle.entry[99]"));
    let (_, hist) = json_of(s.get("_history").await).await;
    assert_eq!(hist["total"], 0);

    // Unresolvable and circular urn:uuid references, duplicate fullUrls: 400, nothing written.
    let dangling = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "urn:uuid:99999999-9999-4999-8999-999999999999"}}, "request": {"method": "POST", "url": "Observation"}}]});
    let (_, at, _) = expect_outcome(s.send(Method::POST, "", &dangling).await, 400).await;
    assert_eq!(
        at.as_deref(),
        Some("Bundle.entry[0].resource.subject.reference")
    );
    let circular = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222", "resource": patient("a"), "request": {"method": "PUT", "url": "Patient?identifier=urn:uuid:33333333-3333-4333-8333-333333333333"}},
        {"fullUrl": "urn:uuid:33333333-3333-4333-8333-333333333333", "resource": patient("b"), "request": {"method": "PUT", "url": "Patient?identifier=urn:uuid:22222222-2222-4222-8222-222222222222"}}]});
    let (_, _, diag) = expect_outcome(s.send(Method::POST, "", &circular).await, 400).await;
    assert!(diag.contains("circular or unresolvable"), "{diag}");
    let duplicate = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:44444444-4444-4444-8444-444444444444", "resource": patient("a"), "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:44444444-4444-4444-8444-444444444444", "resource": patient("b"), "request": {"method": "POST", "url": "Patient"}}]});
    let (_, at, _) = expect_outcome(s.send(Method::POST, "", &duplicate).await, 400).await;
    assert_eq!(at.as_deref(), Some("Bundle.entry[1].fullUrl"));
    let bad_entry = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("a"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "gender": 3}, "request": {"method": "POST", "url": "Patient"}}]});
    let (_, at, _) = expect_outcome(s.send(Method::POST, "", &bad_entry).await, 400).await;
    assert_eq!(at.as_deref(), Some("Bundle.entry[1].resource.gender"));
    let mut d = patient("dup");
    d["id"] = json!("dup");
    let twice = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": d, "request": {"method": "PUT", "url": "Patient/dup"}},
        {"resource": d, "request": {"method": "PUT", "url": "Patient/dup"}}]});
    let (code, at, _) = expect_outcome(s.send(Method::POST, "", &twice).await, 409).await;
    assert_eq!(
        (code.as_str(), at.as_deref()),
        ("conflict", Some("Bundle.entry[1]"))
    );
    let (_, hist) = json_of(s.get("_history").await).await;
    assert_eq!(hist["total"], 0);
    expect_outcome(
        s.send(
            Method::POST,
            "",
            &json!({"resourceType": "Bundle", "type": "collection"}),
        )
        .await,
        400,
    )
    .await;
    expect_outcome(s.send(Method::POST, "", &patient("x")).await, 400).await;
}

#[tokio::test]
async fn batch_entries_succeed_or_fail_alone() {
    let s = TestServer::start().await;
    let mut p = patient("吴");
    p["id"] = json!("b1");
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": p, "request": {"method": "PUT", "url": "Patient/b1"}},
        {"resource": patient("ok"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"resource": patient("bad"), "request": {"method": "PUT", "url": "Patient/b2", "ifMatch": "W/\"5\""}},
        {"request": {"method": "DELETE", "url": "Patient/b1"}},
        {"request": {"method": "GET", "url": "Patient?name=x"}}
    ]});
    let (status, resp) = json_of(s.send(Method::POST, "", &bundle).await).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["type"], "batch-response");
    let statuses: Vec<&str> = resp["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[1], "201 Created");
    assert_eq!(statuses[2], "404 Not Found");
    assert_eq!(statuses[3], "400 Bad Request", "{resp}");
    // A GET entry with a query is a search.
    assert_eq!(statuses[5], "200 OK");
    assert_eq!(
        resp["entry"][2]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
}

#[tokio::test]
async fn concurrent_conflicting_updates_with_if_match() {
    let s = TestServer::start().await;
    let mut p = patient("郑");
    p["id"] = json!("race");
    s.send(Method::PUT, "Patient/race", &p).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let http = s.http.clone();
        let url = s.url("Patient/race");
        let mut body = p.clone();
        body["name"][0]["family"] = json!(format!("writer{i}"));
        tasks.push(tokio::spawn(async move {
            http.put(url)
                .header("content-type", "application/fhir+json")
                .header("if-match", "W/\"1\"")
                .body(serde_json::to_vec(&body).unwrap())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        15,
        "{statuses:?}"
    );
    let (_, hist) = json_of(s.get("Patient/race/_history").await).await;
    assert_eq!(hist["total"], 2);
}

#[tokio::test]
async fn restart_keeps_all_data() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (_, v) = json_of(
            s.send(Method::POST, "Patient", &patient(&format!("R{i}")))
                .await,
        )
        .await;
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let (_, before) = json_of(s.get(&format!("Patient/{}", ids[3])).await).await;
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, |_| {}).await;
    let (status, after) = json_of(s.get(&format!("Patient/{}", ids[3])).await).await;
    assert_eq!((status, &after), (200, &before));
    let (_, hist) = json_of(s.get("Patient/_history").await).await;
    assert_eq!(hist["total"], 20);
    let mut next = after.clone();
    next["gender"] = json!("other");
    let r = s
        .send(Method::PUT, &format!("Patient/{}", ids[3]), &next)
        .await;
    assert_eq!(header(&r, "etag"), "W/\"2\"");
}

#[tokio::test]
async fn operations_endpoints() {
    let s = TestServer::start().await;
    let (status, cap) = json_of(s.get("metadata").await).await;
    assert_eq!(status, 200);
    assert_eq!(cap["fhirVersion"], "4.0.1");
    assert_eq!(cap["rest"][0]["resource"].as_array().unwrap().len(), 146);
    let h = s
        .http
        .get(format!("{}/healthz", s.root))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    let r = s
        .http
        .get(format!("{}/readyz", s.root))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let with_id = s
        .http
        .get(s.url("metadata"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&with_id, "x-request-id"), "abc-123");
    let first = header(&s.get("metadata").await, "x-request-id");
    let second = header(&s.get("metadata").await, "x-request-id");
    assert!(first.len() > 16 && first != second, "{first} {second}");
    let (_, p) = json_of(s.send(Method::POST, "Patient", &patient("m")).await).await;
    s.get(&format!("Patient/{}", p["id"].as_str().unwrap()))
        .await;
    s.get(&format!("Patient/{}", p["id"].as_str().unwrap()))
        .await;
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("huitong_requests_total{interaction=\"read\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("huitong_requests_total{interaction=\"create\",status=\"201\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("huitong_cache_hits_total 2"), "{metrics}");
    assert!(
        metrics.contains("huitong_store_write_batch_size_bucket{le=\"1\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("huitong_request_duration_seconds_count"),
        "{metrics}"
    );
    expect_outcome(s.get("Patient?nonsense=1").await, 400).await;
}
