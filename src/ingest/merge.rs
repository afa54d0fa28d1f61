//! Merging what an ingest says about a resource into the version already stored, for HL7 v3
//! interactions and CDA documents (one rule set for both; [`crate::ingest::cda::commit_stated`]
//! runs it, through [`crate::ingest::stored`]).
//!
//! HL7 v2 messages go through the same rules: each resource rule of `mappings/hl7v2/messages/`
//! states its standing (the PID of an ADT^A08 is the subject, the PID of an ORU^R01 is named).
//!
//! A message names persons, practitioners, organisations and visits that are usually already
//! registered, often with a fraction of what the register stated (one identifier and a name). A
//! PUT of that fraction, or a top-level merge where each key the message carries replaces the
//! stored key whole, loses the identifiers, telecoms and addresses the register stored. Here the
//! stored record is the base, what the message says is added, and nothing the store held is
//! dropped silently. How a message stands to a resource ([`Standing`]) decides the rest.
//!
//! A resource the message **names** ([`Standing::Named`]: the patient of an order or a visit, a
//! document's patient, author and custodian):
//! - **repeating elements are unioned**: `identifier` and `telecom` entries are the same entry
//!   when their (`system`, `value`) agree, any other entry (`name`, `address`, `extension`...)
//!   when it is equal as JSON; two entries that are the same but differ in detail (an identifier
//!   with a `use` only one side states) are merged as objects by these rules;
//! - **single values** (primitives, and complex elements such as `maritalStatus`, taken whole):
//!   a value the store lacks is added, an equal one changes nothing, a different one leaves the
//!   stored value and is a [`Conflict`], written in the ingest's Provenance and the v3
//!   acknowledgement;
//! - **values the mapping assumed** (a rule's `defaults`: the `unknown` gender of a CDA header
//!   without a sex code, an Encounter status no message states) fill only what the store lacks;
//!   they are no statement to conflict with.
//!
//! The **subject** of a register, update or add interaction ([`Standing::Subject`]: the person of
//! 个人信息注册/更新, the visit of 门诊挂号, the order of 医嘱新增) is the sender's statement of the
//! record: every element it carries replaces the stored one (a new name, telephone or sex is the
//! update; the replaced values stay in the version history), every element it does not carry is
//! kept, and its defaults are statements (the merged-away Patient of 个人信息合并 is `active =
//! false`). Its **identifiers are unioned** all the same: WS/T 846 (as summarised in
//! `shared/reference/cn-interop.md`) does not say that an update is a full replacement of the
//! record, and a person's 身份证号, 健康卡号 or 医保卡号 do not stop being theirs because an update
//! did not repeat them.
//!
//! For both, **identifiers a profile allows once per system** (CNPatient: one 身份证号, one
//! 健康卡号, one 医保卡号; [`one_per_system`] reads them from the claimed profiles' identifier
//! slices with `max = 1`) are single values keyed by the system: a named resource keeps the
//! stored number and records the message's; the subject's number replaces the stored one, and
//! the replaced number is recorded (an identity is not changed silently, even by its register).
//!
//! `meta`: the stored `profile`, `security` and `tag` entries stay and the message's are added
//! (a merged record is validated against every profile it was registered under); the store sets
//! `versionId` and `lastUpdated`. A resource the message owns ([`Standing::Owned`], keyed by the
//! message or the document: an order's dose, a document's entries) is written as stated.
//!
//! An **explicit deletion** ([`Erasure`]: an HL7 v2 field whose value is `""`) removes the
//! element from the stored record when the message is its subject; a message that only names
//! the record deletes nothing (the deletion is recorded as not applied, like a kept value), and
//! identifiers are never deleted.
//!
//! The functions here are pure; reading the stored versions is [`crate::ingest::stored`]'s,
//! retrying on a concurrent write the pipeline's.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// How a message stands to one resource it writes (`standing = "named"` in an HL7 v2 message
/// map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// The subject of a register / update / add interaction: its single values win.
    Subject,
    /// A resource the message names (a stub): the stored single values win.
    Named,
    /// A resource that belongs to the message or document (keyed by it): written as stated.
    #[default]
    Owned,
}

/// What the ingest knows about one resource besides its content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statement {
    pub standing: Standing,
    /// Top-level elements filled only by a rule's defaults (assumed, not stated).
    pub assumed: BTreeSet<String>,
    /// Elements the message explicitly deleted (HL7 v2 `""`).
    pub erasures: Vec<Erasure>,
}

