//! One inbound record -> the resources of one FHIR transaction, by the rules of a feed.
//!
//! Invariants: the record is checked against the feed's schema before any rule runs; every error
//! names the JSON Pointer of the offending field; every valued leaf of the record is either
//! consumed by a rule or listed in [`Mapped::unmapped`]; ids are derived from business keys
//! ([`crate::mapping::ids::resource_id`]), so a re-sent or corrected record writes the same
//! resources.

use super::load::{
    Converter, Feed, FieldRule, KeyPart, Pointer, ResourceRule, SelectPart, Selection, When,
    WriteMode,
};
use crate::mapping::ids::resource_id;
use crate::mapping::{place, set_default};
use serde_json::{Map, Value, json};
use std::collections::HashSet;

/// Code lookups a mapping needs: ConceptMap translation and displays of local code systems.
pub trait Lookup {
    /// Translates `code` of `system` with the ConceptMap `map`: the target (system, code,
    /// display), `Ok(None)` when the map has no usable target, `Err` when the map is unknown.
    fn translate(
        &self,
        map: &str,
        system: Option<&str>,
        code: &str,
    ) -> Result<Option<(String, String, Option<String>)>, String>;
    /// The display of a code in a loaded code system.
    fn display(&self, system: &str, code: &str) -> Option<String>;
}

/// A lookup that knows no maps (fuzzing, tests without profiles).
pub struct NoLookup;

impl Lookup for NoLookup {
    fn translate(
        &self,
        map: &str,
        _: Option<&str>,
        _: &str,
    ) -> Result<Option<(String, String, Option<String>)>, String> {
        Err(format!("concept map {map} is not loaded"))
    }
    fn display(&self, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// What is wrong with a record, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// JSON Pointer of the offending field in the record (`/insuinfo/0/insutype`); `""` for the
    /// record as a whole.
    pub pointer: String,
    pub message: String,
    /// The FHIRPath of the element in the mapped resource, when validation found it.
    pub expression: Option<String>,
}

impl RecordError {
    fn at(pointer: impl Into<String>, message: impl Into<String>) -> RecordError {
        RecordError {
            pointer: pointer.into(),
            message: message.into(),
            expression: None,
        }
    }
}

/// One resource mapped from a record.
#[derive(Debug, Clone)]
pub struct MappedResource {
    pub rule: usize,
    pub resource_type: String,
    pub id: String,
    /// The resource (PUT), or the elements to change (PATCH).
    pub body: Map<String, Value>,
    pub mode: WriteMode,
    /// Set when the resource must already exist; the pointer of its key names the field.
    pub must_exist: Option<String>,
    /// For a rule with `select`: the search criteria filled from the record, and the same as
    /// people read them (record values where the criteria hold derived ids); the stored
    /// resources they find are patched (`id` is then a placeholder, `?` + the criteria).
    pub select: Option<(String, String)>,
    /// The pointer of the first key part, for errors about the resource as a whole.
    pub key_pointer: String,
    /// (element path, record pointer) of every value placed: validation errors are located
    /// back in the record through it.
    pub trace: Vec<(String, String)>,
}

/// A refusal rule of the feed filled from the record: the search that must find nothing.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Index in [`Feed::refusals`].
    pub rule: usize,
    /// The search criteria with the record's values (URL-encoded), and as people read them.
    pub criteria: String,
    pub shown: String,
    /// The record field the refusal is located at: the first value of the criteria (the key
    /// of the visit, the batch...).
    pub pointer: String,
}

/// The result of mapping one record.
#[derive(Debug, Clone)]
pub struct Mapped {
    /// The record's business key (`|`-joined).
    pub key: String,
    pub resources: Vec<MappedResource>,
    /// The feed's refusal rules, filled from this record (a rule whose values the record does
    /// not have does not apply: there is nothing to search by).
    pub refusals: Vec<Refusal>,
    /// The feed's `lock` keys, filled from this record.
    pub locks: Vec<String>,
    /// (pointer, value) of every valued leaf no rule consumed.
    pub unmapped: Vec<(String, String)>,
}

/// Options of a mapping run.
#[derive(Debug, Clone)]
pub struct MapOptions {
    /// UTC offset for date-times without one (`+08:00`).
    pub default_offset: String,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            default_offset: "+08:00".into(),
        }
    }
}

/// Checks a record against the feed's schema: one error per violation, located by pointer.
pub fn check_schema(feed: &Feed, record: &Value) -> Vec<RecordError> {
    feed.schema
        .iter_errors(record)
        .map(|e| {
            let mut pointer = e.instance_path().to_string();
            // A missing property is located where it should be, not at its parent.
            if let jsonschema::error::ValidationErrorKind::Required { property } = e.kind() {
                let name = property.as_str().unwrap_or_default();
                pointer = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
            }
            RecordError::at(pointer, e.to_string())
        })
        .collect()
}

