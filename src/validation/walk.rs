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
    /// The canonical URL of the definition each resource being walked is checked against; issues
    /// name the innermost.
    from: Vec<String>,
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
            from: Vec::new(),
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

    /// Records an issue at the current location; the message names the definition it comes from.
    fn issue(&mut self, severity: Severity, code: &'static str, mut msg: String) {
        let at = self.location();
        if let Some(url) = self.from.last() {
            let _ = write!(msg, " (from {url})");
        }
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
        self.from.push(plan.url.clone());
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
        if self.descend_types {
            self.extensions(obj, ty, ty, None, &mut env);
            if ty == "StructureDefinition" {
                self.profile_soundness(res);
            }
            if ty == "ConceptMap" {
                self.concept_map_sources(obj);
            }
            let catalogue = self.val.registry.catalogue();
            let findings = super::rules::check(self.val.defs, &catalogue, ty, obj);
            if !findings.is_empty() {
                let at = self.location();
                self.issues.extend(super::rules::issues_at(&at, findings));
            }
        }
        self.children(plan, 0, obj, &mut env);
        if top {
            self.loc.pop();
        }
        self.frames.pop();
        self.roots.pop();
        self.from.pop();
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
                        // The structural parse refuses types core does not allow; a profile (or
                        // an extension definition) may allow fewer.
                        if !self.descend_types
                            && self.is_disallowed_choice(plan, kids, base, suffix)
                        {
                            self.loc.push(Seg::Key(key));
                            let allowed: Vec<&str> =
                                r.types.iter().map(|t| t.code.as_str()).collect();
                            let msg = format!(
                                "{}: the type {suffix} is not allowed here; allowed: {}",
                                r.id,
                                allowed.join(", ")
                            );
                            self.issue(Severity::Error, "structure", msg);
                            self.loc.pop();
                        }
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
                        r.id, slice.min, counts[n]
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
                        r.id, counts[n]
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
                let msg = format!("{}: the slicing is closed and this matches no slice", r.id);
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
        // A value discriminator the slice gives no value for does not restrict it, as long as
        // another discriminator does (several slices may share a `type` and differ in `appliesTo`).
        let unconstrained = |path: &str| {
            rule_at(plan, s, path)
                .is_none_or(|e| plan.rules[e].fixed.is_none() && plan.rules[e].pattern.is_none())
                && !(path == "url" && slice.types.iter().any(|t| !t.profiles.is_empty()))
        };
        let value_kind = |kind: &str| matches!(kind, "value" | "pattern");
        if slicing
            .discriminators
            .iter()
            .all(|(kind, path)| value_kind(kind) && unconstrained(path))
        {
            return false;
        }
        slicing.discriminators.iter().all(|(kind, path)| {
            if value_kind(kind) && unconstrained(path) {
                return true;
            }
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
                    // Any of the slice's types (each with its profiles) may match.
                    let catalogue = self.val.registry.catalogue();
                    let got = actual.first().and_then(|a| a.get("resourceType"));
                    let profiles = expected
                        .into_iter()
                        .flat_map(|e| &plan.rules[e].types)
                        .flat_map(|t| &t.profiles);
                    profiles.into_iter().any(|p| {
                        let want = catalogue
                            .resource("StructureDefinition", p)
                            .map(|sd| sd["type"].clone())
                            .or_else(|| p.rsplit('/').next().map(|t| Value::String(t.into())));
                        matches!((want, got), (Some(w), Some(g)) if &w == g)
                    })
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
                    r.id, r.min
                ),
            );
        }
        if let Some(max) = r.max
            && count as u64 > u64::from(max)
        {
            self.issue(
                Severity::Error,
                "structure",
                format!("{}: maximum cardinality {max}, found {count}", r.id),
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
                    format!("{}: value must be exactly {f} (fixed value)", r.id),
                );
            }
            if let Some(p) = &r.pattern
                && !matches_pattern(j, p)
            {
                self.issue(
                    Severity::Error,
                    "value",
                    format!("{}: value must match the pattern {p}", r.id),
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
                        r.id,
                        s.chars().count()
                    ),
                );
            }
            for (bound, lower) in [(&r.min_value, true), (&r.max_value, false)] {
                let Some(bound) = bound else { continue };
                // A Duration bound on a date is relative to today: minValueDuration 100 a means
                // "no earlier than 100 years ago", maxValueDuration 10 a "no later than in 10 years".
                let relative = j
                    .as_str()
                    .and_then(|_| date_from_today(bound, if lower { -1 } else { 1 }));
                let bound = relative.as_ref().unwrap_or(bound);
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
                        format!("{}: the value {j} is {what} {bound} ({which})", r.id),
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
        if self.descend_types {
            // A complex extension's parts are in the context of the extension itself.
            let holder_url = (t.code == "Extension")
                .then(|| json.and_then(|j| j.get("url")).and_then(Value::as_str))
                .flatten();
            for o in [json, ext].into_iter().flatten() {
                if let Value::Object(o) = o
                    && !(t.is_resource && o.contains_key("resourceType"))
                    && (o.contains_key("extension") || o.contains_key("modifierExtension"))
                {
                    self.extensions(o, &r.path, &t.code, holder_url, env);
                }
            }
        } else if let Some(j) = json
            && t.code != "Extension"
        {
            // A profile pass: the value must also conform to a profile its type names. A nested
            // resource takes the type (and profiles) of its resourceType (`Practitioner` or
            // `PractitionerRole`, each with its own profile).
            let rt = j.get("resourceType").and_then(Value::as_str);
            let own = match rt {
                Some(rt) if t.is_resource => r.types.iter().find(|x| x.code == rt).unwrap_or(t),
                _ => t,
            };
            if !own.profiles.is_empty() {
                let root = (r.name == "contained")
                    .then(|| self.roots.last().copied())
                    .flatten();
                self.type_profiles(own, j, root, env);
            }
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
                // The core pass checks a nested resource against its type and the profiles it
                // claims; a profile pass has nothing to add unless the element's type names a
                // profile (checked above).
                if self.descend_types
                    && let Some(j) = json
                {
                    if let Some(plan) = self.val.core_plan(rt) {
                        self.resource(&plan, j, rt, root);
                    }
                    self.claimed_profiles(j, rt, root);
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

    /// A StructureDefinition being validated is also audited as if it were loaded: its snapshot
    /// must be generable. A base this server does not hold only makes it uncheckable (a warning).
    fn profile_soundness(&mut self, sd: &'v Value) {
        let catalogue = self.val.registry.catalogue();
        let found = super::audit::structure_definition(self.val.defs, &catalogue, sd);
        let at = self.location();
        for mut i in found {
            if i.code == "not-found" {
                i.severity = Severity::Warning;
            }
            i.expression = Some(match i.expression.as_deref() {
                Some(e) => format!("{at}.{}", e.trim_start_matches("StructureDefinition.")),
                None => at.clone(),
            });
            self.issues.push(i);
        }
    }

    /// The codes a ConceptMap maps from are in its source value set, when that value set is held
    /// here (a map from codes its source does not contain maps nothing that can occur).
    fn concept_map_sources(&mut self, obj: &'v Map<String, Value>) {
        let Some(source) = obj
            .get("sourceCanonical")
            .or_else(|| obj.get("sourceUri"))
            .and_then(Value::as_str)
        else {
            return;
        };
        if self
            .val
            .registry
            .catalogue()
            .resource("ValueSet", source)
            .is_none()
        {
            return;
        }
        let groups = obj.get("group").and_then(Value::as_array);
        for (g, group) in groups.into_iter().flatten().enumerate() {
            let system = group.get("source").and_then(Value::as_str);
            let elements = group.get("element").and_then(Value::as_array);
            for (e, el) in elements.into_iter().flatten().enumerate() {
                let Some(code) = el.get("code").and_then(Value::as_str) else {
                    continue;
                };
                if let CodeCheck::Invalid(why) = self
                    .val
                    .terminology()
                    .validate_code(source, system, code, None)
                {
                    for seg in [
                        Seg::Key("group"),
                        Seg::Index(g),
                        Seg::Key("element"),
                        Seg::Index(e),
                        Seg::Key("code"),
                    ] {
                        self.loc.push(seg);
                    }
                    self.issue(
                        Severity::Error,
                        "code-invalid",
                        format!("ConceptMap.group.element.code '{code}' is not in the source value set {source}: {why}"),
                    );
                    self.loc.truncate(self.loc.len() - 5);
                }
            }
        }
    }

    /// A choice property whose type the element does not allow (and that is not a sibling
    /// element whose name happens to start with the choice's stem).
    fn is_disallowed_choice(&self, plan: &Plan, kids: &[usize], key: &str, suffix: &str) -> bool {
        let defs = self.val.defs;
        let mut lower = suffix.to_string();
        if let Some(first) = lower.get_mut(..1) {
            first.make_ascii_lowercase();
        }
        let known_type = defs.structure(suffix).is_some() || defs.structure(&lower).is_some();
        known_type && !kids.iter().any(|&o| plan.rules[o].name == key)
    }

    /// Checks the extensions and modifier extensions of one element (`elem` is its path, `ty` its
    /// type; `holder_url` the URL of the extension they are parts of).
    fn extensions(
        &mut self,
        obj: &'v Map<String, Value>,
        elem: &str,
        ty: &str,
        holder_url: Option<&str>,
        env: &mut Environment<'v>,
    ) {
        for (name, modifier) in [("extension", false), ("modifierExtension", true)] {
            let Some((key, Value::Array(items))) = obj.get_key_value(name) else {
                continue;
            };
            for (i, ext) in items.iter().enumerate() {
                let Some(url) = ext.get("url").and_then(Value::as_str) else {
                    continue;
                };
                // A relative URL names a part of a complex extension: its definition checks it.
                if !url.contains(':') {
                    continue;
                }
                self.loc.push(Seg::Key(key.as_str()));
                self.loc.push(Seg::Index(i));
                self.extension(ext, url, modifier, (elem, ty, holder_url), env);
                self.loc.pop();
                self.loc.pop();
            }
        }
    }

    /// One extension: known, a modifier where (and only where) it must be, used in one of its
    /// contexts, and valid against its definition.
    fn extension(
        &mut self,
        ext: &'v Value,
        url: &str,
        modifier: bool,
        (elem, ty, holder_url): (&str, &str, Option<&str>),
        env: &mut Environment<'v>,
    ) {
        if url.contains('|') {
            self.issue(
                Severity::Error,
                "value",
                format!("the extension URL {url} carries a version; an extension URL must not"),
            );
        }
        let catalogue = self.val.registry.catalogue();
        let Some(sd) = catalogue.resource("StructureDefinition", url).cloned() else {
            self.unknown_extension(url, modifier);
            return;
        };
        drop(catalogue);
        if sd.get("type").and_then(Value::as_str) != Some("Extension") {
            self.issue(
                Severity::Error,
                "structure",
                format!("{url} is not the URL of an extension definition"),
            );
            return;
        }
        let is_modifier = sd
            .pointer("/snapshot/element/0/isModifier")
            .or_else(|| sd.pointer("/differential/element/0/isModifier"))
            .and_then(Value::as_bool)
            == Some(true);
        if modifier && !is_modifier {
            self.issue(
                Severity::Error,
                "structure",
                format!("the extension {url} is not a modifier extension, so it cannot be a modifierExtension"),
            );
        } else if !modifier && is_modifier {
            self.issue(
                Severity::Error,
                "structure",
                format!(
                    "the extension {url} is a modifier extension, so it must be a modifierExtension"
                ),
            );
        }
        if let Some(allowed) = context_mismatch(&sd, elem, ty, holder_url, self.val.defs) {
            self.issue(
                self.val.extension_rules,
                "business-rule",
                format!(
                    "the extension {url} is not allowed here (this element is {ty} at {elem}; its contexts are {allowed})"
                ),
            );
        }
        let plan = match self.val.profile_plan(url) {
            Ok(p) => p,
            Err(e) => {
                let why = e.issues.first().map(|i| i.diagnostics.clone());
                self.issue(
                    Severity::Warning,
                    "not-supported",
                    format!(
                        "the definition of the extension {url} cannot be used: {}",
                        why.unwrap_or_default()
                    ),
                );
                return;
            }
        };
        let Some(obj) = ext.as_object() else {
            return;
        };
        // The extension against its definition: value type, fixed url, parts. Only what the
        // definition adds over Extension itself (which the core pass checks).
        let descend = std::mem::replace(&mut self.descend_types, false);
        self.from.push(plan.url.clone());
        let node = fhirpath::Value::Node(Node {
            json: Some(ext),
            ext: None,
            ty: Some("Extension"),
            path: Some("Extension"),
        });
        self.invariants(&plan.rules[0], node, &[], env);
        self.children(&plan, 0, obj, env);
        self.from.pop();
        self.descend_types = descend;
    }

    /// An extension whose definition is not loaded. A modifier extension that is not understood
    /// makes the element unsafe to process, so it is always an error; another is reported with
    /// the validator's severity for unknown extensions. Core extensions are defined by the
    /// specification (the embedded artefact does not keep them), and example domains are
    /// reserved for examples: neither is unknown.
    fn unknown_extension(&mut self, url: &str, modifier: bool) {
        // `http://hl7.org/fhir/StructureDefinition/...`, and the cross-version ones under
        // `http://hl7.org/fhir/5.0/StructureDefinition/...`.
        let core = url.starts_with("http://hl7.org/fhir/") && url.contains("/StructureDefinition/");
        let example = ["example.org", "acme.com", "nema.org", "hl7.org/fhir/tools/"]
            .iter()
            .any(|d| url.contains(d));
        if core {
            self.issue(
                Severity::Information,
                "not-supported",
                format!("the HL7 extension {url} is not loaded here, so it is not checked"),
            );
        } else if modifier {
            self.issue(
                Severity::Error,
                "structure",
                format!("the modifier extension {url} is unknown: a modifier extension that is not understood makes the resource unsafe to process"),
            );
        } else if !example {
            let severity = self.val.extension_rules;
            self.issue(
                severity,
                "structure",
                format!("the extension {url} is unknown (no definition is loaded), so it is not allowed here"),
            );
        }
    }

    /// The value against the profiles its type names (`type.profile`): it must conform to one.
    /// A nested resource is walked as a resource against the profile of its type.
    fn type_profiles(
        &mut self,
        t: &RuleType,
        j: &'v Value,
        root: Option<&'v Value>,
        env: &mut Environment<'v>,
    ) {
        let rt = j.get("resourceType").and_then(Value::as_str);
        let mut first_failure: Option<Vec<Issue>> = None;
        let mut unusable = Vec::new();
        for p in &t.profiles {
            // A core type's own definition is the core pass's business.
            if p.strip_prefix("http://hl7.org/fhir/StructureDefinition/")
                .is_some_and(|n| self.val.defs.structure(n).is_some())
            {
                return;
            }
            let Ok(plan) = self.val.profile_plan(p) else {
                unusable.push(p.as_str());
                continue;
            };
            let outer = std::mem::take(&mut self.issues);
            match (rt, j.as_object()) {
                (Some(rt), _) if t.is_resource && plan.type_name == rt => {
                    self.resource(&plan, j, rt, root);
                }
                // A profile of another resource type: this resource cannot conform to it.
                (Some(rt), _) if t.is_resource => {
                    let msg = format!(
                        "a {rt} cannot conform to {p}, a profile of {}",
                        plan.type_name
                    );
                    self.issue(Severity::Error, "structure", msg);
                }
                (_, Some(obj)) => {
                    self.from.push(plan.url.clone());
                    let node = fhirpath::Value::Node(Node {
                        json: Some(j),
                        ext: None,
                        ty: t.static_name,
                        path: t.static_name,
                    });
                    self.invariants(&plan.rules[0], node, &[], env);
                    self.children(&plan, 0, obj, env);
                    self.from.pop();
                }
                _ => {}
            }
            let found = std::mem::replace(&mut self.issues, outer);
            if !found
                .iter()
                .any(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
            {
                self.issues.extend(found);
                return;
            }
            first_failure.get_or_insert(found);
        }
        match first_failure {
            // The value might conform to a profile that cannot be used: undecided, not an error.
            Some(_) if !unusable.is_empty() => {
                let msg = format!(
                    "the value conforms to none of the usable profiles of its type, and {} cannot be used, so it is not checked",
                    unusable.join(", ")
                );
                self.issue(Severity::Warning, "not-supported", msg);
            }
            Some(found) => self.issues.extend(found),
            None => {}
        }
    }

    /// A nested resource against the profiles it claims in `meta.profile` that are loaded.
    fn claimed_profiles(&mut self, j: &'v Value, rt: &'v str, root: Option<&'v Value>) {
        let Some(claimed) = j.pointer("/meta/profile").and_then(Value::as_array) else {
            return;
        };
        for p in claimed.iter().filter_map(Value::as_str) {
            let Ok(plan) = self.val.profile_plan(p) else {
                continue;
            };
            if plan.type_name != rt
                || p.strip_prefix("http://hl7.org/fhir/StructureDefinition/")
                    .is_some_and(|n| self.val.defs.structure(n).is_some())
            {
                continue;
            }
            let descend = std::mem::replace(&mut self.descend_types, false);
            self.resource(&plan, j, rt, root);
            self.descend_types = descend;
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
            let native = inv.native.and_then(|n| n.holds(&env.context[0]));
            let verdict = match native {
                Some(holds) => Ok(Some(holds)),
                None => expr.evaluate_boolean(env),
            };
            match verdict {
                Ok(Some(true)) | Ok(None) => {}
                Ok(Some(false)) => {
                    let msg = super::invariant_failure(&inv.key, &r.id, &inv.source);
                    self.issue(inv.severity, "invariant", msg);
                }
                Err(e) => {
                    let msg = format!(
                        "constraint {} on {} could not be evaluated ({e}); it is not checked",
                        inv.key, r.id
                    );
                    self.issue(Severity::Warning, "invariant", msg);
                }
            }
        }
    }

    fn binding(&mut self, r: &Rule, code_type: &str, j: &Value, strength: Strength, vs: &str) {
        let term = self.val.terminology();
        let check = |s, c, d| self.val.verdicts.validate_code(term, vs, s, c, d);
        let verdicts: Vec<(&str, CodeCheck)> = match code_type {
            "code" | "string" | "uri" | "canonical" | "url" => match j.as_str() {
                Some(c) => vec![(c, check(None, c, None))],
                None => return,
            },
            "Coding" => match coding(j) {
                Some((s, c, d)) => vec![(c, check(s, c, d))],
                None => return,
            },
            "CodeableConcept" => j
                .get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(coding)
                .map(|(s, c, d)| (c, check(s, c, d)))
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
                    format!("{}: no code given, and a code from {vs} is required", r.id),
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
                r.id
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
                r.id,
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
                    r.id,
                    t.targets.join(", ")
                ),
            );
        }
    }
}

/// Why an extension may not be used on an element, if it may not: its definition's `context`s
/// (`element` by path or type, `extension` by URL; `fhirpath` contexts are not evaluated) listed.
fn context_mismatch(
    sd: &Value,
    elem: &str,
    ty: &str,
    holder_url: Option<&str>,
    defs: &'static crate::definitions::Definitions,
) -> Option<String> {
    let contexts = sd.get("context").and_then(Value::as_array)?;
    if contexts.is_empty() {
        return None;
    }
    let fits = contexts.iter().any(|c| {
        let e = c.get("expression").and_then(Value::as_str).unwrap_or("");
        match c.get("type").and_then(Value::as_str).unwrap_or("element") {
            "element" => {
                // `http://.../StructureDefinition/Patient#Patient.name` names the path after `#`.
                let e = e.rsplit_once('#').map_or(e, |(_, p)| p);
                // A type R4 does not have (`CanonicalResource`, from R5) cannot be judged.
                let head = e.split('.').next().unwrap_or(e);
                defs.structure(head).is_none()
                    || e == "Element"
                    || e == elem
                    || e == ty
                    || crate::fhirpath::is_subtype(ty, e, Some(defs))
            }
            "extension" => holder_url.is_some_and(|h| h == e.split('|').next().unwrap_or(e)),
            _ => true,
        }
    });
    if fits {
        return None;
    }
    let listed: Vec<String> = contexts
        .iter()
        .map(|c| {
            format!(
                "{}:{}",
                c.get("type").and_then(Value::as_str).unwrap_or("element"),
                c.get("expression").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    Some(listed.join(", "))
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

/// Today moved by a Duration (`{"value": 100, "code": "a"}`) in `direction` (-1 back, 1 on), as a
/// `YYYY-MM-DD` date; `None` when the bound is not a Duration in years, months, weeks or days.
fn date_from_today(bound: &Value, direction: i64) -> Option<Value> {
    let n = bound.get("value")?.as_f64()? as i64 * direction;
    let code = bound.get("code").or_else(|| bound.get("unit"))?.as_str()?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    let (mut y, mut m, mut d) = civil_from_days(secs.div_euclid(86_400));
    match code {
        "a" => y += n,
        "mo" => {
            let months = y * 12 + (m - 1) + n;
            y = months.div_euclid(12);
            m = months.rem_euclid(12) + 1;
        }
        "wk" | "d" => {
            let days = days_from_civil(y, m, d) + if code == "wk" { 7 * n } else { n };
            (y, m, d) = civil_from_days(days);
        }
        _ => return None,
    }
    // 29 February moved to a year without one, or the 31st to a shorter month.
    d = d.min(28 + i64::from(m != 2) * 2 + i64::from(matches!(m, 1 | 3 | 5 | 7 | 8 | 10 | 12)));
    Some(Value::String(format!("{y:04}-{m:02}-{d:02}")))
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The day count since 1970-01-01 of a (year, month, day).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_ext_1_answers_as_its_expression() {
        use super::super::plan::Native;
        let defs = crate::definitions::Definitions::core();
        let expr = fhirpath::parse("extension.exists() != value.exists()").unwrap();
        let part = serde_json::json!([{"url": "a", "valueCode": "b"}]);
        let cases = [
            serde_json::json!({"url": "http://x", "valueString": "a"}),
            serde_json::json!({"url": "http://x", "extension": part}),
            serde_json::json!({"url": "http://x"}),
            serde_json::json!({"url": "http://x", "valueString": "a", "extension": part}),
            serde_json::json!({"url": "http://x", "_valueString": {"extension": part}}),
            serde_json::json!({"url": "http://x", "valueString": "a", "_valueString": {"id": "1"}}),
            serde_json::json!({"url": "http://x", "valueQuantity": {"value": 1}, "extension": part}),
        ];
        for ext in &cases {
            let node = fhirpath::Value::Node(Node {
                json: Some(ext),
                ext: None,
                ty: Some("Extension"),
                path: Some("Extension"),
            });
            let mut env = Environment::with_definitions(ext, Some(defs));
            env.context = vec![node.clone()];
            let engine = expr.evaluate_boolean(&env).unwrap();
            assert_eq!(Native::ValueOrParts.holds(&node), engine, "{ext}");
        }
    }

    #[test]
    fn civil_dates_round_trip_and_durations_move_today() {
        for days in [-719_468, -1, 0, 59, 365, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let back = date_from_today(&serde_json::json!({"value": 100, "code": "a"}), -1).unwrap();
        let on = date_from_today(&serde_json::json!({"value": 2, "code": "wk"}), 1).unwrap();
        let (back, on) = (back.as_str().unwrap(), on.as_str().unwrap());
        assert!(back < "2000-01-01" && back.len() == 10, "{back}");
        assert!(on > "2000-01-01", "{on}");
        assert!(date_from_today(&serde_json::json!({"value": 1, "code": "kg"}), 1).is_none());
    }
}
