//! Index extraction: evaluates every search parameter of a resource's type over the resource and
//! turns the results into index rows (see `store::IndexRows`). Pure and CPU-only, so it runs on the
//! request's worker thread before the write reaches the single writer.

use super::dates;
use super::normalize::normalize;
use super::params::{ParamKind, ParamSpec, TypeParams};
use crate::definitions::Definitions;
use crate::fhirpath::{Environment, ReferenceResolver, Value as PathValue};
use crate::store::{
    DateRow, IndexRows, NumberRow, QuantityRow, ReferenceRow, StringRow, TokenRow, UriRow,
};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Parameters indexed elsewhere: `_id` and `_lastUpdated` are columns of the resource head.
fn indexed(spec: &ParamSpec) -> bool {
    spec.code != "_id" && spec.code != "_lastUpdated"
}

/// Answers `resolve()` in search expressions (`subject.where(resolve() is Patient)`) with a stand-in
/// carrying only the target's type: what those expressions test, without reading the store on the
/// write path.
struct TypeOnly<'a> {
    /// fullUrl -> type of the other entries of a Bundle (`urn:uuid:` references are rewritten
    /// only on the writer, after extraction).
    aliases: &'a HashMap<String, String>,
}

fn stubs() -> &'static HashMap<String, Value> {
    static S: OnceLock<HashMap<String, Value>> = OnceLock::new();
    S.get_or_init(|| {
        Definitions::core()
            .resource_types()
            .map(|t| (t.to_string(), serde_json::json!({ "resourceType": t })))
            .collect()
    })
}

impl ReferenceResolver for TypeOnly<'_> {
    fn resolve(&self, reference: &str) -> Option<&Value> {
        let ty = match self.aliases.get(reference) {
            Some(t) => t.clone(),
            // A conditional reference (`Patient?identifier=...`) names its type too.
            None => match reference.split_once('?') {
                Some((t, _)) => t.to_string(),
                None => parse_reference(reference)?.0,
            },
        };
        stubs().get(&ty)
    }
}

/// The index rows of `resource` for the parameters of its type.
pub fn extract(params: &TypeParams, resource: &Value) -> IndexRows {
    extract_in(params, resource, &HashMap::new())
}

/// [`extract`] for a resource of a Bundle whose other entries' fullUrls map to their types.
pub fn extract_in(
    params: &TypeParams,
    resource: &Value,
    aliases: &HashMap<String, String>,
) -> IndexRows {
    let mut rows = IndexRows::default();
    let mut env = Environment::for_resource(resource);
    let resolver = TypeOnly { aliases };
    env.resolver = Some(&resolver);
    // Where composite components are evaluated, one repetition at a time.
    let mut part_env: Option<Environment> = None;
    for spec in params.by_code.values() {
        let Some(expr) = &spec.expression else {
            continue;
        };
        if !indexed(spec) {
            continue;
        }
        // A failing expression (a function the data cannot satisfy) indexes nothing for it.
        let Ok(found) = expr.evaluate(&env) else {
            continue;
        };
        if spec.kind == ParamKind::Composite {
            let part_env = part_env.get_or_insert_with(|| {
                let mut e = Environment::for_resource(resource);
                e.resolver = Some(&resolver);
                e
            });
            for item in found {
                add_composite(&mut rows, spec, part_env, item);
            }
            continue;
        }
        for v in &found {
            add_value(&mut rows, spec, v);
        }
    }
    // `_text` and `_content` have no expression: their one row each is the searchable text.
    for (code, text) in [
        (
            super::fulltext::TEXT,
            super::fulltext::narrative_text as fn(&Value) -> Option<String>,
        ),
        (super::fulltext::CONTENT, super::fulltext::content_text),
    ] {
        if params.get(code).is_some()
            && let Some(norm) = text(resource)
        {
            rows.strings.push(StringRow {
                param: code.to_string(),
                norm,
                exact: String::new(),
            });
        }
    }
    rows
}

