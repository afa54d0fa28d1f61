//! Engine tests on small messages written here (the sample corpus is in tests/hl7v2_corpus.rs).

use super::*;
use crate::ingest::hl7v2::{Charset, parse};
use std::path::Path;
use std::sync::OnceLock;

fn maps() -> &'static Mappings {
    static M: OnceLock<Mappings> = OnceLock::new();
    M.get_or_init(|| {
        Mappings::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"))
            .unwrap_or_else(|e| panic!("{e:#?}"))
    })
}

fn run(text: &str) -> Conversion {
    let msg = parse(text.as_bytes(), Charset::Ascii).unwrap();
    let traced = Options {
        trace: true,
        ..Options::default()
    };
    let c = convert(&msg, maps(), &traced).unwrap();
    // The trace is a view on the same conversion: off, the resources and the unmapped are equal.
    let plain = convert(&msg, maps(), &Options::default()).unwrap();
    assert!(plain.trace.is_empty());
    assert_eq!(plain.resources, c.resources);
    assert_eq!(plain.unmapped, c.unmapped);
    c
}

fn of_type<'a>(c: &'a Conversion, ty: &str) -> Vec<&'a Value> {
    c.resources
        .iter()
        .filter(|r| r["resourceType"] == ty)
        .collect()
}

/// A segment from (field number, value) pairs.
fn seg(id: &str, fields: &[(usize, &str)]) -> String {
    let n = fields.iter().map(|f| f.0).max().unwrap_or(0);
    let mut v = vec![""; n + 1];
    v[0] = id;
    for (i, x) in fields {
        v[*i] = x;
    }
    v.join("|")
}

fn a01() -> String {
    [
        "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A01^ADT_A01|MSG1|P|2.5".to_string(),
        "EVN|A01|20240102030405".to_string(),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, "MRN1^^^H1^MR"),
                (5, "Wang^Li^^^^^L"),
                (7, "19800102"),
                (8, "M"),
                (11, "1 Road^^Beijing^^100000^CN^H"),
                (13, "^PRN^PH^^86^10^1234567"),
                (39, "ZZ"),
            ],
        ),
        seg(
            "PV1",
            &[
                (1, "1"),
                (2, "I"),
                (3, "W1^R1^B1^H1"),
                (7, "123^Zhang^San"),
                (19, "V100^^^H1^VN"),
                (44, "20240102030000"),
            ],
        ),
        "ZPI|site data".to_string(),
        String::new(),
    ]
    .join("\r")
}

#[test]
fn adt_a01_maps_patient_and_encounter() {
    let c = run(&a01());
    assert_eq!(c.structure, "ADT_A01");
    let p = of_type(&c, "Patient")[0];
    assert_eq!(p["name"][0]["family"], "Wang");
    assert_eq!(p["name"][0]["use"], "official");
    assert_eq!(p["birthDate"], "1980-01-02");
    assert_eq!(p["gender"], "male");
    assert_eq!(p["identifier"][0]["value"], "MRN1");
    assert_eq!(p["address"][0]["city"], "Beijing");
    assert_eq!(p["telecom"][0]["value"], "+86 (10) 1234567");
    let e = of_type(&c, "Encounter")[0];
    assert_eq!(e["class"]["code"], "IMP");
    assert_eq!(e["status"], "in-progress");
    assert_eq!(e["period"]["start"], "2024-01-02T03:00:00+08:00");
    assert_eq!(
        e["subject"]["reference"],
        format!("Patient/{}", p["id"].as_str().unwrap())
    );
    assert_eq!(e["participant"][0]["type"][0]["coding"][0]["code"], "ATND");
    let dr = e["participant"][0]["individual"]["reference"]
        .as_str()
        .unwrap();
    assert!(dr.starts_with("Practitioner/"));
    assert_eq!(of_type(&c, "Practitioner")[0]["name"][0]["family"], "Zhang");
    assert_eq!(of_type(&c, "Location").len(), 1);
    // PID-39 (ZZ) and the Z-segment are not mapped, and say so.
    let unmapped: Vec<&str> = c.unmapped.iter().map(|u| u.field.as_str()).collect();
    assert!(unmapped.contains(&"PID-39"), "{unmapped:?}");
    assert!(unmapped.contains(&"ZPI-1"), "{unmapped:?}");
    assert!(
        c.trace
            .iter()
            .any(|t| t.field == "PID-5" && t.target.ends_with(".name"))
    );
}

