//! HL7 v3 interactions over `POST /hl7v3`: every sample of `cn-hie/v3` (read in place) is
//! answered AA (or with its query response) naming the original message id, and what it
//! registered is found in FHIR by its identifiers; round trips through the query interactions,
//! `$hl7v3` and the document register/retrieve with hand-written messages; SOAP 1.1 and 1.2;
//! bad input (unknown interaction, missing patient id, XXE, billion laughs, truncated, wrong
//! OIDs, oversized body) answered AE with the reason, with nothing stored.

mod common;

use common::{TestServer, json_of};
use std::path::PathBuf;

const V3: &str = "urn:hl7-org:v3";

async fn post_v3(server: &TestServer, body: impl Into<reqwest::Body>) -> (u16, String) {
    server.post_raw("hl7v3", "application/xml", body).await
}

/// (root element, acknowledgement typeCode, target message id, detail text, queryResponseCode).
fn answer(xml: &str) -> (String, String, String, String, String) {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
    let mut root = doc.root_element();
    if root.tag_name().name() == "Envelope" {
        root = root
            .descendants()
            .find(|d| d.is_element() && d.tag_name().namespace() == Some(V3))
            .unwrap();
    }
    let find = |name: &str| {
        root.descendants()
            .find(|d| d.is_element() && d.tag_name().name() == name)
    };
    let ack = find("acknowledgement")
        .and_then(|a| a.attribute("typeCode"))
        .unwrap_or("")
        .to_string();
    let target = find("targetMessage")
        .and_then(|t| t.children().find(|c| c.is_element()))
        .and_then(|i| i.attribute("extension"))
        .unwrap_or("")
        .to_string();
    let detail = find("acknowledgementDetail")
        .and_then(|d| d.children().find(|c| c.is_element()))
        .and_then(|t| t.attribute("value"))
        .unwrap_or("")
        .to_string();
    let qr = find("queryResponseCode")
        .and_then(|q| q.attribute("code"))
        .unwrap_or("")
        .to_string();
    (root.tag_name().name().to_string(), ack, target, detail, qr)
}

async fn total(server: &TestServer) -> u64 {
    let (s, v) = json_of(server.get("?_summary=count").await).await;
    assert_eq!(s, 200, "{v}");
    v["total"].as_u64().unwrap()
}

async fn found(server: &TestServer, ty: &str, system: &str, value: &str) -> serde_json::Value {
    let q = format!("{ty}?identifier={}|{}", urlencode(system), urlencode(value));
    let (s, v) = json_of(server.get(&q).await).await;
    assert_eq!(s, 200, "{q}: {v}");
    v
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn items<'a>(root: roxmltree::Node<'a, 'a>, parent: &str) -> Vec<(String, String)> {
    root.descendants()
        .filter(|d| d.is_element() && d.tag_name().name() == parent)
        .flat_map(|p| {
            p.children()
                .filter(|c| c.is_element() && c.tag_name().name() == "id")
                .flat_map(|id| {
                    let mut v: Vec<roxmltree::Node> = id
                        .children()
                        .filter(|i| i.is_element() && i.tag_name().name() == "item")
                        .collect();
                    if v.is_empty() {
                        v.push(id);
                    }
                    v
                })
                .filter_map(|i| {
                    Some((
                        i.attribute("root")?.to_string(),
                        i.attribute("extension")?.trim().to_string(),
                    ))
                })
                .collect::<Vec<_>>()
        })
        .filter(|(_, e)| !e.is_empty())
        .collect()
}

