//! The common parameters `_text`, `_content`, `_list` and `_contained`/`_containedType`, over
//! real sockets against a real SQLite file: full-text on the narrative (markup stripped, Chinese
//! matched as written) and on all string content, AND of terms and OR of values; entries of a
//! List; contained resources found through their containers or returned alone; and the 400s,
//! located at the parameter, for what is refused.
mod common;

use common::{TestServer, expect_outcome, ids, json_of, put, set};
use serde_json::{Value, json};
use std::collections::BTreeSet;

async fn found(s: &TestServer, q: &str) -> BTreeSet<String> {
    let (status, b) = json_of(s.get(q).await).await;
    assert_eq!(status, 200, "{q}: {b}");
    assert_eq!(b["type"], "searchset", "{q}");
    ids(&b)
}

fn narrative(xhtml: &str) -> Value {
    json!({"status": "generated",
        "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{xhtml}</div>")})
}

/// Conditions with narratives (one Chinese) and notes outside the narrative.
async fn conditions(s: &TestServer) {
    put(s, json!({"resourceType": "Patient", "id": "p1"})).await;
    let condition = |id: &str, text: &str, note: &str| {
        json!({"resourceType": "Condition", "id": id, "text": narrative(text),
            "subject": {"reference": "Patient/p1"},
            "note": [{"text": note}]})
    };
    for c in [
        condition(
            "c1",
            "<p>Type 2 <b>diabetes</b> mellitus, poorly controlled</p>",
            "seen by the endocrinology clinic",
        ),
        condition(
            "c2",
            "<p>Essential <i>hypertension</i></p><table><tr><td>Café-au-lait</td></tr></table>",
            "white coat effect suspected",
        ),
        condition("c3", "<p>患者诊断为高血压，伴有糖尿病。</p>", "随访三个月"),
        condition(
            "c4",
            "<p>Asthma &amp; eczema</p>",
            "diabetes screening negative",
        ),
    ] {
        put(s, c).await;
    }
}

#[tokio::test]
async fn text_searches_the_narrative_without_its_markup() {
    let s = TestServer::start().await;
    conditions(&s).await;
    assert_eq!(found(&s, "Condition?_text=diabetes").await, set(&["c1"]));
    // Case and accents folded; a term matches at a word start.
    assert_eq!(found(&s, "Condition?_text=DIAB").await, set(&["c1"]));
    assert_eq!(found(&s, "Condition?_text=cafe").await, set(&["c2"]));
    assert_eq!(found(&s, "Condition?_text=betes").await, set(&[]));
    // Markup is not text: tag and attribute names are not found.
    assert_eq!(found(&s, "Condition?_text=xmlns").await, set(&[]));
    assert_eq!(found(&s, "Condition?_text=td").await, set(&[]));
    // A character reference is decoded: `&amp;` is a break between words.
    assert_eq!(found(&s, "Condition?_text=eczema").await, set(&["c4"]));
    // Chinese is matched as written, anywhere (no spaces between its words).
    assert_eq!(found(&s, "Condition?_text=高血压").await, set(&["c3"]));
    assert_eq!(found(&s, "Condition?_text=糖尿病").await, set(&["c3"]));
    assert_eq!(found(&s, "Condition?_text=血压").await, set(&["c3"]));
    // Every term must occur (AND), in any order.
    assert_eq!(
        found(&s, "Condition?_text=mellitus%20diabetes").await,
        set(&["c1"])
    );
    assert_eq!(
        found(&s, "Condition?_text=diabetes%20hypertension").await,
        set(&[])
    );
    assert_eq!(
        found(&s, "Condition?_text=高血压%20糖尿病").await,
        set(&["c3"])
    );
    // Commas separate alternatives (OR).
    assert_eq!(
        found(&s, "Condition?_text=diabetes,hypertension").await,
        set(&["c1", "c2"])
    );
    assert_eq!(
        found(&s, "Condition?_text=asthma,高血压").await,
        set(&["c3", "c4"])
    );
    // The narrative only: a note is not in it.
    assert_eq!(found(&s, "Condition?_text=endocrinology").await, set(&[]));
    // Repeated parameters AND, and combine with other parameters.
    assert_eq!(
        found(&s, "Condition?_text=diabetes&_text=poorly").await,
        set(&["c1"])
    );
    assert_eq!(
        found(
            &s,
            "Condition?_text=diabetes,hypertension&subject=Patient/p1"
        )
        .await,
        set(&["c1", "c2"])
    );
    // `:missing` works like on any parameter.
    assert_eq!(found(&s, "Condition?_text:missing=false").await.len(), 4);
    assert_eq!(found(&s, "Patient?_text:missing=true").await, set(&["p1"]));
    // A rewrite replaces what is found.
    put(
        &s,
        json!({"resourceType": "Condition", "id": "c1", "text": narrative("<p>Resolved</p>"),
            "subject": {"reference": "Patient/p1"}}),
    )
    .await;
    assert_eq!(found(&s, "Condition?_text=diabetes").await, set(&[]));
    assert_eq!(found(&s, "Condition?_text=resolved").await, set(&["c1"]));
}

