//! Checks of conformance resources as they are loaded, so that a broken profile or value set is
//! named with its file at start-up instead of surfacing (or silently matching nothing) the first
//! time something is validated against it.
//!
//! Found here: a profile whose base is unknown or whose base chain is circular (the snapshot cannot
//! be generated), a slicing without a discriminator (no instance could ever be sorted into its
//! slices), a constraint whose FHIRPath does not parse, and a value set that includes itself
//! (directly or through other value sets). Each is a [`LoadProblem`]: the source file and an
//! OperationOutcome issue naming the resource, the element and the rule. Nothing is unloaded: the
//! server still starts, and the rest of the file's resources are in force.

use crate::definitions::Definitions;
use crate::fhirpath;
use crate::model::{FhirError, Issue, Severity};
use crate::registry::{Catalogue, LoadProblem, Registered, Registry};
use serde_json::Value;
use std::path::Path;

/// Loads every conformance resource under `dir` into `registry` ([`Registry::load_dir`]) and
/// audits what was loaded from it; returns every problem, each naming its file.
pub fn load_profiles(registry: &Registry, dir: &Path) -> Vec<LoadProblem> {
    let mut problems = registry.load_dir(dir);
    let prefix = dir.to_string_lossy().into_owned();
    let catalogue = registry.catalogue();
    for ty in ["StructureDefinition", "ValueSet"] {
        for r in catalogue
            .all(ty)
            .filter(|r| r.source.starts_with(prefix.as_str()))
        {
            problems.extend(audit(Definitions::core(), &catalogue, r));
        }
    }
    problems.sort_by(|a, b| a.source.cmp(&b.source));
    problems
}

/// The problems of one registered resource (empty when it is sound).
pub fn audit(defs: &Definitions, catalogue: &Catalogue, r: &Registered) -> Vec<LoadProblem> {
    let res = r.resource.as_ref();
    let issues = match res.get("resourceType").and_then(Value::as_str) {
        Some("StructureDefinition") => structure_definition(defs, catalogue, res),
        Some("ValueSet") => value_set(catalogue, res),
        _ => Vec::new(),
    };
    issues
        .into_iter()
        .map(|issue| LoadProblem {
            source: r.source.to_string(),
            error: FhirError {
                status: 422,
                issues: vec![issue],
            },
        })
        .collect()
}

fn url_of(res: &Value) -> &str {
    res.get("url").and_then(Value::as_str).unwrap_or("(no url)")
}

