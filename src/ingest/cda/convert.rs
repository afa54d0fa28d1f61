//! One CDA R2 document -> the FHIR resources of one transaction: the header resources, one
//! resource per clinical statement (by the table's entry rules, else an Observation carrying the
//! statement's code and value as written), the Composition with one section per CDA section, the
//! DocumentReference carrying the original bytes, and the document Bundle.
//!
//! Invariants: ids are deterministic (document identifier + rule name or statement position), so
//! a re-sent document updates the same resources; every clinical statement becomes a resource or
//! is the container of ones that do; the original bytes are kept unchanged (base64) in
//! `DocumentReference.content[0].attachment.data`.

use super::table::{EntryRule, Table, Tables};
use crate::mapping::datatypes::base64;
use crate::mapping::ids::resource_id;
use crate::mapping::xml::{
    self, NotPlaced, RuleError, Vocabulary, any_value, codeable, fill, identifier, link, reference,
};
use crate::xml::{Limits, XmlError, attr, child, children, is, line, text, with_document};
use roxmltree::Node;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The clinical statement elements of CDA R2.
const STATEMENTS: &[&str] = &[
    "observation",
    "procedure",
    "substanceAdministration",
    "act",
    "organizer",
    "encounter",
    "supply",
    "observationMedia",
    "regionOfInterest",
];

/// The `id` facility for CDA-derived ids (documents carry their own global identifiers).
const FACILITY: &str = "cda";

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdaError {
    #[error("{0}")]
    Xml(#[from] XmlError),
    #[error(
        "not a CDA document: the root element is '{0}', not ClinicalDocument in urn:hl7-org:v3"
    )]
    NotCda(String),
    #[error("no mapping table in mappings/cda/ takes this document (templateId roots: {0})")]
    NoTable(String),
    #[error("{0}")]
    Rule(#[from] RuleError),
    #[error("line {line}: {message}")]
    Missing { line: u32, message: String },
}

/// A converted document.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The table that took it.
    pub table: String,
    /// `system|value` of the document id.
    pub key: String,
    /// Resources stored individually (header, entries, Composition, DocumentReference).
    pub resources: Vec<Value>,
    /// The FHIR document Bundle, stored whole.
    pub bundle: Value,
    pub patient_id: String,
    pub document_reference_id: String,
    /// Values no field rule could place.
    pub unmapped: Vec<NotPlaced>,
    /// Repairs made to the XML text.
    pub repairs: Vec<String>,
    /// Statements no entry rule matched, stored as Observations.
    pub fallbacks: usize,
    /// `Type/id` of the header resources keyed by their identifiers (the patient, authors,
    /// custodian, visit: records the document names, which may be stored already), each with
    /// the elements only its rule's defaults filled. The rest belong to the document.
    pub named: BTreeMap<String, BTreeSet<String>>,
}

/// Converts the bytes of one CDA document.
pub fn convert(
    bytes: &[u8],
    tables: &Tables,
    limits: &Limits,
    recorded: &str,
) -> Result<Converted, CdaError> {
    with_document(bytes, limits, |doc, diag| {
        let mut c = convert_root(doc.root_element(), bytes, tables, recorded)?;
        c.repairs = diag.repairs.clone();
        Ok(c)
    })?
}

fn narrative(text: &str) -> Value {
    json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", crate::xml::escape(text))})
}

fn key_of(id: &Value) -> Option<String> {
    Some(format!(
        "{}|{}",
        id.get("system").and_then(Value::as_str).unwrap_or(""),
        id.get("value").and_then(Value::as_str)?
    ))
}