#[tokio::test]
async fn every_v3_sample_is_answered_and_registered() {
    let Some(dir) = common::corpora("cn-hie/v3") else {
        return;
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for d in std::fs::read_dir(&dir).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            paths.push(f.unwrap().path());
        }
    }
    paths.sort();
    assert_eq!(paths.len(), 34);
    let server = TestServer::start().await;
    let (mut acks, mut queries, mut facts) = (0, 0, 0);
    for p in &paths {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let raw = std::fs::read(p).unwrap();
        let text = String::from_utf8(raw.clone()).unwrap();
        let doc = roxmltree::Document::parse(text.trim_start_matches('\u{feff}')).unwrap();
        let root = doc.root_element();
        let msg_id = root
            .children()
            .find(|c| c.is_element() && c.tag_name().name() == "id")
            .and_then(|i| i.attribute("extension"))
            .unwrap()
            .to_string();
        let (status, xml) = post_v3(&server, raw).await;
        assert_eq!(status, 200, "{name}");
        let (answer_root, ack, target, detail, qr) = answer(&xml);
        assert_eq!(ack, "AA", "{name}: {detail}\n{xml}");
        assert_eq!(
            target, msg_id,
            "{name}: the answer names the original message id"
        );
        let is_query = root
            .descendants()
            .any(|d| d.is_element() && (d.tag_name().name().starts_with("queryByParameter")));
        if is_query {
            queries += 1;
            assert_ne!(
                answer_root, "MCCI_IN000002UV01",
                "{name}: a query gets its query response"
            );
            assert!(qr == "OK" || qr == "NF", "{name}: {xml}");
            continue;
        }
        acks += 1;
        assert_eq!(answer_root, "MCCI_IN000002UV01", "{name}");
        // What was registered is found by its identifiers, with its OIDs.
        let families: &[(&str, &str)] = &[
            ("patientPerson", "Patient"),
            ("encounterEvent", "Encounter"),
            ("substanceAdministrationRequest", "MedicationRequest"),
            ("healthCareProvider", "Practitioner"),
        ];
        for (element, ty) in families {
            for (r, x) in items(root, element) {
                if !r.starts_with("2.16.156.10011.1.") {
                    continue;
                }
                let v = found(&server, ty, &format!("urn:oid:{r}"), &x).await;
                assert!(
                    v["total"].as_u64().unwrap() >= 1,
                    "{name}: {ty} {r}|{x}: {v}"
                );
                facts += 1;
                if *ty == "Patient" {
                    let pat = &v["entry"][0]["resource"];
                    // A person registered or updated claims CNPatient and was validated against
                    // it (messages about a visit, an order or a document only name the person).
                    if ["PRPA_IN201311UV02", "PRPA_IN201314UV02"].contains(&root.tag_name().name())
                    {
                        assert_eq!(
                            pat["meta"]["profile"][0],
                            "http://huitong.dev/fhir/cn/StructureDefinition/CNPatient",
                            "{name}"
                        );
                    }
                    let person = root
                        .descendants()
                        .find(|d| d.tag_name().name() == "patientPerson")
                        .unwrap();
                    if let Some(g) = person
                        .descendants()
                        .find(|d| d.tag_name().name() == "administrativeGenderCode")
                        .and_then(|g| g.attribute("code"))
                    {
                        assert_eq!(
                            pat["gender"],
                            if g == "1" {
                                "male"
                            } else if g == "2" {
                                "female"
                            } else {
                                "unknown"
                            },
                            "{name}"
                        );
                        facts += 1;
                    }
                    if let Some(b) = person
                        .descendants()
                        .find(|d| d.tag_name().name() == "birthTime")
                        .and_then(|b| b.attribute("value"))
                    {
                        assert_eq!(
                            pat["birthDate"],
                            format!("{}-{}-{}", &b[0..4], &b[4..6], &b[6..8]),
                            "{name}"
                        );
                        facts += 1;
                    }
                    let part = person
                        .descendants()
                        .find(|d| d.tag_name().name() == "part")
                        .and_then(|p| p.attribute("value"))
                        .unwrap();
                    assert!(
                        pat["name"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|n| n["text"] == part),
                        "{name}: {pat}"
                    );
                    facts += 1;
                }
            }
        }
        if root.tag_name().name().starts_with("PRVS") {
            let vs = root
                .descendants()
                .find(|d| d.tag_name().name() == "valueSet")
                .unwrap();
            let id = vs
                .children()
                .find(|c| c.tag_name().name() == "id")
                .and_then(|i| i.attribute("extension"))
                .unwrap();
            let v = found(&server, "CodeSystem", "", id).await;
            assert_eq!(v["total"], 1, "{name}");
            let codes: Vec<&str> = vs
                .descendants()
                .filter(|d| d.tag_name().name() == "code")
                .filter_map(|c| c.attribute("code"))
                .collect();
            let concepts = v["entry"][0]["resource"]["concept"].as_array().unwrap();
            assert_eq!(concepts.len(), codes.len(), "{name}");
            facts += 1;
        }
        if root.tag_name().name().starts_with("PRPM_IN40") {
            for (r, x) in items(root, "assignedEntity").into_iter().take(1) {
                let v = found(&server, "Organization", &format!("urn:oid:{r}"), &x).await;
                assert_eq!(v["total"], 1, "{name}: {r}|{x}");
                facts += 1;
            }
        }
    }
    println!(
        "cn-hie v3: {} messages, {acks} AA, {queries} query responses, {facts} registered facts found",
        paths.len()
    );
}

