//! One walk of a resource under a plan.
//!
//! The walk follows the plan's rules, not the JSON's keys (the structural parse has already
//! refused unknown keys): for each child rule it gathers the instances (array items, `_name`
//! siblings of primitives, the renamed properties of a choice), checks cardinality, then each
//! instance's fixed/pattern value, length, binding, reference target and invariants, and descends.
//! Locations are kept as borrowed segments and rendered only for an issue.

use super::Validator;
use super::plan::{Plan, Rule, RuleType, Strength};
use crate::fhirpath::{self, Environment, Node};
use crate::model::{Issue, Severity};
use crate::terminology::CodeCheck;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

#[derive(Clone, Copy)]
enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

/// The resource being walked and what references inside it can resolve to.
struct Frame<'v> {
    /// `contained` ids -> resource type.
    contained: HashMap<&'v str, &'v str>,
}

pub(crate) struct Walk<'x, 'v> {
    val: &'x Validator,
    pub issues: Vec<Issue>,
    loc: Vec<Seg<'v>>,
    /// In the core pass, values of complex types are checked against their type's definition; a
    /// profile pass checks only the elements the profile itself constrains.
    descend_types: bool,
    frames: Vec<Frame<'v>>,
    /// The `%rootResource` of each resource being walked.
    roots: Vec<&'v Value>,
    /// `fullUrl` -> resource type of every entry of the enclosing Bundles.
    bundle_urls: HashMap<&'v str, &'v str>,
}

impl<'x, 'v> Walk<'x, 'v> {
    pub fn new(val: &'x Validator, descend_types: bool) -> Walk<'x, 'v> {
        Walk {
            val,
            issues: Vec::new(),
            loc: Vec::new(),
            descend_types,
            frames: Vec::new(),
            roots: Vec::new(),
            bundle_urls: HashMap::new(),
        }
    }