/// Converts a parsed ClinicalDocument element (also used by the v3 document register).
pub fn convert_root(
    root: Node<'_, '_>,
    raw: &[u8],
    tables: &Tables,
    recorded: &str,
) -> Result<Converted, CdaError> {
    if !is(root, "ClinicalDocument") {
        return Err(CdaError::NotCda(root.tag_name().name().to_string()));
    }
    xml::check_oids(root)?;
    let roots: Vec<&str> = children(root, "templateId")
        .filter_map(|t| attr(t, "root"))
        .collect();
    let table = tables.for_templates(&roots).ok_or_else(|| {
        CdaError::NoTable(if roots.is_empty() {
            "none".into()
        } else {
            roots.join(", ")
        })
    })?;
    let vocab = &tables.vocabulary;
    let doc_id = child(root, "id")
        .map(|n| identifier(n, vocab))
        .transpose()
        .map_err(|m| CdaError::Missing {
            line: line(root),
            message: format!("ClinicalDocument/id: {m}"),
        })?
        .flatten()
        .ok_or_else(|| CdaError::Missing {
            line: line(root),
            message: "the document has no id (ClinicalDocument/id)".into(),
        })?;
    let key = key_of(&doc_id).unwrap_or_default();
    let mut state = State {
        table,
        vocab,
        key: key.clone(),
        names: HashMap::new(),
        resources: Vec::new(),
        unmapped: Vec::new(),
        fallbacks: 0,
        seen: HashSet::new(),
    };
    let mut composition = None;
    let mut docref = None;
    let mut named = BTreeMap::new();
    for rule in &table.header {
        let Some(node) = rule.at.first(root) else {
            if rule.required {
                return Err(CdaError::Missing {
                    line: line(root),
                    message: format!("{} ({}) is missing", rule.at, rule.name),
                });
            }
            continue;
        };
        let filled = fill(rule, node, vocab)?;
        state.unmapped.extend(filled.unmapped);
        if filled.placed == 0 && !rule.required {
            continue;
        }
        let mut r = filled.resource;
        let id = if rule.id_from_identifier {
            match xml::identifier_key(&r) {
                Some(k) => {
                    let id = resource_id(&rule.resource_type, FACILITY, &k);
                    named.insert(format!("{}/{id}", rule.resource_type), filled.assumed);
                    id
                }
                None if rule.required => {
                    return Err(CdaError::Missing {
                        line: line(node),
                        message: format!(
                            "{} has no identifier ({}/id): the {} cannot be identified",
                            rule.at, rule.at, rule.resource_type
                        ),
                    });
                }
                None => resource_id(
                    &rule.resource_type,
                    FACILITY,
                    &format!("{key}|{}", rule.name),
                ),
            }
        } else {
            resource_id(
                &rule.resource_type,
                FACILITY,
                &format!("{key}|{}", rule.name),
            )
        };
        r.insert("id".into(), json!(id));
        state
            .names
            .insert(rule.name.clone(), (rule.resource_type.clone(), id.clone()));
        match rule.name.as_str() {
            "composition" => composition = Some((rule, r)),
            "document-reference" => docref = Some((rule, r)),
            // The author who is also the legal authenticator is one Practitioner.
            _ if !state.seen.insert(format!("{}/{id}", rule.resource_type)) => {}
            _ => state.resources.push((rule.name.clone(), r)),
        }
    }
    // Links among header resources, now that every id is known.
    let names = state.names.clone();
    for (name, r) in &mut state.resources {
        if let Some(rule) = table.header.iter().find(|h| &h.name == name) {
            link(rule, r, &names);
        }
    }
    let patient_id = names
        .get("patient")
        .map(|(_, id)| id.clone())
        .unwrap_or_default();
    // The body.
    let mut sections = Vec::new();
    if let Some(body) = child(root, "component").and_then(|c| child(c, "structuredBody")) {
        for (i, comp) in children(body, "component").enumerate() {
            if let Some(sec) = child(comp, "section") {
                sections.push(state.section(sec, &format!("{i}"))?);
            }
        }
    } else if let Some(nb) = child(root, "component").and_then(|c| child(c, "nonXMLBody")) {
        sections.push(json!({"title": "nonXMLBody", "text": narrative(&text(nb).map(|t| t.chars().take(2000).collect::<String>()).unwrap_or_else(|| "non-XML body".into()))}));
    }
    let Some((crule, mut comp)) = composition else {
        return Err(CdaError::Missing {
            line: line(root),
            message: "the table has no composition rule".into(),
        });
    };
    link(crule, &mut comp, &names);
    if !comp.contains_key("author") {
        comp.insert(
            "author".into(),
            json!([{"display": "not stated in the document"}]),
        );
    }
    if !comp.contains_key("title") {
        let t = comp
            .get("type")
            .and_then(|t| {
                t.pointer("/coding/0/display")
                    .or(t.pointer("/coding/0/code"))
                    .or(t.get("text"))
            })
            .and_then(Value::as_str)
            .unwrap_or("CDA document")
            .to_string();
        comp.insert("title".into(), json!(t));
    }
    if let Some((_, la)) = names.get("legal-authenticator") {
        let mut att =
            json!({"mode": "legal", "party": {"reference": format!("Practitioner/{la}")}});
        if let Some(t) = child(root, "legalAuthenticator")
            .and_then(|l| child(l, "time"))
            .and_then(|t| xml::timestamp(t, "dateTime").ok().flatten())
        {
            att["time"] = t;
        }
        comp.insert("attester".into(), json!([att]));
    }
    if let Some(p) = &table.composition_profile {
        comp.insert("meta".into(), json!({"profile": [p]}));
    }
    if !sections.is_empty() {
        comp.insert("section".into(), Value::Array(sections));
    }
    let comp_id = comp["id"].as_str().unwrap_or_default().to_string();
    // The DocumentReference keeps the original bytes.
    let Some((drule, mut dr)) = docref else {
        return Err(CdaError::Missing {
            line: line(root),
            message: "the table has no document-reference rule".into(),
        });
    };
    link(drule, &mut dr, &names);
    let dr_id = dr["id"].as_str().unwrap_or_default().to_string();
    let bundle_id = resource_id("Bundle", FACILITY, &key);
    dr.insert("date".into(), json!(recorded));
    let title = comp["title"].clone();
    dr.insert(
        "content".into(),
        json!([
            {"attachment": {"contentType": "application/hl7-cda+xml", "data": base64(raw), "size": raw.len(), "title": title},
             "format": {"system": "http://ihe.net/fhir/ValueSet/IHE.FormatCode.codesystem", "code": "urn:hl7-org:sdwg:ccda-structuredBody:2.1", "display": "CDA R2"}}
        ]),
    );
    let ctx = dr
        .entry("context")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(ctx) = ctx {
        ctx.insert(
            "related".into(),
            json!([{"reference": format!("Bundle/{bundle_id}")}]),
        );
    }
    if let Some(p) = &table.document_reference_profile {
        dr.insert("meta".into(), json!({"profile": [p]}));
    }
    // The document Bundle: the Composition first, then every resource it uses.
    let mut in_bundle: Vec<Value> = vec![Value::Object(comp.clone())];
    in_bundle.extend(
        state
            .resources
            .iter()
            .map(|(_, r)| Value::Object(r.clone())),
    );
    let ids: HashSet<String> = in_bundle
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let entries: Vec<Value> = in_bundle
        .iter()
        .map(|r| {
            let mut r = r.clone();
            to_urn(&mut r, &ids);
            json!({"fullUrl": format!("urn:uuid:{}", r["id"].as_str().unwrap_or_default()), "resource": r})
        })
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "id": bundle_id,
        "identifier": doc_id,
        "type": "document",
        "timestamp": recorded,
        "entry": entries
    });
    let mut resources: Vec<Value> = state
        .resources
        .into_iter()
        .map(|(_, r)| Value::Object(r))
        .collect();
    resources.push(Value::Object(comp));
    resources.push(Value::Object(dr));
    let _ = comp_id;
    Ok(Converted {
        table: table.name.clone(),
        key,
        resources,
        bundle,
        patient_id,
        document_reference_id: dr_id,
        unmapped: state.unmapped,
        repairs: Vec::new(),
        fallbacks: state.fallbacks,
        named,
    })
}

