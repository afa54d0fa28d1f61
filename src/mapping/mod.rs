//! The mapping engine: runs the rules of `mappings/hl7v2/` over a parsed message and produces the
//! resources of one FHIR transaction, plus the record of every value no rule consumed.
//!
//! Public surface: [`Mappings::load`] (checked at start-up), [`convert`] -> [`Conversion`].
//! Invariants: ids are deterministic ([`ids`]); a value is either placed in a resource (and listed
//! in [`Conversion::trace`]) or listed in [`Conversion::unmapped`] with a reason, never neither.

pub mod datatypes;
pub mod identifiers;
pub mod ids;
pub mod load;
pub mod xml;

pub use load::{LoadError, Mappings};

use crate::ingest::hl7v2::{Hl7v2Message, Piece, Placement, Segment};
use crate::ingest::merge::{Erasure, Standing, Statement};
use datatypes::{Context, Converter};
use load::{Condition, FhirPath, MessageMap, SegmentMap, Step, V2Path};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};

/// Options of a conversion.
#[derive(Debug, Clone)]
pub struct Options {
    /// UTC offset for v2 times without one (`+08:00`).
    pub default_offset: String,
    /// Fill [`Conversion::trace`] (which field went where). Off on the ingest path, which never
    /// reads it: naming every placed value costs several allocations per field.
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_offset: "+08:00".into(),
            trace: false,
        }
    }
}

/// A value that no rule consumed, or that a rule could not represent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// `PID-10` or `PID-11[2].7`, as v2 names it.
    pub field: String,
    /// 1-based position of the segment in the message.
    pub sequence: usize,
    /// The raw value (at most 200 characters).
    pub value: String,
    /// Why: "no mapping" or the converter's reason.
    pub reason: String,
}

/// Where one value went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub field: String,
    pub sequence: usize,
    pub value: String,
    /// `Patient/<id>.name`.
    pub target: String,
}

/// The result of mapping one message.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The message structure whose map was used (`ADT_A01`, or `*`).
    pub structure: String,
    /// MSH-9.2.
    pub event: String,
    /// Resources with `resourceType` and `id`, in rule order, then created references.
    pub resources: Vec<Value>,
    /// How the message stands to each of `resources` (same order): its rule's standing and the
    /// top-level elements only defaults filled; a created reference (a practitioner or location
    /// a field names) is named.
    pub statements: Vec<Statement>,
    pub unmapped: Vec<Unmapped>,
    pub trace: Vec<Trace>,
}

/// Why a message cannot be mapped at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("MSH-9: no mapping for message type {0}")]
    Unsupported(String),
}

struct Instance {
    rule: usize,
    segment: usize,
    chain: Vec<u32>,
    resource: Map<String, Value>,
    id: String,
    /// Top-level elements that only defaults filled.
    assumed: BTreeSet<String>,
}

struct Run<'a, 'm> {
    msg: &'a Hl7v2Message<'m>,
    maps: &'a Mappings,
    ctx: Context<'a>,
    consumed: Consumed,
    unmapped: Vec<Unmapped>,
    trace: Vec<(usize, Trace)>,
    tracing: bool,
    /// The explicit nulls (`""`) of each instance.
    erasures: Vec<(usize, Erasure)>,
}

/// The values rules placed (or rejected with a reason): (segment index, field, repetition,
/// component; 0 = all), plus the repetitions of which some component was taken, so that the
/// unconsumed report asks one question per repetition instead of one per possible component.
#[derive(Default)]
struct Consumed {
    values: HashSet<(usize, usize, usize, usize), foldhash::fast::RandomState>,
    partly: HashSet<(usize, usize, usize), foldhash::fast::RandomState>,
}

impl Consumed {
    fn insert(&mut self, key: (usize, usize, usize, usize)) {
        if key.3 > 0 {
            self.partly.insert((key.0, key.1, key.2));
        }
        self.values.insert(key);
    }

    fn contains(&self, key: &(usize, usize, usize, usize)) -> bool {
        self.values.contains(key)
    }

    fn partly(&self, segment: usize, field: usize, repetition: usize) -> bool {
        self.partly.contains(&(segment, field, repetition))
    }
}

