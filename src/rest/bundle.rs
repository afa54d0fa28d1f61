//! batch and transaction Bundles (`POST [base]`).
//!
//! A transaction's writes are one call to [`transaction::apply`] (atomic); its GETs are answered
//! after the commit. A batch runs every entry as its own unit of work, concurrently, so the store's
//! group commit folds them together while each succeeds or fails alone.

use super::AppState;
use super::http::{self, ApiResult, Params, Return, finish, json_response};
use super::read::fetch;
use crate::definitions::Definitions;
use crate::model::{self, FhirError};
use crate::store::StoredVersion;
use crate::transaction::{self, Effect, Entry, Method, Scope, Target};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use std::sync::Arc;

pub async fn batch_or_transaction(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut kind = "transaction";
    let result = handle(&st, q.as_deref(), &headers, body, &mut kind).await;
    finish(result, kind)
}

/// One parsed entry: a write for the engine, or a read answered afterwards.
enum Request {
    Write(Entry),
    Read {
        resource_type: String,
        id: String,
        version: Option<u64>,
    },
    /// A search (`GET Patient?name=x`, `GET Patient/1/Observation`).
    Search(super::search::Target, Option<String>),
}

async fn handle(
    st: &AppState,
    q: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    kind: &mut &'static str,
) -> ApiResult {
    let params = Params::parse(q);
    let format = http::negotiate(headers, &params)?;
    params.only(&[])?;
    http::require_json(headers)?;
    let bytes = http::read_body(headers, body, st.settings.max_body_bytes).await?;
    let bundle = model::parse_resource(&bytes, None, st.limits())?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirError::new(
            400,
            "invalid",
            "POST to the base takes a Bundle of type batch or transaction",
        )
        .at("resourceType")
        .into());
    }
    let is_transaction = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => true,
        Some("batch") => false,
        other => {
            return Err(FhirError::new(
                400,
                "invalid",
                format!(
                    "Bundle.type must be batch or transaction, not {}",
                    other.unwrap_or("absent")
                ),
            )
            .at("Bundle.type")
            .into());
        }
    };
    *kind = if is_transaction {
        "transaction"
    } else {
        "batch"
    };
    let mut bundle = bundle;
    let entries = match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    };
    if entries.len() > st.settings.max_bundle_entries {
        return Err(FhirError::new(
            413,
            "too-costly",
            format!(
                "{} entries exceed the limit of {}",
                entries.len(),
                st.settings.max_bundle_entries
            ),
        )
        .at("Bundle.entry")
        .into());
    }
    let base = st.base_url(headers);
    let prefer = http::prefer_return(headers);
    let parsed: Vec<Result<Request, FhirError>> = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| parse_entry(e, &base, &st.settings.base_path).map_err(|err| locate(err, i)))
        .collect();
    let responses = if is_transaction {
        transaction(st, parsed, &base, prefer).await?
    } else {
        batch(st, parsed, &base, prefer).await
    };
    let kind = if is_transaction {
        "transaction-response"
    } else {
        "batch-response"
    };
    let bytes = render(kind, &responses);
    let body = if format.pretty {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| FhirError::new(500, "exception", e.to_string()))?;
        http::body_bytes(&v, format)
    } else {
        bytes.into()
    };
    Ok(json_response(StatusCode::OK, body))
}

/// One entry of a response Bundle. The resource stays the stored bytes and is spliced into the
/// output unparsed: echoing thousands of resources must not parse each one again.
struct EntryOut {
    full_url: Option<String>,
    resource: Option<bytes::Bytes>,
    response: Value,
}

/// Serialises a response Bundle.
fn render(kind: &str, entries: &[EntryOut]) -> Vec<u8> {
    let size: usize = entries
        .iter()
        .map(|e| e.resource.as_ref().map_or(0, |r| r.len()) + 200)
        .sum();
    let mut buf = Vec::with_capacity(size + 100);
    let id = Value::String(transaction::new_id());
    buf.extend_from_slice(b"{\"resourceType\":\"Bundle\",\"id\":");
    buf.extend_from_slice(id.to_string().as_bytes());
    buf.extend_from_slice(b",\"type\":\"");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\",\"entry\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'{');
        if let Some(u) = &e.full_url {
            buf.extend_from_slice(b"\"fullUrl\":");
            buf.extend_from_slice(Value::String(u.clone()).to_string().as_bytes());
            buf.push(b',');
        }
        if let Some(r) = &e.resource {
            buf.extend_from_slice(b"\"resource\":");
            buf.extend_from_slice(r);
            buf.push(b',');
        }
        buf.extend_from_slice(b"\"response\":");
        buf.extend_from_slice(e.response.to_string().as_bytes());
        buf.push(b'}');
    }
    buf.extend_from_slice(b"]}");
    buf
}

