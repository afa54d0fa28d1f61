//! The shapes the planner gives AND searches (one row for the bounds of a one-valued date
//! parameter, the most selective term driving and the others probed per candidate, totals
//! counted from the index) answer exactly what the AND of each term on its own answers: every
//! compound search here is checked against the intersection of its terms searched one at a time
//! (a single term keeps the plain set shape), and every total against the matches counted by
//! walking the pages. Real server, real SQLite file.
mod common;

use common::{TestServer, ids, json_of, put, set};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;

async fn search(s: &TestServer, q: &str) -> Value {
    let (status, b) = json_of(s.get(q).await).await;
    assert_eq!(status, 200, "{q}: {b}");
    assert_eq!(b["type"], "searchset", "{q}");
    b
}

/// Every match of `q` (one large page; the fixture is small).
async fn found(s: &TestServer, q: &str) -> BTreeSet<String> {
    let b = search(s, &format!("{q}&_count=1000")).await;
    assert!(
        !b["link"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["relation"] == "next"),
        "{q}: more than one page"
    );
    ids(&b)
}

/// `q` (a type and its `&`-joined terms) answers the intersection of its terms searched alone,
/// that answer is `expected`, and its accurate total is the number of matches.
async fn check(s: &TestServer, q: &str, expected: &[&str]) {
    let (ty, terms) = q.split_once('?').expect("a query");
    let mut each: Option<BTreeSet<String>> = None;
    for term in terms.split('&') {
        let alone = found(s, &format!("{ty}?{term}")).await;
        each = Some(match each {
            None => alone,
            Some(e) => e.intersection(&alone).cloned().collect(),
        });
    }
    let all = found(s, q).await;
    assert_eq!(
        Some(&all),
        each.as_ref(),
        "{q} differs from its terms alone"
    );
    assert_eq!(all, set(expected), "{q}");
    let total = search(s, &format!("{q}&_total=accurate&_count=1")).await["total"].clone();
    assert_eq!(total, json!(all.len()), "{q}: total");
}

fn observation(id: &str, subject: &str, code: &str, date: Option<&str>) -> Value {
    let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{subject}")}});
    if let Some(d) = date {
        o["effectiveDateTime"] = json!(d);
    }
    o
}