#[test]
fn ids_are_deterministic_across_messages() {
    let a = run(&a01());
    let b = run(&a01()
        .replace("MSG1", "MSG2")
        .replace("ADT^A01^ADT_A01", "ADT^A08^ADT_A01"));
    let id = |c: &Conversion, ty: &str| of_type(c, ty)[0]["id"].clone();
    assert_eq!(id(&a, "Patient"), id(&b, "Patient"));
    assert_eq!(id(&a, "Encounter"), id(&b, "Encounter"));
    // A08 does not say the encounter's status (the IG's Event map).
    assert_eq!(of_type(&b, "Encounter")[0]["status"], "unknown");
}

const ORU: &str = "MSH|^~\\&|LAB|H1|HUI|HUI|20240102||ORU^R01^ORU_R01|R1|P|2.5.1\r\
PID|1||MRN1^^^H1^MR||Wang^Li\r\
OBR|1|P1|F1^LAB|24331-1^Lipid panel^LN|||20240101080000|||||||||||||||20240101090000|||F\r\
OBX|1|NM|2093-3^Cholesterol^LN||5.20|mmol/L^^UCUM|<5.2|H|||F\r\
OBX|2|ST|8251-1^Note^LN||fasting\\T\\ok||||||C\r\
OBX|3|CWE|999^Odd^LN||A^B^L||||||Q\r\
OBR|2|P2|F2^LAB|58410-2^CBC^LN|||20240101080000||||||||||||||||||P\r\
OBX|1|SN|777-3^Platelets^LN||>^150|10*3/uL^^UCUM|||||F\r";

#[test]
fn oru_keeps_obr_obx_grouping() {
    let c = run(ORU);
    let reports = of_type(&c, "DiagnosticReport");
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["status"], "final");
    assert_eq!(reports[1]["status"], "preliminary");
    assert_eq!(reports[0]["result"].as_array().unwrap().len(), 3);
    assert_eq!(reports[1]["result"].as_array().unwrap().len(), 1);
    let obs = of_type(&c, "Observation");
    assert_eq!(obs.len(), 4);
    assert_eq!(obs[0]["valueQuantity"]["unit"], "mmol/L");
    assert_eq!(
        obs[0]["valueQuantity"]["system"],
        "http://unitsofmeasure.org"
    );
    assert_eq!(obs[0]["valueQuantity"]["value"].to_string(), "5.20");
    assert_eq!(obs[1]["valueString"], "fasting&ok");
    assert_eq!(obs[1]["status"], "corrected");
    assert_eq!(obs[3]["valueQuantity"]["comparator"], ">");
    // OBX-11 = Q is not an observation status: reported with the reason, status stays unknown.
    assert_eq!(obs[2]["status"], "unknown");
    assert!(
        c.unmapped
            .iter()
            .any(|u| u.field == "OBX-11" && u.reason.contains("ObservationStatus"))
    );
    // Every observation of the first report points at its patient.
    let pid = format!(
        "Patient/{}",
        of_type(&c, "Patient")[0]["id"].as_str().unwrap()
    );
    assert!(
        obs.iter()
            .all(|o| o["subject"]["reference"] == pid.as_str())
    );
}

