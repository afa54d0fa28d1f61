//! Search over HTTP: `GET [base]/{type}?...`, `POST [base]/{type}/_search`, system search
//! `GET [base]?_type=...`, compartment search `GET [base]/Patient/{id}/{type}`, and `$reindex`.
//! Parsing, matching and paging live in `crate::search`; this module turns requests into a
//! [`SearchPlan`] and pages into searchset Bundles.

use super::AppState;
use super::http::{self, ApiResult, Params, finish, json_response};
use super::operations::{Invocation, Level};
use crate::definitions::Definitions;
use crate::model::{FhirError, Issue, Severity, operation_outcome};
use crate::search::plan::{Cursor, Predicate, SearchPlan};
use crate::search::{self, ParseOptions, run};
use crate::store::{IndexRows, StoredVersion, TxAbort, TxContext};
use crate::transaction::store_error;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// `_count` when the client gives none.
pub const DEFAULT_COUNT: usize = 20;

/// What is searched.
#[derive(Debug, Clone)]
pub enum Target {
    /// `[base]/{type}`
    Type(String),
    /// `[base]?_type=...` (all types without `_type`).
    System,
    /// `[base]/{compartment}/{id}/{type}`
    Compartment {
        compartment: String,
        id: String,
        resource_type: String,
    },
}

impl Target {
    /// The path of the search below the base, for links.
    fn path(&self) -> String {
        match self {
            Target::Type(t) => t.clone(),
            Target::System => String::new(),
            Target::Compartment {
                compartment,
                id,
                resource_type,
            } => format!("{compartment}/{id}/{resource_type}"),
        }
    }
}

/// `Prefer: handling=lenient`.
fn lenient(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim() == "handling=lenient")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The compartment's filter for `resource_type`: any of its linking parameters points at the
/// compartment's resource (and the resource itself for its own type).
fn compartment_filter(
    compartment: &str,
    id: &str,
    resource_type: &str,
) -> Result<Vec<Predicate>, FhirError> {
    let defs = Definitions::core();
    let comp = defs.compartment(compartment).ok_or_else(|| {
        FhirError::new(
            404,
            "not-found",
            format!("there is no {compartment} compartment in R4"),
        )
    })?;
    let params = comp
        .resources
        .iter()
        .find(|(t, _)| t == resource_type)
        .map(|(_, p)| p.clone())
        .unwrap_or_default();
    let mut ors: Vec<Predicate> = params
        .iter()
        .filter(|p| p.as_str() != "{def}")
        .map(|p| Predicate::Reference {
            param: p.clone(),
            target_type: Some(compartment.to_string()),
            id: Some(id.to_string()),
            url: None,
        })
        .collect();
    if resource_type == compartment {
        ors.push(Predicate::Id(id.to_string()));
    }
    if ors.is_empty() {
        return Err(FhirError::new(
            400,
            "invalid",
            format!("{resource_type} is not in the {compartment} compartment"),
        ));
    }
    Ok(ors)
}

/// Parses the request into a plan for `target`.
fn plan_for(
    st: &AppState,
    target: &Target,
    params: &[(String, String)],
    lenient: bool,
    base: &str,
) -> Result<SearchPlan, FhirError> {
    let defs = Definitions::core();
    let types: Vec<String> = match target {
        Target::Type(t)
        | Target::Compartment {
            resource_type: t, ..
        } => {
            super::check_type(t)?;
            vec![t.clone()]
        }
        Target::System => match params.iter().find(|(k, _)| k == "_type") {
            Some((_, v)) => {
                let mut ts = Vec::new();
                for t in v.split(',').map(str::trim) {
                    if !defs.is_resource_type(t) {
                        return Err(FhirError::new(
                            400,
                            "invalid",
                            format!("_type '{t}' is not a resource type"),
                        ));
                    }
                    ts.push(t.to_string());
                }
                ts
            }
            None => defs.resource_types().map(str::to_string).collect(),
        },
    };
    let opts = ParseOptions {
        lenient,
        default_count: DEFAULT_COUNT,
        max_count: st.settings.max_page_size,
        base_url: base.to_string(),
        now_ms: now_ms(),
    };
    let mut plan = search::parse(&types, params, &st.search, &opts)?;
    if let Target::Compartment {
        compartment,
        id,
        resource_type,
    } = target
    {
        super::check_type(compartment)?;
        super::check_id(id)?;
        if plan.contained != crate::search::plan::Contained::No {
            return Err(FhirError::new(
                400,
                "not-supported",
                "_contained other than false is not supported on a compartment search",
            )
            .at("http._contained"));
        }
        plan.filters
            .push(compartment_filter(compartment, id, resource_type)?);
    }
    if let Target::System = target
        && let Some((_, v)) = params.iter().find(|(k, _)| k == "_type")
    {
        plan.applied.insert(0, ("_type".to_string(), v.clone()));
    }
    Ok(plan)
}

