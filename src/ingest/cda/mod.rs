//! CDA R2 documents (WS/T 500, C-CDA) into FHIR: `convert` (bytes -> resources + document
//! Bundle, by the tables of `mappings/cda/`), then [`commit_stated`]: the records the header
//! names (patient, authors, custodian, visit) resolved to and merged into their stored versions
//! ([`crate::ingest::merge`]), identifier systems canonicalised, structural and policy
//! validation of every resource, one `transaction::apply`. Every entry point
//! (`POST /cda`, `huitong ingest cda`, the v3 document register) calls [`CdaService::ingest`].
//!
//! Invariants: a document is stored whole or not at all; the answer names the document's
//! DocumentReference only after the commit; a refused document writes nothing.

pub mod cli;
pub mod convert;
pub mod table;

use crate::ingest::merge::{Conflict, Standing, Statement};
use crate::ingest::rule_policy::{self, AcceptedViolations, LetThrough};
use crate::ingest::stored::{self, type_and_id};
use crate::mapping::ids::resource_id;
use crate::model::{FhirError, Issue};
use crate::rest::AppState;
use crate::store::StoredVersion;
use crate::transaction::{self, Entry, Method, Scope, Target};
use crate::xml::Limits;
use convert::{CdaError, Converted};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use table::Tables;

/// The CDA side of a running gateway.
pub struct CdaService {
    tables: Tables,
    /// Why the tables did not load (CDA is then refused with this reason).
    load_error: Option<String>,
    pub limits: Limits,
    /// Profile rule violations let through on ingest (CDA and HL7 v3), for `/metrics`.
    pub accepted_violations: AcceptedViolations,
}

/// A committed document.
#[derive(Debug, Clone)]
pub struct Stored {
    pub converted: Converted,
    /// The Provenance written with it.
    pub provenance_id: String,
    /// Profile rules it breaks that the sender's policy let through (recorded in the Provenance).
    pub accepted: Vec<LetThrough>,
    /// Values of the records it names that the store kept over the document's (in the
    /// Provenance too).
    pub conflicts: Vec<Conflict>,
    /// `Type/id` of what was written (after resolving the named records to the stored ones).
    pub written: Vec<String>,
}

/// The instant now, as FHIR `instant`.
pub fn now_instant() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap_or_default()
}

impl CdaService {
    /// Loads `mappings_dir/cda/`; a broken table is logged and CDA refused, the gateway starts.
    pub fn start(mappings_dir: &std::path::Path, max_bytes: usize) -> CdaService {
        let limits = Limits {
            max_bytes,
            ..Limits::default()
        };
        match Tables::load(mappings_dir) {
            Ok(tables) => CdaService {
                tables,
                load_error: None,
                limits,
                accepted_violations: Default::default(),
            },
            Err(errors) => {
                let e = errors.join("\n");
                tracing::warn!(dir = %mappings_dir.display(), errors = %e, "CDA mapping tables not loaded: CDA documents will be refused");
                CdaService {
                    tables: Tables::default(),
                    load_error: Some(e),
                    limits,
                    accepted_violations: Default::default(),
                }
            }
        }
    }

    /// The tables in force.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Converts without storing.
    pub fn convert(&self, bytes: &[u8]) -> Result<Converted, FhirError> {
        if let Some(e) = &self.load_error {
            return Err(FhirError::new(
                503,
                "not-supported",
                format!("CDA mapping tables are not loaded: {e}"),
            ));
        }
        convert::convert(bytes, &self.tables, &self.limits, &now_instant()).map_err(refusal)
    }

    /// Converts, validates and stores one document. A bare document names no sending system:
    /// its sender (for `[ingest-rules-by-sender]`) is its custodian, the organisation keeping it.
    pub async fn ingest(&self, st: &AppState, bytes: &[u8]) -> Result<Stored, FhirError> {
        let converted = self.convert(bytes)?;
        let sender = custodian(&converted);
        self.store(st, converted, &sender).await
    }

