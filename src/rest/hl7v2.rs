//! HL7 v2 over HTTP: `POST /hl7v2` (the body is one ER7 message; the answer is its ACK, or with
//! `Accept: application/fhir+json` the committed transaction Bundle), `$ingest-errors` (the
//! dead letters) and `$reload-mappings`.

use super::AppState;
use super::http::{ApiError, json_response, tagged};
use crate::ingest::hl7v2::ack::AckCode;
use crate::model::FhirError;
use crate::security::ownership::IngestState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

/// `POST /hl7v2`.
pub async fn post(
    IngestState(st): IngestState,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let max = st.settings.hl7v2_max_message_bytes;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let ok_type = content_type.is_empty()
        || content_type.starts_with("x-application/hl7-v2+er7")
        || content_type.starts_with("application/hl7-v2")
        || content_type.starts_with("text/plain");
    if !ok_type {
        let e = FhirError::new(
            415,
            "not-supported",
            format!(
                "content type '{content_type}' is not an HL7 v2 ER7 message (use x-application/hl7-v2+er7 or text/plain)"
            ),
        );
        return tagged(ApiError(e).into_response(), "hl7v2");
    }
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => {
            let e = FhirError::new(
                413,
                "too-costly",
                format!("HL7 v2 message larger than {max} bytes"),
            );
            return tagged(ApiError(e).into_response(), "hl7v2");
        }
    };
    let wants_fhir = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/fhir+json"));
    let out = if wants_fhir {
        st.hl7v2.ingest_returning_bundle(&st, &bytes).await
    } else {
        st.hl7v2.ingest(&st, &bytes).await
    };
    let resp = if wants_fhir {
        match (&out.bundle, out.code) {
            (Some(b), _) => json_response(
                StatusCode::OK,
                Bytes::from(serde_json::to_vec(b).unwrap_or_default()),
            ),
            (None, AckCode::Accept) => {
                // A duplicate: nothing was applied this time.
                let v = super::http::info_outcome(
                    "duplicate message: already committed, not applied again".into(),
                );
                json_response(
                    StatusCode::OK,
                    Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                )
            }
            (None, code) => {
                let status = if code == AckCode::Reject { 400 } else { 422 };
                let e =
                    FhirError::new(status, "processing", out.reason.clone().unwrap_or_default());
                ApiError(e).into_response()
            }
        }
    } else {
        // The ACK says AA/AE/AR; HTTP only says it was answered.
        let mut r = (StatusCode::OK, out.ack.clone()).into_response();
        let ct = format!("x-application/hl7-v2+er7; charset={}", out.charset.iana());
        if let Ok(v) = HeaderValue::from_str(&ct) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    tagged(resp, "hl7v2")
}

/// `GET [base]/$ingest-errors`: the dead letters, newest first, as a Parameters resource.
pub async fn ingest_errors(State(st): State<AppState>) -> Response {
    let params: Vec<Value> = st
        .hl7v2
        .dead_letters
        .list(100)
        .into_iter()
        .map(|d| {
            json!({"name": "error", "part": [
                {"name": "id", "valueInteger": d.id},
                {"name": "received", "valueString": d.received_ms.to_string()},
                {"name": "facility", "valueString": if d.facility.is_empty() { "(none)".into() } else { d.facility }},
                {"name": "controlId", "valueString": if d.control_id.is_empty() { "(none)".into() } else { d.control_id }},
                {"name": "reason", "valueString": d.reason},
                {"name": "message", "valueString": String::from_utf8_lossy(&d.raw).replace('\r', "\n")}
            ]})
        })
        .collect();
    dead_letter_parameters(params)
}

/// `POST [base]/$ingest-errors?replay=ID|all`: sends dead letters through the pipeline again
/// (after a mapping or profile fix). Each replayed one leaves the list; one that fails again is
/// listed anew with its new reason. The answer lists every replay with its acknowledgement code.
pub async fn replay_ingest_errors(
    State(st): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    let which = match query.iter().find(|(k, _)| k == "replay") {
        None => Err(FhirError::new(
            400,
            "required",
            "parameter `replay` is required: a dead-letter id (see GET $ingest-errors) or `all`",
        )),
        Some((_, v)) => v
            .parse::<crate::ingest::hl7v2::pipeline::Replay>()
            .map_err(|e| FhirError::new(400, "value", format!("replay: {e}"))),
    };
    let replayed = match which {
        Ok(w) => st
            .hl7v2
            .replay(&st, w)
            .await
            .map_err(|e| FhirError::new(404, "not-found", e)),
        Err(e) => Err(e),
    };
    let replayed = match replayed {
        Ok(r) => r,
        Err(e) => return tagged(ApiError(e).into_response(), "hl7v2-errors"),
    };
    let params: Vec<Value> = replayed
        .iter()
        .map(|r| {
            let mut part = vec![
                json!({"name": "id", "valueInteger": r.letter.id}),
                json!({"name": "controlId", "valueString": if r.letter.control_id.is_empty() { "(none)" } else { &r.letter.control_id }}),
                json!({"name": "ack", "valueCode": r.result.msa_code()}),
                json!({"name": "committed", "valueBoolean": r.result.code == AckCode::Accept}),
            ];
            if let Some(reason) = &r.result.reason {
                part.push(json!({"name": "reason", "valueString": reason}));
            }
            json!({"name": "replayed", "part": part})
        })
        .collect();
    dead_letter_parameters(params)
}

/// A Parameters resource of dead-letter entries (none: no `parameter`).
fn dead_letter_parameters(params: Vec<Value>) -> Response {
    let mut body = json!({"resourceType": "Parameters"});
    if !params.is_empty() {
        body["parameter"] = Value::Array(params);
    }
    tagged(
        json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        ),
        "hl7v2-errors",
    )
}

/// `POST [base]/$reload-mappings`: reloads `mappings/`; errors keep the old rules in force.
pub async fn reload_mappings(State(st): State<AppState>) -> Response {
    let r = match st.hl7v2.reload() {
        Ok(n) => {
            let v = super::http::info_outcome(format!("reloaded {n} message maps"));
            json_response(
                StatusCode::OK,
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            )
        }
        Err(errors) => {
            let mut e = FhirError::new(
                422,
                "invalid",
                "mapping rules not reloaded; the previous rules stay in force",
            );
            for x in errors {
                e.issues
                    .push(crate::model::Issue::error("invalid", x.to_string()));
            }
            ApiError(e).into_response()
        }
    };
    tagged(r, "hl7v2-reload")
}
