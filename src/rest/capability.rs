//! `GET /metadata`: the CapabilityStatement, generated from what the server really implements.

use super::AppState;
use super::http::{self, Params, finish, json_response};
use crate::config::Settings;
use crate::definitions::Definitions;
use crate::search::params::{ParamKind, composite_indexable};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

/// Instance and type interactions every resource type supports today.
const INTERACTIONS: [&str; 9] = [
    "search-type",
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
];

/// The core search parameters of a type that search supports: not the special ones, nor the
/// composites it cannot index (see `search::params::composite_indexable`).
fn search_params(ty: &str) -> Vec<Value> {
    let defs = Definitions::core();
    let kind_of = |url: &str| {
        defs.search_parameters(ty)
            .find(|d| d.url == url)
            .and_then(|d| ParamKind::from_code(&d.kind))
    };
    let indexable = |p: &crate::definitions::SearchParamDef| {
        let kinds: Option<Vec<ParamKind>> = p.component.iter().map(|(u, _)| kind_of(u)).collect();
        kinds.is_some_and(|k| composite_indexable(&k))
    };
    let mut params: Vec<Value> = defs
        .search_parameters(ty)
        .filter(|p| p.kind != "special" && (p.kind != "composite" || indexable(p)))
        .filter(|p| p.code != "_query")
        .map(|p| {
            let mut v = json!({"name": p.code, "definition": p.url, "type": p.kind});
            if crate::search::fulltext::is_fulltext(&p.code) {
                v["documentation"] = json!(format!(
                    "simple full-text: every word must occur (at a word start; Chinese anywhere), \
                     commas for alternatives; at most {} bytes of text indexed per resource",
                    crate::search::fulltext::MAX_TEXT_BYTES
                ));
            }
            v
        })
        .collect();
    // `_list` has no SearchParameter in R4 core; it is defined by the search page itself.
    params.push(json!({"name": "_list", "type": "special",
        "documentation": "the entries of List/[id] (List.entry.item); functional lists ($current-allergies, ...) are not supported"}));
    params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    params
}

/// Renders the statement once at start.
pub fn render(settings: &Settings) -> Bytes {
    let resources: Vec<Value> = Definitions::core()
        .resource_types()
        .map(|t| {
            json!({
                "type": t,
                "interaction": INTERACTIONS.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "referencePolicy": ["literal", "logical"],
                "searchParam": search_params(t),
            })
        })
        .collect();
    let statement = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "software": {"name": "Huitong", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Huitong FHIR R4 gateway", "url": settings.public_base_url.clone().unwrap_or_else(|| settings.base_path.clone())},
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search: every R4 parameter type (composites of a token and one other value); token :in, :not-in, :above and :below through the terminology service; strict unless Prefer: handling=lenient.",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}, {"code": "search-system"}],
        }],
    });
    Bytes::from(serde_json::to_vec(&statement).unwrap_or_default())
}

pub async fn metadata(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = (|| {
        let params = Params::parse(q.as_deref());
        let format = http::negotiate(&headers, &params)?;
        params.only(&["mode"])?;
        if format.pretty {
            let v: Value = serde_json::from_slice(&st.capability).unwrap_or(Value::Null);
            return Ok(json_response(StatusCode::OK, http::body_bytes(&v, format)));
        }
        Ok(json_response(StatusCode::OK, st.capability.clone()))
    })();
    finish(result, "capabilities")
}
