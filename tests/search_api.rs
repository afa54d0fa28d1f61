//! Search over real sockets against a real SQLite file: every parameter type, modifiers,
//! strictness, paging under concurrent writes, includes, chains, `_has`, compartments, search in
//! Bundles, conditional operations by full search and `$reindex` of a custom SearchParameter.
mod common;

use common::{TestServer, expect_outcome, ids, json_of, put, set};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};

fn mode_ids(bundle: &Value, mode: &str) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap_or("")
            )
        })
        .collect()
}

async fn search(s: &TestServer, q: &str) -> Value {
    let (status, b) = json_of(s.get(q).await).await;
    assert_eq!(status, 200, "{q}: {b}");
    assert_eq!(b["type"], "searchset", "{q}");
    b
}

async fn found(s: &TestServer, q: &str) -> BTreeSet<String> {
    ids(&search(s, q).await)
}

async fn fixture(s: &TestServer) {
    put(
        s,
        json!({"resourceType": "Organization", "id": "org1", "name": "北京协和医院"}),
    )
    .await;
    put(s, json!({"resourceType": "Organization", "id": "org2", "name": "Hôpital Saint-Louis", "partOf": {"reference": "Organization/org1"}})).await;
    put(s, json!({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Wang", "given": ["Wei"]}]})).await;
    put(s, json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "110101199003077777",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]}}],
        "name": [{"family": "李", "given": ["小明"]}], "gender": "male", "birthDate": "1990-03-07",
        "active": true, "telecom": [{"system": "phone", "value": "13800000000"}],
        "managingOrganization": {"reference": "Organization/org1"},
        "generalPractitioner": [{"reference": "Practitioner/dr1"}],
        "meta": {"tag": [{"system": "urn:tags", "code": "vip"}], "profile": ["http://example.org/StructureDefinition/cn-patient"], "source": "http://his.example.org"}})).await;
    put(
        s,
        json!({"resourceType": "Patient", "id": "p2",
        "name": [{"family": "Müller", "given": ["Anna"]}], "gender": "female", "birthDate": "1985",
        "managingOrganization": {"reference": "Organization/org2"}}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "Patient", "id": "p3",
        "name": [{"family": "Muller", "given": ["Hans"]}], "gender": "male",
        "deceasedDateTime": "2020-05-01T10:00:00+08:00"}),
    )
    .await;
    put(s, json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"}, "period": {"start": "2021-01-01T08:00:00Z", "end": "2021-01-01T09:00:00Z"}})).await;
    for (id, subject, code, value, unit, date) in [
        ("o1", "p1", "8310-5", 36.8, "Cel", "2021-01-01T08:30:00Z"),
        ("o2", "p1", "8867-4", 72.0, "/min", "2021-01-02"),
        ("o3", "p2", "8310-5", 38.5, "Cel", "2022-06-15T12:00:00Z"),
        ("o4", "p3", "29463-7", 70.25, "kg", "2019-12-31"),
    ] {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": format!("display {code}")}], "text": "体温"},
            "subject": {"reference": format!("Patient/{subject}")},
            "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}});
        if id == "o1" {
            o["encounter"] = json!({"reference": "Encounter/e1"});
        }
        put(s, o).await;
    }
    put(s, json!({"resourceType": "RiskAssessment", "id": "r1", "status": "final", "subject": {"reference": "Patient/p1"},
        "prediction": [{"probabilityDecimal": 0.25}]})).await;
    put(s, json!({"resourceType": "ValueSet", "id": "vs1", "status": "active", "url": "http://example.org/fhir/ValueSet/a/b"})).await;
    put(s, json!({"resourceType": "Provenance", "id": "prov1", "recorded": "2021-01-01T00:00:00Z",
        "target": [{"reference": "Patient/p1"}], "agent": [{"who": {"reference": "Practitioner/dr1"}}]})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_parameter_type_and_modifier_matches_what_it_should() {
    let s = TestServer::start().await;
    fixture(&s).await;
    let cases: &[(&str, &[&str])] = &[
        // string: prefix, case and accent folded; :exact; :contains; Chinese as is
        ("Patient?family=muller", &["p2", "p3"]),
        ("Patient?family=MÜL", &["p2", "p3"]),
        ("Patient?family:exact=Müller", &["p2"]),
        ("Patient?family:exact=muller", &[]),
        ("Patient?name:contains=ans", &["p3"]),
        ("Patient?name=李", &["p1"]),
        ("Patient?given=小", &["p1"]),
        ("Organization?name=hopital", &["org2"]),
        ("Organization?name:contains=协和", &["org1"]),
        ("Patient?family:missing=true", &[]),
        ("Patient?birthdate:missing=true", &["p3"]),
        // token
        ("Patient?gender=male", &["p1", "p3"]),
        ("Patient?gender=male,female", &["p1", "p2", "p3"]),
        ("Patient?gender:not=male", &["p2"]),
        (
            "Patient?identifier=urn:oid:2.16.156.10011.1.3|110101199003077777",
            &["p1"],
        ),
        ("Patient?identifier=110101199003077777", &["p1"]),
        ("Patient?identifier=urn:oid:2.16.156.10011.1.3|", &["p1"]),
        ("Patient?identifier=|110101199003077777", &[]),
        (
            "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|NI|110101199003077777",
            &["p1"],
        ),
        ("Patient?active=true", &["p1"]),
        ("Patient?phone=13800000000", &["p1"]),
        ("Patient?telecom=phone|13800000000", &["p1"]),
        ("Observation?code=http://loinc.org|8310-5", &["o1", "o3"]),
        ("Observation?code:text=体温", &["o1", "o2", "o3", "o4"]),
        ("Observation?code:text=DISPLAY 8867", &["o2"]),
        ("Encounter?class=AMB", &["e1"]),
        // date: prefixes and ranges
        ("Patient?birthdate=1990", &["p1"]),
        ("Patient?birthdate=1990-03-07", &["p1"]),
        ("Patient?birthdate=1985-06", &[]),
        ("Patient?birthdate=ge1986", &["p1"]),
        ("Patient?birthdate=lt1990-03-07", &["p2"]),
        ("Patient?birthdate=le1990-03-07", &["p1", "p2"]),
        ("Patient?birthdate=gt1985-06-01", &["p1", "p2"]),
        ("Patient?birthdate=sa1985", &["p1"]),
        ("Patient?birthdate=eb1990", &["p2"]),
        ("Patient?birthdate=ne1990", &["p2"]),
        ("Patient?birthdate=ap1990-03-01", &["p1"]),
        ("Patient?death-date=2020-05-01", &["p3"]),
        ("Patient?death-date=2020-05-01T02:00:00Z", &["p3"]),
        ("Encounter?date=2021-01-01", &["e1"]),
        ("Encounter?date=2021-01-01T08:30:00Z", &[]),
        ("Encounter?date=ge2021-01-01T08:30:00Z", &["e1"]),
        ("Observation?date=ge2021-01-01&date=lt2022", &["o1", "o2"]),
        // number and quantity
        ("RiskAssessment?probability=0.25", &["r1"]),
        ("RiskAssessment?probability=gt0.2", &["r1"]),
        ("RiskAssessment?probability=lt0.2", &[]),
        ("Observation?value-quantity=36.8", &["o1"]),
        ("Observation?value-quantity=37", &["o1"]),
        ("Observation?value-quantity=gt37", &["o2", "o3", "o4"]),
        (
            "Observation?value-quantity=gt37|http://unitsofmeasure.org|Cel",
            &["o3"],
        ),
        ("Observation?value-quantity=le70.25||kg", &["o4"]),
        ("Observation?value-quantity=ap70", &["o2", "o4"]),
        ("Observation?value-quantity=70", &["o4"]),
        ("Observation?value-quantity=70.0", &[]),
        ("Observation?value-quantity=ne36.8", &["o2", "o3", "o4"]),
        // reference
        ("Observation?subject=Patient/p1", &["o1", "o2"]),
        ("Observation?subject=p2", &["o3"]),
        ("Observation?subject:Patient=p3", &["o4"]),
        ("Observation?patient=p1", &["o1", "o2"]),
        ("Observation?encounter:missing=false", &["o1"]),
        ("Organization?partof=org1", &["org2"]),
        // uri
        (
            "ValueSet?url=http://example.org/fhir/ValueSet/a/b",
            &["vs1"],
        ),
        ("ValueSet?url:below=http://example.org/fhir", &["vs1"]),
        (
            "ValueSet?url:above=http://example.org/fhir/ValueSet/a/b/c",
            &["vs1"],
        ),
        ("ValueSet?url=http://example.org/fhir", &[]),
        // common parameters
        ("Patient?_id=p1,p3", &["p1", "p3"]),
        ("Patient?_tag=urn:tags|vip", &["p1"]),
        (
            "Patient?_profile=http://example.org/StructureDefinition/cn-patient",
            &["p1"],
        ),
        ("Patient?_source=http://his.example.org", &["p1"]),
        ("Patient?_lastUpdated=gt2000-01-01", &["p1", "p2", "p3"]),
        ("Patient?_lastUpdated=lt2000-01-01", &[]),
        // chains (any depth) and reverse chains
        ("Observation?subject:Patient.name=muller", &["o3", "o4"]),
        ("Observation?subject.family=李", &["o1", "o2"]),
        (
            "Observation?subject:Patient.organization.name=hopital",
            &["o3"],
        ),
        (
            "Observation?subject:Patient.organization.partof.name=北京",
            &["o3"],
        ),
        ("Patient?_has:Observation:subject:code=8867-4", &["p1"]),
        (
            "Patient?_has:Observation:patient:value-quantity=gt38||Cel",
            &["p2"],
        ),
        (
            "Organization?_has:Patient:organization:_has:Observation:subject:code=29463-7",
            &[],
        ),
        (
            "Organization?_has:Patient:organization:_has:Observation:subject:code=8310-5",
            &["org1", "org2"],
        ),
        // AND of repeated, OR of commas
        ("Patient?gender=male&family=muller", &["p3"]),
        ("Patient?family=li,müller&gender=female", &["p2"]),
    ];
    let mut failures = vec![];
    for (q, expected) in cases {
        let got = found(&s, q).await;
        if got != set(expected) {
            failures.push(format!("{q}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // POST _search with a form body gives the same.
    let resp = s
        .http
        .post(s.url("Patient/_search"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("family=muller&gender=male")
        .send()
        .await
        .unwrap();
    let (status, b) = json_of(resp).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(ids(&b), set(&["p3"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_by_default_lenient_on_request() {
    let s = TestServer::start().await;
    fixture(&s).await;
    for q in [
        "Patient?nonsense=1",
        "Patient?family:fuzzy=x",
        "Patient?birthdate=1990-13",
        "Patient?birthdate=xx1990",
        "Observation?value-quantity=abc",
        "Patient?_count=-1",
        "Patient?_sort=nonsense",
        "Patient?gender:missing=perhaps",
        "Observation?subject=Nope/1",
        "Observation?subject:Nope=1",
        "Patient?_include=Patient:nonsense",
        "Patient?_has:Observation:subject=1",
        "Patient?family=",
        "Observation?code:in=http://example.org/vs",
    ] {
        let (_, _, msg) = expect_outcome(s.get(q).await, 400).await;
        assert!(!msg.is_empty(), "{q}");
    }
    // Unknown types are 404.
    expect_outcome(s.get("Nonsense?x=1").await, 404).await;
    // Lenient: ignored and reported in an outcome entry; self shows only what was applied.
    let resp = s
        .http
        .get(s.url("Patient?family=muller&nonsense=1&birthdate=1990-13"))
        .header("prefer", "handling=lenient")
        .send()
        .await
        .unwrap();
    let (status, b) = json_of(resp).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(ids(&b), set(&["p2", "p3"]));
    let outcome = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("outcome entry");
    let text = outcome["resource"].to_string();
    assert!(
        text.contains("nonsense") && text.contains("birthdate"),
        "{text}"
    );
    let self_link = b["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "self")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        self_link.contains("family=muller") && !self_link.contains("nonsense"),
        "{self_link}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn includes_revincludes_sort_summary_elements_total() {
    let s = TestServer::start().await;
    fixture(&s).await;
    let b = search(
        &s,
        "Observation?subject=p1&_include=Observation:subject&_include=Observation:encounter",
    )
    .await;
    assert_eq!(ids(&b), set(&["o1", "o2"]));
    assert_eq!(
        mode_ids(&b, "include"),
        set(&["Patient/p1", "Encounter/e1"])
    );
    let b = search(
        &s,
        "Observation?_id=o3&_include=Observation:subject&_include:iterate=Patient:organization",
    )
    .await;
    assert_eq!(
        mode_ids(&b, "include"),
        set(&["Patient/p2", "Organization/org2"])
    );
    let b = search(&s, "Observation?_id=o3&_include=Observation:*").await;
    assert_eq!(mode_ids(&b, "include"), set(&["Patient/p2"]));
    let b = search(
        &s,
        "Patient?_id=p1&_revinclude=Observation:subject&_revinclude=Provenance:target",
    )
    .await;
    assert_eq!(
        mode_ids(&b, "include"),
        set(&["Observation/o1", "Observation/o2", "Provenance/prov1"])
    );
    let b = search(&s, "Organization?_id=org1&_revinclude=Patient:organization&_revinclude:iterate=Observation:subject").await;
    assert_eq!(
        mode_ids(&b, "include"),
        set(&["Patient/p1", "Observation/o1", "Observation/o2"])
    );

    // Sort on several keys, ties by id.
    let order = |b: &Value| -> Vec<String> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        order(&search(&s, "Patient?_sort=birthdate").await),
        ["p2", "p1", "p3"]
    );
    assert_eq!(
        order(&search(&s, "Patient?_sort=-birthdate").await),
        ["p1", "p2", "p3"]
    );
    assert_eq!(
        order(&search(&s, "Patient?_sort=gender,-family").await),
        ["p2", "p1", "p3"]
    );
    assert_eq!(
        order(&search(&s, "Patient?_sort=-_id").await),
        ["p3", "p2", "p1"]
    );
    assert_eq!(
        order(&search(&s, "Observation?_sort=-value-quantity").await),
        ["o2", "o4", "o3", "o1"]
    );

    let b = search(&s, "Patient?_summary=count").await;
    assert_eq!(b["total"], 3);
    assert!(b.get("entry").is_none());
    let b = search(&s, "Patient?_total=none&_count=1").await;
    assert!(b.get("total").is_none());
    assert_eq!(ids(&b).len(), 1);
    let b = search(&s, "Patient?_id=p1&_elements=gender").await;
    let r = &b["entry"][0]["resource"];
    assert_eq!(r["gender"], "male");
    assert!(r.get("name").is_none(), "{r}");
    assert!(r["meta"].to_string().contains("SUBSETTED"), "{r}");
    let b = search(&s, "Patient?_id=p1&_summary=true").await;
    assert!(b["entry"][0]["resource"].get("name").is_some());

    // System search, compartment search.
    let b = search(&s, "?_type=Patient,Organization&_id=p1,org2").await;
    assert_eq!(
        mode_ids(&b, "match"),
        set(&["Patient/p1", "Organization/org2"])
    );
    let b = search(&s, "?_lastUpdated=gt2000-01-01&_count=100").await;
    assert!(b["total"].as_u64().unwrap() >= 12, "{}", b["total"]);
    assert_eq!(
        found(&s, "Patient/p1/Observation").await,
        set(&["o1", "o2"])
    );
    assert_eq!(
        found(&s, "Patient/p1/Observation?code=8867-4").await,
        set(&["o2"])
    );
    assert_eq!(found(&s, "Patient/p1/Encounter").await, set(&["e1"]));
    assert_eq!(found(&s, "Patient/p1/Patient").await, set(&["p1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_in_bundles_and_conditional_operations_use_full_search() {
    let s = TestServer::start().await;
    fixture(&s).await;
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?family=muller"}},
        {"request": {"method": "GET", "url": "Patient/p1/Observation?code=8310-5"}},
        {"request": {"method": "GET", "url": "Patient?bogus=1"}}]});
    let (status, b) = json_of(s.send(Method::POST, "", &batch).await).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(ids(&b["entry"][0]["resource"]), set(&["p2", "p3"]));
    assert_eq!(ids(&b["entry"][1]["resource"]), set(&["o1"]));
    assert!(
        b["entry"][2]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("400"),
        "{b}"
    );

    // Conditional update on a name and birth date; conditional create matching by family.
    let resp = s.send(Method::PUT, "Patient?family=李&birthdate=1990-03-07", &json!({"resourceType": "Patient", "name": [{"family": "李", "given": ["小明"]}], "gender": "male", "birthDate": "1990-03-07"})).await;
    assert_eq!(resp.status(), 200);
    let (_, p) = json_of(s.get("Patient/p1").await).await;
    assert_eq!(p["meta"]["versionId"], "2");
    assert!(p.get("identifier").is_none(), "replaced: {p}");
    // Two matches: 412.
    let resp = s
        .send(
            Method::PUT,
            "Patient?family=muller",
            &json!({"resourceType": "Patient"}),
        )
        .await;
    assert_eq!(resp.status(), 412);
    // Conditional delete on a chained criterion.
    let resp = s
        .http
        .delete(s.url("Observation?subject:Patient.family:exact=Müller"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    expect_outcome(s.get("Observation/o3").await, 410).await;
    assert_eq!(found(&s, "Observation?code=8310-5").await, set(&["o1"]));
    // Bad criteria are 400, never ignored.
    let resp = s
        .http
        .delete(s.url("Observation?nonsense=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    // Transaction with If-None-Exist on a token and a conditional reference by name.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "gender": "male"}, "request": {"method": "POST", "url": "Patient", "ifNoneExist": "name=hans&gender=male"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient?family:exact=Muller"}}, "request": {"method": "POST", "url": "Observation"}}]});
    let (status, b) = json_of(s.send(Method::POST, "", &tx).await).await;
    assert_eq!(status, 200, "{b}");
    assert!(
        b["entry"][0]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("200"),
        "{b}"
    );
    assert_eq!(found(&s, "Observation?subject=Patient/p3").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_activates_a_custom_search_parameter() {
    let s = TestServer::start().await;
    fixture(&s).await;
    let sp = json!({"resourceType": "SearchParameter", "id": "pt-given-city", "url": "http://example.org/SearchParameter/birth-city",
        "name": "birth-city", "status": "active", "description": "City of the address", "code": "address-town",
        "base": ["Patient"], "type": "string", "expression": "Patient.address.city"});
    put(&s, sp).await;
    put(
        &s,
        json!({"resourceType": "Patient", "id": "p9", "address": [{"city": "上海"}]}),
    )
    .await;
    // Not active before the reindex.
    expect_outcome(s.get("Patient?address-town=上海").await, 400).await;
    let resp = s
        .send(
            Method::POST,
            "Patient/$reindex",
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    let (status, out) = json_of(resp).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["parameter"][0]["valueInteger"], 4, "{out}");
    assert_eq!(found(&s, "Patient?address-town=上海").await, set(&["p9"]));
    // Writes after the reindex index it too.
    put(
        &s,
        json!({"resourceType": "Patient", "id": "p10", "address": [{"city": "上海市"}]}),
    )
    .await;
    assert_eq!(
        found(&s, "Patient?address-town=上海").await,
        set(&["p9", "p10"])
    );
    let resp = s
        .send(
            Method::POST,
            "$reindex",
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(found(&s, "Patient?family=muller").await, set(&["p2", "p3"]));
}

/// Walks `next` links from `first`, returning every match id in order.
async fn walk(s: &TestServer, first: &str) -> Vec<String> {
    let mut out = vec![];
    let mut url = s.url(first);
    loop {
        let (status, b) = json_of(s.http.get(&url).send().await.unwrap()).await;
        assert_eq!(status, 200, "{url}: {b}");
        out.extend(
            b["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string()),
        );
        match b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_over_ten_thousand_returns_each_once_while_writes_happen() {
    let s = TestServer::start().await;
    // 10,000 Patients in 10 transactions of 1,000.
    for chunk in 0..10 {
        let entries: Vec<Value> = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                json!({"resource": {"resourceType": "Patient", "id": format!("pg{n:05}"), "gender": "other", "name": [{"family": format!("F{}", n % 7)}]},
                    "request": {"method": "PUT", "url": format!("Patient/pg{n:05}")}})
            })
            .collect();
        let (status, b) = json_of(
            s.send(
                Method::POST,
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{b}");
    }
    let all = walk(&s, "Patient?gender=other&_count=500").await;
    assert_eq!(all.len(), 10_000);
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), 10_000);

    // While paging: new matching resources are created and existing ones updated (still matching)
    // and some others deleted; every original that stays matches is returned exactly once.
    let writer = {
        let http = s.http.clone();
        let base = s.base.clone();
        tokio::spawn(async move {
            for n in 0..300 {
                let new = json!({"resourceType": "Patient", "gender": "other"});
                let r = http
                    .post(format!("{base}/Patient"))
                    .header("content-type", "application/fhir+json")
                    .body(new.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let id = format!("pg{:05}", n * 31 % 10_000);
                let upd = json!({"resourceType": "Patient", "id": id, "gender": "other", "name": [{"family": "updated"}]});
                let r = http
                    .put(format!("{base}/Patient/{id}"))
                    .header("content-type", "application/fhir+json")
                    .body(upd.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    let during = walk(&s, "Patient?gender=other&_count=250").await;
    writer.await.unwrap();
    let unique: HashSet<&String> = during.iter().collect();
    assert_eq!(unique.len(), during.len(), "no id twice");
    for n in 0..10_000 {
        assert!(unique.contains(&format!("pg{n:05}")), "pg{n:05} missing");
    }
    // Backwards from a later page: previous links walk back without gaps.
    let (_, page3) = json_of(
        s.get("Patient?gender=other&_count=100&_after=Patient/pg00299")
            .await,
    )
    .await;
    assert_eq!(
        ids(&page3).iter().next().map(String::as_str),
        Some("pg00300")
    );
    let prev = page3["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "previous")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, page2) = json_of(s.http.get(&prev).send().await.unwrap()).await;
    let p2: Vec<String> = ids(&page2).into_iter().collect();
    assert_eq!(p2.first().map(String::as_str), Some("pg00200"));
    assert_eq!(p2.last().map(String::as_str), Some("pg00299"));
    // _sort pages by offset and still covers everything once when nothing changes.
    let sorted = walk(&s, "Patient?family=F3&_sort=-_id&_count=200").await;
    let expect: Vec<String> = (0..10_000)
        .rev()
        .filter(|n| n % 7 == 3)
        .map(|n| format!("pg{n:05}"))
        .filter(|id| {
            // updated ones have family "updated"
            let n: usize = id[2..].parse().unwrap();
            !(0..300).any(|k| k * 31 % 10_000 == n)
        })
        .collect();
    assert_eq!(sorted, expect);
}

/// Oversized searches: too many values is a 400 that says so (under lenient handling too, since
/// ignoring part of a search answers a different one), also through `_search` with a form body; a
/// long value is simply searched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_searches_are_refused_precisely() {
    let s = TestServer::start().await;
    fixture(&s).await;
    let many: Vec<String> = (0..1500).map(|i| format!("nobody{i}")).collect();
    let q = format!("Patient?_id={}", many.join(","));
    let (code, _, msg) = expect_outcome(s.get(&q).await, 400).await;
    assert_eq!(code, "too-costly");
    assert_eq!(
        msg,
        "the search has 1500 filter values; at most 1000 are allowed in one search (split it into several)"
    );
    let lenient = s
        .http
        .get(s.url(&q))
        .header("prefer", "handling=lenient")
        .send()
        .await
        .unwrap();
    let (code, _, _) = expect_outcome(lenient, 400).await;
    assert_eq!(code, "too-costly");
    let form = s
        .http
        .post(s.url("Patient/_search"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("_id={}", many.join("%2C")))
        .send()
        .await
        .unwrap();
    let (code, _, msg) = expect_outcome(form, 400).await;
    assert_eq!(code, "too-costly", "{msg}");
    // Exactly at the bound it is an ordinary search.
    let q = format!("Patient?_id={}", many[..1000].join(","));
    assert!(found(&s, &q).await.is_empty());

    // A 60 KB value (near the 64 KB a URI may have in the HTTP client) is simply searched.
    let long = format!("Patient?family={}", "长".repeat(60_000 / 9));
    assert!(found(&s, &long).await.is_empty());
}
