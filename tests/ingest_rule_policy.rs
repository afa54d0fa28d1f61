//! The sender's policy for profile rules on ingest (issue 5, "Bad input"; issue 8, validation of
//! the translated resources against profiles/cn), over a real server and SQLite file:
//! - the WS/T 846 sample H0201 (身份证号 120109197706015516, check character should be 4) is
//!   accepted by default: AA with a warning detail, the Patient stored claiming CNPatient, the
//!   warning in the Provenance of the message, the counter in `/metrics`;
//! - `$validate` and `huitong validate` still report the stored Patient's check character as an
//!   error;
//! - a sender set to reject gets AE naming the profile, the element and the rule, and nothing
//!   is stored, while another sender's identical message is still accepted;
//! - the same for a WS/T 500 document through `POST /cda` (its sender is its custodian).

mod common;

use common::{TestServer, json_of};
use huitong::config::RuleAction;
use serde_json::Value;
use std::collections::HashMap;

const CN_PATIENT: &str = "http://huitong.dev/fhir/cn/StructureDefinition/CNPatient";
const NATIONAL_ID: &str = "urn:oid:2.16.156.10011.1.3";
const H0201_ID: &str = "120109197706015516";
/// The sender device id of H0201 (`sender/device/id/item/@extension`).
const H0201_SENDER: &str = "222";

fn h0201() -> Option<Vec<u8>> {
    let p = common::corpora("cn-hie/v3/H02/H0201Rt.xml")?;
    Some(std::fs::read(p).unwrap())
}

/// A sender set to reject the GB 11643 check-character rule.
fn rejecting(sender: &str) -> impl FnOnce(&mut huitong::config::Settings) {
    let sender = sender.to_string();
    move |s| {
        s.ingest_rules_by_sender.insert(
            sender,
            HashMap::from([("cn-id-3".to_string(), RuleAction::Reject)]),
        );
    }
}

async fn post(server: &TestServer, path: &str, ct: &str, body: Vec<u8>) -> (u16, String) {
    server.post_raw(path, ct, body).await
}

use common::v3_ack as ack;

async fn total(server: &TestServer) -> u64 {
    let (s, v) = json_of(server.get("?_summary=count").await).await;
    assert_eq!(s, 200, "{v}");
    v["total"].as_u64().unwrap()
}

/// The stored Patient with this 身份证号.
async fn patient(server: &TestServer, id: &str) -> Value {
    let (s, v) = json_of(
        server
            .get(&format!("Patient?identifier={NATIONAL_ID}%7C{id}"))
            .await,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["total"], 1, "{v}");
    v["entry"][0]["resource"].clone()
}