    /// Validates and stores an already converted document (with its Provenance) from `sender`.
    pub async fn store(
        &self,
        st: &AppState,
        converted: Converted,
        sender: &str,
    ) -> Result<Stored, FhirError> {
        let provenance = provenance(&converted);
        let provenance_id = provenance["id"].as_str().unwrap_or_default().to_string();
        // The header's patient, authors, custodian and visit are records the document names;
        // everything else is the document's own.
        let stated = converted
            .resources
            .iter()
            .map(|r| {
                let statement = match converted.named.get(&type_and_id(r)) {
                    Some(assumed) => Statement {
                        standing: Standing::Named,
                        assumed: assumed.clone(),
                        ..Statement::default()
                    },
                    None => Statement::new(Standing::Owned),
                };
                (r.clone(), statement)
            })
            .collect();
        let done = commit_stated(
            st,
            stated,
            vec![converted.bundle.clone()],
            sender,
            provenance,
        )
        .await?;
        Ok(Stored {
            converted,
            provenance_id,
            accepted: done.accepted,
            conflicts: done.conflicts,
            written: done.written,
        })
    }
}

/// A conversion error as the OperationOutcome a client sees.
pub fn refusal(e: CdaError) -> FhirError {
    let (status, code) = match &e {
        CdaError::Xml(crate::xml::XmlError::TooLarge { .. }) => (413, "too-costly"),
        CdaError::Xml(crate::xml::XmlError::Dtd { .. }) => (400, "security"),
        CdaError::Xml(_) => (400, "structure"),
        CdaError::NotCda(_) | CdaError::NoTable(_) => (422, "not-supported"),
        CdaError::Rule(_) | CdaError::Missing { .. } => (422, "required"),
    };
    FhirError::new(status, code, e.to_string())
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

/// What [`commit_stated`] wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    /// `Type/id` of the stated resources, as written (resolved to the stored ids).
    pub written: Vec<String>,
    /// Profile rules the sender's policy let through.
    pub accepted: Vec<LetThrough>,
    /// Values of named records the store kept over the message's.
    pub conflicts: Vec<Conflict>,
}

/// How often a merge is recomputed when a record it merged into changed before the commit.
const MERGE_ATTEMPTS: usize = 4;

