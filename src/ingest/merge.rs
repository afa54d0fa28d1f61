//! Merging what an ingest says about a resource into the version already stored, for HL7 v3
//! interactions and CDA documents (one rule set for both; [`crate::ingest::cda::commit_stated`]
//! runs it).
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
//! The functions here are pure; reading the stored versions and retrying on a concurrent write
//! is the caller's ([`crate::ingest::cda::commit_stated`]).

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
}

impl Statement {
    /// A statement of the given standing with nothing assumed.
    pub fn new(standing: Standing) -> Statement {
        Statement {
            standing,
            assumed: BTreeSet::new(),
        }
    }
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
}

impl Conflict {
    /// A named record another domain owns, left as stored: `stated` is everything the message
    /// said of it, kept here since it is written nowhere else.
    pub fn foreign(target: String, owner: &str, stated: &Value) -> Conflict {
        let ty = target.split('/').next().unwrap_or_default().to_string();
        Conflict {
            target,
            path: ty,
            kept: json!(format!("the record of domain '{owner}'")),
            dropped: stated.clone(),
            replaced: false,
        }
    }

    fn words(&self) -> String {
        if self.replaced {
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
            Standing::Named => self.conflicts.push(Conflict {
                target: self.target.clone(),
                path: path.to_string(),
                kept: out.get(k).cloned().unwrap_or(Value::Null),
                dropped: v.clone(),
                replaced: false,
            }),
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
                    Standing::Named => self.conflicts.push(Conflict {
                        target: self.target.clone(),
                        path: here,
                        kept: base[i].clone(),
                        dropped: v.clone(),
                        replaced: false,
                    }),
                    Standing::Subject | Standing::Owned => {
                        self.conflicts.push(Conflict {
                            target: self.target.clone(),
                            path: here,
                            kept: v.clone(),
                            dropped: base[i].clone(),
                            replaced: true,
                        });
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
                                    self.conflicts.push(Conflict {
                                        target: self.target.clone(),
                                        path: format!("{path}[{i}]"),
                                        kept: base[i].clone(),
                                        dropped: v.clone(),
                                        replaced: false,
                                    });
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
            vec![Conflict {
                target: "Patient/p1".into(),
                path: "Patient.gender".into(),
                kept: json!("male"),
                dropped: json!("female"),
                replaced: false,
            }]
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
