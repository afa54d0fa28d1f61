//! The code paths the fuzz targets (`fuzz/fuzz_targets/fhirpath_*.rs`) exercise, shared with the
//! test that replays the saved corpus in `cargo test`.

use super::{Environment, parse};
use crate::definitions::Definitions;
use serde_json::Value as Json;
use std::sync::OnceLock;

/// The fixed resource the evaluation target runs expressions over: most kinds of element a
/// FHIRPath expression can meet (choice types, primitives with extensions, contained resources,
/// quantities, dates, nested backbone elements).
pub const FUZZ_RESOURCE: &str = r##"{
  "resourceType": "Observation",
  "id": "f1",
  "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
  "contained": [{"resourceType": "Patient", "id": "p", "name": [{"family": "Doe", "given": ["Jo", "Ann"]}], "birthDate": "1970-01-02"}],
  "extension": [{"url": "http://example.org/e", "valueAge": {"value": 42, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}}],
  "status": "final",
  "_status": {"extension": [{"url": "http://example.org/s", "valueString": "x"}]},
  "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
  "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure"}], "text": "BP"},
  "subject": {"reference": "#p"},
  "effectiveDateTime": "2020-02-29T13:28:17.239+02:00",
  "issued": "2020-03-01T00:00:00Z",
  "valueQuantity": {"value": 120.50, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
  "interpretation": [{"text": "normal"}],
  "component": [
    {"code": {"text": "systolic"}, "valueQuantity": {"value": 120, "code": "mm[Hg]", "system": "http://unitsofmeasure.org"}},
    {"code": {"text": "flag"}, "valueBoolean": true},
    {"code": {"text": "note"}, "valueString": "ok \u00e9"},
    {"code": {"text": "when"}, "valuePeriod": {"start": "2020-01", "end": "2020-02-01T10:00:00Z"}},
    {"code": {"text": "count"}, "valueInteger": -3}
  ]
}"##;

fn resource() -> Option<&'static Json> {
    static R: OnceLock<Option<Json>> = OnceLock::new();
    R.get_or_init(|| serde_json::from_str(FUZZ_RESOURCE).ok())
        .as_ref()
}

/// Parses `data` (when UTF-8) as an expression; must never panic.
pub fn parse_bytes(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse(text);
    }
}

/// Parses `data` and evaluates it over [`FUZZ_RESOURCE`], structurally and with the core
/// definitions, leniently and strictly; must never panic.
pub fn evaluate_bytes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = parse(text) else { return };
    let Some(resource) = resource() else { return };
    for defs in [None, Some(Definitions::core())] {
        for strict in [false, true] {
            let mut env = Environment::with_definitions(resource, defs);
            env.strict = strict;
            let _ = expr.evaluate(&env);
        }
    }
}
