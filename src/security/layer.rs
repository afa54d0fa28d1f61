//! The HTTP security layer, around the whole router: authenticate, rate-limit, bound the body,
//! authorise the request (per interaction and per Bundle entry), run it, filter what comes back
//! (resources, search results, `_include`/`_revinclude`, history, batch responses), audit it.
//!
//! Everything not in [`PUBLIC_PATHS`] needs an identity once `[auth]` is configured; an endpoint
//! outside the FHIR base that this layer does not know (`/hl7v2`, `/hl7v3`, `/cda`, `/feeds`,
//! whatever comes next) is an ingest endpoint and needs create permission on every type, so a new
//! route is closed until it is explicitly opened here.

use super::audit::{AuditQuery, Record};
use super::policy::{Denial, Judge};
use super::scopes::{self, Perms};
use super::{PeerInfo, Principal};
use crate::model::FhirError;
use crate::rest::AppState;
use crate::rest::http::{ApiError, Interaction, json_response};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

/// Paths (below the root, or below the FHIR base when starting with `{base}`) anyone may call:
/// probes, and the CapabilityStatement clients need before they can authenticate.
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz", "{base}/metadata"];

/// What a request asks for, decided from method and path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ask {
    Public,
    /// Any authenticated caller (`/metrics`).
    Authenticated,
    /// Platform operators only (system-level `$operations`, `$reindex`, mapping reloads).
    Operator,
    /// An interaction needing `perm` on `ty` (`None`: on every type).
    Type {
        ty: Option<String>,
        id: Option<String>,
        perm: Perms,
        conditional: bool,
    },
    /// `GET [base]/Type?..` (rewritten into the patient's compartment for patient tokens).
    Search {
        ty: String,
    },
    /// batch/transaction: every entry is checked.
    Bundle,
    /// The audit trail (auditors only).
    Audit {
        id: Option<String>,
    },
    /// An ingest endpoint outside the FHIR base.
    Ingest,
}

const OPERATOR_OPS: &[&str] = &[
    "$reindex",
    "$reload-mappings",
    "$ingest-errors",
    "$snapshot",
];

fn classify(base: &str, method: &Method, path: &str) -> Ask {
    for p in PUBLIC_PATHS {
        if let Some(rest) = p.strip_prefix("{base}") {
            if path.strip_prefix(base) == Some(rest) {
                return Ask::Public;
            }
        } else if path == *p {
            return Ask::Public;
        }
    }
    if path == "/metrics" {
        return Ask::Authenticated;
    }
    let Some(rest) = path.strip_prefix(base) else {
        return Ask::Ingest;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Ask::Ingest;
    }
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let get = method == Method::GET || method == Method::HEAD;
    let t = |ty: &str, id: Option<&str>, perm: Perms| Ask::Type {
        ty: Some(ty.to_string()),
        id: id.map(str::to_string),
        perm,
        conditional: false,
    };
    match segs.as_slice() {
        [] if get => Ask::Type {
            ty: None,
            id: None,
            perm: scopes::S,
            conditional: false,
        },
        [] => Ask::Bundle,
        ["_history"] => Ask::Type {
            ty: None,
            id: None,
            perm: scopes::R,
            conditional: false,
        },
        [op] if op.starts_with('$') => Ask::Operator,
        ["AuditEvent"] if get => Ask::Audit { id: None },
        ["AuditEvent", id] if get => Ask::Audit {
            id: Some(id.to_string()),
        },
        ["AuditEvent", ..] if get => Ask::Audit {
            id: Some(String::new()),
        },
        [ty] => match *method {
            Method::GET | Method::HEAD => Ask::Search { ty: ty.to_string() },
            Method::POST => t(ty, None, scopes::C),
            Method::PUT | Method::PATCH => Ask::Type {
                ty: Some(ty.to_string()),
                id: None,
                perm: scopes::U,
                conditional: true,
            },
            Method::DELETE => Ask::Type {
                ty: Some(ty.to_string()),
                id: None,
                perm: scopes::D,
                conditional: true,
            },
            _ => t(ty, None, scopes::ALL),
        },
        [ty, "_history"] => t(ty, None, scopes::R),
        [ty, "_search"] => Ask::Search { ty: ty.to_string() },
        [_, op] if OPERATOR_OPS.contains(op) => Ask::Operator,
        [ty, op] if op.starts_with('$') => t(ty, None, scopes::R),
        [ty, id] => match *method {
            Method::GET | Method::HEAD => t(ty, Some(id), scopes::R),
            Method::PUT | Method::PATCH => t(ty, Some(id), scopes::U),
            Method::DELETE => t(ty, Some(id), scopes::D),
            _ => t(ty, Some(id), scopes::ALL),
        },
        [_, _, op] if OPERATOR_OPS.contains(op) => Ask::Operator,
        [ty, id, op] if op.starts_with('$') => t(ty, Some(id), scopes::R),
        [ty, id, "_history"] => t(ty, Some(id), scopes::R),
        [ty, id, "_history", _] => t(ty, Some(id), scopes::R),
        // Compartment search `Patient/1/Observation`: search on the inner type.
        [_, _, inner] => Ask::Search {
            ty: inner.to_string(),
        },
        _ => Ask::Type {
            ty: None,
            id: None,
            perm: scopes::ALL,
            conditional: false,
        },
    }
}

