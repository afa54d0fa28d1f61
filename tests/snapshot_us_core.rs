//! Snapshot generation against the published snapshots of US Core 3.1.0: every profile of the
//! package regenerated from its differential, compared element by element (id, path, min, max,
//! type codes, binding strength and value set).
mod common;

use huitong::definitions::Definitions;
use huitong::registry::Registry;
use huitong::validation::snapshot;
use serde_json::Value;

/// Profiles whose generated snapshot equals the published one (all of them); CI fails if it drops.
const FLOOR: usize = 29;

fn key(e: &Value) -> String {
    let types: Vec<&str> = e["type"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["code"].as_str())
        .collect();
    format!(
        "{} min={} max={} types={:?} binding={}|{}",
        e["id"].as_str().unwrap_or(""),
        e["min"],
        e["max"],
        types,
        e["binding"]["strength"].as_str().unwrap_or(""),
        e["binding"]["valueSet"].as_str().unwrap_or(""),
    )
}

#[test]
fn generated_snapshots_match_us_core() {
    let Some(dir) = common::corpora("us-core-3.1.0") else {
        return;
    };
    let defs = Definitions::core();
    let registry = Registry::with_core(defs);
    assert!(registry.load_dir(&dir).is_empty());
    let catalogue = registry.catalogue();
    let mut profiles: Vec<&Value> = catalogue
        .all("StructureDefinition")
        .map(|r| r.resource.as_ref())
        .filter(|sd| {
            sd["derivation"] == "constraint"
                && sd.pointer("/differential/element").is_some()
                && sd["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("http://hl7.org/fhir/us/core/"))
        })
        .collect();
    profiles.sort_by_key(|sd| sd["url"].as_str().unwrap_or("").to_string());
    let (mut equal, mut differ, mut failed) = (0, 0, 0);
    for sd in &profiles {
        let url = sd["url"].as_str().unwrap_or("?");
        let published: Vec<String> = sd["snapshot"]["element"]
            .as_array()
            .into_iter()
            .flatten()
            .map(key)
            .collect();
        match snapshot::generate(defs, &catalogue, sd) {
            Err(e) => {
                failed += 1;
                println!("FAIL {url}: {e}");
            }
            Ok(generated) => {
                let generated: Vec<String> = generated.iter().map(key).collect();
                if generated == published {
                    equal += 1;
                } else {
                    differ += 1;
                    let missing: Vec<&String> = published
                        .iter()
                        .filter(|p| !generated.contains(p))
                        .take(3)
                        .collect();
                    let extra: Vec<&String> = generated
                        .iter()
                        .filter(|g| !published.contains(g))
                        .take(3)
                        .collect();
                    println!(
                        "DIFF {url}: {} published vs {} generated elements; missing {missing:?}; extra {extra:?}",
                        published.len(),
                        generated.len()
                    );
                }
            }
        }
    }
    println!(
        "us-core snapshots: {equal} equal, {differ} differ, {failed} failed of {} profiles",
        profiles.len()
    );
    assert!(equal >= FLOOR);
}