/// A WS/T 500 document written for this test.
const MY_CDA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <realmCode code="CN"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_MT000040"/>
  <templateId root="2.16.156.10011.2.1.1.22"/>
  <id root="2.16.156.10011.1.1" extension="TEST-DOC-7"/>
  <code code="C0002" codeSystem="2.16.156.10011.2.4"/>
  <title>门急诊病历</title>
  <effectiveTime value="20240301101500"/>
  <recordTarget><patientRole>
    <id root="2.16.156.10011.1.11" extension="MZ-77"/>
    <patient><id root="2.16.156.10011.1.3" extension="11010519491231002X"/><name>王测试</name>
      <administrativeGenderCode code="2" codeSystem="2.16.156.10011.2.3.3.4"/><birthTime value="19491231"/></patient>
  </patientRole></recordTarget>
  <author><time value="20240301"/><assignedAuthor><id root="2.16.156.10011.1.4" extension="D-9"/><assignedPerson><name>赵医生</name></assignedPerson></assignedAuthor></author>
  <custodian><assignedCustodian><representedCustodianOrganization><id root="2.16.156.10011.1.5" extension="H-1"/><name>测试医院</name></representedCustodianOrganization></assignedCustodian></custodian>
  <component><structuredBody><component><section>
    <code code="29548-5" codeSystem="2.16.840.1.113883.6.1"/><text>诊断</text>
    <entry><observation classCode="OBS" moodCode="EVN"><code code="DE05.01.024.00" codeSystem="2.16.156.10011.2.2.1"/>
      <value xsi:type="CD" code="J06.9" codeSystem="2.16.156.10011.2.3.3.11" displayName="急性上呼吸道感染"/></observation></entry>
    <entry><observation classCode="OBS" moodCode="EVN"><code code="DE04.10.188.00" codeSystem="2.16.156.10011.2.2.1"/>
      <value xsi:type="PQ" value="61.50" unit="kg"/></observation></entry>
  </section></component></structuredBody></component>
</ClinicalDocument>"#;

fn base64(bytes: &[u8]) -> String {
    huitong::mapping::datatypes::base64(bytes)
}

fn wrapper(interaction: &str, id: &str, body: &str) -> String {
    format!(
        r#"<{interaction} xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ITSVersion="XML_1.0">
<id root="2.16.156.10011.2.5.1.1" extension="{id}"/><creationTime value="20240301101500"/>
<interactionId root="2.16.156.10011.2.5.1.2" extension="{interaction}"/>
<receiver typeCode="RCV"><device><id><item root="2.16.156.10011.2.5.1.3" extension="HIP"/></id></device></receiver>
<sender typeCode="SND"><device><id><item root="2.16.156.10011.2.5.1.3" extension="HIS-7"/></id></device></sender>
<controlActProcess classCode="CACT" moodCode="EVN">{body}</controlActProcess></{interaction}>"#
    )
}

fn person(root_id: &str, ext: &str) -> String {
    format!(
        r#"<subject><registrationRequest><subject1><patient>
<id><item root="2.16.156.10011.2.5.1.4" extension="L-55"/></id>
<patientPerson><id><item root="{root_id}" extension="{ext}"/></id>
<name><item><part value="钱测试"/></item></name>
<administrativeGenderCode code="1" codeSystem="2.16.156.10011.2.3.3.4"/><birthTime value="19800102"/></patientPerson>
</patient></subject1></registrationRequest></subject>"#
    )
}

