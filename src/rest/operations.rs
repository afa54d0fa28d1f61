//! FHIR operations (`$name`) at system, type and instance level.
//!
//! One entry point for all of them: the routes hand over an [`Invocation`] whose parameters are
//! already normalised into a `Parameters` resource (from the query string of a GET, or the body of
//! a POST: a `Parameters` resource, or any other resource, which becomes the `resource` parameter),
//! and [`invoke`] dispatches on the name and level. Operation handlers live with their capability
//! (`validate.rs`, `terminology.rs`) and only read parameters; they never parse HTTP.

use super::AppState;
use super::http::{self, ApiResult, Format, Params, finish};
use crate::model::FhirError;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::{Map, Value, json};

/// Where an operation is invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    /// `[base]/$op`
    System,
    /// `[base]/Type/$op`
    Type(String),
    /// `[base]/Type/id/$op`
    Instance(String, String),
}

/// One operation call, HTTP already decoded.
#[derive(Debug)]
pub struct Invocation {
    pub level: Level,
    /// The operation's name without `$`.
    pub name: String,
    pub method: Method,
    /// The input as a `Parameters` resource.
    pub parameters: Value,
    pub format: Format,
    pub headers: HeaderMap,
}

impl Invocation {
    /// The parameters named `name`, in order.
    pub fn params<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> {
        self.parameters
            .get("parameter")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(move |p| p.get("name").and_then(Value::as_str) == Some(name))
    }

    /// The first parameter named `name`.
    pub fn param<'a>(&'a self, name: &'a str) -> Option<&'a Value> {
        self.params(name).next()
    }

    /// A primitive parameter as text (`valueString`, `valueCode`, `valueUri`, `valueInteger`, ...).
    pub fn text(&self, name: &str) -> Option<String> {
        let p = self.param(name)?.as_object()?;
        p.iter()
            .find(|(k, _)| k.starts_with("value"))
            .and_then(|(_, v)| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
    }

    /// A complex-typed parameter (`valueCoding`, `valueCodeableConcept`, ...) by its value key.
    pub fn value<'a>(&'a self, name: &'a str, value_key: &str) -> Option<&'a Value> {
        self.param(name)?.get(value_key)
    }

    /// A resource parameter.
    pub fn resource<'a>(&'a self, name: &'a str) -> Option<&'a Value> {
        self.param(name)?.get("resource")
    }

    /// Refuses parameters outside `allowed`: nothing is silently ignored.
    pub fn only(&self, allowed: &[&str]) -> Result<(), FhirError> {
        for p in self
            .parameters
            .get("parameter")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            if !allowed.contains(&name) {
                return Err(FhirError::new(
                    400,
                    "not-supported",
                    format!("parameter '{name}' is not supported by ${}", self.name),
                ));
            }
        }
        Ok(())
    }

    /// The resource type of a type- or instance-level call.
    pub fn resource_type(&self) -> Option<&str> {
        match &self.level {
            Level::System => None,
            Level::Type(t) | Level::Instance(t, _) => Some(t),
        }
    }
}

/// Builds a `Parameters` resource from query parameters (each a `valueString`).
fn from_query(params: &Params) -> Value {
    let list: Vec<Value> = params
        .0
        .iter()
        .filter(|(k, _)| k != "_format" && k != "_pretty")
        .map(|(k, v)| json!({"name": k, "valueString": v}))
        .collect();
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("Parameters"));
    if !list.is_empty() {
        m.insert("parameter".into(), Value::Array(list));
    }
    Value::Object(m)
}

/// The body of a POST: a `Parameters` resource, or a bare resource taken as `resource`. Query
/// parameters are appended, so `POST Patient/$validate?profile=...` with a Patient body works.
fn from_body(bytes: &[u8], query: &Params) -> Result<Value, FhirError> {
    let mut params = from_query(query);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(params);
    }
    // The body is checked only as JSON here: an operation such as $validate must see (and report
    // on) a resource that breaks the structural rules instead of having it refused up front.
    let body = crate::model::parse_json(bytes)?;
    let Some(obj) = body.as_object() else {
        return Err(FhirError::new(
            400,
            "structure",
            "the operation's body must be a JSON object",
        ));
    };
    let extra: Vec<Value> = match obj.get("resourceType").and_then(Value::as_str) {
        Some("Parameters") => obj
            .get("parameter")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        Some(_) => vec![json!({"name": "resource", "resource": body})],
        None => {
            return Err(FhirError::new(
                400,
                "structure",
                "the operation's body has no resourceType",
            )
            .at("resourceType"));
        }
    };
    if let Some(list) = params
        .as_object_mut()
        .map(|m| m.entry("parameter").or_insert_with(|| Value::Array(vec![])))
        && let Some(a) = list.as_array_mut()
    {
        a.extend(extra);
    }
    Ok(params)
}

