//! `$validate` and validate-on-write over real HTTP.
mod common;

use common::{TestServer, expect_outcome, json_of};
use reqwest::Method;
use serde_json::{Value, json};

fn errors(outcome: &Value) -> Vec<(String, String)> {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["severity"] == "error")
        .map(|i| {
            (
                i["expression"][0].as_str().unwrap_or("").to_string(),
                i["diagnostics"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Patient.birthDate made 1..1, and a fixed gender.
fn profile() -> Value {
    json!({"resourceType": "StructureDefinition", "id": "strict-patient",
    "url": "http://example.org/StructureDefinition/strict-patient", "name": "StrictPatient",
    "status": "active", "kind": "resource", "abstract": false, "type": "Patient",
    "derivation": "constraint", "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
    "snapshot": {"element": [
        {"id": "Patient", "path": "Patient", "min": 0, "max": "*", "definition": "A patient.",
         "base": {"path": "Patient", "min": 0, "max": "*"}},
        {"id": "Patient.gender", "path": "Patient.gender", "min": 1, "max": "1",
         "definition": "Gender.", "base": {"path": "Patient.gender", "min": 0, "max": "1"},
         "type": [{"code": "code"}], "fixedCode": "female"},
        {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1, "max": "1",
         "definition": "Birth date.", "base": {"path": "Patient.birthDate", "min": 0, "max": "1"},
         "type": [{"code": "date"}]}
    ]}})
}

#[tokio::test]
async fn validate_operation_reports_every_issue_with_its_location() {
    let s = TestServer::start().await;
    // A bare resource as the body.
    let bad = json!({"resourceType": "Observation", "valueString": "x",
        "subject": {"reference": "Medication/1"}});
    let (status, oo) = json_of(s.send(Method::POST, "Observation/$validate", &bad).await).await;
    assert_eq!(status, 200, "{oo}");
    let errs = errors(&oo);
    assert!(
        errs.iter()
            .any(|(at, m)| at == "Observation" && m.contains("Observation.status is required")),
        "{oo}"
    );
    assert!(
        errs.iter()
            .any(|(at, m)| at == "Observation" && m.contains("Observation.code is required")),
        "{oo}"
    );
    assert!(
        errs.iter().any(|(at, m)| at == "Observation.subject"
            && m.contains("a reference to Medication is not allowed")),
        "{oo}"
    );
    // A required binding broken, and an invariant: inside a Parameters body.
    let params = json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource":
        {"resourceType": "Patient", "contact": [{"gender": "male"}]}}]});
    let (status, oo) = json_of(s.send(Method::POST, "Patient/$validate", &params).await).await;
    assert_eq!(status, 200);
    let errs = errors(&oo);
    assert!(
        errs.iter()
            .any(|(at, m)| at == "Patient.contact[0]" && m.contains("pat-1")),
        "{oo}"
    );
    // A valid resource: one informational issue.
    let good = json!({"resourceType": "Patient", "text": {"status": "generated",
        "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}});
    let (status, oo) = json_of(s.send(Method::POST, "Patient/$validate", &good).await).await;
    assert_eq!(status, 200);
    assert!(errors(&oo).is_empty(), "{oo}");
    assert_eq!(oo["issue"][0]["severity"], "information", "{oo}");
    // A structurally broken body is reported, not refused.
    let broken = json!({"resourceType": "Patient", "birthDate": "1990-02-30", "foo": 1});
    let (status, oo) = json_of(s.send(Method::POST, "Patient/$validate", &broken).await).await;
    assert_eq!(status, 200);
    let at: Vec<String> = errors(&oo).into_iter().map(|(a, _)| a).collect();
    assert!(
        at.contains(&"Patient.birthDate".to_string()) && at.contains(&"Patient.foo".to_string()),
        "{oo}"
    );
}

#[tokio::test]
async fn validate_operation_errors_are_precise() {
    let s = TestServer::start().await;
    let p = json!({"resourceType": "Patient"});
    let (code, _, msg) =
        expect_outcome(s.send(Method::POST, "Observation/$validate", &p).await, 400).await;
    assert_eq!(code, "invalid", "{msg}");
    let (code, _, msg) = expect_outcome(
        s.send(Method::POST, "Patient/$validate?foo=1", &p).await,
        400,
    )
    .await;
    assert_eq!(code, "not-supported");
    assert!(msg.contains("'foo'"), "{msg}");
    let (_, _, msg) = expect_outcome(s.send(Method::POST, "Patient/$nope", &p).await, 404).await;
    assert!(msg.contains("$nope"), "{msg}");
    let (_, _, msg) = expect_outcome(s.get("Patient/$validate").await, 400).await;
    assert!(msg.contains("needs the resource"), "{msg}");
    let (_, _, msg) = expect_outcome(
        s.send(Method::POST, "Patient/$validate?mode=merge", &p)
            .await,
        400,
    )
    .await;
    assert!(msg.contains("merge"), "{msg}");
    let (status, oo) = json_of(
        s.send(Method::POST, "Patient/$validate?profile=http://x/none", &p)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        errors(&oo)
            .iter()
            .any(|(_, m)| m.contains("http://x/none is not known")),
        "{oo}"
    );
    // Instance level: the stored resource.
    let (_, _, _) = expect_outcome(s.get("Patient/nobody/$validate").await, 404).await;
}

#[tokio::test]
async fn a_posted_profile_is_in_force_at_once() {
    let s = TestServer::start().await;
    let (status, body) = json_of(
        s.send(
            Method::PUT,
            "StructureDefinition/strict-patient",
            &profile(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let p = json!({"resourceType": "Patient", "gender": "male"});
    let (status, oo) = json_of(
        s.send(
            Method::POST,
            "Patient/$validate?profile=http://example.org/StructureDefinition/strict-patient",
            &p,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    let errs = errors(&oo);
    assert!(
        errs.iter()
            .any(|(_, m)| m.contains("Patient.birthDate is required")),
        "{oo}"
    );
    assert!(
        errs.iter()
            .any(|(at, m)| at == "Patient.gender" && m.contains("fixed")),
        "{oo}"
    );
    // Claimed in meta.profile: checked on $validate of a stored instance as well.
    let claimed = json!({"resourceType": "Patient", "id": "c", "gender": "female",
        "meta": {"profile": ["http://example.org/StructureDefinition/strict-patient"]}});
    let (status, _) = json_of(s.send(Method::PUT, "Patient/c", &claimed).await).await;
    assert_eq!(
        status, 201,
        "core policy: profiles are not enforced on write"
    );
    let (_, oo) = json_of(s.get("Patient/c/$validate").await).await;
    assert!(
        errors(&oo)
            .iter()
            .any(|(_, m)| m.contains("Patient.birthDate is required")),
        "{oo}"
    );
}

#[tokio::test]
async fn writes_that_fail_validation_are_refused_and_leave_nothing() {
    let s = TestServer::start().await;
    let obs = json!({"resourceType": "Observation", "valueString": "x"});
    let (code, at, msg) =
        expect_outcome(s.send(Method::POST, "Observation", &obs).await, 422).await;
    assert_eq!(code, "required");
    assert_eq!(at.as_deref(), Some("Observation"));
    assert!(msg.contains("Observation.status"), "{msg}");
    let mut with_id = obs.clone();
    with_id["id"] = json!("o1");
    let (code, _, _) =
        expect_outcome(s.send(Method::PUT, "Observation/o1", &with_id).await, 422).await;
    assert_eq!(code, "required");
    expect_outcome(s.get("Observation/o1").await, 404).await;
    // In a transaction: located at its entry, and the good entry is not written either.
    let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "ok"}, "request": {"method": "PUT", "url": "Patient/ok"}},
        {"resource": obs, "request": {"method": "POST", "url": "Observation"}}
    ]});
    let (_, at, _) = expect_outcome(s.send(Method::POST, "", &tx).await, 422).await;
    assert_eq!(at.as_deref(), Some("Bundle.entry[1].Observation"));
    expect_outcome(s.get("Patient/ok").await, 404).await;
    // In a batch: that entry fails, the other succeeds.
    let mut batch = tx.clone();
    batch["type"] = json!("batch");
    let (status, b) = json_of(s.send(Method::POST, "", &batch).await).await;
    assert_eq!(status, 200);
    assert_eq!(b["entry"][0]["response"]["status"], "201 Created", "{b}");
    assert!(
        b["entry"][1]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("422"),
        "{b}"
    );
}

#[tokio::test]
async fn the_profiles_policy_enforces_configured_and_claimed_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(profiles.join("strict.json"), profile().to_string()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let s = TestServer::start_in(data, |st| {
        st.profiles_dir = profiles.clone();
        st.validation_by_type.insert(
            "Patient".into(),
            huitong::config::ValidationPolicy::Profiles,
        );
        st.type_profiles.insert(
            "Patient".into(),
            vec!["http://example.org/StructureDefinition/strict-patient".into()],
        );
        st.validation_by_type
            .insert("Observation".into(), huitong::config::ValidationPolicy::Off);
    })
    .await;
    let (_, _, msg) = expect_outcome(
        s.send(Method::POST, "Patient", &json!({"resourceType": "Patient"}))
            .await,
        422,
    )
    .await;
    assert!(
        msg.contains("Patient.gender is required") || msg.contains("Patient.birthDate is required"),
        "{msg}"
    );
    let ok = json!({"resourceType": "Patient", "gender": "female", "birthDate": "1990-01-01"});
    let (status, _) = json_of(s.send(Method::POST, "Patient", &ok).await).await;
    assert_eq!(status, 201);
    // Off for Observation: structurally fine but incomplete resources are stored.
    let obs = json!({"resourceType": "Observation", "valueString": "x"});
    let (status, _) = json_of(s.send(Method::POST, "Observation", &obs).await).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn snapshot_operation_and_differential_only_profiles() {
    let s = TestServer::start().await;
    let diff_only = json!({"resourceType": "StructureDefinition", "id": "diff-patient",
    "url": "http://example.org/StructureDefinition/diff-patient", "name": "DiffPatient",
    "status": "active", "kind": "resource", "abstract": false, "type": "Patient",
    "derivation": "constraint", "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
    "differential": {"element": [
        {"id": "Patient.name", "path": "Patient.name", "min": 1},
        {"id": "Patient.name.family", "path": "Patient.name.family", "min": 1}
    ]}});
    let params = json!({"resourceType": "Parameters", "parameter": [{"name": "definition", "resource": diff_only}]});
    let (status, sd) = json_of(
        s.send(Method::POST, "StructureDefinition/$snapshot", &params)
            .await,
    )
    .await;
    assert_eq!(status, 200, "{sd}");
    let ids: Vec<&str> = sd["snapshot"]["element"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"Patient.name.family") && ids.contains(&"Patient.birthDate"),
        "{ids:?}"
    );
    // Stored without a snapshot, then used for validation: its snapshot is generated on first use.
    let (status, body) = json_of(
        s.send(Method::PUT, "StructureDefinition/diff-patient", &diff_only)
            .await,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, got) = json_of(s.get("StructureDefinition/diff-patient/$snapshot").await).await;
    assert_eq!(
        got["snapshot"]["element"].as_array().map(Vec::len),
        Some(ids.len())
    );
    let p = json!({"resourceType": "Patient", "name": [{"given": ["Wei"]}]});
    let (_, oo) = json_of(
        s.send(
            Method::POST,
            "Patient/$validate?profile=http://example.org/StructureDefinition/diff-patient",
            &p,
        )
        .await,
    )
    .await;
    assert!(
        errors(&oo).iter().any(|(at, m)| at == "Patient.name[0]" && m.contains("Patient.name.family is required")),
        "{oo}"
    );
    // A base nobody knows is named.
    let mut bad = diff_only.clone();
    bad["baseDefinition"] = json!("http://example.org/nowhere");
    let params = json!({"resourceType": "Parameters", "parameter": [{"name": "definition", "resource": bad}]});
    let (_, _, msg) = expect_outcome(
        s.send(Method::POST, "StructureDefinition/$snapshot", &params)
            .await,
        422,
    )
    .await;
    assert!(
        msg.contains("http://example.org/nowhere is not known"),
        "{msg}"
    );
}

/// A profiles folder with broken files still starts the server; the sound profile is in force,
/// extensions are checked against their definitions and contexts, an unknown modifier extension
/// is an error, and each message names the definition it comes from.
#[tokio::test]
async fn broken_profiles_do_not_stop_the_server_and_extensions_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::write(profiles.join("strict.json"), profile().to_string()).unwrap();
    let mut orphan = profile();
    orphan["url"] = json!("http://example.org/StructureDefinition/orphan");
    orphan["baseDefinition"] = json!("http://example.org/StructureDefinition/nowhere");
    orphan.as_object_mut().unwrap().remove("snapshot");
    std::fs::write(profiles.join("orphan.json"), orphan.to_string()).unwrap();
    let ext = json!({"resourceType": "StructureDefinition", "id": "shoe-size",
    "url": "http://example.org/fhir/ext/shoe-size", "name": "ShoeSize", "status": "active",
    "kind": "complex-type", "abstract": false, "type": "Extension",
    "context": [{"type": "element", "expression": "Patient"}],
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
    "derivation": "constraint", "differential": {"element": [
        {"id": "Extension", "path": "Extension"},
        {"id": "Extension.url", "path": "Extension.url", "fixedUri": "http://example.org/fhir/ext/shoe-size"},
        {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": "integer"}]}
    ]}});
    std::fs::write(profiles.join("shoe-size.json"), ext.to_string()).unwrap();
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), |st| {
        st.profiles_dir = profiles.clone();
    })
    .await;
    let strict = "http://example.org/StructureDefinition/strict-patient";
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient",
            "extension": [{"url": "http://example.org/fhir/ext/shoe-size", "valueString": "42"}],
            "modifierExtension": [{"url": "http://other.org/fhir/ext/unheard-of", "valueBoolean": true}],
            "name": [{"family": "Chalmers",
                "extension": [{"url": "http://example.org/fhir/ext/shoe-size", "valueInteger": 42}]}]}},
        {"name": "profile", "valueUri": strict}]});
    let (status, oo) = json_of(s.send(Method::POST, "Patient/$validate", &body).await).await;
    assert_eq!(status, 200, "{oo}");
    let errs = errors(&oo);
    let has = |at: &str, text: &str| errs.iter().any(|(a, m)| a == at && m.contains(text));
    // The sound profile from the same folder is in force, and names itself.
    assert!(
        has(
            "Patient",
            &format!("Patient.gender is required: minimum cardinality 1, found 0 (from {strict})")
        ),
        "{oo}"
    );
    assert!(
        has(
            "Patient.modifierExtension[0]",
            "modifier extension http://other.org/fhir/ext/unheard-of is unknown"
        ),
        "{oo}"
    );
    // valueString where the definition allows integer only.
    assert!(
        has(
            "Patient.extension[0].valueString",
            "the type String is not allowed here; allowed: integer (from http://example.org/fhir/ext/shoe-size)"
        ),
        "{oo}"
    );
    // Defined for Patient, used on a HumanName: a warning by default (an error with
    // `Validator::with_extension_rules(Severity::Error)`, as the suite runner asks).
    let warned = oo["issue"].as_array().into_iter().flatten().any(|i| {
        i["severity"] == "warning"
            && i["expression"][0] == "Patient.name[0].extension[0]"
            && i["diagnostics"].as_str().is_some_and(|m| {
                m.contains("is not allowed here (this element is HumanName at Patient.name")
            })
    });
    assert!(warned, "{oo}");
    // Also: birthDate (the profile), and value[x] missing since the only value has the wrong type.
    assert_eq!(errs.len(), 5, "{oo}");
}