#[test]
fn a_correction_updates_the_same_observation() {
    let a = run(ORU);
    let b = run(&ORU
        .replace("R1|P|2.5.1", "R9|P|2.5.1")
        .replace("|H|||F\r", "|H|||C\r"));
    let obs = |c: &Conversion| of_type(c, "Observation")[0].clone();
    assert_eq!(obs(&a)["id"], obs(&b)["id"]);
    assert_eq!(obs(&b)["status"], "corrected");
}

#[test]
fn unknown_message_types_use_the_generic_map() {
    let c = run("MSH|^~\\&|A|H1|B|C|2024||ZZZ^Z99|1|P|2.5\rPID|1||M9^^^H1||Li^Si\rXYZ|1|2\r");
    assert_eq!(c.structure, "GENERIC");
    assert_eq!(of_type(&c, "Patient").len(), 1);
    assert!(c.unmapped.iter().any(|u| u.field == "XYZ-1"));
}

#[test]
fn a_pharmacy_order_is_one_medication_request_with_one_dosage() {
    let c = run(&[
        "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||RDE^O11^RDE_O11|RX1|P|2.5".to_string(),
        seg("PID", &[(1, "1"), (3, "MRN1^^^H1^MR"), (5, "Wang^Li")]),
        seg("PV1", &[(1, "1"), (2, "O"), (19, "V1")]),
        seg(
            "ORC",
            &[
                (1, "NW"),
                (2, "P100^HIS"),
                (9, "20240102030000"),
                (12, "D1^Zhang^San"),
            ],
        ),
        seg(
            "RXO",
            &[(1, "X1^Drug X^NDC"), (2, "1"), (11, "99"), (13, "4")],
        ),
        seg("RXR", &[(1, "PO^Oral")]),
        seg(
            "RXE",
            &[
                (2, "A1^Amoxicillin 250 mg^NDC"),
                (3, "250"),
                (5, "mg^milligram^UCUM"),
                (10, "20"),
                (11, "CAP^capsule^L"),
                (12, "2"),
                (15, "RX-9"),
                (23, "5"),
                (24, "mL/h^^UCUM"),
            ],
        ),
        seg("RXR", &[(1, "IV^Intravenous"), (2, "LA^Left arm")]),
    ]
    .join("\r"));
    let mr = of_type(&c, "MedicationRequest");
    assert_eq!(mr.len(), 1, "{:#?}", c.resources);
    let mr = mr[0];
    assert_eq!(mr["status"], "active");
    assert_eq!(mr["intent"], "order");
    // RXE's values win; RXO's differing ones are recorded, not dropped.
    assert_eq!(mr["medicationCodeableConcept"]["coding"][0]["code"], "A1");
    assert_eq!(mr["dispenseRequest"]["quantity"]["value"], 20);
    assert_eq!(mr["dispenseRequest"]["quantity"]["unit"], "capsule");
    assert_eq!(mr["dispenseRequest"]["numberOfRepeatsAllowed"], 2);
    let dosage = mr["dosageInstruction"].as_array().unwrap();
    assert_eq!(
        dosage.len(),
        1,
        "every dosage field shares one element: {dosage:#?}"
    );
    let rate = &dosage[0]["doseAndRate"];
    assert_eq!(rate.as_array().unwrap().len(), 1);
    assert_eq!(
        rate[0]["doseQuantity"],
        serde_json::json!({"value": 250, "unit": "milligram", "system": "http://unitsofmeasure.org", "code": "mg"})
    );
    assert_eq!(rate[0]["rateQuantity"]["code"], "mL/h");
    assert_eq!(dosage[0]["route"]["coding"][0]["code"], "IV");
    assert_eq!(dosage[0]["site"]["coding"][0]["code"], "LA");
    for (field, reason) in [
        ("RXO-1", "medicationCodeableConcept already has a value"),
        ("RXO-11", "quantity already has a value"),
        // dose[x] holds one type: RXE's doseQuantity, so RXO's doseRange is not placed.
        ("RXO-2", "doseQuantity already has a value"),
        ("RXR-1", "route already has a value"),
    ] {
        assert!(
            c.unmapped
                .iter()
                .any(|u| u.field == field && u.reason == reason),
            "{field}: {:#?}",
            c.unmapped
        );
    }
}