/// Maps one record (schema first, then the rules).
pub fn map_record(
    feed: &Feed,
    record: &Value,
    lookup: &dyn Lookup,
    opts: &MapOptions,
) -> Result<Mapped, Vec<RecordError>> {
    let errors = check_schema(feed, record);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut run = Run {
        feed,
        root: record,
        lookup,
        opts,
        consumed: HashSet::new(),
        errors: Vec::new(),
        trace: Vec::new(),
    };
    let key = match run.key(&feed.key, record, "") {
        Some(k) => k,
        None => {
            return Err(vec![RecordError::at(
                pointer_text(feed.key.first()),
                "the record has no value for its business key",
            )]);
        }
    };
    let mut instances: Vec<MappedResource> = Vec::new();
    for (ri, rule) in feed.rules.iter().enumerate() {
        // A rule over a list (`for_each`) is conditional per item: its `when` is read from the
        // item (`$/` for the root), so one list can feed two rules (西医 / 中医 diagnoses).
        if rule.for_each.is_none()
            && let Some(w) = &rule.when
            && !run.holds(w, record, "")
        {
            continue;
        }
        let items: Vec<(&Value, String)> = match &rule.for_each {
            Some(p) => match record.pointer(&p.path) {
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v, format!("{}/{i}", p.path)))
                    .collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(v) => vec![(v, p.path.clone())],
            },
            None => vec![(record, String::new())],
        };
        for (current, base) in items {
            if rule.for_each.is_some()
                && let Some(w) = &rule.when
                && !run.holds(w, current, &base)
            {
                continue;
            }
            if let Some(r) = run.instance(ri, rule, current, &base) {
                instances.push(r);
            }
        }
    }
    run.link(&mut instances);
    // The same resource twice (two insuinfo of one 参保地): identical copies are one resource;
    // different ones are an error (a transaction cannot write one resource twice).
    let mut seen: Vec<(String, String, Map<String, Value>)> = Vec::new();
    let mut kept = Vec::new();
    for r in instances {
        if let Some((_, _, body)) = seen
            .iter()
            .find(|(t, i, _)| *t == r.resource_type && *i == r.id)
        {
            if *body == r.body {
                continue;
            }
            run.errors.push(RecordError::at(
                r.key_pointer.clone(),
                format!(
                    "rule '{}' gives {}/{} a second time, with other values (same business key)",
                    feed.rules[r.rule].name, r.resource_type, r.id
                ),
            ));
            continue;
        }
        seen.push((r.resource_type.clone(), r.id.clone(), r.body.clone()));
        kept.push(r);
    }
    let mut instances = kept;
    // After the duplicates are gone: a document lists each resource once.
    run.embed(&mut instances);
    let mut refusals = Vec::new();
    for (i, rule) in feed.refusals.iter().enumerate() {
        if !run.valued(&rule.if_found, record) {
            continue;
        }
        if let Some((criteria, shown, pointer)) =
            run.criteria(&rule.name, None, &rule.if_found, record, "")
        {
            refusals.push(Refusal {
                rule: i,
                criteria,
                shown,
                pointer,
            });
        }
    }
    // A lock whose values the record lacks orders nothing (the schema requires them where the
    // process needs them).
    let mut locks = Vec::new();
    for sel in &feed.locks {
        if run.valued(sel, record)
            && let Some((key, _, _)) = run.criteria("lock", None, sel, record, "")
        {
            locks.push(key);
        }
    }
    if !run.errors.is_empty() {
        // One value read by several rules of one type (the birth time of every Observation)
        // is one error, not one per rule.
        let mut seen = HashSet::new();
        run.errors
            .retain(|e| seen.insert((e.pointer.clone(), e.message.clone())));
        return Err(run.errors);
    }
    let mut unmapped = Vec::new();
    leaves(record, &mut String::new(), &mut |p, v| {
        if !run.consumed.contains(p) {
            unmapped.push((p.to_string(), v));
        }
    });
    Ok(Mapped {
        key,
        resources: instances,
        refusals,
        locks,
        unmapped,
    })
}

fn pointer_text(k: Option<&KeyPart>) -> String {
    k.and_then(|k| k.first())
        .map(|p| p.path.clone())
        .unwrap_or_default()
}

/// Every valued scalar of a record with its pointer.
fn leaves(v: &Value, at: &mut String, f: &mut dyn FnMut(&str, String)) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                leaves(x, at, f);
                at.truncate(len);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                leaves(x, at, f);
                at.truncate(len);
            }
        }
        Value::Null => {}
        Value::String(s) if s.trim().is_empty() => {}
        other => f(at, scalar_text(other).unwrap_or_default()),
    }
}

/// Whether a value holds a valued scalar somewhere below.
fn has_leaf(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().any(has_leaf),
        Value::Array(a) => a.iter().any(has_leaf),
        other => scalar_text(other).is_some(),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

struct Run<'a> {
    feed: &'a Feed,
    root: &'a Value,
    lookup: &'a dyn Lookup,
    opts: &'a MapOptions,
    consumed: HashSet<String>,
    errors: Vec<RecordError>,
    trace: Vec<(String, String)>,
}

impl<'a> Run<'a> {
    /// The value at a pointer and its absolute pointer in the record.
    fn at(&self, p: &Pointer, current: &'a Value, base: &str) -> (Option<&'a Value>, String) {
        if p.root {
            (self.root.pointer(&p.path), p.path.clone())
        } else {
            (current.pointer(&p.path), format!("{base}{}", p.path))
        }
    }

    /// The first valued alternative of a key part: (text, absolute pointer).
    fn part(&mut self, part: &KeyPart, current: &'a Value, base: &str) -> Option<(String, String)> {
        for p in part {
            let (v, abs) = self.at(p, current, base);
            if let Some(t) = v.and_then(scalar_text) {
                self.consumed.insert(abs.clone());
                return Some((t, abs));
            }
        }
        None
    }

