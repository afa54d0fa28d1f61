//! The local implementation guide for Chinese exchange (`profiles/cn/`): every example against its
//! profile with the exact error each invalid one gets, the GB 11643 身份证号 rule case by case,
//! `$translate` on every ConceptMap and `$validate-code` on every CodeSystem over HTTP, the
//! identifier canonicaliser through conditional create/update, and `ImplementationGuide/cn`.

mod common;

use common::{TestServer, json_of};
use huitong::definitions::Definitions;
use huitong::model::Severity;
use huitong::registry::Registry;
use huitong::terminology::Terminology;
use huitong::validation::Validator;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const BASE: &str = "http://huitong.dev/fhir/cn";
const NATIONAL: &str = "urn:oid:2.16.156.10011.1.3";
const HL7CN: &str = "urn:oid:2.16.840.1.113883.2.23.1.19.1";

fn cn_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/cn")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The JSON files of one folder of the guide, sorted.
fn files(folder: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(cn_dir().join(folder))
        .unwrap_or_else(|e| panic!("{folder}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    out
}

/// A validator over the core plus `profiles/cn` (the guide alone, as `huitong validate` loads it).
fn validator() -> Validator {
    let registry = Arc::new(Registry::with_core(Definitions::core()));
    let problems = registry.load_dir(&cn_dir());
    assert!(problems.is_empty(), "the guide loads cleanly: {problems:?}");
    let terminology = Arc::new(Terminology::new(registry.clone()));
    Validator::new(registry, terminology)
}

fn errors(v: &Validator, r: &Value, profile: &str) -> Vec<(String, String)> {
    v.validate(r, &[profile.to_string()], false)
        .issues
        .into_iter()
        .filter(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
        .map(|i| (i.expression.unwrap_or_default(), i.diagnostics))
        .collect()
}

#[test]
fn every_profile_compiles_and_the_examples_get_exactly_their_expected_outcome() {
    let v = validator();
    let expected: BTreeMap<String, Value> =
        serde_json::from_value(read_json(&cn_dir().join("examples/expected.json"))).unwrap();
    let mut profiles_seen = BTreeSet::new();
    let (mut valid, mut invalid) = (0, 0);
    let mut failures = Vec::new();
    for profile_file in files("profiles") {
        let sd = read_json(&profile_file);
        let url = sd["url"].as_str().unwrap().to_string();
        let plan = v
            .profile_plan(&url)
            .unwrap_or_else(|e| panic!("{url} compiles: {e:?}"));
        assert!(plan.problems.is_empty(), "{url}: {:?}", plan.problems);
        let id = sd["id"].as_str().unwrap();
        let dir = cn_dir().join("examples").join(id);
        let mut counts = (0, 0);
        for f in std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            let r = read_json(&f.path());
            let got = errors(&v, &r, &url);
            if name.starts_with("valid-") {
                if !got.is_empty() {
                    failures.push(format!("{id}/{name} is valid, got {got:?}"));
                }
                counts.0 += 1;
                continue;
            }
            let key = format!("{id}/{name}");
            let want = expected
                .get(&key)
                .unwrap_or_else(|| panic!("{key} has no expected outcome"));
            assert_eq!(want["profile"], url.as_str(), "{key}");
            let (expr, rule) = (
                want["expression"].as_str().unwrap(),
                want["rule"].as_str().unwrap(),
            );
            // Every error is at the expected element (or inside it: a code outside a complete
            // national table is also reported by the core pass as unknown in its code system, at
            // the coding), and one of them, at the element itself, names the expected rule.
            let at_rule = got.iter().any(|(e, m)| e == expr && m.contains(rule));
            let all_inside = got
                .iter()
                .all(|(e, _)| e == expr || e.starts_with(&format!("{expr}.")));
            if !(at_rule && all_inside && got.len() <= 2) {
                failures.push(format!("{key}: want {expr} / '{rule}', got {got:?}"));
            }
            // The rule is the profile's: against the core definition alone it is not reported.
            let core = errors(
                &v,
                &r,
                &format!(
                    "http://hl7.org/fhir/StructureDefinition/{}",
                    sd["type"].as_str().unwrap()
                ),
            );
            if core.iter().any(|(_, m)| m.contains(rule)) {
                failures.push(format!("{key}: the core definition alone reports {core:?}"));
            }
            counts.1 += 1;
        }
        assert!(
            counts.0 >= 3 && counts.1 >= 3,
            "{id}: {} valid and {} invalid examples",
            counts.0,
            counts.1
        );
        valid += counts.0;
        invalid += counts.1;
        profiles_seen.insert(id.to_string());
    }
    assert_eq!(
        invalid,
        expected.len(),
        "every expected outcome belongs to an example"
    );
    println!(
        "{} profiles: {valid} valid and {invalid} invalid examples checked",
        profiles_seen.len()
    );
    for p in [
        "CNPatient",
        "CNPractitioner",
        "CNOrganization",
        "CNEncounter",
        "CNCondition",
        "CNObservationLab",
        "CNDiagnosticReportLab",
        "CNDiagnosticReportImaging",
        "CNMedicationRequest",
        "CNImmunization",
        "CNCoverage",
        "CNClaim",
        "CNClaimResponse",
        "CNExplanationOfBenefit",
        "CNComposition",
        "CNCompositionC0001",
        "CNCompositionC0002",
        "CNCompositionC0004",
        "CNCompositionC0006",
        "CNCompositionC0007",
        "CNCompositionC0032",
        "CNCompositionC0034",
        "CNCompositionC0049",
        "CNCompositionC0053",
        "CNDocumentReference",
        "CNInfectiousDiseaseReport",
    ] {
        assert!(profiles_seen.contains(p), "profile {p} is published");
    }
}

/// (身份证号, the GB 11643 rules it breaks: cn-id-1 format/length, cn-id-2 birth date, cn-id-3 check character)
const RESIDENT_IDS: &[(&str, &[&str])] = &[
    ("11010519491231002X", &[]),
    ("440304199001011233", &[]),
    ("320102198506150049", &[]),
    ("510107200002290010", &[]), // 2000-02-29: a leap day
    ("330106199912318881", &[]),
    ("110101190001010014", &[]), // 1900-01-01, the earliest accepted
    ("630102202010100074", &[]),
    ("150103195404150532", &[]), // from the WS/T 500 sample C0036
    ("120109197706015516", &["cn-id-3"]), // the WS/T 846 sample H0201 (check character should be 4)
    ("110105194912310021", &["cn-id-3"]),
    ("11010519491231002x", &["cn-id-1"]), // the check character X is upper case
    ("11010519491231002", &["cn-id-1"]),  // 17 characters
    ("11010519491231002X1", &["cn-id-1"]), // 19 characters
    ("1101051949123100", &["cn-id-1"]),
    ("110105491231002", &["cn-id-1"]),    // the old 15-digit form
    ("4201062XXX01011919", &["cn-id-1"]), // a masked sample value (C0005)
    ("11010519491231O02X", &["cn-id-1"]), // letter O for zero
    ("110105194902300020", &["cn-id-2"]), // 1949-02-30
    ("110105194913010025", &["cn-id-2", "cn-id-3"]), // month 13
    ("110105194900010020", &["cn-id-2", "cn-id-3"]), // month 00
    ("110105190002290021", &["cn-id-2", "cn-id-3"]), // 1900-02-29: 1900 is not a leap year
    ("110105189912310020", &["cn-id-2", "cn-id-3"]), // 1899
    ("110105210001010012", &["cn-id-2", "cn-id-3"]), // 2100: in the future
    ("121212121212121212", &["cn-id-2", "cn-id-3"]), // a placeholder seen in WS/T 500 samples
];

#[test]
fn the_gb_11643_rule_accepts_and_rejects_resident_ids_case_by_case() {
    let v = validator();
    let profile = format!("{BASE}/StructureDefinition/CNPatient");
    assert!(RESIDENT_IDS.len() >= 20);
    for (system, label) in [(NATIONAL, "national OID"), (HL7CN, "HL7 China OID")] {
        for (id, broken) in RESIDENT_IDS {
            let p = json!({"resourceType": "Patient", "identifier": [{"system": system, "value": id}], "name": [{"text": "张三"}], "gender": "male"});
            let got = errors(&v, &p, &profile);
            let keys: Vec<&str> = broken.to_vec();
            let mut found: Vec<&str> = Vec::new();
            for (expr, msg) in &got {
                assert_eq!(expr, "Patient.identifier[0]", "{id}: {got:?}");
                let key = ["cn-id-1", "cn-id-2", "cn-id-3"]
                    .into_iter()
                    .find(|k| msg.contains(&format!("constraint {k} ")))
                    .unwrap_or_else(|| panic!("{id}: unexpected {msg}"));
                found.push(key);
            }
            assert_eq!(found, keys, "{id} under the {label}: {got:?}");
        }
    }
}

/// Every 身份证号 in the cn-hie corpus (CDA and v3 samples), judged by the rule: the WS/T 846 sample's
/// number is rejected; the count of each kind is printed.
#[test]
fn resident_ids_in_the_cn_hie_samples() {
    let Some(dir) = common::corpora("cn-hie") else {
        return;
    };
    let v = validator();
    let profile = format!("{BASE}/StructureDefinition/CNPatient");
    let (mut accepted, mut rejected) = (0, 0);
    let mut h0201 = None;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
            let needle = "root=\"2.16.156.10011.1.3\" extension=\"";
            for (at, _) in text.match_indices(needle) {
                let rest = &text[at + needle.len()..];
                let Some(end) = rest.find('"') else { continue };
                let id = &rest[..end];
                let pat = json!({"resourceType": "Patient", "identifier": [{"system": NATIONAL, "value": id}], "name": [{"text": "x"}], "gender": "male"});
                let ok = errors(&v, &pat, &profile).is_empty();
                if ok {
                    accepted += 1
                } else {
                    rejected += 1
                }
                if p.ends_with("v3/H02/H0201Rt.xml") {
                    h0201 = Some((id.to_string(), ok));
                }
            }
        }
    }
    println!("cn-hie 身份证号: {accepted} passed, {rejected} failed the GB 11643 rule");
    assert_eq!(h0201, Some(("120109197706015516".to_string(), false)));
    assert!(accepted >= 1, "some sample carries a valid number");
}

