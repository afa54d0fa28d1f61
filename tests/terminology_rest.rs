//! The terminology operations over real sockets: `$expand`, `$validate-code`, `$lookup`,
//! `$subsumes`, `$translate`, their parameters and their error statuses.
mod common;

use common::{TestServer, expect_outcome, json_of};
use reqwest::Method;
use serde_json::{Value, json};

const CS: &str = "http://example.org/cs/colour";

fn code_system() -> Value {
    json!({
        "resourceType": "CodeSystem", "url": CS, "version": "1.0", "name": "Colour", "status": "active",
        "content": "complete", "caseSensitive": true,
        "concept": [
            {"code": "warm", "display": "Warm colours", "concept": [
                {"code": "red", "display": "Red", "designation": [{"language": "zh", "value": "红色"}]},
                {"code": "orange", "display": "Orange"}
            ]},
            {"code": "cool", "display": "Cool colours", "concept": [{"code": "blue", "display": "Blue"}]}
        ]
    })
}

fn value_set(compose: Value) -> Value {
    json!({"resourceType": "ValueSet", "url": "http://example.org/vs/colours", "version": "1", "status": "active", "compose": compose})
}

fn params(list: Value) -> Value {
    json!({"resourceType": "Parameters", "parameter": list})
}

fn tx(r: Value) -> Value {
    json!({"name": "tx-resource", "resource": r})
}

fn get<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