    fn key(&mut self, parts: &[KeyPart], current: &'a Value, base: &str) -> Option<String> {
        let values: Vec<String> = parts
            .iter()
            .map(|p| {
                self.part(p, current, base)
                    .map(|(t, _)| t)
                    .unwrap_or_default()
            })
            .collect();
        if values.iter().all(String::is_empty) {
            return None;
        }
        Some(values.join("|"))
    }

    fn holds(&mut self, w: &When, current: &'a Value, base: &str) -> bool {
        // An object or list is valued when it holds a valued leaf (`/father valued`); only
        // scalars are consumed by a test, the leaves of a block by the rules that read them.
        let block = |p: &Pointer| {
            let (v, _) = self.at(p, current, base);
            v.is_some_and(|v| v.is_object() || v.is_array())
                .then(|| v.is_some_and(has_leaf))
        };
        if let When::Valued(p) | When::NotValued(p) = w
            && let Some(valued) = block(p)
        {
            return valued == matches!(w, When::Valued(_));
        }
        let mut text = |p: &Pointer| {
            let (v, abs) = self.at(p, current, base);
            let t = v.and_then(scalar_text);
            if t.is_some() {
                self.consumed.insert(abs);
            }
            t
        };
        match w {
            When::Valued(p) => text(p).is_some(),
            When::NotValued(p) => text(p).is_none(),
            When::Equals(p, v) => text(p).as_deref() == Some(v.as_str()),
            When::NotEquals(p, v) => text(p).as_deref() != Some(v.as_str()),
        }
    }

    fn instance(
        &mut self,
        ri: usize,
        rule: &ResourceRule,
        current: &'a Value,
        base: &str,
    ) -> Option<MappedResource> {
        let mut body = Map::new();
        self.trace.clear();
        if rule.mode == WriteMode::Put {
            body.insert("resourceType".into(), json!(rule.resource_type));
        }
        for f in &rule.fields {
            if let Some(w) = &f.when
                && !self.holds(w, current, base)
            {
                continue;
            }
            self.field(f, &mut body, current, base);
        }
        for g in &rule.groups {
            let (list, abs) = self.at(&g.each, current, base);
            let items: Vec<(&'a Value, String)> = match list {
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v, format!("{abs}/{i}")))
                    .collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(v) => vec![(v, abs.clone())],
            };
            for (i, (item, at)) in items.into_iter().enumerate() {
                let mut element = Map::new();
                for f in &g.fields {
                    if let Some(w) = &f.when
                        && !self.holds(w, item, &at)
                    {
                        continue;
                    }
                    self.field(f, &mut element, item, &at);
                }
                if element.is_empty() {
                    continue;
                }
                if let Some(ix) = &g.index {
                    crate::mapping::set_value(&mut element, &ix.steps, &json!(i + 1));
                }
                if let Some(Value::Object(w)) = &g.with {
                    for (k, v) in w {
                        element.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                if let Err(m) = place(&mut body, &g.target.steps, Value::Object(element), None) {
                    self.errors
                        .push(RecordError::at(at, format!("{}: {m}", g.target.text)));
                }
            }
        }
        // An item of a list is named by its own key part (`/feedetail/2/feedetl_sn`), not by
        // the record's (`$/mdtrt_id`), which every item shares.
        let key_pointer = rule
            .id
            .iter()
            .filter_map(|k| k.first())
            .find(|p| rule.for_each.is_none() || !p.root)
            .or_else(|| rule.id.first().and_then(|k| k.first()))
            .map(|p| self.at(p, current, base).1)
            .unwrap_or_default();
        let (id, key_pointer, select) = match &rule.select {
            Some(sel) => {
                let (criteria, shown, at) =
                    self.criteria(&rule.name, rule.namespace.as_deref(), sel, current, base)?;
                (format!("?{criteria}"), at, Some((criteria, shown)))
            }
            None => {
                let Some(key) = self.key(&rule.id, current, base) else {
                    self.errors.push(RecordError::at(
                        key_pointer,
                        format!("{}: no value for the {} key", rule.name, rule.resource_type),
                    ));
                    return None;
                };
                let namespace = rule.namespace.as_deref().unwrap_or(&self.feed.namespace);
                (
                    resource_id(&rule.resource_type, namespace, &key),
                    key_pointer,
                    None,
                )
            }
        };
        for (path, v) in &rule.defaults {
            set_default(&mut body, &path.steps, v);
        }
        if let Some(p) = &rule.profile
            && rule.mode == WriteMode::Put
        {
            // Merged, so a mapped `meta.tag` stays.
            let meta = body.entry("meta").or_insert_with(|| json!({}));
            if let Value::Object(m) = meta {
                m.insert("profile".into(), json!([p]));
            }
        }
        let must_exist = match &rule.require_existing {
            Some(w) if self.holds(w, current, base) => Some(key_pointer.clone()),
            _ => None,
        };
        Some(MappedResource {
            rule: ri,
            resource_type: rule.resource_type.clone(),
            id,
            body,
            mode: rule.mode,
            must_exist,
            select,
            key_pointer,
            trace: std::mem::take(&mut self.trace),
        })
    }

    /// Whether the record has every value the selection takes.
    fn valued(&mut self, sel: &Selection, record: &'a Value) -> bool {
        sel.parts.iter().all(|p| match p {
            SelectPart::Text(_) => true,
            SelectPart::Value(p) => self.at(p, record, "").0.and_then(scalar_text).is_some(),
            SelectPart::Id(_, ps) => ps
                .iter()
                .all(|p| self.at(p, record, "").0.and_then(scalar_text).is_some()),
        })
    }