fn locate(e: FhirError, i: usize) -> FhirError {
    FhirError {
        status: e.status,
        issues: e
            .issues
            .into_iter()
            .map(|x| x.within(&format!("Bundle.entry[{i}]")))
            .collect(),
    }
}

async fn transaction(
    st: &AppState,
    parsed: Vec<Result<Request, FhirError>>,
    base: &str,
    prefer: Return,
) -> Result<Vec<EntryOut>, FhirError> {
    let mut writes = Vec::new();
    let mut slots = Vec::new();
    let mut reads = Vec::new();
    let identities = st.identities.current();
    for (i, p) in parsed.into_iter().enumerate() {
        match p? {
            Request::Write(mut e) => {
                identities.canonicalise_entry(&mut e);
                if let Some(r) = &e.resource {
                    super::validate::check_write(st, r).map_err(|err| locate(err, i))?;
                }
                slots.push((i, true, writes.len()));
                writes.push(e);
            }
            read => {
                slots.push((i, false, reads.len()));
                reads.push(read);
            }
        }
    }
    let effects = transaction::apply(
        st.store.as_ref(),
        &st.search,
        writes,
        Scope::Bundle,
        st.limits(),
    )
    .await?;
    let mut out = Vec::with_capacity(slots.len());
    for (_, is_write, k) in slots {
        out.push(if is_write {
            effect_entry(st, &effects[k], base, prefer).await
        } else {
            read_entry(st, &reads[k], base).await
        });
    }
    Ok(out)
}

async fn batch(
    st: &AppState,
    parsed: Vec<Result<Request, FhirError>>,
    base: &str,
    prefer: Return,
) -> Vec<EntryOut> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut out: Vec<Option<EntryOut>> = (0..parsed.len()).map(|_| None).collect();
    let identities = st.identities.current();
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Err(e) => out[i] = Some(error_entry(&e)),
            Ok(read @ (Request::Read { .. } | Request::Search(..))) => {
                out[i] = Some(read_entry(st, &read, base).await)
            }
            Ok(Request::Write(mut entry)) => {
                identities.canonicalise_entry(&mut entry);
                if let Some(Err(e)) = entry
                    .resource
                    .as_ref()
                    .map(|r| super::validate::check_write(st, r))
                {
                    out[i] = Some(error_entry(&locate(e, i)));
                    continue;
                }
                let store = st.store.clone();
                let catalogue = st.search.clone();
                let limits = st.limits();
                tasks.spawn(async move {
                    (
                        i,
                        transaction::apply(
                            store.as_ref(),
                            &catalogue,
                            vec![entry],
                            Scope::Single,
                            limits,
                        )
                        .await,
                    )
                });
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, Ok(mut effects))) => {
                let effect = effects.pop().unwrap_or(Effect::Nothing);
                out[i] = Some(effect_entry(st, &effect, base, prefer).await);
            }
            Ok((i, Err(e))) => out[i] = Some(error_entry(&locate(e, i))),
            Err(join) => tracing::error!(error = %join, "batch entry task failed"),
        }
    }
    // A task that died (a panic inside `apply`) leaves its slot empty: report it, never drop the entry.
    out.into_iter()
        .map(|slot| {
            slot.unwrap_or_else(|| {
                error_entry(&FhirError::new(500, "exception", "entry was not processed"))
            })
        })
        .collect()
}

