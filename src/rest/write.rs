//! create, update, patch and delete, plain and conditional. Each is one entry through
//! [`crate::transaction::apply`], so single interactions and Bundles share every rule.

use super::http::{self, ApiResult, Format, Params, Return, finish, json_response};
use super::read::{location, parse_stored};
use super::{AppState, check_id, check_type};
use crate::model::{self, FhirError};
use crate::transaction::{self, Effect, Entry, Method, Scope, Target};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

pub async fn create(
    State(st): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish(
        create_inner(&st, &ty, q.as_deref(), &headers, body).await,
        "create",
    )
}

async fn create_inner(
    st: &AppState,
    ty: &str,
    q: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult {
    let params = Params::parse(q);
    let format = http::negotiate(headers, &params)?;
    params.only(&[])?;
    check_type(ty)?;
    let resource = parse_body(st, ty, headers, body).await?;
    let mut entry = Entry::new(Method::Post, ty, Target::New, Some(resource));
    entry.if_none_exist = headers
        .get("if-none-exist")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| FhirError::new(400, "invalid", "If-None-Exist is not valid text"))?;
    respond(st, headers, format, entry).await
}

pub async fn update(
    State(st): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish(
        update_inner(
            &st,
            &ty,
            Target::Id(id),
            Params::parse(q.as_deref()),
            &headers,
            body,
        )
        .await,
        "update",
    )
}

pub async fn conditional_update(
    State(st): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let params = Params::parse(q.as_deref());
    let criteria = params.criteria();
    finish(
        update_inner(
            &st,
            &ty,
            Target::Condition(criteria),
            params,
            &headers,
            body,
        )
        .await,
        "update-conditional",
    )
}