    /// The search criteria of a `select` rule (or a refusal) with the record's values
    /// (URL-encoded), as shown in messages, and the pointer of its first value (which names the
    /// record when nothing matches). `name` is the rule's, for errors; derived ids are in
    /// `namespace`, else the feed's.
    fn criteria(
        &mut self,
        name: &str,
        namespace: Option<&str>,
        sel: &Selection,
        current: &'a Value,
        base: &str,
    ) -> Option<(String, String, String)> {
        let namespace = namespace.unwrap_or(&self.feed.namespace);
        let mut criteria = String::new();
        let mut shown = String::new();
        let mut first = None;
        for part in &sel.parts {
            let (pointers, ty) = match part {
                SelectPart::Text(t) => {
                    criteria.push_str(t);
                    shown.push_str(t);
                    continue;
                }
                SelectPart::Value(p) => (std::slice::from_ref(p), None),
                SelectPart::Id(ty, p) => (p.as_slice(), Some(ty)),
            };
            let mut values = Vec::new();
            for p in pointers {
                let (v, abs) = self.at(p, current, base);
                let Some(text) = v.and_then(scalar_text) else {
                    self.errors.push(RecordError::at(
                        abs,
                        format!("{name}: no value for the selection {}", sel.text),
                    ));
                    return None;
                };
                self.consumed.insert(abs.clone());
                first.get_or_insert(abs);
                values.push(text);
            }
            let text = values.join("|");
            let text = match ty {
                Some(ty) => {
                    shown.push_str(&format!("{{{ty} {text}}}"));
                    resource_id(ty, namespace, &text)
                }
                None => {
                    shown.push_str(&text);
                    text
                }
            };
            criteria.extend(form_urlencoded::byte_serialize(text.as_bytes()));
        }
        Some((criteria, shown, first.unwrap_or_default()))
    }