impl Statement {
    /// A statement of the given standing with nothing assumed.
    pub fn new(standing: Standing) -> Statement {
        Statement {
            standing,
            ..Statement::default()
        }
    }
}

/// An element a message explicitly deleted: an HL7 v2 field whose value is `""` ("delete this
/// value at the receiver") that a rule maps to the element. The subject's deletion removes it
/// from the stored record; a message that only names the record deletes nothing of it (the
/// deletion is recorded as not applied, [`Conflict::not_erased`]); a resource the message owns
/// is written as stated, so the element is simply absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// Where the message said it (`PID-13`).
    pub source: String,
    /// The keys from the resource down to the element; an index pins one element of a list (as
    /// `dosageInstruction[0]` does in a rule). The last step is the element deleted: a list
    /// loses the entries of [`Self::matching`], anything else is removed.
    pub steps: Vec<(String, Option<usize>)>,
    /// Of a list, the entries deleted are those containing all of this (the rule's `with`: the
    /// `use = "work"` of PID-14's telecoms)...
    pub matching: Map<String, Value>,
    /// ...and none of these (the `with` of the other rules filling the same list: PID-13's
    /// deletion leaves PID-14's work telephones).
    pub excluding: Vec<Map<String, Value>>,
}

impl Erasure {
    /// The deletion of the element at `steps` said in `source`: of a list, the entries holding
    /// `matching` and none of `others` (an other pattern that `matching` holds is no exclusion:
    /// it would exclude every entry).
    pub fn new(
        source: String,
        steps: Vec<(String, Option<usize>)>,
        matching: Map<String, Value>,
        others: Vec<Map<String, Value>>,
    ) -> Erasure {
        let mine = Value::Object(matching.clone());
        let excluding = others
            .into_iter()
            .filter(|x| !x.is_empty() && !contains(&mine, x))
            .collect();
        Erasure {
            source,
            steps,
            matching,
            excluding,
        }
    }

    /// Whether a stored entry of the list is one this deletion removes.
    fn takes(&self, entry: &Value) -> bool {
        contains(entry, &self.matching) && !self.excluding.iter().any(|x| contains(entry, x))
    }

    /// Applies the deletion to `out`; returns what it removed (nothing: `None`).
    fn apply(&self, out: &mut Map<String, Value>) -> Option<Value> {
        remove_at(out, &self.steps, self)
    }

    /// What the deletion would remove from `stored`, without removing it.
    fn would_remove(&self, stored: &Map<String, Value>) -> Option<Value> {
        self.apply(&mut stored.clone())
    }

    /// FHIRPath of the element (`Patient.telecom`).
    fn path(&self, ty: &str) -> String {
        let mut p = ty.to_string();
        for (k, i) in &self.steps {
            p.push('.');
            p.push_str(k);
            if let Some(i) = i {
                p.push_str(&format!("[{i}]"));
            }
        }
        p
    }
}

/// Whether every key of `pattern` is in `entry` with a value containing the pattern's.
fn contains(entry: &Value, pattern: &Map<String, Value>) -> bool {
    pattern.iter().all(|(k, p)| match (entry.get(k), p) {
        (Some(v), Value::Object(p)) => contains(v, p),
        (Some(v), p) => v == p,
        (None, _) => false,
    })
}

/// Removes what `e` deletes below `obj` along `steps`, and the objects and lists it leaves
/// empty (FHIR has no empty elements); returns what was removed.
fn remove_at(
    obj: &mut Map<String, Value>,
    steps: &[(String, Option<usize>)],
    e: &Erasure,
) -> Option<Value> {
    let ((key, index), below) = steps.split_first()?;
    let removed = match (obj.get_mut(key.as_str())?, index, below.is_empty()) {
        (Value::Array(list), Some(i), true) => (*i < list.len()).then(|| list.remove(*i)),
        (Value::Array(list), Some(i), false) => match list.get_mut(*i)? {
            Value::Object(next) => remove_at(next, below, e),
            _ => None,
        },
        (Value::Array(list), None, true) => {
            let (gone, stay): (Vec<Value>, Vec<Value>) = list.drain(..).partition(|v| e.takes(v));
            *list = stay;
            (!gone.is_empty()).then_some(Value::Array(gone))
        }
        (Value::Object(next), None, false) => remove_at(next, below, e),
        (_, None, true) => {
            // A primitive's extensions (`_birthDate`) go with its value.
            obj.remove(&format!("_{key}"));
            obj.remove(key.as_str())
        }
        _ => None,
    };
    let empty = match obj.get(key.as_str()) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    };
    if empty {
        obj.remove(key.as_str());
    }
    removed
}