#[tokio::test]
async fn content_searches_every_string_of_the_resource() {
    let s = TestServer::start().await;
    conditions(&s).await;
    // In a note, not in the narrative.
    assert_eq!(
        found(&s, "Condition?_content=endocrinology").await,
        set(&["c1"])
    );
    assert_eq!(found(&s, "Condition?_content=随访").await, set(&["c3"]));
    // The narrative is content too.
    assert_eq!(found(&s, "Condition?_content=mellitus").await, set(&["c1"]));
    // Terms may come from different elements, and all must occur.
    assert_eq!(
        found(&s, "Condition?_content=diabetes%20endocrinology").await,
        set(&["c1"])
    );
    assert_eq!(
        found(&s, "Condition?_content=diabetes").await,
        set(&["c1", "c4"])
    );
    assert_eq!(
        found(&s, "Condition?_content=diabetes%20negative").await,
        set(&["c4"])
    );
    assert_eq!(
        found(&s, "Condition?_content=endocrinology,white").await,
        set(&["c1", "c2"])
    );
    // References and URIs are not content.
    assert_eq!(found(&s, "Condition?_content=p1").await, set(&[]));
    assert_eq!(found(&s, "Condition?_content=w3").await, set(&[]));
}

#[tokio::test]
async fn refused_modifiers_and_values_are_400s_at_the_parameter() {
    let s = TestServer::start().await;
    for (q, code, location, needle) in [
        (
            "Condition?_text:exact=diabetes",
            "invalid",
            "http._text:exact",
            "modifier ':exact' is not supported on '_text'",
        ),
        (
            "Condition?_content:contains=x",
            "invalid",
            "http._content:contains",
            "modifier ':contains' is not supported on '_content'",
        ),
        (
            "Condition?_text=--",
            "invalid",
            "http._text",
            "has no word to search for",
        ),
        (
            "Condition?_sort=_text",
            "not-supported",
            "http._sort",
            "cannot sort by '_text'",
        ),
        (
            "Condition?_list:missing=true",
            "invalid",
            "http._list:missing",
            "modifier ':missing' is not supported on _list",
        ),
        (
            "Condition?_list=$current-problems",
            "not-supported",
            "http._list",
            "functional list '$current-problems' is not supported",
        ),
        (
            "Condition?_list=a/b",
            "invalid",
            "http._list",
            "is not a List id",
        ),
        (
            "Condition?_query=x",
            "not-supported",
            "http._query",
            "'_query' is not supported",
        ),
        (
            "Medication?_contained=maybe",
            "invalid",
            "http._contained",
            "_contained 'maybe' is not true, false or both",
        ),
        (
            "Medication?_containedType=contained",
            "invalid",
            "http._containedType",
            "needs _contained=true",
        ),
        (
            "Medication?_contained=true&_sort=code",
            "not-supported",
            "http._contained",
            "_contained=true is not supported with _sort",
        ),
        (
            "Medication?_contained=both&_id=m1",
            "not-supported",
            "http._contained",
            "_contained=both is not supported with _id",
        ),
        (
            "?_type=Medication,Patient&_contained=true",
            "not-supported",
            "http._contained",
            "on a system search",
        ),
        (
            "Patient/p1/Observation?_contained=true",
            "not-supported",
            "http._contained",
            "compartment search",
        ),
    ] {
        let (c, expression, msg) = expect_outcome(s.get(q).await, 400).await;
        assert_eq!(c, code, "{q}: {msg}");
        assert_eq!(expression.as_deref(), Some(location), "{q}: {msg}");
        assert!(msg.contains(needle), "{q}: {msg}");
    }
}