fn outcome(status: u16, code: &'static str, msg: impl Into<String>) -> Response {
    ApiError(FhirError::new(status, code, msg.into())).into_response()
}

fn forbidden(msg: impl Into<String>) -> Response {
    outcome(403, "forbidden", msg)
}

fn hidden(st: &AppState) -> Response {
    let s = st.security.hidden_status();
    if s == 403 {
        forbidden("access denied")
    } else {
        outcome(404, "not-found", "resource not found")
    }
}

fn denial(st: &AppState, d: Denial) -> Response {
    match d {
        Denial::Hidden => hidden(st),
        Denial::Forbidden(m) => forbidden(m),
    }
}

fn unauthorised(msg: &str) -> Response {
    let mut r = outcome(401, "login", msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    r
}

fn action_of(method: &Method) -> &'static str {
    match *method {
        Method::POST => "C",
        Method::PUT | Method::PATCH => "U",
        Method::DELETE => "D",
        _ => "R",
    }
}

/// The layer: see the module documentation.
pub async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let sec = st.security.clone();
    if !sec.active() {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let ask = classify(&st.settings.base_path, &method, &path);
    if ask == Ask::Public {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<PeerInfo>().cloned();
    let mut record = Record {
        agent: "unknown".into(),
        method: "none".into(),
        client: None,
        address: peer.as_ref().map(|p| p.addr.ip().to_string()),
        subtype: "other".into(),
        action: action_of(&method),
        status: 0,
        description: None,
        entity: path.clone(),
        query: query.clone(),
    };
    let who = match sec.authenticate(req.headers(), peer.as_ref()).await {
        Ok(p) => p,
        Err(f) => {
            record.subtype = "login".into();
            record.status = 401;
            record.description = Some(f.0.clone());
            audit(&st, record);
            return unauthorised(&f.0);
        }
    };
    record.agent = who.id.clone();
    record.method = who.method.into();
    record.client = who.client.clone();
    if let Some(l) = &sec.limiter {
        let key = match (&who.method, &peer) {
            (&"open", Some(p)) => p.addr.ip().to_string(),
            _ => format!("{}:{}", who.method, who.id),
        };
        if let Err(wait) = l.take(&key) {
            record.subtype = "rate-limit".into();
            record.status = 429;
            audit(&st, record);
            let mut r = outcome(
                429,
                "throttled",
                format!("too many requests from this client; retry after {wait} s"),
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return r;
        }
    }
    if let Some(limit) = body_limit(&st, &path) {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            record.status = 413;
            audit(&st, record);
            return outcome(
                413,
                "too-costly",
                format!("request body larger than {limit} bytes, the limit of this endpoint"),
            );
        }
    }
    let resp = match authorise(&st, &who, &ask, req).await {
        Ok(Admitted::Run(req)) => {
            let resp = next.run(req).await;
            // The answer to a single-resource write is what the caller itself sent (or changed,
            // after `admit_change` found it visible): nothing to hide from it.
            let own_write =
                matches!(&ask, Ask::Type { perm, .. } if perm & (scopes::C | scopes::U) != 0);
            if own_write {
                resp
            } else {
                filter(&st, &who, resp).await
            }
        }
        Ok(Admitted::Answered(r)) => r,
        Err(r) => r,
    };
    record.status = resp.status().as_u16();
    // Any successful change may have written a Consent (directly, in a Bundle, or by ingest).
    if method != Method::GET && method != Method::HEAD && record.status < 300 {
        sec.consents.invalidate_all();
    }
    record.subtype = resp
        .extensions()
        .get::<Interaction>()
        .map_or_else(|| interaction_of(&ask).to_string(), |i| i.0.to_string());
    if record.status == 403 || (record.status == 404 && matches!(ask, Ask::Type { .. })) {
        record.description = Some("denied or not found".into());
    }
    audit(&st, record);
    resp
}

fn interaction_of(ask: &Ask) -> &'static str {
    match ask {
        Ask::Ingest => "ingest",
        Ask::Audit { .. } => "audit-read",
        Ask::Bundle => "transaction",
        Ask::Search { .. } => "search-type",
        Ask::Operator => "operation",
        _ => "other",
    }
}