/// A stored value and a stated one that could not both be kept: a named resource's message
/// stated another value than the stored one (kept), or the subject replaced an identifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// `Type/id`.
    pub target: String,
    /// FHIRPath of the element (`Patient.gender`, `Patient.identifier[1].use`).
    pub path: String,
    /// The value in the record now.
    pub kept: Value,
    /// The value not in the record now: the message's, or (`replaced`) the stored one.
    pub dropped: Value,
    /// True when the subject's value replaced the stored one (`dropped` is the stored value).
    pub replaced: bool,
    /// An explicit deletion ([`Erasure`]) not applied, and why: `kept` is what it would have
    /// removed (`dropped` is null).
    pub not_erased: Option<String>,
}

impl Conflict {
    /// The stored value `kept` over the message's `dropped` (a record the message only names).
    pub fn kept(target: String, path: String, kept: Value, dropped: Value) -> Conflict {
        Conflict {
            target,
            path,
            kept,
            dropped,
            replaced: false,
            not_erased: None,
        }
    }

    /// The subject's value `kept` in place of the stored `dropped`.
    pub fn replaced(target: String, path: String, kept: Value, dropped: Value) -> Conflict {
        Conflict {
            replaced: true,
            ..Conflict::kept(target, path, kept, dropped)
        }
    }

    /// A named record another domain owns, left as stored: `stated` is everything the message
    /// said of it, kept here since it is written nowhere else.
    pub fn foreign(target: String, owner: &str, stated: &Value) -> Conflict {
        let ty = target.split('/').next().unwrap_or_default().to_string();
        Conflict::kept(
            target,
            ty,
            json!(format!("the record of domain '{owner}'")),
            stated.clone(),
        )
    }

    fn words(&self) -> String {
        if let Some(why) = &self.not_erased {
            format!("the stored {} was kept: {why}", self.kept)
        } else if self.replaced {
            format!(
                "the message's {} replaced the stored {}",
                self.kept, self.dropped
            )
        } else {
            format!(
                "the stored {} was kept, the message stated {}",
                self.kept, self.dropped
            )
        }
    }

    /// One line, for acknowledgements.
    pub fn describe(&self) -> String {
        format!("{} {}: {}", self.target, self.path, self.words())
    }

    /// The OperationOutcome issue recording it in the ingest's Provenance.
    pub fn issue(&self) -> Value {
        json!({
            "severity": "warning",
            "code": "informational",
            "details": {"text": format!("{}: {}", self.target, self.words())},
            "diagnostics": self.words(),
            "expression": [self.path],
        })
    }
}

/// The identifier systems a StructureDefinition of `resource_type` allows at most once: its
/// slices `{type}.identifier:{name}` with `max = "1"` whose `system` is fixed or patterned.
pub fn one_per_system(sd: &Value, resource_type: &str) -> BTreeSet<String> {
    let prefix = format!("{resource_type}.identifier:");
    let elements: Vec<&Value> = ["snapshot", "differential"]
        .iter()
        .filter_map(|k| sd.get(k)?.get("element")?.as_array())
        .flatten()
        .collect();
    let mut out = BTreeSet::new();
    for e in &elements {
        let Some(id) = e["id"].as_str() else {
            continue;
        };
        let Some(slice) = id.strip_prefix(&prefix) else {
            continue;
        };
        if slice.contains('.') || slice.contains(':') || e["max"] != "1" {
            continue;
        }
        let system_id = format!("{id}.system");
        let system = elements
            .iter()
            .filter(|x| x["id"] == system_id.as_str())
            .find_map(|x| x["patternUri"].as_str().or(x["fixedUri"].as_str()));
        if let Some(s) = system {
            out.insert(s.to_string());
        }
    }
    out
}