fn shown(p: &str) -> String {
    // 200 bytes hold at most 200 characters: no per-character copy for the common short value.
    if p.len() <= 200 {
        return p.to_string();
    }
    p.chars().take(200).collect()
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// `at` names the group path `path` or its last steps (`PID` matches `PATIENT.PID`).
fn path_matches(path: &str, at: &str) -> bool {
    path.strip_suffix(at)
        .is_some_and(|head| head.is_empty() || head.ends_with('.'))
}

fn field_name(v2: &V2Path, rep: usize) -> String {
    v2_name(&v2.segment, v2.field, rep, v2.component, v2.subcomponent)
}

/// `PID-11[2].7`: written into one buffer (the unconsumed report names thousands per message).
fn v2_name(
    segment: &str,
    field: usize,
    rep: usize,
    component: Option<usize>,
    subcomponent: Option<usize>,
) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(16);
    let _ = write!(s, "{segment}-{field}");
    if rep > 1 {
        let _ = write!(s, "[{rep}]");
    }
    for c in [component, subcomponent].into_iter().flatten() {
        let _ = write!(s, ".{c}");
    }
    s
}

/// Maps one parsed message with the loaded rules.
pub fn convert(
    msg: &Hl7v2Message<'_>,
    maps: &Mappings,
    opts: &Options,
) -> Result<Conversion, ConvertError> {
    let (ty, event, structure) = msg.message_type();
    let map = maps
        .for_message(&ty, &event, structure.as_deref())
        .ok_or_else(|| ConvertError::Unsupported(format!("{ty}^{event}")))?;
    let facility = facility(msg);
    let seg_ids: Vec<&str> = msg.segments().map(|s| s.id()).collect();
    let placements = map.grammar.place(&seg_ids);
    let mut run = Run {
        msg,
        maps,
        ctx: Context {
            facility: &facility,
            default_offset: &opts.default_offset,
            vocabularies: &maps.vocabularies,
            identifier_systems: &maps.identifier_systems,
            created: Vec::new(),
        },
        consumed: Consumed::default(),
        unmapped: Vec::new(),
        trace: Vec::new(),
        tracing: opts.trace,
        erasures: Vec::new(),
    };
    // The envelope: MSH and EVN feed the Provenance and the ACK, not a resource.
    for f in [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 15, 16, 18] {
        run.consumed.insert((0, f, 0, 0));
    }
    for s in msg.segments().filter(|s| s.id() == "EVN") {
        for f in [1, 2] {
            run.consumed.insert((s.index(), f, 0, 0));
        }
    }
    let instances = run.build(map, &placements, &event);
    let control = msg
        .msh()
        .field(10)
        .text()
        .map(|t| t.into_owned())
        .unwrap_or_default();
    Ok(run.finish(map, instances, &structure_name(map), &event, &control))
}

fn structure_name(map: &MessageMap) -> String {
    map.structure.clone()
}

/// The namespace of MSH-4 (sending facility), else MSH-3: scopes local identifiers and ids.
pub fn facility(msg: &Hl7v2Message<'_>) -> String {
    let msh = msg.msh();
    for f in [4, 3] {
        let t = msh.field(f).at(&[1]).text().map(|t| t.trim().to_string());
        if let Ok(t) = t
            && !t.is_empty()
        {
            return t;
        }
    }
    String::new()
}