/// The problems of a StructureDefinition: its snapshot cannot be generated, a slicing without a
/// discriminator, a constraint that does not parse.
pub(crate) fn structure_definition(
    defs: &Definitions,
    catalogue: &Catalogue,
    sd: &Value,
) -> Vec<Issue> {
    let url = url_of(sd);
    let mut issues = Vec::new();
    let elements = match super::snapshot::snapshot_of(defs, catalogue, sd) {
        Ok(els) => els,
        Err(e) => {
            // Unknown base, circular base chain, an inapplicable differential.
            issues.extend(e.issues);
            return issues;
        }
    };
    // A published snapshot and the differential are both checked: a differential-only profile's
    // generated snapshot inherits its base's slicings, which were checked with the base.
    let own = ["snapshot", "differential"].into_iter().flat_map(|part| {
        sd.pointer(&format!("/{part}/element"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(move |(i, el)| (format!("StructureDefinition.{part}.element[{i}]"), el))
    });
    for (at, el) in own {
        let id = el
            .get("id")
            .or_else(|| el.get("path"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        if let Some(slicing) = el.get("slicing") {
            let none = slicing
                .get("discriminator")
                .and_then(Value::as_array)
                .is_none_or(|d| d.is_empty());
            if none {
                issues.push(
                    Issue {
                        severity: Severity::Warning,
                        code: "invalid",
                        diagnostics: format!(
                            "profile {url}: the slicing of {id} has no discriminator, so no instance can be matched to its slices"
                        ),
                        expression: None,
                    }
                    .at(format!("{at}.slicing")),
                );
            }
        }
        for (n, c) in el
            .get("constraint")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(expr) = c.get("expression").and_then(Value::as_str) else {
                continue;
            };
            if let Err(e) = fhirpath::parse(expr) {
                let key = c.get("key").and_then(Value::as_str).unwrap_or("?");
                issues.push(
                    Issue::error(
                        "invariant",
                        format!(
                            "profile {url}: constraint {key} on {id} is not valid FHIRPath ({e}); it cannot be checked"
                        ),
                    )
                    .at(format!("{at}.constraint[{n}].expression")),
                );
            }
        }
    }
    if elements.is_empty() {
        issues
            .push(Issue::error("invalid", format!("profile {url} has no elements")).at("snapshot"));
    }
    issues
}

/// A value set reaching itself through `compose.include.valueSet` / `compose.exclude.valueSet`.
fn value_set(catalogue: &Catalogue, vs: &Value) -> Vec<Issue> {
    let url = url_of(vs);
    let mut path = vec![url.to_string()];
    match cycle(catalogue, vs, url, &mut path, &mut Vec::new()) {
        Some(chain) => vec![
            Issue::error(
                "invariant",
                format!(
                    "value set {url} includes itself: {}; it cannot be expanded",
                    chain.join(" -> ")
                ),
            )
            .at("ValueSet.compose"),
        ],
        None => Vec::new(),
    }
}

fn imports(vs: &Value) -> impl Iterator<Item = &str> {
    ["include", "exclude"].into_iter().flat_map(move |part| {
        vs.pointer(&format!("/compose/{part}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|inc| inc.get("valueSet").and_then(Value::as_array))
            .flatten()
            .filter_map(Value::as_str)
    })
}

/// Depth-first over the imports; `seen` keeps the search linear when value sets share imports.
fn cycle(
    catalogue: &Catalogue,
    vs: &Value,
    start: &str,
    path: &mut Vec<String>,
    seen: &mut Vec<String>,
) -> Option<Vec<String>> {
    for import in imports(vs) {
        let bare = import.split('|').next().unwrap_or(import);
        if bare == start {
            let mut chain = path.clone();
            chain.push(bare.to_string());
            return Some(chain);
        }
        if seen.iter().any(|s| s == bare) || path.iter().any(|p| p == bare) {
            continue;
        }
        seen.push(bare.to_string());
        // A version this registry does not hold still names the value set.
        let next = catalogue
            .resource("ValueSet", import)
            .or_else(|| catalogue.resource("ValueSet", bare));
        if let Some(next) = next {
            path.push(bare.to_string());
            if let Some(c) = cycle(catalogue, next, start, path, seen) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile(id: &str, base: &str, diff: Value) -> Value {
        json!({"resourceType": "StructureDefinition", "id": id,
            "url": format!("http://example.org/StructureDefinition/{id}"), "name": id,
            "status": "active", "kind": "resource", "abstract": false, "type": "Patient",
            "baseDefinition": base, "derivation": "constraint",
            "differential": {"element": diff}})
    }

    fn write(dir: &Path, name: &str, v: &Value) {
        std::fs::write(dir.join(name), v.to_string()).unwrap();
    }

    #[test]
    fn broken_profiles_and_value_sets_are_each_named_with_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ex = "http://example.org/StructureDefinition/";
        write(
            d,
            "good.json",
            &profile(
                "good",
                "http://hl7.org/fhir/StructureDefinition/Patient",
                json!([{"id": "Patient.gender", "path": "Patient.gender", "min": 1}]),
            ),
        );
        write(
            d,
            "unknown-base.json",
            &profile("orphan", &format!("{ex}nowhere"), json!([])),
        );
        write(
            d,
            "circle-a.json",
            &profile("circle-a", &format!("{ex}circle-b"), json!([])),
        );
        write(
            d,
            "circle-b.json",
            &profile("circle-b", &format!("{ex}circle-a"), json!([])),
        );
        write(
            d,
            "no-discriminator.json",
            &profile(
                "no-discriminator",
                "http://hl7.org/fhir/StructureDefinition/Patient",
                json!([
                    {"id": "Patient.identifier", "path": "Patient.identifier",
                     "slicing": {"rules": "open"}},
                    {"id": "Patient.identifier:mrn", "path": "Patient.identifier", "sliceName": "mrn"}
                ]),
            ),
        );
        write(
            d,
            "bad-fhirpath.json",
            &profile(
                "bad-fhirpath",
                "http://hl7.org/fhir/StructureDefinition/Patient",
                json!([{"id": "Patient", "path": "Patient", "constraint": [
                    {"key": "x-1", "severity": "error", "human": "broken",
                     "expression": "name.where(family = )"}]}]),
            ),
        );
        write(
            d,
            "self-vs.json",
            &json!({"resourceType": "ValueSet", "url": "http://example.org/vs/self",
                "status": "active", "compose": {"include": [
                    {"valueSet": ["http://example.org/vs/other"]}]}}),
        );
        write(
            d,
            "other-vs.json",
            &json!({"resourceType": "ValueSet", "url": "http://example.org/vs/other",
                "status": "active", "compose": {"include": [
                    {"valueSet": ["http://example.org/vs/self|1.0"]}]}}),
        );
        let registry = Registry::with_core(Definitions::core());
        let problems = load_profiles(&registry, d);
        let find = |file: &str, text: &str| {
            problems.iter().any(|p| {
                p.source.ends_with(file)
                    && p.error.issues.iter().any(|i| i.diagnostics.contains(text))
            })
        };
        let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            find("unknown-base.json", "nowhere is not known"),
            "{all:#?}"
        );
        assert!(find("circle-a.json", "circular"), "{all:#?}");
        assert!(find("circle-b.json", "circular"), "{all:#?}");
        assert!(
            find(
                "no-discriminator.json",
                "Patient.identifier has no discriminator"
            ),
            "{all:#?}"
        );
        assert!(
            find(
                "bad-fhirpath.json",
                "constraint x-1 on Patient is not valid FHIRPath"
            ),
            "{all:#?}"
        );
        assert!(find("self-vs.json", "includes itself"), "{all:#?}");
        assert!(!problems.iter().any(|p| p.source.ends_with("good.json")));
        // Nothing is unloaded: the sound profile (and the broken ones) are registered.
        let c = registry.catalogue();
        assert!(
            c.resource("StructureDefinition", &format!("{ex}good"))
                .is_some()
        );
        assert_eq!(problems.len(), 7, "{all:#?}");
    }
}