async fn fixture(s: &TestServer) {
    for (id, gender, birth) in [
        ("p1", "male", Some("1990-03-07")),
        ("p2", "female", Some("1985")),
        ("p3", "male", None),
    ] {
        let mut p = json!({"resourceType": "Patient", "id": id, "gender": gender});
        if let Some(b) = birth {
            p["birthDate"] = json!(b);
        }
        put(s, p).await;
    }
    for (id, subject, code, date) in [
        ("o1", "p1", "8310-5", Some("2015-01-01T08:30:00Z")),
        ("o2", "p1", "8310-5", Some("2015-01-31T23:59:59Z")),
        ("o3", "p1", "8867-4", Some("2015-02-01T00:00:00Z")),
        ("o4", "p2", "8310-5", Some("2014-12-31")),
        ("o5", "p2", "8310-5", Some("2015-01")),
        ("o6", "p3", "8310-5", None),
        ("o7", "p3", "8867-4", Some("2015-01-15")),
        ("o8", "p2", "8867-4", Some("2015")),
    ] {
        put(s, observation(id, subject, code, date)).await;
    }
    // A period spanning the whole month and more, which only its high end puts after the start.
    let mut o9 = observation("o9", "p1", "8310-5", None);
    o9["effectivePeriod"] = json!({"start": "2014-06-01", "end": "2015-01-10"});
    put(s, o9).await;
    // A contained Observation with the same code: never a top-level match nor counted.
    let mut o10 = observation("o10", "p1", "8867-4", Some("2016-01-01"));
    o10["contained"] = json!([{"resourceType": "Observation", "id": "inner", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "effectiveDateTime": "2015-01-20"}]);
    o10["hasMember"] = json!([{"reference": "#inner"}]);
    put(s, o10).await;
    // Deleted: its rows are gone, and it is neither found nor counted.
    put(s, observation("o11", "p1", "8310-5", Some("2015-01-05"))).await;
    let resp = s.send(Method::DELETE, "Observation/o11", &json!({})).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    // Encounter.location.period repeats: each bound may be met by a different location.
    put(
        s,
        json!({"resourceType": "Location", "id": "l1", "name": "Ward 1"}),
    )
    .await;
    for (id, periods) in [
        (
            "e1",
            vec![("2020-01-01", "2020-01-02"), ("2020-03-01", "2020-03-02")],
        ),
        ("e2", vec![("2020-02-05", "2020-02-06")]),
        ("e3", vec![("2019-01-01", "2019-01-02")]),
    ] {
        let locations: Vec<Value> = periods
            .iter()
            .map(|(a, b)| json!({"location": {"reference": "Location/l1"}, "period": {"start": a, "end": b}}))
            .collect();
        put(
            s,
            json!({"resourceType": "Encounter", "id": id, "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/p1"}, "location": locations}),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn and_searches_answer_the_intersection_of_their_terms() {
    let s = TestServer::start().await;
    fixture(&s).await;
    let cases: &[(&str, &[&str])] = &[
        // The bounds of a one-valued date on one row: the month, with precision ranges at both
        // ends (`2015-01` and `2015` overlap it and are in it, `2014-12-31` is not).
        (
            "Observation?date=ge2015-01-01&date=lt2015-02-01",
            &["o1", "o2", "o5", "o7", "o8", "o9"],
        ),
        (
            "Observation?date=gt2015-01-01&date=le2015-01-31",
            &["o2", "o5", "o7", "o8", "o9"],
        ),
        (
            "Observation?date=ge2015-01-10&date=lt2015-01-20",
            &["o5", "o7", "o8"],
        ),
        (
            "Observation?date=sa2014-12-31&date=eb2015-02-01",
            &["o1", "o2", "o5", "o7"],
        ),
        (
            "Observation?date=ne2015-01-15&date=ge2015-01-01&date=lt2015-02-01",
            &["o1", "o2", "o5", "o8", "o9"],
        ),
        (
            "Observation?date=ap2015-01-15&date=lt2015-01-15",
            &["o1", "o4", "o5", "o8", "o9"],
        ),
        ("Observation?date=ge2016-01-01&date=lt2015-01-01", &[]),
        // Missing values: no date, no match of a date bound.
        (
            "Observation?code=http://loinc.org|8310-5&date=ge2015-01-01&date=lt2015-02-01",
            &["o1", "o2", "o5", "o9"],
        ),
        ("Observation?code=8310-5&date:missing=true", &["o6"]),
        ("Observation?date:missing=false&subject=Patient/p3", &["o7"]),
        // Driven by the subject, the others probed.
        (
            "Observation?subject=Patient/p1&code=8310-5",
            &["o1", "o2", "o9"],
        ),
        (
            "Observation?subject=Patient/p1&date=ge2015-01-01&date=lt2015-02-01",
            &["o1", "o2", "o9"],
        ),
        (
            "Observation?code=8310-5&subject=Patient/p2&date=lt2015-01-15",
            &["o4", "o5"],
        ),
        (
            "Observation?code=8310-5,8867-4&subject=Patient/p3",
            &["o6", "o7"],
        ),
        // :not, probed as NOT EXISTS.
        (
            "Observation?subject=Patient/p1&code:not=8310-5",
            &["o3", "o10"],
        ),
        (
            "Observation?code:not=8867-4&date=ge2015-01-01&date=lt2015-02-01",
            &["o1", "o2", "o5", "o9"],
        ),
        ("Patient?gender:not=male&birthdate=lt2000", &["p2"]),
        ("Patient?gender=male&birthdate:missing=true", &["p3"]),
        // Chains and _has, probed and driving.
        (
            "Observation?subject.gender=male&code=8867-4",
            &["o3", "o7", "o10"],
        ),
        (
            "Observation?subject:Patient.gender=female&date=ge2015-01-01&date=lt2015-02-01",
            &["o5", "o8"],
        ),
        (
            "Observation?subject.birthdate=ge1980&subject.birthdate=lt1989&code=8310-5",
            &["o4", "o5"],
        ),
        (
            "Patient?_has:Observation:subject:code=8867-4&gender=male",
            &["p1", "p3"],
        ),
        (
            "Patient?gender=female&_has:Observation:subject:date=lt2015-01-01",
            &["p2"],
        ),
        // A repeating date keeps FHIR's AND: each bound may be met by another location.
        (
            "Encounter?location-period=ge2020-02-01&location-period=lt2020-02-15",
            &["e1", "e2"],
        ),
        (
            "Encounter?location-period=ge2020-01-01&location-period=lt2020-01-05",
            &["e1"],
        ),
        (
            "Encounter?location-period=gt2019-06-01&subject=Patient/p1",
            &["e1", "e2"],
        ),
    ];
    for (q, expected) in cases {
        check(&s, q, expected).await;
    }
}

/// A total of one term over its own rows is counted from the index: contained resources and
/// deleted ones are not in it, several rows of one resource count once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_counted_from_the_index_are_the_matches() {
    let s = TestServer::start().await;
    fixture(&s).await;
    for q in [
        "Observation?code=http://loinc.org|8310-5",
        "Observation?code=8310-5,8867-4",
        "Observation?subject=Patient/p1",
        "Observation?date=lt2015-02-01",
        "Observation?subject.gender=male",
        "Encounter?location-period=ge2019-06-01",
        "Patient?gender:not=male",
        "Patient?_has:Observation:subject:code=8867-4",
    ] {
        let all = found(&s, q).await;
        let b = search(&s, &format!("{q}&_total=accurate&_count=1")).await;
        assert_eq!(b["total"], json!(all.len()), "{q}: {all:?}");
    }
    assert_eq!(
        found(&s, "Observation?code=8310-5").await,
        set(&["o1", "o2", "o4", "o5", "o6", "o9"])
    );
    // The contained one is found where it is asked for.
    let inner = search(
        &s,
        "Observation?code=8310-5&_contained=true&_total=accurate",
    )
    .await;
    assert_eq!(inner["total"], 1, "{inner}");
}

/// `$reindex` over more than one page of a type (pages are read and extracted while the writer
/// writes the one before) rebuilds every resource's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_every_page() {
    let s = TestServer::start().await;
    let n: u64 = 1_203;
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            json!({"request": {"method": "PUT", "url": format!("Patient/pt{i:05}")},
                "resource": {"resourceType": "Patient", "id": format!("pt{i:05}"),
                    "address": [{"city": if i % 3 == 0 { "上海" } else { "北京" }}]}})
        })
        .collect();
    let resp = s
        .send(
            Method::POST,
            "",
            &json!({"resourceType": "Bundle", "type": "batch", "entry": entries}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    put(&s, json!({"resourceType": "SearchParameter", "id": "city", "url": "http://example.org/SearchParameter/city",
        "name": "city", "status": "active", "description": "City", "code": "town",
        "base": ["Patient"], "type": "string", "expression": "Patient.address.city"}))
    .await;
    let resp = s
        .send(
            Method::POST,
            "Patient/$reindex",
            &json!({"resourceType": "Parameters"}),
        )
        .await;
    let (status, out) = json_of(resp).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["parameter"][0]["valueInteger"], n, "{out}");
    let b = search(&s, "Patient?town=上海&_total=accurate&_count=1").await;
    assert_eq!(b["total"], json!(n.div_ceil(3)), "{b}");
    let b = search(&s, "Patient?town=北京&_total=accurate&_count=1").await;
    assert_eq!(b["total"], json!(n - n.div_ceil(3)), "{b}");
    // Core parameters were rebuilt too (the same rows as the writes made).
    let b = search(&s, "Patient?address-city=上海&_total=accurate&_count=1").await;
    assert_eq!(b["total"], json!(n.div_ceil(3)), "{b}");
}
