//! Search through the terminology service and composite parameters, over real sockets against a
//! real SQLite file: token `:in`/`:not-in` (value set expansions), `:above`/`:below` (code system
//! hierarchies by nested concepts and by `parent` properties), and composite parameters matched
//! per repetition (`code-value-quantity`, `component-code-value-quantity`, `combo-...`,
//! `code-value-concept`, `code-value-string`), with their error cases.
mod common;

use common::{TestServer, expect_outcome, ids, json_of, put, set};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const CONDITIONS: &str = "http://example.org/fhir/CodeSystem/huitong-conditions";
const SITES: &str = "http://example.org/fhir/CodeSystem/huitong-sites";
const BIG: &str = "http://example.org/fhir/CodeSystem/huitong-big";
const LOINC: &str = "http://loinc.org";

async fn found(s: &TestServer, q: &str) -> BTreeSet<String> {
    let (status, b) = json_of(s.get(q).await).await;
    assert_eq!(status, 200, "{q}: {b}");
    assert_eq!(b["type"], "searchset", "{q}");
    ids(&b)
}

/// The diagnostics of the 400 a query gets, checked for the issue code.
async fn refused(s: &TestServer, q: &str, code: &str) -> String {
    let (c, _, msg) = expect_outcome(s.get(q).await, 400).await;
    assert_eq!(c, code, "{q}: {msg}");
    msg
}

fn concept(code: &str, children: Vec<Value>) -> Value {
    let mut c = json!({"code": code, "display": code});
    if !children.is_empty() {
        c["concept"] = Value::Array(children);
    }
    c
}

/// Code systems (one nested, one by `parent` properties, one too large to search by) and value
/// sets over them.
async fn terminology(s: &TestServer) {
    put(
        s,
        json!({"resourceType": "CodeSystem", "id": "huitong-conditions", "url": CONDITIONS,
        "status": "active", "content": "complete", "hierarchyMeaning": "is-a",
        "concept": [concept("disease", vec![
            concept("infection", vec![concept("tb", vec![]), concept("flu", vec![])]),
            concept("cardio", vec![concept("hypertension", vec![])]),
        ])]}),
    )
    .await;
    let parent = |code: &str, of: Option<&str>| {
        let mut c = json!({"code": code, "display": code});
        if let Some(p) = of {
            c["property"] = json!([{"code": "parent", "valueCode": p}]);
        }
        c
    };
    put(s, json!({"resourceType": "CodeSystem", "id": "huitong-sites", "url": SITES,
        "status": "active", "content": "complete", "hierarchyMeaning": "part-of",
        "property": [{"code": "parent", "uri": "http://hl7.org/fhir/concept-properties#parent", "type": "code"}],
        "concept": [parent("body", None), parent("thorax", Some("body")), parent("lung", Some("thorax")),
            parent("abdomen", Some("body"))]}))
    .await;
    let many: Vec<Value> = (0..5_001)
        .map(|i| concept(&format!("c{i}"), vec![]))
        .collect();
    put(
        s,
        json!({"resourceType": "CodeSystem", "id": "huitong-big", "url": BIG,
        "status": "active", "content": "complete", "concept": [concept("root", many)]}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "ValueSet", "id": "infections",
        "url": "http://example.org/fhir/ValueSet/infections", "status": "active",
        "compose": {"include": [{"system": CONDITIONS,
            "filter": [{"property": "concept", "op": "is-a", "value": "infection"}]}]}}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "ValueSet", "id": "systolic",
        "url": "http://example.org/fhir/ValueSet/systolic", "status": "active",
        "compose": {"include": [{"system": LOINC, "concept": [{"code": "8480-6"}]}]}}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "ValueSet", "id": "all-loinc",
        "url": "http://example.org/fhir/ValueSet/all-loinc", "status": "active",
        "compose": {"include": [{"system": LOINC}]}}),
    )
    .await;
    put(
        s,
        json!({"resourceType": "ValueSet", "id": "big",
        "url": "http://example.org/fhir/ValueSet/big", "status": "active",
        "compose": {"include": [{"system": BIG}]}}),
    )
    .await;
}

async fn conditions(s: &TestServer) {
    put(s, json!({"resourceType": "Patient", "id": "p1"})).await;
    let condition = |id: &str, code: Value, site: Option<&str>| {
        let mut c = json!({"resourceType": "Condition", "id": id, "code": code,
            "subject": {"reference": "Patient/p1"}});
        if let Some(site) = site {
            c["bodySite"] = json!([{"coding": [{"system": SITES, "code": site}]}]);
        }
        c
    };
    let coded = |system: &str, code: &str| json!({"coding": [{"system": system, "code": code}]});
    for c in [
        condition("c1", coded(CONDITIONS, "tb"), Some("lung")),
        condition("c2", coded(CONDITIONS, "flu"), None),
        condition("c3", coded(CONDITIONS, "hypertension"), Some("thorax")),
        condition("c4", coded(CONDITIONS, "disease"), Some("abdomen")),
        condition("c5", json!({"text": "肺结核"}), None),
        // The same code in another system is not the same concept.
        condition("c6", coded("http://example.org/other", "tb"), None),
    ] {
        put(s, c).await;
    }
}