fn audit(st: &AppState, r: Record) {
    if let Some(a) = &st.security.audit {
        a.record(r);
    }
}

/// The body limit of an endpoint: the longest `[limits] body-bytes` prefix matching the path.
fn body_limit(st: &AppState, path: &str) -> Option<usize> {
    st.security
        .config
        .limits
        .body_bytes
        .iter()
        .filter(|(p, _)| path.starts_with(p.as_str()))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, n)| *n)
}

enum Admitted {
    Run(Request),
    Answered(Response),
}

async fn authorise(
    st: &AppState,
    who: &Principal,
    ask: &Ask,
    req: Request,
) -> Result<Admitted, Response> {
    match ask {
        Ask::Public | Ask::Authenticated => Ok(Admitted::Run(req)),
        Ask::Operator => {
            if who.is_operator() {
                Ok(Admitted::Run(req))
            } else {
                Err(forbidden(
                    "this operation is for platform operators (system/*.* without a domain)",
                ))
            }
        }
        Ask::Ingest => {
            if who.allows_all(scopes::C) {
                // The pipeline owns what it writes by this sender (`ownership::IngestState`).
                let mut req = req;
                req.extensions_mut().insert(who.clone());
                Ok(Admitted::Run(req))
            } else {
                Err(forbidden(
                    "ingest endpoints need a sender identity with create permission on every type (e.g. system/*.cru)",
                ))
            }
        }
        Ask::Audit { id } => audit_read(st, who, id.as_deref(), req.uri().query())
            .await
            .map(Admitted::Answered),
        Ask::Search { ty } => {
            if !who.allows(ty, scopes::S) {
                return Err(forbidden(format!("scope does not grant search on {ty}")));
            }
            Ok(Admitted::Run(into_compartment(st, who, ty, req)))
        }
        Ask::Type {
            ty,
            id,
            perm,
            conditional,
        } => {
            let granted = match ty {
                Some(t) => who.allows(t, *perm),
                None => who.allows_all(*perm),
            };
            if !granted {
                return Err(forbidden(format!(
                    "scope does not grant '{}' on {}",
                    scopes::letters(*perm),
                    ty.as_deref().unwrap_or("every type")
                )));
            }
            if who.is_operator() || *perm & (scopes::C | scopes::U | scopes::D) == 0 {
                return Ok(Admitted::Run(req));
            }
            if *conditional && *perm == scopes::D {
                return Err(forbidden(
                    "conditional delete is for platform operators: it could reach resources the caller cannot see",
                ));
            }
            let mut judge = Judge::new(st, who);
            if let (Some(t), Some(i)) = (ty, id)
                && let Some(existing) = live(st, t, i).await
            {
                judge
                    .admit_change(&existing)
                    .await
                    .map_err(|d| denial(st, d))?;
            }
            if *perm == scopes::D || req.method() == Method::PATCH {
                return Ok(Admitted::Run(req));
            }
            let (parts, body) = req.into_parts();
            let bytes = read_all(st, body).await?;
            let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
                // Not JSON: the handler answers with the precise parse error.
                return Ok(Admitted::Run(Request::from_parts(parts, Body::from(bytes))));
            };
            judge
                .admit_write(&mut v, *perm)
                .map_err(|d| denial(st, d))?;
            Ok(Admitted::Run(rebuilt(parts, &v)))
        }
        Ask::Bundle => {
            if who.is_operator() {
                return Ok(Admitted::Run(req));
            }
            let (parts, body) = req.into_parts();
            let bytes = read_all(st, body).await?;
            let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
                return Ok(Admitted::Run(Request::from_parts(parts, Body::from(bytes))));
            };
            admit_bundle(st, who, &mut v).await?;
            Ok(Admitted::Run(rebuilt(parts, &v)))
        }
    }
}