    fn location(&self) -> String {
        let mut s = String::new();
        for (i, seg) in self.loc.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    if i > 0 {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Seg::Index(n) => {
                    let _ = write!(s, "[{n}]");
                }
            }
        }
        s
    }

    fn issue(&mut self, severity: Severity, code: &'static str, msg: String) {
        let at = self.location();
        self.issues.push(Issue {
            severity,
            code,
            diagnostics: msg,
            expression: Some(at),
        });
    }

    /// Validates a resource (top level or nested) against `plan`.
    /// `root` is the resource that contains this one (`contained`), for `%rootResource`.
    pub fn resource(&mut self, plan: &Plan, res: &'v Value, ty: &'v str, root: Option<&'v Value>) {
        let Some(obj) = res.as_object() else {
            return;
        };
        let contained = obj
            .get("contained")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c.get("id")?.as_str()?, c.get("resourceType")?.as_str()?)))
            .collect();
        let added_urls = if ty == "Bundle" {
            self.index_bundle(obj)
        } else {
            Vec::new()
        };
        self.frames.push(Frame { contained });
        self.roots.push(root.unwrap_or(res));
        let top = self.loc.is_empty();
        if top {
            self.loc.push(Seg::Key(ty));
        }
        let mut env = Environment::with_definitions(res, Some(self.val.defs));
        if let Some(root) = root {
            env.root_resource = Some(fhirpath::Value::Node(fhirpath::resource_node_of(
                root,
                Some(self.val.defs),
            )));
        }
        let node = fhirpath::Value::Node(fhirpath::resource_node_of(res, Some(self.val.defs)));
        self.invariants(&plan.rules[0], node, &[], &mut env);
        self.children(plan, 0, obj, &mut env);
        if top {
            self.loc.pop();
        }
        self.frames.pop();
        self.roots.pop();
        for u in added_urls {
            self.bundle_urls.remove(u);
        }
    }

    /// Indexes a Bundle's entries by fullUrl; returns the keys added (to remove on leaving).
    fn index_bundle(&mut self, obj: &'v Map<String, Value>) -> Vec<&'v str> {
        let mut added = Vec::new();
        for e in obj
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(u), Some(t)) = (
                e.get("fullUrl").and_then(Value::as_str),
                e.pointer("/resource/resourceType").and_then(Value::as_str),
            ) else {
                continue;
            };
            if self.bundle_urls.insert(u, t).is_none() {
                added.push(u);
            }
        }
        added
    }

    fn children(
        &mut self,
        plan: &Plan,
        idx: usize,
        obj: &'v Map<String, Value>,
        env: &mut Environment<'v>,
    ) {
        let rule = &plan.rules[idx];
        let kids: &[usize] = if !rule.children.is_empty() {
            &rule.children
        } else if let Some(cr) = rule.content_ref {
            &plan.rules[cr].children
        } else {
            return;
        };
        // Most objects have no `_name` keys: one scan spares a lookup per rule.
        let has_ext = obj.keys().any(|k| k.starts_with('_'));
        for &k in kids {
            let r = &plan.rules[k];
            let mut count = 0usize;
            if r.choice {
                for (key, value) in obj {
                    let (base, is_ext) = match key.strip_prefix('_') {
                        Some(b) => (b, true),
                        None => (key.as_str(), false),
                    };
                    // A `_valueString` with a `valueString` is visited with its value.
                    if is_ext && obj.contains_key(base) {
                        continue;
                    }
                    let Some(suffix) = base.strip_prefix(r.name.as_str()) else {
                        continue;
                    };
                    if !suffix.starts_with(|c: char| c.is_ascii_uppercase()) {
                        continue;
                    }
                    let Some(t) = r.type_for(Some(suffix)) else {
                        continue;
                    };
                    let (json, ext) = if is_ext {
                        (None, Some(value))
                    } else {
                        (Some(value), obj.get(&format!("_{key}")))
                    };
                    let key: &'v str = if is_ext { &key[1..] } else { key.as_str() };
                    count += self.instances(plan, k, t, key, json, ext, env);
                }
            } else {
                let json = obj.get_key_value(r.name.as_str());
                let ext = if has_ext {
                    obj.get_key_value(format!("_{}", r.name).as_str())
                } else {
                    None
                };
                let key: Option<&'v str> = json
                    .map(|(k, _)| k.as_str())
                    .or_else(|| ext.map(|(k, _)| &k[1..]));
                if let (Some(key), Some(t)) = (key, r.types.first().or(DUMMY.first())) {
                    count += self.instances(
                        plan,
                        k,
                        t,
                        key,
                        json.map(|(_, v)| v),
                        ext.map(|(_, v)| v),
                        env,
                    );
                }
            }
            self.cardinality(r, count);
            if (!r.slices.is_empty() && count > 0)
                || r.slices.iter().any(|&s| plan.rules[s].min > 0)
            {
                self.slices(plan, k, obj, env);
            }
        }
    }

    /// Sorts the instances of a sliced element into its slices by the discriminators, checks each
    /// slice's cardinality and rules, and refuses unmatched instances of a closed slicing.
    fn slices(
        &mut self,
        plan: &Plan,
        k: usize,
        obj: &'v Map<String, Value>,
        env: &mut Environment<'v>,
    ) {
        let r = &plan.rules[k];
        // (property key, index within an array, value, choice suffix)
        let mut instances: Vec<(&'v str, Option<usize>, &'v Value, Option<&'v str>)> = Vec::new();
        for (key, value) in obj {
            let suffix = if r.choice {
                match key.strip_prefix(r.name.as_str()) {
                    Some(s) if s.starts_with(|c: char| c.is_ascii_uppercase()) => Some(s),
                    _ => continue,
                }
            } else if key == &r.name {
                None
            } else {
                continue;
            };
            match value {
                Value::Array(items) => {
                    instances.extend(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (key.as_str(), Some(i), v, suffix)),
                    );
                }
                v => instances.push((key.as_str(), None, v, suffix)),
            }
        }
        let mut counts = vec![0usize; r.slices.len()];
        let mut unmatched = Vec::new();
        for (key, index, value, suffix) in instances {
            let found = r
                .slices
                .iter()
                .position(|&s| self.in_slice(plan, k, s, value, suffix));
            match found {
                Some(n) => {
                    counts[n] += 1;
                    let s = r.slices[n];
                    let Some(t) = plan.rules[s]
                        .type_for(suffix)
                        .or(plan.rules[s].types.first())
                    else {
                        continue;
                    };
                    self.loc.push(Seg::Key(key));
                    if let Some(i) = index {
                        self.loc.push(Seg::Index(i));
                    }
                    self.value(plan, s, t, Some(value), None, env);
                    if index.is_some() {
                        self.loc.pop();
                    }
                    self.loc.pop();
                }
                None => unmatched.push((key, index)),
            }
        }
        for (n, &s) in r.slices.iter().enumerate() {
            let slice = &plan.rules[s];
            let name = slice.slice_name.as_deref().unwrap_or("?");
            if (counts[n] as u64) < u64::from(slice.min) {
                self.issue(
                    Severity::Error,
                    "required",
                    format!(
                        "slice '{name}' of {}: minimum cardinality {}, found {}",
                        r.path, slice.min, counts[n]
                    ),
                );
            }
            if let Some(max) = slice.max
                && counts[n] as u64 > u64::from(max)
            {
                self.issue(
                    Severity::Error,
                    "structure",
                    format!(
                        "slice '{name}' of {}: maximum cardinality {max}, found {}",
                        r.path, counts[n]
                    ),
                );
            }
        }
        if r.slicing.as_ref().is_some_and(|s| s.closed) {
            for (key, index) in unmatched {
                self.loc.push(Seg::Key(key));
                if let Some(i) = index {
                    self.loc.push(Seg::Index(i));
                }
                let msg = format!(
                    "{}: the slicing is closed and this matches no slice",
                    r.path
                );
                self.issue(Severity::Error, "structure", msg);
                if index.is_some() {
                    self.loc.pop();
                }
                self.loc.pop();
            }
        }
    }

    /// Does an instance belong to slice `s` of element `k`?
    fn in_slice(
        &self,
        plan: &Plan,
        k: usize,
        s: usize,
        value: &Value,
        suffix: Option<&str>,
    ) -> bool {
        let slice = &plan.rules[s];
        // A choice renamed into a slice (`value[x]:valueQuantity`) is selected by its type.
        if plan.rules[k].choice {
            return slice.types.len() == 1 && Some(slice.types[0].suffix.as_str()) == suffix;
        }
        let Some(slicing) = &plan.rules[k].slicing else {
            return false;
        };
        if slicing.discriminators.is_empty() {
            return false;
        }
        slicing.discriminators.iter().all(|(kind, path)| {
            let expected = rule_at(plan, s, path);
            let actual = values_at(value, path);
            match kind.as_str() {
                "value" | "pattern" => {
                    let want = expected
                        .and_then(|e| {
                            plan.rules[e]
                                .fixed
                                .as_ref()
                                .or(plan.rules[e].pattern.as_ref())
                                .cloned()
                        })
                        .or_else(|| {
                            // An extension slice names its URL through its type profile.
                            (path == "url")
                                .then(|| slice.types.first().and_then(|t| t.profiles.first()))
                                .flatten()
                                .map(|u| Value::String(u.clone()))
                        });
                    match want {
                        Some(w) => actual.iter().any(|a| matches_pattern(a, &w)),
                        None => false,
                    }
                }
                "exists" => match expected.map(|e| &plan.rules[e]) {
                    Some(e) if e.max == Some(0) => actual.is_empty(),
                    Some(e) if e.min > 0 => !actual.is_empty(),
                    _ => false,
                },
                "type" => {
                    let want = expected
                        .and_then(|e| plan.rules[e].types.first())
                        .map(|t| t.code.as_str());
                    let got = actual
                        .first()
                        .and_then(|a| a.get("resourceType"))
                        .and_then(Value::as_str);
                    matches!((want, got), (Some(w), Some(g)) if w == g)
                }
                "profile" => {
                    let profile = expected
                        .and_then(|e| plan.rules[e].types.first())
                        .and_then(|t| t.profiles.first());
                    let catalogue = self.val.registry.catalogue();
                    let want = profile
                        .and_then(|p| {
                            catalogue
                                .resource("StructureDefinition", p)
                                .map(|sd| sd["type"].clone())
                        })
                        .or_else(|| {
                            profile
                                .and_then(|p| p.rsplit('/').next())
                                .map(|t| Value::String(t.to_string()))
                        });
                    let got = actual.first().and_then(|a| a.get("resourceType"));
                    matches!((want, got), (Some(w), Some(g)) if &w == g)
                }
                _ => false,
            }
        })
    }

    fn cardinality(&mut self, r: &Rule, count: usize) {
        if (count as u64) < u64::from(r.min) {
            self.issue(
                Severity::Error,
                "required",
                format!(
                    "{} is required: minimum cardinality {}, found {count}",
                    r.path, r.min
                ),
            );
        }
        if let Some(max) = r.max
            && count as u64 > u64::from(max)
        {
            self.issue(
                Severity::Error,
                "structure",
                format!("{}: maximum cardinality {max}, found {count}", r.path),
            );
        }
    }

    /// Visits the instances of one property (array items aligned with their `_name` items);
    /// returns how many there are.
    #[allow(clippy::too_many_arguments)]
    fn instances(
        &mut self,
        plan: &Plan,
        k: usize,
        t: &RuleType,
        key: &'v str,
        json: Option<&'v Value>,
        ext: Option<&'v Value>,
        env: &mut Environment<'v>,
    ) -> usize {
        self.loc.push(Seg::Key(key));
        let n = match (json, ext) {
            (Some(Value::Array(vs)), e) => {
                let es = e.and_then(Value::as_array);
                for (i, v) in vs.iter().enumerate() {
                    self.loc.push(Seg::Index(i));
                    self.value(plan, k, t, Some(v), es.and_then(|es| es.get(i)), env);
                    self.loc.pop();
                }
                vs.len()
            }
            (None, Some(Value::Array(es))) => {
                for (i, e) in es.iter().enumerate() {
                    self.loc.push(Seg::Index(i));
                    self.value(plan, k, t, None, Some(e), env);
                    self.loc.pop();
                }
                es.len()
            }
            (j, e) => {
                self.value(plan, k, t, j, e, env);
                1
            }
        };
        self.loc.pop();
        n
    }

    fn value(
        &mut self,
        plan: &Plan,
        k: usize,
        t: &RuleType,
        json: Option<&'v Value>,
        ext: Option<&'v Value>,
        env: &mut Environment<'v>,
    ) {
        let r = &plan.rules[k];
        let json = json.filter(|j| !j.is_null());
        let ext = ext.filter(|j| !j.is_null());
        if let Some(j) = json {
            if let Some(f) = &r.fixed
                && !same_value(j, f)
            {
                self.issue(
                    Severity::Error,
                    "value",
                    format!("{}: value must be exactly {f} (fixed value)", r.path),
                );
            }
            if let Some(p) = &r.pattern
                && !matches_pattern(j, p)
            {
                self.issue(
                    Severity::Error,
                    "value",
                    format!("{}: value must match the pattern {p}", r.path),
                );
            }
            if let (Some(max), Some(s)) = (r.max_length, j.as_str())
                && s.chars().count() > max
            {
                self.issue(
                    Severity::Error,
                    "too-long",
                    format!(
                        "{}: value is {} characters long, maximum length {max}",
                        r.path,
                        s.chars().count()
                    ),
                );
            }
            for (bound, lower) in [(&r.min_value, true), (&r.max_value, false)] {
                let Some(bound) = bound else { continue };
                if let Some(ord) = compare_values(j, bound)
                    && ((lower && ord.is_lt()) || (!lower && ord.is_gt()))
                {
                    let (what, which) = if lower {
                        ("less than the minimum", "minValue")
                    } else {
                        ("greater than the maximum", "maxValue")
                    };
                    self.issue(
                        Severity::Error,
                        "value",
                        format!("{}: the value {j} is {what} {bound} ({which})", r.path),
                    );
                }
            }
            if let Some(b) = &r.binding
                && b.strength != Strength::Other
            {
                self.binding(r, &t.code, j, b.strength, &b.value_set);
            }
            if t.code == "Reference" && !t.targets.is_empty() {
                self.reference(r, t, j);
            }
            if t.code == "Coding" && self.descend_types {
                self.coding_in_system(j);
            }
        }
        let type_name = t.static_name;
        // Where FHIRPath finds this value's children in the core definitions: the element itself
        // for a backbone element, the referenced element for a contentReference, else the type
        // (a profile constraining `content.attachment.url` still has Attachment's children).
        let children_path = match (r.content_ref, t.code.as_str()) {
            (Some(c), _) => plan.rules[c].core_path,
            (None, "BackboneElement" | "Element") => r.core_path,
            _ => type_name,
        };
        // A nested resource is typed by its own resourceType (`%context.type()` is `Patient`).
        let node = match json {
            Some(j) if t.is_resource && j.get("resourceType").is_some() => {
                fhirpath::resource_node_of(j, Some(self.val.defs))
            }
            _ => Node {
                json,
                ext,
                ty: type_name,
                path: children_path,
            },
        };
        if !r.invariants.is_empty() {
            self.invariants(r, fhirpath::Value::Node(node), &[], env);
        }
        // Descend.
        if let Some(Value::Object(obj)) = json {
            // A nested resource: typed `Resource` (`contained`, `Bundle.entry.resource`). Other
            // elements may have a property named `resourceType` (`ExampleScenario.instance`).
            if let Some(rt) = obj
                .get("resourceType")
                .and_then(Value::as_str)
                .filter(|_| t.is_resource)
            {
                // A contained resource's `%rootResource` is its container; a Bundle entry or a
                // Parameters resource is a root of its own.
                let root = if r.name == "contained" {
                    self.roots.last().copied()
                } else {
                    None
                };
                if let Some(plan) = self.val.core_plan(rt) {
                    self.resource(&plan, json.unwrap_or(&Value::Null), rt, root);
                }
                return;
            }
            if !r.children.is_empty() || r.content_ref.is_some() {
                self.children(plan, k, obj, env);
            } else if self.descend_types
                && let Some(tp) = self.type_plan(t)
            {
                self.type_root(&tp, r, fhirpath::Value::Node(node), env);
                self.children(&tp, 0, obj, env);
            }
        }
        if let Some(Value::Object(e)) = ext
            && self.descend_types
            && let Some(tp) = self.type_plan(t)
        {
            self.children(&tp, 0, e, env);
        }
    }

    /// The invariants on a type's root (`per-1` on Period), minus those the element already had.
    fn type_root(
        &mut self,
        tp: &Arc<Plan>,
        element: &Rule,
        node: fhirpath::Value<'v>,
        env: &mut Environment<'v>,
    ) {
        let root = &tp.rules[0];
        if root.invariants.is_empty() {
            return;
        }
        let skip: Vec<&str> = element.invariants.iter().map(|i| i.key.as_str()).collect();
        self.invariants(root, node, &skip, env);
    }

    /// The core plan of a value's type, resolved once per rule type.
    fn type_plan(&self, t: &RuleType) -> Option<Arc<Plan>> {
        t.type_plan
            .get_or_init(|| self.val.core_plan(&t.code))
            .clone()
    }

    fn invariants(
        &mut self,
        r: &Rule,
        node: fhirpath::Value<'v>,
        skip: &[&str],
        env: &mut Environment<'v>,
    ) {
        if r.invariants.is_empty() {
            return;
        }
        env.context = vec![node];
        for inv in &r.invariants {
            if skip.contains(&inv.key.as_str()) {
                continue;
            }
            let expr = match &inv.expression {
                Ok(e) => e,
                // Reported once per plan, where it was compiled.
                Err(_) => continue,
            };
            match expr.evaluate_boolean(env) {
                Ok(Some(true)) | Ok(None) => {}
                Ok(Some(false)) => {
                    let msg = format!(
                        "constraint {} failed on {}: {}",
                        inv.key, r.path, inv.source
                    );
                    self.issue(inv.severity, "invariant", msg);
                }
                Err(e) => {
                    let msg = format!(
                        "constraint {} on {} could not be evaluated ({e}); it is not checked",
                        inv.key, r.path
                    );
                    self.issue(Severity::Warning, "invariant", msg);
                }
            }
        }
    }

    fn binding(&mut self, r: &Rule, code_type: &str, j: &Value, strength: Strength, vs: &str) {
        let term = self.val.terminology();
        let verdicts: Vec<(String, CodeCheck)> = match code_type {
            "code" | "string" | "uri" | "canonical" | "url" => match j.as_str() {
                Some(c) => vec![(c.to_string(), term.validate_code(vs, None, c, None))],
                None => return,
            },
            "Coding" => match coding(j) {
                Some((s, c, d)) => vec![(c.to_string(), term.validate_code(vs, s, c, d))],
                None => return,
            },
            "CodeableConcept" => j
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(coding)
                .map(|(s, c, d)| (c.to_string(), term.validate_code(vs, s, c, d)))
                .collect(),
            _ => return,
        };
        if verdicts.iter().any(|(_, v)| *v == CodeCheck::Valid) {
            return;
        }
        let severity = match strength {
            Strength::Required => Severity::Error,
            _ => Severity::Warning,
        };
        if verdicts.is_empty() {
            // A CodeableConcept with text only.
            if strength == Strength::Required {
                self.issue(
                    severity,
                    "code-invalid",
                    format!(
                        "{}: no code given, and a code from {vs} is required",
                        r.path
                    ),
                );
            }
            return;
        }
        if let Some((_, CodeCheck::NotAvailable(why))) = verdicts
            .iter()
            .find(|(_, v)| matches!(v, CodeCheck::NotAvailable(_)))
        {
            let msg = format!(
                "{}: the code could not be checked against {vs}: {why}",
                r.path
            );
            self.issue(Severity::Information, "not-supported", msg);
            return;
        }
        let reasons: Vec<String> = verdicts
            .iter()
            .filter_map(|(c, v)| match v {
                CodeCheck::Invalid(why) => Some(format!("'{c}': {why}")),
                _ => None,
            })
            .collect();
        let kind = if strength == Strength::Required {
            "required"
        } else {
            "extensible"
        };
        self.issue(
            severity,
            "code-invalid",
            format!(
                "{}: not in the value set {vs} ({kind} binding): {}",
                r.path,
                reasons.join("; ")
            ),
        );
    }

    /// A code claimed from a code system the server holds in full must exist in it, whatever the
    /// binding (an unknown code of a known system is an error, not a terminology gap).
    fn coding_in_system(&mut self, j: &Value) {
        let (Some(system), Some(code)) = (
            j.get("system").and_then(Value::as_str),
            j.get("code").and_then(Value::as_str),
        ) else {
            return;
        };
        let version = j.get("version").and_then(Value::as_str);
        if self.val.terminology().code_in_system(system, version, code) == Some(false) {
            self.issue(
                Severity::Error,
                "code-invalid",
                format!("unknown code '{code}' in the code system '{system}'"),
            );
        }
    }

    fn reference(&mut self, r: &Rule, t: &RuleType, j: &Value) {
        let Some(reference) = j.get("reference").and_then(Value::as_str) else {
            return;
        };
        if t.targets.iter().any(|x| x == "Resource") {
            return;
        }
        let target: Option<&str> = if let Some(id) = reference.strip_prefix('#') {
            self.frames
                .last()
                .and_then(|f| f.contained.get(id).copied())
        } else if reference.starts_with("urn:") {
            self.bundle_urls.get(reference).copied()
        } else if let Some(ty) = self.bundle_urls.get(reference) {
            Some(*ty)
        } else {
            literal_type(reference)
        };
        let Some(target) = target else {
            return;
        };
        let allowed = t
            .targets
            .iter()
            .any(|x| x == target || crate::fhirpath::is_subtype(target, x, Some(self.val.defs)));
        if !allowed {
            self.issue(
                Severity::Error,
                "structure",
                format!(
                    "{}: a reference to {target} is not allowed here; allowed: {}",
                    r.path,
                    t.targets.join(", ")
                ),
            );
        }
    }
}