fn link(base: &str, path: &str, params: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    let q = s.finish();
    let sep = if path.is_empty() { "" } else { "/" };
    if q.is_empty() {
        format!("{base}{sep}{path}")
    } else {
        format!("{base}{sep}{path}?{q}")
    }
}

fn cursor_param(c: &Cursor) -> Option<(String, String)> {
    match c {
        Cursor::Start => None,
        Cursor::After(t, id) => Some(("_after".into(), format!("{t}/{id}"))),
        Cursor::Before(t, id) => Some(("_before".into(), format!("{t}/{id}"))),
        Cursor::Offset(n) => Some(("_offset".into(), n.to_string())),
    }
}

fn entry(
    base: &str,
    v: &StoredVersion,
    mode: &str,
    view: Option<&super::read::View>,
) -> Result<Value, FhirError> {
    let mut resource = super::read::parse_stored(v)?;
    if let Some(view) = view {
        resource = view.apply(resource);
    }
    // A contained resource returned alone is addressed inside its container (R4 search
    // 3.1.1.5.9): `[base]/Container/id#contained-id`, which is its key.
    let full_url = if crate::store::split_contained_key(&v.id).is_some() {
        format!("{base}/{}", v.id)
    } else {
        format!("{base}/{}/{}", v.resource_type, v.id)
    };
    Ok(json!({
        "fullUrl": full_url,
        "resource": resource,
        "search": {"mode": mode},
    }))
}

