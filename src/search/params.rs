//! The search parameters in force per resource type: the R4 core ones from the embedded
//! definitions, plus custom SearchParameters from the registry once a `$reindex` of the type
//! activated them. Each expression is parsed once and cut down to the branches that can apply to
//! the type (core expressions are unions over many types: `AllergyIntolerance.code | ... |
//! Observation.code`), so extraction evaluates only what can match.

use crate::definitions::{Definitions, SearchParamDef};
use crate::fhirpath::{self, Expression};
use crate::terminology::Terminology;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The type of a search parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    String,
    Token,
    Reference,
    Date,
    Number,
    Quantity,
    Uri,
    Composite,
    Special,
}

impl ParamKind {
    /// From `SearchParameter.type`.
    pub fn from_code(code: &str) -> Option<ParamKind> {
        Some(match code {
            "string" => ParamKind::String,
            "token" => ParamKind::Token,
            "reference" => ParamKind::Reference,
            "date" => ParamKind::Date,
            "number" => ParamKind::Number,
            "quantity" => ParamKind::Quantity,
            "uri" => ParamKind::Uri,
            "composite" => ParamKind::Composite,
            "special" => ParamKind::Special,
            _ => return None,
        })
    }

    /// `SearchParameter.type`.
    pub fn code(self) -> &'static str {
        match self {
            ParamKind::String => "string",
            ParamKind::Token => "token",
            ParamKind::Reference => "reference",
            ParamKind::Date => "date",
            ParamKind::Number => "number",
            ParamKind::Quantity => "quantity",
            ParamKind::Uri => "uri",
            ParamKind::Composite => "composite",
            ParamKind::Special => "special",
        }
    }
}

/// One search parameter of one resource type, ready to evaluate.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub code: String,
    pub kind: ParamKind,
    pub url: String,
    /// The expression's text restricted to this type (what the brute-force check evaluates too).
    pub expression_text: Option<String>,
    /// The parsed expression; `None` when the parameter has none or it does not parse.
    pub expression: Option<Expression>,
    /// Target resource types of a reference parameter.
    pub targets: Vec<String>,
    /// The components of a composite parameter, evaluated on each item of `expression`; empty
    /// for other types and for composites search cannot index (see [`composite_indexable`]).
    pub components: Vec<Component>,
    /// A date parameter of which a resource has at most one index row (see
    /// [`one_date_row`]): ANDed comparisons of it may then be matched on that one row.
    pub one_row: bool,
}

/// One component of a composite parameter.
#[derive(Debug, Clone)]
pub struct Component {
    /// The type of the component's own SearchParameter.
    pub kind: ParamKind,
    /// Relative to an item of the composite's expression (`code`, `value.as(Quantity)`).
    pub expression: Expression,
}

/// Whether a composite can be indexed: two components, the first a token (every R4 core composite
/// but MolecularSequence's three-part coordinates). The token part is folded into the parameter
/// name of the second part's index row (`code-value-quantity$http://loinc.org|8480-6`), so the
/// existing index tables hold the tuples and one row matches both parts of one repetition.
pub fn composite_indexable(kinds: &[ParamKind]) -> bool {
    matches!(kinds, [ParamKind::Token, second] if !matches!(second, ParamKind::Composite | ParamKind::Special))
}

/// The parameters of one resource type.
#[derive(Debug, Default)]
pub struct TypeParams {
    pub resource_type: String,
    pub by_code: HashMap<String, Arc<ParamSpec>>,
}

impl TypeParams {
    /// A parameter by its code.
    pub fn get(&self, code: &str) -> Option<&Arc<ParamSpec>> {
        self.by_code.get(code)
    }

    /// Parameters in code order (stable output for extraction and CapabilityStatement).
    pub fn sorted(&self) -> Vec<&Arc<ParamSpec>> {
        let mut v: Vec<_> = self.by_code.values().collect();
        v.sort_by(|a, b| a.code.cmp(&b.code));
        v
    }
}