/// The warnings of the Provenance that targets `reference`, from its contained OperationOutcome.
async fn provenance_warnings(server: &TestServer, reference: &str) -> Vec<Value> {
    let (s, v) = json_of(server.get(&format!("Provenance?target={reference}")).await).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["total"].as_u64().unwrap() >= 1, "{reference}: {v}");
    v["entry"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            e["resource"]["contained"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter(|c| c["resourceType"] == "OperationOutcome")
        .flat_map(|oo| oo["issue"].as_array().cloned().unwrap_or_default())
        .filter(|i| i["severity"] == "warning" && i["code"] == "invariant")
        .collect()
}

/// The message names the profile, the element and the rule.
fn names_profile_element_and_rule(text: &str) {
    for part in [CN_PATIENT, "Patient.identifier", "cn-id-3"] {
        assert!(text.contains(part), "'{part}' missing from: {text}");
    }
}

#[tokio::test]
async fn by_default_a_wrong_check_character_is_accepted_with_a_warning_recorded_and_counted() {
    let Some(raw) = h0201() else {
        return;
    };
    let server = TestServer::start().await;
    let (status, xml) = post(&server, "hl7v3", "application/xml", raw).await;
    assert_eq!(status, 200);
    let (code, detail_type, text) = ack(&xml);
    assert_eq!((code.as_str(), detail_type.as_str()), ("AA", "W"), "{xml}");
    names_profile_element_and_rule(&text);
    assert!(
        text.contains(&format!(
            "the policy of sender '{H0201_SENDER}' lets cn-id-3 through"
        )),
        "{text}"
    );

    // Stored, claiming the profile, nothing lost.
    let pat = patient(&server, H0201_ID).await;
    assert_eq!(pat["meta"]["profile"][0], CN_PATIENT, "{pat}");
    let pid = pat["id"].as_str().unwrap().to_string();

    // The Provenance of the message records the warning at the element.
    let warnings = provenance_warnings(&server, &format!("Patient/{pid}")).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["expression"][0], "Patient.identifier[0]");
    names_profile_element_and_rule(warnings[0]["diagnostics"].as_str().unwrap());
    assert_eq!(
        warnings[0]["details"]["text"],
        format!("rule cn-id-3 let through for sender '{H0201_SENDER}'")
    );

    // Counted, by sender and rule.
    let m = server.metrics().await;
    let line = format!(
        "huitong_ingest_rule_violations_accepted_total{{sender=\"{H0201_SENDER}\",rule=\"cn-id-3\"}} 1"
    );
    assert!(m.contains(&line), "{m}");

    // `$validate` on the stored Patient still reports the rule as an error.
    let (s, oo) = json_of(server.get(&format!("Patient/{pid}/$validate")).await).await;
    assert_eq!(s, 200, "{oo}");
    let errors: Vec<&Value> = oo["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{oo}");
    assert_eq!(errors[0]["code"], "invariant");
    assert_eq!(errors[0]["expression"][0], "Patient.identifier[0]");
    names_profile_element_and_rule(errors[0]["diagnostics"].as_str().unwrap());

    // And so does `huitong validate` on the same resource.
    let file = server.dir.path().join("h0201-patient.json");
    std::fs::write(&file, serde_json::to_vec(&pat).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_huitong"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("HUITONG_MLLP_ADDR", "off")
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    assert!(printed.contains("invalid (1 error"), "{printed}");
    names_profile_element_and_rule(&printed);
    server.stop().await;
}

#[tokio::test]
async fn a_sender_set_to_reject_gets_ae_naming_profile_element_and_rule_and_nothing_is_stored() {
    let Some(raw) = h0201() else {
        return;
    };
    let server = TestServer::start_in(tempfile::tempdir().unwrap(), rejecting(H0201_SENDER)).await;
    let (status, xml) = post(&server, "hl7v3", "application/xml", raw.clone()).await;
    assert_eq!(status, 200);
    let (code, detail_type, text) = ack(&xml);
    assert_eq!((code.as_str(), detail_type.as_str()), ("AE", "E"), "{xml}");
    names_profile_element_and_rule(&text);
    assert!(
        text.contains(&format!(
            "the policy of sender '{H0201_SENDER}' rejects cn-id-3"
        )),
        "{text}"
    );
    assert!(
        xml.contains("22a0f9e0-4454-11dc-a6be-3603d6866807"),
        "{xml}"
    );
    assert_eq!(total(&server).await, 0, "a refused message writes nothing");
    assert!(
        !server
            .metrics()
            .await
            .contains("huitong_ingest_rule_violations_accepted_total{"),
        "nothing was accepted"
    );

    // The policy is the sender's: the same message from another device is accepted.
    let other = String::from_utf8(raw)
        .unwrap()
        .replace("extension=\"222\"", "extension=\"333\"");
    let (_, xml) = post(&server, "hl7v3", "application/xml", other.into_bytes()).await;
    assert_eq!(ack(&xml).0, "AA", "{xml}");
    patient(&server, H0201_ID).await;
    server.stop().await;
}

/// C001 病历概要: its 身份证号 420106201101011919 has a wrong check character too (7 is right);
/// its custodian is 1234567890.
fn c001() -> Option<Vec<u8>> {
    let dir = common::corpora("cn-hie/cda")?;
    let p = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("C001"))
        .unwrap();
    Some(std::fs::read(p).unwrap())
}

#[tokio::test]
async fn a_cda_document_follows_the_policy_of_its_custodian() {
    let Some(raw) = c001() else {
        return;
    };
    let server = TestServer::start().await;
    let (status, body) = post(&server, "cda", "application/hl7-cda+xml", raw.clone()).await;
    assert_eq!(status, 201, "{body}");
    let pat = patient(&server, "420106201101011919").await;
    assert_eq!(pat["meta"]["profile"][0], CN_PATIENT, "{pat}");
    let warnings =
        provenance_warnings(&server, &format!("Patient/{}", pat["id"].as_str().unwrap())).await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    names_profile_element_and_rule(warnings[0]["diagnostics"].as_str().unwrap());
    assert!(server.metrics().await.contains(
        "huitong_ingest_rule_violations_accepted_total{sender=\"1234567890\",rule=\"cn-id-3\"} 1"
    ));
    server.stop().await;

    let server = TestServer::start_in(tempfile::tempdir().unwrap(), rejecting("1234567890")).await;
    let (status, body) = post(&server, "cda", "application/hl7-cda+xml", raw).await;
    assert_eq!(status, 422, "{body}");
    let oo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let first = oo["issue"][0]["diagnostics"].as_str().unwrap();
    names_profile_element_and_rule(first);
    assert!(
        first.contains("the policy of sender '1234567890' rejects cn-id-3"),
        "{first}"
    );
    assert_eq!(total(&server).await, 0, "a refused document writes nothing");
    server.stop().await;
}

