//! One CodeSystem resource compiled for lookups: concepts by code, the hierarchy (nested
//! `concept`, `parent`/`subsumedBy`/`child` properties) as index lists, and the meaning of the
//! special properties (`status`, `inactive`, `deprecated`, `notSelectable`) resolved through their
//! URIs so a code system that renames a property (`not-selectable`) still means the same thing.
//!
//! Invariant: walking the hierarchy never loops, even when a code system states a cycle (every
//! walk carries a visited set).

use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// The URI prefix of the properties FHIR defines for every code system.
const CONCEPT_PROPERTIES: &str = "http://hl7.org/fhir/concept-properties#";

/// A designation of a concept (another name, possibly in another language).
#[derive(Debug, Clone)]
pub struct Designation {
    pub language: Option<String>,
    /// The `use` Coding as JSON.
    pub use_: Option<Value>,
    pub value: String,
}

/// One concept of a code system.
#[derive(Debug, Clone)]
pub struct Concept {
    pub code: String,
    pub display: Option<String>,
    pub definition: Option<String>,
    pub designations: Vec<Designation>,
    /// `(property code, the property element as JSON)` in document order.
    pub properties: Vec<(String, Value)>,
    /// Indexes of the parents and children in [`CodeSystemIndex::concepts`].
    pub parents: Vec<usize>,
    pub children: Vec<usize>,
    /// `status` retired/inactive, or `inactive` true.
    pub inactive: bool,
    /// `status` deprecated, or `deprecated` given.
    pub deprecated: bool,
    /// `notSelectable` true (the concept is abstract: a grouper, not for use in data).
    pub not_selectable: bool,
    /// The `status` property when present (`active`, `retired`, `deprecated`, ...).
    pub status: Option<String>,
}

/// A property declared by the code system.
#[derive(Debug, Clone)]
pub struct PropertyDef {
    pub code: String,
    pub uri: Option<String>,
    pub type_: Option<String>,
}

/// A CodeSystem ready for lookups.
#[derive(Debug, Clone)]
pub struct CodeSystemIndex {
    pub url: String,
    pub version: Option<String>,
    pub name: Option<String>,
    pub title: Option<String>,
    pub status: Option<String>,
    pub language: Option<String>,
    /// `caseSensitive`; codes of a case-insensitive system match in any case.
    pub case_sensitive: bool,
    /// `content`: complete, fragment, example, not-present, supplement.
    pub content: String,
    /// `hierarchyMeaning`, when stated.
    pub hierarchy_meaning: Option<String>,
    pub properties: Vec<PropertyDef>,
    pub concepts: Vec<Concept>,
    by_code: HashMap<String, usize>,
    by_lower: HashMap<String, usize>,
}

