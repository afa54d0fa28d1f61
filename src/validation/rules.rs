//! Rules of particular resource types that the specification states in prose, not in a
//! StructureDefinition: Bundle `fullUrl`s and links, absolute code system URIs in a ValueSet, and
//! a SearchParameter agreeing with the one it is derived from.
//!
//! Each rule returns issues with a location relative to the resource (`entry[0].fullUrl`); the
//! walk prefixes the resource's own location.

use crate::definitions::Definitions;
use crate::model::{Issue, Severity};
use crate::registry::Catalogue;
use serde_json::{Map, Value};

/// An issue of one rule: severity, location below the resource, message.
pub(crate) type Finding = (Severity, &'static str, String, String);

/// The findings for one resource of type `ty`.
pub(crate) fn check(
    defs: &Definitions,
    catalogue: &Catalogue,
    ty: &str,
    obj: &Map<String, Value>,
) -> Vec<Finding> {
    match ty {
        "Bundle" => bundle(obj),
        "ValueSet" => {
            let mut out = value_set(obj);
            out.extend(coding_filters(catalogue, obj));
            out
        }
        "SearchParameter" => search_parameter(defs, obj),
        _ => Vec::new(),
    }
}

fn items<'a>(obj: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    obj.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// An absolute URI has a scheme (`http:`, `urn:`).
fn is_absolute(uri: &str) -> bool {
    uri.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// `Bundle.entry.fullUrl` is absolute (bdl rules, R4 §Bundle "fullUrl SHALL be an absolute URL"),
/// and each link relation occurs at most once (`self`, `next`... name one page each).
fn bundle(obj: &Map<String, Value>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, e) in items(obj, "entry").enumerate() {
        if let Some(u) = e.get("fullUrl").and_then(Value::as_str)
            && !is_absolute(u)
        {
            out.push((
                Severity::Error,
                "value",
                format!("entry[{i}].fullUrl"),
                format!("Bundle.entry.fullUrl must be an absolute URL, not '{u}'"),
            ));
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, l) in items(obj, "link").enumerate() {
        let Some(rel) = l.get("relation").and_then(Value::as_str) else {
            continue;
        };
        if seen.contains(&rel) {
            out.push((
                Severity::Error,
                "business-rule",
                format!("link[{i}]"),
                format!("Bundle.link: the relation '{rel}' occurs more than once"),
            ));
        } else {
            seen.push(rel);
        }
    }
    out
}

/// `ValueSet.compose.include.system` / `exclude.system` are absolute URIs: a `#id` reference to a
/// contained code system is not how R4 names one.
fn value_set(obj: &Map<String, Value>) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(compose) = obj.get("compose").and_then(Value::as_object) else {
        return out;
    };
    for part in ["include", "exclude"] {
        for (i, inc) in items(compose, part).enumerate() {
            if let Some(s) = inc.get("system").and_then(Value::as_str)
                && !is_absolute(s)
            {
                out.push((
                    Severity::Error,
                    "value",
                    format!("compose.{part}[{i}].system"),
                    format!("ValueSet.compose.{part}.system must be an absolute URI, not '{s}'"),
                ));
            }
        }
    }
    out
}

/// A filter on a code system property of type Coding gives its value as `system(|version)#code`,
/// and the code exists when that system is held here in full.
fn coding_filters(catalogue: &Catalogue, obj: &Map<String, Value>) -> Vec<Finding> {
    let mut out = Vec::new();
    let includes = obj
        .get("compose")
        .and_then(|c| c.get("include"))
        .and_then(Value::as_array);
    for (i, inc) in includes.into_iter().flatten().enumerate() {
        let Some(cs) = inc
            .get("system")
            .and_then(Value::as_str)
            .and_then(|s| catalogue.resource("CodeSystem", s))
        else {
            continue;
        };
        let filters = inc.get("filter").and_then(Value::as_array);
        for (j, f) in filters.into_iter().flatten().enumerate() {
            let (Some(prop), Some(value)) = (
                f.get("property").and_then(Value::as_str),
                f.get("value").and_then(Value::as_str),
            ) else {
                continue;
            };
            let is_coding = cs
                .get("property")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|p| p["code"] == prop && p["type"] == "Coding");
            if !is_coding || f.get("op").and_then(Value::as_str) != Some("=") {
                continue;
            }
            let at = format!("compose.include[{i}].filter[{j}].value");
            let Some((system, code)) = value.split_once('#') else {
                out.push((
                    Severity::Error,
                    "value",
                    at,
                    format!("the filter on the Coding property '{prop}' needs a value of the form system(|version)#code, not '{value}'"),
                ));
                continue;
            };
            let system = system.split('|').next().unwrap_or(system);
            let Some(target) = catalogue.resource("CodeSystem", system) else {
                continue;
            };
            if target["content"] == "complete" && !has_concept(&target["concept"], code) {
                out.push((
                    Severity::Error,
                    "code-invalid",
                    at,
                    format!("the filter on the property '{prop}' names the code '{code}', which the code system {system} does not define"),
                ));
            }
        }
    }
    out
}