/// Runs a search and renders its searchset Bundle.
pub(crate) async fn search_bundle(
    st: &AppState,
    target: &Target,
    params: &[(String, String)],
    lenient: bool,
    base: &str,
) -> Result<Value, FhirError> {
    // Identifiers are stored under canonical systems, so an alias in the query is rewritten too.
    let params = &st.identities.current().canonicalise_params(params);
    let plan = plan_for(st, target, params, lenient, base)?;
    let view_params = Params(
        params
            .iter()
            .filter(|(k, v)| (k == "_summary" && v != "count") || k == "_elements")
            .cloned()
            .collect(),
    );
    let view = super::read::subset(&view_params)?;
    let page = run::execute(st.store.as_ref(), &plan)
        .await
        .map_err(store_error)?;

    let path = target.path();
    let mut with_count = plan.applied.clone();
    if !with_count.iter().any(|(k, _)| k == "_count") {
        with_count.push(("_count".into(), plan.count.to_string()));
    }
    let mut self_params = with_count.clone();
    if let Some(p) = cursor_param(&plan.cursor) {
        self_params.push(p);
    }
    let mut links = vec![json!({"relation": "self", "url": link(base, &path, &self_params)})];
    links.push(json!({"relation": "first", "url": link(base, &path, &with_count)}));
    for (relation, c) in [("next", &page.next), ("previous", &page.previous)] {
        if let Some(c) = c {
            let mut p = with_count.clone();
            p.extend(cursor_param(c));
            links.push(json!({"relation": relation, "url": link(base, &path, &p)}));
        }
    }
    let mut entries = Vec::with_capacity(page.matches.len() + page.included.len() + 1);
    for v in &page.matches {
        entries.push(entry(base, v, "match", view.as_ref())?);
    }
    for v in &page.included {
        entries.push(entry(base, v, "include", view.as_ref())?);
    }
    let mut notes: Vec<Issue> = plan
        .ignored
        .iter()
        .map(|m| Issue {
            severity: Severity::Warning,
            code: "not-supported",
            diagnostics: m.clone(),
            expression: None,
        })
        .collect();
    notes.extend(page.warnings.iter().map(|m| Issue {
        severity: Severity::Warning,
        code: "incomplete",
        diagnostics: m.clone(),
        expression: None,
    }));
    if !notes.is_empty() {
        entries.push(json!({"resource": operation_outcome(&notes), "search": {"mode": "outcome"}}));
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("id".into(), json!(crate::transaction::new_id()));
    bundle.insert(
        "meta".into(),
        json!({"lastUpdated": crate::model::format_instant(now_ms())}),
    );
    bundle.insert("type".into(), json!("searchset"));
    if let Some(t) = page.total {
        bundle.insert("total".into(), json!(t));
    }
    bundle.insert("link".into(), Value::Array(links));
    if !entries.is_empty() {
        bundle.insert("entry".into(), Value::Array(entries));
    }
    Ok(Value::Object(bundle))
}

/// Answers a search request (`body`: the form of `POST .../_search`).
pub async fn respond(
    st: &AppState,
    target: Target,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> ApiResult {
    let mut params = Params::parse(query);
    let format = http::negotiate(headers, &params)?;
    if let Some(b) = body {
        http::require_content_type(headers, &["application/x-www-form-urlencoded"])?;
        params.0.extend(form_urlencoded::parse(&b).into_owned());
    }
    let base = st.base_url(headers);
    let bundle = search_bundle(st, &target, &params.0, lenient(headers), &base).await?;
    Ok(json_response(
        StatusCode::OK,
        http::body_bytes(&bundle, format),
    ))
}

/// `GET [base]/{type}?...`
pub async fn type_search(
    st: &AppState,
    ty: String,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> axum::response::Response {
    finish(
        respond(st, Target::Type(ty), query, headers, body).await,
        "search-type",
    )
}

/// `GET [base]?...`
pub async fn system_search(
    st: &AppState,
    query: Option<&str>,
    headers: &HeaderMap,
) -> axum::response::Response {
    finish(
        respond(st, Target::System, query, headers, None).await,
        "search-system",
    )
}

/// `GET [base]/{compartment}/{id}/{type}?...`
pub async fn compartment_search(
    st: &AppState,
    compartment: String,
    id: String,
    resource_type: String,
    query: Option<&str>,
    headers: &HeaderMap,
) -> axum::response::Response {
    finish(
        respond(
            st,
            Target::Compartment {
                compartment,
                id,
                resource_type,
            },
            query,
            headers,
            None,
        )
        .await,
        "search-compartment",
    )
}

/// Resources re-indexed per unit of work (bounds how long one `$reindex` step holds the writer).
const REINDEX_BATCH: usize = 500;

/// The index rows of a stored body under `params`.
fn index_rows(params: &search::params::TypeParams, body: &[u8]) -> IndexRows {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => search::extract::extract(params, &v),
        // A body the server wrote itself is JSON; if not, it keeps no rows.
        Err(_) => IndexRows::default(),
    }
}

/// One resource's rows, extracted from the version it had when read.
struct Reindexed {
    id: String,
    version: u64,
    rows: IndexRows,
}

/// One page of `$reindex` of a type, read and extracted off the writer: how many live ids the
/// page had, the last of them, and the rows of those still live when read.
struct ReindexPage {
    ids: usize,
    last: Option<String>,
    items: Vec<Reindexed>,
}

/// Reads the live resources of `ty` after `after` on the readers and extracts their rows on the
/// blocking pool, one chunk per core. The writer only writes them ([`write_reindexed`]).
async fn read_reindex_page(
    st: &AppState,
    ty: &str,
    params: &Arc<search::params::TypeParams>,
    after: Option<&str>,
) -> Result<ReindexPage, FhirError> {
    let keys = st
        .store
        .query_keys(search::sql::live_keys(
            st.store.dialect(),
            ty,
            after,
            REINDEX_BATCH,
        ))
        .await
        .map_err(store_error)?;
    let reads = futures_util::future::join_all(keys.iter().map(|(t, id)| st.store.read(t, id)));
    let mut versions = Vec::with_capacity(keys.len());
    for v in reads.await {
        match v.map_err(store_error)? {
            Some(v) if !v.is_deleted() && v.body.is_some() => versions.push(v),
            // Deleted since the page was read: it has no rows to rebuild.
            _ => {}
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = versions.len().div_ceil(cores).max(1);
    let mut tasks = Vec::new();
    for part in versions.chunks(chunk) {
        let (part, params) = (part.to_vec(), params.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            part.iter()
                .map(|v| Reindexed {
                    id: v.id.clone(),
                    version: v.version,
                    rows: index_rows(&params, v.body.as_deref().unwrap_or_default()),
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut items = Vec::with_capacity(versions.len());
    for t in tasks {
        items.extend(
            t.await
                .map_err(|e| FhirError::new(500, "exception", format!("reindex failed: {e}")))?,
        );
    }
    Ok(ReindexPage {
        ids: keys.len(),
        last: keys.last().map(|(_, id)| id.clone()),
        items,
    })
}

/// Writes the rows of one page in one unit of work. A resource written since it was read gets
/// the rows of its current version, extracted here (rare: only under concurrent writes); one
/// deleted since keeps none. Returns how many live resources were re-indexed.
async fn write_reindexed(
    st: &AppState,
    ty: &str,
    params: &Arc<search::params::TypeParams>,
    items: Vec<Reindexed>,
) -> Result<u64, FhirError> {
    if items.is_empty() {
        return Ok(0);
    }
    let (ty, params) = (ty.to_string(), params.clone());
    let work = Box::new(move |tx: &mut dyn TxContext| {
        let mut done = 0u64;
        for it in &items {
            match tx.head(&ty, &it.id)? {
                Some(h) if !h.deleted && h.version == it.version => {
                    tx.replace_index(&ty, &it.id, &it.rows)?;
                }
                Some(h) if !h.deleted => {
                    let Some(body) = tx.current_body(&ty, &it.id)? else {
                        continue;
                    };
                    tx.replace_index(&ty, &it.id, &index_rows(&params, &body))?;
                }
                _ => continue,
            }
            done += 1;
        }
        Ok(Box::new(done) as Box<dyn std::any::Any + Send>)
    });
    let out = st.store.transact(work).await.map_err(|e| match e {
        TxAbort::Store(s) => store_error(s),
        TxAbort::Caller(_) => FhirError::new(500, "exception", "reindex failed"),
    })?;
    Ok(out.value.downcast::<u64>().map(|b| *b).unwrap_or_default())
}

/// `POST [base]/$reindex` and `POST [base]/{type}/$reindex`: activates the custom
/// SearchParameters in the registry for the type(s) and rebuilds their index rows.
///
/// Pipelined: while the writer writes one page's rows, the next page is read and extracted on
/// the other cores, so the writer does nothing but write.
pub async fn reindex(st: &AppState, inv: Invocation) -> ApiResult {
    let types: Vec<String> = match &inv.level {
        Level::System => Definitions::core()
            .resource_types()
            .map(str::to_string)
            .collect(),
        Level::Type(t) => {
            super::check_type(t)?;
            vec![t.clone()]
        }
        Level::Instance(..) => {
            return Err(FhirError::new(
                404,
                "not-supported",
                "$reindex is a system or type operation",
            )
            .into());
        }
    };
    let custom: Vec<Arc<Value>> = st
        .registry
        .catalogue()
        .all("SearchParameter")
        .map(|r| r.resource.clone())
        .collect();
    let mut total = 0u64;
    let mut activated = Vec::new();
    for ty in types {
        for code in st.search.activate(&ty, &custom) {
            activated.push(format!("{ty}.{code}"));
        }
        let params = st.search.for_type(&ty);
        let mut page = read_reindex_page(st, &ty, &params, None).await?;
        loop {
            let more = page.ids == REINDEX_BATCH;
            let write = write_reindexed(st, &ty, &params, std::mem::take(&mut page.items));
            if !more {
                total += write.await?;
                break;
            }
            let next = read_reindex_page(st, &ty, &params, page.last.as_deref());
            let (written, next) = tokio::join!(write, next);
            total += written?;
            page = next?;
        }
    }
    let out = json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "reindexed", "valueInteger": total},
            {"name": "activated", "valueString": activated.join(",")},
        ]
    });
    Ok(json_response(
        StatusCode::OK,
        http::body_bytes(&out, inv.format),
    ))
}
