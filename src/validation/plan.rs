//! Validation plans: a StructureDefinition compiled once into the rules the walk applies.
//!
//! One shape serves the core definitions and profiles: a core type compiles from the embedded
//! artefact ([`Plan::from_core`]), a profile from its snapshot JSON ([`Plan::from_snapshot`]). Each
//! rule keeps only what the walk needs (cardinality, types with target types, binding, fixed and
//! pattern values, maximum length, invariants with their FHIRPath already parsed), and the indices
//! of its children, so the walk never looks a path up by string.

use crate::definitions::{Definitions, ElementDef};
use crate::fhirpath::{self, Expression};
use crate::model::{FhirError, Issue, Severity};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Binding strength, as far as validation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strength {
    Required,
    Extensible,
    /// `preferred` and `example`: never checked.
    Other,
}

/// A binding of a coded element.
#[derive(Debug, Clone)]
pub struct BindingRule {
    pub strength: Strength,
    pub value_set: String,
}

/// How a repeating element is sliced.
#[derive(Debug, Clone)]
pub struct Slicing {
    /// (type, path): `value`, `pattern`, `exists`, `type`, `profile`; a FHIRPath-like path.
    pub discriminators: Vec<(String, String)>,
    /// Instances that match no slice are errors.
    pub closed: bool,
}

/// One allowed type of an element.
#[derive(Debug, Clone)]
pub struct RuleType {
    /// FHIR type code (`string`, `CodeableConcept`, `Reference`, `BackboneElement`); System types
    /// of `.value` and `id` are mapped to their FHIR names.
    pub code: String,
    /// The choice suffix (`Quantity` for `valueQuantity`).
    pub suffix: String,
    /// Profiles the value must conform to (`type.profile`).
    pub profiles: Vec<String>,
    /// Resource types a Reference may point to (from `targetProfile`; empty = any).
    pub targets: Vec<String>,
    /// The core type's name with a static lifetime (FHIRPath nodes borrow it), if core knows it.
    pub static_name: Option<&'static str>,
    /// The type is a resource (`Resource`, or a resource type): the value is a nested resource.
    pub is_resource: bool,
    /// The compiled plan of the core type, looked up once on first use.
    pub type_plan: std::sync::OnceLock<Option<Arc<Plan>>>,
}

impl RuleType {
    fn new(defs: &'static Definitions, code: String, suffix: String) -> RuleType {
        let static_name = defs.structure(&code).map(|s| s.name.as_str());
        let is_resource = code == "Resource" || defs.is_resource_type(&code);
        RuleType {
            code,
            suffix,
            profiles: Vec::new(),
            targets: Vec::new(),
            static_name,
            is_resource,
            type_plan: std::sync::OnceLock::new(),
        }
    }
}

/// An invariant with its expression parsed once.
#[derive(Debug)]
pub struct Invariant {
    pub key: String,
    pub severity: Severity,
    pub source: String,
    /// The parsed expression, or why it could not be parsed (reported, never fatal).
    pub expression: Result<Expression, String>,
    /// The same test in code, for an invariant every element of its type carries.
    pub native: Option<Native>,
}

/// Invariants checked without the FHIRPath engine: they run on every element of a common type,
/// and each answers exactly as its expression does on a structurally valid instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    /// ext-1 `extension.exists() != value.exists()`: an extension has a value or parts, not both.
    ValueOrParts,
}

impl Native {
    fn of(key: &str, expr: &str) -> Option<Native> {
        (key == "ext-1" && expr == "extension.exists() != value.exists()")
            .then_some(Native::ValueOrParts)
    }

