//! `POST /feeds/{name}`: one JSON record, a JSON array of records, or `text/csv` (header row =
//! field names; `charset=UTF-8` or `GB18030`). The answer lists, per record, the resources
//! written or an OperationOutcome locating the problem by row and JSON Pointer. Records commit
//! one by one (partial) unless `?atomic=true` asks for all or nothing.
//!
//! CSV is read from the body as it arrives and answered as it is processed: neither the input nor
//! the list of outcomes is ever held whole (except with `atomic=true`, which must decide at the
//! end).

use super::AppState;
use super::http::{ApiError, json_response, tagged};
use crate::ingest::feed::csv::{CsvCharset, CsvReader};
use crate::ingest::feed::map::RecordError;
use crate::ingest::feed::{CsvRecords, RecordOutcome, collect_partial, outcome_of, run_partial};
use crate::model::FhirError;
use crate::security::ownership::IngestState;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

/// Rows longer than this are refused (a CSV row, not the file).
const MAX_ROW_BYTES: usize = 1 << 20;

fn error(status: u16, code: &'static str, msg: String) -> Response {
    tagged(
        ApiError(FhirError::new(status, code, msg)).into_response(),
        "feed",
    )
}

/// `POST /feeds/{name}`.
pub async fn post(
    IngestState(st): IngestState,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(feed) = st.feeds.feed(&name) else {
        return error(
            404,
            "not-found",
            format!("no feed '{name}' (loaded: {})", st.feeds.names().join(", ")),
        );
    };
    let atomic = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "atomic" && v == "true");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let max = st.settings.max_body_bytes;
    if content_type.starts_with("text/csv") {
        let charset = match content_type
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("charset="))
            .next()
        {
            None => CsvCharset::Utf8,
            Some(c) => match CsvCharset::from_label(c) {
                Some(c) => c,
                None => {
                    return error(
                        415,
                        "not-supported",
                        format!("charset '{c}' is not UTF-8 or GB18030"),
                    );
                }
            },
        };
        return csv(st, feed, body, charset, atomic, max).await;
    }
    if !(content_type.starts_with("application/json")
        || content_type.starts_with("application/fhir+json"))
    {
        return error(
            415,
            "not-supported",
            format!("content type '{content_type}' is not application/json or text/csv"),
        );
    }
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => return error(413, "too-costly", format!("body larger than {max} bytes")),
    };
    let parsed: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return error(400, "invalid", format!("not JSON: {e}")),
    };
    let (single, records) = match parsed {
        Value::Array(a) => (false, a),
        other => (true, vec![other]),
    };
    let records: Vec<(usize, Result<Value, RecordError>)> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i + 1, Ok(r)))
        .collect();
    let outcomes = if atomic {
        st.feeds.ingest_atomic(&st, &feed, records).await
    } else {
        collect_partial(&st, &feed, records).await
    };
    if single && let Some(o) = outcomes.first() {
        return match &o.result {
            Ok(_) => tagged(
                json_response(StatusCode::OK, Bytes::from(o.to_json().to_string())),
                "feed",
            ),
            Err(e) => tagged(
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Bytes::from(outcome_of(o.row, e).to_string()),
                ),
                "feed",
            ),
        };
    }
    tagged(
        json_response(
            StatusCode::OK,
            Bytes::from(summary(&name, atomic, &outcomes).to_string()),
        ),
        "feed",
    )
}

fn summary(name: &str, atomic: bool, outcomes: &[RecordOutcome]) -> Value {
    let accepted = outcomes.iter().filter(|o| o.result.is_ok()).count();
    json!({
        "feed": name,
        "mode": if atomic { "all-or-nothing" } else { "partial" },
        "accepted": accepted,
        "rejected": outcomes.len() - accepted,
        "records": outcomes.iter().map(RecordOutcome::to_json).collect::<Vec<_>>(),
    })
}

