//! Every JSON example of the R4 specification passes the structural checks of the parser.
mod common;

use huitong::model::{ParseLimits, parse_resource};

/// Examples that break a rule of R4 itself, with the rule; the parser must reject exactly these.
const KNOWN_INVALID: &[(&str, &str)] = &[(
    "package/SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json",
    // Its id has 68 characters; R4 ids are at most 64 (`[A-Za-z0-9\-\.]{1,64}`).
    "SearchParameter.id",
)];

#[test]
fn every_r4_example_parses() {
    let Some(examples) = common::r4_examples() else {
        return;
    };
    let mut failures = Vec::new();
    for (name, bytes) in &examples {
        let known = KNOWN_INVALID.iter().find(|(n, _)| n == name);
        match (parse_resource(bytes, None, ParseLimits::default()), known) {
            (Ok(_), None) => {}
            (Err(e), Some((_, location))) => {
                let at: Vec<_> = e
                    .issues
                    .iter()
                    .filter_map(|i| i.expression.as_deref())
                    .collect();
                assert_eq!(at, [*location], "{name}: {e}");
            }
            (Ok(_), Some(_)) => failures.push(format!("{name}: accepted but breaks an R4 rule")),
            (Err(e), None) => failures.push(format!("{name}: {e}")),
        }
    }
    println!(
        "r4 examples: {} checked, {} failures",
        examples.len(),
        failures.len()
    );
    for f in failures.iter().take(40) {
        println!("  {f}");
    }
    assert!(
        examples.len() > 5000,
        "expected the whole examples package, found {}",
        examples.len()
    );
    assert!(failures.is_empty(), "{} examples failed", failures.len());
}
