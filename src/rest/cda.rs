//! `POST /cda` (a CDA document; the answer is the stored document Bundle), `POST /hl7v3` (an
//! HL7 v3 message, bare or in a SOAP 1.1/1.2 envelope; the answer is the acknowledgement or the
//! query response), and the operations out of FHIR: `GET [base]/DocumentReference/{id}/$cda`
//! (the original bytes) and `GET [base]/Patient/{id}/$hl7v3` (a PRPA_IN201306UV02).

use super::AppState;
use super::http::{ApiError, json_response, tagged};
use crate::ingest::hl7v3::Soap;
use crate::model::FhirError;
use crate::security::ownership::IngestState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

async fn body_bytes(st: &AppState, body: axum::body::Body) -> Result<Bytes, FhirError> {
    let max = st.settings.max_body_bytes;
    axum::body::to_bytes(body, max).await.map_err(|_| {
        FhirError::new(
            413,
            "too-costly",
            format!("body larger than {max} bytes; nothing was read or stored"),
        )
    })
}

fn too_large(headers: &HeaderMap, max: usize) -> Option<FhirError> {
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())?;
    (len > max).then(|| {
        FhirError::new(
            413,
            "too-costly",
            format!("body of {len} bytes is larger than {max} bytes; nothing was read or stored"),
        )
    })
}

/// `POST /cda`.
pub async fn post(
    IngestState(st): IngestState,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(e) = too_large(&headers, st.settings.max_body_bytes) {
        return tagged(ApiError(e).into_response(), "cda");
    }
    let bytes = match body_bytes(&st, body).await {
        Ok(b) => b,
        Err(e) => return tagged(ApiError(e).into_response(), "cda"),
    };
    let r = match st.hl7v3.cda.ingest(&st, &bytes).await {
        Ok(s) => {
            let mut resp = json_response(
                StatusCode::CREATED,
                Bytes::from(serde_json::to_vec(&s.converted.bundle).unwrap_or_default()),
            );
            let loc = format!(
                "{}/DocumentReference/{}",
                st.settings.base_path, s.converted.document_reference_id
            );
            if let Ok(v) = HeaderValue::from_str(&loc) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => ApiError(e).into_response(),
    };
    tagged(r, "cda")
}

fn xml_response(status: StatusCode, xml: String, soap: Option<Soap>) -> Response {
    let ct = match soap {
        Some(Soap::V12) => "application/soap+xml; charset=utf-8",
        Some(Soap::V11) => "text/xml; charset=utf-8",
        None => "application/xml; charset=utf-8",
    };
    let mut r = (status, xml).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

/// `POST /hl7v3`: AA, AE and query responses are all HTTP 200, an oversized body too (the
/// acknowledgement carries the outcome, as platforms expect, and is answered before the body is
/// read).
pub async fn post_hl7v3(
    IngestState(st): IngestState,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(e) = too_large(&headers, st.settings.max_body_bytes) {
        let reply = st.hl7v3.refusal(&e.issues[0].diagnostics);
        return tagged(xml_response(StatusCode::OK, reply, None), "hl7v3");
    }
    let bytes = match body_bytes(&st, body).await {
        Ok(b) => b,
        Err(e) => {
            let reply = st.hl7v3.refusal(&e.issues[0].diagnostics);
            return tagged(xml_response(StatusCode::OK, reply, None), "hl7v3");
        }
    };
    let reply = st.hl7v3.handle(&st, &bytes).await;
    tagged(xml_response(StatusCode::OK, reply.xml, reply.soap), "hl7v3")
}

/// `GET [base]/DocumentReference/{id}/$cda` and `GET [base]/Patient/{id}/$hl7v3`.
pub async fn instance_operation(st: &AppState, ty: &str, id: &str, op: &str) -> Response {
    let r = match (ty, op) {
        ("DocumentReference", "$cda") | ("Patient", "$hl7v3") => {
            read(st, ty, id).await.and_then(|v| {
                if op == "$cda" {
                    let bytes = crate::ingest::cda::original_cda(&v)?;
                    let mut r = (StatusCode::OK, bytes).into_response();
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/hl7-cda+xml"),
                    );
                    Ok(r)
                } else {
                    let xml = st.hl7v3.person_response(&v).ok_or_else(|| {
                        FhirError::new(
                            503,
                            "not-supported",
                            "mappings/hl7v3/PRPA_IN201305UV02.toml is not loaded",
                        )
                    })?;
                    Ok(xml_response(StatusCode::OK, xml, None))
                }
            })
        }
        _ => Err(FhirError::new(
            404,
            "not-supported",
            format!(
                "{op} is defined on DocumentReference ($cda) and Patient ($hl7v3), not on {ty}"
            ),
        )),
    };
    let r = r.unwrap_or_else(|e| ApiError(e).into_response());
    tagged(
        r,
        if op == "$cda" {
            "cda-read"
        } else {
            "hl7v3-read"
        },
    )
}

async fn read(st: &AppState, ty: &str, id: &str) -> Result<Value, FhirError> {
    let v = st
        .store
        .read(ty, id)
        .await
        .map_err(crate::transaction::store_error)?
        .filter(|v| !v.is_deleted())
        .ok_or_else(|| FhirError::new(404, "not-found", format!("{ty}/{id} is not known")))?;
    let body = v
        .body
        .as_ref()
        .ok_or_else(|| FhirError::new(404, "not-found", format!("{ty}/{id} is deleted")))?;
    serde_json::from_slice(body)
        .map_err(|e| FhirError::new(500, "exception", format!("stored {ty}/{id}: {e}")))
}
