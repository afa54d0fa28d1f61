//! HL7 v3 interactions (WS/T 846) into and out of FHIR. One path for every transport
//! (`POST /hl7v3`, bare or in a SOAP 1.1/1.2 envelope; `huitong ingest hl7v3`):
//! [`Hl7v3Service::handle`] parses the message safely ([`crate::xml`]), dispatches on
//! `interactionId` to the interaction's file in `mappings/hl7v3/`, and
//! - write interactions (register, update, merge, add): fill the resources the rules name and
//!   commit them with the message's Provenance in one `transaction::apply` (through
//!   [`crate::ingest::cda::commit_stated`], which merges the records the message names into
//!   their stored versions by [`crate::ingest::merge`], validates them against the CN profiles
//!   they claim and applies the sender's `[ingest-rules]` policy), then AA (detail W for rules
//!   let through and for stored values kept over the message's);
//! - queries: run the FHIR search the file states and render the query response from templates;
//! - the document register: the CDA in the message goes through the CDA engine.
//!
//! Invariants: AA only after the commit; AE names what was wrong (the element and line) and
//! nothing is written; the acknowledgement always carries the original message id.

pub mod cli;
pub mod interactions;
pub mod render;

use crate::ingest::cda::{self, CdaService, convert::Converted};
use crate::ingest::merge::{Conflict, Standing, Statement};
use crate::ingest::rule_policy::LetThrough;
use crate::mapping::ids::resource_id;
use crate::mapping::xml::{self, fill, identifier_key, link};
use crate::model::FhirError;
use crate::rest::AppState;
use crate::xml::{Limits, XmlError, attr, child, line, with_document};
use interactions::{Interaction, Interactions, Kind};
use roxmltree::Node;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The facility part of ids derived from national identifiers, shared by CDA and v3 so that one
/// person registered by either is one Patient.
pub const FACILITY: &str = "cda";

/// The SOAP version a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Soap {
    V11,
    V12,
}

const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";

/// The answer to one message.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The response message (wrapped in the envelope when the request was).
    pub xml: String,
    /// AA (or a query answered).
    pub accepted: bool,
    pub interaction: String,
    pub soap: Option<Soap>,
    /// Why it was refused, or notes on an accepted message.
    pub detail: String,
    /// `Type/id` of what was written.
    pub written: Vec<String>,
}

/// The control wrapper of a message.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub id_root: String,
    pub id: String,
    pub interaction: String,
    pub root_name: String,
    pub sender: String,
    pub receiver: String,
}

fn device(root: Node<'_, '_>, role: &str) -> String {
    child(root, role)
        .and_then(|r| child(r, "device"))
        .and_then(|d| child(d, "id"))
        .and_then(|i| child(i, "item").or(Some(i)))
        .and_then(|i| attr(i, "extension"))
        .unwrap_or("")
        .to_string()
}

impl Header {
    fn of(root: Node<'_, '_>) -> Header {
        let id = child(root, "id");
        Header {
            id_root: id.and_then(|i| attr(i, "root")).unwrap_or("").to_string(),
            id: id
                .and_then(|i| attr(i, "extension"))
                .unwrap_or("")
                .to_string(),
            interaction: child(root, "interactionId")
                .and_then(|i| attr(i, "extension"))
                .unwrap_or("")
                .to_string(),
            root_name: root.tag_name().name().to_string(),
            sender: device(root, "sender"),
            receiver: device(root, "receiver"),
        }
    }
}

/// What the synchronous part (parse, map) decided; the async part commits or searches.
enum Plan {
    Write {
        /// Each with how the message stands to it (subject, named, its own).
        resources: Vec<(Value, Statement)>,
        notes: Vec<String>,
    },
    Query {
        params: Vec<(String, String)>,
        query_id: String,
    },
    Document(Box<Converted>),
    /// The document register without a CDA in it: the metadata only.
    Metadata {
        resources: Vec<(Value, Statement)>,
        notes: Vec<String>,
    },
}

struct Refusal {
    header: Box<Header>,
    reason: String,
}

/// The v3 side of a running gateway (it owns the CDA engine the document register uses).
pub struct Hl7v3Service {
    pub cda: CdaService,
    interactions: Interactions,
    load_error: Option<String>,
    limits: Limits,
}

/// `YYYYMMDDHHMMSS` now (UTC).
fn v3_now() -> String {
    cda::now_instant()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect()
}

