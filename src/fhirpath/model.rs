//! FHIR type awareness over the JSON tree: which property a path step selects (choice types,
//! `_name` siblings of primitives, array alignment), the type each child carries, and subtype tests
//! for `is`/`as`/`ofType`. Uses the core definitions when given, else structural fallbacks.

use super::ast::TypeSpec;
use super::value::{Node, Value};
use crate::definitions::Definitions;
use serde_json::Value as Json;

/// The type code `ElementDefinition.type` uses for the `value` of primitives, mapped to a FHIR name.
fn normalise_type_code(code: &str) -> &str {
    match code.strip_prefix("http://hl7.org/fhirpath/System.") {
        Some("String") => "string",
        Some("Boolean") => "boolean",
        Some("Integer") => "integer",
        Some("Decimal") => "decimal",
        Some("Date") => "date",
        Some("DateTime") => "dateTime",
        Some("Time") => "time",
        Some(_) => "string",
        None => code,
    }
}

/// A resource's root node, typed from its `resourceType`.
pub fn resource_node<'a>(json: &'a Json, defs: Option<&'static Definitions>) -> Node<'a> {
    let rt = match json {
        Json::Object(o) => resource_type(o),
        _ => None,
    };
    let ty: Option<&'a str> = match (rt, defs) {
        (Some(rt), Some(d)) => d.structure(rt).map(|s| s.name.as_str()).or(Some(rt)),
        (rt, _) => rt,
    };
    Node {
        json: Some(json),
        ext: None,
        ty,
        path: ty,
    }
}

/// `obj["resourceType"]` as a string. It is nearly always the first key, so that is tried before
/// a search (resources are the objects with the most keys).
pub(crate) fn resource_type(obj: &Object) -> Option<&str> {
    match obj.iter().next() {
        Some((k, v)) if k == "resourceType" => v.as_str(),
        _ => get(obj, "resourceType").and_then(Json::as_str),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The FHIR type of a choice suffix without definitions (`Quantity`, `dateTime`).
fn fallback_choice_type(suffix: &str) -> Option<&'static str> {
    const PRIMS: [&str; 20] = [
        "boolean",
        "integer",
        "positiveInt",
        "unsignedInt",
        "decimal",
        "date",
        "dateTime",
        "instant",
        "time",
        "string",
        "code",
        "id",
        "uri",
        "url",
        "canonical",
        "oid",
        "uuid",
        "markdown",
        "base64Binary",
        "integer64",
    ];
    let l = lower_first(suffix);
    PRIMS.iter().find(|p| **p == l).copied()
}

type Object = serde_json::Map<String, Json>;

/// Objects with at most this many properties are searched by scanning their keys: comparing a
/// few short keys costs less than hashing the name (the map's index uses SipHash), and almost
/// every FHIR object is this small.
const SCAN_KEYS: usize = 16;

/// `k == key`, with the lengths and first bytes compared before the rest: most keys of an
/// object differ from the name in one of those, and a call to `memcmp` costs more than the
/// comparison of a short key.
fn same_key(k: &str, key: &str) -> bool {
    k.len() == key.len() && k.as_bytes().first() == key.as_bytes().first() && k == key
}

/// `obj[key]`.
pub(crate) fn get<'a>(obj: &'a Object, key: &str) -> Option<&'a Json> {
    if obj.len() <= SCAN_KEYS {
        return obj.iter().find_map(|(k, v)| same_key(k, key).then_some(v));
    }
    obj.get(key)
}

/// True when `k` is `_` followed by `key`.
fn is_underscored(k: &str, key: &str) -> bool {
    k.len() == key.len() + 1 && k.starts_with('_') && same_key(&k[1..], key)
}

/// `obj["_" + key]` without allocating.
fn get_underscored<'a>(obj: &'a Object, key: &str) -> Option<&'a Json> {
    if obj.len() <= SCAN_KEYS {
        return obj
            .iter()
            .find_map(|(k, v)| is_underscored(k, key).then_some(v));
    }
    // One hashed lookup: scanning a large object's keys for a leading `_` reads every key's
    // text, each its own allocation.
    let mut buf = [0u8; 96];
    let n = key.len() + 1;
    if n > buf.len() {
        return obj.get(&format!("_{key}"));
    }
    buf[0] = b'_';
    buf[1..n].copy_from_slice(key.as_bytes());
    std::str::from_utf8(&buf[..n]).ok().and_then(|k| obj.get(k))
}