fn params(list: Value) -> Value {
    json!({"resourceType": "Parameters", "parameter": list})
}

fn param<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// Every code of a CodeSystem, nested ones included.
fn codes(concepts: &Value, out: &mut Vec<String>) {
    for c in concepts.as_array().into_iter().flatten() {
        out.push(c["code"].as_str().unwrap().to_string());
        codes(&c["concept"], out);
    }
}

#[tokio::test]
async fn validate_code_on_every_code_system() {
    let s = TestServer::start().await;
    for f in files("codesystems") {
        let cs = read_json(&f);
        let url = cs["url"].as_str().unwrap();
        let content = cs["content"].as_str().unwrap();
        let mut all = Vec::new();
        codes(&cs["concept"], &mut all);
        assert!(
            cs["identifier"].is_null()
                || cs["identifier"][0]["value"]
                    .as_str()
                    .unwrap()
                    .starts_with("urn:oid:2.16.156.10011."),
            "{url}"
        );
        for code in &all {
            let body = params(
                json!([{"name": "url", "valueUri": url}, {"name": "code", "valueCode": code}]),
            );
            let (status, v) = json_of(
                s.send(Method::POST, "CodeSystem/$validate-code", &body)
                    .await,
            )
            .await;
            assert_eq!(status, 200, "{url} {code}: {v}");
            assert_eq!(
                param(&v, "result").unwrap()["valueBoolean"],
                true,
                "{url} {code}: {v}"
            );
        }
        // A code the table does not have: false for a complete table; a fragment or a table not
        // shipped cannot say, and answers so.
        let body = params(
            json!([{"name": "url", "valueUri": url}, {"name": "code", "valueCode": "NO-SUCH-CODE"}]),
        );
        let (status, v) = json_of(
            s.send(Method::POST, "CodeSystem/$validate-code", &body)
                .await,
        )
        .await;
        assert_eq!(status, 200, "{url}: {v}");
        let result = param(&v, "result").unwrap()["valueBoolean"]
            .as_bool()
            .unwrap();
        let message = param(&v, "message")
            .map(|m| m["valueString"].as_str().unwrap_or("").to_string())
            .unwrap_or_default();
        match content {
            "complete" => assert!(!result, "{url}: an unknown code is invalid: {v}"),
            _ => assert!(
                message.contains("NO-SUCH-CODE") || message.contains(url),
                "{url} ({content}): the answer says it cannot tell: {v}"
            ),
        }
        // The display is checked too (a complete table's first code with a wrong display).
        if content == "complete" && !all.is_empty() {
            let body = params(
                json!([{"name": "url", "valueUri": url}, {"name": "code", "valueCode": all[0]}, {"name": "display", "valueString": "错误的名称"}]),
            );
            let (_, v) = json_of(
                s.send(Method::POST, "CodeSystem/$validate-code", &body)
                    .await,
            )
            .await;
            assert_eq!(
                param(&v, "result").unwrap()["valueBoolean"],
                false,
                "{url}: wrong display: {v}"
            );
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn translate_on_every_concept_map() {
    let s = TestServer::start().await;
    let mut seen = 0;
    for f in files("conceptmaps") {
        let cm = read_json(&f);
        let url = cm["url"].as_str().unwrap();
        for g in cm["group"].as_array().unwrap() {
            let (source, target) = (g["source"].as_str().unwrap(), g["target"].as_str().unwrap());
            for e in g["element"].as_array().unwrap() {
                let code = e["code"].as_str().unwrap();
                let t = &e["target"][0];
                let q = format!(
                    "ConceptMap/$translate?url={}&system={}&code={}",
                    urlencode(url),
                    urlencode(source),
                    urlencode(code)
                );
                let (status, v) = json_of(s.get(&q).await).await;
                assert_eq!(status, 200, "{url} {code}: {v}");
                let result = param(&v, "result").unwrap()["valueBoolean"]
                    .as_bool()
                    .unwrap();
                match t["code"].as_str() {
                    Some(tc) => {
                        assert!(result, "{url} {code}: {v}");
                        let m = &param(&v, "match").unwrap()["part"];
                        let parts = m.as_array().unwrap();
                        let eq = parts.iter().find(|p| p["name"] == "equivalence").unwrap();
                        let concept = parts.iter().find(|p| p["name"] == "concept").unwrap();
                        assert_eq!(eq["valueCode"], t["equivalence"], "{url} {code}: {v}");
                        assert_eq!(
                            concept["valueCoding"]["system"], target,
                            "{url} {code}: {v}"
                        );
                        assert_eq!(concept["valueCoding"]["code"], tc, "{url} {code}: {v}");
                    }
                    None => assert!(!result, "{url} {code} is unmatched: {v}"),
                }
                seen += 1;
            }
        }
        // A code the map does not hold translates to nothing.
        let source = cm["group"][0]["source"].as_str().unwrap();
        let (_, v) = json_of(
            s.get(&format!(
                "ConceptMap/$translate?url={}&system={}&code=NO-SUCH-CODE",
                urlencode(url),
                urlencode(source)
            ))
            .await,
        )
        .await;
        assert_eq!(
            param(&v, "result").unwrap()["valueBoolean"],
            false,
            "{url}: {v}"
        );
    }
    assert!(seen >= 30, "{seen} mappings checked");
    // The sex map is what keeps the original: 5 (女性改为男性) maps to other, not to male.
    let sex = format!("{BASE}/ConceptMap/sex-to-administrative-gender");
    let (_, v) = json_of(
        s.get(&format!(
            "ConceptMap/$translate?url={}&system={}&code=5",
            urlencode(&sex),
            urlencode(&format!("{BASE}/CodeSystem/gbt-2261-1-sex"))
        ))
        .await,
    )
    .await;
    let m = &param(&v, "match").unwrap()["part"];
    assert!(
        m.as_array()
            .unwrap()
            .iter()
            .any(|p| p["valueCoding"]["code"] == "other"),
        "{v}"
    );
    s.stop().await;
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn patient(system: &str, id: &str) -> Value {
    json!({"resourceType": "Patient", "identifier": [{"system": system, "value": id}], "name": [{"text": "张三"}], "gender": "male"})
}

async fn create_if_none_exist(s: &TestServer, body: &Value, criteria: &str) -> (u16, Value) {
    json_of(
        s.http
            .post(s.url("Patient"))
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=representation")
            .header("if-none-exist", criteria)
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn an_alias_system_is_stored_canonical_and_matched_by_either_system() {
    let s = TestServer::start().await;
    let id = "11010519491231002X";
    let (status, created) =
        create_if_none_exist(&s, &patient(HL7CN, id), &format!("identifier={HL7CN}|{id}")).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["identifier"][0]["system"], NATIONAL,
        "stored under the canonical system"
    );
    let pid = created["id"].as_str().unwrap().to_string();
    let (_, read) = json_of(s.get(&format!("Patient/{pid}")).await).await;
    assert_eq!(read["identifier"][0]["system"], NATIONAL);

    // A conditional create under either system finds it and writes nothing.
    for system in [NATIONAL, HL7CN, "urn:oid:2.16.156.10011.1.3"] {
        let (status, v) = create_if_none_exist(
            &s,
            &patient(system, id),
            &format!("identifier={system}|{id}"),
        )
        .await;
        assert_eq!(status, 200, "{system}: {v}");
        assert_eq!(v["id"], pid.as_str(), "{system}");
        assert_eq!(v["meta"]["versionId"], "1");
    }
    // A search by either system (and an OR of both) finds it.
    for query in [
        format!("identifier={}", urlencode(&format!("{NATIONAL}|{id}"))),
        format!("identifier={}", urlencode(&format!("{HL7CN}|{id}"))),
        format!(
            "identifier={}",
            urlencode(&format!("urn:oid:2.16.840.1.113883|x,{HL7CN}|{id}"))
        ),
    ] {
        let (status, found) = json_of(s.get(&format!("Patient?{query}")).await).await;
        assert_eq!(status, 200, "{query}: {found}");
        assert_eq!(found["total"], 1, "{query}: {found}");
        assert_eq!(found["entry"][0]["resource"]["id"], pid.as_str(), "{query}");
    }
    // A conditional update addressed with the alias updates the same resource.
    let mut changed = patient(HL7CN, id);
    changed["name"] = json!([{"text": "张三丰"}]);
    let (status, v) = json_of(
        s.send(
            Method::PUT,
            &format!("Patient?identifier={}", urlencode(&format!("{HL7CN}|{id}"))),
            &changed,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (_, read) = json_of(s.get(&format!("Patient/{pid}")).await).await;
    assert_eq!(read["meta"]["versionId"], "2");
    assert_eq!(read["name"][0]["text"], "张三丰");
    assert_eq!(read["identifier"][0]["system"], NATIONAL);

    // In a transaction, a conditional reference with the alias resolves to the same Patient.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:6f1c0c2e-0000-4000-8000-000000000001",
        "resource": {"resourceType": "Encounter", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": format!("Patient?identifier={HL7CN}|{id}")}},
        "request": {"method": "POST", "url": "Encounter"}}]});
    let (status, v) = json_of(s.send(Method::POST, "", &bundle).await).await;
    assert_eq!(status, 200, "{v}");
    let loc = v["entry"][0]["response"]["location"].as_str().unwrap();
    let enc_path = loc.split("/_history").next().unwrap();
    let (_, enc) = json_of(s.get(enc_path).await).await;
    assert_eq!(enc["subject"]["reference"], format!("Patient/{pid}"));
    s.stop().await;
}

#[tokio::test]
async fn the_canonical_arc_is_configurable() {
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), |st| {
        st.canonical_identifier_systems = vec![HL7CN.to_string()];
    })
    .await;
    let id = "440304199001011233";
    let (status, created) = create_if_none_exist(
        &s,
        &patient(NATIONAL, id),
        &format!("identifier={NATIONAL}|{id}"),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["identifier"][0]["system"], HL7CN);
    let (status, v) =
        create_if_none_exist(&s, &patient(HL7CN, id), &format!("identifier={HL7CN}|{id}")).await;
    assert_eq!((status, v["id"].clone()), (200, created["id"].clone()));
    s.stop().await;
}

#[tokio::test]
async fn validate_reports_the_bad_check_digit_with_profile_element_and_rule() {
    let s = TestServer::start().await;
    let profile = format!("{BASE}/StructureDefinition/CNPatient");
    let body = params(
        json!([{"name": "resource", "resource": patient(NATIONAL, "120109197706015516")}, {"name": "profile", "valueUri": profile}]),
    );
    let (status, v) = json_of(s.send(Method::POST, "Patient/$validate", &body).await).await;
    assert_eq!(status, 200, "{v}");
    let errors: Vec<&Value> = v["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!(errors[0]["code"], "invariant");
    assert_eq!(errors[0]["expression"][0], "Patient.identifier[0]");
    assert!(
        errors[0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("constraint cn-id-3 failed on Patient.identifier"),
        "{v}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_implementation_guide_lists_every_loaded_resource_of_the_guide() {
    let s = TestServer::start().await;
    let (status, ig) = json_of(s.get("ImplementationGuide/cn").await).await;
    assert_eq!(status, 200, "{ig}");
    assert_eq!(ig["resourceType"], "ImplementationGuide");
    let listed: BTreeSet<String> = ig["definition"]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"]["reference"].as_str().unwrap().to_string())
        .collect();
    let mut shipped = BTreeSet::new();
    for folder in [
        "profiles",
        "extensions",
        "codesystems",
        "valuesets",
        "conceptmaps",
        "namingsystems",
    ] {
        for f in files(folder) {
            let r = read_json(&f);
            shipped.insert(format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            ));
        }
    }
    assert_eq!(listed, shipped);
    let groups: BTreeMap<String, usize> = ig["definition"]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r["groupingId"].as_str().unwrap().to_string())
                .or_default() += 1;
            m
        });
    assert_eq!(groups["profiles"], files("profiles").len());
    assert_eq!(groups["extensions"], files("extensions").len());
    assert_eq!(groups["naming-systems"], files("namingsystems").len());
    // The guide itself is a valid R4 ImplementationGuide.
    let body = params(json!([{"name": "resource", "resource": ig}]));
    let (_, v) = json_of(
        s.send(Method::POST, "ImplementationGuide/$validate", &body)
            .await,
    )
    .await;
    assert!(
        v["issue"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["severity"] != "error"),
        "{v}"
    );
    s.stop().await;
}
