//! The `huitong ingest hl7v2` and `huitong convert hl7v2` commands, as library functions so the
//! CLI test and the binary run the same code.

use super::pipeline::Hl7v2Service;
use super::{Charset, parse, split_messages};
use crate::config::Settings;
use crate::mapping::{self, Mappings, Options};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Ingests every message of every file into the store under `settings.data_dir`, printing one
/// line per message; returns (accepted, failed).
pub async fn ingest_files(settings: Settings, files: &[PathBuf]) -> Result<(usize, usize), String> {
    let store = crate::server::open_store(&settings).map_err(|e| e.to_string())?;
    let service = Arc::new(Hl7v2Service::start(&settings).map_err(|e| e.to_string())?);
    let state = crate::rest::AppState::new(store.clone(), settings, service.clone());
    let (mut ok, mut failed) = (0, 0);
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (i, m) in split_messages(&bytes).into_iter().enumerate() {
            let out = service.ingest(&state, m).await;
            let msa = out
                .ack_text
                .split('\r')
                .find(|s| s.starts_with("MSA"))
                .unwrap_or("")
                .to_string();
            let note = if out.duplicate {
                " (duplicate, not applied again)"
            } else {
                ""
            };
            println!("{}#{}: {msa}{note}", f.display(), i + 1);
            if let Some(r) = &out.reason {
                println!("  {r}");
            }
            if out.code == super::ack::AckCode::Accept {
                ok += 1;
            } else {
                failed += 1;
            }
        }
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok((ok, failed))
}

/// `huitong deadletter list`: one line per dead letter, newest first; returns how many.
pub fn list_dead_letters(settings: &Settings) -> Result<usize, String> {
    let service = Hl7v2Service::start(settings).map_err(|e| e.to_string())?;
    let letters = service.dead_letters.list(usize::MAX >> 1);
    for d in &letters {
        println!(
            "{}\t{}\t{}|{}\t{}",
            d.id,
            d.received_ms,
            d.facility,
            d.control_id,
            d.reason.replace('\n', " ")
        );
    }
    Ok(letters.len())
}

/// `huitong deadletter replay ID|all`: replays into the store under `settings.data_dir`, one line
/// per message; returns (committed, failed again).
pub async fn replay_dead_letters(
    settings: Settings,
    which: super::pipeline::Replay,
) -> Result<(usize, usize), String> {
    let store = crate::server::open_store(&settings).map_err(|e| e.to_string())?;
    let service = Arc::new(Hl7v2Service::start(&settings).map_err(|e| e.to_string())?);
    let state = crate::rest::AppState::new(store.clone(), settings, service.clone());
    let (mut ok, mut failed) = (0, 0);
    for r in service.replay(&state, which).await? {
        println!(
            "dead letter {} ({}): {}",
            r.letter.id,
            r.letter.control_id,
            r.result.msa_code()
        );
        if let Some(why) = &r.result.reason {
            println!("  {why}");
        }
        if r.result.code == super::ack::AckCode::Accept {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok((ok, failed))
}

/// Converts the messages of a file without storing: the transaction Bundle per message, or with
/// `explain` one line per value saying where it went (or why it went nowhere).
pub fn convert_file(
    mappings_dir: &Path,
    charset: Charset,
    timezone: &str,
    file: &Path,
    explain: bool,
) -> Result<String, String> {
    let maps = Mappings::load(mappings_dir).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let opts = Options {
        default_offset: timezone.to_string(),
        trace: true,
    };
    let mut out = String::new();
    for (i, m) in split_messages(&bytes).into_iter().enumerate() {
        let msg = parse(m, charset).map_err(|e| format!("message {}: {e}", i + 1))?;
        let c =
            mapping::convert(&msg, &maps, &opts).map_err(|e| format!("message {}: {e}", i + 1))?;
        if !explain {
            let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction",
                "entry": c.resources.iter().map(|r| {
                    let url = format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default());
                    serde_json::json!({"fullUrl": url, "resource": r, "request": {"method": "PUT", "url": url}})
                }).collect::<Vec<_>>()});
            out.push_str(&serde_json::to_string_pretty(&bundle).unwrap_or_default());
            out.push('\n');
            continue;
        }
        out.push_str(&format!(
            "message {} ({}, event {}): {} resources, {} values mapped, {} not mapped\n",
            i + 1,
            c.structure,
            c.event,
            c.resources.len(),
            c.trace.len(),
            c.unmapped.len()
        ));
        let mut lines: Vec<(usize, String)> = c
            .trace
            .iter()
            .map(|t| {
                (
                    t.sequence,
                    format!("  {:<14} {:<40} -> {}", t.field, clip(&t.value), t.target),
                )
            })
            .chain(c.unmapped.iter().map(|u| {
                (
                    u.sequence,
                    format!(
                        "  {:<14} {:<40} -> NOT MAPPED ({})",
                        u.field,
                        clip(&u.value),
                        u.reason
                    ),
                )
            }))
            .collect();
        lines.sort_by_key(|(s, _)| *s);
        for (_, l) in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

fn clip(s: &str) -> String {
    let c: String = s.chars().take(38).collect();
    if c.len() < s.len() {
        format!("{c}..")
    } else {
        c
    }
}
