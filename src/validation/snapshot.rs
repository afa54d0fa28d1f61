//! Snapshot generation: a profile's differential applied to its base's snapshot.
//!
//! Elements are addressed by id (`Patient.identifier:mrn.system`). Applying a differential element
//! first makes sure its element exists in the snapshot being built: a slice is added after the
//! sliced element's group, and the children of a complex-typed element are expanded from its type
//! (or, for a slice of a backbone element, copied from the sliced element) the first time the
//! differential reaches below it. Then the constrained properties of the differential element
//! replace the base's, and its constraints are added to the base's.
//!
//! Bases resolve through the registry (profiles on profiles); a core base comes from the embedded
//! definitions. A base that is missing, or a chain that returns to itself, is an error naming it.

use crate::definitions::{Definitions, ElementDef, upper_first};
use crate::model::FhirError;
use crate::registry::Catalogue;
use serde_json::{Map, Value, json};

const CORE_PREFIX: &str = "http://hl7.org/fhir/StructureDefinition/";

/// The snapshot elements of `sd`: its own snapshot when it has one, else generated.
pub fn snapshot_of(
    defs: &Definitions,
    catalogue: &Catalogue,
    sd: &Value,
) -> Result<Vec<Value>, FhirError> {
    let mut chain = Vec::new();
    resolve(defs, catalogue, sd, &mut chain, false)
}

/// Generates the snapshot of `sd` from its differential even if it carries one.
pub fn generate(
    defs: &Definitions,
    catalogue: &Catalogue,
    sd: &Value,
) -> Result<Vec<Value>, FhirError> {
    let mut chain = Vec::new();
    resolve(defs, catalogue, sd, &mut chain, true)
}

fn url_of(sd: &Value) -> String {
    sd.get("url")
        .and_then(Value::as_str)
        .unwrap_or("(no url)")
        .to_string()
}

fn resolve(
    defs: &Definitions,
    catalogue: &Catalogue,
    sd: &Value,
    chain: &mut Vec<String>,
    force: bool,
) -> Result<Vec<Value>, FhirError> {
    if !force
        && let Some(els) = sd.pointer("/snapshot/element").and_then(Value::as_array)
        && !els.is_empty()
    {
        return Ok(els.clone());
    }
    let url = url_of(sd);
    if chain.contains(&url) {
        return Err(FhirError::new(
            422,
            "invariant",
            format!("profile {url} is circular: {} -> {url}", chain.join(" -> ")),
        ));
    }
    chain.push(url.clone());
    let base_url = sd
        .get("baseDefinition")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            FhirError::new(
                422,
                "required",
                format!("profile {url} has no snapshot and no baseDefinition"),
            )
            .at("baseDefinition")
        })?;
    let base = match catalogue.resource("StructureDefinition", base_url) {
        Some(b) => resolve(defs, catalogue, b, chain, false)?,
        None => match base_url
            .split('|')
            .next()
            .and_then(|u| u.strip_prefix(CORE_PREFIX))
            .and_then(|n| core_snapshot(defs, n))
        {
            Some(b) => b,
            None => {
                return Err(FhirError::new(
                    422,
                    "not-found",
                    format!("profile {url}: its base {base_url} is not known"),
                )
                .at("baseDefinition"));
            }
        },
    };
    chain.pop();
    let diff = sd
        .pointer("/differential/element")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut b = Builder {
        defs,
        original: base.clone(),
        elements: base,
    };
    for (i, d) in diff.iter().enumerate() {
        b.apply(d).map_err(|msg| {
            FhirError::new(422, "processing", format!("profile {url}: {msg}"))
                .at(&format!("StructureDefinition.differential.element[{i}]"))
        })?;
    }
    Ok(b.elements)
}

/// A core type's snapshot as ElementDefinition JSON.
pub fn core_snapshot(defs: &Definitions, type_name: &str) -> Option<Vec<Value>> {
    let sd = defs.structure(type_name)?;
    Some(sd.elements.iter().map(core_element_json).collect())
}