impl Hl7v3Service {
    /// Loads `mappings_dir/hl7v3/` and `mappings_dir/cda/`; problems are logged and the affected
    /// messages refused, the gateway still starts.
    pub fn start(mappings_dir: &std::path::Path, max_bytes: usize) -> Hl7v3Service {
        let limits = Limits {
            max_bytes,
            ..Limits::default()
        };
        let cda = CdaService::start(mappings_dir, max_bytes);
        let (interactions, load_error) = match Interactions::load(mappings_dir) {
            Ok(i) => (i, None),
            Err(errors) => {
                let e = errors.join("\n");
                tracing::warn!(dir = %mappings_dir.display(), errors = %e, "HL7 v3 interaction files not loaded: v3 messages will be refused");
                (Interactions::default(), Some(e))
            }
        };
        Hl7v3Service {
            cda,
            interactions,
            load_error,
            limits,
        }
    }

    /// The interactions in force.
    pub fn interactions(&self) -> &Interactions {
        &self.interactions
    }

    /// Handles one message end to end.
    pub async fn handle(&self, st: &AppState, bytes: &[u8]) -> Reply {
        let mut soap = None;
        let planned = self.plan(bytes, &mut soap);
        let (header, interaction, plan) = match planned {
            Ok(x) => x,
            Err(r) => return self.refuse(&r.header, &r.reason, soap),
        };
        let ix = &interaction;
        match plan {
            Plan::Write { resources, notes } | Plan::Metadata { resources, notes } => {
                match self.write(st, resources, &header, ix).await {
                    Ok(c) => {
                        let warnings = warnings(&c.accepted, &c.conflicts);
                        self.accept(&header, ix, notes, c.written, warnings, soap)
                    }
                    Err(e) => self.refuse(&header, &describe(&e), soap),
                }
            }
            Plan::Document(c) => match self.cda.store(st, *c, &header.sender).await {
                Ok(s) => {
                    let note = format!(
                        "document stored: DocumentReference/{}",
                        s.converted.document_reference_id
                    );
                    let warnings = warnings(&s.accepted, &s.conflicts);
                    self.accept(&header, ix, vec![note], s.written, warnings, soap)
                }
                Err(e) => self.refuse(&header, &describe(&e), soap),
            },
            Plan::Query { params, query_id } => {
                let Some(q) = &interaction.query else {
                    return self.refuse(&header, "query without [query]", soap);
                };
                match search(st, &q.resource_type, &params, q.count).await {
                    Ok(found) => {
                        let xml = render::query_response(
                            &self.interactions,
                            q,
                            &header,
                            &query_id,
                            &found,
                            &v3_now(),
                        );
                        Reply {
                            xml: wrap(xml, soap),
                            accepted: true,
                            interaction: interaction.id.clone(),
                            soap,
                            detail: format!("{} found", found.len()),
                            written: Vec::new(),
                        }
                    }
                    Err(e) => self.refuse(&header, &describe(&e), soap),
                }
            }
        }
    }

    /// Parses and maps: everything that needs the XML tree happens here.
    fn plan(
        &self,
        bytes: &[u8],
        soap: &mut Option<Soap>,
    ) -> Result<(Header, Interaction, Plan), Refusal> {
        let no_header = |reason: String| Refusal {
            header: Box::default(),
            reason,
        };
        if let Some(e) = &self.load_error {
            return Err(no_header(format!(
                "HL7 v3 interaction files are not loaded: {e}"
            )));
        }
        let out = with_document(bytes, &self.limits, |doc, diag| {
            let mut root = doc.root_element();
            if root.tag_name().name() == "Envelope" {
                let ns = root.tag_name().namespace();
                *soap = match ns {
                    Some(SOAP11) => Some(Soap::V11),
                    Some(SOAP12) => Some(Soap::V12),
                    _ => None,
                };
                let body = soap.and_then(|_| {
                    root.children().find(|c| {
                        c.is_element()
                            && c.tag_name().name() == "Body"
                            && c.tag_name().namespace() == ns
                    })
                });
                let Some(body) = body else {
                    return Err(no_header(
                        "a SOAP Envelope without a Body (SOAP 1.1 or 1.2 namespace)".into(),
                    ));
                };
                let Some(msg) = body.children().find(|c| c.is_element()) else {
                    return Err(no_header("the SOAP Body is empty".into()));
                };
                // Some platforms send the message as escaped text inside a wrapper element.
                if let Some(inner) = msg
                    .descendants()
                    .filter(|d| d.is_text())
                    .filter_map(|d| d.text())
                    .find(|t| t.trim_start().starts_with('<'))
                    && msg.descendants().filter(|d| d.is_element()).count() <= 3
                {
                    return Ok(Err(inner.trim().as_bytes().to_vec()));
                }
                root = msg;
            }
            self.plan_message(root, &diag.repairs).map(Ok)
        });
        match out {
            Ok(Ok(Ok(x))) => Ok(x),
            Ok(Ok(Err(inner))) => {
                // The escaped message: parsed on its own, with the same limits.
                let mut ignored = None;
                self.plan(&inner, &mut ignored)
            }
            Ok(Err(r)) => Err(r),
            Err(e) => Err(no_header(xml_reason(&e))),
        }
    }