    /// The verdict on `node`, or `None` when only the expression can say (a node that is not an
    /// Extension object).
    pub fn holds(self, node: &fhirpath::Value<'_>) -> Option<bool> {
        let fhirpath::Value::Node(fhirpath::Node {
            json: Some(Value::Object(o)),
            path: Some("Extension"),
            ..
        }) = node
        else {
            return None;
        };
        match self {
            Native::ValueOrParts => {
                let present = |v: Option<&Value>| match v {
                    None | Some(Value::Null) => false,
                    Some(Value::Array(a)) => a.iter().any(|x| !x.is_null()),
                    Some(_) => true,
                };
                let parts = present(o.get("extension")) || present(o.get("_extension"));
                // `value` selects `valueString`, or `_valueString` alone (a value with only
                // extensions); the structural parse admits no other `value...` key.
                let value = o.iter().any(|(k, v)| {
                    let bare = k.strip_prefix('_').unwrap_or(k);
                    bare.strip_prefix("value")
                        .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
                        && present(Some(v))
                });
                Some(parts != value)
            }
        }
    }
}

/// The rules of one element.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `Observation.value[x]`, or for a slice `Patient.identifier:mrn`.
    pub id: String,
    /// `Observation.value[x]`.
    pub path: String,
    /// Set on a slice.
    pub slice_name: Option<String>,
    /// Set on a sliced element.
    pub slicing: Option<Slicing>,
    /// The slices of this element, in order.
    pub slices: Vec<usize>,
    /// The JSON property name, or its stem for a choice (`value`).
    pub name: String,
    pub choice: bool,
    pub min: u32,
    /// `None` for `*`.
    pub max: Option<u32>,
    pub types: Vec<RuleType>,
    /// Child rules, in document order (non-slice elements only).
    pub children: Vec<usize>,
    /// `contentReference`: the rule whose children this element repeats.
    pub content_ref: Option<usize>,
    pub binding: Option<BindingRule>,
    pub invariants: Vec<Arc<Invariant>>,
    pub fixed: Option<Value>,
    pub pattern: Option<Value>,
    pub max_length: Option<usize>,
    /// `minValue[x]` and `maxValue[x]`.
    pub min_value: Option<Value>,
    pub max_value: Option<Value>,
    /// The path of this element in the core definitions, for FHIRPath type information.
    pub core_path: Option<&'static str>,
}

impl Rule {
    /// The type of a value carrying `suffix` (choice) or the only type.
    pub fn type_for(&self, suffix: Option<&str>) -> Option<&RuleType> {
        match suffix {
            Some(s) => self.types.iter().find(|t| t.suffix == s),
            None => self.types.first(),
        }
    }
}

/// A compiled StructureDefinition.
#[derive(Debug)]
pub struct Plan {
    pub url: String,
    /// The type constrained (`Patient`).
    pub type_name: String,
    pub rules: Vec<Rule>,
    /// Problems found while compiling (unparseable invariants), reported with every use.
    pub problems: Vec<Issue>,
}

/// Keys of invariants the structural parse already guarantees: `ele-1` (every element has a value
/// or children) holds for anything `model::check_resource` accepts, since it rejects `null`, `{}`,
/// `[]` and `""`. Evaluating it on every element would double the cost of validation.
const GUARANTEED: [&str; 1] = ["ele-1"];

fn severity(s: &str) -> Severity {
    match s {
        "error" => Severity::Error,
        _ => Severity::Warning,
    }
}

/// Normalises `ElementDefinition.type.code` (System type URLs on `.value` and `id`) to a FHIR name.
fn type_code(code: &str, fhir_type: Option<&str>) -> String {
    if let Some(t) = fhir_type {
        return t.to_string();
    }
    match code.strip_prefix("http://hl7.org/fhirpath/System.") {
        Some("Boolean") => "boolean".into(),
        Some("Integer") => "integer".into(),
        Some("Decimal") => "decimal".into(),
        Some("Date") => "date".into(),
        Some("DateTime") => "dateTime".into(),
        Some("Time") => "time".into(),
        Some(_) => "string".into(),
        None => code.to_string(),
    }
}