fn core_element_json(el: &ElementDef) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(el.path));
    m.insert("path".into(), json!(el.path));
    m.insert("min".into(), json!(el.min));
    m.insert("max".into(), json!(el.max));
    m.insert(
        "base".into(),
        json!({"path": el.path, "min": el.min, "max": el.max}),
    );
    if !el.types.is_empty() {
        let types: Vec<Value> = el
            .types
            .iter()
            .map(|t| {
                let mut o = Map::new();
                o.insert("code".into(), json!(t.code));
                if !t.profile.is_empty() {
                    o.insert("profile".into(), json!(t.profile));
                }
                if !t.target_profile.is_empty() {
                    o.insert("targetProfile".into(), json!(t.target_profile));
                }
                Value::Object(o)
            })
            .collect();
        m.insert("type".into(), Value::Array(types));
    }
    if let Some(c) = &el.content_reference {
        m.insert("contentReference".into(), json!(c));
    }
    if let Some(b) = &el.binding {
        let mut o = Map::new();
        o.insert("strength".into(), json!(b.strength));
        if let Some(vs) = &b.value_set {
            o.insert("valueSet".into(), json!(vs));
        }
        m.insert("binding".into(), Value::Object(o));
    }
    if !el.constraints.is_empty() {
        let cs: Vec<Value> = el
            .constraints
            .iter()
            .map(|c| {
                let mut o = Map::new();
                o.insert("key".into(), json!(c.key));
                o.insert("severity".into(), json!(c.severity));
                if let Some(e) = &c.expression {
                    o.insert("expression".into(), json!(e));
                }
                Value::Object(o)
            })
            .collect();
        m.insert("constraint".into(), Value::Array(cs));
    }
    let suffix = el
        .types
        .first()
        .map(|t| upper_first(&t.code))
        .unwrap_or_default();
    if let Some(f) = &el.fixed {
        m.insert(format!("fixed{suffix}"), f.clone());
    }
    if let Some(p) = &el.pattern {
        m.insert(format!("pattern{suffix}"), p.clone());
    }
    Value::Object(m)
}

struct Builder<'d> {
    defs: &'d Definitions,
    /// The base snapshot as it was: slices start from it.
    original: Vec<Value>,
    elements: Vec<Value>,
}