/// Rewrites `Type/id` references to resources of the Bundle as their `urn:uuid:` fullUrls.
pub(crate) fn to_urn(v: &mut Value, ids: &HashSet<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = x
                    && ids.contains(s.as_str())
                    && let Some((_, id)) = s.split_once('/')
                {
                    *s = format!("urn:uuid:{id}");
                    continue;
                }
                to_urn(x, ids);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| to_urn(x, ids)),
        _ => {}
    }
}

struct State<'t> {
    table: &'t Table,
    vocab: &'t Vocabulary,
    key: String,
    names: HashMap<String, (String, String)>,
    /// (rule name, resource) in creation order.
    resources: Vec<(String, Map<String, Value>)>,
    unmapped: Vec<NotPlaced>,
    fallbacks: usize,
    seen: HashSet<String>,
}

fn statements<'a, 'i>(n: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children()
        .filter(|c| c.is_element() && STATEMENTS.iter().any(|s| is(*c, s)))
}

/// The statements nested in a statement (entryRelationship, organizer components).
fn nested<'a, 'i>(n: Node<'a, 'i>) -> Vec<Node<'a, 'i>> {
    let mut out = Vec::new();
    for c in n
        .children()
        .filter(|c| is(*c, "entryRelationship") || is(*c, "component"))
    {
        out.extend(statements(c));
    }
    out
}

