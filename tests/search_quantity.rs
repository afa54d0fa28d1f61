//! Quantity search in canonical UCUM units over real sockets against a real SQLite file: a search
//! naming a UCUM unit compares every stored UCUM quantity of that dimension in base units (`g`
//! against `mg`, `mm[Hg]` against `kPa`), exactly where the values are equal; a unit without a
//! canonical form (`[iU]/L`) matches by its own code; the prefixes keep their meaning in base
//! units; a search without the UCUM system still compares codes as written.
mod common;

use common::{TestServer, ids, json_of, put, set};
use serde_json::{Value, json};
use std::collections::BTreeSet;

const UCUM: &str = "http://unitsofmeasure.org";

fn observation(id: &str, quantity: Value) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "valueQuantity": quantity})
}

fn ucum(value: f64, code: &str) -> Value {
    json!({"value": value, "unit": code, "system": UCUM, "code": code})
}

async fn fixture(s: &TestServer) {
    for (id, q) in [
        ("g55", ucum(5.5, "g")),
        ("mg5400", ucum(5400.0, "mg")),
        ("mg6000", ucum(6000.0, "mg")),
        ("hg120", ucum(120.0, "mm[Hg]")),
        ("hg121", ucum(121.0, "mm[Hg]")),
        ("kpa16", ucum(16.0, "kPa")),
        ("iu3", ucum(3.0, "[iU]/L")),
        ("cel37", ucum(37.0, "Cel")),
        ("degf986", ucum(98.6, "[degF]")),
        ("degf104", ucum(104.0, "[degF]")),
        // The same unit name in another system is not UCUM: never converted.
        (
            "local5500",
            json!({"value": 5500, "unit": "mg", "system": "urn:example:units", "code": "mg"}),
        ),
    ] {
        put(s, observation(id, q)).await;
    }
    put(
        s,
        json!({"resourceType": "Observation", "id": "bp", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": ucum(120.0, "mm[Hg]")}]}),
    )
    .await;
}

async fn found(s: &TestServer, query: &str) -> BTreeSet<String> {
    let (status, b) = json_of(s.get(query).await).await;
    assert_eq!(status, 200, "{query}: {b}");
    ids(&b)
}

fn q(value: &str, code: &str) -> String {
    format!(
        "Observation?value-quantity={}",
        encode(&format!("{value}|{UCUM}|{code}"))
    )
}

fn encode(s: &str) -> String {
    s.replace('%', "%25")
        .replace('|', "%7C")
        .replace('[', "%5B")
        .replace(']', "%5D")
        .replace('/', "%2F")
}

async fn check(s: &TestServer, cases: &[(String, &[&str])]) {
    let mut failures = vec![];
    for (query, want) in cases {
        let got = found(s, query).await;
        if got != set(want) {
            failures.push(format!("{query}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn grams_and_milligrams_compare_in_canonical_units() {
    let s = TestServer::start().await;
    fixture(&s).await;
    check(
        &s,
        &[
            // 5.4 mg is 0.0054 g: every mass here is greater.
            (q("gt5.4", "mg"), &["g55", "mg5400", "mg6000"]),
            // 5400 mg is exactly 5.4 g: not greater, and equal at either unit.
            (q("gt5.4", "g"), &["g55", "mg6000"]),
            (q("gt5400", "mg"), &["g55", "mg6000"]),
            (q("ge5.4", "g"), &["g55", "mg5400", "mg6000"]),
            (q("5.4", "g"), &["mg5400"]),
            (q("eq5500", "mg"), &["g55"]),
            (q("lt5.5", "g"), &["mg5400"]),
            (q("le5500", "mg"), &["g55", "mg5400"]),
            (q("ne5.5", "g"), &["mg5400", "mg6000"]),
            // `ap`: within 10% of 5.5 g, i.e. [4.95 g, 6.05 g], whichever unit the search uses.
            (q("ap5.5", "g"), &["g55", "mg5400", "mg6000"]),
            (q("ap5500", "mg"), &["g55", "mg5400", "mg6000"]),
            (q("ap5.0", "g"), &["g55", "mg5400"]),
            (q("5.5", "kg"), &[]),
            (q("ap0.0055", "kg"), &["g55", "mg5400", "mg6000"]),
        ],
    )
    .await;
}

#[tokio::test]
async fn millimetres_of_mercury_stay_exact_and_compare_with_pascals() {
    let s = TestServer::start().await;
    fixture(&s).await;
    check(
        &s,
        &[
            // 120 mm[Hg] is 15998.64 Pa, 16 kPa is 120.0102 mm[Hg].
            (q("120", "mm[Hg]"), &["hg120", "kpa16"]),
            (q("120.0", "mm[Hg]"), &["hg120", "kpa16"]),
            (q("120.00", "mm[Hg]"), &["hg120"]),
            (q("gt120", "mm[Hg]"), &["hg121", "kpa16"]),
            (q("ge120", "mm[Hg]"), &["hg120", "hg121", "kpa16"]),
            (q("le120", "mm[Hg]"), &["hg120"]),
            (q("lt120", "mm[Hg]"), &[]),
            (q("lt16", "kPa"), &["hg120"]),
            (q("16", "kPa"), &["hg120", "hg121", "kpa16"]),
            (q("16.00", "kPa"), &["hg120", "kpa16"]),
            (q("16.000", "kPa"), &["kpa16"]),
            (q("15998.64", "Pa"), &["hg120"]),
        ],
    )
    .await;
    // A composite's quantity part is compared the same way.
    let code_kpa = format!(
        "Observation?component-code-value-quantity=http://loinc.org%7C8480-6${}",
        encode(&format!("ge15.9|{UCUM}|kPa"))
    );
    assert_eq!(found(&s, &code_kpa).await, set(&["bp"]));
}

/// Celsius and Fahrenheit have offsets, not only factors: both compare in kelvin, 37 Cel being
/// 98.6 [degF] and 104 [degF] being 40 Cel.
#[tokio::test]
async fn temperatures_compare_across_celsius_and_fahrenheit() {
    let s = TestServer::start().await;
    fixture(&s).await;
    check(
        &s,
        &[
            (q("37", "Cel"), &["cel37", "degf986"]),
            (q("98.6", "[degF]"), &["cel37", "degf986"]),
            (q("40", "Cel"), &["degf104"]),
            (q("gt38", "Cel"), &["degf104"]),
            (q("le99", "[degF]"), &["cel37", "degf986"]),
            (q("310.15", "K"), &["cel37", "degf986"]),
            (q("ap38", "Cel"), &["cel37", "degf986", "degf104"]),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_unit_without_canonical_form_matches_by_its_own_code() {
    let s = TestServer::start().await;
    fixture(&s).await;
    check(
        &s,
        &[
            (q("3", "[iU]/L"), &["iu3"]),
            (q("gt2", "[iU]/L"), &["iu3"]),
            (q("ap3.2", "[iU]/L"), &["iu3"]),
            (q("lt3", "[iU]/L"), &[]),
            // Not converted: the milli-unit is another code.
            (q("3000", "m[iU]/L"), &[]),
        ],
    )
    .await;
}

#[tokio::test]
async fn without_the_ucum_system_codes_compare_as_written() {
    let s = TestServer::start().await;
    fixture(&s).await;
    check(
        &s,
        &[
            // Any system, the code as written: no conversion, the non-UCUM `mg` included.
            (
                "Observation?value-quantity=gt5000%7C%7Cmg".to_string(),
                &["mg5400", "mg6000", "local5500"],
            ),
            (
                "Observation?value-quantity=gt5000%7Curn:example:units%7Cmg".to_string(),
                &["local5500"],
            ),
            // The UCUM search does not reach the other system's `mg`.
            (q("5500", "mg"), &["g55"]),
        ],
    )
    .await;
}