fn id_of(e: &Value) -> &str {
    e.get("id")
        .or_else(|| e.get("path"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn path_of(e: &Value) -> &str {
    e.get("path").and_then(Value::as_str).unwrap_or("")
}

/// The id of a differential element; R4 differentials may omit ids (then path + sliceName).
fn diff_id(d: &Value) -> Result<String, String> {
    if let Some(id) = d.get("id").and_then(Value::as_str) {
        return Ok(id.to_string());
    }
    let path = d
        .get("path")
        .and_then(Value::as_str)
        .ok_or("an element has neither id nor path")?;
    Ok(match d.get("sliceName").and_then(Value::as_str) {
        Some(s) => format!("{path}:{s}"),
        None => path.to_string(),
    })
}

/// Splits `A.b:s.c` into (`A.b:s`, `c`); the last segment may carry a slice name.
fn split_last(id: &str) -> Option<(&str, &str)> {
    id.rsplit_once('.')
}

impl Builder<'_> {
    fn find(&self, id: &str) -> Option<usize> {
        self.elements.iter().position(|e| id_of(e) == id)
    }

    /// The index just past `i`'s descendants and slices (its whole group).
    fn group_end(&self, i: usize) -> usize {
        let id = id_of(&self.elements[i]).to_string();
        let (dot, colon) = (format!("{id}."), format!("{id}:"));
        let mut j = i + 1;
        while j < self.elements.len() {
            let other = id_of(&self.elements[j]);
            if other.starts_with(&dot) || other.starts_with(&colon) {
                j += 1;
            } else {
                break;
            }
        }
        j
    }

    fn has_children(&self, i: usize) -> bool {
        let dot = format!("{}.", id_of(&self.elements[i]));
        self.elements
            .get(i + 1)
            .is_some_and(|e| id_of(e).starts_with(&dot))
    }

    /// Makes sure the element `id` exists; returns its index.
    fn ensure(&mut self, id: &str) -> Result<usize, String> {
        if let Some(i) = self.find(id) {
            return Ok(i);
        }
        let (parent, last) =
            split_last(id).ok_or_else(|| format!("element {id} is not in the base"))?;
        let (name, slice) = match last.split_once(':') {
            Some((n, s)) => (n, Some(s)),
            None => (last, None),
        };
        let p = self.ensure(parent)?;
        if !self.has_children(p) {
            self.expand(p)?;
        }
        // The parent may have landed under another id: `Observation.valueQuantity` is the slice
        // `Observation.value[x]:valueQuantity`, so `Observation.valueQuantity.value` is its child.
        let parent = id_of(&self.elements[p]).to_string();
        let parent = parent.as_str();
        let plain = format!("{parent}.{name}");
        let base = match self.find(&plain) {
            Some(i) => i,
            None => {
                // `valueCode` for `value[x]`: the choice narrowed to that type, and a slice of it
                // named after the rename (`value[x]:valueCode`) that carries the constraints.
                let (i, stem, suffix) = self.choice_rename(parent, name)?;
                if slice.is_some() {
                    i
                } else if self.is_backbone_slice(parent) {
                    // Within a slice of a backbone element (`component:FlowRate.valueQuantity`)
                    // the choice itself is narrowed, with no rename slice: so the published
                    // snapshots of the core and US Core profiles have it (while a slice of a
                    // datatype, `extension:ombCategory.valueCoding`, gets the rename slice).
                    return Ok(i);
                } else {
                    let sid = format!("{parent}.{stem}[x]:{name}");
                    let s = self.ensure(&sid)?;
                    self.narrow(s, &suffix);
                    return Ok(s);
                }
            }
        };
        let Some(slice) = slice else {
            return Ok(base);
        };
        // A new slice: a copy of the sliced element as the base defines it (constraints the
        // differential put on the unsliced element do not flow into its slices), after its group.
        let mut e = self
            .original
            .iter()
            .find(|o| id_of(o) == plain)
            .cloned()
            .unwrap_or_else(|| self.elements[base].clone());
        if let Some(o) = e.as_object_mut() {
            o.remove("slicing");
            o.insert("id".into(), json!(id));
            o.insert("sliceName".into(), json!(slice));
        }
        let at = self.group_end(base);
        self.elements.insert(at, e);
        Ok(at)
    }

    /// True for a slice (`A.b:s`) of an element whose children the base defines itself (a
    /// backbone element), rather than through its type.
    fn is_backbone_slice(&self, id: &str) -> bool {
        let Some((sliced, slice)) = id.rsplit_once(':') else {
            return false;
        };
        let dot = format!("{sliced}.");
        !slice.contains('.') && self.original.iter().any(|o| id_of(o).starts_with(&dot))
    }

    /// Keeps only the type whose choice suffix is `suffix`.
    fn narrow(&mut self, i: usize, suffix: &str) {
        if let Some(types) = self.elements[i]
            .get_mut("type")
            .and_then(Value::as_array_mut)
        {
            types.retain(|t| {
                t.get("code")
                    .and_then(Value::as_str)
                    .map(upper_first)
                    .as_deref()
                    == Some(suffix)
            });
        }
    }

    /// `valueQuantity` under a parent whose base has `value[x]`: the choice element, with its
    /// types narrowed to the one named.
    fn choice_rename(
        &mut self,
        parent: &str,
        name: &str,
    ) -> Result<(usize, String, String), String> {
        let parent_el = self
            .find(parent)
            .map(|i| path_of(&self.elements[i]).to_string());
        for (i, e) in self.elements.iter().enumerate() {
            let id = id_of(e);
            let Some(stem) = id
                .strip_prefix(parent)
                .and_then(|r| r.strip_prefix('.'))
                .and_then(|r| r.strip_suffix("[x]"))
            else {
                continue;
            };
            if stem.contains('.') || stem.contains(':') {
                continue;
            }
            let Some(suffix) = name.strip_prefix(stem) else {
                continue;
            };
            let types = e
                .get("type")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let kept: Vec<Value> = types
                .into_iter()
                .filter(|t| {
                    t.get("code")
                        .and_then(Value::as_str)
                        .map(upper_first)
                        .as_deref()
                        == Some(suffix)
                })
                .collect();
            if kept.is_empty() {
                continue;
            }
            let (stem, suffix) = (stem.to_string(), suffix.to_string());
            if let Some(o) = self.elements[i].as_object_mut() {
                o.insert("type".into(), Value::Array(kept));
            }
            return Ok((i, stem, suffix));
        }
        Err(format!(
            "element {parent}.{name} is not in the base{}",
            parent_el
                .map(|p| format!(" (under {p})"))
                .unwrap_or_default()
        ))
    }

    /// Adds the children of element `i` from its type (or from the sliced element, for a slice of
    /// a backbone element), with ids and paths rebased under it.
    fn expand(&mut self, i: usize) -> Result<(), String> {
        let el = &self.elements[i];
        let id = id_of(el).to_string();
        let path = path_of(el).to_string();
        // A slice (`A.b:s`) of an element whose children are already in the snapshot (a backbone
        // element, or one a profile expanded): the slice gets copies of them.
        if let Some((base_id, slice)) = id.rsplit_once(':')
            && !slice.contains('.')
            && let Some(b) = self.find(base_id)
            && self.has_children(b)
        {
            let dot = format!("{base_id}.");
            // Children as the base defines them when it has them, else as built so far.
            let source: &[Value] = if self.original.iter().any(|o| id_of(o).starts_with(&dot)) {
                &self.original
            } else {
                &self.elements
            };
            let copies: Vec<Value> = source
                .iter()
                .filter(|e| id_of(e).starts_with(&dot) && !id_of(e)[dot.len()..].contains(':'))
                .map(|e| {
                    let mut c = e.clone();
                    let new_id = format!("{id}.{}", &id_of(e)[dot.len()..]);
                    if let Some(o) = c.as_object_mut() {
                        o.insert("id".into(), json!(new_id));
                    }
                    c
                })
                .collect();
            let at = i + 1;
            self.elements.splice(at..at, copies);
            return Ok(());
        }
        let types: Vec<String> = el
            .get("type")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("code").and_then(Value::as_str).map(str::to_string))
            .collect();
        let ty = match types.as_slice() {
            [one] => one.clone(),
            [] => return Err(format!("element {id} has no type to expand")),
            _ => {
                return Err(format!(
                    "element {id} has several types; constrain it to one first"
                ));
            }
        };
        let Some(type_snapshot) = core_snapshot(self.defs, &ty) else {
            return Err(format!("type {ty} of {id} is not a core type"));
        };
        let rebase = |snapshot: &[Value], id: &str, path: &str| -> Vec<Value> {
            snapshot
                .iter()
                .skip(1)
                .map(|c| {
                    let mut c = c.clone();
                    let tail = id_of(&c)
                        .strip_prefix(ty.as_str())
                        .unwrap_or("")
                        .to_string();
                    if let Some(o) = c.as_object_mut() {
                        o.insert("id".into(), json!(format!("{id}{tail}")));
                        o.insert("path".into(), json!(format!("{path}{tail}")));
                    }
                    c
                })
                .collect()
        };
        let mut children = rebase(&type_snapshot, &id, &path);
        // A slice of an extension (a part of a complex extension, `extension:ombCategory`) also
        // gets the children of its own `extension` element, one level: the published snapshots
        // (US Core race and ethnicity) list them.
        let last = id.rsplit('.').next().unwrap_or("");
        if ty == "Extension" && last.starts_with("extension:") {
            let inner_id = format!("{id}.extension");
            if let Some(k) = children.iter().position(|c| id_of(c) == inner_id) {
                let inner = rebase(&type_snapshot, &inner_id, &format!("{path}.extension"));
                children.splice(k + 1..k + 1, inner);
            }
        }
        let at = i + 1;
        self.elements.splice(at..at, children);
        Ok(())
    }

    fn apply(&mut self, d: &Value) -> Result<(), String> {
        let id = diff_id(d)?;
        let i = self.ensure(&id)?;
        let Some(target) = self.elements[i].as_object_mut() else {
            return Err(format!("element {id} is not an object"));
        };
        let Some(diff) = d.as_object() else {
            return Err(format!("differential element {id} is not an object"));
        };
        for (k, v) in diff {
            match k.as_str() {
                "id" | "path" => {}
                "constraint" => {
                    let list = target
                        .entry("constraint")
                        .or_insert_with(|| Value::Array(vec![]));
                    if let (Some(list), Some(add)) = (list.as_array_mut(), v.as_array()) {
                        for c in add {
                            let key = c.get("key");
                            list.retain(|x| x.get("key") != key);
                            list.push(c.clone());
                        }
                    }
                }
                // A fixed or pattern value replaces any other of either kind.
                k if k.starts_with("fixed") || k.starts_with("pattern") => {
                    target.retain(|x, _| !x.starts_with("fixed") && !x.starts_with("pattern"));
                    target.insert(k.to_string(), v.clone());
                }
                // An Extension element takes no binding (its value[x] does); profiles that state
                // one on the extension itself only document it.
                "binding"
                    if target
                        .get("type")
                        .and_then(Value::as_array)
                        .is_some_and(|ts| ts.iter().all(|t| t["code"] == "Extension")) => {}
                _ => {
                    target.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn ids(els: &[Value]) -> Vec<&str> {
        els.iter().map(id_of).collect()
    }

    #[test]
    fn differential_constrains_expands_types_and_adds_slices() {
        let defs = Definitions::core();
        let reg = Registry::with_core(defs);
        let sd = json!({"resourceType": "StructureDefinition", "url": "http://x/p", "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "differential": {"element": [
            {"id": "Patient.identifier", "path": "Patient.identifier", "min": 1,
             "slicing": {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}},
            {"id": "Patient.identifier:mrn", "path": "Patient.identifier", "sliceName": "mrn", "max": "1"},
            {"id": "Patient.identifier:mrn.system", "path": "Patient.identifier.system", "min": 1,
             "fixedUri": "http://hospital/mrn"},
            {"id": "Patient.name.family", "path": "Patient.name.family", "min": 1},
            {"id": "Patient.deceased[x]", "path": "Patient.deceased[x]", "max": "0"}
        ]}});
        let snap = generate(defs, &reg.catalogue(), &sd).unwrap();
        let ids = ids(&snap);
        let at = |id: &str| {
            ids.iter()
                .position(|x| *x == id)
                .unwrap_or_else(|| panic!("{id} in {ids:?}"))
        };
        assert!(at("Patient.identifier") < at("Patient.identifier:mrn"));
        // Only what the differential reaches below is expanded: the slice's children, not the
        // sliced element's.
        assert!(!ids.contains(&"Patient.identifier.system"));
        assert!(at("Patient.identifier:mrn") < at("Patient.identifier:mrn.system"));
        assert!(at("Patient.identifier:mrn.system") < at("Patient.active"));
        assert_eq!(snap[at("Patient.identifier")]["min"], 1);
        assert_eq!(snap[at("Patient.identifier:mrn")]["sliceName"], "mrn");
        assert_eq!(
            snap[at("Patient.identifier:mrn.system")]["fixedUri"],
            "http://hospital/mrn"
        );
        assert_eq!(snap[at("Patient.name.family")]["min"], 1);
        assert_eq!(
            snap[at("Patient.name.family")]["path"],
            "Patient.name.family"
        );
        assert_eq!(snap[at("Patient.deceased[x]")]["max"], "0");
    }

    #[test]
    fn unknown_bases_and_circles_are_named() {
        let defs = Definitions::core();
        let reg = Registry::with_core(defs);
        let a = json!({"resourceType": "StructureDefinition", "url": "http://x/a", "type": "Patient",
            "status": "draft", "baseDefinition": "http://x/b", "differential": {"element": []}});
        let b = json!({"resourceType": "StructureDefinition", "url": "http://x/b", "type": "Patient",
            "status": "draft", "baseDefinition": "http://x/a", "differential": {"element": []}});
        reg.add(a.clone(), "t").unwrap();
        reg.add(b, "t").unwrap();
        let e = generate(defs, &reg.catalogue(), &a).unwrap_err();
        assert!(e.issues[0].diagnostics.contains("circular"), "{e}");
        let c = json!({"resourceType": "StructureDefinition", "url": "http://x/c", "type": "Patient",
            "baseDefinition": "http://x/none", "differential": {"element": []}});
        let e = generate(defs, &reg.catalogue(), &c).unwrap_err();
        assert!(
            e.issues[0]
                .diagnostics
                .contains("http://x/none is not known"),
            "{e}"
        );
        let d = json!({"resourceType": "StructureDefinition", "url": "http://x/d", "type": "Patient",
            "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
            "differential": {"element": [{"id": "Patient.nonsense", "path": "Patient.nonsense"}]}});
        let e = generate(defs, &reg.catalogue(), &d).unwrap_err();
        assert_eq!(
            e.issues[0].expression.as_deref(),
            Some("StructureDefinition.differential.element[0]")
        );
    }
}