/// The keys a token part of a composite is searched by: `system|code` (or `|code` without a
/// system) and the bare `code`, which matches in any system.
fn composite_keys(tokens: &[TokenRow]) -> Vec<String> {
    let mut keys = Vec::new();
    for t in tokens.iter().filter(|t| !t.code.is_empty()) {
        // A code without a system is found by `|code` too.
        keys.push(composite_key(
            Some(t.system.as_deref().unwrap_or("")),
            Some(&t.code),
        ));
        keys.push(composite_key(None, Some(&t.code)));
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The parameter name of a composite's index row for one token key (see
/// `params::composite_indexable`): `code-value-quantity$http://loinc.org|8480-6`. `system`
/// `None` is any system, `Some("")` none.
pub fn composite_key(system: Option<&str>, code: Option<&str>) -> String {
    let code = code.unwrap_or("");
    match system {
        Some(s) => format!("{s}|{code}"),
        None => code.to_string(),
    }
}

/// The rows of one repetition of a composite (one item of its expression): each row of the second
/// component, under a parameter name carrying each key of the first, so a search matches both
/// parts within the same repetition. `part_env` is one per resource, its context moved from
/// repetition to repetition, since this runs on every write.
fn add_composite<'a>(
    rows: &mut IndexRows,
    spec: &ParamSpec,
    part_env: &mut Environment<'a>,
    item: PathValue<'a>,
) {
    let [first, second] = spec.components.as_slice() else {
        return;
    };
    part_env.context = vec![item];
    let part_env = &*part_env;
    let eval = |c: &super::params::Component| -> IndexRows {
        let mut part = IndexRows::default();
        let shape = ParamSpec {
            code: String::new(),
            kind: c.kind,
            url: String::new(),
            expression_text: None,
            expression: None,
            targets: vec![],
            components: vec![],
            one_row: false,
        };
        if let Ok(found) = c.expression.evaluate(part_env) {
            for v in &found {
                add_value(&mut part, &shape, v);
            }
        }
        part
    };
    // The value first: most repetitions lack the value type of most composites (an Observation
    // has one value[x]), and then the code need not be evaluated at all.
    let values = eval(second);
    if values.is_empty() {
        return;
    }
    let keys = composite_keys(&eval(first).tokens);
    for key in keys {
        let param = format!("{}${key}", spec.code);
        macro_rules! renamed {
            ($field:ident) => {
                rows.$field.extend(values.$field.iter().map(|r| {
                    let mut r = r.clone();
                    r.param = param.clone();
                    r
                }))
            };
        }
        renamed!(strings);
        renamed!(tokens);
        renamed!(references);
        renamed!(dates);
        renamed!(numbers);
        renamed!(quantities);
        renamed!(uris);
    }
}

/// The JSON behind a result item and its FHIR type name.
fn json_of<'v>(v: &'v PathValue) -> (Cow<'v, Value>, String) {
    match v {
        PathValue::Node(n) => (
            n.json.map_or(Cow::Owned(Value::Null), Cow::Borrowed),
            v.type_name().to_string(),
        ),
        other => (Cow::Owned(other.to_json()), other.type_name().to_string()),
    }
}

