//! Expansion and membership over small code systems built for each rule.

use super::*;
use crate::definitions::Definitions;
use serde_json::json;

const CS: &str = "http://example.org/cs/body";

fn service() -> Terminology {
    let registry = Arc::new(Registry::with_core(Definitions::core()));
    registry
        .add(
            json!({
                "resourceType": "CodeSystem", "url": CS, "version": "2", "status": "active",
                "content": "complete", "caseSensitive": true,
                "property": [{"code": "side", "type": "code"}, {"code": "status", "type": "code"}],
                "concept": [
                    {"code": "limb", "display": "Limb", "concept": [
                        {"code": "arm", "display": "Arm", "property": [{"code": "side", "valueCode": "upper"}],
                         "concept": [{"code": "hand", "display": "Hand", "property": [{"code": "side", "valueCode": "upper"}]}]},
                        {"code": "leg", "display": "Leg", "designation": [{"language": "zh", "value": "腿"}],
                         "property": [{"code": "side", "valueCode": "lower"}]}
                    ]},
                    {"code": "head", "display": "Head", "property": [{"code": "status", "valueCode": "retired"}]}
                ]
            }),
            "test",
        )
        .unwrap();
    let vs = |id: &str, compose: Value| json!({"resourceType": "ValueSet", "url": format!("http://example.org/vs/{id}"), "status": "active", "compose": compose});
    for r in [
        vs("all", json!({"include": [{"system": CS}]})),
        vs(
            "limbs",
            json!({"include": [{"system": CS, "filter": [{"property": "concept", "op": "is-a", "value": "limb"}]}]}),
        ),
        vs(
            "below-limb",
            json!({"include": [{"system": CS, "filter": [{"property": "concept", "op": "descendent-of", "value": "limb"}]}]}),
        ),
        vs(
            "not-limb",
            json!({"include": [{"system": CS, "filter": [{"property": "concept", "op": "is-not-a", "value": "limb"}]}]}),
        ),
        vs(
            "upper",
            json!({"include": [{"system": CS, "filter": [{"property": "side", "op": "=", "value": "upper"}]}]}),
        ),
        vs(
            "regex",
            json!({"include": [{"system": CS, "filter": [{"property": "code", "op": "regex", "value": "h.*"}]}]}),
        ),
        vs(
            "in",
            json!({"include": [{"system": CS, "filter": [{"property": "concept", "op": "in", "value": "arm,head"}]}]}),
        ),
        vs(
            "exists",
            json!({"include": [{"system": CS, "filter": [{"property": "side", "op": "exists", "value": "false"}]}]}),
        ),
        vs(
            "no-arm",
            json!({"include": [{"system": CS}], "exclude": [{"system": CS, "concept": [{"code": "arm"}]}]}),
        ),
        vs(
            "nested",
            json!({"include": [{"valueSet": ["http://example.org/vs/limbs", "http://example.org/vs/upper"]}]}),
        ),
        vs(
            "active",
            json!({"inactive": false, "include": [{"system": CS}]}),
        ),
        vs(
            "self",
            json!({"include": [{"valueSet": ["http://example.org/vs/self"]}]}),
        ),
        vs(
            "ring-a",
            json!({"include": [{"system": CS}], "exclude": [{"valueSet": ["http://example.org/vs/ring-b"]}]}),
        ),
        vs(
            "ring-b",
            json!({"include": [{"valueSet": ["http://example.org/vs/ring-a"]}]}),
        ),
        vs(
            "snomed",
            json!({"include": [{"system": "http://snomed.info/sct"}]}),
        ),
        vs(
            "units",
            json!({"include": [{"system": "http://unitsofmeasure.org"}]}),
        ),
        vs(
            "broken",
            json!({"include": [{"system": CS, "filter": [{"property": "concept", "op": "is-a"}]}]}),
        ),
    ] {
        registry.add(r, "test").unwrap();
    }
    Terminology::new(registry)
}

fn codes(t: &Terminology, id: &str) -> Vec<String> {
    let exp = t
        .expand_canonical(
            &t.scope(),
            &format!("http://example.org/vs/{id}"),
            &ExpandOptions::default(),
        )
        .unwrap();
    let mut v: Vec<String> = exp.contains.iter().map(|e| e.code.clone()).collect();
    v.sort();
    v
}