/// `:in` matches any code of the value set's expansion; `:not-in` is its complement (resources
/// without any code of the parameter in the set, those without a code included).
#[tokio::test]
async fn token_in_and_not_in_go_through_value_set_expansions() {
    let s = TestServer::start().await;
    terminology(&s).await;
    conditions(&s).await;
    let vs = "http://example.org/fhir/ValueSet/infections";
    assert_eq!(
        found(&s, &format!("Condition?code:in={vs}")).await,
        set(&["c1", "c2"])
    );
    assert_eq!(
        found(&s, &format!("Condition?code:not-in={vs}")).await,
        set(&["c3", "c4", "c5", "c6"])
    );
    // OR within a parameter, AND across parameters.
    assert_eq!(
        found(
            &s,
            &format!("Condition?code:in={vs},http://example.org/fhir/ValueSet/systolic")
        )
        .await,
        set(&["c1", "c2"])
    );
    assert_eq!(
        found(
            &s,
            &format!("Condition?code:not-in={vs}&body-site={SITES}|thorax")
        )
        .await,
        set(&["c3"])
    );
    // The implicit value set of a whole code system.
    assert_eq!(
        found(&s, &format!("Condition?code:in={CONDITIONS}?fhir_vs")).await,
        set(&["c1", "c2", "c3", "c4"])
    );
    // A code that joins the value set's code system later is found at once (expansions are
    // cached per registry generation, never stale).
    put(&s, json!({"resourceType": "CodeSystem", "id": "huitong-conditions", "url": CONDITIONS,
        "status": "active", "content": "complete", "hierarchyMeaning": "is-a",
        "concept": [concept("disease", vec![
            concept("infection", vec![concept("tb", vec![]), concept("flu", vec![]), concept("hypertension", vec![])]),
        ])]}))
    .await;
    assert_eq!(
        found(&s, &format!("Condition?code:in={vs}")).await,
        set(&["c1", "c2", "c3"])
    );
    // Through a chain too.
    put(
        &s,
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "diagnosis": [{"condition": {"reference": "Condition/c1"}}]}),
    )
    .await;
    assert_eq!(
        found(&s, &format!("Encounter?diagnosis:Condition.code:in={vs}")).await,
        set(&["e1"])
    );
    s.stop().await;
}