fn codes(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v["expansion"]["contains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["code"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn expand_with_filter_paging_and_core_value_sets() {
    let s = TestServer::start().await;
    let warm = value_set(
        json!({"include": [{"system": CS, "filter": [{"property": "concept", "op": "is-a", "value": "warm"}]}]}),
    );
    let body = params(json!([{"name": "valueSet", "resource": warm}, tx(code_system())]));
    let (status, v) = json_of(s.send(Method::POST, "ValueSet/$expand", &body).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(codes(&v), ["orange", "red", "warm"]);
    assert_eq!(v["expansion"]["total"], 3);
    assert_eq!(
        v["expansion"]["parameter"][0]["valueUri"],
        format!("{CS}|1.0")
    );

    // Text filter matches code or display, any case; then paging over the filtered list.
    let body = params(json!([
        {"name": "valueSet", "resource": value_set(json!({"include": [{"system": CS}]}))},
        {"name": "filter", "valueString": "COLOURS"}, tx(code_system())
    ]));
    let (_, v) = json_of(s.send(Method::POST, "ValueSet/$expand", &body).await).await;
    assert_eq!(codes(&v), ["cool", "warm"]);
    let body = params(json!([
        {"name": "valueSet", "resource": value_set(json!({"include": [{"system": CS}]}))},
        {"name": "count", "valueInteger": 2}, {"name": "offset", "valueInteger": 1}, tx(code_system())
    ]));
    let (_, v) = json_of(s.send(Method::POST, "ValueSet/$expand", &body).await).await;
    assert_eq!(v["expansion"]["total"], 5);
    assert_eq!(v["expansion"]["contains"].as_array().map(Vec::len), Some(2));

    // A core value set by url over GET, and by id at instance level.
    let (status, v) = json_of(
        s.get("ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/administrative-gender")
            .await,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(codes(&v), ["female", "male", "other", "unknown"]);
    let (status, v) = json_of(
        s.get("ValueSet/administrative-gender/$expand?filter=fem")
            .await,
    )
    .await;
    assert_eq!((status, codes(&v)), (200, vec!["female".to_string()]));

    // Designations on request.
    let body = params(json!([
        {"name": "valueSet", "resource": value_set(json!({"include": [{"system": CS, "concept": [{"code": "red"}]}]}))},
        {"name": "includeDesignations", "valueBoolean": true}, tx(code_system())
    ]));
    let (_, v) = json_of(s.send(Method::POST, "ValueSet/$expand", &body).await).await;
    assert_eq!(
        v["expansion"]["contains"][0]["designation"][0]["value"],
        "红色"
    );
    s.stop().await;
}

#[tokio::test]
async fn expand_errors_have_the_right_status() {
    let s = TestServer::start().await;
    // Unknown value set: 404.
    expect_outcome(
        s.get("ValueSet/$expand?url=http://example.org/vs/none")
            .await,
        404,
    )
    .await;
    // Unknown parameter: 400.
    let (code, _, msg) = expect_outcome(
        s.get("ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/administrative-gender&colour=red")
            .await,
        400,
    )
    .await;
    assert_eq!(code, "not-supported");
    assert!(msg.contains("colour"), "{msg}");
    // No value set at all, or a bad count: 400.
    expect_outcome(s.get("ValueSet/$expand").await, 400).await;
    expect_outcome(
        s.get("ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/administrative-gender&count=-1")
            .await,
        400,
    )
    .await;
    // A value set that includes itself: 422, naming the cycle.
    let a = json!({"resourceType": "ValueSet", "url": "http://example.org/vs/a", "status": "active",
        "compose": {"include": [{"valueSet": ["http://example.org/vs/b"]}]}});
    let b = json!({"resourceType": "ValueSet", "url": "http://example.org/vs/b", "status": "active",
        "compose": {"include": [{"valueSet": ["http://example.org/vs/a"]}]}});
    let body =
        params(json!([{"name": "url", "valueUri": "http://example.org/vs/a"}, tx(a), tx(b)]));
    let (code, _, msg) =
        expect_outcome(s.send(Method::POST, "ValueSet/$expand", &body).await, 422).await;
    assert_eq!(code, "processing");
    assert!(msg.contains("cyclic"), "{msg}");
    // All of SNOMED CT cannot be listed: 422.
    let body = params(
        json!([{"name": "valueSet", "resource": value_set(json!({"include": [{"system": "http://snomed.info/sct"}]}))}]),
    );
    expect_outcome(s.send(Method::POST, "ValueSet/$expand", &body).await, 422).await;
    // Instance of a value set that does not exist: 404.
    expect_outcome(s.get("ValueSet/nope/$expand").await, 404).await;
    s.stop().await;
}

#[tokio::test]
async fn validate_code_value_set_and_code_system_forms() {
    let s = TestServer::start().await;
    let vs = value_set(json!({"include": [{"system": CS}]}));
    let call = |extra: Value| {
        let mut list = vec![
            json!({"name": "valueSet", "resource": vs.clone()}),
            tx(code_system()),
        ];
        list.extend(extra.as_array().cloned().unwrap_or_default());
        params(Value::Array(list))
    };
    let (status, v) = json_of(
        s.send(Method::POST, "ValueSet/$validate-code", &call(json!([
            {"name": "system", "valueUri": CS}, {"name": "code", "valueCode": "red"}, {"name": "display", "valueString": "red"}
        ])))
        .await,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(get(&v, "result")["valueBoolean"], true);
    assert_eq!(get(&v, "display")["valueString"], "Red");

    // Wrong display: false, and the message names the right one.
    let (_, v) = json_of(
        s.send(Method::POST, "ValueSet/$validate-code", &call(json!([
            {"name": "coding", "valueCoding": {"system": CS, "code": "red", "display": "Crimson"}}
        ])))
        .await,
    )
    .await;
    assert_eq!(get(&v, "result")["valueBoolean"], false);
    assert!(
        get(&v, "message")["valueString"]
            .as_str()
            .unwrap_or("")
            .contains("'Red'"),
        "{v}"
    );
    // ... unless display validation is lenient.
    let (_, v) = json_of(
        s.send(Method::POST, "ValueSet/$validate-code", &call(json!([
            {"name": "coding", "valueCoding": {"system": CS, "code": "red", "display": "Crimson"}},
            {"name": "lenient-display-validation", "valueBoolean": true}
        ])))
        .await,
    )
    .await;
    assert_eq!(get(&v, "result")["valueBoolean"], true);

    // A CodeableConcept is valid when one coding is.
    let (_, v) = json_of(
        s.send(
            Method::POST,
            "ValueSet/$validate-code",
            &call(json!([
                {"name": "codeableConcept", "valueCodeableConcept": {"coding": [
                    {"system": "http://other", "code": "x"}, {"system": CS, "code": "blue"}]}}
            ])),
        )
        .await,
    )
    .await;
    assert_eq!(get(&v, "result")["valueBoolean"], true);
    assert_eq!(get(&v, "code")["valueCode"], "blue");

    // Not in the value set.
    let (_, v) = json_of(
        s.send(
            Method::POST,
            "ValueSet/$validate-code",
            &call(json!([
                {"name": "system", "valueUri": CS}, {"name": "code", "valueCode": "green"}
            ])),
        )
        .await,
    )
    .await;
    assert_eq!(get(&v, "result")["valueBoolean"], false);

    // Core value set over GET.
    let (_, v) = json_of(s.get("ValueSet/$validate-code?url=http://hl7.org/fhir/ValueSet/administrative-gender&system=http://hl7.org/fhir/administrative-gender&code=female").await).await;
    assert_eq!(get(&v, "result")["valueBoolean"], true);
    // UCUM by grammar.
    let (_, v) = json_of(
        s.get("CodeSystem/$validate-code?url=http://unitsofmeasure.org&code=mg/dL")
            .await,
    )
    .await;
    assert_eq!(get(&v, "result")["valueBoolean"], true);
    let (_, v) = json_of(
        s.get("CodeSystem/$validate-code?url=http://unitsofmeasure.org&code=mg//dL")
            .await,
    )
    .await;
    assert_eq!(get(&v, "result")["valueBoolean"], false);

    // CodeSystem form.
    let body = params(
        json!([{"name": "url", "valueUri": CS}, {"name": "code", "valueCode": "orange"}, tx(code_system())]),
    );
    let (_, v) = json_of(
        s.send(Method::POST, "CodeSystem/$validate-code", &body)
            .await,
    )
    .await;
    assert_eq!(get(&v, "result")["valueBoolean"], true);
    assert_eq!(get(&v, "version")["valueString"], "1.0");

    // Errors: no code (400), unknown value set (404), unknown code system (404).
    expect_outcome(
        s.send(Method::POST, "ValueSet/$validate-code", &call(json!([])))
            .await,
        400,
    )
    .await;
    expect_outcome(
        s.get("ValueSet/$validate-code?url=http://example.org/vs/none&code=x")
            .await,
        404,
    )
    .await;
    expect_outcome(
        s.get("CodeSystem/$validate-code?url=http://example.org/cs/none&code=x")
            .await,
        404,
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn lookup_and_subsumes() {
    let s = TestServer::start().await;
    let body = params(
        json!([{"name": "system", "valueUri": CS}, {"name": "code", "valueCode": "red"}, tx(code_system())]),
    );
    let (status, v) = json_of(s.send(Method::POST, "CodeSystem/$lookup", &body).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(get(&v, "name")["valueString"], "Colour");
    assert_eq!(get(&v, "version")["valueString"], "1.0");
    assert_eq!(get(&v, "display")["valueString"], "Red");
    assert_eq!(get(&v, "designation")["part"][0]["valueCode"], "zh");
    let parent = v["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "property" && p["part"][0]["valueCode"] == "parent")
        .expect("parent property");
    assert_eq!(parent["part"][1]["valueCode"], "warm");

    let (status, v) = json_of(
        s.get("CodeSystem/$lookup?system=http://hl7.org/fhir/administrative-gender&code=male")
            .await,
    )
    .await;
    assert_eq!(
        (status, get(&v, "display")["valueString"].clone()),
        (200, json!("Male"))
    );
    expect_outcome(
        s.get("CodeSystem/$lookup?system=http://hl7.org/fhir/administrative-gender&code=man")
            .await,
        404,
    )
    .await;
    expect_outcome(
        s.get("CodeSystem/$lookup?system=http://example.org/none&code=a")
            .await,
        404,
    )
    .await;
    expect_outcome(s.get("CodeSystem/$lookup?code=a").await, 400).await;

    for (a, b, outcome) in [
        ("warm", "red", "subsumes"),
        ("red", "warm", "subsumed-by"),
        ("red", "red", "equivalent"),
        ("red", "blue", "not-subsumed"),
    ] {
        let body = params(json!([
            {"name": "system", "valueUri": CS}, {"name": "codeA", "valueCode": a}, {"name": "codeB", "valueCode": b}, tx(code_system())
        ]));
        let (status, v) = json_of(s.send(Method::POST, "CodeSystem/$subsumes", &body).await).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(get(&v, "outcome")["valueCode"], outcome, "{a} vs {b}");
    }
    let body = params(json!([
        {"name": "codingA", "valueCoding": {"system": CS, "code": "cool"}},
        {"name": "codingB", "valueCoding": {"system": CS, "code": "blue"}}, tx(code_system())
    ]));
    let (_, v) = json_of(s.send(Method::POST, "CodeSystem/$subsumes", &body).await).await;
    assert_eq!(get(&v, "outcome")["valueCode"], "subsumes");
    expect_outcome(
        s.get("CodeSystem/$subsumes?system=http://example.org/none&codeA=a&codeB=b")
            .await,
        404,
    )
    .await;
    expect_outcome(s.get("CodeSystem/$subsumes?codeA=a").await, 400).await;
    // $subsumes is not a ValueSet operation.
    expect_outcome(s.get("ValueSet/$subsumes?codeA=a").await, 404).await;
    s.stop().await;
}

#[tokio::test]
async fn translate_forwards_and_reverse() {
    let s = TestServer::start().await;
    let map = json!({
        "resourceType": "ConceptMap", "url": "http://example.org/cm/colour", "version": "1", "status": "active",
        "group": [{"source": CS, "target": "http://example.org/cs/rgb", "element": [
            {"code": "red", "target": [{"code": "ff0000", "equivalence": "equivalent"}]},
            {"code": "warm", "target": [{"code": "ff8000", "equivalence": "wider"}]}
        ]}]
    });
    let body = params(
        json!([{"name": "system", "valueUri": CS}, {"name": "code", "valueCode": "red"},
        {"name": "targetsystem", "valueUri": "http://example.org/cs/rgb"}, tx(map.clone())]),
    );
    let (status, v) = json_of(s.send(Method::POST, "ConceptMap/$translate", &body).await).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(get(&v, "result")["valueBoolean"], true);
    let m = &get(&v, "match")["part"];
    assert_eq!(m[0]["valueCode"], "equivalent");
    assert_eq!(m[1]["valueCoding"]["code"], "ff0000");
    assert_eq!(m[2]["valueUri"], "http://example.org/cm/colour|1");

    let body = params(
        json!([{"name": "coding", "valueCoding": {"system": "http://example.org/cs/rgb", "code": "ff8000"}},
        {"name": "reverse", "valueBoolean": true}, tx(map.clone())]),
    );
    let (_, v) = json_of(s.send(Method::POST, "ConceptMap/$translate", &body).await).await;
    assert_eq!(get(&v, "result")["valueBoolean"], true);
    assert_eq!(get(&v, "match")["part"][0]["valueCode"], "narrower");
    assert_eq!(get(&v, "match")["part"][1]["valueCoding"]["code"], "warm");

    let body = params(
        json!([{"name": "system", "valueUri": CS}, {"name": "code", "valueCode": "blue"}, tx(map)]),
    );
    let (_, v) = json_of(s.send(Method::POST, "ConceptMap/$translate", &body).await).await;
    assert_eq!(get(&v, "result")["valueBoolean"], false);

    expect_outcome(
        s.get("ConceptMap/$translate?url=http://example.org/cm/none&code=a&system=b")
            .await,
        404,
    )
    .await;
    expect_outcome(s.get("ConceptMap/$translate?system=b").await, 400).await;
    expect_outcome(s.get("ConceptMap/$translate?code=a&bogus=1").await, 400).await;
    s.stop().await;
}