/// Splits a FHIRPath union at its top level (`a | b | (c | d)` -> `a`, `b`, `(c | d)`).
fn union_branches(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut quote) = (0i32, 0usize, false);
    for (i, c) in expr.char_indices() {
        match c {
            '\'' => quote = !quote,
            '(' | '[' if !quote => depth += 1,
            ')' | ']' if !quote => depth -= 1,
            '|' if !quote && depth == 0 => {
                out.push(expr[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(expr[start..].trim());
    out
}

/// The part of an expression that can apply to `ty`: branches starting with another resource
/// type's name are dropped.
pub fn restrict_to_type(expr: &str, ty: &str, defs: &Definitions) -> Option<String> {
    let kept: Vec<&str> = union_branches(expr)
        .into_iter()
        .filter(|b| {
            let head: String = b
                .trim_start_matches('(')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            head == ty
                || head == "Resource"
                || head == "DomainResource"
                || !defs.is_resource_type(&head)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join(" | "))
}

/// Whether every resource of `ty` has at most one index row of the date parameter with the
/// (type-restricted) expression `expr`: each branch of the union is `Type.element` (optionally
/// cast, `Type.element.as(Period)` or `(Type.element as dateTime)`), all branches name the same
/// element, and that element repeats at most once. A date value of any type (date, dateTime,
/// instant, Period, Timing) becomes at most one row, so one value is one row. Anything else
/// (a deeper path, a `where`, an unknown element) counts as possibly several.
pub fn one_date_row(expr: &str, ty: &str, defs: &Definitions) -> bool {
    let mut element: Option<&str> = None;
    for branch in union_branches(expr) {
        let mut b = branch.trim();
        // `(Type.element as dateTime)`
        if let Some(inner) = b.strip_prefix('(').and_then(|x| x.strip_suffix(')')) {
            match inner.split_once(" as ") {
                Some((path, cast)) if is_name(cast.trim()) => b = path.trim(),
                _ => return false,
            }
        }
        // `Type.element.as(Period)`
        if let Some(open) = b.find(".as(") {
            let cast = &b[open + 4..];
            if !cast.strip_suffix(')').is_some_and(is_name) {
                return false;
            }
            b = &b[..open];
        }
        let Some(name) = b.strip_prefix(ty).and_then(|r| r.strip_prefix('.')) else {
            return false;
        };
        if !is_name(name) || element.is_some_and(|e| e != name) {
            return false;
        }
        element = Some(name);
    }
    let Some(name) = element else {
        return false;
    };
    let def = defs
        .element(&format!("{ty}.{name}"))
        .or_else(|| defs.element(&format!("{ty}.{name}[x]")));
    def.is_some_and(|d| d.max == "1" || d.max == "0")
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The kind of the SearchParameter `url` among `known` (the definitions of the type).
fn kind_of_url(url: &str, known: &[&SearchParamDef]) -> Option<ParamKind> {
    known
        .iter()
        .find(|d| d.url == url)
        .and_then(|d| ParamKind::from_code(&d.kind))
}

/// The components of a composite, or none when it cannot be indexed (an unknown component
/// definition, an expression that does not parse, an unsupported shape).
fn components_of(def: &SearchParamDef, known: &[&SearchParamDef]) -> Vec<Component> {
    let parts: Option<Vec<Component>> = def
        .component
        .iter()
        .map(|(url, expr)| {
            Some(Component {
                kind: kind_of_url(url, known)?,
                expression: fhirpath::parse(expr).ok()?,
            })
        })
        .collect();
    match parts {
        Some(p) if composite_indexable(&p.iter().map(|c| c.kind).collect::<Vec<_>>()) => p,
        _ => vec![],
    }
}

fn spec_of(
    def: &SearchParamDef,
    ty: &str,
    defs: &Definitions,
    known: &[&SearchParamDef],
) -> Option<ParamSpec> {
    let kind = ParamKind::from_code(&def.kind)?;
    let expression_text = match &def.expression {
        Some(e) => Some(restrict_to_type(e, ty, defs)?),
        None => None,
    };
    let expression = expression_text
        .as_deref()
        .and_then(|e| match fhirpath::parse(e) {
            Ok(x) => Some(x),
            Err(err) => {
                tracing::warn!(param = %def.code, error = %err, "search parameter expression does not parse");
                None
            }
        });
    let one_row = kind == ParamKind::Date
        && expression_text
            .as_deref()
            .is_some_and(|e| one_date_row(e, ty, defs));
    Some(ParamSpec {
        code: def.code.clone(),
        kind,
        url: def.url.clone(),
        expression_text,
        expression,
        targets: def.target.clone(),
        components: if kind == ParamKind::Composite {
            components_of(def, known)
        } else {
            vec![]
        },
        one_row,
    })
}

/// A custom SearchParameter resource as a definition (`None` when it lacks what search needs).
pub fn def_from_resource(r: &Value) -> Option<SearchParamDef> {
    let strings = |k: &str| -> Vec<String> {
        r.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(SearchParamDef {
        url: r.get("url")?.as_str()?.to_string(),
        code: r.get("code")?.as_str()?.to_string(),
        base: strings("base"),
        kind: r.get("type")?.as_str()?.to_string(),
        expression: r
            .get("expression")
            .and_then(Value::as_str)
            .map(str::to_string),
        target: strings("target"),
        modifier: strings("modifier"),
        comparator: strings("comparator"),
        component: r
            .get("component")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c.get("definition")?.as_str()?.to_string(),
                    c.get("expression")?.as_str()?.to_string(),
                ))
            })
            .collect(),
    })
}

/// The parameters in force, per type; custom ones join at `activate`.
#[derive(Default)]
pub struct Catalogue {
    types: RwLock<HashMap<String, Arc<TypeParams>>>,
    /// Custom definitions activated so far, per type.
    custom: RwLock<HashMap<String, Vec<SearchParamDef>>>,
    /// Answers token `:in`, `:not-in`, `:above` and `:below` (absent: those modifiers are refused).
    terminology: Option<Arc<Terminology>>,
}

impl Catalogue {
    /// An empty catalogue (core parameters are built on first use of each type).
    pub fn new() -> Catalogue {
        Catalogue::default()
    }

    /// An empty catalogue whose searches expand value sets and walk code system hierarchies
    /// through `terminology`.
    pub fn with_terminology(terminology: Arc<Terminology>) -> Catalogue {
        Catalogue {
            terminology: Some(terminology),
            ..Catalogue::default()
        }
    }

    /// The terminology service searches use, when there is one.
    pub fn terminology(&self) -> Option<&Arc<Terminology>> {
        self.terminology.as_ref()
    }

    /// The parameters of a type (the core ones and any activated custom ones).
    pub fn for_type(&self, ty: &str) -> Arc<TypeParams> {
        if let Some(t) = self.types.read().unwrap_or_else(|e| e.into_inner()).get(ty) {
            return t.clone();
        }
        let built = Arc::new(self.build(ty));
        self.types
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ty.to_string())
            .or_insert(built)
            .clone()
    }

    fn build(&self, ty: &str) -> TypeParams {
        let defs = Definitions::core();
        let mut by_code = HashMap::new();
        let custom = self.custom.read().unwrap_or_else(|e| e.into_inner());
        let custom = custom.get(ty).map(Vec::as_slice).unwrap_or_default();
        // Composite components name their definitions by URL, core or custom.
        let known: Vec<&SearchParamDef> = defs.search_parameters(ty).chain(custom).collect();
        for def in defs.search_parameters(ty).chain(custom) {
            if let Some(spec) = spec_of(def, ty, defs, &known) {
                by_code.insert(spec.code.clone(), Arc::new(spec));
            }
        }
        TypeParams {
            resource_type: ty.to_string(),
            by_code,
        }
    }

    /// Makes the custom SearchParameters (`resources`) whose base includes `ty` active for it,
    /// replacing any activated before; returns their codes.
    pub fn activate(&self, ty: &str, resources: &[Arc<Value>]) -> Vec<String> {
        let defs: Vec<SearchParamDef> = resources
            .iter()
            .filter_map(|r| def_from_resource(r))
            .filter(|d| {
                d.base
                    .iter()
                    .any(|b| b == ty || b == "Resource" || b == "DomainResource")
            })
            .collect();
        let codes = defs.iter().map(|d| d.code.clone()).collect();
        self.custom
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ty.to_string(), defs);
        self.types
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(ty);
        codes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_union_expressions_are_cut_to_the_type() {
        let c = Catalogue::new();
        let obs = c.for_type("Observation");
        let code = obs.get("code").expect("Observation code");
        assert_eq!(code.kind, ParamKind::Token);
        assert_eq!(code.expression_text.as_deref(), Some("Observation.code"));
        let p = c.for_type("Patient");
        assert_eq!(p.get("name").map(|s| s.kind), Some(ParamKind::String));
        assert!(p.get("_tag").is_some());
    }

    /// Which date parameters allow matching ANDed comparisons on one row: those whose element
    /// cannot repeat.
    #[test]
    fn date_parameters_of_one_element_that_cannot_repeat_have_one_row() {
        let c = Catalogue::new();
        let one = |ty: &str, code: &str| c.for_type(ty).get(code).expect(code).one_row;
        assert!(one("Observation", "date"), "Observation.effective is 0..1");
        assert!(one("Patient", "birthdate"));
        assert!(one("Encounter", "date"), "Encounter.period");
        let defs = Definitions::core();
        assert!(one_date_row(
            "Condition.onset.as(dateTime) | Condition.onset.as(Period)",
            "Condition",
            defs
        ));
        assert!(one_date_row(
            "(Condition.onset as dateTime)",
            "Condition",
            defs
        ));
        // Repeating elements, two elements, deeper paths: possibly several rows.
        assert!(!one_date_row("Patient.name.period", "Patient", defs));
        assert!(!one_date_row(
            "Condition.onset.as(dateTime) | Condition.abatement.as(dateTime)",
            "Condition",
            defs
        ));
        assert!(!one_date_row(
            "Immunization.reaction.date",
            "Immunization",
            defs
        ));
        assert!(!one_date_row(
            "Observation.effective.where(true)",
            "Observation",
            defs
        ));
        // A token parameter is never marked, whatever its element.
        assert!(!one("Patient", "gender"));
    }
}