    fn field(
        &mut self,
        f: &FieldRule,
        body: &mut Map<String, Value>,
        current: &'a Value,
        base: &str,
    ) {
        let value = if f.converter == Converter::Reference {
            let mut parts = Vec::new();
            let mut first = String::new();
            for part in &f.from {
                match self.part(part, current, base) {
                    Some((t, abs)) => {
                        if first.is_empty() {
                            first = abs;
                        }
                        parts.push(t);
                    }
                    None => parts.push(String::new()),
                }
            }
            if parts.iter().all(String::is_empty) {
                return;
            }
            let ty = f.target_type.as_deref().unwrap_or_default();
            let ns = f.namespace.as_deref().unwrap_or(&self.feed.namespace);
            let id = resource_id(ty, ns, &parts.join("|"));
            let mut reference = json!({"reference": format!("{ty}/{id}")});
            if let Some(d) = &f.display {
                let (v, abs) = self.at(d, current, base);
                if let Some(t) = v.and_then(scalar_text) {
                    reference["display"] = json!(t);
                    self.consumed.insert(abs);
                }
            }
            (reference, first)
        } else {
            let Some(p) = f.from.first().and_then(|k| k.first()) else {
                return;
            };
            let (v, abs) = self.at(p, current, base);
            let Some(v) = v else { return };
            if v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty()) {
                return;
            }
            let Some(text) = scalar_text(v) else {
                self.errors.push(RecordError::at(
                    abs,
                    format!("expected a value for {}, found {}", f.target.text, kind(v)),
                ));
                return;
            };
            let converted = match &f.value {
                Some(c) => Ok(c.clone()),
                None => self.convert(f, v, &text),
            };
            match converted {
                Ok(x) => (x, abs),
                Err(m) => {
                    self.errors
                        .push(RecordError::at(abs, format!("{}: {m}", f.target.text)));
                    return;
                }
            }
        };
        let (v, abs) = value;
        match place(body, &f.target.steps, v, f.with.as_ref()) {
            Ok(()) => {
                self.trace.push((f.target.text.clone(), abs.clone()));
                self.consumed.insert(abs);
            }
            Err(m) => self
                .errors
                .push(RecordError::at(abs, format!("{}: {m}", f.target.text))),
        }
    }

    fn convert(&self, f: &FieldRule, v: &Value, text: &str) -> Result<Value, String> {
        Ok(match f.converter {
            Converter::String => json!(text),
            Converter::Code => match &f.conceptmap {
                Some(map) => match self.lookup.translate(map, f.system.as_deref(), text)? {
                    Some((_, code, _)) => json!(code),
                    None => return Err(format!("code '{text}' has no translation in {map}")),
                },
                None => json!(text),
            },
            Converter::Date => json!(date_time(text, true, &self.opts.default_offset)?),
            Converter::DateTime => json!(date_time(text, false, &self.opts.default_offset)?),
            Converter::Decimal => decimal(v, text)?,
            Converter::Integer => {
                let n: i64 = text
                    .parse()
                    .map_err(|_| format!("'{text}' is not an integer"))?;
                json!(n)
            }
            Converter::Boolean => match text {
                "true" | "1" | "是" | "Y" | "y" => json!(true),
                "false" | "0" | "否" | "N" | "n" => json!(false),
                _ => return Err(format!("'{text}' is not a yes/no value")),
            },
            Converter::Money => json!({"value": decimal(v, text)?, "currency": "CNY"}),
            Converter::Quantity => {
                let mut q = Map::new();
                q.insert("value".into(), decimal(v, text)?);
                if let Some(u) = &f.unit {
                    q.insert("unit".into(), json!(u));
                    q.insert("system".into(), json!("http://unitsofmeasure.org"));
                    q.insert("code".into(), json!(u));
                }
                Value::Object(q)
            }
            // With a ConceptMap a Coding is the translation (the record's code is kept elsewhere).
            Converter::Coding => match &f.conceptmap {
                Some(map) => match self.lookup.translate(map, f.system.as_deref(), text)? {
                    Some((system, code, display)) => {
                        let mut c = json!({"system": system, "code": code});
                        if let Some(d) = display {
                            c["display"] = json!(d);
                        }
                        c
                    }
                    None => return Err(format!("code '{text}' has no translation in {map}")),
                },
                None => self.coding(f, text)?,
            },
            Converter::CodeableConcept => {
                let mut codings = vec![self.coding(f, text)?];
                if let Some(map) = &f.conceptmap
                    && let Some((system, code, display)) =
                        self.lookup.translate(map, f.system.as_deref(), text)?
                {
                    let mut c = json!({"system": system, "code": code});
                    if let Some(d) = display {
                        c["display"] = json!(d);
                    }
                    codings.push(c);
                }
                json!({"coding": codings})
            }
            Converter::Identifier => {
                json!({"system": f.system.clone().unwrap_or_default(), "value": text})
            }
            Converter::HumanName | Converter::Address => json!({"text": text}),
            Converter::ContactPoint => json!({"system": "phone", "value": text}),
            Converter::Reference => Value::Null,
        })
    }

    fn coding(&self, f: &FieldRule, code: &str) -> Result<Value, String> {
        let system = f.system.clone().unwrap_or_default();
        let mut c = json!({"system": system, "code": code});
        if let Some(d) = self.lookup.display(&system, code) {
            c["display"] = json!(d);
        }
        Ok(c)
    }

    /// References between the resources of one record: a repeating element gets every instance
    /// of the target rules, a single one the first; `gather` puts them in one new element.
    fn link(&mut self, instances: &mut [MappedResource]) {
        let refs: Vec<(usize, String)> = instances
            .iter()
            .map(|r| (r.rule, format!("{}/{}", r.resource_type, r.id)))
            .collect();
        for inst in instances.iter_mut() {
            let rule = &self.feed.rules[inst.rule];
            for link in &rule.links {
                let path = &link.path;
                let repeating = path.steps.iter().any(|s| s.repeating);
                let targets: Vec<&String> = link
                    .targets
                    .iter()
                    .flat_map(|t| refs.iter().filter(move |(r, _)| r == t))
                    .map(|(_, reference)| reference)
                    .take(if repeating { usize::MAX } else { 1 })
                    .collect();
                let placed = if link.gather {
                    gather(&mut inst.body, &path.steps, &targets, link.with.as_ref())
                } else {
                    targets.iter().try_for_each(|reference| {
                        place(
                            &mut inst.body,
                            &path.steps,
                            json!({"reference": reference}),
                            link.with.as_ref(),
                        )
                    })
                };
                if let Err(m) = placed {
                    self.errors.push(RecordError::at(
                        inst.key_pointer.clone(),
                        format!("{}: {m}", path.text),
                    ));
                }
            }
        }
    }

    /// Embeds whole resources of other rules (a document Bundle's entries), references between
    /// them rewritten to their `urn:uuid:` fullUrls.
    fn embed(&mut self, instances: &mut [MappedResource]) {
        let copies: Vec<(usize, Value)> = instances
            .iter()
            .map(|r| {
                let mut body = r.body.clone();
                body.insert("id".into(), json!(r.id));
                (r.rule, Value::Object(body))
            })
            .collect();
        for inst in instances.iter_mut() {
            let rule = &self.feed.rules[inst.rule];
            for (path, targets) in &rule.embeds {
                let chosen: Vec<&Value> = targets
                    .iter()
                    .flat_map(|t| copies.iter().filter(move |(r, _)| r == t))
                    .map(|(_, v)| v)
                    .collect();
                let ids: HashSet<String> = chosen
                    .iter()
                    .map(|r| {
                        format!(
                            "{}/{}",
                            r["resourceType"].as_str().unwrap_or_default(),
                            r["id"].as_str().unwrap_or_default()
                        )
                    })
                    .collect();
                for r in chosen {
                    let mut r = r.clone();
                    crate::ingest::cda::convert::to_urn(&mut r, &ids);
                    let url = format!("urn:uuid:{}", r["id"].as_str().unwrap_or_default());
                    if let Err(m) = place(
                        &mut inst.body,
                        &path.steps,
                        r,
                        Some(&json!({"fullUrl": url})),
                    ) {
                        self.errors.push(RecordError::at(
                            inst.key_pointer.clone(),
                            format!("{}: {m}", path.text),
                        ));
                    }
                }
            }
        }
    }
}