impl<'a, 'm> Run<'a, 'm> {
    fn build(&mut self, map: &MessageMap, placements: &[Placement], event: &str) -> Vec<Instance> {
        let mut instances: Vec<Instance> = Vec::new();
        for (ri, rule) in map.rules.iter().enumerate() {
            let Some(seg_map) = self.maps.segments.get(&rule.map) else {
                continue;
            };
            for pl in placements
                .iter()
                .filter(|p| path_matches(&p.path, &rule.at))
            {
                let Some(segment) = self.msg.segment(pl.segment) else {
                    continue;
                };
                let target = match rule.into {
                    Some(into) => nearest(&instances, into, &pl.chain).first().copied(),
                    None => {
                        let mut r = Map::new();
                        r.insert(
                            "resourceType".into(),
                            Value::String(seg_map.resource.clone()),
                        );
                        instances.push(Instance {
                            rule: ri,
                            segment: pl.segment,
                            chain: pl.chain.clone(),
                            resource: r,
                            id: String::new(),
                            assumed: BTreeSet::new(),
                        });
                        Some(instances.len() - 1)
                    }
                };
                let Some(target) = target else {
                    // `into` with nothing to merge into: the segment stays unconsumed and is reported.
                    continue;
                };
                let mut resource = std::mem::take(&mut instances[target].resource);
                self.fill(segment, seg_map, &mut resource, target);
                instances[target].resource = resource;
            }
        }
        // Event values and defaults once every rule (`into` ones too) has filled its fields.
        for inst in &mut instances {
            let rule = &map.rules[inst.rule];
            let Some(seg_map) = self.maps.segments.get(&rule.map) else {
                continue;
            };
            for (path, v) in rule.set_by_event.get(event).into_iter().flatten() {
                set_value(&mut inst.resource, &path.steps, v);
            }
            // The rule's defaults before the segment map's: the more specific one wins.
            for (path, v) in rule.defaults.iter().chain(&seg_map.defaults) {
                let top = path
                    .steps
                    .first()
                    .map(|s| s.key.as_str())
                    .unwrap_or_default();
                let stated = inst.resource.contains_key(top);
                set_default(&mut inst.resource, &path.steps, v);
                if !stated && inst.resource.contains_key(top) {
                    inst.assumed.insert(top.to_string());
                }
            }
        }
        // Ids, in rule order so that `id_within` parents have theirs first.
        for i in 0..instances.len() {
            let rule = &map.rules[instances[i].rule];
            let Some(seg_map) = self.maps.segments.get(&rule.map) else {
                continue;
            };
            let segment = self.msg.segment(instances[i].segment);
            let mut key: Vec<String> = seg_map
                .id
                .iter()
                .map(|p| {
                    segment
                        .map(|s| {
                            s.field(p.field)
                                .part(1)
                                .at(&p.below_field())
                                .raw()
                                .to_string()
                        })
                        .unwrap_or_default()
                })
                .collect();
            if key.iter().all(String::is_empty) {
                // No business identifier: stable for this message (a re-send maps to the same ids).
                key = vec![
                    self.msg.msh().field(10).raw().to_string(),
                    instances[i].segment.to_string(),
                ];
            }
            let mut key = key.join("|");
            if let Some(parent_rule) = rule.id_within {
                let parent = nearest(&instances, parent_rule, &instances[i].chain)
                    .first()
                    .map(|&p| instances[p].id.clone())
                    .unwrap_or_default();
                key = format!("{parent}/{key}");
            }
            instances[i].id = ids::resource_id(&seg_map.resource, self.ctx.facility, &key);
        }
        // Links to the nearest resources of another rule.
        for i in 0..instances.len() {
            let rule = &map.rules[instances[i].rule];
            for link in &rule.links {
                let targets = nearest(&instances, link.target, &instances[i].chain);
                let refs: Vec<Value> = targets
                    .iter()
                    .filter(|&&t| t != i)
                    .map(|&t| {
                        let ty = instances[t]
                            .resource
                            .get("resourceType")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        serde_json::json!({"reference": format!("{ty}/{}", instances[t].id)})
                    })
                    .collect();
                let repeating = takes_every_repetition(&link.element.steps);
                let mut resource = std::mem::take(&mut instances[i].resource);
                for r in refs
                    .into_iter()
                    .take(if repeating { usize::MAX } else { 1 })
                {
                    let _ = place(&mut resource, &link.element.steps, r, link.with.as_ref());
                }
                instances[i].resource = resource;
            }
        }
        instances
    }