#[test]
fn a_financial_transaction_is_a_charge_item_with_its_price() {
    let c = run(&[
        "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||DFT^P03^DFT_P03|FT1|P|2.5||||||UNICODE UTF-8"
            .to_string(),
        "EVN|P03|20240102030405".to_string(),
        seg("PID", &[(1, "1"), (3, "MRN1^^^H1^MR")]),
        seg("PV1", &[(1, "1"), (2, "O"), (19, "V1")]),
        seg(
            "FT1",
            &[
                (1, "1"),
                (2, "T1"),
                (4, "20240102"),
                (6, "CG"),
                (7, "250101^挂号费^L"),
                (10, "2"),
                (11, "12.50&CNY"),
            ],
        ),
        seg("FT1", &[(1, "2"), (2, "T2"), (7, "X"), (11, "3&rmb")]),
    ]
    .join("\r"));
    let items = of_type(&c, "ChargeItem");
    assert_eq!(items.len(), 2, "{:#?}", c.resources);
    assert_eq!(items[0]["status"], "unknown");
    assert_eq!(items[0]["code"]["coding"][0]["display"], "挂号费");
    assert_eq!(items[0]["quantity"], serde_json::json!({"value": 2}));
    // The amount's text is kept (12.50, not 12.5).
    assert_eq!(items[0]["priceOverride"]["value"].to_string(), "12.50");
    assert_eq!(items[0]["priceOverride"]["currency"], "CNY");
    assert_eq!(items[0]["occurrenceDateTime"], "2024-01-02");
    assert!(items[1].get("priceOverride").is_none());
    assert!(
        c.unmapped.iter().any(|u| u.field == "FT1-11"
            && u.sequence == 6
            && u.reason == "'rmb' is not an ISO 4217 currency code"),
        "{:#?}",
        c.unmapped
    );
}

#[test]
fn an_index_on_a_single_element_or_a_bad_index_is_refused() {
    assert!(load::resolve_path("MedicationRequest", "dosageInstruction[0].text").is_ok());
    assert_eq!(
        load::resolve_path("MedicationRequest", "subject[0]").unwrap_err(),
        "MedicationRequest.subject[0]: 'subject' does not repeat, so it takes no index"
    );
    assert_eq!(
        load::resolve_path("MedicationRequest", "dosageInstruction[x].text").unwrap_err(),
        "MedicationRequest.dosageInstruction[x].text: '[x]' is not an element index"
    );
}

#[test]
fn a_national_id_without_an_authority_gets_the_configured_system() {
    let c = run(&[
        "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A04^ADT_A01|ID1|P|2.5".to_string(),
        "EVN|A04|20240102030405".to_string(),
        seg(
            "PID",
            &[
                (1, "1"),
                (
                    3,
                    "M1^^^ZSYY^MR~11010519491231002X^^^^NNCHN~M2^^^&1.2.156.1&ISO^MR",
                ),
            ],
        ),
        seg("PV1", &[(1, "1"), (2, "O")]),
    ]
    .join("\r"));
    let p = of_type(&c, "Patient")[0];
    let systems: Vec<&str> = p["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["system"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        systems,
        [
            // No rule for H1's ZSYY in the shipped table: scoped by facility and authority.
            "urn:huitong:hl7v2:id:H1:ZSYY",
            // mappings/hl7v2/identifier-systems.toml: NNCHN for every facility.
            "urn:oid:2.16.156.10011.1.3",
            // An ISO authority keeps its own OID.
            "urn:oid:1.2.156.1",
        ]
    );
}

