//! `huitong ingest cda FILE...`: each file is one CDA document, converted, validated and stored
//! exactly as `POST /cda` does; one line per file.

use crate::config::Settings;
use std::path::PathBuf;

/// Ingests each file into the store under `settings.data_dir`; returns (accepted, failed).
pub async fn ingest_files(settings: Settings, files: &[PathBuf]) -> Result<(usize, usize), String> {
    let store = crate::server::open_store(&settings).map_err(|e| e.to_string())?;
    let hl7v2 = std::sync::Arc::new(
        crate::ingest::hl7v2::pipeline::Hl7v2Service::start(&settings)
            .map_err(|e| e.to_string())?,
    );
    let state = crate::rest::AppState::new(store.clone(), settings, hl7v2);
    let (mut ok, mut failed) = (0, 0);
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        match state.hl7v3.cda.ingest(&state, &bytes).await {
            Ok(s) => {
                ok += 1;
                println!(
                    "{}: stored DocumentReference/{} ({}, {} resources, {} statements without a rule kept as Observations)",
                    f.display(),
                    s.converted.document_reference_id,
                    s.converted.table,
                    s.converted.resources.len(),
                    s.converted.fallbacks
                );
                for a in &s.accepted {
                    println!("  warning: {}", a.issue.diagnostics);
                }
            }
            Err(e) => {
                failed += 1;
                let why = e
                    .issues
                    .first()
                    .map(|i| i.diagnostics.clone())
                    .unwrap_or_default();
                println!("{}: refused: {why}", f.display());
            }
        }
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok((ok, failed))
}
