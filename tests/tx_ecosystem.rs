//! The HL7 terminology ecosystem test suite (`fhir-tx-ecosystem-tests`), read in place, run
//! against a real server over HTTP.
//!
//! Each suite's `setup` resources travel with every request as `tx-resource` parameters, the way
//! the ecosystem's own clients send them, so one server serves every suite without state leaking
//! between suites. What is compared: for `$validate-code` the `result` (and `display` when the
//! expected answer has a mandatory one); for `$expand` the set of (system, code) in the expansion
//! and `total` when given; for `$lookup` the `display`; for `$translate` the `result` and the
//! matched codes; an expected OperationOutcome (or `http-code`) must be answered with an error.
//!
//! Suites and tests that need what a local, offline server does not have (SNOMED CT, LOINC, OMOP,
//! ICD-11, tx.fhir.org-specific behaviour, languages and translations) are skipped, each group
//! with its reason. The test guards a floor of passes so a regression fails CI; it does not claim
//! that every runnable test passes (the runner prints each failure).
mod common;

use common::{TestServer, json_of};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The number of passing tests reached; CI fails when it drops.
const FLOOR: usize = 444;

fn load(dir: &Path, file: &str) -> Option<Value> {
    let bytes = std::fs::read(dir.join(file)).ok()?;
    // Some files start with a byte order mark.
    let text = String::from_utf8_lossy(&bytes);
    serde_json::from_str(text.trim_start_matches('\u{feff}')).ok()
}

/// Why a whole suite cannot run here, if it cannot.
fn suite_skip(suite: &Value) -> Option<String> {
    let name = suite["name"].as_str().unwrap_or("");
    match suite["mode"].as_str() {
        Some("snomed") => return Some("needs SNOMED CT".into()),
        Some("omop") => return Some("needs the OMOP vocabularies".into()),
        Some("icd-11") => return Some("needs ICD-11".into()),
        Some("tx.fhir.org") if name != "UCUM" => {
            return Some("tx.fhir.org-specific (LOINC, SNOMED CT, its own comparisons)".into());
        }
        _ => {}
    }
    match name {
        "metadata" => Some(
            "checks the server's CapabilityStatement/TerminologyCapabilities, not terminology"
                .into(),
        ),
        "language" | "language2" => {
            Some("display languages and translations are not supported".into())
        }
        "batch" => Some("batch validation is not an operation of this server".into()),
        _ => None,
    }
}

/// Why one test cannot run here, if it cannot.
fn test_skip(test: &Value, request: &Value) -> Option<String> {
    if let Some(mode) = test["mode"].as_str() {
        return Some(format!("only for mode '{mode}'"));
    }
    if test.get("Accept-Language").is_some() {
        return Some("display languages are not supported".into());
    }
    let names: Vec<&str> = request["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    if names.contains(&"displayLanguage") {
        return Some("display languages are not supported".into());
    }
    if names.contains(&"useSupplement") {
        return Some("code system supplements are not supported".into());
    }
    match test["operation"].as_str() {
        Some("expand" | "validate-code" | "cs-validate-code" | "lookup" | "translate") => None,
        Some(op) => Some(format!(
            "operation '{op}' is not a terminology operation of this server"
        )),
        None => Some("no operation".into()),
    }
}

