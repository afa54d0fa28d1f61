//! `huitong ingest hl7v3 FILE...`: each file is one message (bare or in a SOAP envelope),
//! handled exactly as `POST /hl7v3`; one line per file with the acknowledgement.

use crate::config::Settings;
use std::path::PathBuf;

/// Handles each file against the store under `settings.data_dir`; returns (accepted, refused).
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
        let reply = state.hl7v3.handle(&state, &bytes).await;
        let code = if reply.accepted { "AA" } else { "AE" };
        println!(
            "{}: {} {code}: {}",
            f.display(),
            reply.interaction,
            reply.detail
        );
        if reply.accepted {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    store.flush().await.map_err(|e| e.to_string())?;
    Ok((ok, failed))
}
