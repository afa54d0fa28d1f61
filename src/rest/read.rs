//! read, vread and history (instance, type, system), with `_summary` and `_elements` on reads.

use super::http::{self, ApiResult, Params, finish, json_response};
use super::{AppState, check_id, check_type};
use crate::definitions::{Definitions, StructureKind};
use crate::model::{self, FhirError};
use crate::store::{HistoryQuery, HistoryScope, StoredVersion};
use crate::transaction::store_error;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;

pub async fn read(
    State(st): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    finish(
        read_inner(&st, &ty, &id, None, q.as_deref(), &headers).await,
        "read",
    )
}

pub async fn vread(
    State(st): State<AppState>,
    Path((ty, id, vid)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let version = vid
        .parse::<u64>()
        .map_err(|_| FhirError::new(400, "value", format!("version '{vid}' is not a number")));
    let result = match version {
        Ok(v) => read_inner(&st, &ty, &id, Some(v), q.as_deref(), &headers).await,
        Err(e) => Err(e.into()),
    };
    finish(result, "vread")
}

async fn read_inner(
    st: &AppState,
    ty: &str,
    id: &str,
    version: Option<u64>,
    q: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult {
    let params = Params::parse(q);
    let format = http::negotiate(headers, &params)?;
    params.only(&["_summary", "_elements"])?;
    check_type(ty)?;
    check_id(id)?;
    let found = match version {
        None => st.store.read(ty, id).await,
        Some(v) => st.store.vread(ty, id, v).await,
    }
    .map_err(store_error)?;
    let Some(v) = found else {
        let what = version.map_or(format!("{ty}/{id}"), |n| format!("{ty}/{id}/_history/{n}"));
        return Err(FhirError::new(404, "not-found", format!("{what} is not known")).into());
    };
    if v.is_deleted() {
        let mut resp = super::http::ApiError(FhirError::new(
            410,
            "deleted",
            format!("{ty}/{id} was deleted (version {})", v.version),
        ))
        .into_response();
        http::version_headers(&mut resp, &v);
        return Ok(resp);
    }
    if version.is_none()
        && let Some(inm) = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|h| h.to_str().ok())
        && http::parse_etag(inm.trim()) == Some(v.version)
    {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        http::version_headers(&mut resp, &v);
        return Ok(resp);
    }
    let mut resp = match subset(&params)? {
        None if !format.pretty => json_response(StatusCode::OK, v.body.clone().unwrap_or_default()),
        view => {
            let mut value = parse_stored(&v)?;
            if let Some(view) = view {
                value = view.apply(value);
            }
            json_response(StatusCode::OK, http::body_bytes(&value, format))
        }
    };
    http::version_headers(&mut resp, &v);
    Ok(resp)
}

/// Parses a stored body (which the server wrote itself, so a failure is a server fault).
pub(crate) fn parse_stored(v: &StoredVersion) -> Result<Value, FhirError> {
    serde_json::from_slice(v.body.as_deref().unwrap_or(b"{}")).map_err(|e| {
        FhirError::new(
            500,
            "exception",
            format!("stored {}/{} is unreadable: {e}", v.resource_type, v.id),
        )
    })
}

/// A reduced view of a resource requested with `_summary` or `_elements`.
pub(super) enum View {
    Summary,
    Text,
    Data,
    Elements(Vec<String>),
}

pub(super) fn subset(params: &Params) -> Result<Option<View>, FhirError> {
    let view = match params.get("_summary") {
        None | Some("false") => None,
        Some("true") => Some(View::Summary),
        Some("text") => Some(View::Text),
        Some("data") => Some(View::Data),
        Some("count") => {
            return Err(FhirError::new(
                400,
                "invalid",
                "_summary=count applies to searches and history, not to a read",
            ));
        }
        Some(o) => {
            return Err(FhirError::new(
                400,
                "value",
                format!("_summary '{o}' is not one of true, text, data, count, false"),
            ));
        }
    };
    if let Some(list) = params.get("_elements") {
        if view.is_some() {
            return Err(FhirError::new(
                400,
                "invalid",
                "use either _summary or _elements, not both",
            ));
        }
        let names: Vec<String> = list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if names.is_empty() {
            return Err(FhirError::new(400, "value", "_elements names no element"));
        }
        return Ok(Some(View::Elements(names)));
    }
    Ok(view)
}

impl View {
    pub(super) fn apply(&self, resource: Value) -> Value {
        let Value::Object(obj) = resource else {
            return resource;
        };
        let ty = obj
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let defs = Definitions::core();
        let out = match self {
            View::Data => {
                let mut o = obj;
                o.shift_remove("text");
                return Value::Object(o);
            }
            View::Summary => summary_of(obj, &ty, defs),
            View::Text => keep_top(obj, |k| {
                k == "text"
                    || defs
                        .element(&format!("{ty}.{k}"))
                        .is_some_and(|e| e.min >= 1)
            }),
            View::Elements(names) => keep_top(obj, |k| names.iter().any(|n| n == k)),
        };
        Value::Object(mark_subsetted(out))
    }
}

/// Keeps `resourceType`, `id`, `meta` and the top-level elements `keep` accepts (with their `_` twins).
fn keep_top(obj: Map<String, Value>, keep: impl Fn(&str) -> bool) -> Map<String, Value> {
    obj.into_iter()
        .filter(|(k, _)| {
            let base = k.strip_prefix('_').unwrap_or(k);
            matches!(base, "resourceType" | "id" | "meta") || keep(base)
        })
        .collect()
}

/// Elements marked `isSummary`, recursively through complex types and backbone elements.
fn summary_of(obj: Map<String, Value>, def_path: &str, defs: &Definitions) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in obj {
        let base = k.strip_prefix('_').unwrap_or(&k);
        if matches!(base, "resourceType" | "id" | "meta") {
            out.insert(k, v);
            continue;
        }
        let Some(m) = defs.child(def_path, base) else {
            continue;
        };
        if !m.element.summary {
            continue;
        }
        let primitive = k.starts_with('_')
            || m.type_code == "Resource"
            || defs
                .structure(m.type_code)
                .is_none_or(|s| s.kind == StructureKind::PrimitiveType);
        let child_path = defs.children_path(m.element, m.type_code).to_string();
        let v = if primitive {
            v
        } else {
            map_objects(v, &|o| Value::Object(summary_of(o, &child_path, defs)))
        };
        out.insert(k, v);
    }
    out
}

