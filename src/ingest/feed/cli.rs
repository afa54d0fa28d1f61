//! `huitong ingest feed NAME FILE...`: records from files (`.csv` in UTF-8 or GB 18030, `.json`
//! with one record or an array, `.ndjson` one record per line) through the same
//! [`super::FeedService`] as `POST /feeds/{name}`, one line printed per record.

use super::csv::{CsvCharset, CsvReader};
use super::map::RecordError;
use super::{CsvRecords, FeedService, RecordOutcome, run_partial};
use crate::config::Settings;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

/// How to read the files.
#[derive(Debug, Clone, Copy)]
pub struct FeedFiles {
    pub charset: CsvCharset,
    pub atomic: bool,
}

type Record = (usize, Result<Value, RecordError>);

fn send_all(
    path: PathBuf,
    opts: FeedFiles,
    feed: Arc<super::load::Feed>,
    tx: tokio::sync::mpsc::Sender<Record>,
) -> Result<(), String> {
    let name = path.display().to_string();
    let lower = name.to_ascii_lowercase();
    let bad = |row: usize, message: String| {
        (
            row,
            Err(RecordError {
                pointer: String::new(),
                message,
                expression: None,
            }),
        )
    };
    if lower.ends_with(".csv") {
        let mut file = std::fs::File::open(&path).map_err(|e| format!("{name}: {e}"))?;
        let mut reader = CsvReader::new(opts.charset, 1 << 20);
        let mut records = CsvRecords::new(&feed);
        let mut buf = vec![0u8; 64 * 1024];
        let mut row = 0usize;
        loop {
            let n = file.read(&mut buf).map_err(|e| format!("{name}: {e}"))?;
            let mut out = Vec::new();
            let res = reader.push(&buf[..n], n == 0, &mut |cells| {
                if let Some(r) = records.record(row + 1, cells) {
                    row += 1;
                    out.push((row, r));
                }
            });
            for r in out {
                if tx.blocking_send(r).is_err() {
                    return Ok(());
                }
            }
            if let Err(e) = res {
                let _ = tx.blocking_send(bad(
                    row + 1,
                    format!("CSV: {e}; the rest of {name} is not read"),
                ));
                return Ok(());
            }
            if n == 0 {
                return Ok(());
            }
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{name}: {e}"))?;
    if lower.ends_with(".ndjson") || lower.ends_with(".jsonl") {
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let r = serde_json::from_str(line).map_err(|e| RecordError {
                pointer: String::new(),
                message: format!("not JSON: {e}"),
                expression: None,
            });
            if tx.blocking_send((i + 1, r)).is_err() {
                break;
            }
        }
        return Ok(());
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(a)) => {
            for (i, r) in a.into_iter().enumerate() {
                if tx.blocking_send((i + 1, Ok(r))).is_err() {
                    break;
                }
            }
        }
        Ok(v) => {
            let _ = tx.blocking_send((1, Ok(v)));
        }
        Err(e) => {
            let _ = tx.blocking_send(bad(1, format!("not JSON: {e}")));
        }
    }
    Ok(())
}

/// Ingests the files into the store under `settings.data_dir`; returns (accepted, rejected).
pub async fn ingest_files(
    settings: Settings,
    feed_name: &str,
    files: &[PathBuf],
    opts: FeedFiles,
) -> Result<(usize, usize), String> {
    let store = crate::server::open_store(&settings).map_err(|e| e.to_string())?;
    let hl7v2 = Arc::new(
        crate::ingest::hl7v2::pipeline::Hl7v2Service::start(&settings)
            .map_err(|e| e.to_string())?,
    );
    let feeds = FeedService::start(&settings).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let mut state = crate::rest::AppState::new(store.clone(), settings, hl7v2);
    state.feeds = Arc::new(feeds);
    let feed = state.feeds.feed(feed_name).ok_or_else(|| {
        format!(
            "no feed '{feed_name}' (loaded: {})",
            state.feeds.names().join(", ")
        )
    })?;
    let (mut ok, mut failed) = (0, 0);
    for f in files {
        let (tx, rx) = tokio::sync::mpsc::channel::<Record>(256);
        let reader = {
            let (f, feed) = (f.clone(), feed.clone());
            tokio::task::spawn_blocking(move || send_all(f, opts, feed, tx))
        };
        let outcomes: Vec<RecordOutcome> = if opts.atomic {
            let mut rx = rx;
            let mut all = Vec::new();
            while let Some(r) = rx.recv().await {
                all.push(r);
            }
            state.feeds.ingest_atomic(&state, &feed, all).await
        } else {
            let (otx, mut orx) = tokio::sync::mpsc::channel(256);
            let printer = {
                let name = f.display().to_string();
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0, 0);
                    while let Some(o) = orx.recv().await {
                        print_outcome(&name, &o);
                        if o.result.is_ok() {
                            ok += 1
                        } else {
                            failed += 1
                        }
                    }
                    (ok, failed)
                })
            };
            run_partial(&state, &feed, rx, otx).await;
            let (a, b) = printer.await.unwrap_or_default();
            ok += a;
            failed += b;
            Vec::new()
        };
        for o in &outcomes {
            print_outcome(&f.display().to_string(), o);
            if o.result.is_ok() {
                ok += 1
            } else {
                failed += 1
            }
        }
        reader.await.map_err(|e| e.to_string())??;
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok((ok, failed))
}

fn print_outcome(file: &str, o: &RecordOutcome) {
    match &o.result {
        Ok(w) => println!(
            "{file}#{}: accepted {}",
            o.row,
            w.iter()
                .map(|x| x.reference.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Err(errors) => {
            println!("{file}#{}: rejected", o.row);
            for e in errors {
                println!(
                    "  {}: {}",
                    if e.pointer.is_empty() {
                        "/"
                    } else {
                        &e.pointer
                    },
                    e.message
                );
            }
        }
    }
}