/// Text of a property value (`valueCode`, `valueString`, `valueBoolean`, `valueCoding.code`, ...).
pub fn property_text(prop: &Value) -> Option<String> {
    let obj = prop.as_object()?;
    let (_, v) = obj.iter().find(|(k, _)| k.starts_with("value"))?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o.get("code").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

impl CodeSystemIndex {
    /// Compiles a CodeSystem resource. Anything malformed inside (a concept without a code, a
    /// property of the wrong shape) is skipped rather than refused: lookups of the rest still work.
    pub fn build(cs: &Value) -> CodeSystemIndex {
        let properties: Vec<PropertyDef> = cs
            .get("property")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some(PropertyDef {
                    code: text(p, "code")?,
                    uri: text(p, "uri"),
                    type_: text(p, "type"),
                })
            })
            .collect();
        let mut idx = CodeSystemIndex {
            url: text(cs, "url").unwrap_or_default(),
            version: text(cs, "version"),
            name: text(cs, "name"),
            title: text(cs, "title"),
            status: text(cs, "status"),
            language: text(cs, "language"),
            case_sensitive: cs
                .get("caseSensitive")
                .and_then(Value::as_bool)
                // R4 leaves the default open; FHIR terminology servers treat codes as case
                // sensitive unless told otherwise.
                .unwrap_or(true),
            content: text(cs, "content").unwrap_or_else(|| "complete".into()),
            hierarchy_meaning: text(cs, "hierarchyMeaning"),
            properties,
            concepts: Vec::new(),
            by_code: HashMap::new(),
            by_lower: HashMap::new(),
        };
        // Depth-first over nested concepts with an explicit stack: a deeply nested (hostile)
        // resource cannot overflow the thread's stack.
        let mut stack: Vec<(&Value, Option<usize>)> = cs
            .get("concept")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .rev()
            .map(|c| (c, None))
            .collect();
        let mut declared_parents: Vec<(usize, String)> = Vec::new();
        let mut declared_children: Vec<(usize, String)> = Vec::new();
        while let Some((c, parent)) = stack.pop() {
            let Some(code) = text(c, "code") else {
                continue;
            };
            let i = match idx.by_code.get(&code) {
                // The same code twice (R4 allows a concept to be repeated under several parents).
                Some(&i) => i,
                None => {
                    let concept = idx.concept_of(
                        c,
                        code.clone(),
                        &mut declared_parents,
                        &mut declared_children,
                    );
                    idx.concepts.push(concept);
                    let i = idx.concepts.len() - 1;
                    idx.by_code.insert(code.clone(), i);
                    idx.by_lower.entry(code.to_lowercase()).or_insert(i);
                    i
                }
            };
            if let Some(p) = parent {
                idx.link(p, i);
            }
            for child in c
                .get("concept")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .rev()
            {
                stack.push((child, Some(i)));
            }
        }
        // Declared relations are linked only after all concepts exist, because a property can name
        // a concept that appears later in the document.
        for (child, parent_code) in declared_parents {
            if let Some(&p) = idx.by_code.get(&parent_code) {
                idx.link(p, child);
            }
        }
        for (parent, child_code) in declared_children {
            if let Some(&c) = idx.by_code.get(&child_code) {
                idx.link(parent, c);
            }
        }
        idx
    }

    fn link(&mut self, parent: usize, child: usize) {
        if parent == child {
            return;
        }
        if !self.concepts[parent].children.contains(&child) {
            self.concepts[parent].children.push(child);
        }
        if !self.concepts[child].parents.contains(&parent) {
            self.concepts[child].parents.push(parent);
        }
    }

    /// The standard meaning of a property code of this code system (`notSelectable`,
    /// `status`, ...), through its declared URI when there is one.
    pub fn meaning_of<'a>(&'a self, code: &'a str) -> &'a str {
        match self.properties.iter().find(|p| p.code == code) {
            Some(PropertyDef { uri: Some(uri), .. }) => {
                uri.strip_prefix(CONCEPT_PROPERTIES).unwrap_or(code)
            }
            _ => code,
        }
    }

    fn concept_of(
        &self,
        c: &Value,
        code: String,
        declared_parents: &mut Vec<(usize, String)>,
        declared_children: &mut Vec<(usize, String)>,
    ) -> Concept {
        let me = self.concepts.len();
        let designations = c
            .get("designation")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| {
                Some(Designation {
                    language: text(d, "language"),
                    use_: d.get("use").cloned(),
                    value: text(d, "value")?,
                })
            })
            .collect();
        let mut concept = Concept {
            code,
            display: text(c, "display"),
            definition: text(c, "definition"),
            designations,
            properties: Vec::new(),
            parents: Vec::new(),
            children: Vec::new(),
            inactive: false,
            deprecated: false,
            not_selectable: false,
            status: None,
        };
        for p in c
            .get("property")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(pcode) = text(p, "code") else {
                continue;
            };
            let value = property_text(p);
            match (self.meaning_of(&pcode), value.as_deref()) {
                ("status", Some(s)) => {
                    concept.status = Some(s.to_string());
                    match s {
                        "retired" | "inactive" => concept.inactive = true,
                        "deprecated" => concept.deprecated = true,
                        _ => {}
                    }
                }
                ("inactive", Some("true")) => concept.inactive = true,
                ("deprecated", Some(_)) => concept.deprecated = true,
                ("notSelectable", Some("true")) => concept.not_selectable = true,
                ("parent" | "subsumedBy", Some(v)) => declared_parents.push((me, v.to_string())),
                ("child", Some(v)) => declared_children.push((me, v.to_string())),
                _ => {}
            }
            concept.properties.push((pcode, p.clone()));
        }
        concept
    }

    /// The concept with this code (ignoring case when the code system is case-insensitive).
    pub fn find(&self, code: &str) -> Option<&Concept> {
        self.index_of(code).map(|i| &self.concepts[i])
    }

    /// The index of the concept with this code.
    pub fn index_of(&self, code: &str) -> Option<usize> {
        match self.by_code.get(code) {
            Some(&i) => Some(i),
            None if !self.case_sensitive => self.by_lower.get(&code.to_lowercase()).copied(),
            None => None,
        }
    }

    /// The concept with a code that differs only in case (to explain a near miss).
    pub fn find_ignoring_case(&self, code: &str) -> Option<&Concept> {
        self.by_lower
            .get(&code.to_lowercase())
            .map(|&i| &self.concepts[i])
    }

    /// Every descendant of `i` (not `i` itself), in hierarchy order.
    pub fn descendants(&self, i: usize) -> Vec<usize> {
        self.walk(i, |c| &c.children)
    }

    /// Every ancestor of `i` (not `i` itself).
    pub fn ancestors(&self, i: usize) -> Vec<usize> {
        self.walk(i, |c| &c.parents)
    }

    fn walk(&self, start: usize, next: impl Fn(&Concept) -> &Vec<usize>) -> Vec<usize> {
        let mut seen = HashSet::from([start]);
        let mut out = Vec::new();
        let mut stack: Vec<usize> = next(&self.concepts[start]).iter().rev().copied().collect();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            out.push(i);
            stack.extend(next(&self.concepts[i]).iter().rev().copied());
        }
        out
    }

    /// Does `a` subsume `b` (is `b` equal to or a descendant of `a`)?
    pub fn subsumes(&self, a: usize, b: usize) -> bool {
        a == b || self.ancestors(b).contains(&a)
    }

    /// The concepts in document (depth-first) order.
    pub fn all(&self) -> impl Iterator<Item = (usize, &Concept)> {
        self.concepts.iter().enumerate()
    }

    /// The text values of a property of a concept, by property code (or by the standard meaning,
    /// so `notSelectable` finds a property the code system calls `not-selectable`).
    pub fn property_values(&self, concept: &Concept, property: &str) -> Vec<String> {
        let mut out: Vec<String> = concept
            .properties
            .iter()
            .filter(|(code, _)| code == property || self.meaning_of(code) == property)
            .filter_map(|(_, p)| property_text(p))
            .collect();
        // Properties the hierarchy and the status carry implicitly.
        match property {
            "parent" if out.is_empty() => {
                out = concept
                    .parents
                    .iter()
                    .map(|&p| self.concepts[p].code.clone())
                    .collect()
            }
            "child" if out.is_empty() => {
                out = concept
                    .children
                    .iter()
                    .map(|&p| self.concepts[p].code.clone())
                    .collect()
            }
            "inactive" if out.is_empty() => out.push(concept.inactive.to_string()),
            "notSelectable" if out.is_empty() && concept.not_selectable => out.push("true".into()),
            "display" if out.is_empty() => out.extend(concept.display.clone()),
            "definition" if out.is_empty() => out.extend(concept.definition.clone()),
            _ => {}
        }
        out
    }

    /// Whether `display` is a display or designation of the concept (case and whitespace
    /// differences ignored, as terminology servers do).
    pub fn display_matches(concept: &Concept, display: &str) -> bool {
        let wanted = normalise_display(display);
        concept
            .display
            .iter()
            .chain(concept.designations.iter().map(|d| &d.value))
            .any(|d| normalise_display(d) == wanted)
    }
}

