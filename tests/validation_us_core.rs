//! The Synthea bundles validated against US Core 3.1.0: the outcome counts, by rule.
//!
//! Each resource is validated against its core definition and, when US Core has a profile named
//! after its type (`us-core-patient` for Patient), against that profile. Slices are not evaluated
//! yet (see ARCHITECTURE.md), so profiles chosen by code (vital signs, lab results) are not used.
mod common;

use huitong::definitions::Definitions;
use huitong::model::Severity;
use huitong::registry::Registry;
use huitong::terminology::Terminology;
use huitong::validation::Validator;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

#[test]
fn synthea_against_us_core_outcome_counts() {
    let (Some(tgz), Some(us_core)) = (
        common::corpora("synthea/synthea-r4-bundles.tgz"),
        common::corpora("us-core-3.1.0"),
    ) else {
        return;
    };
    let registry = Arc::new(Registry::with_core(Definitions::core()));
    assert!(registry.load_dir(&us_core).is_empty());
    let v = Validator::new(
        registry.clone(),
        Arc::new(Terminology::new(registry.clone())),
    );
    let catalogue = registry.catalogue();
    let profile_for = |ty: &str| -> Option<String> {
        let own = format!(
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-{}",
            ty.to_lowercase()
        );
        catalogue.resource("StructureDefinition", &own).map(|_| own)
    };
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    let (mut resources, mut profiled, mut with_errors) = (0, 0, 0);
    for (_, bytes) in common::tgz_files(&tgz) {
        let bundle: Value = serde_json::from_slice(&bytes).expect("bundle JSON");
        for e in bundle["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            resources += 1;
            let profiles: Vec<String> = profile_for(r["resourceType"].as_str().unwrap_or(""))
                .into_iter()
                .collect();
            profiled += usize::from(!profiles.is_empty());
            let report = v.validate(r, &profiles, true);
            if report.has_errors() {
                with_errors += 1;
            }
            for i in report
                .issues
                .iter()
                .filter(|i| i.severity == Severity::Error)
            {
                let key = i.diagnostics.chars().take(140).collect::<String>();
                *by_rule.entry(key).or_default() += 1;
            }
        }
    }
    println!(
        "synthea vs US Core 3.1.0: {resources} resources, {profiled} with a US Core profile for their type, {with_errors} with errors"
    );
    for (rule, n) in &by_rule {
        println!("  {n:6} {rule}");
    }
    // Every error found here so far was a validator defect, not a defect of the data; a real data
    // defect would be listed here with its explanation.
    assert_eq!(with_errors, 0, "{by_rule:#?}");
}