async fn read_all(st: &AppState, body: Body) -> Result<Bytes, Response> {
    let max = st.settings.max_body_bytes;
    axum::body::to_bytes(body, max).await.map_err(|_| {
        outcome(
            413,
            "too-costly",
            format!("request body larger than {max} bytes"),
        )
    })
}

fn rebuilt(mut parts: axum::http::request::Parts, v: &Value) -> Request {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    if let Ok(n) = HeaderValue::from_str(&bytes.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, n);
    }
    Request::from_parts(parts, Body::from(bytes))
}

async fn live(st: &AppState, ty: &str, id: &str) -> Option<Value> {
    let v = st.store.read(ty, id).await.ok()??;
    if v.is_deleted() {
        return None;
    }
    serde_json::from_slice(v.body.as_ref()?).ok()
}

/// Every entry of a batch or transaction: its permission, the resource it changes, the resource
/// it writes (tagged with the caller's domain).
async fn admit_bundle(st: &AppState, who: &Principal, bundle: &mut Value) -> Result<(), Response> {
    let Some(entries) = bundle["entry"].as_array_mut() else {
        return Ok(());
    };
    let mut judge = Judge::new(st, who);
    for (i, e) in entries.iter_mut().enumerate() {
        let method = e["request"]["method"].as_str().unwrap_or("").to_string();
        let url = e["request"]["url"].as_str().unwrap_or("").to_string();
        let (path, conditional) = match url.split_once('?') {
            Some((p, _)) => (p.to_string(), true),
            None => (url.clone(), false),
        };
        let mut segs = path.trim_start_matches('/').split('/');
        let ty = segs.next().unwrap_or("").to_string();
        let id = segs.next().map(str::to_string);
        let at = |m: String| forbidden(format!("Bundle.entry[{i}]: {m}"));
        let perm = match method.as_str() {
            "GET" | "HEAD" => {
                if id.is_some() {
                    scopes::R
                } else {
                    scopes::S
                }
            }
            "POST" => scopes::C,
            "PUT" | "PATCH" => scopes::U,
            "DELETE" => scopes::D,
            _ => continue,
        };
        if ty.is_empty() || ty.starts_with('$') || ty.starts_with('_') {
            if !who.is_operator() {
                return Err(at(format!("'{url}' is for platform operators")));
            }
            continue;
        }
        if !who.allows(&ty, perm) {
            return Err(at(format!(
                "scope does not grant '{}' on {ty}",
                scopes::letters(perm)
            )));
        }
        if perm & (scopes::R | scopes::S) != 0 {
            continue;
        }
        if conditional && perm == scopes::D {
            return Err(at(
                "conditional delete is for platform operators".to_string()
            ));
        }
        if let Some(id) = &id
            && let Some(existing) = live(st, &ty, id).await
        {
            judge.admit_change(&existing).await.map_err(|d| match d {
                Denial::Hidden => hidden(st),
                Denial::Forbidden(m) => at(m),
            })?;
        }
        if perm != scopes::D
            && method != "PATCH"
            && let Some(r) = e.get_mut("resource")
        {
            judge.admit_write(r, perm).map_err(|d| match d {
                Denial::Hidden => hidden(st),
                Denial::Forbidden(m) => at(m),
            })?;
        }
    }
    Ok(())
}

/// A patient-bound search becomes a compartment search (`Observation?x` ->
/// `Patient/{pid}/Observation?x`; `Patient?x` -> `Patient?x&_id={pid}`), so paging and totals are
/// those of the compartment. Results are still filtered afterwards.
fn into_compartment(st: &AppState, who: &Principal, ty: &str, mut req: Request) -> Request {
    let Some(pid) = who.patient_bound(ty, scopes::S) else {
        return req;
    };
    let base = &st.settings.base_path;
    let path = req.uri().path();
    let direct = path == format!("{base}/{ty}") || path == format!("{base}/{ty}/_search");
    if !direct || !Judge::in_patient_compartment(ty) {
        return req;
    }
    let q = req.uri().query().unwrap_or("");
    let pid_q: String = form_urlencoded::byte_serialize(pid.as_bytes()).collect();
    let new = if ty == "Patient" {
        let sep = if q.is_empty() { "" } else { "&" };
        format!("{path}?{q}{sep}_id={pid_q}")
    } else {
        let tail = path.strip_prefix(&format!("{base}/{ty}")).unwrap_or("");
        let q = if q.is_empty() {
            String::new()
        } else {
            format!("?{q}")
        };
        format!("{base}/Patient/{pid_q}/{ty}{tail}{q}")
    };
    if let Ok(u) = new.parse::<axum::http::Uri>() {
        *req.uri_mut() = u;
    }
    req
}