#[test]
fn hierarchy_filters_follow_nested_concepts() {
    let t = service();
    assert_eq!(codes(&t, "limbs"), ["arm", "hand", "leg", "limb"]);
    assert_eq!(codes(&t, "below-limb"), ["arm", "hand", "leg"]);
    assert_eq!(codes(&t, "not-limb"), ["head"]);
}

#[test]
fn property_regex_in_and_exists_filters() {
    let t = service();
    assert_eq!(codes(&t, "upper"), ["arm", "hand"]);
    assert_eq!(codes(&t, "regex"), ["hand", "head"]);
    assert_eq!(codes(&t, "in"), ["arm", "head"]);
    assert_eq!(codes(&t, "exists"), ["head", "limb"]);
}

#[test]
fn exclude_nested_intersection_and_inactive() {
    let t = service();
    assert_eq!(codes(&t, "no-arm"), ["hand", "head", "leg", "limb"]);
    // Two value sets in one include: codes in both.
    assert_eq!(codes(&t, "nested"), ["arm", "hand"]);
    assert_eq!(codes(&t, "active"), ["arm", "hand", "leg", "limb"]);
}

#[test]
fn cycles_are_errors_not_recursion() {
    let t = service();
    let s = t.scope();
    for id in ["self", "ring-a", "ring-b"] {
        let e = t
            .expand_canonical(
                &s,
                &format!("http://example.org/vs/{id}"),
                &ExpandOptions::default(),
            )
            .unwrap_err();
        assert!(
            matches!(e, TermError::Expand(ExpandError::Cycle(_))),
            "{id}: {e:?}"
        );
    }
    assert!(matches!(
        t.validate_code("http://example.org/vs/self", Some(CS), "arm", None),
        CodeCheck::NotAvailable(m) if m.contains("cyclic")
    ));
}

#[test]
fn a_filter_without_value_is_refused() {
    let t = service();
    let e = t
        .expand_canonical(
            &t.scope(),
            "http://example.org/vs/broken",
            &ExpandOptions::default(),
        )
        .unwrap_err();
    assert!(
        matches!(e, TermError::Expand(ExpandError::Invalid(_))),
        "{e:?}"
    );
}

#[test]
fn validate_code_membership_display_and_bare_codes() {
    let t = service();
    let vs = "http://example.org/vs/limbs";
    assert_eq!(
        t.validate_code(vs, Some(CS), "hand", None),
        CodeCheck::Valid
    );
    assert_eq!(
        t.validate_code(vs, Some(CS), "hand", Some("HAND")),
        CodeCheck::Valid
    );
    assert_eq!(
        t.validate_code(vs, Some(CS), "leg", Some("腿")),
        CodeCheck::Valid
    );
    assert!(
        matches!(t.validate_code(vs, Some(CS), "hand", Some("Foot")), CodeCheck::Invalid(m) if m.contains("'Hand'"))
    );
    assert!(matches!(
        t.validate_code(vs, Some(CS), "head", None),
        CodeCheck::Invalid(_)
    ));
    assert!(matches!(
        t.validate_code(vs, Some("http://other"), "hand", None),
        CodeCheck::Invalid(_)
    ));
    assert_eq!(t.validate_code(vs, None, "arm", None), CodeCheck::Valid);
    assert!(matches!(
        t.validate_code(vs, None, "elbow", None),
        CodeCheck::Invalid(_)
    ));
    assert_eq!(
        t.validate_code(vs, Some(&format!("{CS}|2")), "arm", None),
        CodeCheck::Valid
    );
    assert!(matches!(
        t.validate_code(vs, Some(&format!("{CS}|1")), "arm", None),
        CodeCheck::Invalid(_)
    ));
    assert!(matches!(
        t.validate_code("http://example.org/vs/unknown", Some(CS), "arm", None),
        CodeCheck::NotAvailable(_)
    ));
}