#[tokio::test]
async fn list_finds_the_entries_of_a_list() {
    let s = TestServer::start().await;
    conditions(&s).await;
    put(
        &s,
        json!({"resourceType": "List", "id": "problems", "status": "current", "mode": "working",
            "entry": [{"item": {"reference": "Condition/c1"}}, {"item": {"reference": "Condition/c3"}},
                {"item": {"reference": "Patient/p1"}}]}),
    )
    .await;
    put(
        &s,
        json!({"resourceType": "List", "id": "other", "status": "current", "mode": "working",
            "entry": [{"item": {"reference": "Condition/c2"}}]}),
    )
    .await;
    assert_eq!(
        found(&s, "Condition?_list=problems").await,
        set(&["c1", "c3"])
    );
    // Only entries of the searched type.
    assert_eq!(found(&s, "Patient?_list=problems").await, set(&["p1"]));
    // OR by comma, AND with other parameters.
    assert_eq!(
        found(&s, "Condition?_list=problems,other").await,
        set(&["c1", "c2", "c3"])
    );
    assert_eq!(
        found(&s, "Condition?_list=problems&_text=高血压").await,
        set(&["c3"])
    );
    assert_eq!(
        found(&s, "Condition?_list=problems&_list=other").await,
        set(&[])
    );
    assert_eq!(found(&s, "Condition?_list=nosuchlist").await, set(&[]));
    // A List's entries change with it, and a deleted List has none.
    put(
        &s,
        json!({"resourceType": "List", "id": "problems", "status": "current", "mode": "working",
            "entry": [{"item": {"reference": "Condition/c4"}}]}),
    )
    .await;
    assert_eq!(found(&s, "Condition?_list=problems").await, set(&["c4"]));
    let r = s.http.delete(s.url("List/problems")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(found(&s, "Condition?_list=problems").await, set(&[]));
}

/// A MedicationRequest with two contained Medications, and a top-level one.
async fn medications(s: &TestServer) {
    let med = |id: &str, code: &str, text: &str| {
        json!({"resourceType": "Medication", "id": id,
            "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}], "text": text}})
    };
    put(s, json!({"resourceType": "Patient", "id": "p1"})).await;
    put(
        s,
        json!({"resourceType": "MedicationRequest", "id": "mr1", "status": "active",
            "intent": "order", "subject": {"reference": "Patient/p1"},
            "contained": [med("m1", "1049502", "阿莫西林胶囊"), med("m2", "197361", "amlodipine")],
            "medicationReference": {"reference": "#m1"},
            "supportingInformation": [{"reference": "#m2"}]}),
    )
    .await;
    put(s, med("top", "1049502", "amoxicillin")).await;
}

fn full_urls(b: &Value) -> BTreeSet<String> {
    b["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["fullUrl"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn contained_resources_are_found_through_their_containers_or_alone() {
    let s = TestServer::start().await;
    medications(&s).await;
    let code = "code=http://www.nlm.nih.gov/research/umls/rxnorm|1049502";
    // By default only top-level resources.
    assert_eq!(
        found(&s, &format!("Medication?{code}")).await,
        set(&["top"])
    );
    assert_eq!(
        found(&s, &format!("Medication?{code}&_contained=false")).await,
        set(&["top"])
    );
    // `true`: the containers of matching contained resources (the default `_containedType`).
    let (status, b) = json_of(s.get(&format!("Medication?{code}&_contained=true")).await).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["total"], 1, "{b}");
    assert_eq!(
        b["entry"][0]["resource"]["resourceType"],
        "MedicationRequest"
    );
    assert_eq!(b["entry"][0]["resource"]["id"], "mr1");
    assert!(
        b["link"][0]["url"]
            .as_str()
            .unwrap()
            .contains("_contained=true"),
        "{b}"
    );
    // `_containedType=contained`: the contained resource alone, addressed in its container.
    let (status, b) = json_of(
        s.get(&format!(
            "Medication?{code}&_contained=true&_containedType=contained"
        ))
        .await,
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["total"], 1, "{b}");
    let m = &b["entry"][0]["resource"];
    assert_eq!(m["resourceType"], "Medication", "{b}");
    assert_eq!(m["id"], "m1", "{b}");
    assert_eq!(m["code"]["text"], "阿莫西林胶囊", "{b}");
    assert_eq!(
        full_urls(&b),
        BTreeSet::from([format!("{}/MedicationRequest/mr1#m1", s.base)])
    );
    // `both`: top-level and contained matches together.
    let (_, b) = json_of(
        s.get(&format!(
            "Medication?{code}&_contained=both&_containedType=contained"
        ))
        .await,
    )
    .await;
    assert_eq!(
        full_urls(&b),
        BTreeSet::from([
            format!("{}/Medication/top", s.base),
            format!("{}/MedicationRequest/mr1#m1", s.base)
        ])
    );
    let (_, b) = json_of(s.get(&format!("Medication?{code}&_contained=both")).await).await;
    assert_eq!(
        full_urls(&b),
        BTreeSet::from([
            format!("{}/Medication/top", s.base),
            format!("{}/MedicationRequest/mr1", s.base)
        ])
    );
    // Without filters: every contained Medication; other parameters apply per contained
    // resource, including full-text.
    assert_eq!(
        found(&s, "Medication?_contained=true&_containedType=contained").await,
        set(&["m1", "m2"])
    );
    assert_eq!(
        found(
            &s,
            "Medication?_contained=true&_containedType=contained&_content=amlodipine"
        )
        .await,
        set(&["m2"])
    );
    assert_eq!(
        found(
            &s,
            "Medication?_contained=true&_containedType=contained&_content=阿莫西林"
        )
        .await,
        set(&["m1"])
    );
    // Paging walks contained keys like any other.
    let (_, b) = json_of(
        s.get("Medication?_contained=true&_containedType=contained&_count=1")
            .await,
    )
    .await;
    let next = b["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .expect("next link")
        .to_string();
    let (status, b2) = json_of(s.http.get(&next).send().await.unwrap()).await;
    assert_eq!(status, 200, "{b2}");
    let mut both = ids(&b);
    both.extend(ids(&b2));
    assert_eq!(both, set(&["m1", "m2"]));
    // A rewrite of the container without the contained resources removes them from search.
    put(
        &s,
        json!({"resourceType": "MedicationRequest", "id": "mr1", "status": "active",
            "intent": "order", "subject": {"reference": "Patient/p1"},
            "medicationReference": {"reference": "Medication/top"}}),
    )
    .await;
    assert_eq!(
        found(&s, "Medication?_contained=true&_containedType=contained").await,
        set(&[])
    );
    assert_eq!(
        found(&s, &format!("Medication?{code}&_contained=both")).await,
        set(&["top"])
    );
}

#[tokio::test]
async fn the_capability_statement_lists_the_common_parameters() {
    let s = TestServer::start().await;
    let (status, cs) = json_of(s.get("metadata").await).await;
    assert_eq!(status, 200);
    let patient = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .expect("Patient")
        .clone();
    let names: BTreeSet<String> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    for n in ["_text", "_content", "_list"] {
        assert!(names.contains(n), "{n} in {names:?}");
    }
    assert!(!names.contains("_query"), "{names:?}");
}