/// Parses `entry.request` (and `resource`, `fullUrl`) into a request.
fn parse_entry(mut e: Value, base: &str, base_path: &str) -> Result<Request, FhirError> {
    let resource = e.get_mut("resource").map(Value::take);
    let req = e.get("request").ok_or_else(|| {
        FhirError::new(
            400,
            "required",
            "entry.request is required in a batch or transaction",
        )
        .at("request")
    })?;
    let method = req.get("method").and_then(Value::as_str).unwrap_or("");
    let url = req.get("url").and_then(Value::as_str).unwrap_or("");
    let relative = url
        .strip_prefix(base)
        .or_else(|| url.strip_prefix(base_path))
        .unwrap_or(url)
        .trim_start_matches('/');
    let (path, query) = match relative.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (relative, None),
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let bad_url = || {
        FhirError::new(
            400,
            "invalid",
            format!("request.url '{url}' is not valid for {method}"),
        )
        .at("request.url")
    };
    let defs = Definitions::core();
    let ty = parts
        .first()
        .copied()
        .filter(|t| defs.is_resource_type(t))
        .ok_or_else(bad_url)?
        .to_string();
    let id = |s: &str| {
        if model::primitives::is_id(s) {
            Ok(s.to_string())
        } else {
            Err(bad_url())
        }
    };
    if let Some(r) = &resource
        && r.get("resourceType").and_then(Value::as_str) != Some(ty.as_str())
        && method != "GET"
        && method != "DELETE"
    {
        return Err(FhirError::new(
            400,
            "invalid",
            format!("the resource is not a {ty} as request.url says"),
        )
        .at("resource.resourceType"));
    }
    let (method, target) = match (method, parts.as_slice(), query) {
        ("GET", [_, i], None) => {
            return Ok(Request::Read {
                resource_type: ty,
                id: id(i)?,
                version: None,
            });
        }
        ("GET", [_, i, "_history", v], None) => {
            let version = v.parse().map_err(|_| bad_url())?;
            return Ok(Request::Read {
                resource_type: ty,
                id: id(i)?,
                version: Some(version),
            });
        }
        ("GET", [_], q) => {
            return Ok(Request::Search(
                super::search::Target::Type(ty),
                q.map(str::to_string),
            ));
        }
        ("GET", [_, i, t], q) if defs.is_resource_type(t) => {
            return Ok(Request::Search(
                super::search::Target::Compartment {
                    compartment: ty,
                    id: id(i)?,
                    resource_type: t.to_string(),
                },
                q.map(str::to_string),
            ));
        }
        ("GET", _, _) => {
            return Err(FhirError::new(
                400,
                "not-supported",
                format!("GET '{url}' in a Bundle is not a read, vread or search"),
            )
            .at("request.url"));
        }
        ("POST", [_], None) => (Method::Post, Target::New),
        ("PUT" | "PATCH" | "DELETE", [_, i], None) => (parse_method(method), Target::Id(id(i)?)),
        ("PUT" | "PATCH" | "DELETE", [_], Some(q)) if !q.is_empty() => {
            (parse_method(method), Target::Condition(q.to_string()))
        }
        ("POST" | "PUT" | "PATCH" | "DELETE", _, _) => return Err(bad_url()),
        _ => {
            return Err(FhirError::new(
                400,
                "invalid",
                format!("request.method '{method}' is not supported"),
            )
            .at("request.method"));
        }
    };
    let mut entry = Entry::new(method, &ty, target, None);
    entry.full_url = e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    entry.if_none_exist = req
        .get("ifNoneExist")
        .and_then(Value::as_str)
        .map(str::to_string);
    entry.if_match = match req.get("ifMatch").and_then(Value::as_str) {
        None => None,
        Some(s) => Some(http::parse_etag(s).ok_or_else(|| {
            FhirError::new(
                400,
                "invalid",
                format!("ifMatch '{s}' is not a version ETag"),
            )
            .at("request.ifMatch")
        })?),
    };
    match method {
        Method::Post | Method::Put => {
            let r = resource.ok_or_else(|| {
                FhirError::new(
                    400,
                    "required",
                    format!("{} needs entry.resource", req_method_name(method)),
                )
                .at("resource")
            })?;
            if let (Method::Put, Target::Id(i)) = (method, &entry.target)
                && r.get("id").and_then(Value::as_str) != Some(i.as_str())
            {
                return Err(FhirError::new(
                    400,
                    "invalid",
                    format!("resource id must equal '{i}' from request.url"),
                )
                .at("resource.id"));
            }
            entry.resource = Some(r);
        }
        Method::Patch => {
            // In a Bundle, a JSON Patch travels as a Binary resource whose data is the patch document.
            let data = resource
                .as_ref()
                .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Binary"))
                .and_then(|r| r.get("data").and_then(Value::as_str))
                .ok_or_else(|| {
                    FhirError::new(
                        400,
                        "required",
                        "PATCH in a Bundle needs a Binary resource holding the JSON Patch",
                    )
                    .at("resource")
                })?;
            let bytes = base64_decode(data).ok_or_else(|| {
                FhirError::new(400, "value", "Binary.data is not base64").at("resource.data")
            })?;
            let patch = serde_json::from_slice(&bytes).map_err(|e| {
                FhirError::new(400, "structure", format!("not a JSON Patch: {e}"))
                    .at("resource.data")
            })?;
            entry.patch = Some(patch);
        }
        Method::Delete => {}
    }
    Ok(Request::Write(entry))
}