#[test]
fn external_systems_are_not_available_and_ucum_is_a_grammar() {
    let t = service();
    assert!(matches!(
        t.validate_code(
            "http://example.org/vs/snomed",
            Some("http://snomed.info/sct"),
            "22298006",
            None
        ),
        CodeCheck::NotAvailable(_)
    ));
    let units = "http://example.org/vs/units";
    assert_eq!(
        t.validate_code(units, Some(ucum::SYSTEM), "mg/dL", None),
        CodeCheck::Valid
    );
    assert!(matches!(
        t.validate_code(units, Some(ucum::SYSTEM), "mg/dL/", None),
        CodeCheck::Invalid(_)
    ));
    assert_eq!(
        t.validate_code(units, None, "10*3/uL", None),
        CodeCheck::Valid
    );
    // A local fragment of an external system answers for the codes it holds.
    t.registry()
        .add(
            json!({"resourceType": "CodeSystem", "url": "http://snomed.info/sct", "status": "active",
                   "content": "fragment", "concept": [{"code": "22298006", "display": "Myocardial infarction"}]}),
            "test",
        )
        .unwrap();
    let snomed = "http://example.org/vs/snomed";
    assert_eq!(
        t.validate_code(snomed, Some("http://snomed.info/sct"), "22298006", None),
        CodeCheck::Valid
    );
    assert!(matches!(
        t.validate_code(snomed, Some("http://snomed.info/sct"), "1234", None),
        CodeCheck::NotAvailable(m) if m.contains("fragment")
    ));
}

#[test]
fn core_required_bindings_work() {
    let t = service();
    let gender = "http://hl7.org/fhir/ValueSet/administrative-gender";
    assert_eq!(
        t.validate_code(
            gender,
            Some("http://hl7.org/fhir/administrative-gender"),
            "female",
            None
        ),
        CodeCheck::Valid
    );
    assert_eq!(
        t.validate_code(gender, None, "male", None),
        CodeCheck::Valid
    );
    assert!(matches!(
        t.validate_code(gender, None, "woman", None),
        CodeCheck::Invalid(_)
    ));
}

#[test]
fn cache_follows_the_registry_generation() {
    let t = service();
    assert_eq!(codes(&t, "all").len(), 5);
    t.registry()
        .add(
            json!({"resourceType": "ValueSet", "url": "http://example.org/vs/all", "status": "active",
                   "compose": {"include": [{"system": CS, "concept": [{"code": "arm"}]}]}}),
            "test",
        )
        .unwrap();
    assert_eq!(codes(&t, "all"), ["arm"]);
}

#[test]
fn lookup_and_subsumes() {
    let t = service();
    let s = t.scope();
    let l = t.lookup(&s, CS, None, "hand").unwrap();
    assert_eq!(l.display.as_deref(), Some("Hand"));
    assert!(
        l.properties
            .iter()
            .any(|(c, v)| c == "parent" && v["valueCode"] == "arm")
    );
    assert!(matches!(
        t.lookup(&s, CS, None, "foot"),
        Err(TermError::NotFound(_))
    ));
    assert_eq!(
        t.subsumes(&s, CS, None, "limb", "hand").unwrap(),
        Subsumption::Subsumes
    );
    assert_eq!(
        t.subsumes(&s, CS, None, "hand", "limb").unwrap(),
        Subsumption::SubsumedBy
    );
    assert_eq!(
        t.subsumes(&s, CS, None, "arm", "arm").unwrap(),
        Subsumption::Equivalent
    );
    assert_eq!(
        t.subsumes(&s, CS, None, "arm", "leg").unwrap(),
        Subsumption::NotSubsumed
    );
}

#[test]
fn member_of_for_fhirpath() {
    use crate::fhirpath::Terminology as _;
    let t = service();
    let vs = "http://example.org/vs/limbs";
    let cc =
        json!({"coding": [{"system": "http://other", "code": "x"}, {"system": CS, "code": "arm"}]});
    assert_eq!(t.member_of(&cc, "CodeableConcept", vs), Ok(Some(true)));
    assert_eq!(
        t.member_of(&json!({"system": CS, "code": "head"}), "Coding", vs),
        Ok(Some(false))
    );
    assert_eq!(t.member_of(&json!("leg"), "code", vs), Ok(Some(true)));
    assert_eq!(
        t.member_of(&json!("leg"), "code", "http://nowhere/vs"),
        Ok(None)
    );
}

#[test]
fn expansion_limit_is_enforced() {
    let t = service();
    let s = t.scope();
    let opts = ExpandOptions::default();
    let vs = json!({"resourceType": "ValueSet", "url": "http://x/big", "compose": {"include": [{"system": CS}]}});
    let mut x = Expander::new(&t, &s, &opts, 3);
    assert_eq!(x.expand(&vs).unwrap_err(), ExpandError::TooCostly(3));
}