    fn fill(
        &mut self,
        segment: Segment<'_>,
        seg_map: &SegmentMap,
        resource: &mut Map<String, Value>,
        instance: usize,
    ) {
        for rule in &seg_map.fields {
            if let Some(c) = &rule.when
                && !holds(c, segment)
            {
                continue;
            }
            let field = segment.field(rule.v2.field);
            if !field.is_valued() {
                continue;
            }
            let all = takes_every_repetition(&rule.target.steps);
            let below = rule.v2.below_field();
            for (r, rep) in field.parts().enumerate() {
                let rep_no = r + 1;
                if !all && rep_no > 1 {
                    // A single-valued element takes the first repetition; the rest are reported.
                    break;
                }
                let piece = rep.at(&below);
                if !piece.is_valued() {
                    continue;
                }
                let key = (
                    segment.index(),
                    rule.v2.field,
                    rep_no,
                    rule.v2.component.unwrap_or(0),
                );
                let name = || field_name(&rule.v2, rep_no);
                if piece.is_null() {
                    // `""`: nothing placed, the element deleted where the message may delete
                    // (the type of an OBX-5 `""` goes with it).
                    self.consumed.insert(key);
                    if let Some(t) = &rule.type_from {
                        self.consumed.insert((segment.index(), t.field, 0, 0));
                    }
                    if self.tracing {
                        let target = format!("{} (explicit null: deleted)", rule.target.text);
                        self.traced(instance, name(), segment, piece, target);
                    }
                    if let Some(e) = erasure(rule, seg_map, name()) {
                        self.erasures.push((instance, e));
                    }
                    continue;
                }
                let value = self.value(rule, segment, piece);
                match value {
                    Ok(Some((v, target))) => {
                        let steps = retarget(&rule.target, target);
                        match place(resource, &steps, v, rule.with.as_ref()) {
                            Ok(()) => {
                                self.consumed.insert(key);
                                if self.tracing {
                                    let target = steps
                                        .iter()
                                        .map(|s| s.key.as_str())
                                        .collect::<Vec<_>>()
                                        .join(".");
                                    self.traced(instance, name(), segment, piece, target);
                                }
                            }
                            Err(reason) => self.reject(key, name(), segment, piece, reason),
                        }
                    }
                    Ok(None) => {}
                    Err(reason) => self.reject(key, name(), segment, piece, reason),
                }
            }
        }
    }

    /// Records where a value went (`target`, under the instance's `Type/id` once it has one).
    fn traced(
        &mut self,
        instance: usize,
        field: String,
        segment: Segment<'_>,
        piece: Piece<'_>,
        target: String,
    ) {
        let trace = Trace {
            field,
            sequence: segment.index() + 1,
            value: shown(piece.raw()),
            target,
        };
        self.trace.push((instance, trace));
    }

    fn reject(
        &mut self,
        key: (usize, usize, usize, usize),
        field: String,
        segment: Segment<'_>,
        piece: Piece<'_>,
        reason: String,
    ) {
        // Listed once, with its reason; not again as "no mapping".
        self.consumed.insert(key);
        self.unmapped.push(Unmapped {
            field,
            sequence: segment.index() + 1,
            value: shown(piece.raw()),
            reason,
        });
    }

    fn value(
        &mut self,
        rule: &load::FieldRule,
        segment: Segment<'_>,
        piece: Piece<'_>,
    ) -> Result<Option<(Value, Option<&'static str>)>, String> {
        if rule.converter == Converter::Varies {
            let ty = rule
                .type_from
                .as_ref()
                .map(|p| {
                    segment
                        .field(p.field)
                        .at(&p.below_field())
                        .text()
                        .map(|t| t.trim().to_string())
                        .unwrap_or_default()
                })
                .unwrap_or_else(|| "ST".into());
            if let Some(t) = &rule.type_from {
                self.consumed.insert((segment.index(), t.field, 0, 0));
            }
            let units = rule.units.as_ref().map(|u| segment.field(u.field));
            // Units belong to numeric values only; otherwise OBX-6 stays unconsumed and is reported.
            if let Some(u) = &rule.units
                && matches!(ty.as_str(), "NM" | "SN")
            {
                self.consumed.insert((segment.index(), u.field, 0, 0));
            }
            return Ok(self
                .ctx
                .varies(&ty, piece, units)?
                .map(|(suffix, v)| (v, Some(suffix))));
        }
        let mut value = self
            .ctx
            .convert(rule.converter, piece, rule.vocabulary.as_deref())?;
        // An NM amount whose units are another field (RXE-3 with RXE-5).
        if rule.converter == Converter::Quantity
            && let (Some(u), Some(Value::Object(q))) = (&rule.units, value.as_mut())
        {
            let units = segment.field(u.field).part(1).at(&u.below_field());
            if units.is_valued() {
                self.ctx.units(q, units)?;
                self.consumed.insert((segment.index(), u.field, 0, 0));
            }
        }
        Ok(value.map(|v| (v, None)))
    }