fn param<'a>(params: &'a Value, name: &str) -> Option<&'a Value> {
    params["parameter"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// Every (system, code) of an expansion, nested entries included; `optional` collects the
/// entries the expected answer marks `$optional$`.
fn codes(
    contains: &Value,
    all: &mut BTreeSet<(String, String)>,
    optional: &mut BTreeSet<(String, String)>,
) {
    for c in contains.as_array().into_iter().flatten() {
        if let (Some(s), Some(code)) = (c["system"].as_str(), c["code"].as_str()) {
            let key = (s.to_string(), code.to_string());
            if c.get("$optional$").is_some() {
                optional.insert(key);
            } else {
                all.insert(key);
            }
        }
        codes(&c["contains"], all, optional);
    }
}

/// Compares an answer with the expected one; `Err` says how they differ.
fn compare(
    op: &str,
    expected: &Value,
    expect_error: bool,
    status: u16,
    got: &Value,
) -> Result<(), String> {
    if expect_error {
        return if status >= 400 && got["resourceType"] == "OperationOutcome" {
            Ok(())
        } else {
            Err(format!("expected an error, got {status}"))
        };
    }
    if status != 200 {
        let msg = got["issue"][0]["diagnostics"].as_str().unwrap_or("");
        return Err(format!("expected success, got {status}: {msg}"));
    }
    match op {
        "validate-code" | "cs-validate-code" => {
            let want = param(expected, "result").and_then(|p| p["valueBoolean"].as_bool());
            let have = param(got, "result").and_then(|p| p["valueBoolean"].as_bool());
            if want != have {
                let msg = param(got, "message")
                    .and_then(|p| p["valueString"].as_str())
                    .unwrap_or("");
                return Err(format!("expected result {want:?}, got {have:?} ({msg})"));
            }
            if let Some(d) = param(expected, "display").filter(|p| p.get("$optional$").is_none()) {
                let want = d["valueString"].as_str();
                let have = param(got, "display").and_then(|p| p["valueString"].as_str());
                if want.is_some_and(|w| !w.contains('$')) && want != have {
                    return Err(format!("expected display {want:?}, got {have:?}"));
                }
            }
            Ok(())
        }
        "expand" => {
            let (mut want, mut optional) = (BTreeSet::new(), BTreeSet::new());
            codes(&expected["expansion"]["contains"], &mut want, &mut optional);
            let (mut have, mut _none) = (BTreeSet::new(), BTreeSet::new());
            codes(&got["expansion"]["contains"], &mut have, &mut _none);
            let missing: Vec<_> = want.difference(&have).collect();
            let extra: Vec<_> = have
                .iter()
                .filter(|k| !want.contains(*k) && !optional.contains(*k))
                .collect();
            if !missing.is_empty() || !extra.is_empty() {
                return Err(format!(
                    "expansion differs: missing {missing:?}, unexpected {extra:?}"
                ));
            }
            if let Some(total) = expected["expansion"]["total"].as_u64()
                && got["expansion"]["total"].as_u64() != Some(total)
            {
                return Err(format!(
                    "expected total {total}, got {}",
                    got["expansion"]["total"]
                ));
            }
            Ok(())
        }
        "lookup" => {
            let want = param(expected, "display").and_then(|p| p["valueString"].as_str());
            let have = param(got, "display").and_then(|p| p["valueString"].as_str());
            if want.is_some() && want != have {
                return Err(format!("expected display {want:?}, got {have:?}"));
            }
            Ok(())
        }
        "translate" => {
            let want = param(expected, "result").and_then(|p| p["valueBoolean"].as_bool());
            let have = param(got, "result").and_then(|p| p["valueBoolean"].as_bool());
            if want != have {
                return Err(format!("expected result {want:?}, got {have:?}"));
            }
            let matched = |v: &Value| -> BTreeSet<(String, String)> {
                v["parameter"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["name"] == "match")
                    .flat_map(|p| p["part"].as_array().cloned().unwrap_or_default())
                    .filter(|part| part["name"] == "concept")
                    .map(|part| {
                        let c = &part["valueCoding"];
                        (
                            c["system"].as_str().unwrap_or("").to_string(),
                            c["code"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            };
            let (w, h) = (matched(expected), matched(got));
            if w != h {
                return Err(format!("expected matches {w:?}, got {h:?}"));
            }
            Ok(())
        }
        _ => Err(format!("no comparison for {op}")),
    }
}

fn endpoint(op: &str) -> &'static str {
    match op {
        "expand" => "ValueSet/$expand",
        "validate-code" => "ValueSet/$validate-code",
        "cs-validate-code" => "CodeSystem/$validate-code",
        "lookup" => "CodeSystem/$lookup",
        _ => "ConceptMap/$translate",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_ecosystem_suite() {
    let Some(dir) = common::corpora("fhir-tx-ecosystem-tests/tests") else {
        return;
    };
    let cases = load(&dir, "test-cases.json").expect("test-cases.json");
    let server = TestServer::start_in(tempfile::tempdir().expect("tempdir"), |s| {
        s.max_body_bytes = s.max_body_bytes.max(16 * 1024 * 1024);
    })
    .await;
    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    let mut skip_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for suite in cases["suites"].as_array().into_iter().flatten() {
        let suite_name = suite["name"].as_str().unwrap_or("?");
        let tests = suite["tests"].as_array().cloned().unwrap_or_default();
        if let Some(reason) = suite_skip(suite) {
            println!("SKIP suite {suite_name} ({} tests): {reason}", tests.len());
            skipped += tests.len();
            continue;
        }
        let mut setup: Vec<Value> = Vec::new();
        let mut missing = None;
        for f in suite["setup"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            match load(&dir, f) {
                Some(r) => setup.push(r),
                None => missing = Some(f.to_string()),
            }
        }
        if let Some(f) = missing {
            println!(
                "SKIP suite {suite_name} ({} tests): setup file {f} is missing or unreadable",
                tests.len()
            );
            skipped += tests.len();
            continue;
        }
        for test in &tests {
            let name = test["name"].as_str().unwrap_or("?");
            let op = test["operation"].as_str().unwrap_or("");
            let Some(mut request) = test["request"].as_str().and_then(|f| load(&dir, f)) else {
                *skip_reasons
                    .entry("no readable request".into())
                    .or_default() += 1;
                skipped += 1;
                continue;
            };
            if let Some(reason) = test_skip(test, &request) {
                *skip_reasons.entry(reason).or_default() += 1;
                skipped += 1;
                continue;
            }
            let Some(expected) = test["response"].as_str().and_then(|f| load(&dir, f)) else {
                *skip_reasons
                    .entry("no readable expected response".into())
                    .or_default() += 1;
                skipped += 1;
                continue;
            };
            if let Some(list) = request["parameter"].as_array_mut() {
                for r in &setup {
                    list.push(json!({"name": "tx-resource", "resource": r}));
                }
            } else {
                request["parameter"] = Value::Array(
                    setup
                        .iter()
                        .map(|r| json!({"name": "tx-resource", "resource": r}))
                        .collect(),
                );
            }
            let expect_error =
                test.get("http-code").is_some() || expected["resourceType"] == "OperationOutcome";
            let resp = server.send(Method::POST, endpoint(op), &request).await;
            let (status, got) = json_of(resp).await;
            match compare(op, &expected, expect_error, status, &got) {
                Ok(()) => {
                    passed += 1;
                    println!("PASS {suite_name}/{name}");
                }
                Err(why) => {
                    failed += 1;
                    println!("FAIL {suite_name}/{name}: {why}");
                }
            }
        }
    }
    for (reason, n) in &skip_reasons {
        println!("SKIP {n} tests: {reason}");
    }
    println!("tx-ecosystem: {passed} passed, {failed} failed, {skipped} skipped");
    server.stop().await;
    assert!(
        passed >= FLOOR,
        "tx-ecosystem passes dropped below {FLOOR}: {passed}"
    );
}