async fn update_inner(
    st: &AppState,
    ty: &str,
    target: Target,
    params: Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult {
    let format = http::negotiate(headers, &params)?;
    check_type(ty)?;
    check_target(
        &params,
        &target,
        FhirError::new(400, "invalid", "conditional update without criteria"),
    )?;
    let resource = parse_body(st, ty, headers, body).await?;
    if let Target::Id(id) = &target {
        match resource.get("id").and_then(Value::as_str) {
            None => {
                return Err(FhirError::new(
                    400,
                    "required",
                    format!("the resource must carry id '{id}' to be updated"),
                )
                .at("id")
                .into());
            }
            Some(b) if b != id => {
                return Err(FhirError::new(
                    400,
                    "invalid",
                    format!("resource id '{b}' differs from the id '{id}' in the URL"),
                )
                .at("id")
                .into());
            }
            _ => {}
        }
    }
    let mut entry = Entry::new(Method::Put, ty, target, Some(resource));
    entry.if_match = http::if_match(headers)?;
    respond(st, headers, format, entry).await
}

pub async fn patch(
    State(st): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish(
        patch_inner(
            &st,
            &ty,
            Target::Id(id),
            Params::parse(q.as_deref()),
            &headers,
            body,
        )
        .await,
        "patch",
    )
}

pub async fn conditional_patch(
    State(st): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let params = Params::parse(q.as_deref());
    let criteria = params.criteria();
    finish(
        patch_inner(
            &st,
            &ty,
            Target::Condition(criteria),
            params,
            &headers,
            body,
        )
        .await,
        "patch-conditional",
    )
}

async fn patch_inner(
    st: &AppState,
    ty: &str,
    target: Target,
    params: Params,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult {
    let format = http::negotiate(headers, &params)?;
    check_type(ty)?;
    check_target(
        &params,
        &target,
        FhirError::new(400, "invalid", "conditional patch without criteria"),
    )?;
    http::require_content_type(headers, &["application/json-patch+json"]).map_err(|e| {
        if headers.get(header::CONTENT_TYPE).is_some_and(|v| v.to_str().unwrap_or("").contains("fhir+json")) {
            FhirError::new(415, "not-supported", "FHIRPath Patch (Parameters) is not supported yet; send application/json-patch+json")
        } else {
            e
        }
    })?;
    let bytes = http::read_body(headers, body, st.settings.max_body_bytes).await?;
    let doc = model::parse_json(&bytes)?;
    let patch: json_patch::Patch = serde_json::from_value(doc)
        .map_err(|e| FhirError::new(400, "structure", format!("not a JSON Patch document: {e}")))?;
    let mut entry = Entry::new(Method::Patch, ty, target, None);
    entry.patch = Some(patch);
    entry.if_match = http::if_match(headers)?;
    respond(st, headers, format, entry).await
}

pub async fn delete(
    State(st): State<AppState>,
    Path((ty, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    finish(
        delete_inner(
            &st,
            &ty,
            Target::Id(id),
            Params::parse(q.as_deref()),
            &headers,
        )
        .await,
        "delete",
    )
}

pub async fn conditional_delete(
    State(st): State<AppState>,
    Path(ty): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = Params::parse(q.as_deref());
    let criteria = params.criteria();
    finish(
        delete_inner(&st, &ty, Target::Condition(criteria), params, &headers).await,
        "delete-conditional",
    )
}

async fn delete_inner(
    st: &AppState,
    ty: &str,
    target: Target,
    params: Params,
    headers: &HeaderMap,
) -> ApiResult {
    let format = http::negotiate(headers, &params)?;
    check_type(ty)?;
    let everything = FhirError::new(
        412,
        "multiple-matches",
        "conditional delete without criteria would match everything",
    );
    check_target(&params, &target, everything)?;
    let mut entry = Entry::new(Method::Delete, ty, target, None);
    entry.if_match = http::if_match(headers)?;
    respond(st, headers, format, entry).await
}

/// A literal id takes no query parameters and must be a valid id; a condition must have criteria
/// (`no_criteria` is the error otherwise).
fn check_target(params: &Params, target: &Target, no_criteria: FhirError) -> Result<(), FhirError> {
    match target {
        Target::Id(id) => {
            params.only(&[])?;
            check_id(id)
        }
        Target::Condition(c) if c.is_empty() => Err(no_criteria),
        _ => Ok(()),
    }
}

/// Reads, bounds and structurally checks a request body naming `ty`.
async fn parse_body(
    st: &AppState,
    ty: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, FhirError> {
    http::require_json(headers)?;
    let bytes = http::read_body(headers, body, st.settings.max_body_bytes).await?;
    model::parse_resource(&bytes, Some(ty), st.limits())
}

/// Applies one entry and answers as the interaction prescribes.
async fn respond(
    st: &AppState,
    headers: &HeaderMap,
    format: Format,
    mut entry: Entry,
) -> ApiResult {
    // Alias identifier systems become canonical before validation sees or the store keeps them.
    st.identities.current().canonicalise_entry(&mut entry);
    let warnings = match &entry.resource {
        Some(r) => super::validate::check_write(st, r)?,
        None => Vec::new(),
    };
    let effect = transaction::apply(
        st.store.as_ref(),
        &st.search,
        vec![entry],
        Scope::Single,
        st.limits(),
    )
    .await?
    .pop()
    .unwrap_or(Effect::Nothing);
    if let Effect::Created(v) | Effect::Updated(v) = &effect {
        super::validate::register(st, &v.resource_type, v.body.as_deref().unwrap_or_default());
    }
    let base = st.base_url(headers);
    let prefer = http::prefer_return(headers);
    let (status, version) = match &effect {
        Effect::Created(v) => (StatusCode::CREATED, Some(v.clone())),
        Effect::Updated(v) => (StatusCode::OK, Some(v.clone())),
        Effect::Existing { resource_type, id } => (
            StatusCode::OK,
            st.store.read(resource_type, id).await.ok().flatten(),
        ),
        Effect::Deleted(v) => {
            let mut resp = match prefer {
                Return::OperationOutcome => json_response(
                    StatusCode::OK,
                    http::body_bytes(
                        &http::info_outcome(format!(
                            "deleted {}/{} (version {})",
                            v.resource_type, v.id, v.version
                        )),
                        format,
                    ),
                ),
                _ => StatusCode::NO_CONTENT.into_response(),
            };
            http::version_headers(&mut resp, v);
            return Ok(resp);
        }
        Effect::Nothing => {
            return Ok(match prefer {
                Return::OperationOutcome => json_response(
                    StatusCode::OK,
                    http::body_bytes(&http::info_outcome("nothing to delete".into()), format),
                ),
                _ => StatusCode::NO_CONTENT.into_response(),
            });
        }
    };
    let Some(v) = version else {
        return Err(FhirError::new(
            500,
            "exception",
            "the written resource could not be read back",
        )
        .into());
    };
    let mut resp = match prefer {
        Return::Minimal => status.into_response(),
        Return::OperationOutcome => {
            let what = if status == StatusCode::CREATED {
                "created"
            } else {
                "updated"
            };
            let msg = format!("{what} {}/{} version {}", v.resource_type, v.id, v.version);
            let mut issues = vec![crate::model::Issue::information("informational", msg)];
            issues.extend(warnings);
            let outcome = crate::model::operation_outcome(&issues);
            json_response(status, http::body_bytes(&outcome, format))
        }
        Return::Representation if format.pretty => {
            json_response(status, http::body_bytes(&parse_stored(&v)?, format))
        }
        Return::Representation => json_response(status, v.body.clone().unwrap_or_default()),
    };
    http::version_headers(&mut resp, &v);
    location(&mut resp, &base, &v);
    Ok(resp)
}