    fn plan_message(
        &self,
        root: Node<'_, '_>,
        repairs: &[String],
    ) -> Result<(Header, Interaction, Plan), Refusal> {
        let header = Header::of(root);
        let refuse = |reason: String| Refusal {
            header: Box::new(header.clone()),
            reason,
        };
        if root.tag_name().namespace() != Some(crate::xml::HL7_NS) {
            return Err(refuse(format!(
                "root element '{}' is not in the HL7 v3 namespace urn:hl7-org:v3",
                header.root_name
            )));
        }
        if header.id.is_empty() {
            return Err(refuse(format!(
                "line {}: the message has no id (id/@extension)",
                line(root)
            )));
        }
        let by_id = &self.interactions.by_id;
        let stated = header.interaction.as_str();
        // The root element fixes the structure; when interactionId disagrees with it, the root
        // decides and the answer says so (senders copy the wrapper of another interaction).
        let (interaction, mut notes) = match (by_id.get(&header.root_name), by_id.get(stated)) {
            (Some(r), _) if stated == header.root_name || stated.is_empty() => (r, vec![]),
            (Some(r), _) => (
                r,
                vec![format!(
                    "interactionId '{stated}' differs from the root element {}; processed as {}",
                    header.root_name, header.root_name
                )],
            ),
            (None, Some(i)) if header.root_name.is_empty() => (i, vec![]),
            (None, _) if stated.is_empty() => {
                return Err(refuse(format!(
                    "the message has no interactionId and its root element {} is not a known interaction",
                    header.root_name
                )));
            }
            (None, _) => {
                return Err(refuse(format!(
                    "unknown interaction '{}' (root element {}): no file in mappings/hl7v3/ handles it",
                    stated, header.root_name
                )));
            }
        };
        notes.extend(repairs.iter().cloned());
        xml::check_oids(root).map_err(|e| refuse(e.to_string()))?;
        let vocab = &self.interactions.vocabulary;
        let plan = match interaction.kind {
            Kind::Write => {
                let resources = fill_all(interaction, root, vocab, &header).map_err(refuse)?;
                Plan::Write { resources, notes }
            }
            Kind::Query => {
                let Some(q) = &interaction.query else {
                    return Err(refuse("query without [query]".into()));
                };
                let mut params = Vec::new();
                for p in &q.params {
                    for n in p.from.nodes(root) {
                        if let Some(v) = query_value(p, n, vocab).map_err(refuse)? {
                            params.push((p.search.clone(), v));
                        }
                    }
                }
                // Items of one parameter are alternatives: one OR'd value list per search name.
                let mut grouped: Vec<(String, String)> = Vec::new();
                for (k, v) in params {
                    match grouped.iter_mut().find(|(g, _)| *g == k) {
                        Some((_, all)) => {
                            all.push(',');
                            all.push_str(&v.replace(',', "\\,"));
                        }
                        None => grouped.push((k, v.replace(',', "\\,"))),
                    }
                }
                let params = grouped;
                if params.is_empty() {
                    return Err(refuse(format!(
                        "the query states no parameter ({})",
                        q.params
                            .iter()
                            .map(|p| p.from.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                let query_id =
                    crate::xml::path::XPath::parse("controlActProcess//queryId/@extension")
                        .ok()
                        .and_then(|x| x.value(root))
                        .unwrap_or_default();
                Plan::Query { params, query_id }
            }
            Kind::DocumentRegister => {
                let cda_bytes = interaction
                    .document
                    .as_ref()
                    .and_then(|d| d.value(root))
                    .and_then(|b| cda::decode_base64(&b))
                    .filter(|b| b.windows(16).any(|w| w == b"ClinicalDocument"));
                match cda_bytes {
                    Some(b) => {
                        let c = crate::ingest::cda::convert::convert(
                            &b,
                            self.cda.tables(),
                            &self.cda.limits,
                            &cda::now_instant(),
                        )
                        .map_err(|e| refuse(format!("the CDA document in the message: {e}")))?;
                        Plan::Document(Box::new(c))
                    }
                    None => {
                        let resources =
                            fill_all(interaction, root, vocab, &header).map_err(refuse)?;
                        notes.push(format!(
                            "the message carries no base64 CDA document at {}: its metadata was registered",
                            interaction.document.as_ref().map(|d| d.to_string()).unwrap_or_default()
                        ));
                        Plan::Metadata { resources, notes }
                    }
                }
            }
        };
        Ok((header, interaction.clone(), plan))
    }

    /// Writes the stated resources through [`cda::commit_stated`] (resolved to the ones already
    /// stored under one of their identifiers, merged into their stored versions) with the
    /// message's Provenance, in one transaction.
    async fn write(
        &self,
        st: &AppState,
        resources: Vec<(Value, Statement)>,
        header: &Header,
        ix: &Interaction,
    ) -> Result<cda::Committed, FhirError> {
        let mut written: Vec<String> = Vec::new();
        for (r, _) in &resources {
            let w = crate::ingest::stored::type_and_id(r);
            if !written.contains(&w) {
                written.push(w);
            }
        }
        let provenance = provenance(header, ix, &written);
        cda::commit_stated(st, resources, Vec::new(), &header.sender, provenance).await
    }

    /// AA, with the notes of the mapping and one warning per profile rule let through (the
    /// detail is then of type W, so a platform sees that the message was accepted with issues).
    fn accept(
        &self,
        h: &Header,
        ix: &Interaction,
        mut notes: Vec<String>,
        written: Vec<String>,
        warnings: Vec<String>,
        soap: Option<Soap>,
    ) -> Reply {
        if warnings.is_empty() {
            return self.ack(h, ix, true, &notes.join("; "), written, soap);
        }
        if notes.is_empty() {
            notes.push(format!(
                "{} ({}): {} resources written",
                ix.title,
                ix.part,
                written.len()
            ));
        }
        notes.extend(warnings);
        let detail = notes.join("; ");
        let xml = render::ack(
            &self.interactions,
            h,
            render::Outcome::Warned,
            &detail,
            &v3_now(),
        );
        Reply {
            xml: wrap(xml, soap),
            accepted: true,
            interaction: ix.id.clone(),
            soap,
            detail,
            written,
        }
    }

    fn ack(
        &self,
        h: &Header,
        ix: &Interaction,
        ok: bool,
        detail: &str,
        written: Vec<String>,
        soap: Option<Soap>,
    ) -> Reply {
        let detail = if detail.is_empty() {
            format!(
                "{} ({}): {} resources written",
                ix.title,
                ix.part,
                written.len()
            )
        } else {
            detail.to_string()
        };
        let outcome = if ok {
            render::Outcome::Accepted
        } else {
            render::Outcome::Refused
        };
        let xml = render::ack(&self.interactions, h, outcome, &detail, &v3_now());
        Reply {
            xml: wrap(xml, soap),
            accepted: ok,
            interaction: ix.id.clone(),
            soap,
            detail,
            written,
        }
    }

    fn refuse(&self, h: &Header, reason: &str, soap: Option<Soap>) -> Reply {
        let xml = render::ack(
            &self.interactions,
            h,
            render::Outcome::Refused,
            reason,
            &v3_now(),
        );
        Reply {
            xml: wrap(xml, soap),
            accepted: false,
            interaction: h.interaction.clone(),
            soap,
            detail: reason.to_string(),
            written: Vec::new(),
        }
    }

    /// Parses, dispatches and maps without storing or searching; the acknowledgement the
    /// mapping alone decides (AA when the message maps, AE naming why not). For fuzzing and
    /// benchmarks.
    pub fn dispatch(&self, bytes: &[u8]) -> String {
        let mut soap = None;
        match self.plan(bytes, &mut soap) {
            Ok((h, ix, _)) => render::ack(
                &self.interactions,
                &h,
                render::Outcome::Accepted,
                &ix.title,
                &v3_now(),
            ),
            Err(r) => render::ack(
                &self.interactions,
                &r.header,
                render::Outcome::Refused,
                &r.reason,
                &v3_now(),
            ),
        }
    }

    /// An AE for a request that could not be read at all (too large).
    pub fn refusal(&self, reason: &str) -> String {
        render::ack(
            &self.interactions,
            &Header::default(),
            render::Outcome::Refused,
            reason,
            &v3_now(),
        )
    }

    /// `GET Patient/{id}/$hl7v3`: the person as a PRPA_IN201306UV02 response.
    pub fn person_response(&self, patient: &Value) -> Option<String> {
        let q = self
            .interactions
            .by_id
            .get("PRPA_IN201305UV02")
            .and_then(|i| i.query.as_ref())?;
        let h = Header {
            id_root: "2.16.156.10011.2.5.1.1".into(),
            id: String::new(),
            interaction: "PRPA_IN201305UV02".into(),
            root_name: "PRPA_IN201305UV02".into(),
            sender: String::new(),
            receiver: String::new(),
        };
        Some(render::query_response(
            &self.interactions,
            q,
            &h,
            "",
            std::slice::from_ref(patient),
            &v3_now(),
        ))
    }
}

/// One line per profile rule let through and per stored value kept over the message's: the
/// acknowledgement's warnings (detail type W).
fn warnings(accepted: &[LetThrough], conflicts: &[Conflict]) -> Vec<String> {
    let mut out: Vec<String> = accepted
        .iter()
        .map(|a| match &a.issue.expression {
            Some(x) => format!("warning: {} at {x}", a.issue.diagnostics),
            None => format!("warning: {}", a.issue.diagnostics),
        })
        .collect();
    out.extend(
        conflicts
            .iter()
            .map(|c| format!("warning: {}", c.describe())),
    );
    out
}

/// The Provenance of a write message: what it wrote, from which message and sender. Issues
/// accepted with a warning and stored values kept are added to it by [`cda::commit_stated`].
fn provenance(h: &Header, ix: &Interaction, written: &[String]) -> Value {
    let mut targets: Vec<Value> = written.iter().map(|w| json!({"reference": w})).collect();
    if targets.is_empty() {
        targets.push(json!({"display": "nothing"}));
    }
    let sender = if h.sender.is_empty() {
        crate::ingest::rule_policy::UNIDENTIFIED
    } else {
        &h.sender
    };
    json!({
        "resourceType": "Provenance",
        "id": resource_id("Provenance", FACILITY, &format!("v3|{}|{}", h.id_root, h.id)),
        "target": targets,
        "recorded": cda::now_instant(),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}]},
        "agent": [
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
             "who": {"display": format!("sender {sender}")}},
            {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler"}]},
             "who": {"display": "Huitong HL7 v3 ingest"}}
        ],
        "entity": [{"role": "source", "what": {"display": format!("HL7 v3 message {}|{} ({} {}, {})", h.id_root, h.id, ix.id, ix.title, ix.part)}}]
    })
}

fn xml_reason(e: &XmlError) -> String {
    format!("the message was not read: {e}")
}

fn describe(e: &FhirError) -> String {
    e.issues
        .iter()
        .take(3)
        .map(|i| match &i.expression {
            Some(x) => format!("{} at {x}", i.diagnostics),
            None => i.diagnostics.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fills every resource rule of a write interaction; returns the resources, each with how the
/// message stands to it: the interaction's `subject` rules are its subject, the other resources
/// keyed by their identifiers are records it names, the rest (keyed by the message) its own.
fn fill_all(
    ix: &Interaction,
    root: Node<'_, '_>,
    vocab: &xml::Vocabulary,
    header: &Header,
) -> Result<Vec<(Value, Statement)>, String> {
    let mut names: HashMap<String, (String, String)> = HashMap::new();
    let mut filled = Vec::new();
    for rule in &ix.resources {
        let nodes = rule.at.nodes(root);
        if nodes.is_empty() {
            if rule.required {
                return Err(format!(
                    "{} is missing ({} of {})",
                    rule.at, rule.name, ix.id
                ));
            }
            continue;
        }
        for (k, node) in nodes.into_iter().enumerate() {
            let f = fill(rule, node, vocab).map_err(|e| e.to_string())?;
            if f.placed == 0 && !rule.required {
                continue;
            }
            let mut r = f.resource;
            let mut standing = Standing::Owned;
            let id = match identifier_key(&r) {
                Some(key) if rule.id_from_identifier => {
                    standing = Standing::Named;
                    resource_id(&rule.resource_type, FACILITY, &key)
                }
                None if rule.id_from_identifier && rule.required => {
                    return Err(format!(
                        "line {}: {} has no identifier: the {} cannot be identified (missing id/item)",
                        line(node),
                        rule.at,
                        rule.resource_type
                    ));
                }
                _ => resource_id(
                    &rule.resource_type,
                    FACILITY,
                    &format!("{}|{}|{}|{k}", header.id_root, header.id, rule.name),
                ),
            };
            r.insert("id".into(), json!(id));
            if k == 0 {
                names.insert(rule.name.clone(), (rule.resource_type.clone(), id));
            }
            if ix.subject.contains(&rule.name) {
                standing = Standing::Subject;
            }
            let statement = Statement {
                standing,
                assumed: f.assumed,
                ..Statement::default()
            };
            filled.push((rule, r, statement));
        }
    }
    let mut out = Vec::new();
    for (rule, mut r, statement) in filled {
        link(rule, &mut r, &names);
        out.push((Value::Object(r), statement));
    }
    Ok(out)
}

/// One query parameter's search value.
fn query_value(
    p: &interactions::QueryParam,
    n: Node<'_, '_>,
    vocab: &xml::Vocabulary,
) -> Result<Option<String>, String> {
    use crate::mapping::xml::Datatype as D;
    Ok(match p.datatype {
        D::II => xml::identifier(n, vocab)?.map(|i| {
            format!(
                "{}|{}",
                i["system"].as_str().unwrap_or(""),
                i["value"].as_str().unwrap_or("")
            )
        }),
        D::CD => {
            let code = attr(n, "code");
            match (&p.vocabulary, code) {
                (Some(t), Some(c)) => Some(
                    vocab
                        .tables
                        .get(t)
                        .and_then(|m| m.get(c))
                        .cloned()
                        .ok_or_else(|| {
                            format!("line {}: code '{c}' is not in vocabulary '{t}'", line(n))
                        })?,
                ),
                (None, Some(c)) => Some(c.to_string()),
                _ => None,
            }
        }
        D::EN => xml::human_name(n).and_then(|h| h["text"].as_str().map(str::to_string)),
        D::TS => match xml::timestamp(n, "date")? {
            Some(v) => v.as_str().map(str::to_string),
            None => None,
        },
        _ => crate::xml::text(n).or_else(|| attr(n, "value").map(str::to_string)),
    })
}

/// Runs a FHIR search and returns the matching resources.
pub async fn search(
    st: &AppState,
    resource_type: &str,
    params: &[(String, String)],
    count: usize,
) -> Result<Vec<Value>, FhirError> {
    let params = st.identities.current().canonicalise_params(params);
    let mut with_count = params.clone();
    with_count.push(("_count".into(), count.to_string()));
    // The callers want the records, not how many there are.
    with_count.push(("_total".into(), "none".into()));
    let opts = crate::search::ParseOptions::default();
    let plan = crate::search::parse(&[resource_type.to_string()], &with_count, &st.search, &opts)?;
    let page = crate::search::run::execute(st.store.as_ref(), &plan)
        .await
        .map_err(crate::transaction::store_error)?;
    Ok(page
        .matches
        .iter()
        .filter_map(|v| v.body.as_ref().and_then(|b| serde_json::from_slice(b).ok()))
        .collect())
}

/// Wraps a response in the request's SOAP envelope.
fn wrap(xml: String, soap: Option<Soap>) -> String {
    let body = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .map(|s| s.trim_start().to_string())
        .unwrap_or(xml.clone());
    match soap {
        None => xml,
        Some(Soap::V11) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soap:Envelope xmlns:soap=\"{SOAP11}\"><soap:Body>{body}</soap:Body></soap:Envelope>\n"
        ),
        Some(Soap::V12) => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soap:Envelope xmlns:soap=\"{SOAP12}\"><soap:Body>{body}</soap:Body></soap:Envelope>\n"
        ),
    }
}
