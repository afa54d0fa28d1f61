//! HTTP plumbing shared by every interaction: parameters, content negotiation, bounded bodies,
//! preconditions, and the shape of responses (resource, OperationOutcome, headers).

use crate::model::{FhirError, Issue};
use crate::store::StoredVersion;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use std::time::{Duration, UNIX_EPOCH};

/// The FHIR JSON media type we answer with.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// The interaction a response belongs to, for metrics.
#[derive(Debug, Clone, Copy)]
pub struct Interaction(pub &'static str);

/// An error on its way out: an OperationOutcome with its status.
#[derive(Debug)]
pub struct ApiError(pub FhirError);

impl From<FhirError> for ApiError {
    fn from(e: FhirError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0.outcome()).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        resp
    }
}

/// Handler result: a response, or an error rendered as an OperationOutcome.
pub type ApiResult = Result<Response, ApiError>;

/// Tags a response with its interaction.
pub fn tagged(mut resp: Response, interaction: &'static str) -> Response {
    resp.extensions_mut().insert(Interaction(interaction));
    resp
}

/// Runs a handler body and tags whatever it returns.
pub fn finish(result: ApiResult, interaction: &'static str) -> Response {
    tagged(
        result.unwrap_or_else(IntoResponse::into_response),
        interaction,
    )
}

/// Query parameters in order, percent-decoded.
#[derive(Debug, Clone, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Params {
        Params(
            raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }
    /// The first value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// Parameters other than the format controls (`_format`, `_pretty`), re-encoded: a conditional URL's criteria.
    pub fn criteria(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self
            .0
            .iter()
            .filter(|(k, _)| k != "_format" && k != "_pretty")
        {
            s.append_pair(k, v);
        }
        s.finish()
    }
    /// Rejects parameters outside `allowed` (plus `_format`/`_pretty`): nothing is silently ignored.
    pub fn only(&self, allowed: &[&str]) -> Result<(), FhirError> {
        for (k, _) in &self.0 {
            if k != "_format" && k != "_pretty" && !allowed.contains(&k.as_str()) {
                return Err(FhirError::new(
                    400,
                    "not-supported",
                    format!("parameter '{k}' is not supported here"),
                ));
            }
        }
        Ok(())
    }
}

/// How to render the response body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Format {
    pub pretty: bool,
}

/// Decides the response format from `_format`, `Accept` and `_pretty`; 406 for formats we do not serve.
pub fn negotiate(headers: &HeaderMap, params: &Params) -> Result<Format, FhirError> {
    if let Some(f) = params.get("_format") {
        let f = f.split(';').next().unwrap_or("").trim();
        if !matches!(
            f,
            "json" | "application/json" | "application/fhir+json" | "application/json+fhir"
        ) {
            return Err(FhirError::new(
                406,
                "not-supported",
                format!("_format '{f}' is not served; use json"),
            ));
        }
    } else if let Some(accept) = headers.get(header::ACCEPT) {
        let accept = accept.to_str().unwrap_or("");
        let ok = accept.trim().is_empty()
            || accept.split(',').any(|range| {
                let mt = range.split(';').next().unwrap_or("").trim();
                matches!(
                    mt,
                    "*/*"
                        | "application/*"
                        | "application/json"
                        | "application/fhir+json"
                        | "application/json+fhir"
                )
            });
        if !ok {
            return Err(FhirError::new(
                406,
                "not-supported",
                format!(
                    "none of the accepted media types ({accept}) is served; use application/fhir+json"
                ),
            ));
        }
    }
    let pretty = match params.get("_pretty") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(FhirError::new(
                400,
                "invalid",
                format!("_pretty must be true or false, not '{other}'"),
            ));
        }
    };
    Ok(Format { pretty })
}

/// Requires a JSON body (`application/fhir+json` or `application/json`); 415 otherwise.
pub fn require_json(headers: &HeaderMap) -> Result<(), FhirError> {
    require_content_type(
        headers,
        &[
            "application/fhir+json",
            "application/json",
            "application/json+fhir",
        ],
    )
}

/// Requires one of the given media types in `Content-Type`.
pub fn require_content_type(headers: &HeaderMap, allowed: &[&str]) -> Result<(), FhirError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mt = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if allowed.contains(&mt.as_str()) {
        Ok(())
    } else {
        let found = if ct.is_empty() {
            "no Content-Type".to_string()
        } else {
            format!("Content-Type '{ct}'")
        };
        Err(FhirError::new(
            415,
            "not-supported",
            format!(
                "{found} is not accepted here; send {}",
                allowed.join(" or ")
            ),
        ))
    }
}

/// Reads a body up to `limit` bytes; 413 as soon as it is known to be larger (from `Content-Length`
/// before reading anything, or while streaming), so an oversized body is never buffered whole.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, FhirError> {
    let too_large = || {
        FhirError::new(
            413,
            "too-costly",
            format!("request body exceeds the limit of {limit} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(FhirError::new(
            400,
            "structure",
            format!("could not read the request body: {e}"),
        )),
    }
}

/// `If-Match: W/"3"` (or `"3"`) as a version; 400 for anything else.
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>, FhirError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    parse_etag(s).map(Some).ok_or_else(|| {
        FhirError::new(
            400,
            "invalid",
            format!("If-Match '{s}' is not a version ETag such as W/\"3\""),
        )
    })
}

/// `W/"3"` or `"3"` -> 3.
pub fn parse_etag(s: &str) -> Option<u64> {
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// What `Prefer: return=` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    Minimal,
    #[default]
    Representation,
    OperationOutcome,
}

/// Reads `Prefer: return=...` (other preferences are ignored, as the header's semantics allow).
pub fn prefer_return(headers: &HeaderMap) -> Return {
    let Some(p) = headers.get("prefer").and_then(|v| v.to_str().ok()) else {
        return Return::default();
    };
    for part in p.split([',', ';']) {
        match part.trim() {
            "return=minimal" => return Return::Minimal,
            "return=representation" => return Return::Representation,
            "return=OperationOutcome" => return Return::OperationOutcome,
            _ => {}
        }
    }
    Return::default()
}

/// Serialises a JSON value for the response.
pub fn body_bytes(value: &Value, format: Format) -> Bytes {
    let v = if format.pretty {
        serde_json::to_vec_pretty(value)
    } else {
        serde_json::to_vec(value)
    };
    Bytes::from(v.unwrap_or_default())
}

/// A JSON response with the FHIR content type.
pub fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// `W/"3"`.
pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// The HTTP date of a store timestamp.
pub fn http_date(ms: i64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// Adds `ETag` and `Last-Modified` of a version.
pub fn version_headers(resp: &mut Response, v: &StoredVersion) {
    let h = resp.headers_mut();
    if let Ok(e) = HeaderValue::from_str(&etag(v.version)) {
        h.insert(header::ETAG, e);
    }
    if let Ok(d) = HeaderValue::from_str(&http_date(v.last_updated_ms)) {
        h.insert(header::LAST_MODIFIED, d);
    }
}

/// An OperationOutcome body with a single informational issue (for `Prefer: return=OperationOutcome`).
pub fn info_outcome(msg: String) -> Value {
    crate::model::operation_outcome(&[Issue::information("informational", msg)])
}