/// Below a primitive the JSON key is its `_` sibling; below a list of primitives that would be a
/// parallel list, which the maps refuse.
#[test]
fn paths_below_a_primitive_use_its_underscore_sibling() {
    let p = load::resolve_path("Patient", "birthDate.extension.valueDateTime").unwrap();
    let keys: Vec<&str> = p.steps.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(keys, vec!["_birthDate", "extension", "valueDateTime"]);
    assert_eq!(p.leaf_type, "dateTime");
    assert_eq!(
        load::resolve_path("Patient", "name.given.extension").unwrap_err(),
        "Patient.name.given.extension: 'extension' below a repeating primitive (given) is not supported"
    );
}

#[test]
fn a_rule_path_matches_whole_trailing_steps_only() {
    assert!(super::path_matches("PID", "PID"));
    assert!(super::path_matches("PATIENT.PID", "PID"));
    assert!(super::path_matches(
        "ORDER.OBSERVATION.OBX",
        "OBSERVATION.OBX"
    ));
    assert!(!super::path_matches("PATIENT.XPID", "PID"));
    assert!(!super::path_matches("PID", "PATIENT.PID"));
}

#[test]
fn an_explicit_null_places_nothing_is_consumed_and_says_what_it_deletes() {
    let msg = [
        "MSH|^~\\&|HIS|H1|HUI|HUI|20240102030405||ADT^A08^ADT_A01|MSG9|P|2.5".to_string(),
        "EVN|A08|20240102030405".to_string(),
        seg(
            "PID",
            &[(3, "MRN9^^^H1^MR"), (8, "\"\""), (13, "\"\""), (14, "\"\"")],
        ),
        seg("PV1", &[(2, "I"), (7, "\"\""), (19, "V9^^^H1^VN")]),
        seg("OBX", &[(1, "1"), (2, "ST"), (3, "X^Y^L"), (5, "\"\"")]),
    ]
    .join("\r");
    let c = run(&msg);
    assert!(
        !serde_json::to_string(&c.resources)
            .unwrap()
            .contains("\\\"\\\"")
    );
    let unmapped: Vec<&str> = c.unmapped.iter().map(|u| u.field.as_str()).collect();
    for f in ["PID-8", "PID-13", "PID-14", "PV1-7", "OBX-2", "OBX-5"] {
        assert!(!unmapped.contains(&f), "{f}: {unmapped:?}");
    }
    assert!(
        c.trace
            .iter()
            .any(|t| t.field == "PID-8" && t.target.ends_with("gender (explicit null: deleted)"))
    );
    let patient = c
        .resources
        .iter()
        .position(|r| r["resourceType"] == "Patient")
        .unwrap();
    assert!(c.resources[patient].get("gender").is_none());
    let erasures = &c.statements[patient].erasures;
    let by = |f: &str| erasures.iter().find(|e| e.source == f).unwrap();
    assert_eq!(by("PID-8").steps, [("gender".to_string(), None)]);
    // PID-13 and PID-14 share telecom: each deletes its own entries only.
    let work: Map<String, Value> = serde_json::from_str(r#"{"use": "work"}"#).unwrap();
    assert!(by("PID-13").matching.is_empty());
    assert_eq!(by("PID-13").excluding, std::slice::from_ref(&work));
    assert_eq!(by("PID-14").matching, work);
    assert!(by("PID-14").excluding.is_empty());
    // PV1-7 deletes the attending participants, not the others.
    let encounter = c
        .resources
        .iter()
        .position(|r| r["resourceType"] == "Encounter")
        .unwrap();
    let attender = c.statements[encounter]
        .erasures
        .iter()
        .find(|e| e.source == "PV1-7")
        .unwrap();
    assert_eq!(attender.steps, [("participant".to_string(), None)]);
    assert!(attender.matching["type"].to_string().contains("ATND"));
    // PV1-8, PV1-9, PV1-17 and PV1-52 fill participants too.
    assert_eq!(attender.excluding.len(), 4);
}
