//! The FHIRPath benchmark workload, shared by `benches/fhirpath.rs` and
//! `examples/fhirpath_profile.rs` (included with `#[path]`), so the profiled workload is exactly the
//! benchmarked one.

use huitong::definitions::Definitions;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

/// Evaluations in the workload at most (every k-th example is taken to stay under it).
pub const MAX_PAIRS: usize = 6000;

/// Where the bench writes its workload and figures (the example does not).
#[allow(dead_code)]
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")))
}

pub fn examples() -> Option<Vec<Json>> {
    let dir = std::env::var_os("HUITONG_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpora"))
        });
    let file =
        std::fs::File::open(dir.join("fhir-r4-examples/hl7.fhir.r4.examples-4.0.1.tgz")).ok()?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = Vec::new();
    for entry in archive.entries().ok()? {
        let Ok(mut entry) = entry else { continue };
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".json") || name.ends_with("package.json") || name.contains(".index.") {
            continue;
        }
        let mut text = String::new();
        if entry.read_to_string(&mut text).is_ok()
            && let Ok(j) = serde_json::from_str::<Json>(&text)
            && j.get("resourceType").is_some()
        {
            out.push(j);
        }
    }
    Some(out)
}

/// The 20 constraint expressions on resource roots that apply to the most examples, and the
/// (example, expression) pairs of the workload.
pub fn workload(defs: &Definitions, resources: &[Json]) -> (Vec<String>, Vec<(usize, usize)>) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in resources {
        let Some(rt) = r.get("resourceType").and_then(Json::as_str) else {
            continue;
        };
        for c in defs
            .element(rt)
            .map(|e| e.constraints.as_slice())
            .unwrap_or(&[])
        {
            if let Some(e) = &c.expression {
                *counts.entry(e.clone()).or_default() += 1;
            }
        }
    }
    let mut top: Vec<(String, usize)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(20);
    let exprs: Vec<String> = top.into_iter().map(|(e, _)| e).collect();
    let mut pairs = Vec::new();
    for (ri, r) in resources.iter().enumerate() {
        let Some(rt) = r.get("resourceType").and_then(Json::as_str) else {
            continue;
        };
        for c in defs
            .element(rt)
            .map(|e| e.constraints.as_slice())
            .unwrap_or(&[])
        {
            if let Some(ei) = c
                .expression
                .as_ref()
                .and_then(|e| exprs.iter().position(|x| x == e))
            {
                pairs.push((ri, ei));
            }
        }
    }
    let step = pairs.len().div_ceil(MAX_PAIRS).max(1);
    let pairs: Vec<(usize, usize)> = pairs.into_iter().step_by(step).collect();
    (exprs, pairs)
}