fn map_objects(v: Value, f: &dyn Fn(Map<String, Value>) -> Value) -> Value {
    match v {
        Value::Object(o) => f(o),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| map_objects(x, f)).collect()),
        other => other,
    }
}

/// Adds the SUBSETTED tag a partial representation must carry.
fn mark_subsetted(mut obj: Map<String, Value>) -> Map<String, Value> {
    let tag = json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"});
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    if let Value::Object(m) = meta {
        match m.entry("tag").or_insert_with(|| json!([])) {
            Value::Array(tags) => tags.push(tag),
            other => *other = json!([tag]),
        }
    }
    obj
}

pub async fn history_instance(
    State(st): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let scope = check_type(&ty)
        .and_then(|_| check_id(&id))
        .map(|_| HistoryScope::Instance(ty.clone(), id.clone()));
    let result = match scope {
        Ok(s) => history(&st, s, q.as_deref(), &headers).await,
        Err(e) => Err(e.into()),
    };
    finish(result, "history-instance")
}

pub async fn history_type(
    State(st): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let result = match check_type(&ty) {
        Ok(()) => history(&st, HistoryScope::Type(ty.clone()), q.as_deref(), &headers).await,
        Err(e) => Err(e.into()),
    };
    finish(result, "history-type")
}

pub async fn history_system(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    finish(
        history(&st, HistoryScope::System, q.as_deref(), &headers).await,
        "history-system",
    )
}