fn sample_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sample_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "xml") {
            out.push(p);
        }
    }
}

/// Every v3 and CDA sample is accepted with the default policy, the Patients and Practitioners of
/// CDA headers and the persons, practitioners and departments v3 registers claim (and so were
/// validated against) their CN profile, and what was
/// let through is only ever a GB 11643 身份证号 rule. Failures are collected, not stopped at.
#[tokio::test]
async fn every_v3_and_cda_sample_is_accepted_claiming_the_cn_profiles() {
    let (Some(v3), Some(cda)) = (common::corpora("cn-hie/v3"), common::corpora("cn-hie/cda"))
    else {
        return;
    };
    let (mut v3_files, mut cda_files) = (Vec::new(), Vec::new());
    sample_files(&v3, &mut v3_files);
    sample_files(&cda, &mut cda_files);
    v3_files.sort();
    cda_files.sort();
    assert_eq!((v3_files.len(), cda_files.len()), (34, 40));
    let server = TestServer::start().await;
    let mut failures = Vec::new();
    let mut warned = Vec::new();
    let lets_through_only_id_rules = |text: &str| {
        text.split("accepted although it breaks ").skip(1).all(|w| {
            ["cn-id-1 ", "cn-id-2 ", "cn-id-3 "]
                .iter()
                .any(|r| w.starts_with(r))
        })
    };
    for p in &v3_files {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let (_, xml) = post(
            &server,
            "hl7v3",
            "application/xml",
            std::fs::read(p).unwrap(),
        )
        .await;
        let (code, detail_type, text) = ack(&xml);
        // Queries answer with their query response (no acknowledgement detail of type W/E).
        if code != "AA" && !xml.contains("queryAck") {
            failures.push(format!("{name}: {code} {text}"));
        } else if detail_type == "W" {
            if !lets_through_only_id_rules(&text) {
                failures.push(format!(
                    "{name}: let through more than 身份证号 rules: {text}"
                ));
            }
            warned.push(name);
        }
    }
    for p in &cda_files {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let (status, body) = post(
            &server,
            "cda",
            "application/hl7-cda+xml",
            std::fs::read(p).unwrap(),
        )
        .await;
        if status != 201 {
            failures.push(format!("{name}: {status} {body}"));
            continue;
        }
        let bundle: Value = serde_json::from_str(&body).unwrap();
        for e in bundle["entry"].as_array().unwrap() {
            let r = &e["resource"];
            let ty = r["resourceType"].as_str().unwrap();
            // The custodian claims nothing (C007 names it by its id only).
            if ["Patient", "Practitioner"].contains(&ty) {
                let want = format!("http://huitong.dev/fhir/cn/StructureDefinition/CN{ty}");
                if r["meta"]["profile"][0] != want.as_str() {
                    failures.push(format!("{name}: {ty}/{} claims no {want}", r["id"]));
                }
            }
        }
    }
    // What the v3 messages registered claims its profile too.
    let mut claims = 0;
    for ty in ["Patient", "Practitioner", "Organization"] {
        let (_, found) = json_of(server.get(&format!("{ty}?_count=1000")).await).await;
        let want = format!("http://huitong.dev/fhir/cn/StructureDefinition/CN{ty}");
        for e in found["entry"].as_array().unwrap() {
            if e["resource"]["meta"]["profile"][0] == want.as_str() {
                claims += 1;
            }
        }
    }
    println!(
        "cn-hie: {} v3 messages and {} CDA documents; {claims} stored resources claim a CN profile; accepted with 身份证号 warnings: {warned:?}",
        v3_files.len(),
        cda_files.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(warned.contains(&"H0201Rt.xml".to_string()), "{warned:?}");
    assert!(claims > 0);
    server.stop().await;
}