/// `stated` merged into `stored` (both resources of one type and id): the merged resource and
/// the conflicts it kept the stored value for.
/// `single_systems`: identifier systems allowed once ([`one_per_system`] of the profiles the
/// record claims).
pub fn merge(
    stored: &Value,
    stated: &Value,
    statement: &Statement,
    single_systems: &BTreeSet<String>,
) -> (Value, Vec<Conflict>) {
    let (Value::Object(old), Value::Object(new)) = (stored, stated) else {
        return (stated.clone(), Vec::new());
    };
    let ty = new
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut m = Merger {
        standing: statement.standing,
        target: format!(
            "{ty}/{}",
            new.get("id").and_then(Value::as_str).unwrap_or_default()
        ),
        conflicts: Vec::new(),
        single_systems,
    };
    let mut out = old.clone();
    out.remove("meta");
    m.erase(&mut out, &statement.erasures, ty);
    let assumed = |k: &str| {
        statement.standing != Standing::Subject
            && statement.assumed.contains(k)
            && old.contains_key(k)
    };
    let body: Map<String, Value> = new
        .iter()
        .filter(|(k, _)| k.as_str() != "meta" && !assumed(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match statement.standing {
        Standing::Named => m.object(&mut out, &body, ty),
        Standing::Subject | Standing::Owned => {
            for (k, v) in &body {
                let merged = match (k.as_str(), out.get(k), v) {
                    ("identifier", Some(Value::Array(old)), Value::Array(new)) => {
                        Value::Array(m.array(k, old, new, &format!("{ty}.identifier")))
                    }
                    _ => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
        }
    }
    // `id` and `resourceType` are the message's (the caller resolved the id).
    for k in ["resourceType", "id"] {
        if let Some(v) = new.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(meta) = merged_meta(old.get("meta"), new.get("meta")) {
        out.insert("meta".into(), meta);
    }
    let out = meta_first(out);
    (Value::Object(out), m.conflicts)
}

/// The stored `profile`, `security` and `tag` entries with the message's added.
fn merged_meta(old: Option<&Value>, new: Option<&Value>) -> Option<Value> {
    let mut meta = Map::new();
    for k in ["profile", "security", "tag"] {
        let mut all: Vec<Value> = Vec::new();
        for side in [old, new].into_iter().flatten() {
            for v in side.get(k).and_then(Value::as_array).into_iter().flatten() {
                if !all.contains(v) {
                    all.push(v.clone());
                }
            }
        }
        if !all.is_empty() {
            meta.insert(k.into(), Value::Array(all));
        }
    }
    // Anything else the message's meta states (`source`) is its own.
    if let Some(Value::Object(n)) = new {
        for (k, v) in n {
            if !matches!(
                k.as_str(),
                "profile" | "security" | "tag" | "versionId" | "lastUpdated"
            ) {
                meta.insert(k.clone(), v.clone());
            }
        }
    }
    (!meta.is_empty()).then_some(Value::Object(meta))
}

/// `resourceType`, `id` and `meta` first, as every resource is written; the rest as merged.
fn meta_first(merged: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for k in ["resourceType", "id", "meta"] {
        if let Some(v) = merged.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    for (k, v) in merged {
        if !out.contains_key(&k) {
            out.insert(k, v);
        }
    }
    out
}

struct Merger<'a> {
    standing: Standing,
    target: String,
    conflicts: Vec<Conflict>,
    single_systems: &'a BTreeSet<String>,
}

impl Merger<'_> {
    /// Merges the keys of `new` into `out` (the stored object), at FHIRPath `path`.
    fn object(&mut self, out: &mut Map<String, Value>, new: &Map<String, Value>, path: &str) {
        for (k, v) in new {
            let here = format!("{path}.{}", k.trim_start_matches('_'));
            match (out.get(k), v) {
                (None, _) => {
                    out.insert(k.clone(), v.clone());
                }
                (Some(old), _) if old == v => {}
                (Some(Value::Array(old)), Value::Array(new)) => {
                    let merged = self.array(k, old, new, &here);
                    out.insert(k.clone(), Value::Array(merged));
                }
                (Some(_), _) => self.single(out, k, v, &here),
            }
        }
    }

    /// Two different single values: the subject's wins, a named resource keeps the stored one.
    fn single(&mut self, out: &mut Map<String, Value>, k: &str, v: &Value, path: &str) {
        match self.standing {
            Standing::Subject | Standing::Owned => {
                out.insert(k.to_string(), v.clone());
            }
            Standing::Named => self.conflicts.push(Conflict::kept(
                self.target.clone(),
                path.to_string(),
                out.get(k).cloned().unwrap_or(Value::Null),
                v.clone(),
            )),
        }
    }

    /// The union of a stored and a stated list of element `key`.
    fn array(&mut self, key: &str, old: &[Value], new: &[Value], path: &str) -> Vec<Value> {
        let mut base: Vec<Value> = old.to_vec();
        let mut added: Vec<Value> = Vec::new();
        // Which stored entries the message restated (in the message's order), for the subject.
        let mut restated: Vec<usize> = Vec::new();
        for v in new {
            if key == "identifier"
                && let Some(i) = self.other_number(&base, v)
            {
                let here = format!("{path}[{i}]");
                match self.standing {
                    Standing::Named => self.conflicts.push(Conflict::kept(
                        self.target.clone(),
                        here,
                        base[i].clone(),
                        v.clone(),
                    )),
                    Standing::Subject | Standing::Owned => {
                        self.conflicts.push(Conflict::replaced(
                            self.target.clone(),
                            here,
                            v.clone(),
                            base[i].clone(),
                        ));
                        base[i] = v.clone();
                        if !restated.contains(&i) {
                            restated.push(i);
                        }
                    }
                }
                continue;
            }
            let found = base.iter().position(|o| same_entry(key, o, v));
            match found {
                Some(i) => {
                    if base[i] != *v {
                        let merged = match (&base[i], v) {
                            (Value::Object(o), Value::Object(n)) => {
                                let mut o = o.clone();
                                self.object(&mut o, n, &format!("{path}[{i}]"));
                                Value::Object(o)
                            }
                            _ => match self.standing {
                                Standing::Named => {
                                    self.conflicts.push(Conflict::kept(
                                        self.target.clone(),
                                        format!("{path}[{i}]"),
                                        base[i].clone(),
                                        v.clone(),
                                    ));
                                    base[i].clone()
                                }
                                _ => v.clone(),
                            },
                        };
                        base[i] = merged;
                    }
                    if !restated.contains(&i) {
                        restated.push(i);
                    }
                }
                None if !added.contains(v) => added.push(v.clone()),
                None => {}
            }
        }
        match self.standing {
            // The sender's statement first: what it restated, what it added, then the rest.
            Standing::Subject | Standing::Owned => {
                let mut out: Vec<Value> = restated.iter().map(|&i| base[i].clone()).collect();
                out.extend(added);
                out.extend(
                    base.iter()
                        .enumerate()
                        .filter(|(i, _)| !restated.contains(i))
                        .map(|(_, v)| v.clone()),
                );
                out
            }
            Standing::Named => {
                base.extend(added);
                base
            }
        }
    }
}

impl Merger<'_> {
    /// The message's explicit deletions: applied for the subject (what it carries then replaces
    /// or adds as for any stored record), not applied and recorded where the message only names
    /// the record. Identifiers are never deleted: a number does not stop being the person's
    /// because a message cleared a field (they are unioned for the subject too).
    fn erase(&mut self, out: &mut Map<String, Value>, erasures: &[Erasure], ty: &str) {
        for e in erasures {
            let identifier = e.steps.first().is_some_and(|(k, _)| k == "identifier");
            let why = match self.standing {
                Standing::Named => "a message that only names a record deletes nothing of it",
                _ if identifier => "an identifier is not deleted by a message",
                _ => {
                    e.apply(out);
                    continue;
                }
            };
            if let Some(kept) = e.would_remove(out) {
                self.conflicts.push(Conflict {
                    not_erased: Some(format!(
                        "the message's explicit null (\"\" in {}) was not applied: {why}",
                        e.source
                    )),
                    ..Conflict::kept(self.target.clone(), e.path(ty), kept, Value::Null)
                });
            }
        }
    }

    /// The stored identifier of a once-per-system system that `v` states another number of.
    fn other_number(&self, base: &[Value], v: &Value) -> Option<usize> {
        let system = v.get("system")?.as_str()?;
        if !self.single_systems.contains(system) {
            return None;
        }
        base.iter().position(|o| {
            o.get("system").and_then(Value::as_str) == Some(system)
                && o.get("value") != v.get("value")
        })
    }
}

/// Whether a stated entry of list `key` is the stored entry `old`.
fn same_entry(key: &str, old: &Value, new: &Value) -> bool {
    let pair = |v: &Value| -> Option<(String, String)> {
        Some((
            v.get("system")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            v.get("value")?.as_str()?.to_string(),
        ))
    };
    match key {
        "identifier" | "telecom" => match (pair(old), pair(new)) {
            (Some(a), Some(b)) => a == b,
            _ => old == new,
        },
        _ => old == new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named() -> Statement {
        Statement::new(Standing::Named)
    }

    fn none() -> BTreeSet<String> {
        BTreeSet::new()
    }

    fn registered() -> Value {
        json!({
            "resourceType": "Patient", "id": "p1",
            "meta": {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00Z",
                     "profile": ["http://huitong.dev/fhir/cn/StructureDefinition/CNPatient"]},
            "identifier": [
                {"system": "urn:oid:2.16.156.10011.1.3", "value": "110101199003070011"},
                {"system": "urn:oid:2.16.156.10011.1.19", "value": "HC001"}
            ],
            "name": [{"text": "张三"}],
            "telecom": [{"system": "phone", "value": "13800000000"}],
            "gender": "male",
            "birthDate": "1990-03-07",
            "address": [{"text": "北京市东城区"}]
        })
    }

    #[test]
    fn a_stub_adds_and_drops_nothing() {
        let stub = json!({
            "resourceType": "Patient", "id": "p1",
            "identifier": [
                {"system": "urn:oid:2.16.156.10011.1.3", "value": "110101199003070011"},
                {"system": "urn:oid:2.16.156.10011.2.5.1.4", "value": "PID9"}
            ],
            "name": [{"text": "张三"}],
            "telecom": [{"system": "phone", "value": "13900000000"}]
        });
        let (m, conflicts) = merge(&registered(), &stub, &named(), &none());
        assert!(conflicts.is_empty(), "{conflicts:?}");
        let values: Vec<&str> = m["identifier"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["value"].as_str().unwrap())
            .collect();
        assert_eq!(values, ["110101199003070011", "HC001", "PID9"]);
        assert_eq!(m["telecom"].as_array().unwrap().len(), 2);
        assert_eq!(m["telecom"][0]["value"], "13800000000");
        assert_eq!(m["name"], json!([{"text": "张三"}]));
        assert_eq!(m["address"], registered()["address"]);
        assert_eq!(m["gender"], "male");
        assert_eq!(m["birthDate"], "1990-03-07");
        assert_eq!(
            m["meta"],
            json!({"profile": ["http://huitong.dev/fhir/cn/StructureDefinition/CNPatient"]})
        );
    }

    #[test]
    fn a_stub_keeps_stored_single_values_and_records_what_it_said() {
        let stub = json!({"resourceType": "Patient", "id": "p1", "gender": "female",
                          "maritalStatus": {"coding": [{"code": "20"}]}});
        let (m, conflicts) = merge(&registered(), &stub, &named(), &none());
        assert_eq!(m["gender"], "male");
        // A value the store lacks is added.
        assert_eq!(m["maritalStatus"], stub["maritalStatus"]);
        assert_eq!(
            conflicts,
            vec![Conflict::kept(
                "Patient/p1".into(),
                "Patient.gender".into(),
                json!("male"),
                json!("female")
            )]
        );
        let issue = conflicts[0].issue();
        assert_eq!(issue["expression"], json!(["Patient.gender"]));
        assert!(conflicts[0].describe().contains("\"female\""));
    }

    #[test]
    fn assumed_values_fill_gaps_of_a_stub_without_conflict() {
        let mut s = named();
        s.assumed.insert("gender".into());
        s.assumed.insert("active".into());
        let stub =
            json!({"resourceType": "Patient", "id": "p1", "gender": "unknown", "active": true});
        let (m, conflicts) = merge(&registered(), &stub, &s, &none());
        assert!(conflicts.is_empty());
        assert_eq!(m["gender"], "male");
        assert_eq!(m["active"], true);
    }

    #[test]
    fn the_subject_replaces_what_it_states_and_keeps_identifiers_it_did_not_repeat() {
        let mut s = Statement::new(Standing::Subject);
        // For the subject a default is the interaction's statement (a merged-away person).
        s.assumed.insert("active".into());
        let update = json!({
            "resourceType": "Patient", "id": "p1",
            "meta": {"profile": ["http://example.org/Other"]},
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.3", "value": "110101199003070011", "use": "official"}],
            "name": [{"text": "张三丰"}],
            "gender": "female",
            "active": false
        });
        let stored = {
            let mut r = registered();
            r["active"] = json!(true);
            r
        };
        let (m, conflicts) = merge(&stored, &update, &s, &none());
        assert!(conflicts.is_empty());
        assert_eq!(m["gender"], "female");
        assert_eq!(m["active"], false);
        assert_eq!(m["identifier"][0]["use"], "official");
        assert_eq!(m["identifier"][1]["value"], "HC001");
        // What the subject carries replaces, what it does not carry is kept.
        assert_eq!(m["name"], json!([{"text": "张三丰"}]));
        assert_eq!(m["telecom"], registered()["telecom"]);
        assert_eq!(m["address"], registered()["address"]);
        assert_eq!(
            m["meta"]["profile"],
            json!([
                "http://huitong.dev/fhir/cn/StructureDefinition/CNPatient",
                "http://example.org/Other"
            ])
        );
        let keys: Vec<&String> = m.as_object().unwrap().keys().take(3).collect();
        assert_eq!(keys, ["resourceType", "id", "meta"]);
    }

    #[test]
    fn a_restated_identifier_with_other_details_is_one_entry() {
        let stub = json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.19", "value": "HC001", "use": "secondary"}]});
        let (m, conflicts) = merge(&registered(), &stub, &named(), &none());
        assert!(conflicts.is_empty());
        assert_eq!(m["identifier"].as_array().unwrap().len(), 2);
        assert_eq!(m["identifier"][1]["use"], "secondary");
        let stored = merge(&registered(), &stub, &named(), &none()).0;
        let other = json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.19", "value": "HC001", "use": "old"}]});
        let (m, conflicts) = merge(&stored, &other, &named(), &none());
        assert_eq!(m["identifier"][1]["use"], "secondary");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].path, "Patient.identifier[1].use");
    }

    #[test]
    fn a_number_a_profile_allows_once_is_kept_or_replaced_and_recorded() {
        let card: BTreeSet<String> = ["urn:oid:2.16.156.10011.1.19".to_string()].into();
        let other = json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"system": "urn:oid:2.16.156.10011.1.19", "value": "HC002"}]});
        let (m, conflicts) = merge(&registered(), &other, &named(), &card);
        assert_eq!(m["identifier"], registered()["identifier"]);
        assert_eq!(conflicts.len(), 1);
        assert!(!conflicts[0].replaced);
        assert_eq!(conflicts[0].dropped["value"], "HC002");
        let (m, conflicts) = merge(
            &registered(),
            &other,
            &Statement::new(Standing::Subject),
            &card,
        );
        assert_eq!(m["identifier"][0]["value"], "HC002");
        assert_eq!(m["identifier"][1]["value"], "110101199003070011");
        assert_eq!(m["identifier"].as_array().unwrap().len(), 2);
        assert!(conflicts[0].replaced);
        assert_eq!(conflicts[0].dropped["value"], "HC001");
        assert!(conflicts[0].describe().contains("replaced the stored"));
    }

    #[test]
    fn once_per_system_identifiers_are_read_from_the_profile() {
        let sd = json!({"resourceType": "StructureDefinition", "differential": {"element": [
            {"id": "Patient.identifier", "path": "Patient.identifier"},
            {"id": "Patient.identifier:card", "path": "Patient.identifier", "max": "1"},
            {"id": "Patient.identifier:card.system", "path": "Patient.identifier.system", "patternUri": "urn:oid:2.16.156.10011.1.19"},
            {"id": "Patient.identifier:other", "path": "Patient.identifier", "max": "*"},
            {"id": "Patient.identifier:other.system", "path": "Patient.identifier.system", "fixedUri": "urn:x"}
        ]}});
        assert_eq!(
            one_per_system(&sd, "Patient"),
            ["urn:oid:2.16.156.10011.1.19".to_string()].into()
        );
        assert!(one_per_system(&sd, "Practitioner").is_empty());
    }

    fn erasure(source: &str, path: &[&str], matching: Value, others: &[Value]) -> Erasure {
        let obj = |v: &Value| v.as_object().cloned().unwrap_or_default();
        Erasure::new(
            source.into(),
            path.iter().map(|k| (k.to_string(), None)).collect(),
            obj(&matching),
            others.iter().map(obj).collect(),
        )
    }

    fn with_erasures(standing: Standing, erasures: Vec<Erasure>) -> Statement {
        Statement {
            standing,
            erasures,
            ..Statement::default()
        }
    }

    fn telephones() -> Value {
        let mut r = registered();
        r["telecom"] = json!([
            {"system": "phone", "value": "1", "use": "home"},
            {"system": "phone", "value": "2", "use": "work"}
        ]);
        r["_birthDate"] = json!({"extension": [{"url": "http://e/x", "valueString": "y"}]});
        r["period"] = json!({"start": "2024"});
        r
    }

    #[test]
    fn the_subjects_explicit_null_removes_the_entries_its_field_makes() {
        let home = erasure("PID-13", &["telecom"], json!({}), &[json!({"use": "work"})]);
        let sex = erasure("PID-8", &["gender"], json!({}), &[]);
        let born = erasure("PID-7", &["birthDate"], json!({}), &[]);
        let start = erasure("PV1-44", &["period", "start"], json!({}), &[]);
        let s = with_erasures(Standing::Subject, vec![home, sex, born, start]);
        let stub = json!({"resourceType": "Patient", "id": "p1"});
        let (m, conflicts) = merge(&telephones(), &stub, &s, &none());
        assert!(conflicts.is_empty(), "{conflicts:?}");
        assert_eq!(
            m["telecom"],
            json!([{"system": "phone", "value": "2", "use": "work"}])
        );
        for gone in ["gender", "birthDate", "_birthDate", "period"] {
            assert!(m.get(gone).is_none(), "{gone}: {m}");
        }
        assert_eq!(m["address"], registered()["address"]);
        // The work telephones' own deletion leaves none: the list goes.
        let work = erasure("PID-14", &["telecom"], json!({"use": "work"}), &[json!({})]);
        let s = with_erasures(Standing::Subject, vec![work]);
        let (m, _) = merge(&m, &stub, &s, &none());
        assert!(m.get("telecom").is_none(), "{m}");
    }

    #[test]
    fn a_named_records_explicit_null_deletes_nothing_and_is_recorded() {
        let home = erasure("PID-13", &["telecom"], json!({}), &[json!({"use": "work"})]);
        let sex = erasure("PID-8", &["gender"], json!({}), &[]);
        let absent = erasure("PID-16", &["maritalStatus"], json!({}), &[]);
        let s = with_erasures(Standing::Named, vec![home, sex, absent]);
        let stub = json!({"resourceType": "Patient", "id": "p1"});
        let (m, conflicts) = merge(&telephones(), &stub, &s, &none());
        assert_eq!(m["telecom"], telephones()["telecom"]);
        assert_eq!(m["gender"], "male");
        // Nothing stored under PID-16's element: nothing kept to record.
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        assert_eq!(conflicts[0].path, "Patient.telecom");
        assert_eq!(
            conflicts[0].kept,
            json!([{"system": "phone", "value": "1", "use": "home"}])
        );
        assert_eq!(conflicts[1].path, "Patient.gender");
        let text = conflicts[1].describe();
        assert!(
            text.contains("PID-8") && text.contains("not applied") && text.contains("\"male\""),
            "{text}"
        );
    }

    #[test]
    fn an_explicit_null_never_deletes_identifiers() {
        let ids = erasure("PID-3", &["identifier"], json!({}), &[]);
        let s = with_erasures(Standing::Subject, vec![ids]);
        let stub = json!({"resourceType": "Patient", "id": "p1"});
        let (m, conflicts) = merge(&registered(), &stub, &s, &none());
        assert_eq!(m["identifier"], registered()["identifier"]);
        assert_eq!(conflicts.len(), 1);
        assert!(
            conflicts[0]
                .describe()
                .contains("identifier is not deleted")
        );
    }

    #[test]
    fn extensions_and_other_lists_union_by_equality() {
        let stored = json!({"resourceType": "Patient", "id": "p1",
            "extension": [{"url": "http://e/a", "valueString": "x"}]});
        let stub = json!({"resourceType": "Patient", "id": "p1",
            "extension": [{"url": "http://e/a", "valueString": "y"}, {"url": "http://e/a", "valueString": "x"}]});
        let (m, _) = merge(&stored, &stub, &named(), &none());
        assert_eq!(
            m["extension"],
            json!([{"url": "http://e/a", "valueString": "x"}, {"url": "http://e/a", "valueString": "y"}])
        );
    }
}