#[tokio::test]
async fn register_query_render_and_retrieve_round_trip() {
    let server = TestServer::start().await;
    // Person register, then the query finds it, then $hl7v3 renders it.
    let (_, xml) = post_v3(
        &server,
        wrapper(
            "PRPA_IN201311UV02",
            "M-1",
            &person("2.16.156.10011.1.3", "110101198001020011"),
        ),
    )
    .await;
    let (_, ack, target, detail, _) = answer(&xml);
    assert_eq!((ack.as_str(), target.as_str()), ("AA", "M-1"), "{detail}");
    let q = wrapper(
        "PRPA_IN201305UV02",
        "Q-1",
        r#"<queryByParameter><queryId extension="QQ"/><parameterList><livingSubjectId><value><item root="2.16.156.10011.1.3" extension="110101198001020011"/></value></livingSubjectId></parameterList></queryByParameter>"#,
    );
    let (_, xml) = post_v3(&server, q).await;
    let (root, ack, target, _, qr) = answer(&xml);
    assert_eq!(
        (root.as_str(), ack.as_str(), target.as_str(), qr.as_str()),
        ("PRPA_IN201306UV02", "AA", "Q-1", "OK"),
        "{xml}"
    );
    assert!(
        xml.contains("钱测试") && xml.contains("110101198001020011") && xml.contains("19800102"),
        "{xml}"
    );
    let v = found(
        &server,
        "Patient",
        "urn:oid:2.16.156.10011.1.3",
        "110101198001020011",
    )
    .await;
    let id = v["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = server.get(&format!("Patient/{id}/$hl7v3")).await;
    assert_eq!(r.status().as_u16(), 200);
    let rendered = r.text().await.unwrap();
    let (root, _, _, _, qr) = answer(&rendered);
    assert_eq!((root.as_str(), qr.as_str()), ("PRPA_IN201306UV02", "OK"));
    assert!(
        rendered.contains("钱测试") && rendered.contains("administrativeGenderCode code=\"1\""),
        "{rendered}"
    );
    // SOAP 1.1 and 1.2 envelopes: the answer comes in the same envelope.
    for (ns, ct) in [
        ("http://schemas.xmlsoap.org/soap/envelope/", "text/xml"),
        (
            "http://www.w3.org/2003/05/soap-envelope",
            "application/soap+xml",
        ),
    ] {
        let msg = wrapper(
            "PRPA_IN201314UV02",
            &format!("S-{ct}"),
            &person("2.16.156.10011.1.3", "110101198001020011"),
        );
        let env =
            format!(r#"<s:Envelope xmlns:s="{ns}"><s:Header/><s:Body>{msg}</s:Body></s:Envelope>"#);
        let r = server
            .http
            .post(format!("{}/hl7v3", server.root))
            .body(env)
            .send()
            .await
            .unwrap();
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ct)
        );
        let xml = r.text().await.unwrap();
        assert!(xml.contains(ns), "{xml}");
        let (_, ack, target, detail, _) = answer(&xml);
        assert_eq!(
            (ack.as_str(), target.as_str()),
            ("AA", format!("S-{ct}").as_str()),
            "{detail}"
        );
    }
    // Document register with a base64 CDA, then retrieve returns the same bytes.
    let reg = wrapper(
        "RCMR_IN000002UV02",
        "D-1",
        &format!(
            r#"<subject><clinicalDocument><id><item root="2.16.156.10011.1.1" extension="TEST-DOC-7"/></id><storageCode><originalText value="{}"/></storageCode></clinicalDocument></subject>"#,
            base64(MY_CDA.as_bytes())
        ),
    );
    let (_, xml) = post_v3(&server, reg).await;
    let (_, ack, _, detail, _) = answer(&xml);
    assert_eq!(ack, "AA", "{detail}");
    assert!(detail.contains("DocumentReference/"), "{detail}");
    let cond = json_of(server.get("Condition?code=J06.9").await).await.1;
    assert_eq!(
        cond["total"], 1,
        "the diagnosis of the registered document: {cond}"
    );
    let weight = json_of(server.get("Observation?code=DE04.10.188.00").await)
        .await
        .1;
    assert_eq!(
        weight["entry"][0]["resource"]["valueQuantity"]["value"].to_string(),
        "61.50"
    );
    let get = wrapper(
        "RCMR_IN000031UV01",
        "D-2",
        r#"<queryByParameter><queryId extension="R"/><clinicalDocument.id><value root="2.16.156.10011.1.1" extension="TEST-DOC-7"/></clinicalDocument.id></queryByParameter>"#,
    );
    let (_, xml) = post_v3(&server, get).await;
    let (root, ack, _, _, qr) = answer(&xml);
    assert_eq!(
        (root.as_str(), ack.as_str(), qr.as_str()),
        ("RCMR_IN000032UV01", "AA", "OK"),
        "{xml}"
    );
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let b64 = doc
        .descendants()
        .find(|d| d.tag_name().name() == "originalText")
        .and_then(|o| o.attribute("value"))
        .unwrap();
    assert_eq!(
        huitong::ingest::cda::decode_base64(b64).unwrap(),
        MY_CDA.as_bytes()
    );
    // The document search finds it by the patient.
    let search = wrapper(
        "RCMR_IN000029UV01",
        "D-3",
        r#"<queryByParameter><queryId extension="S"/><patient.id><value><item root="2.16.156.10011.1.3" extension="11010519491231002X"/></value></patient.id></queryByParameter>"#,
    );
    let (_, xml) = post_v3(&server, search).await;
    let (_, _, _, _, qr) = answer(&xml);
    assert_eq!(qr, "OK", "{xml}");
    assert!(xml.contains("TEST-DOC-7"));
}