    fn finish(
        mut self,
        map: &MessageMap,
        instances: Vec<Instance>,
        structure: &str,
        event: &str,
        _control: &str,
    ) -> Conversion {
        let mut resources = Vec::new();
        let mut statements = Vec::new();
        let mut seen = HashSet::new();
        let mut trace = Vec::new();
        let mut ids_of: HashMap<usize, String> = HashMap::new();
        for (i, inst) in instances.into_iter().enumerate() {
            let ty = inst
                .resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let key = format!("{ty}/{}", inst.id);
            ids_of.insert(i, key.clone());
            if !seen.insert(key.clone()) {
                // The same business identity twice in one message: the first wins, the rest are
                // reported (a transaction cannot write one resource twice).
                self.unmapped.push(Unmapped {
                    field: self
                        .msg
                        .segment(inst.segment)
                        .map(|s| s.id().to_string())
                        .unwrap_or_default(),
                    sequence: inst.segment + 1,
                    value: String::new(),
                    reason: format!("same identity as an earlier segment ({key})"),
                });
                continue;
            }
            let mut r = inst.resource;
            r.insert("id".into(), Value::String(inst.id));
            resources.push(Value::Object(r));
            let erasures = self
                .erasures
                .iter()
                .filter(|(at, _)| *at == i)
                .map(|(_, e)| e.clone())
                .collect();
            statements.push(Statement {
                standing: map.rules[inst.rule].standing,
                assumed: inst.assumed,
                erasures,
            });
        }
        for (key, r) in std::mem::take(&mut self.ctx.created) {
            if seen.insert(key) {
                resources.push(r);
                statements.push(Statement::new(Standing::Named));
            }
        }
        for (i, mut t) in std::mem::take(&mut self.trace) {
            if let Some(k) = ids_of.get(&i) {
                t.target = format!("{k}.{}", t.target);
            }
            trace.push(t);
        }
        self.report_unconsumed();
        Conversion {
            structure: structure.to_string(),
            event: event.to_string(),
            resources,
            statements,
            unmapped: self.unmapped,
            trace,
        }
    }

    /// Lists every valued field (or component) that no rule consumed.
    fn report_unconsumed(&mut self) {
        for seg in self.msg.segments() {
            let si = seg.index();
            for f in 1..=seg.field_count() {
                let field = seg.field(f);
                if (seg.id() == "MSH" && f <= 2) || !field.is_valued() {
                    continue;
                }
                if self.consumed.contains(&(si, f, 0, 0)) {
                    continue;
                }
                for (r, rep) in field.parts().enumerate() {
                    let rep_no = r + 1;
                    if !rep.is_valued() || self.consumed.contains(&(si, f, rep_no, 0)) {
                        continue;
                    }
                    if self.consumed.partly(si, f, rep_no) {
                        for (c, comp) in rep.parts().enumerate() {
                            if comp.is_valued() && !self.consumed.contains(&(si, f, rep_no, c + 1))
                            {
                                self.unmapped.push(Unmapped {
                                    field: v2_name(seg.id(), f, rep_no, Some(c + 1), None),
                                    sequence: si + 1,
                                    value: shown(comp.raw()),
                                    reason: "no mapping".into(),
                                });
                            }
                        }
                    } else {
                        self.unmapped.push(Unmapped {
                            field: v2_name(seg.id(), f, rep_no, None, None),
                            sequence: si + 1,
                            value: shown(rep.raw()),
                            reason: "no mapping".into(),
                        });
                    }
                }
            }
        }
    }
}