fn target_type(url: &str) -> String {
    url.strip_prefix("http://hl7.org/fhir/StructureDefinition/")
        .unwrap_or(url.rsplit('/').next().unwrap_or(url))
        .to_string()
}

/// Compiles invariants, sharing parses across plans (the same key recurs on many elements).
#[derive(Default)]
pub struct InvariantCache {
    by_source: HashMap<(String, String), Arc<Invariant>>,
}

/// Core invariants whose R4 expression is wrong, with the expression that says what the
/// specification means. que-7 tests `answer is Boolean`, which is false for every FHIR `boolean`
/// (FHIRPath tells `FHIR.boolean` from `System.Boolean`; the HL7 suite's testType12 requires it), so
/// as written it refuses every `exists` condition; the R4 example Questionnaire-bb shows the intent.
/// que-12 says "more than one enableWhen" but tests `> 2` (corrected in later releases).
const CORRECTED: [(&str, &str, &str); 2] = [
    (
        "que-7",
        "operator = 'exists' implies (answer is Boolean)",
        "operator = 'exists' implies (answer is FHIR.boolean)",
    ),
    (
        "que-12",
        "enableWhen.count() > 2 implies enableBehavior.exists()",
        "enableWhen.count() > 1 implies enableBehavior.exists()",
    ),
];

impl InvariantCache {
    fn get(&mut self, key: &str, sev: &str, expr: &str) -> Arc<Invariant> {
        let expr = CORRECTED
            .iter()
            .find(|(k, wrong, _)| *k == key && *wrong == expr)
            .map_or(expr, |(_, _, right)| right);
        self.by_source
            .entry((key.to_string(), expr.to_string()))
            .or_insert_with(|| {
                Arc::new(Invariant {
                    key: key.to_string(),
                    severity: severity(sev),
                    source: expr.to_string(),
                    expression: fhirpath::parse_cached(expr).map_err(|e| e.to_string()),
                    native: Native::of(key, expr),
                })
            })
            .clone()
    }
}

/// Fills `children` and `slices` from the element ids: `A.b:s` is a slice of `A.b`, `A.b:s.c` a
/// child of the slice.
fn link(rules: &mut [Rule]) {
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        by_id.entry(r.id.clone()).or_insert(i);
    }
    for i in 1..rules.len() {
        let Some((parent, last)) = rules[i].id.rsplit_once('.') else {
            continue;
        };
        if let Some((name, _)) = last.split_once(':') {
            if let Some(&b) = by_id.get(&format!("{parent}.{name}"))
                && b != i
            {
                rules[b].slices.push(i);
            }
        } else if let Some(&p) = by_id.get(parent) {
            rules[p].children.push(i);
        }
    }
}