/// A history Bundle, newest first, paged with `_count` and stable across pages (`_snapshot`).
async fn history(
    st: &AppState,
    scope: HistoryScope,
    q: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult {
    let params = Params::parse(q);
    let format = http::negotiate(headers, &params)?;
    params.only(&["_count", "_since", "_summary", "_offset", "_snapshot"])?;
    let s = &st.settings;
    let count = match params.get("_count") {
        None => s.default_page_size,
        Some(c) => c
            .parse::<usize>()
            .map_err(|_| {
                FhirError::new(
                    400,
                    "value",
                    format!("_count '{c}' is not a non-negative integer"),
                )
            })?
            .min(s.max_page_size),
    };
    let since_ms = match params.get("_since") {
        None => None,
        Some(t) => Some(model::parse_instant_ms(t).ok_or_else(|| {
            FhirError::new(
                400,
                "value",
                format!("_since '{t}' is not an instant such as 2026-01-01T00:00:00Z"),
            )
        })?),
    };
    let count_only = match params.get("_summary") {
        None | Some("false") => false,
        Some("count") => true,
        Some(o) => {
            return Err(FhirError::new(
                400,
                "not-supported",
                format!("_summary '{o}' is not supported on history; use count"),
            )
            .into());
        }
    };
    let int_param = |name: &str| -> Result<Option<i64>, FhirError> {
        params
            .get(name)
            .map(|v| {
                v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    FhirError::new(
                        400,
                        "value",
                        format!("{name} must be a non-negative integer"),
                    )
                })
            })
            .transpose()
    };
    let offset = usize::try_from(int_param("_offset")?.unwrap_or(0)).unwrap_or(0);
    let at_seq = int_param("_snapshot")?;
    let page = st
        .store
        .history(HistoryQuery {
            scope: scope.clone(),
            since_ms,
            at_seq,
            count: if count_only { 0 } else { count },
            offset,
        })
        .await
        .map_err(store_error)?;
    let base = st.base_url(headers);
    let path = match &scope {
        HistoryScope::System => format!("{base}/_history"),
        HistoryScope::Type(t) => format!("{base}/{t}/_history"),
        HistoryScope::Instance(t, i) => format!("{base}/{t}/{i}/_history"),
    };
    let link = |rel: &str, off: usize| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.append_pair("_count", &count.to_string());
        if let Some(t) = params.get("_since") {
            ser.append_pair("_since", t);
        }
        ser.append_pair("_snapshot", &page.at_seq.to_string());
        ser.append_pair("_offset", &off.to_string());
        json!({"relation": rel, "url": format!("{path}?{}", ser.finish())})
    };
    let mut links = vec![link("self", offset)];
    if !count_only && (offset + page.entries.len()) < page.total as usize && count > 0 {
        links.push(link("next", offset + count));
    }
    if !count_only && offset > 0 {
        links.push(link("previous", offset.saturating_sub(count)));
    }
    let entries: Vec<Value> = page
        .entries
        .iter()
        .map(|v| history_entry(&base, v))
        .collect::<Result<_, _>>()?;
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "history",
        "total": page.total,
        "link": links,
    });
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    Ok(json_response(
        StatusCode::OK,
        http::body_bytes(&bundle, format),
    ))
}

fn history_entry(base: &str, v: &Arc<StoredVersion>) -> Result<Value, FhirError> {
    let mut e = Map::new();
    e.insert(
        "fullUrl".into(),
        json!(format!("{base}/{}/{}", v.resource_type, v.id)),
    );
    if v.body.is_some() {
        e.insert("resource".into(), parse_stored(v)?);
    }
    let url = match v.method {
        crate::store::WriteMethod::Create => v.resource_type.clone(),
        _ => format!("{}/{}", v.resource_type, v.id),
    };
    e.insert(
        "request".into(),
        json!({"method": v.method.code(), "url": url}),
    );
    let status = match v.method {
        crate::store::WriteMethod::Create => "201 Created",
        crate::store::WriteMethod::Update => "200 OK",
        crate::store::WriteMethod::Delete => "204 No Content",
    };
    e.insert(
        "response".into(),
        json!({"status": status, "etag": http::etag(v.version), "lastModified": model::format_instant(v.last_updated_ms)}),
    );
    Ok(Value::Object(e))
}

/// Adds the `Location` header of a version.
pub(crate) fn location(resp: &mut Response, base: &str, v: &StoredVersion) {
    if let Ok(l) = HeaderValue::from_str(&format!(
        "{base}/{}/{}/_history/{}",
        v.resource_type, v.id, v.version
    )) {
        resp.headers_mut().insert(header::LOCATION, l);
    }
}

/// Used by Bundle GET entries: the stored version of a read/vread, or the error it would answer.
pub(crate) async fn fetch(
    st: &AppState,
    ty: &str,
    id: &str,
    version: Option<u64>,
) -> Result<Arc<StoredVersion>, FhirError> {
    check_type(ty)?;
    check_id(id)?;
    let found = match version {
        None => st.store.read(ty, id).await,
        Some(v) => st.store.vread(ty, id, v).await,
    }
    .map_err(store_error)?;
    match found {
        None => Err(FhirError::new(
            404,
            "not-found",
            format!("{ty}/{id} is not known"),
        )),
        Some(v) if v.is_deleted() => Err(FhirError::new(
            410,
            "deleted",
            format!("{ty}/{id} was deleted"),
        )),
        Some(v) => Ok(v),
    }
}

/// The current version of a resource as JSON (404/410 as for a read).
pub(crate) async fn fetch_json(st: &AppState, ty: &str, id: &str) -> Result<Value, FhirError> {
    let v = fetch(st, ty, id, None).await?;
    parse_stored(&v)
}