/// Value sets that cannot be searched by are the client's 400, naming the parameter: unknown,
/// open (all of LOINC cannot be listed here) or too large (refused, never truncated).
#[tokio::test]
async fn token_in_refuses_unknown_open_and_oversized_value_sets() {
    let s = TestServer::start().await;
    terminology(&s).await;
    conditions(&s).await;
    let vs = "http://example.org/fhir/ValueSet";
    for (param, value_set, code, needle) in [
        ("code:in", "nope", "invalid", "ValueSet/nope' is not known"),
        (
            "code:not-in",
            "nope",
            "invalid",
            "ValueSet/nope' is not known",
        ),
        ("code:in", "all-loinc", "not-supported", "http://loinc.org"),
        ("code:in", "big", "too-costly", "5002 codes"),
    ] {
        let q = format!("Condition?{param}={vs}/{value_set}");
        let msg = refused(&s, &q, code).await;
        assert!(msg.contains(needle), "{q}: {msg}");
        assert!(
            msg.contains(&format!("'{param}'")),
            "{q} names the parameter: {msg}"
        );
    }
    // Lenient handling ignores the parameter and says so; the other filters still apply.
    let (status, b) = json_of(
        s.http
            .get(s.url(&format!(
                "Condition?code:in=http://example.org/fhir/ValueSet/nope&body-site={SITES}|lung"
            )))
            .header("prefer", "handling=lenient")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(ids(&b), set(&["c1"]));
    assert!(b.to_string().contains("ValueSet/nope"), "{b}");
    s.stop().await;
}

/// `:below` is the code and its descendants, `:above` the code and its ancestors, in code
/// systems held here: nested `concept`s and `parent` properties alike.
#[tokio::test]
async fn token_above_and_below_follow_code_system_hierarchies() {
    let s = TestServer::start().await;
    terminology(&s).await;
    conditions(&s).await;
    for (q, want) in [
        (
            format!("code:below={CONDITIONS}|infection"),
            vec!["c1", "c2"],
        ),
        (
            format!("code:below={CONDITIONS}|disease"),
            vec!["c1", "c2", "c3", "c4"],
        ),
        (format!("code:below={CONDITIONS}|tb"), vec!["c1"]),
        (format!("code:above={CONDITIONS}|tb"), vec!["c1", "c4"]),
        (format!("code:above={CONDITIONS}|cardio"), vec!["c4"]),
        (
            format!("code:below={CONDITIONS}|infection,{CONDITIONS}|hypertension"),
            vec!["c1", "c2", "c3"],
        ),
        (format!("body-site:below={SITES}|thorax"), vec!["c1", "c3"]),
        (
            format!("body-site:below={SITES}|body"),
            vec!["c1", "c3", "c4"],
        ),
        (format!("body-site:above={SITES}|lung"), vec!["c1", "c3"]),
        (format!("body-site:above={SITES}|abdomen"), vec!["c4"]),
    ] {
        assert_eq!(
            found(&s, &format!("Condition?{q}")).await,
            set(&want),
            "{q}"
        );
    }
    for (q, code, needle) in [
        ("code:below=tb".to_string(), "invalid", "system|code"),
        (
            "code:below=http://example.org/unknown|x".to_string(),
            "invalid",
            "not held",
        ),
        (
            format!("code:above={CONDITIONS}|nothing"),
            "invalid",
            "'nothing' is not in",
        ),
        (format!("code:below={BIG}|root"), "too-costly", "5002 codes"),
    ] {
        let msg = refused(&s, &format!("Condition?{q}"), code).await;
        assert!(msg.contains(needle), "{q}: {msg}");
        assert!(msg.contains(&q[..10]), "{q} names the parameter: {msg}");
    }
    s.stop().await;
}

async fn observations(s: &TestServer) {
    put(s, json!({"resourceType": "Patient", "id": "p1"})).await;
    let quantity = |v: f64, unit: &str| json!({"value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit});
    let loinc = |code: &str| json!({"coding": [{"system": LOINC, "code": code}]});
    let obs = |id: &str, code: Value| {
        json!({"resourceType": "Observation", "id": id, "status": "final", "code": code,
            "subject": {"reference": "Patient/p1"}})
    };
    let mut o1 = obs("o1", loinc("8480-6"));
    o1["valueQuantity"] = quantity(120.0, "mm[Hg]");
    let mut o2 = obs("o2", loinc("8480-6"));
    o2["valueQuantity"] = quantity(90.0, "mm[Hg]");
    // A panel: systolic 95 and diastolic 130 (an implausible reading, so that a match on
    // "systolic > 100" could only come from mixing the two components).
    let mut o3 = obs("o3", loinc("85354-9"));
    o3["component"] = json!([
        {"code": loinc("8480-6"), "valueQuantity": quantity(95.0, "mm[Hg]")},
        {"code": loinc("8462-4"), "valueQuantity": quantity(130.0, "mm[Hg]")}
    ]);
    let mut o4 = obs("o4", loinc("883-9"));
    o4["valueCodeableConcept"] =
        json!({"coding": [{"system": "http://snomed.info/sct", "code": "112144000"}]});
    let note = json!({"coding": [{"system": "http://example.org/lab", "code": "note"}]});
    let mut o5 = obs("o5", note.clone());
    o5["valueString"] = json!("阳性");
    let mut o6 = obs("o6", note);
    o6["valueString"] = json!("US$5");
    for o in [o1, o2, o3, o4, o5, o6] {
        put(s, o).await;
    }
}

/// Composite parameters match both parts within one repetition of the base element, with the
/// value part's own prefixes and units.
#[tokio::test]
async fn composites_match_within_one_repetition() {
    let s = TestServer::start().await;
    observations(&s).await;
    let sys = "http://loinc.org|8480-6";
    let ucum = "http://unitsofmeasure.org";
    for (q, want) in [
        (format!("code-value-quantity={sys}$gt100"), vec!["o1"]),
        (format!("code-value-quantity={sys}$gt80"), vec!["o1", "o2"]),
        ("code-value-quantity=8480-6$lt100".to_string(), vec!["o2"]),
        // `|code` is "no system": these codes all have one.
        ("code-value-quantity=|8480-6$lt100".to_string(), vec![]),
        (
            format!("code-value-quantity={sys}$120|{ucum}|mm%5BHg%5D"),
            vec!["o1"],
        ),
        (format!("code-value-quantity={sys}$120|{ucum}|kPa"), vec![]),
        (
            format!("code-value-quantity={sys}$gt100,{sys}$lt95"),
            vec!["o1", "o2"],
        ),
        // Systolic 95 is not above 100; the diastolic 130 of the same panel does not count.
        (format!("component-code-value-quantity={sys}$gt100"), vec![]),
        (
            format!("component-code-value-quantity={sys}$gt90"),
            vec!["o3"],
        ),
        (
            "component-code-value-quantity=http://loinc.org|8462-4$gt100".to_string(),
            vec!["o3"],
        ),
        // The panel itself has no value.
        (
            "code-value-quantity=http://loinc.org|85354-9$gt0".to_string(),
            vec![],
        ),
        // combo: the Observation's own code and value, or any component's.
        (
            format!("combo-code-value-quantity={sys}$gt90"),
            vec!["o1", "o3"],
        ),
        (format!("combo-code-value-quantity={sys}$gt100"), vec!["o1"]),
        (
            "code-value-concept=http://loinc.org|883-9$http://snomed.info/sct|112144000"
                .to_string(),
            vec!["o4"],
        ),
        (
            "code-value-concept=http://loinc.org|883-9$http://snomed.info/sct|278149003"
                .to_string(),
            vec![],
        ),
        (
            "code-value-string=http://example.org/lab|note$阳".to_string(),
            vec!["o5"],
        ),
        // An escaped `$` belongs to the value.
        (
            "code-value-string=http://example.org/lab|note$US%5C$5".to_string(),
            vec!["o6"],
        ),
        // AND of two composites on one resource.
        (
            format!(
                "component-code-value-quantity={sys}$gt90&component-code-value-quantity=http://loinc.org|8462-4$gt120"
            ),
            vec!["o3"],
        ),
    ] {
        assert_eq!(
            found(&s, &format!("Observation?{q}")).await,
            set(&want),
            "{q}"
        );
    }
    // A value set enumerating codes of a system too large to ship is still a list of codes.
    put(
        &s,
        json!({"resourceType": "ValueSet", "id": "systolic",
        "url": "http://example.org/fhir/ValueSet/systolic", "status": "active",
        "compose": {"include": [{"system": LOINC, "concept": [{"code": "8480-6"}]}]}}),
    )
    .await;
    let vs = "http://example.org/fhir/ValueSet/systolic";
    assert_eq!(
        found(&s, &format!("Observation?code:in={vs}")).await,
        set(&["o1", "o2"])
    );
    assert_eq!(
        found(&s, &format!("Observation?combo-code:in={vs}")).await,
        set(&["o1", "o2", "o3"])
    );
    // An update replaces the tuples of the old version.
    let mut o1 = json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 80, "unit": "mm[Hg]", "system": ucum, "code": "mm[Hg]"}});
    put(&s, o1.clone()).await;
    assert_eq!(
        found(&s, &format!("Observation?code-value-quantity={sys}$gt100")).await,
        set(&[])
    );
    assert_eq!(
        found(&s, &format!("Observation?code-value-quantity={sys}$lt85")).await,
        set(&["o1"])
    );
    o1["code"] = json!({"coding": [{"system": LOINC, "code": "8462-4"}]});
    put(&s, o1).await;
    assert_eq!(
        found(&s, &format!("Observation?code-value-quantity={sys}$lt85")).await,
        set(&[])
    );
    s.stop().await;
}