/// Puts references into one new element of the first repeating step of `steps` (carrying `with`):
/// nothing when there are none.
fn gather(
    body: &mut Map<String, Value>,
    steps: &[crate::mapping::load::Step],
    references: &[&String],
    with: Option<&Value>,
) -> Result<(), String> {
    let Some(rep) = steps.iter().position(|s| s.repeating) else {
        return Err("`gather` needs a repeating element".into());
    };
    if references.is_empty() {
        return Ok(());
    }
    let mut element = match with {
        Some(Value::Object(w)) => w.clone(),
        _ => Map::new(),
    };
    for reference in references {
        place(
            &mut element,
            &steps[rep + 1..],
            json!({"reference": reference}),
            None,
        )?;
    }
    place(body, &steps[..=rep], Value::Object(element), None)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Object(_) => "an object",
        Value::Array(_) => "a list",
        _ => "a value",
    }
}

/// A record number as a FHIR decimal, keeping its text (`1.50` stays `1.50`).
fn decimal(v: &Value, text: &str) -> Result<Value, String> {
    if let Value::Number(n) = v {
        return Ok(Value::Number(n.clone()));
    }
    crate::mapping::datatypes::decimal(text)
}

fn num(s: &str, lo: u32, hi: u32, what: &str, whole: &str) -> Result<String, String> {
    match s.parse::<u32>() {
        Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) && (lo..=hi).contains(&n) => {
            Ok(s.to_string())
        }
        _ => Err(format!("'{whole}': {what} '{s}' is out of range")),
    }
}