/// The deletion an explicit null (`""`) in `rule`'s field says: the rule's element, down to its
/// first repeating step (an entry of a list is deleted whole, not a component of it), and of
/// that list the entries the rule would make (its `with`) and no other rule of the segment
/// would. `None` for a `varies` value, whose element is named by the type of a value it lacks.
fn erasure(rule: &load::FieldRule, seg_map: &SegmentMap, source: String) -> Option<Erasure> {
    if rule.converter == Converter::Varies {
        return None;
    }
    let cut = |steps: &[Step]| -> (Vec<(String, Option<usize>)>, bool) {
        let mut out = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            out.push((s.key.clone(), s.index));
            if s.repeating && s.index.is_none() {
                // `with` fills the element of the first repeating step.
                return (out, !steps[..i].iter().any(|s| s.repeating));
            }
        }
        (out, false)
    };
    let (steps, listed) = cut(&rule.target.steps);
    let pattern = |w: Option<&Value>| match w {
        Some(Value::Object(m)) if listed => m.clone(),
        _ => Map::new(),
    };
    let others = seg_map
        .fields
        .iter()
        .filter(|o| !std::ptr::eq(*o, rule) && cut(&o.target.steps).0 == steps)
        .map(|o| pattern(o.with.as_ref()))
        .collect();
    Some(Erasure::new(
        source,
        steps,
        pattern(rule.with.as_ref()),
        others,
    ))
}

/// Instances of `rule` sharing the longest group-instance prefix with `chain`.
fn nearest(instances: &[Instance], rule: usize, chain: &[u32]) -> Vec<usize> {
    let mut best = 0;
    let mut out = Vec::new();
    for (i, inst) in instances.iter().enumerate().filter(|(_, x)| x.rule == rule) {
        let n = common_prefix(&inst.chain, chain);
        if n > best || out.is_empty() {
            if n > best {
                out.clear();
            }
            best = best.max(n);
        }
        if n == best {
            out.push(i);
        }
    }
    out
}

fn holds(c: &Condition, seg: Segment<'_>) -> bool {
    let at = |p: &V2Path| seg.field(p.field).at(&p.below_field());
    let text = |p: &V2Path| {
        at(p)
            .text()
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    };
    match c {
        Condition::Valued(p) => at(p).is_valued(),
        Condition::NotValued(p) => !at(p).is_valued(),
        Condition::Equals(p, v) => &text(p) == v,
        Condition::NotEquals(p, v) => &text(p) != v,
    }
}

/// For `varies`, the last key becomes `value` + the chosen type (`valueQuantity`); every other
/// placement borrows the rule's steps.
fn retarget<'p>(target: &'p FhirPath, suffix: Option<&str>) -> std::borrow::Cow<'p, [Step]> {
    let Some(suffix) = suffix else {
        return std::borrow::Cow::Borrowed(&target.steps);
    };
    let mut steps = target.steps.clone();
    if let Some(last) = steps.last_mut() {
        let leaf = &target.leaf_type;
        let base = last
            .key
            .to_lowercase()
            .strip_suffix(&leaf.to_lowercase())
            .map(|b| last.key[..b.len()].to_string())
            .unwrap_or_else(|| "value".into());
        last.key = format!("{base}{suffix}");
    }
    std::borrow::Cow::Owned(steps)
}

/// Another type of the same choice element already present (`doseQuantity` for `doseRange`).
fn other_choice<'o>(obj: &'o Map<String, Value>, step: &Step) -> Option<&'o str> {
    let base = step.choice.as_deref()?;
    obj.keys().map(String::as_str).find(|k| {
        *k != step.key
            && k.strip_prefix(base)
                .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_uppercase()))
    })
}

/// A path with a repeating step that is not pinned by an index takes every value given to it.
fn takes_every_repetition(steps: &[Step]) -> bool {
    steps.iter().any(|s| s.repeating && s.index.is_none())
}

