//! CDA R2 documents (WS/T 500, C-CDA) into FHIR: `convert` (bytes -> resources + document
//! Bundle, by the tables of `mappings/cda/`), then [`commit`]: identifier systems canonicalised,
//! structural and policy validation of every resource, one `transaction::apply`. Every entry point
//! (`POST /cda`, `huitong ingest cda`, the v3 document register) calls [`CdaService::ingest`].
//!
//! Invariants: a document is stored whole or not at all; the answer names the document's
//! DocumentReference only after the commit; a refused document writes nothing.

pub mod cli;
pub mod convert;
pub mod table;

use crate::mapping::ids::resource_id;
use crate::model::{FhirError, Issue};
use crate::rest::AppState;
use crate::transaction::{self, Entry, Method, Scope, Target};
use crate::xml::Limits;
use convert::{CdaError, Converted};
use serde_json::{Map, Value, json};
use table::Tables;

/// The CDA side of a running gateway.
pub struct CdaService {
    tables: Tables,
    /// Why the tables did not load (CDA is then refused with this reason).
    load_error: Option<String>,
    pub limits: Limits,
}

/// A committed document.
#[derive(Debug, Clone)]
pub struct Stored {
    pub converted: Converted,
    /// The Provenance written with it.
    pub provenance_id: String,
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
            },
            Err(errors) => {
                let e = errors.join("\n");
                tracing::warn!(dir = %mappings_dir.display(), errors = %e, "CDA mapping tables not loaded: CDA documents will be refused");
                CdaService {
                    tables: Tables::default(),
                    load_error: Some(e),
                    limits,
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

    /// Converts, validates and stores one document.
    pub async fn ingest(&self, st: &AppState, bytes: &[u8]) -> Result<Stored, FhirError> {
        let converted = self.convert(bytes)?;
        self.store(st, converted).await
    }

    /// Validates and stores an already converted document (with its Provenance).
    pub async fn store(&self, st: &AppState, converted: Converted) -> Result<Stored, FhirError> {
        let provenance = provenance(&converted);
        let provenance_id = provenance["id"].as_str().unwrap_or_default().to_string();
        let mut all = converted.resources.clone();
        all.push(converted.bundle.clone());
        all.push(provenance);
        commit(st, all).await?;
        Ok(Stored {
            converted,
            provenance_id,
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

/// Canonicalises, validates and writes resources (PUT by id) in one transaction; the first
/// invalid resource refuses them all.
pub async fn commit(
    st: &AppState,
    resources: Vec<Value>,
) -> Result<Vec<transaction::Effect>, FhirError> {
    let identities = st.identities.current();
    let mut entries = Vec::with_capacity(resources.len());
    for mut r in resources {
        identities.canonicalise_resource(&mut r);
        let ty = r["resourceType"].as_str().unwrap_or_default().to_string();
        let id = r["id"].as_str().unwrap_or_default().to_string();
        let structural = crate::model::check_resource(
            &r,
            crate::definitions::Definitions::core(),
            Default::default(),
        );
        let checked = if structural.is_empty() {
            crate::rest::check_write(st, &r)
        } else {
            Err(FhirError {
                status: 422,
                issues: structural,
            })
        };
        if let Err(e) = checked {
            let mut out = FhirError::new(
                422,
                "invariant",
                format!("{ty}/{id} is not valid: {}", describe(&e)),
            );
            out.issues
                .extend(e.issues.into_iter().map(|i| i.within(&ty)));
            return Err(out);
        }
        entries.push(Entry::new(Method::Put, &ty, Target::Id(id), Some(r)));
    }
    transaction::apply(
        st.store.as_ref(),
        &st.search,
        entries,
        Scope::Bundle,
        Default::default(),
    )
    .await
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