/// The one write path of HL7 v3 and CDA ingest: every resource the ingest states, with how it
/// stands to it ([`Statement`]), is resolved to the stored resource with one of its identifiers
/// (so one person is one Patient whichever number a message keys it by), merged into its stored
/// version by the rules of [`crate::ingest::merge`] (a resource the ingest owns is written as
/// stated), and committed with `containers` (stored as they are: a document Bundle) and the
/// `provenance`, which records the conflicts. Each merged resource is written `If-Match` the
/// version it was merged into, so a concurrent write is never overwritten: the merge is
/// recomputed on the newer version instead (a few times, then the 412 is the answer).
pub async fn commit_stated(
    st: &AppState,
    stated: Vec<(Value, Statement)>,
    containers: Vec<Value>,
    sender: &str,
    mut provenance: Value,
) -> Result<Committed, FhirError> {
    let renames = stored::resolve(st, stated.iter().map(|(r, s)| (r, s))).await?;
    let mut unique = HashSet::new();
    let mut kept: Vec<(Value, Statement)> = Vec::with_capacity(stated.len());
    for (mut r, s) in stated {
        st.identities.current().canonicalise_resource(&mut r);
        stored::rename(&mut r, &renames);
        // Two elements naming one entity (the same identifier) are one resource: the first.
        if unique.insert(type_and_id(&r)) {
            kept.push((r, s));
        }
    }
    stored::rename(&mut provenance, &renames);
    let written: Vec<String> = kept.iter().map(|(r, _)| type_and_id(r)).collect();
    // Documents changing one patient merge one after the other (see `stored::Merges`).
    let mut merges = stored::Merges::lock(st, kept.iter().map(|(r, s)| (r, s))).await?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut resources = Vec::with_capacity(kept.len() + containers.len());
        let mut preconditions = HashMap::new();
        let mut conflicts = Vec::new();
        for (i, (r, s)) in kept.iter().enumerate() {
            if s.standing == Standing::Owned {
                resources.push(r.clone());
                continue;
            }
            let onto = merges.onto(st, i, r, s).await?;
            conflicts.extend(onto.conflicts);
            if !onto.foreign {
                preconditions.insert(type_and_id(r), (onto.if_match, onto.read));
                resources.push(onto.resource);
            }
        }
        resources.extend(containers.iter().cloned());
        let mut prov = provenance.clone();
        stored::record_conflicts(&mut prov, &conflicts);
        match commit_checked(st, resources, &preconditions, sender, prov).await {
            Ok(accepted) => {
                return Ok(Committed {
                    written,
                    accepted,
                    conflicts,
                });
            }
            Err(e) if e.status == 412 && attempt < MERGE_ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Canonicalises, validates (with the profiles the translation claims) and writes resources (PUT
/// by id) in one transaction with the `provenance` of the ingest; the first invalid resource
/// refuses them all. Profile rules `sender`'s policy lets through are returned, recorded in the
/// Provenance's contained OperationOutcome and counted in `/metrics` once committed.
async fn commit_checked(
    st: &AppState,
    resources: Vec<Value>,
    preconditions: &HashMap<String, (u64, Option<Arc<StoredVersion>>)>,
    sender: &str,
    mut provenance: Value,
) -> Result<Vec<LetThrough>, FhirError> {
    let sender = if sender.is_empty() {
        rule_policy::UNIDENTIFIED
    } else {
        sender
    };
    let mut entries = Vec::with_capacity(resources.len() + 1);
    let mut accepted = Vec::new();
    for r in resources {
        // A document Bundle repeats the resources stored on their own: what it lets through is
        // already recorded once, for the resource itself.
        let container = r["resourceType"] == "Bundle";
        let (mut entry, mut let_through) = checked_entry(st, r, sender)?;
        if let Target::Id(id) = &entry.target
            && let Some((version, read)) =
                preconditions.get(&format!("{}/{id}", entry.resource_type))
        {
            entry.if_match = Some(*version);
            // The version merged onto, so the ownership check does not read it again.
            entry.read_before = Some(read.clone());
        }
        entries.push(entry);
        if !container {
            accepted.append(&mut let_through);
        }
    }
    record_accepted(&mut provenance, &accepted);
    let (entry, _) = checked_entry(st, provenance, sender)?;
    entries.push(entry);
    crate::security::ownership::claim(st, &mut entries).await?;
    transaction::apply(
        st.store.as_ref(),
        &st.search,
        entries,
        Scope::Bundle,
        Default::default(),
    )
    .await?;
    st.hl7v3.cda.accepted_violations.record(&accepted);
    Ok(accepted)
}

/// One resource canonicalised and validated into its PUT, with the rules its sender's policy
/// let through; or the refusal naming the resource, the element, the profile and the rule.
fn checked_entry(
    st: &AppState,
    mut r: Value,
    sender: &str,
) -> Result<(Entry, Vec<LetThrough>), FhirError> {
    st.identities.current().canonicalise_resource(&mut r);
    let ty = r["resourceType"].as_str().unwrap_or_default().to_string();
    let id = r["id"].as_str().unwrap_or_default().to_string();
    let structural = crate::model::check_resource(
        &r,
        crate::definitions::Definitions::core(),
        Default::default(),
    );
    let checked = if structural.is_empty() {
        crate::rest::check_ingest(st, &r).map(|_| Vec::new())
    } else {
        Err(FhirError {
            status: 422,
            issues: structural,
        })
    };
    let let_through = match checked {
        Ok(none) => none,
        Err(e) => rule_policy::judge(&st.settings, sender, &format!("{ty}/{id}"), e.issues)
            .map_err(|issues| {
                let e = FhirError {
                    status: 422,
                    issues,
                };
                let mut out = FhirError::new(
                    422,
                    "invariant",
                    format!("{ty}/{id} is not valid: {}", describe(&e)),
                );
                // Validator locations already start with the type (`Patient.identifier[0]`).
                let typed = |i: &Issue| {
                    i.expression
                        .as_deref()
                        .is_some_and(|x| x == ty || x.starts_with(&format!("{ty}.")))
                };
                out.issues.extend(
                    e.issues
                        .into_iter()
                        .map(|i| if typed(&i) { i } else { i.within(&ty) }),
                );
                out
            })?,
    };
    Ok((
        Entry::new(Method::Put, &ty, Target::Id(id), Some(r)),
        let_through,
    ))
}

/// Adds the rules let through to the Provenance's contained OperationOutcome (one warning each,
/// located at the element), so the stored record says what was accepted and why.
fn record_accepted(provenance: &mut Value, accepted: &[LetThrough]) {
    if accepted.is_empty() {
        return;
    }
    let warnings: Vec<Value> = accepted
        .iter()
        .map(|a| {
            let mut w = json!({
                "severity": "warning",
                "code": "invariant",
                "details": {"text": format!("rule {} let through for sender '{}'", a.rule, a.sender)},
                "diagnostics": a.issue.diagnostics,
            });
            if let Some(x) = &a.issue.expression {
                w["expression"] = json!([x]);
            }
            w
        })
        .collect();
    let Some(p) = provenance.as_object_mut() else {
        return;
    };
    let contained = p
        .entry("contained")
        .or_insert_with(|| json!([]))
        .as_array_mut();
    let Some(contained) = contained else {
        return;
    };
    match contained
        .iter_mut()
        .find(|c| c["resourceType"] == "OperationOutcome" && c["id"] != "kept")
    {
        Some(oo) => {
            if let Some(issues) = oo["issue"].as_array_mut() {
                issues.extend(warnings);
            }
        }
        None => {
            contained.push(
                json!({"resourceType": "OperationOutcome", "id": "issues", "issue": warnings}),
            );
            if let Some(entity) = p.get_mut("entity").and_then(Value::as_array_mut) {
                entity.push(json!({"role": "derivation", "what": {"reference": "#issues", "display": "profile rules accepted with a warning"}}));
            }
        }
    }
}

/// The sender label of a bare CDA document: its custodian's first identifier value.
fn custodian(c: &Converted) -> String {
    let Some(reference) = c
        .resources
        .iter()
        .find(|r| r["resourceType"] == "Composition")
        .and_then(|comp| comp.pointer("/custodian/reference"))
        .and_then(Value::as_str)
    else {
        return String::new();
    };
    c.resources
        .iter()
        .find(|r| type_and_id(r) == reference)
        .and_then(|o| o.pointer("/identifier/0/value"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The Provenance of a document: what it wrote and what was not placed (a contained
/// OperationOutcome with one issue per value, and one per repair of the XML text).
fn provenance(c: &Converted) -> Value {
    let id = resource_id("Provenance", "cda", &c.key);
    let mut targets: Vec<Value> = c
        .resources
        .iter()
        .chain(std::iter::once(&c.bundle))
        .map(|r| json!({"reference": format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default())}))
        .collect();
    if targets.is_empty() {
        targets.push(json!({"display": "nothing"}));
    }
    let mut p = Map::new();
    p.insert("resourceType".into(), json!("Provenance"));
    p.insert("id".into(), json!(id));
    let mut entity = vec![json!({
        "role": "source",
        "what": {"reference": format!("DocumentReference/{}", c.document_reference_id), "display": format!("CDA document {} ({})", c.key, c.table)}
    })];
    let mut issues: Vec<Value> = c
        .unmapped
        .iter()
        .map(|u| json!({"severity": "information", "code": "informational", "details": {"text": format!("{}: {}", u.reason, u.value)}, "location": [u.location]}))
        .collect();
    issues.extend(
        c.repairs
            .iter()
            .map(|r| json!({"severity": "warning", "code": "structure", "details": {"text": r}})),
    );
    if !issues.is_empty() {
        p.insert(
            "contained".into(),
            json!([{"resourceType": "OperationOutcome", "id": "unmapped", "issue": issues}]),
        );
        entity.push(json!({"role": "derivation", "what": {"reference": "#unmapped", "display": "values no rule placed, repairs of the XML text"}}));
    }
    p.insert("target".into(), Value::Array(targets));
    p.insert("recorded".into(), json!(now_instant()));
    p.insert(
        "activity".into(),
        json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}]}),
    );
    p.insert(
        "agent".into(),
        json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler"}]},
                "who": {"display": "Huitong CDA ingest"}}]),
    );
    p.insert("entity".into(), Value::Array(entity));
    Value::Object(p)
}

/// The original bytes of a stored DocumentReference's CDA attachment.
pub fn original_cda(docref: &Value) -> Result<Vec<u8>, FhirError> {
    let contents = docref
        .get("content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in contents {
        let a = &c["attachment"];
        if a["contentType"]
            .as_str()
            .is_some_and(|t| t.starts_with("application/hl7-cda+xml"))
            && let Some(d) = a["data"].as_str()
        {
            return decode_base64(d).ok_or_else(|| {
                FhirError::new(
                    500,
                    "exception",
                    "the stored CDA attachment is not valid base64",
                )
            });
        }
    }
    Err(FhirError {
        status: 404,
        issues: vec![Issue::error(
            "not-found",
            "this DocumentReference carries no CDA document (content.attachment with contentType application/hl7-cda+xml and data)",
        )],
    })
}

/// Standard base64 (padding optional, whitespace ignored).
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\n' | b'\r' | b'\t' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_round_trips() {
        for s in [&b""[..], b"a", b"ab", b"abc", "张三<x/>".as_bytes()] {
            let e = crate::mapping::datatypes::base64(s);
            assert_eq!(super::decode_base64(&e).unwrap(), s);
        }
        assert!(super::decode_base64("a*b").is_none());
    }
}