/// Puts a value at a path: the outermost repeating step gets a new element (carrying `with`),
/// except an indexed one (`dosageInstruction[0]`), which is shared;
/// a single-valued leaf that is already set is an error (reported, not overwritten).
pub(crate) fn place(
    obj: &mut Map<String, Value>,
    steps: &[Step],
    value: Value,
    with: Option<&Value>,
) -> Result<(), String> {
    let first_rep = steps.iter().position(|s| s.repeating);
    if first_rep.is_none()
        && let Some(Value::Object(w)) = with
    {
        for (k, v) in w {
            obj.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let mut cur = obj;
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        if step.repeating {
            let Some(Value::Array(arr)) = slot(cur, &step.key, || Value::Array(Vec::new())) else {
                return Err(format!("{} is not a list", step.key));
            };
            if let Some(n) = step.index {
                // A shared element: the n-th, created when the list has exactly n.
                if arr.len() == n {
                    arr.push(if last {
                        value.clone()
                    } else {
                        Value::Object(Map::new())
                    });
                    if last {
                        return Ok(());
                    }
                } else if arr.len() < n {
                    return Err(format!("{}[{n}] has no element before it", step.key));
                } else if last {
                    return Err(format!("{}[{n}] already has a value", step.key));
                }
                let Some(Value::Object(next)) = arr.get_mut(n) else {
                    return Err(format!("{}[{n}] holds a non-object", step.key));
                };
                if Some(i) == first_rep
                    && let Some(Value::Object(w)) = with
                {
                    for (k, v) in w {
                        next.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                cur = next;
                continue;
            }
            let mut item = if last {
                value.clone()
            } else {
                Value::Object(Map::new())
            };
            if Some(i) == first_rep
                && let (Some(Value::Object(w)), Value::Object(m)) = (with, &mut item)
            {
                for (k, v) in w {
                    m.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            arr.push(item);
            if last {
                return Ok(());
            }
            let Some(Value::Object(next)) = arr.last_mut() else {
                return Err(format!("{} holds a non-object", step.key));
            };
            cur = next;
        } else {
            if last {
                if cur.contains_key(&step.key) {
                    return Err(format!("{} already has a value", step.key));
                }
                if let Some(other) = other_choice(cur, step) {
                    return Err(format!("{other} already has a value"));
                }
                cur.insert(step.key.clone(), value);
                return Ok(());
            }
            if let Some(other) = other_choice(cur, step) {
                return Err(format!("{other} already has a value"));
            }
            let Some(Value::Object(next)) = slot(cur, &step.key, || Value::Object(Map::new()))
            else {
                return Err(format!("{} is not an object", step.key));
            };
            cur = next;
        }
    }
    Ok(())
}

/// The value under `key`, created by `new` when absent; the key is copied only then (`entry`
/// would copy it for every placement).
fn slot<'o>(
    obj: &'o mut Map<String, Value>,
    key: &str,
    new: impl FnOnce() -> Value,
) -> Option<&'o mut Value> {
    if !obj.contains_key(key) {
        obj.insert(key.to_string(), new());
    }
    obj.get_mut(key)
}

/// The object holding the last step of a path, creating the objects on the way; `None` when a
/// step on the way is not an object.
fn parent_object<'a>(
    obj: &'a mut Map<String, Value>,
    inner: &[Step],
) -> Option<&'a mut Map<String, Value>> {
    let mut cur = obj;
    for step in inner {
        let Some(Value::Object(next)) = slot(cur, &step.key, || Value::Object(Map::new())) else {
            return None;
        };
        cur = next;
    }
    Some(cur)
}

/// Sets a value, replacing what is there.
pub(crate) fn set_value(obj: &mut Map<String, Value>, steps: &[Step], value: &Value) {
    if let Some((last, inner)) = steps.split_last()
        && let Some(cur) = parent_object(obj, inner)
    {
        cur.insert(last.key.clone(), value.clone());
    }
}

/// Sets a value only where none is.
pub(crate) fn set_default(obj: &mut Map<String, Value>, steps: &[Step], value: &Value) {
    let Some((last, inner)) = steps.split_last() else {
        return;
    };
    let Some(cur) = parent_object(obj, inner) else {
        return;
    };
    cur.entry(last.key.clone()).or_insert_with(|| {
        if last.repeating && !value.is_array() {
            Value::Array(vec![value.clone()])
        } else {
            value.clone()
        }
    });
}

#[cfg(test)]
mod tests;