fn matches(rule: &EntryRule, n: Node<'_, '_>) -> bool {
    let m = &rule.matcher;
    if !is(n, &m.statement) {
        return false;
    }
    let code_ok = m.codes.is_empty()
        || child(n, "code")
            .and_then(|c| attr(c, "code"))
            .is_some_and(|c| m.codes.iter().any(|x| x == c));
    let template_ok = m.templates.is_empty()
        || children(n, "templateId")
            .filter_map(|t| attr(t, "root"))
            .any(|r| m.templates.iter().any(|x| x == r));
    code_ok && template_ok
}

impl State<'_> {
    fn section(&mut self, sec: Node<'_, '_>, path: &str) -> Result<Value, CdaError> {
        let mut s = Map::new();
        let code = child(sec, "code").and_then(|c| codeable(c, self.vocab));
        let title = child(sec, "title")
            .and_then(text)
            .or_else(|| {
                code.as_ref()
                    .and_then(|c| c.pointer("/coding/0/display").or(c.get("text")))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| format!("section {path}"));
        s.insert("title".into(), json!(title));
        if let Some(c) = code {
            s.insert("code".into(), c);
        }
        let body = child(sec, "text")
            .and_then(text)
            .unwrap_or_else(|| title.clone());
        s.insert("text".into(), narrative(&body));
        let mut refs = Vec::new();
        for (j, entry) in children(sec, "entry").enumerate() {
            for (k, st) in statements(entry).enumerate() {
                self.statement(st, &format!("{path}/{j}.{k}"), None, &mut refs)?;
            }
        }
        if !refs.is_empty() {
            s.insert("entry".into(), Value::Array(refs));
        }
        let mut subs = Vec::new();
        for (i, comp) in children(sec, "component").enumerate() {
            if let Some(inner) = child(comp, "section") {
                subs.push(self.section(inner, &format!("{path}.{i}"))?);
            }
        }
        if !subs.is_empty() {
            s.insert("section".into(), Value::Array(subs));
        }
        Ok(Value::Object(s))
    }

    fn add(
        &mut self,
        name: &str,
        r: Map<String, Value>,
        refs: &mut Vec<Value>,
    ) -> (String, String) {
        let ty = r["resourceType"].as_str().unwrap_or_default().to_string();
        let id = r["id"].as_str().unwrap_or_default().to_string();
        if self.seen.insert(format!("{ty}/{id}")) {
            refs.push(reference(&ty, &id));
            self.resources.push((name.to_string(), r));
        }
        (ty, id)
    }

    fn statement(
        &mut self,
        n: Node<'_, '_>,
        path: &str,
        parent: Option<&(String, String)>,
        refs: &mut Vec<Value>,
    ) -> Result<(), CdaError> {
        let table = self.table;
        if let Some(rule) = table.entries.iter().find(|r| matches(r, n)) {
            let filled = fill(&rule.rule, n, self.vocab)?;
            self.unmapped.extend(filled.unmapped);
            let mut r = filled.resource;
            let id = resource_id(
                &rule.rule.resource_type,
                FACILITY,
                &format!("{}|{path}", self.key),
            );
            r.insert("id".into(), json!(id));
            link(&rule.rule, &mut r, &self.names);
            let me = self.add(&rule.rule.name, r, refs);
            for (i, c) in nested(n).into_iter().enumerate() {
                self.statement(c, &format!("{path}.{i}"), Some(&me), refs)?;
            }
            return Ok(());
        }
        let inner = nested(n);
        let has_code = child(n, "code")
            .is_some_and(|c| attr(c, "code").is_some() || attr(c, "displayName").is_some());
        let has_value = child(n, "value").is_some();
        let container = is(n, "act") || is(n, "organizer") || (!has_code && !has_value);
        if !inner.is_empty() && container {
            // A container: its members carry the data.
            for (i, c) in inner.into_iter().enumerate() {
                self.statement(c, &format!("{path}.{i}"), parent, refs)?;
            }
            return Ok(());
        }
        if !has_code && !has_value && inner.is_empty() {
            if let Some(t) = text(n) {
                self.unmapped.push(NotPlaced {
                    location: format!("line {} {}", line(n), n.tag_name().name()),
                    value: t,
                    reason: "a statement with neither code nor value".into(),
                });
            }
            return Ok(());
        }
        let r = self.fallback(n, path, parent)?;
        let me = self.add("unmapped", r, refs);
        for (i, c) in inner.into_iter().enumerate() {
            self.statement(c, &format!("{path}.{i}"), Some(&me), refs)?;
        }
        Ok(())
    }

    /// An Observation with the statement's code (the WS 363 data element) and its value as
    /// written, for a statement no rule maps.
    fn fallback(
        &mut self,
        n: Node<'_, '_>,
        path: &str,
        parent: Option<&(String, String)>,
    ) -> Result<Map<String, Value>, CdaError> {
        self.fallbacks += 1;
        let mut r = Map::new();
        r.insert("resourceType".into(), json!("Observation"));
        r.insert(
            "id".into(),
            json!(resource_id(
                "Observation",
                FACILITY,
                &format!("{}|{path}", self.key)
            )),
        );
        r.insert("status".into(), json!("final"));
        let code = child(n, "code")
            .and_then(|c| codeable(c, self.vocab))
            .unwrap_or_else(
                || json!({"text": format!("CDA {} without a code", n.tag_name().name())}),
            );
        r.insert("code".into(), code);
        if let Some((_, id)) = self.names.get("patient") {
            r.insert("subject".into(), reference("Patient", id));
        }
        if let Some((_, id)) = self.names.get("encounter") {
            r.insert("encounter".into(), reference("Encounter", id));
        }
        if let Some(t) = child(n, "effectiveTime")
            && let Ok(Some(v)) = xml::timestamp(t, "dateTime")
        {
            r.insert("effectiveDateTime".into(), v);
        }
        let values: Vec<Node<'_, '_>> = children(n, "value").collect();
        if let Some(v) = values.first() {
            match any_value(*v, self.vocab) {
                Ok(Some((suffix, val))) => {
                    r.insert(format!("value{suffix}"), val);
                }
                Ok(None) => {}
                Err(e) => {
                    // Not representable in its declared type: the text as written.
                    let raw = attr(*v, "value")
                        .map(str::to_string)
                        .or_else(|| text(*v))
                        .unwrap_or_default();
                    r.insert("valueString".into(), json!(raw));
                    self.unmapped.push(NotPlaced {
                        location: format!("line {} value", line(*v)),
                        value: raw,
                        reason: e,
                    });
                }
            }
        }
        for extra in values.iter().skip(1) {
            if let Ok(Some((_, val))) = any_value(*extra, self.vocab) {
                let comp =
                    json!({"code": {"text": "additional value"}, "valueString": val.to_string()});
                if let Some(a) = r
                    .entry("component")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                {
                    a.push(comp);
                }
            }
        }
        if !is(n, "observation") {
            r.insert(
                "note".into(),
                json!([{"text": format!("CDA {} statement (line {}) that no rule of the {} table maps", n.tag_name().name(), line(n), self.table.name)}]),
            );
        }
        if let Some((ty, id)) = parent {
            r.insert("focus".into(), json!([reference(ty, id)]));
        }
        Ok(r)
    }
}