fn has_concept(concepts: &Value, code: &str) -> bool {
    concepts
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["code"] == code || has_concept(&c["concept"], code))
}

/// A SearchParameter derived from a core one keeps its type, and its bases are among the
/// original's.
fn search_parameter(defs: &Definitions, obj: &Map<String, Value>) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(from) = obj.get("derivedFrom").and_then(Value::as_str) else {
        return out;
    };
    let url = from.split('|').next().unwrap_or(from);
    let Some(original) = defs
        .artefact()
        .search_parameters
        .iter()
        .find(|p| p.url == url)
    else {
        return out;
    };
    if let Some(t) = obj.get("type").and_then(Value::as_str)
        && t != original.kind
    {
        out.push((
            Severity::Error,
            "business-rule",
            "type".into(),
            format!(
                "SearchParameter.type is {t}, but the parameter it is derived from ({url}) is {}",
                original.kind
            ),
        ));
    }
    for (i, b) in items(obj, "base").filter_map(Value::as_str).enumerate() {
        if !original.base.iter().any(|o| o == b || o == "Resource") {
            out.push((
                Severity::Error,
                "business-rule",
                format!("base[{i}]"),
                format!(
                    "SearchParameter.base {b} is not a base of the parameter it is derived from ({url}: {})",
                    original.base.join(", ")
                ),
            ));
        }
    }
    out
}

/// The findings as issues located under `at` (the resource's FHIRPath location).
pub(crate) fn issues_at(at: &str, findings: Vec<Finding>) -> impl Iterator<Item = Issue> + '_ {
    findings
        .into_iter()
        .map(move |(severity, code, rel, msg)| Issue {
            severity,
            code,
            diagnostics: msg,
            expression: Some(format!("{at}.{rel}")),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> Vec<String> {
        let ty = v["resourceType"].as_str().unwrap().to_string();
        let registry = crate::registry::Registry::with_core(Definitions::core());
        check(
            Definitions::core(),
            &registry.catalogue(),
            &ty,
            v.as_object().unwrap(),
        )
        .into_iter()
        .map(|(_, _, at, msg)| format!("{at}: {msg}"))
        .collect()
    }

    #[test]
    fn bundles_need_absolute_full_urls_and_single_link_relations() {
        let found = run(json!({"resourceType": "Bundle", "type": "searchset",
            "link": [{"relation": "self", "url": "a"}, {"relation": "self", "url": "b"},
                     {"relation": "next", "url": "c"}],
            "entry": [{"fullUrl": "Patient/1"}, {"fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
                      {"fullUrl": "http://x/Patient/2"}]}));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("entry[0].fullUrl: "), "{found:?}");
        assert!(found[1].starts_with("link[1]: "), "{found:?}");
    }

    #[test]
    fn value_set_systems_are_absolute_and_derived_search_parameters_agree() {
        let found = run(json!({"resourceType": "ValueSet", "status": "draft",
            "compose": {"include": [{"system": "#c1"}, {"system": "http://loinc.org"}]}}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("compose.include[0].system"));
        let found = run(json!({"resourceType": "SearchParameter", "type": "token",
            "base": ["Patient"], "code": "name",
            "derivedFrom": "http://hl7.org/fhir/SearchParameter/Organization-name"}));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("type: "));
        assert!(found[1].starts_with("base[0]: "));
    }
}