fn is_fhir_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/fhir+json"))
}

/// Removes what the caller may not see from a successful FHIR response.
async fn filter(st: &AppState, who: &Principal, resp: Response) -> Response {
    if who.is_operator() || !resp.status().is_success() || !is_fhir_json(&resp) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return outcome(500, "exception", "response could not be read");
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let mut judge = Judge::new(st, who);
    let ty = v["resourceType"].as_str().unwrap_or("").to_string();
    let bundle_type = v["type"].as_str().unwrap_or("").to_string();
    let response_bundle = ty == "Bundle"
        && matches!(
            bundle_type.as_str(),
            "searchset" | "history" | "batch-response" | "transaction-response"
        );
    if response_bundle {
        let mut removed = prune(&mut judge, who, &mut v).await;
        // A batch answers GET entries with nested searchsets: pruned the same way.
        if let Some(entries) = v["entry"].as_array_mut() {
            for e in entries.iter_mut() {
                if let Some(r) = e.get_mut("resource")
                    && r["resourceType"] == "Bundle"
                    && matches!(r["type"].as_str(), Some("searchset" | "history"))
                    && prune(&mut judge, who, r).await > 0
                {
                    removed += 1;
                    if let Some(o) = r.as_object_mut() {
                        o.remove("total");
                    }
                }
            }
        }
        if removed == 0 {
            return Response::from_parts(parts, Body::from(bytes));
        }
        if let Some(o) = v.as_object_mut() {
            // The count of the unfiltered search would tell how much is hidden.
            o.remove("total");
        }
    } else if matches!(
        ty.as_str(),
        "OperationOutcome" | "CapabilityStatement" | "Parameters" | ""
    ) || judge.visible(&v).await
    {
        return Response::from_parts(parts, Body::from(bytes));
    } else {
        let mut r = hidden(st);
        if let Some(i) = parts.extensions.get::<Interaction>() {
            r.extensions_mut().insert(*i);
        }
        return r;
    }
    let mut out = Response::from_parts(
        parts,
        Body::from(serde_json::to_vec(&v).unwrap_or_default()),
    );
    out.headers_mut().remove(header::CONTENT_LENGTH);
    out
}

/// Removes the entries of a response Bundle the caller may not see; returns how many.
async fn prune(judge: &mut Judge<'_>, who: &Principal, bundle: &mut Value) -> usize {
    let history = bundle["type"] == "history";
    let Some(entries) = bundle["entry"].as_array_mut() else {
        return 0;
    };
    let mut removed = 0;
    let mut kept = Vec::with_capacity(entries.len());
    for e in entries.drain(..) {
        let keep = match e.get("resource") {
            // Outcomes of batch entries are the caller's own; nested Bundles are pruned after.
            Some(r) if r["resourceType"] == "OperationOutcome" => true,
            Some(r)
                if r["resourceType"] == "Bundle"
                    && matches!(r["type"].as_str(), Some("searchset" | "history")) =>
            {
                true
            }
            Some(r) => judge.visible(r).await,
            // A history entry of a delete says nothing we can judge: kept only for callers that
            // are not patient-bound.
            None => !history || who.patient.is_none(),
        };
        if keep {
            kept.push(e);
        } else {
            removed += 1;
        }
    }
    *entries = kept;
    removed
}

