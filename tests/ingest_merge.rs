//! Messages and documents that name a registered person add to the stored Patient and drop
//! nothing (`ingest::merge`): the national person register sample (PRPA_IN201311UV02, 刘永好)
//! is registered, then a document register (RCMR_IN000002UV02), an order (POOR_IN200901UV) and a
//! CDA document (C001) naming the same 身份证号 are ingested, all national samples read in place
//! (the order's and the document's person re-keyed to the registered 身份证号); after each one
//! every identifier, telecom and name the register stored is still there, the new ones were
//! added, there is one Patient, and a value the store kept over the message's is recorded.

mod common;

use common::{TestServer, json_of};
use serde_json::Value;
use std::path::Path;

const ID_CARD: &str = "120109197706015516";
const CN_PATIENT: &str = "http://huitong.dev/fhir/cn/StructureDefinition/CNPatient";

fn sample(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (acknowledgement typeCode, acknowledgementDetail typeCode, detail text).
async fn post_v3(server: &TestServer, body: String) -> (String, String, String) {
    let (status, xml) = server.post_raw("hl7v3", "application/xml", body).await;
    assert_eq!(status, 200, "{xml}");
    common::v3_ack(&xml)
}

/// The one Patient with the registered 身份证号.
async fn the_patient(server: &TestServer) -> Value {
    let (s, v) = json_of(server.get(&format!("Patient?identifier={ID_CARD}")).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 1, "one person, one Patient: {v}");
    v["entry"][0]["resource"].clone()
}

fn entries(p: &Value, key: &str) -> Vec<Value> {
    p[key].as_array().cloned().unwrap_or_default()
}

fn has_identifier(p: &Value, value: &str) -> bool {
    entries(p, "identifier").iter().any(|i| i["value"] == value)
}

fn has_telecom(p: &Value, value: &str) -> bool {
    entries(p, "telecom").iter().any(|t| t["value"] == value)
}

/// Every identifier, telecom, name and address of `registered` is in `now`, with its profile
/// claim and its single values.
fn nothing_lost(registered: &Value, now: &Value, after: &str) {
    for key in ["identifier", "telecom", "name", "address"] {
        for e in entries(registered, key) {
            assert!(
                entries(now, key).contains(&e),
                "after {after}: {key} {e} was lost: {now}"
            );
        }
    }
    for key in [
        "gender",
        "birthDate",
        "maritalStatus",
        "managingOrganization",
    ] {
        assert_eq!(registered[key], now[key], "after {after}: {key} changed");
    }
    let claims = now["meta"]["profile"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        claims.contains(&Value::from(CN_PATIENT)),
        "after {after}: {now}"
    );
}

/// The conflicts (`#kept`) the Provenances targeting `Patient/{pid}` record.
async fn recorded_conflicts(server: &TestServer, pid: &str) -> Vec<Value> {
    let (s, provs) = json_of(
        server
            .get(&format!("Provenance?target=Patient/{pid}"))
            .await,
    )
    .await;
    assert_eq!(s, 200, "{provs}");
    provs["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| {
            e["resource"]["contained"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["id"] == "kept")
        .flat_map(|oo| oo["issue"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn messages_and_documents_naming_a_registered_person_lose_nothing() {
    let Some(v3) = common::corpora("cn-hie/v3") else {
        return;
    };
    let Some(cda) = common::corpora("cn-hie/cda") else {
        return;
    };
    let server = TestServer::start().await;

    let (code, _, detail) = post_v3(&server, sample(&v3, "H02/H0201Rt.xml")).await;
    assert_eq!(code, "AA", "{detail}");
    let registered = the_patient(&server).await;
    // What the register states and a stub would lose: the 健康卡号 and the local patient id
    // beside the 身份证号, the telephone, the address.
    for v in [ID_CARD, "38273N237", "患者ID"] {
        assert!(has_identifier(&registered, v), "{v}: {registered}");
    }
    assert!(has_telecom(&registered, "028-2222444"), "{registered}");
    assert!(!entries(&registered, "address").is_empty(), "{registered}");
    assert_eq!(registered["gender"], "male");

    // (a) The document register names the person by 身份证号 and its own patient id.
    let (code, _, detail) = post_v3(&server, sample(&v3, "H06/H0601Rt.xml")).await;
    assert_eq!(code, "AA", "{detail}");
    let p = the_patient(&server).await;
    nothing_lost(&registered, &p, "the document register");
    assert!(
        has_identifier(&p, "11"),
        "the register's patient id is added: {p}"
    );

    // (b) An order for the person (the sample's patient re-keyed to the registered 身份证号),
    // stating another sex: the stored one is kept, and the acknowledgement and the message's
    // Provenance say what the message stated.
    let order = sample(&v3, "H08/H0801Rt.xml")
        .replace(
            r#"<item root="2.16.156.10011.1.3" extension="1234567890"/>"#,
            &format!(r#"<item root="2.16.156.10011.1.3" extension="{ID_CARD}"/>"#),
        )
        .replacen(
            r#"<administrativeGenderCode code="1""#,
            r#"<administrativeGenderCode code="2""#,
            1,
        );
    assert!(order.contains(ID_CARD) && order.contains(r#"administrativeGenderCode code="2""#));
    let (code, detail_type, detail) = post_v3(&server, order).await;
    assert_eq!(
        (code.as_str(), detail_type.as_str()),
        ("AA", "W"),
        "{detail}"
    );
    assert!(
        detail.contains("warning") && detail.contains("gender") && detail.contains("female"),
        "the kept value is in the acknowledgement: {detail}"
    );
    let p = the_patient(&server).await;
    nothing_lost(&registered, &p, "the order");
    assert!(has_identifier(&p, "HA201102113366666"), "{p}");
    assert!(has_telecom(&p, "13578945678"), "{p}");
    let pid = p["id"].as_str().unwrap().to_string();
    let issues = recorded_conflicts(&server, &pid).await;
    assert!(
        issues.iter().any(|i| i["expression"][0] == "Patient.gender"
            && i["diagnostics"].as_str().unwrap().contains("female")),
        "{issues:?}"
    );

    // (c) A CDA document whose patient is the registered person: its 健康档案 number, telephone
    // and address are added; its other birth date and its other 健康卡号 (CNPatient allows one)
    // are recorded, not stored.
    let cda_path = cda.join("C001病历概要.xml");
    let doc = std::fs::read_to_string(&cda_path)
        .unwrap()
        .replace("420106201101011919", ID_CARD);
    let resp = server
        .http
        .post(format!("{}/cda", server.root))
        .header("content-type", "application/hl7-cda+xml")
        .body(doc)
        .send()
        .await
        .unwrap();
    let (status, bundle) = json_of(resp).await;
    assert_eq!(status, 201, "{bundle}");
    let p = the_patient(&server).await;
    nothing_lost(&registered, &p, "the CDA document");
    assert!(has_identifier(&p, "12345678901234567"), "{p}");
    assert!(!has_identifier(&p, "MS201102113366666"), "{p}");
    assert!(has_telecom(&p, "010-234433"), "{p}");
    assert_eq!(p["birthDate"], registered["birthDate"]);
    // Nothing else written by the document points at another Patient.
    let comp = &bundle["entry"][0]["resource"];
    let (s, c) = json_of(
        server
            .get(&format!("Composition/{}", comp["id"].as_str().unwrap()))
            .await,
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["subject"]["reference"], format!("Patient/{pid}"));
    let issues = recorded_conflicts(&server, &pid).await;
    assert!(
        issues
            .iter()
            .any(|i| i["expression"][0] == "Patient.birthDate"),
        "{issues:?}"
    );
    assert!(
        issues.iter().any(|i| i["expression"][0]
            .as_str()
            .unwrap()
            .starts_with("Patient.identifier[")
            && i["diagnostics"]
                .as_str()
                .unwrap()
                .contains("MS201102113366666")),
        "{issues:?}"
    );
    // The history holds every version, each one a superset of the registered record.
    let (s, h) = json_of(server.get(&format!("Patient/{pid}/_history")).await).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(
        h["total"], 4,
        "register, document register, order, CDA: {h}"
    );
}

/// The register and an order naming the same, not yet stored, person arrive at the same moment
/// (four times, each on a fresh store): both create the Patient only if it is still absent, so
/// the one that finds it created meanwhile merges into it. One Patient holds every identifier
/// either stated and the register's telephone, in whichever order they commit.
#[tokio::test]
async fn two_messages_creating_one_person_at_once_end_as_one_merged_record() {
    let Some(v3) = common::corpora("cn-hie/v3") else {
        return;
    };
    let register = sample(&v3, "H02/H0201Rt.xml");
    let order = sample(&v3, "H08/H0801Rt.xml").replace(
        r#"<item root="2.16.156.10011.1.3" extension="1234567890"/>"#,
        &format!(r#"<item root="2.16.156.10011.1.3" extension="{ID_CARD}"/>"#),
    );
    assert!(order.contains(ID_CARD));
    for round in 0..4 {
        let server = TestServer::start().await;
        let ((a, _, a_detail), (b, _, b_detail)) = futures_util::future::join(
            post_v3(&server, register.clone()),
            post_v3(&server, order.clone()),
        )
        .await;
        assert_eq!(
            (a.as_str(), b.as_str()),
            ("AA", "AA"),
            "round {round}: {a_detail} / {b_detail}"
        );
        let p = the_patient(&server).await;
        for v in [ID_CARD, "38273N237", "HA201102113366666"] {
            assert!(has_identifier(&p, v), "round {round}: {v} lost: {p}");
        }
        // The register's telephone whichever came first: a later register replaces the order's
        // (it is the person's own update), a later order adds to the register's.
        assert!(has_telecom(&p, "028-2222444"), "round {round}: {p}");
    }
}

#[tokio::test]
async fn an_update_replaces_what_it_states_and_keeps_identifiers_it_does_not_replace() {
    let Some(v3) = common::corpora("cn-hie/v3") else {
        return;
    };
    let server = TestServer::start().await;
    let (code, _, detail) = post_v3(&server, sample(&v3, "H02/H0201Rt.xml")).await;
    assert_eq!(code, "AA", "{detail}");
    let registered = the_patient(&server).await;
    // The national update sample states another 健康卡号 (CNPatient allows one: it replaces the
    // registered one, which the update's Provenance records); here also another telephone and
    // marital status.
    let update = sample(&v3, "H02/H0202Rt.xml")
        .replace(
            r#"<item value="028-2222444"/>"#,
            r#"<item value="028-7777777"/>"#,
        )
        .replace(
            r#"<maritalStatusCode code="10""#,
            r#"<maritalStatusCode code="20""#,
        );
    let (code, _, detail) = post_v3(&server, update).await;
    assert_eq!(code, "AA", "{detail}");
    let p = the_patient(&server).await;
    let old_card =
        serde_json::json!({"system": "urn:oid:2.16.156.10011.1.19", "value": "38273N237"});
    assert!(entries(&registered, "identifier").contains(&old_card));
    for i in entries(&registered, "identifier") {
        if i != old_card {
            assert!(entries(&p, "identifier").contains(&i), "{i} lost: {p}");
        }
    }
    assert!(has_identifier(&p, "38273N2SDFDSF37"), "{p}");
    assert!(!entries(&p, "identifier").contains(&old_card), "{p}");
    let pid = p["id"].as_str().unwrap();
    let replaced: Vec<Value> = recorded_conflicts(&server, pid)
        .await
        .into_iter()
        .filter(|i| {
            i["diagnostics"]
                .as_str()
                .is_some_and(|d| d.contains("replaced the stored") && d.contains("38273N237"))
        })
        .collect();
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert!(has_telecom(&p, "028-7777777"), "{p}");
    assert!(
        !has_telecom(&p, "028-2222444"),
        "what the update states replaces: {p}"
    );
    assert_eq!(p["maritalStatus"]["coding"][0]["code"], "20", "{p}");
    assert!(
        p["meta"]["profile"]
            .as_array()
            .unwrap()
            .contains(&Value::from(CN_PATIENT))
    );
}