#[tokio::test]
async fn bad_input_is_answered_ae_and_nothing_is_stored() {
    let server =
        TestServer::start_in(tempfile::tempdir().unwrap(), |s| s.max_body_bytes = 200_000).await;
    let before = total(&server).await;
    let good = person("2.16.156.10011.1.3", "110101198001020011");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown interaction",
            wrapper("PRPA_IN999999UV99", "B-1", &good),
            "unknown interaction 'PRPA_IN999999UV99'",
        ),
        (
            "missing patient id",
            wrapper(
                "PRPA_IN201311UV02",
                "B-2",
                r#"<subject><registrationRequest><subject1><patient><patientPerson><name><item><part value="无名"/></item></name></patientPerson></patient></subject1></registrationRequest></subject>"#,
            ),
            "has no identifier",
        ),
        (
            "XXE",
            format!(
                "<?xml version=\"1.0\"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>\n{}",
                wrapper("PRPA_IN201311UV02", "B-3", &good.replace("钱测试", "&e;"))
            ),
            "DTD refused at line 2",
        ),
        (
            "billion laughs",
            format!(
                "<!DOCTYPE l [<!ENTITY a \"ha\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;\">]>{}",
                wrapper("PRPA_IN201311UV02", "B-4", &good.replace("钱测试", "&c;"))
            ),
            "DTD refused",
        ),
        (
            "truncated",
            wrapper("PRPA_IN201311UV02", "B-5", &good)[..600].to_string(),
            "not well-formed XML",
        ),
        (
            "wrong OID",
            wrapper(
                "PRPA_IN201311UV02",
                "B-6",
                &person("身份证", "110101198001020011"),
            ),
            "'身份证' is not an OID",
        ),
        (
            "wrong sex code system",
            wrapper(
                "PRPA_IN201311UV02",
                "B-7",
                &good.replace(
                    "codeSystem=\"2.16.156.10011.2.3.3.4\"",
                    "codeSystem=\"2.16.840.1.113883.5.1\"",
                ),
            ),
            "system '2.16.840.1.113883.5.1' is not the expected 2.16.156.10011.2.3.3.4",
        ),
    ];
    for (what, body, reason) in cases {
        let (status, xml) = post_v3(&server, body).await;
        assert_eq!(status, 200, "{what}");
        let (root, ack, target, detail, _) = answer(&xml);
        assert_eq!(
            (root.as_str(), ack.as_str()),
            ("MCCI_IN000002UV01", "AE"),
            "{what}: {xml}"
        );
        assert!(
            detail.contains(reason),
            "{what}: '{detail}' should say '{reason}'"
        );
        if !matches!(what, "XXE" | "billion laughs" | "truncated") {
            assert!(target.starts_with("B-"), "{what}: the original message id");
        }
        // The same bytes as a CDA document are refused too (an OperationOutcome).
    }
    // Oversized body.
    let big = wrapper(
        "PRPA_IN201311UV02",
        "B-8",
        &format!("{good}<!--{}-->", "x".repeat(300_000)),
    );
    let (status, xml) = post_v3(&server, big).await;
    assert_eq!(status, 200);
    assert!(answer(&xml).3.contains("larger than 200000 bytes"), "{xml}");
    // CDA: XXE, truncated, a document without a patient id, a wrong OID: OperationOutcomes.
    let cda_cases =
        [
            (
                format!("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{MY_CDA}")
                    .replacen("<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "", 1),
                400,
                "DTD refused",
            ),
            (MY_CDA[..900].to_string(), 400, "not well-formed"),
            (
                MY_CDA
                    .replace(
                        r#"<id root="2.16.156.10011.1.3" extension="11010519491231002X"/>"#,
                        "",
                    )
                    .replace(r#"<id root="2.16.156.10011.1.11" extension="MZ-77"/>"#, ""),
                422,
                "has no identifier",
            ),
            (
                MY_CDA.replace("2.16.156.10011.1.3\"", "1.2.3.x\""),
                422,
                "is not an OID",
            ),
            (
                MY_CDA.replace("2.16.156.10011.2.4\"", "2.16.156.10011.2.5.1.23\""),
                422,
                "is not the expected 2.16.156.10011.2.4",
            ),
        ];
    for (body, status, reason) in cda_cases {
        let r = server
            .http
            .post(format!("{}/cda", server.root))
            .body(body)
            .send()
            .await
            .unwrap();
        let (_, _, diag) = common::expect_outcome(r, status).await;
        assert!(diag.contains(reason), "'{diag}' should say '{reason}'");
    }
    assert_eq!(total(&server).await, before, "nothing was stored");
}