/// A record date or date-time (`2024-03-01`, `20240301`, `2024-03-01 08:30:00`,
/// `2024-03-01T08:30:00+08:00`) as a FHIR date (`want_date`) or dateTime.
pub fn date_time(s: &str, want_date: bool, offset: &str) -> Result<String, String> {
    let s = s.trim();
    let (date, time) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim())),
        None => (s, None),
    };
    let compact = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    let (y, m, d) = if compact {
        (&date[0..4], &date[4..6], &date[6..8])
    } else {
        let mut it = date.split('-');
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(y), Some(m), Some(d), None) if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
                (y, m, d)
            }
            _ => return Err(format!("'{s}' is not a date (YYYY-MM-DD)")),
        }
    };
    let y = num(y, 1, 9999, "year", s)?;
    let m = num(m, 1, 12, "month", s)?;
    let d = num(d, 1, 31, "day", s)?;
    let date = format!("{y}-{m}-{d}");
    let Some(time) = time.filter(|_| !want_date) else {
        return Ok(date);
    };
    let (clock, zone) = match time.find(['+', '-', 'Z']) {
        Some(i) => (&time[..i], Some(&time[i..])),
        None => (time, None),
    };
    let mut parts = clock.split(':');
    let h = num(parts.next().unwrap_or(""), 0, 23, "hour", s)?;
    let mi = num(parts.next().unwrap_or("00"), 0, 59, "minute", s)?;
    let sec = parts.next().unwrap_or("00");
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let se = num(whole, 0, 60, "second", s)?;
    if parts.next().is_some() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a time of day (HH:MM:SS)"));
    }
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    let zone = match zone {
        Some("Z") => "Z".to_string(),
        Some(z) if z.len() == 6 && &z[3..4] == ":" => z.to_string(),
        Some(_) => return Err(format!("'{s}': bad time zone")),
        None => offset.to_string(),
    };
    Ok(format!("{date}T{h}:{mi}:{se}{frac}{zone}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feed folder with an open schema and this mapping.
    fn feed_folder(mapping: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("schema.json"), r#"{"type": "object"}"#).unwrap();
        std::fs::write(dir.path().join("mapping.toml"), mapping).unwrap();
        dir
    }

    /// The load errors of a feed folder, as `line: message`.
    fn load_errors(dir: &tempfile::TempDir) -> Vec<String> {
        crate::ingest::feed::load::load_feed(dir.path())
            .unwrap_err()
            .into_iter()
            .map(|e| format!("{}: {}", e.line, e.message))
            .collect()
    }

    /// The mapping features the document feeds use, on one small feed: a `for_each` rule's `when`
    /// per item, links to two rules, `gather`, a Reference's `display`, a path below a primitive,
    /// and resources embedded in a Bundle with their references as fullUrls.
    #[test]
    fn per_item_conditions_gathered_links_and_embedded_resources() {
        let dir = feed_folder(
            r#"
feed = "t"
namespace = "t"
key = ["/id"]

[[resource]]
name = "doc"
type = "Bundle"
id = ["/id"]
defaults = { type = "document" }
embed = { "entry.resource" = ["comp", "patient", "a", "b"] }

[[resource]]
name = "comp"
type = "Composition"
id = ["/id"]
[resource.links]
subject = "patient"
"section.entry" = [
  { to = ["a", "b"], gather = true, with = { title = "诊断" } },
  { to = "patient", gather = true, with = { title = "患者" } },
]

[[resource]]
name = "patient"
type = "Patient"
id = ["/id"]
[[resource.field]]
from = "/born"
fhir = "birthDate.extension.valueDateTime"
with = { url = "http://hl7.org/fhir/StructureDefinition/patient-birthTime" }
[[resource.field]]
from = "/doctor"
fhir = "generalPractitioner"
as = "Reference"
target = "Practitioner"
display = "/doctor_name"

[[resource]]
name = "a"
type = "Condition"
for_each = "/dx"
when = "/kind = 1"
id = ["$/id", "/code"]
[[resource.field]]
from = "/code"
fhir = "code.text"

[[resource]]
name = "b"
type = "Condition"
for_each = "/dx"
when = "/kind != 1"
id = ["$/id", "/code"]
namespace = "t-b"
[[resource.field]]
from = "/code"
fhir = "note.text"
"#,
        );
        let feed = crate::ingest::feed::load::load_feed(dir.path()).unwrap();
        let record = json!({"id": "1", "born": "2026-11-28 06:42", "doctor": "D1", "doctor_name": "李明",
            "dx": [{"kind": "1", "code": "J18"}, {"kind": "2", "code": "胸痹"}]});
        let m = map_record(&feed, &record, &NoLookup, &MapOptions::default()).unwrap();
        let id = |ty: &str, ns: &str, k: &str| resource_id(ty, ns, k);
        let (pid, a, b) = (
            id("Patient", "t", "1"),
            id("Condition", "t", "1|J18"),
            id("Condition", "t-b", "1|胸痹"),
        );
        let body = |ty: &str| {
            Value::Object(
                m.resources
                    .iter()
                    .find(|r| r.resource_type == ty)
                    .unwrap()
                    .body
                    .clone(),
            )
        };
        let patient = json!({"resourceType": "Patient",
            "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "2026-11-28T06:42:00+08:00"}]},
            "generalPractitioner": [{"reference": format!("Practitioner/{}", id("Practitioner", "t", "D1")), "display": "李明"}]});
        assert_eq!(body("Patient"), patient);
        // One item each: kind 1 is rule a's, kind 2 rule b's.
        let conditions: Vec<&str> = m
            .resources
            .iter()
            .filter(|r| r.resource_type == "Condition")
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(conditions, vec![a.as_str(), b.as_str()]);
        assert_eq!(
            body("Composition"),
            json!({"resourceType": "Composition",
                "subject": {"reference": format!("Patient/{pid}")},
                "section": [
                    {"title": "诊断", "entry": [{"reference": format!("Condition/{a}")}, {"reference": format!("Condition/{b}")}]},
                    {"title": "患者", "entry": [{"reference": format!("Patient/{pid}")}]}]})
        );
        // Embedded in order, with ids, references to other entries as their fullUrls.
        let bundle = body("Bundle");
        let urls: Vec<&str> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap())
            .collect();
        let comp = id("Composition", "t", "1");
        assert_eq!(
            urls,
            vec![
                format!("urn:uuid:{comp}"),
                format!("urn:uuid:{pid}"),
                format!("urn:uuid:{a}"),
                format!("urn:uuid:{b}")
            ]
        );
        assert_eq!(
            bundle["entry"][0]["resource"]["subject"],
            json!({"reference": format!("urn:uuid:{pid}")})
        );
        assert_eq!(bundle["entry"][0]["resource"]["id"], json!(comp));
        // A reference to a resource outside the Bundle stays as it was.
        assert_eq!(
            bundle["entry"][1]["resource"]["generalPractitioner"][0]["display"],
            "李明"
        );
        assert!(
            bundle["entry"][1]["resource"]["generalPractitioner"][0]["reference"]
                .as_str()
                .unwrap()
                .starts_with("Practitioner/")
        );
        assert!(m.unmapped.is_empty(), "{:?}", m.unmapped);
    }

    /// The new mapping keys are checked at load, each error naming the rule and what is wrong.
    #[test]
    fn embeds_gathers_and_displays_are_checked_at_load() {
        let dir = feed_folder(
            r#"feed = "t"
namespace = "t"
key = ["/id"]

[[resource]]
name = "doc"
type = "Bundle"
id = ["/id"]
embed = { "entry.resource" = ["change", "nobody"], "entry.fullUrl" = ["comp"] }

[[resource]]
name = "comp"
type = "Composition"
id = ["/id"]
links = { custodian = { to = "doc", gather = true } }
[[resource.field]]
from = "/x"
fhir = "title"
display = "/y"

[[resource]]
name = "change"
type = "Claim"
id = ["/id"]
method = "patch"
"#,
        );
        let errors = load_errors(&dir);
        assert_eq!(
            errors,
            vec![
                "5: doc: embed entry.fullUrl: Bundle.entry.fullUrl is a uri, not a Resource",
                "5: doc: embed entry.resource: rule 'change' is a patch",
                "5: doc: embed entry.resource: no resource rule named 'nobody'",
                "11: comp: link custodian: `gather` needs a repeating element",
                "16: comp: Composition.title: `display` is for a Reference",
            ]
        );
    }

    /// A `select` rule's criteria are filled from the record (values URL-encoded, `{Type:/p,/q}`
    /// as the id those values derive), its pointers consumed; a missing value names its field.
    #[test]
    fn selections_are_filled_from_the_record() {
        let dir = feed_folder(
            r#"feed = "t"
namespace = "t"
key = ["/visit", "/batch"]

[[resource]]
name = "lines"
type = "ChargeItem"
method = "patch"
select = "identifier=s|{/batch}&context=Encounter/{Encounter:/visit}&x={Claim:/visit,/batch}"
defaults = { status = "entered-in-error" }
"#,
        );
        let feed = crate::ingest::feed::load::load_feed(dir.path()).unwrap();
        let m = map_record(
            &feed,
            &json!({"visit": "M1", "batch": "CB 1&2"}),
            &NoLookup,
            &MapOptions::default(),
        )
        .unwrap();
        let (criteria, shown) = m.resources[0].select.clone().unwrap();
        assert_eq!(
            criteria,
            format!(
                "identifier=s|CB+1%262&context=Encounter/{}&x={}",
                resource_id("Encounter", "t", "M1"),
                resource_id("Claim", "t", "M1|CB 1&2")
            )
        );
        assert_eq!(
            shown,
            "identifier=s|CB 1&2&context=Encounter/{Encounter M1}&x={Claim M1|CB 1&2}"
        );
        assert_eq!(m.resources[0].key_pointer, "/batch");
        assert!(m.unmapped.is_empty(), "{:?}", m.unmapped);
        let errors = map_record(
            &feed,
            &json!({"visit": "M1"}),
            &NoLookup,
            &MapOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            vec![RecordError::at(
                "/batch",
                "lines: no value for the selection identifier=s|{/batch}&context=Encounter/{Encounter:/visit}&x={Claim:/visit,/batch}"
            )]
        );
    }

    /// A `[[refuse]]` rule's search is filled from the record like a `select` (located at its
    /// first value); a record without the value has nothing to search by, so the rule does not
    /// apply to it. At load: the type, the criteria (a record value in it) and a message.
    #[test]
    fn refusals_are_filled_from_the_record_and_checked_at_load() {
        let dir = feed_folder(
            r#"feed = "t"
namespace = "t"
key = ["/data/visit"]

[[resource]]
name = "visit"
type = "Encounter"
id = ["/data/visit"]
method = "patch"
defaults = { status = "cancelled" }

[[refuse]]
name = "fees-uploaded"
type = "Claim"
if_found = "identifier=s|{/data/visit}&use=predetermination&x={Encounter:/data/visit}"
message = "fees stand: withdraw them first"

[[refuse]]
name = "optional-field"
type = "Claim"
if_found = "identifier=b|{/data/batch}"
message = "a batch stands"
"#,
        );
        let feed = crate::ingest::feed::load::load_feed(dir.path()).unwrap();
        let m = map_record(
            &feed,
            &json!({"data": {"visit": "M 1"}}),
            &NoLookup,
            &MapOptions::default(),
        )
        .unwrap();
        assert_eq!(
            m.refusals.len(),
            1,
            "the rule on /data/batch does not apply"
        );
        let r = &m.refusals[0];
        assert_eq!(
            (r.rule, r.pointer.as_str(), r.shown.as_str()),
            (
                0,
                "/data/visit",
                "identifier=s|M 1&use=predetermination&x={Encounter M 1}"
            )
        );
        assert_eq!(
            r.criteria,
            format!(
                "identifier=s|M+1&use=predetermination&x={}",
                resource_id("Encounter", "t", "M 1")
            )
        );
        let bad = feed_folder(
            r#"feed = "t"
namespace = "t"
key = ["/id"]

[[refuse]]
name = "a"
type = "Bill"
if_found = "identifier={/id}"
message = "x"

[[refuse]]
name = "b"
type = "Claim"
if_found = "status=active"
message = " "
"#,
        );
        assert_eq!(
            load_errors(&bad),
            vec![
                "5: refuse a: 'Bill' is not an R4 resource type",
                "11: refuse b: `message` is empty (say what stands and what must come first)",
                "11: refuse b: if_found: 'status=active' takes nothing from the record (it would change the same resources for every record)",
            ]
        );
    }

    /// `select` is checked at load: patch only, not with `id` or `for_each`, not a link target,
    /// pointers and types valid; `optional` only with it.
    #[test]
    fn selections_are_checked_at_load() {
        let dir = feed_folder(
            r#"feed = "t"
namespace = "t"
key = ["/id"]

[[resource]]
name = "a"
type = "Claim"
select = "_id={Claim:/id}"

[[resource]]
name = "b"
type = "Claim"
method = "patch"
id = ["/id"]
select = "_id={Nothing:/id}"

[[resource]]
name = "c"
type = "ClaimResponse"
id = ["/id"]
optional = true
links = { request = "a" }

[[resource]]
name = "d"
type = "Claim"
method = "patch"
select = "status=active"
"#,
        );
        let errors = load_errors(&dir);
        assert_eq!(
            errors,
            vec![
                "5: a: `select` changes stored resources: it needs method = \"patch\"",
                "10: b: select: 'Nothing' is not an R4 resource type",
                "10: b: `id` and `select` exclude each other",
                "17: c: `optional` is for a rule with `select`",
                "17: c: link request: rule 'a' selects stored resources; it cannot be linked to",
                "24: d: select: 'status=active' takes nothing from the record (it would change the same resources for every record)",
            ]
        );
    }

    #[test]
    fn dates_of_records() {
        assert_eq!(
            date_time("2024-03-01", true, "+08:00").unwrap(),
            "2024-03-01"
        );
        assert_eq!(
            date_time("20240301", false, "+08:00").unwrap(),
            "2024-03-01"
        );
        assert_eq!(
            date_time("2024-03-01 08:30:05", false, "+08:00").unwrap(),
            "2024-03-01T08:30:05+08:00"
        );
        assert_eq!(
            date_time("2024-03-01 08:30", false, "+08:00").unwrap(),
            "2024-03-01T08:30:00+08:00"
        );
        assert_eq!(
            date_time("2024-03-01 08:30:05", true, "+08:00").unwrap(),
            "2024-03-01"
        );
        assert!(date_time("2024-13-01", true, "+08:00").is_err());
        assert!(date_time("2024/03/01", true, "+08:00").is_err());
        assert!(date_time("2024-03-01 25:00", false, "+08:00").is_err());
    }
}