/// Malformed composite values, modifiers on composites and composites that cannot be indexed
/// are 400s that say why.
#[tokio::test]
async fn composite_errors_are_named() {
    let s = TestServer::start().await;
    observations(&s).await;
    for (q, code, needle) in [
        ("Observation?code-value-quantity=8480-6", "invalid", "'$'"),
        (
            "Observation?code-value-quantity=8480-6$abc",
            "invalid",
            "not number|system|code",
        ),
        (
            "Observation?code-value-quantity=8480-6$1$2",
            "invalid",
            "exactly two parts",
        ),
        (
            "Observation?code-value-quantity=http://loinc.org|$gt1",
            "invalid",
            "needs a code",
        ),
        (
            "Observation?code-value-quantity:missing=true",
            "not-supported",
            "':missing'",
        ),
        (
            "Observation?code-value-quantity:exact=8480-6$1",
            "invalid",
            "':exact'",
        ),
        (
            "MolecularSequence?chromosome-variant-coordinate=1$gt10",
            "not-supported",
            "cannot be indexed",
        ),
    ] {
        let msg = refused(&s, q, code).await;
        assert!(msg.contains(needle), "{q}: {msg}");
    }
    // The CapabilityStatement lists the composites search supports, and only those.
    let (_, cap) = json_of(s.get("metadata").await).await;
    let params = |ty: &str| -> BTreeSet<String> {
        cap["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == ty)
            .unwrap()["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let obs = params("Observation");
    for p in [
        "code-value-quantity",
        "component-code-value-quantity",
        "combo-code-value-quantity",
        "code-value-concept",
    ] {
        assert!(obs.contains(p), "{p} in {obs:?}");
    }
    assert!(!params("MolecularSequence").contains("chromosome-variant-coordinate"));
    s.stop().await;
}