/// `obj[key]` and `obj["_" + key]`, in one scan for small objects.
fn get_with_underscored<'a>(obj: &'a Object, key: &str) -> (Option<&'a Json>, Option<&'a Json>) {
    if obj.len() <= SCAN_KEYS {
        let (mut value, mut ext) = (None, None);
        for (k, v) in obj {
            if same_key(k, key) {
                value = Some(v);
            } else if is_underscored(k, key) {
                ext = Some(v);
            }
        }
        return (value, ext);
    }
    (obj.get(key), get_underscored(obj, key))
}

/// Pushes the nodes of property `key` (its value and `_key` sibling, aligned when arrays).
fn push_property<'a>(
    out: &mut Vec<Value<'a>>,
    obj: &'a Object,
    key: &str,
    ty: Option<&'a str>,
    path: Option<&'a str>,
    defs: Option<&'static Definitions>,
) {
    let (value, ext) = get_with_underscored(obj, key);
    push_nodes(out, value, ext, ty, path, defs);
}

/// Pushes the nodes of one property, given its value and its `_name` sibling.
fn push_nodes<'a>(
    out: &mut Vec<Value<'a>>,
    value: Option<&'a Json>,
    ext: Option<&'a Json>,
    ty: Option<&'a str>,
    path: Option<&'a str>,
    defs: Option<&'static Definitions>,
) {
    let make = |json: Option<&'a Json>, ext: Option<&'a Json>| -> Option<Value<'a>> {
        let json = json.filter(|j| !j.is_null());
        let ext = ext.filter(|j| !j.is_null());
        if json.is_none() && ext.is_none() {
            return None;
        }
        // Resources nested in `contained`, `Bundle.entry.resource`, `Parameters...resource`.
        if let Some(j @ Json::Object(o)) = json
            && (ty.is_none() || matches!(ty, Some("Resource" | "DomainResource")))
            && resource_type(o).is_some()
        {
            return Some(Value::Node(resource_node(j, defs)));
        }
        Some(Value::Node(Node {
            json,
            ext,
            ty,
            path,
        }))
    };
    match (value, ext) {
        (Some(Json::Array(vs)), e) => {
            let es = e.and_then(Json::as_array);
            out.reserve(vs.len());
            for (i, v) in vs.iter().enumerate() {
                out.extend(make(Some(v), es.and_then(|es| es.get(i))));
            }
        }
        (None, Some(Json::Array(es))) => {
            for e in es {
                out.extend(make(None, Some(e)));
            }
        }
        (v, e) => out.extend(make(v, e)),
    }
}

/// Result of looking a name up on a node.
pub enum Lookup {
    Found,
    /// The node's type is known and has no such element.
    Unknown,
}

/// Recent resolutions of `(parent path, name)` during one evaluation. Criteria take the same
/// few steps once per item (`element.all(path.contains('.') ...)`), and `descendants().concept`
/// asks the same question of many nodes. Every path and name passed in lives for the whole
/// evaluation (they belong to the definitions, the resource or the syntax tree), so their
/// addresses identify them: a hit costs a few comparisons instead of two hashed lookups.
#[derive(Default)]
pub struct StepCache {
    slots: [std::cell::Cell<Option<StepSlot>>; STEP_SLOTS],
    /// Recent [`Definitions::child_index`] answers by path (`descendants()` asks for the same
    /// few paths once per object).
    indexes: [std::cell::Cell<Option<IndexSlot>>; INDEX_SLOTS],
}

const STEP_SLOTS: usize = 16;
const INDEX_SLOTS: usize = 8;

#[derive(Clone, Copy)]
struct IndexSlot {
    path: (*const u8, usize),
    index: Option<crate::definitions::ChildIndex<'static>>,
}

#[derive(Clone, Copy)]
struct StepSlot {
    path: (*const u8, usize),
    name: (*const u8, usize),
    step: Option<crate::definitions::ChildStep<'static>>,
}