fn core_path_of(defs: &'static Definitions, path: &str) -> Option<&'static str> {
    core_element(defs, path).map(|e| e.path.as_str())
}

/// The core element a path denotes, following types through complex elements:
/// `Patient.identifier.system` is `Identifier.system`.
pub fn core_element(defs: &'static Definitions, path: &str) -> Option<&'static ElementDef> {
    if let Some(e) = defs.element(path) {
        return Some(e);
    }
    let mut segs = path.split('.');
    let mut cur: String = segs.next()?.to_string();
    let mut found = None;
    for seg in segs {
        let el = defs.element(&format!("{cur}.{seg}"))?;
        let code = match el.types.as_slice() {
            [one] => one.code.as_str(),
            [] => "",
            _ => "",
        };
        cur = defs.children_path(el, code).to_string();
        found = Some(el);
    }
    found
}

/// Removes from a profile's rules what the core definition already checks, so the profile pass
/// reports only what the profile adds.
pub fn drop_core_duplicates(defs: &'static Definitions, plan: &mut Plan) {
    for r in &mut plan.rules {
        let Some(core) = core_element(defs, &r.path) else {
            continue;
        };
        if r.min <= core.min {
            r.min = 0;
        }
        if r.max == max_of(&core.max) {
            r.max = None;
        }
        if let (Some(b), Some(cb)) = (&r.binding, &core.binding)
            && Some(&b.value_set) == cb.value_set.as_ref()
            && b.strength == strength(&cb.strength)
        {
            r.binding = None;
        }
        r.invariants
            .retain(|i| !core.constraints.iter().any(|c| c.key == i.key));
        if r.fixed.is_some() && r.fixed == core.fixed {
            r.fixed = None;
        }
        if r.pattern.is_some() && r.pattern == core.pattern {
            r.pattern = None;
        }
        for t in &mut r.types {
            let same = core
                .types
                .iter()
                .find(|c| c.code == t.code)
                .is_some_and(|c| {
                    c.target_profile
                        .iter()
                        .map(|u| target_type(u))
                        .collect::<Vec<_>>()
                        == t.targets
                });
            if same {
                t.targets.clear();
            }
        }
    }
}

impl Plan {
    /// Compiles a core type (`Patient`, `HumanName`, `string`).
    pub fn from_core(
        defs: &'static Definitions,
        type_name: &str,
        cache: &mut InvariantCache,
    ) -> Option<Plan> {
        let sd = defs.structure(type_name)?;
        let mut rules = Vec::with_capacity(sd.elements.len());
        let mut refs = Vec::new();
        for el in &sd.elements {
            if let Some(cr) = &el.content_reference {
                refs.push((rules.len(), cr.trim_start_matches('#').to_string()));
            }
            rules.push(core_rule(defs, el, cache));
        }
        link(&mut rules);
        resolve_content_refs(&mut rules, &refs);
        Some(Plan {
            url: sd.url.clone(),
            type_name: sd.name.clone(),
            rules,
            problems: Vec::new(),
        })
    }

    /// Compiles a profile from its snapshot. The profile must carry a snapshot.
    pub fn from_snapshot(
        defs: &'static Definitions,
        sd: &Value,
        cache: &mut InvariantCache,
    ) -> Result<Plan, FhirError> {
        let url = sd
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let type_name = sd
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                FhirError::new(422, "invalid", format!("profile {url} has no type")).at("type")
            })?
            .to_string();
        let elements = sd
            .pointer("/snapshot/element")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                FhirError::new(
                    422,
                    "not-supported",
                    format!("profile {url} has no snapshot, and snapshots are not generated yet"),
                )
                .at("snapshot")
            })?;
        // Every walk starts at the root rule: a profile without one cannot be used.
        if elements.is_empty() {
            return Err(FhirError::new(
                422,
                "invalid",
                format!("profile {url} has an empty snapshot"),
            )
            .at("snapshot"));
        }
        let mut rules = Vec::with_capacity(elements.len());
        let mut refs = Vec::new();
        let mut problems = Vec::new();
        for (i, el) in elements.iter().enumerate() {
            let path = el.get("path").and_then(Value::as_str).unwrap_or("");
            if path.is_empty() {
                problems.push(
                    Issue::error("invalid", format!("profile {url}: element without a path"))
                        .at(format!("StructureDefinition.snapshot.element[{i}]")),
                );
            }
            if let Some(cr) = el.get("contentReference").and_then(Value::as_str) {
                // `#Questionnaire.item` or `http://...#Questionnaire.item`.
                let target = cr.rsplit('#').next().unwrap_or(cr);
                refs.push((rules.len(), target.to_string()));
            }
            rules.push(snapshot_rule(defs, el, cache));
        }
        link(&mut rules);
        resolve_content_refs(&mut rules, &refs);
        for r in &rules {
            for inv in &r.invariants {
                if let Err(e) = &inv.expression {
                    problems.push(Issue {
                        severity: Severity::Warning,
                        code: "invariant",
                        diagnostics: format!(
                            "profile {url}: invariant {} on {} cannot be parsed ({e}); it is not checked",
                            inv.key, r.path
                        ),
                        expression: None,
                    });
                }
            }
        }
        Ok(Plan {
            url,
            type_name,
            rules,
            problems,
        })
    }
}