/// The rule at a discriminator path below slice `s` (`$this`, `system`, `code.coding.system`).
fn rule_at(plan: &Plan, s: usize, path: &str) -> Option<usize> {
    let mut cur = s;
    for step in path.split('.') {
        if step == "$this" {
            continue;
        }
        let step = step.strip_suffix("[x]").unwrap_or(step);
        cur = *plan.rules[cur]
            .children
            .iter()
            .find(|&&c| plan.rules[c].name == step)?;
    }
    Some(cur)
}

/// The values at a discriminator path in an instance (arrays flattened; `resolve()` and
/// functions other than `$this` are not followed).
fn values_at<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur = vec![v];
    for step in path.split('.') {
        if step == "$this" {
            continue;
        }
        let mut next = Vec::new();
        for c in cur {
            match c.get(step) {
                Some(Value::Array(a)) => next.extend(a),
                Some(x) => next.push(x),
                None => {}
            }
        }
        cur = next;
    }
    cur
}

/// A rule with no types (a `contentReference`d element) still needs a type to visit with.
static DUMMY: std::sync::LazyLock<Vec<RuleType>> = std::sync::LazyLock::new(|| {
    vec![RuleType {
        code: "BackboneElement".to_string(),
        suffix: String::new(),
        profiles: vec![],
        targets: vec![],
        static_name: Some("BackboneElement"),
        is_resource: false,
        type_plan: std::sync::OnceLock::new(),
    }]
});