impl StepCache {
    /// `d.child_index(path)`, remembered.
    fn child_index(
        &self,
        d: &'static Definitions,
        path: &str,
    ) -> Option<crate::definitions::ChildIndex<'static>> {
        let key = (path.as_ptr(), path.len());
        let slot = &self.indexes[((key.0 as usize >> 3) ^ key.1) % INDEX_SLOTS];
        if let Some(s) = slot.get()
            && s.path == key
        {
            return s.index;
        }
        let index = d.child_index(path);
        slot.set(Some(IndexSlot { path: key, index }));
        index
    }

    /// `d.child_step(path, name)`, remembered.
    fn child_step(
        &self,
        d: &'static Definitions,
        path: &str,
        name: &str,
    ) -> Option<crate::definitions::ChildStep<'static>> {
        let key_path = (path.as_ptr(), path.len());
        let key_name = (name.as_ptr(), name.len());
        let h = (key_path.0 as usize >> 3) ^ (key_name.0 as usize >> 1) ^ path.len();
        let slot = &self.slots[h % STEP_SLOTS];
        if let Some(s) = slot.get()
            && s.path == key_path
            && s.name == key_name
        {
            return s.step;
        }
        let step = d.child_step(path, name);
        slot.set(Some(StepSlot {
            path: key_path,
            name: key_name,
            step,
        }));
        step
    }
}

/// Appends the children of `node` named `name` to `out`.
pub fn child<'a>(
    node: &Node<'a>,
    name: &str,
    defs: Option<&'static Definitions>,
    strict: bool,
    steps: &StepCache,
    out: &mut Vec<Value<'a>>,
) -> Lookup {
    // Primitives keep `id` and `extension` in their `_name` sibling.
    let obj = match (node.json, node.ext) {
        (Some(Json::Object(o)), _) => o,
        (_, Some(Json::Object(o))) => {
            if name == "id" || name == "extension" {
                let ty = if name == "id" {
                    Some("string")
                } else {
                    Some("Extension")
                };
                push_property(out, o, name, ty, ty, defs);
                return Lookup::Found;
            }
            return Lookup::Found;
        }
        _ => return Lookup::Found,
    };
    if let (Some(d), Some(path)) = (defs, node.path) {
        if let Some(step) = steps.child_step(d, path, name)
            && !step.matched.element.path.ends_with("[x]")
        {
            let (ty, cpath) = typed(step);
            push_property(out, obj, name, ty, cpath, defs);
            return Lookup::Found;
        }
        // A choice element (`value` for `valueQuantity`): scan the object's few keys rather than
        // the element's many types.
        let mut found = false;
        for key in obj.keys() {
            let k = key.strip_prefix('_').unwrap_or(key);
            let Some(suffix) = k.strip_prefix(name) else {
                continue;
            };
            if !suffix.starts_with(|c: char| c.is_ascii_uppercase()) {
                continue;
            }
            if key.starts_with('_') && get(obj, k).is_some() {
                continue;
            }
            if let Some(step) = d.child_step(path, k) {
                let stem = step
                    .matched
                    .element
                    .path
                    .rsplit('.')
                    .next()
                    .and_then(|l| l.strip_suffix("[x]"));
                if stem == Some(name) {
                    let (ty, cpath) = typed(step);
                    push_property(out, obj, k, ty, cpath, defs);
                    found = true;
                }
            }
        }
        // Only strict evaluation asks whether an absent name is defined at all.
        if found || !strict {
            return Lookup::Found;
        }
        if d.element(&format!("{path}.{name}[x]")).is_some() {
            return Lookup::Found;
        }
        if d.structure(path).is_some() || d.element(path).is_some() {
            return Lookup::Unknown;
        }
    }
    // No definitions for this node: match the property or a choice-type rename structurally.
    if get(obj, name).is_some() || get_underscored(obj, name).is_some() {
        push_property(out, obj, name, None, None, defs);
        return Lookup::Found;
    }
    for key in obj.keys() {
        let k = key.strip_prefix('_').unwrap_or(key);
        if let Some(suffix) = k.strip_prefix(name)
            && suffix.starts_with(|c: char| c.is_ascii_uppercase())
            && !key.starts_with('_')
        {
            let ty = fallback_choice_type(suffix).or_else(|| static_name(suffix));
            push_property(out, obj, key, ty, ty, defs);
        }
    }
    Lookup::Found
}

fn static_name(s: &str) -> Option<&'static str> {
    const NAMES: [&str; 15] = [
        "Quantity",
        "CodeableConcept",
        "Coding",
        "Period",
        "Range",
        "Ratio",
        "Reference",
        "Identifier",
        "Attachment",
        "HumanName",
        "Address",
        "SampledData",
        "Age",
        "Duration",
        "Money",
    ];
    NAMES.iter().find(|n| **n == s).copied()
}