fn resolve_content_refs(rules: &mut [Rule], refs: &[(usize, String)]) {
    for (i, target) in refs {
        rules[*i].content_ref = rules.iter().position(|r| &r.path == target);
    }
}

fn max_of(s: &str) -> Option<u32> {
    if s == "*" { None } else { s.parse().ok() }
}

fn name_of(path: &str) -> (String, bool) {
    let last = path.rsplit('.').next().unwrap_or(path);
    match last.strip_suffix("[x]") {
        Some(stem) => (stem.to_string(), true),
        None => (last.to_string(), false),
    }
}

fn strength(s: &str) -> Strength {
    match s {
        "required" => Strength::Required,
        "extensible" => Strength::Extensible,
        _ => Strength::Other,
    }
}

fn core_rule(defs: &'static Definitions, el: &ElementDef, cache: &mut InvariantCache) -> Rule {
    let (name, choice) = name_of(&el.path);
    let types = el
        .types
        .iter()
        .map(|t| {
            let code = type_code(&t.code, t.fhir_type.as_deref());
            RuleType {
                profiles: t.profile.clone(),
                targets: t.target_profile.iter().map(|u| target_type(u)).collect(),
                ..RuleType::new(defs, code, crate::definitions::upper_first(&t.code))
            }
        })
        .collect();
    Rule {
        id: match &el.slice_name {
            Some(sn) => format!("{}:{sn}", el.path),
            None => el.path.clone(),
        },
        path: el.path.clone(),
        slice_name: el.slice_name.clone(),
        slicing: None,
        slices: Vec::new(),
        name,
        choice,
        min: el.min,
        max: max_of(&el.max),
        types,
        children: Vec::new(),
        content_ref: None,
        binding: el.binding.as_ref().and_then(|b| {
            Some(BindingRule {
                strength: strength(&b.strength),
                value_set: b.value_set.clone()?,
            })
        }),
        invariants: el
            .constraints
            .iter()
            .filter(|c| !GUARANTEED.contains(&c.key.as_str()))
            .filter_map(|c| Some(cache.get(&c.key, &c.severity, c.expression.as_deref()?)))
            .collect(),
        fixed: el.fixed.clone(),
        pattern: el.pattern.clone(),
        max_length: None,
        min_value: None,
        max_value: None,
        core_path: core_path_of(defs, &el.path),
    }
}

/// The value of the first `prefix[x]` property of an object (`fixedCode`, `patternCodeableConcept`).
fn choice_value<'a>(el: &'a Value, prefix: &str) -> Option<&'a Value> {
    el.as_object()?.iter().find_map(|(k, v)| {
        k.strip_prefix(prefix)
            .filter(|s| s.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(|_| v)
    })
}