/// Reads CSV rows off the body into a channel of records (the parser holds one row).
async fn read_csv(
    feed: std::sync::Arc<crate::ingest::feed::load::Feed>,
    body: axum::body::Body,
    charset: CsvCharset,
    max: usize,
    tx: tokio::sync::mpsc::Sender<(usize, Result<Value, RecordError>)>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let mut reader = CsvReader::new(charset, MAX_ROW_BYTES);
    let mut records = CsvRecords::new(&feed);
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    let mut row = 0usize;
    let mut pending: Vec<(usize, Result<Value, RecordError>)> = Vec::new();
    loop {
        let chunk = stream.next().await;
        let (bytes, last) = match chunk {
            Some(Ok(b)) => (b, false),
            Some(Err(e)) => {
                let _ = tx
                    .send((
                        row + 1,
                        Err(RecordError {
                            pointer: String::new(),
                            message: format!("body: {e}"),
                            expression: None,
                        }),
                    ))
                    .await;
                return;
            }
            None => (Bytes::new(), true),
        };
        seen += bytes.len();
        if seen > max {
            let _ = tx
                .send((
                    row + 1,
                    Err(RecordError {
                        pointer: String::new(),
                        message: format!("body larger than {max} bytes; the rest is not read"),
                        expression: None,
                    }),
                ))
                .await;
            return;
        }
        let res = reader.push(&bytes, last, &mut |cells| {
            if let Some(r) = records.record(row + 1, cells) {
                row += 1;
                pending.push((row, r));
            }
        });
        peak.store(
            reader.peak_row_bytes(),
            std::sync::atomic::Ordering::Relaxed,
        );
        for p in pending.drain(..) {
            if tx.send(p).await.is_err() {
                return;
            }
        }
        if let Err(e) = res {
            let _ = tx
                .send((
                    row + 1,
                    Err(RecordError {
                        pointer: String::new(),
                        message: format!("CSV: {e}; the rest is not read"),
                        expression: None,
                    }),
                ))
                .await;
            return;
        }
        if last {
            return;
        }
    }
}

async fn csv(
    st: AppState,
    feed: std::sync::Arc<crate::ingest::feed::load::Feed>,
    body: axum::body::Body,
    charset: CsvCharset,
    atomic: bool,
    max: usize,
) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(read_csv(feed.clone(), body, charset, max, tx, peak.clone()));
    let name = feed.name.clone();
    if atomic {
        let mut records = Vec::new();
        while let Some(r) = rx.recv().await {
            records.push(r);
        }
        let outcomes = st.feeds.ingest_atomic(&st, &feed, records).await;
        return tagged(
            json_response(
                StatusCode::OK,
                Bytes::from(summary(&name, true, &outcomes).to_string()),
            ),
            "feed",
        );
    }
    // Outcomes are streamed as they come: `{"feed":..,"records":[...],"accepted":n,"rejected":m}`.
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _ = out_tx
            .send(Bytes::from(format!(
                "{{\"feed\":{},\"mode\":\"partial\",\"records\":[",
                json!(name)
            )))
            .await;
        let (otx, mut orx) = tokio::sync::mpsc::channel::<RecordOutcome>(64);
        let writer = {
            let out_tx = out_tx.clone();
            tokio::spawn(async move {
                let (mut ok, mut bad, mut first) = (0usize, 0usize, true);
                while let Some(o) = orx.recv().await {
                    if o.result.is_ok() {
                        ok += 1;
                    } else {
                        bad += 1;
                    }
                    let mut s = if first {
                        String::new()
                    } else {
                        ",".to_string()
                    };
                    first = false;
                    s.push_str(&o.to_json().to_string());
                    // A client that stops reading stops the intake (bounded channels).
                    let _ = out_tx.send(Bytes::from(s)).await;
                }
                (ok, bad)
            })
        };
        run_partial(&st, &feed, rx, otx).await;
        let (ok, bad) = writer.await.unwrap_or_default();
        let _ = out_tx
            .send(Bytes::from(format!(
                "],\"accepted\":{ok},\"rejected\":{bad},\"peak_row_bytes\":{}}}",
                peak.load(std::sync::atomic::Ordering::Relaxed)
            )))
            .await;
    });
    let stream = futures_util::stream::unfold(out_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::io::Error>(b), rx))
    });
    let mut resp = Response::new(axum::body::Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    tagged(resp, "feed")
}