fn coding(j: &Value) -> Option<(Option<&str>, &str, Option<&str>)> {
    let code = j.get("code")?.as_str()?;
    Some((
        j.get("system").and_then(Value::as_str),
        code,
        j.get("display").and_then(Value::as_str),
    ))
}

/// The resource type of a literal reference (`Patient/1`, `http://x/fhir/Patient/1/_history/2`).
fn literal_type(reference: &str) -> Option<&str> {
    let path = reference.split(['?', '#']).next()?;
    let segs: Vec<&str> = path.split('/').collect();
    let n = segs.len();
    let ty = if n >= 4 && segs[n - 2] == "_history" {
        segs[n - 4]
    } else if n >= 2 {
        segs[n - 2]
    } else {
        return None;
    };
    crate::definitions::Definitions::core()
        .is_resource_type(ty)
        .then_some(ty)
}

/// Orders a value against a minValue/maxValue: numbers as decimals, dates and times as ISO text
/// (same-precision text orders like the instants), quantities through UCUM conversion. `None`
/// when they cannot be compared.
fn compare_values(v: &Value, bound: &Value) -> Option<std::cmp::Ordering> {
    use crate::fhirpath::{Node, Quantity};
    use rust_decimal::Decimal;
    use std::str::FromStr;
    match (v, bound) {
        (Value::Number(a), Value::Number(b)) => Some(
            Decimal::from_str(a.as_str())
                .ok()?
                .cmp(&Decimal::from_str(b.as_str()).ok()?),
        ),
        (Value::String(a), Value::String(b)) => Some(a.as_str().cmp(b.as_str())),
        (Value::Object(_), Value::Object(_)) => {
            let q = |j: &Value| -> Option<Quantity> { Node::untyped(j).to_quantity() };
            q(v)?.compare(&q(bound)?)
        }
        _ => None,
    }
}

/// Primitive values compare by their text (`1.0` and `1.00` differ in FHIR), objects deeply.
fn same_value(a: &Value, b: &Value) -> bool {
    a == b
}

/// A pattern: every property of the pattern appears in the value with a matching value; for
/// arrays, every pattern item matches some value item.
fn matches_pattern(v: &Value, p: &Value) -> bool {
    match (v, p) {
        (Value::Object(vo), Value::Object(po)) => po
            .iter()
            .all(|(k, pv)| vo.get(k).is_some_and(|vv| matches_pattern(vv, pv))),
        (Value::Array(va), Value::Array(pa)) => pa
            .iter()
            .all(|pi| va.iter().any(|vi| matches_pattern(vi, pi))),
        (Value::Array(va), po) => va.iter().any(|vi| matches_pattern(vi, po)),
        _ => v == p,
    }
}