/// Decodes the request and runs the operation.
async fn call(
    st: &AppState,
    level: Level,
    op: &str,
    method: Method,
    q: Option<&str>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let query = Params::parse(q);
    let format = http::negotiate(&headers, &query)?;
    let name = op
        .strip_prefix('$')
        .filter(|n| !n.is_empty())
        .ok_or_else(|| FhirError::new(404, "not-found", format!("no such endpoint: {op}")))?
        .to_string();
    if let Level::Type(t) | Level::Instance(t, _) = &level {
        super::check_type(t)?;
    }
    if let Level::Instance(_, id) = &level {
        super::check_id(id)?;
    }
    let parameters = if method == Method::POST {
        http::require_json(&headers)?;
        let bytes = http::read_body(&headers, body, st.settings.max_body_bytes).await?;
        from_body(&bytes, &query)?
    } else {
        from_query(&query)
    };
    invoke(
        st,
        Invocation {
            level,
            name,
            method,
            parameters,
            format,
            headers,
        },
    )
    .await
}

/// Dispatches an operation by name and level.
pub async fn invoke(st: &AppState, inv: Invocation) -> ApiResult {
    match (inv.name.as_str(), &inv.level) {
        ("validate", Level::Type(_) | Level::Instance(..)) => {
            super::validate::validate(st, inv).await
        }
        ("snapshot", Level::Type(t) | Level::Instance(t, _)) if t == "StructureDefinition" => {
            super::validate::snapshot(st, inv).await
        }
        (
            "expand" | "validate-code" | "lookup" | "subsumes" | "translate",
            Level::System | Level::Type(_) | Level::Instance(..),
        ) => super::terminology::invoke(st, inv).await,
        ("reindex", Level::System | Level::Type(_)) => super::search::reindex(st, inv).await,
        (name, level) => Err(FhirError::new(
            404,
            "not-supported",
            format!("operation ${name} is not supported {}", describe(level)),
        )
        .into()),
    }
}

fn describe(level: &Level) -> String {
    match level {
        Level::System => "at system level".to_string(),
        Level::Type(t) => format!("on {t}"),
        Level::Instance(t, _) => format!("on a {t} instance"),
    }
}

/// `GET|POST [base]/$op`.
pub async fn system(
    State(st): State<AppState>,
    Path(op): Path<String>,
    method: Method,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish(
        call(&st, Level::System, &op, method, q.as_deref(), headers, body).await,
        "operation",
    )
}

/// `GET|POST [base]/Type/$op`.
pub async fn type_level(
    st: &AppState,
    ty: String,
    op: &str,
    method: Method,
    q: Option<&str>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish(
        call(st, Level::Type(ty), op, method, q, headers, body).await,
        "operation",
    )
}

/// `GET|POST [base]/Type/id/$op`.
pub async fn instance(
    State(st): State<AppState>,
    Path((ty, id, op)): Path<(String, String, String)>,
    method: Method,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    finish(
        call(
            &st,
            Level::Instance(ty, id),
            &op,
            method,
            q.as_deref(),
            headers,
            body,
        )
        .await,
        "operation",
    )
}

/// Renders an operation's output resource (a `Parameters`, `OperationOutcome`, `ValueSet`, ...).
pub fn output(status: u16, resource: &Value, format: Format) -> ApiResult {
    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
    Ok(http::json_response(
        status,
        http::body_bytes(resource, format),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_body_parameters_merge_in_order() {
        let q = Params::parse(Some("profile=http%3A%2F%2Fx&_format=json"));
        let p = from_body(br#"{"resourceType":"Patient","id":"a"}"#, &q).unwrap();
        let list = p["parameter"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["name"], "profile");
        assert_eq!(list[0]["valueString"], "http://x");
        assert_eq!(list[1]["name"], "resource");
        assert_eq!(list[1]["resource"]["id"], "a");
    }

    #[test]
    fn a_body_without_resource_type_is_located() {
        let e = from_body(br#"{"a":1}"#, &Params::default()).unwrap_err();
        assert_eq!(e.issues[0].expression.as_deref(), Some("resourceType"));
    }
}