fn str_of<'j>(v: &'j Value, key: &str) -> Option<&'j str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn each<'j>(v: &'j Value, key: &str) -> impl Iterator<Item = &'j Value> {
    let items: Vec<&Value> = match v.get(key) {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(x) => vec![x],
        None => vec![],
    };
    items.into_iter()
}

fn add_value(rows: &mut IndexRows, spec: &ParamSpec, v: &PathValue) {
    let (json, ty) = json_of(v);
    let json = json.as_ref();
    let code = &spec.code;
    match spec.kind {
        ParamKind::String => add_strings(rows, code, json),
        ParamKind::Token => add_tokens(rows, code, &ty, json),
        ParamKind::Reference => add_reference(rows, code, &ty, json),
        ParamKind::Date => add_dates(rows, code, &ty, json),
        ParamKind::Number => {
            if let Some(n) = number(json) {
                rows.numbers.push(NumberRow {
                    param: code.clone(),
                    value: n,
                });
            }
        }
        ParamKind::Quantity => add_quantity(rows, code, &ty, json),
        ParamKind::Uri => {
            if let Some(s) = json.as_str() {
                rows.uris.push(UriRow {
                    param: code.clone(),
                    uri: s.to_string(),
                });
            }
        }
        ParamKind::Composite | ParamKind::Special => {}
    }
}

fn push_string(rows: &mut IndexRows, param: &str, s: &str) {
    if s.is_empty() {
        return;
    }
    rows.strings.push(StringRow {
        param: param.to_string(),
        norm: normalize(s),
        exact: s.to_string(),
    });
}

/// Every string part of a value: a primitive itself, or the string leaves of a complex value
/// (`HumanName` gives family, given, prefix, suffix and text; `Address` its lines and parts).
fn add_strings(rows: &mut IndexRows, param: &str, json: &Value) {
    match json {
        Value::String(s) => push_string(rows, param, s),
        Value::Array(a) => a.iter().for_each(|x| add_strings(rows, param, x)),
        Value::Object(m) => {
            for (k, v) in m {
                // Codes, systems and extensions are not what a name or address search means.
                if matches!(
                    k.as_str(),
                    "extension" | "use" | "system" | "period" | "type" | "id"
                ) {
                    continue;
                }
                add_strings(rows, param, v);
            }
        }
        _ => {}
    }
}

fn token(param: &str, system: Option<&str>, code: &str, text: Option<&str>) -> TokenRow {
    TokenRow {
        param: param.to_string(),
        system: system.map(str::to_string),
        code: code.to_string(),
        text: text.map(normalize),
    }
}

fn add_coding(rows: &mut IndexRows, param: &str, c: &Value) {
    if let Some(code) = str_of(c, "code") {
        rows.tokens.push(token(
            param,
            str_of(c, "system"),
            code,
            str_of(c, "display"),
        ));
    } else if let Some(d) = str_of(c, "display") {
        rows.tokens
            .push(token(param, str_of(c, "system"), "", Some(d)));
    }
}

fn add_tokens(rows: &mut IndexRows, param: &str, ty: &str, json: &Value) {
    match json {
        Value::Bool(b) => rows.tokens.push(token(param, None, &b.to_string(), None)),
        Value::String(s) if !s.is_empty() => rows.tokens.push(token(param, None, s, None)),
        Value::Number(n) => rows.tokens.push(token(param, None, &n.to_string(), None)),
        Value::Object(_) => match ty {
            "Coding" => add_coding(rows, param, json),
            "CodeableConcept" => {
                for c in each(json, "coding") {
                    add_coding(rows, param, c);
                }
                if let Some(t) = str_of(json, "text") {
                    rows.tokens.push(token(param, None, "", Some(t)));
                }
            }
            "Identifier" => {
                let text = json.get("type").and_then(|t| str_of(t, "text"));
                if let Some(value) = str_of(json, "value") {
                    rows.tokens
                        .push(token(param, str_of(json, "system"), value, text));
                    // `:of-type` rows: the identifier's type coding with the value.
                    if let Some(t) = json.get("type") {
                        for c in each(t, "coding") {
                            if let Some(tc) = str_of(c, "code") {
                                rows.tokens.push(token(
                                    &format!("{param}:of-type"),
                                    str_of(c, "system"),
                                    &format!("{tc}|{value}"),
                                    None,
                                ));
                            }
                        }
                    }
                }
            }
            "ContactPoint" => {
                if let Some(value) = str_of(json, "value") {
                    rows.tokens
                        .push(token(param, str_of(json, "system"), value, None));
                }
            }
            _ => {
                // A Quantity or other coded structure searched as a token: its system and code.
                if let Some(code) = str_of(json, "code") {
                    rows.tokens
                        .push(token(param, str_of(json, "system"), code, None));
                }
            }
        },
        _ => {}
    }
}

/// Splits a reference (`Patient/1`, `Patient/1/_history/2`, `http://x/fhir/Patient/1`) into its
/// target type and id when it names one.
pub fn parse_reference(url: &str) -> Option<(String, String)> {
    let without_version = match url.find("/_history/") {
        Some(i) => &url[..i],
        None => url,
    };
    let without_version = without_version.split('|').next().unwrap_or(without_version);
    let mut segs = without_version.rsplit('/');
    let id = segs.next()?;
    let ty = segs.next()?;
    (Definitions::core().is_resource_type(ty) && crate::model::primitives::is_id(id))
        .then(|| (ty.to_string(), id.to_string()))
}

fn add_reference(rows: &mut IndexRows, param: &str, ty: &str, json: &Value) {
    let url = match json {
        Value::String(s) => Some(s.as_str()),
        Value::Object(_) if ty == "Reference" || json.get("reference").is_some() => {
            if let Some(ident) = json.get("identifier")
                && let Some(value) = str_of(ident, "value")
            {
                rows.tokens.push(token(
                    &format!("{param}:identifier"),
                    str_of(ident, "system"),
                    value,
                    None,
                ));
            }
            str_of(json, "reference")
        }
        _ => None,
    };
    // A reference with only a display or identifier, or to a contained resource, is still a
    // value (`:missing=false` finds it); it names no target.
    let url = match json {
        Value::Object(_) => url.unwrap_or(""),
        _ => match url {
            Some(u) => u,
            None => return,
        },
    };
    let target = if url.starts_with('#') {
        None
    } else {
        parse_reference(url)
    };
    rows.references.push(ReferenceRow {
        param: param.to_string(),
        url: url.to_string(),
        target_type: target.as_ref().map(|t| t.0.clone()),
        target_id: target.map(|t| t.1),
    });
}

fn add_dates(rows: &mut IndexRows, param: &str, ty: &str, json: &Value) {
    let mut push = |low: i64, high: i64| {
        rows.dates.push(DateRow {
            param: param.to_string(),
            low,
            high,
        })
    };
    match json {
        Value::String(s) => {
            if let Some((lo, hi)) = dates::range(s) {
                push(lo, hi);
            }
        }
        Value::Object(_)
            if ty == "Period" || json.get("start").is_some() || json.get("end").is_some() =>
        {
            let lo = str_of(json, "start").and_then(dates::range).map(|r| r.0);
            let hi = str_of(json, "end").and_then(dates::range).map(|r| r.1);
            if lo.is_some() || hi.is_some() {
                push(lo.unwrap_or(i64::MIN), hi.unwrap_or(i64::MAX));
            }
        }
        Value::Object(_) if ty == "Timing" => {
            let mut lo = i64::MAX;
            let mut hi = i64::MIN;
            for e in each(json, "event") {
                if let Some((l, h)) = e.as_str().and_then(dates::range) {
                    lo = lo.min(l);
                    hi = hi.max(h);
                }
            }
            if let Some(b) = json.get("repeat").and_then(|r| r.get("boundsPeriod")) {
                if let Some((l, _)) = str_of(b, "start").and_then(dates::range) {
                    lo = lo.min(l);
                }
                if let Some((_, h)) = str_of(b, "end").and_then(dates::range) {
                    hi = hi.max(h);
                }
            }
            if lo <= hi {
                push(lo, hi);
            }
        }
        _ => {}
    }
}

fn number(json: &Value) -> Option<f64> {
    match json {
        Value::Number(n) => n.to_string().parse().ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn add_quantity(rows: &mut IndexRows, param: &str, ty: &str, json: &Value) {
    let Some(raw) = json.get("value") else {
        return;
    };
    let Some(value) = number(raw) else {
        return;
    };
    let code = str_of(json, "code").or(if ty == "Money" {
        str_of(json, "currency")
    } else {
        None
    });
    let system = str_of(json, "system");
    let unit = str_of(json, "unit");
    // The decimal as written, so the conversion is exact (`120 mm[Hg]` stays an exact value).
    let written = match raw {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let canonical = super::units::of_stored(&written, value, system, code, unit);
    rows.quantities.push(QuantityRow {
        param: param.to_string(),
        value,
        system: system.map(str::to_string),
        code: code.map(str::to_string),
        unit: unit.map(str::to_string),
        canonical_value: canonical.value,
        canonical_code: canonical.code,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::params::Catalogue;
    use serde_json::json;

    #[test]
    fn a_patient_yields_rows_of_every_kind_it_has() {
        let c = Catalogue::new();
        let p = json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "urn:mrn", "value": "42",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
            "name": [{"family": "Müller", "given": ["Anna"]}],
            "gender": "female", "birthDate": "1990-03-07",
            "managingOrganization": {"reference": "Organization/o1"}});
        let rows = extract(&c.for_type("Patient"), &p);
        assert!(
            rows.strings
                .iter()
                .any(|r| r.param == "family" && r.norm == "muller")
        );
        assert!(
            rows.strings
                .iter()
                .any(|r| r.param == "name" && r.exact == "Anna")
        );
        assert!(
            rows.tokens
                .iter()
                .any(|r| r.param == "identifier" && r.code == "42")
        );
        assert!(
            rows.tokens
                .iter()
                .any(|r| r.param == "identifier:of-type" && r.code == "MR|42")
        );
        assert!(
            rows.tokens
                .iter()
                .any(|r| r.param == "gender" && r.code == "female")
        );
        assert!(rows.dates.iter().any(|r| r.param == "birthdate"));
        assert!(rows.references.iter().any(|r| r.param == "organization"
            && r.target_type.as_deref() == Some("Organization")
            && r.target_id.as_deref() == Some("o1")));
    }

    #[test]
    fn composite_tuples_stay_within_their_component() {
        let c = Catalogue::new();
        let o = json!({"resourceType": "Observation", "id": "bp", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                 "valueQuantity": {"value": 95, "code": "mm[Hg]"}},
                {"code": {"coding": [{"code": "8462-4"}]},
                 "valueQuantity": {"value": 130, "code": "mm[Hg]"}}]});
        let rows = extract(&c.for_type("Observation"), &o);
        let tuples = |param: &str| -> Vec<f64> {
            rows.quantities
                .iter()
                .filter(|r| r.param == param)
                .map(|r| r.value)
                .collect()
        };
        let p = "component-code-value-quantity";
        assert_eq!(tuples(&format!("{p}$http://loinc.org|8480-6")), vec![95.0]);
        assert_eq!(tuples(&format!("{p}$8480-6")), vec![95.0]);
        assert_eq!(tuples(&format!("{p}$|8462-4")), vec![130.0]);
        assert_eq!(tuples(&format!("{p}$8462-4")), vec![130.0]);
        // The panel has no value of its own.
        assert!(
            !rows
                .quantities
                .iter()
                .any(|r| r.param.starts_with("code-value-quantity$"))
        );
    }
}