fn snapshot_rule(defs: &'static Definitions, el: &Value, cache: &mut InvariantCache) -> Rule {
    let path = el
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (name, choice) = name_of(&path);
    let types = el
        .get("type")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let raw = t.get("code").and_then(Value::as_str).unwrap_or("");
            let fhir_type = t
                .get("extension")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|e| {
                    e.get("url").and_then(Value::as_str)
                        == Some(
                            "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type",
                        )
                })
                .and_then(|e| e.get("valueUrl").or_else(|| e.get("valueUri")))
                .and_then(Value::as_str);
            let strings = |k: &str| -> Vec<String> {
                t.get(k)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            };
            RuleType {
                profiles: strings("profile"),
                targets: strings("targetProfile")
                    .iter()
                    .map(|u| target_type(u))
                    .collect(),
                ..RuleType::new(
                    defs,
                    type_code(raw, fhir_type),
                    crate::definitions::upper_first(raw),
                )
            }
        })
        .collect();
    let invariants = el
        .get("constraint")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let key = c.get("key").and_then(Value::as_str)?;
            if GUARANTEED.contains(&key) {
                return None;
            }
            let expr = c.get("expression").and_then(Value::as_str)?;
            let sev = c.get("severity").and_then(Value::as_str).unwrap_or("error");
            Some(cache.get(key, sev, expr))
        })
        .collect();
    let binding = el.get("binding").and_then(|b| {
        Some(BindingRule {
            strength: strength(b.get("strength").and_then(Value::as_str)?),
            value_set: b.get("valueSet").and_then(Value::as_str)?.to_string(),
        })
    });
    // Core paths for FHIRPath typing: a profile's path is its base type's path.
    let core_path = core_path_of(defs, &path);
    let slice_name = el
        .get("sliceName")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = match (el.get("id").and_then(Value::as_str), &slice_name) {
        (Some(id), _) => id.to_string(),
        (None, Some(sn)) => format!("{path}:{sn}"),
        (None, None) => path.clone(),
    };
    let slicing = el.get("slicing").map(|sl| Slicing {
        discriminators: sl
            .get("discriminator")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| {
                Some((
                    d.get("type")?.as_str()?.to_string(),
                    d.get("path")?.as_str()?.to_string(),
                ))
            })
            .collect(),
        closed: sl.get("rules").and_then(Value::as_str) == Some("closed"),
    });
    Rule {
        id,
        slice_name,
        slicing,
        slices: Vec::new(),
        name,
        choice,
        min: el.get("min").and_then(Value::as_u64).unwrap_or(0) as u32,
        max: el.get("max").and_then(Value::as_str).and_then(max_of),
        types,
        children: Vec::new(),
        content_ref: None,
        binding,
        invariants,
        fixed: choice_value(el, "fixed").cloned(),
        pattern: choice_value(el, "pattern").cloned(),
        min_value: choice_value(el, "minValue").cloned(),
        max_value: choice_value(el, "maxValue").cloned(),
        max_length: el
            .get("maxLength")
            .and_then(Value::as_u64)
            .map(|n| n as usize),
        core_path,
        path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_plan_links_children_choices_and_content_references() {
        let d = Definitions::core();
        let mut cache = InvariantCache::default();
        let p = Plan::from_core(d, "Questionnaire", &mut cache).unwrap();
        let root = &p.rules[0];
        assert_eq!(root.path, "Questionnaire");
        assert!(root.invariants.iter().any(|i| i.key == "dom-2"));
        let item = root
            .children
            .iter()
            .map(|&i| &p.rules[i])
            .find(|r| r.name == "item")
            .unwrap();
        let nested = item
            .children
            .iter()
            .map(|&i| &p.rules[i])
            .find(|r| r.name == "item")
            .unwrap();
        assert_eq!(
            nested.content_ref.map(|i| p.rules[i].path.as_str()),
            Some("Questionnaire.item")
        );
        let obs = Plan::from_core(d, "Observation", &mut cache).unwrap();
        let value = obs
            .rules
            .iter()
            .find(|r| r.path == "Observation.value[x]")
            .unwrap();
        assert!(value.choice);
        assert_eq!(value.name, "value");
        assert_eq!(value.type_for(Some("Quantity")).unwrap().code, "Quantity");
        let status = obs
            .rules
            .iter()
            .find(|r| r.path == "Observation.status")
            .unwrap();
        assert_eq!(
            status.binding.as_ref().unwrap().strength,
            Strength::Required
        );
        assert_eq!(status.min, 1);
        let subject = obs
            .rules
            .iter()
            .find(|r| r.path == "Observation.subject")
            .unwrap();
        assert!(subject.types[0].targets.contains(&"Patient".to_string()));
        // ele-1 is guaranteed by the structural parse and never compiled.
        assert!(
            obs.rules
                .iter()
                .all(|r| r.invariants.iter().all(|i| i.key != "ele-1"))
        );
    }
}