fn parse_method(m: &str) -> Method {
    match m {
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        _ => Method::Post,
    }
}

fn req_method_name(m: Method) -> &'static str {
    match m {
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
    }
}

/// Minimal standard base64 decoder (whitespace ignored) for Binary.data in Bundles.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|b| !b.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
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

fn status_line(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{code} {reason}")
}

async fn effect_entry(st: &AppState, effect: &Effect, base: &str, prefer: Return) -> EntryOut {
    if let Effect::Created(v) | Effect::Updated(v) = effect {
        super::validate::register(st, &v.resource_type, v.body.as_deref().unwrap_or_default());
    }
    let version: Option<Arc<StoredVersion>> = match effect {
        Effect::Created(v) | Effect::Updated(v) | Effect::Deleted(v) => Some(v.clone()),
        Effect::Existing { resource_type, id } => {
            st.store.read(resource_type, id).await.ok().flatten()
        }
        Effect::Nothing => None,
    };
    let code = if matches!(effect, Effect::Deleted(_) | Effect::Nothing) {
        200
    } else {
        effect.status()
    };
    let mut response = Map::new();
    response.insert("status".into(), json!(status_line(code)));
    let mut out = EntryOut {
        full_url: None,
        resource: None,
        response: Value::Null,
    };
    if let Some(v) = &version {
        if !v.is_deleted() {
            response.insert(
                "location".into(),
                json!(format!(
                    "{}/{}/_history/{}",
                    v.resource_type, v.id, v.version
                )),
            );
            out.full_url = Some(format!("{base}/{}/{}", v.resource_type, v.id));
        }
        response.insert("etag".into(), json!(http::etag(v.version)));
        response.insert(
            "lastModified".into(),
            json!(model::format_instant(v.last_updated_ms)),
        );
        if prefer == Return::Representation {
            out.resource = v.body.clone();
        }
    }
    if prefer == Return::OperationOutcome {
        response.insert("outcome".into(), http::info_outcome(status_line(code)));
    }
    out.response = Value::Object(response);
    out
}

async fn read_entry(st: &AppState, read: &Request, base: &str) -> EntryOut {
    match read {
        Request::Read {
            resource_type: ty,
            id,
            version,
        } => match fetch(st, ty, id, *version).await {
            Ok(v) => EntryOut {
                full_url: Some(format!("{base}/{ty}/{id}")),
                resource: v.body.clone(),
                response: json!({"status": "200 OK", "etag": http::etag(v.version), "lastModified": model::format_instant(v.last_updated_ms)}),
            },
            Err(e) => error_entry(&e),
        },
        Request::Search(target, q) => {
            let params = http::Params::parse(q.as_deref());
            match super::search::search_bundle(st, target, &params.0, false, base).await {
                Ok(bundle) => EntryOut {
                    full_url: None,
                    resource: serde_json::to_vec(&bundle).ok().map(bytes::Bytes::from),
                    response: json!({"status": "200 OK"}),
                },
                Err(e) => error_entry(&e),
            }
        }
        Request::Write(_) => {
            error_entry(&FhirError::new(500, "exception", "a write is not a read"))
        }
    }
}

fn error_entry(e: &FhirError) -> EntryOut {
    EntryOut {
        full_url: None,
        resource: None,
        response: json!({"status": status_line(e.status), "outcome": e.outcome()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round() {
        assert_eq!(
            base64_decode("W3sib3AiOiJ0ZXN0In1d").as_deref(),
            Some(&b"[{\"op\":\"test\"}]"[..])
        );
        assert_eq!(base64_decode("SGVsbG8=").as_deref(), Some(&b"Hello"[..]));
        assert!(base64_decode("SGV*").is_none());
    }
}