/// `GET [base]/AuditEvent[?agent=&subtype=&outcome=&entity=&date=&_count=]` and
/// `GET [base]/AuditEvent/{seq}`: the trail, for auditors (role `auditor`, or a scope naming
/// AuditEvent explicitly; a `*` scope is not enough).
async fn audit_read(
    st: &AppState,
    who: &Principal,
    id: Option<&str>,
    query: Option<&str>,
) -> Result<Response, Response> {
    let explicit = who.scopes.iter().any(|s| {
        s.resource_type.as_deref() == Some("AuditEvent") && s.perms & (scopes::R | scopes::S) != 0
    });
    if !(who.role.as_deref() == Some("auditor") || explicit) {
        return Err(forbidden(
            "the audit trail is readable by auditors only (role 'auditor' or an AuditEvent scope)",
        ));
    }
    let Some(log) = st.security.audit.clone() else {
        return Err(outcome(
            404,
            "not-found",
            "no audit trail is kept ([audit] is off)",
        ));
    };
    log.flush().await;
    let mut q = AuditQuery {
        count: 50,
        ..Default::default()
    };
    if let Some(id) = id {
        let Ok(seq) = id.parse::<i64>() else {
            return Err(outcome(404, "not-found", "no such AuditEvent"));
        };
        q.before_seq = Some(seq + 1);
        q.count = 1;
    }
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "agent" => q.agent = Some(v),
            "subtype" => q.subtype = Some(v),
            "outcome" => q.outcome = Some(v),
            "entity" => q.entity = Some(v),
            "_count" => {
                q.count = v
                    .parse::<usize>()
                    .map_err(|_| outcome(400, "invalid", "_count must be a number"))?
                    .clamp(1, 1000)
            }
            "_before" => q.before_seq = v.parse().ok(),
            "date" => {
                let head = v.get(..2).unwrap_or("");
                let (prefix, value) = if matches!(head, "ge" | "le" | "gt" | "lt" | "eq") {
                    (head, v.get(2..).unwrap_or(""))
                } else {
                    ("eq", v.as_str())
                };
                let Some((lo, hi)) = crate::search::dates::range(value) else {
                    return Err(outcome(
                        400,
                        "invalid",
                        format!("date '{v}' is not a FHIR date"),
                    ));
                };
                match prefix {
                    "ge" | "gt" => q.since_ms = Some(lo),
                    "le" | "lt" => q.until_ms = Some(hi),
                    _ => {
                        q.since_ms = Some(lo);
                        q.until_ms = Some(hi);
                    }
                }
            }
            "_format" | "_pretty" => {}
            other => {
                return Err(outcome(
                    400,
                    "not-supported",
                    format!("parameter '{other}' is not supported on AuditEvent"),
                ));
            }
        }
    }
    let dir = log.dir().to_path_buf();
    let single = id.is_some();
    let found = tokio::task::spawn_blocking(move || super::audit::search(&dir, &q))
        .await
        .map_err(|_| outcome(500, "exception", "audit read failed"))?
        .map_err(|e| outcome(500, "exception", format!("audit read failed: {e}")))?;
    let (events, next) = found;
    let body = if single {
        match events.into_iter().next() {
            Some(e) if Some(e["id"].as_str().unwrap_or("")) == id => e,
            _ => return Err(outcome(404, "not-found", "no such AuditEvent")),
        }
    } else {
        let mut b = json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": events.into_iter().map(|e| json!({"resource": e, "search": {"mode": "match"}})).collect::<Vec<_>>(),
        });
        if let Some(n) = next {
            b["link"] = json!([{"relation": "next", "url": format!("AuditEvent?_before={n}")}]);
        }
        b
    };
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    Ok(crate::rest::http::tagged(
        json_response(StatusCode::OK, bytes),
        "audit-read",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_classified_and_unknown_ones_are_ingest() {
        let b = "/fhir";
        assert_eq!(classify(b, &Method::GET, "/healthz"), Ask::Public);
        assert_eq!(classify(b, &Method::GET, "/fhir/metadata"), Ask::Public);
        assert_eq!(classify(b, &Method::POST, "/hl7v2"), Ask::Ingest);
        assert_eq!(classify(b, &Method::POST, "/cda"), Ask::Ingest);
        assert_eq!(classify(b, &Method::POST, "/fhirx"), Ask::Ingest);
        assert_eq!(
            classify(b, &Method::GET, "/fhir/Observation"),
            Ask::Search {
                ty: "Observation".into()
            }
        );
        assert_eq!(
            classify(b, &Method::GET, "/fhir/Patient/1/Observation"),
            Ask::Search {
                ty: "Observation".into()
            }
        );
        assert_eq!(classify(b, &Method::POST, "/fhir/$reindex"), Ask::Operator);
        assert_eq!(
            classify(b, &Method::POST, "/fhir/Observation/$reindex"),
            Ask::Operator
        );
        assert_eq!(classify(b, &Method::POST, "/fhir"), Ask::Bundle);
        assert!(matches!(
            classify(b, &Method::DELETE, "/fhir/Observation/1"),
            Ask::Type {
                perm: scopes::D,
                ..
            }
        ));
        assert!(matches!(
            classify(b, &Method::GET, "/fhir/Observation/1/_history/2"),
            Ask::Type {
                perm: scopes::R,
                ..
            }
        ));
    }
}