/// The type and children path of a matched child element.
fn typed(
    step: crate::definitions::ChildStep<'static>,
) -> (Option<&'static str>, Option<&'static str>) {
    let code = normalise_type_code(step.matched.type_code);
    let ty = if code.is_empty() {
        "BackboneElement"
    } else {
        code
    };
    (Some(ty), Some(step.children_path))
}

/// All children of a node, in document order (for `children()` and `descendants()`).
pub fn all_children<'a>(
    node: &Node<'a>,
    defs: Option<&'static Definitions>,
    steps: &StepCache,
    out: &mut Vec<Value<'a>>,
) {
    let Some(Json::Object(obj)) = node.json else {
        if let Some(Json::Object(o)) = node.ext {
            push_property(
                out,
                o,
                "extension",
                Some("Extension"),
                Some("Extension"),
                defs,
            );
        }
        return;
    };
    // Whether any `_name` sibling exists, and where this node's properties are defined, are
    // looked up once, not per property.
    let any_ext = obj.keys().any(|k| k.starts_with('_'));
    let index = match (defs, node.path) {
        (Some(d), Some(p)) => steps.child_index(d, p),
        _ => None,
    };
    for (key, value) in obj {
        if key == "resourceType" {
            continue;
        }
        let (k, value, ext) = match key.strip_prefix('_') {
            Some(k) => {
                if get(obj, k).is_some() {
                    continue;
                }
                (k, None, Some(value))
            }
            None => (
                key.as_str(),
                Some(value),
                if any_ext {
                    get_underscored(obj, key)
                } else {
                    None
                },
            ),
        };
        let (ty, path) = match index.and_then(|i| i.step(k)) {
            Some(step) => typed(step),
            None => (None, None),
        };
        push_nodes(out, value, ext, ty, path, defs);
    }
}

fn fallback_base(name: &str) -> Option<&'static str> {
    Some(match name {
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "positiveInt" | "unsignedInt" => "integer",
        "Age" | "Distance" | "Duration" | "Count" | "SimpleQuantity" | "MoneyQuantity" => {
            "Quantity"
        }
        "DomainResource" | "Bundle" | "Binary" | "Parameters" => "Resource",
        "Resource" | "Element" => return None,
        n if n.starts_with(|c: char| c.is_ascii_uppercase()) => "Element",
        _ => "Element",
    })
}

/// True when FHIR type `ty` is `target` or derives from it.
pub fn fhir_subtype(ty: &str, target: &str, defs: Option<&'static Definitions>) -> bool {
    // Walks the base chain by reference (names borrowed from the definitions or static).
    // Primitive types are named in lower case and complex types and resources in upper case; the
    // latter never derive from the former, so the walk towards a primitive stops at the first
    // upper-case name (`as(canonical)` over all descendants asks this of every node).
    let primitive_target = target.starts_with(|c: char| c.is_ascii_lowercase());
    let mut cur: &str = ty;
    for _ in 0..16 {
        if cur == target {
            return true;
        }
        if primitive_target && !cur.starts_with(|c: char| c.is_ascii_lowercase()) {
            return false;
        }
        let next = match defs.and_then(|d| d.structure(cur)) {
            Some(s) => match &s.base {
                Some(b) => b.as_str(),
                None => return false,
            },
            None => match fallback_base(cur) {
                Some(b) => b,
                None => return false,
            },
        };
        cur = next;
    }
    false
}

/// System types by name.
pub fn is_system_type(name: &str) -> bool {
    matches!(
        name,
        "Boolean"
            | "Integer"
            | "Long"
            | "Decimal"
            | "String"
            | "Date"
            | "DateTime"
            | "Time"
            | "Quantity"
    )
}

/// `value is spec`.
pub fn is_type(v: &Value, spec: &TypeSpec, defs: Option<&'static Definitions>) -> bool {
    let ns = spec.namespace.as_deref();
    match v {
        Value::Node(n) => {
            if ns == Some("System") {
                return false;
            }
            match n.ty {
                Some(ty) => fhir_subtype(ty, &spec.name, defs),
                None => {
                    // Untyped JSON: judge by shape.
                    let sys = n.to_system().map(|s| s.type_name().to_string());
                    match sys {
                        Some(s) => lower_first(&s) == spec.name || s == spec.name,
                        None => spec.name == "Element" || spec.name == "BackboneElement",
                    }
                }
            }
        }
        other => {
            if ns == Some("FHIR") {
                return false;
            }
            other.type_name() == spec.name
        }
    }
}