/// Lower case without surrounding white space, for display comparison. Inner white space counts:
/// terminology servers report "Display  1" (two spaces) as a wrong display.
pub fn normalise_display(s: &str) -> String {
    s.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn simple() -> CodeSystemIndex {
        CodeSystemIndex::build(&json!({
            "resourceType": "CodeSystem", "url": "http://x/cs", "version": "1", "caseSensitive": false,
            "property": [{"code": "not-selectable", "uri": "http://hl7.org/fhir/concept-properties#notSelectable", "type": "boolean"},
                         {"code": "status", "type": "code"}, {"code": "parent", "type": "code"}],
            "concept": [
                {"code": "A", "display": "Alpha", "designation": [{"language": "de", "value": "Alfa"}],
                 "property": [{"code": "not-selectable", "valueBoolean": true}],
                 "concept": [{"code": "A1", "display": "Alpha one", "concept": [{"code": "A1x"}]},
                             {"code": "A2", "property": [{"code": "status", "valueCode": "retired"}]}]},
                {"code": "B", "property": [{"code": "parent", "valueCode": "A2"}]},
                {"code": "C", "property": [{"code": "parent", "valueCode": "D"}]},
                {"code": "D", "property": [{"code": "parent", "valueCode": "C"}]}
            ]
        }))
    }

    #[test]
    fn nested_and_declared_hierarchy_are_both_followed() {
        let cs = simple();
        let a = cs.index_of("A").unwrap();
        let codes: Vec<&str> = cs
            .descendants(a)
            .into_iter()
            .map(|i| cs.concepts[i].code.as_str())
            .collect();
        assert_eq!(codes, ["A1", "A1x", "A2", "B"]);
        let b = cs.index_of("B").unwrap();
        assert!(cs.subsumes(a, b));
        assert!(!cs.subsumes(b, a));
    }

    #[test]
    fn a_stated_cycle_does_not_loop() {
        let cs = simple();
        let c = cs.index_of("C").unwrap();
        let d = cs.index_of("D").unwrap();
        assert_eq!(cs.descendants(c), vec![d]);
        assert!(cs.subsumes(c, d) && cs.subsumes(d, c));
    }

    #[test]
    fn special_properties_are_read_through_their_uri() {
        let cs = simple();
        assert!(cs.find("A").unwrap().not_selectable);
        assert!(cs.find("A2").unwrap().inactive);
        assert!(!cs.find("A1").unwrap().inactive);
        assert_eq!(
            cs.property_values(cs.find("A").unwrap(), "notSelectable"),
            ["true"]
        );
    }

    #[test]
    fn case_insensitive_systems_match_any_case_and_displays_match_designations() {
        let cs = simple();
        assert_eq!(cs.find("a1").unwrap().code, "A1");
        let a = cs.find("A").unwrap();
        assert!(CodeSystemIndex::display_matches(a, " alpha "));
        assert!(!CodeSystemIndex::display_matches(a, "al pha"));
        assert!(CodeSystemIndex::display_matches(a, "ALFA"));
        assert!(!CodeSystemIndex::display_matches(a, "Beta"));
    }
}
